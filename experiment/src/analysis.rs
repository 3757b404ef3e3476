//! P(arm is best), P(beats control) and value remaining: by Monte Carlo draws from the
//! posteriors (seeded), and P(best) exactly by numerical integration.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Gamma};
use statrs::distribution::{Beta as BetaDist, Continuous, ContinuousCDF};

use crate::arms::{Arm, Posterior, Prior, check_arms};
use crate::error::{Error, Result};

/// The quantile of value remaining the stop rule looks at.
pub const VALUE_REMAINING_QUANTILE: f64 = 0.95;

/// What Monte Carlo draws say about the arms.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Draws made.
    pub draws: usize,
    /// P(arm is best), per arm (sums to 1).
    pub p_best: Vec<f64>,
    /// The Monte Carlo standard error of each `p_best`: sqrt(p (1 − p) / draws).
    pub p_best_se: Vec<f64>,
    /// The arm with the highest P(best) (the lowest index among ties).
    pub champion: usize,
    /// The control arm, when the input marks one.
    pub control: Option<usize>,
    /// With a control: P(arm's rate > control's), per arm (0 for the control itself).
    pub p_beats_control: Option<Vec<f64>>,
    /// The 95th percentile of value remaining, (max θ − θ_champion) / θ_champion over the
    /// draws: how much better (relatively) another arm might still be.
    pub value_remaining_p95: f64,
    /// A 95% interval for that percentile from the draws' order statistics: how sure the
    /// Monte Carlo estimate is.
    pub value_remaining_p95_interval: (f64, f64),
    /// The posteriors' 95% credible intervals of each arm's rate (equal tails).
    pub credible: Vec<(f64, f64)>,
}

/// Reusable buffers for [`Evaluator::analyze`]: one evaluation allocates nothing after the
/// first of its size.
#[derive(Debug, Default)]
pub struct Evaluator {
    theta: Vec<f64>,
    remaining: Vec<f64>,
}

/// The posteriors of `arms` under `prior`.
pub fn posteriors(arms: &[Arm], prior: Prior) -> Vec<Posterior> {
    arms.iter().map(|a| a.posterior(prior)).collect()
}

/// Draws Beta(alpha, beta) variates as X / (X + Y) with X ~ Gamma(alpha), Y ~ Gamma(beta):
/// exactly Beta-distributed, and twice as fast here as `rand_distr::Beta`'s rejection
/// algorithms (Marsaglia–Tsang Gamma with a ziggurat normal; see the crate README).
struct BetaSampler {
    x: Gamma<f64>,
    y: Gamma<f64>,
}

impl BetaSampler {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let x = self.x.sample(rng);
        let y = self.y.sample(rng);
        x / (x + y)
    }
}

fn beta_sampler(p: &Posterior, label: &str) -> Result<BetaSampler> {
    let bad = |e: rand_distr::GammaError| Error::Arm {
        arm: label.to_string(),
        message: format!("posterior Beta({}, {}): {e}", p.alpha, p.beta),
    };
    Ok(BetaSampler {
        x: Gamma::new(p.alpha, 1.0).map_err(bad)?,
        y: Gamma::new(p.beta, 1.0).map_err(bad)?,
    })
}

impl Evaluator {
    /// A new evaluator.
    pub fn new() -> Evaluator {
        Evaluator::default()
    }

    /// Draws `draws` rate vectors from the arms' posteriors (a fixed `seed` gives the same
    /// result) and computes P(best) with its standard error, P(beats control) and value
    /// remaining.
    ///
    /// # Errors
    /// Invalid arms ([`check_arms`]), or `draws` of 0.
    pub fn analyze(
        &mut self,
        arms: &[Arm],
        prior: Prior,
        draws: usize,
        seed: u64,
    ) -> Result<Analysis> {
        check_arms(arms)?;
        if draws == 0 {
            return Err(Error::Experiment("draws must be at least 1".into()));
        }
        let k = arms.len();
        let post = posteriors(arms, prior);
        let samplers = arms
            .iter()
            .zip(&post)
            .map(|(a, p)| beta_sampler(p, &a.label))
            .collect::<Result<Vec<_>>>()?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        self.theta.clear();
        self.theta.reserve(draws * k);
        let mut wins = vec![0u64; k];
        for _ in 0..draws {
            let start = self.theta.len();
            let mut best = 0;
            let mut best_theta = f64::NEG_INFINITY;
            for (i, s) in samplers.iter().enumerate() {
                let t = s.sample(&mut rng);
                if t > best_theta {
                    best_theta = t;
                    best = i;
                }
                self.theta.push(t);
            }
            debug_assert_eq!(self.theta.len(), start + k);
            wins[best] += 1;
        }
        let n = draws as f64;
        let p_best: Vec<f64> = wins.iter().map(|&w| w as f64 / n).collect();
        let p_best_se = p_best.iter().map(|p| (p * (1.0 - p) / n).sqrt()).collect();
        let champion = argmax(&p_best);
        let control = arms.iter().position(|a| a.control);
        let p_beats_control = control.map(|c| {
            let mut beats = vec![0u64; k];
            for row in self.theta.chunks_exact(k) {
                for (i, t) in row.iter().enumerate() {
                    if i != c && *t > row[c] {
                        beats[i] += 1;
                    }
                }
            }
            beats.iter().map(|&b| b as f64 / n).collect()
        });
        self.remaining.clear();
        self.remaining.extend(self.theta.chunks_exact(k).map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let c = row[champion];
            if c > 0.0 {
                (max - c) / c
            } else {
                f64::INFINITY
            }
        }));
        let (value_remaining_p95, value_remaining_p95_interval) =
            quantile_with_interval(&mut self.remaining, VALUE_REMAINING_QUANTILE);
        let credible = post.iter().map(credible_interval).collect();
        Ok(Analysis {
            draws,
            p_best,
            p_best_se,
            champion,
            control,
            p_beats_control,
            value_remaining_p95,
            value_remaining_p95_interval,
            credible,
        })
    }
}

/// The index of the largest value (the first among ties).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// The `q` quantile of `values` (reordered in place) and a 95% interval for it from the
/// order statistics (ranks n·q ± 1.96·sqrt(n·q·(1 − q))).
fn quantile_with_interval(values: &mut [f64], q: f64) -> (f64, (f64, f64)) {
    let n = values.len();
    let rank = |r: f64| (r.round().max(0.0) as usize).min(n - 1);
    let mid = rank(q * (n - 1) as f64);
    let spread = 1.96 * (n as f64 * q * (1.0 - q)).sqrt();
    let lo = rank(q * (n - 1) as f64 - spread);
    let hi = rank(q * (n - 1) as f64 + spread);
    let cmp = |a: &f64, b: &f64| a.total_cmp(b);
    let (_, m, _) = values.select_nth_unstable_by(mid, cmp);
    let m = *m;
    // lo <= mid <= hi: select within each side.
    let low = if lo < mid {
        *values[..mid].select_nth_unstable_by(lo, cmp).1
    } else {
        m
    };
    let high = if hi > mid {
        *values[mid + 1..]
            .select_nth_unstable_by(hi - mid - 1, cmp)
            .1
    } else {
        m
    };
    (m, (low, high))
}

/// The equal-tailed 95% credible interval of a Beta posterior.
pub fn credible_interval(p: &Posterior) -> (f64, f64) {
    match BetaDist::new(p.alpha, p.beta) {
        Ok(d) => (d.inverse_cdf(0.025), d.inverse_cdf(0.975)),
        Err(_) => (0.0, 1.0),
    }
}

/// 20-point Gauss–Legendre nodes and weights on [-1, 1] (half of them; symmetric).
const GL_NODES: [(f64, f64); 10] = [
    (0.076_526_521_133_497_33, 0.152_753_387_130_725_85),
    (0.227_785_851_141_645_07, 0.149_172_986_472_603_75),
    (0.373_706_088_715_419_56, 0.142_096_109_318_382_05),
    (0.510_867_001_950_827_1, 0.131_688_638_449_176_63),
    (0.636_053_680_726_515, 0.118_194_531_961_518_42),
    (0.746_331_906_460_150_8, 0.101_930_119_817_240_44),
    (0.839_116_971_822_218_8, 0.083_276_741_576_704_75),
    (0.912_234_428_251_326, 0.062_672_048_334_109_06),
    (0.963_971_927_277_913_8, 0.040_601_429_800_386_94),
    (0.993_128_599_185_094_9, 0.017_614_007_139_152_12),
];

/// P(arm is best) for every arm, exactly (to about 1e-9) by numerical integration of
/// ∫ f_i(x) Π_{j≠i} F_j(x) dx: a test oracle for the Monte Carlo estimate and an answer for
/// small problems (its cost grows with the square of the number of arms).
///
/// # Errors
/// Invalid arms.
pub fn exact_p_best(arms: &[Arm], prior: Prior) -> Result<Vec<f64>> {
    check_arms(arms)?;
    let post = posteriors(arms, prior);
    let dists = arms
        .iter()
        .zip(&post)
        .map(|(a, p)| {
            BetaDist::new(p.alpha, p.beta).map_err(|e| Error::Arm {
                arm: a.label.clone(),
                message: format!("posterior Beta({}, {}): {e}", p.alpha, p.beta),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Break [0, 1] where the densities live: every posterior's mean ± m sd, so that no
    // interval is wider than a fraction of any peak it holds.
    // Skewed posteriors (few successes) have long tails: their quantiles far out place
    // the last cuts where the mean ± sd grid does not reach.
    const TAILS: [f64; 8] = [1e-14, 1e-11, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 5e-2];
    let mut cuts = vec![0.0, 1.0];
    for (p, d) in post.iter().zip(&dists) {
        let (mean, sd) = (p.mean(), p.sd());
        for m in -12..=12 {
            cuts.push(mean + f64::from(m) * sd * 0.5);
        }
        for q in TAILS {
            cuts.push(d.inverse_cdf(q));
            cuts.push(d.inverse_cdf(1.0 - q));
        }
    }
    cuts.retain(|x| *x > 0.0 && *x < 1.0);
    cuts.push(0.0);
    cuts.push(1.0);
    cuts.sort_by(f64::total_cmp);
    cuts.dedup_by(|a, b| (*a - *b).abs() < 1e-15);
    let k = arms.len();
    let mut p = vec![0.0; k];
    let mut cdf = vec![0.0; k];
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        for &(node, weight) in &GL_NODES {
            for x in [mid - half * node, mid + half * node] {
                for (j, d) in dists.iter().enumerate() {
                    cdf[j] = d.cdf(x);
                }
                for (i, d) in dists.iter().enumerate() {
                    let others: f64 = cdf
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, c)| c)
                        .product();
                    let density = d.pdf(x);
                    if density.is_finite() {
                        p[i] += weight * half * density * others;
                    }
                }
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_their_interval_come_from_order_statistics() {
        let mut v: Vec<f64> = (0..1001).map(f64::from).rev().collect();
        let (q, (lo, hi)) = quantile_with_interval(&mut v, 0.95);
        assert_eq!(q, 950.0);
        assert!(
            lo < 950.0 && lo > 930.0 && hi > 950.0 && hi < 970.0,
            "{lo} {hi}"
        );
    }

    #[test]
    fn a_skewed_pair_integrates_to_one() {
        // Few successes: long right tails (a case the property test found).
        let arms = [Arm::new("a0", 3.0, 322.0), Arm::new("a1", 0.0, 140.0)];
        let p = exact_p_best(&arms, Prior::default()).unwrap();
        assert!((p[0] + p[1] - 1.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn two_arms_match_the_closed_form() {
        // P(B > A) for Beta posteriors with integer parameters (Evan Miller's formula).
        fn closed(a_a: f64, b_a: f64, a_b: f64, b_b: f64) -> f64 {
            let ln_beta = |x: f64, y: f64| statrs::function::beta::ln_beta(x, y);
            (0..a_b as u32)
                .map(|i| {
                    let i = f64::from(i);
                    (ln_beta(a_a + i, b_a + b_b)
                        - (b_b + i).ln()
                        - ln_beta(1.0 + i, b_b)
                        - ln_beta(a_a, b_a))
                    .exp()
                })
                .sum()
        }
        let arms = [Arm::new("a", 12.0, 100.0), Arm::new("b", 20.0, 110.0)];
        let p = exact_p_best(&arms, Prior::default()).unwrap();
        let want = closed(13.0, 89.0, 21.0, 91.0);
        assert!((p[1] - want).abs() < 1e-7, "{} vs {want}", p[1]);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-7);
    }
}

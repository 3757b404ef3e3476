//! Synthetic experiments: the bandit (reweighting a few times a day, stopping by the rule)
//! against a classical fixed-horizon test sized by a power calculation, on the same traffic.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Binomial, Distribution};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::analysis::{Evaluator, argmax};
use crate::arms::{Arm, Prior};
use crate::decision::StopRule;
use crate::error::{Error, Result};
use crate::policy::{WeightPolicy, choose_arm};

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The arms' true conversion rates; arm 0 is the control of the classical test.
    pub rates: Vec<f64>,
    /// Visits a day, over all arms.
    pub visits_per_day: u32,
    /// Reweightings a day (Google's: 2).
    pub updates_per_day: u32,
    /// Days counted: the experiment, then serving its choice (conversions lost over all of
    /// them; an experiment still running then is undecided).
    pub horizon_days: u32,
    /// Simulated experiments per design.
    pub runs: u32,
    /// Monte Carlo draws per reweighting.
    pub draws: usize,
    /// The bandit's stop rule.
    pub rule: StopRule,
    /// The bandit's weights.
    pub weights: WeightPolicy,
    /// The classical test's significance level (two-sided).
    pub alpha: f64,
    /// The classical test's power for the difference between the control and the best arm.
    pub power: f64,
    /// Seed of the whole simulation.
    pub seed: u64,
}

impl Default for SimConfig {
    /// Rates 4% vs 5%, 100 visits a day, reweighting twice a day, a year's horizon, 200
    /// experiments per design, 1000 draws per reweighting, alpha 0.05 and power 0.8.
    fn default() -> SimConfig {
        SimConfig {
            rates: vec![0.04, 0.05],
            visits_per_day: 100,
            updates_per_day: 2,
            horizon_days: 365,
            runs: 200,
            draws: 1000,
            rule: StopRule::default(),
            weights: WeightPolicy::default(),
            alpha: 0.05,
            power: 0.8,
            seed: 1,
        }
    }
}

/// A median and the 10th and 90th percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread {
                p10: f64::NAN,
                median: f64::NAN,
                p90: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Spread {
            p10: at(0.1),
            median: at(0.5),
            p90: at(0.9),
        }
    }
}

/// How one design did over the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignSummary {
    /// Days to a decision (decided runs only).
    pub days: Spread,
    /// Expected conversions lost during the experiment against always serving the best arm.
    pub lost_during: Spread,
    /// The same over the whole horizon (the experiment, then its choice).
    pub lost_horizon: Spread,
    /// Share of runs that chose the best arm.
    pub best_chosen: f64,
    /// Share of runs with no decision within the horizon.
    pub undecided: f64,
    /// Per day, each arm's mean share of the traffic over the runs.
    pub daily_share: Vec<Vec<f64>>,
    /// Per day, the mean cumulative expected conversions lost.
    pub daily_lost: Vec<f64>,
}

/// Both designs on the same traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// The configuration.
    pub config: SimConfig,
    /// The bandit.
    pub bandit: DesignSummary,
    /// The classical test.
    pub classical: DesignSummary,
    /// Visits per arm the power calculation asks for.
    pub classical_visits_per_arm: u64,
    /// The classical test's duration in days.
    pub classical_days: u32,
}

/// Visits per arm for a two-sided two-proportion z test of `p0` against `p1` at `alpha`
/// with `power` (the standard normal-approximation formula).
///
/// # Errors
/// Rates not in (0, 1) or equal, or alpha/power not in (0, 1).
pub fn visits_per_arm(p0: f64, p1: f64, alpha: f64, power: f64) -> Result<u64> {
    let ok = |x: f64| x > 0.0 && x < 1.0;
    if !(ok(p0) && ok(p1) && ok(alpha) && ok(power)) || p0 == p1 {
        return Err(Error::Experiment(format!(
            "power calculation needs two different rates in (0, 1) and alpha, power in (0, 1): {p0}, {p1}, {alpha}, {power}"
        )));
    }
    let n = Normal::standard();
    let za = n.inverse_cdf(1.0 - alpha / 2.0);
    let zb = n.inverse_cdf(power);
    let pbar = (p0 + p1) / 2.0;
    let num =
        za * (2.0 * pbar * (1.0 - pbar)).sqrt() + zb * (p0 * (1.0 - p0) + p1 * (1.0 - p1)).sqrt();
    Ok((num * num / ((p1 - p0) * (p1 - p0))).ceil() as u64)
}

struct Track {
    share: Vec<Vec<f64>>,
    lost: Vec<f64>,
}

impl Track {
    fn new(days: usize, k: usize) -> Track {
        Track {
            share: vec![vec![0.0; k]; days],
            lost: vec![0.0; days],
        }
    }
}

/// Runs both designs `config.runs` times.
///
/// # Errors
/// Fewer than two rates, rates outside (0, 1), no visits, or invalid settings.
pub fn simulate(config: &SimConfig) -> Result<Simulation> {
    let k = config.rates.len();
    if k < 2 || config.rates.iter().any(|r| !(*r > 0.0 && *r < 1.0)) {
        return Err(Error::Experiment(format!(
            "simulate needs at least two rates in (0, 1), got {:?}",
            config.rates
        )));
    }
    if config.visits_per_day == 0 || config.updates_per_day == 0 || config.runs == 0 {
        return Err(Error::Experiment(
            "visits per day, updates per day and runs must be positive".into(),
        ));
    }
    let best = argmax(&config.rates);
    let best_rate = config.rates[best];
    let days = config.horizon_days as usize;

    // The classical test: equal split for the visits the power calculation asks for (the
    // control against the best of the others, Bonferroni over the comparisons).
    let challenger = (1..k)
        .max_by(|&a, &b| config.rates[a].total_cmp(&config.rates[b]))
        .unwrap_or(1);
    let per_arm = visits_per_arm(
        config.rates[0],
        config.rates[challenger],
        config.alpha / (k - 1) as f64,
        config.power,
    )?;
    let classical_days = (per_arm * k as u64).div_ceil(u64::from(config.visits_per_day)) as u32;

    let mut evaluator = Evaluator::new();
    let mut bandit_track = Track::new(days, k);
    let mut classical_track = Track::new(days, k);
    let mut bandit_runs = Vec::new();
    let mut classical_runs = Vec::new();
    for run in 0..config.runs {
        let seed = config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(run));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        bandit_runs.push(bandit_run(
            config,
            &mut evaluator,
            &mut rng,
            &mut bandit_track,
            best_rate,
        )?);
        classical_runs.push(classical_run(
            config,
            classical_days,
            &mut rng,
            &mut classical_track,
            best_rate,
        )?);
    }
    let runs = f64::from(config.runs);
    let summarize = |results: &[RunResult], track: Track| DesignSummary {
        days: Spread::of(
            results
                .iter()
                .filter_map(|r| r.days.map(f64::from))
                .collect(),
        ),
        lost_during: Spread::of(results.iter().map(|r| r.lost_during).collect()),
        lost_horizon: Spread::of(results.iter().map(|r| r.lost_horizon).collect()),
        best_chosen: results.iter().filter(|r| r.chosen == Some(best)).count() as f64 / runs,
        undecided: results.iter().filter(|r| r.days.is_none()).count() as f64 / runs,
        daily_share: track
            .share
            .into_iter()
            .map(|d| d.into_iter().map(|s| s / runs).collect())
            .collect(),
        daily_lost: track.lost.into_iter().map(|l| l / runs).collect(),
    };
    Ok(Simulation {
        config: config.clone(),
        bandit: summarize(&bandit_runs, bandit_track),
        classical: summarize(&classical_runs, classical_track),
        classical_visits_per_arm: per_arm,
        classical_days,
    })
}

struct RunResult {
    /// Day of the decision (1-based), `None` when undecided within the horizon.
    days: Option<u32>,
    chosen: Option<usize>,
    lost_during: f64,
    lost_horizon: f64,
}

fn binomial(n: u64, p: f64, rng: &mut Xoshiro256PlusPlus) -> Result<u64> {
    Binomial::new(n, p)
        .map(|b| b.sample(rng))
        .map_err(|e| Error::Experiment(format!("binomial({n}, {p}): {e}")))
}

fn bandit_run(
    config: &SimConfig,
    evaluator: &mut Evaluator,
    rng: &mut Xoshiro256PlusPlus,
    track: &mut Track,
    best_rate: f64,
) -> Result<RunResult> {
    let k = config.rates.len();
    let mut arms: Vec<Arm> = (0..k)
        .map(|i| Arm::new(format!("arm{i}"), 0.0, 0.0))
        .collect();
    let mut weights = vec![1.0 / k as f64; k];
    let mut served = vec![0u64; k];
    let mut lost = 0.0;
    let mut decided: Option<(u32, usize)> = None;
    let mut lost_during = 0.0;
    let visits = u64::from(config.visits_per_day);
    let periods = u64::from(config.updates_per_day);
    for day in 0..config.horizon_days {
        if let Some((_, winner)) = decided {
            lost += visits as f64 * (best_rate - config.rates[winner]);
            track.share[day as usize][winner] += 1.0;
        } else {
            for period in 0..periods {
                // Spread the day's visits over its periods, the remainder in the first.
                let n = visits / periods + u64::from(period < visits % periods);
                served.iter_mut().for_each(|s| *s = 0);
                for _ in 0..n {
                    served[choose_arm(&weights, rng)?.0] += 1;
                }
                for (i, arm) in arms.iter_mut().enumerate() {
                    let conversions = binomial(served[i], config.rates[i], rng)?;
                    arm.successes += conversions as f64;
                    arm.trials += served[i] as f64;
                    lost += served[i] as f64 * (best_rate - config.rates[i]);
                    track.share[day as usize][i] += served[i] as f64 / visits as f64;
                }
                let a = evaluator.analyze(
                    &arms,
                    Prior::default(),
                    config.draws,
                    rand::RngExt::random(rng),
                )?;
                weights = config.weights.weights(&arms, &a.p_best)?;
            }
            let a = evaluator.analyze(
                &arms,
                Prior::default(),
                config.draws,
                rand::RngExt::random(rng),
            )?;
            let d = config.rule.decide(&arms, &a, f64::from(day + 1));
            if d.stop {
                let winner = arms
                    .iter()
                    .position(|arm| Some(&arm.label) == d.winner.as_ref())
                    .unwrap_or(a.champion);
                decided = Some((day + 1, winner));
                lost_during = lost;
            }
        }
        track.lost[day as usize] += lost;
    }
    Ok(RunResult {
        days: decided.map(|(d, _)| d),
        chosen: decided.map(|(_, w)| w),
        lost_during: if decided.is_some() { lost_during } else { lost },
        lost_horizon: lost,
    })
}

fn classical_run(
    config: &SimConfig,
    classical_days: u32,
    rng: &mut Xoshiro256PlusPlus,
    track: &mut Track,
    best_rate: f64,
) -> Result<RunResult> {
    let k = config.rates.len();
    let kf = k as f64;
    let visits = f64::from(config.visits_per_day);
    let mean_rate = config.rates.iter().sum::<f64>() / kf;
    let test_days = classical_days.min(config.horizon_days);
    let per_arm_total = (visits * f64::from(test_days) / kf).round() as u64;
    let conversions = config
        .rates
        .iter()
        .map(|&r| binomial(per_arm_total, r, rng))
        .collect::<Result<Vec<u64>>>()?;
    // Each challenger against the control (pooled two-proportion z test, Bonferroni).
    let z_crit = Normal::standard().inverse_cdf(1.0 - config.alpha / (kf - 1.0) / 2.0);
    let n = per_arm_total as f64;
    let p0 = conversions[0] as f64 / n;
    let chosen = if classical_days > config.horizon_days {
        None
    } else {
        let winners: Vec<usize> = (1..k)
            .filter(|&i| {
                let pi = conversions[i] as f64 / n;
                let pooled = (conversions[0] + conversions[i]) as f64 / (2.0 * n);
                let se = (pooled * (1.0 - pooled) * 2.0 / n).sqrt();
                se > 0.0 && (pi - p0) / se > z_crit
            })
            .collect();
        Some(
            winners
                .into_iter()
                .max_by_key(|&i| conversions[i])
                .unwrap_or(0),
        )
    };
    let mut lost = 0.0;
    let mut lost_during = 0.0;
    for day in 0..config.horizon_days {
        if day < test_days {
            lost += visits * (best_rate - mean_rate);
            for i in 0..k {
                track.share[day as usize][i] += 1.0 / kf;
            }
            if day + 1 == test_days {
                lost_during = lost;
            }
        } else if let Some(c) = chosen {
            lost += visits * (best_rate - config.rates[c]);
            track.share[day as usize][c] += 1.0;
        }
        track.lost[day as usize] += lost;
    }
    Ok(RunResult {
        days: chosen.map(|_| classical_days),
        chosen,
        lost_during,
        lost_horizon: lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_calculation_matches_the_textbook() {
        // 4% vs 5%, alpha 0.05 two-sided, power 0.8: about 6 700 visits per arm.
        let n = visits_per_arm(0.04, 0.05, 0.05, 0.8).unwrap();
        assert!((6_600..6_800).contains(&n), "{n}");
        assert!(visits_per_arm(0.04, 0.04, 0.05, 0.8).is_err());
    }

    #[test]
    fn a_small_simulation_favours_the_bandit_on_lost_conversions() {
        let config = SimConfig {
            rates: vec![0.04, 0.08],
            visits_per_day: 200,
            horizon_days: 60,
            runs: 8,
            draws: 200,
            ..SimConfig::default()
        };
        let s = simulate(&config).unwrap();
        assert_eq!(s.bandit.daily_share.len(), 60);
        for day in &s.bandit.daily_share {
            assert!((day.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        assert!(s.bandit.lost_during.median < s.classical.lost_during.median);
        assert!(s.bandit.best_chosen >= 0.75, "{}", s.bandit.best_chosen);
        // Same seed, same result.
        assert_eq!(simulate(&config).unwrap(), s);
    }
}

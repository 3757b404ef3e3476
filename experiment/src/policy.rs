//! Serving weights (randomized probability matching) and choosing an arm for a visit.

use rand::Rng;

use crate::arms::Arm;
use crate::error::{Error, Result};

/// How P(best) becomes traffic shares.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightPolicy {
    /// Every arm gets at least this share (0 ≤ floor ≤ 1/arms): no arm starves to zero.
    pub floor: f64,
    /// Equal shares until every arm has this many trials: one lucky day does not move most of
    /// the traffic.
    pub burn_in_trials: f64,
}

impl Default for WeightPolicy {
    fn default() -> WeightPolicy {
        WeightPolicy {
            floor: 0.0,
            burn_in_trials: 0.0,
        }
    }
}

impl WeightPolicy {
    /// The serving weights: equal during the burn-in, then P(best) mixed with the floor as
    /// `floor + (1 − arms × floor) × P(best)` (every weight ≥ floor, the sum is 1).
    ///
    /// # Errors
    /// A floor outside [0, 1/arms], or P(best) of another length than the arms.
    pub fn weights(&self, arms: &[Arm], p_best: &[f64]) -> Result<Vec<f64>> {
        let k = arms.len();
        if p_best.len() != k || k == 0 {
            return Err(Error::Experiment(format!(
                "{} P(best) values for {k} arms",
                p_best.len()
            )));
        }
        let kf = k as f64;
        if !(0.0..=1.0 / kf).contains(&self.floor) {
            return Err(Error::Experiment(format!(
                "a floor of {} is more than 1/{k} arms",
                self.floor
            )));
        }
        if arms.iter().any(|a| a.trials < self.burn_in_trials) {
            return Ok(vec![1.0 / kf; k]);
        }
        let total: f64 = p_best.iter().sum();
        Ok(p_best
            .iter()
            .map(|p| self.floor + (1.0 - kf * self.floor) * (p / total))
            .collect())
    }
}

/// Picks the arm for one visit with probability `weights[i]`; returns it and the probability
/// it was served with (log it with the visit).
///
/// # Errors
/// No weights, or weights that are negative, not finite or sum to zero.
pub fn choose_arm<R: Rng + ?Sized>(weights: &[f64], rng: &mut R) -> Result<(usize, f64)> {
    let total: f64 = weights.iter().sum();
    if weights.is_empty() || weights.iter().any(|w| !w.is_finite() || *w < 0.0) || total <= 0.0 {
        return Err(Error::Experiment(format!(
            "cannot serve with weights {weights:?}"
        )));
    }
    let mut u = rand::RngExt::random::<f64>(rng) * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return Ok((i, w / total));
        }
        u -= w;
    }
    // Rounding left u at the very end: the last arm with any weight.
    let last = weights
        .iter()
        .rposition(|w| *w > 0.0)
        .unwrap_or(weights.len() - 1);
    Ok((last, weights[last] / total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn arms(trials: &[f64]) -> Vec<Arm> {
        trials
            .iter()
            .enumerate()
            .map(|(i, t)| Arm::new(format!("a{i}"), 0.0, *t))
            .collect()
    }

    #[test]
    fn weights_sum_to_one_and_respect_floor_and_burn_in() {
        let p = [0.97, 0.02, 0.01];
        let policy = WeightPolicy {
            floor: 0.05,
            burn_in_trials: 100.0,
        };
        let w = policy.weights(&arms(&[500.0, 500.0, 500.0]), &p).unwrap();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w.iter().all(|x| *x >= 0.05 - 1e-12), "{w:?}");
        let w = policy.weights(&arms(&[500.0, 50.0, 500.0]), &p).unwrap();
        assert_eq!(w, vec![1.0 / 3.0; 3], "burn-in: equal shares");
        assert!(
            WeightPolicy {
                floor: 0.4,
                burn_in_trials: 0.0
            }
            .weights(&arms(&[1.0, 1.0, 1.0]), &p)
            .is_err()
        );
    }

    #[test]
    fn choose_arm_follows_the_weights() {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        let w = [0.7, 0.2, 0.1];
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            let (i, p) = choose_arm(&w, &mut rng).unwrap();
            assert!((p - w[i]).abs() < 1e-12);
            counts[i] += 1;
        }
        for (c, w) in counts.iter().zip(w) {
            // 5 standard errors of a binomial share.
            let share = f64::from(*c) / 100_000.0;
            assert!(
                (share - w).abs() < 5.0 * (w * (1.0 - w) / 100_000.0).sqrt(),
                "{share} vs {w}"
            );
        }
        assert!(choose_arm(&[], &mut rng).is_err());
        assert!(choose_arm(&[0.0, 0.0], &mut rng).is_err());
        assert_eq!(choose_arm(&[0.0, 1.0], &mut rng).unwrap().0, 1);
    }
}

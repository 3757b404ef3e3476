//! The stop rule: nothing before a minimum duration; then stop when an arm is best (or beats
//! the control) with enough probability, or when little value remains.

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::arms::Arm;

/// When an experiment may stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StopRule {
    /// No decision before this many days (weekly cycles differ: default 14).
    pub min_days: f64,
    /// Stop when an arm's P(best) — or, with a control arm, P(beats control) — reaches this
    /// (default 0.95).
    pub probability: f64,
    /// Stop when the 95th percentile of value remaining is below this fraction of the
    /// champion's rate (default 0.01).
    pub value_remaining: f64,
}

impl Default for StopRule {
    fn default() -> StopRule {
        StopRule {
            min_days: 14.0,
            probability: 0.95,
            value_remaining: 0.01,
        }
    }
}

/// What to do, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Stop the experiment.
    pub stop: bool,
    /// Why, in a sentence.
    pub reason: String,
    /// The winning arm's label, when stopping picked one.
    pub winner: Option<String>,
    /// Set when a number the decision rests on lies within the Monte Carlo error of its
    /// threshold: how sure the estimate is, and what to do about it.
    pub uncertain: Option<String>,
}

/// Standard errors within which an estimate counts as "at the threshold".
const NEAR: f64 = 3.0;

impl StopRule {
    /// The decision for an experiment `age_days` old whose arms gave `analysis`.
    pub fn decide(&self, arms: &[Arm], analysis: &Analysis, age_days: f64) -> Decision {
        let label = |i: usize| {
            arms.get(i)
                .map_or_else(|| format!("#{i}"), |a| a.label.clone())
        };
        let mut notes = Vec::new();
        // The probability the rule looks at: P(beats control) of the best challenger with a
        // control, P(best) of the champion without.
        let (arm, p, what) = match (&analysis.p_beats_control, analysis.control) {
            (Some(beats), Some(c)) => {
                let best = (0..beats.len())
                    .filter(|&i| i != c)
                    .max_by(|&a, &b| beats[a].total_cmp(&beats[b]))
                    .unwrap_or(analysis.champion);
                (best, beats[best], "P(beats control)")
            }
            _ => (
                analysis.champion,
                analysis.p_best[analysis.champion],
                "P(best)",
            ),
        };
        let se = (p * (1.0 - p) / analysis.draws as f64).sqrt();
        if se > 0.0 && ((p - self.probability) / se).abs() < NEAR {
            notes.push(format!(
                "{what} of {} is {p:.4} ± {se:.4} (Monte Carlo standard error), within {NEAR} standard errors of {}: run again with more draws to be sure",
                label(arm),
                self.probability
            ));
        }
        let vr = analysis.value_remaining_p95;
        let (lo, hi) = analysis.value_remaining_p95_interval;
        if lo <= self.value_remaining && self.value_remaining <= hi {
            notes.push(format!(
                "the 95th percentile of value remaining is {vr:.4} (95% interval {lo:.4} to {hi:.4}), which includes the threshold {}: run again with more draws to be sure",
                self.value_remaining
            ));
        }
        let uncertain = (!notes.is_empty()).then(|| notes.join("; "));
        if age_days < self.min_days {
            return Decision {
                stop: false,
                reason: format!(
                    "continue: {age_days:.1} of the minimum {} days have passed",
                    self.min_days
                ),
                winner: None,
                uncertain,
            };
        }
        if p >= self.probability {
            return Decision {
                stop: true,
                reason: format!(
                    "stop: {what} of {} is {p:.4}, at least {}",
                    label(arm),
                    self.probability
                ),
                winner: Some(label(arm)),
                uncertain,
            };
        }
        if vr < self.value_remaining {
            return Decision {
                stop: true,
                reason: format!(
                    "stop: the 95th percentile of value remaining is {vr:.4} of the champion {}'s rate, below {}: no arm is likely to be materially better",
                    label(analysis.champion),
                    self.value_remaining
                ),
                winner: Some(label(analysis.champion)),
                uncertain,
            };
        }
        Decision {
            stop: false,
            reason: format!(
                "continue: {what} of {} is {p:.4} (below {}) and the 95th percentile of value remaining is {vr:.4} (not below {})",
                label(arm),
                self.probability,
                self.value_remaining
            ),
            winner: None,
            uncertain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(p_best: [f64; 2], vr: f64, draws: usize) -> Analysis {
        Analysis {
            draws,
            p_best: p_best.to_vec(),
            p_best_se: p_best
                .iter()
                .map(|p| (p * (1.0 - p) / draws as f64).sqrt())
                .collect(),
            champion: if p_best[1] > p_best[0] { 1 } else { 0 },
            control: None,
            p_beats_control: None,
            value_remaining_p95: vr,
            value_remaining_p95_interval: (vr * 0.98, vr * 1.02),
            credible: vec![(0.0, 1.0); 2],
        }
    }

    fn arms() -> Vec<Arm> {
        vec![Arm::new("old", 40.0, 1000.0), Arm::new("new", 55.0, 1000.0)]
    }

    #[test]
    fn nothing_before_the_minimum_duration() {
        let d = StopRule::default().decide(&arms(), &analysis([0.0, 1.0], 0.0, 100_000), 13.9);
        assert!(
            !d.stop && d.reason.contains("minimum 14 days"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn probability_at_above_and_below_the_threshold() {
        let rule = StopRule::default();
        let at = rule.decide(&arms(), &analysis([0.05, 0.95], 0.5, 1_000_000), 20.0);
        assert!(at.stop && at.winner.as_deref() == Some("new"), "{at:?}");
        let above = rule.decide(&arms(), &analysis([0.0499, 0.9501], 0.5, 1_000_000), 20.0);
        assert!(above.stop);
        let below = rule.decide(&arms(), &analysis([0.0501, 0.9499], 0.5, 1_000_000), 20.0);
        assert!(
            !below.stop && below.reason.starts_with("continue"),
            "{below:?}"
        );
        // Near the threshold the decision says how sure it is.
        assert!(
            below
                .uncertain
                .as_deref()
                .is_some_and(|u| u.contains("standard error"))
        );
        let far = rule.decide(&arms(), &analysis([0.3, 0.7], 0.5, 1_000_000), 20.0);
        assert!(far.uncertain.is_none(), "{far:?}");
    }

    #[test]
    fn value_remaining_at_above_and_below_the_threshold() {
        let rule = StopRule::default();
        let below = rule.decide(&arms(), &analysis([0.4, 0.6], 0.0099, 100_000), 20.0);
        assert!(
            below.stop && below.reason.contains("value remaining"),
            "{below:?}"
        );
        assert_eq!(below.winner.as_deref(), Some("new"));
        let at = rule.decide(&arms(), &analysis([0.4, 0.6], 0.01, 100_000), 20.0);
        assert!(!at.stop, "the threshold itself is not below it");
        assert!(at.uncertain.is_some(), "0.01 lies in its own interval");
        let above = rule.decide(&arms(), &analysis([0.4, 0.6], 0.0101, 100_000), 20.0);
        assert!(!above.stop);
    }

    #[test]
    fn with_a_control_the_rule_looks_at_beating_it() {
        let mut a = analysis([0.5, 0.5], 0.5, 100_000);
        a.control = Some(0);
        a.p_beats_control = Some(vec![0.0, 0.97]);
        let mut arms = arms();
        arms[0].control = true;
        let d = StopRule::default().decide(&arms, &a, 30.0);
        assert!(
            d.stop && d.reason.contains("P(beats control) of new"),
            "{d:?}"
        );
    }
}

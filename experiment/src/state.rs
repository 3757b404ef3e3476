//! An experiment's state (serde JSON, resumable) and its report.

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Evaluator};
use crate::arms::{Arm, Prior, check_arms};
use crate::decision::{Decision, StopRule};
use crate::error::{Error, Result};
use crate::policy::WeightPolicy;

fn one() -> f64 {
    1.0
}

/// A running experiment: its arms' (possibly discounted) counts and its settings. Saved as
/// JSON between reweightings and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The arms.
    pub arms: Vec<Arm>,
    /// The prior of every arm.
    #[serde(default)]
    pub prior: Prior,
    /// How P(best) becomes traffic.
    #[serde(default)]
    pub weights: WeightPolicy,
    /// When to stop.
    #[serde(default)]
    pub rule: StopRule,
    /// The day it started (`YYYY-MM-DD`, UTC), for the minimum duration.
    #[serde(default)]
    pub started: Option<String>,
    /// Each new batch first multiplies the history by this (1: no discounting; 0.9 halves the
    /// weight of data in about 6.6 batches): for rates that drift.
    #[serde(default = "one")]
    pub discount: f64,
    /// Batches added so far.
    #[serde(default)]
    pub batches: u64,
}

impl Experiment {
    /// An experiment over `arms` with default settings.
    ///
    /// # Errors
    /// Invalid arms.
    pub fn new(arms: Vec<Arm>) -> Result<Experiment> {
        check_arms(&arms)?;
        Ok(Experiment {
            arms,
            prior: Prior::default(),
            weights: WeightPolicy::default(),
            rule: StopRule::default(),
            started: None,
            discount: 1.0,
            batches: 0,
        })
    }

    /// Adds a batch of (successes, trials) per arm, matched by label (a new label adds an
    /// arm); the history is discounted first.
    ///
    /// # Errors
    /// Invalid counts, or a discount outside (0, 1].
    pub fn add_batch(&mut self, batch: &[Arm]) -> Result<()> {
        if !(self.discount > 0.0 && self.discount <= 1.0) {
            return Err(Error::Experiment(format!(
                "discount {} is not in (0, 1]",
                self.discount
            )));
        }
        for b in batch {
            b.check()?;
        }
        for a in &mut self.arms {
            a.successes *= self.discount;
            a.trials *= self.discount;
        }
        for b in batch {
            match self.arms.iter_mut().find(|a| a.label == b.label) {
                Some(a) => {
                    a.successes += b.successes;
                    a.trials += b.trials;
                    a.control |= b.control;
                }
                None => self.arms.push(b.clone()),
            }
        }
        self.batches += 1;
        check_arms(&self.arms)
    }

    /// The state as JSON.
    ///
    /// # Errors
    /// Never in practice (serde_json's error type).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// A state saved with [`to_json`](Self::to_json).
    ///
    /// # Errors
    /// Not JSON of an experiment, or invalid arms.
    pub fn from_json(text: &str) -> Result<Experiment> {
        let e: Experiment = serde_json::from_str(text)?;
        check_arms(&e.arms)?;
        Ok(e)
    }

    /// Analyses the arms (`draws` Monte Carlo draws, `seed`), weighs them and decides, for an
    /// experiment `age_days` old.
    ///
    /// # Errors
    /// Invalid arms or settings.
    pub fn evaluate(
        &self,
        evaluator: &mut Evaluator,
        draws: usize,
        seed: u64,
        age_days: f64,
    ) -> Result<Report> {
        let analysis = evaluator.analyze(&self.arms, self.prior, draws, seed)?;
        let weights = self.weights.weights(&self.arms, &analysis.p_best)?;
        let decision = self.rule.decide(&self.arms, &analysis, age_days);
        Ok(Report::new(
            &self.arms, &analysis, &weights, decision, age_days,
        ))
    }
}

/// One arm's line of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// The label from the input.
    pub arm: String,
    /// Conversions.
    pub successes: f64,
    /// Visits.
    pub trials: f64,
    /// Observed rate.
    pub rate: f64,
    /// The posterior's 95% credible interval of the rate.
    pub credible_95: (f64, f64),
    /// P(arm is best).
    pub p_best: f64,
    /// Its Monte Carlo standard error.
    pub p_best_se: f64,
    /// With a control arm: P(rate > control's rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_beats_control: Option<f64>,
    /// The control arm.
    pub control: bool,
    /// The share of traffic to serve it.
    pub weight: f64,
}

/// What `evaluate` reports (the JSON output's shape: `arms`, `value_remaining`, `decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Per arm.
    pub arms: Vec<ArmReport>,
    /// The champion (highest P(best)).
    pub champion: String,
    /// The 95th percentile of value remaining (relative to the champion's rate) and its 95%
    /// Monte Carlo interval.
    pub value_remaining_p95: f64,
    /// Its interval.
    pub value_remaining_p95_interval: (f64, f64),
    /// Monte Carlo draws made.
    pub draws: usize,
    /// The experiment's age in days.
    pub age_days: f64,
    /// Stop or continue, and why.
    pub decision: Decision,
}

impl Report {
    fn new(
        arms: &[Arm],
        a: &Analysis,
        weights: &[f64],
        decision: Decision,
        age_days: f64,
    ) -> Report {
        let arms_out = arms
            .iter()
            .enumerate()
            .map(|(i, arm)| ArmReport {
                arm: arm.label.clone(),
                successes: arm.successes,
                trials: arm.trials,
                rate: arm.rate(),
                credible_95: a.credible[i],
                p_best: a.p_best[i],
                p_best_se: a.p_best_se[i],
                p_beats_control: a.p_beats_control.as_ref().map(|b| b[i]),
                control: arm.control,
                weight: weights[i],
            })
            .collect();
        Report {
            arms: arms_out,
            champion: arms[a.champion].label.clone(),
            value_remaining_p95: a.value_remaining_p95,
            value_remaining_p95_interval: a.value_remaining_p95_interval,
            draws: a.draws,
            age_days,
            decision,
        }
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian; H. Hinnant's
/// `days_from_civil`).
///
/// # Errors
/// Not a valid date.
pub fn days_from_date(date: &str) -> Result<i64> {
    let bad = || Error::Experiment(format!("{date:?} is not a date (YYYY-MM-DD)"));
    let mut it = date.trim().splitn(3, '-');
    let mut part = || {
        it.next()
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (part()?, part()?, part()?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return Err(bad());
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_date("1970-01-01").unwrap(), 0);
        assert_eq!(days_from_date("2000-03-01").unwrap(), 11_017);
        assert_eq!(
            days_from_date("2026-01-01").unwrap() - days_from_date("2025-12-18").unwrap(),
            14
        );
        assert!(days_from_date("2026-02-29").is_err());
        assert!(days_from_date("2024-02-29").is_ok());
        assert!(days_from_date("yesterday").is_err());
    }

    #[test]
    fn batches_add_up_and_discount_the_past() {
        let mut e =
            Experiment::new(vec![Arm::new("a", 10.0, 100.0), Arm::new("b", 5.0, 100.0)]).unwrap();
        e.add_batch(&[Arm::new("a", 1.0, 10.0), Arm::new("c", 2.0, 20.0)])
            .unwrap();
        assert_eq!(e.arms[0].trials, 110.0);
        assert_eq!(e.arms[2].label, "c");
        e.discount = 0.5;
        e.add_batch(&[Arm::new("b", 0.0, 10.0)]).unwrap();
        assert_eq!(e.arms[0].trials, 55.0);
        assert_eq!(e.arms[1].trials, 60.0);
        let back = Experiment::from_json(&e.to_json().unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(e.add_batch(&[Arm::new("a", 5.0, 1.0)]).is_err());
    }
}

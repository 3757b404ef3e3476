//! Arms, priors, posteriors and counts files.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A Beta(alpha, beta) prior on every arm's conversion rate (default Beta(1, 1), uniform).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Prior successes + 1.
    pub alpha: f64,
    /// Prior failures + 1.
    pub beta: f64,
}

impl Default for Prior {
    fn default() -> Prior {
        Prior {
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// One arm (a variation of the page) and what it has seen. Counts are real numbers so that
/// discounted history (older batches weigh less) fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// The label from the input.
    pub label: String,
    /// Conversions.
    pub successes: f64,
    /// Visits.
    pub trials: f64,
    /// The control arm (at most one per experiment).
    #[serde(default)]
    pub control: bool,
}

/// A Beta distribution's parameters: an arm's posterior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    /// Alpha.
    pub alpha: f64,
    /// Beta.
    pub beta: f64,
}

impl Posterior {
    /// The posterior mean: the estimated rate.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// The posterior standard deviation.
    pub fn sd(&self) -> f64 {
        let s = self.alpha + self.beta;
        (self.alpha * self.beta / (s * s * (s + 1.0))).sqrt()
    }
}

impl Arm {
    /// A new arm.
    pub fn new(label: impl Into<String>, successes: f64, trials: f64) -> Arm {
        Arm {
            label: label.into(),
            successes,
            trials,
            control: false,
        }
    }

    /// Marks it as the control arm.
    pub fn control(mut self) -> Arm {
        self.control = true;
        self
    }

    /// The posterior after its counts: Beta(alpha + successes, beta + trials − successes).
    pub fn posterior(&self, prior: Prior) -> Posterior {
        Posterior {
            alpha: prior.alpha + self.successes,
            beta: prior.beta + (self.trials - self.successes),
        }
    }

    /// The observed rate (0 without trials).
    pub fn rate(&self) -> f64 {
        if self.trials > 0.0 {
            self.successes / self.trials
        } else {
            0.0
        }
    }

    /// Checks the counts.
    ///
    /// # Errors
    /// Negative or non-finite counts, or more successes than trials.
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Error::Arm {
            arm: self.label.clone(),
            message: m.to_string(),
        };
        if !(self.successes.is_finite() && self.trials.is_finite()) {
            return Err(bad("counts must be finite numbers"));
        }
        if self.successes < 0.0 || self.trials < 0.0 {
            return Err(bad("counts cannot be negative"));
        }
        if self.successes > self.trials {
            return Err(bad(&format!(
                "{} successes out of {} trials",
                self.successes, self.trials
            )));
        }
        Ok(())
    }
}

/// Checks a set of arms: at least two, unique labels, at most one control, valid counts.
///
/// # Errors
/// [`Error::Experiment`] or [`Error::Arm`].
pub fn check_arms(arms: &[Arm]) -> Result<()> {
    if arms.len() < 2 {
        return Err(Error::Experiment(format!(
            "an experiment needs at least two arms, got {}",
            arms.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for a in arms {
        a.check()?;
        if !seen.insert(a.label.as_str()) {
            return Err(Error::Experiment(format!(
                "arm {:?} appears twice",
                a.label
            )));
        }
    }
    if arms.iter().filter(|a| a.control).count() > 1 {
        return Err(Error::Experiment("more than one control arm".into()));
    }
    Ok(())
}

/// Parses counts: lines `arm,successes,trials[,control]` (a header line naming the columns
/// is skipped; `control` is `true`/`false`, `1`/`0`, `yes`/`no` or empty). `source_name`
/// names the input in errors.
///
/// # Errors
/// [`Error::Counts`] naming the line; then the checks of [`check_arms`].
pub fn parse_counts(text: &str, source_name: &str) -> Result<Vec<Arm>> {
    let mut arms = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |m: String| Error::Counts {
            source_name: source_name.to_string(),
            line: i + 1,
            message: m,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if arms.is_empty()
            && fields
                .get(1)
                .is_some_and(|f| f.eq_ignore_ascii_case("successes"))
        {
            continue; // the header
        }
        if !(3..=4).contains(&fields.len()) {
            return Err(bad(format!(
                "expected arm,successes,trials[,control], got {} fields",
                fields.len()
            )));
        }
        let number = |f: &str, what: &str| {
            f.parse::<f64>()
                .map_err(|_| bad(format!("{what} {f:?} is not a number")))
        };
        let control = match fields.get(3).map(|f| f.to_ascii_lowercase()) {
            None => false,
            Some(f) => match f.as_str() {
                "" | "false" | "0" | "no" | "f" => false,
                "true" | "1" | "yes" | "t" => true,
                other => return Err(bad(format!("control {other:?}: expected true or false"))),
            },
        };
        let arm = Arm {
            label: fields[0].to_string(),
            successes: number(fields[1], "successes")?,
            trials: number(fields[2], "trials")?,
            control,
        };
        arm.check().map_err(|e| bad(e.to_string()))?;
        arms.push(arm);
    }
    check_arms(&arms)?;
    Ok(arms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_posterior_is_beta_of_successes_plus_one_and_failures_plus_one() {
        let p = Arm::new("a", 3.0, 10.0).posterior(Prior::default());
        assert_eq!((p.alpha, p.beta), (4.0, 8.0));
        let p = Arm::new("a", 0.0, 0.0).posterior(Prior {
            alpha: 2.0,
            beta: 5.0,
        });
        assert_eq!((p.alpha, p.beta), (2.0, 5.0));
        assert!((Arm::new("a", 1.0, 2.0).posterior(Prior::default()).mean() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn counts_parse_with_header_control_and_errors_naming_the_line() {
        let arms = parse_counts(
            "arm,successes,trials,control\nold,40,1000,true\nnew, 50 ,1000,\n",
            "c.csv",
        )
        .unwrap();
        assert_eq!(arms.len(), 2);
        assert!(arms[0].control && !arms[1].control);
        assert_eq!(arms[1].successes, 50.0);
        let e = parse_counts("a,1,10\nb,11,10\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.csv line 2") && e.contains("11 successes out of 10"),
            "{e}"
        );
        let e = parse_counts("a,x,10\nb,1,10\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("\"x\""), "{e}");
        let e = parse_counts("a,1,10\n", "c.csv").unwrap_err().to_string();
        assert!(e.contains("at least two arms"), "{e}");
        let e = parse_counts("a,1,10\na,2,10\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse_counts("a,1,10,true\nb,2,10,yes\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one control"), "{e}");
    }
}

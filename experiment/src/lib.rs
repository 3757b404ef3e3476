//! Online experiments with a Bayesian multi-armed bandit, after S. L. Scott, "A Modern
//! Bayesian Look at the Multi-armed Bandit" (2010): randomized probability matching
//! (Thompson sampling) serves each variation with the probability that it is the best, and
//! the experiment stops by "value remaining" instead of a significance test.
//!
//! - [`Arm`]s are binomial with a Beta [`Prior`] (default Beta(1, 1)); after x successes in
//!   n trials the posterior is Beta(x + 1, n − x + 1). Counts come in batches per arm
//!   ([`Experiment::add_batch`]), optionally discounting older data.
//! - [`Evaluator::analyze`]: P(arm is best) by seeded Monte Carlo draws with its standard
//!   error, P(beats control) when an arm is marked control, and the 95th percentile of
//!   value remaining; [`exact_p_best`] integrates P(best) numerically (a test oracle, and an
//!   answer for small problems).
//! - [`WeightPolicy::weights`]: serving weights = P(best), with a floor per arm and a burn-in;
//!   [`choose_arm`] picks the arm for a visit and the probability it was served with.
//! - [`StopRule::decide`]: nothing before a minimum duration (14 days); then stop when an
//!   arm's P(best) (or P(beats control)) reaches 0.95, or when the 95th percentile of value
//!   remaining falls below 1% of the champion's rate; near a threshold the decision says how
//!   sure the Monte Carlo estimate is.
//! - [`simulate()`]: many synthetic experiments with the bandit and with a classical
//!   fixed-horizon test sized by a power calculation: days to a decision, conversions lost,
//!   how often the best arm wins. Feature `plot`: SVG pictures of both ([`plot`]).
//!
//! ```
//! use bayes_bandit::{Arm, Evaluator, Experiment};
//!
//! let mut experiment = Experiment::new(vec![
//!     Arm::new("old page", 40.0, 1000.0).control(),
//!     Arm::new("new page", 62.0, 1000.0),
//! ])?;
//! experiment.add_batch(&[Arm::new("old page", 35.0, 900.0), Arm::new("new page", 58.0, 900.0)])?;
//! let report = experiment.evaluate(&mut Evaluator::new(), 20_000, 7, 21.0)?;
//! assert!(report.arms[1].p_best > 0.99);
//! assert!(report.decision.stop, "{}", report.decision.reason);
//! assert_eq!(report.decision.winner.as_deref(), Some("new page"));
//! # Ok::<(), bayes_bandit::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod analysis;
mod arms;
mod decision;
mod error;
#[cfg(feature = "plot")]
pub mod plot;
mod policy;
mod simulate;
mod state;

pub use analysis::{
    Analysis, Evaluator, VALUE_REMAINING_QUANTILE, credible_interval, exact_p_best, posteriors,
};
pub use arms::{Arm, Posterior, Prior, check_arms, parse_counts};
pub use decision::{Decision, StopRule};
pub use error::{Error, Result};
pub use policy::{WeightPolicy, choose_arm};
pub use simulate::{DesignSummary, SimConfig, Simulation, Spread, simulate, visits_per_arm};
pub use state::{ArmReport, Experiment, Report, days_from_date};

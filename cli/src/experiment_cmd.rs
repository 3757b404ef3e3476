//! `experiment`: evaluate an online experiment with the Bayesian bandit of `bayes-bandit`
//! (P(best), serving weights, value remaining, a stop decision with its reason), keep its
//! state between reweightings, and simulate the bandit against a fixed-horizon test.
//!
//! Exit status: 0, 1 (bad input: counts, state, the warehouse), 2 (bad usage).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bayes_bandit::{
    Arm, Evaluator, Experiment, Report, SimConfig, Simulation, StopRule, WeightPolicy,
    days_from_date, parse_counts, simulate,
};

/// Flags of `experiment`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "experiment",
    version,
    about = "Online experiments with a Bayesian multi-armed bandit"
)]
pub struct ExperimentArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON (`arms`: `arm`, `successes`, `trials`, `p_best`, `weight`, ...; `decision`:
    /// `stop`, `reason`, ...).
    Json,
}

/// Where the counts come from.
#[derive(Debug, Clone, clap::Args)]
pub struct Input {
    /// Counts: lines `arm,successes,trials[,control]` (a header line is skipped).
    #[arg(long, value_name = "FILE.csv")]
    pub counts: Option<PathBuf>,
    /// Read the counts from this warehouse (`postgres://`, `redshift://`, `sqlite://PATH`)
    /// with `--sql`.
    #[arg(long, value_name = "URL", requires = "sql")]
    pub warehouse: Option<String>,
    /// A query returning `arm, successes, trials[, control]`.
    #[arg(long, value_name = "SQL", requires = "warehouse")]
    pub sql: Option<String>,
}

/// The stop rule and weights' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Rules {
    /// No decision before this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 14.0)]
    pub min_days: f64,
    /// Stop when an arm's P(best) (or, with a control, P(beats control)) reaches this.
    #[arg(long, value_name = "P", default_value_t = 0.95)]
    pub threshold: f64,
    /// Stop when the 95th percentile of value remaining is below this fraction of the
    /// champion's rate.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01)]
    pub value_remaining: f64,
    /// Every arm's minimum share of traffic.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub floor: f64,
    /// Equal shares until every arm has this many trials.
    #[arg(long, value_name = "TRIALS", default_value_t = 0.0)]
    pub burn_in: f64,
}

impl Rules {
    fn apply(&self, e: &mut Experiment) {
        e.rule = StopRule {
            min_days: self.min_days,
            probability: self.threshold,
            value_remaining: self.value_remaining,
        };
        e.weights = WeightPolicy {
            floor: self.floor,
            burn_in_trials: self.burn_in,
        };
    }
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Per arm: trials, rate, 95% credible interval, P(best), weight; then value remaining
    /// and the decision with its reason.
    Evaluate {
        /// The counts (or `--state`).
        #[command(flatten)]
        input: Input,
        /// A saved state to evaluate instead of counts (see `update`).
        #[arg(long, value_name = "FILE.json", conflicts_with_all = ["counts", "warehouse"])]
        state: Option<PathBuf>,
        /// The day the experiment started (`YYYY-MM-DD`); a state's own date otherwise.
        #[arg(long, value_name = "DATE")]
        started: Option<String>,
        /// The day of the evaluation [default: today, UTC].
        #[arg(long, value_name = "DATE")]
        today: Option<String>,
        /// Settings of the rule and the weights (with `--state`, the state's own are used
        /// unless given here).
        #[command(flatten)]
        rules: Rules,
        /// Monte Carlo draws.
        #[arg(long, default_value_t = 100_000)]
        draws: usize,
        /// Seed of the draws (the same seed gives the same output).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Draw the arms' posterior densities into this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Adds a batch of counts to a saved state (created when missing), discounting the past.
    Update {
        /// The state file (JSON).
        #[arg(long, value_name = "FILE.json")]
        state: PathBuf,
        /// The batch.
        #[command(flatten)]
        input: Input,
        /// Multiply the history by this before adding the batch (1: no discounting).
        #[arg(long, value_name = "FACTOR")]
        discount: Option<f64>,
        /// The day the experiment started, for a new state (`YYYY-MM-DD`).
        #[arg(long, value_name = "DATE")]
        started: Option<String>,
    },
    /// Many synthetic experiments with the bandit and with a fixed-horizon test sized by a
    /// power calculation: days to a decision, conversions lost, how often the best arm won.
    Simulate {
        /// The arms' true rates, comma-separated; the first is the control of the test.
        #[arg(long, value_name = "R,R,...", value_delimiter = ',', default_values_t = [0.04, 0.05])]
        rates: Vec<f64>,
        /// Visits a day.
        #[arg(long, default_value_t = 100)]
        visits_per_day: u32,
        /// Reweightings a day.
        #[arg(long, default_value_t = 2)]
        updates_per_day: u32,
        /// Days counted (the experiment, then its choice).
        #[arg(long, default_value_t = 365)]
        horizon_days: u32,
        /// Simulated experiments per design.
        #[arg(long, default_value_t = 200)]
        runs: u32,
        /// Monte Carlo draws per reweighting.
        #[arg(long, default_value_t = 1000)]
        draws: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The bandit's rule and weights.
        #[command(flatten)]
        rules: Rules,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Draw traffic shares and conversions lost per day into this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
}

/// Runs the command.
pub fn run(args: ExperimentArgs) -> ExitCode {
    lifecycle::logging::init(lifecycle::logging::LogFormat::Text);
    match run_command(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("experiment: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn today() -> anyhow::Result<i64> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    Ok(i64::try_from(secs / 86_400)?)
}

fn read_arms(input: &Input) -> anyhow::Result<Vec<Arm>> {
    match (&input.counts, &input.warehouse, &input.sql) {
        (Some(path), None, None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(parse_counts(&text, &path.display().to_string())?)
        }
        (None, Some(url), Some(sql)) => {
            let (names, rows) = crate::query::fetch(url, sql, 10_000)?;
            if !(3..=4).contains(&names.len()) {
                bail!(
                    "--sql returned columns {names:?}: expected arm, successes, trials[, control]"
                );
            }
            let mut arms = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                let field = |j: usize| row.get(j).cloned().flatten().unwrap_or_default();
                let number = |j: usize| {
                    field(j).parse::<f64>().with_context(|| {
                        format!(
                            "--sql row {}: column {} {:?} is not a number",
                            i + 1,
                            names[j],
                            field(j)
                        )
                    })
                };
                let control = match field(3).to_ascii_lowercase().as_str() {
                    "" | "false" | "f" | "0" | "no" => false,
                    "true" | "t" | "1" | "yes" => true,
                    other => bail!(
                        "--sql row {}: control {other:?} is not true or false",
                        i + 1
                    ),
                };
                let arm = Arm {
                    label: field(0),
                    successes: number(1)?,
                    trials: number(2)?,
                    control,
                };
                arm.check()
                    .with_context(|| format!("--sql row {}", i + 1))?;
                arms.push(arm);
            }
            bayes_bandit::check_arms(&arms)?;
            Ok(arms)
        }
        (None, None, None) => bail!("give --counts FILE.csv or --warehouse URL --sql SQL"),
        _ => bail!("give either --counts or --warehouse with --sql, not both"),
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Evaluate {
            input,
            state,
            started,
            today: on,
            rules,
            draws,
            seed,
            format,
            plot,
        } => {
            let mut experiment = match &state {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Experiment::from_json(&text)
                        .with_context(|| format!("state {}", path.display()))?
                }
                None => {
                    let mut e = Experiment::new(read_arms(&input)?)?;
                    rules.apply(&mut e);
                    e
                }
            };
            if let Some(s) = started {
                days_from_date(&s)?;
                experiment.started = Some(s);
            }
            let now = match on {
                Some(d) => days_from_date(&d)?,
                None => today()?,
            };
            let age = match &experiment.started {
                Some(s) => (now - days_from_date(s)?) as f64,
                None => {
                    bail!("give --started DATE: the minimum duration needs the experiment's age")
                }
            };
            let report = experiment.evaluate(&mut Evaluator::new(), draws, seed, age)?;
            if let Some(path) = plot {
                write_posteriors(&experiment, &path)?;
            }
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => print!("{}", report_table(&report)),
            }
            Ok(())
        }
        Command::Update {
            state,
            input,
            discount,
            started,
        } => {
            let batch = read_arms(&input)?;
            let mut experiment = if state.exists() {
                let text = std::fs::read_to_string(&state)
                    .with_context(|| format!("cannot read {}", state.display()))?;
                let mut e = Experiment::from_json(&text)
                    .with_context(|| format!("state {}", state.display()))?;
                e.add_batch(&batch)?;
                e
            } else {
                let mut e = Experiment::new(batch)?;
                e.batches = 1;
                e
            };
            if let Some(d) = discount {
                experiment.discount = d;
            }
            if let Some(s) = started {
                days_from_date(&s)?;
                experiment.started = Some(s);
            }
            let tmp = state.with_extension("json.tmp");
            std::fs::write(&tmp, experiment.to_json()?)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &state)
                .with_context(|| format!("cannot replace {}", state.display()))?;
            println!(
                "{}: {} arms, {} batches",
                state.display(),
                experiment.arms.len(),
                experiment.batches
            );
            Ok(())
        }
        Command::Simulate {
            rates,
            visits_per_day,
            updates_per_day,
            horizon_days,
            runs,
            draws,
            seed,
            rules,
            format,
            plot,
        } => {
            let config = SimConfig {
                rates,
                visits_per_day,
                updates_per_day,
                horizon_days,
                runs,
                draws,
                seed,
                rule: StopRule {
                    min_days: rules.min_days,
                    probability: rules.threshold,
                    value_remaining: rules.value_remaining,
                },
                weights: WeightPolicy {
                    floor: rules.floor,
                    burn_in_trials: rules.burn_in,
                },
                ..SimConfig::default()
            };
            let sim = simulate(&config)?;
            if let Some(path) = plot {
                write_simulation(&sim, &path)?;
            }
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&sim)?),
                Format::Table => print!("{}", simulation_table(&sim)),
            }
            Ok(())
        }
    }
}

fn write_posteriors(e: &Experiment, path: &Path) -> anyhow::Result<()> {
    bayes_bandit::plot::posteriors(&e.arms, e.prior, path)?;
    Ok(())
}

fn write_simulation(sim: &Simulation, path: &Path) -> anyhow::Result<()> {
    bayes_bandit::plot::simulation(sim, path)?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The report as aligned text.
pub fn report_table(r: &Report) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "arm".into(),
        "trials".into(),
        "rate".into(),
        "95% interval".into(),
        "P(best)".into(),
        if r.arms.iter().any(|a| a.control) {
            "P(beats control)".into()
        } else {
            String::new()
        },
        "weight".into(),
    ]];
    for a in &r.arms {
        rows.push([
            if a.control {
                format!("{} (control)", a.arm)
            } else {
                a.arm.clone()
            },
            format!("{}", a.trials),
            pct(a.rate),
            format!("{} to {}", pct(a.credible_95.0), pct(a.credible_95.1)),
            format!("{:.4}", a.p_best),
            a.p_beats_control
                .map(|p| format!("{p:.4}"))
                .unwrap_or_default(),
            format!("{:.4}", a.weight),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .filter(|(_, w)| **w > 0)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "\nvalue remaining (95th percentile): {} of the champion {}'s rate (Monte Carlo interval {} to {}; {} draws)\n",
        pct(r.value_remaining_p95),
        r.champion,
        pct(r.value_remaining_p95_interval.0),
        pct(r.value_remaining_p95_interval.1),
        r.draws
    ));
    out.push_str(&format!(
        "age: {} days\ndecision: {}\n",
        r.age_days, r.decision.reason
    ));
    if let Some(u) = &r.decision.uncertain {
        out.push_str(&format!("note: {u}\n"));
    }
    out
}

/// A simulation's summary as aligned text.
pub fn simulation_table(s: &Simulation) -> String {
    let c = &s.config;
    let spread = |x: &bayes_bandit::Spread, digits: usize| {
        format!(
            "{:.d$} ({:.d$} to {:.d$})",
            x.median,
            x.p10,
            x.p90,
            d = digits
        )
    };
    let mut out = format!(
        "rates {:?}, {} visits a day, {} reweightings a day, {} runs per design, {}-day horizon\n\
         fixed-horizon test: {} visits per arm (alpha {}, power {}), {} days\n\n",
        c.rates,
        c.visits_per_day,
        c.updates_per_day,
        c.runs,
        c.horizon_days,
        s.classical_visits_per_arm,
        c.alpha,
        c.power,
        s.classical_days
    );
    out.push_str("median (10th to 90th percentile)  bandit                 fixed horizon\n");
    for (name, b, f) in [
        (
            "days to a decision",
            spread(&s.bandit.days, 1),
            spread(&s.classical.days, 1),
        ),
        (
            "conversions lost, experiment",
            spread(&s.bandit.lost_during, 1),
            spread(&s.classical.lost_during, 1),
        ),
        (
            "conversions lost, horizon",
            spread(&s.bandit.lost_horizon, 1),
            spread(&s.classical.lost_horizon, 1),
        ),
    ] {
        out.push_str(&format!("{name:<33}  {b:<22} {f}\n"));
    }
    out.push_str(&format!(
        "{:<33}  {:<22} {}\n{:<33}  {:<22} {}\n",
        "best arm chosen",
        pct(s.bandit.best_chosen),
        pct(s.classical.best_chosen),
        "no decision within the horizon",
        pct(s.bandit.undecided),
        pct(s.classical.undecided)
    ));
    out
}

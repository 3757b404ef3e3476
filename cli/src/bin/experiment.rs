//! `experiment`: online experiments with a Bayesian multi-armed bandit. See
//! `cli::experiment_cmd`.

fn main() -> std::process::ExitCode {
    cli::experiment_cmd::run(lifecycle::parse("experiment"))
}

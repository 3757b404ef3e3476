//! `baldr`: pack, print, count and verify Baldr record files. See `cli::baldr_cmd`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    cli::baldr_cmd::run(cli::baldr_cmd::Args::parse())
}

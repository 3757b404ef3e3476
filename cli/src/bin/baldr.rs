//! `baldr`: pack, print, count and verify Baldr record files. See `cli::baldr_cmd`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    lifecycle::logging::init(lifecycle::logging::LogFormat::Text);
    cli::baldr_cmd::run(cli::baldr_cmd::Args::parse())
}

//! `report-fetcher`: fetch, convert and upload reports as independent state machines.
//! See `examples::report_fetcher`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    examples::report_fetcher::run(&examples::report_fetcher::Args::parse()).map(drop)
}

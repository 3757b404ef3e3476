//! `report-fetcher`: fetch, convert and upload reports as independent state machines.
//! See `examples::report_fetcher`.

fn main() -> std::process::ExitCode {
    examples::report_fetcher::main(lifecycle::parse("report-fetcher"))
}

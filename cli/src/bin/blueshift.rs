//! `blueshift`: watch object storage and load directories of data files into the warehouse
//! with upserts. See `cli::blueshift_cmd`.

fn main() -> std::process::ExitCode {
    cli::blueshift_cmd::run(lifecycle::parse("blueshift"))
}

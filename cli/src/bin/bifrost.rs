//! `bifrost`: archive Kafka topics to object storage as Baldr files. See `cli::bifrost_cmd`.

fn main() -> std::process::ExitCode {
    cli::bifrost_cmd::run(lifecycle::parse("bifrost"))
}

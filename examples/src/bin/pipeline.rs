//! `pipeline`: the whole system in one command (syslog -> Kafka -> object storage ->
//! warehouse) on embedded defaults. See `examples::pipeline`.

fn main() -> std::process::ExitCode {
    examples::pipeline::main(lifecycle::parse("pipeline"))
}

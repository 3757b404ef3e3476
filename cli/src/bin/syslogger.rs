//! `syslogger`: syslog over TCP, TLS, UDP and RELP into Kafka. See `cli::syslogger_cmd`.

/// mimalloc: per message, allocations made on a tokio thread are freed on librdkafka's
/// delivery thread, which glibc's malloc serves slowly (benches/README.md#syslogger).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::syslogger_cmd::run(lifecycle::parse("syslogger"))
}

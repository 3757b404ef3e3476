//! `syslogger`: syslog over TCP, TLS, UDP and RELP into Kafka. See `cli::syslogger_cmd`.

fn main() -> std::process::ExitCode {
    cli::syslogger_cmd::run(lifecycle::parse("syslogger"))
}

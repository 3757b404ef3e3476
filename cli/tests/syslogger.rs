//! The `syslogger` binary's contract: exit codes and configuration.

use std::process::Command;

fn syslogger() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syslogger"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SYSLOGGER_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn bad_configuration_exits_2() {
    for args in [
        vec!["--brokers", "127.0.0.1:9"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--timezone",
            "Mars/Olympus",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--topic",
            "x-{nope}",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "-X",
            "novalue",
        ],
        vec!["--listen", "256.0.0.1:0", "--brokers", "127.0.0.1:9"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
    ] {
        let out = syslogger().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn flags_come_from_variables_too() {
    let out = syslogger()
        .env("SYSLOGGER_LISTEN", "127.0.0.1:0")
        .env("SYSLOGGER_BROKERS", "127.0.0.1:9")
        .env("SYSLOGGER_TIMEZONE", "Nowhere/Land")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--timezone") && err.contains("Nowhere/Land"),
        "{err}"
    );
}

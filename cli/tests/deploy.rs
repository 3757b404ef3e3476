//! The operator's files under `deploy/`: every systemd unit passes `systemd-analyze verify`
//! without a warning, stops with SIGTERM and waits longer than its service's drain deadline,
//! runs unprivileged and restarts on failure; every example config file parses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The binary a unit starts, as built for this test run.
fn built(name: &str) -> Option<&'static str> {
    match name {
        "blueshift" => Some(env!("CARGO_BIN_EXE_blueshift")),
        "bifrost" => Some(env!("CARGO_BIN_EXE_bifrost")),
        "syslogger" => Some(env!("CARGO_BIN_EXE_syslogger")),
        _ => None,
    }
}

fn units() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no units under deploy/");
    v
}

/// The value of `key=` in a unit (the last one wins, as in systemd).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::trim)
}

#[test]
fn units_verify_and_outwait_the_drain_deadline() {
    let have_analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_analyze {
        assert!(
            !test_services::services_required(),
            "systemd-analyze is not installed and REQUIRE_SERVICES=1"
        );
        eprintln!("skipped units_verify: systemd-analyze is not installed (Debian: systemd)");
    }
    for path in units() {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = setting(&text, "ExecStart").expect("ExecStart");
        let program = exec.split_whitespace().next().unwrap();
        assert_eq!(
            program,
            format!("/usr/local/bin/{name}"),
            "{name}: ExecStart"
        );
        assert!(
            exec.contains(&format!("--config /etc/baldr/{name}.toml")),
            "{exec}"
        );
        assert_eq!(setting(&text, "Restart"), Some("on-failure"), "{name}");
        assert_eq!(setting(&text, "KillSignal"), Some("SIGTERM"), "{name}");
        assert_eq!(
            setting(&text, "RestartPreventExitStatus"),
            Some("2"),
            "{name}"
        );
        let user = setting(&text, "User").expect("User");
        assert_ne!(user, "root", "{name} must run unprivileged");
        let stop: Duration =
            humantime::parse_duration(setting(&text, "TimeoutStopSec").expect("TimeoutStopSec"))
                .unwrap();
        let config = std::fs::read_to_string(deploy_dir().join(format!("{name}.toml"))).unwrap();
        let config: toml::Table = config.parse().unwrap();
        let drain = humantime::parse_duration(
            config
                .get("drain-timeout")
                .and_then(|v| v.as_str())
                .unwrap_or("30s"),
        )
        .unwrap();
        assert!(
            stop > drain,
            "{name}: TimeoutStopSec {stop:?} <= drain-timeout {drain:?}"
        );
        if !have_analyze {
            continue;
        }
        // verify checks that ExecStart's program exists: point it at the built binary.
        let dir = tempfile::tempdir().unwrap();
        let bin = built(&name).unwrap_or_else(|| panic!("no binary known for unit {name}"));
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text.replace(program, bin)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
}

#[test]
fn example_configs_parse() {
    let path = deploy_dir().join("blueshift.toml");
    // The warehouse (with its password) comes from the unit's EnvironmentFile.
    let args: cli::blueshift_cmd::BlueshiftArgs = lifecycle::try_parse_from(
        "blueshift",
        [
            "blueshift",
            "--config",
            path.to_str().unwrap(),
            "--warehouse",
            "redshift://u:p@h:5439/d",
        ],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(args.service.store, "s3://analytics-incoming/blueshift");
    assert_eq!(args.process.drain_timeout, Duration::from_secs(60));
    assert_eq!(args.process.log_format, lifecycle::logging::LogFormat::Json);
}

#[test]
fn bifrost_example_config_parses() {
    let path = deploy_dir().join("bifrost.toml");
    let args: cli::bifrost_cmd::BifrostArgs =
        lifecycle::try_parse_from("bifrost", ["bifrost", "--config", path.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(args.command.is_none());
    let s = &args.service;
    assert_eq!(s.store.as_deref(), Some("s3://analytics-archive"));
    assert_eq!(s.group.as_deref(), Some("bifrost-archiver"));
    assert_eq!(s.topics.as_deref(), Some("logs\\..*|events\\..*"));
    assert_eq!(s.memory_budget, 512 << 20);
    assert_eq!(s.rotate_bytes, 64 << 20);
    assert!(s.tokens);
    assert_eq!(s.kafka_properties.len(), 2);
    assert_eq!(s.finish_timeout, Duration::from_secs(30));
    assert_eq!(args.process.drain_timeout, Duration::from_secs(60));
    assert!(s.finish_timeout < args.process.drain_timeout);
}

#[test]
fn syslogger_example_config_parses() {
    let path = deploy_dir().join("syslogger.toml");
    let args: cli::syslogger_cmd::SysloggerArgs = lifecycle::try_parse_from(
        "syslogger",
        ["syslogger", "--config", path.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(args.service.listen, ["0.0.0.0:1514"]);
    assert_eq!(args.service.relp_listen, ["0.0.0.0:20514"]);
    assert_eq!(args.service.topic, "syslog-{appname}");
    assert_eq!(args.service.format, syslogger::Format::Json);
    assert_eq!(
        args.service.spill_dir.as_deref(),
        Some(Path::new("/var/lib/syslogger"))
    );
    assert_eq!(args.service.kafka_properties.len(), 2);
    assert_eq!(args.process.drain_timeout, Duration::from_secs(60));
    assert_eq!(args.process.log_format, lifecycle::logging::LogFormat::Json);
}

//! Real-world lines (both RFCs, Cisco and Juniper styles, rsyslog's `#012`/`#011` escapes,
//! lines that are not syslog) through the parser and the `json` and `original` formats,
//! against golden files. `UPDATE_GOLDEN=1 cargo test -p syslogger --test corpus` rewrites
//! them (review the diff).

use std::path::PathBuf;

use bytes::BytesMut;
use chrono::{TimeZone, Utc};
use syslogger::{Format, Parser};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Received on 2025-01-01: the corpus's December line is last year's.
fn received() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 30).unwrap()
}

fn render(format: Format) -> String {
    let corpus = std::fs::read_to_string(data("corpus.txt")).unwrap();
    let parser = Parser::new(chrono_tz::Europe::London);
    let mut out = String::new();
    let mut buf = BytesMut::new();
    for line in corpus.lines() {
        let m = parser.parse(line, received());
        syslogger::encode(format, line.as_bytes(), true, &m, received(), &mut buf);
        out.push_str(std::str::from_utf8(&buf.split()).unwrap());
        out.push('\n');
    }
    out
}

fn golden(format: Format, name: &str) {
    let got = render(format);
    let path = data(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{name} line {}", i + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{name}: line count"
    );
}

#[test]
fn json_payloads_match_the_golden_file() {
    golden(Format::Json, "corpus.json.golden");
}

#[test]
fn original_payloads_match_the_golden_file() {
    golden(Format::Original, "corpus.original.golden");
}

#[test]
fn every_line_keeps_its_message_and_only_non_syslog_fails_to_parse() {
    let corpus = std::fs::read_to_string(data("corpus.txt")).unwrap();
    let parser = Parser::default();
    let failed: Vec<&str> = corpus
        .lines()
        .filter(|l| !parser.parse(l, received()).parsed())
        .collect();
    // A year-first RFC 3164 variant and Cisco's sequence-number prefix are beyond
    // syslog_loose: like the lines that are not syslog, they are forwarded whole and
    // counted in syslogger_parse_failures_total.
    assert_eq!(
        failed.len(),
        6,
        "what does not parse is forwarded raw (and counted): {failed:#?}"
    );
    assert!(failed.iter().any(|l| l.starts_with("<189>125: *Mar")));
    assert!(failed.contains(&"1234 a line that starts with digits"));
}

#[test]
fn invalid_utf8_keeps_its_bytes() {
    let frame: &[u8] = b"<14>Oct 11 22:14:15 web1 app: caf\xe9 \xff";
    let lossy = String::from_utf8_lossy(frame);
    let m = Parser::default().parse(&lossy, received());
    let mut buf = BytesMut::new();
    syslogger::encode(Format::Raw, frame, false, &m, received(), &mut buf);
    assert_eq!(&buf[..], frame, "raw: the bytes exactly");
    buf.clear();
    syslogger::encode(Format::Json, frame, false, &m, received(), &mut buf);
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(v["message"], "caf\u{fffd} \u{fffd}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["raw_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, frame, "json: the exact bytes in raw_base64");
}

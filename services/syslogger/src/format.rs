//! Kafka payloads of a syslog frame: the frame's bytes, a JSON object of every field, or the
//! original (Go) syslogger's JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, FixedOffset, SecondsFormat, Timelike, Utc};
use serde::Serialize;

use crate::parse::{Message, facility_name, severity_name};

/// What a Kafka message's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Exactly the frame's bytes (without the octet count or the trailing LF/CRLF/NUL).
    #[default]
    Raw,
    /// A JSON object of every field: `timestamp` (RFC 3339), `host`, `appname`, `procid`,
    /// `msgid`, `facility`, `severity` (names and codes), `protocol`, `structured_data`,
    /// `message`, `received`; `raw_base64` when the frame is not UTF-8.
    Json,
    /// The JSON object of uswitch's Go syslogger: `content`, `facility`, `hostname`,
    /// `priority`, `severity`, `tag`, `timestamp`.
    Original,
}

/// The JSON object of [`Format::Json`].
#[derive(Serialize)]
struct JsonMessage<'a> {
    timestamp: Option<String>,
    host: Option<&'a str>,
    appname: Option<&'a str>,
    procid: Option<String>,
    msgid: Option<&'a str>,
    facility: Option<&'static str>,
    facility_code: Option<u8>,
    severity: Option<&'static str>,
    severity_code: Option<u8>,
    protocol: Option<&'static str>,
    structured_data: BTreeMap<&'a str, BTreeMap<String, String>>,
    message: &'a str,
    received: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
}

/// The JSON object of [`Format::Original`]: a Go `map[string]interface{}` of
/// `jeromer/syslogparser`'s fields, so its keys are sorted.
#[derive(Serialize)]
struct OriginalMessage<'a> {
    content: &'a str,
    facility: u8,
    hostname: &'a str,
    priority: u8,
    severity: u8,
    tag: &'a str,
    timestamp: String,
}

/// RFC 3164 4.3.3: a relay gives a message without a valid PRI the priority 13
/// (user.notice).
const DEFAULT_FACILITY: u8 = 1;
const DEFAULT_SEVERITY: u8 = 5;

/// Appends the payload of `frame` (parsed as `message`, received at `received`) in `format`
/// to `out`. `utf8` says whether `frame` was valid UTF-8 (else `message` borrows from its
/// lossy decoding).
pub fn encode(
    format: Format,
    frame: &[u8],
    utf8: bool,
    message: &Message<'_>,
    received: DateTime<Utc>,
    out: &mut BytesMut,
) {
    match format {
        Format::Raw => out.extend_from_slice(frame),
        Format::Json => {
            let j = JsonMessage {
                timestamp: message
                    .timestamp
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
                host: message.hostname,
                appname: message.appname,
                procid: message.procid.as_ref().map(ToString::to_string),
                msgid: message.msgid,
                facility: message.facility.map(facility_name),
                facility_code: message.facility,
                severity: message.severity.map(severity_name),
                severity_code: message.severity,
                protocol: message.protocol.map(|p| p.as_str()),
                structured_data: message
                    .structured_data
                    .iter()
                    .map(|e| (e.id, e.params().map(|(k, v)| (k.to_string(), v)).collect()))
                    .collect(),
                message: message.message,
                received: received.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                raw_base64: (!utf8)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(frame)),
            };
            write_json(&j, out);
        }
        Format::Original => {
            let (facility, severity) = match (message.facility, message.severity) {
                (Some(f), Some(s)) => (f, s),
                _ => (DEFAULT_FACILITY, DEFAULT_SEVERITY),
            };
            let o = OriginalMessage {
                content: message.message,
                facility,
                hostname: message.hostname.unwrap_or(""),
                priority: facility * 8 + severity,
                severity,
                tag: message.appname.unwrap_or(""),
                timestamp: go_rfc3339_nano(
                    message.timestamp.unwrap_or_else(|| received.fixed_offset()),
                ),
            };
            write_json(&o, out);
        }
    }
}

fn write_json<T: Serialize>(value: &T, out: &mut BytesMut) {
    // Serializing plain strings and numbers into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
}

/// Go's `time.RFC3339Nano` (how `encoding/json` writes a `time.Time`): fractional seconds
/// without trailing zeros, `Z` for UTC.
fn go_rfc3339_nano(t: DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        let _ = write!(s, ".{}", frac.trim_end_matches('0'));
    }
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        s.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let m = offset.abs() / 60;
        let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn go_timestamps() {
        let utc = Utc
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .unwrap()
            .fixed_offset();
        assert_eq!(go_rfc3339_nano(utc), "2024-01-02T03:04:05Z");
        let t = FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .unwrap()
            + chrono::Duration::milliseconds(120);
        assert_eq!(go_rfc3339_nano(t), "2024-01-02T03:04:05.12+01:00");
    }
}

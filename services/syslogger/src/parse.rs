//! Syslog messages: RFC 5424 and RFC 3164 through `syslog_loose`, with RFC 3164's
//! year-less local timestamps read in a configured zone (and December's messages received in
//! January given last year).

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use chrono_tz::Tz;
use syslog_loose::{ProcId, StructuredElement, Variant};

/// Which syslog format a message was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164, BSD syslog (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`) and its variants.
    Rfc3164,
}

impl Protocol {
    /// `rfc5424` or `rfc3164`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rfc5424 => "rfc5424",
            Protocol::Rfc3164 => "rfc3164",
        }
    }
}

/// A syslog message's fields, borrowed from its text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The format it was read as; `None` when it did not parse (then `message` is the
    /// whole frame and every other field is empty).
    pub protocol: Option<Protocol>,
    /// Facility code (0-23).
    pub facility: Option<u8>,
    /// Severity code (0-7).
    pub severity: Option<u8>,
    /// The timestamp, with its offset (RFC 3164's in the configured zone).
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// HOSTNAME.
    pub hostname: Option<&'a str>,
    /// APP-NAME (RFC 3164: the tag without its `[pid]`).
    pub appname: Option<&'a str>,
    /// PROCID (RFC 3164: the tag's `[pid]`).
    pub procid: Option<ProcId<&'a str>>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<&'a str>,
    /// STRUCTURED-DATA elements.
    pub structured_data: Vec<StructuredElement<&'a str>>,
    /// MSG.
    pub message: &'a str,
}

impl Message<'_> {
    /// Whether the message parsed as syslog.
    pub fn parsed(&self) -> bool {
        self.protocol.is_some()
    }

    /// The PRI value (`facility * 8 + severity`), when both are known.
    pub fn priority(&self) -> Option<u8> {
        Some(self.facility? * 8 + self.severity?)
    }
}

/// Facility names (RFC 5424 table 1, as rsyslog names them).
pub fn facility_name(code: u8) -> &'static str {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// Severity names (RFC 5424 table 2).
pub fn severity_name(code: u8) -> &'static str {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// Parses syslog text; RFC 3164 timestamps (which carry no zone and usually no year) are
/// read in `zone`, with the year of the receive time, except that a December message
/// received in January is last year's and a January message received in December next
/// year's (clock skew around New Year).
#[derive(Debug, Clone, Copy)]
pub struct Parser {
    zone: Tz,
}

impl Default for Parser {
    fn default() -> Self {
        Self { zone: Tz::UTC }
    }
}

impl Parser {
    /// A parser reading RFC 3164 local times in `zone`.
    pub fn new(zone: Tz) -> Self {
        Self { zone }
    }

    /// The zone of RFC 3164 timestamps.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Parses `text`, received at `received`. Never fails: a message that is not syslog
    /// comes back with `protocol: None` and the whole text as its message.
    pub fn parse<'a>(&self, text: &'a str, received: DateTime<Utc>) -> Message<'a> {
        let now = received.with_timezone(&self.zone);
        let (year, month) = (now.year(), now.month());
        let get_year = move |(m, _, _, _, _): syslog_loose::IncompleteDate| match (m, month) {
            (12, 1) => year - 1,
            (1, 12) => year + 1,
            _ => year,
        };
        match syslog_loose::parse_message_with_year_exact_tz(
            text,
            get_year,
            Some(self.zone),
            Variant::Either,
        ) {
            Ok(m) => Message {
                protocol: Some(match m.protocol {
                    syslog_loose::Protocol::RFC5424(_) => Protocol::Rfc5424,
                    syslog_loose::Protocol::RFC3164 => Protocol::Rfc3164,
                }),
                facility: m.facility.map(|f| f as u8),
                severity: m.severity.map(|s| s as u8),
                timestamp: m.timestamp,
                hostname: m.hostname.filter(|h| !h.is_empty()),
                appname: m.appname.filter(|a| !a.is_empty()),
                procid: m.procid,
                msgid: m.msgid,
                structured_data: m.structured_data,
                message: m.msg,
            },
            Err(_) => Message {
                protocol: None,
                facility: None,
                severity: None,
                timestamp: None,
                hostname: None,
                appname: None,
                procid: None,
                msgid: None,
                structured_data: Vec::new(),
                message: text,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn rfc5424() {
        let p = Parser::default();
        let m = p.parse(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] An application event",
            at(2024, 1, 1),
        );
        assert_eq!(m.protocol, Some(Protocol::Rfc5424));
        assert_eq!(
            (m.facility, m.severity, m.priority()),
            (Some(20), Some(5), Some(165))
        );
        assert_eq!(m.hostname, Some("mymachine.example.com"));
        assert_eq!(m.appname, Some("evntslog"));
        assert_eq!(m.msgid, Some("ID47"));
        assert_eq!(m.structured_data.len(), 1);
        assert_eq!(m.message, "An application event");
    }

    #[test]
    fn rfc3164_in_a_zone_and_across_new_year() {
        let p = Parser::new(chrono_tz::Europe::London);
        let m = p.parse(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
            at(2024, 11, 1),
        );
        assert_eq!(m.protocol, Some(Protocol::Rfc3164));
        assert_eq!(m.appname, Some("su"));
        assert_eq!(m.hostname, Some("mymachine"));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-10-11T22:14:15+01:00",
            "British Summer Time"
        );
        let m = p.parse("<34>Dec 31 23:59:59 h app: x", at(2025, 1, 1));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-12-31T23:59:59+00:00"
        );
        let m = p.parse("<34>Jan  1 00:00:01 h app: x", at(2024, 12, 31));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2025-01-01T00:00:01+00:00"
        );
        let m = p.parse("<34>Jun  1 00:00:01 h app: x", at(2024, 12, 31));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-06-01T00:00:01+01:00"
        );
    }

    #[test]
    fn not_syslog_keeps_the_whole_text() {
        let m = Parser::default().parse("just some text", at(2024, 1, 1));
        assert!(!m.parsed());
        assert_eq!(m.message, "just some text");
        assert_eq!(facility_name(23), "local7");
        assert_eq!(severity_name(3), "err");
        assert_eq!(severity_name(9), "unknown");
    }
}

//! Syslog messages: RFC 5424 and RFC 3164 through `syslog_loose`, with RFC 3164's
//! year-less local timestamps read in a configured zone (and December's messages received in
//! January given last year).

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
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

    /// The fields that route a message (protocol, facility, severity, host, app name,
    /// procid, msgid) of the common RFC 3164 header (`<PRI>Mmm dd hh:mm:ss HOST
    /// TAG[PID]: `), read by hand from the frame's bytes, exactly as [`parse`](Self::parse)
    /// would give them: for payloads that do not carry the parsed fields (`--format raw`),
    /// without validating the rest of the frame as UTF-8. The timestamp is checked as
    /// `syslog_loose` checks it (a valid local time in the zone, for the year `parse`
    /// would give it) but not kept: `timestamp` is `None`, `structured_data` and `message`
    /// are empty. `None` when the frame is not in that exact shape (then use `parse`).
    pub fn parse_head<'a>(
        &self,
        b: &'a [u8],
        received: DateTime<Utc>,
        cache: &mut HeadCache,
    ) -> Option<Message<'a>> {
        // <PRI>: 1-3 digits, at most 191 (a known facility).
        if b.first() != Some(&b'<') {
            return None;
        }
        let close = b.iter().take(5).position(|&c| c == b'>')?;
        let digits = &b[1..close];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let pri = digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        if pri > 191 {
            return None;
        }
        let mut i = close + 1;
        // Mmm
        let month = match b.get(i..i + 3)? {
            b"Jan" => 1,
            b"Feb" => 2,
            b"Mar" => 3,
            b"Apr" => 4,
            b"May" => 5,
            b"Jun" => 6,
            b"Jul" => 7,
            b"Aug" => 8,
            b"Sep" => 9,
            b"Oct" => 10,
            b"Nov" => 11,
            b"Dec" => 12,
            _ => return None,
        };
        i += 3;
        // " d", "  d" or " dd"
        let day = match b.get(i..i + 3)? {
            [b' ', b' ', d] if d.is_ascii_digit() => u32::from(d - b'0'),
            [b' ', d1, d2] if d1.is_ascii_digit() && d2.is_ascii_digit() => {
                u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0')
            }
            [b' ', d, b' '] if d.is_ascii_digit() => {
                i -= 1;
                u32::from(d - b'0')
            }
            _ => return None,
        };
        i += 3;
        // " hh:mm:ss "
        let t = b.get(i..i + 10)?;
        let two = |k: usize| -> Option<u32> {
            let (a, c) = (t[k], t[k + 1]);
            (a.is_ascii_digit() && c.is_ascii_digit())
                .then(|| u32::from(a - b'0') * 10 + u32::from(c - b'0'))
        };
        if t[0] != b' ' || t[3] != b':' || t[6] != b':' || t[9] != b' ' {
            return None;
        }
        let (hour, minute, second) = (two(1)?, two(4)?, two(7)?);
        i += 10;
        // HOST: no colon, bracket or '-' alone, followed by one space.
        // Printable ASCII without whitespace (so also valid UTF-8).
        let word = |c: &u8| c.is_ascii_graphic();
        let rest = &b[i..];
        let host_len = rest.iter().position(|&c| c == b' ')?;
        let host = &rest[..host_len];
        if host.is_empty()
            || host == b"-"
            || !host
                .iter()
                .all(|c| word(c) && !matches!(c, b':' | b'[' | b']'))
        {
            return None;
        }
        // TAG: `app` or `app[pid]`, then ':' and a space or the end.
        let rest = &rest[host_len + 1..];
        let colon = rest.iter().position(|&c| c == b':')?;
        let tag = &rest[..colon];
        let after = &rest[colon + 1..];
        if !(after.is_empty() || after[0] == b' ') {
            return None;
        }
        let (appname, pid) = match tag.iter().position(|&c| c == b'[') {
            None => (tag, None),
            Some(open) => {
                let pid = tag[open + 1..].strip_suffix(b"]")?;
                if pid.is_empty() || !pid.iter().all(|c| word(c) && *c != b']') {
                    return None;
                }
                (&tag[..open], Some(pid))
            }
        };
        if appname.is_empty()
            || appname == b"-"
            || !appname
                .iter()
                .all(|c| word(c) && !matches!(c, b'[' | b']' | b':'))
        {
            return None;
        }
        if !cache.valid(self.zone, received, month, day, hour, minute, second) {
            return None;
        }
        // The fields are printable ASCII (checked above): each one's UTF-8 check is short.
        let field = |s| std::str::from_utf8(s).ok();
        Some(Message {
            protocol: Some(Protocol::Rfc3164),
            facility: Some((pri >> 3) as u8),
            severity: Some((pri & 7) as u8),
            timestamp: None,
            hostname: Some(field(host)?),
            appname: Some(field(appname)?),
            procid: match pid {
                Some(pid) => Some(ProcId::from(field(pid)?)),
                None => None,
            },
            msgid: None,
            structured_data: Vec::new(),
            message: "",
        })
    }

    /// A year-bearing RFC 3164 timestamp (`Mmm dd yyyy hh:mm:ss`) as `syslog_loose` gives
    /// it: the local time taken as UTC, shown at the zone's offset. Read it as the local
    /// time in the zone it is (the earliest of an ambiguous one; a time that does not exist
    /// in the zone stays as read).
    fn local_with_year(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let local = t.naive_utc();
        match self.zone.from_local_datetime(&local).earliest() {
            Some(d) => d.fixed_offset(),
            None => t,
        }
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
                timestamp: match (m.protocol, m.timestamp) {
                    (syslog_loose::Protocol::RFC3164, Some(t)) if has_year_3164(text) => {
                        Some(self.local_with_year(t))
                    }
                    (_, t) => t,
                },
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

/// Whether an RFC 3164 text's timestamp carries a year: `<PRI>Mmm d[d] yyyy hh:mm:ss`.
fn has_year_3164(text: &str) -> bool {
    let b = text.trim_start().as_bytes();
    let Some(close) = b.iter().take(6).position(|&c| c == b'>') else {
        return false;
    };
    let mut rest = &b[close + 1..];
    let skip_spaces = |r: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *r {
            *r = tail;
        }
    };
    let digits = |r: &mut &[u8]| {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        *r = &r[n..];
        n
    };
    skip_spaces(&mut rest);
    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    rest = &rest[3..];
    skip_spaces(&mut rest);
    if digits(&mut rest) == 0 {
        return false;
    }
    skip_spaces(&mut rest);
    digits(&mut rest) == 4 && matches!(rest.first(), Some(b' ' | b'\t'))
}

/// A local minute in a zone: zone, year, month, day, hour, minute.
type Minute = (Tz, i32, u32, u32, u32, u32);

/// A connection's memo for [`Parser::parse_head`]: the receive time's year and month in
/// the zone, and whether the last minute seen is a valid local time (one zone computation
/// per read and per minute, not per message).
#[derive(Debug, Default)]
pub struct HeadCache {
    received: Option<(DateTime<Utc>, Tz, i32, u32)>,
    minute: Option<(Minute, bool)>,
}

impl HeadCache {
    /// Whether `month day hour:minute:second`, in the year [`Parser::parse`] gives it, is
    /// a time that exists in `zone` (as `syslog_loose` checks it).
    #[allow(clippy::too_many_arguments)]
    fn valid(
        &mut self,
        zone: Tz,
        received: DateTime<Utc>,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> bool {
        if second > 59 {
            return false;
        }
        let (now_year, now_month) = match self.received {
            Some((r, z, y, m)) if r == received && z == zone => (y, m),
            _ => {
                let now = received.with_timezone(&zone);
                let (y, m) = (now.year(), now.month());
                self.received = Some((received, zone, y, m));
                (y, m)
            }
        };
        let year = match (month, now_month) {
            (12, 1) => now_year - 1,
            (1, 12) => now_year + 1,
            _ => now_year,
        };
        let key = (zone, year, month, day, hour, minute);
        if let Some((k, ok)) = self.minute
            && k == key
        {
            return ok;
        }
        let ok = zone
            .with_ymd_and_hms(year, month, day, hour, minute, second)
            .earliest()
            .is_some();
        // Seconds never decide whether a minute exists: remember the minute.
        self.minute = Some((key, ok));
        ok
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
    fn a_year_bearing_rfc3164_time_is_local_to_the_zone() {
        let p = Parser::new(chrono_tz::Europe::London);
        let m = p.parse("<34>Oct 11 2024 22:14:15 host app: x", at(2025, 1, 1));
        assert_eq!(m.protocol, Some(Protocol::Rfc3164));
        assert_eq!(m.hostname, Some("host"));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-10-11T22:14:15+01:00",
            "22:14:15 in London (summer time), not 22:14:15 UTC"
        );
        let m = p.parse("<34>Jan  5 2024 08:00:00 host app: x", at(2025, 1, 1));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-01-05T08:00:00+00:00"
        );
        // Without a year the time was already local.
        let m = p.parse("<34>Oct 11 22:14:15 host app: x", at(2024, 11, 1));
        assert_eq!(
            m.timestamp.unwrap().to_rfc3339(),
            "2024-10-11T22:14:15+01:00"
        );
        assert!(has_year_3164("<34>Oct 11 2024 22:14:15 h a: x"));
        assert!(!has_year_3164("<34>Oct 11 22:14:15 h a: x"));
        assert!(!has_year_3164("<34>1 2024-10-11T22:14:15Z h a - - x"));
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

    type Fields<'a> = (
        Option<Protocol>,
        Option<u8>,
        Option<u8>,
        Option<&'a str>,
        Option<&'a str>,
        Option<ProcId<&'a str>>,
        Option<&'a str>,
    );

    fn fields<'a>(m: &Message<'a>) -> Fields<'a> {
        (
            m.protocol,
            m.facility,
            m.severity,
            m.hostname,
            m.appname,
            m.procid.clone(),
            m.msgid,
        )
    }

    #[test]
    fn the_hand_read_header_takes_the_common_shape() {
        let p = Parser::default();
        let mut cache = HeadCache::default();
        let line = "<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed";
        let m = p
            .parse_head(line.as_bytes(), at(2024, 11, 1), &mut cache)
            .unwrap();
        assert_eq!(fields(&m), fields(&p.parse(line, at(2024, 11, 1))));
        assert_eq!(m.hostname, Some("mymachine"));
        assert_eq!(m.procid, Some(ProcId::PID(42)));
        // Not a time in London (the clocks went forward at 01:00 UTC): not syslog, both ways.
        let p = Parser::new(chrono_tz::Europe::London);
        let gap = "<34>Mar 31 01:30:00 h app: x";
        assert!(
            p.parse_head(gap.as_bytes(), at(2024, 3, 31), &mut cache)
                .is_none()
        );
        assert!(!p.parse(gap, at(2024, 3, 31)).parsed());
        // Not valid UTF-8 after the header: the same fields as the lossy text's.
        let mut bytes = b"<13>Jan  5 10:00:00 host app[7]: ".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'x']);
        let m = p.parse_head(&bytes, at(2024, 1, 5), &mut cache).unwrap();
        let lossy = String::from_utf8_lossy(&bytes);
        assert_eq!(fields(&m), fields(&p.parse(&lossy, at(2024, 1, 5))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(3164),
            ..Default::default()
        })]
        /// Whatever the shape, `parse_head` gives the routing fields `parse` gives.
        #[test]
        fn the_hand_read_header_agrees_with_syslog_loose(
            pri in proptest::sample::select(vec!["<34>", "<0>", "<191>", "<192>", "<034>", "<1234>", "<>", "", "<34> ", "<7>"]),
            month in proptest::sample::select(vec!["Jan", "Feb", "Mar", "Oct", "Dec", "oct", "OCT", "Xyz", "Ma"]),
            day in proptest::sample::select(vec![" 1", "  1", " 01", " 29", " 30", " 31", " 32", " 0", "  12", "\t1", " 9"]),
            time in proptest::sample::select(vec![" 22:14:15", " 01:30:00", " 02:30:00", " 23:59:60", " 24:00:00", " 1:02:03", " 22:14:15:", " 22:14", " 00:00:00"]),
            host in proptest::sample::select(vec![" host", " h-1.example.com", " -", " h:", " 2001:db8::1", " [h]", "", "  host", " h\u{f6}", " 10.0.0.1", " a]b"]),
            tag in proptest::sample::select(vec![" app:", " app[123]:", " app[x1]:", " app[]:", " -:", " [1]:", " app[1]x:", " app", " app: ", " app:x", "", " a b:", " app[1 2]:", " su", " a[1]b[2]:", " app-x.y:"]),
            msg in proptest::sample::select(vec![" msg", "", " [sd@1 a=\"b\"] m", ": x", "  two", " \u{e9}t\u{e9}"]),
            zone in proptest::sample::select(vec![chrono_tz::UTC, chrono_tz::Europe::London, chrono_tz::Australia::Lord_Howe, chrono_tz::America::New_York]),
            received in proptest::sample::select(vec![(2024, 3, 31), (2024, 2, 15), (2025, 1, 1), (2024, 12, 31), (2023, 10, 1)]),
        ) {
            let line = format!("{pri}{month}{day}{time}{host}{tag}{msg}");
            let p = Parser::new(zone);
            let received = at(received.0, received.1, received.2);
            let mut cache = HeadCache::default();
            let slow = p.parse(&line, received);
            if let Some(fast) = p.parse_head(line.as_bytes(), received, &mut cache) {
                proptest::prop_assert_eq!(fields(&fast), fields(&slow), "{:?}", line);
            }
        }
    }
}

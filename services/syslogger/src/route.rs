//! Where a message goes: the topic and key templates over parsed fields.
//!
//! A template is text with `{field}` placeholders: `host`, `appname`, `procid`, `msgid`,
//! `facility`, `severity` (names), `protocol`. `{{` and `}}` are literal braces.

use std::fmt::Write as _;

use crate::parse::{Message, facility_name, severity_name};

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    AppName,
    ProcId,
    MsgId,
    Facility,
    Severity,
    Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unknown field or an unbalanced brace, as a message.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed {{ in {text:?}")),
                        }
                    }
                    let field = match name.as_str() {
                        "host" | "hostname" => Field::Host,
                        "appname" | "app" | "tag" => Field::AppName,
                        "procid" => Field::ProcId,
                        "msgid" => Field::MsgId,
                        "facility" => Field::Facility,
                        "severity" => Field::Severity,
                        "protocol" => Field::Protocol,
                        _ => {
                            return Err(format!(
                                "unknown field {{{name}}} (known: host, appname, procid, msgid, facility, severity, protocol)"
                            ));
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return Err(format!("unmatched }} in {text:?}")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// The text when the template has no field.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Renders the template for `m` into `out` (cleared first); `false` when a field it
    /// uses is missing or empty in the message.
    pub fn render(&self, m: &Message<'_>, out: &mut String) -> bool {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => {
                    let before = out.len();
                    match f {
                        Field::Host => out.push_str(m.hostname.unwrap_or("")),
                        Field::AppName => out.push_str(m.appname.unwrap_or("")),
                        Field::ProcId => {
                            if let Some(p) = &m.procid {
                                let _ = write!(out, "{p}");
                            }
                        }
                        Field::MsgId => out.push_str(m.msgid.unwrap_or("")),
                        Field::Facility => {
                            out.push_str(m.facility.map(facility_name).unwrap_or(""));
                        }
                        Field::Severity => {
                            out.push_str(m.severity.map(severity_name).unwrap_or(""));
                        }
                        Field::Protocol => {
                            out.push_str(m.protocol.map(|p| p.as_str()).unwrap_or(""));
                        }
                    }
                    if out.len() == before {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Whether any field is used.
    pub fn uses_fields(&self) -> bool {
        self.as_static().is_none()
    }
}

/// Makes `name` a legal Kafka topic name in place: characters other than ASCII letters,
/// digits, `.`, `_` and `-` become `_`. `false` when it is empty, `.`/`..` or too long.
pub fn sanitize_topic(name: &mut String) -> bool {
    if name
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        *name = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    }
    !(name.is_empty() || name == "." || name == ".." || name.len() > MAX_TOPIC_LEN)
}

/// The message key: none, or a template (`host`, `appname` are shorthands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// No key: the partitioner spreads messages.
    None,
    /// A template; a message missing one of its fields gets no key.
    Template(Template),
}

impl KeySpec {
    /// Parses `none`, `host`, `appname` or a template.
    ///
    /// # Errors
    /// A bad template.
    pub fn parse(text: &str) -> Result<KeySpec, String> {
        Ok(match text {
            "none" | "" => KeySpec::None,
            "host" | "hostname" => KeySpec::Template(Template::parse("{host}")?),
            "appname" | "app" => KeySpec::Template(Template::parse("{appname}")?),
            t => KeySpec::Template(Template::parse(t)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Parser;

    #[test]
    fn templates_render_fields_and_fail_on_missing_ones() {
        let p = Parser::default();
        let m = p.parse("<34>Oct 11 22:14:15 web1 nginx[12]: hi", chrono::Utc::now());
        let t = Template::parse("syslog-{appname}.{host}-{severity}-{{x}}").unwrap();
        let mut out = String::new();
        assert!(t.render(&m, &mut out));
        assert_eq!(out, "syslog-nginx.web1-crit-{x}");
        let t = Template::parse("{msgid}").unwrap();
        assert!(!t.render(&m, &mut out), "no msgid in RFC 3164");
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{host").is_err());
        assert!(Template::parse("a}").is_err());
        assert_eq!(Template::parse("plain").unwrap().as_static(), Some("plain"));
    }

    #[test]
    fn topics_are_sanitized() {
        let mut s = "syslog-my app/ü".to_string();
        assert!(sanitize_topic(&mut s));
        assert_eq!(s, "syslog-my_app__");
        assert!(!sanitize_topic(&mut String::new()));
        assert!(!sanitize_topic(&mut "x".repeat(250)));
        assert_eq!(KeySpec::parse("none").unwrap(), KeySpec::None);
        assert!(matches!(
            KeySpec::parse("host").unwrap(),
            KeySpec::Template(_)
        ));
    }
}

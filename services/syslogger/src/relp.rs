//! The server side of RELP, the Reliable Event Logging Protocol of rsyslog's `omrelp`
//! (librelp): frames `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, the commands `open`,
//! `syslog` and `close`, and `rsp` answers.
//!
//! librelp's client keeps a window of unacknowledged transactions and matches each `rsp` by
//! its transaction number; answers are sent here in the order the transactions came, each
//! `syslog` one only after Kafka acknowledged its message. A client whose connection breaks
//! sends every unacknowledged message again on its next session.

use bytes::{Buf, Bytes, BytesMut};

/// The most digits of a transaction number or data length (librelp: 9).
const MAX_DIGITS: usize = 9;
/// The longest command name (librelp: 32).
const MAX_COMMAND: usize = 32;

/// A RELP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `open`: the session's start, with the client's offers.
    Open,
    /// `syslog`: one message.
    Syslog,
    /// `close`: the client ends the session.
    Close,
    /// Anything else (answered with an error).
    Other(String),
}

/// One RELP frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelpFrame {
    /// The transaction number.
    pub txnr: u64,
    /// The command.
    pub command: Command,
    /// The data (a `syslog` frame's message, at most the maximum; see `truncated`).
    pub data: Bytes,
    /// The announced length when it was longer than the maximum and `data` holds its head.
    pub truncated: Option<u64>,
}

/// A frame that breaks the protocol: the session cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RELP frame: {0}")]
pub struct InvalidFrame(pub &'static str);

#[derive(Debug)]
enum State {
    Header,
    /// Reading an oversized frame's data: the head kept so far, what is left to skip.
    Oversize {
        txnr: u64,
        command: Command,
        head: Bytes,
        len: u64,
        left: u64,
    },
}

/// The RELP decoder of one session.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    state: State,
}

impl Decoder {
    /// A decoder keeping at most `max` bytes of a frame's data.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: State::Header,
        }
    }

    /// The next frame in `buf`, consuming it; `Ok(None)` when more input is needed.
    ///
    /// # Errors
    /// The bytes are not RELP.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RelpFrame>, InvalidFrame> {
        loop {
            match &mut self.state {
                State::Oversize { left, .. } => {
                    if *left > 0 {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                        buf.advance(n);
                        *left -= n as u64;
                        if *left > 0 {
                            return Ok(None);
                        }
                    }
                    match buf.first() {
                        None => return Ok(None),
                        Some(b'\n') => buf.advance(1),
                        Some(_) => return Err(InvalidFrame("no LF after the data")),
                    }
                    let State::Oversize {
                        txnr,
                        command,
                        head,
                        len,
                        ..
                    } = std::mem::replace(&mut self.state, State::Header)
                    else {
                        continue;
                    };
                    return Ok(Some(RelpFrame {
                        txnr,
                        command,
                        data: head,
                        truncated: Some(len),
                    }));
                }
                State::Header => {}
            }
            let Some(h) = header(buf)? else {
                return Ok(None);
            };
            if h.len <= self.max as u64 {
                let len = h.len as usize;
                // `TXNR SP CMD SP LEN` [SP DATA] LF
                let data_start = h.header_len + usize::from(len > 0);
                if buf.len() < data_start + len + 1 {
                    return Ok(None);
                }
                if buf[data_start + len] != b'\n' {
                    return Err(InvalidFrame("no LF after the data"));
                }
                buf.advance(data_start);
                let data = buf.split_to(len).freeze();
                buf.advance(1);
                return Ok(Some(RelpFrame {
                    txnr: h.txnr,
                    command: h.command,
                    data,
                    truncated: None,
                }));
            }
            // Longer than we keep: wait for the head, then skip the rest whatever the reads.
            let data_start = h.header_len + 1;
            if buf.len() < data_start + self.max {
                return Ok(None);
            }
            buf.advance(data_start);
            let head = buf.split_to(self.max).freeze();
            self.state = State::Oversize {
                txnr: h.txnr,
                command: h.command,
                head,
                len: h.len,
                left: h.len - self.max as u64,
            };
        }
    }
}

struct Header {
    txnr: u64,
    command: Command,
    len: u64,
    /// Bytes up to the end of DATALEN.
    header_len: usize,
}

/// Reads `TXNR SP COMMAND SP DATALEN` and the byte after it (SP or LF).
fn header(buf: &[u8]) -> Result<Option<Header>, InvalidFrame> {
    let mut i = 0;
    let txnr = match number(buf, &mut i)? {
        Some(n) => n,
        None => return Ok(None),
    };
    let start = i;
    loop {
        match buf.get(i) {
            None if i - start > MAX_COMMAND => return Err(InvalidFrame("command too long")),
            None => return Ok(None),
            Some(b' ') => break,
            Some(c) if c.is_ascii_alphabetic() && i - start < MAX_COMMAND => i += 1,
            Some(_) => return Err(InvalidFrame("bad command")),
        }
    }
    let command = match &buf[start..i] {
        b"open" => Command::Open,
        b"syslog" => Command::Syslog,
        b"close" => Command::Close,
        b"" => return Err(InvalidFrame("empty command")),
        other => Command::Other(String::from_utf8_lossy(other).into_owned()),
    };
    i += 1;
    let len_start = i;
    let mut len: u64 = 0;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(c) if c.is_ascii_digit() => {
                if i - len_start == MAX_DIGITS {
                    return Err(InvalidFrame("data length too long"));
                }
                len = len * 10 + u64::from(c - b'0');
                i += 1;
            }
            Some(b' ' | b'\n') if i > len_start => break,
            Some(_) => return Err(InvalidFrame("bad data length")),
        }
    }
    if len > 0 && buf[i] != b' ' {
        return Err(InvalidFrame("no SP before the data"));
    }
    Ok(Some(Header {
        txnr,
        command,
        len,
        header_len: i,
    }))
}

/// Reads digits and the SP after them from `buf[*i..]`.
fn number(buf: &[u8], i: &mut usize) -> Result<Option<u64>, InvalidFrame> {
    let start = *i;
    let mut n: u64 = 0;
    loop {
        match buf.get(*i) {
            None => return Ok(None),
            Some(c) if c.is_ascii_digit() => {
                if *i - start == MAX_DIGITS {
                    return Err(InvalidFrame("transaction number too long"));
                }
                n = n * 10 + u64::from(c - b'0');
                *i += 1;
            }
            Some(b' ') if *i > start => {
                *i += 1;
                return Ok(Some(n));
            }
            Some(_) => return Err(InvalidFrame("bad transaction number")),
        }
    }
}

/// Appends `TXNR rsp LEN DATA LF` to `out`.
pub fn response(txnr: u64, data: &str, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = writeln!(out, "{txnr} rsp {} {data}", data.len());
}

/// The answer to `open`: `200 OK` and our offers.
pub const OPEN_OK: &str = "200 OK\nrelp_version=0\nrelp_software=syslogger\ncommands=syslog";
/// The answer to a transaction done.
pub const OK: &str = "200 OK";
/// The hint a server sends before it closes a session (transaction number 0).
pub const SERVER_CLOSE: &[u8] = b"0 serverclose 0\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Decoder, input: &[u8], cut: usize) -> Result<Vec<RelpFrame>, InvalidFrame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let cut = cut.min(input.len());
        for part in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(part);
            while let Some(f) = d.decode(&mut buf)? {
                out.push(f);
            }
        }
        assert!(buf.is_empty(), "everything consumed");
        Ok(out)
    }

    #[test]
    fn a_session_as_omrelp_sends_it() {
        let offers = "relp_version=0\nrelp_software=librelp,1.11.0,https://librelp.adiscon.com\ncommands=syslog";
        let input = format!(
            "1 open {} {offers}\n2 syslog 15 <13>Jan 1 x: hi\n3 close 0\n",
            offers.len()
        );
        let input = input.as_bytes();
        for cut in 0..input.len() {
            let f = all(&mut Decoder::new(100), input, cut).unwrap();
            assert_eq!(f.len(), 3, "cut {cut}");
            assert_eq!(f[0].command, Command::Open);
            assert_eq!((f[1].txnr, &f[1].command), (2, &Command::Syslog));
            assert_eq!(&f[1].data[..], b"<13>Jan 1 x: hi");
            assert_eq!(
                (f[2].txnr, &f[2].command, f[2].data.len()),
                (3, &Command::Close, 0)
            );
        }
    }

    #[test]
    fn oversized_data_is_truncated_and_the_session_stays_in_sync() {
        let input = b"1 syslog 20 <1>0123456789abcdefg\n2 syslog 5 <2>ok\n";
        for cut in 0..input.len() {
            let f = all(&mut Decoder::new(8), input, cut).unwrap();
            assert_eq!(f.len(), 2, "cut {cut}");
            assert_eq!(
                (&f[0].data[..], f[0].truncated),
                (&b"<1>01234"[..], Some(20))
            );
            assert_eq!((&f[1].data[..], f[1].truncated), (&b"<2>ok"[..], None));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(all(&mut Decoder::new(8), b"x open 0\n", 9).is_err());
        assert!(all(&mut Decoder::new(8), b"1 syslog 2 abc\n", 15).is_err());
        assert!(all(&mut Decoder::new(8), b"1 op3n 0\n", 9).is_err());
        let mut out = Vec::new();
        response(7, OK, &mut out);
        assert_eq!(out, b"7 rsp 6 200 OK\n");
    }
}

//! The pipeline's syslog client: a realistic mix of RFC 5424 and RFC 3164 messages over
//! several TCP connections (octet-counted and LF-framed) and one RELP session, as services
//! logging through rsyslog would send them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

/// The hosts the generated messages come from.
pub const HOSTS: [&str; 4] = ["web-1", "web-2", "db-1", "cache-1"];
const APPS: [&str; 3] = ["nginx", "postgres", "api"];
/// (facility code, name): local0, daemon, user.
const FACILITIES: [u8; 3] = [16, 3, 1];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Message `seq` of connection `conn` (no trailing newline), into `buf`: RFC 5424 for even
/// sequence numbers, RFC 3164 for odd ones. Severities are mostly info, some notice,
/// warning and error.
pub fn message(conn: usize, seq: u64, buf: &mut String) {
    use std::fmt::Write as _;
    buf.clear();
    // A fixed scramble of (connection, sequence) so hosts, apps and severities mix.
    let n = (seq ^ (conn as u64) << 40)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29) as usize;
    let host = HOSTS[n % HOSTS.len()];
    let app = APPS[(n / 4) % APPS.len()];
    let facility = FACILITIES[(n / 16) % FACILITIES.len()];
    let severity: u8 = match (n / 64) % 20 {
        0 => 3,     // err
        1 | 2 => 4, // warning
        3..=5 => 5, // notice
        _ => 6,     // info
    };
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let (minute, second) = ((seq / 60) % 60, seq % 60);
    let _ = if seq.is_multiple_of(2) {
        write!(
            buf,
            "<{pri}>1 2026-11-30T12:{minute:02}:{second:02}.{:03}Z {host} {app} {} - - request {conn}-{seq} served in {} ms",
            seq % 1000,
            1000 + conn,
            seq % 97
        )
    } else {
        write!(
            buf,
            "<{pri}>{} 30 12:{minute:02}:{second:02} {host} {app}[{}]: request {conn}-{seq} served in {} ms",
            MONTHS[10],
            1000 + conn,
            seq % 97
        )
    };
}

/// Sends `count` messages over one TCP connection, octet-counted (RFC 6587) or LF-framed;
/// returns how many were written (all, or an error).
///
/// # Errors
/// The connection fails.
pub async fn send_tcp(
    addr: SocketAddr,
    conn: usize,
    count: u64,
    octet: bool,
) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to syslogger at {addr}"))?;
    let (mut read, write) = stream.into_split();
    let mut w = BufWriter::with_capacity(64 * 1024, write);
    let mut buf = String::with_capacity(256);
    for seq in 0..count {
        message(conn, seq, &mut buf);
        if octet {
            w.write_all(format!("{} ", buf.len()).as_bytes()).await?;
            w.write_all(buf.as_bytes()).await?;
        } else {
            w.write_all(buf.as_bytes()).await?;
            w.write_all(b"\n").await?;
        }
    }
    w.flush().await?;
    let mut write = w.into_inner();
    write.shutdown().await?;
    // syslogger closes its side once it read everything; wait for that (bounded).
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read(&mut sink)).await;
    Ok(count)
}

/// Reads a token up to (not including) a space or LF; returns it and the byte that ended it.
async fn token<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<(String, u8)> {
    let mut out = Vec::new();
    loop {
        let b = r
            .read_u8()
            .await
            .context("RELP server closed the session")?;
        if b == b' ' || b == b'\n' {
            return Ok((String::from_utf8_lossy(&out).into_owned(), b));
        }
        ensure!(out.len() < 32, "RELP header field too long");
        out.push(b);
    }
}

/// A RELP frame from the server: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> anyhow::Result<(u64, String, String)> {
    let (txnr, _) = token(r).await?;
    let (command, _) = token(r).await?;
    let (len, end) = token(r).await?;
    let txnr: u64 = txnr
        .parse()
        .with_context(|| format!("RELP txnr {txnr:?}"))?;
    let len: usize = len
        .parse()
        .with_context(|| format!("RELP length {len:?}"))?;
    let mut data = vec![0u8; len];
    if end == b' ' {
        r.read_exact(&mut data).await?;
        ensure!(
            r.read_u8().await? == b'\n',
            "RELP frame without its trailer"
        );
    } else {
        ensure!(len == 0, "RELP frame of {len} bytes without data");
    }
    Ok((txnr, command, String::from_utf8_lossy(&data).into_owned()))
}

/// Sends `count` messages in one RELP session (`open`, `syslog` transactions with up to
/// `window` unanswered, `close`); returns how many syslogger answered `200 OK`, which it
/// does only once Kafka acknowledged them.
///
/// # Errors
/// The session fails or a transaction is refused.
pub async fn send_relp(
    addr: SocketAddr,
    conn: usize,
    count: u64,
    window: u64,
) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to syslogger's RELP listener at {addr}"))?;
    let (read, write) = stream.into_split();
    let mut r = BufReader::new(read);
    let mut w = BufWriter::new(write);
    let offers = "relp_version=0\nrelp_software=pipeline\ncommands=syslog";
    w.write_all(format!("1 open {} {offers}\n", offers.len()).as_bytes())
        .await?;
    w.flush().await?;
    let (txnr, command, data) = read_response(&mut r).await?;
    ensure!(
        txnr == 1 && command == "rsp" && data.starts_with("200"),
        "RELP open refused: {txnr} {command} {data:?}"
    );
    let mut buf = String::with_capacity(256);
    let (mut next, mut acked) = (0u64, 0u64);
    while acked < count {
        while next < count && next - acked < window {
            message(conn, next, &mut buf);
            let txnr = next + 2;
            w.write_all(format!("{txnr} syslog {} {buf}\n", buf.len()).as_bytes())
                .await?;
            next += 1;
        }
        w.flush().await?;
        let (txnr, command, data) =
            tokio::time::timeout(Duration::from_secs(60), read_response(&mut r))
                .await
                .context("no RELP answer within 60 s")??;
        ensure!(
            command == "rsp" && data.starts_with("200"),
            "RELP transaction {txnr} refused: {command} {data:?}"
        );
        acked += 1;
    }
    let close = count + 2;
    w.write_all(format!("{close} close 0\n").as_bytes()).await?;
    w.flush().await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), read_response(&mut r)).await;
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_mix_both_rfcs_and_are_unique() {
        let mut a = String::new();
        message(0, 0, &mut a);
        assert!(
            a.starts_with('<') && a.contains(">1 2026-11-30T12:00:00.000Z"),
            "{a}"
        );
        message(0, 1, &mut a);
        assert!(
            a.contains(">Nov 30 12:00:01 ") && a.contains("[1000]: request 0-1"),
            "{a}"
        );
        let mut seen = std::collections::HashSet::new();
        for conn in 0..3 {
            for seq in 0..200 {
                message(conn, seq, &mut a);
                assert!(seen.insert(a.clone()));
            }
        }
    }
}

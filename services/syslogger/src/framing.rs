//! Syslog over a byte stream (RFC 6587): octet-counted frames (`LEN SP MSG`) and
//! non-transparent frames ended by LF (CRLF and NUL tolerated), auto-detected per frame or
//! forced.
//!
//! Written here rather than taken from `tokio-util`: its `LinesCodec`/`AnyDelimiterCodec`
//! know one delimiter and no octet counting, and the syslog decoders of other projects
//! (Vector's) had the bugs this decoder is tested against (Vector #4852: a line starting with
//! a digit read as a count; #4895: `1 <23>4` looping; PR #25657: a split oversized frame
//! losing the connection's sync). The rules:
//!
//! - **Auto**: a frame is octet-counted when it starts with a non-zero digit, at most
//!   [`MAX_COUNT_DIGITS`] digits, a space and `<` (a syslog message starts with its PRI);
//!   anything else is a line. `123 hello` is a line.
//! - **Octet** (forced): a frame that does not start with `LEN SP` is read as a line and
//!   counted as a framing error (never dropped, and the stream stays in sync).
//! - **Oversize**: a frame longer than the maximum yields its first `max` bytes marked as
//!   truncated; the rest is skipped (by count, or up to the next terminator) however the
//!   reads split it, so the next frame is read correctly.
//! - Every call consumes input or waits for more: no input makes it loop.
//! - A frame's trailing LF, CRLF or NUL is not part of it; empty lines are skipped.

use bytes::{Buf, Bytes, BytesMut};

/// The most digits an octet count may have (more than any frame we accept needs).
pub const MAX_COUNT_DIGITS: usize = 10;

/// How frames are delimited on a TCP or TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Framing {
    /// Per frame: octet counting when it starts with `LEN SP <`, a line otherwise.
    #[default]
    Auto,
    /// RFC 6587 octet counting (`LEN SP MSG`) only; anything else is a counted framing error
    /// read as a line.
    Octet,
    /// Lines ended by LF (CRLF and NUL tolerated), as the original syslogger read them.
    Lf,
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame (without its count or terminator).
    Message(Bytes),
    /// A frame longer than the maximum: its first `max` bytes; `len` is the announced length
    /// of an octet-counted frame, `None` for a line (its length is not known in advance).
    Oversize {
        /// The first `max` bytes.
        head: Bytes,
        /// The octet count, for an octet-counted frame.
        len: Option<u64>,
    },
    /// Forced octet counting met a frame without a count: it is read as a line.
    Unframed(Bytes),
}

impl Frame {
    /// The bytes to forward.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Message(b) | Frame::Unframed(b) => b,
            Frame::Oversize { head, .. } => head,
        }
    }

    /// The bytes to forward, taken.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Frame::Message(b) | Frame::Unframed(b) => b,
            Frame::Oversize { head, .. } => head,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Reading frames.
    None,
    /// Dropping the rest of an oversized octet-counted frame: this many bytes.
    Bytes(u64),
    /// Dropping the rest of an oversized line, up to its terminator.
    Line,
}

/// The RFC 6587 decoder of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    framing: Framing,
    max: usize,
    skip: Skip,
}

/// What the start of the buffer says about the next frame.
enum Head {
    /// Octet-counted: the count and the length of `LEN SP`.
    Counted(u64, usize),
    /// A line.
    Line,
    /// Not enough bytes to tell.
    Unknown,
}

impl Decoder {
    /// A decoder for `framing`, with frames of at most `max` bytes (at least 1).
    pub fn new(framing: Framing, max: usize) -> Self {
        Self {
            framing,
            max: max.max(1),
            skip: Skip::None,
        }
    }

    /// The next frame in `buf`, consuming it; `None` when more input is needed. With `eof`
    /// (the peer closed), what is left is a last frame.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Frame> {
        loop {
            match self.skip {
                Skip::Bytes(n) => {
                    let drop = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    buf.advance(drop);
                    let left = n - drop as u64;
                    if left > 0 {
                        self.skip = Skip::Bytes(left);
                        return None;
                    }
                    self.skip = Skip::None;
                }
                Skip::Line => match find_terminator(buf) {
                    Some(end) => {
                        buf.advance(end + 1);
                        self.skip = Skip::None;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                },
                Skip::None => {}
            }
            // Separators between frames (a trailing LF after an octet-counted frame, blank
            // lines) are no frames.
            let blank = buf
                .iter()
                .take_while(|b| matches!(b, b'\n' | b'\r' | b'\0'))
                .count();
            let all_blank_cr = blank == buf.len() && buf.last() == Some(&b'\r') && !eof;
            if all_blank_cr {
                // A lone CR may be the start of CRLF: consume what is before it.
                buf.advance(blank - 1);
                return None;
            }
            buf.advance(blank);
            if buf.is_empty() {
                return None;
            }
            let head = match self.framing {
                Framing::Lf => Head::Line,
                Framing::Auto | Framing::Octet => head(buf, self.framing == Framing::Auto, eof),
            };
            match head {
                Head::Unknown => return None,
                Head::Counted(len, prefix) => {
                    let max = self.max as u64;
                    if len > max {
                        if buf.len() < prefix + self.max {
                            if eof {
                                buf.advance(prefix);
                                let head = buf.split().freeze();
                                return Some(Frame::Oversize {
                                    head: trim(head),
                                    len: Some(len),
                                });
                            }
                            return None;
                        }
                        buf.advance(prefix);
                        let head = buf.split_to(self.max).freeze();
                        self.skip = Skip::Bytes(len - max);
                        return Some(Frame::Oversize {
                            head,
                            len: Some(len),
                        });
                    }
                    let len = len as usize;
                    if buf.len() < prefix + len {
                        if eof {
                            buf.advance(prefix);
                            let f = trim(buf.split().freeze());
                            if f.is_empty() {
                                return None;
                            }
                            return Some(Frame::Message(f));
                        }
                        return None;
                    }
                    buf.advance(prefix);
                    let f = trim(buf.split_to(len).freeze());
                    if f.is_empty() {
                        continue;
                    }
                    return Some(Frame::Message(f));
                }
                Head::Line => {
                    let unframed = self.framing == Framing::Octet;
                    let wrap = |b: Bytes| {
                        if unframed {
                            Frame::Unframed(b)
                        } else {
                            Frame::Message(b)
                        }
                    };
                    // A line of `max` bytes may still be followed by CR LF.
                    let limit = buf.len().min(self.max + 2);
                    match find_terminator(&buf[..limit]) {
                        Some(end) => {
                            let line = buf.split_to(end + 1);
                            let f = trim(line.freeze());
                            if f.is_empty() {
                                continue;
                            }
                            if f.len() > self.max {
                                return Some(Frame::Oversize {
                                    head: f.slice(..self.max),
                                    len: None,
                                });
                            }
                            return Some(wrap(f));
                        }
                        None if buf.len() >= self.max + 2 => {
                            let head = buf.split_to(self.max).freeze();
                            // The line goes on past the maximum: drop it up to its end.
                            self.skip = Skip::Line;
                            return Some(Frame::Oversize { head, len: None });
                        }
                        None if eof => {
                            let f = trim(buf.split().freeze());
                            if f.is_empty() {
                                return None;
                            }
                            if f.len() > self.max {
                                return Some(Frame::Oversize {
                                    head: f.slice(..self.max),
                                    len: None,
                                });
                            }
                            return Some(wrap(f));
                        }
                        None => return None,
                    }
                }
            }
        }
    }
}

/// The position of the first LF or NUL.
fn find_terminator(buf: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\0', buf)
}

/// Reads `LEN SP` (and, in auto mode, the `<` after it) at the start of `buf`.
fn head(buf: &[u8], auto: bool, eof: bool) -> Head {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || buf[0] == b'0' || digits > MAX_COUNT_DIGITS {
        return Head::Line;
    }
    // `12` may become `12 <...`: wait for the bytes that decide, unless none will come.
    match buf.get(digits) {
        Some(b' ') => {}
        Some(_) => return Head::Line,
        None if eof => return Head::Line,
        None => return Head::Unknown,
    }
    if auto {
        match buf.get(digits + 1) {
            Some(b'<') => {}
            Some(_) => return Head::Line,
            None if eof => return Head::Line,
            None => return Head::Unknown,
        }
    }
    let mut len: u64 = 0;
    for d in &buf[..digits] {
        len = len * 10 + u64::from(d - b'0');
    }
    Head::Counted(len, digits + 1)
}

/// A frame without its trailing LF, CRLF or NUL (any number of them).
pub(crate) fn trim(mut b: Bytes) -> Bytes {
    let keep = b.len()
        - b.iter()
            .rev()
            .take_while(|c| matches!(c, b'\n' | b'\r' | b'\0'))
            .count();
    b.truncate(keep);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces cut at `cuts` and returns every frame.
    fn run(framing: Framing, max: usize, input: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut d = Decoder::new(framing, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            if p < at {
                continue;
            }
            buf.extend_from_slice(&input[at..p]);
            at = p;
            let mut guard = 0;
            while let Some(f) = d.decode(&mut buf, false) {
                out.push(f);
                guard += 1;
                assert!(guard < 100_000, "the decoder loops");
            }
        }
        let mut guard = 0;
        while let Some(f) = d.decode(&mut buf, true) {
            out.push(f);
            guard += 1;
            assert!(guard < 100_000, "the decoder loops at eof");
        }
        out
    }

    fn msgs(frames: &[Frame]) -> Vec<&[u8]> {
        frames.iter().map(|f| f.bytes().as_ref()).collect()
    }

    #[test]
    fn lines_with_lf_crlf_and_nul() {
        let f = run(
            Framing::Auto,
            100,
            b"<1>a\n<2>b\r\n<3>c\0<4>d\r\n\r\n\n<5>e",
            &[],
        );
        assert_eq!(msgs(&f), [&b"<1>a"[..], b"<2>b", b"<3>c", b"<4>d", b"<5>e"]);
    }

    #[test]
    fn octet_counted_and_lines_mixed() {
        let f = run(Framing::Auto, 100, b"5 <1>ab6 <2>cd\n<3>line\n", &[]);
        assert_eq!(msgs(&f), [&b"<1>ab"[..], b"<2>cd", b"<3>line"]);
    }

    /// Vector #4852: a line starting with a digit is a line.
    #[test]
    fn a_line_starting_with_digits_is_a_line() {
        let f = run(Framing::Auto, 100, b"123 hello world\n2024-01-01 x\n", &[]);
        assert_eq!(msgs(&f), [&b"123 hello world"[..], b"2024-01-01 x"]);
    }

    /// Vector #4895: `1 <23>4` sent twice must not loop and must not lose bytes beyond
    /// what the count says.
    #[test]
    fn one_lt_23_gt_4_twice_does_not_loop() {
        let f = run(Framing::Auto, 100, b"1 <23>4\n1 <23>4\n", &[]);
        assert_eq!(msgs(&f), [&b"<"[..], b"23>4", b"<", b"23>4"]);
        for cut in 0..16 {
            let g = run(Framing::Auto, 100, b"1 <23>4\n1 <23>4\n", &[cut]);
            assert_eq!(msgs(&g), msgs(&f), "cut at {cut}");
        }
        let f = run(Framing::Auto, 100, b"1 <23>41 <23>4", &[]);
        assert_eq!(msgs(&f), [&b"<"[..], b"23>41 <23>4"]);
    }

    /// PR #25657: an oversized octet-counted frame split across reads keeps the stream in
    /// sync; vector#26439: it is truncated, not dropped.
    #[test]
    fn oversized_octet_frame_is_truncated_and_the_next_frame_is_intact() {
        let mut input = b"20 <1>0123456789abcdefg".to_vec();
        input.extend_from_slice(b"5 <2>ok");
        for cut in 0..input.len() {
            let f = run(Framing::Auto, 8, &input, &[cut, cut + 3]);
            assert_eq!(
                f,
                [
                    Frame::Oversize {
                        head: Bytes::from_static(b"<1>01234"),
                        len: Some(20)
                    },
                    Frame::Message(Bytes::from_static(b"<2>ok"))
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_line_is_truncated_and_the_next_line_is_intact() {
        let input = b"<1>0123456789abcdef\n<2>ok\n";
        for cut in 0..input.len() {
            let f = run(Framing::Lf, 8, input, &[cut]);
            assert_eq!(
                f,
                [
                    Frame::Oversize {
                        head: Bytes::from_static(b"<1>01234"),
                        len: None
                    },
                    Frame::Message(Bytes::from_static(b"<2>ok"))
                ],
                "cut at {cut}"
            );
        }
        // Exactly `max` bytes is not oversize, with or without CR.
        let f = run(Framing::Lf, 8, b"<1>01234\r\n<2>ok\n", &[]);
        assert_eq!(msgs(&f), [&b"<1>01234"[..], b"<2>ok"]);
    }

    #[test]
    fn forced_octet_counting_reads_garbage_as_counted_lines() {
        let f = run(
            Framing::Octet,
            100,
            b"garbage here\n5 <1>ab7 <2>cd\n\n",
            &[],
        );
        assert_eq!(
            f,
            [
                Frame::Unframed(Bytes::from_static(b"garbage here")),
                Frame::Message(Bytes::from_static(b"<1>ab")),
                Frame::Message(Bytes::from_static(b"<2>cd")),
            ]
        );
        // Forced octet counting does not need the `<`.
        let f = run(Framing::Octet, 100, b"3 abc", &[]);
        assert_eq!(msgs(&f), [&b"abc"[..]]);
    }

    #[test]
    fn forced_lf_never_reads_counts() {
        let f = run(Framing::Lf, 100, b"5 <1>ab\n", &[]);
        assert_eq!(msgs(&f), [&b"5 <1>ab"[..]]);
    }

    #[test]
    fn a_truncated_stream_yields_what_it_has() {
        let f = run(Framing::Auto, 100, b"10 <1>ab", &[]);
        assert_eq!(msgs(&f), [&b"<1>ab"[..]]);
        let f = run(Framing::Auto, 100, b"12", &[]);
        assert_eq!(msgs(&f), [&b"12"[..]]);
    }

    fn encode(frames: &[Vec<u8>], octet: &[bool]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if octet[i % octet.len()] {
                out.extend_from_slice(format!("{} ", f.len()).as_bytes());
                out.extend_from_slice(f);
            } else {
                out.extend_from_slice(f);
                out.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
            }
        }
        out
    }

    /// A syslog-like frame: `<PRI>` then bytes without terminators, not ending in CR.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        (0u8..192, proptest::collection::vec(any::<u8>(), 0..60)).prop_map(|(pri, body)| {
            let mut f = format!("<{pri}>").into_bytes();
            f.extend(
                body.into_iter()
                    .filter(|b| !matches!(b, b'\n' | b'\r' | b'\0')),
            );
            f
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the read boundaries, auto framing over a mix of octet-counted frames
        /// and lines gives back exactly the frames sent.
        #[test]
        fn auto_framing_is_independent_of_read_boundaries(
            frames in proptest::collection::vec(frame(), 1..20),
            octet in proptest::collection::vec(any::<bool>(), 1..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let input = encode(&frames, &octet);
            let got = run(Framing::Auto, 1000, &input, &cuts);
            let want: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(msgs(&got), want);
        }

        /// Octet framing, with frames longer than the maximum: each is truncated to its
        /// head, and every other frame is intact.
        #[test]
        fn octet_framing_with_oversize_is_independent_of_read_boundaries(
            frames in proptest::collection::vec(frame(), 1..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let input = encode(&frames, &[true]);
            let max = 24;
            let got = run(Framing::Octet, max, &input, &cuts);
            prop_assert_eq!(got.len(), frames.len());
            for (g, f) in got.iter().zip(&frames) {
                if f.len() > max {
                    prop_assert_eq!(g, &Frame::Oversize { head: Bytes::copy_from_slice(&f[..max]), len: Some(f.len() as u64) });
                } else {
                    prop_assert_eq!(g, &Frame::Message(Bytes::copy_from_slice(f)));
                }
            }
        }

        /// LF framing, with lines longer than the maximum.
        #[test]
        fn lf_framing_with_oversize_is_independent_of_read_boundaries(
            frames in proptest::collection::vec(frame(), 1..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let input = encode(&frames, &[false]);
            let max = 24;
            let got = run(Framing::Lf, max, &input, &cuts);
            prop_assert_eq!(got.len(), frames.len());
            for (g, f) in got.iter().zip(&frames) {
                if f.len() > max {
                    prop_assert_eq!(g, &Frame::Oversize { head: Bytes::copy_from_slice(&f[..max]), len: None });
                } else {
                    prop_assert_eq!(g, &Frame::Message(Bytes::copy_from_slice(f)));
                }
            }
        }

        /// Arbitrary bytes never make the decoder loop or panic, and it consumes everything.
        #[test]
        fn garbage_is_consumed(
            input in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            mode in 0..3u8,
        ) {
            let framing = [Framing::Auto, Framing::Octet, Framing::Lf][mode as usize];
            let _ = run(framing, 16, &input, &cuts);
        }
    }
}

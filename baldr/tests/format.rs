//! The format's behaviour: the original's vectors, round trips, and damaged input.

use std::io::{self, Read, Write};

use baldr::{Codec, Compression, Compressor, Error, Reader, Records, SliceRecords, Writer};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn encode_all(records: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for r in records {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap()
}

fn read_all(data: &[u8]) -> Result<Vec<Bytes>, Error> {
    Reader::new(data).collect()
}

/// `n` bytes with contents `i mod 256`, as the original's tests use.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 256) as u8).collect()
}

#[test]
fn original_vector_encodes_byte_for_byte() {
    let expected: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4,
    ];
    assert_eq!(encode_all(&[vec![1, 2, 3], vec![1, 2, 3, 4]]), expected);
    let mut buf = BytesMut::new();
    baldr::encode(&[1, 2, 3], &mut buf);
    baldr::encode(&[1, 2, 3, 4], &mut buf);
    assert_eq!(&buf[..], expected);
    assert_eq!(
        read_all(expected).unwrap(),
        vec![
            Bytes::from_static(&[1, 2, 3]),
            Bytes::from_static(&[1, 2, 3, 4])
        ]
    );
}

#[test]
fn original_sized_records_round_trip_with_exact_layout() {
    for sizes in [&[3usize][..], &[1200], &[100, 200, 300]] {
        let records: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n)).collect();
        let encoded = encode_all(&records);
        // Layout: for each record its length as 8 big-endian bytes, then the payload.
        let mut expected = Vec::new();
        for r in &records {
            expected.extend_from_slice(&(r.len() as u64).to_be_bytes());
            expected.extend_from_slice(r);
        }
        assert_eq!(encoded, expected, "sizes {sizes:?}");
        let decoded = read_all(&encoded).unwrap();
        assert_eq!(decoded.len(), records.len());
        for (d, r) in decoded.iter().zip(&records) {
            assert_eq!(&d[..], &r[..]);
        }
    }
}

#[test]
fn empty_input_and_empty_records() {
    assert!(read_all(&[]).unwrap().is_empty());
    let encoded = encode_all(&[vec![], vec![], vec![9]]);
    assert_eq!(encoded.len(), 8 + 8 + 9);
    let decoded = read_all(&encoded).unwrap();
    assert_eq!(
        decoded,
        vec![Bytes::new(), Bytes::new(), Bytes::from_static(&[9])]
    );
}

#[test]
fn every_truncation_point_is_a_typed_error_at_the_right_offset() {
    let records = [pattern(3), vec![], pattern(20)];
    let full = encode_all(&records);
    // Record boundaries: 0, 11, 19, 47.
    let starts = [0usize, 11, 19];
    for cut in 0..full.len() {
        let data = &full[..cut];
        let results: Vec<_> = Reader::new(data).collect();
        let mem: Vec<_> = SliceRecords::new(data).collect();
        if [0, 11, 19].contains(&cut) {
            assert!(results.iter().all(Result::is_ok), "cut {cut}");
            assert_eq!(results.len(), starts.iter().filter(|&&s| s < cut).count());
            continue;
        }
        let last_start = *starts.iter().rev().find(|&&s| s < cut).unwrap();
        let good = starts.iter().filter(|&&s| s < last_start).count();
        assert_eq!(results.len(), good + 1, "cut {cut}: records then one error");
        assert!(results[..good].iter().all(Result::is_ok));
        let err = results[good].as_ref().unwrap_err();
        assert_eq!(err.offset(), Some(last_start as u64), "cut {cut}");
        assert!(err.is_truncation());
        let in_record = cut - last_start;
        match err {
            Error::TruncatedHeader { available, .. } => {
                assert!(in_record < 8);
                assert_eq!(*available, in_record);
            }
            Error::TruncatedPayload {
                length, available, ..
            } => {
                assert!(in_record >= 8);
                assert_eq!(*available, (in_record - 8) as u64);
                assert_eq!(
                    *length,
                    records[starts.iter().position(|&s| s == last_start).unwrap()].len() as u64
                );
            }
            other => panic!("cut {cut}: unexpected {other:?}"),
        }
        // The in-memory iterators agree with the reader.
        assert_eq!(mem.len(), results.len());
        assert_eq!(
            mem.last().unwrap().as_ref().unwrap_err().to_string(),
            err.to_string()
        );
    }
}

#[test]
fn negative_length_is_rejected_with_offset() {
    let mut data = encode_all(&[pattern(5)]);
    data.extend_from_slice(&(-1i64).to_be_bytes());
    data.extend_from_slice(&[0; 32]);
    let results: Vec<_> = Reader::new(&data[..]).collect();
    assert_eq!(results.len(), 2);
    match &results[1] {
        Err(Error::NegativeLength { offset, length }) => {
            assert_eq!((*offset, *length), (13, -1));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        results[1].as_ref().unwrap_err().to_string(),
        "byte offset 13: negative record length -1"
    );
}

/// A reader that panics if asked for more than `limit` bytes of buffer: proves that a huge
/// length is rejected before anything is allocated or read for it.
struct Stingy<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Read for Stingy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        assert!(self.calls < 10, "reader kept reading after a bad header");
        assert!(buf.len() <= 1 << 20, "asked for a huge buffer");
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn huge_length_is_rejected_before_allocation() {
    let mut data = Vec::new();
    data.extend_from_slice(&i64::MAX.to_be_bytes());
    data.extend_from_slice(b"tail");
    let mut reader = Reader::new(Stingy {
        data: &data,
        calls: 0,
    });
    match reader.next() {
        Some(Err(Error::TooLarge {
            offset: 0,
            length,
            max,
        })) => {
            assert_eq!(length, i64::MAX as u64);
            assert_eq!(max, baldr::DEFAULT_MAX_RECORD_BYTES);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(reader.next().is_none(), "fused after an error");

    // The same through the codec: the buffer is not grown for the bad record.
    let mut codec = Codec::new();
    let mut buf = BytesMut::from(&data[..]);
    let cap = buf.capacity();
    assert!(matches!(
        codec.decode_record(&mut buf),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn configurable_maximum() {
    let data = encode_all(&[pattern(10), pattern(11)]);
    let results: Vec<_> = Reader::new(&data[..]).with_max_record_bytes(10).collect();
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(Error::TooLarge {
            offset: 18,
            length: 11,
            max: 10
        })
    ));
    let all: Result<Vec<_>, _> = Records::new(Bytes::from(data.clone()))
        .with_max_record_bytes(11)
        .collect();
    assert_eq!(all.unwrap().len(), 2);
}

#[test]
fn io_errors_carry_the_offset_of_the_record_being_read() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len()).min(5);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let data = encode_all(&[pattern(4), pattern(4)]);
    let results: Vec<_> = Reader::new(Failing(&data[..16])).collect();
    assert_eq!(results.len(), 2);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.offset(), Some(12));
    assert_eq!(err.to_string(), "byte offset 12: I/O error: disk on fire");
}

#[test]
fn large_records_round_trip_through_the_writer_bypass() {
    let records = vec![pattern(10), pattern(200_000), pattern(1), pattern(70_000)];
    let encoded = encode_all(&records);
    let decoded = read_all(&encoded).unwrap();
    assert_eq!(decoded.len(), 4);
    for (d, r) in decoded.iter().zip(&records) {
        assert_eq!(&d[..], &r[..]);
    }
}

fn compress(records: &[Vec<u8>], compression: Compression) -> Vec<u8> {
    let mut w = baldr::compressed_writer(Vec::new(), compression).unwrap();
    for r in records {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap().finish().unwrap()
}

#[test]
fn compression_is_detected_and_round_trips() {
    let records: Vec<Vec<u8>> = (0..500).map(|i| pattern(i % 97)).collect();
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let file = compress(&records, compression);
        let opened = baldr::open(&file[..]).unwrap();
        assert_eq!(opened.compression(), compression);
        let decoded: Vec<_> = Reader::new(opened).collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded.len(), records.len(), "{compression:?}");
        assert!(decoded.iter().zip(&records).all(|(d, r)| d[..] == r[..]));
    }
    // gzip output is what any gzip reader accepts.
    let file = compress(&records, Compression::Gzip);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&file[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, encode_all(&records));
}

#[test]
fn multi_member_gzip_and_multi_frame_zstd_read_as_one_stream() {
    let a = vec![pattern(5), pattern(6)];
    let b = vec![pattern(7)];
    for compression in [Compression::Gzip, Compression::Zstd] {
        let mut file = compress(&a, compression);
        file.extend(compress(&b, compression));
        let decoded: Vec<_> = baldr::open_reader(&file[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded.len(), 3, "{compression:?}");
        assert_eq!(&decoded[2][..], &pattern(7)[..]);
    }
}

#[test]
fn corrupt_and_truncated_compressed_files_are_errors_not_panics() {
    let records: Vec<Vec<u8>> = (0..50).map(pattern).collect();
    for compression in [Compression::Gzip, Compression::Zstd] {
        let file = compress(&records, compression);
        // Truncated compressed stream: the records before the cut, then an error.
        let cut = &file[..file.len() / 2];
        let results: Vec<_> = baldr::open_reader(cut).unwrap().collect();
        assert!(results.last().unwrap().is_err(), "{compression:?}");
        assert!(results[..results.len() - 1].iter().all(Result::is_ok));
        // Flipped bytes in the middle: an error somewhere, never a panic.
        let mut bad = file.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let results: Vec<_> = baldr::open_reader(&bad[..]).unwrap().collect();
        assert!(
            results.iter().any(Result::is_err),
            "{compression:?}: corruption went unnoticed"
        );
    }
}

#[test]
fn short_inputs_are_detected_as_plain() {
    for n in 0..4 {
        let data = vec![0u8; n];
        let opened = baldr::open(&data[..]).unwrap();
        assert_eq!(opened.compression(), Compression::None);
        let results: Vec<_> = Reader::new(opened).collect();
        if n == 0 {
            assert!(results.is_empty());
        } else {
            assert!(matches!(
                results[..],
                [Err(Error::TruncatedHeader { offset: 0, .. })]
            ));
        }
    }
}

#[test]
fn writer_flushes_on_drop_and_reports_counts() {
    let mut out = Vec::new();
    {
        let mut w = Writer::new(&mut out);
        w.write_record(b"abc").unwrap();
        w.write_record(b"").unwrap();
        assert_eq!(w.records(), 2);
        assert_eq!(w.bytes_written(), 19);
    }
    assert_eq!(out.len(), 19);
}

#[test]
fn writer_errors_carry_the_offset() {
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = Writer::new(Full(10));
    w.write_record(&pattern(100_000)).unwrap_err();
    let err = Writer::new(Full(100)).finish();
    assert!(err.is_ok());
    let mut w = Writer::new(Full(100));
    w.write_record(&pattern(50)).unwrap();
    w.write_record(&pattern(50)).unwrap();
    let err = w.flush().unwrap_err();
    assert!(err.to_string().contains("no space"), "{err}");
    assert_eq!(err.offset(), Some(116));
}

/// Splits `data` into chunks of the given sizes (cycled), as a network would.
fn chunked(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// A reader returning its chunks one per `read` call.
struct ChunkReader(std::collections::VecDeque<Vec<u8>>);

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut chunk) = self.0.pop_front() else {
            return Ok(0);
        };
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.0.push_front(chunk.split_off(n));
        }
        Ok(n)
    }
}

fn records_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40)
}

proptest! {
    #[test]
    fn round_trip_through_writer_and_all_readers(records in records_strategy()) {
        let encoded = encode_all(&records);
        let mut buf = BytesMut::new();
        for r in &records {
            baldr::encode(r, &mut buf);
        }
        prop_assert_eq!(&buf[..], &encoded[..]);
        prop_assert_eq!(encoded.len(), records.iter().map(|r| baldr::encoded_len(r.len())).sum::<usize>());
        let via_reader = read_all(&encoded).unwrap();
        let via_records: Vec<Bytes> = Records::new(Bytes::from(encoded.clone())).collect::<Result<_, _>>().unwrap();
        let via_slice: Vec<&[u8]> = SliceRecords::new(&encoded).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(via_reader.len(), records.len());
        for i in 0..records.len() {
            prop_assert_eq!(&via_reader[i][..], &records[i][..]);
            prop_assert_eq!(&via_records[i][..], &records[i][..]);
            prop_assert_eq!(via_slice[i], &records[i][..]);
        }
    }

    #[test]
    fn codec_decodes_any_chunking(records in records_strategy(), sizes in prop::collection::vec(1usize..64, 1..8)) {
        let encoded = encode_all(&records);
        let mut codec = Codec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunked(&encoded, &sizes) {
            buf.extend_from_slice(&chunk);
            while let Some(r) = codec.decode_record(&mut buf).unwrap() {
                out.push(r);
            }
        }
        prop_assert!(codec.decode_record_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(out.len(), records.len());
        for (o, r) in out.iter().zip(&records) {
            prop_assert_eq!(&o[..], &r[..]);
        }
        prop_assert_eq!(codec.offset(), encoded.len() as u64);
        // The Read-based reader with the same chunking, and through gzip.
        let chunks = chunked(&encoded, &sizes).into_iter().collect();
        let via_reader: Vec<Bytes> = Reader::new(ChunkReader(chunks)).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(via_reader, out);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_readers_agree(data in prop::collection::vec(any::<u8>(), 0..200), max in 0u64..300) {
        let via_reader: Vec<_> = Reader::new(&data[..]).with_max_record_bytes(max).collect();
        let via_slice: Vec<_> = SliceRecords::new(&data).with_max_record_bytes(max).collect();
        prop_assert_eq!(via_reader.len(), via_slice.len());
        for (a, b) in via_reader.iter().zip(&via_slice) {
            match (a, b) {
                (Ok(a), Ok(b)) => prop_assert_eq!(&a[..], *b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(false, "readers disagree"),
            }
        }
        // At most one error, and only last.
        prop_assert!(via_reader.iter().rev().skip(1).all(Result::is_ok));
        // Detection and decompression of arbitrary bytes never panic either.
        if let Ok(r) = baldr::open(&data[..]) {
            let _ = Reader::new(r).count();
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_framing {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    #[tokio::test]
    async fn framed_write_then_framed_read_over_a_duplex_pipe() {
        let (client, server) = tokio::io::duplex(64);
        let records: Vec<Vec<u8>> = (0..200).map(|i| pattern(i * 7 % 300)).collect();
        let expected = records.clone();
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(client, Codec::new());
            for r in records {
                sink.send(Bytes::from(r)).await.unwrap();
            }
            SinkExt::<Bytes>::close(&mut sink).await.unwrap();
        });
        let got: Vec<Bytes> = FramedRead::new(server, Codec::new())
            .map(Result::unwrap)
            .collect()
            .await;
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(g, e)| g[..] == e[..]));
    }

    #[tokio::test]
    async fn framed_read_reports_truncation_at_eof() {
        let mut data = encode_all(&[pattern(3), pattern(9)]);
        data.truncate(data.len() - 2);
        let results: Vec<_> = FramedRead::new(&data[..], Codec::new()).collect().await;
        assert_eq!(results.len(), 2);
        assert!(matches!(
            results[1],
            Err(Error::TruncatedPayload {
                offset: 11,
                length: 9,
                available: 7
            })
        ));
    }
}

#[test]
fn compressor_level_and_suffix() {
    assert_eq!(Compression::Gzip.file_suffix(), ".baldr.gz");
    let c = Compressor::with_level(Vec::new(), Compression::Gzip, 1).unwrap();
    assert_eq!(c.compression(), Compression::Gzip);
    assert_eq!(
        Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
        Compression::Zstd
    );
    assert_eq!(Compression::detect(&[0, 0, 0]), Compression::None);
}

#[test]
fn a_zstd_stream_may_start_with_a_skippable_frame() {
    use std::io::Write;
    // A skippable frame (magic 0x184D2A5B, 3 bytes of content), then the records' frame.
    let mut file = vec![0x5b, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'm', b'e', b't'];
    assert_eq!(Compression::detect(&file), Compression::Zstd);
    let mut z = zstd::stream::write::Encoder::new(&mut file, 3).unwrap();
    z.write_all(b"\0\0\0\0\0\0\0\x02hi").unwrap();
    z.finish().unwrap();
    let records: Vec<_> = baldr::open_reader(&file[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records, [bytes::Bytes::from_static(b"hi")]);
}

//! Feeds arbitrary bytes to every reader: none may panic, all must agree, and whatever
//! decodes must re-encode to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small maximum keeps hostile lengths cheap; the first byte varies it.
    let max = u64::from(data.first().copied().unwrap_or(0)) * 16;
    let via_reader: Vec<_> = baldr::Reader::new(data).with_max_record_bytes(max).collect();
    let via_slice: Vec<_> = baldr::SliceRecords::new(data).with_max_record_bytes(max).collect();
    let via_bytes: Vec<_> = baldr::Records::new(Bytes::copy_from_slice(data))
        .with_max_record_bytes(max)
        .collect();
    assert_eq!(via_reader.len(), via_slice.len());
    assert_eq!(via_reader.len(), via_bytes.len());
    let mut reencoded = BytesMut::new();
    for ((a, b), c) in via_reader.iter().zip(&via_slice).zip(&via_bytes) {
        match (a, b, c) {
            (Ok(a), Ok(b), Ok(c)) => {
                assert_eq!(&a[..], *b);
                assert_eq!(a, c);
                baldr::encode(a, &mut reencoded);
            }
            (Err(a), Err(b), Err(c)) => {
                assert_eq!(a.to_string(), b.to_string());
                assert_eq!(a.to_string(), c.to_string());
                assert_eq!(a.offset(), Some(reencoded.len() as u64));
            }
            _ => panic!("readers disagree"),
        }
    }
    if via_reader.iter().all(Result::is_ok) {
        assert_eq!(&reencoded[..], data);
    }
    // Compression detection and decompression of arbitrary bytes.
    if let Ok(r) = baldr::open(data) {
        for record in baldr::Reader::new(r).with_max_record_bytes(max) {
            if record.is_err() {
                break;
            }
        }
    }
});

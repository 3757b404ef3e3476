//! Baldr format benches: decode from memory against memcpy, encode, gzip write against
//! flate2 alone. Figures are recorded in `benches/README.md`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use baldr::{Compression, Compressor, Reader, Records, SliceRecords, Writer};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// About this many payload bytes per data set.
const DATA_SET: usize = 8 << 20;

fn encoded(record_len: usize) -> (Bytes, usize) {
    let count = (DATA_SET / record_len).max(8);
    let payload: Vec<u8> = (0..record_len).map(|i| (i % 251) as u8).collect();
    let mut buf = BytesMut::with_capacity(count * (record_len + 8));
    for _ in 0..count {
        baldr::encode(&payload, &mut buf);
    }
    (buf.freeze(), count)
}

fn decode(c: &mut Criterion) {
    for (label, len) in [
        ("64B", 64),
        ("1KiB", 1 << 10),
        ("4KiB", 4 << 10),
        ("1MiB", 1 << 20),
    ] {
        let (data, count) = encoded(len);
        let mut group = c.benchmark_group(format!("decode/{label}"));
        group.throughput(Throughput::Bytes(data.len() as u64));
        // The yardstick: copying the same bytes once.
        let mut dst = vec![0u8; data.len()];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&data));
                black_box(&dst);
            })
        });
        group.bench_function("slice_records", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in SliceRecords::new(black_box(&data)) {
                    n += black_box(r.unwrap()).len();
                }
                assert_eq!(n, count * len);
            })
        });
        group.bench_function("records_bytes", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in Records::new(black_box(data.clone())) {
                    n += black_box(r.unwrap()).len();
                }
                assert_eq!(n, count * len);
            })
        });
        group.bench_function("reader", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in Reader::new(black_box(&data[..])) {
                    n += black_box(r.unwrap()).len();
                }
                assert_eq!(n, count * len);
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("decode_records/{label}"));
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function("records_bytes", |b| {
            b.iter(|| {
                Records::new(black_box(data.clone()))
                    .filter(Result::is_ok)
                    .count()
            })
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    for (label, len) in [("64B", 64), ("4KiB", 4 << 10)] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let count = DATA_SET / len;
        let mut group = c.benchmark_group(format!("encode/{label}"));
        group.throughput(Throughput::Bytes((count * (len + 8)) as u64));
        let mut out = Vec::with_capacity(count * (len + 8));
        group.bench_function("writer_vec", |b| {
            b.iter(|| {
                out.clear();
                let mut w = Writer::new(&mut out);
                for _ in 0..count {
                    w.write_record(black_box(&payload)).unwrap();
                }
                w.finish().unwrap();
            })
        });
        let mut buf = BytesMut::with_capacity(count * (len + 8));
        group.bench_function("encode_bytesmut", |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..count {
                    baldr::encode(black_box(&payload), &mut buf);
                }
                black_box(&buf);
            })
        });
        group.finish();
    }
}

fn gzip_write(c: &mut Criterion) {
    let events = benches::log_events(20_000);
    let mut plain = Vec::new();
    let mut w = Writer::new(&mut plain);
    for e in &events {
        w.write_record(e).unwrap();
    }
    w.finish().unwrap();

    let mut group = c.benchmark_group("gzip_write");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("flate2_alone", "events"),
        &plain,
        |b, plain| {
            b.iter(|| {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(1 << 20),
                    flate2::Compression::new(6),
                );
                gz.write_all(plain).unwrap();
                black_box(gz.finish().unwrap());
            })
        },
    );
    group.bench_with_input(
        BenchmarkId::new("flate2_64k_writes", "events"),
        &plain,
        |b, plain| {
            b.iter(|| {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(1 << 20),
                    flate2::Compression::new(6),
                );
                for chunk in plain.chunks(64 << 10) {
                    gz.write_all(chunk).unwrap();
                }
                black_box(gz.finish().unwrap());
            })
        },
    );
    group.bench_with_input(
        BenchmarkId::new("baldr_writer", "events"),
        &events,
        |b, events| {
            b.iter(|| {
                let mut w = Writer::new(
                    Compressor::new(Vec::with_capacity(1 << 20), Compression::Gzip).unwrap(),
                );
                for e in events {
                    w.write_record(e).unwrap();
                }
                black_box(w.finish().unwrap().finish().unwrap());
            })
        },
    );
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode, gzip_write
}
criterion_main!(benches);

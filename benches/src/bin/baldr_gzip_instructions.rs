//! Gzip write cost, counted in instructions rather than seconds (stable on a busy machine):
//! `valgrind --tool=callgrind target/release/baldr_gzip_instructions MODE` with MODE
//! `flate2` (the compressor alone over the pre-encoded stream), `baldr` (records through
//! `baldr::Writer` into the gzip `Compressor`) or `setup` (neither: subtract it from both).
//! Both modes build the same inputs first, so the difference is the write path alone.

use std::hint::black_box;
use std::io::Write;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let events = benches::log_events(20_000);
    let mut plain = bytes::BytesMut::new();
    for e in &events {
        baldr::encode(e, &mut plain);
    }
    let out = match mode.as_str() {
        "flate2" => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(1 << 20),
                flate2::Compression::new(6),
            );
            gz.write_all(&plain).expect("write");
            gz.finish().expect("finish")
        }
        "baldr" => {
            let mut w = baldr::Writer::new(
                baldr::Compressor::new(Vec::with_capacity(1 << 20), baldr::Compression::Gzip)
                    .expect("compressor"),
            );
            for e in &events {
                w.write_record(e).expect("write");
            }
            w.finish().expect("flush").finish().expect("finish")
        }
        "setup" => Vec::new(),
        other => {
            eprintln!("usage: baldr_gzip_instructions flate2|baldr|setup (got {other:?})");
            std::process::exit(2);
        }
    };
    println!(
        "{mode}: {} plain bytes -> {} gzip bytes",
        plain.len(),
        black_box(out).len()
    );
}

//! Inputs shared by the benches and bench binaries. The benches themselves are in
//! `benches/` and `src/bin/`; figures in `README.md`.
#![warn(missing_docs)]

/// `n` realistic, compressible records: JSON log events of about 90 bytes.
pub fn log_events(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"seq":{i},"host":"web-{}","severity":"info","message":"request {i} served in {} ms"}}"#,
                i % 7,
                i % 97
            )
            .into_bytes()
        })
        .collect()
}

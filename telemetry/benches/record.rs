//! Cost of recording through the `metrics` facade into this crate's recorder, and of rendering
//! a Prometheus scrape. Run: `cargo bench -p telemetry --bench record`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry::Recorder;

fn record(c: &mut Criterion) {
    let recorder = Recorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let counter = metrics::counter!("bench_jobs_total", "outcome" => "ok");
    c.bench_function("counter increment (handle)", |b| {
        b.iter(|| counter.increment(black_box(1)))
    });
    c.bench_function("counter! macro + increment (registry lookup)", |b| {
        b.iter(|| metrics::counter!("bench_jobs_total", "outcome" => "ok").increment(black_box(1)))
    });
    let gauge = metrics::gauge!("bench_depth");
    c.bench_function("gauge increment (handle)", |b| {
        b.iter(|| gauge.increment(black_box(1.0)))
    });
    let histogram = metrics::histogram!("bench_seconds");
    let mut v = 0.000_123_f64;
    c.bench_function("histogram record (handle)", |b| {
        b.iter(|| {
            v = if v > 100.0 { 0.000_123 } else { v * 1.01 };
            histogram.record(black_box(v))
        })
    });
}

fn scrape(c: &mut Criterion) {
    let recorder = Recorder::new();
    metrics::with_local_recorder(&recorder, || {
        for i in 0..100 {
            metrics::counter!("bench_jobs_total", "n" => i.to_string()).increment(i);
        }
        for i in 0..10 {
            let h = metrics::histogram!("bench_seconds", "n" => i.to_string());
            for v in 0..1000 {
                h.record(v as f64 / 1000.0);
            }
        }
    });
    c.bench_function("prometheus render (100 counters, 10 histograms)", |b| {
        b.iter(|| black_box(telemetry::prometheus::render(&recorder)))
    });
}

criterion_group!(benches, record, scrape);
criterion_main!(benches);

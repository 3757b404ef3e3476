//! Cost of recording through the `metrics` facade into this crate's recorder alone (the global
//! recorder when Prometheus is off) and through the fan-out to it and the Prometheus exporter
//! (Prometheus on), and of rendering a Prometheus scrape. Run:
//! `cargo bench -p service-telemetry --bench record`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry::{Recorder, Telemetry, TelemetryBuilder};

/// Telemetry with the Prometheus endpoint on 127.0.0.1 (a free port), started in `runtime`.
fn with_prometheus(runtime: &tokio::runtime::Runtime) -> Telemetry {
    let _guard = runtime.enter();
    match TelemetryBuilder::new("bench")
        .prometheus(([127, 0, 0, 1], 0).into())
        .start()
    {
        Ok(telemetry) => telemetry,
        Err(e) => panic!("starting telemetry: {e}"),
    }
}

/// One worker thread, which runs the sinks (and the exporter's upkeep, which drains the
/// samples its histograms queue) while the benchmark records, as in a service.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("a tokio runtime: {e}"),
    }
}

/// The handle benchmarks, with `label` naming the recorder.
fn handles(c: &mut Criterion, label: &str) {
    let counter = metrics::counter!("bench_jobs_total", "outcome" => "ok");
    c.bench_function(&format!("{label}: counter increment (handle)"), |b| {
        b.iter(|| counter.increment(black_box(1)))
    });
    c.bench_function(
        &format!("{label}: counter! macro + increment (registry lookup)"),
        |b| {
            b.iter(|| {
                metrics::counter!("bench_jobs_total", "outcome" => "ok").increment(black_box(1))
            })
        },
    );
    let gauge = metrics::gauge!("bench_depth");
    c.bench_function(&format!("{label}: gauge increment (handle)"), |b| {
        b.iter(|| gauge.increment(black_box(1.0)))
    });
    let histogram = metrics::histogram!("bench_seconds");
    let mut v = 0.000_123_f64;
    c.bench_function(&format!("{label}: histogram record (handle)"), |b| {
        b.iter(|| {
            v = if v > 100.0 { 0.000_123 } else { v * 1.01 };
            histogram.record(black_box(v))
        })
    });
}

fn record(c: &mut Criterion) {
    let recorder = Recorder::new();
    {
        let _local = metrics::set_default_local_recorder(&recorder);
        handles(c, "recorder");
    }
    let runtime = runtime();
    let telemetry = with_prometheus(&runtime);
    let fanout = telemetry.fanout_recorder();
    {
        let _local = metrics::set_default_local_recorder(&fanout);
        handles(c, "fan-out");
    }
    runtime.block_on(telemetry.shutdown());
}

fn scrape(c: &mut Criterion) {
    let runtime = runtime();
    let telemetry = with_prometheus(&runtime);
    metrics::with_local_recorder(&telemetry.fanout_recorder(), || {
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
        b.iter(|| black_box(telemetry.render_prometheus()))
    });
    runtime.block_on(telemetry.shutdown());
}

criterion_group!(benches, record, scrape);
criterion_main!(benches);

//! `state-machine` executor overhead: units of three no-op transitions, so the time measured
//! is the executor's own (admission, dispatch, worker task, completion, bookkeeping).
//! Target: <= 2 us per transition on the 2-core machine. Figures in `benches/README.md`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use state_machine::{Executor, Machine, StepError, Transition, Unit};

#[derive(serde::Serialize, serde::Deserialize)]
enum St {
    A,
    B,
    C,
}

struct Noop;

impl Machine for Noop {
    type State = St;
    fn state_name(&self, s: &St) -> &'static str {
        match s {
            St::A => "a",
            St::B => "b",
            St::C => "c",
        }
    }
    async fn step(&self, _: &str, s: &St) -> Result<Transition<St>, StepError> {
        Ok(match s {
            St::A => Transition::Next(St::B),
            St::B => Transition::Next(St::C),
            St::C => Transition::Completed,
        })
    }
}

const UNITS: usize = 20_000;

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Ids made once: the bench measures the executor, not string formatting.
    let ids: Vec<String> = (0..UNITS).map(|i| format!("unit-{i}")).collect();
    let mut group = c.benchmark_group("state_machine/noop_transition");
    group.throughput(Throughput::Elements(3 * UNITS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for concurrency in [1usize, 16, 256] {
        // The executor's coordinator running on a runtime worker thread (spawned), as it
        // should: its steps then start on the same worker without a cross-thread wake-up.
        group.bench_with_input(
            BenchmarkId::new("spawned/concurrency", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.iter(|| {
                    let units: Vec<_> = ids.iter().map(|id| Unit::new(id.clone(), St::A)).collect();
                    let run = Executor::new(Noop).concurrency(concurrency).run_iter(units);
                    let report = runtime.block_on(runtime.spawn(run)).unwrap();
                    assert_eq!(report.completed, UNITS as u64);
                })
            },
        );
        // The coordinator polled by `block_on` on the calling thread.
        group.bench_with_input(
            BenchmarkId::new("block_on/concurrency", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.iter(|| {
                    let units = ids.iter().map(|id| Unit::new(id.clone(), St::A));
                    let report = runtime
                        .block_on(Executor::new(Noop).concurrency(concurrency).run_iter(units));
                    assert_eq!(report.completed, UNITS as u64);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);

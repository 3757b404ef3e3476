//! `state-machine` throughput under simulated I/O latency:
//!
//! 1. against the ideal bound `concurrency / latency` (no failures; target >= 0.9x);
//! 2. against the serial baseline at equal work with 10% transient failures (target >= 6x).
//!
//! Usage: `cargo run --release -p benches --bin state_machine_throughput [-- --quick]`.
//! Prints one line per measurement; figures are recorded in `benches/README.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use state_machine::{Executor, Machine, RetryPolicy, StepError, Transition, Unit, run_serial};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum St {
    Download,
    Transform,
    Upload,
}

/// Every transition takes `latency` (an I/O wait: a timer, no CPU) and fails transiently
/// with probability `failure_rate`.
struct SimulatedIo {
    latency: Duration,
    failure_rate: f64,
    /// Sum of the steps' real durations (a timer sleeps at least its duration, rounded up to
    /// the timer wheel's 1 ms tick).
    slept_nanos: AtomicU64,
}

impl SimulatedIo {
    fn new(latency: Duration, failure_rate: f64) -> Self {
        SimulatedIo {
            latency,
            failure_rate,
            slept_nanos: AtomicU64::new(0),
        }
    }
}

impl Machine for SimulatedIo {
    type State = St;
    fn state_name(&self, s: &St) -> &'static str {
        match s {
            St::Download => "download",
            St::Transform => "transform",
            St::Upload => "upload",
        }
    }
    async fn step(&self, _: &str, s: &St) -> Result<Transition<St>, StepError> {
        let started = Instant::now();
        tokio::time::sleep(self.latency).await;
        let slept = started.elapsed().as_nanos() as u64;
        self.slept_nanos.fetch_add(slept, Ordering::Relaxed);
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            return Err(StepError::transient("503 Service Unavailable"));
        }
        Ok(match s {
            St::Download => Transition::Next(St::Transform),
            St::Transform => Transition::Next(St::Upload),
            St::Upload => Transition::Completed,
        })
    }
}

fn units(n: usize) -> impl Iterator<Item = Unit<St>> {
    (0..n).map(|i| Unit::new(format!("u{i}"), St::Download))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The coordinator on a runtime worker, as the executor's docs advise.
    let measured = runtime.spawn(async move {
        // 1. Ideal bound: `concurrency` transitions per `latency`.
        for (concurrency, latency_ms) in [(16usize, 10u64), (64, 10), (64, 20), (256, 20)] {
            let latency = Duration::from_millis(latency_ms);
            let n = if quick { 200 } else { concurrency * 30 };
            let machine = Arc::new(SimulatedIo::new(latency, 0.0));
            let started = Instant::now();
            let report = Executor::with_shared(machine.clone())
                .concurrency(concurrency)
                .run_iter(units(n))
                .await;
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(report.completed, n as u64);
            let measured = report.transitions as f64 / secs;
            let ideal = concurrency as f64 / latency.as_secs_f64();
            // The bound for the latency the steps really had.
            let real_latency =
                machine.slept_nanos.load(Ordering::Relaxed) as f64 / 1e9 / report.attempts as f64;
            let real_ideal = concurrency as f64 / real_latency;
            println!(
                "ideal-bound concurrency={concurrency} latency_ms={latency_ms} units={n} \
                 transitions_per_s={measured:.0} ideal={ideal:.0} ratio={:.3} \
                 real_step_latency_ms={:.2} ratio_vs_real_latency={:.3}",
                measured / ideal,
                real_latency * 1e3,
                measured / real_ideal
            );
        }

        // 2. Serial baseline vs executor at equal work, 10% transient failures.
        let latency = Duration::from_millis(5);
        let n = if quick { 40 } else { 200 };
        let policy = RetryPolicy {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(500),
            max_attempts: 50,
            max_elapsed: None,
        };
        let machine = SimulatedIo::new(latency, 0.1);
        let started = Instant::now();
        let serial = run_serial(&machine, units(n), policy).await;
        let serial_secs = started.elapsed().as_secs_f64();
        assert_eq!(serial.completed, n as u64);
        for concurrency in [4usize, 8, 16] {
            let started = Instant::now();
            let report = Executor::new(SimulatedIo::new(latency, 0.1))
                .concurrency(concurrency)
                .retry_policy(policy)
                .run_iter(units(n))
                .await;
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(report.completed, n as u64);
            println!(
                "vs-serial failure_rate=0.1 latency_ms=5 units={n} concurrency={concurrency} \
                 serial_units_per_s={:.1} executor_units_per_s={:.1} speedup={:.1} \
                 serial_attempts={} executor_attempts={}",
                n as f64 / serial_secs,
                n as f64 / secs,
                serial_secs / secs,
                serial.attempts,
                report.attempts
            );
        }
    });
    runtime.block_on(measured).expect("the measurements ran");
}

//! The `metrics` the executor records, read through a recorder installed for this thread.

mod sim;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
};
use sim::{Sim, St, units};
use state_machine::{Executor, RetryPolicy, StepError};

struct Count(AtomicU64);

impl HistogramFn for Count {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Capture {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Count>>>,
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Capture {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn histogram_count(&self, key: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(name(key))
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = self
            .histograms
            .lock()
            .unwrap()
            .entry(name(key))
            .or_insert_with(|| Arc::new(Count(AtomicU64::new(0))))
            .clone();
        Histogram::from_arc(h)
    }
}

#[test]
fn counters_and_histograms_per_state() {
    let capture = Capture::default();
    // Every download fails once; one unit's transform fails for good.
    let sim = Arc::new(Sim::new(Duration::ZERO, |id, state, attempt| match state {
        St::Download if attempt == 1 => Some(StepError::transient("503")),
        St::Transform(_) if id == "u00002" => Some(StepError::permanent("bad currency")),
        _ => None,
    }));
    let report = metrics::with_local_recorder(&capture, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(
            Executor::with_shared(sim.clone())
                .concurrency(4)
                .retry_policy(RetryPolicy {
                    base: Duration::from_millis(1),
                    cap: Duration::from_millis(2),
                    max_attempts: 3,
                    max_elapsed: None,
                })
                .run_iter(units(10)),
        )
    });
    assert_eq!(report.completed, 9);
    let c = |k: &str| capture.counter(k);
    assert_eq!(c("state_machine_units_admitted_total{}"), 10);
    assert_eq!(c("state_machine_units_completed_total{}"), 9);
    assert_eq!(c("state_machine_units_dead_total{}"), 1);
    assert_eq!(c("state_machine_transitions_total{state=download}"), 10);
    assert_eq!(c("state_machine_transitions_total{state=transform}"), 9);
    assert_eq!(c("state_machine_transitions_total{state=upload}"), 9);
    assert_eq!(
        c("state_machine_failures_total{kind=transient,state=download}"),
        10
    );
    assert_eq!(c("state_machine_retries_total{state=download}"), 10);
    assert_eq!(
        c("state_machine_failures_total{kind=permanent,state=transform}"),
        1
    );
    assert_eq!(c("state_machine_retries_total{state=transform}"), 0);
    assert_eq!(
        capture.histogram_count("state_machine_transition_seconds{state=download}"),
        20
    );
    assert_eq!(
        capture.histogram_count("state_machine_transition_seconds{state=upload}"),
        9
    );
}

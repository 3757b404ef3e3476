//! The `metrics` the executor records, read through a recorder installed for this thread.

mod sim;

use std::sync::Arc;
use std::time::Duration;

use sim::{Sim, St, units};
use state_machine::{Executor, RetryPolicy, StepError};
use telemetry::Recorder;

#[test]
fn counters_and_histograms_per_state() {
    let recorder = Recorder::new();
    // Every download fails once; one unit's transform fails for good.
    let sim = Arc::new(Sim::new(Duration::ZERO, |id, state, attempt| match state {
        St::Download if attempt == 1 => Some(StepError::transient("503")),
        St::Transform(_) if id == "u00002" => Some(StepError::permanent("bad currency")),
        _ => None,
    }));
    let report = metrics::with_local_recorder(&recorder, || {
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
    let snap = recorder.snapshot();
    let c = |name: &str, labels: &[(&str, &str)]| snap.counter(name, labels).unwrap_or(0);
    let h = |state: &str| {
        snap.histogram("state_machine_transition_seconds", &[("state", state)])
            .map_or(0, |h| h.count)
    };
    assert_eq!(c("state_machine_units_admitted_total", &[]), 10);
    assert_eq!(c("state_machine_units_completed_total", &[]), 9);
    assert_eq!(c("state_machine_units_dead_total", &[]), 1);
    assert_eq!(
        c("state_machine_transitions_total", &[("state", "download")]),
        10
    );
    assert_eq!(
        c("state_machine_transitions_total", &[("state", "transform")]),
        9
    );
    assert_eq!(
        c("state_machine_transitions_total", &[("state", "upload")]),
        9
    );
    assert_eq!(
        c(
            "state_machine_failures_total",
            &[("kind", "transient"), ("state", "download")]
        ),
        10
    );
    assert_eq!(
        c("state_machine_retries_total", &[("state", "download")]),
        10
    );
    assert_eq!(
        c(
            "state_machine_failures_total",
            &[("kind", "permanent"), ("state", "transform")]
        ),
        1
    );
    assert_eq!(
        c("state_machine_retries_total", &[("state", "transform")]),
        0
    );
    assert_eq!(h("download"), 20);
    assert_eq!(h("upload"), 9);
}

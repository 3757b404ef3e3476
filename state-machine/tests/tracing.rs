//! The `tracing` span every unit's events are logged in.

mod sim;

use std::sync::Arc;
use std::time::Duration;

use sim::{Sim, St, units};
use state_machine::{Executor, RetryPolicy, StepError};
use test_services::CapturedLog;

#[test]
fn retries_and_dead_letters_are_logged_in_the_unit_span() {
    let captured = CapturedLog::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let sim = Arc::new(Sim::new(Duration::ZERO, |id, state, attempt| {
        match (id, state) {
            ("u00001", St::Download) if attempt == 1 => Some(StepError::transient("503")),
            ("u00002", St::Upload(_)) => Some(StepError::permanent("403 Forbidden")),
            _ => None,
        }
    }));
    let report = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(
                Executor::with_shared(sim)
                    .retry_policy(RetryPolicy {
                        base: Duration::from_millis(1),
                        ..RetryPolicy::default()
                    })
                    .run_iter(units(3)),
            )
    });
    assert_eq!(report.completed, 2);
    let logs = captured.text();
    let retry = logs
        .lines()
        .find(|l| l.contains("retry scheduled"))
        .expect("a retry line");
    assert!(retry.contains("unit{id=u00001}"), "{retry}");
    assert!(retry.contains("state=\"download\""), "{retry}");
    let dead = logs
        .lines()
        .find(|l| l.contains("dead letter"))
        .expect("a dead-letter line");
    assert!(dead.contains("unit{id=u00002}"), "{dead}");
    assert!(dead.contains("403 Forbidden"), "{dead}");
}

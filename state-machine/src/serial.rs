//! The naive baseline: one unit after another, a failure retries the whole unit.

use std::time::Duration;

use tokio::time::Instant;

use crate::{DeadLetter, Machine, Report, RetryPolicy, Transition, Unit};

/// Runs `units` one after another, each from its initial state to completion; a transient
/// failure sleeps the backoff delay (or the server's `retry_after`) and restarts the whole
/// unit from its initial state, up to `policy.max_attempts` times. This is what the executor
/// replaces; it is here as the baseline benches and the example compare against.
pub async fn run_serial<M, I>(machine: &M, units: I, policy: RetryPolicy) -> Report<M::State>
where
    M: Machine,
    M::State: Clone,
    I: IntoIterator<Item = Unit<M::State>>,
{
    let started = Instant::now();
    let mut report = Report {
        completed: 0,
        dead: Vec::new(),
        unfinished: Vec::new(),
        attempts: 0,
        transitions: 0,
        retries: 0,
        elapsed: Duration::ZERO,
        shut_down: false,
        journal_error: None,
    };
    for unit in units {
        let mut tries = 0u32;
        'unit: loop {
            tries += 1;
            let mut state = unit.state.clone();
            loop {
                report.attempts += 1;
                match machine.step(&unit.id, &state).await {
                    Ok(Transition::Next(next)) => {
                        report.transitions += 1;
                        state = next;
                    }
                    Ok(Transition::Completed) => {
                        report.transitions += 1;
                        report.completed += 1;
                        break 'unit;
                    }
                    Err(error) => {
                        if error.is_transient() && tries < policy.max_attempts {
                            report.retries += 1;
                            let delay = error
                                .retry_after_hint()
                                .unwrap_or_else(|| policy.backoff(tries));
                            tokio::time::sleep(delay).await;
                            continue 'unit;
                        }
                        report.dead.push(DeadLetter {
                            id: unit.id.clone(),
                            state,
                            error,
                            attempts: tries,
                        });
                        break 'unit;
                    }
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

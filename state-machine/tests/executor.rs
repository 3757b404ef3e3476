//! Executor behaviour: retries, dead letters, limits, cancellation, bounded input pulling.

mod sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use sim::{Sim, St, units, value_of};
use state_machine::{Executor, Quota, RetryPolicy, StepError, Unit};

const LIMIT: Duration = Duration::from_secs(60);

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        max_attempts,
        max_elapsed: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_every_unit_completes() {
    // Every transition fails twice before it succeeds.
    let sim = Arc::new(Sim::new(Duration::ZERO, |_, _, attempt| {
        (attempt <= 2).then(|| StepError::transient("503 Service Unavailable"))
    }));
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(sim.clone())
            .concurrency(8)
            .retry_policy(fast_policy(5))
            .run_iter(units(50)),
    )
    .await
    .unwrap();
    assert_eq!(report.completed, 50);
    assert!(report.dead.is_empty(), "{:?}", report.dead);
    assert!(report.unfinished.is_empty());
    assert_eq!(report.attempts, 50 * 3 * 3);
    assert_eq!(report.retries, 50 * 3 * 2);
    assert_eq!(report.transitions, 50 * 3);
    for u in units(50) {
        for state in sim::STATES {
            assert_eq!(sim.calls(&u.id, state), 3, "{} {state}", u.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_and_exhausted_retries_end_as_dead_letters() {
    let sim = Arc::new(Sim::new(Duration::ZERO, |id, state, _| match (id, state) {
        ("u00003", St::Transform(_)) => Some(StepError::permanent("unknown currency XTS")),
        ("u00007", St::Upload(_)) => Some(StepError::transient("connection reset")),
        _ => None,
    }));
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(sim.clone())
            .concurrency(4)
            .retry_policy(fast_policy(4))
            .run_iter(units(10)),
    )
    .await
    .unwrap();
    assert_eq!(report.completed, 8);
    assert!(report.unfinished.is_empty());
    let mut dead = report.dead.clone();
    dead.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].id, "u00003");
    assert_eq!(dead[0].state, St::Transform(value_of("u00003")));
    assert_eq!(dead[0].attempts, 1);
    assert!(!dead[0].error.is_transient());
    assert_eq!(dead[0].error.message(), "unknown currency XTS");
    assert_eq!(
        sim.calls("u00003", "transform"),
        1,
        "no retry after a permanent error"
    );
    assert_eq!(dead[1].id, "u00007");
    assert_eq!(dead[1].state, St::Upload(value_of("u00007") * 2));
    assert_eq!(dead[1].attempts, 4);
    assert!(dead[1].error.is_transient());
    assert_eq!(sim.calls("u00007", "upload"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_elapsed_gives_up_before_max_attempts() {
    let sim = Arc::new(Sim::new(Duration::ZERO, |_, _, _| {
        Some(StepError::retry_after("429", Duration::from_millis(40)))
    }));
    let policy = RetryPolicy {
        max_attempts: 100,
        max_elapsed: Some(Duration::from_millis(100)),
        ..fast_policy(100)
    };
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(sim.clone())
            .retry_policy(policy)
            .run_iter(units(1)),
    )
    .await
    .unwrap();
    assert_eq!(report.dead.len(), 1);
    // Retries at ~40 ms and ~80 ms fit in 100 ms; a third at ~120 ms does not.
    assert_eq!(report.dead[0].attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_while_other_units_go_on() {
    // The first download of u00000 is throttled for 30 s; the others run meanwhile.
    let sim = Arc::new(Sim::new(Duration::from_millis(10), |id, state, attempt| {
        (id == "u00000" && *state == St::Download && attempt == 1)
            .then(|| StepError::retry_after("429 Too Many Requests", Duration::from_secs(30)))
    }));
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(sim.clone())
            .concurrency(1)
            .run_iter(units(5)),
    )
    .await
    .unwrap();
    assert_eq!(report.completed, 5);
    assert_eq!(report.retries, 1);
    let events = sim.events.lock().unwrap();
    let first = events.iter().find(|e| e.id == "u00000").unwrap();
    assert!(first.failed);
    let retry = events
        .iter()
        .find(|e| e.id == "u00000" && e.attempt == 2)
        .unwrap();
    assert!(retry.start.duration_since(first.end) >= Duration::from_secs(30));
    // With one worker, every other unit completed before the throttled one was retried.
    let last_other = events
        .iter()
        .filter(|e| e.id != "u00000")
        .map(|e| e.end)
        .max()
        .unwrap();
    assert!(last_other <= retry.start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_are_never_exceeded() {
    let sim = Arc::new(Sim::new(Duration::from_millis(3), |_, _, attempt| {
        (attempt == 1 && fastrand::u8(0..10) == 0).then(|| StepError::transient("flaky"))
    }));
    let executor = Executor::with_shared(sim.clone())
        .concurrency(8)
        .limit_concurrency("download", 2)
        .limit_concurrency("upload", 3)
        .retry_policy(fast_policy(5));
    let progress = executor.progress();
    let report = tokio::time::timeout(LIMIT, executor.run_iter(units(120)))
        .await
        .unwrap();
    assert_eq!(report.completed, 120);
    assert!(sim.max_in_flight("download") <= 2);
    assert!(sim.max_in_flight("upload") <= 3);
    assert!(sim.max_in_flight_total() <= 8);
    // The executor's own view agrees, and the final snapshot adds up.
    let snap = progress.snapshot();
    assert!(snap.state("download").unwrap().max_in_flight <= 2);
    assert!(snap.state("upload").unwrap().max_in_flight <= 3);
    assert_eq!(snap.completed, 120);
    assert_eq!(snap.in_flight + snap.ready + snap.waiting, 0);
    assert_eq!(snap.state("transform").unwrap().transitions, 120);
    assert_eq!(snap.attempts, report.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_state_does_not_hold_back_other_states() {
    let sim = Arc::new(Sim::ok(Duration::ZERO));
    // 8 units to download at 10/s (burst 1) and 8 units already past the download.
    let mut input = units(8);
    input.extend((0..8).map(|i| Unit::new(format!("t{i}"), St::Transform(i))));
    let quota = Quota::per_second(std::num::NonZeroU32::new(10).unwrap())
        .allow_burst(std::num::NonZeroU32::new(1).unwrap());
    let run_started = tokio::time::Instant::now();
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(sim.clone())
            .concurrency(4)
            .limit_rate("download", quota)
            .run_iter(input),
    )
    .await
    .unwrap();
    assert_eq!(report.completed, 16);
    let events = sim.events.lock().unwrap();
    let mut downloads: Vec<_> = events.iter().filter(|e| e.state == "download").collect();
    downloads.sort_by_key(|e| e.start);
    // GCRA at 10/s, burst 1: download k (0-based) is let through no earlier than k * 100 ms
    // after the run started (2 ms slack between governor's clock and tokio's).
    for (k, download) in downloads.iter().enumerate() {
        let earliest =
            Duration::from_millis(100 * k as u64).saturating_sub(Duration::from_millis(2));
        assert!(
            download.start.duration_since(run_started) >= earliest,
            "download {k} started too early"
        );
    }
    // Every unit that skipped the download finished before the third download started.
    let others_done = events
        .iter()
        .filter(|e| e.id.starts_with('t'))
        .map(|e| e.end)
        .max()
        .unwrap();
    assert!(others_done < downloads[2].start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_transitions_finish_and_returns_unfinished_units() {
    let sim = Arc::new(Sim::ok(Duration::from_millis(20)));
    let executor = Executor::with_shared(sim.clone()).concurrency(4);
    let shutdown = executor.shutdown_handle();
    let progress = executor.progress();
    let run = tokio::spawn(executor.run_iter(units(200)));
    // Stop once a few units completed.
    tokio::time::timeout(LIMIT, async {
        while progress.snapshot().completed < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    shutdown.shutdown();
    let report = tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
    assert!(report.shut_down);
    assert!(report.completed >= 3 && report.completed < 200);
    // Nothing aborted mid-step.
    assert_eq!(
        sim.started.load(Ordering::SeqCst),
        sim.finished.load(Ordering::SeqCst)
    );
    // Every admitted unit is accounted for, each in the state its last transition left.
    let admitted = progress.snapshot().admitted;
    assert_eq!(report.completed + report.unfinished.len() as u64, admitted);
    assert!(!report.unfinished.is_empty());
    for unit in &report.unfinished {
        let expected = if sim.calls(&unit.id, "transform") == 1 {
            St::Upload(value_of(&unit.id) * 2)
        } else if sim.calls(&unit.id, "download") == 1 {
            St::Transform(value_of(&unit.id))
        } else {
            St::Download
        };
        assert_eq!(unit.state, expected, "{}", unit.id);
        assert_eq!(sim.calls(&unit.id, "upload"), 0);
    }
    // No transition started after the run returned.
    let started = sim.started.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.started.load(Ordering::SeqCst), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_is_pulled_only_as_capacity_frees() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let sim = Arc::new(Sim::ok(Duration::ZERO));
    let executor = Executor::with_shared(sim.clone())
        .concurrency(4)
        .max_active(32);
    let progress = executor.progress();
    let counter = pulled.clone();
    let input = futures::stream::iter(0..20_000usize).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        Unit::new(format!("u{i}"), St::Download)
    });
    let watcher = {
        let pulled = pulled.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut worst = 0;
            for _ in 0..2_000 {
                let pulled_so_far = pulled.load(Ordering::SeqCst) as u64;
                let done = progress.snapshot();
                let held = pulled_so_far.saturating_sub(done.completed);
                worst = worst.max(held);
                if done.completed == 20_000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            worst
        })
    };
    let report = tokio::time::timeout(LIMIT, executor.run(input))
        .await
        .unwrap();
    assert_eq!(report.completed, 20_000);
    let worst = watcher.await.unwrap();
    // Snapshots lag the counter a little: allow one batch of in-flight completions.
    assert!(worst <= 32 + 4 + 1, "held up to {worst} units");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_ends_as_a_dead_letter() {
    struct Panics;
    impl state_machine::Machine for Panics {
        type State = u8;
        fn state_name(&self, _: &u8) -> &'static str {
            "only"
        }
        async fn step(&self, id: &str, _: &u8) -> Result<state_machine::Transition<u8>, StepError> {
            if id == "bad" {
                panic!("index out of bounds");
            }
            Ok(state_machine::Transition::Completed)
        }
    }
    let report = Executor::new(Panics)
        .run_iter(vec![Unit::new("good", 0), Unit::new("bad", 1)])
        .await;
    assert_eq!(report.completed, 1);
    assert_eq!(report.dead.len(), 1);
    assert_eq!(report.dead[0].state, 1);
    assert!(
        report.dead[0]
            .error
            .message()
            .contains("index out of bounds")
    );
}

//! The journal: resume after a crash (including a torn last record), resume after a shutdown,
//! and damage that is not a torn tail.

mod sim;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sim::{Sim, St, units, value_of};
use state_machine::{Error, Executor, Journal, Recovery, StepError};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_crash_with_a_torn_record_loses_no_unit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.journal");
    let crashed = dir.path().join("crashed.journal");

    // First run, with 10% transient failures; its journal file is copied mid-run, which is
    // exactly what a `kill -9` at that moment would leave on disk.
    let sim = Arc::new(Sim::new(Duration::from_millis(2), |_, _, attempt| {
        (attempt == 1 && fastrand::u8(0..10) == 0).then(|| StepError::transient("503"))
    }));
    let executor = Executor::with_shared(sim.clone())
        .concurrency(4)
        .journal(Journal::create(&path).unwrap());
    let progress = executor.progress();
    let run = tokio::spawn(executor.run_iter(units(80)));
    tokio::time::timeout(LIMIT, async {
        while progress.snapshot().completed < 15 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    std::fs::copy(&path, &crashed).unwrap();
    run.abort();
    let _ = run.await;

    // The crash also tore the record being appended: a header announcing 300 bytes, 11 present.
    let intact = std::fs::metadata(&crashed).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&crashed)
        .unwrap();
    file.write_all(&300u64.to_be_bytes()).unwrap();
    file.write_all(b"{\"kind\":\"st").unwrap();
    drop(file);

    let (journal, recovery): (Journal, Recovery<St>) = Journal::open(&crashed).unwrap();
    let (torn_at, why) = recovery.torn.clone().expect("the torn record is reported");
    assert_eq!(torn_at, intact);
    assert!(why.contains("truncated"), "{why}");
    assert_eq!(
        std::fs::metadata(&crashed).unwrap().len(),
        intact,
        "torn tail cut off"
    );
    // The journal lags the run a little (its writer thread), so it may hold fewer than 15.
    assert!(!recovery.completed.is_empty() && !recovery.unfinished.is_empty());
    assert!(recovery.dead.is_empty());
    assert!(
        recovery.len() < 80,
        "the crash came before every unit was admitted"
    );

    // Resume: the journal's unfinished units in their latest state, then the units it never saw.
    let resumed_sim = Arc::new(Sim::ok(Duration::ZERO));
    let mut input = recovery.unfinished.clone();
    input.extend(units(80).into_iter().filter(|u| !recovery.contains(&u.id)));
    let report = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(resumed_sim.clone())
            .concurrency(4)
            .journal(journal)
            .run_iter(input),
    )
    .await
    .unwrap();
    assert!(report.journal_error.is_none(), "{:?}", report.journal_error);
    assert_eq!(
        report.completed as usize + recovery.completed.len(),
        80,
        "every unit completed exactly once across the two runs"
    );
    // Units were continued from their journaled state, not restarted.
    for unit in &recovery.unfinished {
        match unit.state {
            St::Download => assert_eq!(resumed_sim.calls(&unit.id, "download"), 1),
            St::Transform(v) => {
                assert_eq!(v, value_of(&unit.id));
                assert_eq!(resumed_sim.calls(&unit.id, "download"), 0);
                assert_eq!(resumed_sim.calls(&unit.id, "transform"), 1);
            }
            St::Upload(v) => {
                assert_eq!(v, value_of(&unit.id) * 2);
                assert_eq!(resumed_sim.calls(&unit.id, "transform"), 0);
                assert_eq!(resumed_sim.calls(&unit.id, "upload"), 1);
            }
        }
    }
    for id in &recovery.completed {
        assert_eq!(resumed_sim.calls(id, "upload"), 0, "{id} was done already");
    }

    // The journal now says every unit completed, and it reads cleanly to the end.
    let after: Recovery<St> = Journal::recover(&crashed).unwrap();
    assert!(after.torn.is_none());
    assert!(after.unfinished.is_empty(), "{:?}", after.unfinished);
    assert_eq!(after.completed.len(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_continues_the_units_a_shutdown_left_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.journal");
    let sim = Arc::new(Sim::new(Duration::from_millis(5), |id, state, _| {
        (id == "u00001" && *state == St::Download).then(|| StepError::permanent("404"))
    }));
    let executor = Executor::with_shared(sim.clone())
        .concurrency(3)
        .journal(Journal::create(&path).unwrap());
    let shutdown = executor.shutdown_handle();
    let progress = executor.progress();
    let run = tokio::spawn(executor.run_iter(units(100)));
    tokio::time::timeout(LIMIT, async {
        while progress.snapshot().completed < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    shutdown.shutdown();
    let first = tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
    assert!(first.shut_down);
    assert_eq!(first.dead.len(), 1);
    assert!(!first.unfinished.is_empty());

    let resumed_sim = Arc::new(Sim::ok(Duration::ZERO));
    let second = tokio::time::timeout(
        LIMIT,
        Executor::with_shared(resumed_sim.clone()).resume(&path),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(second.completed as usize, first.unfinished.len());
    assert!(second.dead.is_empty(), "a dead letter stays dead");
    assert_eq!(resumed_sim.calls("u00001", "download"), 0);

    let journal: Recovery<St> = Journal::recover(&path).unwrap();
    assert!(journal.unfinished.is_empty());
    assert_eq!(
        journal.completed.len() as u64,
        first.completed + second.completed
    );
    assert_eq!(journal.dead.len(), 1);
    assert_eq!(journal.dead[0].id, "u00001");
    assert_eq!(journal.dead[0].state, St::Download);
    assert_eq!(journal.dead[0].error.message(), "404");
}

#[test]
fn damage_other_than_a_torn_tail_is_an_error_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.journal");
    let mut writer = baldr::Writer::new(Vec::new());
    writer
        .write_record(br#"{"kind":"state","id":"a","state":"Download"}"#)
        .unwrap();
    let mut bytes = writer.finish().unwrap();
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&(-5i64).to_be_bytes());
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&path, &bytes).unwrap();
    match Journal::open::<St>(&path) {
        Err(Error::JournalRecord { source, .. }) => assert_eq!(source.offset(), Some(good)),
        other => panic!("expected a corrupt-record error, got {other:?}"),
    }
    // A complete record that does not decode is an error too, naming its offset.
    let mut writer = baldr::Writer::new(Vec::new());
    writer
        .write_record(br#"{"kind":"state","id":"a","state":"Download"}"#)
        .unwrap();
    writer
        .write_record(br#"{"kind":"state","id":"b","state":"Sideways"}"#)
        .unwrap();
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    match Journal::open::<St>(&path) {
        Err(e @ Error::JournalDecode { offset, .. }) => {
            assert_eq!(offset, good);
            assert!(e.to_string().contains(&format!("byte offset {good}")));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

//! SIGTERM cancels the token; a service that finishes its work and returns exits 0, and a
//! service's error marked as bad configuration would exit 2 (checked without a signal).
//! (Its own process: `run` installs the process-wide metrics recorder and signal handlers.)

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    process: lifecycle::ProcessArgs,
}

#[test]
fn sigterm_cancels_the_token_and_a_drained_service_exits_0() {
    let args: Args = lifecycle::try_parse_from("drain-test", ["t"]).unwrap();
    let pid = std::process::id().to_string();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
    });
    let drained = Arc::new(AtomicBool::new(false));
    let seen = drained.clone();
    let code = lifecycle::run("drain-test", &args.process, move |stop| async move {
        tokio::time::timeout(Duration::from_secs(30), stop.cancelled())
            .await
            .map_err(|_| anyhow::anyhow!("no cancellation within 30s"))?;
        // "Finishing accepted work" after the signal.
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.store(true, Ordering::SeqCst);
        Ok(lifecycle::Exit::Done)
    });
    assert!(killer.join().unwrap().success());
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(drained.load(Ordering::SeqCst));
}

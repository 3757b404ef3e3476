//! A service that ignores its stop token is cut off at the drain deadline: exit status 1.
//! (Its own process: `run` installs the process-wide metrics recorder and signal handlers.)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    process: lifecycle::ProcessArgs,
}

#[test]
fn a_service_that_does_not_stop_is_cut_off_at_the_deadline() {
    let args: Args =
        lifecycle::try_parse_from("drain-test", ["t", "--drain-timeout", "300ms"]).unwrap();
    let pid = std::process::id().to_string();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let started = Instant::now();
    let code = lifecycle::run("drain-test", &args.process, |_stop| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(lifecycle::Exit::Done)
    });
    killer.join().unwrap();
    assert_eq!(code, ExitCode::from(1));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(20),
        "stopped after {took:?}: the signal at ~300ms plus the 300ms deadline"
    );
}

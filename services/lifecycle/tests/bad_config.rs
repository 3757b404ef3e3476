//! Exit statuses from the service's result: a `BadConfig` error is 2, any other error 1.
//! (Its own process: `run` installs the process-wide metrics recorder.)

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    process: lifecycle::ProcessArgs,
}

#[test]
fn a_bad_configuration_exits_2() {
    let args: Args = lifecycle::try_parse_from("exit-test", ["t"]).unwrap();
    let code = lifecycle::run("exit-test", &args.process, |_| async {
        Err(
            lifecycle::BadConfig::wrap(anyhow::anyhow!("--store: no bucket"))
                .context("opening the store"),
        )
    });
    assert_eq!(code, ExitCode::from(2));
}

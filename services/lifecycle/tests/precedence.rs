//! Flags > environment > config file > defaults, with real environment variables (one test in
//! its own process: it sets variables).

use std::io::Write;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "prec")]
struct Args {
    #[arg(long, default_value = "default")]
    a: String,
    #[arg(long, default_value = "default")]
    b: String,
    #[arg(long, default_value = "default")]
    c: String,
    #[arg(long, default_value = "default")]
    d: String,
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    process: lifecycle::ProcessArgs,
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "a = \"file\"\nb = \"file\"\nc = \"file\"\ndrain-timeout = \"7s\""
    )
    .unwrap();
    // SAFETY: this test binary runs this one test; nothing else reads the environment.
    unsafe {
        std::env::set_var("LIFECYCLE_PREC_A", "env");
        std::env::set_var("LIFECYCLE_PREC_B", "env");
        std::env::set_var("LIFECYCLE_PREC_ONCE", "true");
        std::env::set_var("LIFECYCLE_PREC_CONFIG", f.path());
    }
    let args: Args = lifecycle::try_parse_from("lifecycle-prec", ["prec", "--a", "flag"]).unwrap();
    assert_eq!(args.a, "flag", "flag over environment and file");
    assert_eq!(args.b, "env", "environment over file");
    assert_eq!(args.c, "file", "file over default");
    assert_eq!(args.d, "default");
    assert!(args.once, "a switch from the environment");
    assert_eq!(args.process.drain_timeout, Duration::from_secs(7));
    assert_eq!(
        args.process.config.as_deref(),
        Some(f.path()),
        "--config from the environment"
    );
}

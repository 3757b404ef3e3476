//! Flags, environment variables and a TOML config file, in one precedence order.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::error::Error;
use crate::logging::LogFormat;

/// The flags every service binary flattens into its own: the config file, the log format,
/// the drain deadline and where metrics go.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Read flags from this TOML file: keys are long flag names (`poll-interval = "30s"`).
    /// Flags and environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr (`RUST_LOG` sets the level; default info).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// After SIGTERM/SIGINT, how long the service may take to finish accepted work before
    /// the process exits anyway (status 1).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::positive)]
    pub drain_timeout: Duration,
    /// Where metrics go.
    #[command(flatten)]
    pub telemetry: telemetry::TelemetryArgs,
}

/// The environment variable of a long flag for a program: `blueshift` and `poll-interval`
/// give `BLUESHIFT_POLL_INTERVAL`.
///
/// ```
/// assert_eq!(lifecycle::env_name("report-fetcher", "store-option"), "REPORT_FETCHER_STORE_OPTION");
/// ```
pub fn env_name(program: &str, long: &str) -> String {
    let mut s = String::with_capacity(program.len() + long.len() + 1);
    for part in [program, "_", long] {
        s.extend(part.chars().map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        }));
    }
    s
}

/// Parses the process's command line, environment and `--config` file into `A`; on an error
/// (or `--help`, `--version`) prints clap's message and exits (status 2 for errors).
///
/// Every long flag of `A` without an explicit `env` reads [`env_name`]`(program, flag)`.
pub fn parse<A: clap::Parser>(program: &str) -> A {
    match try_parse_from(program, std::env::args_os()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    }
}

/// [`parse`] with a given command line (the first item is the program's name); errors are
/// returned, not printed.
///
/// # Errors
/// clap's errors, and config file errors (unreadable file, bad TOML, a key that is not a
/// long flag of `A`, a value of the wrong shape) as clap errors naming the file and key.
pub fn try_parse_from<A, I, T>(program: &str, args: I) -> Result<A, clap::Error>
where
    A: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = with_env(A::command(), program);
    // A first, lenient pass finds the config file and what the command line and the
    // environment set: required flags may be in the file, so none is required yet.
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let lenient = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args.iter().cloned());
    // The file's keys are the top-level command's flags: a subcommand (`bifrost verify`)
    // takes its flags from the command line and the environment only.
    if let Ok(first) = lenient
        && first.subcommand_name().is_none()
        && let Some(path) = config_path(&cmd, &first)
    {
        let extra = file_flags(&cmd, &first, &path)
            .map_err(|e| cmd.error(clap::error::ErrorKind::InvalidValue, e.to_string()))?;
        // The file's flags go first: they fill only what the command line and the
        // environment left unset, so their position cannot override anything.
        let rest = args.split_off(args.len().min(1));
        args.extend(extra.into_iter().map(OsString::from));
        args.extend(rest);
    }
    let matches = cmd.try_get_matches_from_mut(args)?;
    A::from_arg_matches(&matches).map_err(|e| e.with_cmd(&cmd))
}

/// Gives every long flag without an `env` its `<PROGRAM>_<FLAG>` variable, in subcommands
/// too (`bifrost verify --store` reads `BIFROST_STORE`, as the top-level `--store` does).
fn with_env(cmd: Command, program: &str) -> Command {
    let cmd = cmd.mut_subcommands(|sub| with_env(sub, program));
    cmd.mut_args(|arg| {
        let takes_env = arg.get_env().is_none()
            && !matches!(
                arg.get_action(),
                clap::ArgAction::Help
                    | clap::ArgAction::HelpShort
                    | clap::ArgAction::HelpLong
                    | clap::ArgAction::Version
            );
        match arg.get_long().map(|l| env_name(program, l)) {
            Some(var) if takes_env => arg.env(var),
            _ => arg,
        }
    })
}

fn config_path(cmd: &Command, matches: &ArgMatches) -> Option<PathBuf> {
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("config"))?;
    matches.get_one::<PathBuf>(arg.get_id().as_str()).cloned()
}

/// The file's settings as `--flag=value` arguments, for the flags that neither the command
/// line nor the environment set.
fn file_flags(cmd: &Command, matches: &ArgMatches, path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::ConfigSyntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let bad = |message: String| Error::ConfigKey {
            path: path.to_path_buf(),
            key: key.clone(),
            message,
        };
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            return Err(bad(format!(
                "not a flag of {} (keys are long flag names without the dashes)",
                cmd.get_name()
            )));
        };
        if key == "config" {
            return Err(bad("a config file cannot name another one".into()));
        }
        let set_elsewhere = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if set_elsewhere {
            continue;
        }
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        let repeatable = matches!(
            arg.get_action(),
            clap::ArgAction::Append | clap::ArgAction::Count
        );
        if values.len() > 1 && !repeatable {
            return Err(bad("takes one value, not a list".into()));
        }
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err(bad(
                        "expected a string, number, boolean or a list of them".into()
                    ));
                }
            };
            if arg.get_action().takes_values() {
                out.push(format!("--{key}={text}"));
            } else {
                // A switch: `true` turns it on, `false` leaves it off (its default).
                match v {
                    toml::Value::Boolean(true) => out.push(format!("--{key}")),
                    toml::Value::Boolean(false) => {}
                    _ => {
                        return Err(bad(format!(
                            "is a switch: write true or false, not {text:?}"
                        )));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    #[derive(Debug, Parser)]
    #[command(name = "svc")]
    struct Args {
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long, default_value = "30s", value_parser = crate::duration::positive)]
        poll_interval: Duration,
        #[arg(long)]
        once: bool,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        process: ProcessArgs,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    // Variables are named after a program no test environment sets (SVC_TEST_UNSET_*).
    const P: &str = "svc-test-unset";

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let f = file(
            "name = \"from-file\"\npoll-interval = \"2m\"\nonce = true\ntag = [\"x\", \"y\"]\nconcurrency = 9\n",
        );
        let path = f.path().to_str().unwrap();
        let a: Args = try_parse_from(P, ["svc", "--config", path, "--concurrency", "2"]).unwrap();
        assert_eq!(a.name, "from-file");
        assert_eq!(a.poll_interval, Duration::from_secs(120));
        assert!(a.once);
        assert_eq!(a.tags, ["x", "y"]);
        assert_eq!(a.concurrency, 2, "the flag wins over the file");
        let a: Args = try_parse_from(P, ["svc", "--config", path, "--tag", "z"]).unwrap();
        assert_eq!(
            a.tags,
            ["z"],
            "a repeatable flag given replaces the file's list"
        );
        let a: Args = try_parse_from(P, ["svc"]).unwrap();
        assert_eq!((a.name.as_str(), a.concurrency, a.once), ("a", 4, false));
    }

    #[test]
    fn a_required_flag_may_come_from_the_file() {
        #[derive(Debug, Parser)]
        struct Required {
            #[arg(long)]
            store: String,
            #[command(flatten)]
            process: ProcessArgs,
        }
        let f = file("store = \"s3://b\"\n");
        let path = f.path().to_str().unwrap();
        let r: Required = try_parse_from(P, ["svc", "--config", path]).unwrap();
        assert_eq!(r.store, "s3://b");
        let e = try_parse_from::<Required, _, _>(P, ["svc"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let f = file("nmae = \"typo\"\n");
        let path = f.path().to_str().unwrap();
        let e = try_parse_from::<Args, _, _>(P, ["svc", "--config", path]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(path) && msg.contains("`nmae`"), "{msg}");
        assert_eq!(e.exit_code(), 2);

        let f = file("once = \"yes\"\n");
        let path = f.path().to_str().unwrap();
        let msg = try_parse_from::<Args, _, _>(P, ["svc", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`once`") && msg.contains("switch"), "{msg}");

        let f = file("name = [\"a\", \"b\"]\n");
        let path = f.path().to_str().unwrap();
        let msg = try_parse_from::<Args, _, _>(P, ["svc", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`name`") && msg.contains("one value"), "{msg}");

        let f = file("name = \n");
        let path = f.path().to_str().unwrap();
        let msg = try_parse_from::<Args, _, _>(P, ["svc", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(msg.contains(path) && msg.contains("line 1"), "{msg}");

        let f = file("poll-interval = \"30\"\n");
        let path = f.path().to_str().unwrap();
        let msg = try_parse_from::<Args, _, _>(P, ["svc", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("--poll-interval") && msg.contains("unit"),
            "{msg}"
        );

        let msg = try_parse_from::<Args, _, _>(P, ["svc", "--config", "/nonexistent/x.toml"])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/x.toml"), "{msg}");
    }

    #[test]
    fn subcommand_flags_have_variables_and_skip_the_file() {
        #[derive(Debug, Parser)]
        #[command(subcommand_negates_reqs = true)]
        struct Top {
            #[arg(long, required = true)]
            brokers: Option<String>,
            #[command(subcommand)]
            sub: Option<Sub>,
            #[command(flatten)]
            process: ProcessArgs,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Sub {
            Check {
                #[arg(long)]
                store: String,
                #[arg(long)]
                deep: bool,
            },
        }
        let cmd = with_env(<Top as clap::CommandFactory>::command(), "bifrost");
        let check = cmd.find_subcommand("check").unwrap();
        let env = check
            .get_arguments()
            .find(|a| a.get_long() == Some("store"))
            .and_then(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned());
        assert_eq!(env.as_deref(), Some("BIFROST_STORE"));

        // A config file names top-level flags: used without a subcommand, ignored with one.
        let f = file("brokers = \"b:9092\"\n");
        let path = f.path().to_str().unwrap();
        let t: Top = try_parse_from(P, ["svc", "--config", path]).unwrap();
        assert_eq!(t.brokers.as_deref(), Some("b:9092"));
        let t: Top =
            try_parse_from(P, ["svc", "--config", path, "check", "--store", "s3://b"]).unwrap();
        match t.sub {
            Some(Sub::Check { store, deep }) => {
                assert_eq!((store.as_str(), deep), ("s3://b", false))
            }
            None => panic!("the subcommand"),
        }
        let e = try_parse_from::<Top, _, _>(P, ["svc"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn every_long_flag_has_its_variable() {
        let cmd = with_env(<Args as clap::CommandFactory>::command(), "blueshift");
        let env = |long: &str| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("poll-interval").as_deref(),
            Some("BLUESHIFT_POLL_INTERVAL")
        );
        assert_eq!(env("config").as_deref(), Some("BLUESHIFT_CONFIG"));
        assert_eq!(
            env("metrics-listen").as_deref(),
            Some("BLUESHIFT_METRICS_LISTEN")
        );
        assert_eq!(env("help"), None);
    }
}

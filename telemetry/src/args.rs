//! Command-line flags shared by every service binary (feature `clap`, on by default).

use std::net::SocketAddr;
use std::time::Duration;

use crate::Error;
use crate::riemann::{RiemannConfig, Transport};
use crate::service::{Telemetry, TelemetryBuilder};

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The telemetry flags of a service binary; flatten them into its arguments:
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct Args {
///     /// Run one pass and exit.
///     #[arg(long)]
///     once: bool,
///     #[command(flatten)]
///     telemetry: telemetry::TelemetryArgs,
/// }
///
/// let args = Args::parse_from(["svc", "--riemann", "riemann:5555", "--riemann-tag", "prod"]);
/// assert_eq!(args.telemetry.riemann.as_deref(), Some("riemann:5555"));
/// assert_eq!(args.telemetry.riemann_interval, std::time::Duration::from_secs(10));
/// assert_eq!(args.telemetry.metrics_listen, None);
/// ```
///
/// then, inside the tokio runtime, `let telemetry = args.telemetry.install("svc")?;` and
/// `telemetry.shutdown().await` before exiting.
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[group(id = "telemetry")]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics over HTTP at ADDR (e.g. 0.0.0.0:9100, path /metrics); off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log a one-line metrics summary every DURATION (e.g. 60s, 5m); 0s turns it off.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub metrics_log_interval: Duration,

    /// Report metrics to the Riemann server at HOST:PORT; off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub riemann: Option<String>,

    /// Time between Riemann reports (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub riemann_interval: Duration,

    /// How long Riemann keeps each event [default: twice --riemann-interval].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub riemann_ttl: Option<Duration>,

    /// Tag added to every Riemann event (repeatable).
    #[arg(long = "riemann-tag", value_name = "TAG")]
    pub riemann_tags: Vec<String>,

    /// Host name in Riemann events [default: this machine's hostname].
    #[arg(long, value_name = "NAME")]
    pub riemann_host: Option<String>,

    /// Text put in front of every Riemann service name (e.g. "eu1 ").
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub riemann_prefix: String,

    /// Send to Riemann over UDP (unacknowledged) instead of TCP.
    #[arg(long)]
    pub riemann_udp: bool,
}

impl TelemetryArgs {
    /// The builder these flags describe, for the service named `service`.
    pub fn builder(&self, service: &str) -> TelemetryBuilder {
        let mut builder =
            TelemetryBuilder::new(service).log_summary(Some(self.metrics_log_interval));
        if let Some(addr) = self.metrics_listen {
            builder = builder.prometheus(addr);
        }
        if let Some(addr) = &self.riemann {
            let mut config = RiemannConfig::new(addr.clone())
                .interval(self.riemann_interval)
                .tags(self.riemann_tags.iter().cloned())
                .prefix(self.riemann_prefix.clone())
                .transport(if self.riemann_udp {
                    Transport::Udp
                } else {
                    Transport::Tcp
                });
            if let Some(ttl) = self.riemann_ttl {
                config = config.ttl(ttl);
            }
            if let Some(host) = &self.riemann_host {
                config = config.host(host.clone());
            }
            builder = builder.riemann(config);
        }
        builder
    }

    /// Starts the sinks these flags ask for and installs the global `metrics` recorder.
    ///
    /// Must be called inside a tokio runtime, once per process; see
    /// [`TelemetryBuilder::install`].
    pub fn install(&self, service: &str) -> Result<Telemetry, Error> {
        self.builder(service).install()
    }
}

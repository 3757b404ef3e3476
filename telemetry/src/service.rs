//! Setting up the sinks of a service: [`TelemetryBuilder`] and the running [`Telemetry`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::recorder::Recorder;
use crate::riemann::RiemannConfig;
use crate::{Error, prometheus, riemann, summary};

/// Configures the sinks of one service, then starts them.
///
/// Nothing is on by default: add a Prometheus endpoint, a Riemann reporter and/or a log
/// summary. [`install`](Self::install) also makes the recorder the global `metrics` recorder;
/// [`start`](Self::start) does not (for tests and for programs that install it themselves).
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    service: String,
    recorder: Option<Recorder>,
    prometheus: Option<SocketAddr>,
    riemann: Option<RiemannConfig>,
    log_interval: Option<Duration>,
}

impl TelemetryBuilder {
    /// Sinks for the service named `service` (used in Riemann service names and log lines).
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            recorder: None,
            prometheus: None,
            riemann: None,
            log_interval: None,
        }
    }

    /// Uses `recorder` rather than a new, empty one.
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Serves Prometheus scrapes over HTTP on `addr` (port 0 picks a free port, see
    /// [`Telemetry::prometheus_addr`]).
    pub fn prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Reports to Riemann.
    pub fn riemann(mut self, config: RiemannConfig) -> Self {
        self.riemann = Some(config);
        self
    }

    /// Logs a one-line summary (through `tracing`, target `telemetry`) every `interval`;
    /// `None` or zero turns it off.
    pub fn log_summary(mut self, interval: Option<Duration>) -> Self {
        self.log_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// Starts the sinks without installing the recorder globally.
    ///
    /// Must be called inside a tokio runtime. Fails when there is none, when the Prometheus
    /// address cannot be bound, or when the Riemann address is not `HOST:PORT`.
    pub fn start(self) -> Result<Telemetry, Error> {
        self.start_with(|_| Ok(()))
    }

    /// Starts the sinks and installs the recorder as the global `metrics` recorder.
    ///
    /// Must be called inside a tokio runtime; fails as [`start`](Self::start) does, and when a
    /// global recorder is already installed (there can be one per process).
    pub fn install(self) -> Result<Telemetry, Error> {
        self.start_with(|recorder| {
            metrics::set_global_recorder(recorder.clone()).map_err(|_| Error::AlreadyInstalled)
        })
    }

    fn start_with(
        self,
        before_spawning: impl FnOnce(&Recorder) -> Result<(), Error>,
    ) -> Result<Telemetry, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if let Some(config) = &self.riemann {
            config.validate()?;
        }
        let recorder = self.recorder.unwrap_or_default();
        let listener = match self.prometheus {
            None => None,
            Some(addr) => {
                let bind = |addr| -> std::io::Result<tokio::net::TcpListener> {
                    let listener = std::net::TcpListener::bind(addr)?;
                    listener.set_nonblocking(true)?;
                    let _guard = runtime.enter();
                    tokio::net::TcpListener::from_std(listener)
                };
                Some(bind(addr).map_err(|source| Error::Listen { addr, source })?)
            }
        };
        let prometheus_addr = match &listener {
            None => None,
            Some(l) => Some(l.local_addr().map_err(|source| Error::Listen {
                addr: self.prometheus.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                source,
            })?),
        };
        before_spawning(&recorder)?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            tasks.push(runtime.spawn(prometheus::serve(
                listener,
                recorder.clone(),
                stopped.clone(),
            )));
        }
        if let Some(config) = self.riemann {
            tasks.push(runtime.spawn(riemann::run(
                config,
                recorder.clone(),
                self.service.clone(),
                stopped.clone(),
            )));
        }
        if let Some(interval) = self.log_interval {
            tasks.push(runtime.spawn(summary::run(
                interval,
                recorder.clone(),
                self.service.clone(),
                stopped,
            )));
        }
        Ok(Telemetry {
            recorder,
            prometheus_addr,
            stop,
            tasks,
        })
    }
}

/// The running sinks of a service.
///
/// Call [`shutdown`](Self::shutdown) before exiting: it sends the final Riemann report and logs
/// the last summary. Dropping a `Telemetry` also stops the sinks, without waiting for them.
#[derive(Debug)]
pub struct Telemetry {
    recorder: Recorder,
    prometheus_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Telemetry {
    /// The registry the sinks read.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The address the Prometheus endpoint listens on, if enabled.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Stops the sinks: the Riemann reporter sends a final report (waiting at most its timeout
    /// to connect, and again to be acknowledged), the log summary logs a last line, the
    /// Prometheus endpoint stops accepting scrapes. Returns when they are done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "telemetry: a sink task failed");
            }
        }
    }
}

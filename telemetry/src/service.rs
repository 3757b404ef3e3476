//! Setting up the sinks of a service: [`TelemetryBuilder`] and the running [`Telemetry`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusRecorder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fanout::FanoutRecorder;
use crate::recorder::Recorder;
use crate::riemann::RiemannConfig;
use crate::{Error, prometheus, riemann, summary};

/// Configures the sinks of one service, then starts them.
///
/// Nothing is on by default: add a Prometheus endpoint, a Riemann reporter and/or a log
/// summary. [`install`](Self::install) also makes the global `metrics` recorder feed them;
/// [`start`](Self::start) does not (for tests, which record through
/// [`Telemetry::fanout_recorder`] or into their own [`Recorder`]).
///
/// The Riemann reporter and the log summary read this crate's [`Recorder`]; the Prometheus
/// endpoint reads the recorder of `metrics-exporter-prometheus`. With Prometheus on, what is
/// recorded goes to both (a `metrics-util` fan-out); without, only to the [`Recorder`].
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    service: String,
    recorder: Option<Recorder>,
    prometheus: Option<SocketAddr>,
    prometheus_buckets: Vec<(String, Vec<f64>)>,
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
            prometheus_buckets: Vec::new(),
            riemann: None,
            log_interval: None,
        }
    }

    /// Uses `recorder` rather than a new, empty one (for the Riemann reporter and the log
    /// summary; what it holds already is not copied to the Prometheus endpoint).
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Serves Prometheus scrapes over HTTP on `addr`, `GET /metrics` (port 0 picks a free
    /// port, see [`Telemetry::prometheus_addr`]). Histograms are exposed with buckets, see
    /// [`prometheus_buckets`](Self::prometheus_buckets).
    pub fn prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Bucket upper bounds (finite, strictly increasing; `+Inf` is always added) of the
    /// Prometheus histograms whose name ends in `suffix`, e.g. `"_seconds"` or `"_bytes"`;
    /// the empty suffix sets those of every histogram that no other suffix matches.
    ///
    /// Defaults: [`SECONDS_BUCKETS`](prometheus::SECONDS_BUCKETS) for `_seconds`,
    /// [`BYTES_BUCKETS`](prometheus::BYTES_BUCKETS) for `_bytes`,
    /// [`DEFAULT_BUCKETS`](prometheus::DEFAULT_BUCKETS) otherwise. Given twice for one suffix,
    /// the last wins. Unusable bounds make [`start`](Self::start) and
    /// [`install`](Self::install) fail with [`Error::PrometheusBuckets`].
    pub fn prometheus_buckets(mut self, suffix: impl Into<String>, bounds: &[f64]) -> Self {
        let suffix = suffix.into();
        self.prometheus_buckets.retain(|(s, _)| *s != suffix);
        self.prometheus_buckets.push((suffix, bounds.to_vec()));
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
    /// address cannot be bound or its buckets are unusable, or when the Riemann address is not
    /// `HOST:PORT`.
    pub fn start(self) -> Result<Telemetry, Error> {
        self.start_with(|_| Ok(()))
    }

    /// Starts the sinks and installs the global `metrics` recorder: the
    /// [`fanout_recorder`](Telemetry::fanout_recorder) feeding every sink.
    ///
    /// Must be called inside a tokio runtime; fails as [`start`](Self::start) does, and when a
    /// global recorder is already installed (there can be one per process).
    pub fn install(self) -> Result<Telemetry, Error> {
        self.start_with(|facade| {
            metrics::set_global_recorder(facade).map_err(|_| Error::AlreadyInstalled)
        })
    }

    fn start_with(
        self,
        before_spawning: impl FnOnce(FanoutRecorder) -> Result<(), Error>,
    ) -> Result<Telemetry, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if let Some(config) = &self.riemann {
            config.validate()?;
        }
        let recorder = self.recorder.unwrap_or_default();
        let exposition = match self.prometheus {
            None => None,
            Some(_) => Some(Arc::new(prometheus::build(&self.prometheus_buckets)?)),
        };
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
        before_spawning(FanoutRecorder::new(&recorder, exposition.as_ref()))?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if let (Some(listener), Some(exposition)) = (listener, &exposition) {
            tasks.push(runtime.spawn(prometheus::serve(
                listener,
                exposition.handle(),
                stopped.clone(),
            )));
            tasks.push(runtime.spawn(prometheus::upkeep(exposition.handle(), stopped.clone())));
        }
        if let Some(config) = self.riemann {
            // Through the fan-out: the reporter's own counters reach every sink.
            let facade = FanoutRecorder::new(&recorder, exposition.as_ref());
            let counters = metrics::with_local_recorder(&facade, riemann::own_counters);
            tasks.push(runtime.spawn(riemann::run(
                config,
                recorder.clone(),
                counters,
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
            exposition,
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
    /// The exporter's recorder, when the Prometheus endpoint is on.
    exposition: Option<Arc<PrometheusRecorder>>,
    prometheus_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Telemetry {
    /// The registry the Riemann reporter and the log summary read.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// A `metrics` recorder that feeds every sink: the fan-out to [`recorder`](Self::recorder)
    /// and, with Prometheus on, to the exporter's recorder (without Prometheus, the
    /// [`Recorder`] alone). [`TelemetryBuilder::install`] installs one globally; without it
    /// (tests, [`TelemetryBuilder::start`]) record through one with
    /// [`metrics::with_local_recorder`]:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), telemetry::Error> {
    /// let telemetry = telemetry::TelemetryBuilder::new("demo")
    ///     .prometheus(([127, 0, 0, 1], 0).into())
    ///     .start()?;
    /// metrics::with_local_recorder(&telemetry.fanout_recorder(), || {
    ///     metrics::counter!("demo_jobs_total").increment(2);
    /// });
    /// let snapshot = telemetry.recorder().snapshot();
    /// assert_eq!(snapshot.counter("demo_jobs_total", &[]), Some(2));
    /// let text = telemetry.render_prometheus().unwrap_or_default();
    /// assert!(text.lines().any(|l| l == "demo_jobs_total 2"), "{text}");
    /// telemetry.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Every call builds a new fan-out over the same registries; keep it (or the metric handles
    /// registered through it) rather than building one per recorded value.
    pub fn fanout_recorder(&self) -> impl metrics::Recorder + Sync + 'static {
        FanoutRecorder::new(&self.recorder, self.exposition.as_ref())
    }

    /// The Prometheus text exposition (format 0.0.4) that a scrape of the endpoint would get
    /// now, or `None` when the endpoint is off.
    pub fn render_prometheus(&self) -> Option<String> {
        self.exposition.as_ref().map(|e| e.handle().render())
    }

    /// The address the Prometheus endpoint listens on, if enabled.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Stops the sinks: the Riemann reporter sends a final report (waiting at most its timeout
    /// to connect, and again to be acknowledged), the log summary logs a last line, the
    /// Prometheus endpoint stops accepting scrapes. Returns when they are done.
    ///
    /// Call it just before exiting: the `metrics` facade still records afterwards, and the
    /// samples of Prometheus histograms are then no longer drained into their buckets.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "telemetry: a sink task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Telemetry` can be kept across `.await`s of a spawned task and shared.
    #[test]
    fn telemetry_is_send_and_sync() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Telemetry>();
        send_and_sync::<TelemetryBuilder>();
    }
}

//! What the `metrics` facade records into: this crate's [`Recorder`] alone, or a fan-out
//! (`metrics-util`) to it and to the Prometheus exporter's recorder.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_util::layers::{Fanout, FanoutBuilder};

use crate::recorder::{Recorder, read, write};

/// The recorder that [`Telemetry::fanout_recorder`](crate::Telemetry::fanout_recorder) gives and
/// that [`TelemetryBuilder::install`](crate::TelemetryBuilder::install) installs globally.
///
/// The handles it returns are the registry's own (no Prometheus) or the fan-out's, which call
/// the registry's and the exporter's: one indirection more per recorded value.
pub(crate) enum FanoutRecorder {
    Registry(Recorder),
    Fanout(Box<CachedFanout>),
}

impl FanoutRecorder {
    pub(crate) fn new(recorder: &Recorder, exposition: Option<&Arc<PrometheusRecorder>>) -> Self {
        match exposition {
            None => Self::Registry(recorder.clone()),
            Some(exposition) => Self::Fanout(Box::new(CachedFanout {
                fanout: FanoutBuilder::default()
                    .add_recorder(recorder.clone())
                    .add_recorder(Arc::clone(exposition))
                    .build(),
                counters: RwLock::default(),
                gauges: RwLock::default(),
                histograms: RwLock::default(),
            })),
        }
    }

    fn inner(&self) -> &dyn metrics::Recorder {
        match self {
            Self::Registry(r) => r,
            Self::Fanout(f) => &f.fanout,
        }
    }
}

/// A fan-out that keeps the handles it made: `Fanout` builds a new handle (a `Vec` and an
/// `Arc`) at every registration, which `counter!(...).increment(1)` does at every call. Series
/// are never removed (neither the registry nor the exporter, without an idle timeout, forget
/// one), so a handle made once stays right.
pub(crate) struct CachedFanout {
    fanout: Fanout,
    counters: RwLock<HashMap<Key, Counter>>,
    gauges: RwLock<HashMap<Key, Gauge>>,
    histograms: RwLock<HashMap<Key, Histogram>>,
}

/// The handle of `key` in `map`, made by `register` the first time.
fn cached<H: Clone>(map: &RwLock<HashMap<Key, H>>, key: &Key, register: impl FnOnce() -> H) -> H {
    if let Some(found) = read(map).get(key) {
        return found.clone();
    }
    write(map)
        .entry(key.clone())
        .or_insert_with(register)
        .clone()
}

impl metrics::Recorder for FanoutRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner().describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner().describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner().describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match self {
            Self::Registry(r) => r.register_counter(key, metadata),
            Self::Fanout(f) => cached(&f.counters, key, || {
                f.fanout.register_counter(key, metadata)
            }),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match self {
            Self::Registry(r) => r.register_gauge(key, metadata),
            Self::Fanout(f) => cached(&f.gauges, key, || f.fanout.register_gauge(key, metadata)),
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match self {
            Self::Registry(r) => r.register_histogram(key, metadata),
            Self::Fanout(f) => cached(&f.histograms, key, || {
                f.fanout.register_histogram(key, metadata)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_reaches_both_recorders_through_one_cached_handle_per_series() {
        let recorder = Recorder::new();
        let exposition = Arc::new(crate::prometheus::build(&[]).unwrap());
        let facade = FanoutRecorder::new(&recorder, Some(&exposition));
        metrics::with_local_recorder(&facade, || {
            for _ in 0..3 {
                metrics::counter!("c_total", "k" => "v").increment(1);
                metrics::gauge!("g").increment(1.5);
                metrics::histogram!("h_seconds").record(0.01);
            }
            metrics::counter!("c_total", "k" => "w").absolute(7);
        });
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.counter("c_total", &[("k", "v")]), Some(3));
        assert_eq!(snapshot.counter("c_total", &[("k", "w")]), Some(7));
        assert_eq!(snapshot.gauge("g", &[]), Some(4.5));
        assert_eq!(
            snapshot.histogram("h_seconds", &[]).map(|h| h.count),
            Some(3)
        );
        let text = exposition.handle().render();
        for line in [
            "c_total{k=\"v\"} 3",
            "c_total{k=\"w\"} 7",
            "g 4.5",
            "h_seconds_bucket{le=\"0.01\"} 3",
            "h_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        let FanoutRecorder::Fanout(cached) = &facade else {
            panic!("Prometheus is on: a fan-out");
        };
        assert_eq!(read(&cached.counters).len(), 2);
        assert_eq!(read(&cached.gauges).len(), 1);
        assert_eq!(read(&cached.histograms).len(), 1);
    }

    #[test]
    fn without_prometheus_the_registry_alone() {
        let recorder = Recorder::new();
        let facade = FanoutRecorder::new(&recorder, None);
        assert!(matches!(facade, FanoutRecorder::Registry(_)));
        metrics::with_local_recorder(&facade, || metrics::counter!("c_total").increment(2));
        assert_eq!(recorder.snapshot().counter("c_total", &[]), Some(2));
    }
}

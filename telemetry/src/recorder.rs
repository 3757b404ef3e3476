//! The metrics registry: one [`Recorder`] that every sink reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

use crate::histogram::{AtomicHistogram, HistogramSnapshot, HistogramStats};

/// A gauge's value: an `f64` stored as bits.
#[derive(Debug, Default)]
pub(crate) struct AtomicGauge(AtomicU64);

impl AtomicGauge {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn add(&self, delta: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + delta).to_bits())
            });
    }
}

impl metrics::GaugeFn for AtomicGauge {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A counter's value.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounter(AtomicU64);

impl metrics::CounterFn for AtomicCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// Unit and help text given with `describe_counter!` and friends.
#[derive(Debug, Clone)]
pub(crate) struct Description {
    pub(crate) unit: Option<Unit>,
    pub(crate) text: SharedString,
}

#[derive(Debug, Default)]
struct Registry {
    counters: RwLock<HashMap<Key, Arc<AtomicCounter>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicGauge>>>,
    histograms: RwLock<HashMap<Key, Arc<AtomicHistogram>>>,
    descriptions: RwLock<HashMap<String, Description>>,
}

/// Lock poisoning cannot leave these maps inconsistent (every update is one insert), so a
/// poisoned lock is simply used.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn get_or_insert<T: Default>(map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    if let Some(found) = read(map).get(key) {
        return Arc::clone(found);
    }
    Arc::clone(write(map).entry(key.clone()).or_default())
}

/// The `metrics` recorder of this crate: a registry of counters, gauges and histograms that the
/// Riemann reporter and the log summary read (the Prometheus endpoint reads the exporter's
/// recorder, fed by the same fan-out, see [`Telemetry::fanout_recorder`](crate::Telemetry::fanout_recorder)).
///
/// Cloning is cheap and gives another handle to the same registry. A `Recorder` can be used
/// without installing it globally (for tests, with [`metrics::with_local_recorder`]):
///
/// ```
/// let recorder = telemetry::Recorder::new();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("demo_requests_total", "route" => "/a").increment(3);
///     metrics::gauge!("demo_queue_depth").set(7.0);
///     metrics::histogram!("demo_latency_seconds").record(0.25);
/// });
/// let snapshot = recorder.snapshot();
/// assert_eq!(snapshot.counter("demo_requests_total", &[("route", "/a")]), Some(3));
/// assert_eq!(snapshot.gauge("demo_queue_depth", &[]), Some(7.0));
/// assert_eq!(snapshot.histogram("demo_latency_seconds", &[]).map(|h| h.count), Some(1));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    registry: Arc<Registry>,
}

impl Recorder {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value of every series, sorted by name then labels.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            counters: read(&self.registry.counters)
                .iter()
                .map(|(k, c)| (k.clone(), c.0.load(Ordering::Relaxed)))
                .collect(),
            gauges: read(&self.registry.gauges)
                .iter()
                .map(|(k, g)| (k.clone(), g.get()))
                .collect(),
            histograms: self
                .histogram_snapshots()
                .into_iter()
                .map(|(k, h)| (k, h.stats()))
                .collect(),
        };
        snapshot.counters.sort_by(|a, b| key_order(&a.0, &b.0));
        snapshot.gauges.sort_by(|a, b| key_order(&a.0, &b.0));
        snapshot.histograms.sort_by(|a, b| key_order(&a.0, &b.0));
        snapshot
    }

    /// The sum of the counters named `name` whose labels include every one of `labels`
    /// (they may carry others), read in place: much cheaper than a [`snapshot`] for
    /// watching one counter across many series (a test or bench waiting for a total).
    ///
    /// ```
    /// let recorder = telemetry::Recorder::new();
    /// metrics::with_local_recorder(&recorder, || {
    ///     metrics::counter!("demo_total", "topic" => "a", "partition" => "0").increment(2);
    ///     metrics::counter!("demo_total", "topic" => "a", "partition" => "1").increment(3);
    ///     metrics::counter!("demo_total", "topic" => "b", "partition" => "0").increment(7);
    /// });
    /// assert_eq!(recorder.counter_sum("demo_total", &[("topic", "a")]), 5);
    /// assert_eq!(recorder.counter_sum("demo_total", &[]), 12);
    /// assert_eq!(recorder.counter_sum("other_total", &[]), 0);
    /// ```
    ///
    /// [`snapshot`]: Recorder::snapshot
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        read(&self.registry.counters)
            .iter()
            .filter(|(k, _)| {
                k.name() == name
                    && labels
                        .iter()
                        .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v))
            })
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Cumulative bucket snapshots of every histogram (for interval statistics).
    pub(crate) fn histogram_snapshots(&self) -> Vec<(Key, HistogramSnapshot)> {
        let histograms: Vec<(Key, Arc<AtomicHistogram>)> = read(&self.registry.histograms)
            .iter()
            .map(|(k, h)| (k.clone(), Arc::clone(h)))
            .collect();
        let mut out: Vec<_> = histograms
            .into_iter()
            .map(|(k, h)| (k, h.snapshot()))
            .collect();
        out.sort_by(|a, b| key_order(&a.0, &b.0));
        out
    }

    /// The description given for metric `name`, if any.
    /// The help text a metric was described with (`describe_counter!` and friends), if any.
    pub fn help(&self, name: &str) -> Option<String> {
        self.description(name).map(|d| d.text.into_owned())
    }

    pub(crate) fn description(&self, name: &str) -> Option<Description> {
        read(&self.registry.descriptions).get(name).cloned()
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        write(&self.registry.descriptions)
            .insert(key.as_str().to_string(), Description { unit, text });
    }
}

/// Orders series by name, then by labels.
fn key_order(a: &Key, b: &Key) -> std::cmp::Ordering {
    a.name().cmp(b.name()).then_with(|| {
        a.labels()
            .map(|l| (l.key(), l.value()))
            .cmp(b.labels().map(|l| (l.key(), l.value())))
    })
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(get_or_insert(&self.registry.counters, key))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(get_or_insert(&self.registry.gauges, key))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(get_or_insert(&self.registry.histograms, key))
    }
}

/// The values of every series of a [`Recorder`] at one moment (histograms: all-time stats).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters and their values.
    pub counters: Vec<(Key, u64)>,
    /// Gauges and their values.
    pub gauges: Vec<(Key, f64)>,
    /// Histograms and their statistics since they were created.
    pub histograms: Vec<(Key, HistogramStats)>,
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && key.labels().len() == labels.len()
        && key
            .labels()
            .all(|l| labels.iter().any(|(k, v)| l.key() == *k && l.value() == *v))
}

impl Snapshot {
    /// The counter named `name` with exactly the labels `labels` (in any order).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| matches(k, name, labels))
            .map(|(_, v)| *v)
    }

    /// The gauge named `name` with exactly the labels `labels` (in any order).
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges
            .iter()
            .find(|(k, _)| matches(k, name, labels))
            .map(|(_, v)| *v)
    }

    /// The histogram named `name` with exactly the labels `labels` (in any order).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<HistogramStats> {
        self.histograms
            .iter()
            .find(|(k, _)| matches(k, name, labels))
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_labels() {
        let r = Recorder::new();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("c_total", "a" => "1").increment(2);
            metrics::counter!("c_total", "a" => "1").increment(3);
            metrics::counter!("c_total", "a" => "2").absolute(10);
            metrics::counter!("c_total", "a" => "2").absolute(4);
            metrics::gauge!("g").set(1.5);
            metrics::gauge!("g").increment(2.0);
            metrics::gauge!("g").decrement(0.5);
        });
        let s = r.snapshot();
        assert_eq!(s.counter("c_total", &[("a", "1")]), Some(5));
        assert_eq!(s.counter("c_total", &[("a", "2")]), Some(10));
        assert_eq!(s.counter("c_total", &[]), None);
        assert_eq!(s.gauge("g", &[]), Some(3.0));
        assert_eq!(s.counters.len(), 2);
    }
}

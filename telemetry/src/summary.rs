//! The periodic one-line metrics summary in the logs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use metrics::Key;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::histogram::HistogramSnapshot;
use crate::recorder::Recorder;

/// Longest summary line; series beyond it are counted, not listed.
pub(crate) const MAX_LINE: usize = 4096;

/// Renders series names with their labels: `name{k=v,...}`.
fn push_series(out: &mut String, key: &Key) {
    out.push_str(key.name());
    if key.labels().len() > 0 {
        out.push('{');
        for (i, l) in key.labels().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}={}", l.key(), l.value());
        }
        out.push('}');
    }
}

/// Formats a number compactly: integers without decimals, others with 4 significant digits.
fn push_number(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-3) {
        let _ = write!(out, "{v:.3e}");
    } else {
        let _ = write!(out, "{}", (v * 1e4).round() / 1e4);
    }
}

/// Keeps the previous state so that each line shows changes since the last one.
#[derive(Default)]
pub(crate) struct Summarizer {
    counters: HashMap<Key, u64>,
    histograms: HashMap<Key, HistogramSnapshot>,
}

impl Summarizer {
    /// One line: `name=value` for gauges, `name=total(+delta)` for counters and
    /// `name{n=.. p50=.. p99=.. max=..}` over the interval for histograms with new samples.
    pub(crate) fn line(&mut self, recorder: &Recorder) -> String {
        let snapshot = recorder.snapshot();
        let mut out = String::new();
        let mut left_out = 0usize;
        let mut item = String::new();
        let mut push = |out: &mut String, item: &str| {
            if out.len() + item.len() + 1 > MAX_LINE {
                left_out += 1;
            } else {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(item);
            }
        };
        let mut counters = HashMap::with_capacity(snapshot.counters.len());
        for (key, value) in snapshot.counters {
            item.clear();
            push_series(&mut item, &key);
            let before = self.counters.get(&key).copied().unwrap_or(0);
            let _ = write!(item, "={value}(+{})", value.saturating_sub(before));
            push(&mut out, &item);
            counters.insert(key, value);
        }
        self.counters = counters;
        for (key, value) in &snapshot.gauges {
            item.clear();
            push_series(&mut item, key);
            item.push('=');
            push_number(&mut item, *value);
            push(&mut out, &item);
        }
        let mut histograms = HashMap::with_capacity(self.histograms.len());
        for (key, now) in recorder.histogram_snapshots() {
            let stats = match self.histograms.get(&key) {
                Some(before) => now.since(before).stats(),
                None => now.stats(),
            };
            if stats.count > 0 {
                item.clear();
                push_series(&mut item, &key);
                let _ = write!(item, "[n={} p50=", stats.count);
                push_number(&mut item, stats.p50);
                item.push_str(" p99=");
                push_number(&mut item, stats.p99);
                item.push_str(" max=");
                push_number(&mut item, stats.max);
                item.push(']');
                push(&mut out, &item);
            }
            histograms.insert(key, now);
        }
        self.histograms = histograms;
        if left_out > 0 {
            let _ = write!(out, " (+{left_out} more)");
        }
        out
    }
}

/// Logs a summary line every `interval` until `stop` changes, then a last one.
pub(crate) async fn run(
    interval: Duration,
    recorder: Recorder,
    service: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut summarizer = Summarizer::default();
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let line = summarizer.line(&recorder);
        if !line.is_empty() {
            tracing::info!(target: "telemetry", service = %service, "metrics: {line}");
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_totals_deltas_gauges_and_interval_histograms() {
        let r = Recorder::new();
        let mut s = Summarizer::default();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("jobs_total", "kind" => "a").increment(5);
            metrics::gauge!("depth").set(2.5);
            metrics::histogram!("wait_seconds").record(0.5);
        });
        assert_eq!(
            s.line(&r),
            "jobs_total{kind=a}=5(+5) depth=2.5 wait_seconds[n=1 p50=0.5 p99=0.5 max=0.5]"
        );
        metrics::with_local_recorder(&r, || {
            metrics::counter!("jobs_total", "kind" => "a").increment(2);
        });
        assert_eq!(s.line(&r), "jobs_total{kind=a}=7(+2) depth=2.5");
    }

    #[test]
    fn line_is_bounded() {
        let r = Recorder::new();
        metrics::with_local_recorder(&r, || {
            for i in 0..1000 {
                metrics::counter!(format!("a_rather_long_counter_name_number_{i}_total"))
                    .increment(1);
            }
        });
        let line = Summarizer::default().line(&r);
        assert!(line.len() <= MAX_LINE + 32, "{}", line.len());
        assert!(line.ends_with(" more)"), "{line}");
    }
}

//! A lock-free, fixed-size histogram: the storage behind every `metrics::histogram!`.
//!
//! Values are counted in log-linear buckets: each power of two from 2^-20 (about 1 µs when the
//! value is seconds) to 2^44 (about 1.8e13) is split into [`SUB_BUCKETS`] equal buckets, so a
//! quantile is reported with a relative error of at most 1/64 (1.6 %). Values below 2^-20
//! (including zero and negative values) share one bucket, as do values of 2^44 and more;
//! quantiles falling there are clamped to the exact minimum/maximum. `NaN` is ignored.
//!
//! Memory is fixed (about 16 KiB per histogram) whatever the number of samples, and recording
//! is a handful of atomic operations, never a lock or an allocation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per power of two (a power of two itself).
pub const SUB_BUCKETS: usize = 32;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
const MIN_EXP: i32 = -20;
const MAX_EXP: i32 = 44;
const OCTAVES: usize = (MAX_EXP - MIN_EXP) as usize;
/// Bucket 0: below 2^MIN_EXP; last bucket: 2^MAX_EXP and above.
const BUCKETS: usize = OCTAVES * SUB_BUCKETS + 2;

/// The cumulative state of one histogram.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }
    }
}

fn bucket_index(value: f64) -> usize {
    // Also NaN (never recorded) lands here.
    if value.is_nan() || value < f64::from_bits(((MIN_EXP + 1023) as u64) << 52) {
        return 0;
    }
    let bits = value.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((bits >> (52 - SUB_BITS)) as usize) & (SUB_BUCKETS - 1);
    1 + (exp - MIN_EXP) as usize * SUB_BUCKETS + sub
}

/// Lower and upper bound of bucket `index` (infinite for the two open-ended buckets).
fn bucket_bounds(index: usize) -> (f64, f64) {
    if index == 0 {
        return (f64::NEG_INFINITY, 2f64.powi(MIN_EXP));
    }
    if index >= BUCKETS - 1 {
        return (2f64.powi(MAX_EXP), f64::INFINITY);
    }
    let i = index - 1;
    let base = 2f64.powi(MIN_EXP + (i / SUB_BUCKETS) as i32);
    let step = base / SUB_BUCKETS as f64;
    let lower = base + step * (i % SUB_BUCKETS) as f64;
    (lower, lower + step)
}

fn update_f64(cell: &AtomicU64, f: impl Fn(f64) -> Option<f64>) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        f(f64::from_bits(bits)).map(f64::to_bits)
    });
}

impl AtomicHistogram {
    /// Records `count` samples of `value`.
    pub(crate) fn record_n(&self, value: f64, count: u64) {
        if value.is_nan() || count == 0 {
            return;
        }
        if let Some(b) = self.buckets.get(bucket_index(value)) {
            b.fetch_add(count, Ordering::Relaxed);
        }
        update_f64(&self.sum, |s| Some(s + value * count as f64));
        update_f64(&self.min, |m| (value < m).then_some(value));
        update_f64(&self.max, |m| (value > m).then_some(value));
    }

    /// A copy of the cumulative state.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            min: f64::from_bits(self.min.load(Ordering::Relaxed)),
            max: f64::from_bits(self.max.load(Ordering::Relaxed)),
        }
    }
}

impl metrics::HistogramFn for AtomicHistogram {
    fn record(&self, value: f64) {
        self.record_n(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        self.record_n(value, count as u64);
    }
}

/// Bucket counts, sum and exact extremes of a histogram, cumulative or over an interval.
#[derive(Debug, Clone)]
pub(crate) struct HistogramSnapshot {
    buckets: Vec<u64>,
    sum: f64,
    /// Exact cumulative minimum (also kept in interval deltas, to clamp estimates).
    min: f64,
    /// Exact cumulative maximum.
    max: f64,
}

impl HistogramSnapshot {
    /// The samples recorded since `earlier` (a snapshot of the same histogram).
    pub(crate) fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum: self.sum - earlier.sum,
            min: self.min,
            max: self.max,
        }
    }

    /// Count, extremes, mean and quantiles of the samples in this snapshot.
    pub(crate) fn stats(&self) -> HistogramStats {
        let count: u64 = self.buckets.iter().sum();
        if count == 0 {
            return HistogramStats::default();
        }
        let first = self.buckets.iter().position(|&c| c > 0).unwrap_or(0);
        let last = self.buckets.iter().rposition(|&c| c > 0).unwrap_or(0);
        let min = bucket_bounds(first).0.max(self.min).min(self.max);
        let max = bucket_bounds(last).1.min(self.max).max(min);
        let quantile = |q: f64| -> f64 {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0u64;
            for (index, &c) in self.buckets.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    let (lo, hi) = bucket_bounds(index);
                    let mid = if lo.is_finite() && hi.is_finite() {
                        (lo + hi) / 2.0
                    } else if lo.is_finite() {
                        max
                    } else {
                        min
                    };
                    return mid.clamp(min, max);
                }
            }
            max
        };
        HistogramStats {
            count,
            sum: self.sum,
            min,
            max,
            mean: (self.sum / count as f64).clamp(min, max),
            p50: quantile(0.5),
            p95: quantile(0.95),
            p99: quantile(0.99),
            p999: quantile(0.999),
        }
    }
}

/// Summary statistics of a histogram's samples.
///
/// `count`, `sum` and `mean` are exact; `min`, `max` and the quantiles are exact when they
/// coincide with the histogram's all-time extremes and otherwise within 1.6 % (see the crate
/// docs on histograms). All fields are zero when there are no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramStats {
    /// Number of samples.
    pub count: u64,
    /// Sum of the samples.
    pub sum: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_contain_their_values() {
        for v in [1e-6, 0.001, 0.5, 1.0, 1.5, 3.0, 100.0, 12345.678, 1e12] {
            let i = bucket_index(v);
            let (lo, hi) = bucket_bounds(i);
            assert!(lo <= v && v < hi, "{v} not in [{lo}, {hi}) (bucket {i})");
            assert!((hi - lo) / lo <= 1.0 / SUB_BUCKETS as f64 + 1e-12);
        }
        assert_eq!(bucket_index(0.0), 0);
        assert_eq!(bucket_index(-5.0), 0);
        assert_eq!(bucket_index(f64::NAN), 0);
        assert_eq!(bucket_index(1e300), BUCKETS - 1);
        assert_eq!(bucket_index(f64::INFINITY), BUCKETS - 1);
    }

    #[test]
    fn stats_of_one_to_a_thousand() {
        let h = AtomicHistogram::default();
        for v in 1..=1000 {
            h.record_n(v as f64, 1);
        }
        let s = h.snapshot().stats();
        assert_eq!(s.count, 1000);
        assert_eq!(s.sum, 500_500.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 1000.0);
        assert_eq!(s.mean, 500.5);
        let close = |got: f64, want: f64| (got - want).abs() / want <= 1.0 / 64.0;
        assert!(close(s.p50, 500.0), "p50 {}", s.p50);
        assert!(close(s.p95, 950.0), "p95 {}", s.p95);
        assert!(close(s.p99, 990.0), "p99 {}", s.p99);
        assert!(close(s.p999, 999.0), "p999 {}", s.p999);
    }

    #[test]
    fn interval_delta_and_constant_values() {
        let h = AtomicHistogram::default();
        h.record_n(1000.0, 5);
        let first = h.snapshot();
        h.record_n(7.0, 3);
        let delta = h.snapshot().since(&first).stats();
        assert_eq!(delta.count, 3);
        assert_eq!(delta.sum, 21.0);
        assert_eq!(delta.mean, 7.0);
        // Bucket bounds are clamped by the exact minimum (7) but not by the maximum (1000).
        assert_eq!(delta.min, 7.0);
        assert!(delta.max >= 7.0 && delta.max <= 7.0 * (1.0 + 1.0 / 32.0));
        let empty = h.snapshot().since(&h.snapshot()).stats();
        assert_eq!(empty, HistogramStats::default());
    }

    #[test]
    fn zero_negative_and_nan() {
        let h = AtomicHistogram::default();
        h.record_n(0.0, 1);
        h.record_n(-2.0, 1);
        h.record_n(f64::NAN, 1);
        let s = h.snapshot().stats();
        assert_eq!(s.count, 2);
        assert_eq!(s.min, -2.0);
        assert_eq!(s.max, 0.0);
        assert_eq!(s.mean, -1.0);
    }
}

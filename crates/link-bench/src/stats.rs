//! Latency recording with HdrHistogram (nanosecond values, 3 significant
//! digits) and the summary the reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Records latencies.
#[derive(Debug)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty recorder covering 1 ns to 10 minutes.
    #[allow(clippy::expect_used)] // constant, valid bounds: cannot fail
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 600_000_000_000, 3)
            .expect("1 ns..600 s at 3 significant digits is a valid histogram");
        Self { hist }
    }

    /// Records one latency (values past the range are clamped).
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.max(1));
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Mean, percentiles and max in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: f64| ns / 1000.0;
        LatencySummary {
            count: self.hist.len(),
            mean_us: us(self.hist.mean()),
            p50_us: us(self.hist.value_at_quantile(0.50) as f64),
            p90_us: us(self.hist.value_at_quantile(0.90) as f64),
            p99_us: us(self.hist.value_at_quantile(0.99) as f64),
            max_us: us(self.hist.max() as f64),
        }
    }
}

/// A latency distribution in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// The median of a list (the mean of the two middle values for an even
/// count); `None` when empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_microseconds() {
        let mut l = Latencies::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_us - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_us - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_us - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.mean_us - 50.5).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

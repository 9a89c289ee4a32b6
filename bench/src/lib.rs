//! Herald's load generator and benchmark suite: realistic message traffic, latency
//! recording, and the reports both print.

pub mod env;
pub mod fairness;
pub mod generate;
pub mod ingest;
pub mod load;
pub mod readside;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies and outcomes of requests.
#[derive(Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    /// HTTP status (0 for a transport error) → count.
    pub statuses: BTreeMap<u16, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one request.
    pub fn record(&mut self, status: u16, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, 120_000_000);
        let _ = self.latency_us.record(us);
        *self.statuses.entry(status).or_default() += 1;
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.latency_us.add(&other.latency_us);
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
    }

    /// Requests recorded.
    pub fn count(&self) -> u64 {
        self.latency_us.len()
    }

    /// Requests answered 2xx.
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// The `q` quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// `p50 / p95 / p99` as text.
    pub fn latency_line(&self) -> String {
        format!(
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            self.quantile_ms(0.50),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99)
        )
    }

    /// Non-2xx outcomes as text, e.g. `409×3 0×1`.
    pub fn errors_line(&self) -> String {
        let errors: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(" ")
        }
    }
}

/// The next 15-minute boundary at or after `t` (a rollup-aligned range end).
pub fn ceil_15m(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let secs = t.timestamp();
    let up = (secs + 899).div_euclid(900) * 900;
    chrono::DateTime::from_timestamp(up, 0).expect("in range")
}

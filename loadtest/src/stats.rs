//! Counting and summarising requests.

use std::time::Duration;

use serde::Serialize;

/// What one phase of a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The operation's name.
    pub operation: String,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed (transport, HTTP status, or GraphQL errors).
    pub errors: u64,
    /// Wall time of the phase, in seconds.
    pub seconds: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency percentiles of successful requests, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Summary {
    /// The one-line form the tool prints.
    pub fn line(&self) -> String {
        format!(
            "{:<14} {:>9.0} req/s  ok {:>8}  errors {:>5}  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            self.operation, self.rps, self.ok, self.errors, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Builds a summary from per-request latencies.
pub fn summarise(operation: &str, mut latencies: Vec<Duration>, errors: u64, wall: Duration) -> Summary {
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1_000.0
    };
    let ok = latencies.len() as u64;
    Summary {
        operation: operation.to_string(),
        ok,
        errors,
        seconds: wall.as_secs_f64(),
        rps: ok as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarise("x", lat, 3, Duration::from_secs(2));
        assert_eq!((s.ok, s.errors), (100, 3));
        assert_eq!(s.rps, 50.0);
        assert_eq!((s.p50_ms.round(), s.p99_ms.round(), s.max_ms), (51.0, 99.0, 100.0));
    }
}

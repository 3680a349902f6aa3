//! What a run measured, shared by the workers: latencies of successes and
//! failures by code, per operation, and counts per second for the charts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The operation name under which live-feed deliveries are recorded.
pub const FEED_EVENT: &str = "feedEvent";

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP 200 and no GraphQL errors.
    Ok,
    /// Failed: the GraphQL `extensions.code`, `HTTP_<status>` or `TRANSPORT`.
    Failed(String),
}

impl Outcome {
    /// Reads a GraphQL response: any error is a failure under its code.
    pub fn of_response(status: u16, body: &Value) -> Outcome {
        if let Some(errors) = body.get("errors").and_then(Value::as_array)
            && let Some(first) = errors.first()
        {
            let code = first["extensions"]["code"].as_str().unwrap_or("NO_CODE");
            return Outcome::Failed(code.to_string());
        }
        if status != 200 {
            return Outcome::Failed(format!("HTTP_{status}"));
        }
        if body.get("data").is_none_or(Value::is_null) {
            return Outcome::Failed("NO_DATA".into());
        }
        Outcome::Ok
    }
}

/// Everything recorded about one operation.
#[derive(Debug, Default, Clone)]
pub struct OperationRecord {
    /// Latencies of successful requests.
    pub latencies: Vec<Duration>,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
    /// Successes and failures per whole second of the run.
    pub per_second: BTreeMap<u64, (u64, u64)>,
}

/// The shared recorder.
pub struct Recorder {
    started: Instant,
    operations: Mutex<BTreeMap<String, OperationRecord>>,
    /// Every GraphQL request sent, set-up included: what the server's own
    /// request counter should have counted.
    pub graphql_requests: AtomicU64,
}

impl Recorder {
    /// An empty recorder; time starts now.
    pub fn new() -> Self {
        Recorder {
            started: Instant::now(),
            operations: Mutex::new(BTreeMap::new()),
            graphql_requests: AtomicU64::new(0),
        }
    }

    /// Records one request of `operation` that took `latency`.
    pub fn record(&self, operation: &str, latency: Duration, outcome: Outcome) {
        let second = self.started.elapsed().as_secs();
        let mut ops = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let op = ops.entry(operation.to_string()).or_default();
        let bucket = op.per_second.entry(second).or_default();
        match outcome {
            Outcome::Ok => {
                op.latencies.push(latency);
                bucket.0 += 1;
            }
            Outcome::Failed(code) => {
                *op.errors.entry(code).or_default() += 1;
                bucket.1 += 1;
            }
        }
    }

    /// Counts a GraphQL request sent (whether or not it is measured).
    pub fn count_request(&self) {
        self.graphql_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> BTreeMap<String, OperationRecord> {
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Successes and failures so far, over the scenarios' requests (feed
    /// deliveries are not requests, as in the final summary).
    pub fn totals(&self) -> (u64, u64) {
        let ops = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        ops.iter().filter(|(name, _)| name.as_str() != FEED_EVENT).fold((0, 0), |(ok, failed), (_, op)| {
            (ok + op.latencies.len() as u64, failed + op.errors.values().sum::<u64>())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_200_with_errors_is_a_failure_under_its_code() {
        let body = json!({ "data": null, "errors": [{ "message": "no", "extensions": { "code": "FORBIDDEN" } }] });
        assert_eq!(Outcome::of_response(200, &body), Outcome::Failed("FORBIDDEN".into()));
        assert_eq!(Outcome::of_response(200, &json!({ "data": { "x": 1 } })), Outcome::Ok);
        assert_eq!(Outcome::of_response(503, &json!({ "data": { "x": 1 } })), Outcome::Failed("HTTP_503".into()));
        assert_eq!(Outcome::of_response(200, &json!({})), Outcome::Failed("NO_DATA".into()));
    }

    #[test]
    fn records_add_up() {
        let r = Recorder::new();
        r.record("a", Duration::from_millis(1), Outcome::Ok);
        r.record("a", Duration::from_millis(2), Outcome::Failed("OVERLOADED".into()));
        r.record("b", Duration::from_millis(3), Outcome::Ok);
        assert_eq!(r.totals(), (2, 1));
        r.record(FEED_EVENT, Duration::from_millis(1), Outcome::Ok);
        assert_eq!(r.totals(), (2, 1), "a feed delivery is not a request");
        let snap = r.snapshot();
        assert_eq!(snap["a"].errors["OVERLOADED"], 1);
        assert_eq!(snap["a"].per_second.values().map(|(ok, f)| ok + f).sum::<u64>(), 2);
    }
}

//! Prometheus metrics at `/metrics`, in the text exposition format.
//!
//! Counters and the latency histogram are atomics updated on the request
//! path; shard gauges (mailbox depth, waitlist size) and the feed's state are
//! read when scraped. Labels carry shard keys and error codes, never personal data.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use attach_actors::error::ErrorCode;
use attach_actors::system::AttachSystem;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

const CODES: [ErrorCode; 9] = [
    ErrorCode::InvalidInput,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::Forbidden,
    ErrorCode::Unauthenticated,
    ErrorCode::RateLimited,
    ErrorCode::Overloaded,
    ErrorCode::ShardUnavailable,
    ErrorCode::Internal,
];

/// The rate-limit policies counted: per client IP without a token, then each token role.
const POLICIES: [&str; 8] =
    ["anonymous", "patient", "provider", "delegate", "medical_director", "coordinator", "support", "operations"];

/// The gateway's counters.
#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    failed_requests: AtomicU64,
    errors: [AtomicU64; 9],
    /// Cumulative per bucket, plus +Inf at the end.
    latency: [AtomicU64; 12],
    latency_sum_micros: AtomicU64,
    /// Requests refused by a rate limit, by policy (see `POLICIES`).
    rate_limited: [AtomicU64; 8],
}

impl Metrics {
    /// Records one GraphQL request: how long it took and the codes of its errors.
    pub fn record(&self, elapsed: Duration, error_codes: impl Iterator<Item = String>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut failed = false;
        for code in error_codes {
            failed = true;
            if let Some(i) = CODES.iter().position(|c| c.as_str() == code) {
                self.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if failed {
            self.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts one request refused by the rate limit of `policy` (a role, or `anonymous`).
    pub fn rate_limited(&self, policy: &str) {
        if let Some(i) = POLICIES.iter().position(|p| *p == policy) {
            self.rate_limited[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text, with the shards' and the feed's current state.
    /// `shared_misses`: rate-limit checks that could not reach the shared
    /// quotas (none when quotas are not shared).
    pub async fn render(&self, system: &AttachSystem, shared_misses: Option<u64>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP attach_graphql_requests_total GraphQL requests answered.");
        let _ = writeln!(out, "# TYPE attach_graphql_requests_total counter");
        let _ = writeln!(out, "attach_graphql_requests_total {}", load(&self.requests));
        let _ = writeln!(
            out,
            "# HELP attach_graphql_failed_requests_total GraphQL requests answered with at least one error."
        );
        let _ = writeln!(out, "# TYPE attach_graphql_failed_requests_total counter");
        let _ = writeln!(out, "attach_graphql_failed_requests_total {}", load(&self.failed_requests));
        let _ = writeln!(out, "# HELP attach_graphql_errors_total GraphQL errors by extensions.code.");
        let _ = writeln!(out, "# TYPE attach_graphql_errors_total counter");
        for (code, n) in CODES.iter().zip(&self.errors) {
            let _ = writeln!(out, "attach_graphql_errors_total{{code=\"{}\"}} {}", code.as_str(), load(n));
        }
        let _ = writeln!(out, "# HELP attach_graphql_request_duration_seconds Time to answer a GraphQL request.");
        let _ = writeln!(out, "# TYPE attach_graphql_request_duration_seconds histogram");
        for (bound, n) in BUCKETS.iter().zip(&self.latency) {
            let _ = writeln!(out, "attach_graphql_request_duration_seconds_bucket{{le=\"{bound}\"}} {}", load(n));
        }
        let _ = writeln!(
            out,
            "attach_graphql_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            load(&self.latency[BUCKETS.len()])
        );
        let _ = writeln!(
            out,
            "attach_graphql_request_duration_seconds_sum {}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "attach_graphql_request_duration_seconds_count {}", load(&self.requests));

        let _ = writeln!(
            out,
            "# HELP attach_rate_limited_total Requests refused by a rate limit, by role (anonymous: per client IP)."
        );
        let _ = writeln!(out, "# TYPE attach_rate_limited_total counter");
        for (policy, n) in POLICIES.iter().zip(&self.rate_limited) {
            let _ = writeln!(out, "attach_rate_limited_total{{role=\"{policy}\"}} {}", load(n));
        }
        if let Some(misses) = shared_misses {
            let _ = writeln!(
                out,
                "# HELP attach_rate_limit_shared_misses_total Rate-limit checks that could not reach the quotas shared in Redis and went by this gateway's own count."
            );
            let _ = writeln!(out, "# TYPE attach_rate_limit_shared_misses_total counter");
            let _ = writeln!(out, "attach_rate_limit_shared_misses_total {misses}");
        }

        let (up, total) = system.directory().running();
        let _ = writeln!(out, "# HELP attach_shards_running Shard actors running, of attach_shards_total.");
        let _ = writeln!(out, "# TYPE attach_shards_running gauge");
        let _ = writeln!(out, "attach_shards_running {up}");
        // A count of shards, not a counter, despite the name (kept for dashboards).
        let _ = writeln!(out, "# HELP attach_shards_total Shards this node's regions hold.");
        let _ = writeln!(out, "# TYPE attach_shards_total gauge");
        let _ = writeln!(out, "attach_shards_total {total}");
        let gauges = system.gauges().await;
        let _ = writeln!(out, "# HELP attach_shard_mailbox_depth Calls in flight to a shard actor.");
        let _ = writeln!(out, "# TYPE attach_shard_mailbox_depth gauge");
        for (shard, _) in &gauges {
            let _ = writeln!(
                out,
                "attach_shard_mailbox_depth{{shard=\"{shard}\"}} {}",
                system.directory().mailbox_depth(shard)
            );
        }
        type Gauge = fn(&attach_actors::shard::ShardGauges) -> u64;
        let per_shard: [(&str, &str, &str, Gauge); 5] = [
            ("attach_shard_waiting_households", "gauge", "Households on a shard's waitlist.", |g| g.waiting_households),
            ("attach_shard_waiting_people", "gauge", "People on a shard's waitlist.", |g| g.waiting_people),
            (
                "attach_shard_settlements_pending",
                "gauge",
                "Closed spill-over proposals a shard has not yet settled with the provider's community (lasting values mean that community is out of reach).",
                |g| g.settlements_pending,
            ),
            (
                "attach_shard_proposals_in_memory",
                "gauge",
                "Proposals and reservations a shard holds in memory: the open ones and those closed within shard.proposal_memory_days.",
                |g| g.proposals_in_memory,
            ),
            // A position, not a count of events this process saw: a gauge (OpenMetrics
            // counters end in _total).
            ("attach_shard_last_seq", "gauge", "A shard's last committed event sequence number.", |g| g.last_seq),
        ];
        for (name, kind, help, value) in per_shard {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (shard, g) in &gauges {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(g));
            }
        }
        let feed = system.feed_status();
        let _ =
            writeln!(out, "# HELP attach_feed_connected Whether the live feed's backend is reachable (1) or not (0).");
        let _ = writeln!(out, "# TYPE attach_feed_connected gauge");
        let _ = writeln!(out, "attach_feed_connected{{backend=\"{}\"}} {}", feed.backend, u8::from(feed.connected));
        let _ = writeln!(
            out,
            "# HELP attach_feed_dropped_total Events not published while the feed's backend was down or slow."
        );
        let _ = writeln!(out, "# TYPE attach_feed_dropped_total counter");
        let _ = writeln!(out, "attach_feed_dropped_total {}", feed.dropped);
        if let Some(w) = system.store_write_stats() {
            let _ = writeln!(
                out,
                "# HELP attach_store_write_transactions_total Write transactions the embedded store committed or attempted, one fsync each."
            );
            let _ = writeln!(out, "# TYPE attach_store_write_transactions_total counter");
            let _ = writeln!(out, "attach_store_write_transactions_total {}", w.transactions);
            let _ = writeln!(
                out,
                "# HELP attach_store_write_requests_total Write requests those transactions carried (divide by transactions for the group-commit size)."
            );
            let _ = writeln!(out, "# TYPE attach_store_write_requests_total counter");
            let _ = writeln!(out, "attach_store_write_requests_total {}", w.requests);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_errors_and_buckets() {
        let m = Metrics::default();
        m.record(Duration::from_micros(800), std::iter::empty());
        m.record(Duration::from_millis(30), ["CONFLICT".to_string(), "NOT_FOUND".to_string()].into_iter());
        assert_eq!(m.requests.load(Ordering::Relaxed), 2);
        assert_eq!(m.failed_requests.load(Ordering::Relaxed), 1);
        assert_eq!(m.errors[2].load(Ordering::Relaxed), 1, "CONFLICT");
        assert_eq!(m.latency[0].load(Ordering::Relaxed), 1, "≤ 1 ms");
        assert_eq!(m.latency[5].load(Ordering::Relaxed), 2, "≤ 50 ms holds both");
        assert_eq!(m.latency[BUCKETS.len()].load(Ordering::Relaxed), 2);
    }

    #[test]
    fn rate_limit_policies_are_the_token_roles() {
        let roles: Vec<&str> = attach_actors::access::Role::FROM_TOKENS.iter().map(|r| r.as_str()).collect();
        assert_eq!(&POLICIES[1..], roles.as_slice());
        let m = Metrics::default();
        m.rate_limited("provider");
        assert_eq!(m.rate_limited[2].load(Ordering::Relaxed), 1);
    }
}

//! Quotas shared by every gateway: the same GCRA as the local limiters, kept
//! in Redis, so N gateways behind a load balancer allow a caller one quota,
//! not N.
//!
//! Each check is one `EVALSHA` of a short Lua script that reads and moves the
//! caller's theoretical arrival time (TAT) in one step, timed by the Redis
//! server's clock (`TIME`), so the gateways' clocks need not agree. A key
//! expires when its quota is whole again, so Redis holds only recently active
//! callers.
//!
//! The local limiter still runs first: it refuses a flood from one caller
//! without a round trip, and it is what applies while Redis cannot be reached
//! (a check that fails or times out falls back to it, and is counted; for a
//! second after that, checks go by the local count without trying Redis).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::Verdict;

/// GCRA: `ARGV[1]` is the period (µs) one request's worth of quota takes to
/// come back, `ARGV[2]` the burst, `ARGV[3]` the requests' worth this one
/// costs (at most the burst). Answers `{allowed, wait µs, used µs}`:
/// `wait` until the next request is allowed (refused), `used` the quota in
/// use, as time still to refill (allowed).
const GCRA: &str = r"
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + period * cost
local allow_at = new_tat - period * burst
if allow_at > now then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0, new_tat - now}
";

/// How long checks go by the local count after Redis failed to answer one.
const PAUSE: Duration = Duration::from_secs(1);

/// The shared quotas, over one multiplexed Redis connection.
pub struct SharedLimiter {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    /// The connection and the script's SHA once loaded; `None` after a failure,
    /// so the next check connects again.
    conn: Mutex<Option<(MultiplexedConnection, String)>>,
    /// Whether the last check reached Redis (to log changes, not every failure).
    up: AtomicBool,
    /// After a failure, checks go by the local count without trying Redis
    /// until then: one probe a [`PAUSE`], not a connection attempt per request.
    paused_until: std::sync::Mutex<Option<Instant>>,
    /// Checks that fell back to the local limiter.
    failures: AtomicU64,
}

impl SharedLimiter {
    /// A limiter on the Redis at `url` (connected on first use), keys under `prefix`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(SharedLimiter {
            client: redis::Client::open(url)?,
            prefix: prefix.to_string(),
            timeout,
            conn: Mutex::new(None),
            up: AtomicBool::new(true),
            paused_until: std::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
        })
    }

    /// Checks that could not reach Redis and used the local verdict.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Counts `cost` requests' worth of `key` under `policy`'s quota, across
    /// gateways (the local limiter has already refused a cost over the burst).
    /// `None` when Redis could not answer in time: the caller keeps its local verdict.
    pub async fn check(
        &self,
        policy: &'static str,
        key: &str,
        burst: u32,
        period: Duration,
        cost: u32,
    ) -> Option<Verdict> {
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| Instant::now() < t);
        if paused {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let key = format!("{}{policy}:{key}", self.prefix);
        match tokio::time::timeout(self.timeout, self.eval(&key, burst, period, cost)).await {
            Ok(Ok(answer)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    info!("shared rate limits reach Redis again");
                }
                Some(verdict(policy, burst, period, answer))
            }
            failed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + PAUSE);
                // A connection that failed is dropped; one that was only slow is kept.
                if let Ok(Err(_)) = failed {
                    *self.conn.lock().await = None;
                }
                if self.up.swap(false, Ordering::Relaxed) {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", self.timeout.as_millis()),
                    };
                    warn!(%error, "shared rate limits cannot reach Redis; each gateway applies its own quota");
                }
                None
            }
        }
    }

    /// Runs the script once, or twice: after loading it again (Redis
    /// restarted and forgot it), or on a fresh connection (the old one was
    /// dropped, say by that restart).
    async fn eval(&self, key: &str, burst: u32, period: Duration, cost: u32) -> redis::RedisResult<(i64, i64, i64)> {
        let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX).max(1);
        let (mut conn, mut sha) = self.connection().await?;
        let mut retried = false;
        loop {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&sha).arg(1).arg(key).arg(period_us).arg(burst).arg(cost);
            match cmd.query_async(&mut conn).await {
                Err(e) if !retried && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    sha = load(&mut conn).await?;
                    *self.conn.lock().await = Some((conn.clone(), sha.clone()));
                }
                Err(e) if !retried && (e.is_connection_dropped() || e.is_io_error()) => {
                    *self.conn.lock().await = None;
                    (conn, sha) = self.connection().await?;
                }
                answer => return answer,
            }
            retried = true;
        }
    }

    async fn connection(&self) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let mut slot = self.conn.lock().await;
        if let Some(held) = slot.as_ref() {
            return Ok(held.clone());
        }
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let sha = load(&mut conn).await?;
        *slot = Some((conn.clone(), sha.clone()));
        Ok((conn, sha))
    }
}

/// Loads the script; answers its SHA.
async fn load(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("SCRIPT").arg("LOAD").arg(GCRA).query_async(conn).await
}

/// The verdict from the script's answer.
fn verdict(
    policy: &'static str,
    burst: u32,
    period: Duration,
    (allowed, wait_us, used_us): (i64, i64, i64),
) -> Verdict {
    let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
    let window = super::ceil_secs(period * burst);
    if allowed == 1 {
        let used = micros(used_us);
        let in_use = u32::try_from(used.as_micros().div_ceil(period.as_micros().max(1))).unwrap_or(u32::MAX);
        Verdict {
            policy,
            quota: burst,
            window,
            remaining: burst.saturating_sub(in_use),
            reset: super::ceil_secs(used),
            retry_after: None,
        }
    } else {
        // What is left now (a refused request of several fields may leave some).
        let in_use = micros(used_us).as_micros().div_ceil(period.as_micros().max(1));
        let remaining = u32::try_from(u128::from(burst).saturating_sub(in_use)).unwrap_or(0);
        let wait = super::ceil_secs(micros(wait_us)).max(1);
        Verdict { policy, quota: burst, window, remaining, reset: wait, retry_after: Some(wait) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_answer_reads_like_the_local_limiter() {
        let second = Duration::from_secs(1);
        // The first of a burst of 2: one request's worth in use, back in 1 s.
        let first = verdict("provider", 2, second, (1, 0, 1_000_000));
        assert_eq!((first.allowed(), first.remaining, first.reset, first.window), (true, 1, 1, 2));
        let second_one = verdict("provider", 2, second, (1, 0, 2_000_000));
        assert_eq!((second_one.remaining, second_one.reset), (0, 2));
        let refused = verdict("provider", 2, second, (0, 400_000, 2_000_000));
        assert_eq!((refused.allowed(), refused.remaining, refused.retry_after), (false, 0, Some(1)));
        // Part of a period in use still counts as a request not yet back.
        assert_eq!(verdict("provider", 4, second, (1, 0, 1_500_000)).remaining, 2);
    }
}

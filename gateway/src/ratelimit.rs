//! Rate limits: one GCRA limiter (governor) per role, keyed by the
//! principal's subject, and one keyed by client IP for calls without a token.
//!
//! Every answer says where the caller stands, in the IETF
//! `draft-ietf-httpapi-ratelimit-headers` structured-field form:
//! `RateLimit-Policy: "provider";q=200;w=10` (a burst of `q` requests, refilled
//! over `w` seconds) and `RateLimit: "provider";r=57;t=3` (`r` left, `t`
//! seconds until the quota is whole again; when refused, until the next
//! request is allowed, as `Retry-After` also says).
//!
//! Limiters remember a key per caller; a sweeper forgets callers whose state
//! is back to fresh, so the maps hold only recently active callers.
//!
//! With Redis configured, a request the local limiter allows is also counted
//! against the caller's quota in Redis ([`shared`]), which every gateway
//! shares: that answer is the one that counts.

pub mod shared;

use std::borrow::Cow;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use attach_actors::access::{Principal, Role};
use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{RateQuota, RateSettings};

/// One role's (or the anonymous) limiter.
struct Bucket<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    /// The policy's name in the headers.
    name: &'static str,
    limiter: RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>,
    clock: C,
    burst: u32,
    /// Time for one request's worth of quota to come back.
    period: Duration,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Bucket<K, C> {
    fn new(name: &'static str, quota: RateQuota, clock: C) -> Self {
        let burst = quota.burst.max(1);
        let period = Duration::from_secs(60) / quota.per_minute.max(1);
        let q = Quota::with_period(period)
            .expect("the period is positive: per_minute is at most u32::MAX")
            .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
        let limiter =
            RateLimiter::<K, _, C, StateInformationMiddleware>::new(q, DashMapStateStore::default(), clock.clone());
        Bucket { name, limiter, clock, burst, period }
    }

    /// Counts `cost` requests' worth at once (a request selecting several top-level fields).
    fn check(&self, key: &K, cost: NonZeroU32) -> Verdict {
        let window = ceil_secs(self.period * self.burst);
        let refused = |wait: u64, remaining: u32| Verdict {
            policy: self.name,
            quota: self.burst,
            window,
            remaining,
            reset: wait,
            retry_after: Some(wait),
        };
        // More than the burst can never be allowed: refused, as a whole burst's worth.
        let Ok(outcome) = self.limiter.check_key_n(key, cost) else { return refused(window.max(1), 0) };
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                Verdict {
                    policy: self.name,
                    quota: self.burst,
                    window,
                    remaining,
                    reset: ceil_secs(self.period * used),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                // The wait is for the whole cost: what is left now is the cost less the requests'
                // worth the wait brings back (a refused request of several fields leaves some).
                let wait = not_until.wait_time_from(self.clock.now());
                let coming = wait.as_nanos().div_ceil(self.period.as_nanos().max(1));
                let remaining = u128::from(cost.get()).saturating_sub(coming) as u32;
                refused(ceil_secs(wait).max(1), remaining)
            }
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Where one caller stands after a request was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The policy's name: the role, or `anonymous`.
    pub policy: &'static str,
    /// Requests allowed at once.
    pub quota: u32,
    /// Seconds for a used-up quota to refill.
    pub window: u64,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the quota is whole (refused: until the next request is allowed).
    pub reset: u64,
    /// Set when the request is refused: seconds to wait.
    pub retry_after: Option<u64>,
}

impl Verdict {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    /// Adds `RateLimit-Policy`, `RateLimit` and (when refused) `Retry-After`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let values = [
            ("ratelimit-policy", format!("\"{}\";q={};w={}", self.policy, self.quota, self.window)),
            ("ratelimit", format!("\"{}\";r={};t={}", self.policy, self.remaining, self.reset)),
        ];
        for (name, value) in values {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

/// Every limiter.
pub struct RateLimits {
    enabled: bool,
    anonymous: Bucket<IpAddr>,
    /// Indexed like [`Role::FROM_TOKENS`].
    roles: Vec<(Role, Bucket<String>)>,
    /// The quotas every gateway shares, when Redis is configured for them.
    shared: Option<shared::SharedLimiter>,
}

impl RateLimits {
    /// Limiters with the configured quotas.
    pub fn new(settings: &RateSettings) -> Self {
        let roles = Role::FROM_TOKENS
            .iter()
            .filter_map(|r| Some((*r, Bucket::new(r.as_str(), settings.for_role(*r)?, DefaultClock::default()))))
            .collect();
        RateLimits {
            enabled: settings.enabled,
            anonymous: Bucket::new("anonymous", settings.anonymous_per_ip, DefaultClock::default()),
            roles,
            shared: None,
        }
    }

    /// Also counts every allowed request against the quotas in `shared`.
    pub fn with_shared(mut self, shared: shared::SharedLimiter) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Counts one request of `principal` (signed in) or of `ip` (no token);
    /// `None` when limits are off.
    pub async fn check(&self, principal: Option<&Principal>, ip: IpAddr) -> Option<Verdict> {
        self.check_n(principal, ip, NonZeroU32::MIN).await
    }

    /// Counts `cost` requests' worth of `principal` or `ip` at once: what one
    /// request selecting that many top-level fields uses (aliases would
    /// otherwise buy any number of registrations or look-ups for one).
    pub async fn check_n(&self, principal: Option<&Principal>, ip: IpAddr, cost: NonZeroU32) -> Option<Verdict> {
        if !self.enabled {
            return None;
        }
        let bucket = principal.and_then(|p| self.roles.iter().find(|(r, _)| *r == p.role()).map(|(_, b)| (p, b)));
        let (local, burst, period) = match bucket {
            Some((p, b)) => (b.check(&p.subject().to_string(), cost), b.burst, b.period),
            None => (self.anonymous.check(&ip, cost), self.anonymous.burst, self.anonymous.period),
        };
        let Some(shared) = self.shared.as_ref().filter(|_| local.allowed()) else { return Some(local) };
        // The key as Redis counts it, made only when there is a shared count to ask.
        let key: Cow<'_, str> = match bucket {
            Some((p, _)) => Cow::Borrowed(p.subject()),
            None => Cow::Owned(ip.to_string()),
        };
        Some(shared.check(local.policy, &key, burst, period, cost.get()).await.unwrap_or(local))
    }

    /// Checks that could not reach the shared quotas and used the local verdict.
    pub fn shared_failures(&self) -> Option<u64> {
        self.shared.as_ref().map(shared::SharedLimiter::failures)
    }

    /// Forgets callers whose quota is whole again.
    pub fn sweep(&self) {
        self.anonymous.sweep();
        for (_, b) in &self.roles {
            b.sweep();
        }
    }

    /// Callers remembered, across every limiter.
    pub fn tracked(&self) -> usize {
        self.anonymous.len() + self.roles.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// Sweeps every `every`, for as long as the limits exist.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let limits = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            loop {
                tick.tick().await;
                let Some(limits) = limits.upgrade() else { return };
                limits.sweep();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const ONE: NonZeroU32 = NonZeroU32::MIN;

    #[test]
    fn a_request_of_several_fields_costs_each_and_more_than_a_burst_is_refused() {
        let clock = FakeRelativeClock::default();
        let bucket: Bucket<String, _> = Bucket::new("support", RateQuota { per_minute: 60, burst: 10 }, clock.clone());
        let key = "u-1".to_string();
        let n = |n: u32| NonZeroU32::new(n).unwrap();
        let seven = bucket.check(&key, n(7));
        assert_eq!((seven.allowed(), seven.remaining), (true, 3));
        let four = bucket.check(&key, n(4));
        assert_eq!((four.allowed(), four.retry_after, four.remaining), (false, Some(1), 3), "3 left, 4 asked");
        assert!(bucket.check(&key, n(3)).allowed());
        clock.advance(Duration::from_secs(60));
        let over = bucket.check(&key, n(11));
        assert_eq!((over.allowed(), over.retry_after), (false, Some(10)), "never within a burst of 10");
        assert_eq!(bucket.check(&key, n(10)).remaining, 0, "the refusal used nothing");
    }

    #[test]
    fn a_burst_then_refusal_then_the_quota_comes_back() {
        let clock = FakeRelativeClock::default();
        let bucket: Bucket<String, _> = Bucket::new("provider", RateQuota { per_minute: 60, burst: 2 }, clock.clone());
        let key = "u-1".to_string();
        let first = bucket.check(&key, ONE);
        assert_eq!((first.allowed(), first.quota, first.window, first.remaining), (true, 2, 2, 1));
        assert!(bucket.check(&key, ONE).allowed());
        let refused = bucket.check(&key, ONE);
        assert_eq!((refused.remaining, refused.retry_after), (0, Some(1)));
        assert!(bucket.check(&"u-2".to_string(), ONE).allowed(), "another caller has its own quota");
        clock.advance(Duration::from_secs(1));
        assert!(bucket.check(&key, ONE).allowed(), "one request's worth came back");

        let mut headers = HeaderMap::new();
        refused.write_headers(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"provider\";q=2;w=2");
        assert_eq!(headers["ratelimit"], "\"provider\";r=0;t=1");
        assert_eq!(headers["retry-after"], "1");
    }

    #[test]
    fn sweeping_forgets_idle_callers() {
        let clock = FakeRelativeClock::default();
        let bucket: Bucket<IpAddr, _> = Bucket::new("anonymous", RateQuota { per_minute: 60, burst: 5 }, clock.clone());
        for i in 0..100u8 {
            bucket.check(&IpAddr::from([10, 0, 0, i]), ONE);
        }
        assert_eq!(bucket.len(), 100);
        bucket.sweep();
        assert_eq!(bucket.len(), 100, "callers that used quota a moment ago are kept");
        clock.advance(Duration::from_secs(2));
        bucket.check(&IpAddr::from([10, 0, 0, 1]), ONE);
        clock.advance(Duration::from_secs(1));
        bucket.sweep();
        assert_eq!(bucket.len(), 1, "only the caller still short of a whole quota is kept");
        clock.advance(Duration::from_secs(5));
        bucket.sweep();
        assert_eq!(bucket.len(), 0);
    }

    #[test]
    fn signed_in_callers_are_limited_by_role_and_others_by_ip() {
        let settings = RateSettings {
            provider: RateQuota { per_minute: 60, burst: 1 },
            anonymous_per_ip: RateQuota { per_minute: 60, burst: 1 },
            ..RateSettings::default()
        };
        let limits = RateLimits::new(&settings);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let p = Principal::new("u-1", Role::Provider, None, Default::default());
        let check = |p: Option<&Principal>| futures::executor::block_on(limits.check(p, ip)).unwrap();
        assert_eq!(check(Some(&p)).policy, "provider");
        assert!(!check(Some(&p)).allowed());
        assert!(check(None).allowed(), "the anonymous quota is separate");
        assert_eq!(check(Some(&Principal::public())).policy, "anonymous");
        let off = RateLimits::new(&RateSettings { enabled: false, ..settings });
        assert!(futures::executor::block_on(off.check(None, ip)).is_none());
    }
}

//! Shard leases as one store handle sees them: who holds each shard it acquired,
//! with which epoch, and until when by this process's clock.
//!
//! For the embedded store this book *is* the lease: one process holds the file,
//! so leases live in memory and a reopened file starts with none (the process
//! that held them is gone). For ScyllaDB the lease lives in the database (a
//! cell written with a TTL); the book keeps a deadline earlier than the
//! server's, so a writer stops committing *before* another node can take the
//! shard. Both use it to answer a commit's lease question without a round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Epoch, StoreError};
use crate::domain::ShardKey;

/// Where a store reads the time for its leases. Tests pass a manual clock.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The process's monotonic clock.
pub fn system_clock() -> Clock {
    Arc::new(Instant::now)
}

/// A clock that moves only when told to: lease expiry tests without sleeping.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    passed_ms: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock { start: Instant::now(), passed_ms: Arc::default() }
    }
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.passed_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// This clock as a store takes it.
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Arc::new(move || me.start + Duration::from_millis(me.passed_ms.load(Ordering::SeqCst)))
    }
}

/// One shard's lease as this handle knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    owner: String,
    /// `None` while an acquisition is on its way to the store.
    epoch: Option<Epoch>,
    until: Instant,
}

/// What the book says about a commit with `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitGuard {
    /// This handle holds a live lease with that epoch, for `owner`.
    Live {
        /// The lease holder, for a store that checks it again server-side.
        owner: String,
    },
    /// This handle held a lease with that epoch, and it ran out.
    Expired,
    /// This handle holds no lease with that epoch: only the store can say why.
    Unknown,
}

/// The leases one store handle took. See the module docs.
pub struct LeaseBook {
    clock: Clock,
    held: Mutex<HashMap<ShardKey, Held>>,
}

impl std::fmt::Debug for LeaseBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBook").finish_non_exhaustive()
    }
}

impl LeaseBook {
    /// An empty book reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        LeaseBook { clock, held: Mutex::default() }
    }

    /// The time now, by the book's clock.
    pub fn now(&self) -> Instant {
        (self.clock)()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShardKey, Held>> {
        // The map is only ever updated whole under the lock; a panic elsewhere cannot leave it torn.
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves `shard` for `owner` until `until`, unless another owner's lease is
    /// live: the embedded store's whole ownership check. The same owner may take
    /// its own shard again (a restarted actor); its older epoch is then fenced.
    pub fn reserve(&self, shard: &ShardKey, owner: &str, until: Instant) -> Result<(), StoreError> {
        let now = self.now();
        let mut held = self.lock();
        if let Some(h) = held.get(shard)
            && h.owner != owner
            && h.until > now
        {
            return Err(StoreError::LeaseHeld { shard: shard.to_string(), owner: h.owner.clone() });
        }
        held.insert(shard.clone(), Held { owner: owner.to_string(), epoch: None, until });
        Ok(())
    }

    /// Who holds a live lease on `shard` (granted, not only reserved), if anyone.
    pub fn owner(&self, shard: &ShardKey) -> Option<String> {
        let now = self.now();
        self.lock().get(shard).filter(|h| h.epoch.is_some() && h.until > now).map(|h| h.owner.clone())
    }

    /// Records that `owner` holds `shard` with `epoch` until `until`. A lower
    /// epoch than the one recorded never replaces it (two acquisitions raced).
    pub fn grant(&self, shard: &ShardKey, owner: &str, epoch: Epoch, until: Instant) {
        let mut held = self.lock();
        if held.get(shard).and_then(|h| h.epoch).is_some_and(|e| e > epoch) {
            return;
        }
        held.insert(shard.clone(), Held { owner: owner.to_string(), epoch: Some(epoch), until });
    }

    /// Drops a reservation that did not become a lease (the acquisition failed).
    pub fn cancel(&self, shard: &ShardKey, owner: &str) {
        let mut held = self.lock();
        if held.get(shard).is_some_and(|h| h.owner == owner && h.epoch.is_none()) {
            held.remove(shard);
        }
    }

    /// Extends the lease `owner` holds with `epoch` to `until`. `false` when this
    /// handle holds no such lease (another acquisition replaced it).
    pub fn extend(&self, shard: &ShardKey, owner: &str, epoch: Epoch, until: Instant) -> bool {
        let mut held = self.lock();
        match held.get_mut(shard) {
            Some(h) if h.owner == owner && h.epoch == Some(epoch) => {
                h.until = until;
                true
            }
            _ => false,
        }
    }

    /// Forgets the lease `owner` holds with `epoch`; `true` if there was one.
    pub fn release(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> bool {
        let mut held = self.lock();
        if held.get(shard).is_some_and(|h| h.owner == owner && h.epoch == Some(epoch)) {
            held.remove(shard);
            return true;
        }
        false
    }

    /// Whether a commit with `epoch` may go ahead as far as this handle knows.
    pub fn guard(&self, shard: &ShardKey, epoch: Epoch) -> CommitGuard {
        let now = self.now();
        match self.lock().get(shard) {
            Some(h) if h.epoch == Some(epoch) && h.until > now => CommitGuard::Live { owner: h.owner.clone() },
            Some(h) if h.epoch == Some(epoch) => CommitGuard::Expired,
            _ => CommitGuard::Unknown,
        }
    }
}

/// The refusal of a commit whose lease ran out.
pub fn expired(shard: &ShardKey) -> StoreError {
    StoreError::LeaseExpired { shard: shard.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (LeaseBook, ManualClock) {
        let clock = ManualClock::default();
        (LeaseBook::new(clock.clock()), clock)
    }

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn another_owner_waits_for_expiry_the_same_owner_does_not() {
        let (book, clock) = book();
        let s = ShardKey::parse("IHA/111").unwrap();
        book.reserve(&s, "a", book.now() + LEASE).unwrap();
        book.grant(&s, "a", Epoch(1), book.now() + LEASE);
        assert!(
            matches!(book.reserve(&s, "b", book.now() + LEASE), Err(StoreError::LeaseHeld { owner, .. }) if owner == "a")
        );
        book.reserve(&s, "a", book.now() + LEASE).expect("the holder may take its shard again");
        book.grant(&s, "a", Epoch(2), book.now() + LEASE);
        clock.advance(LEASE);
        book.reserve(&s, "b", book.now() + LEASE).expect("an expired lease is free");
    }

    #[test]
    fn a_commit_needs_the_current_lease_and_it_must_be_live() {
        let (book, clock) = book();
        let s = ShardKey::parse("IHA/111").unwrap();
        assert_eq!(book.guard(&s, Epoch(1)), CommitGuard::Unknown);
        book.grant(&s, "a", Epoch(1), book.now() + LEASE);
        assert_eq!(book.guard(&s, Epoch(1)), CommitGuard::Live { owner: "a".into() });
        assert_eq!(book.guard(&s, Epoch(2)), CommitGuard::Unknown);
        clock.advance(LEASE / 2);
        assert!(book.extend(&s, "a", Epoch(1), book.now() + LEASE));
        assert!(!book.extend(&s, "b", Epoch(1), book.now() + LEASE), "only the holder renews");
        clock.advance(LEASE / 2 + LEASE / 4);
        assert_eq!(book.guard(&s, Epoch(1)), CommitGuard::Live { owner: "a".into() }, "the renewal counted");
        clock.advance(LEASE);
        assert_eq!(book.guard(&s, Epoch(1)), CommitGuard::Expired);
    }

    #[test]
    fn a_late_lower_grant_does_not_replace_a_newer_one() {
        let (book, _) = book();
        let s = ShardKey::parse("IHA/111").unwrap();
        book.grant(&s, "a", Epoch(3), book.now() + LEASE);
        book.grant(&s, "a", Epoch(2), book.now() + LEASE);
        assert_eq!(book.guard(&s, Epoch(3)), CommitGuard::Live { owner: "a".into() });
        assert!(!book.release(&s, "a", Epoch(2)));
        assert!(book.release(&s, "a", Epoch(3)));
        assert_eq!(book.guard(&s, Epoch(3)), CommitGuard::Unknown);
    }
}

//! Shard ownership on ScyllaDB, as decisions over the ownership row.
//!
//! The row `shard_owners (ha, community) → epoch, owner, last_seq` changes only
//! through lightweight transactions. `epoch` is never written with a TTL, so it
//! only goes up; `owner` is written `USING TTL` and is the lease. Each function
//! here takes what the row held (as read, or as a refused transaction returned
//! it) and says what to do next, so the whole protocol is tested without a server.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::rows::LwtRow;
use crate::store::{Epoch, StoreError};

/// The ownership row, as far as leases care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnerRow {
    /// The shard's current epoch (0: created, never acquired).
    pub(super) epoch: u64,
    /// The live lease's holder; `None` once the TTL ran out or it was released.
    pub(super) owner: Option<String>,
}

impl OwnerRow {
    /// From the columns of a read or of a refused transaction; `None` if no row.
    pub(super) fn from_lwt(row: &LwtRow) -> Result<Option<Self>, StoreError> {
        row.bigint("epoch").map(|e| Self::from_columns(e, row.text("owner").map(str::to_string))).transpose()
    }

    /// From the `epoch` and `owner` columns.
    pub(super) fn from_columns(epoch: i64, owner: Option<String>) -> Result<Self, StoreError> {
        let epoch = u64::try_from(epoch).map_err(|_| StoreError::Corrupt("a shard's epoch is negative".into()))?;
        Ok(OwnerRow { epoch, owner })
    }
}

/// The next step of an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AcquireStep {
    /// No ownership row yet: create it (epoch 0, no owner), then read again.
    Create,
    /// Another owner's lease is live.
    Refuse {
        /// The holder.
        owner: String,
    },
    /// Raise the epoch from `from` to `to` and write the lease, on condition that
    /// the row still holds `from` and the owner found (`None`: a free shard).
    Take {
        /// The epoch found.
        from: u64,
        /// The epoch to hand out.
        to: u64,
        /// The owner found: the caller itself, or nobody.
        found: Option<String>,
    },
}

/// What `owner` does next with the row it read.
pub(super) fn acquire_step(row: Option<&OwnerRow>, owner: &str) -> Result<AcquireStep, StoreError> {
    let Some(row) = row else { return Ok(AcquireStep::Create) };
    match &row.owner {
        Some(holder) if holder != owner => Ok(AcquireStep::Refuse { owner: holder.clone() }),
        found => {
            let to = row.epoch.checked_add(1).ok_or_else(|| StoreError::Corrupt("a shard's epochs ran out".into()))?;
            Ok(AcquireStep::Take { from: row.epoch, to, found: found.clone() })
        }
    }
}

/// The next step after a refused renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RenewStep {
    /// The epoch is still ours and nobody holds the lease (it ran out): write it
    /// again, on condition that it is still free.
    Retake,
    /// Refused for good.
    Refuse(StoreError),
}

/// Why a renewal of `epoch` by `owner` was refused, given the row it returned.
pub(super) fn after_refused_renewal(shard: &str, row: Option<&OwnerRow>, owner: &str, epoch: Epoch) -> RenewStep {
    match row {
        Some(r) if r.epoch != epoch.0 => RenewStep::Refuse(stale(shard, r.epoch, epoch)),
        Some(OwnerRow { owner: None, .. }) => RenewStep::Retake,
        Some(OwnerRow { owner: Some(holder), .. }) if holder != owner => {
            RenewStep::Refuse(StoreError::LeaseHeld { shard: shard.to_string(), owner: holder.clone() })
        }
        // The row holds our epoch and our name, yet the condition failed: it
        // changed between the two; the caller's next tick tries again.
        Some(_) => RenewStep::Refuse(StoreError::Unavailable(format!("the lease on {shard} changed while renewing"))),
        None => RenewStep::Refuse(stale(shard, 0, epoch)),
    }
}

/// Why the fencing condition of a commit (`IF epoch = held AND owner = me`) failed.
pub(super) fn commit_refusal(shard: &str, row: Option<&OwnerRow>, held: Epoch) -> StoreError {
    match row {
        Some(r) if r.epoch == held.0 => StoreError::LeaseExpired { shard: shard.to_string() },
        Some(r) => stale(shard, r.epoch, held),
        None => stale(shard, 0, held),
    }
}

fn stale(shard: &str, current: u64, held: Epoch) -> StoreError {
    StoreError::StaleEpoch { shard: shard.to_string(), current, held: held.0 }
}

/// The lease as the server counts it: a whole number of seconds, at least one.
pub(super) fn ttl_secs(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0)).unwrap_or(i32::MAX).max(1)
}

/// Until when a lease written by a request sent at `sent` may be used locally.
///
/// The server starts the TTL when it applies the write, which is after `sent`,
/// but counts it from its own clock in whole seconds (`gc_clock`), so its
/// expiry may come up to [`SERVER_CLOCK_STEP`] before `sent + lease`. A commit
/// checks the deadline before each of its batches and takes at most `margin`
/// (its statements' timeouts), so stopping `margin` and that step early means
/// its writes are sent before any other node can acquire the shard. This is a
/// timing argument, with the limits README and DECISIONS 15 state: a write the
/// server applies late (a batch replayed from its batchlog) is not fenced.
pub(super) fn local_deadline(sent: Instant, lease: Duration, margin: Duration) -> Instant {
    sent + lease.saturating_sub(margin + SERVER_CLOCK_STEP)
}

/// The resolution of the clock ScyllaDB computes a TTL's expiry with.
pub(super) const SERVER_CLOCK_STEP: Duration = Duration::from_secs(1);

/// A store handle's write timestamps (microseconds). Cells are ordered by
/// their writers' timestamps, so each is above every one handed out before
/// (the wall clock may step back) and above the floor of every shard taken:
/// the timestamp of its previous owner's last commit, which that owner's fence
/// recorded. A node whose clock is behind the previous owner's would otherwise
/// lose its writes to that owner's older ones.
#[derive(Debug, Default)]
pub(super) struct WriteClock(AtomicI64);

impl WriteClock {
    /// The next timestamp, given the wall clock's `now`.
    pub(super) fn next(&self, now: i64) -> i64 {
        let previous =
            self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1))).unwrap_or(now);
        now.max(previous + 1)
    }

    /// Every later timestamp is above `floor`.
    pub(super) fn raise_to(&self, floor: i64) {
        self.0.fetch_max(floor, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: u64, owner: Option<&str>) -> OwnerRow {
        OwnerRow { epoch, owner: owner.map(str::to_string) }
    }

    #[test]
    fn acquiring_creates_the_row_takes_a_free_or_own_lease_and_refuses_a_held_one() {
        assert_eq!(acquire_step(None, "a").unwrap(), AcquireStep::Create);
        assert_eq!(acquire_step(Some(&row(0, None)), "a").unwrap(), AcquireStep::Take { from: 0, to: 1, found: None });
        assert_eq!(
            acquire_step(Some(&row(4, Some("a"))), "a").unwrap(),
            AcquireStep::Take { from: 4, to: 5, found: Some("a".into()) }
        );
        assert_eq!(acquire_step(Some(&row(4, Some("b"))), "a").unwrap(), AcquireStep::Refuse { owner: "b".into() });
        assert!(acquire_step(Some(&row(u64::MAX, None)), "a").is_err());
    }

    #[test]
    fn a_refused_renewal_retakes_a_lapsed_lease_only_with_its_own_epoch() {
        let e = Epoch(3);
        assert_eq!(after_refused_renewal("S", Some(&row(3, None)), "a", e), RenewStep::Retake);
        assert!(matches!(
            after_refused_renewal("S", Some(&row(4, Some("b"))), "a", e),
            RenewStep::Refuse(StoreError::StaleEpoch { current: 4, held: 3, .. })
        ));
        assert!(matches!(
            after_refused_renewal("S", Some(&row(3, Some("b"))), "a", e),
            RenewStep::Refuse(StoreError::LeaseHeld { ref owner, .. }) if owner == "b"
        ));
        assert!(matches!(after_refused_renewal("S", None, "a", e), RenewStep::Refuse(StoreError::StaleEpoch { .. })));
    }

    #[test]
    fn a_refused_commit_says_whether_the_epoch_moved_or_the_lease_lapsed() {
        assert!(matches!(commit_refusal("S", Some(&row(3, None)), Epoch(3)), StoreError::LeaseExpired { .. }));
        assert!(matches!(
            commit_refusal("S", Some(&row(5, Some("b"))), Epoch(3)),
            StoreError::StaleEpoch { current: 5, held: 3, .. }
        ));
        assert!(matches!(commit_refusal("S", None, Epoch(1)), StoreError::StaleEpoch { current: 0, .. }));
    }

    #[test]
    fn the_ttl_rounds_up_to_whole_seconds_and_the_local_deadline_is_early() {
        assert_eq!(ttl_secs(Duration::from_secs(15)), 15);
        assert_eq!(ttl_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        let now = Instant::now();
        assert_eq!(local_deadline(now, Duration::from_secs(15), Duration::from_secs(5)), now + Duration::from_secs(9));
        assert_eq!(local_deadline(now, Duration::from_secs(1), Duration::from_secs(5)), now);
    }

    #[test]
    fn write_timestamps_go_up_and_above_a_taken_floor() {
        let clock = WriteClock::default();
        assert_eq!(clock.next(100), 100);
        assert_eq!(clock.next(50), 101, "the wall clock stepped back");
        // The previous owner's clock was ahead: its last commit wrote at 10,000.
        clock.raise_to(10_000);
        assert_eq!(clock.next(200), 10_001);
        clock.raise_to(5_000);
        assert_eq!(clock.next(20_000), 20_000, "a lower floor changes nothing");
    }

    #[test]
    fn owner_rows_come_from_lwt_answers() {
        use scylla::value::CqlValue;
        let answer = LwtRow::new(vec![
            ("[applied]".into(), Some(CqlValue::Boolean(false))),
            ("epoch".into(), Some(CqlValue::BigInt(2))),
            ("owner".into(), None),
        ])
        .unwrap();
        assert_eq!(OwnerRow::from_lwt(&answer).unwrap(), Some(row(2, None)));
        let none =
            LwtRow::new(vec![("[applied]".into(), Some(CqlValue::Boolean(false))), ("epoch".into(), None)]).unwrap();
        assert_eq!(OwnerRow::from_lwt(&none).unwrap(), None);
        assert!(OwnerRow::from_columns(-1, None).is_err());
    }
}

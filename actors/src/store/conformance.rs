//! The conformance suite every `Store` backend must pass.
//!
//! A backend provides a [`Harness`]: one fresh, empty location (a temporary
//! directory, a new keyspace) that can open a store on itself, and open it again
//! after the first handle was dropped. Each check takes a fresh harness and
//! returns `Err` with a message instead of panicking, so the suite can run
//! inside `#[test]`s ([`store_conformance_tests!`](crate::store_conformance_tests))
//! or from a tool against a live cluster ([`run_all`]).
//!
//! Nothing here depends on dev-dependencies or creates locations itself: the
//! caller decides where the data lives. The checks must run inside a Tokio
//! runtime (one of them spawns tasks); a multi-threaded one exercises the
//! backend's concurrency best.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::future::BoxFuture;

use super::{Batch, CasOutcome, Epoch, Locator, PhnHolder, Record, RecordKey, Store, StoreError};

use self::fixtures::*;

/// One fresh, empty place a backend can keep data.
pub trait Harness: Send + Sync {
    /// Opens a store on this location. Called again after every earlier handle
    /// was dropped, it must see what they committed.
    fn open(&self) -> BoxFuture<'_, anyhow::Result<Arc<dyn Store>>>;

    /// Lets `by` pass for the leases of the stores this harness opened: a
    /// backend with an injectable clock moves it; one whose leases expire on a
    /// server waits.
    fn pass_time(&self, by: Duration) -> BoxFuture<'_, ()>;
}

/// A check of the suite.
pub type Check = for<'a> fn(&'a dyn Harness) -> BoxFuture<'a, anyhow::Result<()>>;

macro_rules! checks {
    ($($name:ident),+ $(,)?) => {
        /// Every check, by name, in the order [`run_all`] runs them.
        pub const CHECKS: &[(&str, Check)] = &[$((stringify!($name), |h| Box::pin($name(h)))),+];
    };
}

checks!(
    acquire_gives_increasing_epochs,
    a_live_lease_keeps_other_owners_out,
    an_expired_lease_lets_a_new_owner_in,
    commit_is_durable_and_visible,
    stale_epoch_writes_nothing,
    upsert_replaces_and_delete_removes,
    shards_are_isolated,
    events_after_pages_in_order,
    locate_finds_each_kind,
    a_locator_is_claimed_once,
    phn_claim_compare_and_set,
    claim_phns_takes_only_free_ones,
    concurrent_commits_all_land,
    data_survives_reopen,
    audit_log_appends_and_pages,
    a_commit_writes_its_audit_records_or_none,
    transfers_and_staff_keep_distinct_keys,
    every_shard_acquired_is_listed_as_held,
);

/// Runs every check, each on a fresh harness from `fresh`, and reports all that failed.
pub async fn run_all<H, F, Fut>(mut fresh: F) -> anyhow::Result<()>
where
    H: Harness,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let harness = fresh().await.with_context(|| format!("preparing a location for {name}"))?;
        if let Err(e) = check(&harness).await {
            failed.push(format!("{name}: {e:#}"));
        }
    }
    ensure!(failed.is_empty(), "{} of {} store checks failed:\n{}", failed.len(), CHECKS.len(), failed.join("\n"));
    Ok(())
}

/// Generates one `#[tokio::test]` per conformance check, plus a test that the
/// list is complete. `$fresh` is an expression (it may `.await`) giving a fresh
/// [`Harness`] each time it is evaluated. The calling crate needs tokio with
/// `macros` and `rt-multi-thread`.
///
/// ```ignore
/// attach_actors::store_conformance_tests!(TempHarness::new());
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:expr) => {
        $crate::store_conformance_tests!(@tests $fresh;
            acquire_gives_increasing_epochs,
            a_live_lease_keeps_other_owners_out,
            an_expired_lease_lets_a_new_owner_in,
            commit_is_durable_and_visible,
            stale_epoch_writes_nothing,
            upsert_replaces_and_delete_removes,
            shards_are_isolated,
            events_after_pages_in_order,
            locate_finds_each_kind,
            a_locator_is_claimed_once,
            phn_claim_compare_and_set,
            claim_phns_takes_only_free_ones,
            concurrent_commits_all_land,
            data_survives_reopen,
            audit_log_appends_and_pages,
            a_commit_writes_its_audit_records_or_none,
            transfers_and_staff_keep_distinct_keys,
            every_shard_acquired_is_listed_as_held,
        );
    };
    (@tests $fresh:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let harness = $fresh;
                if let Err(e) = $crate::store::conformance::$check(&harness).await {
                    panic!("{}: {e:#}", stringify!($check));
                }
            }
        )+

        #[test]
        fn conformance_tests_cover_every_check() {
            let generated = [$(stringify!($check)),+];
            let listed: Vec<&str> = $crate::store::conformance::CHECKS.iter().map(|(name, _)| *name).collect();
            assert_eq!(generated.as_slice(), listed.as_slice());
        }
    };
}

/// Audit records come back in time order, filtered, paged by cursor, within a
/// time range, and after reopening.
pub async fn audit_log_appends_and_pages(h: &dyn Harness) -> anyhow::Result<()> {
    use crate::access::{Operation, Role};
    use crate::audit::{AuditId, AuditQuery, AuditRecord, Outcome};

    let store = h.open().await?;
    let record = |minute: i64, id: u64, subject: &str, op: Operation, s: Option<&str>| AuditRecord {
        at: at(minute),
        id: AuditId(id),
        subject: subject.to_string(),
        role: Role::Coordinator,
        operation: op,
        shard: s.map(shard),
        target: Some(format!("t{id}")),
        outcome: if id.is_multiple_of(2) { Outcome::Ok } else { Outcome::Refused("FORBIDDEN".into()) },
    };
    // Appended out of order, in two calls, with two records at the same time.
    let all = [
        record(3, 30, "c-1", Operation::ReadWaitlist, Some("IHA/111")),
        record(1, 10, "c-2", Operation::RunMatching, Some("FHA/201")),
        record(2, 21, "c-1", Operation::ReadWaitlist, Some("IHA/111")),
        record(2, 20, "c-1", Operation::AnswerProposal, None),
    ];
    store.append_audit(&all[..2]).await?;
    store.append_audit(&all[2..]).await?;
    store.append_audit(&[]).await?;
    let ids = |rs: &[AuditRecord]| rs.iter().map(|r| r.id.0).collect::<Vec<_>>();

    let everything = store.audit_page(&AuditQuery { limit: 10, ..Default::default() }).await?;
    ensure!(ids(&everything) == [10, 20, 21, 30], "the log's order is {:?}", ids(&everything));
    ensure!(everything[0] == all[1], "a record changed on its way through the store: {:?}", everything[0]);

    let first = store.audit_page(&AuditQuery { limit: 2, ..Default::default() }).await?;
    ensure!(ids(&first) == [10, 20], "the first page is {:?}", ids(&first));
    let next = AuditQuery { limit: 2, after: first.last().map(AuditRecord::cursor), ..Default::default() };
    let second = store.audit_page(&next).await?;
    ensure!(ids(&second) == [21, 30], "the page after the cursor is {:?}", ids(&second));

    let mine = AuditQuery {
        subject: Some("c-1".into()),
        operation: Some(Operation::ReadWaitlist),
        limit: 10,
        ..Default::default()
    };
    ensure!(ids(&store.audit_page(&mine).await?) == [21, 30], "subject and operation filters");
    let here = AuditQuery { shard: Some(shard("FHA/201")), limit: 10, ..Default::default() };
    ensure!(ids(&store.audit_page(&here).await?) == [10], "the shard filter");
    let window = AuditQuery { from: Some(at(2)), until: Some(at(3)), limit: 10, ..Default::default() };
    ensure!(ids(&store.audit_page(&window).await?) == [20, 21], "the time range is half-open");
    ensure!(store.audit_page(&AuditQuery::default()).await?.is_empty(), "a zero limit returns nothing");

    drop(store);
    let store = h.open().await?;
    let again = store.audit_page(&AuditQuery { limit: 10, ..Default::default() }).await?;
    ensure!(again == everything, "the audit log did not survive reopening");
    Ok(())
}

/// A commit's audit records are written with its rows: a commit refused for
/// its epoch writes none of them, and those committed survive reopening.
pub async fn a_commit_writes_its_audit_records_or_none(h: &dyn Harness) -> anyhow::Result<()> {
    use crate::access::{Operation, Principal, Role, Scope};
    use crate::audit::{AuditQuery, AuditRecord, Outcome};

    let s = shard("NHA/511");
    let who = Principal::new("c-9", Role::Coordinator, None, Scope::province());
    let record = |target: &str| {
        AuditRecord::new(&who, Operation::RegisterHousehold, Some(s.clone()), Some(target.into()), Outcome::Ok)
    };
    let targets = |rs: Vec<AuditRecord>| rs.into_iter().filter_map(|r| r.target).collect::<Vec<_>>();
    let everything = AuditQuery { limit: 10, ..Default::default() };
    {
        let store = h.open().await?;
        let old = store.acquire_shard(&s, "node-1").await?;
        let first = World::new(&s, 0);
        store.commit(&s, old, &Batch { audit: vec![record("kept")], ..first.batch(1) }).await?;
        ensure!(targets(store.audit_page(&everything).await?) == ["kept"], "the commit's audit record is missing");
        store.release_shard(&s, "node-1", old).await?;
        store.acquire_shard(&s, "node-2").await?;
        let stale = Batch { audit: vec![record("refused")], ..World::new(&s, 1).batch(4) };
        let refused = store.commit(&s, old, &stale).await;
        ensure!(matches!(refused, Err(StoreError::StaleEpoch { .. })), "a stale commit was not refused");
        ensure!(targets(store.audit_page(&everything).await?) == ["kept"], "a refused commit wrote its audit record");
    }
    let store = h.open().await?;
    ensure!(targets(store.audit_page(&everything).await?) == ["kept"], "the audit record did not survive reopening");
    ensure!(store.load_shard(&s).await?.records.len() == World::new(&s, 0).records().len(), "the rows did not either");
    Ok(())
}

/// Panel transfers (keyed by source provider and idempotency key) and clinic
/// staff members (keyed by clinic and subject) are separate rows even when one
/// key's parts are prefixes of another's; an upsert replaces one and a delete
/// removes one, leaving its neighbours; all of it survives reopening.
pub async fn transfers_and_staff_keep_distinct_keys(h: &dyn Harness) -> anyhow::Result<()> {
    use crate::domain::{DelegateId, FacilityNumber, TransferKey, TransferStatus};

    let s = shard("IHA/114");
    let world = World::new(&s, 4);
    let transfer = |from: &crate::domain::ProviderId, key: &str| crate::domain::PanelTransfer {
        from: from.clone(),
        key: TransferKey::parse(key).expect("fixture keys are valid"),
        ..world.transfer.clone()
    };
    let member = |facility: &str, subject: &str| crate::domain::StaffMember {
        facility: FacilityNumber::parse(facility).expect("fixture facilities are valid"),
        subject: DelegateId::parse(subject).expect("fixture subjects are valid"),
        ..world.staff.clone()
    };
    let (p1, p12) = (provider_id(1), crate::domain::ProviderId::parse("P000012").context("fixture provider")?);
    // `P00001` is a prefix of `P000012`, `k` of `k-2`, `moa-1` of `moa-10`, and
    // `F0001` + `moa` reads like another split of the same characters.
    let transfers = [transfer(&p1, "k"), transfer(&p1, "k-2"), transfer(&p12, "k"), transfer(&p12, "2-k")];
    let staff = [member("F0001", "moa-1"), member("F0001", "moa-10"), member("F0002", "moa-1"), member("F0001", "1")];
    let records: Vec<Record> =
        transfers.iter().cloned().map(Record::Transfer).chain(staff.iter().cloned().map(Record::ClinicStaff)).collect();
    let keys: std::collections::BTreeSet<RecordKey> = records.iter().map(Record::key).collect();
    ensure!(keys.len() == records.len(), "the fixture's keys are not distinct");

    {
        let store = h.open().await?;
        let epoch = store.acquire_shard(&s, "node-1").await?;
        store.commit(&s, epoch, &Batch { upserts: records.clone(), ..Batch::default() }).await?;
        let image = store.load_shard(&s).await?;
        ensure!(
            sorted(image.records) == sorted(records.clone()),
            "load_shard does not return each transfer and member"
        );
        for record in &records {
            let found = store.read(&s, &record.key()).await?;
            ensure!(found.as_ref() == Some(record), "read({:?}) returned {found:?}", record.key());
        }

        // Progress replaces one transfer; removing one staff member leaves the others.
        let progressed = crate::domain::PanelTransfer {
            moved: 7,
            status: TransferStatus::Completed,
            updated_at: at(99),
            ..transfers[0].clone()
        };
        let gone = staff[0].clone();
        let batch = Batch {
            upserts: vec![Record::Transfer(progressed.clone())],
            deletes: vec![Record::ClinicStaff(gone.clone()).key()],
            ..Batch::default()
        };
        store.commit(&s, epoch, &batch).await?;
        let found = store.read(&s, &Record::Transfer(progressed.clone()).key()).await?;
        ensure!(found == Some(Record::Transfer(progressed)), "a transfer's progress did not replace it: {found:?}");
        ensure!(store.read(&s, &Record::ClinicStaff(gone).key()).await?.is_none(), "a removed member can be read");
        for neighbour in records.iter().enumerate().filter(|(i, _)| ![0, 4].contains(i)).map(|(_, r)| r) {
            let found = store.read(&s, &neighbour.key()).await?;
            ensure!(found.as_ref() == Some(neighbour), "a change to its neighbour touched {:?}", neighbour.key());
        }
    }
    let store = h.open().await.context("reopening the store")?;
    let image = store.load_shard(&s).await?;
    ensure!(image.records.len() == records.len() - 1, "after reopening the shard has {} rows", image.records.len());
    let completed = image.records.iter().filter(|r| matches!(r, Record::Transfer(t) if t.moved == 7)).count();
    ensure!(completed == 1, "the transfer's progress was lost across a reopen");
    Ok(())
}

/// Each acquisition of a shard gets a higher epoch, whoever makes it; shards count separately.
pub async fn acquire_gives_increasing_epochs(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let (a, b) = (shard("IHA/111"), shard("FHA/201"));
    let first = store.acquire_shard(&a, "node-1").await?;
    ensure!(first.0 >= 1, "the first epoch is {first:?}; epochs start at 1");
    // The holder taking its shard again (a restarted writer) gets a new epoch.
    let second = store.acquire_shard(&a, "node-1").await?;
    store.release_shard(&a, "node-1", second).await?;
    let third = store.acquire_shard(&a, "node-2").await.context("acquiring a released shard")?;
    ensure!(first < second && second < third, "epochs {first:?}, {second:?}, {third:?} do not increase");
    let other = store.acquire_shard(&b, "node-1").await?;
    ensure!(other.0 >= 1, "another shard's first epoch is {other:?}");
    let fourth = store.acquire_shard(&a, "node-2").await?;
    ensure!(fourth > third, "acquiring another shard disturbed the epochs of the first");
    Ok(())
}

/// Every shard acquired, released or not, is listed by `held_shards`, once.
pub async fn every_shard_acquired_is_listed_as_held(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    ensure!(store.held_shards().await?.is_empty(), "a new store holds no shard");
    let (a, b) = (shard("IHA/111"), shard("VCHA/233"));
    let epoch = store.acquire_shard(&a, "node-1").await?;
    store.acquire_shard(&b, "node-2").await?;
    store.release_shard(&a, "node-1", epoch).await?;
    store.acquire_shard(&a, "node-1").await?;
    let mut held = store.held_shards().await?;
    held.sort();
    let mut expected = vec![a, b];
    expected.sort();
    ensure!(held == expected, "held {held:?}, acquired {expected:?}");
    Ok(())
}

/// While a lease is live (renewed in time) no other owner can acquire the shard,
/// and the refused attempt does not disturb the holder.
pub async fn a_live_lease_keeps_other_owners_out(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("IHA/112");
    let lease = store.lease();
    ensure!(store.shard_owner(&s).await?.is_none(), "a shard nobody acquired has an owner");
    let epoch = store.acquire_shard(&s, "node-1").await?;
    let refused = store.acquire_shard(&s, "node-2").await;
    ensure!(
        matches!(&refused, Err(StoreError::LeaseHeld { owner, .. }) if owner == "node-1"),
        "a second owner acquiring a live lease got {refused:?}"
    );
    let owner = store.shard_owner(&s).await?;
    ensure!(owner.as_deref() == Some("node-1"), "the holder of a live lease reads as {owner:?}");
    let world = World::new(&s, 0);
    store.commit(&s, epoch, &world.batch(1)).await.context("the holder's commit after a refused acquisition")?;

    // Renewed halfway, the lease outlives its first term.
    h.pass_time(lease / 2).await;
    store.renew_lease(&s, "node-1", epoch).await.context("renewing a live lease")?;
    h.pass_time(lease / 2).await;
    let refused = store.acquire_shard(&s, "node-2").await;
    ensure!(matches!(refused, Err(StoreError::LeaseHeld { .. })), "a renewed lease was taken: {refused:?}");
    let more = Batch { events: vec![event(&s, 4, world.registered())], ..Batch::default() };
    store.commit(&s, epoch, &more).await.context("a commit within the renewed lease")?;
    let renew = store.renew_lease(&s, "node-2", epoch).await;
    ensure!(renew.is_err(), "a non-holder renewed the lease: {renew:?}");
    let still = store.acquire_shard(&s, "node-3").await;
    ensure!(
        matches!(&still, Err(StoreError::LeaseHeld { owner, .. }) if owner == "node-1"),
        "after a non-holder's renewal attempt, acquiring returned {still:?}"
    );

    // Released, it is free at once, and the old epoch is fenced.
    store.release_shard(&s, "node-1", epoch).await?;
    let owner = store.shard_owner(&s).await?;
    ensure!(owner.is_none(), "a released shard reads as held by {owner:?}");
    let next = store.acquire_shard(&s, "node-2").await.context("acquiring a released shard")?;
    ensure!(next > epoch, "the new owner's epoch {next:?} is not above {epoch:?}");
    let stale = store.renew_lease(&s, "node-1", epoch).await;
    ensure!(matches!(stale, Err(StoreError::StaleEpoch { .. })), "renewing a fenced epoch returned {stale:?}");
    ensure!(store.load_shard(&s).await?.last_seq == 4, "the shard lost events across the hand-over");
    Ok(())
}

/// A lease not renewed runs out: its holder's commits are refused and write
/// nothing, and another owner acquires with a higher epoch.
pub async fn an_expired_lease_lets_a_new_owner_in(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("IHA/113");
    let lease = store.lease();
    let old = store.acquire_shard(&s, "node-1").await?;
    let first = World::new(&s, 0);
    store.commit(&s, old, &first.batch(1)).await?;
    // Whole seconds past the lease: a server's TTL counts in seconds.
    h.pass_time(lease + Duration::from_secs(1)).await;
    let owner = store.shard_owner(&s).await?;
    ensure!(owner.is_none(), "a shard whose lease ran out reads as held by {owner:?}");

    let second = World::new(&s, 1);
    let late = store.commit(&s, old, &second.batch(4)).await;
    ensure!(matches!(late, Err(StoreError::LeaseExpired { .. })), "a commit after the lease ran out returned {late:?}");
    let new = store.acquire_shard(&s, "node-2").await.context("acquiring a shard whose lease ran out")?;
    ensure!(new > old, "the new owner's epoch {new:?} is not above {old:?}");
    let stale = store.commit(&s, old, &second.batch(4)).await;
    ensure!(
        matches!(&stale, Err(StoreError::StaleEpoch { current, held, .. }) if *current == new.0 && *held == old.0),
        "the old owner's commit after a take-over returned {stale:?}"
    );
    let renew = store.renew_lease(&s, "node-1", old).await;
    ensure!(matches!(renew, Err(StoreError::StaleEpoch { .. })), "the old owner renewed a taken lease: {renew:?}");
    let image = store.load_shard(&s).await?;
    ensure!(sorted(image.records) == sorted(first.records()), "a refused commit changed the shard's rows");
    ensure!(image.last_seq == 3, "a refused commit's events were stored (last_seq {})", image.last_seq);
    for locator in second.locators() {
        ensure!(store.locate(&locator).await?.is_none(), "a refused commit's locator {locator:?} was written");
    }
    store.commit(&s, new, &second.batch(4)).await.context("the new owner's commit")?;
    Ok(())
}

/// A commit with the current epoch is visible to `load_shard`, `read` and `events_after`.
pub async fn commit_is_durable_and_visible(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("IHA/111");
    let image = store.load_shard(&s).await?;
    ensure!(image.records.is_empty() && image.last_seq == 0, "a never-written shard is not empty: {image:?}");
    let epoch = store.acquire_shard(&s, "node-1").await?;
    let world = World::new(&s, 0);
    store.commit(&s, epoch, &world.batch(1)).await?;

    let image = store.load_shard(&s).await?;
    ensure!(sorted(image.records) == sorted(world.records()), "load_shard does not return what was committed");
    ensure!(image.last_seq == 3, "last_seq is {}, expected 3", image.last_seq);
    for record in world.records() {
        let found = store.read(&s, &record.key()).await?;
        ensure!(found.as_ref() == Some(&record), "read({:?}) returned {found:?}", record.key());
    }
    let missing = RecordKey::Registration(crate::domain::RegistrationRef::generate());
    ensure!(store.read(&s, &missing).await?.is_none(), "read of a missing key found something");
    let events = store.events_after(&s, 0, 100).await?;
    ensure!(events == world.events(1), "events_after(0) returned {events:?}");
    Ok(())
}

/// A commit with an older epoch is refused and writes nothing: no rows, events or locators.
pub async fn stale_epoch_writes_nothing(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("VIHA/421");
    let old = store.acquire_shard(&s, "node-1").await?;
    let first = World::new(&s, 0);
    store.commit(&s, old, &first.batch(1)).await?;
    store.release_shard(&s, "node-1", old).await?;
    let new = store.acquire_shard(&s, "node-2").await?;

    let second = World::new(&s, 1);
    let refused = store.commit(&s, old, &second.batch(4)).await;
    ensure!(
        matches!(&refused, Err(StoreError::StaleEpoch { current, held, .. }) if *current == new.0 && *held == old.0),
        "a commit with a stale epoch returned {refused:?}"
    );
    let empty = store.commit(&s, old, &Batch::default()).await;
    ensure!(
        matches!(empty, Err(StoreError::StaleEpoch { .. })),
        "an empty commit with a stale epoch returned {empty:?}"
    );
    let image = store.load_shard(&s).await?;
    ensure!(sorted(image.records) == sorted(first.records()), "the refused batch changed the shard's rows");
    ensure!(image.last_seq == 3, "the refused batch's events were stored (last_seq {})", image.last_seq);
    ensure!(store.events_after(&s, 3, 100).await?.is_empty(), "events_after shows the refused batch's events");
    for locator in second.locators() {
        ensure!(store.locate(&locator).await?.is_none(), "the refused batch's locator {locator:?} was written");
    }

    let never = shard("VIHA/999");
    let orphan = store.commit(&never, Epoch(1), &World::new(&never, 2).batch(1)).await;
    ensure!(
        matches!(orphan, Err(StoreError::StaleEpoch { .. })),
        "a commit to a never-acquired shard returned {orphan:?}"
    );
    ensure!(store.load_shard(&never).await?.records.is_empty(), "a never-acquired shard took a commit");

    store.commit(&s, new, &second.batch(4)).await.context("the new owner's commit")?;
    ensure!(store.load_shard(&s).await?.last_seq == 6, "the new owner's events are missing");
    Ok(())
}

/// An upsert replaces a record whole; a delete removes it (deleting nothing is fine).
pub async fn upsert_replaces_and_delete_removes(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("NHA/511");
    let epoch = store.acquire_shard(&s, "node-1").await?;
    let world = World::new(&s, 0);
    store.commit(&s, epoch, &world.batch(1)).await?;

    let proposal = world.proposal.accept(at(10)).context("fixture accept")?;
    let withdrawn = world.registration.withdraw("found a family doctor", at(5)).context("fixture withdraw")?;
    let upserts = vec![Record::Registration(withdrawn.clone()), Record::Proposal(proposal.clone())];
    store.commit(&s, epoch, &Batch { upserts, ..Batch::default() }).await?;
    let found = store.read(&s, &RecordKey::Registration(withdrawn.reference)).await?;
    ensure!(found == Some(Record::Registration(withdrawn.clone())), "the upsert did not replace the registration");
    let image = store.load_shard(&s).await?;
    ensure!(image.records.len() == world.records().len(), "an upsert of an existing key added a row");

    let gone = RecordKey::PanelEntry(world.entry.provider.clone(), world.entry.phn);
    let never = RecordKey::Proposal(crate::domain::ProposalId::generate());
    store.commit(&s, epoch, &Batch { deletes: vec![gone.clone(), never], ..Batch::default() }).await?;
    ensure!(store.read(&s, &gone).await?.is_none(), "a deleted record can still be read");
    let image = store.load_shard(&s).await?;
    ensure!(image.records.len() == world.records().len() - 1, "load_shard still has the deleted record");
    ensure!(image.records.iter().all(|r| r.key() != gone), "load_shard returned the deleted record");
    Ok(())
}

/// Shards whose names are prefixes of each other never see each other's rows or events.
pub async fn shards_are_isolated(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let names = ["IHA/1", "IHA/11", "IHA/111", "IHA/1110", "IHA/111-A", "VIHA/111", "IH/A111"];
    let mut worlds = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let s = shard(name);
        let epoch = store.acquire_shard(&s, "node-1").await?;
        let world = World::new(&s, i as u32);
        let mut batch = world.batch(1);
        // A different number of events per shard, so a leak shows in last_seq too.
        batch.events.extend((4..=3 + i as u64).map(|seq| event(&s, seq, world.registered())));
        store.commit(&s, epoch, &batch).await?;
        worlds.push((s, world, 3 + i as u64));
    }
    for (s, world, last) in &worlds {
        let image = store.load_shard(s).await?;
        ensure!(sorted(image.records) == sorted(world.records()), "{s} holds rows of another shard");
        ensure!(image.last_seq == *last, "{s} has last_seq {}, expected {last}", image.last_seq);
        let events = store.events_after(s, 0, 1_000).await?;
        ensure!(events.len() as u64 == *last, "{s} has {} events, expected {last}", events.len());
        ensure!(events.iter().all(|e| &e.shard == s), "{s} returned another shard's events");
        for (other, other_world, _) in &worlds {
            if other != s {
                let key = other_world.registration_key();
                ensure!(store.read(s, &key).await?.is_none(), "{s} can read a row of {other}");
            }
        }
    }
    Ok(())
}

/// `events_after(after, limit)` pages through a shard's events in order.
pub async fn events_after_pages_in_order(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("FHA/201");
    let epoch = store.acquire_shard(&s, "node-1").await?;
    let world = World::new(&s, 0);
    for chunk in [1..=9u64, 10..=10, 11..=25] {
        let events = chunk.map(|seq| event(&s, seq, world.registered())).collect();
        store.commit(&s, epoch, &Batch { events, ..Batch::default() }).await?;
    }
    let seqs = |events: Vec<crate::domain::Event>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    ensure!(seqs(store.events_after(&s, 0, 10).await?) == (1..=10).collect::<Vec<_>>(), "first page wrong");
    ensure!(seqs(store.events_after(&s, 10, 10).await?) == (11..=20).collect::<Vec<_>>(), "second page wrong");
    ensure!(seqs(store.events_after(&s, 20, 10).await?) == (21..=25).collect::<Vec<_>>(), "last page wrong");
    ensure!(seqs(store.events_after(&s, 7, 3).await?) == vec![8, 9, 10], "a page from the middle is wrong");
    ensure!(store.events_after(&s, 25, 10).await?.is_empty(), "events after the last one");
    ensure!(store.events_after(&s, 0, 0).await?.is_empty(), "a page of limit 0 is not empty");
    ensure!(store.events_after(&s, u64::MAX, 10).await?.is_empty(), "events after u64::MAX");
    let all = store.events_after(&s, 0, 1_000).await?;
    ensure!(all.iter().all(|e| e.kind == world.registered() && e.shard == s), "events did not round-trip");
    Ok(())
}

/// `locate` answers the shard of each kind of locator, and follows a move.
pub async fn locate_finds_each_kind(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let (a, b) = (shard("VCHA/161"), shard("VCHA/162"));
    let (ea, eb) = (store.acquire_shard(&a, "n").await?, store.acquire_shard(&b, "n").await?);
    let (wa, wb) = (World::new(&a, 0), World::new(&b, 1));
    store.commit(&a, ea, &wa.batch(1)).await?;
    store.commit(&b, eb, &wb.batch(1)).await?;
    for (s, world) in [(&a, &wa), (&b, &wb)] {
        let locators = world.locators();
        ensure!(locators.len() == 5, "the fixture should cover every locator kind");
        for locator in locators {
            let found = store.locate(&locator).await?;
            ensure!(found.as_ref() == Some(s), "locate({locator:?}) = {found:?}, expected {s}");
        }
    }
    let unknown = Locator::Registration(crate::domain::RegistrationRef::generate());
    ensure!(store.locate(&unknown).await?.is_none(), "locate found an unknown registration");

    // The registration moves from a to b: b's commit repoints its locator.
    let moved = Locator::Registration(wa.registration.reference);
    store.commit(&b, eb, &Batch { locators: vec![moved.clone()], ..Batch::default() }).await?;
    ensure!(store.locate(&moved).await?.as_ref() == Some(&b), "a moved registration is not found in its new shard");
    Ok(())
}

/// `claim_locator`: the first claim of a free locator takes it, durably; any
/// later one, for another shard or at once with others, gets where it points;
/// a commit that writes it again keeps it.
pub async fn a_locator_is_claimed_once(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let shards = [shard("IHA/111"), shard("IHA/112"), shard("IHA/113"), shard("IHA/114")];
    let doc = Locator::Provider(provider_id(7));
    ensure!(store.claim_locator(&doc, &shards[0]).await? == shards[0], "a free locator was not taken");
    ensure!(store.locate(&doc).await?.as_ref() == Some(&shards[0]), "the claim does not read back");
    ensure!(store.claim_locator(&doc, &shards[1]).await? == shards[0], "a second claim took a taken locator");
    ensure!(store.claim_locator(&doc, &shards[0]).await? == shards[0], "claiming again where it points failed");
    ensure!(store.locate(&doc).await?.as_ref() == Some(&shards[0]), "a refused claim moved the locator");

    // Claims racing for one free locator: one wins, and every one is told the winner.
    let clinic = Locator::Clinic(crate::domain::FacilityNumber::parse("0F777")?);
    let answers = futures::future::try_join_all(shards.iter().map(|s| store.claim_locator(&clinic, s))).await?;
    let winner = store.locate(&clinic).await?.ok_or_else(|| anyhow::anyhow!("nobody won the race"))?;
    ensure!(answers.iter().all(|a| *a == winner), "racing claims disagree: {answers:?}, locator at {winner}");

    // The winner's commit writes the same locator: nothing changes.
    let epoch = store.acquire_shard(&winner, "n").await?;
    store.commit(&winner, epoch, &Batch { locators: vec![clinic.clone()], ..Batch::default() }).await?;
    ensure!(store.locate(&clinic).await?.as_ref() == Some(&winner), "the commit moved a claimed locator");
    drop(store);
    let reopened = h.open().await?;
    ensure!(reopened.locate(&doc).await?.as_ref() == Some(&shards[0]), "a claimed locator did not survive reopening");
    Ok(())
}

/// `cas_phn_claim`: insert if absent, conflict shows the current value and changes
/// nothing, replace when expected, release with `None`.
pub async fn phn_claim_compare_and_set(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let (a, b) = (shard("IHA/111"), shard("IHA/112"));
    let p = phn(1);
    let mine = claim(&a, PhnHolder::Registration(crate::domain::RegistrationRef::generate()), 1);
    let theirs = claim(&b, PhnHolder::Panel(provider_id(2)), 2);

    ensure!(store.phn_claim(p).await?.is_none(), "an unclaimed PHN has a claim");
    ensure!(store.cas_phn_claim(p, None, Some(&mine)).await? == CasOutcome::Applied, "insert-if-absent failed");
    ensure!(store.phn_claim(p).await? == Some(mine.clone()), "the inserted claim does not read back");

    let again = store.cas_phn_claim(p, None, Some(&theirs)).await?;
    ensure!(again == CasOutcome::Conflict(Some(mine.clone())), "a second insert returned {again:?}");
    let wrong = store.cas_phn_claim(p, Some(&theirs), None).await?;
    ensure!(
        wrong == CasOutcome::Conflict(Some(mine.clone())),
        "a release with the wrong expectation returned {wrong:?}"
    );
    ensure!(store.phn_claim(p).await? == Some(mine.clone()), "a conflicting CAS changed the claim");

    ensure!(store.cas_phn_claim(p, Some(&mine), Some(&theirs)).await? == CasOutcome::Applied, "replace failed");
    ensure!(store.phn_claim(p).await? == Some(theirs.clone()), "the replacement does not read back");
    ensure!(store.cas_phn_claim(p, Some(&theirs), None).await? == CasOutcome::Applied, "release failed");
    ensure!(store.phn_claim(p).await?.is_none(), "a released PHN is still claimed");
    let stale = store.cas_phn_claim(p, Some(&theirs), Some(&mine)).await?;
    ensure!(stale == CasOutcome::Conflict(None), "a CAS expecting a released claim returned {stale:?}");
    ensure!(store.phn_claim(phn(2)).await?.is_none(), "claims leaked to another PHN");
    Ok(())
}

/// `claim_phns` claims the free PHNs and returns only the ones already held, unchanged.
pub async fn claim_phns_takes_only_free_ones(h: &dyn Harness) -> anyhow::Result<()> {
    let store = h.open().await?;
    let s = shard("NHA/511");
    let held_by = claim(&shard("NHA/512"), PhnHolder::Panel(provider_id(9)), 1);
    let wanted = claim(&s, PhnHolder::Registration(crate::domain::RegistrationRef::generate()), 2);
    let (free1, taken, free2) = (phn(10), phn(11), phn(12));
    ensure!(store.cas_phn_claim(taken, None, Some(&held_by)).await? == CasOutcome::Applied, "setup claim failed");

    let claims = [free1, taken, free2].map(|p| (p, wanted.clone())).to_vec();
    let held = store.claim_phns(claims).await?;
    ensure!(held == vec![(taken, held_by.clone())], "claim_phns returned {held:?}, expected only the held PHN");
    ensure!(store.phn_claim(taken).await? == Some(held_by.clone()), "claim_phns overwrote a held claim");
    for p in [free1, free2] {
        ensure!(store.phn_claim(p).await? == Some(wanted.clone()), "claim_phns did not claim a free PHN ({p})");
    }
    let again = store.claim_phns(vec![(free1, held_by.clone())]).await?;
    ensure!(again == vec![(free1, wanted.clone())], "a second claim_phns took a claimed PHN");
    ensure!(store.claim_phns(Vec::new()).await?.is_empty(), "claiming nothing returned something");
    Ok(())
}

/// Many tasks committing at once (group commit under contention): every commit lands once.
pub async fn concurrent_commits_all_land(h: &dyn Harness) -> anyhow::Result<()> {
    const TASKS: u32 = 50;
    const COMMITS: u64 = 20;
    let store = h.open().await?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let s = shard(&format!("CC/T{t}"));
            let epoch = store.acquire_shard(&s, "node-1").await?;
            let world = World::new(&s, t);
            for seq in 1..=COMMITS {
                let mut registration = world.registration.clone();
                registration.reference = reference(t * 100 + seq as u32);
                let batch = Batch {
                    upserts: vec![Record::Registration(registration)],
                    events: vec![event(&s, seq, world.registered())],
                    ..Batch::default()
                };
                store.commit(&s, epoch, &batch).await?;
            }
            Ok::<_, StoreError>(s)
        }));
    }
    let mut shards = Vec::new();
    for task in tasks {
        shards.push(task.await.context("a committing task panicked")??);
    }
    for s in &shards {
        let image = store.load_shard(s).await?;
        ensure!(image.records.len() as u64 == COMMITS, "{s} has {} rows, expected {COMMITS}", image.records.len());
        ensure!(image.last_seq == COMMITS, "{s} has last_seq {}", image.last_seq);
        let seqs: Vec<u64> = store.events_after(s, 0, 1_000).await?.into_iter().map(|e| e.seq).collect();
        ensure!(seqs == (1..=COMMITS).collect::<Vec<_>>(), "{s} has events {seqs:?}");
    }
    Ok(())
}

/// Everything committed survives dropping the store and opening it again.
pub async fn data_survives_reopen(h: &dyn Harness) -> anyhow::Result<()> {
    let s = shard("FHA/201");
    let world = World::new(&s, 0);
    let p = phn(3);
    let held = claim(&s, PhnHolder::Registration(world.registration.reference), 1);
    let epoch = {
        let store = h.open().await?;
        let epoch = store.acquire_shard(&s, "node-1").await?;
        store.commit(&s, epoch, &world.batch(1)).await?;
        ensure!(store.cas_phn_claim(p, None, Some(&held)).await? == CasOutcome::Applied, "claim failed");
        epoch
    };
    let store = h.open().await.context("reopening the store")?;
    let image = store.load_shard(&s).await?;
    ensure!(sorted(image.records) == sorted(world.records()), "rows were lost across a reopen");
    ensure!(image.last_seq == 3, "events were lost across a reopen (last_seq {})", image.last_seq);
    ensure!(store.events_after(&s, 0, 10).await? == world.events(1), "events changed across a reopen");
    ensure!(store.phn_claim(p).await? == Some(held), "a PHN claim was lost across a reopen");
    for locator in world.locators() {
        ensure!(store.locate(&locator).await?.as_ref() == Some(&s), "a locator was lost across a reopen");
    }
    // The same owner (a restarted node) takes its shard back without waiting for its lease.
    let next = store.acquire_shard(&s, "node-1").await.context("re-acquiring after a reopen")?;
    ensure!(next > epoch, "the epoch went back across a reopen ({epoch:?} then {next:?})");
    match store.commit(&s, epoch, &Batch::default()).await {
        Err(StoreError::StaleEpoch { .. }) => Ok(()),
        other => bail!("the old epoch still commits after a reopen and re-acquire: {other:?}"),
    }
}

/// Records in key order, for comparing sets of rows.
fn sorted(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_by_key(Record::key);
    records
}

/// Realistic domain values for the checks (and for other tests that need them).
pub mod fixtures {
    use std::collections::BTreeSet;

    use chrono::NaiveDate;

    use crate::domain::{
        AgeGroup, Capacity, Clinic, ComplexityMix, DateOfBirth, DelegateId, Endorsement, EndorsementId,
        EndorsementStatus, Event, EventKind, FacilityNumber, Household, Language, Member, Need, PanelEntry,
        PanelSource, PanelTransfer, Party, PersonName, Phn, Proposal, ProposalId, ProposalStatus, Provider, ProviderId,
        ProviderKind, Registration, RegistrationRef, ScoreExplanation, ScorePart, ShardKey, StaffMember, Timestamp,
        TransferKey, TransferStatus,
    };
    use crate::store::{Batch, Locator, PhnClaim, PhnHolder, Record, RecordKey};

    /// 2026-01-01T00:00Z plus `minutes`.
    pub fn at(minutes: i64) -> Timestamp {
        Timestamp(1_767_225_600_000 + minutes * 60_000)
    }

    /// A shard from `HA/COMMUNITY`.
    pub fn shard(name: &str) -> ShardKey {
        ShardKey::parse(name).expect("fixture shard names are written valid")
    }

    /// The `i`-th of a run of distinct valid PHNs.
    pub fn phn(i: u32) -> Phn {
        // Of any 11 consecutive bodies at most a few lack a check digit, so each
        // block of 11 holds one, and blocks never overlap.
        (i * 11..i * 11 + 11).find_map(Phn::with_body).expect("every 11 consecutive PHN bodies include a valid one")
    }

    /// The `i`-th of a run of distinct provider ids.
    pub fn provider_id(i: u32) -> ProviderId {
        ProviderId::parse(&format!("P{i:05}")).expect("P and five digits is a valid provider id")
    }

    /// The `i`-th of a run of distinct registration references.
    pub fn reference(i: u32) -> RegistrationRef {
        RegistrationRef::parse(&format!("{i:012}")).expect("twelve digits are a valid reference")
    }

    fn name(s: &str) -> PersonName {
        PersonName::parse(s).expect("fixture names are letters")
    }

    fn born(year: i32) -> DateOfBirth {
        let date = NaiveDate::from_ymd_opt(year, 5, 17).expect("May 17 exists every year");
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("2026-01-01 exists");
        DateOfBirth::from_date(date, today).expect("fixture birth years are in the past century")
    }

    fn lang(code: &str) -> Language {
        Language::parse(code).expect("fixture language codes are ISO 639")
    }

    /// A claim on a PHN by `holder` in `shard`, made `minutes` into the fixture day.
    pub fn claim(shard: &ShardKey, holder: PhnHolder, minutes: i64) -> PhnClaim {
        PhnClaim { shard: shard.clone(), holder, at: at(minutes) }
    }

    /// An event of `shard` with sequence number `seq`.
    pub fn event(shard: &ShardKey, seq: u64, kind: EventKind) -> Event {
        Event { shard: shard.clone(), seq, at: at(seq as i64), kind }
    }

    /// One of each kind of record of a shard, related as in real use: a two-person
    /// household proposed to a provider at a clinic, who already has a panel entry.
    #[derive(Debug, Clone)]
    pub struct World {
        /// The shard.
        pub shard: ShardKey,
        /// A proposed registration.
        pub registration: Registration,
        /// Its open proposal.
        pub proposal: Proposal,
        /// The provider.
        pub provider: Provider,
        /// The provider's clinic.
        pub clinic: Clinic,
        /// A patient on the provider's panel.
        pub entry: PanelEntry,
        /// The provider's delegation to a staff member.
        pub endorsement: Endorsement,
        /// A transfer of the provider's panel, part way.
        pub transfer: PanelTransfer,
        /// A member of the clinic's staff.
        pub staff: StaffMember,
        /// Another registration's move out of the shard, part way.
        pub moved: crate::domain::RegistrationMove,
    }

    impl World {
        /// A world for `shard`; different `i` give different ids and PHNs.
        pub fn new(shard: &ShardKey, i: u32) -> Self {
            let provider_id = provider_id(1_000 + i);
            let facility = FacilityNumber::parse(&format!("F{:04}", i % 10_000)).expect("F and four digits is valid");
            let members = [(3 * i, "Amrit", 1984), (3 * i + 1, "Noor", 2019)].map(|(n, given, year)| Member {
                phn: phn(n),
                given_name: name(given),
                surname: name("Gill-Ngata"),
                date_of_birth: born(year),
                needs: if year > 2000 { BTreeSet::new() } else { [Need::ChronicComplex].into() },
            });
            let household = Household::new(
                members.to_vec(),
                crate::domain::PostalCode::parse("V1Y 9T1").expect("a valid Kelowna postal code"),
                vec![lang("pa"), lang("en")],
            )
            .expect("two members with distinct PHNs make a valid household");
            let proposal_id = ProposalId::parse(&format!("{i:010}")).expect("ten digits are a valid proposal id");
            let registration = Registration::new(reference(i), shard.clone(), household, at(0))
                .propose(proposal_id, at(2))
                .expect("a waiting registration can be proposed");
            let proposal = Proposal {
                id: proposal_id,
                shard: shard.clone(),
                reference: registration.reference,
                provider: provider_id.clone(),
                household_size: 2,
                complex: true,
                created_at: at(2),
                expires_at: at(2 + 7 * 24 * 60),
                status: ProposalStatus::Open,
                explanation: ScoreExplanation {
                    score: 150,
                    parts: vec![
                        ScorePart { label: "waited 120 days".into(), points: 120 },
                        ScorePart { label: "need: CHRONIC_COMPLEX".into(), points: 30 },
                    ],
                    provider_fit: vec!["speaks pa".into(), "12 places free".into()],
                },
                closed_at: None,
                declined_by: None,
                decline_reason: None,
            };
            let capacity = Capacity::new(
                true,
                12,
                1_500,
                ComplexityMix::new(40).expect("40% is a valid share"),
                vec![lang("en"), lang("pa")],
                [AgeGroup::Child, AgeGroup::Adult].into(),
            )
            .expect("fixture capacity is within bounds");
            let provider = Provider {
                id: provider_id.clone(),
                given_name: name("Harpreet"),
                surname: name("Sandhu"),
                kind: ProviderKind::Physician,
                shard: shard.clone(),
                clinics: vec![facility.clone()],
                capacity,
                reported_panel_size: 1_180,
                created_at: at(-60),
                updated_at: at(1),
            };
            let clinic = Clinic {
                facility,
                name: "Rutland Family Practice".into(),
                address: "155 Rutland Rd N, Kelowna".into(),
                shard: shard.clone(),
                hours: "Mon-Fri 8:30-17:00".into(),
                phone: "250-555-0142".into(),
                medical_director: Some(provider_id.clone()),
                created_at: at(-120),
            };
            let entry = PanelEntry {
                provider: provider_id,
                phn: phn(3 * i + 2),
                given_name: name("Marie-Ève"),
                surname: name("O'Connor"),
                date_of_birth: born(1950),
                attached_at: at(-30),
                // An old kind of entry and the newest ones, so each backend reads them all back.
                source: match i % 3 {
                    0 => PanelSource::Upload,
                    1 => PanelSource::MatchedWithNeeds {
                        proposal: proposal_id,
                        reference: reference(i),
                        facility: Some(clinic.facility.clone()),
                        complex: true,
                    },
                    _ => PanelSource::TransferredAttachment {
                        from: clinic.medical_director.clone().expect("the clinic has a director"),
                        facility: clinic.facility.clone(),
                        complex: None,
                        attached_at: at(-60),
                    },
                },
            };
            let endorsement = Endorsement {
                status: EndorsementStatus::Completed,
                ..Endorsement::new(
                    EndorsementId::from_entropy([i as u8; 10]),
                    shard.clone(),
                    entry.provider.clone(),
                    DelegateId::parse(&format!("moa-{i}")).expect("moa-N is a valid delegate id"),
                    Party::Provider,
                    at(-20),
                )
            };
            let transfer = PanelTransfer {
                key: TransferKey::parse(&format!("move-{i}")).expect("move-N is a valid transfer key"),
                from: entry.provider.clone(),
                to: self::provider_id(2_000 + i),
                to_shard: shard.clone(),
                facility: clinic.facility.clone(),
                status: TransferStatus::Running,
                total: 1_180,
                moved: 500,
                skipped: 2,
                started_at: at(-10),
                updated_at: at(-5),
            };
            let staff = StaffMember {
                facility: clinic.facility.clone(),
                subject: endorsement.delegate.clone(),
                name: "Zoë Tremblay-Nguyen".into(),
                title: "MOA".into(),
                added_at: at(-25),
            };
            let moved = crate::domain::RegistrationMove {
                reference: reference(500_000 + i),
                from: shard.clone(),
                to: ShardKey::parse("VCHA/233").expect("a valid shard key"),
                status: crate::domain::MoveStatus::Running,
                started_at: at(-3),
                updated_at: at(-3),
            };
            World {
                shard: shard.clone(),
                moved,
                registration,
                proposal,
                provider,
                clinic,
                entry,
                endorsement,
                transfer,
                staff,
            }
        }

        /// Every record, as committed by [`World::batch`].
        pub fn records(&self) -> Vec<Record> {
            vec![
                Record::Registration(self.registration.clone()),
                Record::Proposal(self.proposal.clone()),
                Record::Provider(self.provider.clone()),
                Record::Clinic(self.clinic.clone()),
                Record::PanelEntry(self.entry.clone()),
                Record::Endorsement(self.endorsement.clone()),
                Record::Transfer(self.transfer.clone()),
                Record::ClinicStaff(self.staff.clone()),
                Record::Move(self.moved.clone()),
                Record::Reservation(self.proposal.clone()),
                Record::Settlement(crate::domain::Settlement {
                    proposal: self.proposal.clone(),
                    entries: vec![self.entry.clone()],
                }),
                Record::PlaceHolders(crate::domain::PlaceHolders {
                    reference: self.registration.reference,
                    phns: vec![self.registration.household.members[0].phn],
                }),
                Record::PanelIntake(crate::domain::PanelIntake {
                    provider: self.entry.provider.clone(),
                    phn: self.entry.phn,
                    given_name: self.entry.given_name.clone(),
                    surname: self.entry.surname.clone(),
                    date_of_birth: self.entry.date_of_birth,
                    facility: self.clinic.facility.clone(),
                    reference: self.registration.reference,
                    at: self.entry.attached_at,
                }),
                Record::Owner(crate::domain::RegistrationOwner {
                    reference: self.registration.reference,
                    subject: "patient-7f3a".into(),
                }),
            ]
        }

        /// The registration's key.
        pub fn registration_key(&self) -> RecordKey {
            RecordKey::Registration(self.registration.reference)
        }

        /// A locator for each findable record.
        pub fn locators(&self) -> Vec<Locator> {
            vec![
                Locator::Registration(self.registration.reference),
                Locator::Proposal(self.proposal.id),
                Locator::Provider(self.provider.id.clone()),
                Locator::Clinic(self.clinic.facility.clone()),
                Locator::Endorsement(self.endorsement.id),
            ]
        }

        /// The kind of event a registration makes.
        pub fn registered(&self) -> EventKind {
            EventKind::Registered { reference: self.registration.reference, household_size: 2 }
        }

        /// The three events of [`World::batch`], numbered from `first_seq`.
        pub fn events(&self, first_seq: u64) -> Vec<Event> {
            let provider = self.provider.id.clone();
            let reference = self.registration.reference;
            vec![
                event(&self.shard, first_seq, self.registered()),
                event(&self.shard, first_seq + 1, EventKind::ProviderUpdated { provider: provider.clone() }),
                event(
                    &self.shard,
                    first_seq + 2,
                    EventKind::Proposed { proposal: self.proposal.id, reference, provider },
                ),
            ]
        }

        /// Every record, three events from `first_seq`, and every locator.
        pub fn batch(&self, first_seq: u64) -> Batch {
            Batch {
                upserts: self.records(),
                deletes: vec![],
                events: self.events(first_seq),
                locators: self.locators(),
                audit: vec![],
            }
        }
    }
}

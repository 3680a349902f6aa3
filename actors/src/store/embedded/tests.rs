//! The conformance suite against fresh files, plus what only this backend has:
//! the writer thread, its group commit and its bounded queue.

use std::sync::Arc;

use futures::future::BoxFuture;
use tempfile::TempDir;

use super::writer::{self, Request, Slot};
use super::*;
use crate::store::PhnHolder;
use crate::store::conformance::Harness;
use crate::store::conformance::fixtures::{World, claim, phn, shard};
use crate::store::lease::ManualClock;

/// A fresh temporary directory; `open` opens (or reopens) the same file in it.
struct TempHarness {
    dir: TempDir,
    options: EmbeddedOptions,
    /// Shared by every store opened here, so lease expiry needs no sleeping.
    clock: ManualClock,
}

impl TempHarness {
    fn new() -> Self {
        Self::with(EmbeddedOptions::default())
    }

    fn with(options: EmbeddedOptions) -> Self {
        TempHarness { dir: tempfile::tempdir().unwrap(), options, clock: ManualClock::default() }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("attach.redb")
    }

    fn store(&self) -> EmbeddedStore {
        EmbeddedStore::open(&self.path(), self.options.clone()).unwrap()
    }
}

impl Harness for TempHarness {
    fn open(&self) -> BoxFuture<'_, anyhow::Result<Arc<dyn Store>>> {
        Box::pin(async move {
            let store = EmbeddedStore::open_with_clock(&self.path(), self.options.clone(), self.clock.clock())?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    }

    fn pass_time(&self, by: std::time::Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(by);
        Box::pin(async {})
    }
}

crate::store_conformance_tests!(TempHarness::new());

#[tokio::test]
async fn the_file_can_be_reopened_right_after_drop() {
    let h = TempHarness::new();
    let s = shard("IHA/111");
    for round in 1..=3u64 {
        let store = h.store();
        assert_eq!(store.acquire_shard(&s, "node").await.unwrap(), Epoch(round));
        drop(store);
    }
}

#[tokio::test]
async fn a_second_handle_on_an_open_file_is_refused() {
    let h = TempHarness::new();
    let _first = h.store();
    let refused = EmbeddedStore::open(&h.path(), EmbeddedOptions::default()).unwrap_err();
    // Told apart from other failures, so `attach panel import` can say what to do.
    let locked = refused.downcast_ref::<super::StoreLocked>().expect("a locked file is reported as StoreLocked");
    assert_eq!(locked.path, h.path().display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_still_work_after_the_writer_saw_many_requests() {
    // A tiny queue and group size: callers wait on the full channel, the writer
    // groups what it finds, and nothing is lost or answered twice.
    let h = TempHarness::with(EmbeddedOptions { queue_depth: 2, max_group: 4, ..EmbeddedOptions::default() });
    let store = h.store();
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let p = phn(i);
            let c = claim(&shard("IHA/111"), PhnHolder::Panel(crate::store::conformance::fixtures::provider_id(i)), 0);
            store.cas_phn_claim(p, None, Some(&c)).await.unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), CasOutcome::Applied);
    }
    let stats = store.write_stats();
    assert_eq!(stats.requests, 400);
    assert!(stats.transactions <= 400 && stats.transactions >= 100, "{stats:?}");

    let s = shard("IHA/111");
    let epoch = store.acquire_shard(&s, "node").await.unwrap();
    store.commit(&s, epoch, &World::new(&s, 0).batch(1)).await.unwrap();
    assert_eq!(store.load_shard(&s).await.unwrap().last_seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_transactions() {
    let h = TempHarness::new();
    let store = h.store();
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire_shard(&shard(&format!("GC/G{i}")), "node").await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Epoch(1));
    }
    let stats = store.write_stats();
    assert_eq!(stats.requests, 200);
    assert!(stats.transactions < stats.requests, "no group commit happened: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes_on_fresh_files() {
    crate::store::conformance::run_all(|| async { Ok(TempHarness::new()) }).await.unwrap();
}

/// A request and the receiver of its answer.
fn request<T>(make: impl FnOnce(Slot<T>) -> Request) -> (Request, oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    (make(Slot::new(tx)), rx)
}

#[tokio::test]
async fn one_group_checks_each_request_in_order() {
    let h = TempHarness::new();
    let s = shard("IHA/111");
    let name = shard_name(&s);
    let world = World::new(&s, 0);
    let encode = || encode_batch(&s, &world.batch(1)).unwrap();
    std::fs::create_dir_all(h.path().parent().unwrap()).unwrap();
    let db = Database::builder().create(h.path()).unwrap();
    prepare(&db).unwrap();

    let (acquire1, a1) = request(|slot| Request::Acquire { shard: name.clone(), slot });
    let (commit1, c1) = request(|slot| Request::Commit { shard: name.clone(), epoch: Epoch(1), batch: encode(), slot });
    let (acquire2, a2) = request(|slot| Request::Acquire { shard: name.clone(), slot });
    // Stale inside the same group: refused, while the requests around it commit.
    let stale_batch = encode_batch(&s, &World::new(&s, 1).batch(4)).unwrap();
    let (stale, c2) =
        request(|slot| Request::Commit { shard: name.clone(), epoch: Epoch(1), batch: stale_batch, slot });
    let mine = claim(&s, PhnHolder::Panel(world.provider.id.clone()), 0);
    let bytes = keys::encode(&mine, "test").unwrap();
    let (cas1, x1) =
        request(|slot| Request::CasPhn { phn: phn(50).as_u64(), expected: None, new: Some(bytes.clone()), slot });
    let (cas2, x2) =
        request(|slot| Request::CasPhn { phn: phn(50).as_u64(), expected: None, new: Some(bytes.clone()), slot });
    let (claims, cl) = request(|slot| Request::ClaimPhns {
        claims: vec![
            (phn(50), mine.clone(), bytes.clone()),
            (phn(51), mine.clone(), bytes.clone()),
            (phn(51), mine.clone(), bytes.clone()),
        ],
        slot,
    });
    let mut group = vec![acquire1, commit1, acquire2, stale, cas1, cas2, claims];
    let mut journal = super::journal::Journal::open(&h.path().with_extension("journal")).unwrap().0.start().unwrap();
    writer::apply_group(&db, &mut group, &mut journal, &mut Vec::new());
    assert!(group.is_empty());

    assert_eq!(a1.await.unwrap(), Ok(Epoch(1)));
    assert_eq!(c1.await.unwrap(), Ok(()));
    assert_eq!(a2.await.unwrap(), Ok(Epoch(2)));
    assert_eq!(c2.await.unwrap(), Err(StoreError::StaleEpoch { shard: name.clone(), current: 2, held: 1 }));
    assert_eq!(x1.await.unwrap(), Ok(CasOutcome::Applied));
    assert_eq!(x2.await.unwrap(), Ok(CasOutcome::Conflict(Some(mine.clone()))));
    assert_eq!(cl.await.unwrap(), Ok(vec![(phn(50), mine.clone()), (phn(51), mine.clone())]));

    let image = load_shard(&db, &s).unwrap();
    assert_eq!(image.last_seq, 3, "the stale commit's events must not be written");
    assert_eq!(image.records.len(), world.records().len());
}

#[tokio::test]
async fn an_unknown_value_format_reads_as_corrupt() {
    let h = TempHarness::new();
    let s = shard("IHA/111");
    let world = World::new(&s, 0);
    {
        let store = h.store();
        let epoch = store.acquire_shard(&s, "node").await.unwrap();
        store.commit(&s, epoch, &world.batch(1)).await.unwrap();
    }
    {
        let db = Database::builder().create(h.path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let key = record_key(&s, &world.registration_key());
            records.insert(key.as_slice(), [9u8, 1, 2, 3].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = h.store();
    assert!(matches!(store.load_shard(&s).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(store.read(&s, &world.registration_key()).await, Err(StoreError::Corrupt(_))));
}

#[test]
fn a_file_from_a_future_layout_is_refused() {
    let h = TempHarness::new();
    drop(h.store());
    {
        let db = Database::builder().create(h.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("layout", LAYOUT_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    let err = EmbeddedStore::open(&h.path(), EmbeddedOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("layout"), "{err:#}");
}

fn audit_record(id: u64) -> AuditRecord {
    use crate::access::{Operation, Role};
    use crate::audit::{AuditId, Outcome};
    AuditRecord {
        at: crate::domain::Timestamp(1_700_000_000_000 + id as i64),
        id: AuditId(id),
        subject: "c-1".into(),
        role: Role::Coordinator,
        operation: Operation::ReadWaitlist,
        shard: Some(shard("IHA/111")),
        target: None,
        outcome: Outcome::Ok,
    }
}

async fn audit_ids(store: &EmbeddedStore) -> Vec<u64> {
    let page = store.audit_page(&AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    page.iter().map(|r| r.id.0).collect()
}

#[tokio::test]
async fn audit_records_alone_are_journaled_seen_at_once_and_the_journal_empties_on_a_durable_commit() {
    let h = TempHarness::new();
    let journal = journal_path(&h.path());
    // Records the journal file holds, as a restart would read them.
    let journal_len = || super::journal::Journal::open(&journal).unwrap().1.len();
    let store = h.store();
    // What redb itself holds, read without asking the writer to write held records first.
    let in_redb = |store: &EmbeddedStore| {
        let page = super::audit_page(&store.inner.db, &AuditQuery { limit: 100, ..Default::default() }).unwrap();
        page.len()
    };
    store.append_audit(&[audit_record(1), audit_record(2)]).await.unwrap();
    store.append_audit(&[audit_record(3)]).await.unwrap();
    assert!(journal_len() > 0, "the records are in the journal");
    assert_eq!(in_redb(&store), 0, "and held, with no redb transaction");
    assert_eq!(audit_ids(&store).await, [1, 2, 3], "visible as soon as acknowledged: the read writes them first");
    assert_eq!((journal_len(), in_redb(&store)), (0, 3), "durably, so the journal is emptied");

    // Any other write is committed durably, with the records held before it.
    store.append_audit(&[audit_record(4)]).await.unwrap();
    assert_eq!(in_redb(&store), 3);
    store.acquire_shard(&shard("IHA/111"), "node-a").await.unwrap();
    assert_eq!((journal_len(), in_redb(&store)), (0, 4), "emptied after a durable commit");
    assert_eq!(audit_ids(&store).await, [1, 2, 3, 4]);
    drop(store);
    assert_eq!(audit_ids(&h.store()).await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn records_held_when_the_store_closes_are_written_into_it_and_the_journal_left_empty() {
    let h = TempHarness::new();
    let store = h.store();
    store.append_audit(&[audit_record(5), audit_record(6)]).await.unwrap();
    drop(store);
    // A clean stop writes them into the store: a build that cannot read this
    // journal's format (before session 15) finds them there.
    assert!(super::journal::Journal::open(&journal_path(&h.path())).unwrap().1.is_empty());
    assert_eq!(audit_ids(&h.store()).await, [5, 6]);
}

#[tokio::test]
async fn records_left_in_the_journal_by_a_crash_are_restored_on_open() {
    let h = TempHarness::new();
    drop(h.store());
    // What a crash after the journal's fdatasync, before any durable commit, leaves:
    // the records in the journal only.
    let rows: Vec<_> = [audit_record(7), audit_record(8)]
        .iter()
        .map(|r| (keys::audit_key(r.cursor()), keys::encode(r, "audit record").unwrap()))
        .collect();
    let (recovered, held, _) = super::journal::Journal::open(&journal_path(&h.path())).unwrap();
    assert!(held.is_empty());
    let mut j = recovered.start().unwrap();
    j.append(rows.iter()).unwrap();
    drop(j);

    let store = h.store();
    assert_eq!(audit_ids(&store).await, [7, 8]);
    assert!(super::journal::Journal::open(&journal_path(&h.path())).unwrap().1.is_empty(), "and the journal emptied");
    drop(store);
    assert_eq!(audit_ids(&h.store()).await, [7, 8], "restored durably, not only in memory");
}

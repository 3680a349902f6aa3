//! The embedded store: one crash-safe redb file under the data directory.
//!
//! # Layout
//!
//! Seven tables (see `keys`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `records` | `shard \0 kind id` | versioned `Record` |
//! | `events` | `shard \0 seq` (big-endian) | versioned `Event` |
//! | `epochs` | `shard` | `u64` |
//! | `locators` | `kind id` | versioned `ShardKey` |
//! | `phn_claims` | PHN as `u64` | versioned `PhnClaim` |
//! | `audit` | `time id` (order-preserving) | versioned `AuditRecord` |
//! | `meta` | `"layout"` | layout version |
//!
//! Keys are ordered bytes so that a shard is a contiguous range: `load_shard` is
//! one range scan of `[shard \0, shard \1)`, and shard names never contain 0x00,
//! so `IHA/111`'s range never reaches into `IHA/1110`. Events sort by sequence
//! within their shard, so `events_after` is a range scan from `seq + 1` and the
//! last event is the end of the range. Values are postcard behind a one-byte
//! format version, so a later format can be told apart (and migrated) rather
//! than misread.
//!
//! # Why this is crash safe
//!
//! redb commits copy-on-write: a transaction writes new pages and then flips
//! the root in one durable header update. A crash before the flip leaves the
//! previous commit intact; after it, the whole new one. A shard's batch is one
//! transaction, so it is durable all together or not at all, and every write
//! returns only after its commit ([`redb::Durability::Immediate`]) finished.
//!
//! The one exception is a group made only of audit records (every audited read
//! writes one): it is made durable by an append to the audit journal beside the
//! file (see `journal.rs`) and held in memory, with no redb transaction. The
//! next transaction of any other group writes the held records first and
//! commits them durably; a read of the audit log asks for one first (when
//! any are held); and on open the journal's records are written back.
//!
//! # Why one writer thread
//!
//! redb allows one write transaction at a time, and each commit costs an fsync.
//! Writes therefore go to one dedicated thread through a bounded channel (a
//! full channel makes callers wait, never grows memory); the thread applies
//! everything queued, up to `max_group` requests, in one transaction with one
//! fsync (group commit). Under load the fsync is shared by many shards; idle,
//! a write costs one fsync as it would anyway. Reads use their own read
//! transactions (a consistent snapshot) and never wait for the writer.
//!
//! # Leases
//!
//! Leases live in memory ([`LeaseBook`]), epochs on disk. Only one process can
//! open the file, so a lease can only be contended within that process; a
//! reopened file starts with no leases because whoever held them has gone.
//! Epochs survive, so an old writer's epoch stays fenced across a reopen.
//!
//! Dropping the last handle closes the channel; the writer finishes what is
//! queued and the drop waits for it, so the file can be reopened at once.

mod journal;
mod keys;
#[cfg(test)]
mod tests;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use self::keys::{
    AUDIT, EPOCHS, EVENTS, LAYOUT_VERSION, LOCATORS, META, PHN_CLAIMS, RECORDS, audit_key, decode, encode, event_key,
    locator_key, phn_key, record_key, shard_name, shard_range,
};
use self::writer::{Counters, EncodedBatch, Request, Slot, store_error};
use super::lease::{Clock, CommitGuard, LeaseBook, expired, system_clock};
use super::{
    AuditQuery, AuditRecord, Batch, CasOutcome, DEFAULT_LEASE, Epoch, Locator, PhnClaim, Record, RecordKey, ShardImage,
    Store, StoreError, WriteStats,
};
use crate::domain::{Event, Phn, Seq, ShardKey};

/// How the embedded store uses memory and batches writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// redb's page cache, in bytes. Bounded because the whole province demo must
    /// stay under 1 GiB resident (redb's own default is 1 GiB).
    pub cache_bytes: usize,
    /// Write requests that may wait for the writer before callers are held back.
    pub queue_depth: usize,
    /// The most write requests committed in one transaction.
    pub max_group: usize,
    /// How long a shard lease lasts unless renewed.
    pub lease: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { cache_bytes: 64 * 1024 * 1024, queue_depth: 1024, max_group: 256, lease: DEFAULT_LEASE }
    }
}

/// The store file is open in another process (or another handle of this one):
/// redb holds one lock per file. [`EmbeddedStore::open`] returns it inside its
/// `anyhow::Error`, so callers can tell it apart (`err.downcast_ref`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store file {path} is in use by another process (a running `attach serve`?)")]
pub struct StoreLocked {
    /// The file.
    pub path: String,
}

/// The redb-backed [`Store`]. Cheap to clone: clones share the file and the writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// `None` only while dropping, to close the channel before joining the writer.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Who holds which shard: in memory, see the module docs.
    leases: LeaseBook,
    lease: Duration,
    /// Why the database refuses writes for good, once it does.
    broken: tokio::sync::watch::Receiver<Option<String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has answered what is
        // queued; waiting for it releases the file lock before the drop returns.
        self.requests.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the embedded store's writer thread had panicked");
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("stats", &self.write_stats()).finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the database file at `path`, creating it (and its directory) if
    /// missing, and starts the writer thread. Blocks while redb opens the file
    /// (and repairs it after a crash), so call it at start-up.
    pub fn open(path: &Path, options: EmbeddedOptions) -> anyhow::Result<Self> {
        Self::open_with_clock(path, options, system_clock())
    }

    /// [`EmbeddedStore::open`] with the clock leases are timed by (tests move it by hand).
    pub fn open_with_clock(path: &Path, options: EmbeddedOptions, clock: Clock) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        let db = match Database::builder().set_cache_size(options.cache_bytes).create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreLocked { path: path.display().to_string() }.into());
            }
            Err(e) => return Err(e).with_context(|| format!("opening the store file {}", path.display())),
        };
        prepare(&db).with_context(|| format!("preparing the store file {}", path.display()))?;
        let journal = open_journal(&db, &journal_path(path))?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let (broken_tx, broken) = tokio::sync::watch::channel(None);
        let writer = std::thread::Builder::new()
            .name("attach-store-writer".into())
            .spawn({
                let db = Arc::clone(&db);
                let counters = Arc::clone(&counters);
                move || writer::run(db, rx, options.max_group, counters, journal, broken_tx)
            })
            .context("starting the store's writer thread")?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                requests: Some(tx),
                writer: Some(writer),
                counters,
                leases: LeaseBook::new(clock),
                lease: options.lease,
                broken,
            }),
        })
    }

    /// What the writer has done so far.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.inner.counters.transactions.load(Ordering::Relaxed),
            requests: self.inner.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Sends a write to the writer thread and waits until it is durable (or refused).
    async fn submit<T>(&self, request: impl FnOnce(Slot<T>) -> Request) -> Result<T, StoreError> {
        let stopped = || StoreError::Unavailable("the store's writer has stopped".into());
        let sender = self.inner.requests.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        sender.send(request(Slot::new(reply))).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs a read on the blocking pool: scans may touch many pages on disk.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.inner.db);
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store read task failed: {e}")))?
    }

    /// The stored epoch of a shard (0 if never acquired).
    fn current_epoch(&self, shard: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read().map_err(store_error)?;
        let epochs = txn.open_table(EPOCHS).map_err(store_error)?;
        Ok(epochs.get(shard).map_err(store_error)?.map(|g| g.value()).unwrap_or(0))
    }

    /// One value of a table with byte keys, decoded.
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(table).map_err(store_error)?;
        let value = table.get(key).map_err(store_error)?;
        value.map(|v| decode(v.value(), what)).transpose()
    }
}

/// The audit journal's file: beside the store file, named after it.
fn journal_path(store: &Path) -> std::path::PathBuf {
    store.with_extension("audit-journal")
}

/// Opens the audit journal, writes whatever it still holds into the store
/// durably (records of reads answered before a crash), and empties it.
fn open_journal(db: &Database, path: &Path) -> anyhow::Result<journal::Journal> {
    let (recovered, pending, damage) =
        journal::Journal::open(path).with_context(|| format!("opening the audit journal {}", path.display()))?;
    // Said loudly: audit records of reads that were answered may be gone.
    if let Some(d) = damage {
        let copy = journal::damaged_copy(path);
        match d.lost {
            Some(lost) => tracing::error!(
                lost,
                recovered_after = d.recovered,
                kept_as = %copy.display(),
                "the audit journal could not be read in places: records between frames that could be read \
                 are lost (the frames after them were restored); this is damage on disk, or a power failure \
                 that cut off the last write out of order (whose callers were never answered)"
            ),
            None => tracing::error!(
                kept_as = %copy.display(),
                "the audit journal holds no readable records and is not empty: it is damaged, and the audit \
                 records it held are lost"
            ),
        }
    }
    if !pending.is_empty() {
        let txn = db.begin_write()?;
        {
            writer::insert_rows(&mut txn.open_table(keys::AUDIT)?, &pending)?;
        }
        txn.commit()?;
        tracing::info!(records = pending.len(), "audit records restored from the journal");
    }
    recovered.start().with_context(|| format!("emptying the audit journal {}", path.display()))
}

/// Creates every table (a read transaction cannot open a missing one) and checks
/// the key layout version, so a file from a future layout is refused, not misread.
fn prepare(db: &Database) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        txn.open_table(RECORDS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(EPOCHS)?;
        txn.open_table(LOCATORS)?;
        txn.open_table(PHN_CLAIMS)?;
        txn.open_table(AUDIT)?;
        let mut meta = txn.open_table(META)?;
        let layout = meta.get("layout")?.map(|g| g.value());
        match layout {
            None => {
                meta.insert("layout", LAYOUT_VERSION)?;
            }
            Some(LAYOUT_VERSION) => {}
            Some(other) => anyhow::bail!("the file has key layout {other}; this build reads layout {LAYOUT_VERSION}"),
        }
    }
    txn.commit()?;
    Ok(())
}

fn load_shard(db: &Database, shard: &ShardKey) -> Result<ShardImage, StoreError> {
    let (start, end) = shard_range(shard);
    let txn = db.begin_read().map_err(store_error)?;
    let records = txn.open_table(RECORDS).map_err(store_error)?;
    let mut image = ShardImage::default();
    for row in records.range::<&[u8]>(start.as_slice()..end.as_slice()).map_err(store_error)? {
        let (_, value) = row.map_err(store_error)?;
        image.records.push(decode(value.value(), "record")?);
    }
    // Same snapshot: the last sequence number matches the records read.
    let events = txn.open_table(EVENTS).map_err(store_error)?;
    if let Some(last) = events.range::<&[u8]>(start.as_slice()..end.as_slice()).map_err(store_error)?.next_back() {
        let (key, _) = last.map_err(store_error)?;
        image.last_seq = seq_of(key.value(), start.len())?;
    }
    Ok(image)
}

/// The sequence number at the end of an event key.
fn seq_of(key: &[u8], prefix_len: usize) -> Result<Seq, StoreError> {
    key.get(prefix_len..)
        .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("an event key has the wrong length".into()))
}

fn events_after(db: &Database, shard: &ShardKey, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
    let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
    let start = event_key(shard, first);
    let (_, end) = shard_range(shard);
    let txn = db.begin_read().map_err(store_error)?;
    let events = txn.open_table(EVENTS).map_err(store_error)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    for row in events.range::<&[u8]>(start.as_slice()..end.as_slice()).map_err(store_error)?.take(limit) {
        let (_, value) = row.map_err(store_error)?;
        out.push(decode(value.value(), "event")?);
    }
    Ok(out)
}

fn audit_page(db: &Database, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let start = audit_key(query.start());
    let txn = db.begin_read().map_err(store_error)?;
    let table = txn.open_table(AUDIT).map_err(store_error)?;
    let mut out = Vec::with_capacity(query.limit.min(1024));
    for row in table.range::<&[u8]>(start.as_slice()..).map_err(store_error)? {
        if out.len() >= query.limit {
            break;
        }
        let (_, value) = row.map_err(store_error)?;
        let record: AuditRecord = decode(value.value(), "audit record")?;
        if !query.is_before_end(record.at) {
            break;
        }
        if query.is_after_start(record.cursor()) && record.matches(query) {
            out.push(record);
        }
    }
    Ok(out)
}

fn encode_batch(shard: &ShardKey, batch: &Batch) -> Result<EncodedBatch, StoreError> {
    let home = encode(shard, "locator")?;
    Ok(EncodedBatch {
        locators: batch.locators.iter().map(|l| (locator_key(l), home.clone())).collect(),
        upserts: batch
            .upserts
            .iter()
            .map(|r| Ok((record_key(shard, &r.key()), encode(r, "record")?)))
            .collect::<Result<_, StoreError>>()?,
        deletes: batch.deletes.iter().map(|k| record_key(shard, k)).collect(),
        events: batch
            .events
            .iter()
            .map(|e| Ok((event_key(shard, e.seq), encode(e, "event")?)))
            .collect::<Result<_, StoreError>>()?,
        audit: audit_rows(&batch.audit)?,
    })
}

/// Audit records as rows of the audit table.
fn audit_rows(records: &[AuditRecord]) -> Result<Vec<journal::Row>, StoreError> {
    records.iter().map(|r| Ok((audit_key(r.cursor()), encode(r, "audit record")?))).collect()
}

#[async_trait]
impl Store for EmbeddedStore {
    fn write_stats(&self) -> Option<WriteStats> {
        Some(EmbeddedStore::write_stats(self))
    }

    fn lease(&self) -> Duration {
        self.inner.lease
    }

    async fn broken(&self) -> String {
        let mut broken = self.inner.broken.clone();
        let why = broken.wait_for(Option::is_some).await.map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            // The writer has stopped (the store is being dropped) without breaking.
            Err(_) => std::future::pending().await,
        }
    }

    async fn acquire_shard(&self, shard: &ShardKey, owner: &str) -> Result<Epoch, StoreError> {
        let leases = &self.inner.leases;
        leases.reserve(shard, owner, leases.now() + self.inner.lease)?;
        let name = shard_name(shard);
        match self.submit(|slot| Request::Acquire { shard: name, slot }).await {
            Ok(epoch) => {
                leases.grant(shard, owner, epoch, leases.now() + self.inner.lease);
                tracing::info!(%shard, owner, epoch = epoch.0, "shard acquired");
                Ok(epoch)
            }
            Err(e) => {
                leases.cancel(shard, owner);
                Err(e)
            }
        }
    }

    async fn renew_lease(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        let leases = &self.inner.leases;
        // Every acquisition goes through this book, so an entry with our epoch
        // means nobody took the shard since, even if the lease ran out meanwhile.
        if leases.extend(shard, owner, epoch, leases.now() + self.inner.lease) {
            return Ok(());
        }
        let name = shard_name(shard);
        let current = self.current_epoch(&name)?;
        Err(StoreError::StaleEpoch { shard: name, current, held: epoch.0 })
    }

    async fn held_shards(&self) -> Result<Vec<ShardKey>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(store_error)?;
        let epochs = txn.open_table(EPOCHS).map_err(store_error)?;
        let mut held = Vec::new();
        for row in epochs.iter().map_err(store_error)? {
            let (name, _) = row.map_err(store_error)?;
            let name = name.value();
            held.push(ShardKey::parse(name).map_err(|e| StoreError::Corrupt(format!("shard {name}: {e}")))?);
        }
        Ok(held)
    }

    async fn shard_owner(&self, shard: &ShardKey) -> Result<Option<String>, StoreError> {
        Ok(self.inner.leases.owner(shard))
    }

    async fn release_shard(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        if self.inner.leases.release(shard, owner, epoch) {
            tracing::info!(%shard, owner, epoch = epoch.0, "shard released");
        }
        Ok(())
    }

    async fn load_shard(&self, shard: &ShardKey) -> Result<ShardImage, StoreError> {
        let shard = shard.clone();
        self.read_blocking(move |db| load_shard(db, &shard)).await
    }

    #[tracing::instrument(name = "store.commit", skip_all, fields(db.system = "redb", shard = %shard))]
    async fn commit(&self, shard: &ShardKey, epoch: Epoch, batch: &Batch) -> Result<(), StoreError> {
        let name = shard_name(shard);
        match self.inner.leases.guard(shard, epoch) {
            // The writer still checks the epoch, in order with every other write.
            CommitGuard::Live { .. } => {}
            CommitGuard::Expired => return Err(expired(shard)),
            CommitGuard::Unknown => {
                let current = self.current_epoch(&name)?;
                return Err(if current != 0 && current == epoch.0 {
                    // The epoch is current but this handle holds no lease for it (reopened).
                    expired(shard)
                } else {
                    StoreError::StaleEpoch { shard: name, current, held: epoch.0 }
                });
            }
        }
        if batch.is_empty() {
            // Nothing to make durable: answer the fencing question without an fsync.
            let current = self.current_epoch(&name)?;
            return if current != 0 && current == epoch.0 {
                Ok(())
            } else {
                Err(StoreError::StaleEpoch { shard: name, current, held: epoch.0 })
            };
        }
        let batch = encode_batch(shard, batch)?;
        self.submit(|slot| Request::Commit { shard: name, epoch, batch, slot }).await
    }

    async fn events_after(&self, shard: &ShardKey, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let shard = shard.clone();
        self.read_blocking(move |db| events_after(db, &shard, after, limit)).await
    }

    async fn read(&self, shard: &ShardKey, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.get(RECORDS, &record_key(shard, key), "record")
    }

    async fn locate(&self, what: &Locator) -> Result<Option<ShardKey>, StoreError> {
        self.get(LOCATORS, &locator_key(what), "locator")
    }

    async fn claim_locator(&self, what: &Locator, shard: &ShardKey) -> Result<ShardKey, StoreError> {
        let (key, home) = (locator_key(what), encode(shard, "locator")?);
        let now = self.submit(|slot| Request::ClaimLocator { key, home, slot }).await?;
        decode(&now, "locator")
    }

    async fn phn_claim(&self, phn: Phn) -> Result<Option<PhnClaim>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(store_error)?;
        let claims = txn.open_table(PHN_CLAIMS).map_err(store_error)?;
        let value = claims.get(phn_key(phn)).map_err(store_error)?;
        value.map(|v| decode(v.value(), "PHN claim")).transpose()
    }

    async fn cas_phn_claim(
        &self,
        phn: Phn,
        expected: Option<&PhnClaim>,
        new: Option<&PhnClaim>,
    ) -> Result<CasOutcome<PhnClaim>, StoreError> {
        let new = new.map(|c| encode(c, "PHN claim")).transpose()?;
        let expected = expected.cloned();
        self.submit(|slot| Request::CasPhn { phn: phn_key(phn), expected, new, slot }).await
    }

    async fn claim_phns(&self, claims: Vec<(Phn, PhnClaim)>) -> Result<Vec<(Phn, PhnClaim)>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let claims = claims
            .into_iter()
            .map(|(phn, claim)| {
                let bytes = encode(&claim, "PHN claim")?;
                Ok((phn, claim, bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.submit(|slot| Request::ClaimPhns { claims, slot }).await
    }

    #[tracing::instrument(name = "store.append_audit", skip_all, fields(db.system = "redb", records = records.len()))]
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = audit_rows(records)?;
        self.submit(|slot| Request::Audit { rows, slot }).await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        // Records held only in the journal are written into the store first.
        self.submit(|slot| Request::FlushAudit { slot }).await?;
        let query = query.clone();
        self.read_blocking(move |db| audit_page(db, &query)).await
    }
}

//! The single writer thread and its group commit.
//!
//! Callers encode their writes, send a [`Request`] down a bounded channel and wait
//! on a oneshot. The writer takes one request, drains whatever else is queued (up
//! to a limit), applies the group in arrival order inside one write transaction,
//! commits once (one fsync), and only then answers everyone. Each request's own
//! check (epoch, expected claim) runs in order inside the transaction, so it sees
//! the writes of the requests ahead of it; a request that is refused writes
//! nothing, while the rest of its group still commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Key, ReadableTable, Table, TableDefinition, Value, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::journal::Journal;
use super::keys::{AUDIT, EPOCHS, EVENTS, LOCATORS, PHN_CLAIMS, RECORDS, decode};
use crate::domain::Phn;
use crate::store::{CasOutcome, Epoch, PhnClaim, StoreError};

/// Where one request's answer goes, and the answer once the request was applied.
pub(super) struct Slot<T> {
    reply: oneshot::Sender<Result<T, StoreError>>,
    outcome: Option<Result<T, StoreError>>,
}

impl<T> Slot<T> {
    pub(super) fn new(reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Slot { reply, outcome: None }
    }

    fn set(&mut self, outcome: Result<T, StoreError>) {
        self.outcome = Some(outcome);
    }

    /// Answers the caller: its own outcome if the group committed, else the group's error.
    fn finish(self, group_failed: Option<&StoreError>) {
        let answer = match (group_failed, self.outcome) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::Unavailable("the store's writer did not reach this request".into())),
        };
        // A caller that stopped waiting (its future was dropped) cannot be told;
        // what it asked for has been committed or not like any other request.
        let _ = self.reply.send(answer);
    }
}

/// A shard's commit, already encoded by the caller (keys and versioned values).
#[derive(Default)]
pub(super) struct EncodedBatch {
    pub(super) locators: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) upserts: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) deletes: Vec<Vec<u8>>,
    pub(super) events: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) audit: Vec<super::journal::Row>,
}

/// One write, as the writer thread receives it.
pub(super) enum Request {
    /// Bump the shard's epoch and return it.
    Acquire { shard: String, slot: Slot<Epoch> },
    /// Write the batch if the epoch is the shard's.
    Commit { shard: String, epoch: Epoch, batch: EncodedBatch, slot: Slot<()> },
    /// Compare-and-set one PHN claim; `new` is the encoded claim, `None` releases.
    CasPhn { phn: u64, expected: Option<PhnClaim>, new: Option<Vec<u8>>, slot: Slot<CasOutcome<PhnClaim>> },
    /// Claim every free PHN; answer the ones already held.
    ClaimPhns { claims: Vec<(Phn, PhnClaim, Vec<u8>)>, slot: Slot<Vec<(Phn, PhnClaim)>> },
    /// Point a locator (key) at a shard (encoded) unless it points somewhere;
    /// answer where it points then (encoded).
    ClaimLocator { key: Vec<u8>, home: Vec<u8>, slot: Slot<Vec<u8>> },
    /// Append encoded audit records (key, value).
    Audit { rows: Vec<super::journal::Row>, slot: Slot<()> },
    /// Write the audit records held only in the journal into redb, so a read
    /// of the audit table sees them.
    FlushAudit { slot: Slot<()> },
}

impl Request {
    fn finish(self, group_failed: Option<&StoreError>) {
        match self {
            Request::Acquire { slot, .. } => slot.finish(group_failed),
            Request::Commit { slot, .. } => slot.finish(group_failed),
            Request::CasPhn { slot, .. } => slot.finish(group_failed),
            Request::ClaimPhns { slot, .. } => slot.finish(group_failed),
            Request::ClaimLocator { slot, .. } => slot.finish(group_failed),
            Request::Audit { slot, .. } => slot.finish(group_failed),
            Request::FlushAudit { slot } => slot.finish(group_failed),
        }
    }
}

/// Counters of the writer's work, for metrics and tests.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) transactions: AtomicU64,
    pub(super) requests: AtomicU64,
}

/// Audit records the journal may hold before a group is committed durably
/// instead, which lets the journal be emptied (and bounds what redb keeps
/// from non-durable commits).
const JOURNAL_RECORDS: usize = 4096;

/// The writer thread's loop: ends when every sender is gone (the store was
/// dropped). Says on `broken` why, once the database refuses writes for good.
pub(super) fn run(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Request>,
    max_group: usize,
    counters: Arc<Counters>,
    mut journal: Journal,
    broken: tokio::sync::watch::Sender<Option<String>>,
) {
    let max_group = max_group.max(1);
    let mut group = Vec::with_capacity(max_group);
    let mut held = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(group.len() as u64, Ordering::Relaxed);
        if let Some(why) = apply_group(&db, &mut group, &mut journal, &mut held)
            && broken.borrow().is_none()
        {
            tracing::error!(error = %why, "the store cannot write again until the process restarts");
            broken.send_replace(Some(why));
        }
    }
    // A clean stop leaves the journal empty: the records it holds go into the
    // store in one last durable transaction. The next start would restore them
    // anyway, but a build before session 15 cannot read this journal's format.
    if !held.is_empty() {
        let (reply, _) = oneshot::channel();
        let _ = apply_group(&db, &mut vec![Request::FlushAudit { slot: Slot::new(reply) }], &mut journal, &mut held);
    }
}

/// Applies `group` and answers every request. Leaves `group` empty. Answers
/// why if the transaction failed in a way that leaves the database refusing
/// every later write until it is opened again (an I/O error).
///
/// Durability comes one of two ways, and only then is anyone answered:
/// - a group of audit records alone is appended to the journal (one
///   `fdatasync`), while the journal has room, and `held` keeps them: no redb
///   transaction at all (a redb commit, even without durability, cost more
///   than the append);
/// - any other group is one transaction, which writes the held records first
///   and commits with redb's `Durability::Immediate`; the journal is then emptied.
pub(super) fn apply_group(
    db: &Database,
    group: &mut Vec<Request>,
    journal: &mut Journal,
    held: &mut Vec<super::journal::Row>,
) -> Option<String> {
    // Audit records the journal took, or a request to write held records when
    // none are held: answered without a redb transaction.
    let no_transaction = journal_if_audit_only(group, journal)
        || (held.is_empty() && group.iter().all(|r| matches!(r, Request::FlushAudit { .. })));
    if no_transaction {
        for request in group.drain(..) {
            match request {
                Request::Audit { rows, mut slot } => {
                    held.extend(rows);
                    slot.set(Ok(()));
                    slot.finish(None);
                }
                Request::FlushAudit { mut slot } => {
                    slot.set(Ok(()));
                    slot.finish(None);
                }
                // Not in such a group; answered as unreached, like any request no transaction applied.
                other => other.finish(None),
            }
        }
        return None;
    }
    let result = db.begin_write().map_err(redb::Error::from).and_then(|txn| {
        let mut tables = Tables::new(&txn);
        insert_audit(&mut tables, held)?;
        apply_all(&mut tables, group)?;
        drop(tables);
        txn.commit().map_err(redb::Error::from)
    });
    let broken = match &result {
        Err(e @ (redb::Error::Io(_) | redb::Error::PreviousIo)) => Some(e.to_string()),
        _ => None,
    };
    let failed = result.err().map(store_error);
    if let Some(e) = &failed {
        // Dropping the transaction aborted it: none of the group was written,
        // and the held records are still held (and in the journal).
        tracing::error!(error = %e, requests = group.len(), "embedded store write transaction failed");
    } else {
        held.clear();
        if let Err(e) = journal.clear() {
            // Harmless: what it holds is already in the store and is written again on open.
            tracing::warn!(error = %e, "could not empty the audit journal");
        }
    }
    for request in group.drain(..) {
        request.finish(failed.as_ref());
    }
    broken
}

/// Appends the group's records to the journal if the group is audit records
/// only and the journal can take them; whether it did.
fn journal_if_audit_only(group: &[Request], journal: &mut Journal) -> bool {
    let mut rows = Vec::new();
    for request in group {
        match request {
            Request::Audit { rows: r, .. } => rows.extend(r.iter()),
            _ => return false,
        }
    }
    if rows.is_empty() || !journal.is_usable() || journal.records() + rows.len() > JOURNAL_RECORDS {
        return false;
    }
    match journal.append(rows.into_iter()) {
        Ok(()) => true,
        Err(e) => {
            // Not fatal: this group is committed durably instead.
            tracing::warn!(error = %e, "could not append to the audit journal");
            false
        }
    }
}

/// The tables of one write transaction, each opened the first time a request of
/// the group needs it: a group of audit records (every read writes one) opens
/// one table, not six, which made each transaction about a third cheaper.
struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    records: Option<Table<'txn, &'static [u8], &'static [u8]>>,
    events: Option<Table<'txn, &'static [u8], &'static [u8]>>,
    epochs: Option<Table<'txn, &'static str, u64>>,
    locators: Option<Table<'txn, &'static [u8], &'static [u8]>>,
    claims: Option<Table<'txn, u64, &'static [u8]>>,
    audit: Option<Table<'txn, &'static [u8], &'static [u8]>>,
}

/// The table in `slot`, opening it in `txn` first if this group has not yet.
fn opened<'s, 'txn, K: Key + 'static, V: Value + 'static>(
    txn: &'txn WriteTransaction,
    slot: &'s mut Option<Table<'txn, K, V>>,
    definition: TableDefinition<'_, K, V>,
) -> Result<&'s mut Table<'txn, K, V>, redb::Error> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition)?);
    }
    Ok(slot.as_mut().expect("opened just above"))
}

impl<'txn> Tables<'txn> {
    fn new(txn: &'txn WriteTransaction) -> Self {
        Tables { txn, records: None, events: None, epochs: None, locators: None, claims: None, audit: None }
    }

    fn records(&mut self) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, redb::Error> {
        opened(self.txn, &mut self.records, RECORDS)
    }

    fn events(&mut self) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, redb::Error> {
        opened(self.txn, &mut self.events, EVENTS)
    }

    fn epochs(&mut self) -> Result<&mut Table<'txn, &'static str, u64>, redb::Error> {
        opened(self.txn, &mut self.epochs, EPOCHS)
    }

    fn locators(&mut self) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, redb::Error> {
        opened(self.txn, &mut self.locators, LOCATORS)
    }

    fn claims(&mut self) -> Result<&mut Table<'txn, u64, &'static [u8]>, redb::Error> {
        opened(self.txn, &mut self.claims, PHN_CLAIMS)
    }

    fn audit(&mut self) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, redb::Error> {
        opened(self.txn, &mut self.audit, AUDIT)
    }
}

fn apply_all(t: &mut Tables<'_>, group: &mut [Request]) -> Result<(), redb::Error> {
    for request in group.iter_mut() {
        match request {
            Request::Acquire { shard, slot } => acquire(t, shard, slot)?,
            Request::Commit { shard, epoch, batch, slot } => commit(t, shard, *epoch, batch, slot)?,
            Request::CasPhn { phn, expected, new, slot } => cas(t, *phn, expected.as_ref(), new.as_deref(), slot)?,
            Request::ClaimPhns { claims, slot } => claim(t, claims, slot)?,
            Request::ClaimLocator { key, home, slot } => {
                let existing = t.locators()?.get(key.as_slice())?.map(|v| v.value().to_vec());
                match existing {
                    Some(now) => slot.set(Ok(now)),
                    None => {
                        t.locators()?.insert(key.as_slice(), home.as_slice())?;
                        slot.set(Ok(home.clone()));
                    }
                }
            }
            Request::Audit { rows, slot } => {
                insert_audit(t, rows)?;
                slot.set(Ok(()));
            }
            // The held records were written at the start of the transaction.
            Request::FlushAudit { slot } => slot.set(Ok(())),
        }
    }
    Ok(())
}

fn acquire(t: &mut Tables<'_>, shard: &str, slot: &mut Slot<Epoch>) -> Result<(), redb::Error> {
    let current = t.epochs()?.get(shard)?.map(|g| g.value()).unwrap_or(0);
    let Some(next) = current.checked_add(1) else {
        slot.set(Err(StoreError::Corrupt(format!("shard {shard} has exhausted its epochs"))));
        return Ok(());
    };
    t.epochs()?.insert(shard, next)?;
    slot.set(Ok(Epoch(next)));
    Ok(())
}

fn commit(
    t: &mut Tables<'_>,
    shard: &str,
    epoch: Epoch,
    batch: &EncodedBatch,
    slot: &mut Slot<()>,
) -> Result<(), redb::Error> {
    let current = t.epochs()?.get(shard)?.map(|g| g.value()).unwrap_or(0);
    // Epoch 0 is never handed out: a shard nobody acquired has no writer to accept.
    if current == 0 || current != epoch.0 {
        slot.set(Err(StoreError::StaleEpoch { shard: shard.to_string(), current, held: epoch.0 }));
        return Ok(());
    }
    // The check passed: from here only a storage failure can stop the batch, and
    // that aborts the whole transaction, so the batch is all or nothing.
    for (key, value) in &batch.locators {
        t.locators()?.insert(key.as_slice(), value.as_slice())?;
    }
    for (key, value) in &batch.upserts {
        t.records()?.insert(key.as_slice(), value.as_slice())?;
    }
    for key in &batch.deletes {
        t.records()?.remove(key.as_slice())?;
    }
    for (key, value) in &batch.events {
        t.events()?.insert(key.as_slice(), value.as_slice())?;
    }
    insert_audit(t, &batch.audit)?;
    slot.set(Ok(()));
    Ok(())
}

/// Writes audit rows; the audit table is opened only if there are any.
fn insert_audit(t: &mut Tables<'_>, rows: &[super::journal::Row]) -> Result<(), redb::Error> {
    if !rows.is_empty() {
        insert_rows(t.audit()?, rows)?;
    }
    Ok(())
}

/// Writes encoded rows into a table (the audit table, and the journal's replay into it).
pub(super) fn insert_rows(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    rows: &[(impl AsRef<[u8]>, Vec<u8>)],
) -> Result<(), redb::StorageError> {
    for (key, value) in rows {
        table.insert(key.as_ref(), value.as_slice())?;
    }
    Ok(())
}

/// The stored claim on `phn`, decoded; `Err` when it cannot be read back.
fn current_claim(t: &mut Tables<'_>, phn: u64) -> Result<Result<Option<PhnClaim>, StoreError>, redb::Error> {
    let raw = t.claims()?.get(phn)?.map(|g| g.value().to_vec());
    Ok(raw.map(|bytes| decode(&bytes, "PHN claim")).transpose())
}

fn cas(
    t: &mut Tables<'_>,
    phn: u64,
    expected: Option<&PhnClaim>,
    new: Option<&[u8]>,
    slot: &mut Slot<CasOutcome<PhnClaim>>,
) -> Result<(), redb::Error> {
    let current = match current_claim(t, phn)? {
        Ok(current) => current,
        Err(e) => {
            slot.set(Err(e));
            return Ok(());
        }
    };
    if current.as_ref() != expected {
        slot.set(Ok(CasOutcome::Conflict(current)));
        return Ok(());
    }
    match new {
        Some(bytes) => t.claims()?.insert(phn, bytes)?,
        None => t.claims()?.remove(phn)?,
    };
    slot.set(Ok(CasOutcome::Applied));
    Ok(())
}

fn claim(
    t: &mut Tables<'_>,
    claims: &[(Phn, PhnClaim, Vec<u8>)],
    slot: &mut Slot<Vec<(Phn, PhnClaim)>>,
) -> Result<(), redb::Error> {
    // Decide everything first, write after: a claim that cannot be read back
    // refuses the whole request before any of it is written.
    let mut held = Vec::new();
    let mut taking: BTreeMap<u64, (&PhnClaim, &[u8])> = BTreeMap::new();
    for (phn, new, bytes) in claims {
        let key = phn.as_u64();
        if let Some((taken, _)) = taking.get(&key) {
            // The same PHN twice in one request: the first one took it.
            held.push((*phn, (*taken).clone()));
            continue;
        }
        match current_claim(t, key)? {
            Ok(Some(current)) => held.push((*phn, current)),
            Ok(None) => {
                taking.insert(key, (new, bytes.as_slice()));
            }
            Err(e) => {
                slot.set(Err(e));
                return Ok(());
            }
        }
    }
    for (key, (_, bytes)) in taking {
        t.claims()?.insert(key, bytes)?;
    }
    slot.set(Ok(held));
    Ok(())
}

/// Maps a redb failure to the store's error. Only redb's own corruption report
/// needs an operator; everything else (I/O, a full disk, a closed database) may
/// pass on retry.
pub(super) fn store_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("database file: {msg}")),
        other => StoreError::Unavailable(other.to_string()),
    }
}

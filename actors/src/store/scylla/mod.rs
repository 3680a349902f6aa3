//! The ScyllaDB store: the production backend, on the `scylla` driver.
//!
//! # Layout
//!
//! Five tables (`infra/scylla/schema.cql`, applied by [`migrate`]):
//!
//! | table | partition | clustering | value |
//! |---|---|---|---|
//! | `shard_owners` | `(ha, community)` | | `epoch`, `owner` (the lease, with a TTL), `last_seq` hint |
//! | `records` | `(ha, community, bucket)` | `kind, id` | versioned `Record` blob |
//! | `events` | `(ha, community, seq / 65536)` | `seq` | versioned `Event` blob |
//! | `locators` | `(kind, id)` | | `shard` |
//! | `phn_claims` | `phn` | | versioned `PhnClaim` blob |
//! | `audit` | `at / 10 min` | `at, id` | versioned `AuditRecord` blob |
//! | `audit_buckets` | `bucket / 50,000` | `bucket` | (which audit partitions hold records) |
//!
//! A shard's records are spread over 64 hash buckets and its events over
//! buckets of 65,536, so no partition nears 100,000 rows; loading a shard reads
//! its 64 record partitions, page by page. Nothing is modelled as a queue:
//! events are appended and never deleted, and records are deleted only when the
//! domain removes them.
//!
//! # Writes and fencing
//!
//! Lightweight transactions are used for shard ownership and PHN claims only
//! (`lease.rs`, `statements.rs`). A commit is two requests: a lightweight
//! transaction on the shard's ownership row (`IF epoch = held AND owner = me`),
//! which refuses a stale or lapsed writer before anything is written, then one
//! logged batch of the commit's rows with one explicit timestamp (large commits
//! go in several batches, see `docs/DECISIONS.md`). A writer checks its local
//! lease deadline, which ends a margin before the server's TTL, before each
//! batch, so its writes land before another node can acquire the shard; and a
//! late replica write of an old owner carries an older timestamp than anything
//! the new owner writes.

mod audit;
mod lease;
mod log;
mod rows;
mod schema;
mod statements;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch as CqlBatch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};

pub use self::schema::{SCHEMA, check_keyspace, drop_keyspace, keyspace_cql, migrate, migration};

use self::lease::{AcquireStep, OwnerRow, RenewStep, acquire_step, after_refused_renewal, commit_refusal};
use self::rows::*;
use self::statements::Statements;
use super::codec::{decode, encode};
use super::lease::{Clock, CommitGuard, LeaseBook, expired, system_clock};
use super::{
    AuditQuery, AuditRecord, Batch, CasOutcome, DEFAULT_LEASE, Epoch, Locator, PhnClaim, Record, RecordKey, ShardImage,
    Store, StoreError,
};
use crate::domain::{Event, Phn, Seq, ShardKey};

/// Where and how to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace holding Attach's tables.
    pub keyspace: String,
    /// Replicas per datacenter, for `migrate`.
    pub replication: BTreeMap<String, u32>,
    /// Every statement's timeout. A commit is two statements (or more for a
    /// large one), so twice this must fit in a third of the lease.
    pub request_timeout: Duration,
    /// How long a shard lease lasts unless renewed.
    pub lease: Duration,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        ScyllaOptions {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "attach".into(),
            replication: BTreeMap::from([("datacenter1".into(), 3)]),
            request_timeout: Duration::from_secs(2),
            lease: DEFAULT_LEASE,
        }
    }
}

/// Whether a `store` setting names ScyllaDB.
pub fn is_scylla_uri(uri: &str) -> bool {
    uri.starts_with("scylla://")
}

/// The contact points of `scylla://host[:port][,host[:port]...]` (port 9042 by default).
pub fn parse_uri(uri: &str) -> anyhow::Result<Vec<String>> {
    let rest = uri.strip_prefix("scylla://").context("a ScyllaDB store is written scylla://HOST:9042[,HOST2...]")?;
    let rest = rest.trim_end_matches('/');
    let mut nodes = Vec::new();
    for node in rest.split(',').map(str::trim) {
        ensure!(!node.is_empty(), "`{uri}` has an empty host");
        ensure!(!node.contains('/') && !node.contains('@'), "`{uri}`: give hosts only, scylla://HOST:PORT,...");
        let with_port = match node.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
                port.parse::<u16>().with_context(|| format!("`{node}` has a bad port"))?;
                node.to_string()
            }
            _ => format!("{node}:9042"),
        };
        nodes.push(with_port);
    }
    Ok(nodes)
}

/// The ScyllaDB-backed [`Store`]. Cheap to clone: clones share the session.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    /// Prepared once at connect, reused by every request.
    st: Statements,
    options: ScyllaOptions,
    /// The leases this handle holds and their local deadlines.
    leases: LeaseBook,
    /// How long before the server's expiry this handle stops using a lease.
    margin: Duration,
    /// Write timestamps: commits of one handle are ordered even if the wall
    /// clock steps back, and above every shard's previous owner's.
    clock: lease::WriteClock,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

/// Opens a session to the cluster, no keyspace selected.
pub async fn connect_session(options: &ScyllaOptions) -> anyhow::Result<Session> {
    ensure!(!options.nodes.is_empty(), "no ScyllaDB contact points");
    SessionBuilder::new()
        .known_nodes(&options.nodes)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .await
        .with_context(|| format!("connecting to ScyllaDB at {}", options.nodes.join(",")))
}

impl ScyllaStore {
    /// Connects and prepares every statement. The schema must exist ([`migrate`]).
    pub async fn connect(options: ScyllaOptions) -> anyhow::Result<Self> {
        Self::connect_with_clock(options, system_clock()).await
    }

    /// [`ScyllaStore::connect`] with the clock local lease deadlines are timed by.
    pub async fn connect_with_clock(options: ScyllaOptions, clock: Clock) -> anyhow::Result<Self> {
        check_keyspace(&options.keyspace)?;
        let margin = options.lease / 3;
        ensure!(
            options.request_timeout * 2 <= margin,
            "the lease ({:?}) must be at least six request timeouts ({:?}): a commit must finish within \
             the last third of a lease",
            options.lease,
            options.request_timeout
        );
        let session = connect_session(&options).await?;
        let st =
            Statements::prepare(&session, &options.keyspace, options.request_timeout).await.with_context(|| {
                format!("preparing statements in keyspace {} (run `attach migrate`?)", options.keyspace)
            })?;
        tracing::info!(nodes = %options.nodes.join(","), keyspace = %options.keyspace, "connected to ScyllaDB");
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                st,
                leases: LeaseBook::new(clock),
                margin,
                clock: lease::WriteClock::default(),
                options,
            }),
        })
    }

    /// A write timestamp (microseconds) above every one this handle gave
    /// before and every shard floor it has seen.
    fn next_timestamp(&self) -> i64 {
        self.inner.clock.next(chrono::Utc::now().timestamp_micros())
    }

    /// The write timestamp of the latest commit of a shard's previous owners,
    /// read at `LOCAL_SERIAL` once this handle holds the shard (no fence of
    /// theirs can land after that), and taken as this handle's floor.
    async fn take_floor(&self, shard: &ShardKey) -> Result<(), StoreError> {
        let result = self.rows(&self.inner.st.owner_floor, shard_columns(shard)).await?;
        if let Some((Some(floor),)) = first_row::<(Option<i64>,)>(result)? {
            self.inner.clock.raise_to(floor);
        }
        Ok(())
    }

    fn deadline(&self, sent: std::time::Instant) -> std::time::Instant {
        lease::local_deadline(sent, self.inner.options.lease, self.inner.margin)
    }

    /// Runs a statement returning rows, unpaged (for single-row and `LIMIT` reads).
    async fn rows<V: SerializeRow>(&self, st: &PreparedStatement, values: V) -> Result<QueryResult, StoreError> {
        self.inner.session.execute_unpaged(st, values).await.map_err(|e| unavailable(st, e))
    }

    /// Runs a lightweight transaction and reads its answer.
    async fn lwt<V: SerializeRow>(&self, st: &PreparedStatement, values: V) -> Result<LwtRow, StoreError> {
        lwt_row(self.rows(st, values).await?)
    }

    /// The ownership row of a shard, read at `LOCAL_SERIAL`.
    async fn owner_row(&self, shard: &ShardKey) -> Result<Option<OwnerRow>, StoreError> {
        let result = self.rows(&self.inner.st.owner_read, shard_columns(shard)).await?;
        let row = first_row::<(Option<i64>, Option<String>)>(result)?;
        match row {
            Some((Some(epoch), owner)) => OwnerRow::from_columns(epoch, owner).map(Some),
            _ => Ok(None),
        }
    }

    /// One conditional batch on the ownership row: raise the epoch, write the lease.
    async fn take(&self, shard: &ShardKey, owner: &str, from: u64, to: u64, found: bool) -> Result<LwtRow, StoreError> {
        let st = &self.inner.st;
        let (ha, community) = shard_columns(shard);
        let text = |s: &str| CqlValue::Text(s.to_string());
        let (from, to) = (epoch_column(from)?, epoch_column(to)?);
        let mut take = vec![CqlValue::BigInt(to), text(ha), text(community), CqlValue::BigInt(from)];
        let statement = if found {
            take.push(text(owner));
            &st.owner_take_own
        } else {
            &st.owner_take_free
        };
        let ttl = lease::ttl_secs(self.inner.options.lease);
        let write_lease = vec![CqlValue::Int(ttl), text(owner), text(ha), text(community)];
        let mut batch = CqlBatch::new(BatchType::Logged);
        batch.append_statement(statement.clone());
        batch.append_statement(st.owner_lease.clone());
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        batch.set_request_timeout(Some(self.inner.options.request_timeout));
        batch.set_is_idempotent(false);
        let result = self.inner.session.batch(&batch, vec![take, write_lease]).await;
        lwt_row(result.map_err(|e| StoreError::Unavailable(format!("acquiring a shard: {e}")))?)
    }

    /// One record bucket of a shard, page by page.
    async fn scan_bucket(&self, shard: &ShardKey, bucket: i32) -> Result<Vec<Record>, StoreError> {
        let (ha, community) = shard_columns(shard);
        let st = &self.inner.st.record_scan;
        let mut records = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .inner
                .session
                .execute_single_page(st, (ha, community, bucket), paging)
                .await
                .map_err(|e| unavailable(st, e))?;
            for blob in all_rows::<(Vec<u8>,)>(result)? {
                records.push(record_from_blob(&blob.0)?);
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(records),
            }
        }
    }

    /// The newest event's sequence number, from the hint on the ownership row.
    async fn last_seq(&self, shard: &ShardKey) -> Result<Seq, StoreError> {
        let (ha, community) = shard_columns(shard);
        let hint = first_row::<(Option<i64>,)>(self.rows(&self.inner.st.owner_hint, (ha, community)).await?)?
            .and_then(|(h,)| h)
            .map(seq_from_column)
            .transpose()?
            .unwrap_or(0);
        let mut walk = log::NewestWalk::from_hint(hint);
        loop {
            let result = self.rows(&self.inner.st.event_last, (ha, community, walk.bucket())).await?;
            let newest = first_row::<(i64,)>(result)?.map(|(s,)| seq_from_column(s)).transpose()?;
            if let Some(last) = walk.observe(newest) {
                return Ok(last);
            }
        }
    }

    /// The rows of audit records: the bucket index first (a crash between
    /// leaves at worst an empty bucket listed), then the records.
    fn audit_writes<'a>(
        &'a self,
        records: &[AuditRecord],
        writes: &mut Vec<(&'a PreparedStatement, Vec<CqlValue>)>,
    ) -> Result<(), StoreError> {
        let st = &self.inner.st;
        let buckets: BTreeSet<i64> = records.iter().map(|r| audit::bucket(r.at)).collect();
        let spans: BTreeSet<i64> = buckets.iter().map(|b| audit::span(*b)).collect();
        for span in spans {
            writes.push((&st.audit_bucket_insert, vec![CqlValue::BigInt(audit::SPANS), CqlValue::BigInt(span)]));
        }
        for bucket in buckets {
            let span = audit::span(bucket);
            writes.push((&st.audit_bucket_insert, vec![CqlValue::BigInt(span), CqlValue::BigInt(bucket)]));
        }
        for record in records {
            let values = vec![
                CqlValue::BigInt(audit::bucket(record.at)),
                CqlValue::BigInt(record.at.0),
                CqlValue::BigInt(audit::id_column(record.id)),
                CqlValue::Blob(encode(record, "audit record")?),
            ];
            writes.push((&st.audit_insert, values));
        }
        Ok(())
    }

    /// The commit's rows as (statement, values), locators first, then the
    /// records and the change's audit records, events last.
    fn encode_writes<'a>(
        &'a self,
        shard: &ShardKey,
        batch: &Batch,
    ) -> Result<Vec<(&'a PreparedStatement, Vec<CqlValue>)>, StoreError> {
        let st = &self.inner.st;
        let (ha, community) = shard_columns(shard);
        let text = |s: &str| CqlValue::Text(s.to_string());
        let home = shard.to_string();
        let mut writes = Vec::with_capacity(batch.locators.len() + batch.upserts.len() + batch.events.len());
        for locator in &batch.locators {
            let (kind, id) = locator_columns(locator);
            writes.push((&st.locator_upsert, vec![CqlValue::Int(kind), CqlValue::Text(id), text(&home)]));
        }
        for record in &batch.upserts {
            let (bucket, kind, id) = record_columns(&record.key());
            let values = vec![
                text(ha),
                text(community),
                CqlValue::Int(bucket),
                CqlValue::Int(kind),
                CqlValue::Text(id),
                CqlValue::Blob(record_blob(record)?),
            ];
            writes.push((&st.record_upsert, values));
        }
        for key in &batch.deletes {
            let (bucket, kind, id) = record_columns(key);
            let values =
                vec![text(ha), text(community), CqlValue::Int(bucket), CqlValue::Int(kind), CqlValue::Text(id)];
            writes.push((&st.record_delete, values));
        }
        self.audit_writes(&batch.audit, &mut writes)?;
        for event in &batch.events {
            let values = vec![
                text(ha),
                text(community),
                CqlValue::BigInt(event_bucket(event.seq)),
                CqlValue::BigInt(seq_column(event.seq)?),
                CqlValue::Blob(event_blob(event)?),
            ];
            writes.push((&st.event_insert, values));
        }
        Ok(writes)
    }

    /// Writes rows in logged batches of bounded size, all with `timestamp`.
    /// `may_continue` is asked before every batch (a stall between a commit's
    /// fence and its first batch must not outlive the lease either).
    async fn write_rows(
        &self,
        writes: Vec<(&PreparedStatement, Vec<CqlValue>)>,
        timestamp: i64,
        may_continue: impl Fn() -> Result<(), StoreError>,
        what: &str,
    ) -> Result<(), StoreError> {
        for chunk in chunks(writes) {
            may_continue()?;
            let mut batch = CqlBatch::new(BatchType::Logged);
            let mut values = Vec::with_capacity(chunk.len());
            for (statement, row) in chunk {
                batch.append_statement(statement.clone());
                values.push(row);
            }
            batch.set_timestamp(Some(timestamp));
            batch.set_consistency(Consistency::LocalQuorum);
            batch.set_request_timeout(Some(self.inner.options.request_timeout));
            // Same cells, same timestamp: a retry cannot change the outcome.
            batch.set_is_idempotent(true);
            self.inner
                .session
                .batch(&batch, values)
                .await
                .map_err(|e| StoreError::Unavailable(format!("writing {what}: {e}")))?;
        }
        Ok(())
    }

    /// The buckets listed under index partition `span` between `first` and `last`.
    async fn audit_buckets(&self, span: i64, first: i64, last: i64) -> Result<Vec<i64>, StoreError> {
        let st = &self.inner.st.audit_buckets_in;
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .inner
                .session
                .execute_single_page(st, (span, first, last), paging)
                .await
                .map_err(|e| unavailable(st, e))?;
            out.extend(all_rows::<(i64,)>(result)?.into_iter().map(|(b,)| b));
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(out),
            }
        }
    }

    /// Adds the records of one audit partition that pass `query` to `out`, up to
    /// its limit; `false` once the page is full or past the query's range.
    async fn audit_bucket_page(
        &self,
        bucket: i64,
        query: &AuditQuery,
        out: &mut Vec<AuditRecord>,
    ) -> Result<bool, StoreError> {
        let st = &self.inner.st.audit_scan;
        let start = query.start();
        let values = (bucket, start.at.0, audit::id_column(start.id));
        let mut paging = PagingState::start();
        loop {
            let (result, next) =
                self.inner.session.execute_single_page(st, values, paging).await.map_err(|e| unavailable(st, e))?;
            for (at, id, blob) in all_rows::<(i64, i64, Vec<u8>)>(result)? {
                let cursor = audit::cursor(at, id);
                if !query.is_before_end(cursor.at) {
                    return Ok(false);
                }
                if !query.is_after_start(cursor) {
                    continue;
                }
                let record: AuditRecord = decode(&blob, "audit record")?;
                if record.matches(query) {
                    out.push(record);
                    if out.len() >= query.limit {
                        return Ok(false);
                    }
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(true),
            }
        }
    }

    async fn claim_one(&self, phn: Phn, claim: &[u8]) -> Result<Option<PhnClaim>, StoreError> {
        let answer = self.lwt(&self.inner.st.claim_insert, (phn_column(phn), claim)).await?;
        if answer.applied {
            return Ok(None);
        }
        match answer.blob("claim") {
            Some(existing) => decode(existing, "PHN claim").map(Some),
            None => Err(StoreError::Unavailable("a refused PHN claim returned no current claim".into())),
        }
    }
}

/// The most rows and bytes in one logged batch. A commit is atomic only
/// within one batch, so the bound sits just under ScyllaDB's default batch
/// failure threshold (1 MiB; it warns above 128 KiB): everything but bulk loads
/// is one batch, and a matching run of several hundred proposals still is.
const MAX_BATCH_ROWS: usize = 4_096;
const MAX_BATCH_BYTES: usize = 768 * 1024;
/// What a row costs in a batch beyond its values, as ScyllaDB counts a batch's
/// size (row entry, clustering key, cell headers and timestamps): a generous
/// estimate, since a batch over the threshold is refused whole.
const ROW_OVERHEAD: usize = 200;

/// Splits writes into batches of at most [`MAX_BATCH_ROWS`] rows and about
/// [`MAX_BATCH_BYTES`] bytes, keeping their order (events stay last).
fn chunks<T>(writes: Vec<(T, Vec<CqlValue>)>) -> Vec<Vec<(T, Vec<CqlValue>)>> {
    let mut out: Vec<Vec<(T, Vec<CqlValue>)>> = Vec::new();
    let mut bytes = 0;
    for (statement, row) in writes {
        // ScyllaDB measures a batch by its mutations' size in memory, which
        // adds each row's and cell's own keeping to the values.
        let size: usize = ROW_OVERHEAD + row.iter().map(value_size).sum::<usize>();
        match out.last_mut() {
            Some(current) if current.len() < MAX_BATCH_ROWS && bytes + size <= MAX_BATCH_BYTES => {
                bytes += size;
                current.push((statement, row));
            }
            _ => {
                bytes = size;
                out.push(vec![(statement, row)]);
            }
        }
    }
    out
}

fn value_size(value: &CqlValue) -> usize {
    match value {
        CqlValue::Blob(b) => b.len(),
        CqlValue::Text(t) => t.len(),
        _ => 8,
    }
}

fn epoch_column(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| StoreError::Corrupt("an epoch passed i64::MAX".into()))
}

fn unavailable(st: &PreparedStatement, e: impl std::fmt::Display) -> StoreError {
    // The statement text names tables and columns, never values (they are bound).
    StoreError::Unavailable(format!("{}: {e}", st.get_statement()))
}

fn rows_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("unexpected answer from ScyllaDB: {e}"))
}

/// Every row of a result, typed.
fn all_rows<R>(result: QueryResult) -> Result<Vec<R>, StoreError>
where
    R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
{
    let rows = result.into_rows_result().map_err(rows_error)?;
    rows.rows::<R>().map_err(rows_error)?.map(|r| r.map_err(rows_error)).collect()
}

/// The first row of a result, typed, if any.
fn first_row<R>(result: QueryResult) -> Result<Option<R>, StoreError>
where
    R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
{
    let rows = result.into_rows_result().map_err(rows_error)?;
    rows.maybe_first_row::<R>().map_err(rows_error)
}

/// The answer of a lightweight transaction: `[applied]` and the row as it was.
fn lwt_row(result: QueryResult) -> Result<LwtRow, StoreError> {
    let rows = result.into_rows_result().map_err(rows_error)?;
    let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_string()).collect();
    let row = rows.first_row::<Row>().map_err(rows_error)?;
    LwtRow::new(names.into_iter().zip(row.columns).collect())
}

#[async_trait]
impl Store for ScyllaStore {
    fn lease(&self) -> Duration {
        self.inner.options.lease
    }

    async fn acquire_shard(&self, shard: &ShardKey, owner: &str) -> Result<Epoch, StoreError> {
        // A few rounds: each lost race means someone else moved the row meanwhile.
        for _ in 0..8 {
            let row = self.owner_row(shard).await?;
            match acquire_step(row.as_ref(), owner)? {
                AcquireStep::Create => {
                    // Applied or not, the row exists now; read it again.
                    self.lwt(&self.inner.st.owner_create, shard_columns(shard)).await?;
                }
                AcquireStep::Refuse { owner: holder } => {
                    return Err(StoreError::LeaseHeld { shard: shard.to_string(), owner: holder });
                }
                AcquireStep::Take { from, to, found } => {
                    let sent = self.inner.leases.now();
                    if self.take(shard, owner, from, to, found.is_some()).await?.applied {
                        // Before any commit: this owner writes above the last one's timestamps.
                        self.take_floor(shard).await?;
                        self.inner.leases.grant(shard, owner, Epoch(to), self.deadline(sent));
                        tracing::info!(%shard, owner, epoch = to, "shard acquired");
                        return Ok(Epoch(to));
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!("acquiring shard {shard} kept racing with other writers")))
    }

    async fn renew_lease(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        let st = &self.inner.st;
        let (ha, community) = shard_columns(shard);
        let ttl = lease::ttl_secs(self.inner.options.lease);
        let held = epoch_column(epoch.0)?;
        let sent = self.inner.leases.now();
        let mut answer = self.lwt(&st.owner_renew, (ttl, owner, ha, community, held, owner)).await?;
        if !answer.applied {
            match after_refused_renewal(&shard.to_string(), OwnerRow::from_lwt(&answer)?.as_ref(), owner, epoch) {
                RenewStep::Refuse(e) => return Err(e),
                RenewStep::Retake => {
                    answer = self.lwt(&st.owner_renew_lapsed, (ttl, owner, ha, community, held)).await?;
                    if !answer.applied {
                        let row = OwnerRow::from_lwt(&answer)?;
                        return Err(match after_refused_renewal(&shard.to_string(), row.as_ref(), owner, epoch) {
                            RenewStep::Refuse(e) => e,
                            RenewStep::Retake => StoreError::Unavailable(format!("the lease on {shard} kept moving")),
                        });
                    }
                }
            }
        }
        let until = self.deadline(sent);
        if !self.inner.leases.extend(shard, owner, epoch, until) {
            self.inner.leases.grant(shard, owner, epoch, until);
        }
        Ok(())
    }

    async fn held_shards(&self) -> Result<Vec<ShardKey>, StoreError> {
        // One row per shard ever acquired: a small table, read page by page.
        let st = &self.inner.st.owner_all;
        let mut held = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) =
                self.inner.session.execute_single_page(st, (), paging).await.map_err(|e| unavailable(st, e))?;
            for (ha, community) in all_rows::<(String, String)>(result)? {
                let name = format!("{ha}/{community}");
                held.push(ShardKey::parse(&name).map_err(|e| StoreError::Corrupt(format!("shard {name}: {e}")))?);
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(held),
            }
        }
    }

    async fn shard_owner(&self, shard: &ShardKey) -> Result<Option<String>, StoreError> {
        // `owner` is written with the lease's TTL: the server forgets it when the lease runs out.
        Ok(self.owner_row(shard).await?.and_then(|row| row.owner))
    }

    async fn release_shard(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        self.inner.leases.release(shard, owner, epoch);
        let (ha, community) = shard_columns(shard);
        let answer = self.lwt(&self.inner.st.owner_release, (ha, community, epoch_column(epoch.0)?, owner)).await?;
        if answer.applied {
            tracing::info!(%shard, owner, epoch = epoch.0, "shard released");
        }
        Ok(())
    }

    async fn load_shard(&self, shard: &ShardKey) -> Result<ShardImage, StoreError> {
        let buckets: Vec<Vec<Record>> = stream::iter(all_record_buckets())
            .map(|bucket| self.scan_bucket(shard, bucket))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let last_seq = self.last_seq(shard).await?;
        Ok(ShardImage { records: buckets.into_iter().flatten().collect(), last_seq })
    }

    #[tracing::instrument(name = "store.commit", skip_all, fields(db.system = "scylladb", shard = %shard))]
    async fn commit(&self, shard: &ShardKey, epoch: Epoch, batch: &Batch) -> Result<(), StoreError> {
        let name = shard.to_string();
        let owner = match self.inner.leases.guard(shard, epoch) {
            CommitGuard::Live { owner } => owner,
            CommitGuard::Expired => return Err(expired(shard)),
            CommitGuard::Unknown => {
                let row = self.owner_row(shard).await?;
                return Err(commit_refusal(&name, row.as_ref(), epoch));
            }
        };
        // Encode before the fence: a value that cannot be encoded refuses the
        // commit before anything is written.
        let writes = self.encode_writes(shard, batch)?;
        let (ha, community) = shard_columns(shard);
        let held = epoch_column(epoch.0)?;
        let st = &self.inner.st;
        // The fence records the commit's timestamp as the shard's floor, so a
        // next owner writes above it even with a clock behind this node's.
        let timestamp = self.next_timestamp();
        let answer = match batch.events.last() {
            Some(last) => {
                self.lwt(&st.fence_seq, (seq_column(last.seq)?, timestamp, ha, community, held, &owner)).await?
            }
            None => self.lwt(&st.fence, (timestamp, ha, community, held, &owner)).await?,
        };
        if !answer.applied {
            return Err(commit_refusal(&name, OwnerRow::from_lwt(&answer)?.as_ref(), epoch));
        }
        if writes.is_empty() {
            return Ok(());
        }
        // A large commit takes several round trips: each must start within the lease.
        let within_lease = || match self.inner.leases.guard(shard, epoch) {
            CommitGuard::Live { .. } => Ok(()),
            _ => Err(expired(shard)),
        };
        self.write_rows(writes, timestamp, within_lease, "a commit").await
    }

    async fn events_after(&self, shard: &ShardKey, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        let (ha, community) = shard_columns(shard);
        if limit == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut from = after;
        let mut bucket = event_bucket(after + 1);
        while out.len() < limit {
            let want = (limit - out.len()).min(statements::PAGE_SIZE as usize);
            let st = &self.inner.st.events_from;
            let values = (ha, community, bucket, seq_column(from)?, want as i32);
            let rows = all_rows::<(i64, Vec<u8>)>(self.rows(st, values).await?)?;
            let got = rows.len();
            for (seq, blob) in rows {
                out.push(event_from_row(seq, &blob)?);
            }
            from = out.last().map_or(from, |e| e.seq);
            match log::after_page(bucket, from, got, want) {
                log::Next::Bucket(next) => bucket = next,
                log::Next::Done => break,
            }
        }
        Ok(out)
    }

    async fn read(&self, shard: &ShardKey, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let (ha, community) = shard_columns(shard);
        let (bucket, kind, id) = record_columns(key);
        let result = self.rows(&self.inner.st.record_read, (ha, community, bucket, kind, id)).await?;
        first_row::<(Vec<u8>,)>(result)?.map(|(blob,)| record_from_blob(&blob)).transpose()
    }

    async fn locate(&self, what: &Locator) -> Result<Option<ShardKey>, StoreError> {
        let (kind, id) = locator_columns(what);
        let result = self.rows(&self.inner.st.locator_read, (kind, id)).await?;
        first_row::<(String,)>(result)?.map(|(shard,)| shard_from_column(&shard)).transpose()
    }

    async fn claim_locator(&self, what: &Locator, shard: &ShardKey) -> Result<ShardKey, StoreError> {
        let (kind, id) = locator_columns(what);
        let answer = self.lwt(&self.inner.st.locator_claim, (kind, id, shard.to_string())).await?;
        if answer.applied {
            return Ok(shard.clone());
        }
        match answer.text("shard") {
            Some(now) => shard_from_column(now),
            None => Err(StoreError::Unavailable("a refused locator claim returned no current shard".into())),
        }
    }

    async fn phn_claim(&self, phn: Phn) -> Result<Option<PhnClaim>, StoreError> {
        let result = self.rows(&self.inner.st.claim_read, (phn_column(phn),)).await?;
        first_row::<(Option<Vec<u8>>,)>(result)?.and_then(|(blob,)| blob).map(|b| decode(&b, "PHN claim")).transpose()
    }

    async fn cas_phn_claim(
        &self,
        phn: Phn,
        expected: Option<&PhnClaim>,
        new: Option<&PhnClaim>,
    ) -> Result<CasOutcome<PhnClaim>, StoreError> {
        let st = &self.inner.st;
        let key = phn_column(phn);
        let answer = match (expected, new) {
            (None, None) => {
                // Nothing to write: the answer is the current claim, read linearizably.
                return Ok(match self.phn_claim(phn).await? {
                    None => CasOutcome::Applied,
                    current => CasOutcome::Conflict(current),
                });
            }
            (None, Some(new)) => self.lwt(&st.claim_insert, (key, encode(new, "PHN claim")?)).await?,
            // The encoding is canonical, so comparing bytes compares claims.
            (Some(old), Some(new)) => {
                let values = (encode(new, "PHN claim")?, key, encode(old, "PHN claim")?);
                self.lwt(&st.claim_replace, values).await?
            }
            (Some(old), None) => self.lwt(&st.claim_delete, (key, encode(old, "PHN claim")?)).await?,
        };
        if answer.applied {
            return Ok(CasOutcome::Applied);
        }
        Ok(CasOutcome::Conflict(answer.blob("claim").map(|b| decode(b, "PHN claim")).transpose()?))
    }

    async fn claim_phns(&self, claims: Vec<(Phn, PhnClaim)>) -> Result<Vec<(Phn, PhnClaim)>, StoreError> {
        // The same PHN twice in one request: the first one takes it.
        let mut seen = BTreeSet::new();
        let mut unique = Vec::with_capacity(claims.len());
        let mut repeats = Vec::new();
        for (phn, claim) in claims {
            let bytes = encode(&claim, "PHN claim")?;
            if seen.insert(phn) { unique.push((phn, claim, bytes)) } else { repeats.push(phn) }
        }
        let answers: Vec<(Phn, PhnClaim, Option<PhnClaim>)> =
            stream::iter(unique)
                .map(|(phn, claim, bytes)| async move {
                    Ok::<_, StoreError>((phn, claim, self.claim_one(phn, &bytes).await?))
                })
                .buffered(32)
                .try_collect()
                .await?;
        let mut held = Vec::new();
        for (phn, mine, existing) in &answers {
            if let Some(existing) = existing {
                held.push((*phn, existing.clone()));
            }
            for _ in repeats.iter().filter(|p| *p == phn) {
                held.push((*phn, existing.clone().unwrap_or_else(|| mine.clone())));
            }
        }
        Ok(held)
    }

    #[tracing::instrument(name = "store.append_audit", skip_all, fields(db.system = "scylladb", records = records.len()))]
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::new();
        self.audit_writes(records, &mut writes)?;
        self.write_rows(writes, self.next_timestamp(), || Ok(()), "the audit log").await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        if query.limit == 0 {
            return Ok(out);
        }
        let (first, last) = audit::bucket_range(query.start(), query.until);
        for span in self.audit_buckets(audit::SPANS, audit::span(first), audit::span(last)).await? {
            let (span_first, span_last) = audit::span_buckets(span);
            for bucket in self.audit_buckets(span, first.max(span_first), last.min(span_last)).await? {
                if !self.audit_bucket_page(bucket, query, &mut out).await? {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

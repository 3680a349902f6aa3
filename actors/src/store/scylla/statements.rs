//! Every CQL statement the store runs, prepared once per session.
//!
//! Each statement is written once, in [`SPECS`], with `{ks}` for the keyspace,
//! and says what kind it is. The kind decides how it is prepared: reads and
//! plain writes at `LOCAL_QUORUM` and marked idempotent (writes carry explicit
//! timestamps, so a retry writes the same cells with the same timestamp);
//! lightweight transactions at `LOCAL_SERIAL` and *not* idempotent (a retried
//! one may report its own earlier success as a conflict); reads of values only
//! lightweight transactions write at `LOCAL_SERIAL`, so they see every applied
//! transaction. Every statement has the configured request timeout.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency, Statement};

/// How a statement is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A read at `LOCAL_QUORUM`.
    Read,
    /// A read of rows changed only by lightweight transactions: `LOCAL_SERIAL`.
    SerialRead,
    /// A plain insert, update or delete, with an explicit timestamp.
    Write,
    /// A lightweight transaction (`IF ...`), or a statement only ever sent in a
    /// conditional batch with one.
    Lwt,
}

/// One statement: its name, its text and its kind (for the schema tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    pub(super) name: &'static str,
    pub(super) cql: &'static str,
    pub(super) kind: Kind,
}

macro_rules! statements {
    ($($field:ident: $kind:ident = $cql:literal;)+) => {
        /// Every statement, in the order of [`Statements`]' fields.
        #[cfg(test)]
        pub(super) const SPECS: &[Spec] = &[$(Spec { name: stringify!($field), cql: $cql, kind: Kind::$kind }),+];

        /// The prepared statements of one session.
        #[derive(Debug)]
        pub(super) struct Statements {
            $(pub(super) $field: PreparedStatement,)+
        }

        impl Statements {
            /// Prepares every statement on `session` for keyspace `ks`.
            pub(super) async fn prepare(session: &Session, ks: &str, timeout: Duration) -> anyhow::Result<Self> {
                use anyhow::Context;
                Ok(Statements {
                    $($field: prepare(session, ks, $cql, Kind::$kind, timeout)
                        .await
                        .with_context(|| format!("preparing the `{}` statement", stringify!($field)))?,)+
                })
            }
        }
    };
}

statements! {
    // ---- shard ownership (see lease.rs) ----
    owner_read: SerialRead =
        "SELECT epoch, owner FROM {ks}.shard_owners WHERE ha = ? AND community = ?";
    owner_floor: SerialRead =
        "SELECT write_floor FROM {ks}.shard_owners WHERE ha = ? AND community = ?";
    owner_hint: Read =
        "SELECT last_seq FROM {ks}.shard_owners WHERE ha = ? AND community = ?";
    owner_all: Read =
        "SELECT ha, community FROM {ks}.shard_owners";
    owner_create: Lwt =
        "INSERT INTO {ks}.shard_owners (ha, community, epoch, last_seq) VALUES (?, ?, 0, 0) IF NOT EXISTS";
    owner_take_free: Lwt =
        "UPDATE {ks}.shard_owners SET epoch = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = null";
    owner_take_own: Lwt =
        "UPDATE {ks}.shard_owners SET epoch = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = ?";
    owner_lease: Lwt =
        "UPDATE {ks}.shard_owners USING TTL ? SET owner = ? WHERE ha = ? AND community = ?";
    owner_renew: Lwt =
        "UPDATE {ks}.shard_owners USING TTL ? SET owner = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = ?";
    owner_renew_lapsed: Lwt =
        "UPDATE {ks}.shard_owners USING TTL ? SET owner = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = null";
    owner_release: Lwt =
        "UPDATE {ks}.shard_owners SET owner = null WHERE ha = ? AND community = ? IF epoch = ? AND owner = ?";
    fence: Lwt =
        "UPDATE {ks}.shard_owners SET write_floor = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = ?";
    fence_seq: Lwt =
        "UPDATE {ks}.shard_owners SET last_seq = ?, write_floor = ? WHERE ha = ? AND community = ? IF epoch = ? AND owner = ?";

    // ---- shard records ----
    record_upsert: Write =
        "INSERT INTO {ks}.records (ha, community, bucket, kind, id, record) VALUES (?, ?, ?, ?, ?, ?)";
    record_delete: Write =
        "DELETE FROM {ks}.records WHERE ha = ? AND community = ? AND bucket = ? AND kind = ? AND id = ?";
    record_read: Read =
        "SELECT record FROM {ks}.records WHERE ha = ? AND community = ? AND bucket = ? AND kind = ? AND id = ?";
    record_scan: Read =
        "SELECT record FROM {ks}.records WHERE ha = ? AND community = ? AND bucket = ?";

    // ---- shard events ----
    event_insert: Write =
        "INSERT INTO {ks}.events (ha, community, bucket, seq, event) VALUES (?, ?, ?, ?, ?)";
    events_from: Read =
        "SELECT seq, event FROM {ks}.events WHERE ha = ? AND community = ? AND bucket = ? AND seq > ? LIMIT ?";
    event_last: Read =
        "SELECT seq FROM {ks}.events WHERE ha = ? AND community = ? AND bucket = ? ORDER BY seq DESC LIMIT 1";

    // ---- locators ----
    locator_upsert: Write =
        "INSERT INTO {ks}.locators (kind, id, shard) VALUES (?, ?, ?)";
    locator_claim: Lwt =
        "INSERT INTO {ks}.locators (kind, id, shard) VALUES (?, ?, ?) IF NOT EXISTS";
    locator_read: Read =
        "SELECT shard FROM {ks}.locators WHERE kind = ? AND id = ?";

    // ---- PHN claims ----
    claim_read: SerialRead =
        "SELECT claim FROM {ks}.phn_claims WHERE phn = ?";
    claim_insert: Lwt =
        "INSERT INTO {ks}.phn_claims (phn, claim) VALUES (?, ?) IF NOT EXISTS";
    claim_replace: Lwt =
        "UPDATE {ks}.phn_claims SET claim = ? WHERE phn = ? IF claim = ?";
    claim_delete: Lwt =
        "DELETE FROM {ks}.phn_claims WHERE phn = ? IF claim = ?";

    // ---- the audit log (see audit.rs) ----
    audit_insert: Write =
        "INSERT INTO {ks}.audit (bucket, at, id, record) VALUES (?, ?, ?, ?)";
    audit_bucket_insert: Write =
        "INSERT INTO {ks}.audit_buckets (span, bucket) VALUES (?, ?)";
    audit_buckets_in: Read =
        "SELECT bucket FROM {ks}.audit_buckets WHERE span = ? AND bucket >= ? AND bucket <= ?";
    audit_scan: Read =
        "SELECT at, id, record FROM {ks}.audit WHERE bucket = ? AND (at, id) >= (?, ?)";
}

/// The statement text for keyspace `ks`.
pub(super) fn text(cql: &str, ks: &str) -> String {
    cql.replace("{ks}", ks)
}

/// The page size of paged reads (a whole record bucket is read page by page).
pub(super) const PAGE_SIZE: i32 = 1_000;

async fn prepare(
    session: &Session,
    ks: &str,
    cql: &str,
    kind: Kind,
    timeout: Duration,
) -> Result<PreparedStatement, scylla::errors::PrepareError> {
    let mut statement = Statement::new(text(cql, ks));
    statement.set_page_size(PAGE_SIZE);
    let mut prepared = session.prepare(statement).await?;
    configure(&mut prepared, kind, timeout);
    Ok(prepared)
}

/// Consistency, idempotence and timeout by kind (see the module docs).
fn configure(prepared: &mut PreparedStatement, kind: Kind, timeout: Duration) {
    prepared.set_request_timeout(Some(timeout));
    prepared.set_serial_consistency(Some(SerialConsistency::LocalSerial));
    match kind {
        Kind::Read | Kind::Write => {
            prepared.set_consistency(Consistency::LocalQuorum);
            prepared.set_is_idempotent(true);
        }
        Kind::SerialRead => {
            prepared.set_consistency(Consistency::LocalSerial);
            prepared.set_is_idempotent(true);
        }
        Kind::Lwt => {
            prepared.set_consistency(Consistency::LocalQuorum);
            prepared.set_is_idempotent(false);
        }
    }
}

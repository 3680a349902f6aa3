//! The audit log: one record for every read of a patient's record and every
//! mutation, whoever made it and however it ended.
//!
//! A record names the caller (subject and role), the operation, the shard and
//! the id of what was touched (a registration reference, a proposal id, a
//! provider id), never personal data: no PHN, name or date of birth. Records
//! are written by the system after the outcome is known (so refusals are
//! audited too) and the caller's answer waits until the record is durable: a
//! read whose audit cannot be written fails rather than leaving no trace.
//!
//! A change made by one shard message carries its record to the shard as an
//! [`AuditDraft`]: the shard commits the record with the change, in the same
//! batch, so a crash cannot keep the change and lose its record. The system
//! then writes a record only for what the shard did not commit (a refusal, or
//! a change that turned out to write nothing).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::access::{Operation, Principal, Role};
use crate::domain::{ShardKey, Timestamp};
use crate::error::AttachError;

/// The id of an audit record, unique with its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AuditId(pub u64);

impl AuditId {
    /// An id for a record made `sub_ms_nanos` (below 1,000,000) into its
    /// millisecond: the top 20 bits order records made within one millisecond
    /// (the log's order is `at`, then id), the low 44 bits are random.
    pub fn generate(sub_ms_nanos: u32) -> Self {
        let mut bytes = [0u8; 8];
        // The OS's entropy source failing is unrecoverable for any id scheme;
        // a time-derived fallback keeps the audit writable.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = (Timestamp::now().0 as u64).rotate_left(17).to_be_bytes();
        }
        let random = u64::from_be_bytes(bytes) & ((1 << 44) - 1);
        AuditId((u64::from(sub_ms_nanos.min(999_999)) << 44) | random)
    }
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The record of a change, as it will read if the change is committed: handed
/// to the shard making the change, which commits it in the change's batch.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    /// The record, with outcome `Ok`. The shard may fill in the target (the
    /// reference of a registration it creates).
    pub record: AuditRecord,
    committed: Arc<AtomicBool>,
}

impl AuditDraft {
    /// A draft of `record`.
    pub fn new(record: AuditRecord) -> Self {
        AuditDraft { record, committed: Arc::new(AtomicBool::new(false)) }
    }

    /// Called by the shard once a batch holding the record is durable.
    pub fn mark_committed(&self) {
        self.committed.store(true, Ordering::Release);
    }

    /// Whether the record was committed with its change (any clone of the draft tells).
    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }
}

/// How an audited operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done (for a read: data was returned).
    Ok,
    /// Refused or failed, with the stable error code the caller saw (a PHN
    /// looked up outside the caller's scope is logged `FORBIDDEN` and answered
    /// as not found).
    Refused(String),
}

impl Outcome {
    /// `OK` or the error code.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Ok => "OK",
            Outcome::Refused(code) => code,
        }
    }

    /// The outcome of a result.
    pub fn of<T>(result: &Result<T, AttachError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Refused(e.code.as_str().to_string()),
        }
    }
}

/// One audited access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the operation finished.
    pub at: Timestamp,
    /// Unique with `at`.
    pub id: AuditId,
    /// The caller's token subject (`anonymous` without a token).
    pub subject: String,
    /// The caller's role.
    pub role: Role,
    /// What was done.
    pub operation: Operation,
    /// The shard touched, when one was.
    pub shard: Option<ShardKey>,
    /// The id of the record touched (registration reference, proposal id,
    /// provider id, facility number, endorsement id). Never a PHN: an id that
    /// is one (typed into the wrong field) is kept as [`NOT_A_TARGET`].
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What an audit record keeps for a target that is a valid PHN: a caller who
/// typed a patient's number into a provider or proposal id would otherwise
/// have put it in the log, which holds no personal data.
pub const NOT_A_TARGET: &str = "(a PHN, not kept)";

/// `target` with any part of it (`FACILITY/provider`, `FACILITY/subject`) that is
/// a valid PHN kept as [`NOT_A_TARGET`].
fn without_phns(target: String) -> String {
    let is_phn = crate::domain::Phn::is_spelled_in;
    if !target.split('/').any(is_phn) {
        return target;
    }
    target.split('/').map(|part| if is_phn(part) { NOT_A_TARGET } else { part }).collect::<Vec<_>>().join("/")
}

impl AuditRecord {
    /// A record of `who` doing `operation` now.
    pub fn new(
        who: &Principal,
        operation: Operation,
        shard: Option<ShardKey>,
        target: Option<String>,
        outcome: Outcome,
    ) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        AuditRecord {
            at: Timestamp(i64::try_from(now.as_millis()).unwrap_or(i64::MAX)),
            id: AuditId::generate(now.subsec_nanos() % 1_000_000),
            subject: who.subject().to_string(),
            role: who.role(),
            operation,
            shard,
            target: target.map(without_phns),
            outcome,
        }
    }

    /// The position of this record in the log, for paging.
    pub fn cursor(&self) -> AuditCursor {
        AuditCursor { at: self.at, id: self.id }
    }

    /// Whether the record passes a query's filters (not its cursor or time range).
    pub fn matches(&self, q: &AuditQuery) -> bool {
        q.subject.as_ref().is_none_or(|s| *s == self.subject)
            && q.operation.is_none_or(|o| o == self.operation)
            && q.role.is_none_or(|r| r == self.role)
            && q.shard.as_ref().is_none_or(|s| self.shard.as_ref() == Some(s))
            && q.target.as_ref().is_none_or(|t| self.target.as_ref() == Some(t))
    }
}

/// A position in the audit log: records are ordered by time, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AuditCursor {
    /// The record's time.
    pub at: Timestamp,
    /// The record's id.
    pub id: AuditId,
}

/// Which audit records to read: oldest first, after `after`, up to `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// From this time (inclusive).
    pub from: Option<Timestamp>,
    /// Until this time (exclusive).
    pub until: Option<Timestamp>,
    /// Only this caller.
    pub subject: Option<String>,
    /// Only this role.
    pub role: Option<Role>,
    /// Only this operation.
    pub operation: Option<Operation>,
    /// Only this shard.
    pub shard: Option<ShardKey>,
    /// Only this record id (a registration reference, a provider id...).
    pub target: Option<String>,
    /// Continue after this record.
    pub after: Option<AuditCursor>,
    /// At most this many.
    pub limit: usize,
}

impl AuditQuery {
    /// Where a scan starts: the later of `from` and just after `after`.
    pub fn start(&self) -> AuditCursor {
        let from = AuditCursor { at: self.from.unwrap_or(Timestamp(i64::MIN)), id: AuditId(0) };
        match self.after {
            Some(after) if after >= from => after,
            _ => from,
        }
    }

    /// Whether a record at `cursor` is past the start (`after` is exclusive).
    pub fn is_after_start(&self, cursor: AuditCursor) -> bool {
        match self.after {
            Some(after) => cursor > after && self.from.is_none_or(|f| cursor.at >= f),
            None => self.from.is_none_or(|f| cursor.at >= f),
        }
    }

    /// Whether a record at `at` is before the end of the time range.
    pub fn is_before_end(&self, at: Timestamp) -> bool {
        self.until.is_none_or(|u| at < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;

    fn record(at: i64, subject: &str, op: Operation) -> AuditRecord {
        let who = Principal::new(subject, Role::Coordinator, None, Scope::province());
        AuditRecord { at: Timestamp(at), id: AuditId(at as u64), ..AuditRecord::new(&who, op, None, None, Outcome::Ok) }
    }

    #[test]
    fn a_phn_given_as_a_target_is_not_kept() {
        let who = Principal::new("p-1", Role::Provider, None, Scope::province());
        let phn = crate::domain::Phn::with_body(91_234_567).or_else(|| crate::domain::Phn::with_body(91_234_568));
        let phn = phn.expect("one of two bodies has a check digit").expose();
        let dashed = format!("{}-{}-{}", &phn[..4], &phn[4..7], &phn[7..]);
        for typed in [phn.clone(), format!(" {phn} "), dashed] {
            let r = AuditRecord::new(&who, Operation::ReadPanel, None, Some(typed), Outcome::Ok);
            assert_eq!(r.target.as_deref(), Some(NOT_A_TARGET));
        }
        let clinic = AuditRecord::new(&who, Operation::ReadPanel, None, Some(format!("0F911/{phn}")), Outcome::Ok);
        assert_eq!(clinic.target.as_deref(), Some(&*format!("0F911/{NOT_A_TARGET}")), "a part of a target too");
        for id in ["P10001", "0F111/rn-1", "ABCDEFGHJKMN", "1234567890"] {
            let r = AuditRecord::new(&who, Operation::ReadPanel, None, Some(id.into()), Outcome::Ok);
            assert_eq!(r.target.as_deref(), Some(id), "not a PHN");
        }
    }

    #[test]
    fn filters_combine() {
        let r = record(10, "c-1", Operation::ReadWaitlist);
        assert!(r.matches(&AuditQuery::default()));
        assert!(r.matches(&AuditQuery { subject: Some("c-1".into()), ..Default::default() }));
        assert!(!r.matches(&AuditQuery { subject: Some("c-2".into()), ..Default::default() }));
        assert!(!r.matches(&AuditQuery { operation: Some(Operation::RunMatching), ..Default::default() }));
        assert!(r.matches(&AuditQuery { role: Some(Role::Coordinator), ..Default::default() }));
    }

    #[test]
    fn the_cursor_is_exclusive_and_the_range_half_open() {
        let q = AuditQuery {
            from: Some(Timestamp(5)),
            until: Some(Timestamp(20)),
            after: Some(record(10, "c", Operation::ReadWaitlist).cursor()),
            ..Default::default()
        };
        assert!(!q.is_after_start(record(10, "c", Operation::ReadWaitlist).cursor()));
        assert!(q.is_after_start(record(11, "c", Operation::ReadWaitlist).cursor()));
        assert!(q.is_before_end(Timestamp(19)));
        assert!(!q.is_before_end(Timestamp(20)));
        let q = AuditQuery { from: Some(Timestamp(5)), ..Default::default() };
        assert!(!q.is_after_start(record(4, "c", Operation::ReadWaitlist).cursor()));
        assert!(q.is_after_start(record(5, "c", Operation::ReadWaitlist).cursor()));
        assert_eq!(q.start().at, Timestamp(5));
    }

    #[test]
    fn ids_order_records_within_a_millisecond() {
        let early = AuditId::generate(5);
        let late = AuditId::generate(999_999);
        assert!(early < late);
        assert!(AuditId::generate(5_000_000) <= AuditId(u64::MAX), "out-of-range input is clamped");
    }

    #[test]
    fn outcomes_carry_the_code() {
        let refused: Result<(), AttachError> = Err(AttachError::not_found("registration"));
        assert_eq!(Outcome::of(&refused).as_str(), "NOT_FOUND");
        assert_eq!(Outcome::of(&Ok::<(), AttachError>(())).as_str(), "OK");
    }
}

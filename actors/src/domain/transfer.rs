//! Panel transfers: a medical director moves a whole panel from one provider to
//! another, patient by patient. The transfer is a durable record in the source
//! provider's shard, keyed by the caller's idempotency key, so a transfer that
//! stopped (a crash, a restart) is resumed by asking for it again.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{DomainError, FacilityNumber, ProviderId, ShardKey, Timestamp};

/// The caller's idempotency key for a transfer: 1 to 64 letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferKey(String);

impl TransferKey {
    /// Parses a key.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim();
        if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Ok(TransferKey(s.to_string()))
        } else {
            Err(DomainError::invalid("idempotencyKey", "an idempotency key is 1 to 64 letters, digits, - or _"))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferStatus {
    /// Moving patients; resumed by asking for the same key again.
    Running,
    /// Every patient has been moved.
    Completed,
}

/// A whole-panel transfer, kept by the source provider's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelTransfer {
    /// The idempotency key.
    pub key: TransferKey,
    /// The provider whose panel moves.
    pub from: ProviderId,
    /// The provider it moves to.
    pub to: ProviderId,
    /// The shard of the receiving provider.
    pub to_shard: ShardKey,
    /// The clinic the panel moves to (the receiving provider practises there).
    pub facility: FacilityNumber,
    /// Where it stands.
    pub status: TransferStatus,
    /// Patients on the source panel when the transfer started.
    pub total: u32,
    /// Patients moved so far.
    pub moved: u32,
    /// Entries dropped because the patient's PHN was held elsewhere (a stale entry).
    pub skipped: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// Last progress.
    pub updated_at: Timestamp,
}

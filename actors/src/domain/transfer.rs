//! Panel transfers: a medical director moves a whole panel from one provider to
//! another, patient by patient. The transfer is a durable record in the source
//! provider's shard, keyed by the caller's idempotency key, so a transfer that
//! stopped (a crash, a restart) is resumed by asking for it again.
//!
//! Both providers agree first: the one whose patients leave and the one who
//! takes them on. A director who is one of them agrees by asking;
//! `AWAITING → RUNNING` once both have, `AWAITING → CANCELLED` when either
//! declines or the director withdraws it, and `RUNNING → COMPLETED`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{DomainError, FacilityNumber, ProviderId, ShardKey, Timestamp, TransitionRefused};

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

    /// A key for a new transfer: also not a valid PHN (it is listed to both
    /// providers and to support; keys stored before are read with [`TransferKey::parse`]).
    pub fn parse_new(input: &str) -> Result<Self, DomainError> {
        let key = Self::parse(input)?;
        if super::Phn::is_spelled_in(key.as_str()) {
            return Err(DomainError::invalid("idempotencyKey", "this key is a valid PHN: choose another key"));
        }
        Ok(key)
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

/// Where a transfer stands. (Stored: new states go at the end.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferStatus {
    /// Moving patients; resumed by asking for the same key again.
    Running,
    /// Every patient has been moved.
    Completed,
    /// Waiting for the providers' agreement: which of them have agreed so far.
    Awaiting {
        /// The provider whose panel moves.
        source: bool,
        /// The provider who takes it on.
        receiver: bool,
    },
    /// Declined by one of the providers or withdrawn by a medical director
    /// before it ran, or stopped while it ran (a director stopped it, or the
    /// receiver left the clinic): the patients moved by then stay with the
    /// receiver (final).
    Cancelled,
}

impl TransferStatus {
    /// The name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            TransferStatus::Running => "RUNNING",
            TransferStatus::Completed => "COMPLETED",
            TransferStatus::Awaiting { .. } => "AWAITING_AGREEMENT",
            TransferStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether the transfer is still to run or running: one of these at a time per panel.
    pub fn is_open(self) -> bool {
        matches!(self, TransferStatus::Running | TransferStatus::Awaiting { .. })
    }
}

/// The two providers of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferSide {
    /// The provider whose panel moves.
    Source,
    /// The provider who takes it on.
    Receiver,
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
    /// Patients to move: on the source panel when the transfer started, then
    /// those moved or skipped so far and those still on the source panel.
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

impl PanelTransfer {
    /// The state a new transfer starts in: running when both providers have
    /// agreed already, awaiting the others' agreement otherwise.
    pub fn first_status(source: bool, receiver: bool) -> TransferStatus {
        if source && receiver { TransferStatus::Running } else { TransferStatus::Awaiting { source, receiver } }
    }

    /// Which side of the transfer `provider` is on, if either.
    pub fn side(&self, provider: &ProviderId) -> Option<TransferSide> {
        if *provider == self.from {
            Some(TransferSide::Source)
        } else if *provider == self.to {
            Some(TransferSide::Receiver)
        } else {
            None
        }
    }

    /// A provider's answer. The transfer runs once both sides have agreed, and
    /// `total` counts the panel then (`panel_size`). Agreeing again, even once
    /// it runs or ran (an answer whose reply was lost, asked again), changes
    /// nothing. Declining cancels it while it waits.
    pub fn answer(
        &self,
        side: TransferSide,
        agree: bool,
        panel_size: u32,
        now: Timestamp,
    ) -> Result<PanelTransfer, TransitionRefused> {
        let (source, receiver) = match self.status {
            TransferStatus::Awaiting { source, receiver } => (source, receiver),
            TransferStatus::Running | TransferStatus::Completed if agree => return Ok(self.clone()),
            _ => return Err(self.refuse(if agree { "agreed to" } else { "declined" })),
        };
        let status = match (agree, side) {
            (false, _) => TransferStatus::Cancelled,
            (true, TransferSide::Source) => Self::first_status(true, receiver),
            (true, TransferSide::Receiver) => Self::first_status(source, true),
        };
        if status == self.status {
            return Ok(self.clone());
        }
        let total = if status == TransferStatus::Running { panel_size } else { self.total };
        Ok(PanelTransfer { status, total, updated_at: now, ..self.clone() })
    }

    /// A medical director withdraws a transfer that has not run yet.
    /// Withdrawing it again changes nothing.
    pub fn withdraw(&self, now: Timestamp) -> Result<PanelTransfer, TransitionRefused> {
        self.cancel(matches!(self.status, TransferStatus::Awaiting { .. }), "withdrawn", now)
    }

    /// The runner stops a running transfer whose receiver has left the clinic:
    /// the patients moved so far stay with the receiver.
    pub fn stop(&self, now: Timestamp) -> Result<PanelTransfer, TransitionRefused> {
        self.cancel(self.status == TransferStatus::Running, "stopped", now)
    }

    /// `CANCELLED` when `allowed` from where it stands; a cancelled one stays as it is.
    fn cancel(&self, allowed: bool, what: &str, now: Timestamp) -> Result<PanelTransfer, TransitionRefused> {
        match self.status {
            _ if allowed => Ok(PanelTransfer { status: TransferStatus::Cancelled, updated_at: now, ..self.clone() }),
            TransferStatus::Cancelled => Ok(self.clone()),
            _ => Err(self.refuse(what)),
        }
    }

    fn refuse(&self, what: &str) -> TransitionRefused {
        TransitionRefused(format!("transfer {} is {} and cannot be {what}", self.key, self.status.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_transfer_key_is_not_a_phn() {
        assert!(TransferKey::parse_new("9698658215").is_err());
        assert!(TransferKey::parse_new("9698_658_215").is_err(), "the key's own separator");
        assert!(TransferKey::parse("9698658215").is_ok(), "a key stored before the check still reads");
        assert!(TransferKey::parse_new("move-2026-11").is_ok());
    }

    fn awaiting(source: bool, receiver: bool) -> PanelTransfer {
        PanelTransfer {
            key: TransferKey::parse("t-1").unwrap(),
            from: ProviderId::parse("P10001").unwrap(),
            to: ProviderId::parse("P20002").unwrap(),
            to_shard: ShardKey::parse("VIHA/61").unwrap(),
            facility: FacilityNumber::parse("0F111").unwrap(),
            status: PanelTransfer::first_status(source, receiver),
            total: 0,
            moved: 0,
            skipped: 0,
            started_at: Timestamp(1),
            updated_at: Timestamp(1),
        }
    }

    #[test]
    fn a_transfer_runs_once_both_providers_agree() {
        use TransferSide::*;
        let t = awaiting(false, false);
        assert_eq!(t.status, TransferStatus::Awaiting { source: false, receiver: false });
        let t = t.answer(Receiver, true, 9, Timestamp(2)).unwrap();
        assert_eq!(t.status, TransferStatus::Awaiting { source: false, receiver: true });
        assert_eq!(t.answer(Receiver, true, 9, Timestamp(3)).unwrap(), t, "agreeing twice changes nothing");
        let t = t.answer(Source, true, 7, Timestamp(4)).unwrap();
        assert_eq!((t.status, t.total, t.updated_at), (TransferStatus::Running, 7, Timestamp(4)));
        assert!(t.answer(Source, false, 7, Timestamp(5)).is_err(), "too late to decline a running transfer");
        assert_eq!(t.answer(Receiver, true, 7, Timestamp(5)).unwrap(), t, "an agreement asked again");
        assert!(t.withdraw(Timestamp(5)).is_err(), "too late to withdraw a running transfer");
        assert_eq!(t.stop(Timestamp(5)).unwrap().status, TransferStatus::Cancelled, "its runner stops it");
        let done = PanelTransfer { status: TransferStatus::Completed, ..t.clone() };
        assert!(done.stop(Timestamp(6)).is_err() && done.withdraw(Timestamp(6)).is_err(), "it moved everyone");
        assert!(awaiting(false, false).stop(Timestamp(2)).is_err(), "nothing runs to stop");
        // A director who is the source agreed by asking.
        assert_eq!(
            awaiting(true, false).answer(Receiver, true, 3, Timestamp(2)).unwrap().status,
            TransferStatus::Running
        );
        assert_eq!(PanelTransfer::first_status(true, true), TransferStatus::Running);
    }

    #[test]
    fn either_provider_or_the_director_can_stop_it_before_it_runs() {
        use TransferSide::*;
        for side in [Source, Receiver] {
            let t = awaiting(false, false).answer(side, false, 9, Timestamp(2)).unwrap();
            assert_eq!(t.status, TransferStatus::Cancelled);
            assert!(t.answer(Source, true, 9, Timestamp(3)).is_err(), "final");
        }
        let t = awaiting(true, false).withdraw(Timestamp(2)).unwrap();
        assert_eq!(t.status, TransferStatus::Cancelled);
        assert_eq!(t.withdraw(Timestamp(3)).unwrap(), t, "withdrawing twice changes nothing");
        assert_eq!(awaiting(false, false).side(&ProviderId::parse("P20002").unwrap()), Some(Receiver));
        assert_eq!(awaiting(false, false).side(&ProviderId::parse("P30003").unwrap()), None);
    }

    #[test]
    fn a_stored_transfer_of_either_kind_reads_back() {
        for t in [awaiting(true, true), awaiting(false, true), awaiting(false, false).withdraw(Timestamp(2)).unwrap()] {
            let bytes = postcard::to_allocvec(&t).unwrap();
            assert_eq!(postcard::from_bytes::<PanelTransfer>(&bytes).unwrap(), t);
        }
        // A status written before the new states reads as it was.
        #[derive(Serialize)]
        enum Before {
            Running,
            Completed,
        }
        for (before, now) in
            [(Before::Running, TransferStatus::Running), (Before::Completed, TransferStatus::Completed)]
        {
            let bytes = postcard::to_allocvec(&before).unwrap();
            assert_eq!(postcard::from_bytes::<TransferStatus>(&bytes).unwrap(), now);
        }
    }
}

//! Delegation: a provider endorses a staff member (a medical office assistant)
//! to manage their panel.
//!
//! `CREATED → RECEIVED → APPROVED | DECLINED`, then `APPROVED → COMPLETED`, and
//! `CANCELLED` from any state but `DECLINED` (a completed endorsement cancelled is
//! revoked). Either party starts it; the *other* party receives and approves or
//! declines it; the party who started it completes it. A delegate acts for the
//! provider only while the endorsement is `COMPLETED`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{DomainError, EndorsementId, ProviderId, ShardKey, Timestamp, TransitionRefused};

/// A staff member's user id, as their token's subject names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DelegateId(String);

/// The longest user id (a token's `sub`) Attach takes, in bytes.
pub const MAX_SUBJECT: usize = 256;

/// Whether `s` is a user id as a token's `sub` may carry it: 1 to
/// [`MAX_SUBJECT`] bytes, no control characters, no space at either end.
/// Identity providers' ids such as `auth0|64f1…` or `f:1c2e…:moa` pass.
pub fn is_subject(s: &str) -> bool {
    (1..=MAX_SUBJECT).contains(&s.len()) && !s.chars().any(char::is_control) && s.trim() == s
}

// The rules' texts (here, `STAFF_RULE` and the token's) say 256.
const _: () = assert!(MAX_SUBJECT == 256);

const RULE: &str =
    "a delegate is their user id, as their token's `sub` names them: 1 to 256 bytes, no control characters";

impl DelegateId {
    /// A user id as [`is_subject`] takes it, trimmed first.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim();
        if is_subject(s) { Ok(DelegateId(s.to_string())) } else { Err(DomainError::invalid("delegate", RULE)) }
    }

    /// A new delegate's or staff member's id, as a caller gives it: also not a
    /// valid PHN. Sign-in subjects are shown to the provider and to support,
    /// and a patient's number typed here would be kept and shown with them
    /// (ids stored before this check are read with [`DelegateId::parse`]).
    pub fn parse_new(input: &str) -> Result<Self, DomainError> {
        // As a token's `sub` is refused with them: trimmed quietly, the id would
        // not be what the caller sent, and they learn of it only from the answer.
        if super::has_invisible_ends(input) {
            return Err(DomainError::invalid(
                "delegate",
                "a user id has no spaces (or other characters that show nothing) before or after it",
            ));
        }
        let id = Self::parse(input)?;
        if id.as_str().chars().any(super::unprintable) {
            return Err(DomainError::invalid(
                "delegate",
                "a user id may not hold a bidirectional override or isolate, or a line separator",
            ));
        }
        if super::Phn::is_spelled_in(id.as_str()) {
            return Err(DomainError::invalid(
                "delegate",
                "this id is a valid PHN, not a sign-in subject: give the staff member's user id",
            ));
        }
        Ok(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

stored_as_text!(DelegateId);

impl fmt::Display for DelegateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two parties of an endorsement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Party {
    /// The provider who delegates.
    Provider,
    /// The staff member delegated to.
    Delegate,
}

impl Party {
    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::Provider => Party::Delegate,
            Party::Delegate => Party::Provider,
        }
    }
}

/// Where an endorsement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndorsementStatus {
    /// Started by one party.
    Created,
    /// Seen by the other party.
    Received,
    /// Agreed by the other party.
    Approved,
    /// Refused by the other party (final).
    Declined,
    /// Confirmed by the party who started it: the delegate may act.
    Completed,
    /// Withdrawn or revoked by either party (final).
    Cancelled,
}

impl EndorsementStatus {
    /// The name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            EndorsementStatus::Created => "CREATED",
            EndorsementStatus::Received => "RECEIVED",
            EndorsementStatus::Approved => "APPROVED",
            EndorsementStatus::Declined => "DECLINED",
            EndorsementStatus::Completed => "COMPLETED",
            EndorsementStatus::Cancelled => "CANCELLED",
        }
    }
}

/// A step of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndorsementStep {
    /// The other party acknowledges it.
    Receive,
    /// The other party agrees.
    Approve,
    /// The other party refuses.
    Decline,
    /// The starting party confirms; the delegation takes effect.
    Complete,
    /// Either party withdraws it, or revokes it once completed.
    Cancel,
}

/// A delegation from a provider to a staff member, kept by the provider's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// Its id.
    pub id: EndorsementId,
    /// The provider's shard.
    pub shard: ShardKey,
    /// The provider who delegates.
    pub provider: ProviderId,
    /// The staff member delegated to.
    pub delegate: DelegateId,
    /// Who started it.
    pub started_by: Party,
    /// Where it stands.
    pub status: EndorsementStatus,
    /// When it was started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Endorsement {
    /// A new endorsement, `CREATED` by `by`.
    pub fn new(
        id: EndorsementId,
        shard: ShardKey,
        provider: ProviderId,
        delegate: DelegateId,
        by: Party,
        now: Timestamp,
    ) -> Self {
        Endorsement {
            id,
            shard,
            provider,
            delegate,
            started_by: by,
            status: EndorsementStatus::Created,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether the delegate may act for the provider now.
    pub fn is_in_force(&self) -> bool {
        self.status == EndorsementStatus::Completed
    }

    /// Whether the endorsement can still change (not declined or cancelled).
    pub fn is_open(&self) -> bool {
        !matches!(self.status, EndorsementStatus::Declined | EndorsementStatus::Cancelled)
    }

    /// Takes `step` on behalf of `by`, or says why it cannot be taken.
    pub fn advance(&self, step: EndorsementStep, by: Party, now: Timestamp) -> Result<Self, TransitionRefused> {
        use EndorsementStatus as S;
        use EndorsementStep as T;
        let other = self.started_by.other();
        let next = match (step, self.status) {
            (T::Receive, S::Created) if by == other => S::Received,
            (T::Approve, S::Received) if by == other => S::Approved,
            (T::Decline, S::Created | S::Received) if by == other => S::Declined,
            (T::Complete, S::Approved) if by == self.started_by => S::Completed,
            (T::Cancel, S::Created | S::Received | S::Approved | S::Completed) => S::Cancelled,
            _ => {
                let who = if by == self.started_by { "the party who started it" } else { "the other party" };
                return Err(TransitionRefused(format!(
                    "endorsement {} is {}: {who} cannot {}",
                    self.id,
                    self.status.name(),
                    step_name(step)
                )));
            }
        };
        Ok(Endorsement { status: next, updated_at: now, ..self.clone() })
    }
}

fn step_name(step: EndorsementStep) -> &'static str {
    match step {
        EndorsementStep::Receive => "receive it",
        EndorsementStep::Approve => "approve it",
        EndorsementStep::Decline => "decline it",
        EndorsementStep::Complete => "complete it",
        EndorsementStep::Cancel => "cancel it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndorsementStatus as S;
    use EndorsementStep as T;

    fn started_by(by: Party) -> Endorsement {
        Endorsement::new(
            EndorsementId::parse("E000000001").unwrap(),
            ShardKey::parse("VIHA/61").unwrap(),
            ProviderId::parse("P00001").unwrap(),
            DelegateId::parse("moa-1").unwrap(),
            by,
            Timestamp(0),
        )
    }

    fn walk(mut e: Endorsement, steps: &[(T, Party)]) -> Result<Endorsement, TransitionRefused> {
        for (i, (step, by)) in steps.iter().enumerate() {
            e = e.advance(*step, *by, Timestamp(i as i64 + 1))?;
        }
        Ok(e)
    }

    #[test]
    fn a_new_delegate_id_is_not_a_phn_though_a_stored_one_still_reads() {
        let e = DelegateId::parse_new("9698658215").unwrap_err();
        assert!(e.message.contains("valid PHN"), "{e}");
        // Spaces around a new id are refused, as around a token's `sub`, not trimmed quietly.
        let e = DelegateId::parse_new(" moa-1 ").unwrap_err();
        assert!(e.message.contains("no spaces"), "{e}");
        // Nor a zero-width space or a byte-order mark, which trim leaves (a verifier's).
        assert!(DelegateId::parse_new("moa-1\u{200b}").is_err());
        assert!(DelegateId::parse_new("\u{feff}moa-1").is_err());
        assert_eq!(DelegateId::parse(" moa-1 ").unwrap().as_str(), "moa-1", "one stored trimmed still reads");
        assert!(DelegateId::parse("9698658215").is_ok(), "stored before the check: still read");
        assert!(DelegateId::parse_new("9698658216").is_ok(), "not a PHN: its check digit is wrong");
        assert!(DelegateId::parse_new("9698-658-215").is_err(), "however it is punctuated");
        assert!(DelegateId::parse_new("moa\u{202E}1").is_err(), "a bidirectional override");
        assert!(DelegateId::parse("moa\u{202E}1").is_ok(), "one stored before the check still reads");
        assert_eq!(DelegateId::parse_new("moa-7@fernie").unwrap().as_str(), "moa-7@fernie");
    }

    #[test]
    fn either_party_starts_and_the_other_confirms() {
        for starter in [Party::Provider, Party::Delegate] {
            let other = starter.other();
            let done =
                walk(started_by(starter), &[(T::Receive, other), (T::Approve, other), (T::Complete, starter)]).unwrap();
            assert_eq!(done.status, S::Completed);
            assert!(done.is_in_force());
            assert_eq!(done.updated_at, Timestamp(3));
        }
    }

    #[test]
    fn a_party_cannot_confirm_their_own_endorsement() {
        let e = started_by(Party::Provider);
        assert!(e.advance(T::Receive, Party::Provider, Timestamp(1)).is_err());
        let received = e.advance(T::Receive, Party::Delegate, Timestamp(1)).unwrap();
        assert!(received.advance(T::Approve, Party::Provider, Timestamp(2)).is_err());
        let approved = received.advance(T::Approve, Party::Delegate, Timestamp(2)).unwrap();
        assert!(approved.advance(T::Complete, Party::Delegate, Timestamp(3)).is_err());
    }

    #[test]
    fn steps_follow_the_order() {
        let e = started_by(Party::Delegate);
        assert!(e.advance(T::Approve, Party::Provider, Timestamp(1)).is_err(), "approve before receive");
        assert!(e.advance(T::Complete, Party::Delegate, Timestamp(1)).is_err(), "complete before approve");
        let declined = walk(e, &[(T::Receive, Party::Provider), (T::Decline, Party::Provider)]).unwrap();
        assert_eq!(declined.status, S::Declined);
        assert!(!declined.is_open());
        assert!(declined.advance(T::Cancel, Party::Delegate, Timestamp(9)).is_err(), "declined is final");
    }

    #[test]
    fn completed_endorsements_are_revocable_by_either_party() {
        for by in [Party::Provider, Party::Delegate] {
            let done = walk(
                started_by(Party::Provider),
                &[(T::Receive, Party::Delegate), (T::Approve, Party::Delegate), (T::Complete, Party::Provider)],
            )
            .unwrap();
            let revoked = done.advance(T::Cancel, by, Timestamp(10)).unwrap();
            assert_eq!(revoked.status, S::Cancelled);
            assert!(!revoked.is_in_force());
            assert!(revoked.advance(T::Cancel, by, Timestamp(11)).is_err(), "cancelled is final");
        }
    }

    #[test]
    fn delegate_ids_are_bounded() {
        assert!(DelegateId::parse("moa.jones@clinic-7").is_ok());
        assert!(DelegateId::parse("").is_err());
        assert!(DelegateId::parse("a\tb").is_err());
        assert!(DelegateId::parse(&"x".repeat(257)).is_err());
        // Identity providers' usual ids (Auth0, Google through Auth0, Keycloak federation).
        for id in ["auth0|64f1c2ab", "google-oauth2|1122334455", "f:5f0c-11:moa", &"x".repeat(256)] {
            assert_eq!(DelegateId::parse(id).unwrap().as_str(), id);
        }
        assert_eq!(DelegateId::parse("  moa-1 ").unwrap().as_str(), "moa-1", "trimmed");
        assert!(!is_subject(" moa-1"), "a token's subject is taken as it is");
    }
}

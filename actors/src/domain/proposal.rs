//! Proposals: `OPEN → ACCEPTED`, `OPEN → DECLINED`, `OPEN → EXPIRED`, and
//! `OPEN → CANCELLED` when the household withdraws.

use serde::{Deserialize, Serialize};

use super::{
    PanelEntry, ProposalId, ProviderId, RegistrationRef, ShardKey, Timestamp, registration::TransitionRefused,
};

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProposalStatus {
    /// Waiting for an answer.
    Open,
    /// Accepted: the household is on the provider's panel.
    Accepted,
    /// Declined by the provider or the patient.
    Declined,
    /// Not answered in time.
    Expired,
    /// The household withdrew while it was open.
    Cancelled,
    /// Accepted, then the attachment fell through: a coordinator returned the
    /// household to the waitlist (with its registration time) and the provider's
    /// panel let its members go.
    Returned,
}

impl ProposalStatus {
    /// The status as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            ProposalStatus::Open => "OPEN",
            ProposalStatus::Accepted => "ACCEPTED",
            ProposalStatus::Declined => "DECLINED",
            ProposalStatus::Expired => "EXPIRED",
            ProposalStatus::Cancelled => "CANCELLED",
            ProposalStatus::Returned => "RETURNED",
        }
    }
}

/// Who answered a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Responder {
    /// The provider (or their delegate).
    Provider,
    /// The patient or their household.
    Patient,
    /// An attachment coordinator on someone's behalf.
    Coordinator,
}

/// One part of a priority score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScorePart {
    /// What the part is for, e.g. `waited 120 days` or `need: PREGNANCY`.
    pub label: String,
    /// Its points (one point is one day of waiting).
    pub points: i64,
}

/// Why the matcher made a proposal: the score and how the provider was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreExplanation {
    /// The priority score (sum of `parts`).
    pub score: i64,
    /// The parts of the score.
    pub parts: Vec<ScorePart>,
    /// How the provider was chosen among those eligible.
    pub provider_fit: Vec<String>,
}

/// A suggestion: this household to this provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Id.
    pub id: ProposalId,
    /// The shard that made it.
    pub shard: ShardKey,
    /// The registration proposed.
    pub reference: RegistrationRef,
    /// The provider proposed to.
    pub provider: ProviderId,
    /// People in the household (the places it takes).
    pub household_size: u8,
    /// Whether the household counts as complex.
    pub complex: bool,
    /// Made at.
    pub created_at: Timestamp,
    /// Unanswered by then, it expires.
    pub expires_at: Timestamp,
    /// Where it stands.
    pub status: ProposalStatus,
    /// Why it was made.
    pub explanation: ScoreExplanation,
    /// When it was answered or ended.
    pub closed_at: Option<Timestamp>,
    /// Who declined it.
    pub declined_by: Option<Responder>,
    /// The reason given with a decline.
    pub decline_reason: Option<String>,
}

/// What closing a proposal to a provider homed in another community (a
/// spill-over match) leaves to do in the provider's community: free the places
/// it reserved there, or, if it was accepted, put the household on the panel.
/// The household's shard keeps it until the provider's shard has taken it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The proposal as it closed.
    pub proposal: Proposal,
    /// The panel entries to add there (only for an accepted proposal).
    pub entries: Vec<PanelEntry>,
}

impl Proposal {
    fn refuse(&self, what: &str) -> TransitionRefused {
        TransitionRefused(format!("proposal {} is {} and cannot be {what}", self.id, self.status.name()))
    }

    fn ensure_answerable(&self, now: Timestamp, what: &str) -> Result<(), TransitionRefused> {
        if self.status != ProposalStatus::Open {
            return Err(self.refuse(what));
        }
        if now >= self.expires_at {
            return Err(TransitionRefused(format!("proposal {} expired and can no longer be {what}", self.id)));
        }
        Ok(())
    }

    /// `OPEN → ACCEPTED`, refused once the proposal is past its expiry.
    pub fn accept(&self, now: Timestamp) -> Result<Self, TransitionRefused> {
        self.ensure_answerable(now, "accepted")?;
        Ok(Proposal { status: ProposalStatus::Accepted, closed_at: Some(now), ..self.clone() })
    }

    /// `OPEN → DECLINED`, refused once the proposal is past its expiry.
    pub fn decline(&self, by: Responder, reason: &str, now: Timestamp) -> Result<Self, TransitionRefused> {
        self.ensure_answerable(now, "declined")?;
        Ok(Proposal {
            status: ProposalStatus::Declined,
            closed_at: Some(now),
            declined_by: Some(by),
            decline_reason: Some(reason.to_string()),
            ..self.clone()
        })
    }

    /// `OPEN → EXPIRED`, only once its time has passed.
    pub fn expire(&self, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != ProposalStatus::Open || now < self.expires_at {
            return Err(self.refuse("expired"));
        }
        Ok(Proposal { status: ProposalStatus::Expired, closed_at: Some(now), ..self.clone() })
    }

    /// `ACCEPTED → RETURNED`: the attachment fell through, for `reason`, told
    /// by `by`. Refused for any other status. `closed_at` stays the acceptance
    /// time; when it fell through is the registration's decline and the feed's event.
    pub fn fall_through(&self, by: Responder, reason: &str) -> Result<Self, TransitionRefused> {
        if self.status != ProposalStatus::Accepted {
            return Err(self.refuse("returned"));
        }
        Ok(Proposal {
            status: ProposalStatus::Returned,
            declined_by: Some(by),
            decline_reason: Some(reason.to_string()),
            ..self.clone()
        })
    }

    /// `OPEN → CANCELLED`: the household withdrew.
    pub fn cancel(&self, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != ProposalStatus::Open {
            return Err(self.refuse("cancelled"));
        }
        Ok(Proposal { status: ProposalStatus::Cancelled, closed_at: Some(now), ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Proposal {
        Proposal {
            id: ProposalId::generate(),
            shard: ShardKey::parse("IHA/111").unwrap(),
            reference: RegistrationRef::generate(),
            provider: ProviderId::parse("P1234").unwrap(),
            household_size: 2,
            complex: false,
            created_at: Timestamp(0),
            expires_at: Timestamp(100),
            status: ProposalStatus::Open,
            explanation: ScoreExplanation { score: 0, parts: vec![], provider_fit: vec![] },
            closed_at: None,
            declined_by: None,
            decline_reason: None,
        }
    }

    #[test]
    fn open_can_be_accepted_declined_expired_or_cancelled() {
        assert_eq!(open().accept(Timestamp(10)).unwrap().status, ProposalStatus::Accepted);
        let d = open().decline(Responder::Patient, "too far", Timestamp(10)).unwrap();
        assert_eq!(
            (d.status, d.declined_by, d.decline_reason.as_deref()),
            (ProposalStatus::Declined, Some(Responder::Patient), Some("too far"))
        );
        assert_eq!(open().expire(Timestamp(100)).unwrap().status, ProposalStatus::Expired);
        assert_eq!(open().cancel(Timestamp(10)).unwrap().status, ProposalStatus::Cancelled);
    }

    #[test]
    fn closed_proposals_refuse_everything() {
        for closed in [
            open().accept(Timestamp(1)).unwrap(),
            open().decline(Responder::Provider, "x", Timestamp(1)).unwrap(),
            open().expire(Timestamp(100)).unwrap(),
            open().cancel(Timestamp(1)).unwrap(),
        ] {
            assert!(closed.accept(Timestamp(2)).is_err(), "{:?} accepted", closed.status);
            assert!(closed.decline(Responder::Provider, "x", Timestamp(2)).is_err());
            assert!(closed.expire(Timestamp(200)).is_err());
            assert!(closed.cancel(Timestamp(2)).is_err());
        }
    }

    #[test]
    fn only_an_accepted_proposal_can_fall_through_and_then_only_once() {
        let accepted = open().accept(Timestamp(1)).unwrap();
        let back = accepted.fall_through(Responder::Coordinator, "never seen").unwrap();
        assert_eq!(
            (back.status, back.closed_at, back.declined_by, back.decline_reason.as_deref()),
            (ProposalStatus::Returned, Some(Timestamp(1)), Some(Responder::Coordinator), Some("never seen")),
            "closed when accepted"
        );
        for not_accepted in [
            open(),
            open().decline(Responder::Provider, "x", Timestamp(1)).unwrap(),
            open().expire(Timestamp(100)).unwrap(),
            open().cancel(Timestamp(1)).unwrap(),
            back.clone(),
        ] {
            assert!(not_accepted.fall_through(Responder::Coordinator, "x").is_err());
        }
        assert!(back.accept(Timestamp(6)).is_err() && back.decline(Responder::Provider, "x", Timestamp(6)).is_err());
    }

    #[test]
    fn an_expired_proposal_cannot_be_answered_and_does_not_expire_early() {
        let p = open();
        let err = p.accept(Timestamp(100)).unwrap_err().0;
        assert!(err.contains("expired"), "{err}");
        assert!(p.decline(Responder::Provider, "x", Timestamp(150)).is_err());
        assert!(p.expire(Timestamp(99)).is_err());
    }
}

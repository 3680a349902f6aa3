//! Panels: the patients a provider is the most responsible provider for.

use serde::{Deserialize, Serialize};

use super::{DateOfBirth, FacilityNumber, PersonName, Phn, ProposalId, ProviderId, RegistrationRef, Timestamp};

/// How a patient came onto a panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PanelSource {
    /// Matched from the waitlist and accepted, before matched entries named
    /// their clinic (kept so stored entries still read back; no longer written).
    Match {
        /// The accepted proposal.
        proposal: ProposalId,
        /// The registration it came from.
        reference: RegistrationRef,
    },
    /// Submitted in a panel list before submissions named their facility
    /// (kept so stored entries still read back; no longer written).
    Upload,
    /// Submitted by the provider (or a delegate) in a panel list for a clinic.
    Submitted {
        /// The clinic the panel was submitted for.
        facility: FacilityNumber,
        /// The registration the patient was waiting under, if they were on the waitlist.
        reference: Option<RegistrationRef>,
    },
    /// Moved from another provider's panel by a medical director's transfer.
    Transferred {
        /// The provider the patient was with.
        from: ProviderId,
        /// The clinic the panel was moved to.
        facility: FacilityNumber,
    },
    /// Matched from the waitlist and accepted.
    Matched {
        /// The accepted proposal.
        proposal: ProposalId,
        /// The registration it came from.
        reference: RegistrationRef,
        /// The clinic the patient joins: the provider's only clinic when they
        /// practise at exactly one, else none (see [`Provider::sole_clinic`](super::Provider::sole_clinic)).
        facility: Option<FacilityNumber>,
    },
    /// Matched from the waitlist and accepted, with whether this patient has a
    /// complex need, so panel reports count it wherever the registration lives
    /// (a provider homed in another community keeps no copy of it). Written
    /// since session 9; earlier matches are [`PanelSource::Matched`].
    MatchedWithNeeds {
        /// The accepted proposal.
        proposal: ProposalId,
        /// The registration it came from.
        reference: RegistrationRef,
        /// The clinic the patient joins, as for [`PanelSource::Matched`].
        facility: Option<FacilityNumber>,
        /// Whether this patient reported a complex need when the proposal was accepted.
        complex: bool,
    },
    /// Moved from another provider's panel by a transfer, from an entry that
    /// knew whether the patient has a complex need (one that did not is
    /// [`PanelSource::Transferred`]).
    TransferredWithNeeds {
        /// The provider the patient was with.
        from: ProviderId,
        /// The clinic the panel was moved to.
        facility: FacilityNumber,
        /// Whether the patient has a complex need, as the entry moved said.
        complex: bool,
    },
    /// Moved from another provider's panel by a transfer, having come off the
    /// waitlist through Attach (matched, or taken from the waitlist by a
    /// submitted panel): still that attachment, counted at its time wherever
    /// the panel now is. Written since session 11; earlier transfers of such
    /// patients are [`PanelSource::Transferred`] or [`PanelSource::TransferredWithNeeds`].
    TransferredAttachment {
        /// The provider the patient was with.
        from: ProviderId,
        /// The clinic the panel was moved to.
        facility: FacilityNumber,
        /// Whether the patient has a complex need, when the entry moved knew.
        complex: Option<bool>,
        /// When the patient came off the waitlist onto a panel.
        attached_at: Timestamp,
    },
}

impl PanelSource {
    /// Whether the patient came by a transfer from another provider's panel.
    pub fn transferred(&self) -> bool {
        matches!(
            self,
            PanelSource::Transferred { .. }
                | PanelSource::TransferredWithNeeds { .. }
                | PanelSource::TransferredAttachment { .. }
        )
    }

    /// The registration the patient came from, when they came off the waitlist.
    pub fn reference(&self) -> Option<RegistrationRef> {
        match self {
            PanelSource::Match { reference, .. }
            | PanelSource::Matched { reference, .. }
            | PanelSource::MatchedWithNeeds { reference, .. } => Some(*reference),
            PanelSource::Submitted { reference, .. } => *reference,
            PanelSource::Upload
            | PanelSource::Transferred { .. }
            | PanelSource::TransferredWithNeeds { .. }
            | PanelSource::TransferredAttachment { .. } => None,
        }
    }

    /// The accepted proposal the patient came with, when matched from the waitlist.
    pub fn proposal(&self) -> Option<ProposalId> {
        match self {
            PanelSource::Match { proposal, .. }
            | PanelSource::Matched { proposal, .. }
            | PanelSource::MatchedWithNeeds { proposal, .. } => Some(*proposal),
            _ => None,
        }
    }

    /// The clinic the entry was made for, when known.
    pub fn facility(&self) -> Option<&FacilityNumber> {
        match self {
            PanelSource::Submitted { facility, .. }
            | PanelSource::Transferred { facility, .. }
            | PanelSource::TransferredWithNeeds { facility, .. }
            | PanelSource::TransferredAttachment { facility, .. } => Some(facility),
            PanelSource::Matched { facility, .. } | PanelSource::MatchedWithNeeds { facility, .. } => facility.as_ref(),
            PanelSource::Match { .. } | PanelSource::Upload => None,
        }
    }

    /// A matched entry written before entries knew complexity, told it: the
    /// same match, as [`PanelSource::MatchedWithNeeds`]. Other entries stay as they are.
    pub fn knowing_complexity(self, complex: bool) -> PanelSource {
        match self {
            PanelSource::Match { proposal, reference } => {
                PanelSource::MatchedWithNeeds { proposal, reference, facility: None, complex }
            }
            PanelSource::Matched { proposal, reference, facility } => {
                PanelSource::MatchedWithNeeds { proposal, reference, facility, complex }
            }
            PanelSource::TransferredAttachment { from, facility, complex: None, attached_at } => {
                PanelSource::TransferredAttachment { from, facility, complex: Some(complex), attached_at }
            }
            other => other,
        }
    }

    /// A matched entry without a clinic yet: where the provider's community
    /// names one (their only clinic) when it takes the entry.
    pub fn unset_facility(&mut self) -> Option<&mut Option<FacilityNumber>> {
        match self {
            PanelSource::Matched { facility: f @ None, .. }
            | PanelSource::MatchedWithNeeds { facility: f @ None, .. } => Some(f),
            _ => None,
        }
    }

    /// Whether the patient has a complex need, when the entry itself says
    /// (otherwise their registration may, where it lives).
    pub fn complex(&self) -> Option<bool> {
        match self {
            PanelSource::MatchedWithNeeds { complex, .. } | PanelSource::TransferredWithNeeds { complex, .. } => {
                Some(*complex)
            }
            PanelSource::TransferredAttachment { complex, .. } => *complex,
            _ => None,
        }
    }
}

/// One patient on one provider's panel (billing: service code 98990, a $0 claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelEntry {
    /// The provider.
    pub provider: ProviderId,
    /// The patient.
    pub phn: Phn,
    /// Given name.
    pub given_name: PersonName,
    /// Surname.
    pub surname: PersonName,
    /// Date of birth.
    pub date_of_birth: DateOfBirth,
    /// When the patient was attached.
    pub attached_at: Timestamp,
    /// How.
    pub source: PanelSource,
}

impl PanelEntry {
    /// The service code of an attachment claim.
    pub const SERVICE_CODE: &'static str = "98990";

    /// When the patient came off the waitlist through Attach, if they did:
    /// what attachment counts and rates count. A transfer keeps it.
    pub fn attachment_time(&self) -> Option<Timestamp> {
        match &self.source {
            PanelSource::TransferredAttachment { attached_at, .. } => Some(*attached_at),
            source => source.reference().map(|_| self.attached_at),
        }
    }
}

/// A waiting patient a submitted panel is taking off the waitlist, kept by the
/// provider's shard from the submission's first step (which finds them
/// waiting) to its last (which saves their entry). Between the two their
/// registration lets them go and passes their PHN's claim to the panel; a
/// submission cut off there is finished by the shard's next pass
/// (DECISIONS 44), so a patient is never left on neither list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelIntake {
    /// The provider.
    pub provider: ProviderId,
    /// The patient.
    pub phn: Phn,
    /// Given name, as the file gave it.
    pub given_name: PersonName,
    /// Surname, as the file gave it.
    pub surname: PersonName,
    /// Date of birth, as the file gave it.
    pub date_of_birth: DateOfBirth,
    /// The clinic the file was submitted for.
    pub facility: FacilityNumber,
    /// The registration the patient is waiting under.
    pub reference: RegistrationRef,
    /// When the submission found them waiting.
    pub at: Timestamp,
}

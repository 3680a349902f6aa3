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
}

impl PanelSource {
    /// The registration the patient came from, when they came off the waitlist.
    pub fn reference(&self) -> Option<RegistrationRef> {
        match self {
            PanelSource::Match { reference, .. } | PanelSource::Matched { reference, .. } => Some(*reference),
            PanelSource::Submitted { reference, .. } => *reference,
            PanelSource::Upload | PanelSource::Transferred { .. } => None,
        }
    }

    /// The clinic the entry was made for, when known.
    pub fn facility(&self) -> Option<&FacilityNumber> {
        match self {
            PanelSource::Submitted { facility, .. } | PanelSource::Transferred { facility, .. } => Some(facility),
            PanelSource::Matched { facility, .. } => facility.as_ref(),
            PanelSource::Match { .. } | PanelSource::Upload => None,
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
}

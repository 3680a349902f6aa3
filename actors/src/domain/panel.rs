//! Panels: the patients a provider is the most responsible provider for.

use serde::{Deserialize, Serialize};

use super::{DateOfBirth, PersonName, Phn, ProposalId, ProviderId, RegistrationRef, Timestamp};

/// How a patient came onto a panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PanelSource {
    /// Matched from the waitlist and accepted.
    Match {
        /// The accepted proposal.
        proposal: ProposalId,
        /// The registration it came from.
        reference: RegistrationRef,
    },
    /// Submitted by the provider in a panel list.
    Upload,
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

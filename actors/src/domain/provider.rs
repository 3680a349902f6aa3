//! Providers and the capacity they declare.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AgeGroup, DomainError, FacilityNumber, Language, PersonName, ProviderId, ShardKey, Timestamp};

/// What kind of primary care provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProviderKind {
    /// A family physician.
    Physician,
    /// A nurse practitioner.
    NursePractitioner,
}

/// How many complex patients a provider will take among those proposed to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplexityMix {
    /// At most this percentage (0–100) of the month's places (the monthly
    /// rate's: free now and already held) go to households with a complex
    /// need, counting those already proposed or attached this month. 100 means no limit.
    pub max_complex_share_pct: u8,
}

impl ComplexityMix {
    /// Validates the percentage.
    pub fn new(max_complex_share_pct: u32) -> Result<Self, DomainError> {
        u8::try_from(max_complex_share_pct)
            .ok()
            .filter(|p| *p <= 100)
            .map(|p| ComplexityMix { max_complex_share_pct: p })
            .ok_or_else(|| {
                DomainError::invalid("complexSharePercent", "the complex share is a percentage from 0 to 100")
            })
    }
}

impl Default for ComplexityMix {
    fn default() -> Self {
        ComplexityMix { max_complex_share_pct: 100 }
    }
}

/// What a provider declares about taking new patients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Whether the provider takes new patients at all.
    pub accepting: bool,
    /// New patients a month the provider will take.
    pub monthly_rate: u32,
    /// The panel size the provider aims for.
    pub desired_panel_size: u32,
    /// The share of complex patients the provider will take.
    pub complexity: ComplexityMix,
    /// Languages the provider offers care in (empty: not stated).
    pub languages: Vec<Language>,
    /// Age groups the provider takes (empty: all).
    pub age_groups: BTreeSet<AgeGroup>,
}

impl Capacity {
    /// The largest monthly rate and panel size accepted.
    pub const MAX_MONTHLY_RATE: u32 = 1_000;
    /// The largest desired panel size accepted.
    pub const MAX_PANEL_SIZE: u32 = 10_000;

    /// Checks the bounds of a declaration.
    pub fn new(
        accepting: bool,
        monthly_rate: u32,
        desired_panel_size: u32,
        complexity: ComplexityMix,
        languages: Vec<Language>,
        age_groups: BTreeSet<AgeGroup>,
    ) -> Result<Self, DomainError> {
        if monthly_rate > Self::MAX_MONTHLY_RATE {
            return Err(DomainError::invalid("monthlyRate", "a monthly rate is at most 1000 new patients"));
        }
        if desired_panel_size > Self::MAX_PANEL_SIZE {
            return Err(DomainError::invalid("desiredPanelSize", "a desired panel size is at most 10000"));
        }
        let languages = Language::once_each(languages);
        if languages.len() > 10 {
            return Err(DomainError::invalid("languages", "list at most 10 languages"));
        }
        Ok(Capacity { accepting, monthly_rate, desired_panel_size, complexity, languages, age_groups })
    }

    /// A provider not taking anyone: how a new provider starts.
    pub fn closed() -> Self {
        Capacity {
            accepting: false,
            monthly_rate: 0,
            desired_panel_size: 0,
            complexity: ComplexityMix::default(),
            languages: vec![],
            age_groups: BTreeSet::new(),
        }
    }
}

/// A physician or nurse practitioner, kept by the shard of their home community
/// (which owns their capacity and panel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Practitioner number.
    pub id: ProviderId,
    /// Given name.
    pub given_name: PersonName,
    /// Surname.
    pub surname: PersonName,
    /// Physician or nurse practitioner.
    pub kind: ProviderKind,
    /// The home community, whose shard owns this provider's capacity and panel.
    pub shard: ShardKey,
    /// Clinics the provider practises at.
    pub clinics: Vec<FacilityNumber>,
    /// The current declaration.
    pub capacity: Capacity,
    /// Patients on the panel that Attach knows only as a count (reported to the
    /// registry). Itemised entries add to it; each patient a submitted panel
    /// lists takes one off it (down to 0), being one of those counted.
    pub reported_panel_size: u32,
    /// When the provider was registered.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Provider {
    /// The clinic a patient matched to this provider joins: the one clinic
    /// they practise at. With several, a match names none, because nothing in
    /// a proposal says which clinic the household will go to, and guessing
    /// would put patients in the wrong clinic's reports (docs/DECISIONS.md 22).
    pub fn sole_clinic(&self) -> Option<&FacilityNumber> {
        match self.clinics.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }
}

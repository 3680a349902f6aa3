//! Events: every committed transition of a shard, in sequence order.

use serde::{Deserialize, Serialize};

use super::{ProposalId, ProposalStatus, ProviderId, RegistrationRef, Responder, ShardKey, Timestamp};

/// A shard's event sequence number: 1 for its first event, +1 for each after.
pub type Seq = u64;

/// One committed change. Carries ids, never a PHN or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The shard that committed it.
    pub shard: ShardKey,
    /// Its place in the shard's sequence.
    pub seq: Seq,
    /// When it was committed.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A household joined the waitlist.
    Registered { reference: RegistrationRef, household_size: u8 },
    /// A registration left the waitlist for good.
    Withdrawn { reference: RegistrationRef },
    /// A household was proposed to a provider.
    Proposed { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId },
    /// A proposal was accepted.
    Accepted { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId },
    /// A proposal was declined and the household returned to the waitlist.
    Declined { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId, by: Responder },
    /// A proposal ran out of time and the household returned to the waitlist.
    Expired { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId },
    /// Patients who came off the waitlist (matched, or listed on a submitted
    /// panel while waiting) joined a panel (service code 98990): told once, by
    /// the panel's community.
    Attached { reference: Option<RegistrationRef>, provider: ProviderId, patients: u16 },
    /// A provider's capacity or preferences changed.
    CapacityChanged { provider: ProviderId },
    /// A provider was added to or changed in the registry.
    ProviderUpdated { provider: ProviderId },
    /// A clinic was added to or changed in the registry.
    ClinicUpdated { facility: String },
    /// Patients were taken off a panel (removed by the provider, or moved out by a transfer).
    Detached { provider: ProviderId, patients: u32 },
    /// A panel transfer started, moved a chunk, or finished.
    TransferUpdated { from: ProviderId, to: ProviderId, moved: u32, done: bool },
    /// A household left this community's waitlist for another's.
    MovedOut { reference: RegistrationRef, to: ShardKey },
    /// A household joined this community's waitlist from another, keeping its registration time.
    MovedIn { reference: RegistrationRef, from: ShardKey, household_size: u8 },
    /// A waiting household changed (members or needs), keeping its place in line.
    HouseholdUpdated { reference: RegistrationRef, household_size: u8 },
    /// A household of another community was proposed to a provider homed here
    /// (spill-over matching): its places are held here while the proposal is open.
    Reserved {
        proposal: ProposalId,
        reference: RegistrationRef,
        provider: ProviderId,
        from: ShardKey,
        household_size: u8,
    },
    /// Such a proposal closed (`status`) and its places here are no longer held;
    /// an accepted household's members joined the panel here (an `Attached` event too).
    ReservationClosed {
        proposal: ProposalId,
        reference: RegistrationRef,
        provider: ProviderId,
        from: ShardKey,
        status: ProposalStatus,
    },
    /// An attachment through an accepted proposal fell through: the household is
    /// waiting again with its registration time, and the provider's panel lets
    /// its members go (a `Detached` event where the panel is).
    Returned { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId, people: u16 },
    /// Waiting members were listed on a provider's submitted panel and left the
    /// waitlist (the panel's community tells `Attached` as it takes them).
    LeftForPanel { reference: RegistrationRef, provider: ProviderId, patients: u16 },
    /// Patients already the provider's joined a panel here: a submitted panel's
    /// rows that were not waiting, or patients a transfer moved onto it. Not
    /// attachments (DECISIONS 19), so not `Attached`, which counts only patients
    /// who came off the waitlist.
    Listed { provider: ProviderId, patients: u32 },
    /// An open proposal was cancelled because its household withdrew or moved
    /// to another community's waitlist (told with `Withdrawn` or `MovedOut`).
    ProposalCancelled { proposal: ProposalId, reference: RegistrationRef, provider: ProviderId },
}

impl EventKind {
    /// A stable name for the kind, for the feed and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Registered { .. } => "REGISTERED",
            EventKind::Withdrawn { .. } => "WITHDRAWN",
            EventKind::Proposed { .. } => "PROPOSED",
            EventKind::Accepted { .. } => "ACCEPTED",
            EventKind::Declined { .. } => "DECLINED",
            EventKind::Expired { .. } => "EXPIRED",
            EventKind::Attached { .. } => "ATTACHED",
            EventKind::CapacityChanged { .. } => "CAPACITY_CHANGED",
            EventKind::ProviderUpdated { .. } => "PROVIDER_UPDATED",
            EventKind::ClinicUpdated { .. } => "CLINIC_UPDATED",
            EventKind::Detached { .. } => "DETACHED",
            EventKind::TransferUpdated { .. } => "TRANSFER_UPDATED",
            EventKind::MovedOut { .. } => "MOVED_OUT",
            EventKind::MovedIn { .. } => "MOVED_IN",
            EventKind::HouseholdUpdated { .. } => "HOUSEHOLD_UPDATED",
            EventKind::Reserved { .. } => "RESERVED",
            EventKind::ReservationClosed { .. } => "RESERVATION_CLOSED",
            EventKind::Returned { .. } => "RETURNED",
            EventKind::LeftForPanel { .. } => "LEFT_FOR_PANEL",
            EventKind::Listed { .. } => "LISTED",
            EventKind::ProposalCancelled { .. } => "PROPOSAL_CANCELLED",
        }
    }
}

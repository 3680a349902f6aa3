//! What a shard actor is asked, and what it answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::access::Principal;
use crate::domain::{
    Capacity, Clinic, DateOfBirth, DelegateId, Endorsement, EndorsementId, EndorsementStep, FacilityNumber, Household,
    Need, PanelEntry, PanelTransfer, Phn, PlaceHolders, Proposal, ProposalId, ProposalStatus, Provider, ProviderId,
    Registration, RegistrationMove, RegistrationRef, Settlement, ShardKey, StaffInput, StaffMember, Timestamp,
    TransferKey,
};
use crate::error::AttachError;
use crate::panel::{
    ChunkAnswer, PanelChunk, PanelReport, Release, TransferAccepted, TransferAnswer, TransferRequest, Transferring,
};

use super::plan::{Answer, ClinicCommand, ProviderInput};

/// A reply port carrying a result for the caller.
pub type Reply<T> = RpcReplyPort<Result<T, AttachError>>;

/// A waiting registration's standing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegistrationView {
    /// The registration.
    pub registration: Registration,
    /// 1-based place in the community's line and the people ahead (while waiting).
    pub place: Option<(u64, u64)>,
    /// Its open or last proposal.
    pub proposal: Option<Proposal>,
    /// Days it can expect to wait from now, while waiting (see [`estimated_wait_days`]).
    /// Not sent between nodes (the view crosses them in a move's answer, and
    /// older nodes do not know the field), so such an answer has none.
    #[serde(skip)]
    pub estimated_wait_days: Option<u32>,
}

/// The days over which the attachment rate behind wait estimates is measured.
pub const RATE_WINDOW_DAYS: i64 = 28;

/// Days until `people` more are attached at the rate measured over the last
/// [`RATE_WINDOW_DAYS`] (`attached_people_28d`); `None` when nobody was
/// attached in that window, since there is no rate to go by.
pub fn estimated_wait_days(people: u64, attached_people_28d: u64) -> Option<u32> {
    (attached_people_28d > 0).then(|| {
        let per_day = attached_people_28d as f64 / RATE_WINDOW_DAYS as f64;
        (people as f64 / per_day).ceil().min(f64::from(u32::MAX)) as u32
    })
}

/// Which slice of the waitlist to read.
#[derive(Debug, Clone, Default)]
pub struct WaitlistQuery {
    /// Start after this (registration time, reference).
    pub after: Option<(Timestamp, RegistrationRef)>,
    /// At most this many items (already capped by the caller).
    pub limit: usize,
    /// Only households reporting any of these needs (empty: all).
    pub needs: Vec<Need>,
    /// Only households waiting at least this many days.
    pub min_wait_days: Option<u32>,
}

/// A page of the waitlist.
#[derive(Debug, Clone)]
pub struct WaitlistPage {
    /// The registrations, in line order, shared with the shard's state (not copied).
    pub items: Vec<Arc<Registration>>,
    /// Whether more match after the last.
    pub has_next: bool,
    /// Waiting households in the community (unfiltered).
    pub total_waiting: u64,
}

/// A page of proposals.
#[derive(Debug, Clone)]
pub struct ProposalPage {
    /// Newest first.
    pub items: Vec<Proposal>,
    /// Whether more match after the last.
    pub has_next: bool,
}

/// Where a page of proposals starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalsFrom {
    /// From the newest.
    Start,
    /// After the proposal made at that time with that id (a cursor naming the
    /// last item read: a change between pages neither skips nor repeats one).
    After(Timestamp, ProposalId),
    /// After skipping this many (a cursor from before session 14).
    Offset(usize),
}

/// A page of a panel.
#[derive(Debug, Clone)]
pub struct PanelPage {
    /// Entries by PHN order (opaque to callers).
    pub items: Vec<PanelEntry>,
    /// Whether more follow.
    pub has_next: bool,
    /// Panel size (reported + itemised).
    pub panel_size: u32,
}

/// A provider with what the shard derives about them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProviderView {
    /// The registry entry.
    pub provider: Provider,
    /// Reported plus itemised panel.
    pub panel_size: u32,
    /// Places free for matching now.
    pub free_places: u32,
    /// Places held by open proposals.
    pub open_places: u32,
}

/// A shard's numbers, mergeable across shards.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    /// Households waiting.
    pub waiting_households: u64,
    /// People waiting.
    pub waiting_people: u64,
    /// Households with an open proposal.
    pub proposed_households: u64,
    /// People in them.
    pub proposed_people: u64,
    /// People attached, ever (itemised).
    pub attached_people: u64,
    /// People attached in the last 7 days.
    pub attached_people_week: u64,
    /// People attached in the last 28 days (the measured rate's window).
    pub attached_people_28d: u64,
    /// Waiting households by whole days waited.
    pub wait_histogram: BTreeMap<u32, u64>,
    /// Providers accepting new patients.
    pub accepting_providers: u64,
    /// Free places offered now.
    pub free_places: u64,
}

/// Counts a shard keeps current, cheap enough for every metrics scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardGauges {
    /// Households waiting.
    pub waiting_households: u64,
    /// People waiting.
    pub waiting_people: u64,
    /// Households with an open proposal.
    pub proposed_households: u64,
    /// The shard's last event sequence number.
    pub last_seq: u64,
    /// Closed spill-over proposals not yet settled with their provider's community.
    pub settlements_pending: u64,
    /// Proposals and reservations held in memory: the open ones and those
    /// closed within `ShardConfig::proposal_memory`.
    pub proposals_in_memory: u64,
}

/// A household on its way to another community: the `MOVED` copy the
/// community joined takes, and who holds its place if not everyone in it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Moving {
    /// The `MOVED` copy.
    pub registration: Registration,
    /// Its place holders, as the community left keeps them.
    pub holders: Option<PlaceHolders>,
    /// The sign-in subject of the patient who registered it, if one did.
    pub owner: Option<String>,
}

/// A message to a shard actor. Each query or command carries its reply port.
#[derive(Debug)]
pub enum ShardMsg {
    /// Register a household (PHNs are claimed by the actor), owned by the
    /// signed-in patient whose subject it names, if one registers it.
    Register(Household, Option<String>, Reply<RegistrationView>),
    /// Withdraw a registration.
    Withdraw(RegistrationRef, String, Reply<RegistrationView>),
    /// The household declines the proposal open for its registration.
    DeclineMatch(RegistrationRef, String, Reply<Proposal>),
    /// An attached household whose attachment fell through goes back to the
    /// waitlist with its registration time, for the given reason.
    ReturnToWaitlist(RegistrationRef, String, Reply<RegistrationView>),
    /// A waiting household as it is now (members, needs), keeping its place.
    UpdateHousehold(RegistrationRef, Household, Option<Timestamp>, Reply<RegistrationView>),
    /// A registration's standing.
    GetRegistration(RegistrationRef, Reply<RegistrationView>),
    /// The sign-in subject of the patient who registered a registration, if
    /// a signed-in patient did (`NOT_FOUND` when no such registration is here).
    OwnerOf(RegistrationRef, Reply<Option<String>>),
    /// The registrations here that a signed-in patient registered, by their
    /// subject (`MOVED` copies included).
    OwnedBy(String, Reply<Vec<RegistrationView>>),
    /// A page of the waitlist.
    Waitlist(WaitlistQuery, Reply<WaitlistPage>),
    /// Create or update a provider, with the clinics the provider was listed at
    /// when the caller's right to make the change was checked (`None`: no such
    /// provider then); refused with `CONFLICT` if that changed since.
    UpsertProvider(ProviderInput, Option<Vec<crate::domain::FacilityNumber>>, Reply<ProviderView>),
    /// Set a provider's capacity.
    SetCapacity(ProviderId, Capacity, Reply<ProviderView>),
    /// A provider.
    GetProvider(ProviderId, Reply<ProviderView>),
    /// Every provider homed here.
    ListProviders(Reply<Vec<ProviderView>>),
    /// Create or update a clinic (by its medical director).
    UpsertClinic(ClinicCommand, Principal, Reply<Clinic>),
    /// A clinic.
    GetClinic(FacilityNumber, Reply<Clinic>),
    /// Every clinic here.
    ListClinics(Reply<Vec<Clinic>>),
    /// Add a member to a clinic's staff list (by its medical director).
    AddClinicStaff {
        /// The clinic.
        facility: FacilityNumber,
        /// The member.
        input: StaffInput,
        /// Who asks.
        who: Principal,
        /// Where to answer.
        reply: Reply<StaffMember>,
    },
    /// Take a member off a clinic's staff list (by its medical director); answers the member removed.
    RemoveClinicStaff {
        /// The clinic.
        facility: FacilityNumber,
        /// The member's sign-in subject.
        subject: DelegateId,
        /// Who asks.
        who: Principal,
        /// Where to answer.
        reply: Reply<StaffMember>,
    },
    /// The part of a clinic's staff list the caller may see.
    ClinicStaff(FacilityNumber, Principal, Reply<Vec<StaffMember>>),
    /// Run the matcher.
    RunMatching(Reply<Vec<Proposal>>),
    /// Proposals, newest first, optionally by status and provider.
    ListProposals {
        /// Only these statuses (empty: all).
        statuses: Vec<ProposalStatus>,
        /// Only this provider.
        provider: Option<ProviderId>,
        /// Where the page starts.
        from: ProposalsFrom,
        /// At most this many.
        limit: usize,
        /// Where to answer.
        reply: Reply<ProposalPage>,
    },
    /// A proposal.
    GetProposal(ProposalId, Reply<Proposal>),
    /// Accept or decline a proposal (by its provider or a coordinator).
    AnswerProposal(ProposalId, Answer, Principal, Reply<Proposal>),
    /// A page of a provider's panel.
    Panel {
        /// The provider.
        provider: ProviderId,
        /// Skip this many.
        offset: usize,
        /// At most this many.
        limit: usize,
        /// Who asks (the provider, their delegate, support).
        who: Principal,
        /// Where to answer.
        reply: Reply<PanelPage>,
    },
    /// Start a delegation endorsement.
    StartEndorsement {
        /// The provider who delegates.
        provider: ProviderId,
        /// The staff member.
        delegate: DelegateId,
        /// Who starts it (one of the two).
        who: Principal,
        /// Where to answer.
        reply: Reply<Endorsement>,
    },
    /// Take a step of an endorsement's workflow.
    AdvanceEndorsement(EndorsementId, EndorsementStep, Principal, Reply<Endorsement>),
    /// An endorsement, if the caller is one of its parties (or support).
    GetEndorsement(EndorsementId, Principal, Reply<Endorsement>),
    /// A provider's endorsements the caller may see.
    ListEndorsements(ProviderId, Principal, Reply<Vec<Endorsement>>),
    /// The shard's numbers.
    Stats(Reply<ShardStats>),
    /// The shard's cheap gauges (O(1)), for metrics scrapes.
    Gauges(Reply<ShardGauges>),
    /// Expire overdue proposals (sent by the actor's own timer).
    ExpireDue,
    /// Add a chunk of a submitted panel to a provider homed here.
    SubmitPanel(PanelChunk, Principal, Reply<ChunkAnswer>),
    /// The intakes of panel submissions cut off between their steps before a
    /// time (`ShardRuntime::stale_intakes`).
    StaleIntakes(Timestamp, Reply<Vec<crate::domain::PanelIntake>>),
    /// Ends intakes: entries for `take`, nothing for `forget`
    /// (`ShardRuntime::settle_intakes`); answers the patients attached.
    SettleIntakes { take: Vec<crate::domain::PanelIntake>, forget: Vec<(ProviderId, Phn)>, reply: Reply<usize> },
    /// Whether the caller may change a provider's panel (a file refused whole
    /// is refused for the caller's right first).
    MayChangePanel(ProviderId, Principal, Reply<()>),
    /// Let waiting members go to a provider's panel (step one of two); per PHN,
    /// `None` when its claim now names the panel, else why not.
    ReleaseToPanel(Release, Vec<(Phn, DateOfBirth)>, Reply<Vec<(Phn, Option<&'static str>)>>),
    /// Remove patients from a panel; per PHN, whether it was on the panel.
    RemoveFromPanel {
        /// The provider.
        provider: ProviderId,
        /// The patients.
        phns: Vec<Phn>,
        /// Who asks (the provider or their endorsed delegate).
        who: Principal,
        /// Where to answer.
        reply: Reply<Vec<bool>>,
    },
    /// List a provider at a clinic (`present`), or take them off it.
    SetProviderClinic {
        /// The provider.
        provider: ProviderId,
        /// The clinic.
        facility: FacilityNumber,
        /// Listed or not.
        present: bool,
        /// Where to answer.
        reply: Reply<ProviderView>,
    },
    /// Start a panel transfer out of a provider homed here (or find it by key).
    BeginTransfer(TransferRequest, Reply<PanelTransfer>),
    /// A provider agrees to a transfer or declines it, or a director withdraws it.
    AnswerTransfer {
        /// The source provider.
        from: ProviderId,
        /// The transfer's key.
        key: TransferKey,
        /// The answer.
        answer: TransferAnswer,
        /// Where to answer.
        reply: Reply<PanelTransfer>,
    },
    /// A transfer and the next entries it has to move.
    TransferBatch {
        /// The source provider.
        from: ProviderId,
        /// The transfer's key.
        key: TransferKey,
        /// At most this many entries.
        limit: usize,
        /// Where to answer.
        reply: Reply<(PanelTransfer, Vec<PanelEntry>)>,
    },
    /// Receive entries of a transfer into a provider homed here (step one).
    AcceptTransfer(Transferring, Reply<TransferAccepted>),
    /// Drop the moved entries from the source panel and record progress (step two).
    CompleteTransfer {
        /// The source provider.
        from: ProviderId,
        /// The transfer's key.
        key: TransferKey,
        /// What the receiving shard did.
        done: TransferAccepted,
        /// Where to answer.
        reply: Reply<PanelTransfer>,
    },
    /// Transfers out of providers homed here that have not finished.
    RunningTransfers(Reply<Vec<PanelTransfer>>),
    /// The transfers kept here in which a provider is either side.
    TransfersOf(ProviderId, Reply<Vec<PanelTransfer>>),
    /// A registration leaves for another community (step one of a move): answers
    /// its `MOVED` copy and the record of the move.
    MoveOut(RegistrationRef, ShardKey, Reply<(Moving, RegistrationMove)>),
    /// A moving registration joins this community's waitlist (step two).
    MoveIn(Box<Moving>, Reply<RegistrationView>),
    /// Close the record of a move out of here (step three).
    FinishMove(RegistrationRef, Reply<()>),
    /// Moves out of here not yet closed, each with its `MOVED` copy.
    RunningMoves(Reply<Vec<(Moving, RegistrationMove)>>),
    /// Panel reports: one provider homed here, or those listed at a clinic.
    PanelReports {
        /// Only this provider.
        provider: Option<ProviderId>,
        /// Only providers listed at this clinic.
        facility: Option<FacilityNumber>,
        /// Who asks.
        who: Principal,
        /// Where to answer.
        reply: Reply<Vec<PanelReport>>,
    },
    /// Spill-over proposals this shard's waiting households would get from a
    /// neighbouring community's providers (planned, not recorded).
    PlanSpill {
        /// The neighbouring community.
        neighbour: ShardKey,
        /// How far away it is, in whole kilometres.
        km: u32,
        /// Its providers, with their free places.
        providers: Vec<ProviderView>,
        /// Where to answer.
        reply: Reply<Vec<Proposal>>,
    },
    /// A coordinator's proposal of a waiting household to a provider homed
    /// here, checked by matching's rules and recorded.
    ProposeMatch {
        /// The household's registration.
        reference: RegistrationRef,
        /// The provider chosen.
        provider: ProviderId,
        /// The coordinator's note, shown with the proposal.
        note: String,
        /// Where to answer.
        reply: Reply<Proposal>,
    },
    /// A coordinator's proposal of a waiting household here to a provider
    /// homed in another community (read there), checked and planned, not
    /// recorded: that community reserves the places first, as for spill-over.
    PlanProposal {
        /// The household's registration.
        reference: RegistrationRef,
        /// The provider chosen, with their free places.
        provider: ProviderView,
        /// How far away the provider's community is, in whole kilometres.
        km: u32,
        /// The coordinator's note, shown with the proposal.
        note: String,
        /// Where to answer.
        reply: Reply<Proposal>,
    },
    /// The providers homed here with places their own community's waiting
    /// households would leave (`free_places` is that spare), for a neighbour's spill-over.
    SparePlaces(Reply<Vec<ProviderView>>),
    /// Reserve places of providers homed here for proposals made in a
    /// neighbouring community (spill-over step one); answers those reserved.
    Reserve(Vec<Proposal>, Reply<Vec<ProposalId>>),
    /// Record spill-over proposals whose households still wait (step two); answers those recorded.
    RecordSpill(Vec<Proposal>, Reply<Vec<Proposal>>),
    /// Take a closed spill-over proposal's settlement (in the provider's shard).
    Settle(Settlement, Reply<()>),
    /// Closed spill-over proposals made here and not yet settled.
    Settlements(Reply<Vec<Settlement>>),
    /// Forget a settlement the provider's shard has taken.
    Settled(ProposalId, crate::domain::ProposalStatus, Reply<()>),
    /// Open reservations of providers homed here old enough to be looked for
    /// in their household's shard, and not yet found there.
    UnconfirmedReservations(Reply<Vec<Proposal>>),
    /// A reservation's proposal was found in its household's shard.
    ReservationConfirmed(ProposalId, Reply<()>),
    /// Renew the shard's lease in the store (sent by the actor's own timer).
    RenewLease,
    /// A message sent from inside a span: the shard handles it as part of that
    /// trace (the directory wraps every call this way).
    Traced(Box<Traced>),
}

/// A message and the span of the call that sent it.
#[derive(Debug)]
pub struct Traced {
    /// The caller's span.
    pub span: tracing::Span,
    /// The message.
    pub msg: ShardMsg,
    /// The audit record of the change the message asks for, committed with it.
    pub audit: Option<crate::audit::AuditDraft>,
}

impl ShardMsg {
    /// The message's name, for spans (never its contents: they may hold personal data).
    pub fn name(&self) -> &'static str {
        match self {
            ShardMsg::Register(..) => "register",
            ShardMsg::Withdraw(..) => "withdraw",
            ShardMsg::DeclineMatch(..) => "declineMatch",
            ShardMsg::ReturnToWaitlist(..) => "returnToWaitlist",
            ShardMsg::UpdateHousehold(..) => "updateHousehold",
            ShardMsg::GetRegistration(..) => "getRegistration",
            ShardMsg::OwnerOf(..) => "ownerOf",
            ShardMsg::OwnedBy(..) => "ownedBy",
            ShardMsg::Waitlist(..) => "waitlist",
            ShardMsg::UpsertProvider(..) => "upsertProvider",
            ShardMsg::SetCapacity(..) => "setCapacity",
            ShardMsg::GetProvider(..) => "getProvider",
            ShardMsg::ListProviders(..) => "listProviders",
            ShardMsg::UpsertClinic(..) => "upsertClinic",
            ShardMsg::GetClinic(..) => "getClinic",
            ShardMsg::ListClinics(..) => "listClinics",
            ShardMsg::AddClinicStaff { .. } => "addClinicStaff",
            ShardMsg::RemoveClinicStaff { .. } => "removeClinicStaff",
            ShardMsg::ClinicStaff(..) => "clinicStaff",
            ShardMsg::RunMatching(..) => "runMatching",
            ShardMsg::ListProposals { .. } => "listProposals",
            ShardMsg::GetProposal(..) => "getProposal",
            ShardMsg::AnswerProposal(..) => "answerProposal",
            ShardMsg::Panel { .. } => "panel",
            ShardMsg::StartEndorsement { .. } => "startEndorsement",
            ShardMsg::AdvanceEndorsement(..) => "advanceEndorsement",
            ShardMsg::GetEndorsement(..) => "getEndorsement",
            ShardMsg::ListEndorsements(..) => "listEndorsements",
            ShardMsg::Stats(..) => "stats",
            ShardMsg::Gauges(..) => "gauges",
            ShardMsg::ExpireDue => "expireDue",
            ShardMsg::SubmitPanel(..) => "submitPanel",
            ShardMsg::StaleIntakes(..) => "staleIntakes",
            ShardMsg::SettleIntakes { .. } => "settleIntakes",
            ShardMsg::ReleaseToPanel(..) => "releaseToPanel",
            ShardMsg::MayChangePanel(..) => "mayChangePanel",
            ShardMsg::RemoveFromPanel { .. } => "removeFromPanel",
            ShardMsg::SetProviderClinic { .. } => "setProviderClinic",
            ShardMsg::BeginTransfer(..) => "beginTransfer",
            ShardMsg::AnswerTransfer { .. } => "answerTransfer",
            ShardMsg::TransferBatch { .. } => "transferBatch",
            ShardMsg::AcceptTransfer(..) => "acceptTransfer",
            ShardMsg::CompleteTransfer { .. } => "completeTransfer",
            ShardMsg::RunningTransfers(..) => "runningTransfers",
            ShardMsg::TransfersOf(..) => "transfersOf",
            ShardMsg::MoveOut(..) => "moveOut",
            ShardMsg::MoveIn(..) => "moveIn",
            ShardMsg::FinishMove(..) => "finishMove",
            ShardMsg::RunningMoves(..) => "runningMoves",
            ShardMsg::PanelReports { .. } => "panelReports",
            ShardMsg::PlanSpill { .. } => "planSpill",
            ShardMsg::ProposeMatch { .. } => "proposeMatch",
            ShardMsg::PlanProposal { .. } => "planProposal",
            ShardMsg::SparePlaces(..) => "sparePlaces",
            ShardMsg::Reserve(..) => "reserve",
            ShardMsg::RecordSpill(..) => "recordSpill",
            ShardMsg::Settle(..) => "settle",
            ShardMsg::Settlements(..) => "settlements",
            ShardMsg::Settled(..) => "settled",
            ShardMsg::UnconfirmedReservations(..) => "unconfirmedReservations",
            ShardMsg::ReservationConfirmed(..) => "reservationConfirmed",
            ShardMsg::RenewLease => "renewLease",
            ShardMsg::Traced(t) => t.msg.name(),
        }
    }
}

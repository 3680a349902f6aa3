//! Steps on a shard another node of the cluster runs.
//!
//! A request goes whole to the node holding the shard it starts in
//! (`gateway/src/forward.rs`, docs/DECISIONS.md record 28). A few requests then
//! need a second shard, which may run on another node:
//! - step two of a move (the community joined);
//! - a waiting patient a submitted panel names (their registration's community);
//! - a chunk of a panel transfer (the receiving provider's community);
//! - the fan-out of a health authority's statistics and of a clinic's panel reports;
//! - reads that hold no patient record and are not audited (a community's
//!   statistics, a provider's or clinic's registry entry, a panel report), so a
//!   request may ask for several communities' at once, wherever they run;
//! - a clinic's or a provider's registry entry, read to check a request made
//!   elsewhere (is the caller the clinic's medical director, is the provider
//!   listed at the clinic);
//! - spill-over matching's steps in a neighbouring community: its providers'
//!   free places, reserving them, and settling a closed proposal there; and,
//!   from the provider's community, whether the household's recorded an old
//!   reservation's proposal.
//!
//! Each of those is a [`ShardCall`]. When its shard does not run here and the
//! gateway has linked the system to its peers ([`AttachSystem::set_peers`]),
//! the call goes to the node holding that shard, which runs it on its own shard
//! actor ([`AttachSystem::serve_remote`]) and answers. Nothing else crosses:
//! these are steps that are already durable and safe to repeat on their own, so
//! a call whose answer is lost is finished by asking again, as locally.
//!
//! The wire format is postcard behind a protocol byte: nodes running different
//! versions refuse each other's calls rather than misread them.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::access::Principal;
use crate::audit::{AuditDraft, AuditRecord};
use crate::domain::{
    Clinic, DateOfBirth, FacilityNumber, Phn, PlaceHolders, Proposal, ProposalId, ProviderId, Registration, Settlement,
    ShardKey,
};
use crate::error::{AttachError, ErrorCode};
use crate::panel::{PanelReport, Release, TransferAccepted, Transferring};
use crate::shard::{Moving, ProviderView, RegistrationView, ShardMsg, ShardStats};

use super::AttachSystem;

/// The version of the calls' wire format, the first byte of every body.
pub const PROTOCOL: u8 = 1;

/// A step one node asks of a shard another node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardCall {
    /// A clinic's registry entry.
    GetClinic(FacilityNumber),
    /// A provider's registry entry.
    GetProvider(ProviderId),
    /// A move's step two: the community joined takes the household.
    MoveIn(Registration),
    /// A panel submission's step one: the registration lets members go.
    ReleaseToPanel(Release),
    /// A chunk of a panel transfer reaches the receiving provider.
    AcceptTransfer(Transferring),
    /// The community's counts.
    Stats,
    /// Panel reports, of one provider or of a clinic's providers homed there.
    PanelReports {
        /// One provider's.
        provider: Option<ProviderId>,
        /// The providers listed at this clinic.
        facility: Option<FacilityNumber>,
        /// The caller, whose access the shard checks.
        who: Principal,
    },
    /// The providers homed in the community with places to spare for a neighbour.
    SparePlaces,
    /// Spill-over step one: reserve places for proposals made in a neighbouring community.
    Reserve(Vec<Proposal>),
    /// A closed spill-over proposal settled with its provider's community.
    Settle(Settlement),
    /// Whether the household's community recorded a proposal (spill-over step
    /// two), asked by the provider's community about an old open reservation.
    ProposalRecorded(ProposalId),
    /// The panel transfers kept here in which a provider is either side.
    TransfersOf(ProviderId),
    /// The sequence number of the community's last committed event.
    LastSeq,
    /// A move's step two for a household in which not everyone holds its
    /// place (`MoveIn` is the same with everyone holding it).
    MoveInHeld(Registration, PlaceHolders),
    /// `ReleaseToPanel` with the dates of birth the panel gives: a member born
    /// on another day is not let go (`ReleaseToPanel` checks none).
    ReleaseToPanelBorn(Release, Vec<(Phn, DateOfBirth)>),
    /// A move's step two for a household a signed-in patient registered: its
    /// place holders (if not everyone in it holds the place) and its owner's subject.
    MoveInOwned(Registration, Option<PlaceHolders>, String),
    /// The registrations kept here that the patient signed in as this subject registered.
    OwnedBy(String),
}

/// The answer to a [`ShardCall`], one variant per call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardAnswer {
    /// To `GetClinic`.
    Clinic(Clinic),
    /// To `GetProvider`.
    Provider(Box<ProviderView>),
    /// To `MoveIn`.
    Registration(Box<RegistrationView>),
    /// To `ReleaseToPanel`: per PHN, why it could not be let go, if it could not.
    Released(Vec<(Phn, Option<String>)>),
    /// To `AcceptTransfer`.
    Transfer(TransferAccepted),
    /// To `Stats`.
    Stats(ShardStats),
    /// To `PanelReports`.
    Reports(Vec<PanelReport>),
    /// To `SparePlaces`.
    Providers(Vec<ProviderView>),
    /// To `Reserve`: the proposals whose places were reserved.
    Reserved(Vec<ProposalId>),
    /// To `Settle`.
    Settled,
    /// To `ProposalRecorded`.
    Recorded(bool),
    /// To `TransfersOf`.
    Transfers(Vec<crate::domain::PanelTransfer>),
    /// To `LastSeq`.
    LastSeq(u64),
    /// To `OwnedBy`.
    Registrations(Vec<RegistrationView>),
}

/// A call as it crosses: the shard, the step, and the audit record the step
/// commits with its change (a panel submission's step is audited where it lands).
#[derive(Serialize, Deserialize)]
struct Request {
    shard: ShardKey,
    call: ShardCall,
    audit: Option<AuditRecord>,
}

/// An answer as it crosses, and whether the audit record was committed with the step.
#[derive(Serialize, Deserialize)]
struct Reply {
    answer: ShardAnswer,
    audited: bool,
}

/// The gateway's link to the other nodes: sends an encoded call to the node
/// holding `shard` and answers the body of its reply. A node that cannot be
/// reached is `SHARD_UNAVAILABLE`.
pub trait Peers: Send + Sync {
    /// Sends `body` to the node holding `shard`.
    fn send<'a>(
        &'a self,
        system: &'a AttachSystem,
        shard: &'a ShardKey,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, AttachError>>;
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut body = vec![PROTOCOL];
    match postcard::to_stdvec(value) {
        Ok(bytes) => body.extend(bytes),
        // Plain data of known length: not expected; the other side then refuses an empty call.
        Err(e) => tracing::error!(error = %e, "a call between nodes could not be written"),
    }
    body
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AttachError> {
    let garbled = |why: String| {
        tracing::error!(why, "a call between nodes could not be read");
        AttachError::new(ErrorCode::Internal, "the nodes of the cluster could not understand each other")
    };
    match body.split_first() {
        Some((&PROTOCOL, rest)) => postcard::from_bytes(rest).map_err(|e| garbled(e.to_string())),
        Some((other, _)) => Err(garbled(format!("protocol {other}, this node speaks {PROTOCOL}: versions differ"))),
        None => Err(garbled("an empty body".into())),
    }
}

fn unexpected(answer: &ShardAnswer) -> AttachError {
    tracing::error!(?answer, "a node answered a call with the answer to another");
    AttachError::new(ErrorCode::Internal, "a node of the cluster answered out of turn")
}

impl AttachSystem {
    /// Links the system to the other nodes, for the steps of a request on
    /// shards it does not run. Set once: before the shards start, or when a
    /// node started alone joins a cluster.
    pub fn set_peers(&self, peers: std::sync::Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("the system is already linked to its peers");
        }
    }

    /// Whether the system is linked to its peers ([`AttachSystem::set_peers`]).
    pub fn linked_to_peers(&self) -> bool {
        self.peers.get().is_some()
    }

    /// Runs `call` on `shard`: here if this node runs it, else on the node
    /// holding it (with peers). An audit draft is committed with the step where
    /// it lands. An error from another node never asks to forward the request
    /// (its `notHere` mark is dropped): this node may already have done its part.
    async fn on_shard(
        &self,
        shard: &ShardKey,
        call: ShardCall,
        audit: Option<AuditDraft>,
    ) -> Result<ShardAnswer, AttachError> {
        let peers = match self.peers.get() {
            Some(peers) if self.directory.actor(shard).is_none() => peers,
            _ => return self.run_here(shard, call, audit).await,
        };
        let request = Request { shard: shard.clone(), call, audit: audit.as_ref().map(|d| d.record.clone()) };
        let body = peers.send(self, shard, encode(&request)).await?;
        let reply = decode::<Result<Reply, AttachError>>(&body)?.map_err(|e| AttachError { not_here: None, ..e })?;
        if let Some(draft) = audit.filter(|_| reply.audited) {
            draft.mark_committed();
        }
        Ok(reply.answer)
    }

    /// Runs a call a peer sent (the body of its request) on a shard of this
    /// node, and answers the body of the reply. Never sent on again: a shard
    /// that does not run here either is `SHARD_UNAVAILABLE`.
    pub async fn serve_remote(&self, body: &[u8]) -> Vec<u8> {
        let reply = async {
            let request: Request = decode(body)?;
            let draft = request.audit.map(AuditDraft::new);
            let answer = self.run_here(&request.shard, request.call, draft.clone()).await?;
            Ok(Reply { answer, audited: draft.is_some_and(|d| d.is_committed()) })
        }
        .await;
        encode::<Result<Reply, AttachError>>(&reply)
    }

    async fn run_here(
        &self,
        shard: &ShardKey,
        call: ShardCall,
        audit: Option<AuditDraft>,
    ) -> Result<ShardAnswer, AttachError> {
        let d = &self.directory;
        Ok(match call {
            ShardCall::GetClinic(f) => {
                ShardAnswer::Clinic(d.call_with(shard, audit, |r| ShardMsg::GetClinic(f, r)).await?)
            }
            ShardCall::GetProvider(id) => {
                ShardAnswer::Provider(Box::new(d.call_with(shard, audit, |r| ShardMsg::GetProvider(id, r)).await?))
            }
            ShardCall::MoveIn(registration) => {
                let moving = Moving { registration, holders: None, owner: None };
                let view = d.call_with(shard, audit, |r| ShardMsg::MoveIn(Box::new(moving), r)).await?;
                ShardAnswer::Registration(Box::new(view))
            }
            ShardCall::MoveInHeld(registration, holders) => {
                let moving = Moving { registration, holders: Some(holders), owner: None };
                let view = d.call_with(shard, audit, |r| ShardMsg::MoveIn(Box::new(moving), r)).await?;
                ShardAnswer::Registration(Box::new(view))
            }
            ShardCall::MoveInOwned(registration, holders, owner) => {
                let moving = Moving { registration, holders, owner: Some(owner) };
                let view = d.call_with(shard, audit, |r| ShardMsg::MoveIn(Box::new(moving), r)).await?;
                ShardAnswer::Registration(Box::new(view))
            }
            ShardCall::ReleaseToPanel(release) => {
                let released = d.call_with(shard, audit, |r| ShardMsg::ReleaseToPanel(release, vec![], r)).await?;
                ShardAnswer::Released(released.into_iter().map(|(phn, why)| (phn, why.map(str::to_string))).collect())
            }
            ShardCall::ReleaseToPanelBorn(release, born) => {
                let released = d.call_with(shard, audit, |r| ShardMsg::ReleaseToPanel(release, born, r)).await?;
                ShardAnswer::Released(released.into_iter().map(|(phn, why)| (phn, why.map(str::to_string))).collect())
            }
            ShardCall::AcceptTransfer(t) => {
                ShardAnswer::Transfer(d.call_with(shard, audit, |r| ShardMsg::AcceptTransfer(t, r)).await?)
            }
            ShardCall::Stats => ShardAnswer::Stats(d.call_with(shard, audit, ShardMsg::Stats).await?),
            ShardCall::PanelReports { provider, facility, who } => ShardAnswer::Reports(
                d.call_with(shard, audit, |reply| ShardMsg::PanelReports { provider, facility, who, reply }).await?,
            ),
            ShardCall::SparePlaces => ShardAnswer::Providers(d.call_with(shard, audit, ShardMsg::SparePlaces).await?),
            ShardCall::Reserve(proposals) => {
                ShardAnswer::Reserved(d.call_with(shard, audit, |r| ShardMsg::Reserve(proposals, r)).await?)
            }
            ShardCall::Settle(settlement) => {
                d.call_with(shard, audit, |r| ShardMsg::Settle(settlement, r)).await?;
                ShardAnswer::Settled
            }
            ShardCall::ProposalRecorded(id) => {
                match d.call_with(shard, audit, |r| ShardMsg::GetProposal(id, r)).await {
                    Ok(_) => ShardAnswer::Recorded(true),
                    Err(e) if e.code == ErrorCode::NotFound => ShardAnswer::Recorded(false),
                    Err(e) => return Err(e),
                }
            }
            ShardCall::TransfersOf(provider) => {
                ShardAnswer::Transfers(d.call_with(shard, audit, |r| ShardMsg::TransfersOf(provider, r)).await?)
            }
            ShardCall::LastSeq => ShardAnswer::LastSeq(d.call_with(shard, audit, ShardMsg::Gauges).await?.last_seq),
            ShardCall::OwnedBy(subject) => {
                ShardAnswer::Registrations(d.call_with(shard, audit, |r| ShardMsg::OwnedBy(subject, r)).await?)
            }
        })
    }

    /// The sequence number of a community's last committed event, wherever it runs.
    pub(super) async fn last_seq_at(&self, shard: &ShardKey) -> Result<u64, AttachError> {
        match self.on_shard(shard, ShardCall::LastSeq, None).await? {
            ShardAnswer::LastSeq(seq) => Ok(seq),
            other => Err(unexpected(&other)),
        }
    }

    /// The panel transfers a shard keeps in which `provider` is either side, wherever it runs.
    pub(super) async fn transfers_at(
        &self,
        shard: &ShardKey,
        provider: &ProviderId,
    ) -> Result<Vec<crate::domain::PanelTransfer>, AttachError> {
        match self.on_shard(shard, ShardCall::TransfersOf(provider.clone()), None).await? {
            ShardAnswer::Transfers(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// The registrations a shard keeps that the patient signed in as `subject` registered, wherever it runs.
    pub(super) async fn owned_at(&self, shard: &ShardKey, subject: &str) -> Result<Vec<RegistrationView>, AttachError> {
        match self.on_shard(shard, ShardCall::OwnedBy(subject.to_owned()), None).await? {
            ShardAnswer::Registrations(views) => Ok(views),
            other => Err(unexpected(&other)),
        }
    }

    /// A community's providers with places to spare for a neighbour, wherever it runs.
    pub(super) async fn spare_places_at(&self, shard: &ShardKey) -> Result<Vec<ProviderView>, AttachError> {
        match self.on_shard(shard, ShardCall::SparePlaces, None).await? {
            ShardAnswer::Providers(views) => Ok(views),
            other => Err(unexpected(&other)),
        }
    }

    /// Spill-over step one, wherever the providers' community runs.
    pub(super) async fn reserve_at(
        &self,
        shard: &ShardKey,
        proposals: Vec<Proposal>,
    ) -> Result<Vec<ProposalId>, AttachError> {
        match self.on_shard(shard, ShardCall::Reserve(proposals), None).await? {
            ShardAnswer::Reserved(ids) => Ok(ids),
            other => Err(unexpected(&other)),
        }
    }

    /// A settlement taken by the provider's community, wherever it runs.
    pub(super) async fn settle_at(&self, shard: &ShardKey, settlement: Settlement) -> Result<(), AttachError> {
        match self.on_shard(shard, ShardCall::Settle(settlement), None).await? {
            ShardAnswer::Settled => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether the household's community `shard` recorded proposal `id`, wherever it runs.
    pub(super) async fn proposal_recorded_at(&self, shard: &ShardKey, id: ProposalId) -> Result<bool, AttachError> {
        match self.on_shard(shard, ShardCall::ProposalRecorded(id), None).await? {
            ShardAnswer::Recorded(recorded) => Ok(recorded),
            other => Err(unexpected(&other)),
        }
    }

    /// A clinic's registry entry, wherever its community runs.
    pub(super) async fn clinic_at(&self, shard: &ShardKey, facility: FacilityNumber) -> Result<Clinic, AttachError> {
        match self.on_shard(shard, ShardCall::GetClinic(facility), None).await? {
            ShardAnswer::Clinic(clinic) => Ok(clinic),
            other => Err(unexpected(&other)),
        }
    }

    /// A provider's registry entry, wherever they are homed.
    pub(super) async fn provider_at(&self, shard: &ShardKey, id: ProviderId) -> Result<ProviderView, AttachError> {
        match self.on_shard(shard, ShardCall::GetProvider(id), None).await? {
            ShardAnswer::Provider(view) => Ok(*view),
            other => Err(unexpected(&other)),
        }
    }

    /// A move's step two, wherever the community joined runs.
    pub(super) async fn move_in(&self, shard: &ShardKey, moving: Moving) -> Result<RegistrationView, AttachError> {
        // The calls older nodes know, where they say everything.
        let call = match (moving.holders, moving.owner) {
            (None, None) => ShardCall::MoveIn(moving.registration),
            (Some(holders), None) => ShardCall::MoveInHeld(moving.registration, holders),
            (holders, Some(owner)) => ShardCall::MoveInOwned(moving.registration, holders, owner),
        };
        match self.on_shard(shard, call, None).await? {
            ShardAnswer::Registration(view) => Ok(*view),
            other => Err(unexpected(&other)),
        }
    }

    /// A submitted panel's waiting patients let go by their registration,
    /// wherever it is; one whose date of birth there is not `born`'s is not.
    pub(super) async fn release_to_panel(
        &self,
        shard: &ShardKey,
        release: Release,
        born: Vec<(Phn, DateOfBirth)>,
        audit: AuditDraft,
    ) -> Result<Vec<(Phn, Option<String>)>, AttachError> {
        match self.on_shard(shard, ShardCall::ReleaseToPanelBorn(release, born), Some(audit)).await? {
            ShardAnswer::Released(released) => Ok(released),
            other => Err(unexpected(&other)),
        }
    }

    /// A transfer's chunk taken by the receiving provider, wherever they are homed.
    pub(super) async fn accept_transfer(
        &self,
        shard: &ShardKey,
        moving: Transferring,
    ) -> Result<TransferAccepted, AttachError> {
        match self.on_shard(shard, ShardCall::AcceptTransfer(moving), None).await? {
            ShardAnswer::Transfer(done) => Ok(done),
            other => Err(unexpected(&other)),
        }
    }

    /// A community's counts, wherever it runs.
    pub(super) async fn shard_stats(&self, shard: &ShardKey) -> Result<ShardStats, AttachError> {
        match self.on_shard(shard, ShardCall::Stats, None).await? {
            ShardAnswer::Stats(stats) => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// The panel reports of a shard's providers, wherever it runs.
    pub(super) async fn shard_panel_reports(
        &self,
        shard: &ShardKey,
        provider: Option<ProviderId>,
        facility: Option<FacilityNumber>,
        who: Principal,
    ) -> Result<Vec<PanelReport>, AttachError> {
        match self.on_shard(shard, ShardCall::PanelReports { provider, facility, who }, None).await? {
            ShardAnswer::Reports(reports) => Ok(reports),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Role, Scope};

    #[test]
    fn a_call_crosses_whole_and_another_version_or_garbage_is_refused() {
        let who = Principal::new("ops-1", Role::Operations, None, Scope::province());
        let shard = ShardKey::parse("IHA/111").unwrap();
        let call = ShardCall::PanelReports { provider: None, facility: None, who: who.clone() };
        let body = encode(&Request { shard: shard.clone(), call, audit: None });
        assert_eq!(body[0], PROTOCOL);
        let back: Request = decode(&body).unwrap();
        assert_eq!(back.shard, shard);
        match back.call {
            ShardCall::PanelReports { who: w, .. } => assert_eq!(w, who, "the caller's identity survives"),
            other => panic!("{other:?}"),
        }

        let mut other_version = body.clone();
        other_version[0] = PROTOCOL + 1;
        for bad in [other_version, vec![PROTOCOL, 0xff, 0xff], Vec::new()] {
            let e = decode::<Request>(&bad).map(|_| ()).unwrap_err();
            assert_eq!(e.code, ErrorCode::Internal, "{bad:?}");
        }

        // An error crosses with its code, and loses nothing a caller sees.
        let refused: Result<Reply, AttachError> = Err(AttachError::conflict("already answered"));
        let back = decode::<Result<Reply, AttachError>>(&encode(&refused)).unwrap();
        assert_eq!(back.map(|_| ()).unwrap_err(), AttachError::conflict("already answered"));
    }
}

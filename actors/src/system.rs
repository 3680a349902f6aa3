//! The system: every shard of a province, started under health-authority
//! supervisors, and the operations the gateway's resolvers call.
//!
//! Resolvers validate input and then call one method here; nothing here touches
//! storage except the store's locators, which say which shard holds an id.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use ractor::{Actor, ActorRef};
use tracing::{error, info, warn};

use tokio::sync::broadcast;

use crate::access::{Operation, Principal, Role};
use crate::audit::{AuditDraft, AuditQuery, AuditRecord, Outcome};
use crate::domain::{
    Capacity, Clinic, CommunityCode, DelegateId, Endorsement, EndorsementId, EndorsementStep, Event, FacilityNumber,
    HaCode, Household, Phn, Proposal, ProposalId, ProposalStatus, ProviderId, RegistrationRef, Responder, Seq,
    ShardKey,
};
use crate::error::{AttachError, ErrorCode};
use crate::feed::Feed;
use crate::regions::Regions;
use crate::shard::delegation;
use crate::shard::supervisor::SupervisorMsg;
use crate::shard::{
    Answer, ClinicCommand, HaSupervisor, PanelPage, ProposalPage, ProviderInput, ProviderView, RegistrationView, Reply,
    ShardArgs, ShardConfig, ShardDirectory, ShardMsg, ShardStats, SupervisorArgs, WaitlistPage, WaitlistQuery,
};
use crate::store::{Locator, PhnHolder, Store};

mod moves;
mod panels;
mod propose;
mod remote;
mod spill;
mod staff;

pub use remote::{PROTOCOL, Peers, ShardAnswer, ShardCall};

/// Statistics for a community or a health authority.
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    /// The merged counts.
    pub counts: ShardStats,
    /// Median days waited by the households waiting now (for an even count,
    /// the mean of the two middle waits, rounded half up).
    pub median_wait_days: Option<u32>,
    /// Days one person registering today can expect to wait: the people
    /// waiting and themselves, at the attachment rate measured over the last
    /// 28 days, as their own registration will then say; `None` when nobody
    /// was attached in that window (no rate to measure).
    pub estimated_wait_days: Option<u32>,
}

impl Statistics {
    fn from_counts(counts: ShardStats) -> Self {
        let total: u64 = counts.wait_histogram.values().sum();
        // The wait of the household at `rank` (from 1) in order of days waited.
        let at = |rank: u64| {
            let mut seen = 0;
            counts.wait_histogram.iter().find_map(|(days, n)| {
                seen += n;
                (seen >= rank).then_some(u64::from(*days))
            })
        };
        let median = match total {
            0 => None,
            t if t % 2 == 1 => at(t.div_ceil(2)),
            t => at(t / 2).zip(at(t / 2 + 1)).map(|(a, b)| (a + b).div_ceil(2)),
        }
        .map(|days| days as u32);
        // The newcomer waits for everyone ahead and for their own place.
        let estimated = crate::shard::estimated_wait_days(counts.waiting_people + 1, counts.attached_people_28d);
        Statistics { counts, median_wait_days: median, estimated_wait_days: estimated }
    }
}

/// The answer for a health authority the regions file does not name.
pub fn ha_not_found(ha: &crate::domain::HaCode) -> AttachError {
    AttachError::new(
        crate::error::ErrorCode::NotFound,
        format!("health authority {} not found: healthAuthorities lists them", ha.as_str()),
    )
}

fn merge(into: &mut ShardStats, s: ShardStats) {
    into.waiting_households += s.waiting_households;
    into.waiting_people += s.waiting_people;
    into.proposed_households += s.proposed_households;
    into.proposed_people += s.proposed_people;
    into.attached_people += s.attached_people;
    into.attached_people_week += s.attached_people_week;
    into.attached_people_28d += s.attached_people_28d;
    into.accepting_providers += s.accepting_providers;
    into.free_places += s.free_places;
    for (d, n) in s.wait_histogram {
        *into.wait_histogram.entry(d).or_default() += n;
    }
}

/// What the audit log will say about one operation, filled in as it runs.
struct Trail<'a> {
    who: &'a Principal,
    op: Operation,
    shard: Option<ShardKey>,
    target: Option<String>,
    /// The records handed to the shards making the change: one for a change
    /// made by one message, one per committing step for a change made in
    /// several (a panel submission).
    drafts: Vec<AuditDraft>,
}

impl<'a> Trail<'a> {
    fn new(who: &'a Principal, op: Operation) -> Self {
        Trail { who, op, shard: None, target: None, drafts: Vec::new() }
    }

    /// The record as it will read if the change is made, for the shard to
    /// commit with it (see [`ShardDirectory::call_audited`]).
    fn draft(&mut self) -> AuditDraft {
        self.step(self.shard.clone(), self.target.clone())
    }

    /// The record of one step of a change made in several, naming the shard
    /// and the record that step touches.
    fn step(&mut self, shard: Option<ShardKey>, target: Option<String>) -> AuditDraft {
        let draft = AuditDraft::new(AuditRecord::new(self.who, self.op, shard, target, Outcome::Ok));
        self.drafts.push(draft.clone());
        draft
    }

    /// Names the record touched (an id, never personal data).
    fn about(mut self, id: &impl std::fmt::Display) -> Self {
        self.target = Some(id.to_string());
        self
    }

    /// Records the shard and hands it back.
    fn at(&mut self, shard: ShardKey) -> ShardKey {
        self.shard = Some(shard.clone());
        shard
    }
}

/// A running Attach core.
pub struct AttachSystem {
    regions: Arc<Regions>,
    directory: Arc<ShardDirectory>,
    store: Arc<dyn Store>,
    config: Arc<ShardConfig>,
    owner: String,
    feed: Arc<dyn Feed>,
    /// Kept to stop them on shutdown.
    supervisors: Mutex<Vec<ActorRef<SupervisorMsg>>>,
    /// Panel transfers this process is running, so asking to resume one that
    /// is already moving does not start a second runner.
    transfers: Mutex<std::collections::HashSet<(ProviderId, crate::domain::TransferKey)>>,
    /// The other nodes, for steps on shards this node does not run (none alone).
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
    /// One matching run at a time per community (on the node holding it), so
    /// two runs asked for at once do not both offer its households next door.
    matching_runs: Mutex<std::collections::HashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A registration as `who` may see it. Whoever reads it by its reference
/// (the household, anyone it was given to, and any signed-in caller, who could
/// read it without their token) sees the proposals and declines without what
/// providers and coordinators wrote about them. A provider sees, besides, their
/// own proposal whole and the reasons given on their own declines. Its
/// coordinators and support see all of it. Every answer that carries a
/// registration to a caller goes through here (a read, and the household's own
/// changes: register, update, move, withdraw), so no answer shows more than a
/// read would. (Before session 16 a signed-in provider, delegate or operations
/// caller saw less than the public: other providers' declines and proposals
/// were left out, which dropping the token showed.)
pub(crate) fn seen_by(who: &Principal, mut view: RegistrationView) -> RegistrationView {
    if sees_whole(who, &view.registration.shard) {
        return view;
    }
    let mine = |p: &ProviderId| matches!(who.role(), Role::Provider | Role::MedicalDirector) && who.is_provider(p);
    // The household's own reasons stay, and a provider's own.
    for d in view.registration.declines.iter_mut().filter(|d| d.by != Some(Responder::Patient) && !mine(&d.provider)) {
        d.reason.clear();
    }
    if let Some(p) = view.proposal.take() {
        view.proposal = Some(if mine(&p.provider) { p } else { public_proposal(p) });
    }
    view
}

/// Whether `who` sees a registration of `shard` and its proposals whole, with
/// what providers and coordinators wrote: Attach itself, and coordinators and
/// support of that community (out of their scope they read as anyone does).
fn sees_whole(who: &Principal, shard: &ShardKey) -> bool {
    match who.role() {
        Role::Internal => true,
        Role::Coordinator | Role::Support => who.scope().covers(shard),
        _ => false,
    }
}

/// A proposal as the household sees it, by its reference alone: without the
/// provider's fit, which holds the coordinator's note, and without a decline
/// reason the household did not give.
fn public_proposal(mut proposal: Proposal) -> Proposal {
    proposal.explanation.provider_fit.clear();
    if proposal.declined_by != Some(Responder::Patient) {
        proposal.decline_reason = None;
    }
    proposal
}

impl AttachSystem {
    /// A system over these regions and this store. No shard runs until [`start`](Self::start).
    pub fn new(
        regions: Arc<Regions>,
        store: Arc<dyn Store>,
        feed: Arc<dyn Feed>,
        config: ShardConfig,
        owner: String,
    ) -> Self {
        let directory =
            Arc::new(ShardDirectory::new(regions.shards().cloned(), config.mailbox_capacity, config.call_timeout));
        AttachSystem {
            regions,
            directory,
            store,
            config: Arc::new(config),
            owner,
            feed,
            supervisors: Mutex::new(vec![]),
            transfers: Mutex::new(Default::default()),
            peers: std::sync::OnceLock::new(),
            matching_runs: Mutex::new(Default::default()),
        }
    }

    /// Starts every health authority's supervisor and its shards (loading them
    /// from the store); returns when all have been started or retried.
    pub async fn start(&self) -> anyhow::Result<()> {
        let started = join_all(self.regions.health_authorities.iter().map(|ha| {
            let shards = ha
                .communities
                .iter()
                .map(|c| ShardArgs {
                    key: c.shard.clone(),
                    store: self.store.clone(),
                    config: self.config.clone(),
                    owner: self.owner.clone(),
                    feed: self.feed.clone(),
                    month_zone: c.timezone.clone(),
                })
                .collect();
            let args = SupervisorArgs { ha: ha.code.clone(), shards, directory: self.directory.clone() };
            Actor::spawn(None, HaSupervisor, args)
        }))
        .await;
        let mut supervisors = Vec::new();
        for result in started {
            supervisors.push(result?.0);
        }
        *self.supervisors.lock().unwrap_or_else(|e| e.into_inner()) = supervisors;
        let (up, total) = self.directory.running();
        info!(up, total, "shards started");
        Ok(())
    }

    /// Stops every supervisor and shard. State is already durable; nothing is flushed.
    pub async fn stop(&self) {
        let supervisors = std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(|e| e.into_inner()));
        join_all(supervisors.iter().map(|s| s.stop_and_wait(Some("shutting down".into()), None))).await;
    }

    /// The regions served.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The shard directory (readiness, mailbox depths).
    pub fn directory(&self) -> &ShardDirectory {
        &self.directory
    }

    /// The settings shards run with.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Hands back to node `to` the shards it should hold and this node runs
    /// (standing in for it while it was away); answers how many, once they
    /// have stopped here and their leases are free.
    pub async fn hand_back(&self, to: &str) -> usize {
        let Some(placement) = self.config.placement.get() else { return 0 };
        let keys: Vec<ShardKey> = self
            .regions
            .shards()
            .filter(|k| placement.preferred(k) == to && !placement.is_mine(k))
            .filter(|k| self.directory.actor(k).is_some())
            .cloned()
            .collect();
        let supervisors = self.supervisors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Each supervisor stops those of its own, and answers when they have stopped.
        let wait = self.config.call_timeout * 2;
        join_all(supervisors.iter().map(|s| {
            let keys = keys.clone();
            s.call(|reply| SupervisorMsg::HandBack(keys, reply), Some(wait))
        }))
        .await;
        keys.len()
    }

    /// This node's name (the owner its shards' leases carry).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Replaces the placement this node goes by (the cluster's node list
    /// changed while it runs): from now on its supervisors start, retry and
    /// hand back shards by the new one.
    pub fn set_placement(&self, placement: Option<crate::shard::Placement>) {
        self.config.placement.set(placement);
    }

    /// Starts now the shards this node should hold that do not run, after its
    /// peers handed them back, rather than at their next retry (up to a
    /// quarter lease later).
    pub fn start_own_shards(&self) {
        for s in self.supervisors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = s.cast(SupervisorMsg::StartOwn);
        }
    }

    /// The shards this node is preferred for that another node holds: a
    /// stand-in that kept them because its hand-back was never asked for, did
    /// not reach it, or came while this node could not take them at once.
    pub async fn own_shards_held_elsewhere(&self) -> Vec<ShardKey> {
        let Some(placement) = self.config.placement.get() else { return Vec::new() };
        let mut held = Vec::new();
        for key in self.regions.shards().filter(|k| placement.is_mine(k) && self.directory.actor(k).is_none()) {
            if self.shard_owner(key).await.is_some_and(|owner| owner != self.owner) {
                held.push(key.clone());
            }
        }
        held
    }

    /// Shards running here of those this node should run: every shard, or
    /// under a placement the ones it is preferred for.
    pub fn readiness(&self) -> (usize, usize) {
        match self.config.placement.get() {
            Some(p) => self.directory.running_of(|k| p.is_mine(k)),
            None => self.directory.running(),
        }
    }

    /// The node holding a live lease on `shard`, if the store can say.
    pub async fn shard_owner(&self, shard: &ShardKey) -> Option<String> {
        match self.store.shard_owner(shard).await {
            Ok(owner) => owner,
            Err(e) => {
                warn!(error = %e, %shard, "could not read who holds a shard");
                None
            }
        }
    }

    fn shard_of(&self, community: &CommunityCode) -> Result<ShardKey, AttachError> {
        self.regions.community(community.as_str()).map(|c| c.shard.clone()).ok_or_else(|| {
            AttachError::new(
                crate::error::ErrorCode::NotFound,
                format!("community {} not found: healthAuthorities lists them", community.as_str()),
            )
        })
    }

    /// Claims a new id's `locator` for `shard` before the shard writes it, so
    /// two communities creating it at once cannot both; `elsewhere`'s error
    /// when another community holds it.
    async fn claim_home(
        &self,
        locator: &Locator,
        shard: &ShardKey,
        elsewhere: impl Fn(&ShardKey) -> AttachError,
    ) -> Result<(), AttachError> {
        let home = self.store.claim_locator(locator, shard).await?;
        if home == *shard { Ok(()) } else { Err(elsewhere(&home)) }
    }

    async fn locate(&self, what: Locator, name: &str) -> Result<ShardKey, AttachError> {
        self.store.locate(&what).await?.ok_or_else(|| AttachError::not_found(name))
    }

    /// Writes the audit record of an operation that ended with `result` (if the
    /// operation is audited) and passes the result on. A read whose record cannot
    /// be written fails: no patient data leaves without a trace. A change that is
    /// already durable is still reported as done, and the lost record is logged.
    async fn audited<T>(&self, trail: Trail<'_>, result: Result<T, AttachError>) -> Result<T, AttachError> {
        if !trail.op.is_audited() {
            return result;
        }
        let committed = trail.drafts.iter().any(AuditDraft::is_committed);
        // Committed with the change (with each step that changed something): nothing left to write.
        if result.is_ok() && committed {
            return result;
        }
        // The shard does not run here and nothing was changed: the request goes
        // on to the node that runs it, which records it there.
        if !committed && result.as_ref().is_err_and(|e| e.not_here.is_some()) {
            return result;
        }
        let record = AuditRecord::new(trail.who, trail.op, trail.shard, trail.target, Outcome::of(&result));
        match self.store.append_audit(std::slice::from_ref(&record)).await {
            Ok(()) => result,
            Err(e) if trail.op.is_mutation() => {
                error!(error = %e, operation = %trail.op, outcome = record.outcome.as_str(), "audit record lost");
                result
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a registration a patient registered while signed in (DECISIONS
    /// 46) to anyone but that patient, Attach itself, and coordinators and
    /// support whose scope holds its community: its reference alone is no
    /// longer enough (the operation's own rules apply on top). One registered
    /// without signing in, or by a coordinator, has no owner, and its
    /// reference stays the capability. The owner never changes, so the answer
    /// cannot go stale before the step it guards.
    async fn require_owner(
        &self,
        who: &Principal,
        shard: &ShardKey,
        reference: RegistrationRef,
    ) -> Result<(), AttachError> {
        let staff_in_scope = matches!(who.role(), Role::Coordinator | Role::Support) && who.scope().covers(shard);
        if who.role() == Role::Internal || staff_in_scope {
            return Ok(());
        }
        let owner = self.directory.call(shard, |r| ShardMsg::OwnerOf(reference, r)).await?;
        match owner {
            Some(owner) if who.role() == Role::Patient && owner == who.subject() => Ok(()),
            None => Ok(()),
            Some(_) if who.role() == Role::Public => Err(AttachError::new(
                ErrorCode::Unauthenticated,
                "this household was registered by a patient signed in: sign in as that patient to use its reference",
            )),
            Some(_) => Err(AttachError::new(
                ErrorCode::Forbidden,
                "this household was registered by a patient signed in: only they, and coordinators and support of \
                 its community, may use its reference",
            )),
        }
    }

    /// Registers a household in a community.
    pub async fn register(
        &self,
        who: &Principal,
        community: &CommunityCode,
        household: Household,
    ) -> Result<RegistrationView, AttachError> {
        let mut trail = Trail::new(who, Operation::RegisterHousehold);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            // A patient signed in owns what they register (DECISIONS 46).
            let owner = (who.role() == Role::Patient).then(|| who.subject().to_owned());
            // The shard names the new registration in the record it commits.
            self.directory.call_audited(&shard, trail.draft(), |r| ShardMsg::Register(household, owner, r)).await
        }
        .await;
        self.audited(trail, result).await.map(|view| seen_by(who, view))
    }

    /// A registration's standing, by reference.
    pub async fn registration(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
    ) -> Result<RegistrationView, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadRegistration).about(reference);
        let result = async {
            let shard = trail.at(self.locate(Locator::Registration(*reference), "registration").await?);
            // No scope: the reference is the capability (see `Operation::allows`),
            // with the patient who registered it signed in, if one did.
            who.require(trail.op, None)?;
            self.require_owner(who, &shard, *reference).await?;
            let reference = *reference;
            self.directory.call(&shard, |r| ShardMsg::GetRegistration(reference, r)).await
        }
        .await;
        self.audited(trail, result).await.map(|view| seen_by(who, view))
    }

    /// The registrations the signed-in patient registered (DECISIONS 48), in
    /// every community, wherever it runs, oldest first: a household that moved
    /// is found where it went (or, while its move is under way, as `MOVED`
    /// where it left). Only a patient has their own; the public gets
    /// `UNAUTHENTICATED` and other roles `FORBIDDEN`. Each registration found is
    /// audited as a read of it (one record without a target when none is).
    pub async fn my_registrations(&self, who: &Principal) -> Result<Vec<RegistrationView>, AttachError> {
        let op = Operation::ReadRegistration;
        let refusal = match who.role() {
            Role::Patient => None,
            Role::Public => Some(ErrorCode::Unauthenticated),
            _ => Some(ErrorCode::Forbidden),
        };
        if let Some(code) = refusal {
            let why = AttachError::new(code, "only a patient signed in has registrations of their own");
            return self.audited(Trail::new(who, op), Err(why)).await;
        }
        let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
        let found = join_all(shards.iter().map(|s| self.owned_at(s, who.subject()))).await;
        // The communities are asked one by one, not at one instant: a household
        // moving meanwhile may be found in both, or only as the `MOVED` copy of
        // the community left (step two not yet taken). Each is listed once, where
        // it is if it arrived.
        let moved = |v: &RegistrationView| v.registration.status == crate::domain::RegistrationStatus::Moved;
        let mut by_reference: std::collections::HashMap<RegistrationRef, RegistrationView> = Default::default();
        for views in found {
            let views = match views {
                Ok(views) => views,
                Err(e) => return self.audited(Trail::new(who, op), Err(e)).await,
            };
            for view in views {
                let reference = view.registration.reference;
                if by_reference.get(&reference).is_none_or(|kept| moved(kept) && !moved(&view)) {
                    by_reference.insert(reference, view);
                }
            }
        }
        let mut list: Vec<RegistrationView> = by_reference.into_values().collect();
        list.sort_by_key(|v| v.registration.registered_at);
        let read = |v: &RegistrationView| {
            let (shard, target) = (v.registration.shard.clone(), v.registration.reference.to_string());
            AuditRecord::new(who, op, Some(shard), Some(target), Outcome::Ok)
        };
        let mut records: Vec<AuditRecord> = list.iter().map(read).collect();
        if records.is_empty() {
            records.push(AuditRecord::new(who, op, None, None, Outcome::Ok));
        }
        self.store.append_audit(&records).await?;
        Ok(list.into_iter().map(|view| seen_by(who, view)).collect())
    }

    /// Records that a token signed for `who`, whose signature held, was refused
    /// at the door because it `expired` or was revoked: someone may be using a
    /// lost or stolen one. The request itself never ran, so it has no other record.
    pub async fn audit_refused_sign_in(&self, who: &Principal, expired: bool) -> Result<(), AttachError> {
        let why = if expired { "expired" } else { "revoked" };
        let refused = Outcome::Refused(ErrorCode::Unauthenticated.as_str().to_string());
        let record = AuditRecord::new(who, Operation::SignIn, None, Some(why.to_string()), refused);
        Ok(self.store.append_audit(std::slice::from_ref(&record)).await?)
    }

    /// Withdraws a registration.
    pub async fn withdraw(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        reason: String,
    ) -> Result<RegistrationView, AttachError> {
        let op = Operation::WithdrawRegistration;
        let view = self.close_for_household(who, op, reference, |r, reply| ShardMsg::Withdraw(r, reason, reply)).await;
        view.map(|view| seen_by(who, view))
    }

    /// The household of `reference` declines the proposal open for it (the
    /// patient, who holds the reference, or a coordinator in scope): it returns
    /// to the waitlist keeping its registration time, and the provider sees the
    /// reason. `CONFLICT` when no proposal is open for it.
    pub async fn decline_match(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        reason: String,
    ) -> Result<Proposal, AttachError> {
        let op = Operation::DeclineMatch;
        let declined =
            self.close_for_household(who, op, reference, |r, reply| ShardMsg::DeclineMatch(r, reason, reply));
        // The patient sees it as the household does; a coordinator whole.
        declined
            .await
            .map(|proposal| if sees_whole(who, &proposal.shard) { proposal } else { public_proposal(proposal) })
    }

    /// A coordinator in scope returns an attached household to the waitlist:
    /// the attachment fell through (within `shard.return_window_days` of the
    /// acceptance). It waits again with its registration time, the proposal
    /// is `RETURNED` with the reason, and the provider's panel lets its members
    /// go, in another community through the settlement pushed after.
    pub async fn return_to_waitlist(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        reason: String,
    ) -> Result<RegistrationView, AttachError> {
        let op = Operation::ReturnToWaitlist;
        self.close_for_household(who, op, reference, |r, reply| ShardMsg::ReturnToWaitlist(r, reason, reply)).await
    }

    /// A step the household (or a coordinator) takes on its registration that
    /// may close its proposal: asked of the registration's shard with the
    /// caller's audit record, then a closed spill-over proposal's settlement
    /// is pushed to the provider's community.
    async fn close_for_household<T: Send + 'static>(
        &self,
        who: &Principal,
        op: Operation,
        reference: &RegistrationRef,
        ask: impl FnOnce(RegistrationRef, Reply<T>) -> ShardMsg,
    ) -> Result<T, AttachError> {
        let mut trail = Trail::new(who, op).about(reference);
        let result = async {
            let shard = trail.at(self.locate(Locator::Registration(*reference), "registration").await?);
            who.require(trail.op, Some(&shard))?;
            self.require_owner(who, &shard, *reference).await?;
            let reference = *reference;
            let done = self.directory.call_audited(&shard, trail.draft(), |reply| ask(reference, reply)).await?;
            self.settle_pending(&shard).await;
            Ok(done)
        }
        .await;
        self.audited(trail, result).await
    }

    /// The registration that holds `phn` (waiting, proposed, or attached by a
    /// match and not yet moved onto the panel's claim), for support staff
    /// helping someone who lost their reference and for coordinators in scope.
    /// `NOT_FOUND` when no registration holds it: never registered, withdrawn,
    /// left the household, or on a provider's panel. The audit record names
    /// the registration found, never the PHN.
    pub async fn find_registration(&self, who: &Principal, phn: Phn) -> Result<RegistrationView, AttachError> {
        let mut trail = Trail::new(who, Operation::FindRegistration);
        let none = || AttachError::not_found("registration holding this PHN");
        let mut out_of_scope = false;
        let result = async {
            who.require(trail.op, None)?;
            let claim = self.store.phn_claim(phn).await?.ok_or_else(none)?;
            let PhnHolder::Registration(reference) = claim.holder else { return Err(none()) };
            trail.target = Some(reference.to_string());
            // A claim made before a move names the community left; the locator knows where it is now.
            let shard = trail.at(self.locate(Locator::Registration(reference), "registration").await?);
            who.require(trail.op, Some(&shard)).inspect_err(|_| out_of_scope = true)?;
            let view = self.directory.call(&shard, |r| ShardMsg::GetRegistration(reference, r)).await?;
            if view.registration.holds(phn) { Ok(view) } else { Err(none()) }
        }
        .await;
        // The log says FORBIDDEN; the caller sees what a PHN nobody registered gives,
        // so a look outside one's scope tells neither whether nor where it is registered.
        self.audited(trail, result)
            .await
            .map_err(|e| if out_of_scope && e.code == ErrorCode::Forbidden { none() } else { e })
    }

    /// A waiting household as it is now (a member born or gone, needs that
    /// changed), keeping its reference and place in line.
    pub async fn update_household(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        household: Household,
    ) -> Result<RegistrationView, AttachError> {
        self.update_household_if(who, reference, household, None).await
    }

    /// [`Self::update_household`], refused (`CONFLICT`, nothing changed) when
    /// `if_unchanged` is given and the registration changed since that time
    /// (its `updated_at`): the caller made the change from an older reading.
    pub async fn update_household_if(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        household: Household,
        if_unchanged: Option<crate::domain::Timestamp>,
    ) -> Result<RegistrationView, AttachError> {
        let mut trail = Trail::new(who, Operation::UpdateHousehold).about(reference);
        let result = async {
            let shard = trail.at(self.locate(Locator::Registration(*reference), "registration").await?);
            who.require(trail.op, Some(&shard))?;
            self.require_owner(who, &shard, *reference).await?;
            let reference = *reference;
            let draft = trail.draft();
            self.directory
                .call_audited(&shard, draft, |r| ShardMsg::UpdateHousehold(reference, household, if_unchanged, r))
                .await
        }
        .await;
        self.audited(trail, result).await.map(|view| seen_by(who, view))
    }

    /// A page of a community's waitlist.
    pub async fn waitlist(
        &self,
        who: &Principal,
        community: &CommunityCode,
        query: WaitlistQuery,
    ) -> Result<WaitlistPage, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadWaitlist);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            self.directory.call(&shard, |r| ShardMsg::Waitlist(query, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Creates a provider homed in `community`, or updates one already there:
    /// a provider their own entry, a medical director that of a new provider,
    /// their own, or a provider who practises only at clinics they direct.
    pub async fn upsert_provider(
        &self,
        who: &Principal,
        community: &CommunityCode,
        input: ProviderInput,
    ) -> Result<ProviderView, AttachError> {
        let mut trail = Trail::new(who, Operation::UpsertProvider).about(&input.id);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            if who.role() == Role::Provider {
                who.require_self(&input.id, "change a provider's registry entry")?;
            }
            let homed_elsewhere = |home: &ShardKey| {
                AttachError::conflict(format!(
                    "provider {} is homed in community {}; update them there",
                    input.id,
                    home.community.as_str()
                ))
            };
            let locator = Locator::Provider(input.id.clone());
            let home = self.store.locate(&locator).await?;
            if let Some(home) = home.as_ref().filter(|home| **home != shard) {
                return Err(homed_elsewhere(home));
            }
            let current = match &home {
                // The id was claimed here by a creation whose commit failed: still new.
                Some(home) => match self.provider_at(home, input.id.clone()).await {
                    Ok(view) => Some(view.provider),
                    Err(e) if e.code == ErrorCode::NotFound => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            self.may_change_provider(who, &input, current.as_ref()).await?;
            // A practitioner number is never a patient's PHN: one typed into this
            // field would be kept in every record and log line about the provider.
            if current.is_none() && crate::domain::Phn::is_spelled_in(input.id.as_str()) {
                let message = "this id is a valid PHN, not a practitioner number; nothing was created";
                return Err(AttachError {
                    field: Some("id".into()),
                    ..AttachError::new(ErrorCode::InvalidInput, message)
                });
            }
            // A new provider's id is claimed for this community before the shard
            // writes them, so two communities creating it at once cannot both.
            if home.is_none() {
                self.claim_home(&locator, &shard, homed_elsewhere).await?;
            }
            // The shard writes only if the clinics are still those checked (a clinic's
            // director may have taken the provider off meanwhile).
            let checked = current.map(|p| p.clinics);
            self.directory.call_audited(&shard, trail.draft(), |r| ShardMsg::UpsertProvider(input, checked, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Sets a provider's capacity and preferences (the provider themselves).
    pub async fn set_capacity(
        &self,
        who: &Principal,
        id: &ProviderId,
        capacity: Capacity,
    ) -> Result<ProviderView, AttachError> {
        let mut trail = Trail::new(who, Operation::SetCapacity).about(id);
        let result = async {
            who.require(trail.op, None)?;
            // Located first, so a refusal is audited with the provider's community.
            let shard = trail.at(self.locate(Locator::Provider(id.clone()), "provider").await?);
            who.require_self(id, "set capacity")?;
            let id = id.clone();
            self.directory.call_audited(&shard, trail.draft(), |r| ShardMsg::SetCapacity(id, capacity, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// A provider (read where their community runs, on this node or another).
    pub async fn provider(&self, who: &Principal, id: &ProviderId) -> Result<ProviderView, AttachError> {
        who.require(Operation::ReadProviders, None)?;
        self.provider_record(id).await
    }

    /// Providers homed in a community.
    pub async fn providers(
        &self,
        who: &Principal,
        community: &CommunityCode,
    ) -> Result<Vec<ProviderView>, AttachError> {
        who.require(Operation::ReadProviders, None)?;
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, ShardMsg::ListProviders).await
    }

    /// Creates or updates a clinic in a community (its medical director).
    pub async fn upsert_clinic(
        &self,
        who: &Principal,
        community: &CommunityCode,
        cmd: ClinicCommand,
    ) -> Result<Clinic, AttachError> {
        let mut trail = Trail::new(who, Operation::UpsertClinic).about(&cmd.facility);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            let registered_elsewhere = |home: &ShardKey| {
                AttachError::conflict(format!(
                    "facility {} is registered in community {}",
                    cmd.facility,
                    home.community.as_str()
                ))
            };
            let locator = Locator::Clinic(cmd.facility.clone());
            let home = self.store.locate(&locator).await?;
            if let Some(home) = home.as_ref().filter(|home| **home != shard) {
                return Err(registered_elsewhere(home));
            }
            // A clinic handed to nobody could never be kept again. (A director naming
            // themselves, and Attach itself loading a registry, may add the entry after.)
            let named_other = |d: &&ProviderId| who.role() != Role::Internal && who.provider() != Some(*d);
            if let Some(director) = cmd.medical_director.as_ref().filter(named_other)
                && self.store.locate(&Locator::Provider(director.clone())).await?.is_none()
            {
                return Err(AttachError {
                    field: Some("medicalDirectorId".into()),
                    ..AttachError::new(
                        crate::error::ErrorCode::NotFound,
                        format!("provider {director} not found: a clinic's medical director is a registered provider"),
                    )
                });
            }
            // A new facility number is claimed for this community before the
            // shard writes the clinic, so two communities cannot both create it;
            // only by whoever may create it (as the shard decides again), so a
            // refused creation cannot hold a facility number for good.
            if home.is_none() {
                let director = delegation::named_director(None, who, cmd.medical_director.clone());
                delegation::may_keep_clinic(None, who, &cmd.facility, director.as_ref())?;
                self.claim_home(&locator, &shard, registered_elsewhere).await?;
            }
            let who = who.clone();
            self.directory.call_audited(&shard, trail.draft(), |r| ShardMsg::UpsertClinic(cmd, who, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// A clinic (read where its community runs, on this node or another).
    pub async fn clinic(&self, who: &Principal, facility: &FacilityNumber) -> Result<Clinic, AttachError> {
        who.require(Operation::ReadClinics, None)?;
        self.clinic_record(facility).await
    }

    /// Clinics in a community.
    pub async fn clinics(&self, who: &Principal, community: &CommunityCode) -> Result<Vec<Clinic>, AttachError> {
        who.require(Operation::ReadClinics, None)?;
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, ShardMsg::ListClinics).await
    }

    /// Runs matching in a community; returns the proposals made. With
    /// spill-over on (the policy's `spill_km`), households still waiting are
    /// then proposed to providers with free places in neighbouring communities.
    pub async fn run_matching(&self, who: &Principal, community: &CommunityCode) -> Result<Vec<Proposal>, AttachError> {
        let mut trail = Trail::new(who, Operation::RunMatching);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            // A second run asked for meanwhile waits, then finds what this one proposed.
            let gate =
                self.matching_runs.lock().unwrap_or_else(|e| e.into_inner()).entry(shard.clone()).or_default().clone();
            let _running = gate.lock().await;
            let mut made = self.directory.call_audited(&shard, trail.draft(), ShardMsg::RunMatching).await?;
            if self.config.policy.spill_km > 0 {
                made.extend(self.spill(community, &shard).await);
            }
            Ok(made)
        }
        .await;
        self.audited(trail, result).await
    }

    /// A community's proposals, newest first. Providers see only their own.
    pub async fn proposals(
        &self,
        who: &Principal,
        community: &CommunityCode,
        statuses: Vec<ProposalStatus>,
        provider: Option<ProviderId>,
        from: crate::shard::ProposalsFrom,
        limit: usize,
    ) -> Result<ProposalPage, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadProposals);
        trail.target = provider.as_ref().map(ToString::to_string);
        let result = async {
            let shard = trail.at(self.shard_of(community)?);
            who.require(trail.op, Some(&shard))?;
            let provider = match who.role() {
                Role::Provider | Role::MedicalDirector => {
                    let me = who
                        .provider()
                        .ok_or_else(|| AttachError::new(ErrorCode::Forbidden, "your token names no provider"))?;
                    if provider.as_ref().is_some_and(|p| p != me) {
                        return Err(AttachError::new(ErrorCode::Forbidden, "you may only read your own proposals"));
                    }
                    Some(me.clone())
                }
                _ => provider,
            };
            self.directory
                .call(&shard, |reply| ShardMsg::ListProposals { statuses, provider, from, limit, reply })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// A proposal: its provider, or a coordinator or support in scope.
    pub async fn proposal(&self, who: &Principal, id: &ProposalId) -> Result<Proposal, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadProposals).about(id);
        let result = async {
            let shard = trail.at(self.locate(Locator::Proposal(*id), "proposal").await?);
            who.require(trail.op, Some(&shard))?;
            let id = *id;
            let proposal = self.directory.call(&shard, |r| ShardMsg::GetProposal(id, r)).await?;
            delegation::may_act_on_proposal(who, &proposal.provider)?;
            Ok(proposal)
        }
        .await;
        self.audited(trail, result).await
    }

    /// Accepts or declines a proposal: its provider, or a coordinator in scope
    /// recording what the provider (or the patient) told them.
    pub async fn answer(&self, who: &Principal, id: &ProposalId, answer: Answer) -> Result<Proposal, AttachError> {
        let mut trail = Trail::new(who, Operation::AnswerProposal).about(id);
        let result = async {
            let shard = trail.at(self.locate(Locator::Proposal(*id), "proposal").await?);
            who.require(trail.op, Some(&shard))?;
            // A provider (or someone acting for them) answers as the provider; a
            // coordinator may record anyone's decline, as told to them.
            if let Answer::Decline { by, .. } = &answer
                && *by != Responder::Provider
                && who.role() != Role::Coordinator
                && who.role() != Role::Internal
            {
                let why = match by {
                    Responder::Patient => {
                        "only a coordinator records a patient's decline here: the patient declines with declineMatch and the reference"
                    }
                    _ => "only a coordinator records a coordinator's decline: a provider declines as PROVIDER",
                };
                return Err(AttachError::new(ErrorCode::Forbidden, why));
            }
            // Accepting puts the household on the provider's panel, and a
            // provider's decline keeps matching from offering the household to
            // them again (DECISIONS 38): a coordinator records either, as the
            // provider told them, only for a provider homed in their scope, as
            // `proposeMatch` asks (a spill-over proposal's provider is in a
            // neighbouring community).
            let accepting = matches!(answer, Answer::Accept | Answer::AcceptAt(_));
            let for_provider =
                accepting || matches!(&answer, Answer::Decline { by: Responder::Provider, .. });
            if for_provider && (who.role() == Role::Coordinator || matches!(answer, Answer::AcceptAt(_))) {
                let proposal = self.directory.call(&shard, |r| ShardMsg::GetProposal(*id, r)).await?;
                let home = self.locate(Locator::Provider(proposal.provider.clone()), "provider").await?;
                if who.role() == Role::Coordinator {
                    who.require(trail.op, Some(&home))?;
                }
                if let Answer::AcceptAt(facility) = &answer {
                    self.check_remote_clinic(&shard, &home, &proposal.provider, facility).await?;
                }
            }
            let (id, who) = (*id, who.clone());
            let answered = self
                .directory
                .call_audited(&shard, trail.draft(), |r| ShardMsg::AnswerProposal(id, answer, who, r))
                .await?;
            self.settle_pending(&shard).await;
            Ok(answered)
        }
        .await;
        self.audited(trail, result).await
    }

    /// For a proposal to a provider homed in another community (spill-over),
    /// whether `facility` is one of that provider's clinics: the household's
    /// shard, which records the acceptance, does not hold their registry entry.
    async fn check_remote_clinic(
        &self,
        shard: &ShardKey,
        home: &ShardKey,
        provider: &ProviderId,
        facility: &FacilityNumber,
    ) -> Result<(), AttachError> {
        if home == shard {
            return Ok(());
        }
        let view = self.provider_at(home, provider.clone()).await?;
        if view.provider.clinics.contains(facility) {
            return Ok(());
        }
        let why = format!("provider {provider} is not listed at clinic {facility}; nothing was accepted");
        Err(AttachError { field: Some("facilityNumber".into()), ..AttachError::conflict(why) })
    }

    /// A page of a provider's panel: the provider, their delegate (with a
    /// completed endorsement), or support.
    pub async fn panel(
        &self,
        who: &Principal,
        provider: &ProviderId,
        offset: usize,
        limit: usize,
    ) -> Result<PanelPage, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadPanel).about(provider);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            who.require(trail.op, Some(&shard))?;
            let (provider, who) = (provider.clone(), who.clone());
            self.directory.call(&shard, |reply| ShardMsg::Panel { provider, offset, limit, who, reply }).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Starts a delegation endorsement between a provider and a staff member, by either.
    pub async fn start_endorsement(
        &self,
        who: &Principal,
        provider: &ProviderId,
        delegate: DelegateId,
    ) -> Result<Endorsement, AttachError> {
        let mut trail = Trail::new(who, Operation::ManageEndorsement).about(provider);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            let (provider, who) = (provider.clone(), who.clone());
            // The shard names the new endorsement in the record it commits.
            self.directory
                .call_audited(&shard, trail.draft(), |reply| ShardMsg::StartEndorsement {
                    provider,
                    delegate,
                    who,
                    reply,
                })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Takes a step of an endorsement's workflow, for the caller's party.
    pub async fn advance_endorsement(
        &self,
        who: &Principal,
        id: &EndorsementId,
        step: EndorsementStep,
    ) -> Result<Endorsement, AttachError> {
        // Each step its own operation, so the log tells a grant from a revocation.
        let op = match step {
            EndorsementStep::Receive | EndorsementStep::Approve => Operation::AnswerEndorsement,
            EndorsementStep::Decline => Operation::DeclineEndorsement,
            EndorsementStep::Complete => Operation::CompleteEndorsement,
            EndorsementStep::Cancel => Operation::CancelEndorsement,
        };
        let mut trail = Trail::new(who, op).about(id);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Endorsement(*id), "endorsement").await?);
            let (id, who) = (*id, who.clone());
            self.directory.call_audited(&shard, trail.draft(), |r| ShardMsg::AdvanceEndorsement(id, step, who, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// An endorsement, for one of its parties or support.
    pub async fn endorsement(&self, who: &Principal, id: &EndorsementId) -> Result<Endorsement, AttachError> {
        who.require(Operation::ReadEndorsements, None)?;
        let shard = self.locate(Locator::Endorsement(*id), "endorsement").await?;
        who.require(Operation::ReadEndorsements, Some(&shard))?;
        let (id, who) = (*id, who.clone());
        self.directory.call(&shard, |r| ShardMsg::GetEndorsement(id, who, r)).await
    }

    /// A provider's endorsements the caller may see.
    pub async fn endorsements(&self, who: &Principal, provider: &ProviderId) -> Result<Vec<Endorsement>, AttachError> {
        who.require(Operation::ReadEndorsements, None)?;
        let shard = self.locate(Locator::Provider(provider.clone()), "provider").await?;
        who.require(Operation::ReadEndorsements, Some(&shard))?;
        let (provider, who) = (provider.clone(), who.clone());
        self.directory.call(&shard, |r| ShardMsg::ListEndorsements(provider, who, r)).await
    }

    /// A page of the audit log (operations only).
    pub async fn audit_log(&self, who: &Principal, query: AuditQuery) -> Result<Vec<AuditRecord>, AttachError> {
        let trail = Trail::new(who, Operation::ReadAudit);
        let result = async {
            who.require(Operation::ReadAudit, None)?;
            Ok(self.store.audit_page(&query).await?)
        }
        .await;
        self.audited(trail, result).await
    }

    /// Up to `limit` of a community's committed events after sequence `after`, in order.
    pub async fn events_after(
        &self,
        who: &Principal,
        community: &CommunityCode,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Event>, AttachError> {
        let shard = self.shard_of(community)?;
        who.require(Operation::ReadEvents, Some(&shard))?;
        let events = self.store.events_after(&shard, after, limit).await?;
        // A point past the log's end is from another copy of the log (a restored backup, a
        // rebuilt data directory): following it would skip every event up to it. Sequence
        // numbers run from 1 without gaps, so it is past the end exactly when the store
        // holds no event numbered `after` (asked of the store, which a node that just lost
        // the shard's lease cannot be behind, and which costs no actor's round trip).
        if events.is_empty() && after > 0 && self.store.events_after(&shard, after - 1, 1).await?.is_empty() {
            let last = match self.last_seq_at(&shard).await {
                Ok(last) => format!(" (the last is {last})"),
                Err(_) => String::new(),
            };
            let message = format!(
                "afterSeq {after} is past the end of community {}'s events{last}; it comes from another \
                 copy of the log: start again from the last event, or from 0 to read them all",
                community.as_str()
            );
            return Err(AttachError {
                field: Some("afterSeq".into()),
                ..AttachError::new(ErrorCode::InvalidInput, message)
            });
        }
        Ok(events)
    }

    /// Every shard's gauges (shards not running are left out).
    pub async fn gauges(&self) -> Vec<(ShardKey, crate::shard::ShardGauges)> {
        let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
        let answers = join_all(shards.iter().map(|s| self.directory.call(s, ShardMsg::Gauges))).await;
        shards.into_iter().zip(answers).filter_map(|(s, a)| a.ok().map(|g| (s, g))).collect()
    }

    /// A community's last event sequence number, wherever its shard runs (none if it runs nowhere).
    pub async fn last_seq(&self, shard: &ShardKey) -> Option<u64> {
        // Asked of the node running it, if that is another: a subscriber there
        // has a starting point too, and is told of events lost before they reach it.
        self.last_seq_at(shard).await.ok()
    }

    /// Completes, with why, if the store cannot write again until the process
    /// restarts ([`Store::broken`]).
    pub async fn store_broken(&self) -> String {
        self.store.broken().await
    }

    /// The store, for tests that look at what a step left in it.
    #[cfg(test)]
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store writer's group-commit counters, where the store has them.
    pub fn store_write_stats(&self) -> Option<crate::store::WriteStats> {
        self.store.write_stats()
    }

    /// How the live feed is doing.
    pub fn feed_status(&self) -> crate::feed::FeedStatus {
        self.feed.status()
    }

    /// A live receiver of a community's events, and its shard.
    pub fn subscribe(
        &self,
        who: &Principal,
        community: &CommunityCode,
    ) -> Result<(ShardKey, broadcast::Receiver<Event>), AttachError> {
        let shard = self.shard_of(community)?;
        who.require(Operation::ReadEvents, Some(&shard))?;
        let rx = self.feed.subscribe(&shard);
        Ok((shard, rx))
    }

    /// Goes up each time the live feed connects again after losing its backend
    /// (see [`Feed::reconnects`]); `None` for a feed that cannot lose events so.
    pub fn feed_reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.feed.reconnects()
    }

    /// A community's statistics (counted where it runs, on this node or another).
    pub async fn community_stats(&self, who: &Principal, community: &CommunityCode) -> Result<Statistics, AttachError> {
        let shard = self.shard_of(community)?;
        who.require(Operation::ReadStatistics, None)?;
        Ok(Statistics::from_counts(self.shard_stats(&shard).await?))
    }

    /// A health authority's statistics, merged from its communities.
    pub async fn health_authority_stats(&self, who: &Principal, ha: &HaCode) -> Result<Statistics, AttachError> {
        who.require(Operation::ReadStatistics, None)?;
        let authority = self.regions.health_authority(ha.as_str()).ok_or_else(|| ha_not_found(ha))?;
        let all = join_all(authority.communities.iter().map(|c| self.shard_stats(&c.shard))).await;
        let mut counts = ShardStats::default();
        for s in all {
            merge(&mut counts, s?);
        }
        Ok(Statistics::from_counts(counts))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn median_and_estimate() {
        let counts = ShardStats {
            waiting_people: 280,
            attached_people_28d: 28,
            wait_histogram: BTreeMap::from([(1, 1), (5, 1), (9, 1)]),
            ..Default::default()
        };
        let s = Statistics::from_counts(counts.clone());
        assert_eq!(s.median_wait_days, Some(5));
        assert_eq!(s.estimated_wait_days, Some(281), "280 waiting, then the newcomer, one a day");
        // An even count: the mean of the two middle waits.
        let even = |h: &[(u32, u64)]| {
            let wait_histogram = h.iter().copied().collect();
            Statistics::from_counts(ShardStats { wait_histogram, ..counts.clone() }).median_wait_days
        };
        assert_eq!(even(&[(309, 1), (1061, 1)]), Some(685));
        assert_eq!(even(&[(1, 1), (2, 1)]), Some(2), "half up");
        assert_eq!(even(&[(3, 2), (8, 2)]), Some(6));
        assert_eq!(even(&[(3, 3), (8, 1)]), Some(3));
        // Nobody waiting: the newcomer still waits for their own place.
        let empty = ShardStats { waiting_people: 0, ..counts };
        assert_eq!(Statistics::from_counts(empty).estimated_wait_days, Some(1));
        let none = Statistics::from_counts(ShardStats::default());
        assert_eq!((none.median_wait_days, none.estimated_wait_days), (None, None));
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = ShardStats { waiting_people: 3, wait_histogram: BTreeMap::from([(1, 2)]), ..Default::default() };
        merge(
            &mut a,
            ShardStats { waiting_people: 4, wait_histogram: BTreeMap::from([(1, 1), (2, 5)]), ..Default::default() },
        );
        assert_eq!(a.waiting_people, 7);
        assert_eq!(a.wait_histogram, BTreeMap::from([(1, 3), (2, 5)]));
    }
}

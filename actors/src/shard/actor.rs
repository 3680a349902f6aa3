//! The community shard actor: the single writer of one shard.
//!
//! Its mailbox serialises every change to the shard's waitlist, proposals and
//! provider capacity, so matching needs no locks. A change is acknowledged only
//! after the store made it durable; if a write fails the actor stops with an
//! error and its supervisor restarts it, reloading from the store, so memory
//! never drifts from what is durable.
//!
//! The actor holds its shard by a lease: it renews it every third of the
//! store's lease, stops (to be restarted: re-acquire, reload) when the store
//! says the lease was lost, and gives it back when it stops cleanly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{Instrument, info, info_span, instrument, warn};

use crate::audit::AuditDraft;
use crate::domain::{
    DAY_MS, Event, Household, Proposal, ProposalId, ProviderId, Registration, RegistrationRef, RegistrationStatus, Seq,
    ShardKey, Timestamp,
};
use crate::error::AttachError;
use crate::feed::Feed;
use crate::matcher::Policy;
use crate::store::{Batch, CasOutcome, Epoch, PhnClaim, PhnHolder, Record, RecordKey, Store, StoreError};

use super::messages::*;
use super::state::{Change, ShardState, days_before};
use super::{delegation, plan, spill, staff};

/// Settings every shard shares.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Matching policy.
    pub policy: Policy,
    /// How long a proposal stays open.
    pub proposal_ttl: Duration,
    /// How often a shard looks for overdue proposals.
    pub expiry_interval: Duration,
    /// How old an unconfirmed PHN claim must be before it counts as the orphan of a crash.
    pub claim_grace: Duration,
    /// How old an open reservation must be before the provider's community asks
    /// the household's whether its proposal was recorded, and frees it if not
    /// (a stop between spill-over's two steps). Step two refuses a proposal
    /// planned more than a third of this ago, so a reservation found unrecorded
    /// this late can never be recorded: the margin covers clocks that disagree.
    pub reservation_check: Duration,
    /// How long a closed proposal (or reservation) stays in its shard's
    /// memory: listed, and read without going to the store. Older ones are
    /// read from the store when asked for by id.
    pub proposal_memory: Duration,
    /// How long after a match is accepted a coordinator may still return the
    /// household to the waitlist with its place (the attachment fell through).
    /// No longer than `proposal_memory`: the accepted proposal is found in memory.
    pub return_window: Duration,
    /// Mailbox bound per shard: calls beyond it are refused with `OVERLOADED`.
    pub mailbox_capacity: usize,
    /// How long a caller waits for a shard's answer.
    pub call_timeout: Duration,
    /// Rows of a submitted panel a shard takes in one message (and one commit),
    /// so a large file never holds a shard's mailbox for long.
    pub panel_chunk_rows: usize,
    /// Patients a panel transfer moves per step.
    pub transfer_chunk: usize,
    /// Which node should hold each shard, when several share the store; none:
    /// this node takes every shard it can.
    pub placement: super::placement::PlacementCell,
}

impl ShardConfig {
    /// [`Self::claim_grace`] in milliseconds, as timestamps count.
    pub fn claim_grace_ms(&self) -> i64 {
        i64::try_from(self.claim_grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// How long a proposal stays open, in milliseconds.
    pub fn proposal_ttl_ms(&self) -> i64 {
        i64::try_from(self.proposal_ttl.as_millis()).unwrap_or(14 * DAY_MS)
    }

    /// How old an open reservation is when its proposal is looked for, in milliseconds.
    pub fn reservation_check_ms(&self) -> i64 {
        i64::try_from(self.reservation_check.as_millis()).unwrap_or(i64::MAX)
    }

    /// Proposals closed before this are kept only in the store.
    pub fn forget_closed_before(&self, now: Timestamp) -> Timestamp {
        now.plus_ms(-i64::try_from(self.proposal_memory.as_millis()).unwrap_or(i64::MAX))
    }

    /// How long after its acceptance a match can be returned, in milliseconds
    /// (never longer than closed proposals stay in memory).
    pub fn return_window_ms(&self) -> i64 {
        i64::try_from(self.return_window.min(self.proposal_memory).as_millis()).unwrap_or(i64::MAX)
    }

    /// How long after planning step two may still record a proposal, in milliseconds.
    pub fn record_window_ms(&self) -> i64 {
        self.reservation_check_ms() / 3
    }
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            policy: Policy::default(),
            proposal_ttl: Duration::from_secs(14 * 86_400),
            expiry_interval: Duration::from_secs(60),
            claim_grace: Duration::from_secs(60),
            reservation_check: Duration::from_secs(15 * 60),
            proposal_memory: Duration::from_secs(90 * 86_400),
            return_window: Duration::from_secs(60 * 86_400),
            mailbox_capacity: 1024,
            call_timeout: Duration::from_secs(30),
            panel_chunk_rows: 1000,
            transfer_chunk: 500,
            placement: super::placement::PlacementCell::default(),
        }
    }
}

/// What a shard actor needs from outside.
#[derive(Clone)]
pub struct ShardArgs {
    /// Which shard.
    pub key: ShardKey,
    /// Where it is persisted.
    pub store: Arc<dyn Store>,
    /// Shared settings.
    pub config: Arc<ShardConfig>,
    /// Who owns the shard (for the store's ownership record).
    pub owner: String,
    /// Where committed events are published.
    pub feed: Arc<dyn Feed>,
    /// The community's time zone, where its calendar months begin.
    pub month_zone: jiff::tz::TimeZone,
}

/// The actor. Stateless itself; its state is [`ShardRuntime`].
pub struct ShardActor;

/// A running shard: its state, its epoch and its handles.
pub struct ShardRuntime {
    pub(super) state: ShardState,
    epoch: Epoch,
    /// The lease holder's name, for renewing and releasing the lease.
    owner: String,
    last_seq: Seq,
    pub(super) store: Arc<dyn Store>,
    pub(super) config: Arc<ShardConfig>,
    feed: Arc<dyn Feed>,
    /// Set when a write failed in a way that leaves the store's state unknown:
    /// the actor then stops so its supervisor reloads it.
    suspect: bool,
    /// The audit record of the change the message being handled asks for:
    /// the first commit of that message writes it.
    pub(super) audit: Option<AuditDraft>,
    /// Reservations whose proposals their household's shard was found to hold
    /// (not kept: after a restart each is looked for once more).
    pub(super) confirmed: HashSet<ProposalId>,
    /// Proposals planned here for a provider homed elsewhere, with the
    /// registration each was planned on and when: step two records one only
    /// for that registration unchanged (not kept: after a restart none is).
    pub(super) planned: spill::Planned,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardRuntime;
    type Arguments = ShardArgs;

    #[instrument(name = "shard.load", skip_all, fields(shard = %args.key))]
    async fn pre_start(&self, myself: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardRuntime, ActorProcessingErr> {
        let epoch = args.store.acquire_shard(&args.key, &args.owner).await?;
        let image = args.store.load_shard(&args.key).await?;
        let records = image.records.len();
        let mut state = ShardState::new(args.key.clone());
        state.month_zone = args.month_zone.clone();
        state.apply(image.records, &[]);
        let forgotten = state.forget_closed_before(args.config.forget_closed_before(Timestamp::now()));
        info!(shard = %args.key, records, forgotten, last_seq = image.last_seq, epoch = epoch.0, "shard loaded");
        myself.send_interval(args.config.expiry_interval, || ShardMsg::ExpireDue);
        // A third of the lease: two renewals can fail (a store hiccup) before it runs out.
        let renew_every = (args.store.lease() / 3).max(Duration::from_millis(10));
        myself.send_interval(renew_every, || ShardMsg::RenewLease);
        Ok(ShardRuntime {
            state,
            epoch,
            owner: args.owner,
            last_seq: image.last_seq,
            store: args.store,
            config: args.config,
            feed: args.feed,
            suspect: false,
            audit: None,
            confirmed: HashSet::new(),
            planned: spill::Planned::default(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<ShardMsg>, rt: &mut ShardRuntime) -> Result<(), ActorProcessingErr> {
        // Give the shard back so another node need not wait out the lease; if this
        // fails the lease simply runs out.
        if let Err(e) = rt.store.release_shard(&rt.state.key, &rt.owner, rt.epoch).await {
            warn!(shard = %rt.state.key, error = %e, "could not release the shard's lease");
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        rt: &mut ShardRuntime,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Traced(traced) => {
                let Traced { span, msg, audit } = *traced;
                let handling = info_span!(parent: &span, "shard.handle", shard = %rt.state.key, message = msg.name());
                rt.audit = audit;
                let handled = self.dispatch(msg, rt).instrument(handling).await;
                rt.audit = None;
                handled
            }
            msg => self.dispatch(msg, rt).await,
        }
    }
}

impl ShardActor {
    /// Handles one message (already unwrapped from its trace).
    async fn dispatch(&self, msg: ShardMsg, rt: &mut ShardRuntime) -> Result<(), ActorProcessingErr> {
        // A reply port whose caller has gone (timed out) is not an error of the shard.
        macro_rules! answer {
            ($reply:expr, $result:expr) => {{
                let _ = $reply.send($result);
                if rt.suspect {
                    return Err("store write failed; restarting to reload the shard".into());
                }
            }};
        }
        let now = Timestamp::now();
        match msg {
            ShardMsg::Register(household, owner, reply) => answer!(reply, rt.register(household, owner, now).await),
            ShardMsg::Withdraw(r, reason, reply) => answer!(reply, rt.withdraw(&r, &reason, now).await),
            ShardMsg::UpdateHousehold(r, household, if_unchanged, reply) => {
                answer!(reply, rt.update_household(&r, household, if_unchanged, now).await)
            }
            ShardMsg::GetRegistration(r, reply) => answer!(reply, rt.registration_view(&r).await),
            ShardMsg::OwnerOf(r, reply) => {
                let owner = match rt.state.registration(&r) {
                    Some(_) => Ok(rt.state.owner(&r).map(str::to_owned)),
                    None => Err(AttachError::not_found("registration")),
                };
                answer!(reply, owner)
            }
            ShardMsg::OwnedBy(subject, reply) => answer!(reply, rt.owned_by(&subject).await),
            ShardMsg::Waitlist(q, reply) => answer!(reply, Ok(rt.waitlist(&q, now))),
            ShardMsg::UpsertProvider(input, checked, reply) => {
                let id = input.id.clone();
                let result = if rt.state.provider(&id).map(|p| p.clinics.clone()) != checked {
                    Err(AttachError::conflict(format!(
                        "provider {id}'s clinics changed while this change was checked; send it again"
                    )))
                } else {
                    let change = plan::upsert_provider(&rt.state, input, now);
                    rt.commit(change, now).await.and_then(|_| rt.provider_view(&id, now))
                };
                answer!(reply, result)
            }
            ShardMsg::SetCapacity(id, capacity, reply) => {
                let result = match plan::set_capacity(&rt.state, &id, capacity, now) {
                    Ok(change) => rt.commit(change, now).await.and_then(|_| rt.provider_view(&id, now)),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::GetProvider(id, reply) => answer!(reply, rt.provider_view(&id, now)),
            ShardMsg::ListProviders(reply) => {
                let ids: Vec<_> = rt.state.providers().map(|p| p.id.clone()).collect();
                answer!(reply, ids.iter().map(|id| rt.provider_view(id, now)).collect())
            }
            ShardMsg::UpsertClinic(mut cmd, who, reply) => {
                let facility = cmd.facility.clone();
                let existing = rt.state.clinic(&facility);
                cmd.medical_director = delegation::named_director(existing, &who, cmd.medical_director.take());
                let result = match delegation::may_keep_clinic(existing, &who, &facility, cmd.medical_director.as_ref())
                {
                    Ok(()) => {
                        let change = plan::upsert_clinic(&rt.state, cmd, now);
                        rt.commit(change, now).await.and_then(|_| {
                            rt.state
                                .clinic(&facility)
                                .cloned()
                                .ok_or_else(|| AttachError::internal("clinic missing after commit"))
                        })
                    }
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::GetClinic(f, reply) => {
                answer!(reply, rt.state.clinic(&f).cloned().ok_or_else(|| AttachError::not_found("clinic")))
            }
            ShardMsg::ListClinics(reply) => answer!(reply, Ok(rt.state.clinics().cloned().collect())),
            ShardMsg::AddClinicStaff { facility, input, who, reply } => {
                let result = match staff::add(&rt.state, &who, &facility, input, now) {
                    Ok((change, member)) => rt.commit(change, now).await.map(|_| member),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::RemoveClinicStaff { facility, subject, who, reply } => {
                let result = match staff::remove(&rt.state, &who, &facility, &subject) {
                    Ok((change, member)) => rt.commit(change, now).await.map(|_| member),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::ClinicStaff(facility, who, reply) => answer!(reply, staff::visible(&rt.state, &who, &facility)),
            ShardMsg::RunMatching(reply) => {
                let ttl = rt.config.proposal_ttl_ms();
                let result = match plan::run_matching(&rt.state, &rt.config.policy, ttl, now) {
                    Ok((change, proposals)) => rt.commit(change, now).await.map(|_| proposals),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::ListProposals { statuses, provider, from, limit, reply } => {
                let (after, offset) = match from {
                    ProposalsFrom::Start => (None, 0),
                    ProposalsFrom::After(at, id) => (Some((at, id)), 0),
                    ProposalsFrom::Offset(n) => (None, n),
                };
                let matching: Vec<_> = rt
                    .state
                    .proposals_after(after)
                    .filter(|p| statuses.is_empty() || statuses.contains(&p.status))
                    .filter(|p| provider.as_ref().is_none_or(|id| &p.provider == id))
                    .skip(offset)
                    .take(limit + 1)
                    .cloned()
                    .collect();
                answer!(reply, Ok(page(matching, limit, |items, has_next| ProposalPage { items, has_next })))
            }
            ShardMsg::GetProposal(id, reply) => {
                let found = rt.proposal_anywhere(&id).await;
                answer!(reply, found.and_then(|p| p.ok_or_else(|| AttachError::not_found("proposal"))))
            }
            ShardMsg::DeclineMatch(reference, reason, reply) => {
                let result = match plan::decline_for_household(&rt.state, &reference, reason, now) {
                    Ok((change, proposal)) => rt.commit(change, now).await.map(|_| proposal),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::ReturnToWaitlist(reference, reason, reply) => {
                answer!(reply, rt.return_to_waitlist(&reference, reason, now).await)
            }
            ShardMsg::AnswerProposal(id, ans, who, reply) => {
                let allowed = match rt.state.proposal(&id) {
                    Some(p) => delegation::may_act_on_proposal(&who, &p.provider),
                    // Closed long ago, and kept only in the store: answered already.
                    None => match rt.proposal_anywhere(&id).await {
                        Ok(Some(p)) => delegation::may_act_on_proposal(&who, &p.provider).and_then(|()| {
                            Err(AttachError::conflict(format!("proposal {id} is {}: it was answered", p.status.name())))
                        }),
                        Ok(None) => Err(AttachError::not_found("proposal")),
                        Err(e) => Err(e),
                    },
                };
                let result = match allowed.and_then(|()| plan::answer(&rt.state, &id, ans, now)) {
                    Ok((change, proposal)) => rt.commit(change, now).await.map(|_| proposal),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::Panel { provider, offset, limit, who, reply } => {
                let found = rt.state.provider(&provider).ok_or_else(|| AttachError::not_found("provider"));
                let result =
                    match found.and_then(|p| delegation::may_manage_panel(&rt.state, &who, &provider).map(|()| p)) {
                        Err(e) => Err(e),
                        Ok(p) => {
                            let panel_size = rt.state.panel_size(p);
                            let items: Vec<_> = rt
                                .state
                                .panel(&provider)
                                .map(|panel| panel.values().skip(offset).take(limit + 1).cloned().collect())
                                .unwrap_or_default();
                            Ok(page(items, limit, |items, has_next| PanelPage { items, has_next, panel_size }))
                        }
                    };
                answer!(reply, result)
            }
            ShardMsg::StartEndorsement { provider, delegate, who, reply } => {
                let result = match delegation::start(&rt.state, &who, &provider, delegate, now) {
                    Ok((change, e)) => {
                        rt.audit_names(&e.id);
                        rt.commit(change, now).await.map(|_| e)
                    }
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::AdvanceEndorsement(id, step, who, reply) => {
                let result = match delegation::advance(&rt.state, &who, &id, step, now) {
                    Ok((change, e)) => rt.commit(change, now).await.map(|_| e),
                    Err(e) => Err(e),
                };
                answer!(reply, result)
            }
            ShardMsg::GetEndorsement(id, who, reply) => {
                let result = match rt.state.endorsement(&id) {
                    None => Err(AttachError::not_found("endorsement")),
                    Some(e) => delegation::visible_endorsements(&rt.state, &who, &e.provider).and_then(|seen| {
                        seen.into_iter().find(|s| s.id == id).ok_or_else(|| {
                            AttachError::new(crate::error::ErrorCode::Forbidden, "this endorsement is not yours")
                        })
                    }),
                };
                answer!(reply, result)
            }
            ShardMsg::ListEndorsements(provider, who, reply) => {
                answer!(reply, delegation::visible_endorsements(&rt.state, &who, &provider))
            }
            ShardMsg::Stats(reply) => answer!(reply, Ok(rt.stats(now))),
            ShardMsg::Gauges(reply) => {
                use crate::domain::RegistrationStatus as S;
                let (waiting, proposed) = (rt.state.tally(S::Waiting), rt.state.tally(S::Proposed));
                answer!(
                    reply,
                    Ok(ShardGauges {
                        waiting_households: waiting.households,
                        waiting_people: waiting.people,
                        proposed_households: proposed.households,
                        last_seq: rt.last_seq,
                        settlements_pending: rt.state.settlements_pending() as u64,
                        proposals_in_memory: rt.state.proposals_held() as u64,
                    })
                )
            }
            ShardMsg::SubmitPanel(chunk, who, reply) => answer!(reply, rt.submit_panel(chunk, &who, now).await),
            ShardMsg::StaleIntakes(before, reply) => answer!(reply, Ok(rt.stale_intakes(before, now))),
            ShardMsg::SettleIntakes { take, forget, reply } => {
                answer!(reply, rt.settle_intakes(take, forget, now).await)
            }
            ShardMsg::MayChangePanel(provider, who, reply) => answer!(reply, rt.may_change_panel(&who, &provider)),
            ShardMsg::ReleaseToPanel(release, born, reply) => {
                answer!(reply, rt.release_to_panel(release, &born, now).await)
            }
            ShardMsg::RemoveFromPanel { provider, phns, who, reply } => {
                answer!(reply, rt.remove_from_panel(&provider, &phns, &who, now).await)
            }
            ShardMsg::SetProviderClinic { provider, facility, present, reply } => {
                answer!(reply, rt.set_provider_clinic(&provider, facility, present, now).await)
            }
            ShardMsg::BeginTransfer(req, reply) => answer!(reply, rt.begin_transfer(req, now).await),
            ShardMsg::AnswerTransfer { from, key, answer, reply } => {
                answer!(reply, rt.answer_transfer(&from, &key, answer, now).await)
            }
            ShardMsg::TransferBatch { from, key, limit, reply } => {
                answer!(reply, rt.transfer_batch(&from, &key, limit))
            }
            ShardMsg::AcceptTransfer(t, reply) => answer!(reply, rt.accept_transfer(t, now).await),
            ShardMsg::CompleteTransfer { from, key, done, reply } => {
                answer!(reply, rt.complete_transfer(&from, &key, done, now).await)
            }
            ShardMsg::MoveOut(r, to, reply) => answer!(reply, rt.move_out(&r, &to, now).await),
            ShardMsg::MoveIn(moving, reply) => answer!(reply, rt.move_in(*moving, now).await),
            ShardMsg::FinishMove(r, reply) => answer!(reply, rt.finish_move(&r, now).await),
            ShardMsg::RunningMoves(reply) => answer!(reply, Ok(rt.running_moves())),
            ShardMsg::TransfersOf(provider, reply) => {
                let theirs = rt.state.transfers().filter(|t| t.from == provider || t.to == provider);
                answer!(reply, Ok(theirs.cloned().collect()))
            }
            ShardMsg::RunningTransfers(reply) => {
                let running = rt.state.transfers().filter(|t| t.status == crate::domain::TransferStatus::Running);
                answer!(reply, Ok(running.cloned().collect()))
            }
            ShardMsg::PanelReports { provider, facility, who, reply } => {
                answer!(reply, rt.panel_reports(provider.as_ref(), facility.as_ref(), &who, now))
            }
            ShardMsg::PlanSpill { neighbour, km, providers, reply } => {
                let ttl = rt.config.proposal_ttl_ms();
                let policy = &rt.config.policy;
                let planned = spill::plan_spill(&rt.state, policy, ttl, now, &neighbour, km, &providers);
                let window = rt.config.record_window_ms();
                answer!(reply, planned.inspect(|ps| rt.planned.note(&rt.state, ps, now, window)))
            }
            ShardMsg::ProposeMatch { reference, provider, note, reply } => {
                answer!(reply, rt.propose_match(&reference, &provider, &note, now).await)
            }
            ShardMsg::PlanProposal { reference, provider, km, note, reply } => {
                let ask = plan::CoordinatorAsk { reference: &reference, note: &note, away: Some(km) };
                let policy = &rt.config.policy;
                let planned =
                    plan::coordinator_proposal(&rt.state, policy, rt.config.proposal_ttl_ms(), now, &provider, ask);
                let window = rt.config.record_window_ms();
                answer!(reply, planned.inspect(|p| rt.planned.note(&rt.state, std::slice::from_ref(p), now, window)))
            }
            ShardMsg::SparePlaces(reply) => {
                answer!(reply, Ok(spill::spare_places(&rt.state, &rt.config.policy, now)))
            }
            ShardMsg::Reserve(proposals, reply) => answer!(reply, rt.reserve(proposals, now).await),
            ShardMsg::RecordSpill(proposals, reply) => answer!(reply, rt.record_spill(proposals, now).await),
            ShardMsg::Settle(settlement, reply) => answer!(reply, rt.settle(settlement, now).await),
            ShardMsg::Settlements(reply) => answer!(reply, Ok(rt.state.settlements().cloned().collect())),
            ShardMsg::Settled(id, status, reply) => answer!(reply, rt.settled(id, status, now).await),
            ShardMsg::UnconfirmedReservations(reply) => answer!(reply, Ok(rt.unconfirmed_reservations(now))),
            ShardMsg::ReservationConfirmed(id, reply) => {
                rt.confirmed.insert(id);
                answer!(reply, Ok(()))
            }
            ShardMsg::RenewLease => match rt.store.renew_lease(&rt.state.key, &rt.owner, rt.epoch).await {
                Ok(()) => {}
                // Worth another try on the next tick; if the lease runs out meanwhile,
                // the store refuses commits and the actor restarts through that path.
                Err(e @ StoreError::Unavailable(_)) => {
                    warn!(shard = %rt.state.key, error = %e, "renewing the shard's lease failed")
                }
                Err(e) => {
                    warn!(shard = %rt.state.key, error = %e, "the shard's lease was lost; restarting to acquire it again");
                    return Err(e.into());
                }
            },
            ShardMsg::ExpireDue => {
                rt.state.forget_closed_before(rt.config.forget_closed_before(now));
                if rt.state.overdue_proposals(now).is_empty()
                    && rt.state.overdue_reservations(now, super::spill::RESERVATION_GRACE_MS).is_empty()
                {
                    return Ok(());
                }
                let change = plan::expire(&rt.state, now)?;
                if let Err(e) = rt.commit(change, now).await {
                    warn!(shard = %rt.state.key, error = %e, "expiring proposals failed; will retry on the next tick");
                    if rt.suspect {
                        return Err("store write failed; restarting to reload the shard".into());
                    }
                }
            }
            ShardMsg::Traced(_) => return Err("a traced message inside a traced message".into()),
        }
        Ok(())
    }
}

/// Whether [`ShardRuntime::claim_members`] replaces a claim its holder already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renew {
    No,
    Yes,
}

/// What [`ShardRuntime::claim_members`] changed, to give back if the change it
/// was for fails.
struct Claimed {
    /// PHNs claimed here that had no live claim.
    taken: Vec<crate::domain::Phn>,
    /// The holder's own claims replaced (with [`Renew::Yes`]), as they were.
    renewed: Vec<(crate::domain::Phn, PhnClaim)>,
}

fn page<T, P>(mut items: Vec<T>, limit: usize, make: impl FnOnce(Vec<T>, bool) -> P) -> P {
    let has_next = items.len() > limit;
    items.truncate(limit);
    make(items, has_next)
}

impl ShardRuntime {
    /// Numbers the change's events, makes it durable, then applies it.
    #[instrument(name = "shard.commit", skip_all, fields(shard = %self.state.key, records = change.upserts.len()))]
    pub(super) async fn commit(&mut self, change: Change, now: Timestamp) -> Result<(), AttachError> {
        if change.upserts.is_empty() && change.deletes.is_empty() && change.events.is_empty() {
            return Ok(());
        }
        let first = self.last_seq + 1;
        let events: Vec<Event> = change
            .events
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event { shard: self.state.key.clone(), seq: first + i as u64, at: now, kind })
            .collect();
        let count = events.len() as u64;
        let draft = self.audit.take();
        let batch = Batch {
            upserts: change.upserts,
            deletes: change.deletes,
            events,
            locators: change.locators,
            audit: draft.iter().map(|d| d.record.clone()).collect(),
        };
        match self.store.commit(&self.state.key, self.epoch, &batch).await {
            Ok(()) => {
                if let Some(draft) = draft {
                    draft.mark_committed();
                }
                self.state.apply(batch.upserts, &batch.deletes);
                self.last_seq += count;
                // Only durable events go out: a subscriber never sees a change that could be lost.
                self.feed.publish(&batch.events);
                Ok(())
            }
            Err(e) => {
                // The store may or may not have kept the batch (a timeout, say): the only
                // safe state is the store's, so the actor restarts and reloads.
                self.suspect = true;
                Err(e.into())
            }
        }
    }

    /// Names what this message creates as the target of its audit record: the
    /// caller could not know the id (a new registration, a new endorsement).
    pub(super) fn audit_names(&mut self, id: &impl std::fmt::Display) {
        if let Some(draft) = self.audit.as_mut() {
            draft.record.target = Some(id.to_string());
        }
    }

    /// Registers a household: claims every member's PHN, then commits.
    #[instrument(name = "shard.register", skip_all, fields(shard = %self.state.key, people = household.members.len()))]
    async fn register(
        &mut self,
        household: Household,
        owner: Option<String>,
        now: Timestamp,
    ) -> Result<RegistrationView, AttachError> {
        let reference = RegistrationRef::generate();
        let claim = PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Registration(reference), at: now };
        let phns: Vec<_> = household.members.iter().map(|m| m.phn).collect();
        let claimed = self.claim_members(&claim, &household, &phns, now, Renew::No, "nothing was registered").await?;
        let change = plan::register(reference, household, owner, &self.state, now);
        self.audit_names(&reference);
        if let Err(e) = self.commit(change, now).await {
            self.give_back(&claimed, &claim).await;
            return Err(e);
        }
        self.registration_view(&reference).await
    }

    /// Claims `phns` (members of `household`) for `claim`'s holder and answers
    /// what it changed. A PHN whose claim is live elsewhere refuses the whole
    /// household with `CONFLICT` naming that member (`outcome` says what did
    /// not happen), after giving back the claims changed here. With
    /// [`Renew::Yes`], a claim the holder already has is replaced by `claim`
    /// (a return marks its members' claims as newer than the attachment).
    async fn claim_members(
        &self,
        claim: &PhnClaim,
        household: &Household,
        phns: &[crate::domain::Phn],
        now: Timestamp,
        renew: Renew,
        outcome: &str,
    ) -> Result<Claimed, AttachError> {
        let held = self.store.claim_phns(phns.iter().map(|p| (*p, claim.clone())).collect()).await?;
        let taken = phns.iter().copied().filter(|p| !held.iter().any(|(h, _)| h == p)).collect();
        let mut claimed = Claimed { taken, renewed: Vec::new() };
        let mut refused = None;
        for (phn, existing) in held {
            // Still this registration's (a member who left and came back before the claim was freed).
            if existing.holder == claim.holder && (renew == Renew::No || &existing == claim) {
                continue;
            }
            if existing.holder != claim.holder && self.claim_is_live(&existing, phn, now).await? {
                refused = Some(phn);
                break;
            }
            // The holder's own claim to renew, or one left over from a withdrawal or a
            // crash to take over, unless someone else just changed it. One freed
            // meanwhile (a removal from a panel) is taken afresh.
            let mut outcome = self.store.cas_phn_claim(phn, Some(&existing), Some(claim)).await?;
            let freed = outcome == CasOutcome::Conflict(None);
            if freed {
                outcome = self.store.cas_phn_claim(phn, None, Some(claim)).await?;
            }
            match outcome {
                CasOutcome::Applied if existing.holder == claim.holder && !freed => {
                    claimed.renewed.push((phn, existing))
                }
                CasOutcome::Applied => claimed.taken.push(phn),
                CasOutcome::Conflict(_) => {
                    refused = Some(phn);
                    break;
                }
            }
        }
        if let Some(phn) = refused {
            self.give_back(&claimed, claim).await;
            let index = household.members.iter().position(|m| m.phn == phn).unwrap_or(0);
            return Err(AttachError {
                field: Some(format!("members[{index}].phn")),
                ..AttachError::conflict(format!(
                    "member {} of this household is already on a waitlist or a provider's panel, or is being \
                     registered right now (a registration of theirs that just failed frees them within a minute); \
                     {outcome}",
                    index + 1
                ))
            });
        }
        Ok(claimed)
    }

    /// Undoes [`Self::claim_members`] after the change it was for failed:
    /// claims taken are given back, claims renewed are put back as they were.
    async fn give_back(&self, claimed: &Claimed, claim: &PhnClaim) {
        self.release(&claimed.taken, claim).await;
        for (phn, before) in &claimed.renewed {
            if let Err(e) = self.store.cas_phn_claim(*phn, Some(claim), Some(before)).await {
                // The renewed claim still names the registration, so the member stays held;
                // a removal from the panel leaves it until the return is asked again.
                warn!(shard = %self.state.key, error = %e, "could not put back a renewed PHN claim");
            }
        }
    }

    /// Frees the PHN claims registration `r` holds for `phns`, for a future
    /// registration. A failure is harmless: a claim naming a registration that
    /// no longer lists the member, or was withdrawn, counts as free (see
    /// [`Self::claim_is_live`]). A claim
    /// made before the household moved here still names this registration
    /// (references are unique), so it is freed too.
    async fn free_claims(&self, r: &RegistrationRef, phns: &[crate::domain::Phn]) {
        for &phn in phns {
            if let Ok(Some(current)) = self.store.phn_claim(phn).await
                && current.holder == PhnHolder::Registration(*r)
            {
                let _ = self.store.cas_phn_claim(phn, Some(&current), None).await;
            }
        }
    }

    /// A waiting household as it is now: added members' PHNs are claimed
    /// first (refused as a whole if one is taken), the change is committed,
    /// then the claims of members who left are freed.
    #[instrument(name = "shard.update_household", skip_all, fields(shard = %self.state.key, people = household.members.len()))]
    async fn update_household(
        &mut self,
        r: &RegistrationRef,
        household: Household,
        if_unchanged: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<RegistrationView, AttachError> {
        let current = self.state.registration(r).ok_or_else(|| AttachError::not_found("registration"))?;
        // A change made from the registration as it was at `if_unchanged`: one made
        // since by someone else (a baby added) must not be overwritten unseen.
        if let Some(read) = if_unchanged.filter(|t| *t != current.updated_at) {
            return Err(AttachError::conflict(format!(
                "the household changed since it was read (at {}, read at {}): read it again and make the change \
                 on top of it; nothing was changed",
                current.updated_at.to_utc().to_rfc3339(),
                read.to_utc().to_rfc3339()
            )));
        }
        let unchanged = current.household == household;
        let before: Vec<_> = current.household.members.iter().map(|m| m.phn).collect();
        // The time the change will carry: another community reading the claim before the
        // commit finds it newer than the registration, a change under way (`claim_is_live`).
        let at = current.next_change_at(now);
        // Planned first: a refused transition is refused before any claim is taken.
        let change = plan::update_household(&self.state, r, household.clone(), now)?;
        if unchanged {
            return self.registration_view(r).await;
        }
        let added: Vec<_> = household.members.iter().map(|m| m.phn).filter(|p| !before.contains(p)).collect();
        let left: Vec<_> = before.iter().copied().filter(|p| !household.members.iter().any(|m| m.phn == *p)).collect();
        let claim = PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Registration(*r), at };
        let claimed = self.claim_members(&claim, &household, &added, now, Renew::No, "nothing was changed").await?;
        if let Err(e) = self.commit(change, now).await {
            self.give_back(&claimed, &claim).await;
            return Err(e);
        }
        self.free_claims(r, &left).await;
        self.registration_view(r).await
    }

    /// An attachment that fell through ([`plan::return_attached`]): the
    /// members' PHNs are claimed for the registration again first (still its
    /// own, or freed by a removal from the panel; one on another panel or
    /// waitlist refuses the whole return), then the change is committed.
    ///
    /// The claims are renewed with a time later than the attachment's. From
    /// then on a removal from the panel or a transfer step in the provider's
    /// community, which reads the claim and the registration and then changes
    /// the claim, sees that the claim no longer stands for a panel entry
    /// ([`super::panels::stands_for_attachment`]); one that read the claim
    /// before fails its compare-and-set. So a member returned to the waitlist
    /// never loses their claim to a racing removal.
    async fn return_to_waitlist(
        &mut self,
        r: &RegistrationRef,
        reason: String,
        now: Timestamp,
    ) -> Result<RegistrationView, AttachError> {
        // Planned first: a refused return is refused before any claim is taken.
        let change = plan::return_attached(&self.state, r, reason, now, self.config.return_window_ms())?;
        let reg = self.state.registration(r).ok_or_else(|| AttachError::not_found("registration"))?;
        let (household, at) = (reg.household.clone(), reg.next_change_at(now));
        let phns: Vec<_> = household.members.iter().map(|m| m.phn).collect();
        let claim = PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Registration(*r), at };
        let claimed = self.claim_members(&claim, &household, &phns, now, Renew::Yes, "nothing was changed").await?;
        if let Err(e) = self.commit(change, now).await {
            self.give_back(&claimed, &claim).await;
            return Err(e);
        }
        self.registration_view(r).await
    }

    /// Gives back claims this shard took for a registration it did not make.
    pub(super) async fn release(&self, phns: &[crate::domain::Phn], claim: &PhnClaim) {
        for phn in phns {
            if let Err(e) = self.store.cas_phn_claim(*phn, Some(claim), None).await {
                // Harmless: an unconfirmed claim is taken over once its grace period passes.
                warn!(shard = %self.state.key, error = %e, "could not release a PHN claim");
            }
        }
    }

    /// Whether an existing claim still holds its PHN.
    pub(super) async fn claim_is_live(
        &self,
        claim: &PhnClaim,
        phn: crate::domain::Phn,
        now: Timestamp,
    ) -> Result<bool, AttachError> {
        let record = match &claim.holder {
            PhnHolder::Registration(r) => self.claimed_registration(&claim.shard, r).await?.map(Record::Registration),
            PhnHolder::Panel(p) => self.panel_record(&claim.shard, p, phn, false).await?,
            PhnHolder::PanelFrom(p, _) => self.panel_record(&claim.shard, p, phn, true).await?,
        };
        let recent = now.0 - claim.at.0 < self.config.claim_grace_ms();
        Ok(match record {
            // A claim made since the registration last changed, for a member it
            // does not list yet, is a change under way (a member being added):
            // live until the claim grace passes, as for a registration not yet committed.
            Some(Record::Registration(r)) => r.holds(phn) || (r.holds_phns() && claim.at >= r.updated_at && recent),
            Some(_) => true,
            // No record: either the claimer is between claim and commit (live) or it crashed there.
            None => recent,
        })
    }

    /// What stands behind a panel's claim on `phn` in `shard` (read here when
    /// it is this shard): the entry, or, for a claim a registration passed on
    /// (`taking`), the intake its pass finishes (DECISIONS 44).
    async fn panel_record(
        &self,
        shard: &ShardKey,
        provider: &ProviderId,
        phn: crate::domain::Phn,
        taking: bool,
    ) -> Result<Option<Record>, AttachError> {
        let here = shard == &self.state.key;
        let entry = if here {
            self.state.panel(provider).and_then(|p| p.get(&phn)).cloned().map(Record::PanelEntry)
        } else {
            self.store.read(shard, &RecordKey::PanelEntry(provider.clone(), phn)).await?
        };
        if entry.is_some() || !taking {
            return Ok(entry);
        }
        Ok(if here {
            self.state.intake(provider, phn).cloned().map(Record::PanelIntake)
        } else {
            self.store.read(shard, &RecordKey::PanelIntake(provider.clone(), phn)).await?
        })
    }

    /// The registration a PHN claim names, in the community where it lives now:
    /// a claim made before a move still names the community the household left,
    /// whose `MOVED` copy is followed to the one it joined (by its locator).
    /// A `MOVED` copy that its locator still points at is a move under way.
    pub(super) async fn claimed_registration(
        &self,
        shard: &ShardKey,
        r: &RegistrationRef,
    ) -> Result<Option<Registration>, AttachError> {
        let found = self.registration_in(shard, r).await?;
        match found {
            Some(reg) if reg.status == RegistrationStatus::Moved => {
                match self.store.locate(&crate::store::Locator::Registration(*r)).await? {
                    Some(now_in) if &now_in != shard => Ok(self.registration_in(&now_in, r).await?.or(Some(reg))),
                    _ => Ok(Some(reg)),
                }
            }
            other => Ok(other),
        }
    }

    /// A registration held by `shard`: this shard's own from memory, another's from the store.
    async fn registration_in(
        &self,
        shard: &ShardKey,
        r: &RegistrationRef,
    ) -> Result<Option<Registration>, AttachError> {
        if shard == &self.state.key {
            return Ok(self.state.registration(r).cloned());
        }
        Ok(match self.store.read(shard, &RecordKey::Registration(*r)).await? {
            Some(Record::Registration(reg)) => Some(reg),
            _ => None,
        })
    }

    async fn withdraw(
        &mut self,
        r: &RegistrationRef,
        reason: &str,
        now: Timestamp,
    ) -> Result<RegistrationView, AttachError> {
        let change = plan::withdraw(&self.state, r, reason, now)?;
        self.commit(change, now).await?;
        let view = self.registration_view(r).await?;
        let phns: Vec<_> = view.registration.household.members.iter().map(|m| m.phn).collect();
        self.free_claims(r, &phns).await;
        Ok(view)
    }

    /// The registrations here that the patient signed in as `subject`
    /// registered, `MOVED` copies included (the system keeps a household's
    /// copy where it went, and this one only while the move has not arrived).
    async fn owned_by(&self, subject: &str) -> Result<Vec<RegistrationView>, AttachError> {
        let mut views = Vec::new();
        for r in self.state.owned_by(subject) {
            views.push(self.registration_view(&r).await?);
        }
        Ok(views)
    }

    pub(super) async fn registration_view(&self, r: &RegistrationRef) -> Result<RegistrationView, AttachError> {
        let registration = self.state.registration(r).ok_or_else(|| AttachError::not_found("registration"))?;
        // The open proposal, else the newest memory holds (accepted, cancelled, returned…),
        // else for a waiting household the one its last decline names (older, from the store).
        // A decline newer than the newest here was made in another community the
        // household has since left and come back from: that one is the last.
        let newest_here = self.state.latest_proposal(r).filter(|latest| {
            registration.declines.last().is_none_or(|d| d.proposal == latest.id || d.at <= latest.created_at)
        });
        let proposal = match (registration.proposal, newest_here) {
            (None, Some(latest)) => Some(latest.clone()),
            (Some(id), _) => self.proposal_anywhere(&id).await?,
            (None, None) => match registration.declines.last() {
                Some(d) if registration.status == crate::domain::RegistrationStatus::Waiting => {
                    self.proposal_wherever_made(&d.proposal).await?
                }
                _ => None,
            },
        };
        let place = self.state.place_in_line(registration);
        let estimated_wait_days = place.and_then(|(_, ahead)| {
            let people = ahead + registration.household.members.len() as u64;
            estimated_wait_days(people, self.attached_in_rate_window(Timestamp::now()))
        });
        Ok(RegistrationView { place, registration: registration.clone(), proposal, estimated_wait_days })
    }

    fn waitlist(&self, q: &WaitlistQuery, now: Timestamp) -> WaitlistPage {
        let items = self.state.waitlist_page(q, now);
        let total_waiting = self.state.tally(crate::domain::RegistrationStatus::Waiting).households;
        page(items, q.limit, |items, has_next| WaitlistPage { items, has_next, total_waiting })
    }

    /// A coordinator's proposal of a waiting household to a provider homed
    /// here, checked and recorded in one commit.
    async fn propose_match(
        &mut self,
        reference: &crate::domain::RegistrationRef,
        provider: &crate::domain::ProviderId,
        note: &str,
        now: Timestamp,
    ) -> Result<crate::domain::Proposal, AttachError> {
        let view = self.provider_view(provider, now)?;
        let ask = plan::CoordinatorAsk { reference, note, away: None };
        let proposal = plan::coordinator_proposal(
            &self.state,
            &self.config.policy,
            self.config.proposal_ttl_ms(),
            now,
            &view,
            ask,
        )?;
        let mut change = Change::default();
        plan::plan_proposal(&self.state, &mut change, &proposal, now)?;
        self.commit(change, now).await.map(|()| proposal)
    }

    pub(super) fn provider_view(
        &self,
        id: &crate::domain::ProviderId,
        now: Timestamp,
    ) -> Result<ProviderView, AttachError> {
        let p = self.state.provider(id).ok_or_else(|| AttachError::not_found("provider"))?;
        Ok(self.state.provider_view(p, now))
    }

    /// A proposal made here: from memory, or, closed long enough ago to be
    /// out of it ([`ShardConfig::proposal_memory`]), from the store.
    pub(super) async fn proposal_anywhere(&self, id: &ProposalId) -> Result<Option<Proposal>, AttachError> {
        if let Some(p) = self.state.proposal(id) {
            return Ok(Some(p.clone()));
        }
        self.stored_proposal(&self.state.key, id).await
    }

    /// A proposal as `shard` stored it.
    async fn stored_proposal(&self, shard: &ShardKey, id: &ProposalId) -> Result<Option<Proposal>, AttachError> {
        match self.store.read(shard, &RecordKey::Proposal(*id)).await? {
            Some(Record::Proposal(p)) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// A proposal made here ([`Self::proposal_anywhere`]) or in the community
    /// where the household waited when it was made (a household that moved
    /// here), found there by its locator.
    async fn proposal_wherever_made(&self, id: &ProposalId) -> Result<Option<Proposal>, AttachError> {
        if let Some(p) = self.proposal_anywhere(id).await? {
            return Ok(Some(p));
        }
        match self.store.locate(&crate::store::Locator::Proposal(*id)).await? {
            Some(shard) if shard != self.state.key => self.stored_proposal(&shard, id).await,
            _ => Ok(None),
        }
    }

    /// People attached over the window the attachment rate is measured on.
    fn attached_in_rate_window(&self, now: Timestamp) -> u64 {
        self.state.people_attached_since(days_before(now, RATE_WINDOW_DAYS))
    }

    fn stats(&self, now: Timestamp) -> ShardStats {
        use crate::domain::RegistrationStatus as S;
        let waiting = self.state.tally(S::Waiting);
        let proposed = self.state.tally(S::Proposed);
        let accepting: Vec<_> = self.state.providers().filter(|p| p.capacity.accepting).collect();
        ShardStats {
            waiting_households: waiting.households,
            waiting_people: waiting.people,
            proposed_households: proposed.households,
            proposed_people: proposed.people,
            attached_people: self.state.people_attached_since(Timestamp(i64::MIN)),
            attached_people_week: self.state.people_attached_since(days_before(now, 7)),
            attached_people_28d: self.attached_in_rate_window(now),
            wait_histogram: self.state.wait_histogram(now),
            accepting_providers: accepting.len() as u64,
            free_places: accepting.iter().map(|p| u64::from(self.state.free_places(p, now))).sum(),
        }
    }
}

//! Spill-over matching: households left waiting after their own community's
//! matching are proposed to providers with free places in neighbouring
//! communities (docs/DECISIONS.md, "Spill-over matching").
//!
//! The proposal lives with the household, in its community's shard, like any
//! other, so every path that closes a proposal (answer, expiry, withdrawal, a
//! move) works as it does at home. The provider's shard, the single writer of
//! their capacity, holds a *reservation*: a copy of the proposal whose places
//! count as taken while it is open. Two steps make a proposal:
//! 1. the provider's shard reserves the places (refused if they are gone);
//! 2. the household's shard records the proposal (refused if the household is
//!    no longer waiting; the caller then frees the reservation).
//!
//! A reservation whose proposal was never recorded (a stop between the steps)
//! is found by the periodic pass once it is `ShardConfig::reservation_check`
//! old: the household's shard is asked whether it holds the proposal, and the
//! reservation is cancelled if it does not. Step two refuses a proposal planned
//! longer ago than a third of that, so the answer cannot change afterwards. A
//! reservation whose household's shard cannot be asked is freed by the
//! provider's shard alone a grace period after the proposal would have
//! expired. Closing a recorded proposal leaves a settlement record in the
//! household's shard, pushed to the provider's shard (free the places, or put
//! the accepted household on the panel) and deleted once taken; the system
//! pushes it right after the close and every lease until it is taken.

use crate::domain::{
    EventKind, PanelEntry, Proposal, ProposalId, ProposalStatus, Registration, Settlement, ShardKey, Timestamp,
};
use crate::error::AttachError;
use crate::matcher::{self, Policy};
use crate::store::{Record, RecordKey};

use super::actor::ShardRuntime;
use super::messages::ProviderView;
use super::plan;
use super::state::{Change, ShardState};

/// How long after its proposal's expiry an open reservation is freed by the
/// provider's shard alone: the household's shard settles a closed proposal
/// within a lease or so, so an open reservation this late is an orphan that the
/// periodic pass could not check with the household's community.
pub const RESERVATION_GRACE_MS: i64 = 60 * 60 * 1000;

/// The providers homed here with places to spare for a neighbour: the free
/// places their own community's waiting households would leave them, as this
/// community's own matching would place them now (each view's `free_places` is
/// that spare). A community's households come first for its own providers.
pub fn spare_places(state: &ShardState, policy: &Policy, now: Timestamp) -> Vec<ProviderView> {
    let mut spare: Vec<ProviderView> =
        state.providers().map(|p| state.provider_view(p, now)).filter(|v| v.free_places > 0).collect();
    if spare.is_empty() || state.tally(crate::domain::RegistrationStatus::Waiting).households == 0 {
        return spare;
    }
    let openings: Vec<_> = spare.iter().map(|v| plan::opening_here(state, &v.provider, v.free_places, now)).collect();
    let candidates = plan::waiting_candidates(state, policy, now);
    let sizes: std::collections::HashMap<_, u32> =
        candidates.iter().map(|c| (c.reference, u32::from(c.size))).collect();
    for placement in matcher::run(&candidates, &openings, policy, now) {
        if let Some(v) = spare.iter_mut().find(|v| v.provider.id == placement.provider) {
            v.free_places = v.free_places.saturating_sub(sizes.get(&placement.reference).copied().unwrap_or(0));
        }
    }
    spare.retain(|v| v.free_places > 0);
    spare
}

/// Proposals this shard's waiting households would get from the providers of
/// `neighbour` (their registry entries and spare places, read there with
/// [`spare_places`]), `km` away. Plans nothing: the provider's shard reserves the places first.
pub fn plan_spill(
    state: &ShardState,
    policy: &Policy,
    ttl_ms: i64,
    now: Timestamp,
    neighbour: &ShardKey,
    km: u32,
    providers: &[ProviderView],
) -> Result<Vec<Proposal>, AttachError> {
    let openings: Vec<_> = providers
        .iter()
        .filter(|v| v.free_places > 0 && state.provider(&v.provider.id).is_none())
        .map(|v| plan::opening(&v.provider, v.free_places))
        .collect();
    if openings.is_empty() {
        return Ok(Vec::new());
    }
    let candidates = plan::waiting_candidates(state, policy, now);
    let mut proposals = Vec::new();
    for mut placement in matcher::run(&candidates, &openings, policy, now) {
        placement.explanation.provider_fit.push(format!(
            "spill-over: no provider in the household's community had a place that fitted it when it was matched there; the provider is homed in community {}, about {km} km away",
            neighbour.community.as_str()
        ));
        proposals.push(plan::open_proposal(state, placement, ttl_ms, now)?);
    }
    Ok(proposals)
}

/// Step one, in the provider's shard: reserves the places of each proposal
/// whose provider still has them free. Answers the proposals reserved
/// (a proposal already reserved counts, so the step is safe to repeat).
pub fn reserve(state: &ShardState, proposals: Vec<Proposal>, now: Timestamp) -> (Change, Vec<ProposalId>) {
    let mut change = Change::default();
    let mut reserved = Vec::new();
    // Per provider: places and complex people this batch has reserved so far.
    let mut taken: std::collections::HashMap<_, (u32, u32)> = std::collections::HashMap::new();
    for p in proposals {
        if let Some(r) = state.reservation(&p.id) {
            if r.status == ProposalStatus::Open {
                reserved.push(p.id);
            }
            continue;
        }
        let Some(provider) = state.provider(&p.provider) else { continue };
        let free = state.free_places(provider, now);
        let (already, complex) = taken.entry(p.provider.clone()).or_default();
        let size = u32::from(p.household_size);
        if p.status != ProposalStatus::Open || free < *already + size {
            continue;
        }
        // The complexity mix too, counting what the provider already holds this month
        // (the neighbour planned without knowing it).
        if p.complex && matcher::complex_room(&plan::opening_here(state, provider, free, now)) < *complex + size {
            continue;
        }
        *already += size;
        if p.complex {
            *complex += size;
        }
        reserved.push(p.id);
        change.events.push(EventKind::Reserved {
            proposal: p.id,
            reference: p.reference,
            provider: p.provider.clone(),
            from: p.shard.clone(),
            household_size: p.household_size,
        });
        change.upserts.push(Record::Reservation(p));
    }
    (change, reserved)
}

/// The proposals this shard planned for providers homed elsewhere, each with
/// the registration it was planned on (as shared: see
/// [`ShardState::registration_shared`]) and when.
#[derive(Debug, Default)]
pub struct Planned(std::collections::HashMap<ProposalId, (std::sync::Arc<Registration>, Timestamp)>);

impl Planned {
    /// Notes `proposals`, planned `now` on the registrations as `state` holds
    /// them, and forgets plans older than `window_ms` (step two refuses them),
    /// so plans whose step two never comes (their places were gone) do not pile up.
    pub fn note(&mut self, state: &ShardState, proposals: &[Proposal], now: Timestamp, window_ms: i64) {
        self.forget_before(now.plus_ms(-window_ms));
        for p in proposals {
            if let Some(r) = state.registration_shared(&p.reference) {
                self.0.insert(p.id, (r.clone(), now));
            }
        }
    }

    /// Whether `p` was planned here on the registration `state` holds now,
    /// unchanged; forgets it either way.
    fn take_unchanged(&mut self, state: &ShardState, p: &Proposal) -> bool {
        let current = state.registration_shared(&p.reference);
        self.0.remove(&p.id).is_some_and(|(planned, _)| current.is_some_and(|r| std::sync::Arc::ptr_eq(r, &planned)))
    }

    /// Forgets what was planned before `before` (step two refuses it by then).
    fn forget_before(&mut self, before: Timestamp) {
        self.0.retain(|_, (_, at)| *at >= before);
    }

    /// Plans held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.0.len()
    }
}

/// Step two, in the household's shard: records each proposal whose household
/// is still waiting, unchanged since the proposal was planned here (the
/// provider's shard reserved places, and checked its preferences, for the
/// household as it was). Answers the proposals recorded.
pub fn record(
    state: &ShardState,
    planned: &mut Planned,
    proposals: Vec<Proposal>,
    now: Timestamp,
    window_ms: i64,
) -> (Change, Vec<Proposal>) {
    planned.forget_before(now.plus_ms(-window_ms));
    let mut change = Change::default();
    let mut recorded = Vec::new();
    let mut households = std::collections::HashSet::new();
    for p in proposals {
        if let Some(existing) = state.proposal(&p.id) {
            recorded.push(existing.clone());
            continue;
        }
        // Too late: the provider's community may already have found its
        // reservation unrecorded and freed the places.
        if p.created_at.plus_ms(window_ms) < now {
            continue;
        }
        // Any change since planning refuses it (an update of the household most of
        // all), and so does a plan this shard does not know (it restarted since).
        let unchanged = planned.take_unchanged(state, &p);
        let waiting = unchanged && state.registration(&p.reference).is_some_and(|r| r.propose(p.id, now).is_ok());
        // plan_proposal writes nothing when it refuses.
        if waiting && households.insert(p.reference) && plan::plan_proposal(state, &mut change, &p, now).is_ok() {
            recorded.push(p);
        }
    }
    (change, recorded)
}

/// In the provider's shard: takes a settlement. The reservation gets the
/// proposal's final status (freeing its places), and an accepted household
/// joins the panel (at the provider's only clinic, if the acceptance named
/// none); a patient already on the panel is left as they are. A returned one
/// (the attachment fell through) takes the members that match brought off the
/// panel. Safe to repeat.
pub fn settle(state: &ShardState, settlement: Settlement) -> Change {
    let mut change = Change::default();
    let p = settlement.proposal;
    // Already taken, or an acceptance arriving after the return that closed it.
    let stale = |r: &Proposal| {
        r.status == p.status || (r.status == ProposalStatus::Returned && p.status == ProposalStatus::Accepted)
    };
    if state.reservation(&p.id).is_some_and(stale) {
        return change;
    }
    if p.status == ProposalStatus::Accepted {
        let clinic = state.provider(&p.provider).and_then(|v| v.sole_clinic()).cloned();
        for mut entry in settlement.entries {
            // A patient already on the panel stays as they are, unless an earlier
            // match of the same household put them there: that one fell through
            // (its return may be settled after this), and this match replaces it.
            let here = state.panel(&entry.provider).and_then(|panel| panel.get(&entry.phn));
            let earlier_match = |e: &&PanelEntry| {
                e.source.proposal().is_some_and(|id| id != p.id) && e.source.reference() == Some(p.reference)
            };
            if here.is_some_and(|e| !earlier_match(&e)) {
                continue;
            }
            if let Some(facility) = entry.source.unset_facility() {
                facility.clone_from(&clinic);
            }
            change.upserts.push(Record::PanelEntry(entry));
        }
        if !change.upserts.is_empty() {
            let patients = u16::try_from(change.upserts.len()).unwrap_or(u16::MAX);
            // Told in the provider's community, whose coordinators do not hold the
            // household's (its reference is a capability, DECISIONS 45): the
            // reservation's events carry the proposal that ties them together.
            let provider = p.provider.clone();
            change.events.push(EventKind::Attached { reference: None, provider, patients });
        }
    }
    if p.status == ProposalStatus::Returned {
        // The attachment fell through: the members this match brought leave the panel.
        plan::detach_match(state, &mut change, &p.provider, p.id);
    }
    change.events.push(EventKind::ReservationClosed {
        proposal: p.id,
        reference: p.reference,
        provider: p.provider.clone(),
        from: p.shard.clone(),
        status: p.status,
    });
    change.upserts.push(Record::Reservation(p));
    change
}

impl ShardRuntime {
    /// Step one of a spill-over proposal (see the module docs).
    pub(super) async fn reserve(
        &mut self,
        proposals: Vec<Proposal>,
        now: Timestamp,
    ) -> Result<Vec<ProposalId>, AttachError> {
        let (change, reserved) = reserve(&self.state, proposals, now);
        self.commit(change, now).await.map(|()| reserved)
    }

    /// Step two of a spill-over proposal (see the module docs).
    pub(super) async fn record_spill(
        &mut self,
        proposals: Vec<Proposal>,
        now: Timestamp,
    ) -> Result<Vec<Proposal>, AttachError> {
        let window = self.config.record_window_ms();
        let (change, recorded) = record(&self.state, &mut self.planned, proposals, now, window);
        self.commit(change, now).await.map(|()| recorded)
    }

    /// Takes a settlement in the provider's shard.
    pub(super) async fn settle(&mut self, settlement: Settlement, now: Timestamp) -> Result<(), AttachError> {
        if settlement.proposal.status == ProposalStatus::Open {
            return Err(AttachError::internal("an open proposal has nothing to settle"));
        }
        let change = settle(&self.state, settlement);
        self.commit(change, now).await
    }

    /// In the provider's shard: open reservations old enough to be looked for
    /// in their household's shard and not yet found there by this actor.
    pub(super) fn unconfirmed_reservations(&mut self, now: Timestamp) -> Vec<Proposal> {
        // The note of a reservation since closed is no longer needed.
        let state = &self.state;
        self.confirmed.retain(|id| state.reservation(id).is_some_and(|r| r.status == ProposalStatus::Open));
        let planned_by = now.plus_ms(-self.config.reservation_check_ms());
        let old = self.state.open_reservations_planned_by(planned_by).into_iter();
        old.filter(|p| !self.confirmed.contains(&p.id)).cloned().collect()
    }

    /// Forgets a settlement the provider's shard has taken.
    pub(super) async fn settled(
        &mut self,
        id: ProposalId,
        status: ProposalStatus,
        now: Timestamp,
    ) -> Result<(), AttachError> {
        if !self.state.settlements().any(|s| s.proposal.id == id && s.proposal.status == status) {
            return Ok(());
        }
        let change = Change { deletes: vec![RecordKey::Settlement(id)], ..Change::default() };
        self.commit(change, now).await
    }
}

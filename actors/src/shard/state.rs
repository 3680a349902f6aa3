//! A shard's state in memory: a view of its records, kept by one writer.
//!
//! Every change is *planned* against the current state (pure, may be refused),
//! *committed* to the store, and only then *applied*. Loading a shard applies
//! its stored records through the same [`ShardState::apply`], so what a restart
//! sees is exactly what was acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::{
    Clinic, DAY_MS, DelegateId, Endorsement, EndorsementId, EventKind, FacilityNumber, MoveStatus, PanelEntry,
    PanelIntake, PanelSource, PanelTransfer, Phn, PlaceHolders, Proposal, ProposalId, ProposalStatus, Provider,
    ProviderId, Registration, RegistrationMove, RegistrationRef, RegistrationStatus, Settlement, ShardKey, StaffMember,
    Timestamp, TransferKey,
};
use crate::store::{Locator, Record, RecordKey};

/// What a planned change writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Change {
    /// Records to write.
    pub upserts: Vec<Record>,
    /// Records to remove.
    pub deletes: Vec<RecordKey>,
    /// Events to append (the actor numbers them).
    pub events: Vec<EventKind>,
    /// Locators to point at this shard.
    pub locators: Vec<Locator>,
}

/// Counts by status, in households and people.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Registrations.
    pub households: u64,
    /// People in them.
    pub people: u64,
}

/// The shard's records and the indexes derived from them.
#[derive(Debug)]
pub struct ShardState {
    /// Which shard.
    pub key: ShardKey,
    /// Where the community's clocks say when a calendar month begins (a
    /// provider's monthly rate counts that month): UTC unless set.
    pub month_zone: jiff::tz::TimeZone,
    /// Shared with the pages that read them: a page holds its items without
    /// copying them, and a change replaces the record rather than editing it.
    registrations: HashMap<RegistrationRef, Arc<Registration>>,
    /// The waitlist in line order, counted: only `WAITING` registrations.
    waitlist: super::line::Line,
    tallies: HashMap<RegistrationStatus, Tally>,
    proposals: HashMap<ProposalId, Proposal>,
    /// Copies of proposals made in neighbouring communities to providers homed
    /// here (spill-over matching): open ones hold their places here.
    reservations: HashMap<ProposalId, Proposal>,
    /// Closed spill-over proposals made here, not yet settled with the provider's shard.
    settlements: BTreeMap<ProposalId, Settlement>,
    /// Each registration's newest proposal held in memory (not reservations),
    /// so its view shows the last one, whatever became of it.
    latest_proposal: HashMap<RegistrationRef, (Timestamp, ProposalId)>,
    /// Places held by open proposals and open reservations, per provider.
    open_places: HashMap<ProviderId, u32>,
    /// Proposals and reservations newest first (then by id), as they are listed.
    newest: BTreeSet<(std::cmp::Reverse<Timestamp>, ProposalId)>,
    providers: BTreeMap<ProviderId, Provider>,
    clinics: BTreeMap<FacilityNumber, Clinic>,
    panels: HashMap<ProviderId, BTreeMap<Phn, PanelEntry>>,
    endorsements: BTreeMap<EndorsementId, Endorsement>,
    /// Panel transfers out of providers homed here, by source provider and key.
    transfers: BTreeMap<(ProviderId, TransferKey), PanelTransfer>,
    /// The staff lists of clinics here, by clinic then subject.
    staff: BTreeMap<(FacilityNumber, DelegateId), StaffMember>,
    /// Each registration's latest move out of this community.
    moves: HashMap<RegistrationRef, RegistrationMove>,
    /// Who holds the place of each changed household in which not everyone does.
    place_holders: HashMap<RegistrationRef, PlaceHolders>,
    /// Waiting patients submitted panels are taking (see [`PanelIntake`]).
    intakes: BTreeMap<(ProviderId, Phn), PanelIntake>,
    /// The sign-in subject of the patient who registered each registration
    /// registered by a signed-in patient (see [`crate::domain::RegistrationOwner`]).
    owners: HashMap<RegistrationRef, Box<str>>,
    /// The same, by subject: a patient's own registrations (`myRegistrations`).
    owned: BTreeSet<(Box<str>, RegistrationRef)>,
    /// People attached, by attachment time, for rates and "this week".
    attachments: BTreeMap<Timestamp, u32>,
    /// The latest registration time in the shard, so the next one is later:
    /// the place in line is the registration order, even within a millisecond.
    latest_registration: Timestamp,
}

impl ShardState {
    /// An empty shard.
    pub fn new(key: ShardKey) -> Self {
        ShardState {
            key,
            month_zone: jiff::tz::TimeZone::UTC,
            registrations: HashMap::new(),
            waitlist: super::line::Line::new(),
            tallies: HashMap::new(),
            proposals: HashMap::new(),
            reservations: HashMap::new(),
            settlements: BTreeMap::new(),
            latest_proposal: HashMap::new(),
            open_places: HashMap::new(),
            newest: BTreeSet::new(),
            providers: BTreeMap::new(),
            clinics: BTreeMap::new(),
            panels: HashMap::new(),
            endorsements: BTreeMap::new(),
            transfers: BTreeMap::new(),
            staff: BTreeMap::new(),
            moves: HashMap::new(),
            place_holders: HashMap::new(),
            intakes: BTreeMap::new(),
            owners: HashMap::new(),
            owned: BTreeSet::new(),
            attachments: BTreeMap::new(),
            latest_registration: Timestamp(i64::MIN),
        }
    }

    /// The registration time for a household registering `now`: strictly after
    /// every registration already in the shard.
    pub fn next_registration_time(&self, now: Timestamp) -> Timestamp {
        now.max(self.latest_registration.plus_ms(1))
    }

    /// Applies a committed change (or a loaded record set).
    pub fn apply(&mut self, upserts: impl IntoIterator<Item = Record>, deletes: &[RecordKey]) {
        for record in upserts {
            self.upsert(record);
        }
        for key in deletes {
            self.delete(key);
        }
    }

    fn upsert(&mut self, record: Record) {
        // Records decoded from the store each carry their own copy of the shard
        // key; point them at this shard's one, so a million registrations share it.
        let record = match record {
            Record::Registration(r) if r.shard == self.key => {
                Record::Registration(Registration { shard: self.key.clone(), ..r })
            }
            Record::Proposal(p) if p.shard == self.key => Record::Proposal(Proposal { shard: self.key.clone(), ..p }),
            other => other,
        };
        match record {
            Record::Registration(r) => {
                if let Some(old) = self.registrations.remove(&r.reference) {
                    self.unindex_registration(&old);
                }
                self.index_registration(&r);
                self.latest_registration = self.latest_registration.max(r.registered_at);
                self.registrations.insert(r.reference, Arc::new(r));
            }
            Record::Proposal(p) => self.put_proposal(p, false),
            Record::Provider(p) => {
                self.providers.insert(p.id.clone(), p);
            }
            Record::Clinic(c) => {
                self.clinics.insert(c.facility.clone(), c);
            }
            Record::PanelEntry(e) => {
                let panel = self.panels.entry(e.provider.clone()).or_default();
                // Attachments are people who came off the waitlist: a submitted
                // or transferred panel brings patients the provider already had,
                // unless they had come off the waitlist (then counted at that time).
                let (was, now) = (panel.get(&e.phn).and_then(PanelEntry::attachment_time), e.attachment_time());
                panel.insert(e.phn, e);
                if was != now {
                    self.uncount_attachment(was);
                    if let Some(at) = now {
                        *self.attachments.entry(at).or_default() += 1;
                    }
                }
            }
            Record::Endorsement(e) => {
                self.endorsements.insert(e.id, e);
            }
            Record::Transfer(t) => {
                self.transfers.insert((t.from.clone(), t.key.clone()), t);
            }
            Record::ClinicStaff(m) => {
                self.staff.insert((m.facility.clone(), m.subject.clone()), m);
            }
            Record::Move(m) => {
                self.moves.insert(m.reference, m);
            }
            Record::Reservation(p) => self.put_proposal(p, true),
            Record::Settlement(s) => {
                self.settlements.insert(s.proposal.id, s);
            }
            Record::PlaceHolders(h) => {
                self.place_holders.insert(h.reference, h);
            }
            Record::PanelIntake(i) => {
                self.intakes.insert((i.provider.clone(), i.phn), i);
            }
            Record::Owner(o) => {
                // An owner is written once and never changed; a record read again replaces itself.
                let subject = o.subject.into_boxed_str();
                if let Some(earlier) = self.owners.insert(o.reference, subject.clone()) {
                    self.owned.remove(&(earlier, o.reference));
                }
                self.owned.insert((subject, o.reference));
            }
        }
    }

    /// Takes one attachment made at `at` out of the counts.
    fn uncount_attachment(&mut self, at: Option<Timestamp>) {
        if let Some(at) = at
            && let std::collections::btree_map::Entry::Occupied(mut n) = self.attachments.entry(at)
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }

    fn delete(&mut self, key: &RecordKey) {
        match key {
            RecordKey::Registration(r) => {
                if let Some(old) = self.registrations.remove(r) {
                    self.unindex_registration(&old);
                }
            }
            RecordKey::Proposal(id) => self.drop_proposal(id, false),
            RecordKey::Provider(id) => {
                self.providers.remove(id);
            }
            RecordKey::Clinic(f) => {
                self.clinics.remove(f);
            }
            RecordKey::PanelEntry(provider, phn) => {
                let removed = self.panels.get_mut(provider).and_then(|panel| panel.remove(phn));
                // Counted as it was at load: a patient no longer on the panel is not an attachment.
                self.uncount_attachment(removed.and_then(|e| e.attachment_time()));
            }
            RecordKey::Endorsement(id) => {
                self.endorsements.remove(id);
            }
            RecordKey::Transfer(provider, key) => {
                self.transfers.remove(&(provider.clone(), key.clone()));
            }
            RecordKey::ClinicStaff(facility, subject) => {
                self.staff.remove(&(facility.clone(), subject.clone()));
            }
            RecordKey::Move(r) => {
                self.moves.remove(r);
            }
            RecordKey::Reservation(id) => self.drop_proposal(id, true),
            RecordKey::Settlement(id) => {
                self.settlements.remove(id);
            }
            RecordKey::PlaceHolders(r) => {
                self.place_holders.remove(r);
            }
            RecordKey::PanelIntake(provider, phn) => {
                self.intakes.remove(&(provider.clone(), *phn));
            }
            RecordKey::Owner(r) => {
                if let Some(subject) = self.owners.remove(r) {
                    self.owned.remove(&(subject, *r));
                }
            }
        }
    }

    /// An endorsement.
    pub fn endorsement(&self, id: &EndorsementId) -> Option<&Endorsement> {
        self.endorsements.get(id)
    }

    /// A provider's endorsements, in no particular order.
    pub fn endorsements_of<'a>(&'a self, provider: &'a ProviderId) -> impl Iterator<Item = &'a Endorsement> + 'a {
        self.endorsements.values().filter(move |e| &e.provider == provider)
    }

    /// Whether `delegate` may act for `provider` now (a completed endorsement).
    pub fn delegation_in_force(&self, provider: &ProviderId, delegate: &str) -> bool {
        self.endorsements_of(provider).any(|e| e.is_in_force() && e.delegate.as_str() == delegate)
    }

    fn index_registration(&mut self, r: &Registration) {
        let t = self.tallies.entry(r.status).or_default();
        t.households += 1;
        t.people += r.household.members.len() as u64;
        if r.status == RegistrationStatus::Waiting {
            self.waitlist.insert((r.registered_at, r.reference), r.household.members.len() as u32);
        }
    }

    fn unindex_registration(&mut self, r: &Registration) {
        let t = self.tallies.entry(r.status).or_default();
        t.households -= 1;
        t.people -= r.household.members.len() as u64;
        if r.status == RegistrationStatus::Waiting {
            self.waitlist.remove(&(r.registered_at, r.reference));
        }
    }

    /// The proposals made here, or the reservations of providers homed here.
    fn proposal_map(&mut self, reservations: bool) -> &mut HashMap<ProposalId, Proposal> {
        if reservations { &mut self.reservations } else { &mut self.proposals }
    }

    /// Puts a proposal (or a reservation) in place of its earlier copy, keeping the indexes.
    fn put_proposal(&mut self, p: Proposal, reservation: bool) {
        self.drop_proposal(&p.id, reservation);
        self.index_proposal(&p);
        if !reservation {
            let newer = (p.created_at, p.id);
            let latest = self.latest_proposal.entry(p.reference).or_insert(newer);
            *latest = (*latest).max(newer);
        }
        self.proposal_map(reservation).insert(p.id, p);
    }

    /// Takes a proposal (or a reservation) out, with its indexes.
    fn drop_proposal(&mut self, id: &ProposalId, reservation: bool) {
        if let Some(old) = self.proposal_map(reservation).remove(id) {
            self.unindex_proposal(&old);
            if !reservation && self.latest_proposal.get(&old.reference).is_some_and(|(_, latest)| latest == id) {
                self.latest_proposal.remove(&old.reference);
            }
        }
    }

    /// An open proposal (or reservation) holds its places.
    fn index_proposal(&mut self, p: &Proposal) {
        self.newest.insert((std::cmp::Reverse(p.created_at), p.id));
        if p.status == ProposalStatus::Open {
            *self.open_places.entry(p.provider.clone()).or_default() += u32::from(p.household_size);
        }
    }

    fn unindex_proposal(&mut self, p: &Proposal) {
        self.newest.remove(&(std::cmp::Reverse(p.created_at), p.id));
        if p.status == ProposalStatus::Open
            && let Some(n) = self.open_places.get_mut(&p.provider)
        {
            *n = n.saturating_sub(u32::from(p.household_size));
        }
    }

    // ---- reads ----

    /// The newest proposal made for registration `r` that memory still holds
    /// (open, or closed within the memory period), whatever its status.
    pub fn latest_proposal(&self, r: &RegistrationRef) -> Option<&Proposal> {
        self.latest_proposal.get(r).and_then(|(_, id)| self.proposals.get(id))
    }

    /// A waiting patient a submitted panel of `provider` is taking.
    pub fn intake(&self, provider: &ProviderId, phn: Phn) -> Option<&PanelIntake> {
        self.intakes.get(&(provider.clone(), phn))
    }

    /// Every waiting patient submitted panels are taking.
    pub fn intakes(&self) -> impl Iterator<Item = &PanelIntake> {
        self.intakes.values()
    }

    /// The sign-in subject of the patient who registered `r`, if a signed-in
    /// patient did (see [`crate::domain::RegistrationOwner`]).
    pub fn owner(&self, r: &RegistrationRef) -> Option<&str> {
        self.owners.get(r).map(|s| &**s)
    }

    /// The registrations here that the patient signed in as `subject`
    /// registered, their `MOVED` copies included, in no particular order.
    pub fn owned_by<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = RegistrationRef> + 'a {
        // All zeros is the lowest reference there is ('0' is the alphabet's first byte).
        let from: (Box<str>, RegistrationRef) = (subject.into(), RegistrationRef::from_entropy([0; 12]));
        self.owned.range(from..).take_while(move |(s, _)| **s == *subject).map(|(_, r)| *r)
    }

    /// The members who hold a registration's place, if not everyone in it does (see [`PlaceHolders`]).
    pub fn place_holders(&self, r: &RegistrationRef) -> Option<&PlaceHolders> {
        self.place_holders.get(r)
    }

    /// A registration.
    pub fn registration(&self, r: &RegistrationRef) -> Option<&Registration> {
        self.registrations.get(r).map(Arc::as_ref)
    }

    /// A registration as shared: any change replaces it, so two reads are
    /// the same registration unchanged exactly when they are the same `Arc`.
    pub fn registration_shared(&self, r: &RegistrationRef) -> Option<&Arc<Registration>> {
        self.registrations.get(r)
    }

    /// Where a waiting registration stands: its 1-based place and the people
    /// ahead of it, from the counted line (no walk of the people ahead).
    pub fn place_in_line(&self, r: &Registration) -> Option<(u64, u64)> {
        if r.status != RegistrationStatus::Waiting {
            return None;
        }
        let (households, people) = self.waitlist.ahead_of(&(r.registered_at, r.reference))?;
        Some((households + 1, people))
    }

    /// Up to `q.limit + 1` waiting registrations after `q.after` that match
    /// its filters, in line order (the extra one says a next page exists).
    pub fn waitlist_page(&self, q: &super::WaitlistQuery, now: Timestamp) -> Vec<Arc<Registration>> {
        let needs = |r: &&Arc<Registration>| {
            q.needs.is_empty() || r.household.members.iter().any(|m| q.needs.iter().any(|n| m.needs.contains(n)))
        };
        // The line runs from the longest wait to the shortest: once one
        // household has waited too little, so has everyone after it.
        let waited = |r: &&Arc<Registration>| q.min_wait_days.is_none_or(|d| r.registered_at.days_until(now) >= d);
        self.waitlist_after(q.after.as_ref()).take_while(waited).filter(needs).take(q.limit + 1).cloned().collect()
    }

    /// Waiting registrations in line order, after a cursor.
    pub fn waitlist_after(
        &self,
        after: Option<&(Timestamp, RegistrationRef)>,
    ) -> impl Iterator<Item = &Arc<Registration>> + '_ {
        self.waitlist.after(after).filter_map(|(_, r)| self.registrations.get(r))
    }

    /// How many households and people are in a status.
    pub fn tally(&self, status: RegistrationStatus) -> Tally {
        self.tallies.get(&status).copied().unwrap_or_default()
    }

    /// A proposal.
    pub fn proposal(&self, id: &ProposalId) -> Option<&Proposal> {
        self.proposals.get(id)
    }

    /// Every proposal made here and every reservation of a provider homed here
    /// by a neighbouring community's proposal, newest first.
    pub fn proposals(&self) -> impl Iterator<Item = &Proposal> + '_ {
        self.proposals_after(None)
    }

    /// [`proposals`](Self::proposals) after the one made at that time with that
    /// id (whether or not it is still here), or all of them.
    pub fn proposals_after(&self, after: Option<(Timestamp, ProposalId)>) -> impl Iterator<Item = &Proposal> + '_ {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |(at, id)| Bound::Excluded((std::cmp::Reverse(at), id)));
        self.newest
            .range((start, Bound::Unbounded))
            .filter_map(|(_, id)| self.proposals.get(id).or_else(|| self.reservations.get(id)))
    }

    /// Open proposals whose time has passed.
    pub fn overdue_proposals(&self, now: Timestamp) -> Vec<&Proposal> {
        let mut due: Vec<&Proposal> =
            self.proposals.values().filter(|p| p.status == ProposalStatus::Open && p.expires_at <= now).collect();
        due.sort_by_key(|a| a.id);
        due
    }

    /// Whether `provider` accepted a match of the household `reference` that this
    /// shard still holds in memory: its proposal here, or its reservation when
    /// the household is next door (spill-over).
    pub fn accepted_match(&self, reference: &RegistrationRef, provider: &ProviderId) -> bool {
        let accepted =
            |p: &Proposal| p.reference == *reference && &p.provider == provider && p.status == ProposalStatus::Accepted;
        self.latest_proposal(reference).is_some_and(accepted) || self.reservations.values().any(accepted)
    }

    /// A reservation of a provider homed here, by the proposal's id.
    pub fn reservation(&self, id: &ProposalId) -> Option<&Proposal> {
        self.reservations.get(id)
    }

    /// Open reservations past their proposal's expiry by `grace` or more: the
    /// proposal's community frees them when it closes the proposal, so these are
    /// orphans (a match that stopped between its two steps) or not yet settled.
    pub fn overdue_reservations(&self, now: Timestamp, grace_ms: i64) -> Vec<&Proposal> {
        let mut due: Vec<&Proposal> = self
            .reservations
            .values()
            .filter(|p| p.status == ProposalStatus::Open && p.expires_at.plus_ms(grace_ms) <= now)
            .collect();
        due.sort_by_key(|p| p.id);
        due
    }

    /// Takes out of memory every proposal and reservation closed before
    /// `before` (the store keeps them: [`ShardRuntime`](super::actor::ShardRuntime)
    /// reads one from there when asked for it). Answers how many went.
    pub fn forget_closed_before(&mut self, before: Timestamp) -> usize {
        let old = |p: &Proposal| p.status != ProposalStatus::Open && p.closed_at.unwrap_or(p.created_at) < before;
        let proposals: Vec<ProposalId> = self.proposals.values().filter(|p| old(p)).map(|p| p.id).collect();
        let reservations: Vec<ProposalId> = self.reservations.values().filter(|p| old(p)).map(|p| p.id).collect();
        for id in &proposals {
            self.drop_proposal(id, false);
        }
        for id in &reservations {
            self.drop_proposal(id, true);
        }
        proposals.len() + reservations.len()
    }

    /// Open reservations whose proposals were planned at `planned_by` or before,
    /// oldest first: those a stop between spill-over's two steps may have orphaned.
    pub fn open_reservations_planned_by(&self, planned_by: Timestamp) -> Vec<&Proposal> {
        let mut old: Vec<&Proposal> = self
            .reservations
            .values()
            .filter(|p| p.status == ProposalStatus::Open && p.created_at <= planned_by)
            .collect();
        old.sort_by_key(|p| (p.created_at, p.id));
        old
    }

    /// Proposals and reservations held in memory.
    pub fn proposals_held(&self) -> usize {
        self.proposals.len() + self.reservations.len()
    }

    /// How many closed spill-over proposals are not yet settled.
    pub fn settlements_pending(&self) -> usize {
        self.settlements.len()
    }

    /// Closed spill-over proposals not yet settled with their provider's shard.
    pub fn settlements(&self) -> impl Iterator<Item = &Settlement> {
        self.settlements.values()
    }

    /// A provider homed here.
    pub fn provider(&self, id: &ProviderId) -> Option<&Provider> {
        self.providers.get(id)
    }

    /// Every provider homed here, by id.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    /// A clinic here.
    pub fn clinic(&self, f: &FacilityNumber) -> Option<&Clinic> {
        self.clinics.get(f)
    }

    /// Every clinic here, by facility number.
    pub fn clinics(&self) -> impl Iterator<Item = &Clinic> {
        self.clinics.values()
    }

    /// A clinic's staff list, by subject.
    pub fn staff_of<'a>(&'a self, facility: &'a FacilityNumber) -> impl Iterator<Item = &'a StaffMember> + 'a {
        self.staff.values().filter(move |m| &m.facility == facility)
    }

    /// One member of a clinic's staff.
    pub fn staff_member(&self, facility: &FacilityNumber, subject: &DelegateId) -> Option<&StaffMember> {
        self.staff.get(&(facility.clone(), subject.clone()))
    }

    /// A provider's itemised panel, by PHN.
    pub fn panel(&self, provider: &ProviderId) -> Option<&BTreeMap<Phn, PanelEntry>> {
        self.panels.get(provider)
    }

    /// A transfer out of a provider homed here.
    pub fn transfer(&self, from: &ProviderId, key: &TransferKey) -> Option<&PanelTransfer> {
        self.transfers.get(&(from.clone(), key.clone()))
    }

    /// Every transfer out of providers homed here.
    pub fn transfers(&self) -> impl Iterator<Item = &PanelTransfer> {
        self.transfers.values()
    }

    /// A registration's latest move out of this community.
    pub fn move_of(&self, r: &RegistrationRef) -> Option<&RegistrationMove> {
        self.moves.get(r)
    }

    /// Moves out of this community not yet known to have arrived.
    pub fn running_moves(&self) -> impl Iterator<Item = &RegistrationMove> {
        self.moves.values().filter(|m| m.status == MoveStatus::Running)
    }

    /// Whether `phn` is on `provider`'s panel here.
    pub fn on_panel(&self, provider: &ProviderId, phn: Phn) -> bool {
        self.panels.get(provider).is_some_and(|p| p.contains_key(&phn))
    }

    /// Panel size: reported before Attach plus itemised.
    pub fn panel_size(&self, provider: &Provider) -> u32 {
        provider.reported_panel_size + self.panels.get(&provider.id).map_or(0, |p| p.len() as u32)
    }

    /// A provider homed here with what the shard derives about them now.
    pub fn provider_view(&self, provider: &Provider, now: Timestamp) -> super::messages::ProviderView {
        super::messages::ProviderView {
            panel_size: self.panel_size(provider),
            free_places: self.free_places(provider, now),
            open_places: self.open_places(&provider.id),
            provider: provider.clone(),
        }
    }

    /// Places held by open proposals for a provider.
    pub fn open_places(&self, provider: &ProviderId) -> u32 {
        self.open_places.get(provider).copied().unwrap_or(0)
    }

    /// People attached to `provider` off the waitlist since `since` (what the
    /// monthly rate counts; a submitted panel's other patients and patients
    /// transferred in are not new to the provider): the people of the matches
    /// they accepted, which stay counted when the patients later leave the
    /// panel (a removal, a transfer away), so a month's places are not taken
    /// twice; and the waiting patients their submitted panels listed, by their
    /// entries (a submission makes no proposal). A match that fell through
    /// (`RETURNED`) gives its places back.
    pub fn attached_since(&self, provider: &ProviderId, since: Timestamp) -> u32 {
        let accepted = |p: &&Proposal| {
            &p.provider == provider && p.status == ProposalStatus::Accepted && p.closed_at.is_some_and(|at| at >= since)
        };
        let proposals = self.proposals.values().chain(self.reservations.values());
        let matched: u32 = proposals.filter(accepted).map(|p| u32::from(p.household_size)).sum();
        let listed = self.panels.get(provider).map_or(0, |p| {
            let listed = |e: &&PanelEntry| {
                e.attached_at >= since && matches!(e.source, PanelSource::Submitted { reference: Some(_), .. })
            };
            p.values().filter(listed).count() as u32
        });
        matched + listed
    }

    /// Places `provider`'s monthly rate has used since `since`: open proposals
    /// and reservations, and patients attached off the waitlist.
    pub fn places_held(&self, provider: &ProviderId, since: Timestamp) -> u32 {
        self.open_places(provider) + self.attached_since(provider, since)
    }

    /// People of complex households `provider` holds since `since`: in open
    /// proposals and reservations, and in those accepted since then. The
    /// complexity mix is a share of the month's places, so a later run (or a
    /// coordinator's own proposal) counts what earlier ones already proposed.
    pub fn complex_held(&self, provider: &ProviderId, since: Timestamp) -> u32 {
        let held = |p: &&Proposal| {
            &p.provider == provider
                && p.complex
                && (p.status == ProposalStatus::Open
                    || (p.status == ProposalStatus::Accepted && p.closed_at.is_some_and(|at| at >= since)))
        };
        let sizes = self.proposals.values().chain(self.reservations.values()).filter(held);
        sizes.map(|p| u32::from(p.household_size)).sum()
    }

    /// Free places a provider offers now: the smaller of what the desired panel
    /// size and the monthly rate leave, after the panel and open proposals.
    pub fn free_places(&self, provider: &Provider, now: Timestamp) -> u32 {
        let c = &provider.capacity;
        if !c.accepting {
            return 0;
        }
        let open = self.open_places(&provider.id);
        let by_size = c.desired_panel_size.saturating_sub(self.panel_size(provider) + open);
        let month_start = month_start(now, &self.month_zone);
        let by_rate = c.monthly_rate.saturating_sub(self.attached_since(&provider.id, month_start) + open);
        by_size.min(by_rate)
    }

    /// People attached in `[since, ∞)`.
    pub fn people_attached_since(&self, since: Timestamp) -> u64 {
        self.attachments.range(since..).map(|(_, n)| u64::from(*n)).sum()
    }

    /// Waiting households by whole days waited.
    pub fn wait_histogram(&self, now: Timestamp) -> BTreeMap<u32, u64> {
        // Days waited only fall along the line: counted a day at a time, not a household at a time.
        self.waitlist.count_runs(|(at, _)| at.days_until(now)).into_iter().collect()
    }

    /// Every registration (for the matcher and for liveness checks).
    pub fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.registrations.values().map(Arc::as_ref)
    }
}

/// The first instant of `now`'s calendar month where the clocks read `zone`:
/// midnight on the first, or the first instant of that day where a clock
/// change skips midnight.
pub fn month_start(now: Timestamp, zone: &jiff::tz::TimeZone) -> Timestamp {
    let start = jiff::Timestamp::from_millisecond(now.0)
        .map(|t| t.to_zoned(zone.clone()).date().first_of_month())
        .and_then(|first| first.to_zoned(zone.clone()));
    start.map_or(now, |z| Timestamp(z.timestamp().as_millisecond()))
}

/// `now` minus whole days.
pub fn days_before(now: Timestamp, days: i64) -> Timestamp {
    Timestamp(now.0 - days * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DAY_MS, Need};
    use crate::shard::WaitlistQuery;
    use crate::shard::tests::{household, phn};

    #[test]
    fn a_month_begins_where_the_communitys_clocks_say() {
        let at = |text: &str| Timestamp(jiff::Timestamp::from_str(text).unwrap().as_millisecond());
        use std::str::FromStr;
        let vancouver = jiff::tz::TimeZone::get("America/Vancouver").unwrap();
        // 21:00 on 30 November in Vancouver is already December in UTC.
        let evening = at("2026-12-01T05:00:00Z");
        assert_eq!(month_start(evening, &jiff::tz::TimeZone::UTC), at("2026-12-01T00:00:00Z"));
        assert_eq!(month_start(evening, &vancouver), at("2026-11-01T07:00:00Z"), "midnight PDT, 1 November");
        assert_eq!(month_start(at("2026-12-01T08:00:00Z"), &vancouver), at("2026-12-01T08:00:00Z"), "midnight PST");
        // All year on Mountain Standard Time.
        let creston = jiff::tz::TimeZone::get("America/Creston").unwrap();
        assert_eq!(month_start(at("2026-07-15T12:00:00Z"), &creston), at("2026-07-01T07:00:00Z"));
    }

    #[test]
    fn a_filtered_page_reads_only_as_far_as_the_wait_allows() {
        let shard = ShardKey::parse("IHA/111").unwrap();
        let mut state = ShardState::new(shard.clone());
        let now = Timestamp(1_000 * DAY_MS);
        // Ten households, registered 100, 90, ... 10 days ago; every third one pregnant.
        let records: Vec<Record> = (0..10u32)
            .map(|i| {
                let needs: &[Need] = if i % 3 == 0 { &[Need::Pregnancy] } else { &[] };
                let at = Timestamp(now.0 - i64::from(100 - 10 * i) * DAY_MS);
                let reference = RegistrationRef::parse(&format!("{i:012}")).unwrap();
                Record::Registration(Registration::new(reference, shard.clone(), household(&[phn(i + 1)], needs), at))
            })
            .collect();
        state.apply(records, &[]);
        let days = |q: WaitlistQuery| -> Vec<i64> {
            state.waitlist_page(&q, now).iter().map(|r| (now.0 - r.registered_at.0) / DAY_MS).collect()
        };
        let q = |min_wait_days, needs: Vec<Need>, limit| WaitlistQuery { limit, needs, min_wait_days, after: None };
        assert_eq!(days(q(Some(55), vec![], 10)), [100, 90, 80, 70, 60]);
        assert_eq!(days(q(Some(55), vec![Need::Pregnancy], 10)), [100, 70]);
        assert_eq!(days(q(Some(55), vec![], 2)), [100, 90, 80], "one more than the limit: a next page");
        assert_eq!(days(q(Some(5_000), vec![], 10)), Vec::<i64>::new());
        assert_eq!(days(q(None, vec![Need::Pregnancy], 10)), [100, 70, 40, 10]);
        let second = WaitlistQuery {
            after: Some((Timestamp(now.0 - 80 * DAY_MS), RegistrationRef::parse("000000000002").unwrap())),
            ..q(Some(55), vec![], 10)
        };
        assert_eq!(days(second), [70, 60], "after a cursor");
    }
}

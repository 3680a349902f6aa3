//! Planning: what each command would write, decided against the current state
//! without changing it. A refused command returns an error and writes nothing.

use crate::domain::{
    Capacity, Clinic, ClinicInput, Decline, EventKind, FacilityNumber, Household, Need, PanelEntry, PanelSource,
    PersonName, PlaceHolders, Proposal, ProposalId, ProposalStatus, Provider, ProviderId, ProviderKind, Registration,
    RegistrationRef, RegistrationStatus, Responder, Settlement, Timestamp,
};
use crate::error::AttachError;
use crate::matcher::{self, Candidate, Opening, Policy};
use crate::store::{Locator, Record, RecordKey};

use super::state::{Change, ShardState};

/// A provider's registry details, as a create-or-update command carries them.
#[derive(Debug, Clone)]
pub struct ProviderInput {
    /// Practitioner number.
    pub id: ProviderId,
    /// Given name.
    pub given_name: PersonName,
    /// Surname.
    pub surname: PersonName,
    /// Physician or nurse practitioner.
    pub kind: ProviderKind,
    /// Clinics practised at; `None` keeps an existing provider's (none for a new one).
    pub clinics: Option<Vec<FacilityNumber>>,
    /// Panel size reported before Attach; `None` keeps an existing provider's (0 for a new one).
    pub reported_panel_size: Option<u32>,
}

/// A clinic's registry details.
#[derive(Debug, Clone)]
pub struct ClinicCommand {
    /// Facility number.
    pub facility: FacilityNumber,
    /// Name, address, hours, phone.
    pub details: ClinicInput,
    /// The medical director; `None` keeps an existing clinic's.
    pub medical_director: Option<ProviderId>,
}

/// An answer to a proposal.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Accept: the household joins the provider's panel, at the provider's
    /// clinic if they practise at exactly one.
    Accept,
    /// Accept, naming the clinic (one the provider practises at) whose panel
    /// the household joins: for providers at several clinics.
    AcceptAt(FacilityNumber),
    /// Decline: the household returns to the waitlist with its place kept.
    Decline {
        /// Who declined.
        by: Responder,
        /// Why.
        reason: String,
    },
}

fn registration_or_404<'a>(state: &'a ShardState, r: &RegistrationRef) -> Result<&'a Registration, AttachError> {
    state.registration(r).ok_or_else(|| AttachError::not_found("registration"))
}

/// A new registration, waiting. PHN uniqueness is settled by the caller's claims.
/// `owner` is the sign-in subject of the patient registering, kept with it.
pub fn register(
    reference: RegistrationRef,
    household: Household,
    owner: Option<String>,
    state: &ShardState,
    now: Timestamp,
) -> Change {
    let size = household.members.len() as u8;
    let reg = Registration::new(reference, state.key.clone(), household, state.next_registration_time(now));
    let owner = owner.map(|subject| Record::Owner(crate::domain::RegistrationOwner { reference, subject }));
    Change {
        upserts: std::iter::once(Record::Registration(reg)).chain(owner).collect(),
        events: vec![EventKind::Registered { reference, household_size: size }],
        locators: vec![Locator::Registration(reference)],
        ..Change::default()
    }
}

/// Withdraws a waiting or proposed registration, cancelling its open proposal.
pub fn withdraw(state: &ShardState, r: &RegistrationRef, reason: &str, now: Timestamp) -> Result<Change, AttachError> {
    let reg = registration_or_404(state, r)?;
    let next = reg.withdraw(reason, now)?;
    let mut change = Change::default();
    if let Some(pid) = &reg.proposal
        && let Some(p) = state.proposal(pid)
    {
        cancel_proposal(state, &mut change, p, now)?;
    }
    change.upserts.push(Record::Registration(next));
    change.events.push(EventKind::Withdrawn { reference: *r });
    Ok(change)
}

/// A waiting household as it is now, keeping its place in line. PHN claims
/// for added members are the caller's to take first.
pub fn update_household(
    state: &ShardState,
    r: &RegistrationRef,
    household: Household,
    now: Timestamp,
) -> Result<Change, AttachError> {
    let current = registration_or_404(state, r)?;
    // Refused first if the registration cannot change at all (not waiting).
    let next = current.update_household(household.clone(), now)?;
    // Someone who holds the place stays (by PHN, or by name and date of birth
    // when a mistyped PHN is corrected), so a place in line is never handed
    // over to other people, however many changes it takes.
    let stored = state.place_holders(r);
    let registered_on = current.registered_at.to_utc().date_naive();
    let holders = crate::domain::holders_after(stored, &current.household, &household, registered_on)?;
    let mut change = Change::default();
    match PlaceHolders::to_keep(*r, holders, &household) {
        None if stored.is_some() => change.deletes.push(RecordKey::PlaceHolders(*r)),
        Some(keep) if stored != Some(&keep) => change.upserts.push(Record::PlaceHolders(keep)),
        _ => {}
    }
    // NEWBORN is kept on a change until the baby's second birthday (the API
    // allows that much), but is newly given only to a baby under 12 months; a
    // member's needs sent back unchanged are not checked again (a need taken
    // before a rule existed stays).
    let today = now.to_utc().date_naive();
    for (i, m) in household.members.iter().enumerate() {
        let before = current.household.members.iter().find(|c| c.phn == m.phn);
        let newborn_until = u32::from(before.is_some_and(|c| c.needs.contains(&Need::Newborn)));
        if before.is_none_or(|c| c.needs != m.needs)
            && let Err(e) = m.check_needs(today, newborn_until)
        {
            return Err(e.at(&format!("members[{i}].")).into());
        }
    }
    let household_size = u8::try_from(next.household.members.len()).unwrap_or(u8::MAX);
    change.upserts.push(Record::Registration(next));
    change.events.push(EventKind::HouseholdUpdated { reference: *r, household_size });
    Ok(change)
}

/// Creates or updates a provider's registry entry (capacity is kept).
pub fn upsert_provider(state: &ShardState, input: ProviderInput, now: Timestamp) -> Change {
    let provider = match state.provider(&input.id) {
        Some(existing) => Provider {
            given_name: input.given_name,
            surname: input.surname,
            kind: input.kind,
            clinics: input.clinics.unwrap_or_else(|| existing.clinics.clone()),
            reported_panel_size: input.reported_panel_size.unwrap_or(existing.reported_panel_size),
            updated_at: now,
            ..existing.clone()
        },
        None => Provider {
            id: input.id.clone(),
            given_name: input.given_name,
            surname: input.surname,
            kind: input.kind,
            shard: state.key.clone(),
            clinics: input.clinics.unwrap_or_default(),
            capacity: Capacity::closed(),
            reported_panel_size: input.reported_panel_size.unwrap_or(0),
            created_at: now,
            updated_at: now,
        },
    };
    Change {
        events: vec![EventKind::ProviderUpdated { provider: provider.id.clone() }],
        locators: vec![Locator::Provider(provider.id.clone())],
        upserts: vec![Record::Provider(provider)],
        ..Change::default()
    }
}

/// Sets a provider's capacity and preferences.
pub fn set_capacity(
    state: &ShardState,
    id: &ProviderId,
    capacity: Capacity,
    now: Timestamp,
) -> Result<Change, AttachError> {
    let existing = state.provider(id).ok_or_else(|| AttachError::not_found("provider"))?;
    let provider = Provider { capacity, updated_at: now, ..existing.clone() };
    Ok(Change {
        upserts: vec![Record::Provider(provider)],
        events: vec![EventKind::CapacityChanged { provider: id.clone() }],
        ..Change::default()
    })
}

/// Creates or updates a clinic.
pub fn upsert_clinic(state: &ShardState, cmd: ClinicCommand, now: Timestamp) -> Change {
    let existing = state.clinic(&cmd.facility);
    let created_at = existing.map_or(now, |c| c.created_at);
    // Hours and phone left out of an update are kept, as the director is.
    let kept = |given: Option<String>, had: fn(&Clinic) -> &String| {
        given.or_else(|| existing.map(|c| had(c).clone())).unwrap_or_default()
    };
    let clinic = Clinic {
        facility: cmd.facility.clone(),
        name: cmd.details.name,
        address: cmd.details.address,
        shard: state.key.clone(),
        hours: kept(cmd.details.hours, |c| &c.hours),
        phone: kept(cmd.details.phone, |c| &c.phone),
        // Left out of an update: the clinic keeps its director.
        medical_director: cmd.medical_director.or_else(|| state.clinic(&cmd.facility)?.medical_director.clone()),
        created_at,
    };
    Change {
        upserts: vec![Record::Clinic(clinic)],
        events: vec![EventKind::ClinicUpdated { facility: cmd.facility.as_str().to_string() }],
        locators: vec![Locator::Clinic(cmd.facility)],
        ..Change::default()
    }
}

/// The shard's waiting households, as the matcher sees them.
pub(super) fn waiting_candidates(state: &ShardState, policy: &Policy, now: Timestamp) -> Vec<Candidate> {
    state.waitlist_after(None).map(|r| candidate(r, policy, now)).collect()
}

/// A registration's household, as the matcher sees it.
fn candidate(r: &Registration, policy: &Policy, now: Timestamp) -> Candidate {
    // Someone said no (or ended it), within the policy's period; a proposal left
    // unanswered is offered again.
    let since = match policy.pass_over_days {
        0 => Timestamp(i64::MIN),
        days => now.plus_ms(-i64::from(days) * crate::domain::DAY_MS),
    };
    Candidate {
        reference: r.reference,
        registered_at: r.registered_at,
        size: r.household.members.len() as u8,
        needs: r.household.needs(),
        complex: r.household.is_complex(),
        age_groups: r.household.age_groups(now),
        languages: r.household.languages.clone(),
        passed: r.declines.iter().filter(|d| d.by.is_some() && d.at >= since).map(|d| d.provider.clone()).collect(),
    }
}

/// An accepting provider's free places and preferences, as the matcher sees them.
pub(super) fn opening(provider: &Provider, free_places: u32) -> Opening {
    Opening {
        provider: provider.id.clone(),
        free_places,
        max_complex_share_pct: provider.capacity.complexity.max_complex_share_pct,
        places_held: 0,
        complex_held: 0,
        languages: provider.capacity.languages.clone(),
        age_groups: provider.capacity.age_groups.clone(),
    }
}

/// [`opening`] for a provider homed in `state`'s community, with what they
/// already hold this month, so their complexity mix counts it.
pub(super) fn opening_here(state: &ShardState, provider: &Provider, free_places: u32, now: Timestamp) -> Opening {
    let since = super::state::month_start(now, &state.month_zone);
    Opening {
        places_held: state.places_held(&provider.id, since),
        complex_held: state.complex_held(&provider.id, since),
        ..opening(provider, free_places)
    }
}

/// The open proposal a placement makes (not yet planned into a change).
pub(super) fn open_proposal(
    state: &ShardState,
    placement: matcher::Placement,
    ttl_ms: i64,
    now: Timestamp,
) -> Result<Proposal, AttachError> {
    let reg = registration_or_404(state, &placement.reference)?;
    Ok(Proposal {
        id: ProposalId::generate(),
        shard: state.key.clone(),
        reference: reg.reference,
        provider: placement.provider,
        household_size: reg.household.members.len() as u8,
        complex: reg.household.is_complex(),
        created_at: now,
        expires_at: now.plus_ms(ttl_ms),
        status: ProposalStatus::Open,
        explanation: placement.explanation,
        closed_at: None,
        declined_by: None,
        decline_reason: None,
    })
}

/// Plans `proposal` into `change`: its household becomes `PROPOSED`.
pub(super) fn plan_proposal(
    state: &ShardState,
    change: &mut Change,
    proposal: &Proposal,
    now: Timestamp,
) -> Result<(), AttachError> {
    let reg = registration_or_404(state, &proposal.reference)?;
    change.upserts.push(Record::Registration(reg.propose(proposal.id, now)?));
    change.upserts.push(Record::Proposal(proposal.clone()));
    change.events.push(EventKind::Proposed {
        proposal: proposal.id,
        reference: reg.reference,
        provider: proposal.provider.clone(),
    });
    change.locators.push(Locator::Proposal(proposal.id));
    Ok(())
}

/// Runs the matcher over the shard's waitlist and accepting providers, and
/// plans one open proposal per placement.
pub fn run_matching(
    state: &ShardState,
    policy: &Policy,
    ttl_ms: i64,
    now: Timestamp,
) -> Result<(Change, Vec<Proposal>), AttachError> {
    let candidates = waiting_candidates(state, policy, now);
    let openings: Vec<Opening> = state
        .providers()
        .filter_map(|p| {
            let free = state.free_places(p, now);
            (free > 0).then(|| opening_here(state, p, free, now))
        })
        .collect();
    let placements = matcher::run(&candidates, &openings, policy, now);
    let mut change = Change::default();
    let mut proposals = Vec::with_capacity(placements.len());
    for placement in placements {
        let proposal = open_proposal(state, placement, ttl_ms, now)?;
        plan_proposal(state, &mut change, &proposal, now)?;
        proposals.push(proposal);
    }
    Ok((change, proposals))
}

/// What a coordinator asks for when proposing a household to a provider.
pub struct CoordinatorAsk<'a> {
    /// The household's registration, in this shard.
    pub reference: &'a RegistrationRef,
    /// The coordinator's note, shown with the proposal.
    pub note: &'a str,
    /// How far away the provider's community is (whole kilometres), when the
    /// provider is homed in another.
    pub away: Option<u32>,
}

/// A coordinator's proposal of a waiting household to `provider` (with their
/// free places as read in their community), checked by the rules matching
/// applies to every placement ([`matcher::assess`]). Priority order is the
/// coordinator's call; the explanation records the household's place in line
/// and the note. Plans nothing: the caller plans it here (`plan_proposal`)
/// or, for a provider homed elsewhere, has their community reserve the places first.
pub fn coordinator_proposal(
    state: &ShardState,
    policy: &Policy,
    ttl_ms: i64,
    now: Timestamp,
    provider: &super::ProviderView,
    ask: CoordinatorAsk<'_>,
) -> Result<Proposal, AttachError> {
    let reg = registration_or_404(state, ask.reference)?;
    if reg.status != RegistrationStatus::Waiting {
        return Err(AttachError::conflict(format!(
            "registration {} is {}: only a waiting household can be proposed",
            reg.reference,
            reg.status.name()
        )));
    }
    let p = &provider.provider;
    if !p.capacity.accepting {
        return Err(AttachError::conflict(format!("provider {} is not accepting new patients", p.id)));
    }
    // Homed here, their complexity mix counts what they hold; homed elsewhere, their
    // community's reservation (spill-over's step one) checks it.
    let offered = match state.provider(&p.id) {
        Some(_) => opening_here(state, p, provider.free_places, now),
        None => opening(p, provider.free_places),
    };
    let mut explanation = matcher::assess(&candidate(reg, policy, now), &offered, policy, now)
        .map_err(|unfit| AttachError::conflict(format!("provider {} cannot take this household: {unfit}", p.id)))?;
    let fit = &mut explanation.provider_fit;
    if let Some((place, _)) = state.place_in_line(reg) {
        fit.push(format!("place {place} in line by registration time"));
    }
    if let Some(km) = ask.away {
        fit.push(format!("the provider is homed in community {}, about {km} km away", p.shard.community.as_str()));
    }
    // Tell the provider an earlier match with them fell through, and how (after a
    // decline or a return a run would not have offered it again: DECISIONS 38).
    let with_them = || reg.declines.iter().rev().filter(|d| d.provider == p.id);
    // A no outweighs a later proposal left unanswered.
    if let Some(d) = with_them().find(|d| d.by.is_some()).or_else(|| with_them().next()) {
        let how = match d.by {
            Some(Responder::Provider) => "the provider declined",
            Some(Responder::Patient) => "the patient declined",
            Some(Responder::Coordinator) => "a coordinator ended it",
            None => "not answered in time",
        };
        fit.push(format!("proposed again: an earlier match with this provider fell through ({how})"));
    }
    fit.push(format!("coordinator's note: {}", ask.note));
    let placement = matcher::Placement { reference: reg.reference, provider: p.id.clone(), explanation };
    open_proposal(state, placement, ttl_ms, now)
}

/// Plans what closing `closed` leaves to settle when its provider is homed in
/// another community (a spill-over match): a settlement record, kept until the
/// provider's shard has freed the places or taken `entries` onto the panel.
/// Nothing for a provider homed here.
fn settle_if_remote(state: &ShardState, change: &mut Change, closed: &Proposal, entries: Vec<PanelEntry>) {
    if state.provider(&closed.provider).is_none() {
        change.upserts.push(Record::Settlement(Settlement { proposal: closed.clone(), entries }));
    }
}

/// Plans `proposal`'s close, `OPEN → CANCELLED`, with its settlement if its provider is homed elsewhere.
pub(super) fn cancel_proposal(
    state: &ShardState,
    change: &mut Change,
    proposal: &Proposal,
    now: Timestamp,
) -> Result<(), AttachError> {
    let cancelled = proposal.cancel(now)?;
    settle_if_remote(state, change, &cancelled, Vec::new());
    change.events.push(EventKind::ProposalCancelled {
        proposal: cancelled.id,
        reference: cancelled.reference,
        provider: cancelled.provider.clone(),
    });
    change.upserts.push(Record::Proposal(cancelled));
    Ok(())
}

/// Accepts or declines an open proposal. Accepting attaches every member to the
/// provider's panel (service code 98990); declining returns the household to
/// the waitlist with its registration time kept and the reason recorded.
pub fn answer(
    state: &ShardState,
    id: &ProposalId,
    answer: Answer,
    now: Timestamp,
) -> Result<(Change, Proposal), AttachError> {
    let proposal = state.proposal(id).ok_or_else(|| AttachError::not_found("proposal"))?;
    // Never dated before the proposal was made, even if the clock stepped back
    // since (a correction by NTP): an acceptance dated earlier would count in
    // an earlier week or month than the one it was made in.
    let now = now.max(proposal.created_at);
    let reg = registration_or_404(state, &proposal.reference)?;
    let mut change = Change::default();
    let next = match answer {
        Answer::Accept | Answer::AcceptAt(_) => {
            let next = proposal.accept(now)?;
            change.upserts.push(Record::Registration(reg.attach(proposal.provider.clone(), now)?));
            let provider = state.provider(&proposal.provider);
            let facility = match answer {
                // A provider homed in another community (spill-over): the system
                // checked the clinic against their registry entry before asking.
                Answer::AcceptAt(f) if provider.is_none() => Some(f),
                Answer::AcceptAt(f) if provider.is_some_and(|p| p.clinics.contains(&f)) => Some(f),
                Answer::AcceptAt(f) => {
                    let why =
                        format!("provider {} is not listed at clinic {f}; nothing was accepted", proposal.provider);
                    return Err(AttachError { field: Some("facilityNumber".into()), ..AttachError::conflict(why) });
                }
                // Homed elsewhere: their shard puts the household at the provider's only clinic.
                _ => provider.and_then(|p| p.sole_clinic()).cloned(),
            };
            let mut entries = Vec::with_capacity(reg.household.members.len());
            for m in &reg.household.members {
                entries.push(PanelEntry {
                    provider: proposal.provider.clone(),
                    phn: m.phn,
                    given_name: m.given_name.clone(),
                    surname: m.surname.clone(),
                    date_of_birth: m.date_of_birth,
                    attached_at: now,
                    source: PanelSource::MatchedWithNeeds {
                        proposal: *id,
                        reference: reg.reference,
                        facility: facility.clone(),
                        complex: m.needs.iter().any(|n| n.is_complex()),
                    },
                });
            }
            change.events.push(EventKind::Accepted {
                proposal: *id,
                reference: reg.reference,
                provider: proposal.provider.clone(),
            });
            // ATTACHED is told once, where the panel is: here, or by the
            // provider's community when it takes the settlement.
            if provider.is_some() {
                change.upserts.extend(entries.into_iter().map(Record::PanelEntry));
                change.events.push(EventKind::Attached {
                    reference: Some(reg.reference),
                    provider: proposal.provider.clone(),
                    patients: reg.household.members.len() as u16,
                });
            } else {
                settle_if_remote(state, &mut change, &next, entries);
            }
            next
        }
        Answer::Decline { by, reason } => {
            let next = proposal.decline(by, &reason, now)?;
            let decline = Decline { proposal: *id, provider: proposal.provider.clone(), by: Some(by), reason, at: now };
            change.upserts.push(Record::Registration(reg.return_to_waitlist(decline, now)?));
            settle_if_remote(state, &mut change, &next, Vec::new());
            change.events.push(EventKind::Declined {
                proposal: *id,
                reference: reg.reference,
                provider: proposal.provider.clone(),
                by,
            });
            next
        }
    };
    change.upserts.push(Record::Proposal(next.clone()));
    Ok((change, next))
}

/// The household of `reference` declines the proposal open for it: the
/// patient's own answer, given with the reference (as a withdrawal is), so no
/// proposal id need be known. The household returns to the waitlist keeping
/// its registration time, as for any decline.
pub fn decline_for_household(
    state: &ShardState,
    reference: &RegistrationRef,
    reason: String,
    now: Timestamp,
) -> Result<(Change, Proposal), AttachError> {
    let reg = registration_or_404(state, reference)?;
    let open = reg.proposal.filter(|_| reg.status == RegistrationStatus::Proposed);
    let Some(id) = open.filter(|id| state.proposal(id).is_some_and(|p| p.status == ProposalStatus::Open)) else {
        let status = reg.status.name();
        return Err(AttachError::conflict(format!("registration {reference} is {status}: no proposal to decline")));
    };
    answer(state, &id, Answer::Decline { by: Responder::Patient, reason }, now)
}

/// An attachment that fell through: the household of `reference`, attached
/// through a proposal accepted less than `window_ms` ago, is waiting again with
/// its registration time, the proposal is `RETURNED`, and the provider's panel
/// lets the members go: here in the same commit, or through a settlement when
/// the provider is homed in another community. The caller claims the members'
/// PHNs for the registration first. A household attached from a submitted panel,
/// or attached longer ago, is refused with `CONFLICT`.
pub fn return_attached(
    state: &ShardState,
    reference: &RegistrationRef,
    reason: String,
    now: Timestamp,
    window_ms: i64,
) -> Result<Change, AttachError> {
    let reg = registration_or_404(state, reference)?;
    if reg.status != RegistrationStatus::Attached {
        let status = reg.status.name();
        return Err(AttachError::conflict(format!(
            "registration {reference} is {status}: only an attached household can be returned to the waitlist"
        )));
    }
    // Nothing is proposed to an attached household: its newest proposal is the accepted one.
    let accepted = state
        .latest_proposal(reference)
        .filter(|p| p.status == ProposalStatus::Accepted && reg.provider.as_ref() == Some(&p.provider));
    let since = now.plus_ms(-window_ms);
    let Some(p) = accepted.filter(|p| p.closed_at.is_some_and(|at| at >= since)) else {
        let days = window_ms / 86_400_000;
        return Err(AttachError::conflict(format!(
            "registration {reference} was not attached through a match accepted in the last {days} days \
             (or came onto the panel from a submitted panel list): a return would take the patients off a panel \
             the provider keeps; the provider removes them from it (removeFromPanel), and they can register again"
        )));
    };
    let returned = p.fall_through(Responder::Coordinator, &reason)?;
    let decline =
        Decline { proposal: p.id, provider: p.provider.clone(), by: Some(Responder::Coordinator), reason, at: now };
    let mut change = Change::default();
    change.upserts.push(Record::Registration(reg.return_from_panel(decline, now)?));
    if state.provider(&p.provider).is_some() {
        detach_match(state, &mut change, &p.provider, p.id);
    } else {
        settle_if_remote(state, &mut change, &returned, Vec::new());
    }
    change.events.push(EventKind::Returned {
        proposal: p.id,
        reference: *reference,
        provider: p.provider.clone(),
        people: reg.household.members.len() as u16,
    });
    change.upserts.push(Record::Proposal(returned));
    Ok(change)
}

/// Plans taking off `provider`'s panel here the patients that `proposal`
/// brought (its attachment fell through), with a `Detached` event.
pub(super) fn detach_match(state: &ShardState, change: &mut Change, provider: &ProviderId, proposal: ProposalId) {
    let entries = state.panel(provider).into_iter().flat_map(|panel| panel.values());
    let gone: Vec<_> = entries.filter(|e| e.source.proposal() == Some(proposal)).map(|e| e.phn).collect();
    if !gone.is_empty() {
        let patients = gone.len() as u32;
        change.deletes.extend(gone.into_iter().map(|phn| RecordKey::PanelEntry(provider.clone(), phn)));
        change.events.push(EventKind::Detached { provider: provider.clone(), patients });
    }
}

/// Expires every open proposal past its time, returning its household to the waitlist.
pub fn expire(state: &ShardState, now: Timestamp) -> Result<Change, AttachError> {
    let mut change = Change::default();
    for p in state.overdue_proposals(now) {
        let reg = registration_or_404(state, &p.reference)?;
        let decline = Decline {
            proposal: p.id,
            provider: p.provider.clone(),
            by: None,
            reason: "the proposal was not answered in time".to_string(),
            at: now,
        };
        change.upserts.push(Record::Registration(reg.return_to_waitlist(decline, now)?));
        let expired = p.expire(now)?;
        settle_if_remote(state, &mut change, &expired, Vec::new());
        change.upserts.push(Record::Proposal(expired));
        change.events.push(EventKind::Expired { proposal: p.id, reference: p.reference, provider: p.provider.clone() });
    }
    for r in state.overdue_reservations(now, super::spill::RESERVATION_GRACE_MS) {
        let expired = r.expire(now)?;
        change.events.push(EventKind::ReservationClosed {
            proposal: r.id,
            reference: r.reference,
            provider: r.provider.clone(),
            from: r.shard.clone(),
            status: expired.status,
        });
        change.upserts.push(Record::Reservation(expired));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ScoreExplanation, ShardKey};
    use crate::shard::tests::{household, phn};

    #[test]
    fn an_answer_is_never_dated_before_its_proposal_was_made() {
        let key = ShardKey::parse("IHA/111").unwrap();
        let mut state = ShardState::new(key.clone());
        let now = Timestamp::now();
        // The proposal was made an hour later than the clock now says: it stepped back.
        let made = now.plus_ms(3_600_000);
        let id = ProposalId::generate();
        let reg = Registration::new(RegistrationRef::generate(), key.clone(), household(&[phn(1)], &[]), now);
        let proposal = Proposal {
            id,
            shard: key.clone(),
            reference: reg.reference,
            provider: ProviderId::parse("P1111").unwrap(),
            household_size: 1,
            complex: false,
            created_at: made,
            expires_at: made.plus_ms(86_400_000),
            status: ProposalStatus::Open,
            explanation: ScoreExplanation { score: 0, parts: vec![], provider_fit: vec![] },
            closed_at: None,
            declined_by: None,
            decline_reason: None,
        };
        let proposed = reg.propose(id, made).unwrap();
        state.apply([Record::Registration(proposed), Record::Proposal(proposal)], &[]);
        let (change, accepted) = answer(&state, &id, Answer::Accept, now).unwrap();
        assert_eq!(accepted.closed_at, Some(made));
        // The provider is homed elsewhere: their shard lists the household, at the acceptance's time.
        let attached: Vec<Timestamp> = change
            .upserts
            .iter()
            .filter_map(|r| match r {
                Record::Registration(r) => Some(r.updated_at),
                _ => None,
            })
            .collect();
        assert_eq!(attached, [made], "counted in the week and month it was made in");
    }
}

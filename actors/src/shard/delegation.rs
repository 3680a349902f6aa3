//! Checks and plans that need a shard's data to decide who may act: delegation
//! endorsements, and access to a provider's panel, proposals and clinics.

use crate::access::{Principal, Role};
use crate::domain::{
    Clinic, DelegateId, Endorsement, EndorsementId, EndorsementStep, FacilityNumber, Party, ProviderId, Timestamp,
};
use crate::error::{AttachError, ErrorCode};
use crate::store::{Locator, Record, RecordKey};

use super::state::{Change, ShardState};

fn forbidden(message: impl Into<String>) -> AttachError {
    AttachError::new(ErrorCode::Forbidden, message)
}

/// Which party of an endorsement between `provider` and `delegate` the caller is.
fn party_of(who: &Principal, provider: &ProviderId, delegate: &DelegateId) -> Result<Party, AttachError> {
    if who.is_provider(provider) {
        Ok(Party::Provider)
    } else if who.role() == Role::Delegate && who.subject() == delegate.as_str() {
        Ok(Party::Delegate)
    } else {
        Err(forbidden("only the provider and the delegate named in an endorsement may act on it"))
    }
}

/// Starts an endorsement of `delegate` by `provider`, by either of them,
/// replacing the pair's closed (declined or cancelled) endorsement, whose id
/// it takes.
pub fn start(
    state: &ShardState,
    who: &Principal,
    provider: &ProviderId,
    delegate: DelegateId,
    now: Timestamp,
) -> Result<(Change, Endorsement), AttachError> {
    let by = party_of(who, provider, &delegate)?;
    if by == Party::Provider && who.subject() == delegate.as_str() {
        // Harmless (acting as a delegate takes a delegate's sign-in) but surely a
        // mistake for the staff member's id, which a tester found taken without a word.
        return Err(AttachError {
            field: Some("delegate".into()),
            ..AttachError::new(
                crate::error::ErrorCode::InvalidInput,
                "a provider is not their own delegate: name the staff member's user id",
            )
        });
    }
    if state.provider(provider).is_none() {
        return Err(AttachError::not_found("provider"));
    }
    if let Some(open) = state.endorsements_of(provider).find(|e| e.delegate == delegate && e.is_open()) {
        return Err(AttachError::conflict(format!(
            "endorsement {} between these two is already {}; continue or cancel it",
            open.id,
            open.status.name()
        )));
    }
    // The pair's closed endorsement gives way to the new one, which takes its id
    // (none is open, or it was refused above): starting and cancelling over and
    // over keeps one record and one locator per pair, and every step stays in
    // the audit log under that id.
    let mut closed: Vec<EndorsementId> =
        state.endorsements_of(provider).filter(|e| e.delegate == delegate).map(|e| e.id).collect();
    closed.sort();
    let id = closed.first().copied().unwrap_or_else(EndorsementId::generate);
    // Before session 14 a pair could have several (each start had its own id).
    let deletes = closed.iter().skip(1).map(|e| RecordKey::Endorsement(*e)).collect();
    let endorsement = Endorsement::new(id, state.key.clone(), provider.clone(), delegate, by, now);
    let change = Change {
        upserts: vec![Record::Endorsement(endorsement.clone())],
        deletes,
        locators: vec![Locator::Endorsement(endorsement.id)],
        ..Change::default()
    };
    Ok((change, endorsement))
}

/// Takes a step of an endorsement's workflow for the caller's party.
pub fn advance(
    state: &ShardState,
    who: &Principal,
    id: &EndorsementId,
    step: EndorsementStep,
    now: Timestamp,
) -> Result<(Change, Endorsement), AttachError> {
    let current = state.endorsement(id).ok_or_else(|| AttachError::not_found("endorsement"))?;
    let by = party_of(who, &current.provider, &current.delegate)?;
    let next = current.advance(step, by, now)?;
    Ok((Change { upserts: vec![Record::Endorsement(next.clone())], ..Change::default() }, next))
}

/// The endorsements of a provider the caller may see, oldest first: all of
/// them for the provider and support, only their own for a delegate.
pub fn visible_endorsements(
    state: &ShardState,
    who: &Principal,
    provider: &ProviderId,
) -> Result<Vec<Endorsement>, AttachError> {
    if state.provider(provider).is_none() {
        return Err(AttachError::not_found("provider"));
    }
    let all = state.endorsements_of(provider);
    let mut seen: Vec<Endorsement> = match who.role() {
        Role::Delegate => all.filter(|e| e.delegate.as_str() == who.subject()).cloned().collect(),
        Role::Support | Role::Internal => all.cloned().collect(),
        _ if who.is_provider(provider) => all.cloned().collect(),
        _ => return Err(forbidden("you may only see your own endorsements")),
    };
    // Oldest first (ids are random, so their order says nothing).
    seen.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(seen)
}

/// Whether the caller may manage (read, and later change) `provider`'s panel:
/// the provider, a delegate with a completed endorsement, or support (reading).
pub fn may_manage_panel(state: &ShardState, who: &Principal, provider: &ProviderId) -> Result<(), AttachError> {
    let allowed = match who.role() {
        Role::Internal | Role::Support => true,
        Role::Delegate => state.delegation_in_force(provider, who.subject()),
        _ => who.is_provider(provider),
    };
    if allowed {
        Ok(())
    } else if who.role() == Role::Delegate {
        Err(forbidden("you act for this provider only while their endorsement of you is completed"))
    } else {
        Err(forbidden("you may only manage your own panel"))
    }
}

/// Whether the caller may answer or see a proposal made to `provider`:
/// providers only their own; coordinators (already scope-checked) any.
pub fn may_act_on_proposal(who: &Principal, provider: &ProviderId) -> Result<(), AttachError> {
    match who.role() {
        Role::Provider | Role::MedicalDirector if !who.is_provider(provider) => {
            Err(forbidden("this proposal was made to another provider"))
        }
        _ => Ok(()),
    }
}

/// The director a clinic's change names: the one `given`, or, for a new clinic
/// (`existing` none) left without one, the medical director creating it.
pub fn named_director(existing: Option<&Clinic>, who: &Principal, given: Option<ProviderId>) -> Option<ProviderId> {
    given.or_else(|| who.provider().filter(|_| existing.is_none() && who.role() == Role::MedicalDirector).cloned())
}

/// Whether the caller may create or change the clinic `facility`, `existing`
/// as it is now (none: a new one): its medical director (a new clinic must
/// name the caller as its director).
pub fn may_keep_clinic(
    existing: Option<&Clinic>,
    who: &Principal,
    facility: &FacilityNumber,
    new_director: Option<&ProviderId>,
) -> Result<(), AttachError> {
    if who.role() == Role::Internal {
        return Ok(());
    }
    let me = who.provider().filter(|_| who.role() == Role::MedicalDirector);
    let Some(me) = me else {
        return Err(forbidden("only a clinic's medical director keeps its registry entry"));
    };
    match existing {
        Some(existing) if existing.medical_director.as_ref() != Some(me) => {
            Err(forbidden(format!("you are not the medical director of clinic {facility}")))
        }
        None if new_director != Some(me) => Err(forbidden("a new clinic must name you as its medical director")),
        _ => Ok(()),
    }
}

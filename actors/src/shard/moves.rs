//! A household moving to another community, inside one shard: leaving (step
//! one, in the community left), arriving (step two, in the community joined),
//! and closing the record of the move. The system (`system/moves.rs`) strings
//! the steps together. Each step is durable before it is answered and safe to
//! repeat, so a retry or the next start finishes a move a crash interrupted.

use crate::domain::{EventKind, MoveStatus, Registration, RegistrationMove, RegistrationRef, ShardKey, Timestamp};
use crate::error::{AttachError, ErrorCode};
use crate::store::{CasOutcome, Locator, PhnClaim, PhnHolder, Record};

use super::actor::ShardRuntime;
use super::messages::{Moving, RegistrationView};
use super::state::{Change, ShardState};

/// Step one: the registration leaves this community for `to`. It becomes
/// `MOVED` here (an open proposal is cancelled) and a running [`RegistrationMove`]
/// records where it went. Asked again while that move runs, it plans nothing
/// and answers the same move. Answers the `MOVED` copy the community joined
/// takes, with who holds its place.
pub fn plan_move_out(
    state: &ShardState,
    r: &RegistrationRef,
    to: &ShardKey,
    now: Timestamp,
) -> Result<(Change, Moving, RegistrationMove), AttachError> {
    let reg = state.registration(r).ok_or_else(|| AttachError::not_found("registration"))?;
    if let Some(m) = state.move_of(r).filter(|_| reg.status == crate::domain::RegistrationStatus::Moved) {
        return match m.status {
            MoveStatus::Running if &m.to == to => Ok((Change::default(), moving(state, reg.clone()), m.clone())),
            _ => Err(AttachError::conflict(format!(
                "registration {r} is moving to community {}; ask to move it there again to finish that move first",
                m.to.community.as_str()
            ))),
        };
    }
    if to == &state.key {
        return Err(AttachError::new(ErrorCode::InvalidInput, "the registration is already in that community"));
    }
    let moved = reg.move_out(now)?;
    let record = RegistrationMove {
        reference: *r,
        from: state.key.clone(),
        to: to.clone(),
        status: MoveStatus::Running,
        started_at: moved.updated_at,
        updated_at: moved.updated_at,
    };
    let mut change = Change::default();
    if let Some(p) = reg.proposal.as_ref().and_then(|id| state.proposal(id)) {
        super::plan::cancel_proposal(state, &mut change, p, now)?;
    }
    change.upserts.push(Record::Registration(moved.clone()));
    change.upserts.push(Record::Move(record.clone()));
    change.events.push(EventKind::MovedOut { reference: *r, to: to.clone() });
    Ok((change, moving(state, moved), record))
}

/// `registration` (the `MOVED` copy) on its way, with what the community
/// joined keeps beside it: who holds its place and who registered it.
fn moving(state: &ShardState, registration: Registration) -> Moving {
    let r = &registration.reference;
    Moving { holders: state.place_holders(r).cloned(), owner: state.owner(r).map(str::to_owned), registration }
}

/// Step two: `moving` (the `MOVED` copy of the community left) joins this
/// community's waitlist with its registration time. Plans nothing if it already
/// arrived: this community holds a copy that is not an older record of a stay.
/// Its locator now points here, and who holds its place is kept as the
/// community left kept it. If this community still had the household's own
/// earlier move out running, that move evidently arrived, and is closed.
pub fn plan_move_in(state: &ShardState, moving: &Moving, now: Timestamp) -> Result<Change, AttachError> {
    let Moving { registration: moving, holders, owner } = moving;
    if state.registration(&moving.reference).is_some_and(|here| !here.arrives_after(moving)) {
        return Ok(Change::default());
    }
    let arrived = moving.move_in(state.key.clone(), now)?;
    let mut change = Change::default();
    match holders {
        Some(h) => change.upserts.push(Record::PlaceHolders(h.clone())),
        // Kept here from an earlier stay, and since changed where it went.
        None if state.place_holders(&moving.reference).is_some() => {
            change.deletes.push(crate::store::RecordKey::PlaceHolders(moving.reference));
        }
        None => {}
    }
    // Never changed, so one kept from an earlier stay is the same.
    if let Some(subject) = owner.as_ref().filter(|_| state.owner(&moving.reference).is_none()) {
        let owner = crate::domain::RegistrationOwner { reference: moving.reference, subject: subject.clone() };
        change.upserts.push(Record::Owner(owner));
    }
    if let Some(earlier) = state.move_of(&moving.reference).filter(|m| m.status == MoveStatus::Running) {
        change.upserts.push(Record::Move(earlier.completed(now)));
    }
    change.events.push(EventKind::MovedIn {
        reference: arrived.reference,
        from: moving.shard.clone(),
        household_size: arrived.household.members.len() as u8,
    });
    change.locators.push(Locator::Registration(arrived.reference));
    change.upserts.push(Record::Registration(arrived));
    Ok(change)
}

/// Step three: the record of a move out of here, closed once the community joined holds the registration.
pub fn plan_finish_move(state: &ShardState, r: &RegistrationRef, now: Timestamp) -> Change {
    match state.move_of(r) {
        Some(m) if m.status == MoveStatus::Running => {
            Change { upserts: vec![Record::Move(m.completed(now))], ..Change::default() }
        }
        _ => Change::default(),
    }
}

impl ShardRuntime {
    /// Step one, committed.
    pub(super) async fn move_out(
        &mut self,
        r: &RegistrationRef,
        to: &ShardKey,
        now: Timestamp,
    ) -> Result<(Moving, RegistrationMove), AttachError> {
        let (change, moved, record) = plan_move_out(&self.state, r, to, now)?;
        self.commit(change, now).await?;
        Ok((moved, record))
    }

    /// Step two, committed; then every member's PHN claim is pointed here.
    /// Claims that still name the community left are followed there (see
    /// `claimed_registration`), so a failure to repoint one loses nothing.
    pub(super) async fn move_in(&mut self, moving: Moving, now: Timestamp) -> Result<RegistrationView, AttachError> {
        let change = plan_move_in(&self.state, &moving, now)?;
        self.commit(change, now).await?;
        let reference = moving.registration.reference;
        let view = self.registration_view(&reference).await?;
        if view.registration.holds_phns() && view.registration.status != crate::domain::RegistrationStatus::Moved {
            let here = PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Registration(reference), at: now };
            for m in &view.registration.household.members {
                if let Err(e) = self.repoint_claim(m.phn, &here).await {
                    // The move is durable; a claim left naming the community left is followed there.
                    tracing::warn!(shard = %self.state.key, error = %e, "a moved member's PHN claim was not repointed");
                }
            }
        }
        Ok(view)
    }

    /// Points a claim on `phn` made for the same registration in another shard at `here`.
    async fn repoint_claim(&self, phn: crate::domain::Phn, here: &PhnClaim) -> Result<(), AttachError> {
        match self.store.phn_claim(phn).await? {
            Some(old) if old.holder == here.holder && old.shard != here.shard => {
                match self.store.cas_phn_claim(phn, Some(&old), Some(here)).await? {
                    CasOutcome::Applied => Ok(()),
                    CasOutcome::Conflict(_) => Err(AttachError::conflict("the claim changed while it was repointed")),
                }
            }
            _ => Ok(()),
        }
    }

    /// Step three, committed.
    pub(super) async fn finish_move(&mut self, r: &RegistrationRef, now: Timestamp) -> Result<(), AttachError> {
        let change = plan_finish_move(&self.state, r, now);
        self.commit(change, now).await
    }

    /// Moves out of here still running, each with the `MOVED` copy the community joined is to take.
    pub(super) fn running_moves(&self) -> Vec<(Moving, RegistrationMove)> {
        self.state
            .running_moves()
            .filter_map(|m| self.state.registration(&m.reference).map(|r| (r.clone(), m.clone())))
            .filter(|(r, _)| r.status == crate::domain::RegistrationStatus::Moved)
            .map(|(registration, m)| (moving(&self.state, registration), m))
            .collect()
    }
}

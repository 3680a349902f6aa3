//! A clinic's staff list, in the shard that keeps the clinic: who may change
//! it and see it (decided against the clinic's registry entry here, in the
//! same step as the change), and what adding or removing a member writes.
//!
//! The list grants nothing: staff act for a provider only through that
//! provider's completed delegation endorsement (docs/DECISIONS.md 21).

use crate::access::{Principal, Role};
use crate::domain::{
    Clinic, DelegateId, EventKind, FacilityNumber, MAX_STAFF_PER_CLINIC, StaffInput, StaffMember, Timestamp,
};
use crate::error::{AttachError, ErrorCode};
use crate::store::{Record, RecordKey};

use super::state::{Change, ShardState};

fn clinic<'a>(state: &'a ShardState, facility: &FacilityNumber) -> Result<&'a Clinic, AttachError> {
    state.clinic(facility).ok_or_else(|| AttachError::not_found("clinic"))
}

fn directs(who: &Principal, clinic: &Clinic) -> bool {
    who.role() == Role::MedicalDirector && who.provider().is_some_and(|me| clinic.medical_director.as_ref() == Some(me))
}

/// `FORBIDDEN` unless the caller is the clinic's medical director (or Attach itself).
fn may_manage(state: &ShardState, who: &Principal, facility: &FacilityNumber) -> Result<(), AttachError> {
    let clinic = clinic(state, facility)?;
    if who.role() == Role::Internal || directs(who, clinic) {
        Ok(())
    } else {
        Err(AttachError::new(
            ErrorCode::Forbidden,
            format!("only the medical director of clinic {facility} keeps its staff list"),
        ))
    }
}

/// Adds a member to a clinic's staff list: its medical director only.
pub fn add(
    state: &ShardState,
    who: &Principal,
    facility: &FacilityNumber,
    input: StaffInput,
    now: Timestamp,
) -> Result<(Change, StaffMember), AttachError> {
    may_manage(state, who, facility)?;
    if state.staff_member(facility, &input.subject).is_some() {
        return Err(AttachError {
            field: Some("subject".into()),
            ..AttachError::conflict(format!(
                "{} is already on the staff of clinic {facility}; remove them first to change their entry",
                input.subject
            ))
        });
    }
    if state.staff_of(facility).count() >= MAX_STAFF_PER_CLINIC {
        return Err(AttachError::conflict(format!("a clinic lists at most {MAX_STAFF_PER_CLINIC} staff members")));
    }
    let member = input.member(facility.clone(), now);
    let change = Change {
        upserts: vec![Record::ClinicStaff(member.clone())],
        events: vec![EventKind::ClinicUpdated { facility: facility.as_str().to_string() }],
        ..Change::default()
    };
    Ok((change, member))
}

/// Takes a member off a clinic's staff list: its medical director only.
/// Answers the member removed.
pub fn remove(
    state: &ShardState,
    who: &Principal,
    facility: &FacilityNumber,
    subject: &DelegateId,
) -> Result<(Change, StaffMember), AttachError> {
    may_manage(state, who, facility)?;
    let member = state.staff_member(facility, subject).cloned().ok_or_else(|| AttachError {
        field: Some("subject".into()),
        ..AttachError::new(ErrorCode::NotFound, format!("{subject} is not on the staff of clinic {facility}"))
    })?;
    let change = Change {
        deletes: vec![RecordKey::ClinicStaff(facility.clone(), subject.clone())],
        events: vec![EventKind::ClinicUpdated { facility: facility.as_str().to_string() }],
        ..Change::default()
    };
    Ok((change, member))
}

/// The part of a clinic's staff list the caller may see: all of it for the
/// clinic's medical director and support, their own entry for a staff member
/// on it; `FORBIDDEN` for anyone else.
pub fn visible(
    state: &ShardState,
    who: &Principal,
    facility: &FacilityNumber,
) -> Result<Vec<StaffMember>, AttachError> {
    let clinic = clinic(state, facility)?;
    let all = state.staff_of(facility);
    // Support within their scope, as for everything else they read.
    let support = who.role() == Role::Support && who.scope().covers(&state.key);
    if who.role() == Role::Internal || support || directs(who, clinic) {
        return Ok(all.cloned().collect());
    }
    let own: Vec<StaffMember> = all.filter(|m| m.subject.as_str() == who.subject()).cloned().collect();
    if own.is_empty() {
        Err(AttachError::new(
            ErrorCode::Forbidden,
            format!("the staff list of clinic {facility} is for its medical director and its staff"),
        ))
    } else {
        Ok(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;
    use crate::domain::ProviderId;
    use crate::store::conformance::fixtures::{World, shard};

    fn setup() -> (ShardState, World) {
        let s = shard("IHA/111");
        let world = World::new(&s, 1);
        let mut state = ShardState::new(s);
        state.apply([Record::Clinic(world.clinic.clone()), Record::Provider(world.provider.clone())], &[]);
        (state, world)
    }

    fn director(world: &World) -> Principal {
        Principal::new("dr-1", Role::MedicalDirector, world.clinic.medical_director.clone(), Scope::default())
    }

    fn input(subject: &str) -> StaffInput {
        StaffInput::parse(subject, "Jo Tremblay", "MOA").unwrap()
    }

    #[test]
    fn the_director_adds_and_removes_and_each_change_is_a_clinic_event() {
        let (mut state, world) = setup();
        let f = &world.clinic.facility;
        let (change, member) = add(&state, &director(&world), f, input("moa-1"), Timestamp(5)).unwrap();
        assert_eq!(member.added_at, Timestamp(5));
        assert_eq!(change.events, vec![EventKind::ClinicUpdated { facility: f.as_str().into() }]);
        state.apply(change.upserts, &change.deletes);
        assert_eq!(state.staff_of(f).count(), 1);

        let dup = add(&state, &director(&world), f, input("moa-1"), Timestamp(6)).unwrap_err();
        assert_eq!((dup.code, dup.field.as_deref()), (ErrorCode::Conflict, Some("subject")));

        let (change, gone) = remove(&state, &director(&world), f, &member.subject).unwrap();
        assert_eq!(gone, member);
        state.apply(change.upserts, &change.deletes);
        assert_eq!(state.staff_of(f).count(), 0);
        let absent = remove(&state, &director(&world), f, &member.subject).unwrap_err();
        assert_eq!(absent.code, ErrorCode::NotFound);
    }

    #[test]
    fn only_this_clinics_director_may_change_it() {
        let (state, world) = setup();
        let f = &world.clinic.facility;
        let other = ProviderId::parse("MD999").unwrap();
        let refused = [
            Principal::new("dr-2", Role::MedicalDirector, Some(other), Scope::default()),
            Principal::new("p-1", Role::Provider, world.clinic.medical_director.clone(), Scope::default()),
            Principal::new("moa-1", Role::Delegate, None, Scope::default()),
            Principal::new("s-1", Role::Support, None, Scope::province()),
        ];
        for who in refused {
            let e = add(&state, &who, f, input("moa-2"), Timestamp(1)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden, "{who:?}");
        }
        let unknown = FacilityNumber::parse("ZZZZZ").unwrap();
        assert_eq!(
            add(&state, &director(&world), &unknown, input("x"), Timestamp(1)).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert!(add(&state, &Principal::internal("test"), f, input("moa-3"), Timestamp(1)).is_ok());
    }

    #[test]
    fn the_list_is_seen_whole_by_the_director_and_support_and_staff_see_their_own_entry() {
        let (mut state, world) = setup();
        let f = &world.clinic.facility;
        for s in ["moa-1", "rn-1"] {
            let (change, _) = add(&state, &director(&world), f, input(s), Timestamp(1)).unwrap();
            state.apply(change.upserts, &change.deletes);
        }
        assert_eq!(visible(&state, &director(&world), f).unwrap().len(), 2);
        let support = Principal::new("s-1", Role::Support, None, Scope::province());
        assert_eq!(visible(&state, &support, f).unwrap().len(), 2);
        let elsewhere = Scope::parse(["community:233"]).unwrap();
        let support_elsewhere = Principal::new("s-2", Role::Support, None, elsewhere);
        assert_eq!(visible(&state, &support_elsewhere, f).unwrap_err().code, ErrorCode::Forbidden, "out of scope");
        let moa = Principal::new("moa-1", Role::Delegate, None, Scope::default());
        let own = visible(&state, &moa, f).unwrap();
        assert_eq!(own.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(), ["moa-1"]);
        let stranger = Principal::new("moa-9", Role::Delegate, None, Scope::default());
        assert_eq!(visible(&state, &stranger, f).unwrap_err().code, ErrorCode::Forbidden);
        let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
        assert_eq!(visible(&state, &ops, f).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn being_on_the_staff_list_grants_no_delegation() {
        let (mut state, world) = setup();
        let f = &world.clinic.facility;
        let (change, _) = add(&state, &director(&world), f, input("moa-77"), Timestamp(1)).unwrap();
        state.apply(change.upserts, &change.deletes);
        assert!(!state.delegation_in_force(&world.provider.id, "moa-77"));
        let moa = Principal::new("moa-77", Role::Delegate, None, Scope::default());
        let refused = super::super::delegation::may_manage_panel(&state, &moa, &world.provider.id).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
    }
}

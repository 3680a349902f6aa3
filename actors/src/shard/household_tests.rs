//! A waiting household that changes (a baby born, a member gone, needs that
//! changed), through the real actors and store: its place, its PHNs, refusals
//! that change nothing, and a restart.

use std::time::Duration;

use crate::domain::*;
use crate::error::ErrorCode;
use crate::shard::ShardConfig;

use super::tests::{c, household, phn, provider, start, sys, world};

#[tokio::test]
async fn a_waiting_household_changes_keeps_its_place_and_its_members_phns() {
    // No grace for unconfirmed claims: only what a registration lists holds a PHN.
    let config = ShardConfig { claim_grace: Duration::ZERO, ..ShardConfig::default() };
    let w = world(config.clone()).await;
    let s = &w.system;
    let first = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let family = s.register(&sys(), &c("111"), household(&[phn(2), phn(5)], &[])).await.unwrap().registration;
    let (_, mut feed) = s.subscribe(&sys(), &c("111")).unwrap();

    // A baby is born: the household grows and keeps its place behind `first`.
    let mut grown = household(&[phn(2), phn(5), phn(3)], &[]);
    let baby = DateOfBirth::parse(&(super::tests::today() - chrono::Days::new(30)).to_string(), super::tests::today());
    grown.members[2].date_of_birth = baby.unwrap();
    grown.members[2].needs.insert(Need::Newborn);
    let view = s.update_household(&sys(), &family.reference, grown.clone()).await.unwrap();
    assert_eq!(view.registration.household, grown);
    assert_eq!((view.registration.registered_at, view.place), (family.registered_at, Some((2, 1))));
    let event = feed.recv().await.unwrap();
    assert_eq!(event.kind, EventKind::HouseholdUpdated { reference: family.reference, household_size: 3 });
    let taken = s.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict, "the baby is on this waitlist now");
    let again = s.update_household(&sys(), &family.reference, grown.clone()).await.unwrap();
    assert_eq!(again.registration.updated_at, view.registration.updated_at, "the same household changes nothing");

    // A member leaves: their PHN is free to register on its own.
    let smaller = Household { members: grown.members[1..].to_vec(), ..grown.clone() };
    s.update_household(&sys(), &family.reference, smaller.clone()).await.unwrap();
    let alone = s.register(&sys(), &c("112"), household(&[phn(2)], &[])).await.unwrap().registration;

    // Adding someone waiting elsewhere is refused, naming them, and changes nothing.
    let with_them = household(&[phn(1), phn(2)], &[]);
    let refused = s.update_household(&sys(), &first.reference, with_them).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::Conflict, Some("members[1].phn")));
    assert!(refused.message.contains("nothing was changed"), "{}", refused.message);
    let first_now = s.registration(&sys(), &first.reference).await.unwrap().registration;
    assert_eq!(first_now.household.members.len(), 1);
    let taken = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict, "still waiting in 112");
    assert_eq!(
        s.registration(&sys(), &alone.reference).await.unwrap().registration.status,
        RegistrationStatus::Waiting
    );

    // An open proposal is answered first; an unknown reference is not found.
    provider(s, "P1111", "111", 5).await;
    let proposals = s.run_matching(&sys(), &c("111")).await.unwrap();
    assert!(proposals.iter().any(|p| p.reference == first.reference));
    let proposed = s.update_household(&sys(), &first.reference, household(&[phn(1), phn(4)], &[])).await;
    assert_eq!(proposed.unwrap_err().code, ErrorCode::Conflict);
    assert!(s.register(&sys(), &c("112"), household(&[phn(4)], &[])).await.is_ok(), "no claim was taken");
    let unknown = s.update_household(&sys(), &RegistrationRef::generate(), smaller.clone()).await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);

    // Durable: the changed household, with its original time, after a restart.
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let s = start(&path, config).await;
    let kept = s.registration(&sys(), &family.reference).await.unwrap().registration;
    assert_eq!((kept.household, kept.registered_at), (smaller, family.registered_at));
    s.stop().await;
}

#[tokio::test]
async fn support_finds_a_registration_by_any_members_phn_and_the_audit_names_only_the_registration() {
    use crate::access::{Operation, Principal, Role, Scope};
    use crate::audit::AuditQuery;
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let support = Principal::new("sup-1", Role::Support, None, Scope::province());
    let family = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;

    let found = s.find_registration(&support, phn(2)).await.unwrap();
    assert_eq!(found.registration.reference, family.reference, "any member's PHN finds the household");
    let never = s.find_registration(&support, phn(9)).await.unwrap_err();
    assert_eq!(never.code, ErrorCode::NotFound);

    // Wherever it lives now, and only while the member is in it.
    s.move_registration(&sys(), &family.reference, &c("112")).await.unwrap();
    let moved = s.find_registration(&support, phn(1)).await.unwrap();
    assert_eq!(moved.registration.shard.community, c("112"), "followed to the community joined");
    s.update_household(&sys(), &family.reference, household(&[phn(1)], &[])).await.unwrap();
    assert_eq!(
        s.find_registration(&support, phn(2)).await.unwrap_err().code,
        ErrorCode::NotFound,
        "left the household"
    );
    s.withdraw(&sys(), &family.reference, "found a doctor".into()).await.unwrap();
    assert_eq!(s.find_registration(&support, phn(1)).await.unwrap_err().code, ErrorCode::NotFound, "withdrawn");

    // Who may look: support and coordinators in scope; not the public or patients.
    let other = s.register(&sys(), &c("111"), household(&[phn(3)], &[])).await.unwrap().registration;
    let local = Principal::new("c-111", Role::Coordinator, None, Scope::parse(["community:111"]).unwrap());
    let elsewhere = Principal::new("c-112", Role::Coordinator, None, Scope::parse(["community:112"]).unwrap());
    assert_eq!(s.find_registration(&local, phn(3)).await.unwrap().registration.reference, other.reference);
    let outside = s.find_registration(&elsewhere, phn(3)).await.unwrap_err();
    let nobody = s.find_registration(&elsewhere, phn(8)).await.unwrap_err();
    assert_eq!((outside.code, &outside.message), (nobody.code, &nobody.message), "neither whether nor where");
    let patient = Principal::new("pat-1", Role::Patient, None, Scope::default());
    assert_eq!(s.find_registration(&patient, phn(3)).await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(s.find_registration(&Principal::public(), phn(3)).await.unwrap_err().code, ErrorCode::Unauthenticated);

    let query = AuditQuery { operation: Some(Operation::FindRegistration), limit: 50, ..Default::default() };
    let records = s.audit_log(&sys(), query).await.unwrap();
    assert_eq!(records.len(), 10, "every look, found or not: {records:?}");
    let refused = records.iter().filter(|r| r.outcome.as_str() == "FORBIDDEN").count();
    assert_eq!(refused, 2, "the log keeps what the out-of-scope answer hides, and the patient's refusal");
    let phns: Vec<String> = (1..=9).map(|i| phn(i).expose()).collect();
    assert!(records.iter().all(|r| r.target.as_ref().is_none_or(|t| !phns.contains(t))), "no PHN in the log");
    assert_eq!(records[0].target.as_deref(), Some(family.reference.to_string().as_str()));
    assert_eq!(records[1].target, None, "nothing found, nothing named");
    s.stop().await;
}

#[tokio::test]
async fn newborn_is_kept_through_a_change_but_newly_given_only_to_a_baby_under_a_year() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let today = super::tests::today();
    let born = |days: i64| (today - chrono::Days::new(days as u64)).format("%Y-%m-%d").to_string();
    let mut family = household(&[phn(1), phn(2), phn(3)], &[]);
    family.members[1].date_of_birth = DateOfBirth::parse(&born(330), today).unwrap();
    family.members[1].needs.insert(Need::Newborn);
    family.members[2].date_of_birth = DateOfBirth::parse(&born(330), today).unwrap(); // a twin, not marked
    let r = s.register(&sys(), &c("111"), family.clone()).await.unwrap().registration;
    s.stop().await;

    // Sixty days on, both babies are past their first birthday.
    let mut state = super::state::ShardState::new(r.shard.clone());
    state.apply([crate::store::Record::Registration(r.clone())], &[]);
    let later = Timestamp::now().plus_ms(60 * DAY_MS);
    let as_read = super::plan::update_household(&state, &r.reference, family.clone(), later);
    assert!(as_read.is_ok(), "sent back as read, NEWBORN kept: {:?}", as_read.err());
    let mut twin_too = family;
    twin_too.members[2].needs.insert(Need::Newborn);
    let refused = super::plan::update_household(&state, &r.reference, twin_too, later).unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("members[2].needs")));
}

/// A member being added to a waiting household is claimed first and listed at
/// the commit. Another community reading the claim in between finds a
/// registration that does not list them yet: the claim is live all the same,
/// so the two cannot both take the person (found by a concurrent run).
#[tokio::test]
async fn a_member_being_added_elsewhere_cannot_be_registered_or_added_here_meanwhile() {
    use crate::store::{PhnClaim, PhnHolder};
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let family = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let other = s.register(&sys(), &c("112"), household(&[phn(2)], &[])).await.unwrap().registration;
    // Community 111 has claimed phn(3) for the family and not committed yet.
    let shard = ShardKey::parse("IHA/111").unwrap();
    let adding = PhnClaim {
        shard: shard.clone(),
        holder: PhnHolder::Registration(family.reference),
        at: family.updated_at.plus_ms(1),
    };
    let held = s.store().claim_phns(vec![(phn(3), adding.clone())]).await.unwrap();
    assert!(held.is_empty());

    let refused = s.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
    let refused = s.update_household(&sys(), &other.reference, household(&[phn(2), phn(3)], &[])).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
    assert_eq!(s.store().phn_claim(phn(3)).await.unwrap(), Some(adding.clone()), "still the family's");

    // A claim from before the registration's last change that it does not list
    // (a member who left, their claim not freed) holds nothing.
    let left = PhnClaim { at: family.updated_at.plus_ms(-1), ..adding.clone() };
    let outcome = s.store().cas_phn_claim(phn(3), Some(&adding), Some(&left)).await.unwrap();
    assert_eq!(outcome, crate::store::CasOutcome::Applied);
    s.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.expect("a stale claim is taken over");
}

#[tokio::test]
async fn a_household_changed_into_other_people_is_refused_and_keeps_nothing_of_theirs() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let early = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let mut others = household(&[phn(2), phn(3)], &[]);
    for m in &mut others.members {
        m.given_name = PersonName::parse("Ana").unwrap();
    }
    let refused = s.update_household(&sys(), &early.reference, others).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("members")));
    let still = s.registration(&sys(), &early.reference).await.unwrap().registration;
    assert_eq!(still.household, early.household, "nothing changed");
    s.register(&sys(), &c("112"), household(&[phn(2), phn(3)], &[])).await.expect("their PHNs were not claimed");
    // Keeping one member, the household may change as it does; and the same
    // person (name and date of birth) may correct a mistyped PHN.
    s.update_household(&sys(), &early.reference, household(&[phn(1), phn(4)], &[])).await.unwrap();
    let corrected = s.update_household(&sys(), &early.reference, household(&[phn(5)], &[])).await.unwrap();
    assert_eq!(corrected.registration.registered_at, early.registered_at);
}

#[tokio::test]
async fn a_change_made_from_an_older_reading_is_refused_when_asked_to_be() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let family = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let read = family.updated_at;
    // The household adds a member; a coordinator, from the reading before, corrects the first one's needs.
    let grown = household(&[phn(1), phn(2)], &[]);
    let added = s.update_household_if(&sys(), &family.reference, grown.clone(), Some(read)).await.unwrap();
    let stale = household(&[phn(1)], &[Need::Frailty]);
    let refused = s.update_household_if(&sys(), &family.reference, stale.clone(), Some(read)).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
    assert!(refused.message.contains("changed since it was read"), "{}", refused.message);
    let now = s.registration(&sys(), &family.reference).await.unwrap().registration;
    assert_eq!(now.household, grown, "nothing was changed: the added member is still there");
    // From the reading after, it goes through; without the condition, as before.
    let fixed = household(&[phn(1), phn(2)], &[Need::Frailty]);
    let after = Some(added.registration.updated_at);
    let view = s.update_household_if(&sys(), &family.reference, fixed.clone(), after).await.unwrap();
    assert_eq!(view.registration.household, fixed);
    s.update_household(&sys(), &family.reference, grown).await.unwrap();
    s.stop().await;
}

/// Two changes used to hand a place in line over: the first adds other people,
/// the second drops everyone who registered. Who holds the place is now kept
/// apart from the household, durably, and through a move.
#[tokio::test]
async fn a_place_in_line_is_not_handed_to_people_added_later_however_many_changes_it_takes() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let ada = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let behind = s.register(&sys(), &c("111"), household(&[phn(8)], &[])).await.unwrap().registration;
    let strangers = |phns: &[Phn]| {
        let mut h = household(phns, &[]);
        for m in &mut h.members {
            m.given_name = PersonName::parse("Xan").unwrap();
        }
        h
    };
    let mut with_them = strangers(&[phn(1), phn(2), phn(3)]);
    with_them.members[0] = household(&[phn(1)], &[]).members[0].clone();
    s.update_household(&sys(), &ada.reference, with_them.clone()).await.unwrap();
    let refused = s.update_household(&sys(), &ada.reference, strangers(&[phn(2), phn(3)])).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("members")));
    assert!(refused.message.contains("hold its place"), "{}", refused.message);
    assert_eq!(s.registration(&sys(), &ada.reference).await.unwrap().registration.household, with_them);

    // Nor after a restart, nor after a move and back.
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let s = start(&path, ShardConfig::default()).await;
    let again = s.update_household(&sys(), &ada.reference, strangers(&[phn(2), phn(3)])).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::InvalidInput, "kept durably");
    s.move_registration(&sys(), &ada.reference, &c("112")).await.unwrap();
    let there = s.update_household(&sys(), &ada.reference, strangers(&[phn(2)])).await.unwrap_err();
    assert_eq!(there.code, ErrorCode::InvalidInput, "kept through a move");
    s.move_registration(&sys(), &ada.reference, &c("111")).await.unwrap();
    let back = s.update_household(&sys(), &ada.reference, strangers(&[phn(3)])).await.unwrap_err();
    assert_eq!(back.code, ErrorCode::InvalidInput, "and back");

    // The one who registered may still let the others go, and then the
    // household is as it registered: a newborn added later holds the place too.
    s.update_household(&sys(), &ada.reference, household(&[phn(1)], &[])).await.unwrap();
    let mut baby = household(&[phn(1), phn(4)], &[]);
    let today = super::tests::today();
    baby.members[1].date_of_birth = DateOfBirth::parse(&today.to_string(), today).unwrap();
    baby.members[1].given_name = PersonName::parse("Bea").unwrap();
    s.update_household(&sys(), &ada.reference, baby.clone()).await.unwrap();
    let only_baby = Household { members: vec![baby.members[1].clone()], ..baby };
    let view = s.update_household(&sys(), &ada.reference, only_baby).await.unwrap();
    assert_eq!(view.registration.registered_at, ada.registered_at);
    assert_eq!(view.place, Some((1, 0)), "still ahead of the household registered after it");
    assert_eq!(s.registration(&sys(), &behind.reference).await.unwrap().place, Some((2, 1)));
    s.stop().await;
}

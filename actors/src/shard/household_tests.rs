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
    let family = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap().registration;
    let (_, mut feed) = s.subscribe(&sys(), &c("111")).unwrap();

    // A baby is born: the household grows and keeps its place behind `first`.
    let mut grown = household(&[phn(2), phn(3)], &[]);
    grown.members[1].needs.insert(Need::Newborn);
    let view = s.update_household(&sys(), &family.reference, grown.clone()).await.unwrap();
    assert_eq!(view.registration.household, grown);
    assert_eq!((view.registration.registered_at, view.place), (family.registered_at, Some((2, 1))));
    let event = feed.recv().await.unwrap();
    assert_eq!(event.kind, EventKind::HouseholdUpdated { reference: family.reference, household_size: 2 });
    let taken = s.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict, "the baby is on this waitlist now");
    let again = s.update_household(&sys(), &family.reference, grown.clone()).await.unwrap();
    assert_eq!(again.registration.updated_at, view.registration.updated_at, "the same household changes nothing");

    // A member leaves: their PHN is free to register on its own.
    let smaller = household(&[phn(3)], &[Need::Newborn]);
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

//! A household moving between communities, through the real actors and store:
//! its place by registration time, its PHNs, retries, interruptions and refusals.

use std::time::Duration;

use crate::domain::*;
use crate::error::ErrorCode;
use crate::panel::RowStatus;
use crate::shard::{Answer, ShardConfig, ShardMsg, WaitlistQuery};
use crate::system::AttachSystem;

use super::panel_tests::{clinic, csv_of, statuses, submit};
use super::tests::{c, household, phn, provider, start, sys, world};

fn shard(code: &str) -> ShardKey {
    ShardKey::parse(&format!("IHA/{code}")).unwrap()
}

async fn line(s: &AttachSystem, community: &str) -> Vec<RegistrationRef> {
    let page = s.waitlist(&sys(), &c(community), WaitlistQuery { limit: 50, ..Default::default() }).await.unwrap();
    page.items.iter().map(|r| r.reference).collect()
}

#[tokio::test]
async fn a_household_that_moves_takes_its_place_by_registration_time() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 5).await;
    // Registration times are milliseconds, kept strictly increasing within a
    // shard only: two communities can register in the same millisecond, and a
    // move then orders the two by reference. Keep the three apart in time.
    let apart = || tokio::time::sleep(Duration::from_millis(3));
    let early = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap().registration;
    apart().await;
    let mover = s.register(&sys(), &c("111"), household(&[phn(2), phn(3)], &[])).await.unwrap().registration;
    apart().await;
    let late = s.register(&sys(), &c("112"), household(&[phn(4)], &[])).await.unwrap().registration;
    let proposal = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 3);
    let (_, mut left) = s.subscribe(&sys(), &c("111")).unwrap();
    let (_, mut joined) = s.subscribe(&sys(), &c("112")).unwrap();

    let moved = s.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap();
    let r = &moved.registration;
    assert_eq!((r.status, &r.shard), (RegistrationStatus::Waiting, &shard("112")));
    assert_eq!((r.reference, r.registered_at), (mover.reference, mover.registered_at), "the place in line is kept");
    assert_eq!(moved.place, Some((2, 1)), "behind the household that registered earlier, ahead of the later one");
    assert_eq!(line(s, "112").await, [early.reference, mover.reference, late.reference]);
    assert!(line(s, "111").await.is_empty());
    assert_eq!(s.proposal(&sys(), &proposal.id).await.unwrap().status, ProposalStatus::Cancelled);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 5, "the cancelled proposal's places are free");
    let found = s.registration(&sys(), &mover.reference).await.unwrap();
    assert_eq!(found.registration.shard, shard("112"), "the reference leads to the community joined");
    // The feed closes the open proposal it cancelled, then tells the move.
    let cancelled = left.recv().await.unwrap().kind;
    let (id, reference, provider) = (proposal.id, mover.reference, doc.clone());
    assert_eq!(cancelled, EventKind::ProposalCancelled { proposal: id, reference, provider });
    let out = left.recv().await.unwrap().kind;
    assert_eq!(out, EventKind::MovedOut { reference: mover.reference, to: shard("112") });
    let inn = joined.recv().await.unwrap().kind;
    assert_eq!(inn, EventKind::MovedIn { reference: mover.reference, from: shard("111"), household_size: 2 });
    let stats = s.community_stats(&sys(), &c("112")).await.unwrap();
    assert_eq!((stats.counts.waiting_households, stats.counts.waiting_people), (3, 4));
    let stats = s.community_stats(&sys(), &c("111")).await.unwrap();
    assert_eq!((stats.counts.waiting_households, stats.counts.proposed_households), (0, 0));

    // Asking again changes nothing; so does asking for the community it is in.
    let again = s.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap();
    assert_eq!((again.registration, again.place), (moved.registration.clone(), moved.place));
    assert_eq!(line(s, "112").await.len(), 3, "no second copy");

    // Its members are still on a waitlist, in either community.
    for community in ["111", "112"] {
        let dup = s.register(&sys(), &c(community), household(&[phn(3)], &[])).await.unwrap_err();
        assert_eq!(dup.code, ErrorCode::Conflict, "registered again in {community}");
    }

    // It can move back: the community left replaces its record of the earlier stay.
    let back = s.move_registration(&sys(), &mover.reference, &c("111")).await.unwrap();
    assert_eq!((back.registration.status, back.place), (RegistrationStatus::Waiting, Some((1, 0))));
    assert_eq!(back.registration.registered_at, mover.registered_at);
    assert_eq!(line(s, "112").await, [early.reference, late.reference]);

    // Withdrawn where it is now, its PHNs are free again everywhere.
    s.withdraw(&sys(), &mover.reference, "found a doctor".into()).await.unwrap();
    s.register(&sys(), &c("112"), household(&[phn(2), phn(3)], &[])).await.expect("the PHNs were freed");
    s.stop().await;
}

#[tokio::test]
async fn moves_that_cannot_happen_are_refused_and_change_nothing() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P1111", "111", 5).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let unknown = s.move_registration(&sys(), &r.reference, &c("999")).await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);
    let nobody = RegistrationRef::generate();
    assert_eq!(s.move_registration(&sys(), &nobody, &c("112")).await.unwrap_err().code, ErrorCode::NotFound);
    let here = s.move_registration(&sys(), &r.reference, &c("111")).await.unwrap();
    assert_eq!(here.registration, r, "asking to move where it already is changes nothing");

    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    let attached = s.move_registration(&sys(), &r.reference, &c("112")).await.unwrap_err();
    assert_eq!(attached.code, ErrorCode::Conflict, "an attached household has a doctor");
    let gone = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap().registration;
    s.withdraw(&sys(), &gone.reference, "left the province".into()).await.unwrap();
    let withdrawn = s.move_registration(&sys(), &gone.reference, &c("112")).await.unwrap_err();
    assert_eq!(withdrawn.code, ErrorCode::Conflict);
    assert!(line(s, "112").await.is_empty());
    s.stop().await;
}

/// A crash after the first step leaves the household `MOVED` in the community
/// it left and absent from the one it joins: its PHNs stay held, and the next
/// start finishes the move before the process is ready.
#[tokio::test]
async fn a_move_cut_off_after_its_first_step_is_finished_by_the_next_start() {
    // No grace for unconfirmed claims: only the MOVED copy keeps the PHN held.
    let config = ShardConfig { claim_grace: Duration::ZERO, ..ShardConfig::default() };
    let w = world(config.clone()).await;
    let s = &w.system;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let reference = r.reference;
    let (moving, record) =
        s.directory().call(&shard("111"), |reply| ShardMsg::MoveOut(reference, shard("112"), reply)).await.unwrap();
    assert_eq!((moving.registration.status, record.status), (RegistrationStatus::Moved, MoveStatus::Running));
    let between = s.registration(&sys(), &reference).await.unwrap();
    assert_eq!(between.registration.status, RegistrationStatus::Moved, "still found, as moving");
    let held = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(held.code, ErrorCode::Conflict, "a household between two communities keeps its PHNs");
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);

    let again = start(&path, config.clone()).await;
    assert_eq!(again.resume_moves().await, 1);
    let view = again.registration(&sys(), &reference).await.unwrap();
    assert_eq!(
        (view.registration.status, view.registration.shard.clone()),
        (RegistrationStatus::Waiting, shard("112"))
    );
    assert_eq!(view.registration.registered_at, r.registered_at);
    assert_eq!(line(&again, "112").await, [reference]);
    assert_eq!(again.resume_moves().await, 0, "the record of the move is closed");
    again.stop().await;
}

#[tokio::test]
async fn asking_again_finishes_an_interrupted_move_and_a_stale_arrival_changes_nothing() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let reference = r.reference;
    let (first_copy, _) =
        s.directory().call(&shard("111"), |reply| ShardMsg::MoveOut(reference, shard("112"), reply)).await.unwrap();
    let wrong_way = s.move_registration(&sys(), &reference, &c("111")).await.unwrap_err();
    assert_eq!(wrong_way.code, ErrorCode::Conflict, "a move under way is finished before another starts");
    let done = s.move_registration(&sys(), &reference, &c("112")).await.unwrap();
    assert_eq!((done.registration.status, done.place), (RegistrationStatus::Waiting, Some((1, 0))));

    // It moves on to 111 again; then the first move's arrival in 112 is delivered late.
    s.move_registration(&sys(), &reference, &c("111")).await.unwrap();
    let late = s.directory().call(&shard("112"), |reply| ShardMsg::MoveIn(Box::new(first_copy), reply)).await;
    assert_eq!(late.unwrap().registration.status, RegistrationStatus::Moved, "112 keeps its record of the stay");
    assert!(line(s, "112").await.is_empty(), "no second living copy");
    assert_eq!(line(s, "111").await, [reference]);
    s.stop().await;
}

#[tokio::test]
async fn a_provider_in_the_community_joined_can_take_a_moved_patient_off_the_waitlist() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F112", "112").await;
    let doc = provider(s, "P2222", "112", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let r = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    s.move_registration(&sys(), &r.reference, &c("112")).await.unwrap();
    let report = submit(s, &doc, &f, &csv_of(&[phn(1)], "0F112")).await;
    assert_eq!(statuses(&report), [RowStatus::AttachedFromWaitlist]);
    let left = s.registration(&sys(), &r.reference).await.unwrap();
    assert_eq!(left.registration.household.members.iter().map(|m| m.phn).collect::<Vec<_>>(), [phn(2)]);
    assert_eq!(left.place, Some((1, 0)));
    s.stop().await;
}

/// If repointing a member's PHN claim failed after the move, the claim still
/// names the community left. It is followed to the community joined: the PHN
/// stays held, a panel there can take the patient, and a withdrawal frees it.
#[tokio::test]
async fn a_claim_still_naming_the_community_left_is_followed_to_the_one_joined() {
    use std::sync::Arc;

    use crate::regions::Regions;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::store::{CasOutcome, PhnClaim, PhnHolder, Store};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap());
    let regions = Arc::new(Regions::parse(super::tests::REGIONS).unwrap());
    let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
    let config = ShardConfig { claim_grace: Duration::ZERO, ..ShardConfig::default() };
    let s = AttachSystem::new(regions, store.clone(), feed, config, "test".into());
    s.start().await.unwrap();
    let f = clinic(&s, "0F112", "112").await;
    let doc = provider(&s, "P2222", "112", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();

    let r = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    s.move_registration(&sys(), &r.reference, &c("112")).await.unwrap();
    for p in [phn(1), phn(2)] {
        let now = store.phn_claim(p).await.unwrap().unwrap();
        assert_eq!((now.shard.clone(), now.holder.clone()), (shard("112"), PhnHolder::Registration(r.reference)));
        let stale = PhnClaim { shard: shard("111"), ..now.clone() };
        assert!(matches!(store.cas_phn_claim(p, Some(&now), Some(&stale)).await.unwrap(), CasOutcome::Applied));
    }

    let held = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(held.code, ErrorCode::Conflict, "the claim leads to the household waiting in 112");
    let report = submit(&s, &doc, &f, &csv_of(&[phn(1)], "0F112")).await;
    assert_eq!(statuses(&report), [RowStatus::AttachedFromWaitlist], "{report:?}");
    s.withdraw(&sys(), &r.reference, "found a doctor".into()).await.unwrap();
    s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.expect("the withdrawal freed the old claim");
    s.stop().await;
}

//! An attachment that falls through: the household goes back to the waitlist
//! with its registration time, through the real actors and store.

use crate::domain::*;
use crate::error::ErrorCode;
use crate::shard::ProposalsFrom;
use crate::shard::state::ShardState;
use crate::shard::{Answer, ShardConfig, ShardMsg};
use crate::store::{CasOutcome, PhnClaim, PhnHolder, Record};
use crate::system::AttachSystem;

use super::plan;
use super::tests::{c, household, phn, provider, sys, world};

/// Registers `phns` as one household in 111, matches it to the provider and accepts.
async fn attach(s: &AttachSystem, phns: &[Phn]) -> (RegistrationRef, Proposal) {
    let reference = s.register(&sys(), &c("111"), household(phns, &[])).await.unwrap().registration.reference;
    let made = s.run_matching(&sys(), &c("111")).await.unwrap();
    let p = made.into_iter().find(|p| p.reference == reference).expect("a place for it");
    let accepted = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    (reference, accepted)
}

#[tokio::test]
async fn a_returned_household_waits_again_from_its_place_and_leaves_the_panel() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 5).await;
    let (early, accepted) = attach(s, &[phn(1), phn(2)]).await;
    let attached = s.registration(&sys(), &early).await.unwrap();
    assert_eq!(
        attached.proposal.map(|p| (p.id, p.status)),
        Some((accepted.id, ProposalStatus::Accepted)),
        "the last one"
    );
    let registered_at = attached.registration.registered_at;
    let later = s.register(&sys(), &c("111"), household(&[phn(3)], &[])).await.unwrap();
    assert_eq!(later.place, Some((1, 0)));
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 3);
    assert_eq!(s.community_stats(&sys(), &c("111")).await.unwrap().counts.attached_people_week, 2);

    let waiting = s.return_to_waitlist(&sys(), &later.registration.reference, "x".into()).await.unwrap_err();
    assert_eq!(waiting.code, ErrorCode::Conflict, "only an attached household");
    let back = s.return_to_waitlist(&sys(), &early, "never came to the first visit".into()).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    assert_eq!((back.registration.registered_at, back.place), (registered_at, Some((1, 0))), "its place, first");
    let decline = back.registration.declines.last().unwrap();
    assert_eq!((decline.proposal, decline.by), (accepted.id, Some(Responder::Coordinator)));
    assert_eq!(back.registration.provider, None);
    assert_eq!(back.proposal.as_ref().map(|p| (p.id, p.status)), Some((accepted.id, ProposalStatus::Returned)));
    let later_now = s.registration(&sys(), &later.registration.reference).await.unwrap();
    assert_eq!(later_now.place, Some((2, 2)), "behind the returned household again");
    let proposal = s.proposal(&sys(), &accepted.id).await.unwrap();
    assert_eq!(
        (proposal.status, proposal.decline_reason.as_deref()),
        (ProposalStatus::Returned, Some("never came to the first visit"))
    );

    // The panel let both members go: places, the panel and the week's count.
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 5);
    assert_eq!(s.community_stats(&sys(), &c("111")).await.unwrap().counts.attached_people_week, 0);
    // The members are held by the waiting registration, not freed.
    let dup = s.register(&sys(), &c("112"), household(&[phn(2)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict);
    let again = s.return_to_waitlist(&sys(), &early, "again".into()).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::Conflict, "once");

    // Durable: the same after a restart.
    s.stop().await;
    drop(w.system);
    let s = super::tests::start(&w.path, ShardConfig::default()).await;
    let reread = s.registration(&sys(), &early).await.unwrap();
    assert_eq!((reread.registration, reread.place), (back.registration, back.place));
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    assert_eq!(s.community_stats(&sys(), &c("111")).await.unwrap().counts.attached_people_week, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_household_removed_from_the_panel_is_returned_and_one_on_another_panel_is_not() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 5).await;
    // The provider removed one member already: freed, and claimed for the registration again.
    let (removed, _) = attach(s, &[phn(1), phn(2)]).await;
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap(), vec![true]);
    let back = s.return_to_waitlist(&sys(), &removed, "moved away before the visit".into()).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    let dup = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict, "member 1 is claimed by the waiting household again");

    // A member who has since registered on their own keeps that registration: nothing changes.
    let (split, _) = attach(s, &[phn(3), phn(4)]).await;
    s.remove_from_panel(&sys(), &doc, vec![phn(4)]).await.unwrap();
    s.register(&sys(), &c("112"), household(&[phn(4)], &[])).await.unwrap();
    let refused = s.return_to_waitlist(&sys(), &split, "x".into()).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::Conflict, Some("members[1].phn")));
    let still = s.registration(&sys(), &split).await.unwrap().registration;
    assert_eq!((still.status, still.provider), (RegistrationStatus::Attached, Some(doc.clone())));
    let panel = s.panel(&sys(), &doc, 0, 10).await.unwrap();
    assert_eq!(panel.items.iter().map(|e| e.phn).collect::<Vec<_>>(), vec![phn(3)], "member 3 stays on the panel");
    s.stop().await;
}

#[tokio::test]
async fn a_match_accepted_longer_ago_than_the_window_stays_on_the_panel() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P1111", "111", 5).await;
    let (reference, accepted) = attach(s, &[phn(1)]).await;
    let registration = s.registration(&sys(), &reference).await.unwrap().registration;
    s.stop().await;

    let mut state = ShardState::new(registration.shard.clone());
    state.apply([Record::Registration(registration), Record::Proposal(accepted.clone())], &[]);
    let day = 86_400_000;
    let window = ShardConfig::default().return_window_ms();
    assert_eq!(window, 60 * day);
    let accepted_at = accepted.closed_at.unwrap();
    let in_time = plan::return_attached(&state, &reference, "x".into(), accepted_at.plus_ms(59 * day), window);
    assert!(in_time.is_ok());
    let late = plan::return_attached(&state, &reference, "x".into(), accepted_at.plus_ms(61 * day), window);
    let err = late.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("last 60 days"), "{}", err.message);
    // The window is never longer than proposals stay in memory, where the accepted one is found.
    let short_memory =
        ShardConfig { proposal_memory: std::time::Duration::from_secs(86_400), ..ShardConfig::default() };
    assert_eq!(short_memory.return_window_ms(), day);
}

// ---- a return racing the steps that settle or move the same patients ----

fn shard(code: &str) -> ShardKey {
    ShardKey::parse(&format!("IHA/{code}")).unwrap()
}

fn spilling() -> ShardConfig {
    let policy = crate::matcher::Policy { spill_km: 60, ..crate::matcher::Policy::default() };
    ShardConfig { policy, ..ShardConfig::default() }
}

/// A household of 111 matched next door to P2222 in 112, and accepted.
async fn attached_next_door(s: &AttachSystem) -> (ProviderId, RegistrationRef, Proposal) {
    let doc = provider(s, "P2222", "112", 5).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let accepted = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    (doc, fam.reference, accepted)
}

/// Returns straight in the household's shard, without pushing the settlement after.
async fn return_unsettled(s: &AttachSystem, r: RegistrationRef) {
    let reason = "never seen".to_string();
    s.directory().call(&shard("111"), |reply| ShardMsg::ReturnToWaitlist(r, reason, reply)).await.unwrap();
}

#[tokio::test]
async fn an_acceptance_settled_late_does_not_put_returned_members_back() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, accepted) = attached_next_door(s).await;
    let entries = s.panel(&sys(), &doc, 0, 10).await.unwrap().items;
    let late = Settlement { proposal: accepted.clone(), entries };
    s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap();
    s.directory().call(&shard("112"), |r| ShardMsg::Settle(late, r)).await.unwrap();
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    let page = s.proposals(&sys(), &c("112"), vec![], Some(doc.clone()), ProposalsFrom::Start, 50).await.unwrap();
    let status = page.items.iter().find(|q| q.id == accepted.id).map(|q| q.status);
    assert_eq!(status, Some(ProposalStatus::Returned));
}

#[tokio::test]
async fn an_acceptance_settled_late_does_not_forget_the_return() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, accepted) = attached_next_door(s).await;
    return_unsettled(s, reference).await;
    // A push of the acceptance that was under way finishes now and forgets what it settled.
    let (id, status) = (accepted.id, ProposalStatus::Accepted);
    s.directory().call(&shard("111"), |reply| ShardMsg::Settled(id, status, reply)).await.unwrap();
    assert_eq!(s.directory().call(&shard("111"), ShardMsg::Settlements).await.unwrap().len(), 1, "the return's stays");
    s.settle_everywhere().await;
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_removal_before_the_return_settles_keeps_the_waiting_household_s_claims() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, _) = attached_next_door(s).await;
    return_unsettled(s, reference).await;
    s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap();
    s.settle_everywhere().await;
    let dup = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict, "member 1 waits in 111");
}

/// Clinic 0F111 with P1111 (places) and P3333 (none) at it, and a household
/// of one matched to P1111 and accepted.
async fn matched_at_a_clinic_of_two(s: &AttachSystem) -> (FacilityNumber, ProviderId, ProviderId, RegistrationRef) {
    let f = super::panel_tests::clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 3).await, provider(s, "P3333", "111", 0).await);
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    let (reference, _) = attach(s, &[phn(1)]).await;
    (f, a, b, reference)
}

#[tokio::test]
async fn a_transfer_step_after_a_return_leaves_the_waiting_member_off_the_new_panel() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f, a, b, reference) = matched_at_a_clinic_of_two(s).await;
    let key = TransferKey::parse("race").unwrap();
    let t = s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    // Step one reads the chunk; the return lands before the receiving shard takes it.
    let (from, chunk_key) = (a.clone(), key.clone());
    let (read, entries) = s
        .directory()
        .call(&shard("111"), |reply| ShardMsg::TransferBatch { from, key: chunk_key, limit: 10, reply })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap();
    let moving = crate::panel::Transferring {
        from: a.clone(),
        from_shard: shard("111"),
        to: read.to,
        facility: t.facility,
        entries,
    };
    s.directory().call(&shard("111"), |reply| ShardMsg::AcceptTransfer(moving, reply)).await.unwrap();
    assert!(s.panel(&sys(), &b, 0, 10).await.unwrap().items.is_empty());
    let waiting = s.registration(&sys(), &reference).await.unwrap().registration;
    assert_eq!(waiting.status, RegistrationStatus::Waiting);
}

#[tokio::test]
async fn a_return_after_a_finished_transfer_is_refused() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f, a, b, reference) = matched_at_a_clinic_of_two(s).await;
    let key = TransferKey::parse("before").unwrap();
    s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    s.run_transfer(&a, &key).await.unwrap();
    let refused = s.return_to_waitlist(&sys(), &reference, "x".into()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "member 1 is on P3333's panel now");
    assert_eq!(s.panel(&sys(), &b, 0, 10).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn a_leftover_entry_removed_after_the_household_attached_elsewhere_keeps_its_claims() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, _) = attached_next_door(s).await;
    return_unsettled(s, reference).await;
    // Matched at home and accepted, with the return's settlement still to come next door.
    let local = provider(s, "P1111", "111", 5).await;
    let made = s.run_matching(&sys(), &c("111")).await.unwrap();
    let id = made.into_iter().find(|p| p.reference == reference).unwrap().id;
    s.directory().call(&shard("111"), |r| ShardMsg::AnswerProposal(id, Answer::Accept, sys(), r)).await.unwrap();
    let attached = s.registration(&sys(), &reference).await.unwrap().registration;
    assert_eq!(attached.provider, Some(local));
    s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap();
    let dup = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict, "member 1 is on P1111's panel through the registration");
}

#[tokio::test]
async fn a_new_acceptance_settled_before_the_old_return_keeps_the_members_on_the_panel() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, first) = attached_next_door(s).await;
    return_unsettled(s, reference).await;
    let again = s.propose_match(&sys(), &reference, &doc, "changed their mind".into()).await.unwrap();
    let id = again.id;
    s.directory().call(&shard("111"), |r| ShardMsg::AnswerProposal(id, Answer::Accept, sys(), r)).await.unwrap();
    let pending = s.directory().call(&shard("111"), ShardMsg::Settlements).await.unwrap();
    let settlement = |id: ProposalId| pending.iter().find(|x| x.proposal.id == id).unwrap().clone();
    // Settled in the other order than they were made, as proposal ids may sort.
    let (accepted, returned) = (settlement(again.id), settlement(first.id));
    s.directory().call(&shard("112"), |r| ShardMsg::Settle(accepted, r)).await.unwrap();
    s.directory().call(&shard("112"), |r| ShardMsg::Settle(returned, r)).await.unwrap();
    let on_panel = s.panel(&sys(), &doc, 0, 10).await.unwrap().items;
    assert_eq!(on_panel.len(), 2, "attached through the second proposal: {on_panel:?}");
    assert!(on_panel.iter().all(|e| e.source.proposal() == Some(again.id)));
    assert_eq!(s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people_week, 2, "counted once");
}

#[tokio::test]
async fn after_moving_back_a_registration_shows_the_proposal_made_where_it_was() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P1111", "111", 5).await;
    provider(s, "P2222", "112", 5).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration.reference;
    let declined = || Answer::Decline { by: Responder::Provider, reason: "full".into() };
    let first = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &first.id, declined()).await.unwrap();
    s.move_registration(&sys(), &r, &c("112")).await.unwrap();
    let moved = s.registration(&sys(), &r).await.unwrap();
    assert_eq!(moved.proposal.map(|p| p.id), Some(first.id), "the one declined in the community left");
    let second = s.run_matching(&sys(), &c("112")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &second.id, declined()).await.unwrap();
    s.move_registration(&sys(), &r, &c("111")).await.unwrap();
    let back = s.registration(&sys(), &r).await.unwrap();
    assert_eq!(back.proposal.map(|p| p.id), Some(second.id), "the one made where it was, not the older one here");
}

/// Renews `p`'s claim as a return does before it commits, and answers the
/// claim as it was: what a removal or a transfer step racing the return (or
/// finding it cut off by a crash) reads.
async fn renew_claim_as_a_return_does(s: &AttachSystem, p: Phn, reference: &RegistrationRef) -> PhnClaim {
    let attached = s.registration(&sys(), reference).await.unwrap().registration;
    let before = s.store().phn_claim(p).await.unwrap().expect("held by the registration");
    assert_eq!(before.holder, PhnHolder::Registration(*reference));
    assert!(before.at <= attached.updated_at, "made before the attachment");
    let renewed = PhnClaim { at: attached.updated_at.plus_ms(1), ..before.clone() };
    let outcome = s.store().cas_phn_claim(p, Some(&before), Some(&renewed)).await.unwrap();
    assert_eq!(outcome, CasOutcome::Applied);
    renewed
}

#[tokio::test]
async fn a_removal_racing_a_return_leaves_the_renewed_claim_to_the_household() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (doc, reference, _) = attached_next_door(s).await;
    let renewed = renew_claim_as_a_return_does(s, phn(1), &reference).await;
    // The provider's community removes the patient before the return commits.
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap(), [true]);
    assert_eq!(s.store().phn_claim(phn(1)).await.unwrap(), Some(renewed), "not freed under the return");
    let back = s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    s.settle_everywhere().await;
    let dup = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict, "member 1 waits in 111");
}

#[tokio::test]
async fn a_return_renews_its_members_claims_so_an_earlier_read_cannot_free_them() {
    let w = world(spilling()).await;
    let s = &w.system;
    let (_, reference, _) = attached_next_door(s).await;
    let attached = s.registration(&sys(), &reference).await.unwrap().registration;
    let read_before = s.store().phn_claim(phn(2)).await.unwrap().unwrap();
    s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap();
    let now = s.store().phn_claim(phn(2)).await.unwrap().unwrap();
    assert_eq!(now.holder, PhnHolder::Registration(reference));
    assert!(now.at > attached.updated_at, "newer than the attachment");
    // A removal that read the claim before the return cannot free it now.
    let late = s.store().cas_phn_claim(phn(2), Some(&read_before), None).await.unwrap();
    assert_eq!(late, CasOutcome::Conflict(Some(now)));
}

#[tokio::test]
async fn a_transfer_step_racing_a_return_leaves_the_renewed_claim_to_the_household() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f, a, b, reference) = matched_at_a_clinic_of_two(s).await;
    let renewed = renew_claim_as_a_return_does(s, phn(1), &reference).await;
    let key = TransferKey::parse("race").unwrap();
    s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    s.run_transfer(&a, &key).await.unwrap();
    assert!(s.panel(&sys(), &b, 0, 10).await.unwrap().items.is_empty(), "the returning member stays off");
    assert_eq!(s.store().phn_claim(phn(1)).await.unwrap(), Some(renewed));
    let back = s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    assert!(s.panel(&sys(), &a, 0, 10).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_return_cut_off_before_its_commit_does_not_hold_a_removed_member_once_the_grace_has_passed() {
    // No grace: a renewal is at once a return that stopped (a crash) rather than one under way.
    let config = ShardConfig { claim_grace: std::time::Duration::ZERO, ..spilling() };
    let w = world(config).await;
    let s = &w.system;
    let (doc, reference, _) = attached_next_door(s).await;
    renew_claim_as_a_return_does(s, phn(1), &reference).await;
    // The return never committed; the provider removes the patient, whose claim is freed.
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap(), [true]);
    assert_eq!(s.store().phn_claim(phn(1)).await.unwrap(), None);
    s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.expect("free to register");
    // Asked again, the return finds the member registered elsewhere and changes nothing.
    let refused = s.return_to_waitlist(&sys(), &reference, "never seen".into()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
    let still = s.registration(&sys(), &reference).await.unwrap().registration;
    assert_eq!(still.status, RegistrationStatus::Attached);
}

//! A coordinator's own proposals, through the real actors and store: out of
//! turn but by matching's rules, refused whole, audited, and to a provider
//! next door through a reservation there.

use std::collections::BTreeSet;

use crate::access::{Operation, Principal, Role, Scope};
use crate::audit::AuditQuery;
use crate::domain::*;
use crate::error::{AttachError, ErrorCode};
use crate::shard::ProposalsFrom;
use crate::shard::{Answer, ShardConfig};
use crate::system::AttachSystem;

use super::tests::{c, household, phn, provider, sys, world};

fn coordinator(scope: &[&str]) -> Principal {
    Principal::new("coord-7", Role::Coordinator, None, Scope::parse(scope.iter().copied()).unwrap())
}

fn code<T: std::fmt::Debug>(r: Result<T, AttachError>) -> ErrorCode {
    r.expect_err("refused").code
}

async fn status(s: &AttachSystem, r: &RegistrationRef) -> RegistrationStatus {
    s.registration(&sys(), r).await.unwrap().registration.status
}

async fn free(s: &AttachSystem, doc: &ProviderId) -> (u32, u32) {
    let v = s.provider(&sys(), doc).await.unwrap();
    (v.free_places, v.open_places)
}

#[tokio::test]
async fn a_coordinator_proposes_a_household_out_of_turn_by_matchings_rules() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P3333", "111", 2).await;
    let first = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let family = s.register(&sys(), &c("111"), household(&[phn(2), phn(3)], &[])).await.unwrap().registration;
    let coord = coordinator(&["community:111"]);

    let p = s.propose_match(&coord, &family.reference, &doc, "knows the family".into()).await.unwrap();
    assert_eq!(
        (p.reference, &p.provider, p.status, p.household_size),
        (family.reference, &doc, ProposalStatus::Open, 2)
    );
    let fit = &p.explanation.provider_fit;
    assert_eq!(fit[0], "chosen by an attachment coordinator");
    assert!(fit.contains(&"place 2 in line by registration time".to_string()), "{fit:?}");
    assert_eq!(fit.last().unwrap(), "coordinator's note: knows the family");
    assert_eq!(status(s, &family.reference).await, RegistrationStatus::Proposed);
    assert_eq!(free(s, &doc).await, (0, 2));

    // No room left, and the family is already proposed: refused, nothing changes.
    let full = s.propose_match(&coord, &first.reference, &doc, "next".into()).await.unwrap_err();
    assert_eq!(full.code, ErrorCode::Conflict);
    assert!(full.message.contains("has 0 free places and the household needs 1"), "{}", full.message);
    let twice = s.propose_match(&coord, &family.reference, &doc, "again".into()).await.unwrap_err();
    assert_eq!(twice.code, ErrorCode::Conflict);
    assert!(twice.message.contains("is PROPOSED"), "{}", twice.message);
    assert_eq!(status(s, &first.reference).await, RegistrationStatus::Waiting);
    assert!(s.run_matching(&coord, &c("111")).await.unwrap().is_empty(), "the places are held");

    // It closes like any proposal: accepted onto the panel.
    s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    assert_eq!(status(s, &family.reference).await, RegistrationStatus::Attached);
    assert_eq!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.len(), 2);

    // Audited: the proposal and each refusal, by the coordinator, about the registration.
    let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
    let query = AuditQuery { operation: Some(Operation::ProposeMatch), limit: 10, ..Default::default() };
    let log = s.audit_log(&ops, query).await.unwrap();
    let outcomes: Vec<_> = log.iter().map(|a| (a.subject.as_str(), a.outcome.as_str())).collect();
    assert_eq!(outcomes, [("coord-7", "OK"), ("coord-7", "CONFLICT"), ("coord-7", "CONFLICT")]);
    assert_eq!(log[0].target.as_deref(), Some(family.reference.as_str()));
}

#[tokio::test]
async fn what_matching_would_refuse_a_coordinator_cannot_propose() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P3333", "111", 5).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let coord = coordinator(&["ha:IHA"]);
    let propose = |who: Principal, r: RegistrationRef, p: ProviderId| async move {
        s.propose_match(&who, &r, &p, "a good fit".into()).await
    };

    // Seniors only, and the household's members are adults: age groups are a hard rule by default.
    let seniors = BTreeSet::from([AgeGroup::Senior]);
    let capacity = Capacity::new(true, 5, 1005, ComplexityMix::default(), vec![], seniors).unwrap();
    s.set_capacity(&sys(), &doc, capacity).await.unwrap();
    let e = propose(coord.clone(), fam.reference, doc.clone()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("preferences rule the household out: takes age groups SENIOR"), "{}", e.message);
    // Not accepting.
    let closed = Capacity::new(false, 5, 1005, ComplexityMix::default(), vec![], BTreeSet::new()).unwrap();
    s.set_capacity(&sys(), &doc, closed).await.unwrap();
    let e = propose(coord.clone(), fam.reference, doc.clone()).await.unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::Conflict, "provider P3333 is not accepting new patients"));
    // Unknown on either side; outside the coordinator's scope; not a coordinator.
    let nobody = ProviderId::parse("P9999").unwrap();
    assert_eq!(code(propose(coord.clone(), fam.reference, nobody).await), ErrorCode::NotFound);
    let unknown = RegistrationRef::parse("000000000042").unwrap();
    assert_eq!(code(propose(coord.clone(), unknown, doc.clone()).await), ErrorCode::NotFound);
    assert_eq!(code(propose(coordinator(&["community:112"]), fam.reference, doc.clone()).await), ErrorCode::Forbidden);
    let own = Principal::new("user-P3333", Role::Provider, Some(doc.clone()), Scope::default());
    assert_eq!(code(propose(own, fam.reference, doc.clone()).await), ErrorCode::Forbidden);
    assert_eq!(status(s, &fam.reference).await, RegistrationStatus::Waiting, "nothing was written");
    assert!(s.proposals(&sys(), &c("111"), vec![], None, ProposalsFrom::Start, 10).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_provider_next_door_has_the_places_held_there_as_for_spill_over() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P4444", "112", 3).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[Need::Frailty])).await.unwrap().registration;

    // The provider's community must be in scope too: nothing is reserved then.
    let fernie = coordinator(&["community:111"]);
    assert_eq!(code(s.propose_match(&fernie, &fam.reference, &doc, "close by".into()).await), ErrorCode::Forbidden);
    assert_eq!(free(s, &doc).await, (3, 0));

    let coord = coordinator(&["community:111", "community:112"]);
    let p = s.propose_match(&coord, &fam.reference, &doc, "close by".into()).await.unwrap();
    assert!(
        p.explanation.provider_fit.contains(&"the provider is homed in community 112, about 51 km away".to_string()),
        "{:?}",
        p.explanation.provider_fit
    );
    assert_eq!(p.shard, ShardKey::parse("IHA/111").unwrap(), "the proposal lives with the household");
    assert_eq!(free(s, &doc).await, (1, 2), "the provider's community holds the places");
    let listed = s.proposals(&sys(), &c("112"), vec![], Some(doc.clone()), ProposalsFrom::Start, 10).await.unwrap();
    assert_eq!(listed.items.iter().map(|l| l.id).collect::<Vec<_>>(), [p.id], "and lists the proposal");

    // A coordinator whose scope has only the household's community may not
    // record the provider's answer, either way (a provider's decline keeps
    // matching from offering the household to them again).
    assert_eq!(code(s.answer(&fernie, &p.id, Answer::Accept).await), ErrorCode::Forbidden);
    let told = Answer::Decline { by: Responder::Provider, reason: "said by a coordinator".into() };
    assert_eq!(code(s.answer(&fernie, &p.id, told).await), ErrorCode::Forbidden, "the provider's decline");
    assert_eq!(status(s, &fam.reference).await, RegistrationStatus::Proposed);

    // Declined: the household waits again with its place, and the places are free again.
    let decline = Answer::Decline { by: Responder::Provider, reason: "panel full".into() };
    s.answer(&coord, &p.id, decline).await.unwrap();
    assert_eq!(status(s, &fam.reference).await, RegistrationStatus::Waiting);
    assert_eq!(free(s, &doc).await, (3, 0));

    // Proposed again, and accepted: the household joins the panel next door.
    let p = s.propose_match(&coord, &fam.reference, &doc, "asked again".into()).await.unwrap();
    s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    assert_eq!(status(s, &fam.reference).await, RegistrationStatus::Attached);
    assert_eq!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.len(), 2);
    assert_eq!(free(s, &doc).await, (1, 0));
    // The panel's report knows both are complex, though the registration stays in 111.
    let report = s.panel_report(&sys(), &doc).await.unwrap();
    assert_eq!((report.itemised, report.complexity_known, report.complex), (2, 2, 2));
}

#[tokio::test]
async fn proposals_are_listed_newest_first_through_changes() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P3333", "111", 9).await;
    let coord = coordinator(&["community:111"]);
    let mut made = Vec::new();
    for i in 1..=3 {
        let r = s.register(&sys(), &c("111"), household(&[phn(i)], &[])).await.unwrap().registration;
        made.push(s.propose_match(&coord, &r.reference, &doc, "next".into()).await.unwrap().id);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let list = |statuses: Vec<ProposalStatus>, offset, limit| async move {
        let from = if offset == 0 { ProposalsFrom::Start } else { ProposalsFrom::Offset(offset) };
        let page = s.proposals(&sys(), &c("111"), statuses, None, from, limit).await.unwrap();
        (page.items.iter().map(|p| p.id).collect::<Vec<_>>(), page.has_next)
    };
    assert_eq!(list(vec![], 0, 10).await, (vec![made[2], made[1], made[0]], false));
    assert_eq!(list(vec![], 1, 1).await, (vec![made[1]], true));
    // A change keeps a proposal's place in the list, once.
    let decline = Answer::Decline { by: Responder::Provider, reason: "full".into() };
    s.answer(&sys(), &made[1], decline).await.unwrap();
    assert_eq!(list(vec![], 0, 10).await, (vec![made[2], made[1], made[0]], false));
    assert_eq!(list(vec![ProposalStatus::Declined], 0, 10).await, (vec![made[1]], false));
    assert_eq!(list(vec![ProposalStatus::Open], 0, 10).await, (vec![made[2], made[0]], false));
}

#[tokio::test]
async fn the_complexity_mix_counts_what_earlier_runs_and_proposals_already_hold() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    // Ten places a month, at most 20 % to complex households: two people.
    let doc = provider(s, "P3333", "111", 10).await;
    let capacity = Capacity::new(true, 10, 1010, ComplexityMix::new(20).unwrap(), vec![], BTreeSet::new()).unwrap();
    s.set_capacity(&sys(), &doc, capacity).await.unwrap();
    let mut complex = Vec::new();
    for n in 0..6 {
        complex.push(s.register(&sys(), &c("111"), household(&[phn(n)], &[Need::ChronicComplex])).await.unwrap());
    }
    let coord = coordinator(&["community:111"]);
    let mut proposed = 0;
    for _ in 0..4 {
        proposed += s.run_matching(&coord, &c("111")).await.unwrap().len();
    }
    assert_eq!(proposed, 2, "the first run takes the share; later runs count it");
    let mut waiting = Vec::new();
    for r in &complex {
        if status(s, &r.registration.reference).await == RegistrationStatus::Waiting {
            waiting.push(r.registration.reference);
        }
    }
    assert_eq!(waiting.len(), 4);
    let refused = s.propose_match(&coord, &waiting[0], &doc, "one more".into()).await;
    assert_eq!(code(refused), ErrorCode::Conflict, "a coordinator's own proposal counts it too");
    // A household without a complex need still gets one of the eight places left.
    let plain = s.register(&sys(), &c("111"), household(&[phn(50)], &[])).await.unwrap().registration;
    assert!(s.propose_match(&coord, &plain.reference, &doc, "not complex".into()).await.is_ok());
}

#[tokio::test]
async fn a_page_after_a_proposal_neither_skips_nor_repeats_when_the_list_changes() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P3333", "111", 20).await;
    let coord = coordinator(&["community:111"]);
    let mut made = Vec::new();
    for i in 1..=6 {
        let r = s.register(&sys(), &c("111"), household(&[phn(i)], &[])).await.unwrap().registration;
        made.push(s.propose_match(&coord, &r.reference, &doc, "next".into()).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let open = vec![ProposalStatus::Open];
    let first = s.proposals(&sys(), &c("111"), open.clone(), None, ProposalsFrom::Start, 2).await.unwrap();
    let ids = |items: &[Proposal]| items.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&first.items), [made[5].id, made[4].id]);
    // The page's proposals are answered (no longer open), and a new one is made, before the next page.
    for p in &first.items {
        s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    }
    let r = s.register(&sys(), &c("111"), household(&[phn(9)], &[])).await.unwrap().registration;
    s.propose_match(&coord, &r.reference, &doc, "newest".into()).await.unwrap();
    let last = first.items.last().unwrap();
    let after = ProposalsFrom::After(last.created_at, last.id);
    let next = s.proposals(&sys(), &c("111"), open, None, after, 2).await.unwrap();
    assert_eq!(ids(&next.items), [made[3].id, made[2].id], "where the first page ended, whatever changed");
}

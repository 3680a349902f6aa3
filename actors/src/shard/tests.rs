//! Shard tests through the real actors, supervisors and embedded store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;

use crate::access::Principal;
use crate::domain::*;
use crate::error::ErrorCode;
use crate::regions::Regions;
use crate::shard::ProposalsFrom;
use crate::shard::{Answer, ClinicCommand, ProviderInput, ShardConfig, WaitlistQuery};
use crate::store::Store;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::system::AttachSystem;

/// Attach itself: these tests are about the shards, not about who may call them
/// (the access tests below and the end-to-end suite cover that).
pub(super) fn sys() -> Principal {
    Principal::internal("test")
}

pub(super) const REGIONS: &str = r#"
[[health_authority]]
code = "IHA"
name = "Interior Health"
[[health_authority.hsda]]
code = "11"
name = "East Kootenay"
[[health_authority.hsda.lha]]
code = "111"
name = "Fernie"
lat = 49.5
lon = -115.0
population = 19008
[[health_authority.hsda.lha]]
code = "112"
name = "Cranbrook"
lat = 49.5
lon = -115.7
population = 29900
"#;

pub(super) struct World {
    pub(super) system: AttachSystem,
    _dir: tempfile::TempDir,
    pub(super) path: std::path::PathBuf,
}

pub(super) async fn world(config: ShardConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attach.redb");
    let system = start(&path, config).await;
    World { system, _dir: dir, path }
}

pub(super) async fn start(path: &std::path::Path, config: ShardConfig) -> AttachSystem {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(path, EmbeddedOptions::default()).unwrap());
    let regions = Arc::new(Regions::parse(REGIONS).unwrap());
    let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
    let system = AttachSystem::new(regions, store, feed, config, "test".into());
    system.start().await.unwrap();
    system
}

pub(super) fn today() -> NaiveDate {
    Timestamp::now().to_utc().date_naive()
}

pub(super) fn phn(i: u32) -> Phn {
    (i * 7919..).find_map(Phn::with_body).unwrap()
}

pub(super) fn household(phns: &[Phn], needs: &[Need]) -> Household {
    let members = phns
        .iter()
        .map(|p| Member {
            phn: *p,
            given_name: PersonName::parse("Sam").unwrap(),
            surname: PersonName::parse("Lee").unwrap(),
            date_of_birth: DateOfBirth::parse("1980-05-05", today()).unwrap(),
            needs: needs.iter().copied().collect(),
        })
        .collect();
    Household::new(members, PostalCode::parse("V0B 1M0").unwrap(), vec![Language::parse("en").unwrap()]).unwrap()
}

pub(super) fn c(code: &str) -> CommunityCode {
    CommunityCode::parse(code).unwrap()
}

/// A physician, Jo Doc, to create or update with `id`.
pub(super) fn provider_input(id: &ProviderId) -> ProviderInput {
    ProviderInput {
        id: id.clone(),
        given_name: PersonName::parse("Jo").unwrap(),
        surname: PersonName::parse("Doc").unwrap(),
        kind: ProviderKind::Physician,
        clinics: None,
        reported_panel_size: None,
    }
}

pub(super) async fn provider(system: &AttachSystem, id: &str, community: &str, places: u32) -> ProviderId {
    let id = ProviderId::parse(id).unwrap();
    system
        .upsert_provider(
            &sys(),
            &c(community),
            ProviderInput { reported_panel_size: Some(1000), ..provider_input(&id) },
        )
        .await
        .unwrap();
    let capacity =
        Capacity::new(true, places, 1000 + places, ComplexityMix::default(), vec![], BTreeSet::new()).unwrap();
    system.set_capacity(&sys(), &id, capacity).await.unwrap();
    id
}

#[tokio::test]
async fn register_match_accept_attaches_the_whole_household() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 10).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1), phn(2), phn(3)], &[])).await.unwrap();
    assert_eq!(fam.place, Some((1, 0)));
    let solo = s.register(&sys(), &c("111"), household(&[phn(4)], &[])).await.unwrap();
    assert_eq!(solo.place, Some((2, 3)), "second in line, three people ahead");

    let proposals = s.run_matching(&sys(), &c("111")).await.unwrap();
    assert_eq!(proposals.len(), 2);
    assert!(proposals.iter().all(|p| p.provider == doc && !p.explanation.parts.is_empty()));
    let view = s.registration(&sys(), &fam.registration.reference).await.unwrap();
    assert_eq!(view.registration.status, RegistrationStatus::Proposed);
    assert_eq!(view.place, None);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 6, "open proposals hold places");

    let p = proposals.iter().find(|p| p.reference == fam.registration.reference).unwrap();
    let accepted = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    assert_eq!(accepted.status, ProposalStatus::Accepted);
    let again = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::Conflict, "accepting twice is refused");
    let panel = s.panel(&sys(), &doc, 0, 10).await.unwrap();
    assert_eq!(panel.items.len(), 3);
    assert_eq!(panel.panel_size, 1003);
    let stats = s.community_stats(&sys(), &c("111")).await.unwrap();
    assert_eq!(stats.counts.attached_people_week, 3);
    assert_eq!(stats.counts.proposed_households, 1);
    assert!(stats.estimated_wait_days.is_some());
    s.stop().await;
}

#[tokio::test]
async fn a_waiting_household_is_told_its_wait_from_the_people_ahead_and_the_measured_rate() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let _doc = provider(s, "P1111", "111", 3).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1), phn(2), phn(3)], &[])).await.unwrap();
    assert_eq!(fam.estimated_wait_days, None, "nobody attached in 28 days: no rate");
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().remove(0);
    let view = s.registration(&sys(), &fam.registration.reference).await.unwrap();
    assert_eq!(view.estimated_wait_days, None, "a proposed household is not waiting");
    s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();

    // Three attached in 28 days: 3/28 people a day.
    let pair = s.register(&sys(), &c("111"), household(&[phn(4), phn(5)], &[])).await.unwrap();
    assert_eq!(pair.estimated_wait_days, Some(19), "its own 2 people: 2 × 28 / 3 = 18.7, rounded up");
    let solo = s.register(&sys(), &c("111"), household(&[phn(6)], &[])).await.unwrap();
    assert_eq!(solo.estimated_wait_days, Some(28), "2 ahead and itself: 3 × 28 / 3");
    let read = s.registration(&sys(), &solo.registration.reference).await.unwrap();
    assert_eq!(read.estimated_wait_days, Some(28));
    let stats = s.community_stats(&sys(), &c("111")).await.unwrap();
    // Someone registering now comes after the solo household: 4 × 28 / 3, rounded up, as their own
    // registration would then say.
    assert_eq!(stats.estimated_wait_days, Some(38));
    let next = s.register(&sys(), &c("111"), household(&[phn(7)], &[])).await.unwrap();
    assert_eq!(next.estimated_wait_days, stats.estimated_wait_days);
    s.stop().await;
}

#[tokio::test]
async fn a_phn_is_refused_while_waiting_or_on_a_panel_in_any_community() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let same = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(same.code, ErrorCode::Conflict);
    let other = s.register(&sys(), &c("112"), household(&[phn(5), phn(1)], &[])).await.unwrap_err();
    assert_eq!((other.code, other.field.as_deref()), (ErrorCode::Conflict, Some("members[1].phn")));
    // The refused household's other member was released: they can register alone.
    s.register(&sys(), &c("112"), household(&[phn(5)], &[])).await.unwrap();
    let page = s.waitlist(&sys(), &c("112"), WaitlistQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.total_waiting, 1, "nothing of the refused registration was kept");
    s.stop().await;
}

#[tokio::test]
async fn a_decline_returns_the_household_with_its_place_kept() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P2222", "111", 1).await;
    let first = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let second = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_eq!(p.reference, first.registration.reference, "the longest waiting goes first");
    let reason = "not taking this household".to_string();
    s.answer(&sys(), &p.id, Answer::Decline { by: Responder::Provider, reason: reason.clone() }).await.unwrap();
    let back = s.registration(&sys(), &first.registration.reference).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    assert_eq!(back.registration.registered_at, first.registration.registered_at);
    assert_eq!(back.place, Some((1, 0)), "still first in line");
    assert_eq!(back.registration.declines[0].reason, reason);
    assert_eq!(s.registration(&sys(), &second.registration.reference).await.unwrap().place, Some((2, 1)));
    let late = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap_err();
    assert_eq!(late.code, ErrorCode::Conflict);
    // Matching again does not offer it to the provider who declined: the place goes to the next in line.
    let next: Vec<_> = s.run_matching(&sys(), &c("111")).await.unwrap().into_iter().map(|p| p.reference).collect();
    assert_eq!(next, vec![second.registration.reference]);
    s.stop().await;
}

#[tokio::test]
async fn a_registration_shows_its_last_proposal_whatever_became_of_it() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P2222", "111", 1).await;
    provider(s, "P3333", "111", 1).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration.reference;
    let first = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let decline = Answer::Decline { by: Responder::Provider, reason: "full".into() };
    s.answer(&sys(), &first.id, decline).await.unwrap();
    let last = |v: crate::shard::RegistrationView| v.proposal.map(|p| (p.id, p.status));
    assert_eq!(last(s.registration(&sys(), &r).await.unwrap()), Some((first.id, ProposalStatus::Declined)));
    // Proposed to the other provider, then withdrawn: the cancelled one is the last, not the declined one.
    let second = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_ne!(second.provider, first.provider);
    let withdrawn = s.withdraw(&sys(), &r, "found a doctor".into()).await.unwrap();
    assert_eq!(last(withdrawn), Some((second.id, ProposalStatus::Cancelled)));
    // Accepted: the accepted one.
    let r = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap().registration.reference;
    let third = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &third.id, Answer::Accept).await.unwrap();
    assert_eq!(last(s.registration(&sys(), &r).await.unwrap()), Some((third.id, ProposalStatus::Accepted)));
    s.stop().await;
}

#[tokio::test]
async fn a_provider_who_said_no_is_passed_over_for_the_policys_period() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P2222", "111", 1).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let decline = Answer::Decline { by: Responder::Patient, reason: "too far".into() };
    s.answer(&sys(), &p.id, decline).await.unwrap();
    let declined = s.registration(&sys(), &r.reference).await.unwrap().registration;
    s.stop().await;

    let mut state = super::state::ShardState::new(declined.shard.clone());
    state.apply([crate::store::Record::Registration(declined.clone())], &[]);
    let passed = |days: u32, later_days: i64| {
        let policy = crate::matcher::Policy { pass_over_days: days, ..crate::matcher::Policy::default() };
        let now = declined.declines[0].at.plus_ms(later_days * DAY_MS);
        super::plan::waiting_candidates(&state, &policy, now).remove(0).passed
    };
    assert_eq!(passed(0, 3650), vec![doc.clone()], "0: for good");
    assert_eq!(passed(30, 29), vec![doc.clone()], "within the period");
    assert!(passed(30, 31).is_empty(), "offered again once the period is over");
}

#[tokio::test]
async fn unanswered_proposals_expire_and_return_households() {
    let config = ShardConfig {
        proposal_ttl: Duration::from_millis(200),
        expiry_interval: Duration::from_millis(50),
        ..ShardConfig::default()
    };
    let w = world(config).await;
    let s = &w.system;
    provider(s, "P3333", "111", 5).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = s.registration(&sys(), &r.registration.reference).await.unwrap();
        if view.registration.status == RegistrationStatus::Waiting {
            assert_eq!(view.registration.declines.len(), 1);
            assert_eq!(view.registration.declines[0].by, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the proposal never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.proposal(&sys(), &p.id).await.unwrap().status, ProposalStatus::Expired);
    let late = s.answer(&sys(), &p.id, Answer::Accept).await.unwrap_err();
    assert_eq!(late.code, ErrorCode::Conflict);
    // Nobody said no: the same provider may be offered it again.
    let again = s.run_matching(&sys(), &c("111")).await.unwrap();
    assert_eq!(again.iter().map(|q| (q.reference, &q.provider)).collect::<Vec<_>>(), [(p.reference, &p.provider)]);
    s.stop().await;
}

#[tokio::test]
async fn withdrawal_cancels_the_proposal_and_frees_the_phn() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P4444", "111", 5).await;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let w1 = s.withdraw(&sys(), &r.registration.reference, "moved away".into()).await.unwrap();
    assert_eq!(w1.registration.status, RegistrationStatus::Withdrawn);
    assert_eq!(s.proposal(&sys(), &p.id).await.unwrap().status, ProposalStatus::Cancelled);
    let twice = s.withdraw(&sys(), &r.registration.reference, "again".into()).await.unwrap_err();
    assert_eq!(twice.code, ErrorCode::Conflict);
    s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.expect("a withdrawn PHN may register again");
    s.stop().await;
}

#[tokio::test]
async fn everything_acknowledged_survives_a_restart() {
    let w = world(ShardConfig::default()).await;
    let doc = provider(&w.system, "P5555", "112", 3).await;
    let clinic = ClinicCommand {
        facility: FacilityNumber::parse("00A12").unwrap(),
        details: ClinicInput::parse("Fernie Family Practice", "1 Main St", None, None).unwrap(),
        medical_director: Some(doc.clone()),
    };
    w.system.upsert_clinic(&sys(), &c("112"), clinic).await.unwrap();
    let facility = FacilityNumber::parse("00A12").unwrap();
    let moa = StaffInput::parse("moa-1", "Jo Tremblay", "MOA").unwrap();
    let added = w.system.add_clinic_staff(&sys(), &facility, moa).await.unwrap();
    let r = w.system.register(&sys(), &c("112"), household(&[phn(1), phn(2)], &[Need::Pregnancy])).await.unwrap();
    let p = w.system.run_matching(&sys(), &c("112")).await.unwrap().pop().unwrap();
    w.system.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    let waiting = w.system.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.unwrap();
    w.system.stop().await;
    let path = w.path.clone();
    drop(w.system);

    let again = start(&path, ShardConfig::default()).await;
    let view = again.registration(&sys(), &r.registration.reference).await.unwrap();
    assert_eq!(view.registration.status, RegistrationStatus::Attached);
    assert_eq!(again.panel(&sys(), &doc, 0, 10).await.unwrap().items.len(), 2);
    assert_eq!(again.registration(&sys(), &waiting.registration.reference).await.unwrap().place, Some((1, 0)));
    assert_eq!(
        again.clinic(&sys(), &FacilityNumber::parse("00A12").unwrap()).await.unwrap().name,
        "Fernie Family Practice"
    );
    assert_eq!(again.clinic_staff(&sys(), &facility).await.unwrap(), [added], "the staff list survives");
    let dup = again.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict, "claims survive too");
    again.stop().await;
}

#[tokio::test]
async fn a_stopped_shard_is_restarted_by_its_supervisor_and_reloads() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    for actor in s.directory().actors() {
        actor.stop(Some("test kills the shard".into()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(view) = s.registration(&sys(), &r.registration.reference).await {
            assert_eq!(view.place, Some((1, 0)));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the shard never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.directory().running(), (2, 2));
    s.stop().await;
}

#[tokio::test]
async fn a_full_mailbox_answers_overloaded_and_changes_nothing() {
    let config = ShardConfig { mailbox_capacity: 1, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    // join_all polls every call once before any completes: the first holds the
    // only permit across its await, so the others find the mailbox full.
    let fernie = c("111");
    let who = sys();
    let calls = (0..10).map(|i| s.register(&who, &fernie, household(&[phn(100 + i)], &[])));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let overloaded = results.iter().filter(|r| matches!(r, Err(e) if e.code == ErrorCode::Overloaded)).count();
    assert_eq!((ok, overloaded), (1, 9));
    let page = s.waitlist(&sys(), &c("111"), WaitlistQuery { limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(page.total_waiting, 1);
    s.stop().await;
}

#[tokio::test]
async fn waitlist_pages_filter_and_unknown_things() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    for i in 0..5 {
        let needs = if i % 2 == 0 { vec![Need::Frailty] } else { vec![] };
        s.register(&sys(), &c("111"), household(&[phn(10 + i)], &needs)).await.unwrap();
    }
    let first = s.waitlist(&sys(), &c("111"), WaitlistQuery { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!((first.items.len(), first.has_next, first.total_waiting), (2, true, 5));
    let last = &first.items[1];
    let rest = s
        .waitlist(
            &sys(),
            &c("111"),
            WaitlistQuery { after: Some((last.registered_at, last.reference)), limit: 10, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.has_next), (3, false));
    let frail = s
        .waitlist(&sys(), &c("111"), WaitlistQuery { limit: 10, needs: vec![Need::Frailty], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(frail.items.len(), 3);
    assert_eq!(s.waitlist(&sys(), &c("999"), WaitlistQuery::default()).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.registration(&sys(), &RegistrationRef::generate()).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.answer(&sys(), &ProposalId::generate(), Answer::Accept).await.unwrap_err().code, ErrorCode::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn registrations_in_one_millisecond_keep_their_order() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let fernie = c("111");
    let mut refs = Vec::new();
    for i in 0..20 {
        refs.push(s.register(&sys(), &fernie, household(&[phn(300 + i)], &[])).await.unwrap().registration.reference);
    }
    let page = s.waitlist(&sys(), &fernie, WaitlistQuery { limit: 50, ..Default::default() }).await.unwrap();
    let order: Vec<_> = page.items.iter().map(|r| r.reference).collect();
    assert_eq!(order, refs, "the line is the registration order");
    assert!(page.items.windows(2).all(|w| w[0].registered_at < w[1].registered_at));
    s.stop().await;
}

/// A shard leased to another node does not start here; it starts once that
/// lease runs out, fences the old holder, and keeps its own lease renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_held_elsewhere_is_taken_over_when_its_lease_runs_out() {
    use crate::store::{Batch, StoreError};
    const LEASE: Duration = Duration::from_millis(600);
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions { lease: LEASE, ..EmbeddedOptions::default() };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("attach.redb"), options).unwrap());
    let key = ShardKey::parse("IHA/111").unwrap();
    let theirs = store.acquire_shard(&key, "other-node").await.unwrap();

    let regions = Arc::new(Regions::parse(REGIONS).unwrap());
    let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
    let system = AttachSystem::new(regions, store.clone(), feed, ShardConfig::default(), "this-node".into());
    system.start().await.unwrap();
    let (who, fernie) = (sys(), c("111"));
    let stats = || system.community_stats(&who, &fernie);
    let refused = stats().await.expect_err("the shard is another node's");
    assert_eq!(refused.code, ErrorCode::ShardUnavailable);
    system.community_stats(&sys(), &c("112")).await.expect("the neighbouring shard started");

    // The other node stops renewing: within a few leases the shard is ours.
    let deadline = tokio::time::Instant::now() + 20 * LEASE;
    while stats().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the shard was never taken over");
        tokio::time::sleep(LEASE / 10).await;
    }
    let stale = store.commit(&key, theirs, &Batch::default()).await;
    assert!(matches!(stale, Err(StoreError::StaleEpoch { .. })), "the old holder still commits: {stale:?}");

    // Renewed every third of the lease, our hold outlasts several leases.
    tokio::time::sleep(LEASE * 5 / 2).await;
    let taken = store.acquire_shard(&key, "other-node").await;
    assert!(matches!(taken, Err(StoreError::LeaseHeld { ref owner, .. }) if owner == "this-node"), "{taken:?}");
    system.stop().await;
}

#[tokio::test]
async fn every_place_in_line_counts_the_households_and_people_ahead_from_either_end() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    // Nine households of 1 to 3 people; every place is checked, so both the walk
    // towards the front and the one towards the back (with the tally) are used.
    let mut refs = Vec::new();
    let mut n = 0;
    for size in [3usize, 1, 2, 1, 1, 3, 2, 1, 2] {
        let phns: Vec<Phn> = (0..size)
            .map(|_| {
                n += 1;
                phn(n)
            })
            .collect();
        refs.push((s.register(&sys(), &c("111"), household(&phns, &[])).await.unwrap().registration.reference, size));
    }
    let check = |line: Vec<(RegistrationRef, usize)>| async move {
        let mut people = 0u64;
        for (place, (r, size)) in line.iter().enumerate() {
            let view = s.registration(&sys(), r).await.unwrap();
            assert_eq!(view.place, Some((place as u64 + 1, people)), "place {}", place + 1);
            people += *size as u64;
        }
    };
    check(refs.clone()).await;
    // Withdrawals from the middle and from each end.
    for i in [4, 0, 6] {
        s.withdraw(&sys(), &refs.remove(i).0, "moved away".into()).await.unwrap();
    }
    check(refs).await;
}

#[tokio::test]
async fn a_proposal_closed_long_ago_leaves_memory_and_is_still_read_from_the_store() {
    // Closed proposals leave memory at once; the expiry tick does it often.
    let config = ShardConfig {
        proposal_memory: Duration::ZERO,
        expiry_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let w = world(config.clone()).await;
    let s = &w.system;
    provider(s, "P1111", "111", 5).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    async fn listed(s: &AttachSystem) -> Vec<ProposalId> {
        let page = s.proposals(&sys(), &c("111"), vec![], None, ProposalsFrom::Start, 10).await.unwrap();
        page.items.into_iter().map(|p| p.id).collect()
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(listed(s).await, [p.id], "an open proposal stays, however old");
    let held = |g: Vec<(ShardKey, crate::shard::ShardGauges)>| {
        g.into_iter().find(|(k, _)| k.community.as_str() == "111").map(|(_, g)| g.proposals_in_memory)
    };
    assert_eq!(held(s.gauges().await), Some(1), "the gauge operations watch");

    let decline = Answer::Decline { by: Responder::Provider, reason: "panel full".into() };
    s.answer(&sys(), &p.id, decline).await.unwrap();
    let mut waited = 0;
    while !listed(s).await.is_empty() {
        assert!(waited < 100, "the closed proposal stayed in memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(held(s.gauges().await), Some(0));
    // Still read by id, and still the registration's last proposal, from the store.
    async fn check(s: &AttachSystem, id: ProposalId, reference: RegistrationRef) {
        assert_eq!(s.proposal(&sys(), &id).await.unwrap().status, ProposalStatus::Declined);
        let view = s.registration(&sys(), &reference).await.unwrap();
        assert_eq!(view.proposal.map(|q| (q.id, q.status)), Some((id, ProposalStatus::Declined)));
        let again = s.answer(&sys(), &id, Answer::Accept).await.unwrap_err();
        assert_eq!(again.code, ErrorCode::Conflict, "answered already, as before it left memory");
        assert!(again.message.contains("DECLINED"), "{}", again.message);
        let unknown = s.proposal(&sys(), &ProposalId::generate()).await.unwrap_err();
        assert_eq!(unknown.code, ErrorCode::NotFound);
    }
    check(s, p.id, fam.reference).await;
    // A restart does not load it into memory again.
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let s = start(&path, config).await;
    assert!(listed(&s).await.is_empty());
    check(&s, p.id, fam.reference).await;
    // The household waits with its place, and is not offered to the provider who declined it again.
    assert_eq!(s.registration(&sys(), &fam.reference).await.unwrap().place, Some((1, 0)));
    assert!(s.run_matching(&sys(), &c("111")).await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_provider_or_clinic_created_at_once_in_several_communities_is_created_once() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (me, here) = (sys(), [c("111"), c("112")]);
    for round in 0..5 {
        let id = ProviderId::parse(&format!("P9{round:04}")).unwrap();
        let input = provider_input(&id);
        let made =
            futures::future::join_all(here.iter().map(|community| s.upsert_provider(&me, community, input.clone())))
                .await;
        let ok: Vec<_> = made.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "round {round}: {made:?}");
        assert!(made.iter().filter_map(|r| r.as_ref().err()).all(|e| e.code == ErrorCode::Conflict));
        let home = &ok[0].provider.shard.community;
        for community in ["111", "112"] {
            let listed = s.providers(&sys(), &c(community)).await.unwrap();
            assert_eq!(listed.iter().filter(|p| p.provider.id == id).count(), usize::from(community == home.as_str()));
        }

        let facility = FacilityNumber::parse(&format!("0F9{round:02}")).unwrap();
        let details = ClinicInput::parse("Family Practice", "1 Main St", None, None).unwrap();
        let made = futures::future::join_all(here.iter().map(|community| {
            let cmd = ClinicCommand { facility: facility.clone(), details: details.clone(), medical_director: None };
            s.upsert_clinic(&me, community, cmd)
        }))
        .await;
        assert_eq!(made.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {made:?}");
        let everywhere = futures::future::join_all(here.iter().map(|k| s.clinics(&me, k))).await;
        let copies = everywhere.into_iter().flat_map(Result::unwrap).filter(|k| k.facility == facility).count();
        assert_eq!(copies, 1, "round {round}");
    }
    w.system.stop().await;
}

#[tokio::test]
async fn a_catch_up_point_past_the_end_of_the_log_is_refused_not_followed() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let all = s.events_after(&sys(), &c("111"), 0, 10).await.unwrap();
    let last = all.last().unwrap().seq;
    assert!(s.events_after(&sys(), &c("111"), last, 10).await.unwrap().is_empty(), "caught up");
    // From another copy of the log (a restored backup): following it would skip what comes next.
    let ahead = s.events_after(&sys(), &c("111"), last + 500, 10).await.unwrap_err();
    assert_eq!((ahead.code, ahead.field.as_deref()), (ErrorCode::InvalidInput, Some("afterSeq")));
    assert!(ahead.message.contains(&format!("the last is {last}")), "{}", ahead.message);
    // An empty community's log starts at 0.
    assert!(s.events_after(&sys(), &c("112"), 0, 10).await.unwrap().is_empty());
    assert_eq!(s.events_after(&sys(), &c("112"), 1, 10).await.unwrap_err().code, ErrorCode::InvalidInput);
    s.stop().await;
}

#[tokio::test]
async fn a_patients_phn_is_not_taken_as_a_new_providers_id() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let input = |id: &str| provider_input(&ProviderId::parse(id).unwrap());
    let phn = phn(7).expose();
    let refused = s.upsert_provider(&sys(), &c("111"), input(&phn)).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("id")));
    assert_eq!(s.provider(&sys(), &ProviderId::parse(&phn).unwrap()).await.unwrap_err().code, ErrorCode::NotFound);
    s.upsert_provider(&sys(), &c("111"), input("1234567890")).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_phn_id_whose_locator_a_failed_creation_claimed_is_still_refused() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let phn = phn(7).expose();
    let id = ProviderId::parse(&phn).unwrap();
    // A creation of this id that claimed the locator and then failed (or ran on a build
    // before the check): the id is claimed for community 111, no provider record exists.
    let shard = ShardKey::parse("IHA/111").unwrap();
    s.store().claim_locator(&crate::store::Locator::Provider(id.clone()), &shard).await.unwrap();
    let input = provider_input(&id);
    let result = s.upsert_provider(&sys(), &c("111"), input).await;
    assert!(result.is_err(), "a provider whose id is a valid PHN was created: {:?}", result.map(|v| v.provider.id));
    s.stop().await;
}

#[tokio::test]
async fn a_clinic_update_keeps_the_hours_and_phone_it_leaves_out() {
    let w = world(ShardConfig::default()).await;
    let doc = provider(&w.system, "P5555", "112", 3).await;
    let facility = FacilityNumber::parse("00A12").unwrap();
    let upsert = |hours: Option<&str>, phone: Option<&str>| ClinicCommand {
        facility: facility.clone(),
        details: ClinicInput::parse("Fernie Family Practice", "1 Main St", hours, phone).unwrap(),
        medical_director: Some(doc.clone()),
    };
    w.system.upsert_clinic(&sys(), &c("112"), upsert(Some("Mon-Fri 9-5"), Some("250-555-0100"))).await.unwrap();
    let kept = w.system.upsert_clinic(&sys(), &c("112"), upsert(None, None)).await.unwrap();
    assert_eq!((kept.hours.as_str(), kept.phone.as_str()), ("Mon-Fri 9-5", "250-555-0100"));
    let cleared = w.system.upsert_clinic(&sys(), &c("112"), upsert(None, Some(""))).await.unwrap();
    assert_eq!((cleared.hours.as_str(), cleared.phone.as_str()), ("Mon-Fri 9-5", ""));
    w.system.stop().await;
}

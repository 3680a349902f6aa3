//! Two nodes sharing one store, each running half the shards: the steps a
//! request needs on the other node's shard are run there (`system/remote.rs`).
//! The link between the two is a direct call of the other system's
//! `serve_remote` with the encoded bytes, so everything but the HTTP hop (which
//! the end-to-end cluster tests cover) is the code a cluster runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::access::{Operation, Principal, Role, Scope};
use crate::audit::AuditQuery;
use crate::domain::*;
use crate::error::{AttachError, ErrorCode};
use crate::panel::RowStatus;
use crate::regions::Regions;
use crate::shard::{Answer, Placement, ShardConfig, ShardMsg, WaitlistQuery};
use crate::store::Store;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::system::{AttachSystem, Peers};

use super::panel_tests::{clinic, csv_of, statuses, submit};
use super::tests::{REGIONS, c, household, phn, provider, sys};

/// The other node, reached by handing it the bytes a gateway would carry.
#[derive(Default)]
struct Link(OnceLock<Arc<AttachSystem>>);

impl Peers for Link {
    fn send<'a>(
        &'a self,
        _: &'a AttachSystem,
        _: &'a ShardKey,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, AttachError>> {
        Box::pin(async move {
            let other = self.0.get().ok_or_else(|| AttachError::new(ErrorCode::ShardUnavailable, "no peer"))?;
            Ok(other.serve_remote(&body).await)
        })
    }
}

fn shard(code: &str) -> ShardKey {
    ShardKey::parse(&format!("IHA/{code}")).unwrap()
}

/// Two node names the placement splits 111 and 112 between: (111's, 112's).
fn names() -> (String, String) {
    (0..100)
        .map(|i| (format!("node-{i}"), format!("node-{}", i + 1)))
        .find_map(|(a, b)| {
            let p = Placement::new(&a, [b.clone()]);
            let (x, y) = (p.preferred(&shard("111")).to_string(), p.preferred(&shard("112")).to_string());
            (x != y).then_some((x, y))
        })
        .unwrap()
}

async fn running_moves(node: &AttachSystem) -> usize {
    node.directory().call(&shard("111"), ShardMsg::RunningMoves).await.unwrap().len()
}

fn link(a: &Arc<AttachSystem>, b: &Arc<AttachSystem>) {
    let (to_b, to_a) = (Arc::new(Link::default()), Arc::new(Link::default()));
    let _ = to_b.0.set(b.clone());
    let _ = to_a.0.set(a.clone());
    a.set_peers(to_b);
    b.set_peers(to_a);
}

struct Cluster {
    a: Arc<AttachSystem>,
    b: Arc<AttachSystem>,
    _dir: tempfile::TempDir,
}

/// Node A runs 111, node B runs 112; linked to each other unless `linked` is false.
async fn cluster(linked: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap());
    let regions = Arc::new(Regions::parse(REGIONS).unwrap());
    let (name_a, name_b) = names();
    let node = |me: &str, other: &str| {
        let config = ShardConfig {
            placement: crate::shard::PlacementCell::new(Some(Placement::new(me, [other.to_string()]))),
            // 111 and 112 are about 51 km apart: matching spills over between them.
            policy: crate::matcher::Policy { spill_km: 60, ..Default::default() },
            // Step two may record for 0.5 s after planning.
            reservation_check: Duration::from_millis(1500),
            ..ShardConfig::default()
        };
        let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
        Arc::new(AttachSystem::new(regions.clone(), store.clone(), feed, config, me.to_string()))
    };
    let (a, b) = (node(&name_a, &name_b), node(&name_b, &name_a));
    if linked {
        link(&a, &b);
    }
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert_eq!((a.readiness(), b.readiness()), ((1, 1), (1, 1)), "each node runs its own shard");
    Cluster { a, b, _dir: dir }
}

#[tokio::test]
async fn a_communitys_last_event_is_known_on_the_node_that_does_not_run_it() {
    let Cluster { a, b, _dir } = cluster(true).await;
    for n in 1..=3 {
        b.register(&sys(), &c("112"), household(&[phn(n)], &[])).await.unwrap();
    }
    // A subscriber on A to 112's feed starts from here, so a lost first event is told.
    assert_eq!(a.last_seq(&shard("112")).await, Some(3));
    assert_eq!(b.last_seq(&shard("112")).await, Some(3));
    let unlinked = cluster(false).await;
    assert_eq!(unlinked.a.last_seq(&shard("112")).await, None, "nobody to ask");
}

#[tokio::test]
async fn a_move_between_two_nodes_communities_finishes_on_the_node_joined() {
    let Cluster { a, b, _dir } = cluster(true).await;
    let mover = a.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let waiting = b.register(&sys(), &c("112"), household(&[phn(3)], &[])).await.unwrap().registration;

    let moved = a.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap();
    assert_eq!((moved.registration.status, &moved.registration.shard), (RegistrationStatus::Waiting, &shard("112")));
    assert_eq!(moved.registration.registered_at, mover.registered_at, "the place in line is kept");
    assert_eq!(moved.place, Some((1, 0)), "registered before the household already waiting there");
    let line = b.waitlist(&sys(), &c("112"), WaitlistQuery { limit: 10, ..Default::default() }).await.unwrap();
    let refs: Vec<_> = line.items.iter().map(|r| r.reference).collect();
    assert_eq!(refs, [mover.reference, waiting.reference]);
    assert_eq!(running_moves(&a).await, 0, "step three closed the record of the move");

    // Its statistics, gathered from both nodes by either.
    for node in [&a, &b] {
        let stats = node.health_authority_stats(&sys(), &HaCode::parse("IHA").unwrap()).await.unwrap();
        assert_eq!((stats.counts.waiting_households, stats.counts.waiting_people), (2, 3));
    }

    // A household a patient registered signed in stays theirs on the node joined.
    let patient = |sub: &str| Principal::new(sub, Role::Patient, None, Scope::default());
    let owned = a.register(&patient("pat-a"), &c("111"), household(&[phn(4)], &[])).await.unwrap().registration;
    a.move_registration(&patient("pat-a"), &owned.reference, &c("112")).await.unwrap();
    let stranger = b.registration(&patient("pat-b"), &owned.reference).await.unwrap_err();
    assert_eq!(stranger.code, ErrorCode::Forbidden, "{}", stranger.message);
    b.registration(&patient("pat-a"), &owned.reference).await.unwrap();
}

#[tokio::test]
async fn a_spill_over_proposal_reserves_accepts_and_settles_on_the_providers_node() {
    let unlinked = cluster(false).await;
    let doc = provider(&unlinked.b, "P2222", "112", 3).await;
    unlinked.a.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let made = unlinked.a.run_matching(&sys(), &c("111")).await.unwrap();
    assert!(made.is_empty(), "a neighbour out of reach is passed over, not an error");
    assert_eq!(unlinked.b.provider(&sys(), &doc).await.unwrap().open_places, 0);
    drop(unlinked);

    let Cluster { a, b, _dir } = cluster(true).await;
    let doc = provider(&b, "P2222", "112", 3).await;
    let fam = a.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let p = a.run_matching(&sys(), &c("111")).await.unwrap().pop().expect("proposed to the provider on node B");
    assert_eq!(p.provider, doc);
    assert_eq!(b.provider(&sys(), &doc).await.unwrap().open_places, 2, "node B holds the places");

    a.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    let panel = b.panel(&sys(), &doc, 0, 10).await.unwrap();
    assert_eq!(panel.items.len(), 2, "the household joined the panel on node B");
    assert!(panel.items.iter().all(|e| e.source.reference() == Some(fam.reference)));
    let view = b.provider(&sys(), &doc).await.unwrap();
    assert_eq!((view.open_places, view.free_places), (0, 1));
    let left = a.directory().call(&shard("111"), ShardMsg::Settlements).await.unwrap();
    assert!(left.is_empty(), "settled across the link and forgotten");
}

#[tokio::test]
async fn the_providers_node_asks_the_households_node_before_freeing_an_old_reservation() {
    let Cluster { a, b, _dir } = cluster(true).await;
    let doc = provider(&b, "P2222", "112", 4).await;
    a.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let recorded = a.run_matching(&sys(), &c("111")).await.unwrap().pop().expect("proposed to the provider on node B");
    // Step one on node B, then a stop before step two on node A.
    a.register(&sys(), &c("111"), household(&[phn(2), phn(3)], &[])).await.unwrap();
    let providers = b.directory().call(&shard("112"), ShardMsg::SparePlaces).await.unwrap();
    let neighbour = shard("112");
    let plan = |reply| ShardMsg::PlanSpill { neighbour, km: 51, providers, reply };
    let orphan = a.directory().call(&shard("111"), plan).await.unwrap();
    assert_eq!(b.directory().call(&shard("112"), |r| ShardMsg::Reserve(orphan.clone(), r)).await.unwrap().len(), 1);
    assert_eq!(b.provider(&sys(), &doc).await.unwrap().open_places, 3);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(a.reclaim_orphans_everywhere().await, 0, "node A holds no reservations");
    assert_eq!(b.reclaim_orphans_everywhere().await, 1, "node A answered that it never recorded the orphan");
    let view = b.provider(&sys(), &doc).await.unwrap();
    assert_eq!((view.open_places, view.free_places), (1, 3), "the recorded proposal keeps its place");
    assert_eq!(a.proposal(&sys(), &recorded.id).await.unwrap().status, ProposalStatus::Open);
}

#[tokio::test]
async fn without_a_link_the_move_waits_at_step_one_and_the_periodic_pass_finishes_it_once_linked() {
    let unlinked = cluster(false).await;
    let mover = unlinked.a.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let e = unlinked.a.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ShardUnavailable, "{e}");
    assert_eq!(running_moves(&unlinked.a).await, 1, "step one is durable, and waits");
    // The caller's record committed with step one (the move is decided), and the failure is recorded too.
    let query = AuditQuery { operation: Some(Operation::MoveRegistration), limit: 10, ..AuditQuery::default() };
    let records = unlinked.a.audit_log(&sys(), query).await.unwrap();
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["OK", "SHARD_UNAVAILABLE"], "{records:?}");

    let e = unlinked.a.health_authority_stats(&sys(), &HaCode::parse("IHA").unwrap()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ShardUnavailable);

    // Once linked, the periodic pass finishes it (one that is younger than the
    // pass's age is left to the request running it).
    link(&unlinked.a, &unlinked.b);
    assert_eq!(unlinked.a.resume_stalled(Duration::from_secs(60)).await, (0, 0), "too young to be stalled");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(unlinked.a.resume_stalled(Duration::ZERO).await, (1, 0));
    assert_eq!(running_moves(&unlinked.a).await, 0);
    let there = unlinked.b.registration(&sys(), &mover.reference).await.unwrap();
    assert_eq!((there.registration.status, there.place), (RegistrationStatus::Waiting, Some((1, 0))));
    // Asking again answers it where it is.
    let moved = unlinked.a.move_registration(&sys(), &mover.reference, &c("112")).await;
    assert_eq!(moved.unwrap_err().code, ErrorCode::ShardUnavailable, "112 runs on B: a gateway sends it there");
    let moved = unlinked.b.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap();
    assert_eq!(moved.registration.shard, shard("112"));
}

#[tokio::test]
async fn a_panel_lets_a_patient_waiting_on_the_other_node_go_and_each_step_is_audited_where_it_lands() {
    let Cluster { a, b, _dir } = cluster(true).await;
    let f = clinic(&a, "0F111", "111").await;
    let doc = provider(&a, "P1111", "111", 0).await;
    a.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let family = b.register(&sys(), &c("112"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;

    let report = submit(&a, &doc, &f, &csv_of(&[phn(1)], "0F111")).await;
    assert_eq!(statuses(&report), [RowStatus::AttachedFromWaitlist]);
    let left = b.registration(&sys(), &family.reference).await.unwrap().registration;
    assert_eq!(left.household.members.len(), 1, "only the member on the panel left the waitlist");

    let query = AuditQuery { operation: Some(Operation::SubmitPanel), limit: 10, ..AuditQuery::default() };
    let records = a.audit_log(&sys(), query).await.unwrap();
    let mut shards: Vec<_> = records.iter().filter_map(|r| r.shard.clone()).collect();
    shards.sort();
    // The chunk's first step (keeping the waiting patient it found), the
    // registration letting the member go (committed on the other node) and
    // the chunk's second step taking them.
    assert_eq!(shards, [shard("111"), shard("111"), shard("112")], "{records:?}");
}

#[tokio::test]
async fn a_panel_moves_to_a_provider_homed_on_the_other_node_and_the_clinic_counts_both() {
    let Cluster { a, b, _dir } = cluster(true).await;
    let f = clinic(&a, "0F111", "111").await;
    let from = provider(&a, "P1111", "111", 0).await;
    let to = provider(&b, "P2222", "112", 0).await;
    a.set_provider_clinic(&sys(), &f, &from, true).await.unwrap();
    // Asked of B, which runs the provider's community (a gateway sends it there):
    // the clinic's medical director is checked against A's registry entry.
    b.set_provider_clinic(&sys(), &f, &to, true).await.unwrap();
    let phns: Vec<Phn> = (1..=3).map(phn).collect();
    assert_eq!(submit(&a, &from, &f, &csv_of(&phns, "0F111")).await.count(RowStatus::Accepted), 3);

    let key = TransferKey::parse("retiring").unwrap();
    let t = a.begin_transfer(&sys(), key.clone(), &from, &to, &f).await.unwrap();
    assert_eq!((t.total, t.status), (3, TransferStatus::Running));
    let done = a.run_transfer(&from, &key).await.unwrap();
    assert_eq!((done.moved, done.skipped, done.status), (3, 0, TransferStatus::Completed));
    assert_eq!(b.panel(&sys(), &to, 0, 10).await.unwrap().items.len(), 3, "on the panel of B's provider");

    // The clinic's report, asked of either node, counts both providers' panels.
    for node in [&a, &b] {
        let reports = node.clinic_panel_reports(&sys(), &f).await.unwrap();
        let by: Vec<_> = reports.iter().map(|r| (r.provider.clone(), r.itemised)).collect();
        assert_eq!(by, [(Some(from.clone()), 0), (Some(to.clone()), 3)]);
    }
}

#[tokio::test]
async fn who_holds_a_place_in_line_moves_with_the_household_to_the_other_node() {
    let Cluster { a, b, _dir } = cluster(true).await;
    let mover = a.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    // Someone who did not register is added, then the household moves to B's community.
    a.update_household(&sys(), &mover.reference, household(&[phn(1), phn(9)], &[])).await.unwrap();
    let moved = a.move_registration(&sys(), &mover.reference, &c("112")).await.unwrap();
    assert_eq!(moved.registration.shard, shard("112"));
    // On B, dropping the one who registered would hand the place over: refused as on A.
    let mut stranger = household(&[phn(9)], &[]);
    stranger.members[0].given_name = PersonName::parse("Xan").unwrap();
    let refused = b.update_household(&sys(), &mover.reference, stranger).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("members")));
    let kept = b.registration(&sys(), &mover.reference).await.unwrap().registration;
    assert_eq!(kept.household.members.len(), 2, "nothing changed");
}

/// The lease of [`held_elsewhere`]'s store: short, so that tries come fast.
const SHORT_LEASE: Duration = Duration::from_millis(400);

/// A started node over `store` (opened with [`SHORT_LEASE`]), whose own shard
/// 111 the other node of the placement holds, at the epoch answered.
async fn held_elsewhere(store: Arc<dyn Store>, lessor: &dyn Store) -> (Arc<AttachSystem>, String, crate::store::Epoch) {
    let (mine, other) = names();
    let epoch = lessor.acquire_shard(&shard("111"), &other).await.unwrap();
    let config = ShardConfig {
        placement: crate::shard::PlacementCell::new(Some(Placement::new(&mine, [other.clone()]))),
        ..ShardConfig::default()
    };
    let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
    let regions = Arc::new(Regions::parse(REGIONS).unwrap());
    let node = Arc::new(AttachSystem::new(regions, store, feed, config, mine));
    node.start().await.unwrap();
    (node, other, epoch)
}

fn short_lease_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let options = EmbeddedOptions { lease: SHORT_LEASE, ..EmbeddedOptions::default() };
    Arc::new(EmbeddedStore::open(&dir.join("attach.redb"), options).unwrap())
}

/// A node's own shard that another node holds for many of the node's tries (a
/// stand-in that has not handed it back yet) is still taken once its lease is
/// free: waiting for a lease is not a crash loop, and never stops the tries.
#[tokio::test]
async fn a_shard_held_elsewhere_for_many_tries_is_taken_once_its_lease_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let lease = SHORT_LEASE;
    let store = short_lease_store(dir.path());
    let (node, other, epoch) = held_elsewhere(store.clone(), store.as_ref()).await;
    // The other node keeps it for about 25 of this node's tries (one a quarter lease).
    for _ in 0..25 {
        tokio::time::sleep(lease / 3).await;
        store.renew_lease(&shard("111"), &other, epoch).await.unwrap();
    }
    assert_eq!(node.readiness(), (0, 1), "held elsewhere");
    store.release_shard(&shard("111"), &other, epoch).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.readiness() != (1, 1) {
        assert!(std::time::Instant::now() < deadline, "the node never took its own shard once it was free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.shard_owner(&shard("111")).await.unwrap(), Some(node.owner().to_string()));
    node.stop().await;
}

/// However often a node is told to start its own shards while another node
/// holds one (every hand-back ask, every new node list), it keeps one try at
/// that shard on its way, not one more per telling.
#[tokio::test]
async fn asking_again_and_again_for_a_shard_held_elsewhere_keeps_one_try_on_its_way() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let embedded = short_lease_store(dir.path());
    let store = Arc::new(super::audit_tests::LateAuditFails {
        inner: embedded.clone(),
        broken: false.into(),
        acquires: 0.into(),
    });
    let (node, other, epoch) = held_elsewhere(store.clone(), embedded.as_ref()).await;
    for _ in 0..20 {
        node.start_own_shards();
        tokio::time::sleep(Duration::from_millis(50)).await;
        embedded.renew_lease(&shard("111"), &other, epoch).await.unwrap();
    }
    // Over the next second: about ten tries (one a quarter lease) at 111, and
    // 112 (the other node's) tried once a lease; each telling adding a chain
    // of tries would make it hundreds.
    let before = store.acquires.load(Ordering::SeqCst);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        embedded.renew_lease(&shard("111"), &other, epoch).await.unwrap();
    }
    let tries = store.acquires.load(Ordering::SeqCst) - before;
    assert!((5..=20).contains(&tries), "{tries} tries in a second");
    node.stop().await;
}

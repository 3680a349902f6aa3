//! Spill-over matching over HTTP: with `matching.spill_km` set, households
//! left waiting in Fernie (111) are proposed to providers with free places in
//! Cranbrook (112, about 51 km away) and then Kimberley (113, about 68 km),
//! nearest first; an acceptance lands on the panel in the provider's community
//! and survives SIGKILL.

use serde_json::{Value, json};

use attach_actors::access::Role;

use crate::helpers::{Spawn, TestApp, phn};

pub(crate) const ACCEPT: &str =
    "mutation($id: ID!, $f: String) { acceptProposal(id: $id, facilityNumber: $f) { status } }";
const PROPOSALS: &str = r#"query($c: String!, $p: ID) { proposals(communityCode: $c, providerId: $p) {
  nodes { id reference community status } } }"#;

fn spilling() -> Spawn {
    Spawn { env: vec![("ATTACH_MATCHING__SPILL_KM".into(), "75".into())], ..Spawn::default() }
}

/// Provider `id` homed in `community`, at `clinics` there (directed by MD001), with `places` free.
pub(crate) async fn provider(app: &TestApp, id: &str, community: &str, clinics: &[&str], places: u32) {
    let md = app.medical_director("MD001");
    for f in clinics {
        md.ok(
            r#"mutation($f: String!, $c: String!) { upsertClinic(input: { facilityNumber: $f, community: $c,
                 name: "Family Practice", address: "1 Main St", medicalDirectorId: "MD001" }) { facilityNumber } }"#,
            json!({ "f": f, "c": community }),
        )
        .await;
    }
    // The clinics' director lists the provider there.
    md.ok(
        r#"mutation($id: ID!, $c: String!, $clinics: [String!]!) { upsertProvider(input: { id: $id, givenName: "Maya",
             surname: "Okafor", kind: PHYSICIAN, community: $c, clinics: $clinics }) { id } }"#,
        json!({ "id": id, "c": community, "clinics": clinics }),
    )
    .await;
    app.provider(id)
        .ok(
            r#"mutation($id: ID!, $n: Int!) { setProviderCapacity(providerId: $id, input: { acceptingNewPatients: true,
             monthlyRate: $n, desiredPanelSize: $n }) { id } }"#,
            json!({ "id": id, "n": places }),
        )
        .await;
}

pub(crate) async fn register(app: &TestApp, phns: &[String]) -> String {
    let members: Vec<Value> = phns
        .iter()
        .map(|p| json!({ "phn": p, "givenName": "Sam", "surname": "Lee", "dateOfBirth": "1980-01-01" }))
        .collect();
    let r = app
        .ok(
            r#"mutation($input: RegisterHouseholdInput!) { registerHousehold(input: $input) { reference } }"#,
            json!({ "input": { "community": "111", "postalCode": "V0B 1M0", "members": members } }),
        )
        .await;
    r["registerHousehold"]["reference"].as_str().unwrap().to_string()
}

pub(crate) async fn panel(app: &TestApp, id: &str) -> Vec<Value> {
    let p = app
        .provider(id)
        .ok(
            r#"query($id: ID!) { panel(providerId: $id, first: 10) { nodes { source facilityNumber reference } } }"#,
            json!({ "id": id }),
        )
        .await;
    p["panel"]["nodes"].as_array().unwrap().clone()
}

#[tokio::test]
async fn households_with_no_place_at_home_are_proposed_next_door_nearest_first_and_attached_there() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), spilling()).await;
    provider(&app, "P20001", "112", &["0F221", "0F222"], 2).await;
    provider(&app, "P30001", "113", &["0F331"], 1).await;
    let family = register(&app, &[phn(1), phn(2)]).await;
    let solo = register(&app, &[phn(3)]).await;

    let run = app
        .coordinator()
        .ok(
            r#"mutation { runMatching(communityCode: "111") { proposals { id reference providerId community
                 explanation { providerFit } } } }"#,
            json!({}),
        )
        .await;
    let made = run["runMatching"]["proposals"].as_array().unwrap().clone();
    assert_eq!(made.len(), 2, "{run:#}");
    let to = |reference: &str| made.iter().find(|p| p["reference"] == reference).unwrap().clone();
    let (near, far) = (to(&family), to(&solo));
    assert_eq!((&near["providerId"], &near["community"]), (&json!("P20001"), &json!("111")));
    assert_eq!(far["providerId"], "P30001", "the nearer community's places went first");
    let fit = near["explanation"]["providerFit"].to_string();
    assert!(fit.contains("spill-over") && fit.contains("community 112"), "{fit}");

    // The provider sees it among their community's proposals, and answers it.
    let doc = app.provider("P20001");
    let seen = doc.ok(PROPOSALS, json!({ "c": "112", "p": "P20001" })).await;
    assert_eq!(seen["proposals"]["nodes"][0]["id"], near["id"], "{seen:#}");
    assert_eq!(seen["proposals"]["nodes"][0]["status"], "OPEN");
    // Not the household's reference whole (with it anyone signed in could change the
    // registration), for the provider nor for a coordinator of the provider's community only.
    let masked = crate::helpers::masked(&family);
    assert_eq!(seen["proposals"]["nodes"][0]["reference"], masked.as_str());
    let next_door = app.with_token(app.token(Role::Coordinator, &["community:112"], None));
    let listed = next_door.ok(PROPOSALS, json!({ "c": "112", "p": "P20001" })).await;
    assert_eq!(listed["proposals"]["nodes"][0]["reference"], masked.as_str(), "{listed:#}");
    let home = app.with_token(app.token(Role::Coordinator, &["community:111"], None));
    let listed = home.ok(PROPOSALS, json!({ "c": "111", "p": null })).await;
    let mine = listed["proposals"]["nodes"].as_array().unwrap().iter().find(|p| p["id"] == near["id"]).unwrap();
    assert_eq!(mine["reference"], family.as_str(), "the household's own community has it whole");
    let at = |f: &str| json!({ "id": near["id"], "f": f });
    assert_eq!(doc.error_code(ACCEPT, at("0F331")).await, "CONFLICT", "not one of this provider's clinics");
    assert!(panel(&app, "P20001").await.is_empty(), "a refused acceptance changes nothing");
    // A coordinator of the household's community alone may not put it on a panel next door.
    let fernie_only = app.with_token(app.token(Role::Coordinator, &["community:111"], None));
    assert_eq!(fernie_only.error_code(ACCEPT, at("0F222")).await, "FORBIDDEN");
    assert!(panel(&app, "P20001").await.is_empty());
    assert_eq!(doc.ok(ACCEPT, at("0F222")).await["acceptProposal"]["status"], "ACCEPTED");
    let decline = r#"mutation($id: ID!) { declineProposal(id: $id, reason: "not taking this postcode") { status } }"#;
    app.provider("P30001").ok(decline, json!({ "id": far["id"] })).await;

    attached_next_door(&app, &family, &solo).await;
    app.kill();
    let app = TestApp::spawn(dir.path(), spilling()).await;
    attached_next_door(&app, &family, &solo).await;
}

/// What the test above leaves: the family on P20001's panel at 0F222, the solo household back in line.
async fn attached_next_door(app: &TestApp, family: &str, solo: &str) {
    let entries = panel(app, "P20001").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e["source"] == "MATCHED" && e["facilityNumber"] == "0F222"));
    assert!(entries.iter().all(|e| e["reference"] == crate::helpers::masked(family).as_str()), "{entries:?}");
    let seen = app.provider("P20001").ok(PROPOSALS, json!({ "c": "112", "p": "P20001" })).await;
    assert_eq!(seen["proposals"]["nodes"][0]["status"], "ACCEPTED");
    let status = r#"query($r: ID!) { registration(reference: $r) { status providerId } }"#;
    let fam = app.coordinator().ok(status, json!({ "r": family })).await;
    assert_eq!(
        (&fam["registration"]["status"], &fam["registration"]["providerId"]),
        (&json!("ATTACHED"), &json!("P20001"))
    );
    let back = app.coordinator().ok(status, json!({ "r": solo })).await;
    assert_eq!(back["registration"]["status"], "WAITING", "declined: back in line");
    let places = r#"{ provider(id: "P30001") { freePlaces openPlaces } }"#;
    let p = app.provider("P30001").ok(places, json!({})).await;
    assert_eq!((&p["provider"]["freePlaces"], &p["provider"]["openPlaces"]), (&json!(1), &json!(0)));

    // The provider's community's feed: the reservation, the attachment, the close. The
    // household's reference is whole only to a coordinator who holds its community too,
    // and the attachment, told where the household is not, carries none.
    const EVENTS: &str = r#"{ events(communityCode: "112") { nodes { kind reference providerId people otherCommunity proposalStatus } } }"#;
    for (coordinator, reference) in [
        (app.coordinator(), family.to_string()),
        (app.with_token(app.token(Role::Coordinator, &["community:112"], None)), crate::helpers::masked(family)),
    ] {
        let events = coordinator.ok(EVENTS, json!({})).await;
        let spill: Vec<Value> = events["events"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["reference"] == reference.as_str() || (e["kind"] == "ATTACHED" && e["providerId"] == "P20001")
            })
            .map(|e| json!([e["kind"], e["people"], e["otherCommunity"], e["proposalStatus"], e["reference"]]))
            .collect();
        let r = json!(reference);
        assert_eq!(
            spill,
            [
                json!(["RESERVED", 2, "111", null, r]),
                json!(["ATTACHED", 2, null, null, null]),
                json!(["RESERVATION_CLOSED", null, "111", "ACCEPTED", r]),
            ],
            "{events:#}"
        );
    }
    // The household's own community tells the acceptance, not the attachment: ATTACHED is told once.
    let coordinator = app.coordinator();
    let home = coordinator.ok(r#"{ events(communityCode: "111") { nodes { kind reference } } }"#, json!({})).await;
    let kinds: Vec<&Value> = home["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reference"] == family)
        .map(|e| &e["kind"])
        .collect();
    assert_eq!(kinds, [&json!("REGISTERED"), &json!("PROPOSED"), &json!("ACCEPTED")], "{home:#}");
}

#[tokio::test]
async fn an_unanswered_spill_over_proposal_expires_and_the_periodic_pass_frees_the_places_next_door() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = spilling();
    opts.env.extend([
        ("ATTACH_SHARD__PROPOSAL_TTL_SECS".to_string(), "1".to_string()),
        ("ATTACH_SHARD__EXPIRY_INTERVAL_MS".to_string(), "100".to_string()),
        ("ATTACH_SHARD__LEASE_SECS".to_string(), "3".to_string()),
    ]);
    let app = TestApp::spawn(dir.path(), opts).await;
    provider(&app, "P20001", "112", &["0F221"], 3).await;
    let family = register(&app, &[phn(1), phn(2)]).await;
    let run =
        app.coordinator().ok(r#"mutation { runMatching(communityCode: "111") { proposals { id } } }"#, json!({})).await;
    assert_eq!(run["runMatching"]["proposals"].as_array().unwrap().len(), 1, "{run:#}");
    let places = r#"{ provider(id: "P20001") { freePlaces openPlaces } }"#;
    let held = app.provider("P20001").ok(places, json!({})).await;
    assert_eq!((&held["provider"]["freePlaces"], &held["provider"]["openPlaces"]), (&json!(1), &json!(2)));

    // Nobody answers: the household's community expires it, and the pass that
    // runs every lease settles it with the provider's community.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let p = app.provider("P20001").ok(places, json!({})).await;
        if p["provider"]["openPlaces"] == 0 {
            assert_eq!(p["provider"]["freePlaces"], 3);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the places were never freed: {p:#}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let status = r#"query($r: ID!) { registration(reference: $r) { status declines { reason } } }"#;
    let back = app.coordinator().ok(status, json!({ "r": family })).await;
    assert_eq!(back["registration"]["status"], "WAITING", "{back:#}");
    let seen = app.provider("P20001").ok(PROPOSALS, json!({ "c": "112", "p": "P20001" })).await;
    assert_eq!(seen["proposals"]["nodes"][0]["status"], "EXPIRED", "{seen:#}");
    let metrics = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("attach_shard_settlements_pending{shard=\"IHA/111\"} 0"), "{metrics}");
    assert!(metrics.contains("attach_shard_proposals_in_memory{shard=\"IHA/111\"} "), "{metrics}");
}

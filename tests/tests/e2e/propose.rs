//! A coordinator's own proposals over HTTP: out of turn but by matching's
//! rules, refused whole with a stable code, to a provider next door through a
//! reservation there, and kept across SIGKILL.

use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, phn};
use crate::spill::{ACCEPT, panel, provider, register};

const PROPOSE: &str = r#"mutation($r: ID!, $p: ID!, $note: String!) {
  proposeMatch(reference: $r, providerId: $p, note: $note) {
    id reference providerId community status explanation { providerFit } } }"#;

fn ask(reference: &str, provider: &str, note: &str) -> Value {
    json!({ "r": reference, "p": provider, "note": note })
}

#[tokio::test]
async fn a_coordinator_proposes_a_household_of_their_choosing_by_matchings_rules() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    provider(&app, "P10001", "111", &["0F111"], 1).await;
    provider(&app, "P20001", "112", &["0F221"], 3).await;
    let family = register(&app, &[phn(1), phn(2)]).await;
    let solo = register(&app, &[phn(3)]).await;
    let coordinator = app.coordinator();

    // Refused whole, each with its code: nothing changes.
    assert_eq!(coordinator.error_code(PROPOSE, ask(&solo, "P10001", "  ")).await, "INVALID_INPUT");
    assert_eq!(
        coordinator.error_code(PROPOSE, ask(&family, "P10001", "fits")).await,
        "CONFLICT",
        "two people, one place"
    );
    assert_eq!(app.provider("P10001").error_code(PROPOSE, ask(&solo, "P10001", "me")).await, "FORBIDDEN");
    assert_eq!(coordinator.error_code(PROPOSE, ask(&solo, "P99999", "who")).await, "NOT_FOUND");

    // Second in line, proposed first: the coordinator's call, on the record.
    let made = coordinator.ok(PROPOSE, ask(&solo, "P10001", "lives next to the clinic")).await;
    let p = &made["proposeMatch"];
    assert_eq!((&p["status"], &p["community"], &p["providerId"]), (&json!("OPEN"), &json!("111"), &json!("P10001")));
    let fit = p["explanation"]["providerFit"].to_string();
    assert!(fit.contains("chosen by an attachment coordinator") && fit.contains("place 2 in line"), "{fit}");
    assert!(fit.contains("coordinator's note: lives next to the clinic"), "{fit}");

    // Next door: the provider's community holds the places and lists the proposal.
    let next_door = coordinator.ok(PROPOSE, ask(&family, "P20001", "closest opening")).await;
    let far = &next_door["proposeMatch"];
    assert!(far["explanation"]["providerFit"].to_string().contains("homed in community 112, about 51 km away"));
    let places = r#"{ provider(id: "P20001") { freePlaces openPlaces } }"#;
    let held = app.provider("P20001").ok(places, json!({})).await;
    assert_eq!((&held["provider"]["freePlaces"], &held["provider"]["openPlaces"]), (&json!(1), &json!(2)));
    let accepted = app.provider("P20001").ok(ACCEPT, json!({ "id": far["id"], "f": "0F221" })).await;
    assert_eq!(accepted["acceptProposal"]["status"], "ACCEPTED");

    let app = {
        app.kill();
        TestApp::spawn(dir.path(), Spawn::default()).await
    };
    let status = r#"query($r: ID!) { registration(reference: $r) { status providerId } }"#;
    let fam = app.coordinator().ok(status, json!({ "r": family })).await;
    assert_eq!(fam["registration"]["status"], "ATTACHED", "{fam:#}");
    assert_eq!(panel(&app, "P20001").await.len(), 2);
    let one = app.coordinator().ok(status, json!({ "r": solo })).await;
    assert_eq!(one["registration"]["status"], "PROPOSED", "{one:#}");
    let proposals = r#"{ proposals(communityCode: "111", status: [OPEN]) { nodes { id providerId } } }"#;
    let open = app.coordinator().ok(proposals, json!({})).await;
    assert_eq!(open["proposals"]["nodes"], json!([{ "id": p["id"], "providerId": "P10001" }]), "{open:#}");
}

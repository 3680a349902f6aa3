//! A store that can no longer write (a full disk): the embedded database
//! refuses every write after one I/O error, so the server stops, and a restart
//! finds every acknowledged change.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Spawn, TestApp, phn};

const REGISTER: &str = "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }";
const REGISTRATION: &str = "query($r: ID!) { registration(reference: $r) { status householdSize } }";

/// A household of eight with long names, so the store's file grows quickly.
fn household(n: u32) -> serde_json::Value {
    // 60 letters of three bytes each, the longest name there is.
    let name = "王".repeat(60);
    let members: Vec<_> = (0..8)
        .map(
            |k| json!({ "phn": phn(n * 8 + k + 1), "givenName": &name, "surname": &name, "dateOfBirth": "1984-03-09" }),
        )
        .collect();
    json!({ "i": { "community": "111", "postalCode": "V0B 1M0", "languages": ["en"], "members": members } })
}

#[tokio::test]
async fn a_store_that_cannot_write_stops_the_server_and_a_restart_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // The audit journal takes 2 MiB at start; the store's file fills the rest.
    let limited = Spawn { max_file_bytes: Some(2_300_000), ..Spawn::default() };
    let mut app = TestApp::spawn(dir.path(), limited).await;
    let mut acknowledged = Vec::new();
    let mut refused = None;
    // At most 1,500 households: `phn` makes PHNs up to about 12,000.
    for n in 0..1_500 {
        let Ok(response) = app
            .http()
            .post(format!("{}/graphql", app.url))
            .json(&json!({
                "query": REGISTER, "variables": household(n)
            }))
            .send()
            .await
        else {
            break;
        };
        let body: serde_json::Value = response.json().await.expect("a JSON answer");
        match body["data"]["registerHousehold"]["reference"].as_str() {
            Some(reference) => acknowledged.push(reference.to_string()),
            None => {
                refused = Some(body["errors"][0]["extensions"]["code"].clone());
                break;
            }
        }
    }
    assert!(acknowledged.len() > 20, "the file filled too soon: {}", acknowledged.len());
    assert_eq!(refused, Some(json!("SHARD_UNAVAILABLE")), "the write that failed was refused, not half-done");
    let status = app.exited(Duration::from_secs(30)).await;
    assert!(!status.success(), "stopped with an error: {status}");
    app.log_shows("the store cannot write any more").await;
    drop(app);

    // Room again: everything acknowledged is there, and writes go on.
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    for reference in &acknowledged {
        let found = app.ok(REGISTRATION, json!({ "r": reference })).await;
        assert_eq!(found["registration"], json!({ "status": "WAITING", "householdSize": 8 }), "{reference}");
    }
    app.ok(REGISTER, household(1_500)).await;
}

//! Clinics over HTTP: the staff list a medical director keeps (with every kind
//! of bad request refused with its code and nothing changed, what each caller
//! sees, the feed and the audit log, and survival across SIGKILL), and matched
//! households landing on a panel at the provider's clinic.

use attach_actors::access::Role;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, phn};

const ADD: &str = r#"mutation($f: String!, $s: ID!, $n: String!, $t: String!) {
  addClinicStaff(facilityNumber: $f, subject: $s, name: $n, title: $t) { facilityNumber subject name title addedAt }
}"#;
const REMOVE: &str =
    r#"mutation($f: String!, $s: ID!) { removeClinicStaff(facilityNumber: $f, subject: $s) { subject title } }"#;
const STAFF: &str = r#"{ clinic(facilityNumber: "0F111") { name staff { subject name title } } }"#;

fn add(subject: &str, title: &str) -> Value {
    json!({ "f": "0F111", "s": subject, "n": "Jo Tremblay", "t": title })
}

fn subjects(data: &Value) -> Vec<String> {
    let staff = data["clinic"]["staff"].as_array().unwrap_or_else(|| panic!("no staff list: {data:#}"));
    staff.iter().map(|m| m["subject"].as_str().unwrap().to_string()).collect()
}

/// Clinic `facility` in community 111, directed by MD001.
async fn clinic(app: &TestApp, facility: &str, name: &str, address: &str) {
    app.medical_director("MD001")
        .ok(
            r#"mutation($f: String!, $n: String!, $a: String!) { upsertClinic(input: { facilityNumber: $f,
                 community: "111", name: $n, address: $a, medicalDirectorId: "MD001" }) { facilityNumber } }"#,
            json!({ "f": facility, "n": name, "a": address }),
        )
        .await;
}

/// Provider P10001 in community 111, practising at `clinics`.
async fn provider_at(app: &TestApp, clinics: &[&str]) {
    app.medical_director("MD001")
        .ok(
            r#"mutation($c: [String!]!) { upsertProvider(input: { id: "P10001", givenName: "Maya", surname: "Okafor",
                 kind: PHYSICIAN, community: "111", clinics: $c }) { id } }"#,
            json!({ "c": clinics }),
        )
        .await;
}

async fn registry(app: &TestApp) {
    clinic(app, "0F111", "Fernie Family Practice", "491 2nd Ave, Fernie").await;
    provider_at(app, &["0F111"]).await;
}

#[tokio::test]
async fn a_clinics_staff_list_is_kept_by_its_medical_director_and_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    registry(&app).await;
    let md = app.medical_director("MD001");

    let moa = md.ok(ADD, add("moa-1", "MOA")).await["addClinicStaff"].clone();
    assert_eq!(
        (&moa["facilityNumber"], &moa["subject"], &moa["name"], &moa["title"]),
        (&json!("0F111"), &json!("moa-1"), &json!("Jo Tremblay"), &json!("MOA"))
    );
    assert!(moa["addedAt"].as_str().is_some_and(|t| t.starts_with("20")), "{moa}");
    md.ok(ADD, add("rn-1", "Nurse")).await;

    // Bad requests: each refused with its code, and nothing changes.
    let other_md = app.medical_director("MD002");
    let provider = app.provider("P10001");
    let coordinator = app.coordinator();
    let refusals = [
        (md.error_code(ADD, add("moa-1", "Nurse")).await, "CONFLICT", "a member twice"),
        (other_md.error_code(ADD, add("moa-2", "MOA")).await, "FORBIDDEN", "another clinic's director"),
        (provider.error_code(ADD, add("moa-2", "MOA")).await, "FORBIDDEN", "a provider at the clinic"),
        (coordinator.error_code(ADD, add("moa-2", "MOA")).await, "FORBIDDEN", "a coordinator"),
        (app.error_code(ADD, add("moa-2", "MOA")).await, "UNAUTHENTICATED", "no token"),
        (
            md.error_code(ADD, json!({ "f": "0F999", "s": "moa-2", "n": "Jo", "t": "MOA" })).await,
            "NOT_FOUND",
            "an unknown clinic",
        ),
        (md.error_code(ADD, add("not\ta user id", "MOA")).await, "INVALID_INPUT", "a bad subject"),
        (md.error_code(ADD, add("moa-2", "")).await, "INVALID_INPUT", "no title"),
        (md.error_code(REMOVE, json!({ "f": "0F111", "s": "moa-9" })).await, "NOT_FOUND", "not on the list"),
        (other_md.error_code(REMOVE, json!({ "f": "0F111", "s": "moa-1" })).await, "FORBIDDEN", "another director"),
    ];
    for (got, want, what) in refusals {
        assert_eq!(got, want, "{what}");
    }
    let duplicate = md.graphql(ADD, add("moa-1", "Nurse")).await;
    assert_eq!(duplicate["errors"][0]["extensions"]["field"], "subject");
    assert_eq!(subjects(&md.ok(STAFF, json!({})).await), ["moa-1", "rn-1"], "refusals changed nothing");

    // Who sees what: the director and support all of it, a member their own entry.
    let support = app.with_token(app.token(Role::Support, &["province"], None));
    assert_eq!(subjects(&support.ok(STAFF, json!({})).await), ["moa-1", "rn-1"]);
    let moa_1 = app.with_token(app.token_for("moa-1", Role::Delegate, &[], None));
    assert_eq!(subjects(&moa_1.ok(STAFF, json!({})).await), ["moa-1"]);
    let stranger = app.with_token(app.token_for("moa-9", Role::Delegate, &[], None)).graphql(STAFF, json!({})).await;
    assert_eq!(stranger["data"]["clinic"]["name"], "Fernie Family Practice", "the clinic itself is still readable");
    // Null in its place, as GraphQL gives a failed nullable field (not left out).
    assert_eq!(stranger["data"]["clinic"].get("staff"), Some(&Value::Null), "{stranger:#}");
    assert_eq!(stranger["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(stranger["errors"][0]["path"], json!(["clinic", "staff"]));
    // Asked for alone, the clinic is there with its staff null (async-graphql made the clinic null).
    let alone = app
        .with_token(app.token_for("moa-9", Role::Delegate, &[], None))
        .graphql(r#"{ clinic(facilityNumber: "0F111") { staff { subject } } }"#, json!({}))
        .await;
    assert_eq!(alone["data"], json!({ "clinic": { "staff": null } }), "{alone:#}");
    assert_eq!(provider.graphql(STAFF, json!({})).await["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // Being on the staff list grants nothing: without an endorsement moa-1 cannot touch P10001's panel.
    let panel = r#"{ panel(providerId: "P10001", first: 5) { panelSize } }"#;
    assert_eq!(moa_1.error_code(panel, json!({})).await, "FORBIDDEN");
    let file = format!("{},Lee,Sam,1950-05-05,98990,0F111\n", phn(900));
    let submit = r#"mutation($file: Upload!) { submitPanel(providerId: "P10001", facilityNumber: "0F111", file: $file) { accepted } }"#;
    let token = app.token_for("moa-1", Role::Delegate, &[], None);
    let r: Value = app
        .upload_raw(Some(&token), submit, json!({ "file": null }), "file", file.as_bytes())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r:#}");

    let removed = md.ok(REMOVE, json!({ "f": "0F111", "s": "rn-1" })).await;
    assert_eq!(removed["removeClinicStaff"], json!({ "subject": "rn-1", "title": "Nurse" }));

    // The coordinator's feed shows each change as the clinic's; the audit log has every attempt.
    let events = coordinator
        .ok(r#"{ events(communityCode: "111", first: 100) { nodes { kind facilityNumber } } }"#, json!({}))
        .await;
    let clinic_updates = events["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "CLINIC_UPDATED" && e["facilityNumber"] == "0F111")
        .count();
    assert_eq!(clinic_updates, 1 + 3, "the clinic's registration, two additions and a removal");
    let ops = app.with_token(app.token(Role::Operations, &["province"], None));
    let audit = ops
        .ok(
            r#"{ auditLog(first: 100, filter: { operation: "manageClinicStaff" }) { nodes { subject target outcome } } }"#,
            json!({}),
        )
        .await;
    let records = audit["auditLog"]["nodes"].as_array().unwrap();
    // 3 changes and 9 refusals (the 11 above and the repeated duplicate, less the
    // 2 bad inputs that never reached the core); reading the list is not audited.
    assert_eq!(records.len(), 3 + 9, "{audit:#}");
    assert!(records.iter().any(|r| r["target"] == "0F111/rn-1" && r["outcome"] == "OK"), "{audit:#}");

    // SIGKILL: every acknowledged change is still there.
    app.kill();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let staff = app.medical_director("MD001").ok(STAFF, json!({})).await;
    assert_eq!(subjects(&staff), ["moa-1"]);
    assert_eq!(staff["clinic"]["staff"][0]["title"], "MOA");
}

/// P10001 open for patients, one household of two registered in 111 and
/// matched to them: the proposal's id.
async fn matched_household(app: &TestApp) -> Value {
    app.provider("P10001")
        .ok(
            r#"mutation { setProviderCapacity(providerId: "P10001", input: { acceptingNewPatients: true,
                 monthlyRate: 10, desiredPanelSize: 10 }) { id } }"#,
            json!({}),
        )
        .await;
    let members: Vec<Value> = [phn(1), phn(2)]
        .into_iter()
        .map(|p| json!({ "phn": p, "givenName": "Sam", "surname": "Lee", "dateOfBirth": "1980-01-01" }))
        .collect();
    app.ok(
        r#"mutation($input: RegisterHouseholdInput!) { registerHousehold(input: $input) { reference } }"#,
        json!({ "input": { "community": "111", "postalCode": "V0B 1M0", "members": members } }),
    )
    .await;
    let run = app
        .coordinator()
        .ok(r#"mutation { runMatching(communityCode: "111") { proposals { id providerId } } }"#, json!({}))
        .await;
    run["runMatching"]["proposals"][0]["id"].clone()
}

/// The clinic each entry of P10001's panel names, after checking they all came off the waitlist.
async fn matched_clinics(app: &TestApp) -> Vec<Value> {
    let panel = app
        .provider("P10001")
        .ok(r#"{ panel(providerId: "P10001", first: 10) { nodes { source facilityNumber reference } } }"#, json!({}))
        .await;
    let nodes = panel["panel"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["source"] == "MATCHED" && n["reference"].is_string()), "{panel:#}");
    nodes.iter().map(|n| n["facilityNumber"].clone()).collect()
}

#[tokio::test]
async fn a_matched_household_joins_the_panel_at_the_providers_only_clinic() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    registry(&app).await;
    let proposal = matched_household(&app).await;
    let provider = app.provider("P10001");
    provider.ok("mutation($id: ID!) { acceptProposal(id: $id) { status } }", json!({ "id": proposal })).await;
    assert_eq!(matched_clinics(&app).await, [json!("0F111"), json!("0F111")]);
}

#[tokio::test]
async fn a_provider_at_two_clinics_names_the_one_the_household_joins() {
    const ACCEPT: &str = "mutation($id: ID!, $f: String) { acceptProposal(id: $id, facilityNumber: $f) { status } }";
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    registry(&app).await;
    clinic(&app, "0F222", "Elk Valley Clinic", "1 Main St, Fernie").await;
    provider_at(&app, &["0F111", "0F222"]).await;
    let proposal = matched_household(&app).await;
    let provider = app.provider("P10001");
    let attempt = |f: &str| json!({ "id": proposal, "f": f });
    assert_eq!(provider.error_code(ACCEPT, attempt("not a clinic")).await, "INVALID_INPUT");
    assert_eq!(provider.error_code(ACCEPT, attempt("0F333")).await, "CONFLICT", "not listed there");
    assert!(matched_clinics(&app).await.is_empty(), "a refused acceptance changes nothing");
    let accepted = provider.ok(ACCEPT, attempt("0F222")).await;
    assert_eq!(accepted["acceptProposal"]["status"], "ACCEPTED");
    assert_eq!(matched_clinics(&app).await, [json!("0F222"), json!("0F222")]);
}

//! Every role against every operation, through the real HTTP endpoint with real
//! signed tokens; the delegation workflow; and the audit log's records.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, attach_bin, phn};

/// Who calls: a role, a subject, a scope and a provider id, as a token carries them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    /// No token.
    Public,
    Patient,
    /// Provider P1: has capacity, proposals and a panel.
    Provider,
    /// Provider P2: none of P1's.
    OtherProvider,
    /// auth0|moa-1: P1's completed endorsement.
    Delegate,
    /// moa-9: no endorsement.
    StrangerDelegate,
    /// Provider P3, medical director of clinic 0F111.
    MedicalDirector,
    /// Scoped to Interior Health (community 111 is there).
    Coordinator,
    /// Scoped to Fraser Health.
    OutOfScopeCoordinator,
    Support,
    Operations,
}

const EVERYONE: [Who; 11] = [
    Who::Public,
    Who::Patient,
    Who::Provider,
    Who::OtherProvider,
    Who::Delegate,
    Who::StrangerDelegate,
    Who::MedicalDirector,
    Who::Coordinator,
    Who::OutOfScopeCoordinator,
    Who::Support,
    Who::Operations,
];

/// Mints a development token with `attach token`, as an operator would.
fn mint(data_dir: &std::path::Path, role: &str, subject: &str, scopes: &[&str], provider: Option<&str>) -> String {
    let mut cmd = Command::new(attach_bin());
    cmd.arg("token").arg("--data-dir").arg(data_dir).arg("--role").arg(role).arg("--subject").arg(subject);
    for s in scopes {
        cmd.arg("--scope").arg(s);
    }
    if let Some(p) = provider {
        cmd.arg("--provider").arg(p);
    }
    let out = cmd.output().expect("attach token runs");
    assert!(out.status.success(), "attach token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a token is text").trim().to_string()
}

fn tokens(data_dir: &std::path::Path) -> BTreeMap<Who, Option<String>> {
    let m = |role, subject, scopes: &[&str], provider| Some(mint(data_dir, role, subject, scopes, provider));
    BTreeMap::from([
        (Who::Public, None),
        (Who::Patient, m("patient", "patient-1", &[], None)),
        (Who::Provider, m("provider", "dr-p1", &[], Some("P10001"))),
        (Who::OtherProvider, m("provider", "dr-p2", &[], Some("P10002"))),
        (Who::Delegate, m("delegate", "auth0|moa-1", &[], None)),
        (Who::StrangerDelegate, m("delegate", "moa-9", &[], None)),
        (Who::MedicalDirector, m("medical_director", "dr-p3", &[], Some("P10003"))),
        (Who::Coordinator, m("coordinator", "coord-iha", &["ha:IHA"], None)),
        (Who::OutOfScopeCoordinator, m("coordinator", "coord-fha", &["ha:FHA"], None)),
        (Who::Support, m("support", "support-1", &["province"], None)),
        (Who::Operations, m("operations", "ops-1", &["province"], None)),
    ])
}

struct Client<'a> {
    app: &'a TestApp,
    tokens: BTreeMap<Who, Option<String>>,
}

impl Client<'_> {
    async fn post(&self, who: Who, query: &str, variables: Value) -> Value {
        let mut request = self.app.http().post(format!("{}/graphql", self.app.url));
        if let Some(token) = &self.tokens[&who] {
            request = request.bearer_auth(token);
        }
        let response = request.json(&json!({ "query": query, "variables": variables })).send().await.unwrap();
        response.json().await.expect("a JSON response")
    }

    async fn ok(&self, who: Who, query: &str, variables: Value) -> Value {
        let r = self.post(who, query, variables).await;
        assert!(r.get("errors").is_none(), "{who:?}: unexpected errors: {r:#}");
        r["data"].clone()
    }

    /// `OK`, or the first error's code.
    async fn outcome(&self, who: Who, query: &str, variables: Value) -> String {
        let r = self.post(who, query, variables).await;
        match r["errors"].as_array() {
            None => "OK".to_string(),
            Some(errors) => errors[0]["extensions"]["code"].as_str().unwrap_or("NO CODE").to_string(),
        }
    }
}

fn household(phn: String) -> Value {
    json!({ "input": { "community": "111", "postalCode": "V0B 1M0", "languages": ["en"], "members": [
        { "phn": phn, "givenName": "Alex", "surname": "Tremblay", "dateOfBirth": "1984-03-09" }
    ] } })
}

const REGISTER: &str =
    r#"mutation($input: RegisterHouseholdInput!) { registerHousehold(input: $input) { reference } }"#;
const MATCH: &str = r#"mutation { runMatching(communityCode: "111") { proposals { id providerId } } }"#;

/// Fresh objects for one attempt, so that an allowed attempt never makes a
/// later one fail for a reason other than who is asking.
struct Fresh {
    reference: String,
    proposal: String,
}

/// The registry, a completed endorsement, and a patient on P1's panel.
async fn set_up(c: &Client<'_>) {
    use Who::*;
    c.ok(
        MedicalDirector,
        r#"mutation { upsertProvider(input: { id: "P10003", givenName: "Ana", surname: "Diaz",
        kind: PHYSICIAN, community: "111" }) { id } }"#,
        json!({}),
    )
    .await;
    c.ok(
        MedicalDirector,
        r#"mutation { upsertClinic(input: { facilityNumber: "0F111", community: "111",
        name: "Fernie Family Practice", address: "491 2nd Ave", medicalDirectorId: "P10003" }) { facilityNumber } }"#,
        json!({}),
    )
    .await;
    for (who, id) in [(Provider, "P10001"), (OtherProvider, "P10002")] {
        c.ok(
            who,
            &format!(
                r#"mutation {{ upsertProvider(input: {{ id: "{id}", givenName: "Jo", surname: "Doe",
            kind: PHYSICIAN, community: "111" }}) {{ id }} }}"#
            ),
            json!({}),
        )
        .await;
        // The clinic's medical director lists them there.
        c.ok(
            MedicalDirector,
            &format!(r#"mutation {{ addProviderToClinic(facilityNumber: "0F111", providerId: "{id}") {{ id }} }}"#),
            json!({}),
        )
        .await;
    }
    c.ok(
        Provider,
        r#"mutation { setProviderCapacity(providerId: "P10001", input: { acceptingNewPatients: true,
        monthlyRate: 500, desiredPanelSize: 500 }) { id } }"#,
        json!({}),
    )
    .await;
    let e = c
        .ok(
            Provider,
            r#"mutation { startEndorsement(providerId: "P10001", delegate: "auth0|moa-1") { id } }"#,
            json!({}),
        )
        .await;
    let id = e["startEndorsement"]["id"].clone();
    const STEP: &str = "mutation($id: ID!, $s: EndorsementStep!) { advanceEndorsement(id: $id, step: $s) { status } }";
    c.ok(Delegate, STEP, json!({ "id": id, "s": "RECEIVE" })).await;
    c.ok(Delegate, STEP, json!({ "id": id, "s": "APPROVE" })).await;
    let done = c.ok(Provider, STEP, json!({ "id": id, "s": "COMPLETE" })).await;
    assert_eq!(done["advanceEndorsement"]["status"], "COMPLETED");
    let f = fresh(c, 0).await;
    c.ok(Provider, "mutation($id: ID!) { acceptProposal(id: $id) { status } }", json!({ "id": f.proposal })).await;
    c.ok(
        MedicalDirector,
        r#"mutation { addClinicStaff(facilityNumber: "0F111", subject: "auth0|moa-1", name: "Mo Ahmed", title: "MOA") {
             subject } }"#,
        json!({}),
    )
    .await;
    c.ok(
        MedicalDirector,
        r#"mutation { transferPanel(fromProviderId: "P10001", toProviderId: "P10002", facilityNumber: "0F111",
             idempotencyKey: "set-up") { status } }"#,
        json!({}),
    )
    .await;
}

/// A new household, matched to P1.
async fn fresh(c: &Client<'_>, n: u32) -> Fresh {
    let r = c.ok(Who::Public, REGISTER, household(phn(5_000 + n))).await;
    let reference = r["registerHousehold"]["reference"].as_str().unwrap().to_string();
    let run = c.ok(Who::Coordinator, MATCH, json!({})).await;
    let proposal = run["runMatching"]["proposals"][0]["id"].as_str().expect("P1 has places").to_string();
    Fresh { reference, proposal }
}

#[tokio::test]
async fn every_role_against_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;

    // What each role may do, written out independently of the code's rules.
    // O: allowed; F: FORBIDDEN; U: UNAUTHENTICATED; C: allowed, then CONFLICT
    // (each fresh registration has an open proposal, which blocks the change);
    // N: NOT_FOUND.
    //                  Pub Pat Pro Oth Del Str MD  Coo Out Sup Ops
    let table: &[(&str, [&str; 11])] = &[
        ("registerHousehold", ["O", "O", "F", "F", "F", "F", "F", "O", "F", "F", "F"]),
        // The reference is the capability: whoever holds it, signed in or not.
        ("registration", ["O", "O", "O", "O", "O", "O", "O", "O", "O", "O", "O"]),
        ("withdrawRegistration", ["U", "O", "F", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("moveRegistration", ["U", "O", "F", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("updateHousehold", ["U", "C", "F", "F", "F", "F", "F", "C", "F", "F", "F"]),
        // Out of scope, a PHN gives what an unregistered one gives: neither whether nor where.
        ("registrationByPhn", ["U", "F", "F", "F", "F", "F", "F", "O", "N", "O", "F"]),
        ("waitlist", ["U", "F", "F", "F", "F", "F", "F", "O", "F", "O", "F"]),
        ("upsertProvider", ["U", "F", "O", "F", "F", "F", "O", "F", "F", "F", "F"]),
        ("setProviderCapacity", ["U", "F", "O", "F", "F", "F", "F", "F", "F", "F", "F"]),
        ("provider", ["U", "F", "O", "O", "O", "O", "O", "O", "O", "O", "O"]),
        ("upsertClinic", ["U", "F", "F", "F", "F", "F", "O", "F", "F", "F", "F"]),
        ("clinic", ["U", "F", "O", "O", "O", "O", "O", "O", "O", "O", "O"]),
        ("runMatching", ["U", "F", "F", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("proposals", ["U", "F", "O", "O", "F", "F", "O", "O", "F", "O", "F"]),
        ("proposal", ["U", "F", "O", "F", "F", "F", "F", "O", "F", "O", "F"]),
        ("acceptProposal", ["U", "F", "O", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("declineProposal", ["U", "F", "O", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("declineMatch", ["U", "O", "F", "F", "F", "F", "F", "O", "F", "F", "F"]),
        ("returnToWaitlist", ["U", "F", "F", "F", "F", "F", "F", "C", "F", "F", "F"]),
        ("panel", ["U", "F", "O", "F", "O", "F", "F", "F", "F", "O", "F"]),
        ("communityStatistics", ["U", "F", "O", "O", "O", "O", "O", "O", "O", "O", "O"]),
        ("events", ["U", "F", "F", "F", "F", "F", "F", "O", "F", "O", "F"]),
        ("auditLog", ["U", "F", "F", "F", "F", "F", "F", "F", "F", "F", "O"]),
        ("startEndorsement", ["U", "F", "O", "F", "F", "F", "F", "F", "F", "F", "F"]),
        ("endorsements", ["U", "F", "O", "F", "O", "O", "F", "F", "F", "O", "F"]),
        ("addClinicStaff", ["U", "F", "F", "F", "F", "F", "O", "F", "F", "F", "F"]),
        // auth0|moa-1 is on the clinic's staff list (and sees their own entry); moa-9 is not.
        ("clinicStaff", ["U", "F", "F", "F", "O", "F", "O", "F", "F", "O", "F"]),
        // Any of P10002's panel to P10001: the director asks (once: one open transfer per panel).
        ("transferPanel", ["U", "F", "F", "F", "F", "F", "O", "F", "F", "F", "F"]),
        // The transfer set_up asked for, P10001's panel to P10002: its two providers agree; the
        // director may only withdraw it.
        ("answerPanelTransfer", ["U", "F", "O", "O", "F", "F", "F", "F", "F", "F", "F"]),
        // Last: the director's attempt removes auth0|moa-1 from the list.
        ("removeClinicStaff", ["U", "F", "F", "F", "F", "F", "O", "F", "F", "F", "F"]),
    ];
    let mut failures = Vec::new();
    let mut n = 1;
    for (op, row) in table {
        for (who, expected) in EVERYONE.iter().zip(row) {
            n += 1;
            let f = fresh(&c, n).await;
            let (query, vars) = request(op, &f, n);
            let got = c.outcome(*who, &query, vars).await;
            let want = match *expected {
                "O" => "OK",
                "C" => "CONFLICT",
                "F" => "FORBIDDEN",
                "N" => "NOT_FOUND",
                _ => "UNAUTHENTICATED",
            };
            if got != want {
                failures.push(format!("{op} as {who:?}: expected {want}, got {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} checks disagree:\n{}", failures.len(), n - 1, failures.join("\n"));
}

#[tokio::test]
async fn a_patient_declines_their_match_and_keeps_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;
    let f = fresh(&c, 1).await;
    const DECLINE: &str = "mutation($r: ID!, $why: String!) { declineMatch(reference: $r, reason: $why) {
        id status declinedBy declineReason } }";
    let declined = c.ok(Who::Patient, DECLINE, json!({ "r": f.reference, "why": "the clinic is too far" })).await;
    assert_eq!(
        declined["declineMatch"],
        json!({ "id": f.proposal, "status": "DECLINED", "declinedBy": "PATIENT", "declineReason": "the clinic is too far" })
    );
    const STATUS: &str = "query($r: ID!) { registration(reference: $r) {
        status placeInLine declines { proposalId by reason } } }";
    let back = c.ok(Who::Patient, STATUS, json!({ "r": f.reference })).await;
    assert_eq!(back["registration"]["status"], "WAITING");
    assert_eq!(back["registration"]["placeInLine"], 1);
    assert_eq!(
        back["registration"]["declines"],
        json!([{ "proposalId": f.proposal, "by": "PATIENT", "reason": "the clinic is too far" }])
    );
    // Once is enough: nothing is open now, and nothing changes.
    let again = c.post(Who::Patient, DECLINE, json!({ "r": f.reference, "why": "again" })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT", "{again:#}");
    let empty = c.post(Who::Patient, DECLINE, json!({ "r": f.reference, "why": " " })).await;
    assert_eq!(empty["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{empty:#}");
    assert_eq!(c.ok(Who::Patient, STATUS, json!({ "r": f.reference })).await, back);
}

#[tokio::test]
async fn a_coordinator_returns_a_household_whose_attachment_fell_through() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;
    let f = fresh(&c, 1).await;
    const STATUS: &str = "query($r: ID!) { registration(reference: $r) {
        status registeredAt placeInLine providerId declines { proposalId providerId by reason } } }";
    const PANEL: &str = r#"{ panel(providerId: "P10001", first: 10) { panelSize nodes { reference } } }"#;
    const RETURN: &str = "mutation($r: ID!, $why: String!) { returnToWaitlist(reference: $r, reason: $why) {
        status registeredAt placeInLine providerId declines { proposalId providerId by reason } } }";
    let r = json!({ "r": f.reference });
    let why = json!({ "r": f.reference, "why": "never came to the first visit" });
    let registered_at = c.ok(Who::Coordinator, STATUS, r.clone()).await["registration"]["registeredAt"].clone();
    let waiting = c.post(Who::Coordinator, RETURN, why.clone()).await;
    assert_eq!(waiting["errors"][0]["extensions"]["code"], "CONFLICT", "not attached yet: {waiting:#}");
    c.ok(Who::Provider, "mutation($id: ID!) { acceptProposal(id: $id) { status } }", json!({ "id": f.proposal })).await;
    let panel = c.ok(Who::Provider, PANEL, json!({})).await["panel"].clone();
    // The provider is not given the reference whole: with it anyone signed in could change the registration.
    let shown = crate::helpers::masked(&f.reference);
    assert!(panel["nodes"].as_array().unwrap().iter().any(|n| n["reference"] == shown.as_str()), "{panel:#}");
    let support = c.ok(Who::Support, PANEL, json!({})).await["panel"].clone();
    assert!(support["nodes"].as_array().unwrap().iter().any(|n| n["reference"] == shown.as_str()), "nor support");
    for who in [Who::Patient, Who::Provider, Who::OutOfScopeCoordinator, Who::Support] {
        assert_eq!(c.outcome(who, RETURN, why.clone()).await, "FORBIDDEN", "{who:?}");
    }

    let back = c.ok(Who::Coordinator, RETURN, why.clone()).await["returnToWaitlist"].clone();
    let expected = json!({
        "status": "WAITING", "registeredAt": registered_at, "placeInLine": 1, "providerId": null,
        "declines": [{ "proposalId": f.proposal, "providerId": "P10001", "by": "COORDINATOR",
                       "reason": "never came to the first visit" }],
    });
    assert_eq!(back, expected, "waiting again, with its registration time and the reason");
    let proposal = c.ok(
        Who::Coordinator,
        "query($id: ID!) { proposal(id: $id) { status declineReason } }",
        json!({ "id": f.proposal }),
    );
    assert_eq!(
        proposal.await["proposal"],
        json!({ "status": "RETURNED", "declineReason": "never came to the first visit" })
    );
    let after = c.ok(Who::Provider, PANEL, json!({})).await["panel"].clone();
    assert_eq!(
        after["panelSize"].as_u64().unwrap() + 1,
        panel["panelSize"].as_u64().unwrap(),
        "the member left the panel"
    );
    assert!(!after["nodes"].as_array().unwrap().iter().any(|n| n["reference"] == f.reference.as_str()));
    let again = c.post(Who::Coordinator, RETURN, why.clone()).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT", "once: {again:#}");
    let feed = c.ok(
        Who::Coordinator,
        r#"{ events(communityCode: "111", afterSeq: 0, first: 100) { hasMore nodes { kind reference people } } }"#,
        json!({}),
    );
    let feed = feed.await["events"].clone();
    assert_eq!(feed["hasMore"], false);
    let feed = feed["nodes"].as_array().unwrap().clone();
    assert!(feed.contains(&json!({ "kind": "RETURNED", "reference": f.reference, "people": 1 })), "{feed:#?}");
    assert_eq!(feed.last().unwrap()["kind"], "RETURNED", "after the panel let the member go");

    // Through SIGKILL, and matched again from its place.
    drop(c);
    app.kill();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    assert_eq!(c.ok(Who::Coordinator, STATUS, r.clone()).await["registration"], expected);
    assert_eq!(c.ok(Who::Provider, PANEL, json!({})).await["panel"], after);
    // Matching does not offer it to P10001 again; the coordinator still may.
    let run = c.ok(Who::Coordinator, MATCH, json!({})).await;
    assert_eq!(run["runMatching"]["proposals"], json!([]), "P10001 is the only provider with places");
    const PROPOSE: &str = r#"mutation($r: ID!) { proposeMatch(reference: $r, providerId: "P10001",
        note: "the patient can make the visit now") { providerId status explanation { providerFit } } }"#;
    let again = c.ok(Who::Coordinator, PROPOSE, r.clone()).await["proposeMatch"].clone();
    assert_eq!((&again["providerId"], &again["status"]), (&json!("P10001"), &json!("OPEN")));
    let told = "proposed again: an earlier match with this provider fell through (a coordinator ended it)";
    assert!(again["explanation"]["providerFit"].as_array().unwrap().contains(&json!(told)), "{again:#}");
    assert_eq!(c.ok(Who::Coordinator, STATUS, r).await["registration"]["status"], "PROPOSED");
}

/// The document and variables of one attempt at `op`.
fn request(op: &str, f: &Fresh, n: u32) -> (String, Value) {
    let r = json!({ "r": f.reference });
    let p = json!({ "id": f.proposal });
    let none = json!({});
    let (q, v) = match op {
        "registerHousehold" => (REGISTER.to_string(), household(phn(10_000 + n))),
        "registration" => ("query($r: ID!) { registration(reference: $r) { status } }".into(), r),
        "withdrawRegistration" => {
            (r#"mutation($r: ID!) { withdrawRegistration(reference: $r, reason: "moved") { status } }"#.into(), r)
        }
        "moveRegistration" => {
            (r#"mutation($r: ID!) { moveRegistration(reference: $r, communityCode: "112") { status } }"#.into(), r)
        }
        "registrationByPhn" => {
            ("query($p: String!) { registrationByPhn(phn: $p) { reference } }".into(), json!({ "p": phn(5_000 + n) }))
        }
        "updateHousehold" => {
            let members = json!([{ "phn": phn(11_000 + n), "givenName": "Alex", "surname": "Tremblay",
                                   "dateOfBirth": "1984-03-09" }]);
            let vars =
                json!({ "r": f.reference, "h": { "postalCode": "V0B 1M0", "languages": [], "members": members } });
            (
                "mutation($r: ID!, $h: HouseholdInput!) { updateHousehold(reference: $r, household: $h) { status } }"
                    .into(),
                vars,
            )
        }
        "waitlist" => (r#"{ waitlist(communityCode: "111", first: 5) { totalCount } }"#.into(), none),
        "upsertProvider" => (
            r#"mutation { upsertProvider(input: { id: "P10001", givenName: "Jo", surname: "Doe", kind: PHYSICIAN,
               community: "111", clinics: ["0F111"] }) { id } }"#
                .into(),
            none,
        ),
        "setProviderCapacity" => (
            r#"mutation { setProviderCapacity(providerId: "P10001", input: { acceptingNewPatients: true,
               monthlyRate: 500, desiredPanelSize: 500 }) { id } }"#
                .into(),
            none,
        ),
        "provider" => (r#"{ provider(id: "P10001") { id } }"#.into(), none),
        "upsertClinic" => (
            r#"mutation { upsertClinic(input: { facilityNumber: "0F111", community: "111",
               name: "Fernie Family Practice", address: "491 2nd Ave", medicalDirectorId: "P10003" }) { name } }"#
                .into(),
            none,
        ),
        "clinic" => (r#"{ clinic(facilityNumber: "0F111") { name } }"#.into(), none),
        "runMatching" => (MATCH.into(), none),
        "proposals" => (r#"{ proposals(communityCode: "111", first: 5) { nodes { id } } }"#.into(), none),
        "proposal" => ("query($id: ID!) { proposal(id: $id) { status } }".into(), p),
        "acceptProposal" => ("mutation($id: ID!) { acceptProposal(id: $id) { status } }".into(), p),
        "declineProposal" => {
            (r#"mutation($id: ID!) { declineProposal(id: $id, reason: "full") { status } }"#.into(), p)
        }
        "declineMatch" => {
            (r#"mutation($r: ID!) { declineMatch(reference: $r, reason: "too far") { status declinedBy } }"#.into(), r)
        }
        "returnToWaitlist" => {
            (r#"mutation($r: ID!) { returnToWaitlist(reference: $r, reason: "no show") { status } }"#.into(), r)
        }
        "panel" => (r#"{ panel(providerId: "P10001", first: 5) { nodes { surname } } }"#.into(), none),
        "communityStatistics" => (r#"{ communityStatistics(code: "111") { waitingHouseholds } }"#.into(), none),
        "events" => (r#"{ events(communityCode: "111", first: 5) { lastSeq } }"#.into(), none),
        "auditLog" => ("{ auditLog(first: 5) { nodes { operation } } }".into(), none),
        "startEndorsement" => (
            format!(r#"mutation {{ startEndorsement(providerId: "P10001", delegate: "moa-new-{n}") {{ id }} }}"#),
            none,
        ),
        "endorsements" => (r#"{ endorsements(providerId: "P10001") { id } }"#.into(), none),
        "addClinicStaff" => (
            format!(
                r#"mutation {{ addClinicStaff(facilityNumber: "0F111", subject: "staff-{n}", name: "Jo Doe",
                   title: "MOA") {{ subject }} }}"#
            ),
            none,
        ),
        "clinicStaff" => (r#"{ clinic(facilityNumber: "0F111") { staff { subject } } }"#.into(), none),
        "removeClinicStaff" => (
            r#"mutation { removeClinicStaff(facilityNumber: "0F111", subject: "auth0|moa-1") { subject } }"#.into(),
            none,
        ),
        "transferPanel" => (
            r#"mutation($k: String!) { transferPanel(fromProviderId: "P10002", toProviderId: "P10001",
                facilityNumber: "0F111", idempotencyKey: $k) { status } }"#
                .into(),
            json!({ "k": format!("k-{n}") }),
        ),
        "answerPanelTransfer" => (
            r#"mutation { answerPanelTransfer(fromProviderId: "P10001", idempotencyKey: "set-up", agree: true) {
                status } }"#
                .into(),
            none,
        ),
        other => panic!("no request written for {other}"),
    };
    (q, v)
}

#[tokio::test]
async fn a_delegate_loses_the_panel_when_the_endorsement_is_cancelled() {
    use Who::*;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;
    const PANEL: &str = r#"{ panel(providerId: "P10001", first: 5) { panelSize } }"#;
    assert_eq!(c.outcome(Delegate, PANEL, json!({})).await, "OK");
    let mine = c.ok(Delegate, r#"{ endorsements(providerId: "P10001") { id status } }"#, json!({})).await;
    let id = mine["endorsements"][0]["id"].clone();
    // The delegate revokes nothing here: the provider cancels.
    let cancelled = c
        .ok(
            Provider,
            "mutation($id: ID!) { advanceEndorsement(id: $id, step: CANCEL) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled["advanceEndorsement"]["status"], "CANCELLED");
    assert_eq!(c.outcome(Delegate, PANEL, json!({})).await, "FORBIDDEN");
    // A delegate may start a new one; it grants nothing until completed again.
    c.ok(
        Delegate,
        r#"mutation { startEndorsement(providerId: "P10001", delegate: "auth0|moa-1") { status } }"#,
        json!({}),
    )
    .await;
    assert_eq!(c.outcome(Delegate, PANEL, json!({})).await, "FORBIDDEN");
}

#[tokio::test]
async fn each_audited_action_leaves_exactly_one_record() {
    use Who::*;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;
    let f = fresh(&c, 1).await;
    const LOG: &str = r#"query($after: String) { auditLog(first: 100, after: $after) {
        nodes { id at subject role operation healthAuthority community target outcome } pageInfo { endCursor } } }"#;
    let before = c.ok(Operations, LOG, json!({})).await["auditLog"]["pageInfo"]["endCursor"].clone();

    c.ok(Support, "query($r: ID!) { registration(reference: $r) { status } }", json!({ "r": f.reference })).await;
    assert_eq!(
        c.outcome(
            OtherProvider,
            "mutation($id: ID!) { acceptProposal(id: $id) { status } }",
            json!({ "id": f.proposal })
        )
        .await,
        "FORBIDDEN"
    );
    c.ok(Provider, "mutation($id: ID!) { acceptProposal(id: $id) { status } }", json!({ "id": f.proposal })).await;
    c.ok(Delegate, r#"{ panel(providerId: "P10001", first: 5) { panelSize } }"#, json!({})).await;
    c.ok(Coordinator, r#"{ provider(id: "P10001") { id } }"#, json!({})).await; // not a patient record

    let after = c.ok(Operations, LOG, json!({ "after": before })).await;
    let records = after["auditLog"]["nodes"].as_array().unwrap();
    let summary: Vec<(String, String, String, String)> = records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("subject"), s("role"), s("operation"), s("outcome"))
        })
        .collect();
    let row = |a: &str, b: &str, c: &str, d: &str| (a.to_string(), b.to_string(), c.to_string(), d.to_string());
    assert_eq!(
        summary,
        vec![
            // The read of the log that gave `before`: who looks at the log is on it too.
            row("ops-1", "OPERATIONS", "readAudit", "OK"),
            row("support-1", "SUPPORT", "readRegistration", "OK"),
            row("dr-p2", "PROVIDER", "answerProposal", "FORBIDDEN"),
            row("dr-p1", "PROVIDER", "answerProposal", "OK"),
            row("auth0|moa-1", "DELEGATE", "readPanel", "OK"),
        ],
        "one record per audited action, in order: {after:#}"
    );
    let masked = format!("{}…{}", &f.reference[..4], &f.reference[10..]);
    assert_eq!(records[1]["target"], masked.as_str(), "a reference is not given out whole");
    assert_eq!(records[3]["target"], f.proposal.as_str());
    assert_eq!(records[4]["target"], "P10001");
    for r in &records[1..] {
        assert_eq!((r["healthAuthority"].as_str(), r["community"].as_str()), (Some("IHA"), Some("111")), "{r}");
        assert!(r["at"].as_str().is_some_and(|t| t.starts_with("20")), "{r}");
    }
    // Filters: one subject, one operation.
    let mine = c
        .ok(
            Operations,
            r#"{ auditLog(first: 50, filter: { subject: "dr-p2" }) { nodes { operation outcome } } }"#,
            json!({}),
        )
        .await;
    // dr-p2 also entered themselves in the registry during the set-up.
    assert_eq!(
        mine["auditLog"]["nodes"],
        json!([{ "operation": "upsertProvider", "outcome": "OK" }, { "operation": "answerProposal", "outcome": "FORBIDDEN" }])
    );
    let bad = c
        .post(Operations, r#"{ auditLog(filter: { operation: "registrationByPhn" }) { nodes { id } } }"#, json!({}))
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    let message = bad["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("findRegistration") && message.contains("answerProposal"),
        "the names are listed: {message}"
    );
    // An operation the log never holds is not a filter that quietly finds nothing.
    let never = c
        .post(Operations, r#"{ auditLog(filter: { operation: "readStatistics" }) { nodes { id } } }"#, json!({}))
        .await;
    let message = never["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("readStatistics is never recorded") && !message.contains(", readStatistics"), "{message}");
}

/// DECISIONS 46: a household a patient registers signed in answers, by its
/// reference, to that patient and to staff in scope, not to the public or
/// another patient holding the reference.
#[tokio::test]
async fn a_household_registered_signed_in_answers_by_its_reference_only_to_its_patient() {
    use Who::*;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let c = Client { app: &app, tokens: tokens(dir.path()) };
    set_up(&c).await;
    let mut others = c.tokens.clone();
    others.insert(Patient, Some(mint(dir.path(), "patient", "patient-2", &[], None)));
    let stranger = Client { app: &app, tokens: others };
    let registered = c.ok(Patient, REGISTER, household(phn(7_001))).await;
    let reference = registered["registerHousehold"]["reference"].as_str().unwrap().to_string();
    let run = c.ok(Coordinator, MATCH, json!({})).await;
    let proposal = run["runMatching"]["proposals"][0]["id"].as_str().expect("P1 has places").to_string();
    let f = Fresh { reference, proposal };

    let ops = ["registration", "withdrawRegistration", "moveRegistration", "updateHousehold", "declineMatch"];
    for op in ops {
        let (query, vars) = request(op, &f, 1);
        assert_eq!(stranger.outcome(Patient, &query, vars.clone()).await, "FORBIDDEN", "{op} by another patient");
        assert_eq!(c.outcome(Public, &query, vars).await, "UNAUTHENTICATED", "{op} by the public");
    }
    let (read, vars) = request("registration", &f, 1);
    // Nor staff who do not hold its community.
    for who in [Provider, Delegate, OutOfScopeCoordinator, Operations] {
        assert_eq!(c.outcome(who, &read, vars.clone()).await, "FORBIDDEN", "read by {who:?}");
    }
    assert_eq!(c.ok(Patient, &read, vars.clone()).await["registration"]["status"], "PROPOSED", "nothing changed");
    c.ok(Coordinator, &read, vars).await;
    let (decline, vars) = request("declineMatch", &f, 1);
    c.ok(Patient, &decline, vars).await;

    const LOG: &str = r#"{ auditLog(first: 20, filter: { subject: "patient-2" }) { nodes { operation outcome } } }"#;
    let tried = c.ok(Operations, LOG, json!({})).await;
    let tried = tried["auditLog"]["nodes"].as_array().unwrap().clone();
    assert_eq!(tried.len(), ops.len(), "{tried:?}");
    assert!(tried.iter().all(|r| r["outcome"] == "FORBIDDEN"), "{tried:?}");
}

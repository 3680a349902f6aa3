//! The whole attachment journey, bad input on the way, then SIGKILL and restart.

use attach_actors::access::Role;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, phn};

const REGISTER: &str = r#"mutation($input: RegisterHouseholdInput!) {
  registerHousehold(input: $input) { reference status placeInLine peopleAhead estimatedWaitDays registeredAt householdSize }
}"#;

const REGISTRATION: &str = r#"query($r: ID!) {
  registration(reference: $r) {
    reference status placeInLine registeredAt providerId withdrawnReason
    declines { proposalId providerId by reason }
    proposal { id status }
  }
}"#;

const REGISTRATION_UPDATED: &str = r#"query($r: ID!) { registration(reference: $r) { updatedAt } }"#;

const WAITLIST: &str = r#"query($c: String!, $first: Int, $after: String) {
  waitlist(communityCode: $c, first: $first, after: $after) {
    totalCount nodes { reference registeredAt } pageInfo { hasNextPage endCursor }
  }
}"#;

fn household(community: &str, phns: &[String]) -> Value {
    let members: Vec<Value> = phns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "phn": p, "givenName": "Alex", "surname": "Tremblay",
                "dateOfBirth": if i == 0 { "1984-03-09" } else { "2019-07-21" },
                "needs": if i == 0 { json!(["CHRONIC_COMPLEX"]) } else { json!([]) },
            })
        })
        .collect();
    json!({ "input": { "community": community, "postalCode": "V0B 1M0", "languages": ["en", "fr"], "members": members } })
}

async fn register(app: &TestApp, community: &str, phns: &[String]) -> Value {
    app.ok(REGISTER, household(community, phns)).await["registerHousehold"].clone()
}

async fn waitlist_total(app: &TestApp, community: &str) -> u64 {
    app.coordinator().ok(WAITLIST, json!({ "c": community, "first": 1 })).await["waitlist"]["totalCount"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_whole_journey_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let (coordinator, doctor) = (app.coordinator(), app.provider("P10001"));

    // Regions.
    let regions = app.ok("{ healthAuthorities { code communities { code name population } } }", json!({})).await;
    let has = regions["healthAuthorities"].as_array().unwrap();
    assert_eq!(has.len(), 5);
    assert_eq!(has.iter().map(|h| h["communities"].as_array().unwrap().len()).sum::<usize>(), 89);

    // The registry: a clinic (kept by its medical director), a provider, their capacity.
    app.medical_director("P10001").ok(
        r#"mutation { upsertClinic(input: { facilityNumber: "0F111", community: "111", name: "Fernie Family Practice",
             address: "491 2nd Ave, Fernie", hours: "Mon-Fri 9-5", phone: "250-555-0100", medicalDirectorId: "P10001" }) { facilityNumber } }"#,
        json!({}),
    )
    .await;
    // As the clinic's medical director: only a clinic's director lists a provider there.
    app.medical_director("P10001")
        .ok(
            r#"mutation { upsertProvider(input: { id: "P10001", givenName: "Maya", surname: "Okafor", kind: PHYSICIAN,
             community: "111", clinics: ["0F111"], reportedPanelSize: 1200 }) { id } }"#,
            json!({}),
        )
        .await;
    let provider = doctor
        .ok(
            r#"mutation { setProviderCapacity(providerId: "P10001", input: { acceptingNewPatients: true, monthlyRate: 10,
                 desiredPanelSize: 1210, complexSharePercent: 100, languages: ["en"] }) { freePlaces capacity { acceptingNewPatients } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(provider["setProviderCapacity"]["freePlaces"], 10);

    // Registrations.
    let family = register(&app, "111", &[phn(1), phn(2), phn(3)]).await;
    assert_eq!((family["status"].as_str(), family["placeInLine"].as_u64()), (Some("WAITING"), Some(1)));
    assert!(family["estimatedWaitDays"].is_null(), "nobody attached yet: no rate to estimate from");
    let single = register(&app, "111", &[phn(4)]).await;
    assert_eq!((single["placeInLine"].as_u64(), single["peopleAhead"].as_u64()), (Some(2), Some(3)));
    let leaver = register(&app, "111", &[phn(5)]).await;
    let elsewhere = register(&app, "222", &[phn(6)]).await;

    // Bad input: a clear code, and nothing changes.
    let before = waitlist_total(&app, "111").await;
    let bad_phn = app.graphql(REGISTER, household("111", &["9698648215".into()])).await;
    assert_eq!(bad_phn["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert_eq!(bad_phn["errors"][0]["extensions"]["field"], "members[0].phn");
    assert_eq!(app.error_code(REGISTER, household("999", &[phn(7)])).await, "NOT_FOUND");
    assert_eq!(app.error_code(REGISTER, household("111", &[])).await, "INVALID_INPUT");
    let nine: Vec<String> = (20..29).map(phn).collect();
    assert_eq!(app.error_code(REGISTER, household("111", &nine)).await, "INVALID_INPUT");
    assert_eq!(app.error_code(REGISTER, household("111", &[phn(8), phn(1)])).await, "CONFLICT", "already waiting");
    assert_eq!(app.error_code(REGISTER, household("222", &[phn(4)])).await, "CONFLICT", "waiting in another community");
    let mut adult_newborn = household("111", &[phn(7)]);
    adult_newborn["input"]["members"][0]["needs"] = json!(["NEWBORN"]);
    let refused = app.graphql(REGISTER, adult_newborn).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "members[0].needs", "NEWBORN for someone born in 1984");
    assert_eq!(waitlist_total(&app, "111").await, before, "refused registrations changed nothing");
    register(&app, "111", &[phn(8)]).await; // the refused household's other member was not kept

    let too_deep = format!(
        "{{ __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(12),
        "}".repeat(12)
    );
    assert_eq!(app.error_code(&too_deep, json!({})).await, "INVALID_INPUT");
    // What GraphiQL asks on load (its type references nine `ofType` deep) is answered.
    let type_ref = format!("kind name {} ofType {{ kind name {}", "ofType { kind name ".repeat(8), "} ".repeat(9));
    let introspection = format!(
        "{{ __schema {{ types {{ name fields {{ args {{ type {{ ...T }} }} type {{ ...T }} }} }} }} }} fragment T on __Type {{ {type_ref} }}"
    );
    let schema = app.ok(&introspection, json!({})).await;
    assert!(schema["__schema"]["types"].as_array().is_some_and(|t| t.len() > 20), "{schema}");
    assert_eq!(app.error_code("{ healthAuthorities { nope } }", json!({})).await, "INVALID_INPUT");
    assert_eq!(app.error_code("{ healthAuthorities { code }", json!({})).await, "INVALID_INPUT");
    let oversized = format!("{{ healthAuthorities {{ code }} }} # {}", "x".repeat(100_000));
    let resp =
        app.http().post(format!("{}/graphql", app.url)).json(&json!({ "query": oversized })).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert_eq!(
        coordinator.error_code("{ waitlist(communityCode: \"111\", first: 1000) { totalCount } }", json!({})).await,
        "INVALID_INPUT"
    );

    // Status and place in line, and the waitlist page by page.
    let status = app.ok(REGISTRATION, json!({ "r": family["reference"] })).await;
    assert_eq!(status["registration"]["placeInLine"], 1);
    let page1 = coordinator.ok(WAITLIST, json!({ "c": "111", "first": 2 })).await["waitlist"].clone();
    assert_eq!(page1["nodes"][0]["reference"], family["reference"]);
    assert_eq!(page1["pageInfo"]["hasNextPage"], true);
    let page2 = coordinator
        .ok(WAITLIST, json!({ "c": "111", "first": 2, "after": page1["pageInfo"]["endCursor"] }))
        .await["waitlist"]
        .clone();
    assert_eq!(page2["nodes"][0]["reference"], leaver["reference"]);
    // A cursor of 111's list is no position in another community's.
    let foreign = json!({ "c": "112", "first": 2, "after": page1["pageInfo"]["endCursor"] });
    assert_eq!(coordinator.error_code(WAITLIST, foreign).await, "INVALID_INPUT");

    // Withdraw one before matching.
    let withdrawn = coordinator
        .ok(
            r#"mutation($r: ID!) { withdrawRegistration(reference: $r, reason: "found a doctor") { status } }"#,
            json!({ "r": leaver["reference"] }),
        )
        .await;
    assert_eq!(withdrawn["withdrawRegistration"]["status"], "WITHDRAWN");

    // Matching: the family (3) and the single (1) fit in 10 places; the fourth household (1) too.
    let run = coordinator
        .ok(
            r#"mutation { runMatching(communityCode: "111") { proposals { id reference providerId status score explanation { parts { label points } providerFit } } } }"#,
            json!({}),
        )
        .await;
    let proposals = run["runMatching"]["proposals"].as_array().unwrap().clone();
    assert_eq!(proposals.len(), 3);
    let for_ref = |r: &Value| proposals.iter().find(|p| &p["reference"] == r).unwrap().clone();
    let family_p = for_ref(&family["reference"]);
    let single_p = for_ref(&single["reference"]);
    assert!(!family_p["explanation"]["parts"].as_array().unwrap().is_empty());
    assert_eq!(family_p["status"], "OPEN");

    // Accept the family; accepting twice is refused.
    const ACCEPT: &str = r#"mutation($id: ID!) { acceptProposal(id: $id) { status } }"#;
    assert_eq!(doctor.ok(ACCEPT, json!({ "id": family_p["id"] })).await["acceptProposal"]["status"], "ACCEPTED");
    assert_eq!(doctor.error_code(ACCEPT, json!({ "id": family_p["id"] })).await, "CONFLICT");

    // Decline the single: back on the waitlist with the original registration time.
    let declined = doctor
        .ok(
            r#"mutation($id: ID!) { declineProposal(id: $id, reason: "panel closed to this age group", by: PROVIDER) { status declineReason } }"#,
            json!({ "id": single_p["id"] }),
        )
        .await;
    assert_eq!(declined["declineProposal"]["status"], "DECLINED");
    let back = app.ok(REGISTRATION, json!({ "r": single["reference"] })).await["registration"].clone();
    assert_eq!(back["status"], "WAITING");
    assert_eq!(back["registeredAt"], single["registeredAt"]);
    assert_eq!(back["placeInLine"], 1);
    assert_eq!(back["declines"][0]["reason"], "", "by the reference alone, not what the provider wrote");
    let for_coordinator = app.coordinator().ok(REGISTRATION, json!({ "r": single["reference"] })).await;
    assert_eq!(for_coordinator["registration"]["declines"][0]["reason"], "panel closed to this age group");
    // Three people attached in 28 days: one more (nobody ahead) is 28 / 3 days away, rounded up.
    let estimate = app.ok(
        "query($r: ID!) { registration(reference: $r) { estimatedWaitDays } }",
        json!({ "r": single["reference"] }),
    );
    assert_eq!(estimate.await["registration"]["estimatedWaitDays"], 10);

    // The panel, the provider and the statistics.
    let panel = doctor
        .ok(
            r#"{ panel(providerId: "P10001", first: 10) { panelSize nodes { givenName serviceCode reference } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(panel["panel"]["panelSize"], 1203);
    assert_eq!(panel["panel"]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(panel["panel"]["nodes"][0]["serviceCode"], "98990");
    let stats = coordinator
        .ok(
            r#"{ c: communityStatistics(code: "111") { waitingHouseholds waitingPeople proposedHouseholds attachedThisWeek medianWaitDays estimatedWaitDays }
                 h: healthAuthorityStatistics(code: "IHA") { waitingHouseholds attachedThisWeek } }"#,
            json!({}),
        )
        .await;
    assert_eq!(stats["c"]["waitingHouseholds"], 1);
    assert_eq!(stats["c"]["proposedHouseholds"], 1);
    assert_eq!(stats["c"]["attachedThisWeek"], 3);
    assert_eq!(stats["c"]["medianWaitDays"], 0);
    // One person waiting, then the newcomer: two places at three attached in 28 days.
    assert_eq!(stats["c"]["estimatedWaitDays"], 19, "as a newcomer's own registration would then say");
    assert_eq!(stats["h"]["attachedThisWeek"], 3);

    // A baby is born to the household waiting in 222: the household changes, its place does not.
    let patient = app.with_token(app.token(Role::Patient, &[], None));
    let mut grown = household("222", &[phn(6), phn(9)])["input"].clone();
    grown.as_object_mut().unwrap().remove("community");
    grown["members"][1]["needs"] = json!(["NEWBORN"]);
    let born = attach_actors::domain::Timestamp::now().plus_ms(-30 * attach_actors::domain::DAY_MS);
    grown["members"][1]["dateOfBirth"] = json!(born.to_utc().date_naive().to_string());
    const UPDATE: &str = r#"mutation($r: ID!, $h: HouseholdInput!, $since: DateTime) {
      updateHousehold(reference: $r, household: $h, ifUnchangedSince: $since) { status householdSize registeredAt placeInLine updatedAt }
    }"#;
    let read = app.anonymous().ok(REGISTRATION_UPDATED, json!({ "r": elsewhere["reference"] })).await;
    let since = read["registration"]["updatedAt"].clone();
    let updated = patient.ok(UPDATE, json!({ "r": elsewhere["reference"], "h": grown, "since": since })).await;
    let updated = updated["updateHousehold"].clone();
    assert_eq!((updated["householdSize"].as_u64(), updated["placeInLine"].as_u64()), (Some(2), Some(1)));
    assert_eq!(updated["registeredAt"], elsewhere["registeredAt"]);
    // A change made from the reading before this one is refused: it would undo the baby.
    let mut before = grown.clone();
    before["members"] = json!([grown["members"][0].clone()]);
    let stale = json!({ "r": elsewhere["reference"], "h": before, "since": since });
    assert_eq!(patient.error_code(UPDATE, stale).await, "CONFLICT");
    assert_ne!(updated["updatedAt"], since);
    let mut empty = grown.clone();
    empty["members"] = json!([]);
    let refused = patient.error_code(UPDATE, json!({ "r": elsewhere["reference"], "h": empty })).await;
    assert_eq!(refused, "INVALID_INPUT");
    let mut unsaid = grown.clone();
    unsaid.as_object_mut().unwrap().remove("languages");
    let refused = patient.error_code(UPDATE, json!({ "r": elsewhere["reference"], "h": unsaid })).await;
    assert_eq!(refused, "INVALID_INPUT", "leaving the languages out never erases them");
    let mut taken = grown.clone();
    taken["members"][1]["phn"] = json!(phn(4));
    let refused = patient.error_code(UPDATE, json!({ "r": elsewhere["reference"], "h": taken })).await;
    assert_eq!(refused, "CONFLICT", "a member waiting in another household");
    // The member added (born before the household registered) shares its place
    // but does not hold it: dropping the one who registered is refused.
    let mut handed_over = grown.clone();
    handed_over["members"] = json!([grown["members"][1].clone()]);
    let refused = patient.error_code(UPDATE, json!({ "r": elsewhere["reference"], "h": handed_over })).await;
    assert_eq!(refused, "INVALID_INPUT", "a place in line is not handed to someone added later");

    // Support finds the household by a member's PHN (someone who lost their reference).
    let support = app.with_token(app.token(Role::Support, &["province"], None));
    const BY_PHN: &str = "query($p: String!) { registrationByPhn(phn: $p) { reference householdSize } }";
    let found = support.ok(BY_PHN, json!({ "p": phn(9) })).await["registrationByPhn"].clone();
    assert_eq!(
        (found["reference"].clone(), found["householdSize"].as_u64()),
        (elsewhere["reference"].clone(), Some(2))
    );
    assert_eq!(support.error_code(BY_PHN, json!({ "p": phn(5) })).await, "NOT_FOUND", "withdrawn");
    assert_eq!(patient.error_code(BY_PHN, json!({ "p": phn(9) })).await, "FORBIDDEN", "a PHN is not a capability");

    // New connections are still served long after start-up; no PHN in the log.
    app.assert_accepting().await;
    drop((coordinator, doctor, patient, support));
    let log = app.kill();
    for i in 1..=9 {
        assert!(!log.contains(&phn(i)), "a PHN appeared in the log");
    }

    // SIGKILL above; start again on the same directory: every acknowledged change is there.
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let doctor = app.provider("P10001");
    let fam = app.ok(REGISTRATION, json!({ "r": family["reference"] })).await["registration"].clone();
    assert_eq!((fam["status"].as_str(), fam["providerId"].as_str()), (Some("ATTACHED"), Some("P10001")));
    let back = app.ok(REGISTRATION, json!({ "r": single["reference"] })).await["registration"].clone();
    assert_eq!((back["status"].as_str(), back["placeInLine"].as_u64()), (Some("WAITING"), Some(1)));
    assert_eq!(back["registeredAt"], single["registeredAt"]);
    assert_eq!(back["declines"].as_array().unwrap().len(), 1);
    let gone = app.ok(REGISTRATION, json!({ "r": leaver["reference"] })).await["registration"].clone();
    assert_eq!(gone["withdrawnReason"], "found a doctor");
    let grown = app.ok(REGISTRATION, json!({ "r": elsewhere["reference"] })).await["registration"].clone();
    assert_eq!(
        (grown["status"].as_str(), grown["registeredAt"].clone()),
        (Some("WAITING"), elsewhere["registeredAt"].clone())
    );
    assert_eq!(app.error_code(REGISTER, household("111", &[phn(9)])).await, "CONFLICT", "the baby is waiting");
    let panel = doctor.ok(r#"{ panel(providerId: "P10001") { panelSize } provider(id: "P10001") { openPlaces capacity { monthlyRate } } }"#, json!({})).await;
    assert_eq!(panel["panel"]["panelSize"], 1203);
    assert_eq!(panel["provider"]["openPlaces"], 1, "the fourth household's proposal is still open");
    assert_eq!(panel["provider"]["capacity"]["monthlyRate"], 10);
    assert_eq!(
        doctor.ok("{ clinic(facilityNumber: \"0F111\") { name } }", json!({})).await["clinic"]["name"],
        "Fernie Family Practice"
    );
    assert_eq!(app.error_code(REGISTER, household("111", &[phn(2)])).await, "CONFLICT", "attached PHNs stay claimed");
    assert_eq!(doctor.error_code(ACCEPT, json!({ "id": family_p["id"] })).await, "CONFLICT");
}

#[tokio::test]
async fn an_expired_proposal_cannot_be_answered() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("ATTACH_SHARD__PROPOSAL_TTL_SECS".to_string(), "1".to_string()),
        ("ATTACH_SHARD__EXPIRY_INTERVAL_MS".to_string(), "100".to_string()),
    ];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let (coordinator, np) = (app.coordinator(), app.provider("P20002"));
    np.ok(r#"mutation { upsertProvider(input: { id: "P20002", givenName: "Li", surname: "Wong", kind: NURSE_PRACTITIONER, community: "131" }) { id } }"#, json!({})).await;
    np.ok(r#"mutation { setProviderCapacity(providerId: "P20002", input: { acceptingNewPatients: true, monthlyRate: 5, desiredPanelSize: 5 }) { id } }"#, json!({})).await;
    let r = register(&app, "131", &[phn(40)]).await;
    let run = coordinator.ok(r#"mutation { runMatching(communityCode: "131") { proposals { id } } }"#, json!({})).await;
    let id = run["runMatching"]["proposals"][0]["id"].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let p = coordinator.ok("query($id: ID!) { proposal(id: $id) { status } }", json!({ "id": id })).await;
        if p["proposal"]["status"] == "EXPIRED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        np.error_code("mutation($id: ID!) { acceptProposal(id: $id) { status } }", json!({ "id": id })).await,
        "CONFLICT"
    );
    let reg = app.ok(REGISTRATION, json!({ "r": r["reference"] })).await["registration"].clone();
    assert_eq!(reg["status"], "WAITING");
    assert_eq!(reg["registeredAt"], r["registeredAt"]);
}

/// The value of one metric line, e.g. `attach_graphql_errors_total{code="NOT_FOUND"}`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[tokio::test]
async fn metrics_count_what_clients_did() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    register(&app, "111", &[phn(60), phn(61)]).await;
    app.ok("{ healthAuthorities { code } }", json!({})).await;
    assert_eq!(
        app.error_code("{ registration(reference: \"ABCDEFGHJKMN\") { status } }", json!({})).await,
        "NOT_FOUND"
    );
    // A body that is not a GraphQL request is refused before GraphQL runs, and counted all the same.
    let url = format!("{}/graphql", app.url);
    let bad = app.http().post(&url).header("content-type", "application/json").body("{ not json").send().await;
    assert_eq!(bad.unwrap().status(), 400);
    let text = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "attach_graphql_requests_total"), 4.0);
    assert_eq!(metric(&text, "attach_graphql_failed_requests_total"), 2.0);
    assert_eq!(metric(&text, "attach_graphql_errors_total{code=\"NOT_FOUND\"}"), 1.0);
    assert_eq!(metric(&text, "attach_graphql_errors_total{code=\"INVALID_INPUT\"}"), 1.0);
    assert_eq!(metric(&text, "attach_graphql_errors_total{code=\"CONFLICT\"}"), 0.0);
    assert_eq!(metric(&text, "attach_graphql_request_duration_seconds_count"), 4.0);
    assert_eq!(metric(&text, "attach_shard_waiting_households{shard=\"IHA/111\"}"), 1.0);
    assert_eq!(metric(&text, "attach_shard_waiting_people{shard=\"IHA/111\"}"), 2.0);
    assert_eq!(metric(&text, "attach_shard_last_seq{shard=\"IHA/111\"}"), 1.0);
    assert_eq!(metric(&text, "attach_shards_running"), 89.0);
    assert_eq!(metric(&text, "attach_feed_connected{backend=\"memory\"}"), 1.0);
    assert!(!text.contains(&phn(60)), "no PHN in metrics");

    // The embedded store's group commits: every write request rides in one
    // transaction, and a registration is at least its commit and its audit record.
    let (transactions, requests) =
        (metric(&text, "attach_store_write_transactions_total"), metric(&text, "attach_store_write_requests_total"));
    assert!(transactions >= 1.0 && requests >= transactions, "{transactions} transactions, {requests} requests");
    register(&app, "111", &[phn(62)]).await;
    let text = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metric(&text, "attach_store_write_requests_total") >= requests + 2.0, "{text}");
    assert!(metric(&text, "attach_store_write_transactions_total") > transactions);
}

/// Variables are checked on every request, whatever the server keeps of a query
/// text it has seen (parsed documents): the same text with badly typed, missing
/// or out-of-range values is the client's error, `INVALID_INPUT`, every time.
#[tokio::test]
async fn badly_typed_variables_are_invalid_input_every_time() {
    const PAGE: &str = r#"query($c: String!, $n: Int, $f: WaitlistFilter) {
  waitlist(communityCode: $c, first: $n, filter: $f) { totalCount nodes { reference needs } }
}"#;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    register(&app, "111", &[phn(70)]).await;
    let coordinator = app.coordinator();
    let good = json!({ "c": "111", "n": 5 });
    let bad = [
        json!({ "c": "111", "n": "five" }),
        json!({ "c": null, "n": 5 }),
        json!({ "c": 111 }),
        json!({ "n": 5 }),
        json!({ "c": "111", "n": 9_999_999_999_i64 }),
        json!({ "c": "111", "f": { "nope": true } }),
        json!({ "c": "111", "f": { "needs": ["FLYING"] } }),
        json!({ "c": "111", "f": { "minWaitDays": -1 } }),
        json!({ "c": "111", "f": { "needs": "PREGNANCY", "minWaitDays": "ten" } }),
    ];
    for round in 0..2 {
        assert_eq!(coordinator.ok(PAGE, good.clone()).await["waitlist"]["totalCount"], 1, "round {round}");
        for variables in &bad {
            let body = coordinator.graphql(PAGE, variables.clone()).await;
            assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "round {round}, {variables}: {body}");
            assert!(body["data"].is_null() || body["data"]["waitlist"].is_null(), "no page: {body}");
        }
    }
    let good_filter = json!({ "c": "111", "f": { "needs": ["CHRONIC_COMPLEX"], "minWaitDays": 0 } });
    assert_eq!(coordinator.ok(PAGE, good_filter).await["waitlist"]["totalCount"], 1);
}

/// A waitlist page builds its items directly when only plain fields are
/// selected, and through async-graphql otherwise: both must read the same,
/// and aliases and directives must keep their meaning.
#[tokio::test]
async fn a_waitlist_page_reads_the_same_whichever_way_its_fields_are_selected() {
    const FIELDS: &str = "reference community status registeredAt householdSize needs languages \
                          placeInLine peopleAhead estimatedWaitDays providerId withdrawnReason __typename";
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    register(&app, "111", &[phn(80), phn(81)]).await;
    register(&app, "111", &[phn(82)]).await;
    let coordinator = app.coordinator();
    let nodes = |selection: String| {
        let coordinator = &coordinator;
        async move {
            let query = format!(r#"{{ waitlist(communityCode: "111", first: 5) {{ nodes {{ {selection} }} }} }}"#);
            coordinator.ok(&query, json!({})).await["waitlist"]["nodes"].clone()
        }
    };

    let plain = nodes(FIELDS.to_string()).await;
    assert_eq!(plain.as_array().unwrap().len(), 2, "{plain}");
    assert_eq!(plain[0]["__typename"], "Registration");
    assert_eq!(plain[0]["status"], "WAITING");
    assert_eq!(plain[0]["householdSize"], 2);
    assert_eq!(plain[0]["needs"], json!(["CHRONIC_COMPLEX"]));
    assert_eq!(plain[0]["languages"], json!(["en", "fr"]));
    assert!(plain[0]["providerId"].is_null() && plain[0]["withdrawnReason"].is_null());

    // A fragment, and an object field, send the items through async-graphql.
    assert_eq!(nodes(format!("... on Registration {{ {FIELDS} }}")).await, plain);
    let mut with_declines = nodes(format!("{FIELDS} declines {{ reason }}")).await;
    for node in with_declines.as_array_mut().unwrap() {
        assert_eq!(node.as_object_mut().unwrap().remove("declines"), Some(json!([])));
    }
    assert_eq!(with_declines, plain);

    // Aliases name the keys; a directive is honoured.
    let aliased = nodes("id: reference when: registeredAt reference".to_string()).await;
    assert_eq!(aliased[1]["id"], plain[1]["reference"]);
    assert_eq!(aliased[1]["when"], plain[1]["registeredAt"]);
    assert_eq!(aliased[1]["reference"], plain[1]["reference"]);
    let skipped = nodes("reference status @include(if: false)".to_string()).await;
    assert_eq!(skipped[0], json!({ "reference": plain[0]["reference"] }));
}

/// An audited read is answered only once its record is durable. Records of
/// reads answered just before a SIGKILL are still there after the restart:
/// they were in the audit journal, and the store takes them back on open.
#[tokio::test]
async fn records_of_reads_answered_before_sigkill_are_kept() {
    use attach_actors::access::Role;
    const LOG: &str = r#"{ auditLog(first: 100, filter: { subject: "reader-1" }) { nodes { operation outcome } } }"#;
    let count = |v: Value| v["auditLog"]["nodes"].as_array().unwrap().len();
    // A lease renewal is a durable commit, which would empty the journal before
    // the kill: renew rarely, so the restart has to replay it.
    let spawn = || Spawn { env: vec![("ATTACH_SHARD__LEASE_SECS".into(), "600".into())], ..Spawn::default() };
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), spawn()).await;
    register(&app, "111", &[phn(90)]).await;
    let reader = app.with_token(app.token_for("reader-1", Role::Coordinator, &["province"], None));
    for _ in 0..25 {
        reader.ok(r#"{ waitlist(communityCode: "111", first: 1) { totalCount } }"#, json!({})).await;
    }
    // Not read back before the kill: reading the audit log writes the records
    // held in the journal into the store, and the restart would have nothing to replay.
    let operations = app.token(Role::Operations, &[], None);
    drop(reader);
    app.kill();

    let app = TestApp::spawn(dir.path(), spawn()).await;
    let records = app.with_token(operations).ok(LOG, json!({})).await;
    assert_eq!(count(records.clone()), 25, "{records}");
    assert!(records["auditLog"]["nodes"].as_array().unwrap().iter().all(|r| r["operation"] == "readWaitlist"));
    let log = app.kill();
    assert!(log.contains("audit records restored from the journal"), "the journal was not replayed:\n{log}");
}

const MOVE: &str = r#"mutation($r: ID!, $c: String!) {
  moveRegistration(reference: $r, communityCode: $c) { reference community status placeInLine peopleAhead registeredAt }
}"#;

/// A household that moves keeps its reference and its registration time: in
/// the new community's line it stands where that time puts it, and so it stays
/// after SIGKILL and a restart.
#[tokio::test]
async fn a_household_that_moves_community_keeps_its_place_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let coordinator = app.coordinator();
    // Apart in time: two communities can register in the same millisecond (a
    // move then orders those two by reference).
    let apart = || tokio::time::sleep(std::time::Duration::from_millis(3));
    let early = register(&app, "112", &[phn(60)]).await;
    apart().await;
    let mover = register(&app, "111", &[phn(61), phn(62)]).await;
    apart().await;
    let late = register(&app, "112", &[phn(63)]).await;
    let vars = |c: &str| json!({ "r": mover["reference"], "c": c });

    // Bad input first: a clear code, nothing changes.
    assert_eq!(coordinator.error_code(MOVE, vars("999")).await, "NOT_FOUND");
    assert_eq!(coordinator.error_code(MOVE, json!({ "r": "not-a-reference", "c": "112" })).await, "INVALID_INPUT");
    assert_eq!(app.anonymous().error_code(MOVE, vars("112")).await, "UNAUTHENTICATED");
    let elsewhere = app.with_token(app.token(attach_actors::access::Role::Coordinator, &["community:112"], None));
    assert_eq!(elsewhere.error_code(MOVE, vars("112")).await, "FORBIDDEN", "111 is outside this coordinator's scope");
    assert_eq!(waitlist_total(&app, "112").await, 2);

    let moved = coordinator.ok(MOVE, vars("112")).await["moveRegistration"].clone();
    assert_eq!((moved["community"].as_str(), moved["status"].as_str()), (Some("112"), Some("WAITING")));
    assert_eq!(
        (moved["reference"].clone(), moved["registeredAt"].clone()),
        (mover["reference"].clone(), mover["registeredAt"].clone())
    );
    assert_eq!((moved["placeInLine"].as_u64(), moved["peopleAhead"].as_u64()), (Some(2), Some(1)));
    let again = coordinator.ok(MOVE, vars("112")).await["moveRegistration"].clone();
    assert_eq!(again, moved, "asking again changes nothing");
    assert_eq!((waitlist_total(&app, "111").await, waitlist_total(&app, "112").await), (0, 3));
    assert_eq!(app.error_code(REGISTER, household("111", &[phn(62)])).await, "CONFLICT", "the PHNs moved with it");

    // Both communities' feeds say what happened, with ids only.
    const EVENTS: &str = r#"query($c: String!) { events(communityCode: $c, first: 20) { nodes { kind reference people otherCommunity } } }"#;
    let last = |v: Value| v["events"]["nodes"].as_array().unwrap().last().unwrap().clone();
    let out = last(coordinator.ok(EVENTS, json!({ "c": "111" })).await);
    assert_eq!(
        out,
        json!({ "kind": "MOVED_OUT", "reference": mover["reference"], "people": null, "otherCommunity": "112" })
    );
    let inn = last(coordinator.ok(EVENTS, json!({ "c": "112" })).await);
    assert_eq!(
        inn,
        json!({ "kind": "MOVED_IN", "reference": mover["reference"], "people": 2, "otherCommunity": "111" })
    );

    let log = app.kill();
    assert!(!log.contains(&phn(61)), "a PHN appeared in the log");
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let coordinator = app.coordinator();
    let after = app.ok(REGISTRATION, json!({ "r": mover["reference"] })).await["registration"].clone();
    assert_eq!((after["status"].as_str(), after["placeInLine"].as_u64()), (Some("WAITING"), Some(2)));
    assert_eq!(after["registeredAt"], mover["registeredAt"]);
    let page = coordinator.ok(WAITLIST, json!({ "c": "112", "first": 5 })).await["waitlist"].clone();
    let order: Vec<Value> = page["nodes"].as_array().unwrap().iter().map(|n| n["reference"].clone()).collect();
    assert_eq!(order, [early["reference"].clone(), mover["reference"].clone(), late["reference"].clone()]);
    assert_eq!(waitlist_total(&app, "111").await, 0);
    let audit = app
        .with_token(app.token(attach_actors::access::Role::Operations, &[], None))
        .ok(
            r#"{ auditLog(first: 10, filter: { operation: "moveRegistration" }) { nodes { outcome target } } }"#,
            json!({}),
        )
        .await;
    let nodes = audit["auditLog"]["nodes"].as_array().unwrap();
    let reference = mover["reference"].as_str().unwrap();
    let shown = format!("{}…{}", &reference[..4], &reference[10..]);
    let ok = nodes.iter().filter(|n| n["outcome"] == "OK" && n["target"] == shown.as_str()).count();
    assert_eq!((ok, nodes.len()), (2, 5), "two moves, three refusals past parsing: {nodes:?}");
    // The whole reference finds them.
    let ops = app.with_token(app.token(attach_actors::access::Role::Operations, &[], None));
    let query = "query($t: String) { auditLog(first: 10, filter: { target: $t }) { nodes { operation } } }";
    let found = ops.ok(query, json!({ "t": reference })).await;
    assert!(found["auditLog"]["nodes"].as_array().unwrap().len() >= 2, "{found}");
}

/// GraphQL orders a response's fields as the query selects them. async-graphql
/// adds a query's top-level fields as each finishes, so one answered at once
/// (the regions) came out before the waitlists selected ahead of it.
#[tokio::test]
async fn a_response_lists_the_top_level_fields_in_the_order_the_query_selects_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    register(&app, "111", &[phn(90)]).await;
    let coordinator = app.coordinator();
    let query = r#"{ b: waitlist(communityCode: "112", first: 1) { totalCount }
        ...Regions
        a: waitlist(communityCode: "111", first: 1) { totalCount }
        t: __typename }
        fragment Regions on Query { z: healthAuthorities { code } }"#;
    for _ in 0..5 {
        let text = coordinator.post(query, json!({})).await.text().await.unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {text}"));
        assert!(at("b") < at("z") && at("z") < at("a") && at("a") < at("t"), "{text}");
    }
}

#[tokio::test]
async fn a_failed_non_null_top_level_field_makes_data_null() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let coordinator = app.coordinator();
    // `waitlist` is non-null: its failure makes data null, as GraphQL says, and its error says why.
    let query = r#"{ a: healthAuthorities { code } w: waitlist(communityCode: "ZZZ", first: 1) { totalCount } }"#;
    let body = coordinator.graphql(query, json!({})).await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["w"]), "{body}");
    assert!(body["errors"][0]["extensions"]["code"].is_string(), "{body}");
    // Without the failing field, the rest is answered.
    let body = coordinator.graphql(r#"{ a: healthAuthorities { code } }"#, json!({})).await;
    assert!(body["data"]["a"].as_array().is_some_and(|a| !a.is_empty()), "{body}");
    // Over a WebSocket the same.
    use futures::SinkExt;
    let token = app.token(Role::Coordinator, &["province"], None);
    let mut ws = crate::feed::connect_as(&app, "graphql-transport-ws", &token).await;
    let mut ask = async |id: &str, query: &str| {
        let start = json!({ "id": id, "type": "subscribe", "payload": { "query": query } });
        ws.send(tokio_tungstenite::tungstenite::Message::text(start.to_string())).await.unwrap();
        let answer = crate::feed::next_message(&mut ws).await;
        assert_eq!(crate::feed::next_message(&mut ws).await["type"], "complete");
        answer["payload"].clone()
    };
    let body = ask("1", query).await;
    assert_eq!((&body["data"], &body["errors"][0]["path"]), (&Value::Null, &json!(["w"])), "{body}");
    let body = ask("2", r#"{ a: healthAuthorities { code } }"#).await;
    assert!(body.get("errors").is_none() && body["data"]["a"].is_array(), "{body}");
}

/// A data directory holding a community its regions file no longer names is
/// not started on: those households would answer NOT_FOUND, their PHNs held.
#[tokio::test]
async fn a_store_holding_a_community_the_regions_file_does_not_name_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    {
        let app = TestApp::spawn(dir.path(), Spawn::default()).await;
        app.ok(REGISTER, household("111", &[phn(4_400)])).await;
    }
    // The same province, with Fernie renumbered: IHA/111 is no longer named.
    let bc = std::fs::read_to_string(crate::helpers::repo_root().join("infra/regions/bc.toml")).unwrap();
    let changed = bc.replacen("code = \"111\"\nname = \"Fernie\"", "code = \"199\"\nname = \"Fernie\"", 1);
    assert_ne!(changed, bc);
    let regions = dir.path().join("renumbered.toml");
    std::fs::write(&regions, changed).unwrap();
    let out = std::process::Command::new(crate::helpers::attach_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--regions")
        .arg(&regions)
        .env("ATTACH_LIMITS__RATE__ENABLED", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(stderr.contains("IHA/111") && stderr.contains("regions file"), "{stderr}");

    // An offline panel import with that file is refused too, before it starts a
    // shard: starting one would write IHA/199 into the store, which no file
    // could then start with.
    let file = dir.path().join("panel.csv");
    let row = format!("{},Lee,Sam,1980-05-05,98990,0F111\n", phn(4_401));
    std::fs::write(&file, format!("PHN,Surname,Given name,Date of birth,Service code,Facility\n{row}")).unwrap();
    let out = std::process::Command::new(crate::helpers::attach_bin())
        .current_dir(crate::helpers::repo_root())
        .args(["panel", "import"])
        .arg(&file)
        .args(["--provider", "P11111", "--facility", "0F111", "--data-dir"])
        .arg(dir.path())
        .arg("--regions")
        .arg(&regions)
        .env_remove("ATTACH_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("IHA/111"), "{stderr}");
    // `attach token` checks a scope against the file `--regions` names, as `serve` reads it.
    let token = |regions: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(crate::helpers::attach_bin());
        cmd.current_dir(crate::helpers::repo_root()).args(["token", "--role", "coordinator", "--scope"]);
        cmd.arg("community:199").arg("--data-dir").arg(dir.path());
        if let Some(r) = regions {
            cmd.arg("--regions").arg(r);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(token(Some(&regions)).0, "{}", token(Some(&regions)).1);
    let (minted, stderr) = token(None);
    assert!(!minted && stderr.contains("has no community 199"), "{stderr}");
    let missing = dir.path().join("no-such-regions.toml");
    let (minted, stderr) = token(Some(&missing));
    assert!(!minted && stderr.contains("no-such-regions.toml"), "a file named must be read: {stderr}");
    // The data directory still starts with the file it was made with, its household there.
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let body = app.coordinator().graphql("{ waitlist(communityCode: \"111\") { totalCount } }", json!({})).await;
    assert_eq!(body["data"]["waitlist"]["totalCount"], 1, "{body}");
}

/// A community code that does not parse is refused as the argument that carried it.
#[tokio::test]
async fn a_bad_community_code_names_its_argument() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let coordinator = app.coordinator();
    for (query, field) in [
        (r#"{ waitlist(communityCode: "no such!") { totalCount } }"#, "communityCode"),
        (r#"{ communityStatistics(code: "no such!") { waitingHouseholds } }"#, "code"),
        (r#"mutation { runMatching(communityCode: "no such!") { proposals { id } } }"#, "communityCode"),
    ] {
        let body = coordinator.graphql(query, json!({})).await;
        let error = &body["errors"][0]["extensions"];
        assert_eq!((&error["code"], &error["field"]), (&json!("INVALID_INPUT"), &json!(field)), "{query}: {body}");
    }
}

/// GraphQL over HTTP: a client that accepts `application/graphql-response+json`
/// is answered in it, with 400 for a request that never ran; others as before.
#[tokio::test]
async fn the_graphql_response_media_type_says_with_its_status_whether_the_request_ran() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let token = app.token(Role::Coordinator, &["province"], None);
    let post = |query: &str, accept: Option<&str>| {
        let mut request = app.http().post(format!("{}/graphql", app.url)).bearer_auth(&token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let request = request.json(&json!({ "query": query }));
        async move {
            let r = request.send().await.unwrap();
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status().as_u16(), kind, r.json::<Value>().await.unwrap())
        }
    };
    const NEWER: &str = "application/graphql-response+json, application/json;q=0.9";
    // Did not validate: 400, errors and no data.
    let (status, kind, body) = post("{ noSuchField }", Some(NEWER)).await;
    assert_eq!((status, kind.as_str()), (400, "application/graphql-response+json"), "{body}");
    assert!(body.get("data").is_none() && body["errors"][0]["message"].is_string(), "{body}");
    // Ran, with a field that failed: 200, data and errors.
    let (status, kind, body) = post(r#"{ w: waitlist(communityCode: "ZZZ") { totalCount } }"#, Some(NEWER)).await;
    assert_eq!((status, kind.as_str()), (200, "application/graphql-response+json"), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["w"]), "{body}");
    let (status, _, body) = post("{ healthAuthorities { code } }", Some(NEWER)).await;
    assert_eq!(status, 200, "{body}");
    // Not asked for: application/json and 200, as before.
    for accept in [None, Some("application/json")] {
        let (status, kind, body) = post("{ noSuchField }", accept).await;
        assert_eq!((status, kind.as_str()), (200, "application/json"), "{accept:?}: {body}");
        assert_eq!(body["data"], Value::Null, "{body}");
    }
}

#[tokio::test]
async fn a_small_document_of_many_spread_fields_is_refused_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let fields: Vec<String> = (0..1000).map(|i| format!("a{i}: __typename")).collect();
    let spreads = vec!["...F"; 3000].join(" ");
    let query = format!("{{ {spreads} }} fragment F on Query {{ {} }}", fields.join(" "));
    let started = std::time::Instant::now();
    let body = app.graphql(&query, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("more than 2000 fields"), "{body}");
    // Refused by counting, not after seconds of validation (13 s before, debug build).
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    // Over a WebSocket too, where the connection stays open.
    use futures::SinkExt;
    let token = app.token(Role::Coordinator, &["province"], None);
    let mut ws = crate::feed::connect_as(&app, "graphql-transport-ws", &token).await;
    let start = json!({ "id": "big", "type": "subscribe", "payload": { "query": query } });
    ws.send(tokio_tungstenite::tungstenite::Message::text(start.to_string())).await.unwrap();
    let refused = crate::feed::next_message(&mut ws).await;
    assert_eq!((&refused["type"], &refused["id"]), (&json!("error"), &json!("big")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "INVALID_INPUT", "{refused}");
    assert!(started.elapsed() < std::time::Duration::from_secs(6), "{:?}", started.elapsed());
    // A waitlist page still passes.
    let page = app.coordinator().ok(r#"{ waitlist(communityCode: "111", first: 5) { totalCount } }"#, json!({})).await;
    assert_eq!(page["waitlist"]["totalCount"], 0);
}

#[tokio::test]
async fn a_deeply_nested_literal_is_refused_before_parsing_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    // 4 KB that overflowed a request thread's stack while parsing and aborted the process.
    let deep = |n: usize| format!("{{ community(code: {}{}) {{ code }} }}", "[".repeat(n), "]".repeat(n));
    for query in [
        deep(2_000),
        deep(30_000),
        format!("query($x: String = {}1{}) {{ __typename }}", "[".repeat(5_000), "]".repeat(5_000)),
    ] {
        let response = app.anonymous().post(&query, json!({})).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("nests brackets more than 64 deep"), "{body}");
    }
    // Over a WebSocket too, where the connection stays open.
    use futures::SinkExt;
    let token = app.token(Role::Coordinator, &["province"], None);
    let mut ws = crate::feed::connect_as(&app, "graphql-transport-ws", &token).await;
    let start = json!({ "id": "deep", "type": "subscribe", "payload": { "query": deep(3_000) } });
    ws.send(tokio_tungstenite::tungstenite::Message::text(start.to_string())).await.unwrap();
    let refused = crate::feed::next_message(&mut ws).await;
    assert_eq!((&refused["type"], &refused["id"]), (&json!("error"), &json!("deep")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "INVALID_INPUT", "{refused}");
    // Ordinary nesting still parses, and the server is still there.
    let shallow = app.anonymous().graphql(&deep(20), json!({})).await;
    let message = shallow["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("Invalid value for argument"), "parsed and validated: {shallow}");
    app.assert_accepting().await;
    let page = app.coordinator().ok(r#"{ waitlist(communityCode: "111", first: 5) { totalCount } }"#, json!({})).await;
    assert_eq!(page["waitlist"]["totalCount"], 0);
}

#[tokio::test]
async fn a_body_without_a_query_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let url = format!("{}/graphql", app.url);
    // `{}` and `[]` were answered 200 with the parser's diagram of an empty document.
    for body in ["{}", "[]", " [] ", r#"{"query": null}"#, r#"{"query": "  "}"#, r#"[{"query": "{ __typename }"}]"#] {
        let response =
            app.http().post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}: {answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap().contains("with a `query` string"), "{answer}");
    }
    let fine = app.http().post(&url).header("content-type", "application/json").body(r#" {"query": "{ __typename }"}"#);
    assert_eq!(fine.send().await.unwrap().json::<Value>().await.unwrap()["data"]["__typename"], "Query");
}

#[tokio::test]
async fn only_json_runs_so_no_web_page_can_send_operations_through_its_visitors() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let url = format!("{}/graphql", app.url);
    let who = phn(9_201);
    let body = json!({ "query": REGISTER, "variables": household("111", std::slice::from_ref(&who)) }).to_string();
    // What an HTML form or a script's "simple" request sends, with no CORS preflight: it used to run.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request = app.http().post(&url).body(body.clone());
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap().contains("application/json"), "{answer}");
    }
    // A form with a file, from nobody signed in.
    let form = "--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\":\"{ __typename }\"}\r\n\
                --b\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{\"0\":[\"variables.f\"]}\r\n\
                --b\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.csv\"\r\n\r\nx\r\n--b--\r\n";
    let response = app
        .http()
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("signed-in caller"), "{answer}");
    // The same body as JSON (a charset named too) registers the PHN, so none of the above did.
    let json = app.http().post(&url).header("content-type", "Application/JSON; charset=utf-8").body(body);
    let answer: Value = json.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["data"]["registerHousehold"]["status"], "WAITING", "{answer}");
}

#[tokio::test]
async fn a_mutation_naming_one_response_key_twice_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let registered = app.anonymous().ok(REGISTER, household("111", &[phn(9_301)])).await;
    let reference = registered["registerHousehold"]["reference"].clone();
    // Each copy ran: the answer held `WITHDRAWN` and a `CONFLICT` at one path.
    let twice = r#"mutation($r: ID!) { w: withdrawRegistration(reference: $r, reason: "a") { status }
        ...F } fragment F on Mutation { w: withdrawRegistration(reference: $r, reason: "a") { status } }"#;
    let body = app.anonymous().graphql(twice, json!({ "r": reference })).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("`w` more than once"), "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing ran: {body}");
    let status = app
        .anonymous()
        .ok("query($r: ID!) { registration(reference: $r) { status } }", json!({ "r": reference }))
        .await;
    assert_eq!(status["registration"]["status"], "WAITING");
}

#[tokio::test]
async fn a_mutation_missing_a_required_variable_runs_none_of_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let who = phn(9_101);
    // The first field needs no variable, the second reads `$r`, which is not sent.
    let mutation = r#"mutation($input: RegisterHouseholdInput!, $r: ID!) {
      a: registerHousehold(input: $input) { reference }
      b: withdrawRegistration(reference: $r, reason: "typo") { status }
    }"#;
    let variables = household("111", std::slice::from_ref(&who));
    let body = app.anonymous().graphql(mutation, variables.clone()).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("`$r` of type `ID!` is required"), "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing ran: {body}");
    // A nullable variable left out where a required argument takes it: refused
    // whole too (a tester's mutation registered its household, then failed).
    let nullable = r#"mutation($input: RegisterHouseholdInput!, $r: ID!, $why: String) {
      a: registerHousehold(input: $input) { reference }
      b: withdrawRegistration(reference: $r, reason: $why) { status }
    }"#;
    let mut given = variables.clone();
    given["r"] = json!("ABCDEFGHJKMN");
    let body = app.anonymous().graphql(nullable, given).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("`$why` of type `String`"), "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing ran: {body}");
    // Over a WebSocket too.
    use futures::SinkExt;
    let token = app.token(Role::Coordinator, &["province"], None);
    let mut ws = crate::feed::connect_as(&app, "graphql-transport-ws", &token).await;
    let start = json!({ "id": "m", "type": "subscribe", "payload": { "query": mutation, "variables": variables } });
    ws.send(tokio_tungstenite::tungstenite::Message::text(start.to_string())).await.unwrap();
    // Refused when the message is admitted: the protocol's `error`, as a request error is over HTTP.
    let refused = crate::feed::next_message(&mut ws).await;
    assert_eq!((&refused["type"], &refused["id"]), (&json!("error"), &json!("m")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "INVALID_INPUT", "{refused}");
    // An input-object variable of another shape (here a list around the household)
    // is refused whole too: it ran the first field, then failed INTERNAL, and its
    // message, echoing the household with its PHN, went to the log (checked when
    // the app is dropped).
    let two = r#"mutation($a: RegisterHouseholdInput!, $b: RegisterHouseholdInput!) {
      a: registerHousehold(input: $a) { reference }
      b: registerHousehold(input: $b) { reference }
    }"#;
    let (other, listed) = (phn(9_102), household("111", &[phn(9_103)])["input"].clone());
    let variables = json!({ "a": household("111", std::slice::from_ref(&other))["input"], "b": [listed] });
    let body = app.anonymous().graphql(two, variables).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing ran: {body}");
    app.anonymous().ok(REGISTER, household("111", &[other])).await;
    // The PHN was never registered, so it registers now.
    let registered = app.anonymous().ok(REGISTER, household("111", &[who])).await;
    assert_eq!(registered["registerHousehold"]["status"], "WAITING");
    // A directive GraphQL's validation refuses is refused before anything runs, too.
    for (query, says) in [
        ("{ __typename @foo }", "unknown directive @foo"),
        ("{ __typename @skip(if: false) @skip(if: true) }", "@skip is used twice"),
    ] {
        let body = app.anonymous().graphql(query, json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains(says), "{body}");
    }
}

#[tokio::test]
async fn every_answer_has_a_body_with_a_code_and_skipped_fields_give_an_empty_object() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    for (method, path, status) in
        [("PUT", "/graphql", 405), ("POST", "/healthz", 405), ("GET", "/nowhere", 404), ("POST", "/nowhere", 404)]
    {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.http().request(method.clone(), format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(body["errors"][0]["extensions"]["code"].is_string(), "{method} {path}: {body}");
    }
    let query = r#"query($t: Boolean!) { healthAuthorities @skip(if: $t) { code } }"#;
    let body = app.graphql(query, json!({ "t": true })).await;
    assert_eq!(body, json!({ "data": {} }), "null data reads as a failure");
    // A variable left out takes its default, as GraphQL coerces it: async-graphql's
    // @skip and @include did not read it.
    let defaults = r#"query($t: Boolean = true, $f: Boolean = false) { a: healthAuthorities @skip(if: $t) { code } b: healthAuthorities @include(if: $f) { code } __typename }"#;
    assert_eq!(app.graphql(defaults, json!({})).await, json!({ "data": { "__typename": "Query" } }));
    // Spaces around a community's code are taken away here too, as where one registers.
    let spaced = app.graphql(r#"{ community(code: " 111 ") { code } }"#, json!({})).await;
    assert_eq!(spaced, json!({ "data": { "community": { "code": "111" } } }));
}

/// GraphiQL's page loads every file from this server (none from a CDN, so it
/// works without internet), under a policy that runs this server's scripts
/// only; `graphiql = false` turns it off.
#[tokio::test]
async fn graphiql_is_served_whole_by_the_server_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    for path in ["/", "/graphql"] {
        let page = app.http().get(format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        let html = page.text().await.unwrap();
        let files: Vec<&str> = html.split(['"', '\'']).filter(|s| s.ends_with(".js") || s.ends_with(".css")).collect();
        assert_eq!(files.len(), 5, "{html}");
        for file in files {
            assert!(file.starts_with("/graphiql/"), "{file} is not this server's");
            let r = app.http().get(format!("{}{file}", app.url)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{file}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(kind.starts_with(if file.ends_with(".js") { "text/javascript" } else { "text/css" }), "{kind}");
            assert!(r.bytes().await.unwrap().len() > 100, "{file}");
        }
    }
    let missing = app.http().get(format!("{}/graphiql/4.1.2/other.js", app.url)).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    drop(app);

    let env = vec![("ATTACH_GRAPHIQL".to_string(), "false".to_string())];
    let off = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let page = off.http().get(format!("{}/", off.url)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 404);
    let body: Value = page.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("graphiql = false"), "{body}");
    let file = off.http().get(format!("{}/graphiql/4.1.2/graphiql.min.js", off.url)).send().await.unwrap();
    assert_eq!(file.status().as_u16(), 404, "nor its files");
    assert_eq!(off.ok("{ __typename }", json!({})).await, json!({ "__typename": "Query" }), "the API stays");
}

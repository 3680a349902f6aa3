//! The provider side over HTTP: panel files uploaded as a provider's EMR gives
//! them (good rows, each kind of bad row, BOM and CRLF, empty, oversized), the
//! resulting panels and waitlists, the `attach panel import` command, and a
//! whole-panel transfer killed with SIGKILL half way and resumed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use attach_actors::access::Role;

use crate::helpers::{Spawn, TestApp, attach_bin, phn, repo_root};

/// The callers of these tests, as development tokens minted with `attach token`.
struct Tokens {
    /// MD001, medical director of clinic 0F111.
    director: String,
    /// Provider P10001 (homed in 111).
    p1: String,
    /// Provider P20002 (homed in 112).
    p2: String,
    /// A coordinator for the province.
    coordinator: String,
}

fn mint(data_dir: &std::path::Path, role: &str, subject: &str, scope: Option<&str>, provider: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(attach_bin());
    cmd.arg("token").arg("--data-dir").arg(data_dir).args(["--role", role, "--subject", subject]);
    if let Some(s) = scope {
        cmd.args(["--scope", s]);
    }
    if let Some(p) = provider {
        cmd.args(["--provider", p]);
    }
    let out = cmd.output().expect("attach token runs");
    assert!(out.status.success(), "attach token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a token is text").trim().to_string()
}

impl Tokens {
    fn mint(data_dir: &std::path::Path) -> Tokens {
        Tokens {
            director: mint(data_dir, "medical_director", "dr-md001", None, Some("MD001")),
            p1: mint(data_dir, "provider", "dr-p10001", None, Some("P10001")),
            p2: mint(data_dir, "provider", "dr-p20002", None, Some("P20002")),
            coordinator: mint(data_dir, "coordinator", "coord-1", Some("province"), None),
        }
    }
}

/// Posts a GraphQL request as the caller `token` and returns the whole response.
async fn call(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let request = app.http().post(format!("{}/graphql", app.url)).bearer_auth(token);
    let response = request.json(&json!({ "query": query, "variables": variables })).send().await.unwrap();
    response.json().await.expect("a JSON response")
}

/// [`call`], failing the test on any error; returns `data`.
async fn ok(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let r = call(app, token, query, variables).await;
    assert!(r.get("errors").is_none(), "unexpected errors: {r:#}");
    r["data"].clone()
}

const SUBMIT: &str = r#"mutation($p: ID!, $f: String!, $file: Upload!) {
  submitPanel(providerId: $p, facilityNumber: $f, file: $file) {
    totalRows accepted attachedFromWaitlist alreadyOnPanel invalidPhn malformed duplicate conflict
    headerSkipped panelSize rows { line status message }
  }
}"#;

const REGISTER: &str =
    r#"mutation($input: RegisterHouseholdInput!) { registerHousehold(input: $input) { reference } }"#;

const REGISTRATION: &str =
    r#"query($r: ID!) { registration(reference: $r) { status providerId householdSize placeInLine } }"#;

fn row(i: u32, surname: &str) -> String {
    format!("{},{surname},Alex,1984-03-09,98990,0F111", phn(i))
}

/// A surname of letters only, different for every `i`.
fn surname(i: u32) -> String {
    let mut s = String::from("Pat");
    let mut n = i;
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

async fn setup_registry(app: &TestApp, t: &Tokens) {
    ok(
        app,
        &t.director,
        r#"mutation { upsertClinic(input: { facilityNumber: "0F111", community: "111", name: "Fernie Family Practice",
             address: "491 2nd Ave, Fernie", medicalDirectorId: "MD001" }) { facilityNumber } }"#,
        json!({}),
    )
    .await;
    for (id, community) in [("P10001", "111"), ("P20002", "112")] {
        ok(
            app,
            &t.director,
            r#"mutation($id: ID!, $c: String!) { upsertProvider(input: { id: $id, givenName: "Maya", surname: "Okafor",
                 kind: PHYSICIAN, community: $c }) { id } }"#,
            json!({ "id": id, "c": community }),
        )
        .await;
        let p = ok(
            app,
            &t.director,
            r#"mutation($id: ID!) { addProviderToClinic(facilityNumber: "0F111", providerId: $id) { clinics } }"#,
            json!({ "id": id }),
        )
        .await;
        assert_eq!(p["addProviderToClinic"]["clinics"], json!(["0F111"]));
    }
}

async fn submit(app: &TestApp, token: &str, provider: &str, file: &[u8]) -> Value {
    let variables = json!({ "p": provider, "f": "0F111", "file": null });
    let response = app.upload_raw(Some(token), SUBMIT, variables, "file", file).await;
    response.json().await.expect("a JSON response")
}

async fn submitted(app: &TestApp, token: &str, provider: &str, file: &[u8]) -> Value {
    let r = submit(app, token, provider, file).await;
    assert!(r.get("errors").is_none(), "unexpected errors: {r:#}");
    r["data"]["submitPanel"].clone()
}

fn statuses(report: &Value) -> Vec<(u64, String)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

async fn register(app: &TestApp, community: &str, phns: &[String]) -> Value {
    let members: Vec<Value> = phns
        .iter()
        .map(|p| json!({ "phn": p, "givenName": "Sam", "surname": "Lee", "dateOfBirth": "1984-03-09" }))
        .collect();
    let input = json!({ "input": { "community": community, "postalCode": "V0B 1M0", "members": members } });
    app.ok(REGISTER, input).await["registerHousehold"]["reference"].clone()
}

async fn panel_size(app: &TestApp, token: &str, provider: &str) -> u64 {
    let r =
        ok(app, token, "query($p: ID!) { panel(providerId: $p, first: 1) { panelSize } }", json!({ "p": provider }));
    r.await["panel"]["panelSize"].as_u64().unwrap()
}

#[tokio::test]
async fn panel_files_are_reported_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("ATTACH_LIMITS__MAX_PANEL_BYTES".to_string(), "20000".to_string()),
        ("ATTACH_LIMITS__MAX_PANEL_ROWS".to_string(), "100".to_string()),
        ("ATTACH_SHARD__PANEL_CHUNK_ROWS".to_string(), "3".to_string()),
    ];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let t = Tokens::mint(dir.path());
    setup_registry(&app, &t).await;

    // Waiting: a single in 111, a family of two in 112 (another community).
    let single = register(&app, "111", &[phn(1)]).await;
    let family = register(&app, "112", &[phn(2), phn(3)]).await;
    // Another provider's patient.
    let theirs = submitted(&app, &t.p2, "P20002", format!("{}\n", row(50, "Other")).as_bytes()).await;
    assert_eq!(theirs["accepted"], 1);

    // A valid file: header, LF line ends.
    let valid = format!(
        "PHN,Surname,Given name,Date of birth,Service code,Facility\n{}\n{}\n{}\n",
        row(10, "Ng"),
        row(11, "Roy"),
        row(12, "Fox")
    );
    let r = submitted(&app, &t.p1, "P10001", valid.as_bytes()).await;
    assert_eq!(
        (r["totalRows"].as_u64(), r["accepted"].as_u64(), r["headerSkipped"].as_bool()),
        (Some(3), Some(3), Some(true))
    );
    assert_eq!(statuses(&r), [(2, "ACCEPTED".into()), (3, "ACCEPTED".into()), (4, "ACCEPTED".into())]);
    assert_eq!(r["panelSize"], 3);

    // Each kind of bad row, with a byte-order mark and CRLF line ends.
    let mixed = [
        "PHN,Surname,Given,DOB,Code,Facility".to_string(),
        row(1, "Lee"),                                                                  // 2: waiting in 111
        row(2, "Lee"),                                               // 3: waiting in 112, with family
        "9698648215,Tremblay,Alex,1984-03-09,98990,0F111".into(),    // 4: check digit
        format!("{},Tremblay,Alex,1984-03-09,98990", phn(20)),       // 5: five fields
        row(10, "Ng"),                                               // 6: already on this panel
        row(50, "Other"),                                            // 7: on another panel
        format!("{},Tremblay,Alex,1984-03-09,00100,0F111", phn(21)), // 8: service code
        row(22, "Quoted"),                                           // 9
        row(22, "Quoted"),                                           // 10: duplicate
        String::new(),                                               // 11: blank
        format!("\"{}\",\"Smith-Jones\",\"Anne Marie\",19900102,98990,0f111", phn(23)), // 12: quoted
    ]
    .join("\r\n");
    let file = [b"\xEF\xBB\xBF".as_slice(), mixed.as_bytes(), b"\r\n"].concat();
    let r = submitted(&app, &t.p1, "P10001", &file).await;
    let expected = [
        (2, "ATTACHED_FROM_WAITLIST"),
        (3, "ATTACHED_FROM_WAITLIST"),
        (4, "INVALID_PHN"),
        (5, "MALFORMED"),
        (6, "ALREADY_ON_PANEL"),
        (7, "CONFLICT"),
        (8, "MALFORMED"),
        (9, "ACCEPTED"),
        (10, "DUPLICATE"),
        (12, "ACCEPTED"),
    ];
    assert_eq!(statuses(&r), expected.map(|(l, s)| (l, s.to_string())));
    assert!(r["headerSkipped"].as_bool().unwrap());
    for row in r["rows"].as_array().unwrap() {
        let status = row["status"].as_str().unwrap();
        let on_panel = ["ACCEPTED", "ATTACHED_FROM_WAITLIST", "ALREADY_ON_PANEL"].contains(&status);
        assert_eq!(row["message"].is_null(), on_panel, "problems say why: {row}");
        if let Some(m) = row["message"].as_str() {
            assert!(!m.contains(&phn(20)) && !m.contains("Tremblay"), "no values in messages: {m}");
        }
    }
    assert!(r["rows"][5]["message"].as_str().unwrap().contains("another provider's panel"));
    assert_eq!(r["panelSize"], 3 + 4);

    // The waitlists: the single left theirs attached; only the family member on
    // the panel left the family's, which keeps its place.
    let s = app.ok(REGISTRATION, json!({ "r": single })).await["registration"].clone();
    assert_eq!((s["status"].as_str(), s["providerId"].as_str()), (Some("ATTACHED"), Some("P10001")));
    let f = app.ok(REGISTRATION, json!({ "r": family })).await["registration"].clone();
    assert_eq!(
        (f["status"].as_str(), f["householdSize"].as_u64(), f["placeInLine"].as_u64()),
        (Some("WAITING"), Some(1), Some(1))
    );
    let waiting = ok(&app, &t.coordinator, r#"{ waitlist(communityCode: "111") { totalCount } }"#, json!({})).await;
    assert_eq!(waiting["waitlist"]["totalCount"], 0);
    // The coordinator's feed of the family's community shows the member leaving for the panel.
    let events = ok(
        &app,
        &t.coordinator,
        r#"{ events(communityCode: "112") { nodes { kind reference providerId people } } }"#,
        json!({}),
    )
    .await;
    let attached: Vec<&Value> =
        events["events"]["nodes"].as_array().unwrap().iter().filter(|e| e["kind"] == "LEFT_FOR_PANEL").collect();
    assert!(
        attached.iter().any(|e| e["reference"] == family && e["providerId"] == "P10001" && e["people"] == 1),
        "{events:#}"
    );
    // The other provider's patient did not move.
    assert_eq!(panel_size(&app, &t.p2, "P20002").await, 1);

    // The same file again changes nothing.
    let again = submitted(&app, &t.p1, "P10001", &file).await;
    let unchanged: Vec<(u64, String)> = expected
        .map(|(l, s)| {
            let s = if ["ACCEPTED", "ATTACHED_FROM_WAITLIST"].contains(&s) { "ALREADY_ON_PANEL" } else { s };
            (l, s.to_string())
        })
        .to_vec();
    assert_eq!(statuses(&again), unchanged);
    assert_eq!(again["panelSize"], 7);

    // The panel shows where each patient came from.
    let panel = ok(
        &app,
        &t.p1,
        r#"{ panel(providerId: "P10001", first: 100) { nodes { surname source facilityNumber reference serviceCode } } }"#,
        json!({}),
    )
    .await;
    let nodes = panel["panel"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 7);
    assert!(
        nodes
            .iter()
            .all(|n| n["source"] == "SUBMITTED" && n["facilityNumber"] == "0F111" && n["serviceCode"] == "98990")
    );
    assert_eq!(nodes.iter().filter(|n| !n["reference"].is_null()).count(), 2, "two came off the waitlist");
    let report = ok(&app, &t.p1, r#"{ panelReport(providerId: "P10001") { panelSize itemised adults } }"#, json!({}));
    assert_eq!(report.await["panelReport"]["itemised"], 7);
    let clinic =
        r#"{ clinicPanelReport(facilityNumber: "0F111") { providers { providerId itemised } total { itemised } } }"#;
    assert_eq!(ok(&app, &t.director, clinic, json!({})).await["clinicPanelReport"]["total"]["itemised"], 8);
    let refused = call(&app, &t.p2, r#"{ panelReport(providerId: "P10001") { itemised } }"#, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "another provider's report");
    let refused = submit(&app, &t.p2, "P10001", format!("{}\n", row(40, "Sneak")).as_bytes()).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "another provider's panel");
    let malformed = submit(&app, &t.p2, "P10001", b"not,a,patient,row,at,all\nnor,this\n").await;
    assert_eq!(malformed["errors"][0]["extensions"]["code"], "FORBIDDEN", "whatever the file holds: {malformed}");
    for empty in [b"".as_slice(), b"PHN,Surname,Given,DOB,Code,Facility\r\n"] {
        let r = submit(&app, &t.p2, "P10001", empty).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "an empty file too: {r}");
    }
    let variables = json!({ "p": "P10001", "f": "0F111", "file": null });
    // Without signing in, refused before the request is read (a web page could
    // otherwise send one, a file and other fields, from its visitors' browsers).
    let anonymous = app.upload_raw(None, SUBMIT, variables, "file", b"x\n").await;
    assert_eq!(anonymous.status(), 401);
    let anonymous = anonymous.json::<Value>().await.unwrap();
    assert_eq!(anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // Refused at the role's gate, before the file is read, and audited like any refused submission.
    let coordinator = app.token(Role::Coordinator, &["province"], None);
    let variables = json!({ "p": "P10001", "f": "0F111", "file": null });
    let response = app.upload_raw(Some(&coordinator), SUBMIT, variables, "file", b"x\n").await;
    assert_eq!(response.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let operations = app.token(Role::Operations, &[], None);
    let log = r#"{ auditLog(first: 50, filter: { operation: "submitPanel" }) { nodes { role target outcome } } }"#;
    let records = app.with_token(operations).ok(log, json!({})).await["auditLog"]["nodes"].clone();
    let by = |role: &str| records.as_array().unwrap().iter().filter(|r| r["role"] == role).cloned().collect::<Vec<_>>();
    let refused = by("COORDINATOR");
    assert_eq!(refused.len(), 1, "{records}");
    assert_eq!((&refused[0]["outcome"], &refused[0]["target"]), (&json!("FORBIDDEN"), &json!("P10001")));
    // The unsigned upload was refused before it was read: it names no record, and leaves none.
    assert!(by("PUBLIC").is_empty(), "{records}");

    // Empty files, and files past the limits: INVALID_INPUT naming the limit; nothing changes.
    for empty in [b"".as_slice(), b"\xEF\xBB\xBF\r\n\r\n", b"PHN,Surname,Given,DOB,Code,Facility\r\n"] {
        let r = submit(&app, &t.p1, "P10001", empty).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{r:#}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "file");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("no patient rows"));
    }
    let many: String = (100..201).map(|i| row(i, "Many") + "\n").collect();
    assert!(many.len() < 20_000);
    let r = submit(&app, &t.p1, "P10001", many.as_bytes()).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("limit of 100 patient rows"), "{r:#}");
    let big: String =
        (300..550).map(|i| format!("{},{},Alex,1984-03-09,98990,0F111\n", phn(i), "Long".repeat(14))).collect();
    assert!(big.len() > 20_000 && big.len() < 20_000 + 64 * 1024);
    let r = submit(&app, &t.p1, "P10001", big.as_bytes()).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("limit of 20000 bytes"), "{r:#}");
    let huge = vec![b'9'; 200_000];
    let variables = json!({ "p": "P10001", "f": "0F111", "file": null });
    let resp = app.upload_raw(Some(&t.p1), SUBMIT, variables, "file", &huge).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    // The limit named is the one the provider can act on, the file's.
    let says = body["errors"][0]["message"].as_str().unwrap();
    assert!(says.contains("a panel file may be at most 20000 bytes (limits.max_panel_bytes)"), "{says}");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 7, "refused files changed nothing");
    // The larger cap is the file's: the operations are held to a JSON request's, and a multipart
    // request without a file is refused (it would get around that cap).
    let padded = format!("{SUBMIT}\n#{}", "x".repeat(70 * 1024));
    let variables = json!({ "p": "P10001", "f": "0F111", "file": null });
    let resp =
        app.upload_raw(Some(&t.p1), &padded, variables, "file", format!("{}\n", row(41, "Pad")).as_bytes()).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("operations are larger than 65536"), "{body}");
    let no_file = "--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\":\"{ __typename }\"}\r\n\
                   --b\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{}\r\n--b--\r\n";
    let resp = app
        .http()
        .post(format!("{}/graphql", app.url))
        .header("content-type", "multipart/form-data; boundary=b")
        .bearer_auth(&t.p1)
        .body(no_file)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 7);

    // A provider not at the clinic cannot submit for it.
    let off = r#"mutation { removeProviderFromClinic(facilityNumber: "0F111", providerId: "P20002") { id } }"#;
    let refused = call(&app, &t.p1, off, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "only the clinic's director");
    ok(&app, &t.director, off, json!({})).await;
    let r = submit(&app, &t.p2, "P20002", format!("{}\n", row(60, "Late")).as_bytes()).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "CONFLICT");

    // A removal with a PHN that is not one changes nothing and names it.
    let provider = app.with_token(t.p1.clone());
    const REMOVE: &str =
        r#"mutation($phns: [String!]!) { removeFromPanel(providerId: "P10001", phns: $phns) { removed } }"#;
    let bad = provider.graphql(REMOVE, json!({ "phns": [phn(11), "9999999999"] })).await;
    assert_eq!(bad["errors"][0]["extensions"], json!({ "code": "INVALID_INPUT", "field": "phns[1]" }), "{bad:#}");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 7);

    // Removal frees the patient: they can register again.
    let removed = ok(
        &app,
        &t.p1,
        r#"mutation($phns: [String!]!) { removeFromPanel(providerId: "P10001", phns: $phns) { removed notOnPanel } }"#,
        json!({ "phns": [phn(11), phn(99), phn(11)] }),
    )
    .await;
    assert_eq!(removed["removeFromPanel"], json!({ "removed": 1, "notOnPanel": 1 }), "named twice, counted once");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 6);
    register(&app, "111", &[phn(11)]).await;
    let log = app.kill();
    for i in [1, 2, 10, 20, 22, 50] {
        assert!(!log.contains(&phn(i)), "a PHN appeared in the log");
    }

    // `attach panel import` on the same data directory (the server stopped).
    let file = dir.path().join("panel.csv");
    std::fs::write(&file, format!("\u{feff}{}\r\n{}\r\n{}\r\n", row(70, "Cli"), row(71, "Cli"), row(10, "Ng")))
        .unwrap();
    let out = std::process::Command::new(attach_bin())
        .current_dir(repo_root())
        .args(["panel", "import"])
        .arg(&file)
        .args(["--provider", "P10001", "--facility", "0F111", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 rows: 3 on the panel (2 new, 0 from the waitlist, 1 already there)"), "{stdout}");
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 8);
}

#[tokio::test]
async fn a_transfer_killed_half_way_resumes_with_every_patient_on_exactly_one_panel() {
    const PATIENTS: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ATTACH_SHARD__TRANSFER_CHUNK".to_string(), "3".to_string())];
    let spawn = Spawn { env, ..Spawn::default() };
    let app = TestApp::spawn(dir.path(), spawn.clone()).await;
    let t = Tokens::mint(dir.path());
    setup_registry(&app, &t).await;
    let file: String = (1..=PATIENTS).map(|i| row(1000 + i, &surname(i)) + "\n").collect();
    let r = submitted(&app, &t.p1, "P10001", file.as_bytes()).await;
    assert_eq!(r["accepted"].as_u64(), Some(u64::from(PATIENTS)));

    const TRANSFER: &str = r#"mutation { transferPanel(fromProviderId: "P10001", toProviderId: "P20002",
        facilityNumber: "0F111", idempotencyKey: "fernie-2026-11") { status total moved } }"#;
    const PROGRESS: &str = r#"{ panelTransfer(fromProviderId: "P10001", idempotencyKey: "fernie-2026-11") { status total moved skipped } }"#;
    let asked = ok(&app, &t.director, TRANSFER, json!({})).await["transferPanel"].clone();
    assert_eq!(asked["status"], "AWAITING_AGREEMENT", "the director asks; the two providers agree");
    // The receiving provider finds it among their transfers.
    const MINE: &str = r#"{ panelTransfers(providerId: "P20002") { idempotencyKey fromProviderId status } }"#;
    let mine = ok(&app, &t.p2, MINE, json!({})).await["panelTransfers"].clone();
    assert_eq!(
        mine,
        json!([{ "idempotencyKey": "fernie-2026-11", "fromProviderId": "P10001", "status": "AWAITING_AGREEMENT" }])
    );
    // The provider taking the panel on agrees; the director cannot agree for the other.
    const AGREE: &str = r#"mutation($agree: Boolean!) { answerPanelTransfer(fromProviderId: "P10001",
        idempotencyKey: "fernie-2026-11", agree: $agree) { status sourceAgreed receiverAgreed total moved } }"#;
    let half = ok(&app, &t.p2, AGREE, json!({ "agree": true })).await["answerPanelTransfer"].clone();
    assert_eq!(
        (&half["status"], &half["sourceAgreed"], &half["receiverAgreed"]),
        (&json!("AWAITING_AGREEMENT"), &json!(false), &json!(true))
    );
    let refused = call(&app, &t.director, AGREE, json!({ "agree": true })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(panel_size(&app, &t.p2, "P20002").await, 0, "nobody moves before both agree");
    let started = ok(&app, &t.p1, AGREE, json!({ "agree": true })).await["answerPanelTransfer"].clone();
    assert_eq!((started["status"].as_str(), started["total"].as_u64()), (Some("RUNNING"), Some(u64::from(PATIENTS))));

    // Kill the process as soon as some, not all, patients have moved.
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved_at_kill = loop {
        let p = ok(&app, &t.director, PROGRESS, json!({})).await["panelTransfer"].clone();
        let moved = p["moved"].as_u64().unwrap();
        if moved > 0 {
            assert_eq!(p["status"], "RUNNING", "the transfer finished before it could be killed: {p}");
            break moved;
        }
        assert!(Instant::now() < deadline, "the transfer never started moving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    app.kill();

    // Restart: the transfer resumes by itself; asking again with the key resumes it too.
    let app = TestApp::spawn(dir.path(), spawn).await;
    let resumed = ok(&app, &t.director, TRANSFER, json!({})).await["transferPanel"].clone();
    assert!(resumed["moved"].as_u64().unwrap() >= moved_at_kill);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let p = ok(&app, &t.director, PROGRESS, json!({})).await["panelTransfer"].clone();
        if p["status"] == "COMPLETED" {
            break p;
        }
        assert!(Instant::now() < deadline, "the transfer never completed: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((done["moved"].as_u64(), done["skipped"].as_u64()), (Some(u64::from(PATIENTS)), Some(0)));

    // Every patient on exactly one panel: the source is empty, the receiver has each once.
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 0);
    assert_eq!(panel_size(&app, &t.p2, "P20002").await, u64::from(PATIENTS));
    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let query = r#"query($a: String) { panel(providerId: "P20002", first: 100, after: $a) {
                     nodes { surname source } pageInfo { hasNextPage endCursor } } }"#;
        let page = ok(&app, &t.p2, query, json!({ "a": after })).await["panel"].clone();
        for n in page["nodes"].as_array().unwrap() {
            assert_eq!(n["source"], "TRANSFERRED");
            assert!(seen.insert(n["surname"].as_str().unwrap().to_string()), "a patient twice on the panel");
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, (1..=PATIENTS).map(surname).collect::<BTreeSet<_>>());
    // The receiving panel holds the PHNs: nobody can take them silently.
    for i in [1, PATIENTS / 2, PATIENTS] {
        let r = app
            .graphql(
                REGISTER,
                json!({ "input": { "community": "111", "postalCode": "V0B 1M0",
                    "members": [{ "phn": phn(1000 + i), "givenName": "Sam", "surname": "Lee", "dateOfBirth": "1950-01-01" }] } }),
            )
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "CONFLICT");
    }
    let back = submitted(&app, &t.p1, "P10001", format!("{}\n", row(1001, &surname(1))).as_bytes()).await;
    assert_eq!(statuses(&back), [(1, "CONFLICT".to_string())]);
}

/// Runs `attach panel import` with `args` after the file, and `env`; returns (success, stdout, stderr).
fn import(file: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(attach_bin());
    cmd.current_dir(repo_root()).args(["panel", "import"]).arg(file).args(args).env_remove("ATTACH_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("attach panel import runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn attach_panel_import_submits_to_a_running_server_and_refuses_its_locked_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let t = Tokens::mint(dir.path());
    setup_registry(&app, &t).await;
    let waiting = register(&app, "111", &[phn(81)]).await;
    let file = dir.path().join("panel.csv");
    let rows = [row(80, "Cli"), row(81, "Cli"), "9698648215,Tremblay,Alex,1984-03-09,98990,0F111".into()];
    std::fs::write(&file, format!("PHN,Surname,Given,DOB,Code,Facility\r\n{}\r\n", rows.join("\r\n"))).unwrap();
    let who = ["--provider", "P10001", "--facility", "0F111"];

    // Offline, on the running server's data directory: refused, saying why and what to do.
    let data_dir = dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = import(&file, &[&who[..], &["--data-dir", data_dir]].concat(), &[]);
    assert!(!ok, "an offline import ran beside the server: {stdout}");
    assert!(stderr.contains("is in use") && stderr.contains("--url"), "{stderr}");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 0, "the refused import changed nothing");
    // Offline into a mistyped directory: refused, and no empty store is made there.
    let typo = dir.path().join("dta");
    let (ok, _, stderr) = import(&file, &[&who[..], &["--data-dir", typo.to_str().unwrap()]].concat(), &[]);
    assert!(!ok && stderr.contains("no Attach store"), "{stderr}");
    assert!(!typo.join("attach.redb").exists());

    // Online: the upload the server answers, printed as the offline import prints it.
    let online = [&who[..], &["--url", &app.url, "--token", &t.p1]].concat();
    let (ok, stdout, stderr) = import(&file, &online, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("line 4: INVALID_PHN: "), "{stdout}");
    assert!(
        stdout.contains(
            "3 rows: 2 on the panel (1 new, 1 from the waitlist, 0 already there), 1 not taken; panel size 2"
        ),
        "{stdout}"
    );
    for i in [80, 81] {
        assert!(!stdout.contains(&phn(i)) && !stderr.contains(&phn(i)), "a PHN in the command's output");
    }
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 2);
    let reg = app.ok(REGISTRATION, json!({ "r": waiting })).await;
    assert_eq!(reg["registration"]["status"], "ATTACHED", "the waiting patient left the waitlist");

    // Again, with the token from ATTACH_TOKEN and the endpoint's own URL: nothing new.
    let endpoint = format!("{}/graphql", app.url);
    let (ok, stdout, stderr) =
        import(&file, &[&who[..], &["--url", &endpoint]].concat(), &[("ATTACH_TOKEN", t.p1.as_str())]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("3 rows: 2 on the panel (0 new, 0 from the waitlist, 2 already there)"), "{stdout}");

    // The server decides who may submit: another provider's token is refused with its code.
    let (ok, stdout, stderr) = import(&file, &[&who[..], &["--url", &app.url, "--token", &t.p2]].concat(), &[]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("FORBIDDEN"), "{stderr}");
    let (ok, _, stderr) = import(&file, &[&who[..], &["--url", &app.url, "--token", "not-a-token"]].concat(), &[]);
    assert!(!ok && stderr.contains("HTTP 401") && stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert_eq!(panel_size(&app, &t.p1, "P10001").await, 2);
}

/// async-graphql trusts the text its multipart reader writes where a file
/// goes (`#__graphql_file__:<n>`): sent by a client in a JSON request, with no
/// number it panicked reading the argument (before any access check), and
/// with a number past the request's files it panicked opening it. Refused now,
/// with nothing run and the server answering.
#[tokio::test]
async fn a_file_named_but_not_carried_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let t = Tokens::mint(dir.path());
    setup_registry(&app, &t).await;
    let forged = |index: &str| json!({ "p": "P10001", "f": "0F111", "file": format!("#__graphql_file__:{index}") });
    for (caller, index) in [(None, "x"), (None, ""), (Some(&t.p1), "0"), (Some(&t.p1), "7")] {
        let who = match caller {
            Some(token) => app.with_token(token.clone()),
            None => app.anonymous(),
        };
        let r = who.graphql(SUBMIT, forged(index)).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{index}: {r}");
    }
    let literal = r##"mutation { submitPanel(providerId: "P10001", facilityNumber: "0F111", file: "#__graphql_file__:x") { accepted } }"##;
    assert_eq!(app.anonymous().graphql(literal, json!({})).await["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    // Escaped (`\u0023` is `#`), as a literal or a variable's default: the parsed value is what counts.
    let escaped = r#"mutation { submitPanel(providerId: "P10001", facilityNumber: "0F111", file: "\u0023__graphql_file__:x") { accepted } }"#;
    assert_eq!(app.anonymous().graphql(escaped, json!({})).await["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    let by_default = r#"mutation($f: Upload! = "\u0023__graphql_file__:x") { submitPanel(providerId: "P10001", facilityNumber: "0F111", file: $f) { accepted } }"#;
    assert_eq!(
        app.anonymous().graphql(by_default, json!({})).await["errors"][0]["extensions"]["code"],
        "INVALID_INPUT"
    );
    // A real upload still works.
    let good = submitted(&app, &t.p1, "P10001", format!("{}\n", row(1, "Real")).as_bytes()).await;
    assert_eq!(good["accepted"], 1);
    assert!(!app.log.lock().unwrap().contains("panicked"), "a request panicked");
}

//! The load tool against a real `attach`: its counts agree with the server's own `/metrics`.

use std::process::Command;

use attach_actors::access::Role;
use serde_json::Value;

use crate::helpers::{Spawn, TestApp, loadtest_bin};

/// The value of one metric line (0 when the line is absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn scrape(app: &TestApp) -> String {
    app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn the_load_tools_counts_agree_with_the_servers_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let before = scrape(&app).await;
    let report_path = dir.path().join("report.json");
    let html_path = dir.path().join("report.html");
    // Registrations succeed; waitlist reads without a token are refused: both
    // kinds of outcome must be counted the same on both sides.
    let out = Command::new(loadtest_bin())
        .args(["run", "--url", &app.url, "--target", "ha:IHA", "--mix", "register=3,waitlist=1"])
        .args(["--duration", "3", "--concurrency", "4", "--max-requests", "3000", "--progress", "1"])
        .args(["--subscribers", "2"])
        .arg("--json")
        .arg(&report_path)
        .arg("--html")
        .arg(&html_path)
        .output()
        .expect("attach-loadtest runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("registerHousehold") && printed.contains("req/s"), "{printed}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let after = scrape(&app).await;

    let sent = report["graphql_requests"].as_u64().unwrap();
    let served = metric(&after, "attach_graphql_requests_total") - metric(&before, "attach_graphql_requests_total");
    assert!(sent > 20, "a few seconds of load sends more than {sent} requests");
    assert_eq!(served, sent, "the server answered as many GraphQL requests as the tool sent");

    let op =
        |name: &str| report["operations"].as_array().unwrap().iter().find(|o| o["operation"] == name).cloned().unwrap();
    let refused = op("waitlistPage")["errors"]["UNAUTHENTICATED"].as_u64().unwrap_or(0);
    let code = "attach_graphql_errors_total{code=\"UNAUTHENTICATED\"}";
    assert_eq!(metric(&after, code) - metric(&before, code), refused, "refusals counted alike");
    assert_eq!(op("waitlistPage")["ok"], 0);
    let failed = metric(&after, "attach_graphql_failed_requests_total")
        - metric(&before, "attach_graphql_failed_requests_total");
    assert_eq!(failed, report["failed"].as_u64().unwrap(), "failed requests counted alike");

    // Every acknowledged registration is on a waitlist of the target.
    let registered = op("registerHousehold")["ok"].as_u64().unwrap();
    assert!(registered > 0);
    let waiting: u64 = after
        .lines()
        .filter(|l| l.starts_with("attach_shard_waiting_households{shard=\"IHA/"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    assert_eq!(waiting, registered, "the waitlists hold exactly the registrations the tool saw succeed");

    // Without a token the feed refuses both subscribers: none is counted as watching.
    assert_eq!((report["feed"]["subscribers"].as_u64(), report["feed"]["refused"].as_u64()), (Some(0), Some(2)));

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg") && html.contains("registerHousehold"));
}

#[tokio::test]
async fn no_progress_line_is_printed_after_the_deadline_while_subscribers_take_their_last_events() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let token = app.token(Role::Coordinator, &["province"], None);
    // A target naming one community twice is that community (a tester had an overlap refused as unknown).
    let out = Command::new(loadtest_bin())
        .args(["run", "--url", &app.url, "--target", "community:111,community:111", "--mix", "register=1"])
        .args(["--token", &token])
        .args(["--duration", "2", "--concurrency", "2", "--max-requests", "400", "--progress", "1"])
        .args(["--subscribers", "2"])
        .output()
        .expect("attach-loadtest runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("feed: 2 subscribers (0 refused)"), "{printed}");
    // Every event committed after a subscriber's first one reached it (the tool reads the tail back).
    assert!(printed.contains("0 missed notices, 0 never delivered nor told missed"), "{printed}");
    let late: Vec<_> = printed
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split_once(" s]").and_then(|(t, _)| t.trim().parse::<u64>().ok()))
        .filter(|&t| t > 2)
        .collect();
    assert!(late.is_empty(), "progress after the 2 s deadline: {printed}");
}

#[tokio::test]
async fn feed_latency_counts_every_event_each_subscriber_received_past_a_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    // Pings every second: the run outlasts two of them, so a subscriber that
    // did not answer would be closed and its events counted missing.
    let env = vec![("ATTACH_FEED__KEEPALIVE_SECS".to_string(), "1".to_string())];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let token = app.token(attach_actors::access::Role::Coordinator, &["community:111"], None);
    let out = Command::new(loadtest_bin())
        .args(["feed-latency", "--url", &app.url, "--community", "111", "--subscribers", "3", "--events", "40"])
        .args(["--rate", "12", "--phn-start", "71000000", "--max-seconds", "30", "--json", "--token", &token])
        .output()
        .expect("attach-loadtest runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&printed).unwrap();
    for figure in ["from_send", "from_event_time"] {
        assert_eq!(report[figure]["ok"], 120, "3 subscribers x 40 events: {report}");
        assert_eq!(report[figure]["errors"], 0, "none missing: {report}");
    }
    let (send_p50, event_p50) = (report["from_send"]["p50_ms"].as_f64(), report["from_event_time"]["p50_ms"].as_f64());
    assert!(send_p50.unwrap() > 0.0 && event_p50.unwrap() >= 0.0, "{report}");
}

/// Sums a per-shard metric over one health authority's shards.
fn sum_over(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn the_move_and_update_scenarios_leave_the_waitlists_as_they_report() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let token = app.token(attach_actors::access::Role::Coordinator, &["ha:IHA"], None);
    let report_path = dir.path().join("report.json");
    let out = Command::new(loadtest_bin())
        .args(["run", "--url", &app.url, "--target", "ha:IHA", "--mix", "move=1,update=1", "--token", &token])
        .args(["--duration", "3", "--concurrency", "4", "--max-requests", "600", "--progress", "0"])
        .arg("--json")
        .arg(&report_path)
        .output()
        .expect("attach-loadtest runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let op = |name: &str| report["operations"].as_array().unwrap().iter().find(|o| o["operation"] == name).cloned();
    let ok = |name: &str| op(name).and_then(|o| o["ok"].as_u64()).unwrap_or(0);
    let (registered, moved, updated) = (ok("registerHousehold"), ok("moveRegistration"), ok("updateHousehold"));
    assert!(moved > 0 && updated > 0, "{printed}");
    assert_eq!(report["failed"], 0, "{printed}");

    // Moves stay within IHA: every registered household is still waiting there,
    // and each update added one newborn.
    let after = scrape(&app).await;
    assert_eq!(sum_over(&after, "attach_shard_waiting_households{shard=\"IHA/"), registered);
    assert_eq!(sum_over(&after, "attach_shard_waiting_people{shard=\"IHA/"), registered + updated);
}

#[test]
fn a_server_that_goes_away_does_not_make_a_run_spin() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn(dir.path(), Spawn::default()));
    let report = dir.path().join("report.json");
    let run = Command::new(loadtest_bin())
        .current_dir(crate::helpers::repo_root())
        .args(["run", "--duration", "3", "--target", "community:111", "--mix", "register=1", "--url", &app.url])
        .arg("--json")
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("attach-loadtest runs");
    // The server goes away a moment into the run; the rest of it is refused at once.
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(app);
    run.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let failed = report["failed"].as_u64().unwrap();
    // Each worker pauses after a request that never reached the server: hundreds, not tens of thousands.
    assert!(failed > 0 && failed < 2_000, "{failed} refused requests in about 2 s: {report}");
}

#[test]
fn a_server_that_never_answers_cannot_hold_a_run_past_its_bounds() {
    // Accepts connections and holds them, answering nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    for args in [
        &["run", "--duration", "1", "--target", "community:111", "--mix", "register=1"][..],
        &["read-path", "--seconds", "1", "--warmup", "0"][..],
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(loadtest_bin()).args(args).args(["--url", &url]).output().expect("attach-loadtest runs");
        let took = started.elapsed();
        // Each request is given up after 10 s; the run ends then instead of waiting for good.
        assert!(took < std::time::Duration::from_secs(30), "{args:?} took {took:?}");
        assert!(!out.status.success(), "{args:?}: a run against a silent server fails");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("timed out"), "{args:?}: {stderr}");
    }
}

#[test]
fn runs_outside_their_bounds_are_refused_before_they_start() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("p.csv");
    let file = file.to_str().unwrap();
    for args in [
        &["read-path", "--concurrency", "0"][..],
        &["read-path", "--concurrency", "5000"][..],
        &["read-path", "--seconds", "300", "--warmup", "60"][..],
        &["read-path", "--seconds", "0"][..],
        &["read-path", "--max-requests", "0"][..],
        &["run", "--upload-rows", "0"][..],
        &["run", "--duration", "0"][..],
        &["run", "--max-requests", "0"][..],
        &["registration-burst", "--concurrency", "0"][..],
        &["registration-burst", "--seconds", "0"][..],
        &["registration-burst", "--max-requests", "0"][..],
        &["feed-latency", "--subscribers", "0"][..],
        &["feed-latency", "--subscribers", "20000"][..],
        &["panel-upload", "--max-seconds", "601"][..],
        &["panel-upload", "--rows", "0"][..],
        &["panel-upload", "--uploads", "0"][..],
        &["feed-latency", "--events", "0"][..],
        &["panel-file", "--rows", "3000000", "--out", file][..],
        // PHN bodies have eight digits: a start near or past the end (a tester saw
        // panics, runs spinning past their time bound, and runs of nothing that passed).
        &["panel-file", "--rows", "3", "--phn-start", "99999998", "--out", file][..],
        &["feed-latency", "--phn-start", "100000000"][..],
        &["panel-upload", "--phn-start", "99999000"][..],
        &["run", "--phn-start", "100000000"][..],
        &["run", "--upload-phn-start", "99999999"][..],
        &["registration-burst", "--phn-start", "99900000"][..],
    ] {
        let mut command = Command::new(loadtest_bin());
        command.args(args);
        if args[0] != "panel-file" {
            // Nothing listens there: a run that started would fail for another reason.
            command.args(["--url", "http://127.0.0.1:9"]);
        }
        let run = command.output().expect("attach-loadtest runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} ran");
        let bounds = [" to ", "at most", "at least", "leaves room for"];
        assert!(bounds.iter().any(|b| stderr.contains(b)), "{args:?} was refused for its bounds: {stderr}");
    }
    assert!(!std::path::Path::new(file).exists(), "no file was written");
}

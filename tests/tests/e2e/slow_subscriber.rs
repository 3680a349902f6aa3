//! A subscriber that stops reading: the server does not buffer for it without
//! bound; it is told from which sequence it missed events, the gap is
//! recoverable through `events`, and new events flow again.

use std::time::{Duration, Instant};

use attach_actors::access::Role;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Spawn, TestApp, phn};

/// The process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const EVENTS: u32 = 1_500;

#[tokio::test]
async fn a_slow_subscriber_gets_a_missed_notice_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("ATTACH_FEED__BUFFER", "16"), ("ATTACH_LIMITS__SOCKET_SEND_BUFFER_BYTES", "16384")];
    let spawn = Spawn { env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Spawn::default() };
    let app = TestApp::spawn(dir.path(), spawn).await;
    let token = app.token(Role::Coordinator, &["province"], None);

    // A client with a tiny receive buffer that reads the acknowledgement and then nothing.
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/graphql").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    let query = "subscription { communityEvents(communityCode: \"111\") { kind seq missedAfterSeq reference at community healthAuthority } }";
    ws.send(Message::text(json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }).to_string()))
        .await
        .unwrap();

    // A burst of registrations while the subscriber reads nothing.
    let pid = app.pid();
    let before = rss_kib(pid);
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let (client, endpoint) = (app.http().clone(), format!("{}/graphql", app.url));
        let phns: Vec<String> = (worker..EVENTS).step_by(8).map(|i| phn(1_000 + i)).collect();
        tasks.push(tokio::spawn(async move {
            for phn in phns {
                let body = json!({
                    "query": "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
                    "variables": { "i": { "community": "111", "postalCode": "V0B 1M0", "members": [
                        { "phn": phn, "givenName": "Sam", "surname": "Lee", "dateOfBirth": "1990-01-01" }
                    ] } },
                });
                let r: Value = client.post(&endpoint).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(r.get("errors").is_none(), "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let grown_kib = rss_kib(pid).saturating_sub(before);

    // Now read what the server kept for us.
    let mut seqs = Vec::new();
    let mut missed_after = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seqs.last() != Some(&u64::from(EVENTS)) {
        assert!(Instant::now() < deadline, "the stream never reached the last event; got {} events", seqs.len());
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await else {
            panic!("the stream ended or stalled after {} events", seqs.len());
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        let event = &message["payload"]["data"]["communityEvents"];
        match event["kind"].as_str() {
            Some("MISSED") => {
                assert!(missed_after.is_none(), "one notice for one gap");
                missed_after = event["missedAfterSeq"].as_u64();
                assert_eq!(
                    missed_after,
                    Some(seqs.last().copied().unwrap_or(0)),
                    "the notice names the last delivered"
                );
            }
            Some("REGISTERED") => seqs.push(event["seq"].as_u64().unwrap()),
            _ => panic!("unexpected message {message}"),
        }
    }
    let missed_after = missed_after.expect("the slow subscriber was told it missed events");
    assert!(seqs.len() < EVENTS as usize, "events were dropped for it, not buffered: got all {EVENTS}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "still in sequence order");
    let resumed = seqs.iter().copied().find(|s| *s > missed_after).unwrap();
    assert!(resumed > missed_after + 1, "there is a real gap after the notice");
    assert!(grown_kib < 64 * 1024, "the server grew {grown_kib} KiB while the subscriber did not read");

    // The gap is recoverable through the catch-up query, a page at a time.
    const EVENTS_AFTER: &str =
        "query($a: Int!) { events(communityCode: \"111\", afterSeq: $a, first: 100) { nodes { seq } } }";
    let seqs_after = |page: Value| -> Vec<u64> {
        page["events"]["nodes"].as_array().unwrap().iter().map(|n| n["seq"].as_u64().unwrap()).collect()
    };
    let first = seqs_after(app.coordinator().ok(EVENTS_AFTER, json!({ "a": missed_after })).await);
    assert_eq!(first, (missed_after + 1..=missed_after + 100).collect::<Vec<_>>(), "the start of the gap");
    let last = seqs_after(app.coordinator().ok(EVENTS_AFTER, json!({ "a": resumed - 2 })).await);
    assert_eq!(last.first(), Some(&(resumed - 1)), "the end of the gap");
}

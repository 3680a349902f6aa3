//! Spans leave the process over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set: a receiver in the test takes the exporter's requests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Spawn, TestApp, phn};

/// What an OTLP/HTTP receiver was sent: each request's path and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal HTTP/1.1 receiver on a free loopback port: reads each request
/// (headers, then `content-length` bytes) and answers 200.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end + 4..end + 4 + length].to_vec();
                    buf.drain(..end + 4 + length);
                    sink.lock().unwrap().push((path, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_carry_no_phn_or_name() {
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint),
        // Export every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let person = phn(9_001);
    let household = json!({ "i": { "community": "111", "postalCode": "V0B 1M0", "languages": ["en"],
        "members": [{ "phn": person, "givenName": "Zephyrine", "surname": "Quackenbush", "dateOfBirth": "1984-03-09" }] } });
    app.ok("mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }", household).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let bodies: Vec<Vec<u8>> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path == "/v1/traces")
            .map(|(_, body)| body.clone())
            .collect();
        let all = bodies.concat();
        if all.windows(b"mutation".len()).any(|w| w == b"mutation") {
            break all;
        }
        assert!(Instant::now() < deadline, "no span of the mutation was exported; log:\n{}", app.log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let has = |text: &str| exported.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(has("POST /graphql") && has("attach"), "the request's server span and the service's name");
    for private in [person.as_str(), "Zephyrine", "Quackenbush"] {
        assert!(!has(private), "an exported span carries personal data");
    }
    assert!(!app.log.lock().unwrap().contains("panicked"), "the exporter panicked");
}

#[tokio::test]
async fn a_collector_that_cannot_be_reached_is_logged_once() {
    // Nothing listens on a port bound and dropped at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), format!("http://127.0.0.1:{port}")),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
    ];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    for _ in 0..3 {
        app.ok("{ healthAuthorities { code } }", json!({})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.log_shows("spans could not be exported").await;
    let told = app.log.lock().unwrap().matches("spans could not be exported").count();
    assert_eq!(told, 1, "once, not at every export");
}

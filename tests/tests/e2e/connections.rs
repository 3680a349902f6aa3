//! Connections that stall: a request's head or body that never finishes, a
//! connection that sends nothing, and more connections than the server keeps.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Spawn, TestApp};

async fn spawn(dir: &std::path::Path, settings: &[(&str, &str)]) -> TestApp {
    let env = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TestApp::spawn(dir, Spawn { env, ..Spawn::default() }).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap()
}

/// Everything the server sends until it closes the connection, and how long that took
/// (at most `within`: a connection still open then is a failure).
async fn until_closed(mut tcp: TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "still open after {within:?}; got {:?}", String::from_utf8_lossy(&got));
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

#[tokio::test]
async fn a_connection_that_stalls_is_closed_after_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        spawn(dir.path(), &[("ATTACH_LIMITS__HEADER_READ_SECS", "1"), ("ATTACH_LIMITS__BODY_READ_SECS", "1")]).await;
    // Half a request's head, a connection that sends nothing, and a body that stops
    // part way: each was held open for as long as the client liked (slowloris).
    let mut half_head = connect(&app).await;
    half_head.write_all(b"POST /graphql HTTP/1.1\r\nHost: attach\r\nContent-Ty").await.unwrap();
    let silent = connect(&app).await;
    let mut half_body = connect(&app).await;
    let head =
        "POST /graphql HTTP/1.1\r\nHost: attach\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    half_body.write_all(head.as_bytes()).await.unwrap();
    half_body.write_all(br#"{"query":"#).await.unwrap();

    let (said, took) = until_closed(half_head, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(500), "closed too soon: {took:?} {said}");
    until_closed(silent, Duration::from_secs(10)).await;
    let (said, _) = until_closed(half_body, Duration::from_secs(10)).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("stopped arriving") && said.contains("INVALID_INPUT"), "{said}");
    // A kept-alive connection idle past the deadline is closed too, after its answer.
    let mut kept = connect(&app).await;
    let body = r#"{"query":"{ __typename }"}"#;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: attach\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    kept.write_all(request.as_bytes()).await.unwrap();
    let (said, _) = until_closed(kept, Duration::from_secs(10)).await;
    assert!(said.starts_with("HTTP/1.1 200") && said.contains(r#""__typename":"Query""#), "{said}");
    // And the server still answers.
    let answer = app.anonymous().graphql("{ __typename }", serde_json::json!({})).await;
    assert_eq!(answer["data"]["__typename"], "Query");
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_room_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), &[("ATTACH_LIMITS__MAX_CONNECTIONS", "3")]).await;
    // Stalled connections are kept up to the limit (the test client may hold one
    // of the three, kept alive since it asked whether the server was ready); the
    // next is closed as soon as it is accepted, before anything is read.
    let mut held = Vec::new();
    let refused = loop {
        let mut tcp = connect(&app).await;
        let _ = tcp.write_all(b"POST /graphql HTTP/1.1\r\n").await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(700), tcp.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => panic!("a half request was answered"),
            Err(_) => held.push(tcp),
        }
        if held.len() > 3 {
            break false;
        }
    };
    assert!(refused && (2..=3).contains(&held.len()), "refused {refused}, held {}", held.len());
    drop(held);
    // Room again once they go.
    let http = reqwest::Client::new();
    let mut answered = false;
    for _ in 0..50 {
        let r = http.post(format!("{}/graphql", app.url)).json(&serde_json::json!({ "query": "{ __typename }" }));
        if r.send().await.is_ok_and(|r| r.status() == 200) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "no room came back");
    app.log_shows("connections refused").await;

    // A WebSocket keeps its place for as long as it is open (the upgrade ended
    // hyper's connection, which gave the place back at once).
    let token = app.token(attach_actors::access::Role::Coordinator, &["province"], None);
    let mut sockets = Vec::new();
    let mut refused = false;
    for _ in 0..5 {
        match tokio::time::timeout(Duration::from_secs(3), socket(&app, &token)).await {
            Ok(Some(ws)) => sockets.push(ws),
            _ => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused && sockets.len() <= 3, "refused {refused}, open {}", sockets.len());
}

/// A signed-in graphql-transport-ws connection, or none if the server would not keep it.
async fn socket(
    app: &TestApp,
    token: &str,
) -> Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.ok()?;
    let init =
        serde_json::json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.ok()?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => Some(ws),
        _ => None,
    }
}

#[tokio::test]
async fn a_page_of_another_origin_may_not_open_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), &[("ATTACH_LIMITS__WEBSOCKET_ORIGINS", "[\"https://coordinators.example.ca\"]")]).await;
    let host = app.url.trim_start_matches("http://").to_string();
    let upgrade = |origin: Option<&str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{host}/graphql").into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    // Any page could open one without asking, and an anonymous socket registers households.
    match upgrade(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("not refused: {:?}", other.map(|(_, r)| r.status())),
    }
    // This server's own pages (GraphiQL), an origin listed, and clients that send no origin.
    let own = format!("http://{host}");
    for origin in [Some(own.as_str()), Some("https://coordinators.example.ca"), None] {
        assert!(upgrade(origin).await.is_ok(), "{origin:?}");
    }
}

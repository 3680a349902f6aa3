//! The live match feed over WebSocket, and catch-up after a gap.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{phn, Spawn, TestApp};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, protocol: &str) -> Ws {
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
    ws.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    let ack = next_message(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// The next protocol message that is not a keep-alive.
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            if !matches!(v["type"].as_str(), Some("ping" | "pong" | "ka")) {
                return v;
            }
        }
    }
}

/// The next event of a `graphql-transport-ws` subscription.
async fn next_event(ws: &mut Ws) -> Value {
    let msg = next_message(ws).await;
    assert_eq!(msg["type"], "next", "{msg}");
    msg["payload"]["data"]["communityEvents"].clone()
}

async fn register(app: &TestApp, community: &str, n: u32) -> String {
    let data = app
        .ok(
            "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
            json!({ "i": { "community": community, "postalCode": "V0B 1M0",
                "members": [{ "phn": phn(n), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-01-01" }] } }),
        )
        .await;
    data["registerHousehold"]["reference"].as_str().unwrap().to_string()
}

const SUBSCRIBE: &str = "subscription($c: String!, $after: Int) { communityEvents(communityCode: $c, afterSeq: $after) { community seq kind reference people } }";

#[tokio::test]
async fn coordinators_see_their_community_live_in_order_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "c": "111" } } }).to_string(),
    ))
    .await
    .unwrap();

    // Nothing from another community; events of ours in sequence order.
    register(&app, "112", 1).await;
    let first = register(&app, "111", 2).await;
    let second = register(&app, "111", 3).await;
    let e1 = next_event(&mut ws).await;
    assert_eq!((e1["community"].as_str(), e1["seq"].as_u64(), e1["kind"].as_str()), (Some("111"), Some(1), Some("REGISTERED")));
    assert_eq!(e1["reference"], first.as_str());
    assert_eq!(e1["people"], 1);
    let e2 = next_event(&mut ws).await;
    assert_eq!((e2["seq"].as_u64(), e2["reference"].as_str()), (Some(2), Some(second.as_str())));
    let third = register(&app, "111", 4).await;
    let e3 = next_event(&mut ws).await;
    assert_eq!((e3["seq"].as_u64(), e3["reference"].as_str()), (Some(3), Some(third.as_str())), "still nothing from 112");

    // Catch-up by query.
    let page = app.ok("{ events(communityCode: \"111\", afterSeq: 1) { lastSeq hasMore nodes { seq kind reference } } }", json!({})).await;
    let seqs: Vec<u64> = page["events"]["nodes"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page["events"]["lastSeq"], 3);

    // A reconnecting coordinator replays from its last sequence, then continues live.
    drop(ws);
    let mut again = connect(&app, "graphql-transport-ws").await;
    again
        .send(Message::text(
            json!({ "id": "2", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "c": "111", "after": 1 } } })
                .to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_event(&mut again).await["seq"], 2);
    assert_eq!(next_event(&mut again).await["seq"], 3);
    register(&app, "111", 5).await;
    assert_eq!(next_event(&mut again).await["seq"], 4);

    // A subscription to an unknown community is refused with a code.
    again
        .send(Message::text(
            json!({ "id": "3", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "c": "999" } } }).to_string(),
        ))
        .await
        .unwrap();
    // (an execution error: graphql-transport-ws carries it in a `next` with `errors`, then `complete`)
    let refused = next_message(&mut again).await;
    assert_eq!(refused["id"], "3", "{refused}");
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{refused}");
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let mut ws = connect(&app, "graphql-ws").await;
    ws.send(Message::text(
        json!({ "id": "1", "type": "start", "payload": { "query": SUBSCRIBE, "variables": { "c": "222" } } }).to_string(),
    ))
    .await
    .unwrap();
    let reference = register(&app, "222", 9).await;
    let msg = next_message(&mut ws).await;
    assert_eq!(msg["type"], "data", "{msg}");
    assert_eq!(msg["payload"]["data"]["communityEvents"]["reference"], reference.as_str());
}

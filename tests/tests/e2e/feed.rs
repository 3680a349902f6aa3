//! The live match feed over WebSocket, and catch-up after a gap.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use attach_actors::access::Role;

use crate::helpers::{Spawn, TestApp, phn};
use crate::redis::RedisServer;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A subscription connection as a coordinator for the whole province (the
/// token travels in `connection_init`, as browsers must send it).
async fn connect(app: &TestApp, protocol: &str) -> Ws {
    connect_as(app, protocol, &app.token(Role::Coordinator, &["province"], None)).await
}

pub(crate) async fn connect_as(app: &TestApp, protocol: &str, token: &str) -> Ws {
    connect_to(&app.url, protocol, token).await
}

/// A subscription connection to the server at `url` (`http://…`), signed in with `token`.
pub(crate) async fn connect_to(url: &str, protocol: &str, token: &str) -> Ws {
    let mut request = format!("{}/graphql", url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack = next_message(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// The next protocol message that is not a keep-alive.
pub(crate) async fn next_message(ws: &mut Ws) -> Value {
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
pub(crate) async fn next_event(ws: &mut Ws) -> Value {
    let msg = next_message(ws).await;
    assert_eq!(msg["type"], "next", "{msg}");
    msg["payload"]["data"]["communityEvents"].clone()
}

pub(crate) async fn register(app: &TestApp, community: &str, n: u32) -> String {
    let data = app
        .ok(
            "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
            json!({ "i": { "community": community, "postalCode": "V0B 1M0",
                "members": [{ "phn": phn(n), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-01-01" }] } }),
        )
        .await;
    data["registerHousehold"]["reference"].as_str().unwrap().to_string()
}

pub(crate) const SUBSCRIBE: &str = "subscription($c: String!, $after: Int) { communityEvents(communityCode: $c, afterSeq: $after) { community seq kind reference people missedAfterSeq } }";

#[tokio::test]
async fn coordinators_see_their_community_live_in_order_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    ws.send(Message::text(
        // afterSeq 0: whatever commits before the subscription starts is replayed, so no event is lost to the race.
        json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "c": "111", "after": 0 } } }).to_string(),
    ))
    .await
    .unwrap();

    // Nothing from another community; events of ours in sequence order.
    register(&app, "112", 1).await;
    let first = register(&app, "111", 2).await;
    let second = register(&app, "111", 3).await;
    let e1 = next_event(&mut ws).await;
    assert_eq!(
        (e1["community"].as_str(), e1["seq"].as_u64(), e1["kind"].as_str()),
        (Some("111"), Some(1), Some("REGISTERED"))
    );
    assert_eq!(e1["reference"], first.as_str());
    assert_eq!(e1["people"], 1);
    let e2 = next_event(&mut ws).await;
    assert_eq!((e2["seq"].as_u64(), e2["reference"].as_str()), (Some(2), Some(second.as_str())));
    let third = register(&app, "111", 4).await;
    let e3 = next_event(&mut ws).await;
    assert_eq!(
        (e3["seq"].as_u64(), e3["reference"].as_str()),
        (Some(3), Some(third.as_str())),
        "still nothing from 112"
    );

    // Catch-up by query.
    let page = app
        .coordinator()
        .ok(
            "{ events(communityCode: \"111\", afterSeq: 1) { lastSeq hasMore nodes { seq kind reference } } }",
            json!({}),
        )
        .await;
    let seqs: Vec<u64> =
        page["events"]["nodes"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
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
            json!({ "id": "3", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "c": "999" } } })
                .to_string(),
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
        json!({ "id": "1", "type": "start", "payload": { "query": SUBSCRIBE, "variables": { "c": "222", "after": 0 } } }).to_string(),
    ))
    .await
    .unwrap();
    let reference = register(&app, "222", 9).await;
    let msg = next_message(&mut ws).await;
    assert_eq!(msg["type"], "data", "{msg}");
    assert_eq!(msg["payload"]["data"]["communityEvents"]["reference"], reference.as_str());
}

fn with_redis(redis: &RedisServer) -> Spawn {
    Spawn { env: vec![("ATTACH_REDIS".to_string(), redis.url())], ..Spawn::default() }
}

pub(crate) async fn subscribe(ws: &mut Ws, id: &str, community: &str, after: Option<u64>) {
    let vars = json!({ "c": community, "after": after });
    ws.send(Message::text(
        json!({ "id": id, "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": vars } }).to_string(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn two_processes_share_one_redis() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestApp::spawn(dir_a.path(), with_redis(&redis)).await;
    let b = TestApp::spawn(dir_b.path(), with_redis(&redis)).await;
    let mut ws = connect(&b, "graphql-transport-ws").await;
    subscribe(&mut ws, "1", "111", None).await;
    redis.wait_subscribed("attach:feed:IHA:111").await;

    register(&a, "112", 1).await; // another community: never delivered
    let mut refs = Vec::new();
    for n in 2..7 {
        refs.push(register(&a, "111", n).await);
    }
    for (i, r) in refs.iter().enumerate() {
        let e = next_event(&mut ws).await;
        assert_eq!(
            (e["community"].as_str(), e["seq"].as_u64()),
            (Some("111"), Some(i as u64 + 1)),
            "in sequence order, ours only"
        );
        assert_eq!(e["reference"], r.as_str(), "made on process A, seen on process B");
    }
    let ready: Value = b.http().get(format!("{}/readyz", b.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["feed"]["backend"], "redis");
    assert_eq!(ready["feed"]["connected"], true);
    let stats = b
        .coordinator()
        .ok("{ communityStatistics(code: \"111\") { feed { backend connected dropped } } }", json!({}))
        .await;
    assert_eq!(stats["communityStatistics"]["feed"]["backend"], "redis", "the statistics show the feed too");
    assert_eq!(stats["communityStatistics"]["feed"]["connected"], true);
}

#[tokio::test]
async fn a_redis_that_refuses_commands_is_reported_down() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", "s3cret-pw"]);
    let feed_of = |app: &TestApp| {
        let request = app.http().get(format!("{}/readyz", app.url));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["feed"]["connected"].clone() }
    };
    // The same Redis, with the password and (the URL without it) without: the
    // connections open either way, and without it every command is refused (NOAUTH).
    let (with_dir, without_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port);
    let served =
        TestApp::spawn(with_dir.path(), Spawn { env: vec![("ATTACH_REDIS".to_string(), url)], ..Spawn::default() });
    let refused = TestApp::spawn(without_dir.path(), with_redis(&redis));
    let (served, refused) = tokio::join!(served, refused);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while feed_of(&served).await != true {
        assert!(std::time::Instant::now() < deadline, "the feed never connected with the password");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused.log_shows("Redis refuses commands").await;
    assert_eq!(feed_of(&refused).await, false, "nothing can be published or received");
}

#[tokio::test]
async fn deployments_sharing_one_redis_keep_their_feeds_apart_by_namespace() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let in_namespace = |ns: &str| {
        let mut spawn = with_redis(&redis);
        spawn.env.push(("ATTACH_REDIS_NAMESPACE".to_string(), ns.to_string()));
        spawn
    };
    let north = TestApp::spawn(dir_a.path(), in_namespace("north")).await;
    let south = TestApp::spawn(dir_b.path(), in_namespace("south")).await;
    let mut ws = connect(&south, "graphql-transport-ws").await;
    subscribe(&mut ws, "1", "111", None).await;
    redis.wait_subscribed("south:feed:IHA:111").await;
    register(&north, "111", 1).await; // another deployment's store and sequence: never delivered here
    let ours = register(&south, "111", 2).await;
    let e = next_event(&mut ws).await;
    assert_eq!(
        (e["reference"].as_str(), e["seq"].as_u64(), e["kind"].as_str()),
        (Some(ours.as_str()), Some(1), Some("REGISTERED"))
    );
}

/// A gateway on `redis` with a subscriber to 111 that has seen the first event.
async fn first_event_through(redis: &RedisServer, dir: &std::path::Path) -> (TestApp, Ws) {
    let app = TestApp::spawn(dir, with_redis(redis)).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    subscribe(&mut ws, "1", "111", None).await;
    redis.wait_subscribed("attach:feed:IHA:111").await;
    register(&app, "111", 1).await;
    assert_eq!(next_event(&mut ws).await["seq"], 1);
    (app, ws)
}

#[tokio::test]
async fn an_event_after_a_quiet_redis_restart_is_delivered() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (app, mut ws) = first_event_through(&redis, dir.path()).await;

    // Redis restarts while nothing happens; the subscriber comes back on its own.
    redis.restart();
    redis.wait_subscribed("attach:feed:IHA:111").await;
    // The publisher learns of the restart only when it next writes: that event is sent again.
    let second = register(&app, "111", 2).await;
    let e = next_event(&mut ws).await;
    assert_eq!((e["seq"].as_u64(), e["reference"].as_str()), (Some(2), Some(second.as_str())), "no gap: {e}");
    // The event may come from the store once the subscriber is back, before the
    // publisher's own connection is (it retries with backoff): connected within seconds.
    let coordinator = app.coordinator();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let feed = loop {
        let stats =
            coordinator.ok("{ communityStatistics(code: \"111\") { feed { connected dropped } } }", json!({})).await;
        let feed = stats["communityStatistics"]["feed"].clone();
        if feed["connected"] == true || std::time::Instant::now() > deadline {
            break feed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(feed, json!({ "connected": true, "dropped": 0 }));
}

#[tokio::test]
async fn an_event_sent_again_before_the_subscriber_is_back_is_read_from_the_store() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (app, mut ws) = first_event_through(&redis, dir.path()).await;

    // Redis is away long enough for the subscriber's retries to space out; it
    // comes back, and one event follows at once. Its publisher, which learns of
    // the outage only now, connects and sends it before the subscriber is back:
    // it reaches nobody. A tester saw it delivered only with the community's
    // next event, perhaps hours later, with no notice in between.
    redis.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.restart();
    let second = register(&app, "111", 2).await;
    let e = tokio::time::timeout(Duration::from_secs(15), next_event(&mut ws))
        .await
        .expect("the event, read from the store once the subscriber is back");
    assert_eq!((e["seq"].as_u64(), e["reference"].as_str()), (Some(2), Some(second.as_str())), "{e}");
}

#[tokio::test]
async fn a_redis_outage_loses_no_mutation_and_the_subscriber_no_event() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (app, mut ws) = first_event_through(&redis, dir.path()).await;

    // Redis goes away: every mutation still succeeds and is durable.
    redis.stop();
    for n in 2..6 {
        register(&app, "111", n).await;
    }
    redis.restart();
    redis.wait_subscribed("attach:feed:IHA:111").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Value = app.http().get(format!("{}/readyz", app.url)).send().await.unwrap().json().await.unwrap();
        if ready["feed"]["connected"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the feed never reconnected: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // New events flow again, and the gap pub/sub left is read from the store
    // and delivered first: the subscriber sees every event, in order.
    for n in 6..9 {
        register(&app, "111", n).await;
    }
    let mut delivered = Vec::new();
    while delivered.last() != Some(&8) {
        assert!(delivered.len() < 20, "events 6..=8 never arrived: {delivered:?}");
        let e = next_event(&mut ws).await;
        assert_ne!(e["kind"], "MISSED", "the store filled the gap: {e}");
        delivered.push(e["seq"].as_u64().unwrap());
    }
    assert_eq!(delivered, (2..=8).collect::<Vec<_>>());

    // The gap is recoverable: every event is in the store, in order.
    let page = app
        .coordinator()
        .ok("{ events(communityCode: \"111\", afterSeq: 1, first: 100) { nodes { seq kind } } }", json!({}))
        .await;
    let seqs: Vec<u64> =
        page["events"]["nodes"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (2..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_connection_may_hold_only_so_many_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ATTACH_FEED__MAX_SUBSCRIPTIONS_PER_CONNECTION".to_string(), "2".to_string())];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    // Two subscriptions, proven live by an event on each (the server starts
    // subscriptions concurrently, so only then is the order of a third settled).
    subscribe(&mut ws, "1", "111", Some(0)).await;
    subscribe(&mut ws, "2", "112", Some(0)).await;
    let mut live = std::collections::BTreeSet::new();
    for (n, c) in [(1, "111"), (2, "112")] {
        register(&app, c, n).await;
    }
    while live.len() < 2 {
        let msg = next_message(&mut ws).await;
        assert_eq!(msg["type"], "next", "{msg}");
        live.insert(msg["id"].as_str().unwrap().to_string());
    }
    // A third is refused; the first two go on.
    subscribe(&mut ws, "3", "113", None).await;
    let refused = next_message(&mut ws).await;
    assert_eq!(refused["id"], "3", "{refused}");
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    let done = next_message(&mut ws).await;
    assert_eq!((done["id"].as_str(), done["type"].as_str()), (Some("3"), Some("complete")), "{done}");
    register(&app, "112", 3).await;
    let msg = next_message(&mut ws).await;
    assert_eq!((msg["id"].as_str(), msg["payload"]["data"]["communityEvents"]["seq"].as_u64()), (Some("2"), Some(2)));
    // Another connection has its own allowance.
    let mut other = connect(&app, "graphql-transport-ws").await;
    subscribe(&mut other, "1", "113", Some(0)).await;
    register(&app, "113", 4).await;
    assert_eq!(next_event(&mut other).await["seq"], 1);
}

/// The raw next text message, pings included (`None` once the server closed).
async fn next_raw(ws: &mut Ws, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await.expect("a message in time")? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn the_server_pings_quiet_connections_and_closes_clients_that_never_answer() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ATTACH_FEED__KEEPALIVE_SECS".to_string(), "1".to_string())];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;

    // graphql-transport-ws: a client that answers every ping stays connected
    // well past two intervals, and still gets its events.
    let mut answers = connect(&app, "graphql-transport-ws").await;
    subscribe(&mut answers, "1", "111", None).await;
    let mut silent = connect(&app, "graphql-transport-ws").await;
    let mut legacy = connect(&app, "graphql-ws").await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let message = next_raw(&mut answers, Duration::from_secs(3)).await.expect("still connected");
        assert_eq!(message["type"], "ping", "{message}");
        pings += 1;
        answers.send(Message::text(r#"{"type":"pong"}"#)).await.unwrap();
    }
    assert!(pings >= 3, "one ping a second, got {pings}");
    register(&app, "111", 9101).await;
    assert_eq!(next_event(&mut answers).await["kind"], "REGISTERED");

    // A client that never answers was closed after two quiet intervals.
    let mut silent_pings = 0;
    while let Some(message) = next_raw(&mut silent, Duration::from_secs(5)).await {
        assert_eq!(message["type"], "ping", "{message}");
        silent_pings += 1;
        assert!(silent_pings <= 5, "a client that never answers is closed after two intervals");
    }
    assert!(silent_pings >= 1, "it was pinged before being closed");

    // The legacy protocol's keepalive (`ka`) needs no answer: still open.
    let mut kas = 0;
    while kas < 4 {
        let message = next_raw(&mut legacy, Duration::from_secs(3)).await.expect("legacy clients are not timed out");
        assert_eq!(message["type"], "ka", "{message}");
        kas += 1;
    }

    // A connection never initialised is closed after one interval with 4408,
    // though its client keeps pinging (under either protocol).
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (mut anonymous, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
        let started = std::time::Instant::now();
        let frame = loop {
            let _ = anonymous.send(Message::text(r#"{"type":"ping"}"#)).await;
            match tokio::time::timeout(Duration::from_millis(300), anonymous.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Ok(Some(Ok(_))) | Err(_) => {
                    assert!(started.elapsed() < Duration::from_secs(10), "{protocol}: still open")
                }
                Ok(other) => panic!("{protocol}: {other:?}"),
            }
        };
        assert_eq!(frame, Some((4408, "Connection initialisation timeout".to_string())), "{protocol}");
    }
}

/// A burst of events larger than one pipeline reaches a subscriber on
/// another process's feed whole and in order, none dropped (the publisher
/// once sent one event a round trip, and its full queue dropped events under
/// a few hundred mutations a second while Redis was idle).
#[tokio::test]
async fn a_burst_of_events_reaches_redis_whole_and_in_order() {
    use attach_actors::domain::{Event, EventKind, RegistrationRef, ShardKey, Timestamp};
    use attach_actors::feed::{Feed, redis::RedisFeed};
    let redis = RedisServer::start();
    let shard = ShardKey::parse("IHA/111").unwrap();
    let (publisher, subscriber) = (
        RedisFeed::start(&redis.url(), "burst", 4096).unwrap(),
        RedisFeed::start(&redis.url(), "burst", 4096).unwrap(),
    );
    let mut rx = subscriber.subscribe(&shard);
    redis.wait_subscribed("burst:feed:IHA:111").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !publisher.status().connected {
        assert!(std::time::Instant::now() < deadline, "the publisher never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events: Vec<Event> = (1..=2_000)
        .map(|seq| Event {
            shard: shard.clone(),
            seq,
            at: Timestamp::now(),
            kind: EventKind::Registered { reference: RegistrationRef::generate(), household_size: 1 },
        })
        .collect();
    for chunk in events.chunks(250) {
        publisher.publish(chunk);
    }
    for seq in 1..=2_000u64 {
        let e = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("in time").expect("received");
        assert_eq!(e.seq, seq);
    }
    assert_eq!((publisher.status().dropped, subscriber.status().dropped), (0, 0));
}

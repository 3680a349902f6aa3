//! Nodes sharing one store, each a real gateway on its own loopback port (in
//! this process, because only one process may open an embedded store; in
//! production the nodes share ScyllaDB). A request that reaches a node
//! without its shard is answered by the node holding the shard's lease.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attach_actors::access::Role;
use attach_actors::domain::ShardKey;
use attach_actors::shard::Placement;
use attach_actors::store::Store;
use attach_actors::store::embedded::{EmbeddedOptions, EmbeddedStore};
use attach_gateway::auth::dev::{DevKey, TokenRequest};
use attach_gateway::config::{AuthSettings, Settings};
use attach_gateway::startup::Application;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::{phn, repo_root};

/// The cluster's secret in these tests (at least `config::MIN_SECRET` bytes).
const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The secret it is changed to.
const ROTATED: &str = "rotated-secret-0123456789abcdef-01";

struct Node {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Changes the node's peers while it runs (what SIGHUP does in `attach serve`).
    peers: attach_gateway::startup::ClusterHandle,
}

async fn node(dir: &Path, store: Arc<dyn Store>, name: &str, peers: Vec<String>, anonymous_burst: u32) -> Node {
    node_with(dir, store, name, peers, anonymous_burst, "127.0.0.1:0", None).await
}

/// A node, with its live feed through the Redis at `redis` when given.
async fn node_with(
    dir: &Path,
    store: Arc<dyn Store>,
    name: &str,
    peers: Vec<String>,
    anonymous_burst: u32,
    listen: &str,
    redis: Option<String>,
) -> Node {
    start_node(node_settings(dir, name, peers, anonymous_burst, listen, redis), store).await
}

/// The settings of a test node (see [`node_with`]).
fn node_settings(
    dir: &Path,
    name: &str,
    peers: Vec<String>,
    anonymous_burst: u32,
    listen: &str,
    redis: Option<String>,
) -> Settings {
    let mut settings = Settings {
        redis,
        listen: listen.parse().unwrap(),
        data_dir: dir.to_path_buf(),
        regions: repo_root().join("infra/regions/bc.toml"),
        node: Some(name.to_string()),
        ..Settings::default()
    };
    settings.cluster.peers = peers;
    settings.cluster.secret = SECRET.to_string();
    // One request's worth a minute: a second direct call in the test is refused.
    settings.limits.rate.anonymous_per_ip.per_minute = 1;
    settings.limits.rate.anonymous_per_ip.burst = anonymous_burst;
    settings.shard.lease_secs = 3;
    // Spill-over across the whole province: a community's households may be
    // proposed to a provider homed on the other node.
    settings.matching.spill_km = 2000;
    settings
}

/// A node with `settings` on `store`, serving until it is told to stop.
async fn start_node(settings: Settings, store: Arc<dyn Store>) -> Node {
    let app = Application::build_with_store(settings, store).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let peers = app.cluster_handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Node { url, stop, task, peers }
}

/// One embedded store in `dir`, shared by the nodes of a test (only one
/// process may open it, so they run in this one).
fn shared_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(&dir.join("attach.redb"), EmbeddedOptions::default()).unwrap())
}

/// Stops `nodes`, in order, each once it has finished serving.
async fn stop(nodes: impl IntoIterator<Item = Node>) {
    for n in nodes {
        let _ = n.stop.send(());
        n.task.await.unwrap().unwrap();
    }
}

async fn wait_for(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, node: &Node, query: &str, variables: Value) -> (u16, Value) {
    let r = http.post(format!("{}/graphql", node.url)).json(&json!({ "query": query, "variables": variables }));
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Registers a household of one (`given` Roy, PHN number `i`) in `community`,
/// asked of `node`; answers its reference.
async fn register_one(http: &reqwest::Client, node: &Node, community: &str, i: u32, given: &str) -> String {
    let member = json!({ "phn": phn(i), "givenName": given, "surname": "Roy", "dateOfBirth": "1975-03-04" });
    let input = json!({ "i": { "community": community, "postalCode": "V0B 1M0", "members": [member] } });
    let (_, body) = post(http, node, REGISTER, input).await;
    body["data"]["registerHousehold"]["reference"].as_str().unwrap_or_else(|| panic!("{body}")).to_string()
}

/// Node A's list becomes the one peer `other` at `url` (what SIGHUP does in
/// `attach serve`); waits until each shard runs on its preferred node of the
/// two and `other` is ready. Answers the placement and the settings applied.
async fn list_only(
    http: &reqwest::Client,
    a: &Node,
    other: &str,
    url: &str,
    store: &dyn Store,
    shards: &[ShardKey],
) -> (Placement, attach_gateway::config::ClusterSettings) {
    let cluster = attach_gateway::config::ClusterSettings {
        peers: vec![format!("{other}={url}")],
        secret: SECRET.into(),
        ..Default::default()
    };
    a.peers.apply(&cluster).await.unwrap();
    let placement = Placement::new("node-a", [other.to_string()]);
    all_preferred(store, shards, &placement).await;
    wait_for(http, &format!("{url}/readyz")).await;
    (placement, cluster)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

const REGISTER: &str = "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference status } }";
const STATUS: &str = "query($r: ID!) { registration(reference: $r) { status } }";
const MOVE: &str =
    "mutation($r: ID!, $c: String!) { moveRegistration(reference: $r, communityCode: $c) { status community } }";
const HA_STATS: &str = "query($h: String!) { healthAuthorityStatistics(code: $h) { waitingHouseholds } }";

/// A token the nodes sharing `dir`'s development key accept.
fn token(dir: &Path, subject: &str, role: Role, scope: &[&str]) -> String {
    mint(
        dir,
        TokenRequest {
            subject: subject.into(),
            role,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            provider: None,
            ttl: Duration::from_secs(600),
        },
    )
}

/// Provider `id`'s own token.
fn provider_token(dir: &Path, id: &str) -> String {
    let provider = Some(id.to_string());
    mint(
        dir,
        TokenRequest {
            subject: id.into(),
            role: Role::Provider,
            scope: vec![],
            provider,
            ttl: Duration::from_secs(600),
        },
    )
}

fn mint(dir: &Path, request: TokenRequest) -> String {
    let auth = AuthSettings::default();
    DevKey::load(dir).unwrap().mint(&auth.issuer, &auth.audience, &request).unwrap()
}

async fn post_as(http: &reqwest::Client, node: &Node, token: &str, query: &str, variables: Value) -> (u16, Value) {
    let r = http.post(format!("{}/graphql", node.url)).bearer_auth(token);
    let r = r.json(&json!({ "query": query, "variables": variables })).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A mutation sent on to the node holding its shard whose answer is lost (that
/// node took it and went quiet) may have run there: it is not sent again, and
/// the caller is told to check before retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_whose_forwarded_answer_is_lost_is_not_sent_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    // Stands for node A at the address B has for it: reads requests, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = silent.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buffer[..n]);
                    counted.fetch_add(text.matches("POST /graphql").count(), Ordering::SeqCst);
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let http = reqwest::Client::new();
    let a = node(dir.path(), store.clone(), "node-a", vec![], 100).await;
    wait_for(&http, &format!("{}/readyz", a.url)).await;
    let mut settings =
        node_settings(dir.path(), "node-b", vec![format!("node-a={silent_url}")], 100, "127.0.0.1:0", None);
    settings.shard.call_timeout_secs = 1;
    let b = start_node(settings, store.clone()).await;
    wait_for(&http, &format!("{}/healthz", b.url)).await;

    let member = json!({ "phn": phn(900), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-02-03" });
    let input = json!({ "i": { "community": "111", "postalCode": "V0B 1M0", "members": [member] } });
    let (status, body) = post(&http, &b, REGISTER, input).await;
    assert_eq!(status, 200, "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"], json!({ "code": "SHARD_UNAVAILABLE" }), "{body}");
    assert!(error["message"].as_str().unwrap().contains("check before trying again"), "{body}");
    assert_eq!(received.load(Ordering::SeqCst), 1, "sent once, not again field by field");
    stop([b, a]).await;
}

/// Over a subscription connection too, a query or mutation for a shard
/// another node holds is answered by that node, for the connection's caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_mutations_over_a_websocket_reach_the_node_holding_their_shard() {
    use crate::feed::{connect_to, next_message};
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let http = reqwest::Client::new();
    let a = node(dir.path(), store.clone(), "node-a", vec![], 100).await;
    wait_for(&http, &format!("{}/readyz", a.url)).await;
    let b = node(dir.path(), store.clone(), "node-b", vec![format!("node-a={}", a.url)], 100).await;
    wait_for(&http, &format!("{}/healthz", b.url)).await;

    let coordinator = token(dir.path(), "coord-ws", Role::Coordinator, &["community:111"]);
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = connect_to(&b.url, protocol, &coordinator).await;
        let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
        let mut ask = async |id: &str, query: &str, variables: Value| {
            let message = json!({ "id": id, "type": start, "payload": { "query": query, "variables": variables } });
            ws.send(Message::text(message.to_string())).await.unwrap();
            let answer = next_message(&mut ws).await;
            assert_eq!(
                (&answer["type"], &answer["id"]),
                (&json!(if start == "start" { "data" } else { "next" }), &json!(id))
            );
            assert_eq!(next_message(&mut ws).await["type"], "complete");
            answer["payload"].clone()
        };
        let n = if protocol == "graphql-ws" { 2 } else { 1 };
        let member =
            json!({ "phn": phn(700 + n), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-02-03" });
        let input = json!({ "i": { "community": "111", "postalCode": "V0B 1M0", "members": [member] } });
        let registered = ask("r", REGISTER, input).await;
        assert!(registered.get("errors").is_none(), "{protocol}: {registered}");
        assert_eq!(registered["data"]["registerHousehold"]["status"], "WAITING");
        let page = ask("w", "{ waitlist(communityCode: \"111\") { totalCount } }", json!({})).await;
        assert_eq!(page, json!({ "data": { "waitlist": { "totalCount": n } } }), "{protocol}: A answered it");
        // Out of scope is refused the same way, and nothing internal leaks.
        let refused = ask("x", "{ waitlist(communityCode: \"112\") { totalCount } }", json!({})).await;
        assert_eq!(refused["errors"][0]["extensions"], json!({ "code": "FORBIDDEN" }), "{protocol}: {refused}");
    }
    let on_b = http.get(format!("{}/metrics", b.url)).send().await.unwrap().text().await.unwrap();
    // The registration and the page, on each protocol; the refusal was B's own to make.
    assert_eq!(metric(&on_b, "attach_forwarded_requests_total"), Some(4));
    stop([b, a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_shard_another_node_holds_is_answered_by_that_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let http = reqwest::Client::new();

    // Node A starts first and takes every shard's lease.
    let a = node(dir.path(), store.clone(), "node-a", vec![], 1).await;
    wait_for(&http, &format!("{}/readyz", a.url)).await;
    // B and C start on the same store and hold nothing; B knows where A is, C does not.
    let b = node(dir.path(), store.clone(), "node-b", vec![format!("node-a={}", a.url)], 100).await;
    let c = node(dir.path(), store.clone(), "node-c", vec![], 100).await;
    wait_for(&http, &format!("{}/healthz", b.url)).await;
    wait_for(&http, &format!("{}/healthz", c.url)).await;

    // Through B: a registration, and then its status, are A's to answer.
    let member = json!({ "phn": phn(1), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-02-03" });
    let input = json!({ "i": { "community": "111", "postalCode": "V0B 1M0", "members": [member] } });
    let (status, body) = post(&http, &b, REGISTER, input.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let reference = body["data"]["registerHousehold"]["reference"].as_str().unwrap().to_string();
    let (_, body) = post(&http, &b, STATUS, json!({ "r": reference })).await;
    assert_eq!(body["data"]["registration"]["status"], "WAITING", "{body}");
    let on_b = http.get(format!("{}/metrics", b.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&on_b, "attach_forwarded_requests_total"), Some(2));
    let on_a = http.get(format!("{}/metrics", a.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&on_a, "attach_shard_waiting_households{shard=\"IHA/111\"}"), Some(1), "A holds it");

    // A counted neither forwarded request against its own anonymous quota of one:
    // B (which has the cluster's secret) had counted them already.
    let (direct, _) = post(&http, &a, STATUS, json!({ "r": reference })).await;
    assert_eq!(direct, 200);
    let (again, _) = post(&http, &a, STATUS, json!({ "r": reference })).await;
    assert_eq!(again, 429, "A's own quota applies to calls made to it directly");

    // C has no peers: the shard is unavailable there, and the internal mark does not leak.
    let (_, body) = post(&http, &c, STATUS, json!({ "r": reference })).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "SHARD_UNAVAILABLE", "{body}");
    assert!(body["errors"][0]["extensions"].get("notHere").is_none(), "{body}");

    // The audit log (one for all nodes: it is in the shared store) holds each
    // access once, where it was served: the two reads A answered. Where the
    // shard did not run, nothing was read and nothing was recorded.
    let ops = token(dir.path(), "ops-1", Role::Operations, &[]);
    let log = http
        .post(format!("{}/graphql", a.url))
        .bearer_auth(ops)
        .json(&json!({ "query": "{ auditLog(first: 50) { nodes { operation outcome } } }" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let records = log["data"]["auditLog"]["nodes"].as_array().unwrap_or_else(|| panic!("{log}")).clone();
    let count = |op: &str| records.iter().filter(|r| r["operation"] == op).count();
    assert_eq!((count("registerHousehold"), count("readRegistration")), (1, 2), "{records:?}");
    assert!(records.iter().all(|r| r["outcome"] == "OK"), "{records:?}");

    stop([c, b, a]).await;
}

/// Whether every shard is held by the node `placement` prefers, as the store says.
async fn spread_as_preferred(store: &dyn Store, shards: &[ShardKey], placement: &Placement) -> bool {
    misplaced(store, shards, placement).await.is_empty()
}

/// The shards not held by their preferred node, each with who holds it.
async fn misplaced(store: &dyn Store, shards: &[ShardKey], placement: &Placement) -> Vec<String> {
    let mut wrong = Vec::new();
    for s in shards {
        let owner = store.shard_owner(s).await.unwrap();
        if owner.as_deref() != Some(placement.preferred(s)) {
            wrong.push(format!("{s} (held by {owner:?}, preferred {})", placement.preferred(s)));
        }
    }
    wrong
}

/// Waits (30 s at most) until each shard is held by its preferred node, and
/// names the shards that are not if they never are.
async fn all_preferred(store: &dyn Store, shards: &[ShardKey], placement: &Placement) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wrong = misplaced(store, shards, placement).await;
        if wrong.is_empty() {
            return;
        }
        let first: Vec<&String> = wrong.iter().take(6).collect();
        assert!(
            Instant::now() < deadline,
            "never: each shard on its preferred node; {} not, such as {first:?}",
            wrong.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP gate on a loopback port in front of `to`: while shut it takes each
/// connection and drops it (a peer out of reach); once opened it joins them.
struct Gate {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
}

fn gate(to: u16) -> Gate {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let opened = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !opened.load(Ordering::Acquire) {
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Gate { port, open }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `node` holds every one of `shards`.
async fn all_held_by(store: &dyn Store, shards: &[ShardKey], node: &str) -> bool {
    for s in shards {
        if store.shard_owner(s).await.unwrap().as_deref() != Some(node) {
            return false;
        }
    }
    true
}

/// A store whose leases run out after 3 s (nodes that stop are stood in for
/// quickly), and British Columbia's shards.
fn lease_store(dir: &Path) -> (Arc<dyn Store>, Vec<ShardKey>) {
    let options = EmbeddedOptions { lease: Duration::from_secs(3), ..EmbeddedOptions::default() };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("attach.redb"), options).unwrap());
    let regions = attach_actors::regions::Regions::load(&repo_root().join("infra/regions/bc.toml")).unwrap();
    (store, regions.shards().cloned().collect())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node whose ask for its shards at start never reached the stand-in
/// holding them asks again, a lease later and each lease after, until it has
/// them: neither a restart nor a new node list is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_first_ask_for_its_shards_failed_gets_them_when_the_peer_is_in_reach() {
    let dir = tempfile::tempdir().unwrap();
    let (store, shards) = lease_store(dir.path());
    let http = reqwest::Client::new();
    let (port_a, port_c) = (free_port(), free_port());
    let (url_a, url_c) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_c}"));
    let listen = |port: u16| format!("127.0.0.1:{port}");

    // A knows C, which has not started: A stands in for C's shards.
    let a_peers = vec![format!("node-c={url_c}")];
    let a = node_with(dir.path(), store.clone(), "node-a", a_peers, 100, &listen(port_a), None).await;
    wait_for(&http, &format!("{url_a}/readyz")).await;
    eventually("A stands in for C's shards", async || all_held_by(store.as_ref(), &shards, "node-a").await).await;

    // C reaches A through a gate, shut while C starts: its ask for its shards is lost.
    let to_a = gate(port_a);
    let c_peers = vec![format!("node-a=http://127.0.0.1:{}", to_a.port)];
    let c = node_with(dir.path(), store.clone(), "node-c", c_peers, 100, &listen(port_c), None).await;
    wait_for(&http, &format!("{url_c}/healthz")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(all_held_by(store.as_ref(), &shards, "node-a").await, "A handed shards back unasked");

    // Once A is in reach, C's next ask is answered and C runs its shards.
    to_a.open.store(true, std::sync::atomic::Ordering::Release);
    all_preferred(store.as_ref(), &shards, &Placement::new("node-a", ["node-c".to_string()])).await;
    wait_for(&http, &format!("{url_c}/readyz")).await;
    stop([c, a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_another_ones_place_while_the_cluster_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, shards) = lease_store(dir.path());
    let http = reqwest::Client::new();
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let (url_a, url_c) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_c}"));

    // A runs with a peer B that never comes: A stands in for B's shards.
    let b = vec![format!("node-b=http://127.0.0.1:{port_b}")];
    let a = node_with(dir.path(), store.clone(), "node-a", b, 100, &format!("127.0.0.1:{port_a}"), None).await;
    wait_for(&http, &format!("{url_a}/readyz")).await;
    let all_a = async || all_held_by(store.as_ref(), &shards, "node-a").await;
    eventually("A stands in for B's shards", all_a).await;

    // C starts in B's place. A does not know C yet, so it hands C nothing.
    let c_peers = vec![format!("node-a={url_a}")];
    let c = node_with(dir.path(), store.clone(), "node-c", c_peers, 100, &format!("127.0.0.1:{port_c}"), None).await;
    wait_for(&http, &format!("{url_c}/healthz")).await;
    // Longer than six of C's tries for its own shards (a quarter lease each):
    // waiting for a lease is no crash loop, and C keeps trying.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_a().await, "A handed shards to a node it does not know");

    // The operator puts C in B's place in A's list (SIGHUP in `attach serve`):
    // A hands C its shards, and C serves them, without A restarting.
    let (placement, cluster) = list_only(&http, &a, "node-c", &url_c, store.as_ref(), &shards).await;
    let c_shard = shards.iter().find(|s| placement.preferred(s) == "node-c").unwrap();
    let a_shard = shards.iter().find(|s| placement.preferred(s) == "node-a").unwrap();
    register_one(&http, &a, c_shard.community.as_str(), 9, "Eve").await;

    // The secret changes while both run, in three steps, each applied to A, then
    // to C: at every moment each node accepts what the other sends.
    let c_cluster =
        attach_gateway::config::ClusterSettings { peers: vec![format!("node-a={url_a}")], ..cluster.clone() };
    let step = |secret: &str, accept: &[&str]| {
        let accept_secrets: Vec<String> = accept.iter().map(|s| s.to_string()).collect();
        let on = |c: &attach_gateway::config::ClusterSettings| attach_gateway::config::ClusterSettings {
            secret: secret.to_string(),
            accept_secrets: accept_secrets.clone(),
            ..c.clone()
        };
        (on(&cluster), on(&c_cluster))
    };
    let hand_back = |node: &Node, secret: &str| {
        let request = http.post(format!("{}/cluster/hand-back", node.url)).header("x-attach-cluster-secret", secret);
        async move { request.body(r#"{"node":"node-z"}"#).send().await.unwrap().status().as_u16() }
    };
    let coordinator = token(dir.path(), "coord-rotation", Role::Coordinator, &["province"]);
    let both_stats = format!(
        "{{ a: communityStatistics(code: \"{}\") {{ waitingHouseholds }} c: communityStatistics(code: \"{}\") {{ waitingHouseholds }} }}",
        a_shard.community.as_str(),
        c_shard.community.as_str()
    );
    let steps = [(SECRET, &[ROTATED][..]), (ROTATED, &[SECRET][..]), (ROTATED, &[][..])];
    for (secret, accept) in steps {
        let (on_a, on_c) = step(secret, accept);
        for (node, settings) in [(&a, &on_a), (&c, &on_c)] {
            node.peers.apply(settings).await.unwrap();
            // Each node still runs steps for the other: statistics of one
            // community on each node, asked of either, take a step on the other.
            for from in [&a, &c] {
                let (status, body) = post_as(&http, from, &coordinator, &both_stats, json!({})).await;
                assert_eq!(status, 200, "{body}");
                assert!(body.get("errors").is_none(), "{secret} {accept:?}: {body}");
                assert_eq!(body["data"]["c"]["waitingHouseholds"], json!(1), "{body}");
            }
        }
    }
    // Unknown node (400) means the secret was accepted; 403, refused.
    for node in [&a, &c] {
        assert_eq!(hand_back(node, ROTATED).await, 400);
        assert_eq!(hand_back(node, SECRET).await, 403, "the old secret is taken out");
    }
    let empty = attach_gateway::config::ClusterSettings { secret: String::new(), ..cluster.clone() };
    assert!(a.peers.apply(&empty).await.is_err(), "peers need a secret");

    for node in [c, a] {
        let _ = node.stop.send(());
        node.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_alone_joins_a_cluster_when_its_node_list_names_a_peer() {
    let redis = crate::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (store, shards) = lease_store(dir.path());
    let http = reqwest::Client::new();
    let (port_a, port_b) = (free_port(), free_port());
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));

    // A starts alone, with its feed through Redis: it runs every shard.
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let a = node_with(dir.path(), store.clone(), "node-a", vec![], 100, &listen(port_a), Some(redis.url())).await;
    wait_for(&http, &format!("{url_a}/readyz")).await;
    let all_a = async || all_held_by(store.as_ref(), &shards, "node-a").await;
    eventually("A runs every shard", all_a).await;
    // B starts naming A; A does not know B yet, so it hands B nothing.
    let b_peers = vec![format!("node-a={url_a}")];
    let b = node_with(dir.path(), store.clone(), "node-b", b_peers, 100, &listen(port_b), Some(redis.url())).await;
    wait_for(&http, &format!("{url_b}/healthz")).await;
    // Longer than six of B's tries for its own shards (see the test above).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_a().await, "A handed shards to a node it does not know");

    // A's list now names B (SIGHUP in `attach serve`): A joins, and hands B its shards.
    let (placement, cluster) = list_only(&http, &a, "node-b", &url_b, store.as_ref(), &shards).await;
    // A request reaching A for a shard B now holds is answered through B.
    let b_shard = shards.iter().find(|s| placement.preferred(s) == "node-b").unwrap();
    register_one(&http, &a, b_shard.community.as_str(), 9, "Eve").await;
    let on_a = http.get(format!("{url_a}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&on_a, "attach_forwarded_requests_total").is_some_and(|n| n >= 1), "{on_a}");
    // And a request needing a step on each node's shard runs B's step on B.
    let a_shard = shards.iter().find(|s| placement.preferred(s) == "node-a").unwrap();
    let coordinator = token(dir.path(), "coord-join", Role::Coordinator, &["province"]);
    let both = format!(
        "{{ a: communityStatistics(code: \"{}\") {{ waitingHouseholds }} b: communityStatistics(code: \"{}\") {{ waitingHouseholds }} }}",
        a_shard.community.as_str(),
        b_shard.community.as_str()
    );
    let (_, body) = post_as(&http, &a, &coordinator, &both, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["b"]["waitingHouseholds"], json!(1), "{body}");
    // A move from A's community to B's: A takes step one, and B's shard step two.
    let mover = register_one(&http, &a, a_shard.community.as_str(), 10, "Bo").await;
    let b_community = b_shard.community.as_str();
    let (_, body) = post_as(&http, &a, &coordinator, MOVE, json!({ "r": mover, "c": b_community })).await;
    assert_eq!(body["data"]["moveRegistration"]["community"], b_community, "{body}");
    assert_eq!(body["data"]["moveRegistration"]["status"], "WAITING", "{body}");

    for node in [b, a] {
        let _ = node.stop.send(());
        node.task.await.unwrap().unwrap();
    }
    // A node whose feed is in-process cannot join: it would miss the other nodes' events.
    let alone = node(dir.path(), store.clone(), "node-c", vec![], 100).await;
    let refused = alone.peers.apply(&cluster).await.unwrap_err();
    assert!(refused.to_string().contains("redis"), "{refused}");
    let _ = alone.stop.send(());
    alone.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sighup_makes_attach_serve_read_its_node_list_again() {
    use crate::helpers::{Spawn, TestApp};
    // Peers need Redis for the feed.
    let redis = crate::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("attach.toml");
    let write = |peer: &str, secret: &str, accept: &str| {
        // `node` (and `redis`) given as flags: read again with the file on each SIGHUP.
        let text = format!(
            "[cluster]\npeers = [\"{peer}=http://127.0.0.1:9\"]\nsecret = \"{secret}\"\naccept_secrets = [{accept}]\n"
        );
        std::fs::write(&config, text).unwrap();
    };
    write("node-b", "s3-secret-0123456789abcdef-0123456", "");
    let env = vec![("ATTACH_SHARD__LEASE_SECS".to_string(), "3".to_string())];
    let args = ["--node", "node-a", "--redis", &redis.url()].map(str::to_string).to_vec();
    let app = TestApp::spawn(dir.path(), Spawn { env, args, config: Some(config.clone()), ..Spawn::default() }).await;
    let hangup = |expect: &'static str| {
        let (pid, log) = (app.pid(), app.log.clone());
        async move {
            let sent = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
            assert!(sent.success());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !log.lock().unwrap().contains(expect) {
                assert!(Instant::now() < deadline, "no `{expect}` in the log:\n{}", log.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    write("node-c", "s3-secret-0123456789abcdef-0123456", "");
    hangup("the cluster's node list was read again").await;
    // The secret changes too: the new one sent, the old one still accepted.
    write("node-c", "another-secret-0123456789abcdef-012", "\"s3-secret-0123456789abcdef-0123456\"");
    hangup("the cluster's secrets changed").await;
    let hand_back = |secret: &'static str| {
        let request =
            app.http().post(format!("{}/cluster/hand-back", app.url)).header("x-attach-cluster-secret", secret);
        async move { request.body(r#"{"node":"node-z"}"#).send().await.unwrap().status().as_u16() }
    };
    // Unknown node (400) means the secret was accepted; 403, refused.
    assert_eq!(
        (
            hand_back("another-secret-0123456789abcdef-012").await,
            hand_back("s3-secret-0123456789abcdef-0123456").await,
            hand_back("s4-secret-0123456789abcdef-0123456").await
        ),
        (400, 400, 403)
    );
    app.assert_accepting().await;
    app.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_spread_handed_back_to_a_returning_node_and_stood_in_for_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (store, shards) = lease_store(dir.path());
    let http = reqwest::Client::new();
    let (port_a, port_b) = (free_port(), free_port());
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let placement = Placement::new("node-a", ["node-b".to_string()]);
    let b_shard = shards.iter().find(|s| placement.preferred(s) == "node-b").unwrap().clone();
    let b_community = b_shard.community.as_str().to_string();

    // A alone: its own shards at once, B's after a lease (standing in).
    let start_a = |store: Arc<dyn Store>| {
        let (dir, url_b) = (dir.path().to_path_buf(), url_b.clone());
        async move {
            node_with(&dir, store, "node-a", vec![format!("node-b={url_b}")], 100, &format!("127.0.0.1:{port_a}"), None)
                .await
        }
    };
    let a = start_a(store.clone()).await;
    wait_for(&http, &format!("{url_a}/readyz")).await;
    let all_a = async || all_held_by(store.as_ref(), &shards, "node-a").await;
    eventually("A stands in for B's shards", all_a).await;

    // B starts and asks for its shards: A hands them back.
    let b = node_with(
        dir.path(),
        store.clone(),
        "node-b",
        vec![format!("node-a={url_a}")],
        100,
        &format!("127.0.0.1:{port_b}"),
        None,
    )
    .await;
    wait_for(&http, &format!("{url_b}/readyz")).await;
    eventually("each shard on its preferred node", async || {
        spread_as_preferred(store.as_ref(), &shards, &placement).await
    })
    .await;
    let held_by_b = shards.iter().filter(|s| placement.preferred(s) == "node-b").count();
    assert!(held_by_b > 10 && held_by_b < shards.len() - 10, "B holds {held_by_b} of {}", shards.len());

    // Either node answers for either's shards.
    let member = json!({ "phn": phn(2), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-02-03" });
    let input = json!({ "i": { "community": b_community, "postalCode": "V0B 1M0", "members": [member] } });
    let (status, body) = post(&http, &a, REGISTER, input).await;
    assert_eq!(status, 200, "{body}");
    let reference = body["data"]["registerHousehold"]["reference"].as_str().unwrap().to_string();
    let (_, body) = post(&http, &b, STATUS, json!({ "r": reference })).await;
    assert_eq!(body["data"]["registration"]["status"], "WAITING", "{body}");

    // A move from one of A's communities to that one of B's, asked of B: the
    // request goes whole to A (step one is A's), and A has B run step two.
    let a_shard = shards.iter().find(|s| s.ha == b_shard.ha && placement.preferred(s) == "node-a").unwrap();
    let mover = register_one(&http, &b, a_shard.community.as_str(), 3, "Bo").await;
    let coordinator = token(dir.path(), "coord-1", Role::Coordinator, &["province"]);
    let (_, body) = post_as(&http, &b, &coordinator, MOVE, json!({ "r": mover, "c": b_community })).await;
    assert_eq!(body["data"]["moveRegistration"]["status"], "WAITING", "{body}");
    assert_eq!(body["data"]["moveRegistration"]["community"], b_community.as_str(), "{body}");
    let (_, body) = post(&http, &a, STATUS, json!({ "r": mover })).await;
    assert_eq!(body["data"]["registration"]["status"], "WAITING", "B holds it now, and answers through A: {body}");
    // A health authority's statistics gather both nodes' communities, asked of either.
    for node in [&a, &b] {
        let (_, body) = post_as(&http, node, &coordinator, HA_STATS, json!({ "h": b_shard.ha.as_str() })).await;
        assert_eq!(body["data"]["healthAuthorityStatistics"]["waitingHouseholds"], 2, "{body}");
    }
    // One request asking for a community on each node is answered whole, by either.
    let both = format!(
        "{{ a: communityStatistics(code: \"{}\") {{ waitingHouseholds }} b: communityStatistics(code: \"{b_community}\") {{ waitingHouseholds }} }}",
        a_shard.community.as_str()
    );
    for node in [&a, &b] {
        let (_, body) = post_as(&http, node, &coordinator, &both, json!({})).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            (&body["data"]["a"]["waitingHouseholds"], &body["data"]["b"]["waitingHouseholds"]),
            (&json!(0), &json!(2))
        );
    }
    // So is one reading two waitlists, one on each node: each node reads its own (and audits it).
    let lines = format!(
        "{{ a: waitlist(communityCode: \"{}\") {{ totalCount }} b: waitlist(communityCode: \"{b_community}\") {{ totalCount nodes {{ reference }} }} }}",
        a_shard.community.as_str()
    );
    for node in [&a, &b] {
        let (_, body) = post_as(&http, node, &coordinator, &lines, json!({})).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!((&body["data"]["a"]["totalCount"], &body["data"]["b"]["totalCount"]), (&json!(0), &json!(2)));
        assert_eq!(body["data"]["b"]["nodes"][1]["reference"], mover.as_str(), "{body}");
        // In the query's order, whichever node answered which field.
        let r = http.post(format!("{}/graphql", node.url)).bearer_auth(&coordinator);
        let text = r.json(&json!({ "query": lines })).send().await.unwrap().text().await.unwrap();
        assert!(text.starts_with(r#"{"data":{"a":"#), "{text}");
    }
    // Spill-over between the nodes: a household of A's community is proposed to
    // a provider homed on B (B reserves the places), and accepted through B.
    let doc = provider_token(dir.path(), "P77001");
    let upsert = r#"mutation($c: String!) { upsertProvider(input: { id: "P77001", givenName: "Maya", surname: "Okafor",
        kind: PHYSICIAN, community: $c }) { id } }"#;
    let (_, body) = post_as(&http, &a, &doc, upsert, json!({ "c": b_community })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let capacity = r#"mutation { setProviderCapacity(providerId: "P77001", input: { acceptingNewPatients: true,
        monthlyRate: 3, desiredPanelSize: 3 }) { freePlaces } }"#;
    let (_, body) = post_as(&http, &a, &doc, capacity, json!({})).await;
    assert_eq!(body["data"]["setProviderCapacity"]["freePlaces"], 3, "{body}");
    let patient = register_one(&http, &b, a_shard.community.as_str(), 4, "Cy").await;
    let matching = format!(
        "mutation {{ runMatching(communityCode: \"{}\") {{ proposals {{ id providerId }} }} }}",
        a_shard.community.as_str()
    );
    let (_, body) = post_as(&http, &b, &coordinator, &matching, json!({})).await;
    assert_eq!(body["data"]["runMatching"]["proposals"][0]["providerId"], "P77001", "{body}");
    let proposal = body["data"]["runMatching"]["proposals"][0]["id"].clone();
    let places = r#"{ provider(id: "P77001") { freePlaces openPlaces } }"#;
    let (_, body) = post_as(&http, &a, &doc, places, json!({})).await;
    assert_eq!(
        (&body["data"]["provider"]["freePlaces"], &body["data"]["provider"]["openPlaces"]),
        (&json!(2), &json!(1))
    );
    let accept = "mutation($id: ID!) { acceptProposal(id: $id) { status } }";
    let (_, body) = post_as(&http, &b, &doc, accept, json!({ "id": proposal })).await;
    assert_eq!(body["data"]["acceptProposal"]["status"], "ACCEPTED", "{body}");
    let panel = r#"{ panel(providerId: "P77001", first: 5) { nodes { reference source } } }"#;
    let (_, body) = post_as(&http, &a, &doc, panel, json!({})).await;
    let shown = crate::helpers::masked(&patient);
    assert_eq!(body["data"]["panel"]["nodes"][0]["reference"], shown.as_str(), "on the panel on B: {body}");
    let (_, body) = post_as(&http, &b, &doc, places, json!({})).await;
    assert_eq!(
        (&body["data"]["provider"]["freePlaces"], &body["data"]["provider"]["openPlaces"]),
        (&json!(2), &json!(0))
    );

    // A coordinator's own proposal of a household waiting on A to that provider
    // on B, asked of B: the request goes whole to A, which reads the provider
    // and has the places reserved on B.
    let chosen = register_one(&http, &b, a_shard.community.as_str(), 11, "Eve").await;
    let propose = r#"mutation($r: ID!) { proposeMatch(reference: $r, providerId: "P77001", note: "asked for her") {
        status community explanation { providerFit } } }"#;
    let (_, body) = post_as(&http, &b, &coordinator, propose, json!({ "r": chosen })).await;
    assert_eq!(body["data"]["proposeMatch"]["status"], "OPEN", "{body}");
    assert_eq!(body["data"]["proposeMatch"]["community"], a_shard.community.as_str(), "{body}");
    let (_, body) = post_as(&http, &a, &doc, places, json!({})).await;
    assert_eq!(
        (&body["data"]["provider"]["freePlaces"], &body["data"]["provider"]["openPlaces"]),
        (&json!(1), &json!(1)),
        "held on B"
    );

    // A mutation registering a household on each node in one request: the node
    // asked registers its own, and the other is registered by its node (a
    // fragment spread, and a field under `@include`, are skipped there all the same).
    let two = "mutation($x: RegisterHouseholdInput!, $y: RegisterHouseholdInput!) { ...X
        y: registerHousehold(input: $y) @include(if: true) { reference community } }
        fragment X on Mutation { x: registerHousehold(input: $x) { reference community } }";
    // And both in one fragment: the field each node does not hold is skipped inside it.
    let both = "mutation($x: RegisterHouseholdInput!, $y: RegisterHouseholdInput!) { ...Both }
        fragment Both on Mutation { x: registerHousehold(input: $x) { reference community }
            y: registerHousehold(input: $y) { reference community } }";
    for (two, node, first) in [(two, &a, 5), (two, &b, 7), (both, &a, 21), (both, &b, 23)] {
        let household = |community: &str, i: u32| {
            let member = json!({ "phn": phn(i), "givenName": "Di", "surname": "Ng", "dateOfBirth": "1999-09-09" });
            json!({ "community": community, "postalCode": "V0B 1M0", "members": [member] })
        };
        let vars =
            json!({ "x": household(a_shard.community.as_str(), first), "y": household(&b_community, first + 1) });
        let (_, body) = post(&http, node, two, vars).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(body["data"]["x"]["community"], a_shard.community.as_str(), "{body}");
        assert_eq!(body["data"]["y"]["community"], b_community.as_str(), "{body}");
        for key in ["x", "y"] {
            let (_, found) = post(&http, node, STATUS, json!({ "r": body["data"][key]["reference"] })).await;
            assert_eq!(found["data"]["registration"]["status"], "WAITING", "registered once: {found}");
        }
    }
    let (_, body) = post_as(&http, &a, &coordinator, &lines, json!({})).await;
    assert_eq!((&body["data"]["a"]["totalCount"], &body["data"]["b"]["totalCount"]), (&json!(4), &json!(6)), "{body}");

    // A patient's own households, one on each node: either node lists both,
    // asking the other for its communities' (oldest first).
    let patient = token(dir.path(), "patient-7", Role::Patient, &[]);
    let mut own = Vec::new();
    for (community, i) in [(a_shard.community.as_str(), 31), (b_community.as_str(), 32)] {
        let member = json!({ "phn": phn(i), "givenName": "Flo", "surname": "Roy", "dateOfBirth": "1975-03-04" });
        let input = json!({ "i": { "community": community, "postalCode": "V0B 1M0", "members": [member] } });
        let (_, body) = post_as(&http, &b, &patient, REGISTER, input).await;
        own.push(
            body["data"]["registerHousehold"]["reference"].as_str().unwrap_or_else(|| panic!("{body}")).to_string(),
        );
    }
    for node in [&a, &b] {
        let (_, body) = post_as(&http, node, &patient, "{ myRegistrations { reference community } }", json!({})).await;
        let listed: Vec<_> = body["data"]["myRegistrations"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|r| (r["reference"].as_str().unwrap_or_default().to_string(), r["community"].clone()))
            .collect();
        assert_eq!(listed, [(own[0].clone(), json!(a_shard.community.as_str())), (own[1].clone(), json!(b_community))]);
    }

    let on_b = http.get(format!("{url_b}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&on_b, "attach_cluster_calls_served_total").is_some_and(|n| n >= 2), "{on_b}");

    // B stops (releasing its leases): A stands in again, and still answers.
    let _ = b.stop.send(());
    b.task.await.unwrap().unwrap();
    eventually("A takes B's shards again", all_a).await;
    let (_, body) = post(&http, &a, STATUS, json!({ "r": reference })).await;
    assert_eq!(body["data"]["registration"]["status"], "WAITING", "{body}");

    let _ = a.stop.send(());
    a.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_endpoints_refuse_a_caller_without_the_clusters_secret() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let http = reqwest::Client::new();
    let a = node(dir.path(), store, "node-a", vec!["node-b=http://127.0.0.1:9".into()], 100).await;
    wait_for(&http, &format!("{}/readyz", a.url)).await;
    let post = |path: &str, secret: Option<&str>, body: Vec<u8>| {
        let mut r = http.post(format!("{}{path}", a.url)).body(body);
        if let Some(s) = secret {
            r = r.header("x-attach-cluster-secret", s);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };

    // A step on a shard carries a caller's identity: never run without the secret.
    for secret in [None, Some("not-the-secret")] {
        assert_eq!(post("/cluster/call", secret, vec![attach_actors::system::PROTOCOL]).await.0, 403, "{secret:?}");
        assert_eq!(post("/cluster/hand-back", secret, br#"{"node":"node-b"}"#.to_vec()).await.0, 403, "{secret:?}");
    }
    // Guessing costs the address's quota, as a bad token does: the burst runs out.
    let mut statuses = Vec::new();
    for n in 0..100 {
        statuses
            .push(post("/cluster/hand-back", Some(&format!("guess-{n}")), br#"{"node":"node-b"}"#.to_vec()).await.0);
    }
    assert_eq!((statuses[0], statuses.last().copied()), (403, Some(429)), "{statuses:?}");
    // With it, a call that cannot be read is answered with an encoded error, not run.
    let (status, body) = post("/cluster/call", Some(SECRET), vec![attach_actors::system::PROTOCOL, 7]).await;
    assert_eq!((status, body.first().copied()), (200, Some(attach_actors::system::PROTOCOL)));
    let (status, _) = post("/cluster/call", Some(SECRET), vec![99, 1, 2]).await;
    assert_eq!(status, 200, "another protocol version is refused inside the answer");
    // A hand-back must name a peer.
    let (status, _) = post("/cluster/hand-back", Some(SECRET), br#"{"node":"node-z"}"#.to_vec()).await;
    assert_eq!(status, 400);

    let _ = a.stop.send(());
    a.task.await.unwrap().unwrap();
}

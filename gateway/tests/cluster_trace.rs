//! One trace across two nodes: a move asked of B is forwarded whole to A, which
//! holds the community left (`POST /graphql` again), and A has B run its second
//! step on the community joined (`POST /cluster/call`). Both nodes run in this
//! process on one embedded store, so one in-memory exporter sees both nodes' spans.

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
use opentelemetry::trace::{SpanId, TraceId};
use serde_json::{Value, json};

mod spans;
use spans::{ancestry, attribute, capture};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_on_the_other_nodes_shard_joins_the_callers_trace() {
    let (exporter, provider) = capture();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap());
    let ports = [("node-a", free_port()), ("node-b", free_port())];
    let regions_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml");
    let mut servers = Vec::new();
    for (me, port) in ports {
        let mut settings = Settings {
            listen: ([127, 0, 0, 1], port).into(),
            data_dir: dir.path().to_path_buf(),
            regions: regions_file.clone(),
            node: Some(me.to_string()),
            ..Settings::default()
        };
        settings.cluster.secret = "trace-test-secret-0123456789abcdef".into();
        settings.cluster.peers =
            ports.iter().filter(|(n, _)| *n != me).map(|(n, p)| format!("{n}=http://127.0.0.1:{p}")).collect();
        let app = Application::build_with_store(settings, store.clone()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        servers.push((stop, task));
    }
    let client = reqwest::Client::new();
    for (_, port) in ports {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A community of A's and one of B's.
    let regions = attach_actors::regions::Regions::load(&regions_file).unwrap();
    let placement = Placement::new("node-a", ["node-b".to_string()]);
    let of = |node: &str| -> ShardKey { regions.shards().find(|s| placement.preferred(s) == node).unwrap().clone() };
    let (left, joined) = (of("node-a"), of("node-b"));
    let request = TokenRequest {
        subject: "coord-1".into(),
        role: Role::Coordinator,
        scope: vec!["province".into()],
        provider: None,
        ttl: Duration::from_secs(600),
    };
    let auth = AuthSettings::default();
    let token = DevKey::load(dir.path()).unwrap().mint(&auth.issuer, &auth.audience, &request).unwrap();
    let node = |i: usize| format!("http://127.0.0.1:{}/graphql", ports[i].1);
    let call = |url: String, query: &str, variables: Value, traceparent: Option<&'static str>| {
        let mut r = client.post(url).bearer_auth(&token).json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = traceparent {
            r = r.header("traceparent", t);
        }
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let member =
        json!({ "phn": "9698658215", "givenName": "Alex", "surname": "Tremblay", "dateOfBirth": "1984-03-09" });
    let input = json!({ "i": { "community": left.community.as_str(), "postalCode": "V0B 1M0", "members": [member] } });
    let register = "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }";
    let body = call(node(0), register, input, None).await;
    let reference = body["data"]["registerHousehold"]["reference"].as_str().unwrap_or_else(|| panic!("{body}"));

    let caller_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let moved = call(
        node(1),
        "mutation Move($r: ID!, $c: String!) { moveRegistration(reference: $r, communityCode: $c) { status } }",
        json!({ "r": reference, "c": joined.community.as_str() }),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    .await;
    assert_eq!(moved["data"]["moveRegistration"]["status"], "WAITING", "{moved}");
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();

    // B's handling of step two, and its chain of parents back to the caller.
    let step_two = spans
        .iter()
        .find(|s| s.name == "shard.handle" && attribute(s, "message").as_deref() == Some("moveIn"))
        .unwrap_or_else(|| panic!("no moveIn among {} spans", spans.len()));
    assert_eq!(step_two.span_context.trace_id(), caller_trace, "step two is in the caller's trace");
    assert_eq!(attribute(step_two, "shard"), Some(joined.to_string()));
    let (chain, at) = ancestry(&spans, step_two, caller_trace);
    // B ran step two for A, which ran the request B forwarded once B's own
    // attempt had stopped at the shard it does not hold.
    let expected = ["shard.handle", "POST /cluster/call", "mutation Move", "POST /graphql", "POST /graphql"];
    assert_eq!(chain, expected, "step two's ancestry: on B, on A (forwarded), on B (asked)");
    assert_eq!(
        at.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        "the caller's span is the root's parent"
    );

    for (stop, task) in servers {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}

//! One trace from the HTTP request to the store write of a mutation, caught by
//! an in-memory span exporter: the server span, the GraphQL operation, the
//! shard actor's handling (across the actor message) and the store commit.

use std::path::Path;
use std::time::{Duration, Instant};

use attach_gateway::config::Settings;
use attach_gateway::startup::Application;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value, json};

mod spans;
use spans::{ancestry, attribute, capture};

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_http_request_to_the_store_write() {
    let (exporter, provider) = capture();

    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        regions: Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml"),
        ..Settings::default()
    };
    let app = Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A caller's trace context continues through Attach.
    let caller_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let register = json!({
        "query": "mutation Register($input: RegisterHouseholdInput!) { registerHousehold(input: $input) { reference } }",
        "variables": { "input": { "community": "111", "postalCode": "V0B 1M0", "members": [
            { "phn": "9698658215", "givenName": "Alex", "surname": "Tremblay", "dateOfBirth": "1984-03-09" }
        ] } },
    });
    let response: Value = client
        .post(format!("{url}/graphql"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&register)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(response["data"]["registerHousehold"]["reference"].is_string(), "{response:#}");
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();

    // The store write, and its chain of parents up to the HTTP request.
    let writes = named(&spans, "store.commit");
    let write = writes
        .iter()
        .copied()
        .find(|s| s.span_context.trace_id() == caller_trace)
        .unwrap_or_else(|| panic!("no store write in the caller's trace among {} spans", spans.len()));
    let (chain, at) = ancestry(&spans, write, caller_trace);
    assert_eq!(
        chain,
        ["store.commit", "shard.commit", "shard.register", "shard.handle", "mutation Register", "POST /graphql"],
        "the store write's ancestry"
    );
    assert_eq!(
        at.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        "the caller's span is the root's parent"
    );
    assert_eq!(attribute(at, "http.response.status_code").as_deref(), Some("200"));
    let operation = named(&spans, "mutation Register")[0];
    assert_eq!(attribute(operation, "graphql.operation.type").as_deref(), Some("mutation"));
    assert_eq!(attribute(operation, "graphql.operation.name").as_deref(), Some("Register"));
    let handle = named(&spans, "shard.handle").into_iter().find(|s| s.span_context.trace_id() == caller_trace).unwrap();
    assert_eq!(attribute(handle, "message").as_deref(), Some("register"));
    assert_eq!(attribute(handle, "shard").as_deref(), Some("IHA/111"));

    // No span carries the PHN or a name the request held.
    for span in &spans {
        let text = format!("{} {:?}", span.name, span.attributes);
        assert!(!text.contains("9698658215") && !text.contains("Tremblay"), "personal data in span {text}");
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

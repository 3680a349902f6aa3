//! Logging and tracing. Spans carry shard keys and ids, never personal data.
//!
//! Every request gets a server span (`POST /graphql`), the GraphQL operation a
//! child span named as OpenTelemetry's GraphQL conventions say (`mutation`,
//! `query NamedOp`), and the shard actor and the store continue the same trace
//! (the actor message carries its caller's span). Spans go to OpenTelemetry
//! over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nowhere else
//! otherwise; logs always go to stderr. An incoming W3C `traceparent` header
//! continues the caller's trace.

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::{Instrument, Span, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Keeps the span pipeline alive; dropping it flushes and stops the exporter.
#[must_use = "dropping the guard stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("attach: flushing spans on shutdown failed: {e}");
        }
    }
}

/// Installs the global subscriber: logs filtered by `RUST_LOG` (else
/// `default_filter`) to stderr, and OTLP span export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A second call (tests) keeps the first.
///
/// Without `log_spans` the log layer takes events only: it then never
/// formats a span's fields, which it otherwise does for every request's
/// spans, wanted or not. With neither it nor OTLP export interested, a span
/// is not created at all.
pub fn init(default_filter: &str, log_spans: bool) -> Telemetry {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) => EnvFilter::try_new(&text).unwrap_or_else(|e| {
            eprintln!(
                "attach: RUST_LOG={text:?} is not a log filter ({e}); using the `log` setting, {default_filter:?}"
            );
            EnvFilter::new(default_filter)
        }),
        Err(_) => EnvFilter::new(default_filter),
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => match otlp_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("attach: OTLP export to {endpoint} is off: {e}");
                None
            }
        },
        _ => None,
    };
    let spans = provider.as_ref().map(spans_layer);
    // Colours only for a person at a terminal: a file or a log shipper gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colours);
    let spans_too = tracing_subscriber::filter::filter_fn(move |meta| log_spans || meta.is_event());
    let logs = logs.with_filter(filter.and(spans_too));
    let _ = tracing_subscriber::registry().with(spans).with(logs).try_init();
    Telemetry { provider }
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`
/// (tests pass a provider with an in-memory exporter). Also installs the W3C
/// trace-context propagator that [`http_span`] reads `traceparent` with.
pub fn spans_layer(provider: &SdkTracerProvider) -> impl Layer<Registry> + Send + Sync + 'static {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans are exported at info and above whatever the log filter says, so a
    // quiet log does not mean a blind trace.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("attach"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
}

fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithHttpConfig;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| anyhow::anyhow!("span export needs the Tokio runtime, and this command has none"))?;
    // OTEL_EXPORTER_OTLP_TIMEOUT, in milliseconds, as the exporter itself reads it.
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(std::time::Duration::from_secs(10), std::time::Duration::from_millis);
    // reqwest, with the TLS the gateway already has, so an https:// collector works too.
    let client = OnRuntime {
        client: reqwest::Client::builder().timeout(timeout).build()?,
        runtime,
        failing: std::sync::atomic::AtomicBool::new(false),
    };
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables) itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_http_client(client).build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("attach").build())
        .build())
}

/// The OTLP exporter's HTTP client, run on the process's Tokio runtime. The
/// SDK's batch processor exports from a thread of its own, with no Tokio
/// reactor, and the client needs one: given a hyper client directly, the
/// exporter panicked on its first export and no span ever left the process.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// Whether the last export failed: a collector that cannot be reached is
    /// logged once, and again once it can be.
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        use std::sync::atomic::Ordering;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move { client.send_bytes(request).await });
        let result = sent.await.map_err(|e| Box::new(e) as opentelemetry_http::HttpError).and_then(|r| r);
        let failed = match &result {
            Ok(response) if !response.status().is_success() => {
                Some(format!("the collector answered {}", response.status()))
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        match failed {
            Some(why) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %why, "spans could not be exported; they are dropped until the collector answers");
            }
            None if self.failing.swap(false, Ordering::Relaxed) => tracing::info!("spans are exported again"),
            _ => {}
        }
        result
    }
}

/// The current span's trace context as W3C headers (`traceparent`, and
/// `tracestate` when there is one), for a request to a peer: the peer's spans
/// then join this trace under the current span. Empty when spans are not exported.
pub fn trace_headers() -> std::collections::HashMap<String, String> {
    let mut headers = std::collections::HashMap::new();
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers
}

/// Reads W3C trace context from HTTP headers.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: one server span per HTTP request, continuing an incoming trace.
pub async fn http_span(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // The route, not the raw path: bounded cardinality, and no ids in span names.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let span = info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    // Without an incoming context this is a no-op and the span starts a new trace.
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The span of one GraphQL operation, named and described as OpenTelemetry's
/// GraphQL semantic conventions say. The document itself is never recorded: its
/// literals may hold personal data.
pub fn graphql_span(request: &mut async_graphql::Request) -> Span {
    let wanted = request.operation_name.clone();
    let (ty, name, fields) = match request.parsed_query() {
        Ok(doc) => {
            let op = match &doc.operations {
                DocumentOperations::Single(op) => Some((None, op)),
                DocumentOperations::Multiple(ops) => ops
                    .iter()
                    .find(|(n, _)| wanted.as_deref().is_none_or(|w| n.as_str() == w))
                    .map(|(n, op)| (Some(n.to_string()), op)),
            };
            match op {
                Some((name, op)) => {
                    let ty = match op.node.ty {
                        OperationType::Query => "query",
                        OperationType::Mutation => "mutation",
                        OperationType::Subscription => "subscription",
                    };
                    let fields: Vec<String> = op
                        .node
                        .selection_set
                        .node
                        .items
                        .iter()
                        .filter_map(|s| match &s.node {
                            Selection::Field(f) => Some(f.node.name.node.to_string()),
                            _ => None,
                        })
                        .collect();
                    (ty, name, fields.join(","))
                }
                None => ("unknown", None, String::new()),
            }
        }
        Err(_) => ("unparsed", None, String::new()),
    };
    let otel_name = match &name {
        Some(n) => format!("{ty} {n}"),
        None => ty.to_string(),
    };
    info_span!(
        "graphql",
        otel.name = %otel_name,
        graphql.operation.type = ty,
        graphql.operation.name = name.as_deref().unwrap_or(""),
        attach.graphql.fields = %fields,
    )
}

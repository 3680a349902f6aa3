//! Spans caught in memory, for the tests that follow a trace.

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the process's subscriber with Attach's span layer over an in-memory
/// exporter (once per test binary: a second subscriber cannot be installed).
pub fn capture() -> (InMemorySpanExporter, SdkTracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    tracing_subscriber::registry().with(attach_gateway::telemetry::spans_layer(&provider)).init();
    (exporter, provider)
}

/// A span's attribute, as text.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

/// The names of `span` and of its parents up to the root, each checked to be
/// in `trace`, and the root.
pub fn ancestry<'a>(spans: &'a [SpanData], span: &'a SpanData, trace: TraceId) -> (Vec<String>, &'a SpanData) {
    let mut names = vec![span.name.to_string()];
    let mut at = span;
    while let Some(parent) = spans.iter().find(|s| s.span_context.span_id() == at.parent_span_id) {
        assert_eq!(parent.span_context.trace_id(), trace, "one trace throughout");
        names.push(parent.name.to_string());
        at = parent;
    }
    (names, at)
}

//! HTTP routes: `/graphql`, GraphiQL at `/`, `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use attach_actors::error::ErrorCode;
use attach_actors::system::AttachSystem;
use axum::body::{Body, to_bytes};
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::graphql::document_cache::DocumentCache;
use crate::graphql::error::ensure_codes;
use crate::graphql::{AttachSchema, ConnectionSubscriptions};
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The executable schema.
    pub schema: AttachSchema,
    /// The core, for readiness.
    pub system: Arc<AttachSystem>,
    /// Set once start-up (demo seeding, shard loading) has finished.
    pub started: Arc<AtomicBool>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Parsed documents of recent queries.
    pub documents: Arc<DocumentCache>,
    /// Ping interval on subscription connections.
    pub keepalive: std::time::Duration,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Request counters and latency.
    pub metrics: Arc<Metrics>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(crate::telemetry::http_span))
        .with_state(state)
}

/// `GET /graphql`: a WebSocket upgrade carries subscriptions
/// (`graphql-transport-ws`, or the legacy `graphql-ws`); a plain GET is GraphiQL.
async fn graphql_get(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    if !request.headers().contains_key(header::UPGRADE) {
        return graphiql().await.into_response();
    }
    let (mut parts, _) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(_) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "subscriptions need the graphql-transport-ws (or graphql-ws) subprotocol",
            );
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let schema = state.schema.clone();
    let keepalive = state.keepalive;
    let mut data = async_graphql::Data::default();
    data.insert(ConnectionSubscriptions::new(state.max_subscriptions));
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol).with_data(data).keepalive_timeout(keepalive).serve()
        })
        .into_response()
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").title("Attach").finish())
}

fn request_error(status: StatusCode, message: &str) -> Response {
    let body =
        json!({ "errors": [{ "message": message, "extensions": { "code": ErrorCode::InvalidInput.as_str() } }] });
    (status, Json(body)).into_response()
}

/// Executes one GraphQL request. The body is read with a hard cap, so an
/// oversized request is refused before it is parsed.
async fn graphql(State(state): State<AppState>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, state.max_body_bytes).await else {
        return request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {} bytes", state.max_body_bytes),
        );
    };
    let mut request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(_) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object with a `query` string (and optional `variables`, `operationName`)",
            );
        }
    };
    let started = std::time::Instant::now();
    state.documents.prepare(&mut request);
    let span = crate::telemetry::graphql_span(&mut request);
    let mut response = state.schema.execute(request).instrument(span).await;
    ensure_codes(&mut response);
    state.metrics.record(
        started.elapsed(),
        response.errors.iter().filter_map(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code")).and_then(|c| match c {
                async_graphql::Value::String(s) => Some(s.clone()),
                _ => None,
            })
        }),
    );
    let mut http = Json(&response).into_response();
    http.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    http
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.system).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (up, total) = state.system.directory().running();
    let started = state.started.load(Ordering::Acquire);
    // A feed that is down does not make the node unready: mutations stay
    // durable and subscribers catch up; the state is reported for operators.
    let feed = state.system.feed_status();
    let ready = started && up == total;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready,
        "started": started,
        "shards": { "running": up, "total": total },
        "feed": { "backend": feed.backend, "connected": feed.connected, "dropped": feed.dropped },
    });
    (status, Json(body)).into_response()
}

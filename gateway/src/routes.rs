//! HTTP routes: `/graphql`, GraphiQL at `/`, `/healthz` and `/readyz`.
//!
//! A GraphQL request passes, in order: authentication (a bad bearer token is
//! a 401 here; no token is the public caller), the rate limit of the caller
//! (429), the body cap, then the schema, whose operations check the caller.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use async_graphql::ParseRequestError;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, MultipartOptions, receive_body};
use attach_actors::access::Principal;
use attach_actors::error::ErrorCode;
use attach_actors::system::AttachSystem;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::auth::token::{Signed, TokenError};
use crate::graphql::document_cache::DocumentCache;
use crate::graphql::error::ensure_codes;
use crate::graphql::{AttachSchema, ConnectionSubscriptions, PrincipalSubscriptions};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimits, Verdict};
use crate::ws;

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
    /// Largest multipart (file upload) request body accepted.
    pub max_upload_bytes: usize,
    /// Origins besides this server's whose pages may open a WebSocket (`limits.websocket_origins`).
    pub websocket_origins: Arc<Vec<String>>,
    /// How long a request's body may take to arrive (`limits.body_read_secs`).
    pub body_read: std::time::Duration,
    /// Parsed documents of recent queries.
    pub documents: Arc<DocumentCache>,
    /// Most fields a document may select (`limits.max_fields`).
    pub max_fields: usize,
    /// The query type's nullable fields, for a failed field's null.
    pub nullable_roots: Arc<crate::graphql::failed::NullableRoots>,
    /// Becomes true when the server starts shutting down: subscription
    /// connections are then closed with 1001.
    pub closing: watch::Receiver<bool>,
    /// Subscription connections open now, so shutdown can wait for their close frames.
    pub sockets: Arc<watch::Sender<usize>>,
    /// Ping interval on subscription connections.
    pub keepalive: std::time::Duration,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Request counters and latency.
    pub metrics: Arc<Metrics>,
    /// Checks bearer tokens.
    pub auth: Arc<Authenticator>,
    /// Requests per principal and per client IP.
    pub limits: Arc<RateLimits>,
    /// Subscriptions per principal, across connections.
    pub subscriptions: Arc<PrincipalSubscriptions>,
    /// Finds the client's address behind trusted proxies.
    pub client_ip: Arc<crate::client_ip::ClientIp>,
    /// Sends requests for shards other nodes hold to them (nothing while the node has no peers).
    pub forwarder: Arc<crate::forward::Forwarder>,
    /// The cluster's secrets, to recognise peers and the requests they forwarded.
    pub secrets: Arc<crate::forward::ClusterSecrets>,
    /// Whether `/` (and a plain GET of `/graphql`) is GraphiQL.
    pub graphiql: bool,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route(crate::graphiql::ASSETS_ROUTE, get(graphiql_file))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(crate::forward::HAND_BACK_PATH, axum::routing::post(hand_back))
        .route(crate::forward::CALL_PATH, axum::routing::post(cluster_call))
        .fallback(|| async { (StatusCode::NOT_FOUND, error_body(ErrorCode::NotFound, "no such path: the API is at /graphql")) })
        .method_not_allowed_fallback(|| async {
            let message = "method not allowed: GraphQL requests are POSTs to /graphql (a GET there is GraphiQL, or a WebSocket upgrade)";
            (StatusCode::METHOD_NOT_ALLOWED, error_body(ErrorCode::InvalidInput, message))
        })
        .layer(axum::middleware::from_fn(crate::telemetry::http_span))
        .with_state(state)
}

/// `GET /graphql`: a WebSocket upgrade carries subscriptions
/// (`graphql-transport-ws`, or the legacy `graphql-ws`); a plain GET is GraphiQL.
/// The caller's token comes in the upgrade's `Authorization` header or in the
/// `connection_init` payload (`{"Authorization": "Bearer …"}`), which wins.
async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    if !request.headers().contains_key(header::UPGRADE) {
        return graphiql(State(state)).await;
    }
    let started = Instant::now();
    let ip = client_ip(&request, &state);
    let (mut parts, _) = request.into_parts();
    // A browser opens a socket from any page without asking (no CORS preflight
    // for WebSockets), and an anonymous socket runs mutations: only pages of
    // this server, or of the origins configured, may (a reviewer found the
    // JSON-only rule for POST bypassed this way).
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !origin_allowed(origin, parts.headers.get(header::HOST), &state.websocket_origins)
    {
        let message = "a WebSocket from a page of another origin is refused: list it in limits.websocket_origins";
        return refusal(&state, started, StatusCode::FORBIDDEN, ErrorCode::Forbidden, message);
    }
    // Its place among the connections the server keeps goes with the socket.
    let slot = parts.extensions.get::<crate::http_server::Slot>().cloned();
    let from_header = match state.auth.from_headers(&parts.headers).await {
        Ok(p) => p,
        Err(e) => return refuse_token(&state, ip, &parts.headers, &e, started).await,
    };
    let verdict = state.limits.check(from_header.as_ref().map(|s| &s.principal), ip).await;
    // An upgrade without a token may sign in with `connection_init` (as the
    // README shows): over its address's anonymous quota it is still let in,
    // and charged to the principal it signs in as; one that does not sign in
    // is closed then.
    let anonymous_over = match verdict.as_ref().filter(|v| !v.allowed()) {
        Some(v) if from_header.is_some() => return too_many(&state, v, started),
        Some(v) => Some(v.retry_after.unwrap_or(1)),
        None => None,
    };
    let Some(kind) = ws::protocol(&parts.headers) else {
        return request_error(
            StatusCode::BAD_REQUEST,
            "subscriptions need the graphql-transport-ws (or graphql-ws) subprotocol",
        );
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // The credential it signed in with, for queries and mutations sent on to peers.
    let credential: crate::socket_executor::Credential = Default::default();
    if from_header.is_some() {
        *credential.lock().unwrap_or_else(|e| e.into_inner()) = parts.headers.get(header::AUTHORIZATION).cloned();
    }
    let executor = crate::socket_executor::SocketExecutor::new(
        state.schema.clone(),
        state.system.clone(),
        state.forwarder.clone(),
        state.nullable_roots.clone(),
        credential.clone(),
    );
    let keepalive = state.keepalive;
    let mut data = async_graphql::Data::default();
    data.insert(ConnectionSubscriptions::new(state.max_subscriptions));
    data.insert(state.subscriptions.clone());
    let auth = state.auth.clone();
    let watcher = state.auth.clone();
    let (limits, metrics, audit) = (state.limits.clone(), state.metrics.clone(), state.system.clone());
    // The connection ends when the token it signed in with expires or is revoked.
    let (signed_tx, signed_in) = watch::channel(from_header.clone());
    let on_init = move |payload: serde_json::Value| async move {
        let mut data = async_graphql::Data::default();
        let signed = match auth.from_init_payload(&payload).await {
            Ok(Some(signed)) => {
                let given = payload.as_object().and_then(crate::auth::init_credential).and_then(|v| v.as_str());
                *credential.lock().unwrap_or_else(|e| e.into_inner()) =
                    given.and_then(|v| HeaderValue::from_str(v).ok());
                Some(signed)
            }
            Ok(None) => from_header,
            Err(e) => {
                // Counted against the address, as a bad token over HTTP is: a
                // tester's 150 bad sign-ins over sockets were all checked, for nothing.
                if let Some(v) = limits.check(None, ip).await.filter(|v| !v.allowed()) {
                    metrics.rate_limited(v.policy);
                    let wait = v.retry_after.unwrap_or(1);
                    let why = format!(
                        "too many requests from this address (a token that is not valid counts): try again in {wait} s"
                    );
                    return Err(async_graphql::Error::new(why));
                }
                let given = payload.as_object().and_then(crate::auth::init_credential).and_then(|v| v.as_str());
                audit_refused_token(&auth, &audit, given, &e).await;
                // graphql-transport-ws closes the socket with this reason.
                return Err(async_graphql::Error::new(format!("{}: {e}", ws::REFUSED_SIGN_IN)));
            }
        };
        if let Some(wait) = anonymous_over {
            // The upgrade, over the address's anonymous quota, is the signed-in caller's request.
            let Some(principal) = signed.as_ref().map(|s| &s.principal) else {
                let why = format!("too many requests from this address: sign in, or try again in {wait} s");
                return Err(async_graphql::Error::new(why));
            };
            if let Some(v) = limits.check(Some(principal), ip).await.filter(|v| !v.allowed()) {
                metrics.rate_limited(v.policy);
                let why = format!("too many requests: try again in {} s", v.retry_after.unwrap_or(1));
                return Err(async_graphql::Error::new(why));
            }
        }
        if let Some(signed) = signed {
            data.insert(signed.principal.clone());
            signed_tx.send_replace(Some(signed));
        }
        Ok(data)
    };
    let admission: Arc<dyn ws::Admission> = Arc::new(WsAdmission {
        max_fields: state.max_fields,
        limits: state.limits.clone(),
        metrics: state.metrics.clone(),
        signed_in: signed_in.clone(),
        ip,
    });
    let mut closing = state.closing.clone();
    let sockets = state.sockets.clone();
    let ended = async move {
        tokio::select! {
            frame = signed_in_until(signed_in, watcher) => frame,
            Ok(_) = closing.wait_for(|closing| *closing) => ws::going_away(),
        }
    };
    let mut response = upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(ws::READ_BUFFER_BYTES)
        .max_message_size(state.max_body_bytes)
        // Checked as a frame's header arrives: a frame announcing more than a
        // message may hold is refused before its payload is read (or buffered).
        .max_frame_size(state.max_body_bytes)
        .on_upgrade(move |socket| {
            let open = OpenSocket::new(sockets);
            async move {
                ws::serve(socket, executor, kind, data, on_init, keepalive, admission, ended).await;
                drop((open, slot));
            }
        })
        .into_response();
    if let Some(v) = verdict {
        v.write_headers(response.headers_mut());
    }
    response
}

/// Whether a page of `origin` may open a socket here: one of this server
/// (its host and port are the request's `Host`), or one listed (`*` lists all).
fn origin_allowed(origin: &HeaderValue, host: Option<&HeaderValue>, listed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    if listed.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    host.and_then(|h| h.to_str().ok()).is_some_and(|host| !authority.is_empty() && authority.eq_ignore_ascii_case(host))
}

/// Counts a subscription connection as open while it lives.
struct OpenSocket(Arc<watch::Sender<usize>>);

impl OpenSocket {
    fn new(sockets: Arc<watch::Sender<usize>>) -> Self {
        sockets.send_modify(|n| *n += 1);
        OpenSocket(sockets)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Rate limits the operations a subscription connection starts, each as one
/// request of the principal it signed in as (or of its address), as over HTTP.
struct WsAdmission {
    max_fields: usize,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
    signed_in: watch::Receiver<Option<Signed>>,
    ip: IpAddr,
}

impl ws::Admission for WsAdmission {
    fn admit(&self, message: &[u8]) -> futures::future::BoxFuture<'static, Option<ws::Refusal>> {
        let principal = self.signed_in.borrow().as_ref().map(|s| s.principal.clone());
        let (limits, metrics, ip) = (self.limits.clone(), self.metrics.clone(), self.ip);
        let (message, max_fields) = (message.to_vec(), self.max_fields);
        Box::pin(async move {
            // As over HTTP: the quota first, then (only if allowed) the document is
            // read, and its other top-level fields are counted.
            let refused = |verdict: Verdict| {
                metrics.rate_limited(verdict.policy);
                let wait = verdict.retry_after.unwrap_or(1);
                Some(ws::Refusal::new(ErrorCode::RateLimited, format!("too many requests: try again in {wait} s")))
            };
            if let Some(verdict) = limits.check(principal.as_ref(), ip).await.filter(|v| !v.allowed()) {
                return refused(verdict);
            }
            let fields = match crate::graphql::budget::message_cost(&message, max_fields) {
                Ok(fields) => fields,
                Err(why) => return Some(ws::Refusal::new(ErrorCode::InvalidInput, why)),
            };
            match charge_fields(&limits, principal.as_ref(), ip, fields).await {
                Ok(_) => None,
                Err(FieldsRefused::OverBurst(why)) => Some(ws::Refusal::new(ErrorCode::InvalidInput, why)),
                Err(FieldsRefused::Wait(verdict)) => refused(verdict),
            }
        })
    }
}

/// Why a request's further top-level fields were not allowed.
enum FieldsRefused {
    /// More than the quota's whole burst: never allowed, so not worth a retry.
    OverBurst(String),
    /// Over the quota for now.
    Wait(Verdict),
}

/// Counts a request's top-level fields after the first (which its admission
/// counted) against the caller's quota: each is one request's worth. The
/// verdict, when they were counted, says where the caller stands now.
async fn charge_fields(
    limits: &RateLimits,
    principal: Option<&Principal>,
    ip: IpAddr,
    fields: u32,
) -> Result<Option<Verdict>, FieldsRefused> {
    let Some(extra) = std::num::NonZeroU32::new(fields.saturating_sub(1)) else { return Ok(None) };
    match limits.check_n(principal, ip, extra).await {
        None => Ok(None),
        Some(v) if v.allowed() => Ok(Some(v)),
        Some(v) if fields > v.quota => Err(FieldsRefused::OverBurst(format!(
            "this request selects {fields} top-level fields, and each counts as one request against a quota of {} \
             at once (\"{}\"): split it",
            v.quota, v.policy
        ))),
        Some(v) => {
            // The admission counted one already and is not given back, and a
            // retry's admission counts one again before these: the wait covers
            // that one too, else a caller who waits as told is refused for
            // ever when a unit takes a second or more to come back.
            let unit = v.window.div_ceil(u64::from(v.quota.max(1)));
            let wait = v.retry_after.map(|w| w + unit);
            Err(FieldsRefused::Wait(Verdict { retry_after: wait, reset: wait.unwrap_or(v.reset), ..v }))
        }
    }
}

/// Resolves when the token a subscription connection signed in with expires
/// or is revoked, with the close frame that ends the connection and every
/// subscription on it (a client signs in again with a fresh token).
async fn signed_in_until(
    mut signed_in: watch::Receiver<Option<Signed>>,
    auth: Arc<Authenticator>,
) -> axum::extract::ws::CloseFrame {
    let mut revocations = auth.revocations_changed();
    // The sender goes away once `connection_init` is handled; the token stays.
    let mut settled = false;
    loop {
        let signed = signed_in.borrow_and_update().clone();
        if signed.as_ref().is_some_and(|s| auth.is_revoked(s)) {
            tracing::debug!("closing a subscription connection: its token was revoked");
            return ws::signed_out("the token was revoked");
        }
        let deadline = signed.as_ref().map(|s| s.expires + auth.leeway());
        let expired = async {
            match deadline {
                Some(t) => tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = signed_in.changed(), if !settled => settled = changed.is_err(),
            // A new list: checked at the top of the loop.
            Ok(()) = revocations.changed() => {}
            () = expired => {
                tracing::debug!("closing a subscription connection: its token expired");
                return ws::signed_out("the token expired");
            }
        }
    }
}

/// The client's address: the socket's peer (unspecified when the router runs
/// without connect info, as in-process tests do), or behind trusted proxies
/// what they say (`client_ip.rs`).
fn client_ip(request: &Request, state: &AppState) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
    state.client_ip.of(peer, request.headers())
}

pub(crate) fn error_body(code: ErrorCode, message: &str) -> Json<serde_json::Value> {
    Json(json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] }))
}

/// 401 for a token that was sent but is not valid. Bad tokens count against
/// the client's address, so guessing costs quota like any anonymous call.
async fn refuse_token(
    state: &AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    error: &TokenError,
    started: Instant,
) -> Response {
    let verdict = state.limits.check(None, ip).await;
    if let Some(v) = verdict.as_ref().filter(|v| !v.allowed()) {
        return too_many(state, v, started);
    }
    let credential = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    audit_refused_token(&state.auth, &state.system, credential, error).await;
    let message = error.to_string();
    let mut response = refusal(state, started, StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, &message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    if let Some(v) = verdict {
        v.write_headers(response.headers_mut());
    }
    response
}

/// Records a refused token whose signature held (it expired, or was revoked)
/// under the subject it was signed for: a lost or stolen token's use belongs in
/// the audit log (a tester's revoked owner token left no trace). Any other bad
/// token's subject could be anyone's, and is not recorded.
async fn audit_refused_token(
    auth: &Authenticator,
    system: &AttachSystem,
    credential: Option<&str>,
    error: &TokenError,
) {
    let Some(credential) = credential else { return };
    let Some(who) = auth.signed_for(credential, error).await else { return };
    if let Err(e) = system.audit_refused_sign_in(&who, *error == TokenError::Expired).await {
        tracing::error!(error = %e, "the audit record of a refused token was lost");
    }
}

/// A refusal made before GraphQL runs, counted in the metrics by its code as
/// GraphQL's own errors are.
fn refusal(state: &AppState, started: Instant, status: StatusCode, code: ErrorCode, message: &str) -> Response {
    state.metrics.record(started.elapsed(), std::iter::once(code.as_str().to_string()));
    (status, error_body(code, message)).into_response()
}

/// 429 with `Retry-After` and the `RateLimit` headers.
fn too_many(state: &AppState, verdict: &Verdict, started: Instant) -> Response {
    state.metrics.rate_limited(verdict.policy);
    state.metrics.record(started.elapsed(), std::iter::once(ErrorCode::RateLimited.as_str().to_string()));
    let wait = verdict.retry_after.unwrap_or(1);
    let message = format!("too many requests: try again in {wait} s");
    let mut response = (StatusCode::TOO_MANY_REQUESTS, error_body(ErrorCode::RateLimited, &message)).into_response();
    verdict.write_headers(response.headers_mut());
    response
}

/// One of GraphiQL's files, where the server offers it.
async fn graphiql_file(State(state): State<AppState>, file: axum::extract::Path<String>) -> Response {
    if state.graphiql { crate::graphiql::asset(file).await } else { crate::graphiql::off() }
}

/// GraphiQL, where the server offers it (`graphiql`).
async fn graphiql(State(state): State<AppState>) -> Response {
    if state.graphiql { crate::graphiql::page() } else { crate::graphiql::off() }
}

fn request_error(status: StatusCode, message: &str) -> Response {
    (status, error_body(ErrorCode::InvalidInput, message)).into_response()
}

/// `POST /graphql`: authenticates and rate-limits the caller, then executes.
async fn graphql(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let ip = client_ip(&request, &state);
    let (parts, body) = request.into_parts();
    // Refused before its body is read, the connection cannot carry another
    // request (the body may still be on its way), so the answer says it closes.
    let closing = |mut response: Response| {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let principal = match state.auth.from_headers(&parts.headers).await {
        Ok(signed) => signed.map(|s| s.principal),
        Err(e) => return closing(refuse_token(&state, ip, &parts.headers, &e, started).await),
    };
    // A request a peer forwarded with the cluster's secret was counted there.
    let trusted = state.secrets.trust_hop(&parts.headers);
    let verdict = if trusted { None } else { state.limits.check(principal.as_ref(), ip).await };
    if let Some(v) = verdict.as_ref().filter(|v| !v.allowed()) {
        return closing(too_many(&state, v, started));
    }
    let counted = (!trusted).then_some(ip);
    let mut response = execute(&state, principal, &parts.headers, body, counted).await;
    // Unless counting the request's further fields said where the caller stands since.
    if let Some(v) = verdict.filter(|_| !response.headers().contains_key("ratelimit")) {
        v.write_headers(response.headers_mut());
    }
    response
}

/// Executes one GraphQL request for `principal` (none: the public caller):
/// JSON, or a multipart upload (the GraphQL multipart request spec) carrying a
/// file. The body is read with a hard cap (a larger one for uploads), so an
/// oversized request is refused before it is parsed. With `counted` (the
/// client's address; none for a request a peer forwarded, counted there), the
/// request was counted once against the caller's quota, and its further
/// top-level fields are counted here.
async fn execute(
    state: &AppState,
    principal: Option<Principal>,
    headers: &HeaderMap,
    body: Body,
    counted: Option<IpAddr>,
) -> Response {
    let started = std::time::Instant::now();
    // Refused before GraphQL runs, and counted as the GraphQL requests are.
    let refused = |status: StatusCode, message: &str| refusal(state, started, status, ErrorCode::InvalidInput, message);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let essence = content_type.as_deref().map(|c| c.split(';').next().unwrap_or_default().trim());
    let multipart = essence.is_some_and(|c| c.eq_ignore_ascii_case("multipart/form-data"));
    let json = essence.is_some_and(|c| c.eq_ignore_ascii_case("application/json"));
    // A web page can make its visitors' browsers send a form, or text, here
    // without asking first (a tester registered households from an HTML form, each
    // from its visitor's address, past the per-address quota); JSON needs a CORS
    // preflight, and a browser never adds `Authorization` to such a request.
    // Refused before the body is read, so the connection cannot carry another.
    // A peer's request (counted there) is taken as it comes: an earlier build
    // forwarded a socket's requests with no content type.
    let trusted = counted.is_none();
    let unread = |mut response: Response| {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    if multipart && !headers.contains_key(header::AUTHORIZATION) && !trusted {
        let message = "a multipart upload needs a signed-in caller (Authorization: Bearer …); nothing was read";
        let mut response = refusal(state, started, StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return unread(response);
    }
    if !multipart && !json && !trusted {
        let message = "send a GraphQL request as JSON, with Content-Type: application/json (or a panel file as \
                       multipart/form-data, signed in); nothing was read";
        return unread(refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    }
    let cap = if multipart { state.max_upload_bytes } else { state.max_body_bytes };
    let bytes = match read_body(body, cap, state.body_read).await {
        Ok(bytes) => bytes,
        // A body that stops arriving holds its connection and what was read of it
        // (a tester held 300 part-sent bodies open).
        Err(BodyRefused::Stalled) => {
            let message = format!(
                "the request body stopped arriving: each part must come within {} s of the last",
                state.body_read.as_secs()
            );
            return unread(refused(StatusCode::REQUEST_TIMEOUT, &message));
        }
        Err(BodyRefused::TooLarge) => {
            // An upload's cap is the panel file's limit with room for the form around it: say so.
            let message = if multipart {
                let file = cap.saturating_sub(crate::config::UPLOAD_FORM_ROOM);
                format!(
                    "the request body is larger than {cap} bytes: a panel file may be at most {file} bytes \
                     (limits.max_panel_bytes); split it into smaller files"
                )
            } else {
                format!("the request body is larger than {cap} bytes")
            };
            return unread(refused(StatusCode::PAYLOAD_TOO_LARGE, &message));
        }
    };
    // Kept (a cheap handle) in case the request must go to the node holding its shard.
    let original = bytes.clone();
    let parsed = if multipart {
        let options = MultipartOptions::default().max_file_size(cap).max_num_files(1);
        receive_body(content_type, futures::io::Cursor::new(bytes), options).await.map_err(|e| match e {
            ParseRequestError::PayloadTooLarge => format!("the uploaded file is larger than {cap} bytes"),
            _ => "a multipart request carries `operations`, `map` and one file, as the GraphQL multipart \
                  request spec says"
                .to_string(),
        })
    } else {
        // serde would take `{}` (no query) or `[]` (a struct read as a list) as an empty query.
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        serde_json::from_slice::<async_graphql::Request>(&bytes)
            .ok()
            .filter(|r| object && !r.query.trim().is_empty())
            .ok_or_else(|| {
                "the body must be a JSON object with a `query` string (and optional `variables`, `operationName`)"
                    .to_string()
            })
    };
    let mut request = match parsed {
        Ok(r) => r,
        Err(message) => return refused(StatusCode::BAD_REQUEST, &message),
    };
    // The larger cap is for the file: the rest of an upload is held to a JSON request's.
    if multipart {
        if request.uploads.is_empty() {
            return refused(StatusCode::BAD_REQUEST, "a multipart request carries a file; send other requests as JSON");
        }
        let variables = serde_json::to_string(&request.variables).map_or(0, |v| v.len());
        if request.query.len() + variables > state.max_body_bytes {
            let message = format!("a multipart request's operations are larger than {} bytes", state.max_body_bytes);
            return refused(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
    }
    // Before anything parses the text (the parser recurses without a limit on literals).
    if !crate::graphql::nesting::within(&request.query) {
        return refused(StatusCode::BAD_REQUEST, &crate::graphql::nesting::refusal());
    }
    state.documents.prepare(&mut request);
    // Before anything follows the document's fragments (see `graphql::budget`).
    if request.parsed_query().is_ok_and(|doc| !crate::graphql::budget::within(doc, state.max_fields)) {
        let error = async_graphql::ServerError::new(crate::graphql::budget::refusal(state.max_fields), None);
        let mut response = async_graphql::Response::from_errors(vec![error]);
        ensure_codes(&mut response);
        return answered(state, started, headers, &response);
    }
    // Before anything runs: request errors, as GraphQL's validation and variable coercion make them.
    if let Some(why) = crate::graphql::cannot_run(&mut request) {
        let mut response = async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(why, None)]);
        ensure_codes(&mut response);
        return answered(state, started, headers, &response);
    }
    let mut charged = None;
    if let Some(ip) = counted {
        let name = request.operation_name.clone();
        let variables = std::mem::take(&mut request.variables);
        let fields = request
            .parsed_query()
            .map_or(1, |doc| crate::graphql::budget::root_fields(doc, name.as_deref(), &variables));
        request.variables = variables;
        match charge_fields(&state.limits, principal.as_ref(), ip, fields).await {
            Ok(None) => {}
            Ok(Some(verdict)) => charged = Some(verdict),
            Err(FieldsRefused::OverBurst(why)) => return refused(StatusCode::BAD_REQUEST, &why),
            Err(FieldsRefused::Wait(verdict)) => return too_many(state, &verdict, started),
        }
    }
    if let Some(principal) = principal {
        request = request.data(principal);
    }
    let clustered = state.forwarder.has_peers();
    let mutation = clustered && !crate::forward::is_query(&mut request);
    let fields = crate::forward::query_fields(&mut request);
    let span = crate::telemetry::graphql_span(&mut request);
    let mut response = state.schema.execute(request).instrument(span).await;
    crate::graphql::failed::in_order(&mut response, fields.as_deref());
    ensure_codes(&mut response);
    if clustered {
        state.forwarder.complete(&state.system, headers, &original, &mut response, mutation).await;
    }
    crate::graphql::failed::finish(&mut response, fields.as_deref(), &state.nullable_roots, || {
        crate::forward::query_text(&original)
    });
    let mut http = answered(state, started, headers, &response);
    if let Some(v) = charged {
        v.write_headers(http.headers_mut());
    }
    http
}

/// Why a request's body was not taken.
enum BodyRefused {
    /// Larger than the cap.
    TooLarge,
    /// No part of it came within the deadline of the last (or of the headers), or
    /// the whole took more than ten deadlines: a client holding its connection.
    Stalled,
}

/// Reads a body of at most `cap` bytes, each part within `idle` of the last, and
/// all of it within ten times that (so a slow uplink sends a large panel file,
/// and a client dribbling a byte at a time does not hold its connection for ever).
async fn read_body(body: Body, cap: usize, idle: std::time::Duration) -> Result<Bytes, BodyRefused> {
    use futures::StreamExt;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        loop {
            match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Err(BodyRefused::Stalled),
                Ok(None) => return Ok(Bytes::from(bytes)),
                // The client went away or sent what is not HTTP: nothing to answer, as for a body too large.
                Ok(Some(Err(_))) => return Err(BodyRefused::TooLarge),
                Ok(Some(Ok(part))) if bytes.len() + part.len() > cap => return Err(BodyRefused::TooLarge),
                Ok(Some(Ok(part))) => bytes.extend_from_slice(&part),
            }
        }
    };
    tokio::time::timeout(idle * 10, read).await.unwrap_or(Err(BodyRefused::Stalled))
}

/// A GraphQL response as HTTP: counted in the metrics by its error codes, never
/// cached, in the media type the client accepts (`graphql::media`).
fn answered(
    state: &AppState,
    started: std::time::Instant,
    request_headers: &HeaderMap,
    response: &async_graphql::Response,
) -> Response {
    state.metrics.record(
        started.elapsed(),
        response.errors.iter().filter_map(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code")).and_then(|c| match c {
                async_graphql::Value::String(s) => Some(s.clone()),
                _ => None,
            })
        }),
    );
    let mut http = crate::graphql::media::MediaType::accepted(request_headers).answer(response);
    http.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    http
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render(&state.system, state.limits.shared_failures()).await;
    {
        use std::fmt::Write;
        let forwarder = &state.forwarder;
        let _ =
            writeln!(body, "# HELP attach_forwarded_requests_total Requests sent on to the node holding their shard.");
        let _ = writeln!(body, "# TYPE attach_forwarded_requests_total counter");
        let _ = writeln!(body, "attach_forwarded_requests_total {}", forwarder.forwarded());
        let (sent, served) = forwarder.calls();
        let _ = writeln!(body, "# HELP attach_cluster_calls_sent_total Steps of requests run on a peer's shard.");
        let _ = writeln!(body, "# TYPE attach_cluster_calls_sent_total counter");
        let _ = writeln!(body, "attach_cluster_calls_sent_total {sent}");
        let _ = writeln!(body, "# HELP attach_cluster_calls_served_total Steps run here on a peer's behalf.");
        let _ = writeln!(body, "# TYPE attach_cluster_calls_served_total counter");
        let _ = writeln!(body, "attach_cluster_calls_served_total {served}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The body of a request from a peer: one that carries the cluster's secret.
/// Without it, 403 (`refusal` says why), and the attempt counts against the
/// client's address like a bad token, so the secret cannot be guessed at speed.
async fn from_peer(state: &AppState, request: Request, refusal: &str) -> Result<axum::body::Bytes, Response> {
    /// As axum's `Bytes` extractor takes by default.
    const MAX_PEER_BODY: usize = 2 << 20;
    let started = Instant::now();
    if !state.secrets.carried_by(request.headers()) {
        let ip = client_ip(&request, state);
        let verdict = state.limits.check(None, ip).await;
        if let Some(v) = verdict.as_ref().filter(|v| !v.allowed()) {
            return Err(too_many(state, v, started));
        }
        let mut response = (StatusCode::FORBIDDEN, refusal.to_string()).into_response();
        if let Some(v) = verdict {
            v.write_headers(response.headers_mut());
        }
        return Err(response);
    }
    axum::body::to_bytes(request.into_body(), MAX_PEER_BODY)
        .await
        .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, format!("the body could not be read: {e}")).into_response())
}

/// `POST /cluster/hand-back` `{"node": NAME}`, from a peer that has just
/// started, with the cluster's secret: stop running the shards it should hold.
async fn hand_back(State(state): State<AppState>, request: Request) -> Response {
    let body = match from_peer(&state, request, "the cluster's secret is needed to ask for shards").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let node = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["node"].as_str().map(str::to_string))
        .filter(|n| state.forwarder.knows(n));
    let Some(node) = node else {
        return (StatusCode::BAD_REQUEST, "the body names no peer of this node: {\"node\": NAME}").into_response();
    };
    let handed = state.system.hand_back(&node).await;
    tracing::info!(peer = %node, shards = handed, "handing shards back");
    Json(json!({ "handedBack": handed })).into_response()
}

/// `POST /cluster/call`, from a peer with the cluster's secret: run a step on
/// one of this node's shards (`attach_actors::system::ShardCall`, encoded) and
/// answer its encoded result. A step refused by the shard is an encoded error
/// with `200 OK`; only a missing secret is refused here.
async fn cluster_call(State(state): State<AppState>, request: Request) -> Response {
    let body = match from_peer(&state, request, "the cluster's secret is needed to run a step here").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let reply = state.system.serve_remote(&body).await;
    state.forwarder.served_call();
    ([(header::CONTENT_TYPE, "application/octet-stream")], reply).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (up, total) = state.system.readiness();
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

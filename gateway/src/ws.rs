//! Subscription connections: async-graphql's protocol state machine, driven
//! here over the axum socket with the server's keepalive pings in between.
//!
//! async-graphql's `keepalive_timeout` only closes a connection whose client
//! has been quiet that long; it never pings. Most clients (the `graphql-ws`
//! library included) send nothing while they wait, so without the server's
//! pings a coordinator watching a quiet community would be cut off. Here the
//! server pings every `feed.keepalive_secs`:
//! - `graphql-transport-ws`: `{"type":"ping"}`, which a client must answer with
//!   a pong; async-graphql closes a client silent for two intervals (code
//!   3008, "timeout");
//! - the legacy `graphql-ws` (subscriptions-transport-ws): `{"type":"ka"}`,
//!   which needs no answer, so those connections are not timed out.
//!
//! A connection not acknowledged within one interval (no `connection_init`,
//! or one still being checked) is closed with graphql-transport-ws's 4408
//! ("Connection initialisation timeout"), whatever else it sends: a client's
//! pings alone would otherwise hold it open for ever, signed in as nobody.

use std::time::Duration;

use async_graphql::http::{WebSocket as Protocol, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{HeaderMap, header};
use futures::{SinkExt, StreamExt, future};

/// Read buffer of a subscription connection. tungstenite zero-fills its whole
/// read buffer before every read attempt, and async-graphql polls the socket
/// for input each time a subscription yields: with the default 128 KiB that
/// memset was a fifth of the server's time under a busy feed. Clients send
/// only small control messages.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The subprotocol a client asked for, as async-graphql picks it.
pub fn protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    offered.split(',').find_map(|p| p.trim().parse().ok())
}

/// The keepalive message of a protocol.
pub fn ping(protocol: WebSocketProtocols) -> &'static str {
    match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    }
}

/// How long a client may stay silent before async-graphql closes it: two ping
/// intervals where the protocol makes it answer, unbounded where it does not.
pub fn client_timeout(protocol: WebSocketProtocols, every: Duration) -> Option<Duration> {
    matches!(protocol, WebSocketProtocols::GraphQLWS).then_some(every * 2)
}

/// How a refused `connection_init` begins its reason (the close reason the
/// client reads, and how `close_code` recognises a refused sign-in).
pub const REFUSED_SIGN_IN: &str = "UNAUTHENTICATED";

/// A close frame. Its reason is cut to the 123 bytes a close frame holds: a
/// longer one (serde's message for an unknown message type is) cannot be
/// sent, and the connection would drop without saying why.
fn frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: reason[..end].into() }
}

/// The close codes graphql-transport-ws names where async-graphql uses generic
/// ones, which clients act on:
/// - a refused sign-in: async-graphql closes every refused `connection_init`
///   with 1002 (protocol error); the protocol says 4403 (Forbidden), and the
///   client signs in again rather than retrying;
/// - any other message it cannot read: 1002 again, where the protocol says
///   4400 (Bad Request);
/// - a `subscribe` before the connection was acknowledged: async-graphql says
///   1011 (internal error); the protocol says 4401 (Unauthorized).
///
/// The legacy protocol names no codes: its closes pass unchanged.
fn close_code(protocol: WebSocketProtocols, code: u16, reason: &str) -> u16 {
    if protocol != WebSocketProtocols::GraphQLWS {
        return code;
    }
    match code {
        1002 if reason.starts_with(REFUSED_SIGN_IN) => 4403,
        1002 => 4400,
        1011 if reason.starts_with("The handshake is not completed") => 4401,
        _ => code,
    }
}

/// What a client's message does to the operations of its connection.
#[derive(Debug, PartialEq, Eq)]
enum FromClient {
    /// Starts an operation under a free id (`subscribe`, or the legacy `start`).
    Starts(String),
    /// Starts one under an id in use: graphql-transport-ws closes with 4409.
    Reuses(String),
    /// A message of the other protocol (`start`, `stop` or
    /// `connection_terminate` on graphql-transport-ws), which async-graphql
    /// would take: the protocol closes with 4400.
    Foreign(String),
    /// Anything else.
    Other,
}

/// What to do with a message the server is sending.
#[derive(Debug, PartialEq, Eq)]
enum ToClient {
    Send,
    /// async-graphql's `complete` for an operation the client completed itself:
    /// graphql-transport-ws sends none, and a client that already reused the
    /// id would take it for the end of the new operation.
    Drop,
    /// Sent as this instead: an operation refused before it ran (validation)
    /// is answered `error`, not async-graphql's `next` and `complete`.
    Replace(String),
}

/// The ids of a connection's operations under way. async-graphql would
/// silently put a second operation with an id in use in the first one's
/// place, and the client would go on waiting for the first; an id is free
/// again once the client completes it or the server sends its `complete` or
/// `error`.
#[derive(Debug)]
struct Operations {
    /// Whether a reused id closes the connection (graphql-transport-ws).
    unique: bool,
    /// Whether the server acknowledged the connection: before, async-graphql
    /// closes on any operation (4401), which needs no admission.
    acknowledged: bool,
    under_way: std::collections::HashSet<String>,
    /// Operations the client completed, whose `complete` async-graphql still sends.
    completed_by_client: std::collections::HashSet<String>,
    /// Operations under way that have had no answer yet: their first `next`
    /// is read to tell a request refused before it ran.
    unanswered: std::collections::HashSet<String>,
    /// Operations answered `error` in place of `next`, whose `complete` is not sent.
    errored: std::collections::HashSet<String>,
}

/// The type and id of a protocol message, as far as [`Operations`] reads it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

fn envelope(text: &[u8]) -> Option<(String, String)> {
    let (kind, id) = kind_and_id(text)?;
    Some((kind, id?))
}

/// The type of a protocol message and its id, if it has one.
fn kind_and_id(text: &[u8]) -> Option<(String, Option<String>)> {
    let m: Envelope = serde_json::from_slice(text).ok()?;
    Some((m.kind.into_owned(), m.id.map(std::borrow::Cow::into_owned)))
}

impl Operations {
    fn new(protocol: WebSocketProtocols) -> Self {
        let unique = protocol == WebSocketProtocols::GraphQLWS;
        Operations {
            unique,
            acknowledged: false,
            under_way: Default::default(),
            completed_by_client: Default::default(),
            unanswered: Default::default(),
            errored: Default::default(),
        }
    }

    /// Reads a client's message. async-graphql takes `subscribe` and `start`
    /// (and `complete` and `stop`) alike under either protocol, so both are read.
    fn client_sent(&mut self, text: &[u8]) -> FromClient {
        let Some((kind, id)) = kind_and_id(text) else { return FromClient::Other };
        if self.unique && matches!(kind.as_str(), "start" | "stop" | "connection_terminate") {
            return FromClient::Foreign(kind);
        }
        let Some(id) = id else { return FromClient::Other };
        if matches!(kind.as_str(), "subscribe" | "start") && self.acknowledged {
            if self.unique && self.under_way.contains(&id) {
                return FromClient::Reuses(id);
            }
            self.under_way.insert(id.clone());
            if self.unique {
                self.unanswered.insert(id.clone());
            }
            return FromClient::Starts(id);
        }
        if matches!(kind.as_str(), "complete" | "stop") && self.under_way.remove(&id) {
            self.completed_by_client.insert(id);
        }
        FromClient::Other
    }

    /// An operation refused before async-graphql saw it: its id is free.
    fn refused(&mut self, id: &str) {
        self.under_way.remove(id);
        self.unanswered.remove(id);
    }

    /// Reads the server's message: an operation that completed or failed frees its id.
    fn server_sent(&mut self, text: &str) -> ToClient {
        if text.starts_with(r#"{"type":"connection_ack""#) {
            self.acknowledged = true;
            return ToClient::Send;
        }
        // An operation's first answer: a request refused before it ran is `error`.
        if !self.unanswered.is_empty() && text.starts_with(r#"{"type":"next""#) {
            return self.first_next(text);
        }
        // Only those two end an operation; other `next` messages (the feed) go unparsed.
        let complete = text.starts_with(r#"{"type":"complete""#);
        if !(complete || text.starts_with(r#"{"type":"error""#)) {
            return ToClient::Send;
        }
        let Some((_, id)) = envelope(text.as_bytes()) else { return ToClient::Send };
        // Answered `error` already: the operation ended there.
        if complete && self.errored.remove(&id) {
            return ToClient::Drop;
        }
        self.unanswered.remove(&id);
        // async-graphql answers a client's complete at once, before it reads the
        // client's next message, so the echo comes before the id can be reused.
        if complete && self.unique && self.completed_by_client.remove(&id) {
            return ToClient::Drop;
        }
        self.completed_by_client.remove(&id);
        self.under_way.remove(&id);
        ToClient::Send
    }
}

impl Operations {
    /// Reads a `next` that may be an operation's first answer. async-graphql
    /// answers a request refused before it ran (it fails validation, or a check
    /// made before any field) with `next`, no data and errors naming no field
    /// (`path`), then `complete`; graphql-transport-ws answers it `error`, with
    /// the errors as its payload, and nothing after. An answer with data, or
    /// with an error of a field that ran, stays `next`.
    fn first_next(&mut self, text: &str) -> ToClient {
        let Some((_, id)) = envelope(text.as_bytes()) else { return ToClient::Send };
        if !self.unanswered.remove(&id) {
            return ToClient::Send;
        }
        if !text.contains(r#""data":null"#) {
            return ToClient::Send;
        }
        let Ok(message) = serde_json::from_str::<serde_json::Value>(text) else { return ToClient::Send };
        let payload = &message["payload"];
        let errors = payload["errors"].as_array().filter(|e| !e.is_empty());
        let refused =
            payload["data"].is_null() && errors.is_some_and(|errors| errors.iter().all(|e| e.get("path").is_none()));
        match errors {
            Some(errors) if refused => {
                self.errored.insert(id.clone());
                self.under_way.remove(&id);
                let error = serde_json::json!({ "type": "error", "id": id, "payload": errors });
                ToClient::Replace(error.to_string())
            }
            _ => ToClient::Send,
        }
    }
}

/// The close frame for a message of the other protocol.
fn foreign(kind: &str) -> CloseFrame {
    frame(4400, &format!("Invalid message received: `{kind}` is not a graphql-transport-ws message"))
}

/// The close frame for a second `subscribe` with an id in use.
fn duplicate_id(id: &str) -> CloseFrame {
    frame(4409, &format!("Subscriber for {id} already exists"))
}

/// The message that refuses operation `id` with `code` and `message`, which
/// ends that operation only: `error` in either protocol.
fn refusal(protocol: WebSocketProtocols, id: &str, code: &str, message: &str) -> String {
    let error = serde_json::json!({ "message": message, "extensions": { "code": code } });
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
        WebSocketProtocols::SubscriptionsTransportWS => error,
    };
    serde_json::json!({ "type": "error", "id": id, "payload": payload }).to_string()
}

/// The close frame of a server that is shutting down.
pub fn going_away() -> CloseFrame {
    frame(1001, "the server is shutting down; connect again")
}

/// The close frame of a connection whose sign-in ended (its token expired or
/// was revoked): 4403, as for a refused sign-in, with a reason that says which,
/// so a client knows to sign in again rather than treat it as a network failure.
pub fn signed_out(why: &str) -> CloseFrame {
    frame(4403, &format!("{REFUSED_SIGN_IN}: {why}; sign in again"))
}

/// Gives the GraphQL errors an outgoing message carries a code, as
/// `ensure_codes` does for an HTTP answer: async-graphql raises syntax,
/// validation and limit errors without one (`error` messages), and a field's
/// argument errors while it runs (`next`/`data` messages). Messages without an
/// error (the feed's events) are passed on untouched, unparsed.
fn with_codes(text: String) -> String {
    if !text.contains("\"message\"") {
        return text;
    }
    // async-graphql's value keeps an object's keys in order, where serde_json's
    // would sort them (the answer's fields stay in the order the query selects).
    let Ok(mut message) = serde_json::from_str::<async_graphql::Value>(&text) else { return text };
    let async_graphql::Value::Object(top) = &mut message else { return text };
    let errors = match top.get_mut("payload") {
        Some(async_graphql::Value::Object(payload)) => payload.get_mut("errors"),
        Some(list @ async_graphql::Value::List(_)) => Some(list),
        _ => None,
    };
    let Some(errors) = errors.filter(|e| matches!(e, async_graphql::Value::List(_))) else { return text };
    let Ok(parsed) =
        std::mem::take(errors).into_json().and_then(serde_json::from_value::<Vec<async_graphql::ServerError>>)
    else {
        return text;
    };
    if parsed.iter().all(|e| e.extensions.as_ref().is_some_and(|x| x.get("code").is_some())) {
        return text;
    }
    let mut response = async_graphql::Response::from_errors(parsed);
    crate::graphql::error::ensure_codes(&mut response);
    let Ok(coded) = async_graphql::to_value(&response.errors) else { return text };
    *errors = coded;
    serde_json::to_string(&message).unwrap_or(text)
}

/// The connection's shared state, locked: a panic while holding a lock cannot
/// leave the sets or slots it guards inconsistent for their use here.
fn lock<T>(shared: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an operation a client starts over a connection may run: `None`,
/// or the message refusing it (the caller's quota is used up). Every
/// `subscribe` counts as a request, as an HTTP one does, since a connection
/// may carry queries and mutations too.
pub trait Admission: Send + Sync + 'static {
    /// Asks for the operation the client's `message` starts.
    fn admit(&self, message: &[u8]) -> futures::future::BoxFuture<'static, Option<Refusal>>;
}

/// Why an operation was refused before it ran: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    /// A refusal with a stable code.
    pub fn new(code: attach_actors::error::ErrorCode, message: String) -> Self {
        Refusal { code: code.as_str(), message }
    }
}

/// Serves one connection: async-graphql's protocol over `socket` (as
/// `async_graphql_axum::GraphQLWebSocket::serve` does), with a ping every
/// `every` written by the same task, so no message takes an extra hop. Each
/// operation started is admitted by `admission` first. When `ended`
/// resolves, the connection is closed with the frame it gives.
#[allow(clippy::too_many_arguments)]
pub async fn serve<E, OnInit, InitFut>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    data: Data,
    on_init: OnInit,
    every: Duration,
    admission: std::sync::Arc<dyn Admission>,
    ended: impl Future<Output = CloseFrame>,
) where
    E: Executor,
    OnInit: FnOnce(serde_json::Value) -> InitFut + Send + 'static,
    InitFut: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    use std::sync::{Arc, Mutex};
    let (mut sink, input) = socket.split();
    let ops = Arc::new(Mutex::new(Operations::new(protocol)));
    // Messages the connection itself answers with (a refused operation), and
    // the close frame of a message that ends it (an id reused, the other
    // protocol's message). Bounded: while refusals wait to be sent, the
    // client's next messages are not read.
    let (answer, mut answers) = tokio::sync::mpsc::channel::<String>(8);
    let (closing_tx, mut closing) = futures::channel::oneshot::channel::<CloseFrame>();
    let closing_tx = Arc::new(Mutex::new(Some(closing_tx)));
    let reading = ops.clone();
    // async-graphql reads the client through this filter, only as fast as it
    // takes messages, so a client cannot queue work here.
    // A message the socket could not read (over `max_message_size`, or not a
    // frame) ends the connection with a close frame that says so.
    let unreadable: Arc<Mutex<Option<CloseFrame>>> = Arc::default();
    let noted = unreadable.clone();
    let input = input
        .take_while(move |read| {
            if let Err(e) = read {
                *lock(&noted) = Some(unreadable_frame(&e.to_string()));
            }
            future::ready(read.is_ok())
        })
        .filter_map(move |read| {
            let (ops, admission, answer, closing_tx) =
                (reading.clone(), admission.clone(), answer.clone(), closing_tx.clone());
            async move {
                let data = match read {
                    Ok(m @ (Message::Text(_) | Message::Binary(_))) => m.into_data(),
                    _ => return None,
                };
                let verdict = lock(&ops).client_sent(&data);
                let close = |frame: CloseFrame| {
                    if let Some(tell) = lock(&closing_tx).take() {
                        let _ = tell.send(frame);
                    }
                    None
                };
                match verdict {
                    FromClient::Reuses(id) => close(duplicate_id(&id)),
                    FromClient::Foreign(kind) => close(foreign(&kind)),
                    FromClient::Starts(id) => match admission.admit(&data).await {
                        None => Some(data),
                        Some(why) => {
                            lock(&ops).refused(&id);
                            let _ = answer.send(refusal(protocol, &id, why.code, &why.message)).await;
                            None
                        }
                    },
                    FromClient::Other => Some(data),
                }
            }
        });
    let messages = Protocol::new(executor, input, protocol)
        .connection_data(data)
        .on_connection_init(on_init)
        .keepalive_timeout(client_timeout(protocol, every))
        .filter_map(|message| {
            future::ready(match message {
                WsMessage::Text(text) => match lock(&ops).server_sent(&text) {
                    ToClient::Send => Some(Message::Text(with_codes(text).into())),
                    ToClient::Replace(error) => Some(Message::Text(with_codes(error).into())),
                    ToClient::Drop => None,
                },
                WsMessage::Close(code, reason) => {
                    Some(Message::Close(Some(frame(close_code(protocol, code, &reason), &reason))))
                }
            })
        });
    futures::pin_mut!(messages);
    futures::pin_mut!(ended);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init_timeout = tokio::time::sleep(every);
    futures::pin_mut!(init_timeout);
    loop {
        let message = tokio::select! {
            _ = &mut init_timeout, if !lock(&ops).acknowledged => {
                let _ = sink.send(Message::Close(Some(frame(4408, "Connection initialisation timeout")))).await;
                return;
            }
            next = messages.next() => match next {
                Some(message) => message,
                None => break,
            },
            Some(text) = answers.recv() => Message::text(text),
            _ = tick.tick() => Message::text(ping(protocol)),
            frame = &mut ended => {
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            Ok(frame) = &mut closing => {
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
        };
        if sink.send(message).await.is_err() {
            return;
        }
    }
    let frame = lock(&unreadable).take();
    match frame {
        Some(frame) => {
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        None => {
            let _ = sink.close().await;
        }
    }
}

/// The close frame for a message the socket could not read: 1009 for one
/// over the size limit, 1002 (protocol error) for anything else.
fn unreadable_frame(error: &str) -> CloseFrame {
    let code = if error.contains("Message too long") || error.contains("Space limit exceeded") { 1009 } else { 1002 };
    frame(code, &format!("the message could not be read: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn errors_sent_over_a_socket_carry_codes_and_events_pass_untouched() {
        let refused = r#"{"type":"error","id":"1","payload":[{"message":"Unknown field \"nope\" on type \"MatchEvent\".","locations":[{"line":1,"column":40}]}]}"#;
        let coded: serde_json::Value = serde_json::from_str(&with_codes(refused.to_string())).unwrap();
        assert_eq!(coded["payload"][0]["extensions"]["code"], "INVALID_INPUT");
        assert_eq!(coded["payload"][0]["message"], "Unknown field \"nope\" on type \"MatchEvent\".");
        let next = r#"{"type":"next","id":"1","payload":{"data":null,"errors":[{"message":"Failed to parse \"Int\": Invalid number","path":["events"]}]}}"#;
        let coded: serde_json::Value = serde_json::from_str(&with_codes(next.to_string())).unwrap();
        assert_eq!(coded["payload"]["errors"][0]["extensions"]["code"], "INVALID_INPUT");
        let kept =
            r#"{"type":"next","id":"1","payload":{"errors":[{"message":"x","extensions":{"code":"FORBIDDEN"}}]}}"#;
        let coded: serde_json::Value = serde_json::from_str(&with_codes(kept.to_string())).unwrap();
        assert_eq!(coded["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN");
        // The data beside an error keeps the order of its fields.
        let partial = r#"{"type":"next","id":"1","payload":{"data":{"b":1,"a":{"z":2,"y":3}},"errors":[{"message":"Failed to parse \"Int\"","path":["c"]}]}}"#;
        let coded = r#"{"type":"next","id":"1","payload":{"data":{"b":1,"a":{"z":2,"y":3}},"errors":[{"message":"Failed to parse \"Int\"","path":["c"],"extensions":{"code":"INVALID_INPUT"}}]}}"#;
        assert_eq!(with_codes(partial.to_string()), coded);
        let event = r#"{"type":"next","id":"1","payload":{"data":{"communityEvents":{"kind":"REGISTERED","seq":3}}}}"#;
        assert_eq!(with_codes(event.to_string()), event);
    }

    #[test]
    fn an_id_is_in_use_until_either_side_completes_it_and_a_completes_echo_is_dropped() {
        let mut ops = Operations::new(WebSocketProtocols::GraphQLWS);
        let sub = |id: &str| format!(r#"{{"id":"{id}","type":"subscribe","payload":{{"query":"{{ a }}"}}}}"#);
        let done = |id: &str| format!(r#"{{"type":"complete","id":"{id}"}}"#);
        // Before the acknowledgement async-graphql closes on any operation: nothing to admit.
        assert_eq!(ops.client_sent(sub("0").as_bytes()), FromClient::Other);
        assert_eq!(ops.server_sent(r#"{"type":"connection_ack"}"#), ToClient::Send);
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Starts("1".into()));
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Reuses("1".into()));
        // The legacy protocol's messages, which async-graphql would take on this one too, close it (4400).
        let start = r#"{"id":"1","type":"start","payload":{"query":"{ a }"}}"#;
        assert_eq!(ops.client_sent(start.as_bytes()), FromClient::Foreign("start".into()));
        assert_eq!(
            ops.client_sent(br#"{"type":"connection_terminate"}"#),
            FromClient::Foreign("connection_terminate".into())
        );
        assert_eq!(ops.client_sent(br#"{"id":"1","type":"stop"}"#), FromClient::Foreign("stop".into()));
        // The client completes it: async-graphql's answering complete is dropped, and the id is free.
        assert_eq!(ops.client_sent(done("1").as_bytes()), FromClient::Other);
        assert_eq!(ops.server_sent(&done("1")), ToClient::Drop);
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Starts("1".into()));
        // The server completes it (the stream ended): sent, and the id is free.
        assert_eq!(ops.server_sent(r#"{"type":"next","id":"1","payload":{}}"#), ToClient::Send);
        assert_eq!(ops.server_sent(&done("1")), ToClient::Send);
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Starts("1".into()));
        // A client completing what already ended leaves nothing to drop later.
        assert_eq!(ops.server_sent(r#"{"type":"error","id":"1","payload":[]}"#), ToClient::Send);
        assert_eq!(ops.client_sent(done("1").as_bytes()), FromClient::Other);
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Starts("1".into()));
        assert_eq!(ops.server_sent(&done("1")), ToClient::Send);
        // Refused before async-graphql saw it: free at once.
        assert_eq!(ops.client_sent(sub("2").as_bytes()), FromClient::Starts("2".into()));
        ops.refused("2");
        assert_eq!(ops.client_sent(sub("2").as_bytes()), FromClient::Starts("2".into()));
        // The legacy protocol names no duplicate rule.
        let mut legacy = Operations::new(WebSocketProtocols::SubscriptionsTransportWS);
        legacy.server_sent(r#"{"type":"connection_ack"}"#);
        assert_eq!(legacy.client_sent(start.as_bytes()), FromClient::Starts("1".into()));
        assert_eq!(legacy.client_sent(start.as_bytes()), FromClient::Starts("1".into()));
        assert_eq!(legacy.client_sent(sub("2").as_bytes()), FromClient::Starts("2".into()));
    }

    #[test]
    fn a_request_refused_before_it_ran_is_answered_error_and_nothing_after() {
        let mut ops = Operations::new(WebSocketProtocols::GraphQLWS);
        ops.server_sent(r#"{"type":"connection_ack"}"#);
        let sub = |id: &str| format!(r#"{{"id":"{id}","type":"subscribe","payload":{{"query":"{{ a }}"}}}}"#);
        // Validation: no data, errors naming no field. `error`, and async-graphql's `complete` dropped.
        ops.client_sent(sub("1").as_bytes());
        let invalid = r#"{"type":"next","id":"1","payload":{"data":null,"errors":[{"message":"Unknown field 'nope'","locations":[{"line":1,"column":3}]}]}}"#;
        let ToClient::Replace(error) = ops.server_sent(invalid) else { panic!("not replaced") };
        let error: serde_json::Value = serde_json::from_str(&error).unwrap();
        assert_eq!((&error["type"], &error["id"]), (&serde_json::json!("error"), &serde_json::json!("1")));
        assert_eq!(error["payload"][0]["message"], "Unknown field 'nope'");
        assert_eq!(ops.server_sent(r#"{"type":"complete","id":"1"}"#), ToClient::Drop);
        assert_eq!(ops.client_sent(sub("1").as_bytes()), FromClient::Starts("1".into()), "the id is free");
        // A field that ran and failed (it has a path), or an answer with data: `next`, as before.
        let failed = r#"{"type":"next","id":"1","payload":{"data":null,"errors":[{"message":"x","path":["a"]}]}}"#;
        assert_eq!(ops.server_sent(failed), ToClient::Send);
        assert_eq!(ops.server_sent(r#"{"type":"complete","id":"1"}"#), ToClient::Send);
        ops.client_sent(sub("2").as_bytes());
        assert_eq!(ops.server_sent(r#"{"type":"next","id":"2","payload":{"data":{"a":1}}}"#), ToClient::Send);
        // Only the first answer is read: a later one is a feed event, passed on unread.
        let later = r#"{"type":"next","id":"2","payload":{"data":null,"errors":[{"message":"x"}]}}"#;
        assert_eq!(ops.server_sent(later), ToClient::Send);
        // The legacy protocol answers a refused request `data` then `complete`, as its clients expect.
        let mut legacy = Operations::new(WebSocketProtocols::SubscriptionsTransportWS);
        legacy.server_sent(r#"{"type":"connection_ack"}"#);
        legacy.client_sent(br#"{"id":"1","type":"start","payload":{"query":"{ a }"}}"#);
        assert_eq!(legacy.server_sent(&invalid.replace("next", "data")), ToClient::Send);
    }

    #[test]
    fn close_codes_are_graphql_transport_ws_ones() {
        let current = WebSocketProtocols::GraphQLWS;
        assert_eq!(close_code(current, 1002, "UNAUTHENTICATED: bad token"), 4403);
        assert_eq!(close_code(current, 1002, "unknown variant `bogus`"), 4400);
        assert_eq!(close_code(current, 1011, "The handshake is not completed."), 4401);
        assert_eq!(close_code(current, 4429, "Too many initialisation requests."), 4429);
        assert_eq!(close_code(WebSocketProtocols::SubscriptionsTransportWS, 1002, "x"), 1002);
        let long = "é".repeat(100);
        let cut = frame(4400, &long);
        assert!(cut.reason.len() <= 123 && long.starts_with(cut.reason.as_str()), "{}", cut.reason.len());
        assert_eq!(duplicate_id(&"x".repeat(500)).reason.len(), 123);
        assert_eq!(unreadable_frame("Space limit exceeded: Message too long: 70000 > 65536").code, 1009);
        assert_eq!(unreadable_frame("Protocol error: reserved bits are non-zero").code, 1002);
        let refused: serde_json::Value =
            serde_json::from_str(&refusal(current, "7", "RATE_LIMITED", "too many")).unwrap();
        assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
        assert_eq!((&refused["type"], &refused["id"]), (&serde_json::json!("error"), &serde_json::json!("7")));
    }

    #[test]
    fn the_protocol_is_picked_as_async_graphql_picks_it() {
        let mut headers = HeaderMap::new();
        assert!(protocol(&headers).is_none());
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("foo, graphql-ws"));
        let legacy = protocol(&headers).unwrap();
        assert_eq!(ping(legacy), r#"{"type":"ka"}"#);
        assert_eq!(client_timeout(legacy, Duration::from_secs(30)), None, "ka needs no answer");
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("graphql-transport-ws"));
        let current = protocol(&headers).unwrap();
        assert_eq!(ping(current), r#"{"type":"ping"}"#);
        assert_eq!(client_timeout(current, Duration::from_secs(30)), Some(Duration::from_secs(60)));
    }
}

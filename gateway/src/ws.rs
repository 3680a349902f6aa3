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

/// The close codes graphql-transport-ws names where async-graphql uses generic
/// ones, which clients act on:
/// - a refused sign-in: async-graphql closes every refused `connection_init`
///   with 1002 (protocol error); the protocol says 4403 (Forbidden), and the
///   client signs in again rather than retrying;
/// - a `subscribe` before the connection was acknowledged: async-graphql says
///   1011 (internal error); the protocol says 4401 (Unauthorized).
fn close_code(code: u16, reason: &str) -> u16 {
    match code {
        1002 if reason.starts_with(REFUSED_SIGN_IN) => 4403,
        1011 if reason.starts_with("The handshake is not completed") => 4401,
        _ => code,
    }
}

/// The ids of a graphql-transport-ws connection's operations under way, so a
/// second `subscribe` with an id in use closes the connection with 4409, as
/// the protocol says. async-graphql would silently put the new operation in
/// the old one's place, and the client would go on waiting for the first.
/// An id is free again once the client completes it or the server sends its
/// `complete` or `error`.
#[derive(Default)]
struct OperationIds(std::sync::Mutex<std::collections::HashSet<String>>);

/// The type and id of a protocol message, as far as [`OperationIds`] reads it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

impl OperationIds {
    fn envelope(text: &[u8]) -> Option<(String, String)> {
        let m: Envelope = serde_json::from_slice(text).ok()?;
        Some((m.kind.into_owned(), m.id?.into_owned()))
    }

    /// Reads a client's message: `Err(id)` for a `subscribe` whose id is in use.
    fn client_sent(&self, text: &[u8]) -> Result<(), String> {
        let Some((kind, id)) = Self::envelope(text) else { return Ok(()) };
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kind.as_str() {
            "subscribe" if ids.contains(&id) => return Err(id),
            "subscribe" => ids.insert(id),
            "complete" => ids.remove(&id),
            _ => false,
        };
        Ok(())
    }

    /// Reads the server's message: an operation that completed or failed frees its id.
    fn server_sent(&self, text: &str) {
        // Only those two end an operation; `next` messages (the feed) go unparsed.
        if !(text.starts_with(r#"{"type":"complete""#) || text.starts_with(r#"{"type":"error""#)) {
            return;
        }
        if let Some((_, id)) = Self::envelope(text.as_bytes()) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }
}

/// The close frame for a second `subscribe` with an id in use.
fn duplicate_id(id: &str) -> CloseFrame {
    let id: String = id.chars().take(64).collect();
    CloseFrame { code: 4409, reason: format!("Subscriber for {id} already exists").into() }
}

/// The close frame of a connection whose sign-in ended (its token expired or
/// was revoked): 4403, as for a refused sign-in, with a reason that says which,
/// so a client knows to sign in again rather than treat it as a network failure.
pub fn signed_out(why: &str) -> CloseFrame {
    CloseFrame { code: 4403, reason: format!("{REFUSED_SIGN_IN}: {why}; sign in again").into() }
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

/// Serves one connection: async-graphql's protocol over `socket` (as
/// `async_graphql_axum::GraphQLWebSocket::serve` does), with a ping every
/// `every` written by the same task, so no message takes an extra hop. When
/// `ended` resolves, the connection is closed with the frame it gives.
pub async fn serve<E, OnInit, InitFut>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    data: Data,
    on_init: OnInit,
    every: Duration,
    ended: impl Future<Output = CloseFrame>,
) where
    E: Executor,
    OnInit: FnOnce(serde_json::Value) -> InitFut + Send + 'static,
    InitFut: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let (mut sink, input) = socket.split();
    let ids = std::sync::Arc::new(OperationIds::default());
    let (duplicate, mut reused) = futures::channel::oneshot::channel::<String>();
    let mut duplicate = Some(duplicate);
    let tracked = matches!(protocol, WebSocketProtocols::GraphQLWS).then(|| ids.clone());
    let input = input.take_while(|read| future::ready(read.is_ok())).filter_map(move |read| {
        future::ready(match read {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                let data = m.into_data();
                match tracked.as_ref().map(|ids| ids.client_sent(&data)) {
                    Some(Err(id)) => {
                        if let Some(tell) = duplicate.take() {
                            let _ = tell.send(id);
                        }
                        None
                    }
                    _ => Some(data),
                }
            }
            _ => None,
        })
    });
    let messages = Protocol::new(executor, input, protocol)
        .connection_data(data)
        .on_connection_init(on_init)
        .keepalive_timeout(client_timeout(protocol, every))
        .map(|message| match message {
            WsMessage::Text(text) => {
                ids.server_sent(&text);
                Message::Text(with_codes(text).into())
            }
            WsMessage::Close(code, reason) => {
                Message::Close(Some(CloseFrame { code: close_code(code, &reason), reason: reason.into() }))
            }
        });
    futures::pin_mut!(messages);
    futures::pin_mut!(ended);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            next = messages.next() => match next {
                Some(message) => message,
                None => break,
            },
            _ = tick.tick() => Message::text(ping(protocol)),
            frame = &mut ended => {
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            Ok(id) = &mut reused => {
                let _ = sink.send(Message::Close(Some(duplicate_id(&id)))).await;
                return;
            }
        };
        if sink.send(message).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
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

//! The HTTP client every scenario uses, carrying the caller's bearer token.

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// How long a connection may take to open, and a request to be answered: a
/// server that accepts connections and never answers must not hold a run
/// past its bounds.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// See [`CONNECT_TIMEOUT`].
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses a number of concurrent workers (connections) outside 1 to 1,000:
/// none would measure nothing and say it succeeded, and every run is bounded.
pub fn check_concurrency(concurrency: usize) -> anyhow::Result<()> {
    anyhow::ensure!((1..=1_000).contains(&concurrency), "concurrency is 1 to 1,000");
    Ok(())
}

/// PHN bodies are eight digits: every generated PHN's body is below this.
pub const PHN_BODIES: u64 = 100_000_000;

/// Refuses a `flag` (`--phn-start`, say) from which a run that may use `bodies`
/// PHN bodies would run past the last one: it would send fewer patients than
/// asked, or none, and report success (a tester saw a run spin at full CPU
/// past its time bound, looking for a valid PHN beyond the range).
pub fn check_phn_range(flag: &str, start: u32, bodies: u64) -> anyhow::Result<()> {
    let room = PHN_BODIES.saturating_sub(u64::from(start));
    anyhow::ensure!(
        bodies <= room,
        "{flag} {start} leaves room for {room} PHN bodies and this run may use {bodies}: a PHN's body has eight \
         digits (below {PHN_BODIES}), so pick a lower start, in a range no earlier run used"
    );
    Ok(())
}

/// The PHN bodies `patients` fresh PHNs may take, taking each next body that
/// has a check digit: about two bodies in eleven have none, so half as many
/// again, with room to spare.
pub fn bodies_for(patients: u64) -> u64 {
    patients.saturating_mul(3).div_ceil(2).saturating_add(13)
}

/// A client keeping up to `pool` idle connections, sending `token` (if any) as
/// `Authorization: Bearer …` on every request, each bounded by [`REQUEST_TIMEOUT`].
pub fn http(token: Option<&str>, pool: usize) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not header text")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        // Attach closes a connection idle for 30 s (`limits.header_read_secs`): drop it first.
        .pool_idle_timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// The `connection_init` message of a subscription connection, with the token.
pub fn connection_init(token: Option<&str>) -> serde_json::Value {
    match token {
        Some(token) => {
            serde_json::json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })
        }
        None => serde_json::json!({ "type": "connection_init" }),
    }
}

/// A subscription connection.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws connection to `url` (`ws://…/graphql`), signs in
/// with `token`, and starts subscription `1`: `query` with `{ "c": community }`.
pub async fn subscribe(url: &str, token: Option<&str>, query: &str, community: &str) -> anyhow::Result<Socket> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig};

    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    // tungstenite zero-fills its whole read buffer before every read; events are
    // small, and 100 clients with the default 128 KiB would spend the load
    // tool's share of the cores on memset.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
    let (mut ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("the WebSocket upgrade was not answered in {} s", REQUEST_TIMEOUT.as_secs()))??;
    ws.send(Message::text(connection_init(token).to_string())).await?;
    let subscribe = serde_json::json!({ "id": "1", "type": "subscribe",
        "payload": { "query": query, "variables": { "c": community } } });
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

/// The next protocol message on a subscription connection other than a ping,
/// which it answers (graphql-transport-ws servers close a connection whose
/// pings go unanswered); `None` once the connection has ended.
pub async fn next_message(ws: &mut Socket) -> Option<serde_json::Value> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    loop {
        let text = match ws.next().await? {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        if message["type"] == "ping" {
            ws.send(Message::text(r#"{"type":"pong"}"#)).await.ok()?;
            continue;
        }
        return Some(message);
    }
}

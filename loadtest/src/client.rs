//! The HTTP client every scenario uses, carrying the caller's bearer token.

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// A client keeping up to `pool` idle connections, sending `token` (if any) as
/// `Authorization: Bearer …` on every request.
pub fn http(token: Option<&str>, pool: usize) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not header text")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().pool_max_idle_per_host(pool).default_headers(headers).build()?)
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

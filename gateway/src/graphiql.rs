//! GraphiQL at `/`: the page and its scripts, served from the binary
//! (`assets/graphiql/README.md` says which files and how to check them).
//! Nothing is fetched from a CDN: the page works without internet, and its
//! `Content-Security-Policy` lets only this server's scripts run in a page
//! where people paste bearer tokens.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// GraphiQL's version, written once (a literal, for `concat!`).
macro_rules! version {
    () => {
        "4.1.2"
    };
}

/// GraphiQL's version, in its files' paths: a new one is never mixed with a
/// browser's cached copy of the old.
pub const VERSION: &str = version!();

/// The route of the page's files.
pub const ASSETS_ROUTE: &str = concat!("/graphiql/", version!(), "/{file}");

/// Scripts from this server only, no `eval`; styles may be inline (GraphiQL
/// sets some as it runs); fonts and icons come inside the stylesheet.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      font-src data:; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The page.
pub fn page() -> Response {
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Attach</title>
    <link rel="icon" href="data:,">
    <style>body {{ height: 100%; margin: 0; width: 100%; overflow: hidden; }} #graphiql {{ height: 100vh; }}</style>
    <link rel="stylesheet" href="/graphiql/{VERSION}/graphiql.min.css">
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL...</div>
    <script src="/graphiql/{VERSION}/react.production.min.js"></script>
    <script src="/graphiql/{VERSION}/react-dom.production.min.js"></script>
    <script src="/graphiql/{VERSION}/graphiql.min.js"></script>
    <script src="/graphiql/{VERSION}/start.js"></script>
  </body>
</html>
"#
    );
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, html).into_response()
}

/// One of the page's files, by name.
pub async fn asset(Path(file): Path<String>) -> Response {
    const JS: &str = "text/javascript; charset=utf-8";
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (include_bytes!("../assets/graphiql/graphiql.min.js"), JS),
        "graphiql.min.css" => (include_bytes!("../assets/graphiql/graphiql.min.css"), "text/css; charset=utf-8"),
        "react.production.min.js" => (include_bytes!("../assets/graphiql/react.production.min.js"), JS),
        "react-dom.production.min.js" => (include_bytes!("../assets/graphiql/react-dom.production.min.js"), JS),
        "start.js" => (include_bytes!("../assets/graphiql/start.js"), JS),
        _ => return off_or_missing("no such GraphiQL file"),
    };
    // GraphiQL's version is in the path: its files never change under it.
    // `start.js` is Attach's own, and may change with Attach.
    let cache = if file == "start.js" { "no-cache" } else { "public, max-age=31536000, immutable" };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin")),
    ];
    (headers, body).into_response()
}

/// The answer where GraphiQL or its files would be, on a server with `graphiql = false`.
pub fn off() -> Response {
    off_or_missing("GraphiQL is off on this server (graphiql = false)")
}

/// The answer where GraphiQL would be, on a server with `graphiql = false`,
/// or for a file it does not have.
fn off_or_missing(why: &str) -> Response {
    let message = format!("{why}: the API is at /graphql");
    (StatusCode::NOT_FOUND, crate::routes::error_body(attach_actors::error::ErrorCode::NotFound, &message))
        .into_response()
}

//! The media type of a GraphQL answer over HTTP, as the GraphQL over HTTP
//! specification has it.
//!
//! A client that accepts `application/graphql-response+json` gets it, and with
//! it HTTP statuses that say whether the request ran: a request that never
//! ran (its document did not parse or validate, or was refused before it ran)
//! is `400 Bad Request` with `errors` and no `data`; one that ran is `200 OK`,
//! field errors and all. Any other client gets `application/json`, always with
//! `200 OK`, as before that media type (the specification keeps it so for
//! clients that do not ask).

use async_graphql::Response as GraphqlResponse;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};

/// The newer media type.
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// Which media type an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`: always 200.
    Json,
    /// `application/graphql-response+json`: 400 for a request that never ran.
    GraphqlResponse,
}

impl MediaType {
    /// The one the request's `Accept` prefers: the newer type when it is
    /// acceptable at least as much as `application/json` (or `*/*`).
    pub fn accepted(headers: &HeaderMap) -> Self {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return MediaType::Json;
        };
        let (mut newer, mut json) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .next()
                .unwrap_or(1.0);
            let slot = match name.as_str() {
                GRAPHQL_RESPONSE => &mut newer,
                "application/json" | "application/*" | "*/*" => &mut json,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |was: f32| was.max(q)));
        }
        match newer {
            Some(q) if q > 0.0 && q >= json.unwrap_or(0.0) => MediaType::GraphqlResponse,
            _ => MediaType::Json,
        }
    }

    /// `response` as HTTP in this media type.
    pub fn answer(self, response: &GraphqlResponse) -> Response {
        match self {
            MediaType::Json => Json(response).into_response(),
            MediaType::GraphqlResponse if never_ran(response) => {
                let body = serde_json::json!({ "errors": response.errors });
                with_type((StatusCode::BAD_REQUEST, Json(body)).into_response())
            }
            MediaType::GraphqlResponse => with_type(Json(response).into_response()),
        }
    }
}

fn with_type(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(GRAPHQL_RESPONSE));
    response
}

/// Whether a response is a request error: nothing ran, so no field failed
/// (every error is about the request, without a path) and there is no data.
pub fn never_ran(response: &GraphqlResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> MediaType {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        MediaType::accepted(&headers)
    }

    #[test]
    fn the_newer_type_is_used_when_the_client_prefers_it() {
        assert_eq!(MediaType::accepted(&HeaderMap::new()), MediaType::Json);
        assert_eq!(accept("application/json"), MediaType::Json);
        assert_eq!(accept("*/*"), MediaType::Json);
        assert_eq!(accept("application/graphql-response+json"), MediaType::GraphqlResponse);
        // What the specification suggests clients send.
        assert_eq!(accept("application/graphql-response+json, application/json;q=0.9"), MediaType::GraphqlResponse);
        assert_eq!(accept("application/json, application/graphql-response+json;q=0.9"), MediaType::Json);
        assert_eq!(accept("Application/GraphQL-Response+JSON;charset=utf-8"), MediaType::GraphqlResponse);
        assert_eq!(accept("application/graphql-response+json;q=0"), MediaType::Json);
    }

    #[test]
    fn a_request_that_never_ran_is_a_bad_request_only_in_the_newer_type() {
        let invalid = GraphqlResponse::from_errors(vec![async_graphql::ServerError::new("Unknown field \"x\"", None)]);
        assert!(never_ran(&invalid));
        assert_eq!(MediaType::Json.answer(&invalid).status(), StatusCode::OK);
        let answer = MediaType::GraphqlResponse.answer(&invalid);
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers()[header::CONTENT_TYPE], GRAPHQL_RESPONSE);
        // A field that failed ran: 200, data and errors.
        let mut failed = GraphqlResponse::new(async_graphql::Value::Null);
        let mut error = async_graphql::ServerError::new("not found", None);
        error.path = vec![async_graphql::PathSegment::Field("registration".into())];
        failed.errors.push(error);
        assert!(!never_ran(&failed));
        assert_eq!(MediaType::GraphqlResponse.answer(&failed).status(), StatusCode::OK);
        assert!(!never_ran(&GraphqlResponse::new(async_graphql::Value::Null)), "no errors: it ran");
    }
}

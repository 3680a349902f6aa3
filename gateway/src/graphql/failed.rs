//! A query's top-level fields that failed, given as GraphQL says.
//!
//! async-graphql leaves a field whose resolver failed out of `data` (and makes
//! `data` null when every field failed). GraphQL's rule (spec, "Handling Field
//! Errors"): a failed field is null; a failed field of a non-null type makes
//! its parent null instead, which for a top-level field is `data` itself. A
//! client generated from the schema, or a router that checks answers against
//! it, relies on that: a non-null field is never simply missing.
//!
//! Only queries: a mutation's fields have each been run (async-graphql runs
//! the later ones after a failure, where GraphQL would stop), so making `data`
//! null would hide what they did. A mutation's failed field stays left out.

use async_graphql::{Name, PathSegment, Response, Value};

/// The schema's nullability: of the query type's top-level fields, and of
/// every field deeper down ([`super::nulls`]), read once from its SDL.
#[derive(Debug, Default)]
pub struct NullableRoots(super::nulls::Shape);

impl NullableRoots {
    /// Read from the schema's SDL.
    pub fn from_sdl(sdl: &str) -> Self {
        NullableRoots(super::nulls::Shape::from_sdl(sdl))
    }

    /// Whether the query type's field `name` may be null.
    pub fn contains(&self, name: &str) -> bool {
        self.0.root_field(name).is_some_and(|ty| ty.nullable)
    }
}

/// Puts a query's top-level fields (`fields`, from `forward::query_fields`) in
/// the order it selects them: async-graphql adds each as it finishes.
pub fn in_order(response: &mut Response, fields: Option<&[(String, String)]>) {
    if let Some(fields) = fields.filter(|f| f.len() > 1) {
        crate::forward::put_in_order(response, fields.iter().map(|(key, _)| key.as_str()));
    }
}

/// What every answer to a query or mutation goes through last, over HTTP or a
/// WebSocket: a query's failed fields given their GraphQL value (nested ones
/// by [`super::nulls`], read from the query `text` gives when asked, then the
/// top-level ones by [`null_failed`]), `{}` for a request whose every field was
/// skipped (async-graphql says null, which reads as a failure), and the
/// gateway's internal marks taken out.
pub fn finish(
    response: &mut Response,
    fields: Option<&[(String, String)]>,
    nullable: &NullableRoots,
    text: impl FnOnce() -> Option<(String, Option<String>)>,
) {
    if let Some(fields) = fields {
        // Read the query again only for an answer with a failed field below the top.
        if response.errors.iter().any(|e| e.path.len() > 1)
            && let Some((query, operation)) = text()
            && let Some(document) = super::nesting::parse(&query)
        {
            super::nulls::null_nested(response, &document, operation.as_deref(), &nullable.0);
        }
        null_failed(response, fields, nullable);
    }
    if response.errors.is_empty() && response.data == Value::Null {
        response.data = Value::Object(Default::default());
    }
    crate::forward::strip_marks(response);
}

/// Gives each top-level field of a query that failed (an error whose path
/// starts at it) and is missing from `data` its GraphQL value: null for a
/// nullable field, and `data` null for a non-null one. `fields` are the
/// query's (response key, field name), in order.
pub fn null_failed(response: &mut Response, fields: &[(String, String)], nullable: &NullableRoots) {
    if response.errors.is_empty() {
        return;
    }
    let present = |data: &Value, key: &str| matches!(data, Value::Object(m) if m.contains_key(key));
    let failed: Vec<&(String, String)> = fields
        .iter()
        .filter(|(key, _)| {
            !present(&response.data, key)
                && response.errors.iter().any(|e| matches!(e.path.first(), Some(PathSegment::Field(k)) if k == key))
        })
        .collect();
    if failed.is_empty() {
        return;
    }
    if failed.iter().any(|(_, name)| !nullable.contains(name)) {
        response.data = Value::Null;
        return;
    }
    if !matches!(response.data, Value::Object(_)) {
        response.data = Value::Object(Default::default());
    }
    if let Value::Object(data) = &mut response.data {
        for (key, _) in failed {
            data.insert(Name::new(key), Value::Null);
        }
    }
    crate::forward::put_in_order(response, fields.iter().map(|(key, _)| key.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::ServerError;

    const SDL: &str = "schema { query: Q } type Q { a: Int! b: String c: [Int!]! }";

    fn failing(keys: &[&str]) -> Vec<ServerError> {
        keys.iter()
            .map(|k| ServerError { path: vec![PathSegment::Field(k.to_string())], ..ServerError::new("no", None) })
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect()
    }

    fn answer(data: serde_json::Value, errors: Vec<ServerError>) -> serde_json::Value {
        let mut r = Response::new(Value::from_json(data).unwrap());
        r.errors = errors;
        let roots = NullableRoots::from_sdl(SDL);
        null_failed(&mut r, &fields(&[("x", "b"), ("y", "a"), ("z", "b")]), &roots);
        serde_json::to_value(&r.data).unwrap()
    }

    #[test]
    fn the_roots_nullability_is_read_from_the_schema() {
        let roots = NullableRoots::from_sdl(SDL);
        assert!(roots.contains("b"));
        assert!(!roots.contains("a") && !roots.contains("c"));
        assert!(NullableRoots::from_sdl("type Query { community: String registration: Int! }").contains("community"));
    }

    #[test]
    fn a_failed_nullable_field_is_null_in_its_place_and_a_non_null_one_nulls_data() {
        let out = answer(serde_json::json!({ "y": 1, "z": "zz" }), failing(&["x"]));
        assert_eq!(out.to_string(), r#"{"x":null,"y":1,"z":"zz"}"#, "null, in the query's order");
        assert_eq!(answer(serde_json::json!(null), failing(&["x", "z"])), serde_json::json!({ "x": null, "z": null }));
        assert_eq!(answer(serde_json::json!({ "x": "xx" }), failing(&["y"])), serde_json::Value::Null);
        // An error inside a field that is there (a nested one) leaves data as it is.
        let nested = vec![ServerError {
            path: vec![PathSegment::Field("y".into()), PathSegment::Field("deep".into())],
            ..ServerError::new("no", None)
        }];
        assert_eq!(answer(serde_json::json!({ "y": 1 }), nested), serde_json::json!({ "y": 1 }));
        // Errors without a path (validation) change nothing.
        let request_error = vec![ServerError::new("bad", None)];
        assert_eq!(answer(serde_json::json!(null), request_error), serde_json::Value::Null);
    }
}

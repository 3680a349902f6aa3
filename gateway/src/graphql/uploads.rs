//! Files a request names but does not carry.
//!
//! A multipart request's files reach a resolver as `Upload` values, which
//! async-graphql passes through the variables as the text
//! `#__graphql_file__:<index>`, written there by its own multipart reader. It
//! trusts that text: one with no number panics while the argument is read,
//! before any access check, and one past the request's files panics when the
//! resolver opens it. A client can send that text itself, in a JSON request's
//! variables or as a literal, so it is looked for before anything runs.

use async_graphql::{Value, Variables};

/// What async-graphql's multipart reader puts where a file goes.
const MARKER: &str = "#__graphql_file__:";

/// Why a request must not run because it names a file it does not carry:
/// the marker written into the document, or in its variables with anything
/// but the index of one of its `uploads` files.
pub fn forged(query: &str, variables: &Variables, uploads: usize) -> Option<String> {
    let named = |s: &str| s.strip_prefix(MARKER).is_some_and(|i| i.parse::<usize>().map_or(true, |i| i >= uploads));
    (query.contains(MARKER) || variables.values().any(|v| any_string(v, &named))).then(|| {
        "a file is sent as a multipart request (the GraphQL multipart request spec), not named in the query or \
         its variables"
            .to_string()
    })
}

fn any_string(value: &Value, found: &impl Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => found(s),
        Value::List(items) => items.iter().any(|v| any_string(v, found)),
        Value::Object(fields) => fields.values().any(|v| any_string(v, found)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(json: serde_json::Value) -> Variables {
        Variables::from_json(json)
    }

    #[test]
    fn only_the_files_a_request_carries_may_be_named() {
        let none = variables(serde_json::json!({}));
        assert!(forged("mutation($f: Upload!) { submitPanel(file: $f) { accepted } }", &none, 0).is_none());
        assert!(forged(r##"mutation { submitPanel(file: "#__graphql_file__:x") { accepted } }"##, &none, 1).is_some());
        for (bad, uploads) in [
            ("#__graphql_file__:x", 0),
            ("#__graphql_file__:", 1),
            ("#__graphql_file__:0", 0),
            ("#__graphql_file__:1", 1),
        ] {
            let nested = variables(serde_json::json!({ "f": bad, "deep": { "list": [bad] } }));
            assert!(forged("{ __typename }", &nested, uploads).is_some(), "{bad} with {uploads} files");
        }
        let carried = variables(serde_json::json!({ "f": "#__graphql_file__:0" }));
        assert!(forged("{ __typename }", &carried, 1).is_none(), "the multipart reader's own marker");
        let text = variables(serde_json::json!({ "note": "see #__graphql file" }));
        assert!(forged("{ __typename }", &text, 0).is_none());
    }
}

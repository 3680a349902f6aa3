//! Files a request names but does not carry.
//!
//! A multipart request's files reach a resolver as `Upload` values, which
//! async-graphql passes through the variables as the text
//! `#__graphql_file__:<index>`, written there by its own multipart reader. It
//! trusts that text: one with no number panics while the argument is read,
//! before any access check, and one past the request's files panics when the
//! resolver opens it. A client can send that text itself, in a JSON request's
//! variables or as a literal, so it is looked for before anything runs.

use async_graphql::parser::types::{ExecutableDocument, Selection};
use async_graphql::{Value, Variables};

/// What async-graphql's multipart reader puts where a file goes.
const MARKER: &str = "#__graphql_file__:";

/// Why a request must not run because it names a file it does not carry:
/// the marker written anywhere in the document (an argument, a directive's,
/// a variable's default: values as parsed, so an escaped `\u0023` is found
/// too), or in its variables with anything but the index of one of its
/// `uploads` files.
pub fn forged(document: &ExecutableDocument, variables: &Variables, uploads: usize) -> Option<String> {
    let named = |s: &str| s.strip_prefix(MARKER).is_some_and(|i| i.parse::<usize>().map_or(true, |i| i >= uploads));
    (in_document(document) || variables.values().any(|v| any_string(v, &named))).then(|| {
        "a file is sent as a multipart request (the GraphQL multipart request spec), not named in the query or \
         its variables"
            .to_string()
    })
}

/// Whether any value written in `document` holds the marker: a field's
/// argument or a variable's default. A value prints as GraphQL text with its
/// escapes decoded (`#` needs none), so the printed form holds the marker
/// exactly when the value does. Directives' arguments are left to
/// `directives::misused`, which refuses anything there but a Boolean or a
/// variable, and runs with this check wherever a request is admitted.
fn in_document(document: &ExecutableDocument) -> bool {
    let holds = |text: String| text.contains(MARKER);
    let mut definitions = document.operations.iter().flat_map(|(_, op)| &op.node.variable_definitions);
    definitions.any(|d| d.node.default_value.as_ref().is_some_and(|v| holds(v.node.to_string())))
        || super::directives::first_in_selections(document, |selection| match selection {
            Selection::Field(f) => f.node.arguments.iter().any(|(_, v)| holds(v.node.to_string())).then_some(()),
            _ => None,
        })
        .is_some()
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
        let doc = |q: &str| async_graphql::parser::parse_query(q).unwrap();
        let none = variables(serde_json::json!({}));
        let plain = doc("mutation($f: Upload!) { submitPanel(file: $f) { accepted } }");
        assert!(forged(&plain, &none, 0).is_none());
        for written in [
            r##"mutation { submitPanel(file: "#__graphql_file__:x") { accepted } }"##,
            r#"mutation { submitPanel(file: "\u0023__graphql_file__:x") { accepted } }"#,
            r#"mutation($f: Upload! = "\u0023__graphql_file__:x") { submitPanel(file: $f) { accepted } }"#,
            r#"mutation { ...F } fragment F on Mutation { submitPanel(file: "\u0023__graphql_file__:0") { accepted } }"#,
            r#"{ a @include(if: true) { b(x: ["\u0023__graphql_file__:0"]) } }"#,
        ] {
            assert!(forged(&doc(written), &none, 1).is_some(), "{written}");
        }
        // In a directive's argument it is refused too, by the directives' check that runs beside this one.
        let in_directive = doc(r#"{ a @skip(if: "\u0023__graphql_file__:x") }"#);
        assert!(super::super::directives::misused(&in_directive).is_some());
        let q = doc("{ __typename }");
        for (bad, uploads) in [
            ("#__graphql_file__:x", 0),
            ("#__graphql_file__:", 1),
            ("#__graphql_file__:0", 0),
            ("#__graphql_file__:1", 1),
        ] {
            let nested = variables(serde_json::json!({ "f": bad, "deep": { "list": [bad] } }));
            assert!(forged(&q, &nested, uploads).is_some(), "{bad} with {uploads} files");
        }
        let carried = variables(serde_json::json!({ "f": "#__graphql_file__:0" }));
        assert!(forged(&q, &carried, 1).is_none(), "the multipart reader's own marker");
        let text = variables(serde_json::json!({ "note": "see #__graphql file" }));
        assert!(forged(&q, &text, 0).is_none());
    }
}

//! Files a request names but does not carry.
//!
//! A multipart request's files reach a resolver as `Upload` values, which
//! async-graphql passes through the variables as the text
//! `#__graphql_file__:<index>`, written there by its own multipart reader. It
//! trusts that text: one with no number panics while the argument is read,
//! before any access check, and one past the request's files panics when the
//! resolver opens it. A client can send that text itself, in a JSON request's
//! variables or as a literal, so it is looked for before anything runs.

use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Positioned, Value, Variables};

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

/// Whether any value written in `document` holds the marker. A value prints
/// as GraphQL text with its escapes decoded (`#` needs none), so the printed
/// form holds the marker exactly when the value does.
fn in_document(document: &ExecutableDocument) -> bool {
    let holds = |text: String| text.contains(MARKER);
    let directives_hold = |directives: &[Positioned<Directive>]| {
        directives.iter().any(|d| d.node.arguments.iter().any(|(_, v)| holds(v.node.to_string())))
    };
    let mut pending: Vec<&SelectionSet> = Vec::new();
    for (_, operation) in document.operations.iter() {
        let op = &operation.node;
        let defaults = op.variable_definitions.iter().filter_map(|d| d.node.default_value.as_ref());
        if defaults.map(|v| v.node.to_string()).any(holds)
            || op.variable_definitions.iter().any(|d| directives_hold(&d.node.directives))
            || directives_hold(&op.directives)
        {
            return true;
        }
        pending.push(&op.selection_set.node);
    }
    for fragment in document.fragments.values() {
        if directives_hold(&fragment.node.directives) {
            return true;
        }
        pending.push(&fragment.node.selection_set.node);
    }
    // Each set once: fragments are walked where they are defined, not where spread.
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(f) => {
                    if f.node.arguments.iter().any(|(_, v)| holds(v.node.to_string()))
                        || directives_hold(&f.node.directives)
                    {
                        return true;
                    }
                    pending.push(&f.node.selection_set.node);
                }
                Selection::InlineFragment(i) => {
                    if directives_hold(&i.node.directives) {
                        return true;
                    }
                    pending.push(&i.node.selection_set.node);
                }
                Selection::FragmentSpread(s) => {
                    if directives_hold(&s.node.directives) {
                        return true;
                    }
                }
            }
        }
    }
    false
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

//! Variables an operation requires, checked before any of it runs.
//!
//! GraphQL coerces an operation's variables before executing it: a non-null
//! variable without a default that the request does not give is a request
//! error, and nothing runs. async-graphql instead reports it at each field
//! that reads the variable, after the fields before it ran: a mutation sent
//! without one of its variables registered a household in its first field and
//! failed only in its second.

use async_graphql::Variables;
use async_graphql::parser::types::ExecutableDocument;

/// Why the operation `name` (or the document's only one) cannot run with
/// `variables`: the first non-null variable without a default that is missing
/// or null. `None` when all are there, or when the operation is not found
/// (the schema reports that).
pub fn missing(document: &ExecutableDocument, name: Option<&str>, variables: &Variables) -> Option<String> {
    let operation = crate::forward::operation(document, name)?;
    operation.node.variable_definitions.iter().find_map(|definition| {
        let definition = &definition.node;
        let required = !definition.var_type.node.nullable && definition.default_value.is_none();
        let given = variables.get(&definition.name.node).is_some_and(|v| *v != async_graphql::Value::Null);
        (required && !given).then(|| {
            format!(
                "variable `${}` of type `{}` is required and was not given; nothing was run",
                definition.name.node, definition.var_type.node
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, variables: serde_json::Value, name: Option<&str>) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).unwrap();
        missing(&document, name, &Variables::from_json(variables))
    }

    #[test]
    fn a_required_variable_left_out_or_null_is_named() {
        let q = "mutation($r: ID!, $why: String) { a: withdrawRegistration(reference: $r, reason: $why) { status } }";
        let refused = check(q, serde_json::json!({}), None).unwrap();
        assert!(refused.contains("`$r` of type `ID!`"), "{refused}");
        assert!(check(q, serde_json::json!({ "r": null }), None).is_some());
        assert_eq!(check(q, serde_json::json!({ "r": "ABC" }), None), None, "the nullable one may be left out");
        assert_eq!(check("query($n: Int! = 5) { a }", serde_json::json!({}), None), None, "a default stands in");
    }

    #[test]
    fn only_the_operation_that_runs_is_checked() {
        let q = "query A($x: ID!) { a(x: $x) } query B { b }";
        assert_eq!(check(q, serde_json::json!({}), Some("B")), None);
        assert!(check(q, serde_json::json!({}), Some("A")).is_some());
        assert_eq!(check(q, serde_json::json!({}), None), None, "the schema reports a missing operation name");
    }
}

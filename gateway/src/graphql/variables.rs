//! Variables an operation requires, checked before any of it runs.
//!
//! GraphQL coerces an operation's variables before executing it: a non-null
//! variable without a default that the request does not give is a request
//! error, and nothing runs. async-graphql instead reports it at each field
//! that reads the variable, after the fields before it ran: a mutation sent
//! without one of its variables registered a household in its first field and
//! failed only in its second.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use async_graphql::Positioned;
use async_graphql::parser::types::{BaseType, ExecutableDocument, OperationDefinition, Type};
use async_graphql::{Value, Variables};

/// Why the operation `name` (or the document's only one) cannot run with
/// `variables`: the first non-null variable without a default that is missing
/// or null. `None` when all are there, or when the operation is not found
/// (the schema reports that).
pub fn missing(document: &ExecutableDocument, name: Option<&str>, variables: &Variables) -> Option<String> {
    let operation = crate::forward::operation(document, name)?;
    let declared = operation.node.variable_definitions.iter().find_map(|definition| {
        let definition = &definition.node;
        let required = !definition.var_type.node.nullable && definition.default_value.is_none();
        let value = variables.get(&definition.name.node);
        let given = value.is_some_and(|v| *v != Value::Null);
        if required && !given {
            return Some(format!(
                "variable `${}` of type `{}` is required and was not given; nothing was run",
                definition.name.node, definition.var_type.node
            ));
        }
        // async-graphql checks a scalar variable before running, but an input
        // object's only when a field reads it, after the fields before it ran.
        value.filter(|v| !shaped_as(&definition.var_type.node, v)).map(|_| {
            format!(
                "variable `${}` must be of type `{}` (an object where the type names an input object); \
                 nothing was run",
                definition.name.node, definition.var_type.node
            )
        })
    });
    declared.or_else(|| unusable(document, operation, name, variables))
}

/// A nullable variable without a default, left out or null, given straight to
/// a top-level field's argument that is non-null. GraphQL's "all variable
/// usages are allowed" rule makes such a document invalid; async-graphql ran
/// the fields before it and failed that one (a tester's mutation registered a
/// household in its first field, then failed its second). Variables inside
/// input objects and lists are not followed: those fail in the field that
/// reads them.
fn unusable(
    document: &ExecutableDocument,
    operation: &Positioned<OperationDefinition>,
    name: Option<&str>,
    variables: &Variables,
) -> Option<String> {
    use async_graphql::parser::types::OperationType;
    let root = match operation.node.ty {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
        OperationType::Subscription => "Subscription",
    };
    let required = schema().required.get(root)?;
    for field in super::budget::top_fields(document, name, variables) {
        let Some(arguments) = required.get(field.name.node.as_str()) else { continue };
        for (argument, value) in &field.arguments {
            // The parser's own value type is not re-exported; a variable prints as `$name`.
            let text = value.node.to_string();
            let Some(variable) = text.strip_prefix('$') else { continue };
            let Some(definition) = operation.node.variable_definitions.iter().find(|d| d.node.name.node == variable)
            else {
                continue;
            };
            let definition = &definition.node;
            let absent = variables.get(variable).is_none_or(|v| *v == Value::Null);
            if arguments.contains(argument.node.as_str())
                && definition.var_type.node.nullable
                && definition.default_value.is_none()
                && absent
            {
                return Some(format!(
                    "variable `${variable}` of type `{}` is given to `{}`'s argument `{}`, which is required, and was \
                     not given; declare it `{}!` or give it; nothing was run",
                    definition.var_type.node, field.name.node, argument.node, definition.var_type.node
                ));
            }
        }
    }
    None
}

/// What these checks read of the schema, from its SDL, once.
struct Schema {
    /// The non-null arguments (without a default) of each root type's fields
    /// (`Query`, `Mutation`, `Subscription`), by type and field.
    required: HashMap<String, HashMap<String, HashSet<String>>>,
    /// The names of the input object types.
    input_objects: HashSet<String>,
}

fn schema() -> &'static Schema {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = Schema { required: HashMap::new(), input_objects: HashSet::new() };
        let Ok(document) = async_graphql::parser::parse_schema(super::sdl()) else { return schema };
        for definition in document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else { continue };
            let name = ty.node.name.node.to_string();
            match &ty.node.kind {
                TypeKind::InputObject(_) => {
                    schema.input_objects.insert(name);
                }
                TypeKind::Object(object) if matches!(name.as_str(), "Query" | "Mutation" | "Subscription") => {
                    let fields = object.fields.iter().map(|f| {
                        let required = f
                            .node
                            .arguments
                            .iter()
                            .filter(|a| !a.node.ty.node.nullable && a.node.default_value.is_none());
                        (f.node.name.node.to_string(), required.map(|a| a.node.name.node.to_string()).collect())
                    });
                    schema.required.insert(name, fields.collect());
                }
                _ => {}
            }
        }
        schema
    })
}

/// Whether `value` has the outer shape `ty` asks for where `ty` names an input
/// object: an object (a list of them for a list type, or one object standing
/// for a list of one, as GraphQL's input coercion allows). Scalars and enums
/// are left to async-graphql, which checks them before anything runs.
fn shaped_as(ty: &Type, value: &Value) -> bool {
    match (&ty.base, value) {
        (_, Value::Null) => ty.nullable,
        (BaseType::List(inner), Value::List(items)) => items.iter().all(|item| shaped_as(inner, item)),
        (BaseType::List(inner), single) => shaped_as(inner, single),
        (BaseType::Named(name), value) if schema().input_objects.contains(name.as_str()) => {
            matches!(value, Value::Object(_))
        }
        _ => true,
    }
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
        // (A field the schema does not have: its arguments' types are unknown here.)
        let q = "mutation($r: ID!, $why: String) { a: withdraw(reference: $r, reason: $why) { status } }";
        let refused = check(q, serde_json::json!({}), None).unwrap();
        assert!(refused.contains("`$r` of type `ID!`"), "{refused}");
        assert!(check(q, serde_json::json!({ "r": null }), None).is_some());
        assert_eq!(check(q, serde_json::json!({ "r": "ABC" }), None), None, "the nullable one may be left out");
        assert_eq!(check("query($n: Int! = 5) { a }", serde_json::json!({}), None), None, "a default stands in");
    }

    #[test]
    fn an_input_object_variable_of_another_shape_is_refused_before_anything_runs() {
        let q = "mutation($a: RegisterHouseholdInput!, $b: RegisterHouseholdInput) { a: x(i: $a) b: x(i: $b) }";
        let household = serde_json::json!({ "community": "111" });
        for wrong in [serde_json::json!(5), serde_json::json!("x"), serde_json::json!([household.clone()])] {
            let refused = check(q, serde_json::json!({ "a": household.clone(), "b": wrong }), None).unwrap();
            assert!(refused.contains("`$b` must be of type `RegisterHouseholdInput`"), "{refused}");
        }
        assert_eq!(check(q, serde_json::json!({ "a": household.clone(), "b": null }), None), None, "nullable");
        assert_eq!(check(q, serde_json::json!({ "a": household }), None), None);
        // Lists of input objects, a single object standing for a list of one, and scalars untouched.
        let list = "query($f: [WaitlistFilter!], $n: Int) { a(f: $f, n: $n) }";
        assert_eq!(check(list, serde_json::json!({ "f": [{}], "n": "not checked here" }), None), None);
        assert_eq!(check(list, serde_json::json!({ "f": {} }), None), None);
        assert!(check(list, serde_json::json!({ "f": [1] }), None).is_some());
    }

    #[test]
    fn a_nullable_variable_left_out_for_a_required_argument_is_refused_before_anything_runs() {
        // `reason` is `String!` in the schema; `$why` may be null as declared.
        let q = r#"mutation($i: RegisterHouseholdInput!, $r: ID!, $why: String) {
            a: registerHousehold(input: $i) { reference }
            b: withdrawRegistration(reference: $r, reason: $why) { status } }"#;
        let given = serde_json::json!({ "i": { "community": "111" }, "r": "ABC" });
        let refused = check(q, given.clone(), None).unwrap();
        assert!(
            refused.contains("`$why` of type `String` is given to `withdrawRegistration`'s argument `reason`"),
            "{refused}"
        );
        let mut null = given.clone();
        null["why"] = serde_json::Value::Null;
        assert!(check(q, null, None).is_some());
        let mut told = given.clone();
        told["why"] = serde_json::json!("moved");
        assert_eq!(check(q, told, None), None, "given: it runs");
        // A nullable argument may take it left out, and a default stands in.
        assert_eq!(
            check(
                "query($n: Int) { waitlist(communityCode: \"111\", first: $n) { totalCount } }",
                serde_json::json!({}),
                None
            ),
            None
        );
        let with_default = "mutation($r: ID!, $why: String = \"moved\") { withdrawRegistration(reference: $r, reason: $why) { status } }";
        assert_eq!(check(with_default, serde_json::json!({ "r": "ABC" }), None), None);
        // Left out by `@skip`, it does not run either.
        let skipped = "mutation($r: ID!, $why: String) { withdrawRegistration(reference: $r, reason: $why) @skip(if: true) { status } }";
        assert_eq!(check(skipped, serde_json::json!({ "r": "ABC" }), None), None);
    }

    #[test]
    fn only_the_operation_that_runs_is_checked() {
        let q = "query A($x: ID!) { a(x: $x) } query B { b }";
        assert_eq!(check(q, serde_json::json!({}), Some("B")), None);
        assert!(check(q, serde_json::json!({}), Some("A")).is_some());
        assert_eq!(check(q, serde_json::json!({}), None), None, "the schema reports a missing operation name");
    }
}

//! A query's failed nested fields, given as GraphQL says.
//!
//! async-graphql leaves a field whose resolver failed out of its object (and
//! an object whose every field failed becomes null), whatever the field's
//! type. GraphQL's rule (spec, "Handling Field Errors"): a failed field is
//! null; a failed non-null field makes its parent null instead, and so on up
//! to the nearest nullable field or list item, or to `data` itself. A client
//! generated from the schema relies on that: a non-null field is never
//! simply missing. [`super::failed`] does it for top-level fields; this does
//! it at any depth, reading each field's type from the schema along the
//! error's path, and the field names from the query (a path holds response
//! keys, which aliases rename).

use std::collections::HashMap;

use async_graphql::parser::types::{BaseType, ExecutableDocument, Selection, SelectionSet, Type, TypeKind};
use async_graphql::{Name, PathSegment, Response, Value};

/// The schema's object types: each field's type, by type and field name.
#[derive(Debug, Default)]
pub struct Shape {
    query: String,
    types: HashMap<String, HashMap<String, Type>>,
}

impl Shape {
    /// Read from the schema's SDL.
    pub fn from_sdl(sdl: &str) -> Self {
        use async_graphql::parser::types::TypeSystemDefinition;
        let Ok(doc) = async_graphql::parser::parse_schema(sdl) else { return Shape::default() };
        let mut shape = Shape { query: "Query".to_string(), types: HashMap::new() };
        for definition in &doc.definitions {
            match definition {
                TypeSystemDefinition::Schema(s) => {
                    if let Some(q) = &s.node.query {
                        shape.query = q.node.to_string();
                    }
                }
                TypeSystemDefinition::Type(t) => {
                    if let TypeKind::Object(o) = &t.node.kind {
                        let fields =
                            o.fields.iter().map(|f| (f.node.name.node.to_string(), f.node.ty.node.clone())).collect();
                        shape.types.insert(t.node.name.node.to_string(), fields);
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        shape
    }

    /// The type of the query type's field `name`, if it has one.
    pub fn root_field(&self, name: &str) -> Option<&Type> {
        self.types.get(&self.query)?.get(name)
    }
}

/// Gives each failed field of `document`'s operation `operation` (a query)
/// that is missing from `response`'s data its GraphQL value: null where its
/// type allows, else its nearest nullable ancestor null, else `data` null.
pub fn null_nested(response: &mut Response, document: &ExecutableDocument, operation: Option<&str>, shape: &Shape) {
    let paths: Vec<Vec<PathSegment>> =
        response.errors.iter().filter(|e| !e.path.is_empty()).map(|e| e.path.clone()).collect();
    let Some(op) = crate::forward::operation(document, operation) else { return };
    for path in paths {
        if response.data == Value::Null {
            return;
        }
        let Some(steps) = walk(document, &op.node.selection_set.node, &path, shape) else { continue };
        if !missing(&response.data, &path) {
            continue;
        }
        // From the failed field up: the first position whose type may be null takes the null.
        match (1..=path.len()).rev().find(|&at| steps[at - 1].ty.nullable) {
            Some(at) => set_null(&mut response.data, &path[..at], &steps[at - 1].order),
            None => response.data = Value::Null,
        }
    }
}

/// What one segment of a path is: its type, and (for a field) the response
/// keys of the object holding it, in the order the query selects them.
struct Step {
    ty: Type,
    order: Vec<String>,
}

/// The steps of `path` through the query, or `None` where it cannot be
/// followed (a key the query does not select, a type the schema lacks).
fn walk(document: &ExecutableDocument, root: &SelectionSet, path: &[PathSegment], shape: &Shape) -> Option<Vec<Step>> {
    let mut steps = Vec::with_capacity(path.len());
    let mut sets = vec![root];
    let mut object = shape.query.clone();
    let mut current: Option<Type> = None;
    for segment in path {
        let step = match segment {
            PathSegment::Field(key) => {
                let mut order = Vec::new();
                let mut found = Vec::new();
                for set in &sets {
                    flatten(document, set, 0, &mut |key_here, field| {
                        if !order.iter().any(|k| k == key_here) {
                            order.push(key_here.to_string());
                        }
                        if key_here == key.as_str() {
                            found.push(field);
                        }
                    });
                }
                let name = found.first()?.name.node.as_str();
                let ty = shape.types.get(&object)?.get(name)?.clone();
                sets = found.iter().map(|f| &f.selection_set.node).collect();
                object = named(&ty).to_string();
                Step { ty, order }
            }
            PathSegment::Index(_) => {
                let BaseType::List(item) = &current.as_ref()?.base else { return None };
                Step { ty: (**item).clone(), order: Vec::new() }
            }
        };
        current = Some(step.ty.clone());
        steps.push(step);
    }
    Some(steps)
}

/// Calls `each` with every field `set` selects (response key, field),
/// fragments followed (to a bounded depth: validation refuses cycles).
fn flatten<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    depth: usize,
    each: &mut dyn FnMut(&str, &'a async_graphql::parser::types::Field),
) {
    if depth > 32 {
        return;
    }
    for selection in &set.items {
        match &selection.node {
            Selection::Field(f) => each(f.node.response_key().node.as_str(), &f.node),
            Selection::InlineFragment(i) => flatten(document, &i.node.selection_set.node, depth + 1, each),
            Selection::FragmentSpread(s) => {
                if let Some(f) = document.fragments.get(&s.node.fragment_name.node) {
                    flatten(document, &f.node.selection_set.node, depth + 1, each);
                }
            }
        }
    }
}

/// Makes a null that a field of it is asked of an empty object (see [`set_null`]).
fn revive(value: &mut Value, next: &PathSegment) {
    if *value == Value::Null && matches!(next, PathSegment::Field(_)) {
        *value = Value::Object(Default::default());
    }
}

/// The named type under any lists.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(item) => named(item),
    }
}

/// Whether the value at `path` is missing: its key absent from its object, or
/// an ancestor already null (an object whose every field failed).
fn missing(data: &Value, path: &[PathSegment]) -> bool {
    let mut value = data;
    for segment in path {
        value = match (segment, value) {
            (_, Value::Null) => return true,
            (PathSegment::Field(key), Value::Object(fields)) => match fields.get(key.as_str()) {
                Some(v) => v,
                None => return true,
            },
            (PathSegment::Index(i), Value::List(items)) => match items.get(*i) {
                Some(v) => v,
                None => return true,
            },
            _ => return false,
        };
    }
    false
}

/// Sets the value at `path` to null, its key put back in the query's `order`;
/// nothing when an ancestor is not there to hold it. An object on the way that
/// async-graphql made null because every field of it failed is an object
/// again: an error under it shows it was there.
fn set_null(data: &mut Value, path: &[PathSegment], order: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut value = data;
    for segment in parents {
        revive(value, segment);
        value = match (segment, value) {
            (PathSegment::Field(key), Value::Object(fields)) => match fields.get_mut(key.as_str()) {
                Some(v) => v,
                None => return,
            },
            (PathSegment::Index(i), Value::List(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    revive(value, last);
    match (last, value) {
        (PathSegment::Field(key), Value::Object(fields)) => {
            fields.insert(Name::new(key), Value::Null);
            fields.sort_by_cached_key(|k, _| order.iter().position(|o| o == k.as_str()).unwrap_or(usize::MAX));
        }
        (PathSegment::Index(i), Value::List(items)) => {
            if let Some(item) = items.get_mut(*i) {
                *item = Value::Null;
            }
        }
        // The parent is itself null (every field of it failed) or not an object.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::ServerError;

    const SDL: &str = "schema { query: Q }
        type Q { clinic(f: String): Clinic! maybe: Clinic list: [Item!]! items: [Item] }
        type Clinic { name: String! staff: [Staff!]! note: String director: Staff }
        type Staff { subject: String! title: String }
        type Item { id: Int! }";

    /// The data as JSON text, keys in the order they are held.
    fn text(query: &str, data: serde_json::Value, paths: &[&[PathSegment]]) -> String {
        let mut response = Response::new(Value::from_json(data).unwrap());
        response.errors =
            paths.iter().map(|p| ServerError { path: p.to_vec(), ..ServerError::new("no", None) }).collect();
        let document = async_graphql::parser::parse_query(query).unwrap();
        null_nested(&mut response, &document, None, &Shape::from_sdl(SDL));
        serde_json::to_string(&response.data).unwrap()
    }

    fn run(query: &str, data: serde_json::Value, paths: &[&[PathSegment]]) -> serde_json::Value {
        serde_json::from_str(&text(query, data, paths)).unwrap()
    }

    fn f(key: &str) -> PathSegment {
        PathSegment::Field(key.to_string())
    }

    #[test]
    fn a_failed_nested_field_is_null_where_its_type_allows_and_its_parent_is_otherwise() {
        // Nullable: null in its place, in the query's order.
        let out =
            text("{ c: clinic { note name } }", serde_json::json!({ "c": { "name": "N" } }), &[&[f("c"), f("note")]]);
        assert_eq!(out, r#"{"c":{"note":null,"name":"N"}}"#);
        // Non-null `staff` in a non-null `clinic`: all the way up to data.
        let out = run(
            "{ c: clinic { name staff { subject } } }",
            serde_json::json!({ "c": { "name": "N" } }),
            &[&[f("c"), f("staff")]],
        );
        assert_eq!(out, serde_json::Value::Null);
        // Every field of it failed, so async-graphql made the object null: it is an object again,
        // with its nullable field null; with a non-null one, GraphQL goes up from there.
        let out = text("{ maybe { note } }", serde_json::json!({ "maybe": null }), &[&[f("maybe"), f("note")]]);
        assert_eq!(out, r#"{"maybe":{"note":null}}"#);
        let out = run(
            "{ clinic { staff { subject } } }",
            serde_json::json!({ "clinic": null }),
            &[&[f("clinic"), f("staff")]],
        );
        assert_eq!(out, serde_json::Value::Null);
        // Up to the nearest nullable field: `maybe`.
        let out = run(
            "{ maybe { staff { subject } } list { id } }",
            serde_json::json!({ "maybe": {}, "list": [] }),
            &[&[f("maybe"), f("staff")]],
        );
        assert_eq!(out, serde_json::json!({ "maybe": null, "list": [] }));
        // A nullable list item takes it; a non-null item passes it to the list.
        let items = serde_json::json!({ "items": [{ "id": 1 }, {}] });
        let out = run("{ items { id } }", items, &[&[f("items"), PathSegment::Index(1), f("id")]]);
        assert_eq!(out, serde_json::json!({ "items": [{ "id": 1 }, null] }));
        let list = serde_json::json!({ "maybe": null, "list": [{ "id": 1 }, {}] });
        let out = run("{ maybe { note } list { id } }", list, &[&[f("list"), PathSegment::Index(1), f("id")]]);
        assert_eq!(out, serde_json::Value::Null, "[Item!]! passes it up to data");
        // Through aliases and fragments: `d` is `director`, a nullable Staff.
        let out = run(
            "{ c: clinic { ...F } } fragment F on Clinic { name ... on Clinic { d: director { subject } } }",
            serde_json::json!({ "c": { "name": "N", "d": {} } }),
            &[&[f("c"), f("d"), f("subject")]],
        );
        assert_eq!(out, serde_json::json!({ "c": { "name": "N", "d": null } }));
        // A field that is there is left alone, and a path the query does not select changes nothing.
        let out = run("{ c: clinic { name } }", serde_json::json!({ "c": { "name": "N" } }), &[&[f("c"), f("name")]]);
        assert_eq!(out, serde_json::json!({ "c": { "name": "N" } }));
        let out = run("{ c: clinic { name } }", serde_json::json!({ "c": { "name": "N" } }), &[&[f("x"), f("y")]]);
        assert_eq!(out, serde_json::json!({ "c": { "name": "N" } }));
    }
}

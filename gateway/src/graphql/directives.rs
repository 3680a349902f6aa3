//! The directives a query may use, checked before it runs.
//!
//! GraphQL's validation refuses a directive the schema does not define, one
//! used where it may not be, and one repeated on the same place. async-graphql
//! ran `{ __typename @foo }`, and `@skip(if: false) @skip(if: true)` silently
//! took one of the two. This API's queries have two directives, `@skip` and
//! `@include`, on fields, fragment spreads and inline fragments.

use async_graphql::Positioned;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};

/// The directives an executable document may use, where the schema allows them.
const EXECUTABLE: [&str; 2] = ["skip", "include"];

/// Why `document` uses a directive wrongly, if it does: the first one found.
pub fn misused(document: &ExecutableDocument) -> Option<String> {
    for (_, operation) in document.operations.iter() {
        let op = &operation.node;
        let variables = op.variable_definitions.iter().map(|v| (&v.node.directives, "a variable"));
        for (directives, place) in std::iter::once((&op.directives, "an operation")).chain(variables) {
            if let Some(why) = misplaced(directives, place) {
                return Some(why);
            }
        }
    }
    for fragment in document.fragments.values() {
        if let Some(why) = misplaced(&fragment.node.directives, "a fragment definition") {
            return Some(why);
        }
    }
    first_in_selections(document, |selection| {
        known_and_once(match selection {
            Selection::Field(f) => &f.node.directives,
            Selection::FragmentSpread(s) => &s.node.directives,
            Selection::InlineFragment(i) => &i.node.directives,
        })
    })
}

/// The first answer `visit` gives for a selection of `document`: each
/// selection of its operations and of its fragment definitions, each set once
/// (a spread is not followed: its fragment's own set is visited). The walk
/// keeps its own stack, so no document can exhaust a thread's.
pub fn first_in_selections<'a, T>(
    document: &'a ExecutableDocument,
    mut visit: impl FnMut(&'a Selection) -> Option<T>,
) -> Option<T> {
    let operations = document.operations.iter().map(|(_, op)| &op.node.selection_set.node);
    let mut sets: Vec<&SelectionSet> =
        operations.chain(document.fragments.values().map(|f| &f.node.selection_set.node)).collect();
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            if let Some(found) = visit(&selection.node) {
                return Some(found);
            }
            match &selection.node {
                Selection::Field(f) => sets.push(&f.node.selection_set.node),
                Selection::InlineFragment(i) => sets.push(&i.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    None
}

/// A directive's `if` when it is a literal Boolean (`None`: a variable, or no
/// `if`). The parser's value type is not exported by async-graphql: read as
/// text, a literal Boolean is `true` or `false`, a variable `$name`, and a
/// string is quoted.
pub fn literal_if(directive: &Directive) -> Option<bool> {
    match directive.get_argument("if")?.node.to_string().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The value of `directive`'s `if`: a literal Boolean, or a variable's
/// Boolean value in `variables` (defaults filled in). `None` for anything else,
/// which validation refuses.
pub fn condition(directive: &Directive, variables: &async_graphql::Variables) -> Option<bool> {
    literal_if(directive).or_else(|| {
        let text = directive.get_argument("if")?.node.to_string();
        match variables.get(text.strip_prefix('$')?) {
            Some(async_graphql::Value::Boolean(b)) => Some(*b),
            _ => None,
        }
    })
}

/// Any directive on `place`, where none may be.
fn misplaced(directives: &[Positioned<Directive>], place: &str) -> Option<String> {
    directives.first().map(|d| format!("@{} may not be used on {place}", d.node.name.node))
}

fn known_and_once(directives: &[Positioned<Directive>]) -> Option<String> {
    for (i, d) in directives.iter().enumerate() {
        let name = &d.node.name.node;
        if !EXECUTABLE.contains(&name.as_str()) {
            return Some(format!("unknown directive @{name}: this API's queries may use @skip and @include"));
        }
        if directives[..i].iter().any(|e| e.node.name.node == *name) {
            return Some(format!("@{name} is used twice in one place; use it once"));
        }
        // Its one argument, `if: Boolean!`: a literal true or false, or a variable
        // (whose type validation checks). Without it, async-graphql ran the field.
        let usable = match d.node.arguments.as_slice() {
            [(arg, value)] if arg.node == "if" => {
                literal_if(&d.node).is_some() || value.node.to_string().starts_with('$')
            }
            _ => false,
        };
        if !usable {
            return Some(format!("@{name} takes one argument, `if`, a Boolean: @{name}(if: true) or @{name}(if: $v)"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Option<String> {
        misused(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn skip_and_include_pass_once_each_where_they_belong() {
        assert_eq!(check("query($x: Boolean!) { a @skip(if: $x) @include(if: true) ...F @skip(if: $x) }"), None);
        assert_eq!(
            check("{ ... on Query @include(if: true) { a { b @skip(if: false) } } } fragment F on Query { a }"),
            None
        );
    }

    #[test]
    fn unknown_repeated_and_misplaced_directives_are_named() {
        assert!(check("{ __typename @foo }").unwrap().contains("unknown directive @foo"));
        assert!(check("{ a { b @deprecated } }").unwrap().contains("unknown directive @deprecated"));
        assert!(check("{ __typename @skip(if: false) @skip(if: true) }").unwrap().contains("@skip is used twice"));
        assert!(check("query Q @skip(if: true) { a }").unwrap().contains("may not be used on an operation"));
        assert!(check("query($x: Int @include(if: true)) { a }").unwrap().contains("on a variable"));
        assert!(check("{ ...F } fragment F on Query @skip(if: true) { a }").unwrap().contains("fragment definition"));
        assert!(
            check("{ ...F } fragment F on Query { a { b @foo } }").unwrap().contains("@foo"),
            "inside fragments too"
        );
        for bad in [
            "{ a @skip }",
            "{ a @include(if: 1) }",
            "{ a @skip(if: \"yes\") }",
            "{ a @skip(if: true, x: 1) }",
            "{ a @skip(when: true) }",
        ] {
            assert!(check(bad).unwrap().contains("takes one argument, `if`"), "{bad}");
        }
    }
}

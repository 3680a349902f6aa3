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
    let mut sets = Vec::new();
    for (_, operation) in document.operations.iter() {
        let op = &operation.node;
        let variables = op.variable_definitions.iter().map(|v| (&v.node.directives, "a variable"));
        for (directives, place) in std::iter::once((&op.directives, "an operation")).chain(variables) {
            if let Some(why) = misplaced(directives, place) {
                return Some(why);
            }
        }
        sets.push(&op.selection_set);
    }
    for fragment in document.fragments.values() {
        if let Some(why) = misplaced(&fragment.node.directives, "a fragment definition") {
            return Some(why);
        }
        sets.push(&fragment.node.selection_set);
    }
    // Each set once: spreads are not followed (their fragment's own set is here).
    while let Some(set) = sets.pop() {
        for selection in &set.node.items {
            let (directives, inner): (_, Option<&Positioned<SelectionSet>>) = match &selection.node {
                Selection::Field(f) => (&f.node.directives, Some(&f.node.selection_set)),
                Selection::FragmentSpread(s) => (&s.node.directives, None),
                Selection::InlineFragment(i) => (&i.node.directives, Some(&i.node.selection_set)),
            };
            if let Some(why) = known_and_once(directives) {
                return Some(why);
            }
            sets.extend(inner);
        }
    }
    None
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
        // (The parser's value type is not exported by async-graphql: read as text, a
        // literal Boolean is `true` or `false` and a variable `$name`; a string is quoted.)
        let usable = match d.node.arguments.as_slice() {
            [(arg, value)] if arg.node == "if" => {
                let text = value.node.to_string();
                text == "true" || text == "false" || text.starts_with('$')
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

//! A bound on the fields a document selects, checked before validation.
//!
//! Depth and complexity do not bound the work of validating a document:
//! aliased `__typename` fields cost no complexity, and a fragment spread many
//! times multiplies what validation compares (overlapping fields are compared
//! in pairs). A 32 KB anonymous request of that shape took 13 s of CPU
//! (debug build) and stalled `/healthz` for as long. Every document, over
//! HTTP or a WebSocket, is counted here first, before async-graphql (whose
//! depth check and validation, and the gateway's own ordering of top-level
//! fields, follow every spread): each field and each spread of its
//! operations, with a fragment's fields counted again each time it is spread;
//! and, apart, its fragment definitions as written. The count stops at the
//! limit, so counting costs at most that many steps whatever the document.

use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};

/// The message refusing a document over `max`.
pub fn refusal(max: usize) -> String {
    format!(
        "the query selects more than {max} fields (a fragment's fields count each time it is spread); \
         split it into smaller queries"
    )
}

/// What the operation a WebSocket `subscribe` (or `start`) message carries
/// costs against the caller's quota ([`root_fields`]), or its refusal if its
/// document is over `max`, misuses a directive, leaves out a required variable
/// (`super::not_runnable`'s checks, so they come as the protocol's `error`, as
/// over HTTP a request error), or is a subscription of several fields. A message
/// or document that does not parse costs one and is left to async-graphql to report.
pub fn message_cost(message: &[u8], max: usize) -> Result<u32, String> {
    #[derive(serde::Deserialize)]
    struct Start<'a> {
        #[serde(borrow)]
        payload: Payload<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        query: std::borrow::Cow<'a, str>,
        #[serde(default, rename = "operationName", borrow)]
        operation_name: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        variables: Option<serde_json::Value>,
    }
    let Ok(start) = serde_json::from_slice::<Start>(message) else { return Ok(1) };
    if !super::nesting::within(&start.payload.query) {
        return Err(super::nesting::refusal());
    }
    let Ok(document) = async_graphql::parser::parse_query(start.payload.query.as_ref()) else { return Ok(1) };
    if !within(&document, max) {
        return Err(refusal(max));
    }
    let name = start.payload.operation_name.as_deref();
    let mut variables = async_graphql::Variables::from_json(start.payload.variables.unwrap_or_default());
    super::with_defaults(&document, name, &mut variables);
    if let Some(why) = super::uploads::forged(&document, &variables, 0) {
        return Err(why);
    }
    if let Some(why) = super::not_runnable(&document, name, &variables) {
        return Err(why);
    }
    let fields = root_fields(&document, name, &variables);
    // GraphQL's single root field rule, which async-graphql does not check: two
    // feeds under one id arrive interleaved, and a refusal of one ends neither.
    // GraphQL would merge one field selected twice under one key into one, but
    // async-graphql runs each selection as its own stream (every event came
    // twice), so a second selection is refused too. It ends a subscription whose
    // field is selected through a fragment at once, with neither events nor an
    // error, so that is refused with a reason as well.
    let subscription = crate::forward::operation(&document, name)
        .filter(|op| op.node.ty == async_graphql::parser::types::OperationType::Subscription);
    if let Some(op) = subscription {
        use async_graphql::parser::types::Selection;
        let refusal = match op.node.selection_set.node.items.as_slice() {
            [only] => match &only.node {
                Selection::Field(f) if f.node.directives.is_empty() => None,
                // Skipped, it ended at once with neither events nor an error (GraphQL
                // forbids @skip and @include on a subscription's root field).
                Selection::Field(_) => {
                    Some("a subscription's field takes no @skip or @include: subscribe when you want it")
                }
                _ => Some("a subscription selects its field directly, not through a fragment"),
            },
            _ => Some("a subscription selects exactly one field, once; start one subscription per feed"),
        };
        if let Some(why) = refusal {
            return Err(why.to_string());
        }
    }
    Ok(fields)
}

/// The top-level fields the operation `name` (or the document's only one)
/// selects, fragments followed (each time they are spread), leaving out what
/// `@skip` or `@include` leaves out with `variables` (their defaults filled
/// in), in no particular order. Bounded whatever the document: a cycle of
/// spreads is validation's to refuse.
pub(super) fn top_fields<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
    variables: &async_graphql::Variables,
) -> Vec<&'a Field> {
    let Some(operation) = crate::forward::operation(document, name) else { return Vec::new() };
    let mut pending = vec![&operation.node.selection_set.node];
    let mut fields = Vec::new();
    let mut steps = 0usize;
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            steps += 1;
            if steps > 100_000 {
                return fields;
            }
            match &selection.node {
                Selection::Field(f) if !left_out(&f.node.directives, variables) => fields.push(&f.node),
                Selection::InlineFragment(i) if !left_out(&i.node.directives, variables) => {
                    pending.push(&i.node.selection_set.node)
                }
                Selection::FragmentSpread(s) if !left_out(&s.node.directives, variables) => {
                    if let Some(f) = document.fragments.get(&s.node.fragment_name.node) {
                        pending.push(&f.node.selection_set.node);
                    }
                }
                _ => {}
            }
        }
    }
    fields
}

/// What the operation `name` costs against the caller's quota: one for each
/// top-level field it selects (as `top_fields` collects them) but
/// `__typename`, and at least one. Each counts as one request, so aliases do not buy a hundred
/// registrations or PHN look-ups for the price of one. A field selected again
/// under the same response key counts again: GraphQL would run it once, but
/// async-graphql runs every copy (a tester's 500 copies of one `registration`
/// wrote 500 audit records for one unit of quota). `__schema` and `__type`
/// count as any field does (83 aliased `__schema` copies were 4 MB of answer
/// for one unit). Call it on a document [`within`] the field limit.
pub fn root_fields(document: &ExecutableDocument, name: Option<&str>, variables: &async_graphql::Variables) -> u32 {
    let counted = top_fields(document, name, variables).iter().filter(|f| f.name.node != "__typename").count();
    u32::try_from(counted).unwrap_or(u32::MAX).max(1)
}

/// Why a mutation must not run: it selects one response key twice (through
/// fragments too). GraphQL would run such a field once; async-graphql runs each
/// copy, so a withdrawal asked twice answered both `WITHDRAWN` and `CONFLICT`
/// at one path, and the client could not tell what happened.
pub fn repeated_mutation(
    document: &ExecutableDocument,
    name: Option<&str>,
    variables: &async_graphql::Variables,
) -> Option<String> {
    let operation = crate::forward::operation(document, name)?;
    if operation.node.ty != async_graphql::parser::types::OperationType::Mutation {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    let fields = top_fields(document, name, variables);
    let changes = fields.iter().filter(|f| f.name.node != "__typename");
    let repeated = changes.map(|f| f.response_key().node.as_str()).find(|key| !seen.insert(*key))?;
    Some(format!(
        "the mutation selects `{repeated}` more than once under that response key, and each copy would run: \
         select each change once, or give each its own alias; nothing was done"
    ))
}

/// Whether `directives` leave their selection out with `variables`:
/// `@skip` whose condition is true or `@include` whose condition is false.
fn left_out(
    directives: &[async_graphql::Positioned<async_graphql::parser::types::Directive>],
    variables: &async_graphql::Variables,
) -> bool {
    directives.iter().any(|d| {
        let condition = super::directives::condition(&d.node, variables);
        match d.node.name.node.as_str() {
            "skip" => condition == Some(true),
            "include" => condition == Some(false),
            _ => false,
        }
    })
}

/// Whether `document` selects at most `max` fields and spreads: its
/// operations with every spread followed, and (apart) its fragment
/// definitions as written, since validation reads those even unused. The walk
/// keeps its own stack rather than recursing, so a fragment spread within
/// itself (which validation refuses later) costs at most `max` steps and no
/// thread stack.
pub fn within(document: &ExecutableDocument, max: usize) -> bool {
    let operations = document.operations.iter().map(|(_, op)| &op.node.selection_set.node);
    let fragments = document.fragments.values().map(|f| &f.node.selection_set.node);
    spend(document, operations.collect(), max, true) && spend(document, fragments.collect(), max, false)
}

/// Takes one of `max` for each field and spread under `sets`, following
/// spreads when `follow`; false once they run out.
fn spend<'a>(document: &'a ExecutableDocument, mut pending: Vec<&'a SelectionSet>, max: usize, follow: bool) -> bool {
    let mut left = max;
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            let Some(rest) = left.checked_sub(1) else { return false };
            left = rest;
            match &selection.node {
                Selection::Field(f) => pending.push(&f.node.selection_set.node),
                Selection::InlineFragment(i) => pending.push(&i.node.selection_set.node),
                // An unknown fragment is validation's to report.
                Selection::FragmentSpread(s) if follow => {
                    if let Some(f) = document.fragments.get(&s.node.fragment_name.node) {
                        pending.push(&f.node.selection_set.node);
                    }
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTROSPECTION: &str = r#"query IntrospectionQuery {
      __schema {
        description
        queryType { name kind }
        mutationType { name kind }
        subscriptionType { name kind }
        types { ...FullType }
        directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description specifiedByURL isOneOf
      fields(includeDeprecated: true) {
        name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef }
        isDeprecated deprecationReason
      }
      inputFields(includeDeprecated: true) { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue {
      name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
    }
    fragment TypeRef on __Type {
      kind name
      ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
        ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
    }"#;

    fn doc(text: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(text).unwrap()
    }

    #[test]
    fn each_top_level_field_counts_each_time_it_is_selected_and_typename_not_at_all() {
        let none = async_graphql::Variables::default();
        assert_eq!(root_fields(&doc("{ __typename }"), None, &none), 1, "at least one");
        let aliased = (0..300).map(|i| format!("r{i}: registerHousehold(input: $i) {{ reference }}"));
        let text = format!("mutation($i: RegisterHouseholdInput!) {{ {} }}", aliased.collect::<Vec<_>>().join(" "));
        assert_eq!(root_fields(&doc(&text), None, &none), 300);
        let spread = doc("{ ...F ... on Query { c: a } __schema { types { name } } } fragment F on Query { a b }");
        assert_eq!(root_fields(&spread, None, &none), 4, "through fragments, introspection as any field");
        let introspection = doc(
            "{ a: __schema { types { name } } b: __schema { types { name } } c: __type(name: \"Query\") { name } __typename }",
        );
        assert_eq!(root_fields(&introspection, None, &none), 3, "83 copies of `__schema` cost one unit before");
        let two = doc("query A { a } query B { a b c }");
        assert_eq!(
            (root_fields(&two, Some("A"), &none), root_fields(&two, Some("B"), &none), root_fields(&two, None, &none)),
            (1, 3, 1)
        );
        assert_eq!(root_fields(&two, Some("C"), &none), 1, "no such operation: async-graphql refuses it");
        let skipped = doc(
            "query($v: Boolean!) { a b @skip(if: true) c @include(if: false) d @skip(if: $v) ... @skip(if: true) { e } }",
        );
        assert_eq!(root_fields(&skipped, None, &none), 2, "what is left out whatever the variables is not charged");
        let vars = |v: serde_json::Value| async_graphql::Variables::from_json(v);
        let by_variables = doc("query($s: Boolean!, $i: Boolean!) { a @skip(if: $s) b @include(if: $i) c }");
        let charged = |v| root_fields(&by_variables, None, &vars(v));
        assert_eq!(charged(serde_json::json!({ "s": true, "i": false })), 1, "left out by its variables");
        assert_eq!(charged(serde_json::json!({ "s": false, "i": true })), 3);
        assert_eq!(charged(serde_json::json!({ "s": "yes", "i": 1 })), 3, "not a Boolean: charged, and refused later");
        let message = serde_json::json!({ "id": "1", "type": "subscribe", "payload": {
            "query": "query($s: Boolean = true) { a @skip(if: $s) b }" } });
        assert_eq!(message_cost(message.to_string().as_bytes(), 100), Ok(1), "a default counts as given");
        assert_eq!(
            root_fields(&doc("{ a a x: b x: b ...F ...F } fragment F on Query { c }"), None, &none),
            6,
            "async-graphql runs each copy of a field selected twice under one key, and each spread"
        );
        let message =
            |query: &str| serde_json::json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
        assert_eq!(message_cost(message("{ a b }").to_string().as_bytes(), 100), Ok(2));
        assert_eq!(message_cost(b"not json", 100), Ok(1));
        assert!(message_cost(message("{ a b c }").to_string().as_bytes(), 2).is_err());
        // A subscription has one root field (aliases too are separate fields).
        let two_feeds = message(
            "subscription { a: communityEvents(communityCode: \"111\") { seq } b: communityEvents(communityCode: \"112\") { seq } }",
        );
        let refused = message_cost(two_feeds.to_string().as_bytes(), 100).unwrap_err();
        assert!(refused.contains("exactly one field"), "{refused}");
        let one_feed = message("subscription { communityEvents(communityCode: \"111\") { seq } }");
        assert_eq!(message_cost(one_feed.to_string().as_bytes(), 100), Ok(1));
        // GraphQL merges these into one field; async-graphql ran two streams under one id.
        let merged = message(
            "subscription { communityEvents(communityCode: \"111\") { seq } communityEvents(communityCode: \"111\") { kind } }",
        );
        assert!(message_cost(merged.to_string().as_bytes(), 100).unwrap_err().contains("exactly one field, once"));
        for fragment in [
            "subscription { ...F } fragment F on Subscription { communityEvents(communityCode: \"111\") { seq } }",
            "subscription { ... on Subscription { communityEvents(communityCode: \"111\") { seq } } }",
        ] {
            let refused = message_cost(message(fragment).to_string().as_bytes(), 100).unwrap_err();
            assert!(refused.contains("not through a fragment"), "{refused}");
        }
        let skipped = message("subscription { communityEvents(communityCode: \"111\") @skip(if: true) { seq } }");
        let refused = message_cost(skipped.to_string().as_bytes(), 100).unwrap_err();
        assert!(refused.contains("no @skip or @include"), "{refused}");
    }

    #[test]
    fn a_mutation_selecting_one_response_key_twice_is_refused() {
        let none = async_graphql::Variables::default();
        let refused = |text: &str| repeated_mutation(&doc(text), None, &none);
        let why = refused(
            "mutation { w: withdrawRegistration(reference: \"A\") { status } w: withdrawRegistration(reference: \"A\") { status } }",
        );
        assert!(why.as_deref().is_some_and(|w| w.contains("`w` more than once")), "{why:?}");
        assert!(
            refused("mutation { ...F ...F } fragment F on Mutation { r: registerHousehold { reference } }").is_some()
        );
        assert!(
            refused("mutation { registerHousehold { reference } ... on Mutation { registerHousehold { status } } }")
                .is_some()
        );
        // Distinct keys, one left out by `@skip`, or a query: runs as written.
        assert_eq!(refused("mutation { a: registerHousehold { reference } b: registerHousehold { reference } }"), None);
        assert_eq!(refused("mutation { a: f a: f @skip(if: true) }"), None);
        assert_eq!(refused("{ a: registration { status } a: registration { status } }"), None);
        assert_eq!(refused("mutation { __typename __typename a }"), None, "`__typename` changes nothing");
    }

    #[test]
    fn fields_count_once_per_spread_and_the_count_stops_at_the_limit() {
        let page = doc("{ waitlist(communityCode: \"111\") { totalCount nodes { reference status } } }");
        assert!(within(&page, 5));
        assert!(!within(&page, 4));
        // 3 fields in F, spread 4 times: 4 spreads + 12 fields (F as written, 3, is counted apart).
        let spread = doc("{ ...F ...F ...F ...F } fragment F on Query { a: __typename b: __typename c: __typename }");
        assert!(within(&spread, 16));
        assert!(!within(&spread, 15));
        // A fragment spread once costs what the same fields written inline do, and one spread.
        let fields: Vec<String> = (0..10).map(|i| format!("a{i}: __typename")).collect();
        let once = doc(&format!("{{ ...F }} fragment F on Query {{ {} }}", fields.join(" ")));
        let inline = doc(&format!("{{ {} }}", fields.join(" ")));
        assert!(within(&once, 11) && !within(&once, 10));
        assert!(within(&inline, 10) && !within(&inline, 9));
        // An unused fragment is still read by validation: it counts, as written.
        let unused = doc(&format!("{{ a: __typename }} fragment F on Query {{ {} }}", fields.join(" ")));
        assert!(!within(&unused, 9));
        // Spreads within spreads multiply; the count gives up at the limit, not at the product.
        let fields: Vec<String> = (0..1000).map(|i| format!("a{i}: __typename")).collect();
        let spreads = vec!["...F"; 3000].join(" ");
        let huge = doc(&format!("{{ {spreads} }} fragment F on Query {{ {} }}", fields.join(" ")));
        assert!(!within(&huge, 500));
        // GraphiQL's introspection query (graphql-js `getIntrospectionQuery` with every option on)
        // counts about 250 either way, well within the default 2,000.
        assert!(within(&doc(INTROSPECTION), 300));
        // A cycle is validation's to refuse; counting it ends, without the stack a recursion would take.
        assert!(!within(&doc("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"), 100));
        let cycle = doc("{ ...A } fragment A on Query { ...A }");
        let small_stack = std::thread::Builder::new().stack_size(64 * 1024);
        assert!(!small_stack.spawn(move || within(&cycle, 1_000_000)).unwrap().join().unwrap());
    }

    #[test]
    fn a_websocket_operation_over_the_budget_is_refused_and_others_are_left_alone() {
        let big: Vec<String> = (0..30).map(|i| format!("a{i}: __typename")).collect();
        let start = |q: &str| serde_json::json!({ "id": "1", "type": "subscribe", "payload": { "query": q } });
        let over = start(&format!("{{ {} }}", big.join(" "))).to_string();
        assert_eq!(message_cost(over.as_bytes(), 20), Err(refusal(20)));
        assert_eq!(message_cost(over.as_bytes(), 30), Ok(1), "__typename is not counted against the quota");
        assert_eq!(message_cost(start("{ not closed").to_string().as_bytes(), 20), Ok(1), "async-graphql reports it");
        assert_eq!(message_cost(br#"{"type":"subscribe","id":"1"}"#, 20), Ok(1));
    }
}

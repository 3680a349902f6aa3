//! The GraphQL API: schema types and resolvers, with no HTTP in sight.

mod access;
pub mod allowance;
pub mod budget;
mod cursor;
pub mod directives;
pub mod document_cache;
pub mod error;
pub mod failed;
mod feed;
mod inputs;
pub mod media;
mod mutation;
pub mod nesting;
pub mod nulls;
mod panel;
mod query;
mod staff;
pub mod types;
pub mod uploads;
pub mod variables;

use std::sync::Arc;

use async_graphql::{MergedObject, Schema};
use attach_actors::system::AttachSystem;

pub use allowance::{ConnectionSubscriptions, PrincipalSubscriptions};
pub use feed::SubscriptionRoot;
pub use mutation::MutationRoot;
pub use query::QueryRoot;

/// Every query: the registry and waitlist reads, the feed's catch-up, access, panel reports.
#[derive(MergedObject, Default)]
pub struct Query(QueryRoot, feed::FeedQuery, access::AccessQuery, panel::PanelQuery);

/// Every mutation: the waitlist and registry, delegation, the provider side's panels, clinic staff lists.
#[derive(MergedObject, Default)]
pub struct Mutation(MutationRoot, access::AccessMutation, panel::PanelMutation, staff::StaffMutation);

/// The schema type.
pub type AttachSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// Limits resolvers read from the context.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest page a list returns.
    pub max_page_size: usize,
    /// Bounds of a panel file.
    pub panel: attach_actors::panel::Limits,
}

/// Why the operation `name` of `document` must not run at all with
/// `variables`: a directive misused ([`directives`]), a required variable
/// left out or an input object's of another shape ([`variables::missing`]), or
/// a mutation selecting one response key twice ([`budget::repeated_mutation`]).
pub fn not_runnable(
    document: &async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
    variables: &async_graphql::Variables,
) -> Option<String> {
    directives::misused(document)
        .or_else(|| variables::missing(document, name, variables))
        .or_else(|| budget::repeated_mutation(document, name, variables))
}

/// [`not_runnable`] for a request's own document (parsed now if it was not
/// yet), and a file named that the request does not carry ([`uploads::forged`]).
pub fn cannot_run(request: &mut async_graphql::Request) -> Option<String> {
    let uploads = request.uploads.len();
    let mut variables = std::mem::take(&mut request.variables);
    let name = request.operation_name.take();
    let why = request.parsed_query().ok().and_then(|document| {
        with_defaults(document, name.as_deref(), &mut variables);
        uploads::forged(document, &variables, uploads).or_else(|| not_runnable(document, name.as_deref(), &variables))
    });
    (request.variables, request.operation_name) = (variables, name);
    why
}

/// Gives each variable of the operation `name` left out of `variables` its
/// default, as GraphQL coerces them (async-graphql's `@skip` and `@include`
/// did not read defaults, and the rate limit reads conditions from here).
pub fn with_defaults(
    document: &async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
    variables: &mut async_graphql::Variables,
) {
    let Some(operation) = crate::forward::operation(document, name) else { return };
    for definition in &operation.node.variable_definitions {
        let d = &definition.node;
        if let Some(default) = &d.default_value
            && !variables.contains_key(&d.name.node)
        {
            variables.insert(d.name.node.clone(), default.node.clone());
        }
    }
}

/// Builds the schema over a running system.
pub fn build(
    system: Arc<AttachSystem>,
    limits: &crate::config::Limits,
    feed: &crate::config::FeedSettings,
) -> AttachSchema {
    Schema::build(Query::default(), Mutation::default(), SubscriptionRoot)
        .data(system)
        .data(feed.clone())
        .data(ApiLimits { max_page_size: limits.max_page_size, panel: limits.panel() })
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), SubscriptionRoot).finish().sdl()
}

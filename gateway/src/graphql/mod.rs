//! The GraphQL API: schema types and resolvers, with no HTTP in sight.

mod cursor;
pub mod document_cache;
pub mod error;
mod inputs;
mod mutation;
mod query;
pub mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use attach_actors::system::AttachSystem;

pub use mutation::MutationRoot;
pub use query::QueryRoot;

/// The schema type.
pub type AttachSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Limits resolvers read from the context.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest page a list returns.
    pub max_page_size: usize,
}

/// Builds the schema over a running system.
pub fn build(system: Arc<AttachSystem>, limits: &crate::config::Limits) -> AttachSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(system)
        .data(ApiLimits { max_page_size: limits.max_page_size })
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).finish().sdl()
}

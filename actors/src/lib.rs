//! Attach's core: everything below the GraphQL gateway.
//!
//! - [`access`]: who may do what: the caller of every operation and its checks.
//! - [`audit`]: the audit log's records and queries.
//! - [`domain`]: the types of the waitlist and the registry, parsed at the boundary.
//! - [`matcher`]: the deterministic matcher that proposes households to providers.
//! - [`store`]: the partitioned `Store` trait and its backends.
//! - [`feed`]: the live feed of committed events (in-process broadcast).
//! - [`regions`]: health authorities and communities, loaded from a data file.
//! - [`shard`]: the community shard actor (single writer of its partition), the
//!   health-authority supervisor, and the shard directory that finds them.
//! - [`error`]: the errors callers see, with stable codes.
//! - [`demo`]: the synthetic province seeded on first start for demonstrations.

pub mod access;
pub mod audit;
pub mod demo;
pub mod domain;
pub mod error;
pub mod feed;
pub mod matcher;
pub mod regions;
pub mod shard;
pub mod store;
pub mod system;

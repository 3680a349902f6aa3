//! The Attach gateway: the `attach` binary's library.
//!
//! - [`config`]: typed settings from file, environment and flags.
//! - [`startup`]: `Application::build` / `port` / `run_until_stopped`.
//! - [`routes`]: `/graphql`, GraphiQL, `/healthz`, `/readyz`.
//! - [`auth`]: bearer tokens (JWT against a JWKS, or the development key) into a `Principal`.
//! - [`ratelimit`]: per-principal and per-IP rate limits with their headers.
//! - [`graphql`]: the schema and its resolvers (which ask the core, never storage).
//! - [`metrics`]: Prometheus metrics at `/metrics`.
//! - [`telemetry`]: logging setup.
//! - [`panel_import`]: `attach panel import`, a panel file to a running server (a multipart upload) or
//!   straight into a stopped one's data directory.
//! - [`cli`]: the command line.

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod forward;
pub mod graphiql;
pub mod graphql;
pub mod http_server;
pub mod metrics;
pub mod panel_import;
pub mod ratelimit;
pub mod routes;
pub mod socket_executor;
pub mod startup;
pub mod telemetry;
pub mod ws;

//! `attach-loadtest`: drives a running Attach with bounded scenarios.
//!
//! Every run is bounded by a duration and a request count. A response is a
//! success only if it is HTTP 200 *and* carries no GraphQL errors.

mod client;
mod feed_latency;
mod mix;
mod read_path;
mod registration_burst;
mod stats;
mod workers;

use clap::{Parser, Subcommand};

/// Load tests for Attach.
#[derive(Parser)]
#[command(name = "attach-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compares a waitlist page (through the shard actor) with a trivial query.
    ReadPath(read_path::Args),
    /// Measures mutation-to-subscriber latency of the live feed.
    FeedLatency(feed_latency::Args),
    /// Concurrent registrations across communities: durable-commit throughput.
    RegistrationBurst(registration_burst::Args),
    /// Named scenarios in a weighted mix against a target, with live-feed
    /// subscribers; reports in the terminal, as JSON and as HTML.
    Run(mix::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::ReadPath(args) => read_path::run(args).await,
        Command::FeedLatency(args) => feed_latency::run(args).await,
        Command::RegistrationBurst(args) => registration_burst::run(args).await,
        Command::Run(args) => mix::run(args).await,
    }
}

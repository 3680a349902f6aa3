//! `attach-loadtest`: drives a running Attach with bounded scenarios.
//!
//! Every run is bounded by a duration and a request count. A response is a
//! success only if it is HTTP 200 *and* carries no GraphQL errors.

mod client;
mod feed_latency;
mod read_path;
mod registration_burst;
mod stats;
mod workers;

use clap::{Parser, Subcommand};

/// Load tests for Attach.
#[derive(Parser)]
#[command(name = "attach-loadtest", version, about)]
struct Cli {
    /// Bearer token sent with every request and subscription (the role the
    /// scenario needs: a coordinator or support token reads waitlists and
    /// subscribes to feeds). Mint one for a development server with
    /// `attach token --role coordinator --scope province`.
    #[arg(long, global = true, env = "ATTACH_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let token = cli.token.as_deref();
    match cli.command {
        Command::ReadPath(args) => read_path::run(args, token).await,
        Command::FeedLatency(args) => feed_latency::run(args, token).await,
        Command::RegistrationBurst(args) => registration_burst::run(args, token).await,
    }
}

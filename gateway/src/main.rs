//! `attach`: parse the command line and run it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    attach_gateway::cli::run().await
}

//! `attach`: parse the command line and run it.

/// mimalloc instead of the system allocator: answering a GraphQL request is
/// allocation-heavy, and glibc's malloc was a fifth of the server's time on
/// the waitlist read path (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    attach_gateway::cli::run().await
}

//! The `attach` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::Application;

/// Attach: the waitlist and registry for patient attachment.
#[derive(Parser, Debug)]
#[command(name = "attach", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server.
    Serve {
        /// Configuration file (TOML); `ATTACH_*` variables and these flags override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (port 0: any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (the embedded store's file lives here).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Regions file.
        #[arg(long)]
        regions: Option<PathBuf>,
        /// Redis for the live feed, e.g. redis://127.0.0.1:6379 (default: in-process).
        #[arg(long)]
        redis: Option<String>,
        /// The store: `embedded` (default) or scylla://HOST:9042[,HOST2:9042...].
        #[arg(long)]
        store: Option<String>,
        /// This node's name in shard leases (default attach-<pid>).
        #[arg(long)]
        node: Option<String>,
        /// Seed a synthetic province on first start.
        #[arg(long, value_parser = ["small", "province"])]
        demo: Option<String>,
    },
    /// Creates the ScyllaDB keyspace and tables (infra/scylla/schema.cql) if missing.
    Migrate {
        /// Configuration file (TOML), as for `serve`: `store`, `scylla.keyspace`, `scylla.replication`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The cluster, scylla://HOST:9042[,HOST2:9042...] (default: the configured `store`).
        #[arg(long)]
        store: Option<String>,
    },
    /// Prints the GraphQL schema (SDL).
    Schema,
}

/// Runs the command line.
pub async fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Migrate { config, store } => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.store = store.unwrap_or(settings.store);
            let _telemetry = crate::telemetry::init(&settings.log);
            let options = settings.scylla_options()?.ok_or_else(|| {
                anyhow::anyhow!("`attach migrate` applies the ScyllaDB schema: give --store scylla://HOST:9042")
            })?;
            let session = attach_actors::store::scylla::connect_session(&options).await?;
            attach_actors::store::scylla::migrate(&session, &options.keyspace, &options.replication).await?;
            println!("schema applied to keyspace {} at {}", options.keyspace, options.nodes.join(","));
            Ok(())
        }
        Command::Serve { config, listen, data_dir, regions, redis, store, node, demo } => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.listen = listen.unwrap_or(settings.listen);
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            settings.regions = regions.unwrap_or(settings.regions);
            settings.demo = demo.or(settings.demo);
            settings.redis = redis.or(settings.redis);
            settings.store = store.unwrap_or(settings.store);
            settings.node = node.or(settings.node);
            // Flags skip `Settings::load`'s checks: check again.
            settings.check()?;
            let _telemetry = crate::telemetry::init(&settings.log);
            let host = settings.listen.ip();
            let app = Application::build(settings).await?;
            // One line on stdout, for people and for scripts that started it on port 0.
            println!("attach listening on http://{host}:{}/ (GraphiQL; the API is at /graphql)", app.port());
            app.run_until_stopped(shutdown_signal()).await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

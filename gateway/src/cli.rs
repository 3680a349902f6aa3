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
        /// Seed a synthetic province on first start.
        #[arg(long, value_parser = ["small", "province"])]
        demo: Option<String>,
    },
    /// Prints the GraphQL schema (SDL).
    Schema,
    /// Panels of the provider side.
    #[command(subcommand)]
    Panel(PanelCommand),
}

#[derive(Subcommand, Debug)]
enum PanelCommand {
    /// Submits a panel file (CSV: PHN, surname, given name, date of birth, 98990,
    /// facility number) into the data directory, as an upload would; prints the
    /// rows not taken and a summary. The server must not be running on it.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The provider whose panel it is.
        #[arg(long)]
        provider: String,
        /// The clinic's facility number (the provider must be listed there).
        #[arg(long)]
        facility: String,
        /// Configuration file (TOML), as for `serve`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Regions file.
        #[arg(long)]
        regions: Option<PathBuf>,
        /// Largest file accepted, in bytes (default: `limits.max_panel_bytes`).
        #[arg(long)]
        max_bytes: Option<usize>,
        /// Most patient rows accepted (default: `limits.max_panel_rows`).
        #[arg(long)]
        max_rows: Option<usize>,
    },
}

/// Runs the command line.
pub async fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Panel(PanelCommand::Import {
            file,
            provider,
            facility,
            config,
            data_dir,
            regions,
            max_bytes,
            max_rows,
        }) => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            settings.regions = regions.unwrap_or(settings.regions);
            // Logs go to stderr; stdout carries the report.
            let _telemetry = crate::telemetry::init("warn");
            let mut limits = settings.limits.panel();
            limits.max_bytes = max_bytes.unwrap_or(limits.max_bytes);
            limits.max_rows = max_rows.unwrap_or(limits.max_rows);
            let import = crate::panel_import::Import { file: &file, provider: &provider, facility: &facility, limits };
            crate::panel_import::run(&settings, import, &mut std::io::stdout()).await.map(|_| ())
        }
        Command::Serve { config, listen, data_dir, regions, redis, demo } => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.listen = listen.unwrap_or(settings.listen);
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            settings.regions = regions.unwrap_or(settings.regions);
            settings.demo = demo.or(settings.demo);
            settings.redis = redis.or(settings.redis);
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

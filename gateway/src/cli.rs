//! The `attach` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use attach_actors::access::{Role, Scope};
use attach_actors::domain::ProviderId;
use attach_actors::error::AttachError;
use clap::{Parser, Subcommand};

use crate::auth::dev::{DevKey, TokenRequest, parse_ttl};
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
    /// Mints a bearer token with the development key (FOR DEVELOPMENT ONLY).
    ///
    /// Uses the key `attach serve` made under `<data_dir>/dev-auth/` when no
    /// `auth.jwks` is configured (it never makes one: start `attach serve` on
    /// the data directory first), and the configured issuer and audience.
    /// Prints the token on stdout.
    Token {
        /// The role: patient, provider, delegate, medical_director, coordinator, support or operations.
        #[arg(long)]
        role: String,
        /// A scope entry (repeatable): `province`, `ha:CODE` or `community:CODE`.
        #[arg(long)]
        scope: Vec<String>,
        /// The caller's own provider id (providers and medical directors).
        #[arg(long)]
        provider: Option<String>,
        /// The token's subject (default: `dev-<role>`, with the provider id when there is one).
        #[arg(long)]
        subject: Option<String>,
        /// How long the token is valid: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Configuration file (for the data directory, issuer and audience).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory holding the development key.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Regions file the scope is checked against, as for `serve`.
        #[arg(long)]
        regions: Option<PathBuf>,
    },
    /// Panels of the provider side.
    #[command(subcommand)]
    Panel(PanelCommand),
}

#[derive(Subcommand, Debug)]
enum PanelCommand {
    /// Submits a panel file (CSV: PHN, surname, given name, date of birth, 98990,
    /// facility number) and prints the rows not taken and a summary.
    ///
    /// With --url, to a running server, as the multipart `submitPanel` upload
    /// (with --token: the provider's, or their endorsed delegate's). Without it,
    /// straight into a data directory, for bulk loads: no server may be running
    /// on that directory.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The provider whose panel it is.
        #[arg(long)]
        provider: String,
        /// The clinic's facility number (the provider must be listed there).
        #[arg(long)]
        facility: String,
        /// A running Attach to submit to, e.g. http://127.0.0.1:8080 (its limits apply).
        #[arg(long, requires = "token", conflicts_with_all = ["config", "data_dir", "regions", "max_bytes", "max_rows"])]
        url: Option<String>,
        /// The bearer token to submit with (with --url).
        #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Configuration file (TOML), as for `serve` (offline).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (offline).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Regions file (offline).
        #[arg(long)]
        regions: Option<PathBuf>,
        /// Largest file accepted, in bytes (offline; default: `limits.max_panel_bytes`).
        #[arg(long)]
        max_bytes: Option<usize>,
        /// Most patient rows accepted (offline; default: `limits.max_panel_rows`).
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
            url,
            token,
            config,
            data_dir,
            regions,
            max_bytes,
            max_rows,
        }) => {
            if let Some(url) = url {
                let token = token.ok_or_else(|| anyhow::anyhow!("--url needs --token (or ATTACH_TOKEN)"))?;
                let remote = crate::panel_import::Remote { url: &url, token: &token };
                // The server applies its own limits; these are not read.
                let limits = attach_actors::panel::Limits::default();
                let import =
                    crate::panel_import::Import { file: &file, provider: &provider, facility: &facility, limits };
                return crate::panel_import::run_remote(remote, import, &mut std::io::stdout()).await.map(|_| ());
            }
            let mut settings = Settings::load(config.as_deref())?;
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            settings.regions = regions.unwrap_or(settings.regions);
            // Logs go to stderr; stdout carries the report.
            let _telemetry = crate::telemetry::init("warn", false);
            let mut limits = settings.limits.panel();
            limits.max_bytes = max_bytes.unwrap_or(limits.max_bytes);
            limits.max_rows = max_rows.unwrap_or(limits.max_rows);
            anyhow::ensure!(limits.max_rows >= 1, "--max-rows is at least 1: a panel file has one patient or more");
            anyhow::ensure!(limits.max_bytes >= 64, "--max-bytes is at least 64: a panel file has one row or more");
            let import = crate::panel_import::Import { file: &file, provider: &provider, facility: &facility, limits };
            crate::panel_import::run(&settings, import, &mut std::io::stdout()).await.map(|_| ())
        }
        Command::Migrate { config, store } => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.store = store.unwrap_or(settings.store);
            let _telemetry = crate::telemetry::init(&settings.log, settings.log_spans);
            let options = settings.scylla_options()?.ok_or_else(|| {
                anyhow::anyhow!("`attach migrate` applies the ScyllaDB schema: give --store scylla://HOST:9042")
            })?;
            let session = attach_actors::store::scylla::connect_session(&options).await?;
            attach_actors::store::scylla::migrate(&session, &options.keyspace, &options.replication).await?;
            println!("schema applied to keyspace {} at {}", options.keyspace, options.nodes.join(","));
            Ok(())
        }
        Command::Token { role, scope, provider, subject, ttl, config, data_dir, regions } => {
            let mut settings = Settings::load(config.as_deref())?;
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            // A file named here must be read: its codes are what the scope is checked against.
            if let Some(path) = &regions {
                attach_actors::regions::Regions::load(path)?;
            }
            settings.regions = regions.unwrap_or(settings.regions);
            let token = mint(&settings, &role, scope, provider, subject, &ttl)?;
            eprintln!(
                "warning: a DEVELOPMENT token, signed with the key in {}; production tokens come from the \
                 identity provider",
                DevKey::dir(&settings.data_dir).display()
            );
            println!("{token}");
            Ok(())
        }
        Command::Serve { config, listen, data_dir, regions, redis, store, node, demo } => {
            let flags = ServeFlags { listen, data_dir, regions, redis, store, node, demo };
            let settings = flags.settings(config.as_deref())?;
            let _telemetry = crate::telemetry::init(&settings.log, settings.log_spans);
            let (host, graphiql) = (settings.listen.ip(), settings.graphiql);
            let app = Application::build(settings).await?;
            tokio::spawn(apply_peers_on_hangup(app.cluster_handle(), config, flags));
            // One line on stdout, for people and for scripts that started it on port 0.
            let page = if graphiql { "GraphiQL; " } else { "" };
            println!("attach listening on http://{host}:{}/ ({page}the API is at /graphql)", app.port());
            app.run_until_stopped(shutdown_signal()).await
        }
    }
}

fn mint(
    settings: &Settings,
    role: &str,
    scope: Vec<String>,
    provider: Option<String>,
    subject: Option<String>,
    ttl: &str,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        settings.auth.jwks.is_empty(),
        "auth.jwks is set: this Attach trusts an identity provider's keys, and only that provider can issue tokens"
    );
    let role: Role = role.parse().map_err(|e: AttachError| anyhow::anyhow!(e.message))?;
    let parsed = Scope::parse(scope.iter().map(String::as_str)).map_err(|e| anyhow::anyhow!(e.message))?;
    check_scope_codes(settings, &parsed)?;
    if let Some(p) = &provider {
        ProviderId::parse(p).map_err(|e| anyhow::anyhow!("`{p}` is not a provider id: {}", e.message))?;
    }
    if matches!(role, Role::Provider | Role::MedicalDirector) {
        anyhow::ensure!(provider.is_some(), "the {role} role needs --provider <ID>");
    }
    // Tokens the server would refuse, or that could do nothing, are not minted.
    if matches!(role, Role::Coordinator | Role::Support) {
        anyhow::ensure!(!scope.is_empty(), "the {role} role needs --scope (province, ha:CODE or community:CODE)");
    }
    if let Some(s) = &subject {
        anyhow::ensure!(!s.trim().is_empty(), "--subject is empty: a token names who holds it");
        // As the server reads a token's `sub`: a token it would refuse is not minted.
        if let Some(why) = crate::auth::token::subject_problem(s) {
            anyhow::bail!("--subject: {why}");
        }
    }
    let subject = subject.unwrap_or_else(|| match &provider {
        Some(p) => format!("dev-{role}-{p}"),
        None => format!("dev-{role}"),
    });
    let request = TokenRequest { subject, role, scope, provider, ttl: parse_ttl(ttl)? };
    // A mistyped directory would get a key of its own, which no server trusts.
    anyhow::ensure!(
        settings.data_dir.is_dir(),
        "there is no data directory {}: give the --data-dir (or --config) that `attach serve` uses, whose \
         development key signs the tokens",
        settings.data_dir.display()
    );
    // Never made here: a server checking tokens against `auth.jwks` given
    // only in its own environment would trust none signed with it.
    let dir = DevKey::dir(&settings.data_dir);
    anyhow::ensure!(
        dir.join(crate::auth::dev::KEY_FILE).exists(),
        "there is no development key in {}: `attach serve` makes one when it starts on this data directory without \
         auth.jwks. A server that checks tokens against auth.jwks (in its file or its environment) takes tokens \
         from its identity provider only",
        dir.display()
    );
    if let Some(mode) = DevKey::open_to_others(&settings.data_dir) {
        eprintln!(
            "warning: the development key in {} is open to other users (mode {mode:o}): anyone who can read it can \
             sign in as any role; `chmod 600` it",
            dir.display()
        );
    }
    let key = DevKey::load(&settings.data_dir)?;
    key.mint(&settings.auth.issuer, &settings.auth.audience, &request)
}

/// Refuses a scope naming a health authority or community that the regions
/// file does not have: such a token would reach nothing. A regions file that
/// cannot be read only leaves the codes unchecked (say, run from elsewhere).
fn check_scope_codes(settings: &Settings, scope: &Scope) -> anyhow::Result<()> {
    if scope.health_authorities.is_empty() && scope.communities.is_empty() {
        return Ok(());
    }
    let regions = match attach_actors::regions::Regions::load(&settings.regions) {
        Ok(regions) => regions,
        Err(e) => {
            eprintln!("warning: the scope's codes were not checked: {e:#}");
            return Ok(());
        }
    };
    let file = settings.regions.display();
    for ha in scope.health_authorities.iter().map(|c| c.as_str()) {
        anyhow::ensure!(regions.health_authority(ha).is_some(), "--scope ha:{ha}: {file} has no health authority {ha}");
    }
    for community in scope.communities.iter().map(|c| c.as_str()) {
        anyhow::ensure!(
            regions.community(community).is_some(),
            "--scope community:{community}: {file} has no community {community}"
        );
    }
    Ok(())
}

/// The flags of `attach serve` that override the configuration.
#[derive(Clone)]
struct ServeFlags {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    regions: Option<PathBuf>,
    redis: Option<String>,
    store: Option<String>,
    node: Option<String>,
    demo: Option<String>,
}

impl ServeFlags {
    /// The settings of `file`, then `ATTACH_*`, then these flags, checked as a whole.
    fn settings(&self, file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        let mut settings = Settings::read(file)?;
        let flags = self.clone();
        settings.listen = flags.listen.unwrap_or(settings.listen);
        settings.data_dir = flags.data_dir.unwrap_or(settings.data_dir);
        settings.regions = flags.regions.unwrap_or(settings.regions);
        settings.demo = flags.demo.or(settings.demo);
        settings.redis = flags.redis.or(settings.redis);
        settings.store = flags.store.unwrap_or(settings.store);
        settings.node = flags.node.or(settings.node);
        settings.check()?;
        Ok(settings)
    }
}

/// On each SIGHUP, reads the configuration again (the file, then `ATTACH_*`,
/// then the flags it was started with) and goes by its `cluster.peers` and
/// secrets: a node added to the cluster or taken out of it (this one too), or
/// a new secret, without a restart. Anything else in the file needs a
/// restart; so does a change of `node`.
async fn apply_peers_on_hangup(
    handle: crate::startup::ClusterHandle,
    config: Option<std::path::PathBuf>,
    flags: ServeFlags,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            let applied = async {
                let settings = flags.settings(config.as_deref())?;
                anyhow::ensure!(
                    settings.node_name() == handle.node(),
                    "this node runs as `{}`, and `node` changes only by restarting it",
                    handle.node()
                );
                handle.apply(&settings.cluster).await
            };
            match applied.await {
                Ok(()) => tracing::info!("SIGHUP: the cluster's node list was read again"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the cluster's node list was not changed"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (handle, config, flags);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_the_server_would_refuse_or_that_could_do_nothing_are_not_minted() {
        let dir = tempfile::tempdir().unwrap();
        DevKey::load_or_create(dir.path()).unwrap();
        let regions = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/regions/bc.toml").into();
        let settings = Settings { data_dir: dir.path().to_path_buf(), regions, ..Settings::default() };
        let scope = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mint_as = |role: &str, scopes: &[&str], subject: Option<&str>| {
            mint(&settings, role, scope(scopes), None, subject.map(str::to_string), "1h")
        };
        let unscoped = mint_as("coordinator", &[], None).unwrap_err().to_string();
        assert!(unscoped.contains("--scope"), "{unscoped}");
        assert!(mint_as("support", &[], None).is_err());
        let nobody = mint_as("operations", &["province"], Some("  ")).unwrap_err().to_string();
        assert!(nobody.contains("--subject"), "{nobody}");
        let long = "a".repeat(257);
        assert!(mint_as("operations", &["province"], Some(&long)).unwrap_err().to_string().contains("256"));
        assert!(mint_as("operations", &["province"], Some(&long[..256])).is_ok());
        assert!(mint_as("coordinator", &["ha:IHA"], None).is_ok());
        assert!(mint_as("patient", &[], Some("patient-1")).is_ok(), "a patient needs no scope");
        assert!(mint_as("coordinator", &["ha:iha", "community:233"], None).is_ok(), "codes of bc.toml");
        let nowhere = mint_as("coordinator", &["ha:XHA"], None).unwrap_err().to_string();
        assert!(nowhere.contains("no health authority XHA"), "{nowhere}");
        let nowhere = mint_as("support", &["province", "community:9999"], None).unwrap_err().to_string();
        assert!(nowhere.contains("no community 9999"), "{nowhere}");
    }

    #[test]
    fn a_token_is_not_signed_with_a_key_made_in_a_mistyped_directory() {
        let dir = tempfile::tempdir().unwrap();
        let typo = dir.path().join("dtaa");
        let settings = Settings { data_dir: typo.clone(), ..Settings::default() };
        let refused = mint(&settings, "operations", vec![], None, None, "1h").unwrap_err().to_string();
        assert!(refused.contains("no data directory"), "{refused}");
        assert!(!typo.exists(), "nothing made there");
    }

    #[test]
    fn a_token_is_signed_only_with_the_key_a_server_made() {
        // A production data directory, its server checking tokens against a
        // JWKS set in its own environment only: no key is made there.
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings { data_dir: dir.path().to_path_buf(), ..Settings::default() };
        let refused = mint(&settings, "operations", vec![], None, None, "1h").unwrap_err().to_string();
        assert!(refused.contains("no development key") && refused.contains("attach serve"), "{refused}");
        assert!(!DevKey::dir(dir.path()).exists(), "nothing made there");
        // Once `attach serve` made one, tokens are signed with it.
        let key = DevKey::load_or_create(dir.path()).unwrap();
        let token = mint(&settings, "operations", vec![], None, None, "1h").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
    }
}

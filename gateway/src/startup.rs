//! Building and running the application: the seams tests use.
//!
//! `Application::build(settings)` binds the listener (port 0 picks a free port),
//! opens the store (embedded or ScyllaDB) and starts loading shards in the background;
//! `port()` says where it listens; `run_until_stopped(shutdown)` serves until the
//! shutdown future completes, then stops the shards.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use attach_actors::demo::{self, DemoSize};
use attach_actors::domain::Timestamp;
use attach_actors::feed::redis::RedisFeed;
use attach_actors::feed::{Feed, MemoryFeed};
use attach_actors::regions::Regions;
use attach_actors::store::Store;
use attach_actors::store::embedded::{EmbeddedOptions, EmbeddedStore};
use attach_actors::store::scylla::{ScyllaStore, connect_session, migrate};
use attach_actors::system::AttachSystem;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::client_ip::ClientIp;
use crate::config::Settings;
use crate::forward::Forwarder;
use crate::graphql;
use crate::graphql::PrincipalSubscriptions;
use crate::graphql::document_cache::DocumentCache;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::routes::{AppState, router};

/// Creates the data directory (the embedded store's file and the development key live there).
fn create_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    anyhow::ensure!(!dir.exists() || dir.is_dir(), "the data directory {} is a file, not a directory", dir.display());
    std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", settings.data_dir.display()))
}

/// Opens the store `settings` names: the embedded file, or a ScyllaDB cluster
/// (applying the schema first if `scylla.migrate_on_start`).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(options) = settings.scylla_options()? {
        if settings.scylla.migrate_on_start {
            let session = connect_session(&options).await?;
            migrate(&session, &options.keyspace, &options.replication).await?;
        }
        return Ok(Arc::new(ScyllaStore::connect(options).await?));
    }
    create_data_dir(settings)?;
    let path = settings.data_dir.join("attach.redb");
    let options = EmbeddedOptions {
        cache_bytes: (settings.store_cache_mib as usize) << 20,
        lease: settings.lease(),
        ..EmbeddedOptions::default()
    };
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, options))
            .await
            .context("opening the store")??,
    ))
}

/// Changes a running node's list of peers: a node added to the cluster or
/// taken out of it, without restarting this one (`attach serve` applies its
/// configuration file's `cluster.peers` again on SIGHUP).
#[derive(Clone)]
pub struct ClusterHandle {
    me: String,
    secrets: Arc<crate::forward::ClusterSecrets>,
    forwarder: Arc<crate::forward::Forwarder>,
    system: Arc<AttachSystem>,
    /// Whether the live feed goes through Redis: without it a node cannot join peers.
    shared_feed: bool,
}

impl ClusterHandle {
    /// The name this node runs under (its leases' owner), fixed at start.
    pub fn node(&self) -> &str {
        &self.me
    }

    /// Goes by `cluster`'s peers from now on. The placement changes with them:
    /// this node asks the peers for the shards it is now preferred for, and
    /// hands each peer that answers the shards that peer is now preferred for.
    /// The secrets change with them (`cluster.accept_secrets` says how to
    /// change the secret without a moment when two nodes disagree).
    /// A node started without peers joins a cluster this way too, if its feed
    /// goes through Redis (every node must carry every community's events).
    pub async fn apply(&self, cluster: &crate::config::ClusterSettings) -> anyhow::Result<()> {
        let joined = !cluster.peers.is_empty();
        // A node that started with peers passed these checks at start.
        let joining = joined && !self.system.linked_to_peers();
        if joined {
            anyhow::ensure!(!cluster.secret.is_empty(), crate::config::PEERS_NEED_SECRET);
        }
        cluster.check_secrets()?;
        if joining {
            anyhow::ensure!(
                self.shared_feed,
                "this node's live feed is in-process: restart it with `redis` set to join a cluster"
            );
        }
        let placement = cluster.placement(&self.me)?;
        if self.secrets.set(cluster) {
            info!("the cluster's secrets changed");
        }
        self.forwarder.set_peers(cluster)?;
        if joining {
            self.system.set_peers(self.forwarder.clone());
        }
        self.system.set_placement(placement);
        info!(peers = self.forwarder.peer_count(), "applied the cluster's node list");
        for (peer, _) in self.forwarder.ask_hand_back().await {
            let handed = self.system.hand_back(&peer).await;
            if handed > 0 {
                info!(%peer, shards = handed, "handed a peer the shards it is now preferred for");
            }
        }
        self.system.start_own_shards();
        Ok(())
    }
}

/// A built, not yet serving, Attach.
pub struct Application {
    listener: TcpListener,
    /// `limits.socket_send_buffer_bytes`, applied to every accepted connection.
    send_buffer: usize,
    /// `limits.header_read_secs` and `limits.max_connections`.
    deadlines: crate::http_server::Deadlines,
    port: u16,
    state: AppState,
    /// Demo seeding and shard loading; its error ends the process.
    init: JoinHandle<anyhow::Result<()>>,
    /// How often stalled moves and transfers are taken up again (a lease).
    resume_every: std::time::Duration,
    /// Whether the live feed goes through Redis.
    shared_feed: bool,
    /// Set when shutdown starts, so subscription connections close with 1001.
    closing: tokio::sync::watch::Sender<bool>,
}

/// The rate limiters, sharing their quotas through Redis when it is configured.
fn rate_limits(settings: &Settings) -> anyhow::Result<RateLimits> {
    let rate = &settings.limits.rate;
    let limits = RateLimits::new(rate);
    Ok(match settings.redis.as_deref().filter(|_| rate.shared && rate.enabled) {
        Some(url) => {
            let timeout = std::time::Duration::from_millis(rate.shared_timeout_ms);
            let prefix = format!("{}:rate:", settings.redis_namespace);
            limits.with_shared(crate::ratelimit::shared::SharedLimiter::new(url, &prefix, timeout)?)
        }
        None => limits,
    })
}

/// Refuses to start when the store holds a community the regions file does
/// not name (a file changed, or another province's): its households would
/// answer `NOT_FOUND`, and their PHNs stay claimed, refused anywhere else.
pub(crate) async fn refuse_unknown_shards(store: &dyn Store, regions: &Regions) -> anyhow::Result<()> {
    let known: std::collections::HashSet<&attach_actors::domain::ShardKey> = regions.shards().collect();
    let mut unknown: Vec<String> =
        store.held_shards().await?.iter().filter(|s| !known.contains(s)).map(ToString::to_string).collect();
    unknown.sort();
    anyhow::ensure!(
        unknown.is_empty(),
        "the store holds communities the regions file does not name ({}): start with the regions file the data \
         was made with (a community moved to another health authority is a new community)",
        unknown.join(", ")
    );
    Ok(())
}

/// The listening socket `settings` names.
async fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))
}

impl Application {
    /// Opens everything `settings` names and starts loading shards.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // A port in use, or a regions file that does not load, is found before anything is made on disk.
        let listener = bind(&settings).await?;
        Regions::load(&settings.regions)?;
        let store = open_store(&settings).await?;
        Self::build_on(settings, store, listener).await
    }

    /// Like [`build`](Self::build), on a store already open: nodes sharing one
    /// store (a ScyllaDB cluster, or one embedded file in a test of several nodes).
    pub async fn build_with_store(settings: Settings, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let listener = bind(&settings).await?;
        Self::build_on(settings, store, listener).await
    }

    async fn build_on(settings: Settings, store: Arc<dyn Store>, listener: TcpListener) -> anyhow::Result<Self> {
        // The development key lives there too, whatever the store.
        create_data_dir(&settings)?;
        let auth = Arc::new(Authenticator::start(&settings).await.context("loading the token-signing keys")?);
        let limits = Arc::new(rate_limits(&settings)?);
        limits.spawn_sweeper(std::time::Duration::from_secs(settings.limits.rate.sweep_secs));
        let regions = Arc::new(Regions::load(&settings.regions)?);
        refuse_unknown_shards(&*store, &regions).await?;
        info!(
            file = %settings.regions.display(),
            health_authorities = regions.health_authorities.len(),
            communities = regions.shards().count(),
            "regions"
        );
        let owner = settings.node_name();
        let secrets = Arc::new(crate::forward::ClusterSecrets::new(&settings.cluster));
        let forwarder = Arc::new(crate::forward::Forwarder::from_settings(
            &owner,
            &settings.cluster,
            secrets.clone(),
            std::time::Duration::from_secs(settings.shard.call_timeout_secs.max(1) * 2),
        )?);
        let feed: Arc<dyn Feed> = match &settings.redis {
            Some(url) => RedisFeed::start(url, &settings.redis_namespace, settings.feed.buffer)?,
            None => Arc::new(MemoryFeed::new(settings.feed.buffer)),
        };
        let system = Arc::new(AttachSystem::new(regions.clone(), store.clone(), feed, settings.shard_config(), owner));
        if forwarder.has_peers() {
            system.set_peers(forwarder.clone());
        }
        let port = listener.local_addr()?.port();
        let started = Arc::new(AtomicBool::new(false));
        let demo = settings.demo.as_deref().map(str::parse::<DemoSize>).transpose()?;
        let init = tokio::spawn({
            let system = system.clone();
            let started = started.clone();
            let forwarder = forwarder.clone();
            async move {
                if let Some(size) = demo {
                    let report = demo::seed(store.as_ref(), &regions, size, Timestamp::now())
                        .await
                        .context("seeding the demo")?;
                    info!(?report, "demo data");
                }
                system.start().await?;
                if forwarder.has_peers() {
                    // The peers answer once the shards have stopped there: take them now.
                    forwarder.ask_hand_back().await;
                    system.start_own_shards();
                }
                system.resume_moves().await;
                let resumed = system.resume_transfers().await;
                if resumed > 0 {
                    info!(resumed, "panel transfers resumed");
                }
                started.store(true, Ordering::Release);
                info!("ready");
                Ok(())
            }
        });
        let schema = graphql::build(system.clone(), &settings.limits, &settings.feed);
        let documents = Arc::new(DocumentCache::new(1_000, 16 * 1024));
        let nullable_roots = Arc::new(graphql::failed::NullableRoots::from_sdl(&schema.sdl()));
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let sockets = Arc::new(tokio::sync::watch::Sender::new(0usize));
        let keepalive = std::time::Duration::from_secs(settings.feed.keepalive_secs.max(1));
        let state = AppState {
            schema,
            system,
            started,
            max_body_bytes: settings.limits.max_body_bytes,
            max_upload_bytes: settings.limits.max_upload_body_bytes(),
            body_read: std::time::Duration::from_secs(settings.limits.body_read_secs),
            websocket_origins: Arc::new(settings.limits.websocket_origins.clone()),
            documents,
            nullable_roots,
            max_fields: settings.limits.max_fields,
            closing,
            sockets,
            keepalive,
            max_subscriptions: settings.feed.max_subscriptions_per_connection,
            metrics: Arc::new(Metrics::default()),
            auth,
            limits,
            subscriptions: Arc::new(PrincipalSubscriptions::new(settings.limits.subscriptions_per_principal)),
            client_ip: Arc::new(ClientIp::from_settings(&settings.limits.rate)?),
            forwarder,
            secrets,
            graphiql: settings.graphiql,
        };
        let send_buffer = settings.limits.socket_send_buffer_bytes;
        let resume_every = std::time::Duration::from_secs(settings.shard.lease_secs.max(1));
        let shared_feed = settings.redis.is_some();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let (max_connections, lowered) =
            crate::http_server::Deadlines::fitted(settings.limits.max_connections, limits.as_deref());
        if let Some(why) = lowered {
            warn!("{why}");
        }
        let deadlines = crate::http_server::Deadlines {
            header_read: std::time::Duration::from_secs(settings.limits.header_read_secs),
            max_connections,
        };
        Ok(Application {
            listener,
            send_buffer,
            deadlines,
            port,
            state,
            init,
            resume_every,
            shared_feed,
            closing: closing_tx,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The handle that changes this node's peers while it runs (a node
    /// started without peers joins a cluster through it).
    pub fn cluster_handle(&self) -> ClusterHandle {
        ClusterHandle {
            me: self.state.system.owner().to_string(),
            secrets: self.state.secrets.clone(),
            forwarder: self.state.forwarder.clone(),
            system: self.state.system.clone(),
            shared_feed: self.shared_feed,
        }
    }

    /// Serves until `shutdown` completes (or start-up fails), then stops every shard.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let system = self.state.system.clone();
        let sockets = self.state.sockets.clone();
        let resumer = tokio::spawn(resume_stalled(
            system.clone(),
            self.state.forwarder.clone(),
            self.state.started.clone(),
            self.resume_every,
        ));
        info!(port = self.port, "listening");
        // Small GraphQL answers and feed events must not wait for Nagle's algorithm.
        let send_buffer = self.send_buffer;
        let tune = move |tcp: &tokio::net::TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
            // A subscriber that stops reading holds up at most this much in the
            // kernel; beyond it the shard's feed drops events for it (MISSED).
            if send_buffer > 0
                && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer)
            {
                tracing::warn!(error = %e, "could not set the socket send buffer");
            }
        };
        // Each request knows the client's address, which keys anonymous rate limits.
        let app = router(self.state);
        // Upgraded connections are not the server's to wait for: told first, they close themselves.
        let closing = self.closing;
        // A store that cannot write again (the embedded file after an I/O error)
        // stops the process as a signal would, and with an error: a restart,
        // by the service manager, recovers from what is durable.
        let (broke, mut broken) = tokio::sync::oneshot::channel::<String>();
        let watched = system.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                why = watched.store_broken() => {
                    tracing::error!(error = %why, "the store cannot write any more; stopping so that a restart recovers");
                    let _ = broke.send(why);
                }
            }
            closing.send_replace(true);
        };
        let server = crate::http_server::serve(self.listener, app, self.deadlines, tune, shutdown);
        tokio::pin!(server);
        let mut init = self.init;
        let mut starting = true;
        // Serve while start-up runs; a failed start-up ends the process, a
        // finished one leaves the server running (select! must not drop it).
        let result = loop {
            tokio::select! {
                served = &mut server => break served.map_err(anyhow::Error::from),
                done = &mut init, if starting => match done {
                    Ok(Ok(())) => starting = false,
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(anyhow::Error::from(e).context("start-up task")),
                },
            }
        };
        resumer.abort();
        let result = match broken.try_recv() {
            Ok(why) => result.and(Err(anyhow::anyhow!(
                "the store failed to write ({why}) and cannot write again until Attach starts again; everything \
                 acknowledged is durable"
            ))),
            Err(_) => result,
        };
        // Subscription connections were told to close (1001): let them send it
        // before the shards stop and the process ends.
        let mut open = sockets.subscribe();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), open.wait_for(|n| *n == 0)).await;
        system.stop().await;
        result
    }
}

/// Once started, every `every`: takes back this node's shards a peer still
/// holds, and finishes the moves and resumes the transfers that have been
/// running longer than that, so a step that failed (a shard restarting, a peer
/// away) is taken again without waiting for a retry or a restart.
async fn resume_stalled(
    system: Arc<AttachSystem>,
    forwarder: Arc<Forwarder>,
    started: Arc<AtomicBool>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut take_back = TakeBack::default();
    loop {
        tick.tick().await;
        if !started.load(Ordering::Acquire) {
            continue;
        }
        take_back.tick(&system, &forwarder).await;
        let (moves, transfers) = system.resume_stalled(every).await;
        if moves + transfers > 0 {
            info!(moves, transfers, "stalled moves finished and transfers resumed");
        }
    }
}

/// Asks the peers again for the shards this node is preferred for that one of
/// them still holds, and starts those they hand back. The asks made at start
/// and on a new node list are single tries: one that failed (a peer out of
/// reach, or not yet knowing this node), or a shard a peer took again because
/// this node did not take it within a lease, would otherwise stay there until
/// the next restart or SIGHUP. While they stay there the asks space out (1, 2,
/// 4 … 32 ticks apart): a node that cannot start a shard itself (a crash loop,
/// an older build) must not take it from a working stand-in every tick.
#[derive(Default)]
struct TakeBack {
    /// Ticks to let pass before the next ask.
    wait: u32,
    /// Ticks between asks while shards stay on peers.
    gap: u32,
}

impl TakeBack {
    const MOST_TICKS_APART: u32 = 32;

    async fn tick(&mut self, system: &AttachSystem, forwarder: &Forwarder) {
        if !forwarder.has_peers() {
            return;
        }
        let held = system.own_shards_held_elsewhere().await;
        if held.is_empty() {
            *self = TakeBack::default();
            return;
        }
        if self.wait > 0 {
            self.wait -= 1;
            return;
        }
        if self.gap > 0 {
            warn!(
                shards = held.len(),
                "shards a peer handed back to this node run on a peer again: if this node cannot start them (its log \
                 says why), the peer serves them between asks, which space out"
            );
        } else {
            info!(shards = held.len(), "shards this node is preferred for still run on a peer; asking for them back");
        }
        let handed: usize = forwarder.ask_hand_back().await.iter().map(|(_, n)| n).sum();
        // Only a hand-back stops the shards on the peer: an ask that reached no one costs nothing to repeat.
        if handed > 0 {
            system.start_own_shards();
            self.gap = (self.gap * 2).clamp(1, Self::MOST_TICKS_APART);
            self.wait = self.gap;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scylla_store_that_cannot_be_reached_fails_start_up_with_its_address() {
        // Port 1 on loopback refuses at once: no cluster needed to see the wiring.
        let settings = Settings { store: "scylla://127.0.0.1:1".into(), ..Settings::default() };
        let error = open_store(&settings).await.map(|_| ()).expect_err("nothing listens on port 1");
        assert!(format!("{error:#}").contains("connecting to ScyllaDB at 127.0.0.1:1"), "{error:#}");
    }

    #[tokio::test]
    async fn the_embedded_store_takes_the_configured_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings { data_dir: dir.path().to_path_buf(), ..Settings::default() };
        settings.shard.lease_secs = 42;
        let store = open_store(&settings).await.unwrap();
        assert_eq!(store.lease(), std::time::Duration::from_secs(42));
    }

    #[tokio::test]
    async fn a_port_in_use_is_refused_before_anything_is_made_on_disk() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let settings =
            Settings { data_dir: data_dir.clone(), listen: taken.local_addr().unwrap(), ..Settings::default() };
        let error = Application::build(settings).await.map(|_| ()).expect_err("the port is taken");
        assert!(format!("{error:#}").contains("binding 127.0.0.1:"), "{error:#}");
        assert!(!data_dir.exists(), "no data directory made");
    }
}

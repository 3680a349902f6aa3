//! Typed configuration: defaults, then a TOML file, then `ATTACH_*` environment
//! variables (nested keys joined by `__`, e.g. `ATTACH_SHARD__PROPOSAL_TTL_SECS`),
//! then command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attach_actors::matcher::Policy;
use attach_actors::shard::ShardConfig;
use attach_actors::store::scylla::{ScyllaOptions, check_keyspace, is_scylla_uri, parse_uri};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `attach serve` runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds (port 0: any free port).
    pub listen: SocketAddr,
    /// The store: `embedded` (a file under `data_dir`) or
    /// `scylla://HOST:9042[,HOST2:9042...]` (a ScyllaDB cluster, see `scylla`).
    pub store: String,
    /// This node's name in shard leases (default `attach-<process id>`). A
    /// stable name lets a restarted node take its shards back at once instead
    /// of waiting for their leases to run out.
    pub node: Option<String>,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// The regions file (health authorities and communities).
    pub regions: PathBuf,
    /// Seed a synthetic province on first start: `small` or `province`.
    pub demo: Option<String>,
    /// Redis for the live feed (`redis://host:port`); none: an in-process feed.
    pub redis: Option<String>,
    /// The start of every Redis key and channel this deployment uses. The
    /// gateways of one deployment (one store) share it; deployments sharing a
    /// Redis must each have their own, or their feeds and quotas mix.
    pub redis_namespace: String,
    /// The embedded store's page cache, in MiB (bounded so memory is predictable).
    pub store_cache_mib: u64,
    /// ScyllaDB, when `store` names it.
    pub scylla: ScyllaSettings,
    /// Shard actor settings.
    pub shard: ShardSettings,
    /// Matching policy.
    pub matching: Policy,
    /// Request limits.
    pub limits: Limits,
    /// The live feed.
    pub feed: FeedSettings,
    /// Who callers are: bearer tokens and the keys that sign them.
    pub auth: AuthSettings,
    /// The other nodes sharing the store: where to send requests for shards they hold.
    pub cluster: ClusterSettings,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// Whether log lines carry the spans they happen in (the request, its
    /// GraphQL operation, the shard step). Off by default: formatting every
    /// request's spans for the log costs more CPU than a trivial query's own
    /// work (docs/BENCHMARKS.md). Spans are exported over OTLP either way.
    pub log_spans: bool,
    /// Whether `/` serves GraphiQL (from the binary, never a CDN).
    pub graphiql: bool,
}

/// Shard actor settings, in plain units for configuration files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardSettings {
    /// How long a proposal stays open, in seconds.
    pub proposal_ttl_secs: u64,
    /// How often shards expire overdue proposals, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Grace before an unconfirmed PHN claim counts as a crash's orphan, in seconds.
    pub claim_grace_secs: u64,
    /// Age at which an open spill-over reservation's proposal is looked for in
    /// the household's community (and the reservation freed if it is not
    /// there), in seconds; at least 60.
    pub reservation_check_secs: u64,
    /// Days a closed proposal stays in its shard's memory (listed among the
    /// community's proposals); older ones are read from the store by id. At least 1.
    pub proposal_memory_days: u64,
    /// Days after a match is accepted during which a coordinator may return the
    /// household to the waitlist with its place (`returnToWaitlist`); at most
    /// `proposal_memory_days`.
    pub return_window_days: u64,
    /// Calls in flight per shard before `OVERLOADED`.
    pub mailbox_capacity: usize,
    /// How long a resolver waits for a shard, in seconds.
    pub call_timeout_secs: u64,
    /// Rows of a submitted panel a shard takes per message and commit.
    pub panel_chunk_rows: usize,
    /// Patients a panel transfer moves per step.
    pub transfer_chunk: usize,
    /// How long a node's hold on a shard lasts unless renewed (every third of
    /// it), in seconds: how soon another node can take over a failed one.
    pub lease_secs: u64,
}

/// The ScyllaDB store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaSettings {
    /// The keyspace holding Attach's tables.
    pub keyspace: String,
    /// Replicas per datacenter (NetworkTopologyStrategy) when `attach migrate`
    /// creates the keyspace; empty means `datacenter1 = 3`.
    pub replication: BTreeMap<String, u32>,
    /// Apply `infra/scylla/schema.cql` when `attach serve` starts.
    pub migrate_on_start: bool,
    /// Every statement's timeout, in milliseconds (at most a sixth of the lease).
    pub request_timeout_ms: u64,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        let d = ScyllaOptions::default();
        ScyllaSettings {
            keyspace: d.keyspace,
            replication: BTreeMap::new(),
            migrate_on_start: false,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
        }
    }
}

/// The shortest cluster secret taken.
pub const MIN_SECRET: usize = 32;

/// What a node's name is.
const NODE_NAME_RULE: &str = "1 to 64 visible ASCII characters";

/// Whether `name` can name a node ([`NODE_NAME_RULE`]).
fn is_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic())
}

/// Room an upload's body has besides its panel file: the form's other parts
/// (the operation, the map) and the multipart boundaries.
pub const UPLOAD_FORM_ROOM: usize = 64 * 1024;

/// Why peers without a secret are refused, at start and on SIGHUP.
pub const PEERS_NEED_SECRET: &str =
    "cluster.peers needs `cluster.secret`, the same on every node: the nodes run steps for each other only with it";

/// Nodes sharing one store (ScyllaDB): each holds some shards' leases and
/// sends a request for a shard another node holds on to that node, once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// The other nodes, as `name=http://host:port` (`name` is their `node`
    /// setting, the owner their leases carry). Empty: nothing is forwarded.
    pub peers: Vec<String>,
    /// Shared by the nodes, and needed with peers: a node runs a step a peer
    /// asks of one of its shards, or hands shards back, only with it, and a
    /// request forwarded with it is not rate limited again (the first node
    /// counted it).
    pub secret: String,
    /// Other secrets accepted from peers (never sent), for changing `secret`
    /// while the cluster runs. On every node, one step at a time, each applied
    /// with SIGHUP: add the new secret here; make it `secret`, with the old one
    /// here; then take the old one out.
    pub accept_secrets: Vec<String>,
}

impl ClusterSettings {
    /// The peers as (node name, base URL), checked: each name a node name
    /// (as `node` is), given once, with the base URL of a node (`http(s)://host:port`,
    /// no path). A node may find its own name in the list (the same list on
    /// every node); those who use the list leave it out ([`ClusterSettings::others`]).
    pub fn peer_urls(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut seen = std::collections::HashSet::new();
        // Errors name an entry by its place and its node name, never its URL,
        // which may carry credentials.
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let entry = i + 1;
                let (name, url) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("cluster.peers: entry {entry} is not `name=http://host:port`"))?;
                let (name, url) = (name.trim(), url.trim().trim_end_matches('/'));
                anyhow::ensure!(!name.is_empty(), "cluster.peers: entry {entry} has no node name");
                anyhow::ensure!(is_node_name(name), "cluster.peers: `{name}` is not a node name ({NODE_NAME_RULE})");
                anyhow::ensure!(seen.insert(name), "cluster.peers: `{name}` is listed twice");
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "cluster.peers: `{name}` needs an http(s):// URL"
                );
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("cluster.peers: `{name}`'s URL does not parse ({e})"))?;
                anyhow::ensure!(
                    parsed.host().is_some()
                        && parsed.path() == "/"
                        && parsed.query().is_none()
                        && parsed.fragment().is_none()
                        && parsed.username().is_empty()
                        && parsed.password().is_none(),
                    "cluster.peers: `{name}` must be a node's base URL, http(s)://host:port with no path or credentials"
                );
                Ok((name.to_string(), url.to_string()))
            })
            .collect()
    }

    /// Each secret set is long enough not to be guessed: anyone holding it may
    /// make a node hand its shards over or run steps on them.
    pub fn check_secrets(&self) -> anyhow::Result<()> {
        let short =
            std::iter::once(&self.secret).chain(&self.accept_secrets).any(|s| !s.is_empty() && s.len() < MIN_SECRET);
        anyhow::ensure!(
            !short,
            "cluster.secret and cluster.accept_secrets must be at least {MIN_SECRET} bytes (for example `openssl rand -hex 32`)"
        );
        Ok(())
    }

    /// The peers besides `me`, as (node name, base URL).
    pub fn others(&self, me: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self.peer_urls()?.into_iter().filter(|(name, _)| name != me).collect())
    }

    /// Which node should hold each shard, seen from node `me`: none without peers.
    pub fn placement(&self, me: &str) -> anyhow::Result<Option<attach_actors::shard::Placement>> {
        let peers = self.peer_urls()?;
        Ok((!peers.is_empty()).then(|| attach_actors::shard::Placement::new(me, peers.into_iter().map(|(n, _)| n))))
    }
}

/// The live feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettings {
    /// Events a subscriber may fall behind by (per community) before it is told
    /// it missed some; bounds the memory a slow subscriber can hold.
    pub buffer: usize,
    /// Seconds between keep-alive pings on subscription connections.
    pub keepalive_secs: u64,
    /// Events a subscription replays from the store when it starts with `afterSeq`;
    /// a larger gap gets a `MISSED` notice and is filled with the `events` query.
    pub max_replay: usize,
    /// Subscriptions one WebSocket connection may hold at once.
    pub max_subscriptions_per_connection: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings { buffer: 1024, keepalive_secs: 30, max_replay: 1000, max_subscriptions_per_connection: 32 }
    }
}

/// Limits on what one request may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deepest query nesting accepted.
    pub max_depth: usize,
    /// Highest query complexity accepted.
    pub max_complexity: usize,
    /// Most fields (and fragment spreads) a document may select, a fragment's
    /// counted each time it is spread; checked before validation, whose cost
    /// grows with it.
    pub max_fields: usize,
    /// Largest page a list returns.
    pub max_page_size: usize,
    /// Largest request body, in bytes (a multipart upload may be a panel file plus 64 KiB).
    pub max_body_bytes: usize,
    /// Largest panel file, in bytes.
    pub max_panel_bytes: usize,
    /// Most patient rows in one panel file.
    pub max_panel_rows: usize,
    /// Requests per caller over time.
    pub rate: RateSettings,
    /// Subscriptions one principal may hold at once, across all its connections.
    pub subscriptions_per_principal: usize,
    /// The kernel's send buffer per connection, in bytes (0: the kernel's own
    /// autotuning, up to several MiB). Bounds what a subscriber that stops
    /// reading can hold up in the kernel; past it, the feed drops its events
    /// and tells it so (`MISSED`) instead.
    pub socket_send_buffer_bytes: usize,
    /// Seconds a connection has to send a request's line and headers, from
    /// when it starts waiting for them (so also how long a kept-alive
    /// connection may sit idle).
    pub header_read_secs: u64,
    /// Seconds a request's body has to arrive, once its headers have.
    pub body_read_secs: u64,
    /// Connections open at once (WebSocket ones included); those over it are
    /// closed as soon as they are accepted.
    pub max_connections: usize,
    /// Origins (`https://coordinators.example.ca`) besides this server's own
    /// whose pages may open a WebSocket here; `*` for any. A browser sends
    /// `Origin`; other clients do not, and are not checked.
    pub websocket_origins: Vec<String>,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Where the token-signing public keys are: a JWKS file path or an
    /// `http(s)://` URL. Empty: a development key generated under
    /// `<data_dir>/dev-auth/` (never for production).
    pub jwks: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of, when it is a list).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// How often a JWKS URL or file is read again, in seconds (keys rotate).
    pub jwks_refresh_secs: u64,
    /// Verified tokens remembered, so a client's repeated token is checked once
    /// (0 turns this off).
    pub verified_tokens: usize,
    /// How long a verified token is remembered, in seconds (its `exp` and a
    /// change of keys are checked on every use regardless).
    pub verified_token_secs: u64,
    /// A file of revoked tokens and subjects (`auth/revoked.rs` has its
    /// format). Empty: none.
    pub revoked: String,
    /// How often that file is read again, in seconds.
    pub revoked_refresh_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwks: String::new(),
            issuer: "attach-dev".to_string(),
            audience: "attach".to_string(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            verified_tokens: 16_384,
            verified_token_secs: 60,
            revoked: String::new(),
            revoked_refresh_secs: 10,
        }
    }
}

/// One caller's allowance: a sustained rate and the burst allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    /// Requests per minute, sustained.
    pub per_minute: u32,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

impl RateQuota {
    const fn new(per_minute: u32, burst: u32) -> Self {
        RateQuota { per_minute, burst }
    }
}

/// Rate limits: per signed-in principal by role, per client IP for calls without a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSettings {
    /// Off only for load tests against a private instance.
    pub enabled: bool,
    /// How often idle callers are dropped from the limiter's memory, in seconds.
    pub sweep_secs: u64,
    /// Reverse proxies in front of Attach that append to the forwarding header:
    /// the client is the address the outermost of them saw. 0: the socket's peer
    /// (never trust the header when clients can reach Attach directly).
    pub trusted_proxy_hops: usize,
    /// Addresses or CIDR blocks of the reverse proxies in front of Attach: the
    /// header is read only from them, and the client is the first address from
    /// the right that is not one of them. Instead of `trusted_proxy_hops`.
    pub trusted_proxies: Vec<String>,
    /// The header the proxies append to: `x-forwarded-for` or `forwarded` (RFC 7239).
    pub forwarded_header: String,
    /// With `redis` configured, count every request against quotas kept in
    /// Redis as well, so gateways behind one load balancer share them; off:
    /// each gateway applies the whole quota on its own.
    pub shared: bool,
    /// How long a shared check may take before the gateway goes by its own
    /// count (and counts the miss), in milliseconds.
    pub shared_timeout_ms: u64,
    /// Calls without a token, per client IP address.
    pub anonymous_per_ip: RateQuota,
    /// Patients.
    pub patient: RateQuota,
    /// Providers.
    pub provider: RateQuota,
    /// Delegates (a provider's staff).
    pub delegate: RateQuota,
    /// Medical directors.
    pub medical_director: RateQuota,
    /// Attachment coordinators.
    pub coordinator: RateQuota,
    /// Support staff.
    pub support: RateQuota,
    /// Operations.
    pub operations: RateQuota,
}

impl Default for RateSettings {
    fn default() -> Self {
        // Providers and support staff work through lists all day: the most.
        RateSettings {
            enabled: true,
            sweep_secs: 60,
            trusted_proxy_hops: 0,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".to_string(),
            shared: true,
            shared_timeout_ms: 50,
            anonymous_per_ip: RateQuota::new(120, 60),
            patient: RateQuota::new(60, 20),
            provider: RateQuota::new(1200, 200),
            delegate: RateQuota::new(600, 100),
            medical_director: RateQuota::new(1200, 200),
            coordinator: RateQuota::new(600, 100),
            support: RateQuota::new(1200, 200),
            operations: RateQuota::new(300, 60),
        }
    }
}

impl RateSettings {
    /// The quota of a role that tokens carry (`None` for public and internal).
    pub fn for_role(&self, role: attach_actors::access::Role) -> Option<RateQuota> {
        use attach_actors::access::Role as R;
        Some(match role {
            R::Patient => self.patient,
            R::Provider => self.provider,
            R::Delegate => self.delegate,
            R::MedicalDirector => self.medical_director,
            R::Coordinator => self.coordinator,
            R::Support => self.support,
            R::Operations => self.operations,
            R::Public | R::Internal => return None,
        })
    }
}

impl Limits {
    /// The panel file limits as the parser takes them.
    pub fn panel(&self) -> attach_actors::panel::Limits {
        attach_actors::panel::Limits { max_bytes: self.max_panel_bytes, max_rows: self.max_panel_rows }
    }

    /// The largest multipart (upload) request body: the panel file and [`UPLOAD_FORM_ROOM`].
    pub fn max_upload_body_bytes(&self) -> usize {
        self.max_panel_bytes.saturating_add(UPLOAD_FORM_ROOM)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: "embedded".to_string(),
            node: None,
            data_dir: PathBuf::from("data"),
            regions: PathBuf::from("infra/regions/bc.toml"),
            demo: None,
            redis: None,
            redis_namespace: "attach".to_string(),
            store_cache_mib: 64,
            scylla: ScyllaSettings::default(),
            shard: ShardSettings::default(),
            matching: Policy::default(),
            limits: Limits::default(),
            feed: FeedSettings::default(),
            auth: AuthSettings::default(),
            cluster: ClusterSettings::default(),
            log: "info".to_string(),
            log_spans: false,
            graphiql: true,
        }
    }
}

impl Default for ShardSettings {
    fn default() -> Self {
        let d = ShardConfig::default();
        ShardSettings {
            proposal_ttl_secs: d.proposal_ttl.as_secs(),
            expiry_interval_ms: d.expiry_interval.as_millis() as u64,
            claim_grace_secs: d.claim_grace.as_secs(),
            reservation_check_secs: d.reservation_check.as_secs(),
            proposal_memory_days: d.proposal_memory.as_secs() / 86_400,
            return_window_days: d.return_window.as_secs() / 86_400,
            mailbox_capacity: d.mailbox_capacity,
            call_timeout_secs: d.call_timeout.as_secs(),
            panel_chunk_rows: d.panel_chunk_rows,
            transfer_chunk: d.transfer_chunk,
            lease_secs: attach_actors::store::DEFAULT_LEASE.as_secs(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let panel = attach_actors::panel::Limits::default();
        Limits {
            // GraphiQL's introspection query (types' fields' arguments' types, nine
            // `ofType` deep in graphql-js 17) is 15 deep: 10 refused it on load.
            max_depth: 16,
            max_complexity: 1_000,
            max_fields: 2_000,
            max_page_size: 100,
            max_body_bytes: 64 * 1024,
            max_panel_bytes: panel.max_bytes,
            max_panel_rows: panel.max_rows,
            rate: RateSettings::default(),
            subscriptions_per_principal: 64,
            socket_send_buffer_bytes: 262_144,
            header_read_secs: 30,
            body_read_secs: 30,
            max_connections: 16_384,
            websocket_origins: Vec::new(),
        }
    }
}

/// `ATTACH_*` variables that are not settings: the credentials `attach panel
/// import` and the load tool read (`ATTACH_TOKEN`, …), which an operator may
/// well have set in the shell that starts the server.
const CLIENT_VARIABLES: [&str; 3] = ["token", "panel_token", "upload_token"];

impl Settings {
    /// Loads defaults, then `file` (if given, it must exist), then `ATTACH_*`
    /// variables (other than the tools' credentials, `ATTACH_TOKEN` and the like;
    /// any other unknown one is refused).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let settings = Self::read(file)?;
        settings.check()?;
        Ok(settings)
    }

    /// [`Self::load`] without [`Self::check`], for a caller that sets more
    /// (command-line flags) before checking the whole.
    pub fn read(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            anyhow::ensure!(path.exists(), "config file {} not found", path.display());
            // A directory would be read as no file at all, and the server start on defaults.
            anyhow::ensure!(path.is_file(), "config file {} is not a file", path.display());
            if let Some(why) = need_named_twice(path) {
                anyhow::bail!("{why} (in {})", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("ATTACH_").ignore(&CLIENT_VARIABLES).split("__"));
        figment.extract().map_err(explained)
    }

    /// Refuses settings that cannot work, saying which key to fix.
    pub fn check(&self) -> anyhow::Result<()> {
        // Values that would start a server unable to do its work, while `/readyz` says ready.
        let lowest: [(&str, u64, u64, &str); 26] = [
            ("shard.mailbox_capacity", self.shard.mailbox_capacity as u64, 1, ""),
            ("limits.max_page_size", self.limits.max_page_size as u64, 1, ""),
            ("shard.lease_secs", self.shard.lease_secs, 3, ""),
            ("shard.proposal_memory_days", self.shard.proposal_memory_days, 1, ""),
            (
                "shard.reservation_check_secs",
                self.shard.reservation_check_secs,
                60,
                "step two may record for a third of it",
            ),
            ("limits.rate.shared_timeout_ms", self.limits.rate.shared_timeout_ms, 1, ""),
            ("limits.subscriptions_per_principal", self.limits.subscriptions_per_principal as u64, 1, ""),
            (
                "shard.claim_grace_secs",
                self.shard.claim_grace_secs,
                1,
                "a claim under way is told from a crash's by it",
            ),
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64, 1024, "a request must fit"),
            ("limits.header_read_secs", self.limits.header_read_secs, 1, ""),
            ("limits.body_read_secs", self.limits.body_read_secs, 1, ""),
            ("limits.max_connections", self.limits.max_connections as u64, 1, ""),
            ("limits.max_depth", self.limits.max_depth as u64, 3, "a waitlist page is 3 deep"),
            ("limits.max_complexity", self.limits.max_complexity as u64, 1, ""),
            ("limits.max_fields", self.limits.max_fields as u64, 20, "a waitlist page selects about 20"),
            ("shard.call_timeout_secs", self.shard.call_timeout_secs, 1, ""),
            ("shard.panel_chunk_rows", self.shard.panel_chunk_rows as u64, 1, ""),
            ("shard.transfer_chunk", self.shard.transfer_chunk as u64, 1, ""),
            ("shard.proposal_ttl_secs", self.shard.proposal_ttl_secs, 1, "a proposal must live to be answered"),
            ("shard.expiry_interval_ms", self.shard.expiry_interval_ms, 1, ""),
            ("feed.buffer", self.feed.buffer as u64, 1, ""),
            ("feed.keepalive_secs", self.feed.keepalive_secs, 1, ""),
            ("feed.max_subscriptions_per_connection", self.feed.max_subscriptions_per_connection as u64, 1, ""),
            ("limits.max_panel_rows", self.limits.max_panel_rows as u64, 1, "a panel file has one patient or more"),
            ("store_cache_mib", self.store_cache_mib, 1, ""),
            ("limits.max_panel_bytes", self.limits.max_panel_bytes as u64, 64, "a panel file has one row or more"),
        ];
        for (name, value, least, why) in lowest {
            let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
            anyhow::ensure!(value >= least, "{name} must be at least {least}{why}");
        }
        // Durations far beyond any use overflow when turned into times (the start would panic).
        const DAY: u64 = 24 * 60 * 60;
        let highest: [(&str, u64, u64); 22] = [
            ("limits.max_connections", self.limits.max_connections as u64, 1_000_000),
            ("limits.header_read_secs", self.limits.header_read_secs, DAY),
            ("limits.body_read_secs", self.limits.body_read_secs, DAY),
            ("limits.max_depth", self.limits.max_depth as u64, 32),
            // 1 TiB: a cache beyond the machine's memory is a typo, and redb would try to fill it.
            ("store_cache_mib", self.store_cache_mib, 1 << 20),
            ("shard.mailbox_capacity", self.shard.mailbox_capacity as u64, 1_000_000),
            ("shard.proposal_ttl_secs", self.shard.proposal_ttl_secs, 365 * DAY),
            ("shard.expiry_interval_ms", self.shard.expiry_interval_ms, DAY * 1_000),
            ("shard.claim_grace_secs", self.shard.claim_grace_secs, DAY),
            ("shard.reservation_check_secs", self.shard.reservation_check_secs, 30 * DAY),
            ("shard.proposal_memory_days", self.shard.proposal_memory_days, 3_650),
            ("shard.return_window_days", self.shard.return_window_days, 3_650),
            ("shard.call_timeout_secs", self.shard.call_timeout_secs, 3_600),
            ("shard.lease_secs", self.shard.lease_secs, 3_600),
            ("scylla.request_timeout_ms", self.scylla.request_timeout_ms, 3_600_000),
            ("feed.keepalive_secs", self.feed.keepalive_secs, DAY),
            ("auth.leeway_secs", self.auth.leeway_secs, DAY),
            ("auth.jwks_refresh_secs", self.auth.jwks_refresh_secs, 30 * DAY),
            ("auth.verified_token_secs", self.auth.verified_token_secs, DAY),
            ("auth.revoked_refresh_secs", self.auth.revoked_refresh_secs, DAY),
            ("limits.rate.sweep_secs", self.limits.rate.sweep_secs, DAY),
            ("limits.rate.shared_timeout_ms", self.limits.rate.shared_timeout_ms, 60_000),
        ];
        for (name, value, most) in highest {
            anyhow::ensure!(value <= most, "{name} must be at most {most}");
        }
        // A score is days waited plus bonuses, and must stay a GraphQL Int.
        for (need, days) in &self.matching.need_bonus_days {
            anyhow::ensure!(
                *days <= MAX_NEED_BONUS_DAYS,
                "matching.need_bonus_days.{need:?} must be at most {MAX_NEED_BONUS_DAYS} (a hundred years of waiting)"
            );
        }
        // A filter that does not parse would be half ignored, with a line on stderr.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            anyhow::bail!("log is not a log filter ({e}): for example `info` or `info,attach_actors=debug`");
        }
        anyhow::ensure!(
            !self.redis_namespace.is_empty()
                && self.redis_namespace.len() <= 40
                && self.redis_namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "redis_namespace must be 1 to 40 letters, digits, - or _"
        );
        if let Some(url) = &self.redis {
            anyhow::ensure!(
                !url.starts_with("rediss://"),
                "redis: this build has no TLS, so not rediss://: reach a TLS-only Redis through a local TLS proxy"
            );
            anyhow::ensure!(url.starts_with("redis://"), "redis must be a redis:// URL");
            // Never echoed: the URL may carry a password.
            if let Err(e) = redis::Client::open(url.as_str()) {
                anyhow::bail!("redis is not a Redis URL that can be used ({e}): redis://[:password@]host:port[/db]");
            }
        }
        anyhow::ensure!(
            self.store == "embedded" || is_scylla_uri(&self.store),
            "store must be `embedded` or scylla://HOST:9042[,HOST...]"
        );
        anyhow::ensure!(
            self.shard.return_window_days <= self.shard.proposal_memory_days,
            "shard.return_window_days must be at most shard.proposal_memory_days (the accepted proposal is found in memory)"
        );
        if let Some(node) = &self.node {
            anyhow::ensure!(is_node_name(node), "node must be {NODE_NAME_RULE}");
        }
        if let Some(options) = self.scylla_options()? {
            check_keyspace(&options.keyspace)?;
            anyhow::ensure!(
                options.request_timeout * 6 <= options.lease,
                "scylla.request_timeout_ms must be at most a sixth of shard.lease_secs"
            );
        }
        let rate = &self.limits.rate;
        let quotas = std::iter::once(("anonymous_per_ip", rate.anonymous_per_ip)).chain(
            attach_actors::access::Role::FROM_TOKENS.iter().filter_map(|r| Some((r.as_str(), rate.for_role(*r)?))),
        );
        for (name, q) in quotas {
            anyhow::ensure!(
                q.per_minute > 0 && q.burst > 0,
                "limits.rate.{name}: per_minute and burst must be at least 1 (turn limits off with limits.rate.enabled = false)"
            );
        }
        crate::client_ip::ClientIp::from_settings(rate)?;
        if !self.cluster.peer_urls()?.is_empty() {
            anyhow::ensure!(
                self.node.is_some(),
                "cluster.peers needs this node's own name in `node`, as its peers list it"
            );
            // An in-process feed carries only the events of the shards this node holds.
            anyhow::ensure!(
                self.redis.is_some(),
                "cluster.peers needs `redis`: without it a subscriber sees only the events of the shards its node holds"
            );
            // Without it no node would run a step for another: a move between two nodes' communities would stop half way.
            anyhow::ensure!(!self.cluster.secret.is_empty(), PEERS_NEED_SECRET);
        }
        self.cluster.check_secrets()?;
        let jwks = &self.auth.jwks;
        if jwks.contains("://") {
            anyhow::ensure!(
                jwks.starts_with("https://") || (jwks.starts_with("http://") && is_loopback_url(jwks)),
                "auth.jwks must be a file path or an https:// URL (plain http:// only to this machine's loopback): \
                 keys fetched over plain HTTP can be replaced on the way, and whoever does so can sign in as any role"
            );
        }
        anyhow::ensure!(
            !self.auth.issuer.is_empty() && !self.auth.audience.is_empty(),
            "auth.issuer and auth.audience must be set"
        );
        if let Some(demo) = &self.demo {
            anyhow::ensure!(matches!(demo.as_str(), "small" | "province"), "demo must be `small` or `province`");
        }
        Ok(())
    }

    /// The lease length both stores use.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.shard.lease_secs)
    }

    /// The ScyllaDB store's options, if `store` names ScyllaDB.
    pub fn scylla_options(&self) -> anyhow::Result<Option<ScyllaOptions>> {
        if !is_scylla_uri(&self.store) {
            return Ok(None);
        }
        let replication = if self.scylla.replication.is_empty() {
            ScyllaOptions::default().replication
        } else {
            self.scylla.replication.clone()
        };
        Ok(Some(ScyllaOptions {
            nodes: parse_uri(&self.store)?,
            keyspace: self.scylla.keyspace.clone(),
            replication,
            request_timeout: Duration::from_millis(self.scylla.request_timeout_ms.max(1)),
            lease: self.lease(),
        }))
    }

    /// This node's name in shard leases.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| format!("attach-{}", std::process::id()))
    }

    /// The shard settings as the actors take them.
    pub fn shard_config(&self) -> ShardConfig {
        ShardConfig {
            policy: self.matching.clone(),
            proposal_ttl: Duration::from_secs(self.shard.proposal_ttl_secs),
            expiry_interval: Duration::from_millis(self.shard.expiry_interval_ms.max(10)),
            claim_grace: Duration::from_secs(self.shard.claim_grace_secs),
            // Step two may record for a third of this after planning: never less than 20 s.
            reservation_check: Duration::from_secs(self.shard.reservation_check_secs.max(60)),
            proposal_memory: Duration::from_secs(self.shard.proposal_memory_days.max(1) * 86_400),
            return_window: Duration::from_secs(self.shard.return_window_days.saturating_mul(86_400)),
            mailbox_capacity: self.shard.mailbox_capacity,
            call_timeout: Duration::from_secs(self.shard.call_timeout_secs.max(1)),
            panel_chunk_rows: self.shard.panel_chunk_rows.max(1),
            transfer_chunk: self.shard.transfer_chunk.max(1),
            placement: attach_actors::shard::PlacementCell::new(self.placement()),
        }
    }

    /// Which node should hold each shard: with peers, this node among them.
    pub fn placement(&self) -> Option<attach_actors::shard::Placement> {
        self.cluster.placement(&self.node_name()).ok().flatten()
    }
}

/// The largest bonus a need may bring, in days.
const MAX_NEED_BONUS_DAYS: u32 = 36_500;

/// A need a configuration file's `[matching.need_bonus_days]` names twice in
/// different spellings (`pregnancy` and `PREGNANCY`): merged, one of them
/// would win by how the spellings rank, not by which was written last.
/// (The environment's spelling is always lower case, so a variable overrides
/// the file, as every other setting does.)
fn need_named_twice(path: &Path) -> Option<String> {
    use serde::Deserialize;
    let bonuses: figment::value::Dict =
        Figment::from(Toml::file(path)).extract_inner("matching.need_bonus_days").ok()?;
    let mut seen: std::collections::BTreeMap<attach_actors::domain::Need, &str> = std::collections::BTreeMap::new();
    for key in bonuses.keys() {
        let reader = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(key);
        let Ok(need) = attach_actors::domain::Need::deserialize(reader) else { continue };
        if let Some(first) = seen.insert(need, key) {
            return Some(format!(
                "matching.need_bonus_days names {need:?} twice, as `{first}` and `{key}`: give its bonus once"
            ));
        }
    }
    None
}

/// A configuration error as the operator wrote the setting: its key without
/// the configuration library's profile (`default.`), and where it came from,
/// the file, or the `ATTACH_*` variable by its name.
fn explained(error: figment::Error) -> anyhow::Error {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from = match e.metadata.as_ref() {
                Some(m) if m.name.contains("environment") => {
                    format!(" (the environment variable ATTACH_{})", key.to_ascii_uppercase().replace('.', "__"))
                }
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    _ => String::new(),
                },
                None => String::new(),
            };
            // A list in a variable is written as TOML's: ATTACH_CLUSTER__PEERS='["a=http://…"]'.
            let list = matches!(&e.kind, figment::error::Kind::InvalidType(_, expected) if expected == "a sequence")
                && from.contains("environment");
            let hint = if list { ", written as a list: '[\"first\", \"second\"]'" } else { "" };
            if key.is_empty() { format!("{}{from}{hint}", e.kind) } else { format!("{key}: {}{from}{hint}", e.kind) }
        })
        .collect();
    anyhow::anyhow!("configuration: {}", lines.join("; "))
}

/// Whether `url` names this machine: `localhost`, or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
// figment::Jail closures must return figment::Error, which is large; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("attach.toml", "listen = \"127.0.0.1:9000\"\n[shard]\nproposal_ttl_secs = 5\n")?;
            jail.set_env("ATTACH_SHARD__MAILBOX_CAPACITY", "7");
            jail.set_env("ATTACH_DEMO", "small");
            // The tools' credentials in the same shell are not settings, and do not stop a start.
            jail.set_env("ATTACH_TOKEN", "eyJ...");
            jail.set_env("ATTACH_PANEL_TOKEN", "eyJ...");
            // A need's bonus by environment (keys arrive in lower case).
            jail.set_env("ATTACH_MATCHING__NEED_BONUS_DAYS__RECENT_DISCHARGE", "45");
            let s = Settings::load(Some(Path::new("attach.toml"))).map_err(|e| e.to_string())?;
            let bonus = |n| s.matching.need_bonus_days.get(&n).copied();
            use attach_actors::domain::Need;
            assert_eq!(
                (bonus(Need::RecentDischarge), bonus(Need::Pregnancy)),
                (Some(45), Some(90)),
                "one changed, the rest kept"
            );
            // In a file, a need named as the API does (which sorts before the
            // default's spelling) or as the enum is.
            jail.create_file("needs.toml", "[matching.need_bonus_days]\nPREGNANCY = 1000\nFrailty = 7\n")?;
            let needs = Settings::load(Some(Path::new("needs.toml"))).map_err(|e| e.to_string())?;
            let bonus = |n| needs.matching.need_bonus_days.get(&n).copied();
            assert_eq!(
                (bonus(Need::Pregnancy), bonus(Need::Frailty), bonus(Need::Newborn)),
                (Some(1000), Some(7), Some(120))
            );
            // The environment overrides a file, whichever spelling the file used.
            jail.set_env("ATTACH_MATCHING__NEED_BONUS_DAYS__PREGNANCY", "7");
            let both = Settings::load(Some(Path::new("needs.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(both.matching.need_bonus_days.get(&Need::Pregnancy), Some(&7));
            // One need named twice in a file is refused, whichever spelling comes first.
            jail.create_file("twice.toml", "[matching.need_bonus_days]\nPregnancy = 5\nPREGNANCY = 901\n")?;
            let twice = Settings::load(Some(Path::new("twice.toml"))).unwrap_err().to_string();
            assert!(twice.contains("names Pregnancy twice") && twice.contains("twice.toml"), "{twice}");
            // A bonus far beyond any wait would carry a score past a GraphQL Int.
            jail.set_env("ATTACH_MATCHING__NEED_BONUS_DAYS__FRAILTY", "4000000000");
            let huge = Settings::load(None).unwrap_err().to_string();
            assert!(huge.contains("need_bonus_days.Frailty must be at most 36500"), "{huge}");
            jail.set_env("ATTACH_MATCHING__NEED_BONUS_DAYS__FRAILTY", "7");
            // A misspelt matching key stops the start, as in every other section.
            jail.create_file("typo.toml", "[matching]\nspill_kms = 50\n")?;
            let typo = Settings::load(Some(Path::new("typo.toml"))).unwrap_err().to_string();
            assert!(typo.contains("spill_kms"), "{typo}");
            assert_eq!(s.listen.port(), 9000);
            assert_eq!(s.shard.proposal_ttl_secs, 5);
            assert_eq!(s.shard.mailbox_capacity, 7);
            assert_eq!(s.demo.as_deref(), Some("small"));
            Ok(())
        });
    }

    #[test]
    fn cluster_peers_come_from_the_environment_as_the_compose_file_sets_them() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ATTACH_NODE", "attach-1");
            jail.set_env("ATTACH_REDIS", "redis://redis:6379");
            jail.set_env("ATTACH_CLUSTER__PEERS", r#"["attach-2=http://attach-2:8080"]"#);
            jail.set_env("ATTACH_CLUSTER__SECRET", "s3-secret-0123456789abcdef-0123456");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            let peers = s.cluster.peer_urls().map_err(|e| e.to_string())?;
            assert_eq!(peers, [("attach-2".to_string(), "http://attach-2:8080".to_string())]);
            let placement = s.placement().expect("peers give a placement");
            let shard = attach_actors::domain::ShardKey::parse("IHA/111").unwrap();
            assert!(["attach-1", "attach-2"].contains(&placement.preferred(&shard)));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("ATTACH_CLUSTER__PEERS", r#"["attach-2=http://attach-2:8080"]"#);
            let e = Settings::load(None).unwrap_err().to_string();
            assert!(e.contains("`node`"), "peers without this node's name: {e}");
            jail.set_env("ATTACH_NODE", "attach-1");
            let e = Settings::load(None).unwrap_err().to_string();
            assert!(e.contains("`redis`"), "peers without a shared feed: {e}");
            jail.set_env("ATTACH_REDIS", "redis://redis:6379");
            let e = Settings::load(None).unwrap_err().to_string();
            assert!(e.contains("`cluster.secret`"), "peers without the cluster's secret: {e}");
            // A list written as a plain string: the message says how to write one.
            jail.set_env("ATTACH_CLUSTER__PEERS", "attach-2=http://attach-2:8080");
            let e = Settings::load(None).unwrap_err().to_string();
            assert!(e.contains("ATTACH_CLUSTER__PEERS") && e.contains(r#"'["first", "second"]'"#), "{e}");
            Ok(())
        });
    }

    #[test]
    fn peers_that_cannot_be_right_are_refused_and_a_nodes_own_name_is_left_out() {
        let cluster = |peers: &[&str]| ClusterSettings {
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let refused = |peers: &[&str], why: &str| {
            let e = cluster(peers).peer_urls().unwrap_err().to_string();
            assert!(e.contains(why), "{peers:?}: {e}");
        };
        refused(&["b=http://h:1", "b=http://h:2"], "listed twice");
        refused(&["b=http://h:1/graphql"], "no path");
        refused(&["b=http://h:1?x=1"], "no path");
        refused(&["b=http://exa mple:80"], "does not parse");
        refused(&["node b=http://h:1"], "not a node name");
        refused(&["b=http://user:hunter2@h:1"], "no path or credentials");
        refused(&["http://user:hunter2@h:1"], "entry 1 is not");
        let e = cluster(&["b=http://user:hunter2@h:1"]).peer_urls().unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "a password is never echoed: {e}");
        let same_list = cluster(&["a=http://10.0.0.1:8080", "b=http://10.0.0.2:8080/"]);
        assert_eq!(same_list.others("a").unwrap(), [("b".to_string(), "http://10.0.0.2:8080".to_string())]);
        assert_eq!(same_list.peer_urls().unwrap().len(), 2);
    }

    #[test]
    fn short_cluster_secrets_and_redis_urls_this_build_cannot_use_are_refused() {
        let short = ClusterSettings { secret: "k".into(), ..Default::default() };
        assert!(short.check_secrets().unwrap_err().to_string().contains("at least 32 bytes"));
        let accepted =
            ClusterSettings { secret: "x".repeat(32), accept_secrets: vec!["old".into()], ..Default::default() };
        assert!(accepted.check_secrets().is_err(), "an accepted secret is held to it too");
        assert!(ClusterSettings { secret: "x".repeat(32), ..Default::default() }.check_secrets().is_ok());
        let with_redis = |url: &str| Settings { redis: Some(url.to_string()), ..Settings::default() }.check();
        assert!(with_redis("redis://127.0.0.1:6379").is_ok());
        assert!(with_redis("redis://:pw@127.0.0.1:6379/2").is_ok());
        let tls = with_redis("rediss://cache.example:6380").unwrap_err().to_string();
        assert!(tls.starts_with("redis:") && tls.contains("no TLS"), "{tls}");
        assert_eq!(with_redis("http://cache:6379").unwrap_err().to_string(), "redis must be a redis:// URL");
        let port = with_redis("redis://:hunter2@127.0.0.1:notaport").unwrap_err().to_string();
        assert!(port.starts_with("redis is not") && !port.contains("hunter2"), "named, and no password echoed: {port}");
    }

    #[test]
    fn a_jwks_url_is_https_or_this_machines_loopback() {
        let with = |jwks: &str| Settings {
            auth: AuthSettings { jwks: jwks.into(), ..Settings::default().auth },
            ..Settings::default()
        };
        for ok in [
            "https://idp.example/certs",
            "http://127.0.0.1:8081/certs",
            "http://localhost/certs",
            "http://[::1]:9/k",
            "keys/jwks.json",
        ] {
            assert!(with(ok).check().is_ok(), "{ok}");
        }
        for bad in
            ["http://idp.example/certs", "http://10.0.0.8/certs", "ftp://idp/certs", "http://127.0.0.1.evil.example/k"]
        {
            let e = with(bad).check().unwrap_err().to_string();
            assert!(e.contains("auth.jwks"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_beyond_any_use_and_a_config_that_is_not_a_file_are_refused() {
        let mut s = Settings::default();
        s.shard.proposal_memory_days = u64::MAX;
        assert!(s.check().unwrap_err().to_string().contains("shard.proposal_memory_days must be at most"));
        let mut s = Settings::default();
        s.shard.call_timeout_secs = u64::MAX;
        assert!(s.check().is_err());
        assert!(Settings::default().check().is_ok(), "the defaults are within every bound");
        // Limits no input can meet, and a cache no machine has.
        let mut s = Settings::default();
        s.limits.max_panel_rows = 0;
        assert!(s.check().unwrap_err().to_string().contains("limits.max_panel_rows must be at least 1"));
        let mut s = Settings::default();
        s.limits.max_panel_bytes = 0;
        assert!(s.check().unwrap_err().to_string().contains("limits.max_panel_bytes must be at least"));
        let s = Settings { store_cache_mib: 100_000_000, ..Settings::default() };
        assert!(s.check().unwrap_err().to_string().contains("store_cache_mib must be at most"));
        let dir = tempfile::tempdir().unwrap();
        let e = Settings::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("is not a file"), "{e}");
    }

    #[test]
    fn a_scylla_store_comes_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "attach.toml",
                "store = \"scylla://db1,db2:19042\"\nnode = \"attach-1\"\n[scylla.replication]\ndc_east = 3\n",
            )?;
            jail.set_env("ATTACH_SCYLLA__KEYSPACE", "attach_prod");
            let s = Settings::load(Some(Path::new("attach.toml"))).map_err(|e| e.to_string())?;
            let o = s.scylla_options().map_err(|e| e.to_string())?.expect("the store is ScyllaDB");
            assert_eq!(o.nodes, ["db1:9042", "db2:19042"]);
            assert_eq!(o.keyspace, "attach_prod");
            assert_eq!(o.replication, BTreeMap::from([("dc_east".to_string(), 3)]));
            assert_eq!(o.lease, Duration::from_secs(15));
            assert_eq!(s.node_name(), "attach-1");
            assert_eq!(Settings::default().scylla_options().map_err(|e| e.to_string())?, None);
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/attach.example.toml");
        figment::Jail::expect_with(|_| {
            assert_eq!(Settings::load(Some(&path)).map_err(|e| e.to_string())?, Settings::default());
            Ok(())
        });
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            let unknown = Settings::load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(
                unknown.contains("lisen") && unknown.contains("bad.toml") && !unknown.contains("default."),
                "{unknown}"
            );
            jail.set_env("ATTACH_LISTEN", "notanaddress");
            let env = Settings::load(None).unwrap_err().to_string();
            assert!(env.contains("ATTACH_LISTEN"), "the variable is named: {env}");
            jail.clear_env();
            jail.create_file("demo.toml", "demo = \"huge\"\n")?;
            jail.create_file("store.toml", "store = \"cassandra://db:9042\"\n")?;
            assert!(Settings::load(Some(Path::new("store.toml"))).is_err());
            jail.create_file("ks.toml", "store = \"scylla://db\"\n[scylla]\nkeyspace = \"Bad-Name\"\n")?;
            assert!(Settings::load(Some(Path::new("ks.toml"))).is_err());
            jail.create_file("slow.toml", "store = \"scylla://db\"\n[scylla]\nrequest_timeout_ms = 5000\n")?;
            assert!(Settings::load(Some(Path::new("slow.toml"))).is_err(), "a timeout too long for the lease");
            assert!(Settings::load(Some(Path::new("demo.toml"))).is_err());
            assert!(Settings::load(Some(Path::new("missing.toml"))).is_err());
            for bounds in [
                "[shard]\nproposal_memory_days = 0\n",
                "[shard]\nreservation_check_secs = 59\n",
                "[shard]\nproposal_memory_days = 30\nreturn_window_days = 31\n",
            ] {
                jail.create_file("bounds.toml", bounds)?;
                let refused = Settings::load(Some(Path::new("bounds.toml"))).unwrap_err().to_string();
                assert!(refused.contains("shard."), "{bounds}: {refused}");
            }
            // Settings that would leave a server ready but unable to serve.
            for (setting, name) in [
                ("[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes"),
                ("[limits]\nmax_depth = 0\n", "limits.max_depth"),
                ("[shard]\nproposal_ttl_secs = 0\n", "shard.proposal_ttl_secs"),
                ("[shard]\ntransfer_chunk = 0\n", "shard.transfer_chunk"),
                ("[feed]\nbuffer = 0\n", "feed.buffer"),
                ("[shard]\nclaim_grace_secs = 0\n", "shard.claim_grace_secs"),
                ("[limits]\nmax_fields = 5\n", "limits.max_fields"),
                ("log = \"nonsense[[\"\n", "log is not a log filter"),
            ] {
                jail.create_file("zero.toml", setting)?;
                let refused = Settings::load(Some(Path::new("zero.toml"))).unwrap_err().to_string();
                assert!(refused.contains(name), "{setting}: {refused}");
            }
            Ok(())
        });
    }
}

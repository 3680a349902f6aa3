//! Requests for a shard another node holds, sent on to that node once.
//!
//! Nodes sharing one store each hold some shards' leases (DECISIONS 15). A
//! request that reaches a node without the shard's actor fails there with
//! `SHARD_UNAVAILABLE`, marked with the shard it wanted (`notHere`). Before
//! answering, the gateway asks the store who holds that shard's lease; if it
//! is a peer named in `cluster.peers`, the request's body and credentials go
//! to that peer, and the peer's answer is the answer.
//!
//! Only when nothing was done here: every top-level field of the response is
//! null and every shard it wanted is held by that one peer, so a mutation is
//! never applied twice. A forwarded request carries `x-attach-forwarded-by`
//! and is never forwarded again. With the cluster's shared secret it is not
//! rate limited again either: the first node counted it.
//!
//! A request whose top-level fields want shards on several nodes cannot go
//! whole to one. Its fields answered here stay, and each peer holding a shard
//! a failed field wanted is sent the same request with every other top-level
//! field skipped (`@skip(if: true)`); those fields are taken from its answer
//! ([`Forwarder::complete_from_peers`]). A field that failed here for a shard
//! it does not run did nothing here, so running it there does it once; each
//! node audits what it answers. A mutation is completed only that way; a
//! query whose text cannot be marked so is sent whole (it changes nothing).
//!
//! A node that starts also asks its peers, here, to hand back the shards the
//! placement gives it ([`Forwarder::ask_hand_back`]; `attach_actors::shard::placement`).
//!
//! And a request that needs a second shard another node holds (a move's
//! community joined, a health authority's statistics) has that step run there:
//! the forwarder carries the system's encoded [`ShardCall`](attach_actors::system::ShardCall)
//! to the holder's `POST /cluster/call` ([`Peers`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_graphql::{PathSegment, Value};
use attach_actors::domain::ShardKey;
use attach_actors::error::{AttachError, ErrorCode};
use attach_actors::system::{AttachSystem, Peers};
use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use tracing::warn;

use crate::config::ClusterSettings;

/// Names the node that forwarded a request.
pub const FORWARDED_BY: &str = "x-attach-forwarded-by";
/// The cluster's shared secret, on a forwarded request.
pub const CLUSTER_SECRET: &str = "x-attach-cluster-secret";
/// The extension marking an error for a shard this node does not run.
pub const NOT_HERE: &str = "notHere";
/// Where a peer asks this node to hand back its shards (with the cluster's secret).
pub const HAND_BACK_PATH: &str = "/cluster/hand-back";
/// Where a peer asks this node to run a step on one of its shards (with the cluster's secret).
pub const CALL_PATH: &str = "/cluster/call";

/// Headers a forwarded request keeps (and its trace context, [`with_trace`]).
const KEPT: [header::HeaderName; 3] = [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT];

/// Adds the current span's trace context to a request to a peer, so the
/// peer's spans join this node's trace; without span export, passes on the
/// caller's `traceparent`, if any.
fn with_trace(mut request: reqwest::RequestBuilder, incoming: Option<&HeaderMap>) -> reqwest::RequestBuilder {
    let trace = crate::telemetry::trace_headers();
    if trace.is_empty() {
        if let Some(parent) = incoming.and_then(|h| h.get("traceparent")) {
            request = request.header("traceparent", parent);
        }
        return request;
    }
    for (name, value) in trace {
        request = request.header(name, value);
    }
    request
}

/// Where this node sends requests for shards its peers hold.
pub struct Forwarder {
    me: String,
    /// Node name → its base URL.
    /// Replaced whole when the cluster's node list changes ([`Forwarder::set_peers`]).
    peers: std::sync::RwLock<HashMap<String, String>>,
    secrets: Arc<ClusterSecrets>,
    client: reqwest::Client,
    forwarded: AtomicU64,
    /// Steps asked of peers' shards, and run here for peers.
    calls_sent: AtomicU64,
    calls_served: AtomicU64,
    /// Who held each shard when last asked, and when: the store is asked at
    /// most once per [`OWNER_TTL`] per shard (on ScyllaDB, a serial read).
    owners: std::sync::Mutex<HashMap<ShardKey, (String, Instant)>>,
}

/// The secrets nodes prove themselves to each other with: the one this node
/// sends (`cluster.secret`) and every one it accepts (that one and
/// `cluster.accept_secrets`). Replaced whole when the settings are read again
/// (SIGHUP), so the secret can change while the cluster runs.
#[derive(Debug, Default)]
pub struct ClusterSecrets(std::sync::RwLock<Secrets>);

#[derive(Debug, Default, Clone)]
struct Secrets {
    sent: Option<String>,
    accepted: Vec<String>,
}

impl ClusterSecrets {
    /// The secrets `cluster` names.
    pub fn new(cluster: &ClusterSettings) -> Self {
        let this = ClusterSecrets::default();
        this.set(cluster);
        this
    }

    /// Goes by the secrets `cluster` names from now on; whether they changed.
    pub fn set(&self, cluster: &ClusterSettings) -> bool {
        let sent = Some(cluster.secret.clone()).filter(|s| !s.is_empty());
        let mut accepted: Vec<String> = sent.iter().chain(&cluster.accept_secrets).cloned().collect();
        accepted.retain(|s| !s.is_empty());
        let mut now = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = now.sent != sent || now.accepted != accepted;
        *now = Secrets { sent, accepted };
        changed
    }

    /// The secret sent to peers, if there is one.
    fn sent(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).sent.clone()
    }

    /// Whether `headers` carry a secret this node accepts (never, when none is configured).
    pub fn carried_by(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(CLUSTER_SECRET) else { return false };
        let now = self.0.read().unwrap_or_else(|e| e.into_inner());
        // Every accepted secret is compared, so the time taken does not say which matched.
        now.accepted.iter().fold(false, |any, s| constant_time_eq(given.as_bytes(), s.as_bytes()) | any)
    }

    /// Whether `headers` come from a peer that forwarded the request with an accepted secret.
    pub fn trust_hop(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(FORWARDED_BY) && self.carried_by(headers)
    }
}

/// How long an answer to "who holds this shard" is reused. A lease changes
/// hands rarely; a request sent to a node that just lost the shard gets
/// `SHARD_UNAVAILABLE` there (it is not forwarded twice), and the caller retries.
const OWNER_TTL: Duration = Duration::from_secs(1);

impl Forwarder {
    /// The forwarder `cluster` describes for node `me`, proving itself to
    /// peers with `secrets`. Without peers it forwards nothing, until the node
    /// list gives it some ([`Forwarder::set_peers`]).
    pub fn from_settings(
        me: &str,
        cluster: &ClusterSettings,
        secrets: Arc<ClusterSecrets>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let peers: HashMap<_, _> = cluster.others(me)?.into_iter().collect();
        // A peer closes a connection idle for `limits.header_read_secs` (30 s by
        // default): let the pool drop it first, so no request meets a closing one.
        let client = reqwest::Client::builder().timeout(timeout).pool_idle_timeout(Duration::from_secs(10)).build()?;
        Ok(Forwarder {
            me: me.to_string(),
            peers: std::sync::RwLock::new(peers),
            secrets,
            client,
            forwarded: AtomicU64::new(0),
            calls_sent: AtomicU64::new(0),
            calls_served: AtomicU64::new(0),
            owners: Default::default(),
        })
    }

    /// How many peers this node has now (its own name, if listed, left out).
    pub fn peer_count(&self) -> usize {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether this node has peers now.
    pub fn has_peers(&self) -> bool {
        !self.peers.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Replaces the peers with those `cluster` names (the node list changed
    /// while this node runs), and forgets who held which shard.
    pub fn set_peers(&self, cluster: &ClusterSettings) -> anyhow::Result<()> {
        let peers: HashMap<_, _> = cluster.others(&self.me)?.into_iter().collect();
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    /// A peer's base URL, if `node` is a peer.
    fn peer_url(&self, node: &str) -> Option<String> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(node).cloned()
    }

    /// Requests sent on to a peer so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Steps asked of peers' shards so far, and steps run here for peers.
    pub fn calls(&self) -> (u64, u64) {
        (self.calls_sent.load(Ordering::Relaxed), self.calls_served.load(Ordering::Relaxed))
    }

    /// Counts a step run here for a peer.
    pub fn served_call(&self) {
        self.calls_served.fetch_add(1, Ordering::Relaxed);
    }

    /// A POST to a peer, with the cluster's secret when there is one.
    fn to_peer(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.post(url);
        match self.secrets.sent() {
            Some(secret) => request.header(CLUSTER_SECRET, secret),
            None => request,
        }
    }

    /// Asks every peer to hand back the shards this node should hold (it has
    /// just started; they stood in for it). Best effort: a peer that does not
    /// answer keeps them until its lease on them is released or runs out.
    /// Answers the peers that answered (they are up, and know this node),
    /// each with how many shards it handed back.
    pub async fn ask_hand_back(&self) -> Vec<(String, usize)> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut answered = Vec::new();
        for (name, base) in &peers {
            let request =
                self.to_peer(&format!("{base}{HAND_BACK_PATH}")).json(&serde_json::json!({ "node": self.me }));
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let handed = body["handedBack"].as_u64().map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
                    tracing::info!(peer = %name, handed, "asked the peer to hand back this node's shards");
                    answered.push((name.clone(), handed));
                }
                Ok(r) => warn!(peer = %name, status = %r.status(), "a peer refused to hand back shards"),
                Err(e) => warn!(peer = %name, error = %e, "could not reach a peer to ask for this node's shards"),
            }
        }
        answered
    }

    /// Whether `node` is one of the peers.
    pub fn knows(&self, node: &str) -> bool {
        self.peer_url(node).is_some()
    }

    /// The GraphQL endpoint of the peer to send this request to, if it should
    /// go: it was not forwarded already, nothing in `response` was done here,
    /// and the one node holding every shard it wanted is a peer.
    pub async fn target(
        &self,
        system: &AttachSystem,
        headers: &HeaderMap,
        response: &async_graphql::Response,
    ) -> Option<String> {
        if headers.contains_key(FORWARDED_BY) {
            return None;
        }
        let shards = wanted(response);
        if shards.is_empty() || !nothing_done(response) {
            return None;
        }
        let mut owner = None;
        for shard in &shards {
            let holder = self.owner(system, shard).await?;
            if holder == self.me || owner.as_ref().is_some_and(|o| o != &holder) {
                return None;
            }
            owner = Some(holder);
        }
        self.peer_url(&owner?).map(|base| format!("{base}/graphql"))
    }

    /// Who holds `shard`, from the store or from an answer less than [`OWNER_TTL`] old.
    async fn owner(&self, system: &AttachSystem, shard: &ShardKey) -> Option<String> {
        let lock = || self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((owner, at)) = lock().get(shard)
            && at.elapsed() < OWNER_TTL
        {
            return Some(owner.clone());
        }
        let owner = system.shard_owner(shard).await?;
        lock().insert(shard.clone(), (owner.clone(), Instant::now()));
        Some(owner)
    }

    /// Completes the top-level fields of a request that failed here for
    /// shards peers hold (see the module docs): each such peer is sent the
    /// request with the other top-level fields skipped, and those fields' data
    /// and errors are taken from its answer. A peer that cannot be reached
    /// leaves its fields as they were (`SHARD_UNAVAILABLE`). `mutation` says
    /// the request changes things ([`is_query`] tells): it is then sent only
    /// with the other fields skipped, never whole.
    pub async fn complete_from_peers(
        &self,
        system: &AttachSystem,
        headers: &HeaderMap,
        body: &Bytes,
        response: &mut async_graphql::Response,
        mutation: bool,
    ) {
        if headers.contains_key(FORWARDED_BY) {
            return;
        }
        let mut by_peer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for error in &response.errors {
            let (Some(shard), Some(PathSegment::Field(key))) = (not_here(error), error.path.first()) else { continue };
            if let Some(owner) = self.owner(system, &shard).await
                && owner != self.me
                && let Some(base) = self.peer_url(&owner)
            {
                by_peer.entry(base).or_default().insert(key.clone());
            }
        }
        let mut taken = false;
        for (base, keys) in by_peer {
            let endpoint = format!("{base}/graphql");
            let marked = match only_fields(body, &keys) {
                Some(marked) => marked,
                None if mutation => continue,
                None => body.clone(),
            };
            let bytes = match self.post_graphql(&endpoint, headers, marked).await {
                Ok(bytes) => bytes,
                // Its fields keep saying their shard was not reachable; a mutation's that may
                // have run there say so, and to check before trying again.
                Err(Unanswered::MaybeRan) if mutation => {
                    let lost = lost_answer(response, "did not answer in time");
                    swap_errors(response, &keys, lost.errors);
                    continue;
                }
                Err(_) => continue,
            };
            match serde_json::from_slice::<PeerAnswer>(&bytes) {
                Ok(answer) => {
                    take_fields(response, &keys, answer);
                    taken = true;
                }
                Err(e) => warn!(error = %e, endpoint, "a peer's answer was not a GraphQL response"),
            }
        }
        if taken {
            in_query_order(response, body);
        }
    }

    /// Completes `response`, the answer to the request `body` as run here, from
    /// the peers (over HTTP or a WebSocket alike): the whole request is answered
    /// by the peer holding its shard when nothing ran here ([`target`](Self::target)),
    /// and otherwise each field wanting a peer's shard is run there
    /// ([`complete_from_peers`](Self::complete_from_peers)). A mutation sent whole
    /// whose answer was lost may have run there: it is not sent again, and its
    /// fields say to check before retrying.
    pub async fn complete(
        &self,
        system: &AttachSystem,
        headers: &HeaderMap,
        body: &Bytes,
        response: &mut async_graphql::Response,
        mutation: bool,
    ) {
        if let Some(endpoint) = self.target(system, headers, response).await {
            match self.post_graphql(&endpoint, headers, body.clone()).await {
                Ok(bytes) => {
                    *response = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                        warn!(error = %e, endpoint, "a peer's answer was not a GraphQL response");
                        lost_answer(response, "answered with something that is not GraphQL")
                    });
                    return;
                }
                Err(Unanswered::MaybeRan) if mutation => {
                    *response = lost_answer(response, "did not answer in time");
                    return;
                }
                // Nothing ran there, or a read: what the peers can still answer.
                Err(_) => {}
            }
        }
        self.complete_from_peers(system, headers, body, response, mutation).await;
    }

    /// Posts a GraphQL request on to a peer, marked as forwarded, with the
    /// caller's credentials; answers the peer's body.
    async fn post_graphql(&self, endpoint: &str, headers: &HeaderMap, body: Bytes) -> Result<Bytes, Unanswered> {
        let mut request = self.to_peer(endpoint).body(body).header(FORWARDED_BY, &self.me);
        // A request from a socket has no headers but its credential: its body is JSON.
        if !headers.contains_key(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for name in &KEPT {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        request = with_trace(request, Some(headers));
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                warn!(error = %e, endpoint, "could not forward a request to the node holding its shard");
                return Err(if e.is_connect() { Unanswered::NotSent } else { Unanswered::MaybeRan });
            }
        };
        let bytes = match answer.bytes().await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, endpoint, "the node holding a shard did not finish its answer");
                return Err(Unanswered::MaybeRan);
            }
        };
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// Why a request sent on to a peer has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unanswered {
    /// It never reached the peer (no connection): nothing ran there.
    NotSent,
    /// It may have run there: the answer timed out or was cut off.
    MaybeRan,
}

/// `response`'s errors for the fields a peer was asked for, saying its answer
/// was lost (`why`) and that a change may have been made: the client checks
/// before it retries, since the request is not sent again.
fn lost_answer(response: &async_graphql::Response, why: &str) -> async_graphql::Response {
    let errors = response
        .errors
        .iter()
        .map(|e| match not_here(e) {
            Some(shard) => {
                let message = format!(
                    "the node holding community {} {why}; the request may have been carried out there: \
                     check before trying again",
                    shard.community.as_str()
                );
                let mut lost = async_graphql::ServerError::new(message, e.locations.first().copied());
                lost.path = e.path.clone();
                lost.extensions = e.extensions.clone();
                lost
            }
            None => e.clone(),
        })
        .collect();
    async_graphql::Response::from_errors(errors)
}

/// A peer's GraphQL response, as far as completing a query needs it.
#[derive(serde::Deserialize)]
struct PeerAnswer {
    /// async-graphql's value keeps an object's keys in order, where serde_json's would sort them.
    #[serde(default)]
    data: Value,
    #[serde(default)]
    errors: Vec<async_graphql::ServerError>,
}

/// Replaces the top-level fields `keys` of `response` (their data and errors) with the peer's.
fn take_fields(response: &mut async_graphql::Response, keys: &BTreeSet<String>, mut answer: PeerAnswer) {
    // Every field failed here (for shards on two peers, say): the peers' answers are the data.
    if response.data == Value::Null {
        response.data = Value::Object(Default::default());
    }
    if let Value::Object(fields) = &mut response.data {
        for key in keys {
            let taken = match &mut answer.data {
                Value::Object(data) => data.shift_remove(key.as_str()),
                _ => None,
            };
            fields.insert(async_graphql::Name::new(key), taken.unwrap_or(Value::Null));
        }
    }
    swap_errors(response, keys, answer.errors);
}

/// Replaces `response`'s errors under the top-level fields `keys` with those of `theirs` under them.
fn swap_errors(
    response: &mut async_graphql::Response,
    keys: &BTreeSet<String>,
    theirs: Vec<async_graphql::ServerError>,
) {
    let ours =
        |e: &async_graphql::ServerError| matches!(e.path.first(), Some(PathSegment::Field(k)) if keys.contains(k));
    response.errors.retain(|e| !ours(e));
    response.errors.extend(theirs.into_iter().filter(|e| ours(e)));
}

/// Puts the top-level fields of `response` in the order the request's
/// operation selects them, as GraphQL orders a response: fields taken from
/// peers were added after those answered here. Keys the operation does not
/// name (none, unless the text cannot be read) stay at the end.
fn in_query_order(response: &mut async_graphql::Response, body: &[u8]) {
    if let Some(order) = response_keys(body) {
        put_in_order(response, order.iter().map(String::as_str));
    }
}

/// Puts the top-level fields of `response` in `order`; keys it does not name stay at the end.
pub fn put_in_order<'a>(response: &mut async_graphql::Response, order: impl Iterator<Item = &'a str> + Clone) {
    let Value::Object(fields) = &mut response.data else { return };
    if fields.keys().map(|k| k.as_str()).eq(order.clone()) {
        return;
    }
    let mut rest = std::mem::take(fields);
    for key in order {
        if let Some((name, value)) = rest.shift_remove_entry(key) {
            fields.insert(name, value);
        }
    }
    fields.extend(rest);
}

/// The top-level fields of a query, as (response key, field name), in the
/// order it selects them, fragments followed; `None` for a mutation or a
/// subscription, or anything that cannot be read.
///
/// Two uses: async-graphql resolves a query's top-level fields at once and
/// adds each to the response as it finishes, so a field that waits on a shard
/// can come out after one selected later, while GraphQL orders a response as
/// the query selects ([`put_in_order`]; mutations run one field after another,
/// in order, and nested objects here resolve serially). And it leaves a field
/// that failed out of `data`, where GraphQL gives null
/// ([`null_failed`](crate::graphql::failed::null_failed)).
pub fn query_fields(request: &mut async_graphql::Request) -> Option<Vec<(String, String)>> {
    use async_graphql::parser::types::OperationType;
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    let operation = operation(document, name.as_deref())?;
    if operation.node.ty != OperationType::Query {
        return None;
    }
    let mut fields = Vec::new();
    collect_fields(document, &operation.node.selection_set.node, 0, &mut fields);
    Some(fields)
}

/// The query text and operation name of the JSON request `body` (none for a
/// body that is not one, such as a multipart upload).
pub fn query_text(body: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Text {
        query: String,
        #[serde(default, rename = "operationName")]
        operation_name: Option<String>,
    }
    let text: Text = serde_json::from_slice(body).ok()?;
    Some((text.query, text.operation_name))
}

/// The response keys of the top-level selection of the JSON request `body`'s
/// operation, in order, fragments followed where they are spread.
fn response_keys(body: &[u8]) -> Option<Vec<String>> {
    let (query, name) = query_text(body)?;
    let document = crate::graphql::nesting::parse(&query)?;
    let operation = operation(&document, name.as_deref())?;
    let mut keys = Vec::new();
    // Best effort: keys past a fragment that cannot be followed stay at the end.
    collect_keys(&document, &operation.node.selection_set.node, 0, &mut keys);
    Some(keys)
}

/// Appends the response keys `set` selects, in order, fragments followed where
/// they are spread. False when a fragment is missing or spread too deep to
/// follow (validation refuses cycles, but this runs on any text).
fn collect_keys(
    document: &async_graphql::parser::types::ExecutableDocument,
    set: &async_graphql::parser::types::SelectionSet,
    depth: usize,
    keys: &mut Vec<String>,
) -> bool {
    let mut fields = Vec::new();
    let whole = collect_fields(document, set, depth, &mut fields);
    keys.extend(fields.into_iter().map(|(key, _)| key));
    whole
}

/// [`collect_keys`], with each key's field name: (response key, field name).
fn collect_fields(
    document: &async_graphql::parser::types::ExecutableDocument,
    set: &async_graphql::parser::types::SelectionSet,
    depth: usize,
    fields: &mut Vec<(String, String)>,
) -> bool {
    use async_graphql::parser::types::Selection;
    set.items.iter().all(|selection| match &selection.node {
        Selection::Field(f) => {
            let key = f.node.response_key().node.as_str();
            if !fields.iter().any(|(k, _)| k == key) {
                fields.push((key.to_string(), f.node.name.node.to_string()));
            }
            true
        }
        Selection::InlineFragment(i) => collect_fields(document, &i.node.selection_set.node, depth, fields),
        Selection::FragmentSpread(s) => {
            depth < 16
                && document
                    .fragments
                    .get(&s.node.fragment_name.node)
                    .is_some_and(|f| collect_fields(document, &f.node.selection_set.node, depth + 1, fields))
        }
    })
}

/// Whether a top-level fragment selecting `set` is to be skipped on a peer
/// asked for `keep`: `Some(true)` when it selects none of them, `Some(false)`
/// when it selects only them, `None` when it selects both or cannot be followed.
fn skip_whole(
    document: &async_graphql::parser::types::ExecutableDocument,
    set: &async_graphql::parser::types::SelectionSet,
    keep: &BTreeSet<String>,
) -> Option<bool> {
    let mut keys = Vec::new();
    if !collect_keys(document, set, 0, &mut keys) {
        return None;
    }
    let kept = keys.iter().filter(|k| keep.contains(*k)).count();
    match kept {
        0 => Some(true),
        n if n == keys.len() => Some(false),
        _ => None,
    }
}

/// The JSON request `body` with every top-level selection of its operation
/// but those answering to `keep` marked `@skip(if: true)`, so a peer runs only
/// those: a field, or a fragment (spread or inline) selecting none of them. A
/// top-level fragment selecting both kept fields and others has its own
/// fields marked the same way, inside it (a spread's in the fragment's
/// definition, which only top-level spreads of this operation use alike).
/// `None` when that cannot be written safely: the body is not a JSON request
/// (an upload), the operation is not found, a fragment cannot be followed, or
/// a selection to skip already carries `@skip` (one that carries `@include`
/// gets `@skip` beside it, which wins) or is a field without a selection set.
fn only_fields(body: &[u8], keep: &BTreeSet<String>) -> Option<Bytes> {
    let mut request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let query = request.get("query")?.as_str()?.to_string();
    let name = request.get("operationName").and_then(serde_json::Value::as_str);
    let document = crate::graphql::nesting::parse(&query)?;
    let operation = operation(&document, name)?;
    let mut marking = Marking { document: &document, query: &query, keep, marks: Vec::new(), entered: Vec::new() };
    marking.mark(&operation.node.selection_set.node, 0)?;
    let mut marks = marking.marks;
    let mut text = query.clone();
    marks.sort_unstable();
    marks.dedup();
    for (at, mark) in marks.into_iter().rev() {
        text.insert_str(at, mark);
    }
    request["query"] = serde_json::Value::String(text);
    serde_json::to_vec(&request).ok().map(Bytes::from)
}

/// Where [`only_fields`] puts its `@skip` marks, as it walks the top of an operation.
struct Marking<'a> {
    document: &'a async_graphql::parser::types::ExecutableDocument,
    query: &'a str,
    keep: &'a BTreeSet<String>,
    /// (byte offset, text to insert there).
    marks: Vec<(usize, &'static str)>,
    /// Fragments whose fields were marked one by one, so each is marked once.
    entered: Vec<String>,
}

impl Marking<'_> {
    /// Marks the selections of `set` that select nothing kept.
    fn mark(&mut self, set: &async_graphql::parser::types::SelectionSet, depth: usize) -> Option<()> {
        use async_graphql::parser::types::Selection;
        if depth > 16 {
            return None;
        }
        for selection in &set.items {
            let (directives, mark) = match &selection.node {
                Selection::Field(field) => {
                    if self.keep.contains(field.node.response_key().node.as_str()) {
                        continue;
                    }
                    if field.node.selection_set.node.items.is_empty() {
                        return None;
                    }
                    (&field.node.directives, (self.before_set(field.node.selection_set.pos)?, "@skip(if: true) "))
                }
                Selection::InlineFragment(i) => {
                    match skip_whole(self.document, &i.node.selection_set.node, self.keep) {
                        Some(false) => continue,
                        Some(true) => {
                            (&i.node.directives, (self.before_set(i.node.selection_set.pos)?, "@skip(if: true) "))
                        }
                        None => {
                            self.mark(&i.node.selection_set.node, depth + 1)?;
                            continue;
                        }
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name;
                    let fragment = self.document.fragments.get(&name.node)?;
                    match skip_whole(self.document, &fragment.node.selection_set.node, self.keep) {
                        Some(false) => continue,
                        Some(true) => {
                            let at = byte_offset(self.query, name.pos)? + name.node.len();
                            if self.query.get(at - name.node.len()..at) != Some(name.node.as_str()) {
                                return None;
                            }
                            (&spread.node.directives, (at, " @skip(if: true)"))
                        }
                        None => {
                            if !self.entered.contains(&name.node.to_string()) {
                                self.entered.push(name.node.to_string());
                                self.mark(&fragment.node.selection_set.node, depth + 1)?;
                            }
                            continue;
                        }
                    }
                }
            };
            if directives.iter().any(|d| d.node.name.node.as_str() == "skip") {
                return None;
            }
            self.marks.push(mark);
        }
        Some(())
    }

    /// Where directives go before a field's or an inline fragment's selection set.
    fn before_set(&self, pos: async_graphql::Pos) -> Option<usize> {
        byte_offset(self.query, pos).filter(|&at| self.query[at..].starts_with('{'))
    }
}

/// The byte offset of a parser position (1-based line and column, columns in
/// characters, a `\r` starting the column again as the parser counts).
fn byte_offset(text: &str, pos: async_graphql::Pos) -> Option<usize> {
    let (mut line, mut column) = (1, 1);
    for (i, ch) in text.char_indices() {
        if (line, column) == (pos.line, pos.column) {
            return Some(i);
        }
        match ch {
            '\r' => column = 1,
            '\n' => (line, column) = (line + 1, 1),
            _ => column += 1,
        }
    }
    None
}

/// Whether the request's operation is a query: the only kind a node may run
/// again elsewhere after running part of it here.
pub fn is_query(request: &mut async_graphql::Request) -> bool {
    operation_type(request) == Some(async_graphql::parser::types::OperationType::Query)
}

/// The type of the operation a request runs, if it can be read.
pub fn operation_type(request: &mut async_graphql::Request) -> Option<async_graphql::parser::types::OperationType> {
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    operation(document, name.as_deref()).map(|op| op.node.ty)
}

/// The operation a request runs: the document's only one, or the one it names
/// (none when a document of several names none, as GraphQL says).
pub(crate) fn operation<'a>(
    document: &'a async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a async_graphql::Positioned<async_graphql::parser::types::OperationDefinition>> {
    use async_graphql::parser::types::DocumentOperations;
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The shard an error wanted and this node does not run, if it is such an error.
fn not_here(error: &async_graphql::ServerError) -> Option<ShardKey> {
    match error.extensions.as_ref()?.get(NOT_HERE)? {
        Value::String(s) => ShardKey::parse(s).ok(),
        _ => None,
    }
}

impl Peers for Forwarder {
    fn send<'a>(
        &'a self,
        system: &'a AttachSystem,
        shard: &'a ShardKey,
        body: Vec<u8>,
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, AttachError>> {
        Box::pin(async move {
            let community = shard.community.as_str();
            let unavailable = |why: String| {
                AttachError::new(ErrorCode::ShardUnavailable, format!("community {community} {why}; retry shortly"))
            };
            let owner = self.owner(system, shard).await.ok_or_else(|| unavailable("is held by no node now".into()))?;
            let base = self.peer_url(&owner).filter(|_| owner != self.me).ok_or_else(|| {
                unavailable(format!("is held by node {owner}, which does not run it now or is not a peer"))
            })?;
            let request = self
                .to_peer(&format!("{base}{CALL_PATH}"))
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(FORWARDED_BY, &self.me)
                .body(body);
            let request = with_trace(request, None);
            let failed = |e: &dyn std::fmt::Display| {
                warn!(error = %e, peer = %owner, %shard, "a step on a peer's shard failed");
                unavailable(format!("is held by node {owner}, which did not answer"))
            };
            let answer = request.send().await.map_err(|e| failed(&e))?;
            if !answer.status().is_success() {
                return Err(failed(&answer.status()));
            }
            let bytes = answer.bytes().await.map_err(|e| failed(&e))?;
            self.calls_sent.fetch_add(1, Ordering::Relaxed);
            Ok(bytes.to_vec())
        })
    }
}

/// The shards the response's errors wanted and this node does not run.
fn wanted(response: &async_graphql::Response) -> Vec<ShardKey> {
    let mut shards: Vec<ShardKey> = response.errors.iter().filter_map(not_here).collect();
    shards.sort();
    shards.dedup();
    shards
}

/// Whether nothing was answered, so nothing was done: every top-level field is null.
fn nothing_done(response: &async_graphql::Response) -> bool {
    match &response.data {
        Value::Null => true,
        Value::Object(fields) => fields.values().all(|v| matches!(v, Value::Null)),
        _ => false,
    }
}

/// Takes the internal `notHere` marks out of a response before it leaves.
pub fn strip_marks(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        if let Some(ext) = error.extensions.as_mut() {
            ext.unset(NOT_HERE);
        }
    }
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{ErrorExtensionValues, Name, PathSegment, ServerError};
    use axum::http::HeaderValue;

    fn not_here(shard: &str) -> ServerError {
        let mut e = ServerError::new("community is restarting", None);
        e.path = vec![PathSegment::Field("registerHousehold".into())];
        let mut ext = ErrorExtensionValues::default();
        ext.set("code", "SHARD_UNAVAILABLE");
        ext.set(NOT_HERE, shard);
        e.extensions = Some(ext);
        e
    }

    fn response(fields: &[(&str, Value)], errors: Vec<ServerError>) -> async_graphql::Response {
        let data = Value::Object(fields.iter().map(|(k, v)| (Name::new(k), v.clone())).collect());
        let mut r = async_graphql::Response::new(data);
        r.errors = errors;
        r
    }

    #[test]
    fn only_a_response_with_nothing_done_may_go_elsewhere() {
        let failed = response(&[("registerHousehold", Value::Null)], vec![not_here("IHA/111")]);
        assert_eq!(wanted(&failed), [ShardKey::parse("IHA/111").unwrap()]);
        assert!(nothing_done(&failed));
        let half = response(
            &[("a", Value::String("done".into())), ("b", Value::Null)],
            vec![not_here("IHA/111"), not_here("IHA/111")],
        );
        assert_eq!(wanted(&half).len(), 1, "one shard, named twice");
        assert!(!nothing_done(&half), "a field was answered: a mutation may have been applied");
        assert!(wanted(&response(&[("a", Value::Null)], vec![])).is_empty());
    }

    #[test]
    fn a_peers_answer_replaces_only_the_fields_it_was_asked_for() {
        let mut b_failed = not_here("IHA/112");
        b_failed.path = vec![PathSegment::Field("b".into())];
        let mut ours = response(&[("a", Value::String("here".into())), ("b", Value::Null)], vec![b_failed]);
        let mut a_failed = not_here("IHA/111");
        a_failed.path = vec![PathSegment::Field("a".into())];
        let mut b_nested = ServerError::new("one item could not be read", None);
        b_nested.path = vec![PathSegment::Field("b".into()), PathSegment::Index(3)];
        let answer = PeerAnswer {
            data: Value::from_json(serde_json::json!({ "a": null, "b": { "totalCount": 2 } })).unwrap(),
            errors: vec![a_failed, b_nested],
        };
        take_fields(&mut ours, &BTreeSet::from(["b".to_string()]), answer);
        let Value::Object(fields) = &ours.data else { panic!() };
        assert_eq!(fields["a"], Value::String("here".into()), "a field answered here stays");
        assert_eq!(fields["b"].to_string(), r#"{totalCount: 2}"#);
        let paths: Vec<_> = ours.errors.iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            paths,
            [vec![PathSegment::Field("b".into()), PathSegment::Index(3)]],
            "the peer's errors for b only"
        );

        // Nothing answered here at all: the peer's fields become the data.
        let mut none = async_graphql::Response::new(Value::Null);
        let answer = PeerAnswer { data: Value::from_json(serde_json::json!({ "b": 1 })).unwrap(), errors: vec![] };
        take_fields(&mut none, &BTreeSet::from(["b".to_string()]), answer);
        assert_eq!(none.data.to_string(), "{b: 1}");

        // A peer's field keeps its own fields in the order it gave them.
        let mut ours = async_graphql::Response::new(Value::Null);
        let answer: PeerAnswer =
            serde_json::from_str(r#"{"data":{"r":{"reference":"X","community":"111","status":"WAITING"}}}"#).unwrap();
        take_fields(&mut ours, &BTreeSet::from(["r".to_string()]), answer);
        assert_eq!(ours.data.to_string(), r#"{r: {reference: "X", community: "111", status: "WAITING"}}"#);
    }

    #[test]
    fn fields_taken_from_peers_go_where_the_query_asks_for_them() {
        let body = serde_json::json!({
            "query": "query Q { c: w { y } ...F ... on Query { d: v { y } } } fragment F on Query { a: x { y } b: z { y } }",
            "operationName": "Q",
        });
        let body = serde_json::to_vec(&body).unwrap();
        assert_eq!(response_keys(&body).unwrap(), ["c", "a", "b", "d"]);
        let mut ours = response(&[("d", Value::from(4)), ("a", Value::from(1)), ("b", Value::from(2))], vec![]);
        let answer = PeerAnswer { data: Value::from_json(serde_json::json!({ "c": 3 })).unwrap(), errors: vec![] };
        take_fields(&mut ours, &BTreeSet::from(["c".to_string()]), answer);
        in_query_order(&mut ours, &body);
        assert_eq!(ours.data.to_string(), "{c: 3, a: 1, b: 2, d: 4}");
        // A body that cannot be read leaves the answer as it is.
        in_query_order(&mut ours, b"not json");
        assert_eq!(ours.data.to_string(), "{c: 3, a: 1, b: 2, d: 4}");
    }

    #[test]
    fn a_peer_is_sent_the_request_with_every_other_field_skipped() {
        let keep = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
        let marked = |body: serde_json::Value, keys: &[&str]| {
            only_fields(&serde_json::to_vec(&body).unwrap(), &keep(keys))
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let query = "mutation($i: RegisterHouseholdInput!) {\r\n  a: registerHousehold(input: $i) { reference }\n  \
                     b: registerHousehold(input: { community: \"ü\", members: [] }) { reference status }\n}";
        let body = serde_json::json!({ "query": query, "variables": { "i": {} } });
        let out = marked(body.clone(), &["b"]).unwrap();
        let text = out["query"].as_str().unwrap();
        assert!(text.contains("a: registerHousehold(input: $i) @skip(if: true) { reference }"), "{text}");
        assert!(text.contains("b: registerHousehold(input: { community: \"ü\", members: [] }) { reference status }"));
        assert_eq!(out["variables"], body["variables"], "the rest of the request is kept");
        assert!(async_graphql::parser::parse_query(text).is_ok(), "{text}");
        let out = marked(body.clone(), &["a"]).unwrap();
        assert!(out["query"].as_str().unwrap().contains("[] }) @skip(if: true) { reference status }"), "{out}");

        // What cannot be marked safely is not.
        let with = |q: &str| serde_json::json!({ "query": q });
        assert!(marked(with("{ a: x @skip(if: false) { y } b: z { y } }"), &["b"]).is_none(), "already skipped");
        let included = marked(with("{ a: x @include(if: true) { y } b: z { y } }"), &["b"]).unwrap();
        let text = included["query"].as_str().unwrap();
        assert!(text.contains("a: x @include(if: true) @skip(if: true) { y }"), "{text}");
        assert!(async_graphql::parser::parse_query(text).is_ok(), "{text}");
        assert!(marked(with("{ a: __typename b: z { y } }"), &["b"]).is_none(), "no selection set to mark before");
        // Fragments at the top: skipped whole when they select nothing kept, kept
        // whole when they select only what is kept, refused when they mix.
        let spread = marked(with("{ ...F b: z { y } } fragment F on Query { x { y } }"), &["b"]).unwrap();
        let text = spread["query"].as_str().unwrap();
        assert!(text.starts_with("{ ...F @skip(if: true) b: z { y } }"), "{text}");
        assert!(async_graphql::parser::parse_query(text).is_ok(), "{text}");
        let inline = "mutation { ... on Mutation @include(if: true) { a: x { y } } b: z { y } ...G } \
                      fragment G on Mutation { b2: z { y } }";
        let text = marked(with(inline), &["b", "b2"]).unwrap()["query"].as_str().unwrap().to_string();
        assert!(
            text.starts_with("mutation { ... on Mutation @include(if: true) @skip(if: true) { a: x { y } } b:"),
            "{text}"
        );
        assert!(text.contains("b: z { y } ...G }"), "a fragment of kept fields only stays: {text}");
        // A fragment selecting both: its own fields are marked, inside it.
        let mixed = "{ ...F } fragment F on Query { a: x { y } b: z { y } }";
        let text = marked(with(mixed), &["b"]).unwrap()["query"].as_str().unwrap().to_string();
        assert_eq!(text, "{ ...F } fragment F on Query { a: x @skip(if: true) { y } b: z { y } }");
        let twice = "{ ...F ...F c: w { y } } fragment F on Query { a: x { y } b: z { y } }";
        let text = marked(with(twice), &["b"]).unwrap()["query"].as_str().unwrap().to_string();
        assert!(text.contains("fragment F on Query { a: x @skip(if: true) { y } b:"), "{text}");
        assert!(
            text.contains("c: w @skip(if: true) { y }") && text.matches("@skip").count() == 2,
            "marked once: {text}"
        );
        assert!(async_graphql::parser::parse_query(&text).is_ok(), "{text}");
        let nested = "mutation { ... on Mutation { a: x { y } ... on Mutation { b: z { y } c: w { y } } } }";
        let text = marked(with(nested), &["b"]).unwrap()["query"].as_str().unwrap().to_string();
        assert_eq!(
            text,
            "mutation { ... on Mutation { a: x @skip(if: true) { y } ... on Mutation { b: z { y } c: w @skip(if: true) { y } } } }"
        );
        let mixed_skipped = "{ ...F } fragment F on Query { a: x @skip(if: false) { y } b: z { y } }";
        assert!(marked(with(mixed_skipped), &["b"]).is_none(), "already skipped, inside a fragment too");
        assert!(marked(with("{ ...F @skip(if: false) b: z { y } } fragment F on Query { x { y } }"), &["b"]).is_none());
        assert!(marked(with("{ ...Missing b: z { y } }"), &["b"]).is_none());
        assert!(marked(with("query A { a { y } } query B { b { y } }"), &["b"]).is_none(), "which operation?");
        let named =
            serde_json::json!({ "query": "query A { a { y } } query B { a { y } b { y } }", "operationName": "B" });
        assert!(
            marked(named, &["b"]).unwrap()["query"].as_str().unwrap().contains("query B { a @skip(if: true) { y }")
        );
        assert!(only_fields(b"--boundary multipart", &keep(&["b"])).is_none());
    }

    #[test]
    fn only_a_query_may_be_run_again_elsewhere() {
        let query = |text: &str, name: Option<&str>| {
            let mut r = async_graphql::Request::new(text);
            if let Some(name) = name {
                r = r.operation_name(name);
            }
            is_query(&mut r)
        };
        assert!(query("{ a: waitlist(communityCode: \"111\") { totalCount } }", None));
        assert!(query("query Q { x } mutation M { y }", Some("Q")));
        assert!(!query("query Q { x } mutation M { y }", Some("M")));
        assert!(!query("query Q { x } mutation M { y }", None), "ambiguous");
        assert!(!query("mutation { runMatching(communityCode: \"111\") { proposals { id } } }", None));
        assert!(!query("subscription { matchFeed { seq } }", None));
        assert!(!query("{ not graphql", None));
    }

    #[test]
    fn marks_are_taken_out_and_the_code_stays() {
        let mut r = response(&[("registerHousehold", Value::Null)], vec![not_here("IHA/111")]);
        strip_marks(&mut r);
        let ext = r.errors[0].extensions.as_ref().unwrap();
        assert!(ext.get(NOT_HERE).is_none());
        assert!(ext.get("code").is_some());
    }

    #[test]
    fn peers_parse_and_a_hop_is_trusted_only_with_the_secret() {
        let cluster = ClusterSettings {
            peers: vec!["node-b = http://10.0.0.2:8080/".into()],
            secret: "s3".into(),
            ..ClusterSettings::default()
        };
        let secrets = Arc::new(ClusterSecrets::new(&cluster));
        let from = |c: &ClusterSettings| Forwarder::from_settings("node-a", c, secrets.clone(), Duration::from_secs(1));
        let f = from(&cluster).unwrap();
        assert_eq!(f.peer_url("node-b").as_deref(), Some("http://10.0.0.2:8080"));
        assert!(f.knows("node-b") && !f.knows("node-c") && f.has_peers());
        let bad = ClusterSettings { peers: vec!["node-b".into()], ..ClusterSettings::default() };
        assert!(from(&bad).is_err());
        let alone = from(&ClusterSettings::default()).unwrap();
        assert!(!alone.has_peers() && !alone.knows("node-b"));
        alone.set_peers(&cluster).unwrap();
        assert!(alone.has_peers() && alone.knows("node-b"), "peers given later");

        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_BY, HeaderValue::from_static("node-b"));
        assert!(!secrets.trust_hop(&headers), "no secret");
        headers.insert(CLUSTER_SECRET, HeaderValue::from_static("s4"));
        assert!(!secrets.trust_hop(&headers), "the wrong secret");
        headers.insert(CLUSTER_SECRET, HeaderValue::from_static("s3"));
        assert!(secrets.trust_hop(&headers));
        let open = ClusterSettings { secret: String::new(), ..cluster };
        assert!(!ClusterSecrets::new(&open).trust_hop(&headers), "without a configured secret nothing is trusted");
    }

    #[test]
    fn the_secret_changes_in_three_steps_without_a_moment_when_peers_disagree() {
        let with = |secret: &str| {
            let mut h = HeaderMap::new();
            h.insert(CLUSTER_SECRET, HeaderValue::from_str(secret).unwrap());
            h
        };
        let settings = |secret: &str, accept: &[&str]| ClusterSettings {
            secret: secret.into(),
            accept_secrets: accept.iter().map(|s| s.to_string()).collect(),
            ..ClusterSettings::default()
        };
        let node = ClusterSecrets::new(&settings("old", &[]));
        assert!(node.carried_by(&with("old")) && !node.carried_by(&with("new")));
        // 1: every node accepts the new secret, and still sends the old one.
        assert!(node.set(&settings("old", &["new"])));
        assert!(!node.set(&settings("old", &["new"])), "the same settings again change nothing");
        assert_eq!(node.sent().as_deref(), Some("old"));
        assert!(node.carried_by(&with("old")) && node.carried_by(&with("new")));
        // 2: every node sends the new one, and still accepts the old one from nodes not yet told.
        node.set(&settings("new", &["old"]));
        assert_eq!(node.sent().as_deref(), Some("new"));
        assert!(node.carried_by(&with("old")) && node.carried_by(&with("new")));
        // 3: the old one is taken out.
        node.set(&settings("new", &[]));
        assert!(!node.carried_by(&with("old")) && node.carried_by(&with("new")));
        assert!(!node.carried_by(&HeaderMap::new()) && !node.carried_by(&with("")), "no secret is never one");
        node.set(&settings("", &[""]));
        assert!(!node.carried_by(&with("")), "an empty secret is never accepted");
    }
}

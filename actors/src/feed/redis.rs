//! The Redis pub/sub feed, for several gateway processes sharing one stream.
//!
//! Each shard's events go to the channel `attach:feed:{ha}:{community}`. A
//! process holds ONE pub/sub connection and subscribes to a shard's channel
//! when its first local subscriber appears; events received there are fanned
//! out locally through a [`MemoryFeed`], so a thousand coordinators on one
//! gateway cost Redis one subscription, not a thousand.
//!
//! Pub/sub is at-most-once, and so is this feed: while Redis is down, publishing
//! drops events (counted) and mutations carry on, because events are already
//! durable in the store; both connections reconnect with backoff, and a
//! subscriber fills any gap with the catch-up query.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use super::{Feed, FeedStatus, MemoryFeed};
use crate::domain::{Event, ShardKey};

const UP: u8 = 1;
const DOWN: u8 = 2;

/// The channel of a shard, in a deployment's namespace (`attach` by default).
pub fn channel(namespace: &str, shard: &ShardKey) -> String {
    format!("{namespace}:feed:{}:{}", shard.ha.as_str(), shard.community.as_str())
}

/// A feed over Redis pub/sub.
pub struct RedisFeed {
    /// Local fan-out of what arrives from Redis.
    local: Arc<MemoryFeed>,
    /// Events waiting for the publisher connection (bounded; full means dropped).
    outgoing: mpsc::Sender<Event>,
    /// Channels to subscribe to, sent to the subscriber connection.
    wanted: mpsc::UnboundedSender<String>,
    /// Channels asked for so far (at most one per shard).
    asked: Mutex<HashSet<String>>,
    publisher: Arc<AtomicU8>,
    subscriber: Arc<AtomicU8>,
    dropped: Arc<AtomicU64>,
    /// The deployment's namespace, which starts every channel name.
    namespace: Arc<str>,
    /// Counts the connections made again (see [`Feed::reconnects`]).
    reconnects: tokio::sync::watch::Receiver<u64>,
}

impl RedisFeed {
    /// Connects in the background to `url` (`redis://host:port`), publishing
    /// and subscribing on channels in `namespace`; `buffer` bounds both the
    /// outgoing queue and each local subscriber's lag.
    pub fn start(url: &str, namespace: &str, buffer: usize) -> anyhow::Result<Arc<Self>> {
        let namespace: Arc<str> = namespace.into();
        let client = redis::Client::open(url)?;
        let local = Arc::new(MemoryFeed::new(buffer));
        let (outgoing, out_rx) = mpsc::channel(buffer.max(1));
        let (wanted, wanted_rx) = mpsc::unbounded_channel();
        let publisher = Arc::new(AtomicU8::new(0));
        let subscriber = Arc::new(AtomicU8::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (reconnected, reconnects) = tokio::sync::watch::channel(0);
        let reconnected = Arc::new(reconnected);
        let publishing = (publisher.clone(), dropped.clone(), reconnected.clone());
        tokio::spawn(publish_loop(client.clone(), namespace.clone(), out_rx, publishing));
        tokio::spawn(subscribe_loop(client, wanted_rx, local.clone(), subscriber.clone(), reconnected));
        Ok(Arc::new(RedisFeed {
            local,
            outgoing,
            wanted,
            asked: Mutex::new(HashSet::new()),
            publisher,
            subscriber,
            dropped,
            namespace,
            reconnects,
        }))
    }
}

impl Feed for RedisFeed {
    fn publish(&self, events: &[Event]) {
        for e in events {
            if self.outgoing.try_send(e.clone()).is_err() {
                // Redis is slow or down: the event is durable, catch-up finds it.
                // Said in the log at the 1st, 2nd, 4th, 8th... drop: seen, never a flood.
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!(
                        dropped,
                        "the live feed's queue to Redis is full: events are dropped (subscribers get them with \
                         their community's next event, or from the events query)"
                    );
                }
            }
        }
    }

    fn subscribe(&self, shard: &ShardKey) -> broadcast::Receiver<Event> {
        let rx = self.local.subscribe(shard);
        let ch = channel(&self.namespace, shard);
        if self.asked.lock().unwrap_or_else(|e| e.into_inner()).insert(ch.clone()) {
            let _ = self.wanted.send(ch);
        }
        rx
    }

    fn status(&self) -> FeedStatus {
        let up = |s: &AtomicU8| s.load(Ordering::Relaxed) == UP;
        FeedStatus {
            backend: "redis",
            connected: up(&self.publisher) && up(&self.subscriber),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        // Reconnections before now are not this subscriber's to catch up on.
        let mut reconnects = self.reconnects.clone();
        reconnects.borrow_and_update();
        Some(reconnects)
    }
}

/// Marks a connection up and, when it comes back after a loss, tells
/// subscribers here that events published meanwhile may have reached nobody.
fn mark_up(state: &AtomicU8, reconnected: &tokio::sync::watch::Sender<u64>) {
    if state.swap(UP, Ordering::Relaxed) == DOWN {
        reconnected.send_modify(|n| *n += 1);
    }
}

async fn backoff(attempt: &mut u32) {
    let ms = (100u64 << (*attempt).min(6)).min(5_000);
    *attempt += 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn publish_loop(
    client: redis::Client,
    namespace: Arc<str>,
    mut rx: mpsc::Receiver<Event>,
    (state, dropped, reconnected): (Arc<AtomicU8>, Arc<AtomicU64>, Arc<tokio::sync::watch::Sender<u64>>),
) {
    let mut attempt = 0;
    // Events whose publish found the connection dead: a connection only
    // learns that Redis restarted when it next writes, so after a quiet
    // restart they are sent again, once, on the new connection (a subscriber
    // drops any it already had, by sequence number).
    let mut again: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let mut conn = match client.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => {
                state.store(DOWN, Ordering::Relaxed);
                warn!(error = %e, "feed publisher cannot reach Redis; retrying");
                drop_queued(&mut rx, &mut again, &dropped);
                backoff(&mut attempt).await;
                continue;
            }
        };
        // A connection Redis refuses to serve (a password or ACL missing) still
        // opens: only a command tells, so one is sent before calling it up.
        if let Err(e) = redis::cmd("PING").query_async::<()>(&mut conn).await {
            state.store(DOWN, Ordering::Relaxed);
            warn!(error = %e, "feed publisher: Redis refuses commands; retrying");
            drop_queued(&mut rx, &mut again, &dropped);
            backoff(&mut attempt).await;
            continue;
        }
        if !again.is_empty()
            && let Err(e) = publish_all(&mut conn, &again).await
        {
            state.store(DOWN, Ordering::Relaxed);
            dropped.fetch_add(again.len() as u64, Ordering::Relaxed);
            again.clear();
            warn!(error = %e, "feed publisher could not send events again; reconnecting");
            backoff(&mut attempt).await;
            continue;
        }
        again.clear();
        // Events dropped while it was down reached nobody: subscribers here read them
        // from the store (other processes' subscribers get them with the next event).
        mark_up(&state, &reconnected);
        attempt = 0;
        info!("feed publisher connected to Redis");
        loop {
            // Everything queued goes in one pipeline: one round trip for many
            // events, so publishing keeps up with commits (one PUBLISH awaited
            // at a time fell behind at a few hundred mutations a second, and
            // the full queue dropped events while Redis was idle).
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_PIPELINE {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let encoded: Vec<(String, Vec<u8>)> = batch
                .iter()
                .filter_map(|event| match postcard::to_allocvec(event) {
                    Ok(bytes) => Some((channel(&namespace, &event.shard), bytes)),
                    Err(e) => {
                        warn!(error = %e, "could not encode an event");
                        None
                    }
                })
                .collect();
            if let Err(e) = publish_all(&mut conn, &encoded).await {
                state.store(DOWN, Ordering::Relaxed);
                warn!(error = %e, "feed publisher lost Redis; reconnecting");
                again = encoded;
                break;
            }
        }
    }
}

/// The most events one pipeline publishes.
const MAX_PIPELINE: usize = 512;

/// Publishes `events` (channel, bytes) in order, in one pipeline.
async fn publish_all(
    conn: &mut redis::aio::MultiplexedConnection,
    events: &[(String, Vec<u8>)],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (ch, bytes) in events {
        pipe.publish(ch, bytes).ignore();
    }
    pipe.query_async(conn).await
}

/// Drops (and counts) the events waiting to be published while Redis cannot
/// take them, rather than holding them to publish late: the store has them,
/// and subscribers catch up from it.
fn drop_queued(rx: &mut mpsc::Receiver<Event>, again: &mut Vec<(String, Vec<u8>)>, dropped: &AtomicU64) {
    let waiting = std::mem::take(again).len();
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    if waiting + queued > 0 {
        warn!(
            dropped = waiting + queued,
            "live feed events dropped while Redis could not take them (the store has them)"
        );
    }
    dropped.fetch_add((waiting + queued) as u64, Ordering::Relaxed);
}

async fn subscribe_loop(
    client: redis::Client,
    mut wanted_rx: mpsc::UnboundedReceiver<String>,
    local: Arc<MemoryFeed>,
    state: Arc<AtomicU8>,
    reconnected: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let mut channels: HashSet<String> = HashSet::new();
    let mut attempt = 0;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                state.store(DOWN, Ordering::Relaxed);
                warn!(error = %e, "feed subscriber cannot reach Redis; retrying");
                while let Ok(ch) = wanted_rx.try_recv() {
                    channels.insert(ch);
                }
                backoff(&mut attempt).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // As for the publisher: a refused connection opens all the same.
        let mut ok = match sink.ping::<redis::Value>().await {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "feed subscriber: Redis refuses commands; retrying");
                false
            }
        };
        // Channels asked for while it was away, before it says it is back.
        while let Ok(ch) = wanted_rx.try_recv() {
            channels.insert(ch);
        }
        for ch in &channels {
            ok &= sink.subscribe(ch).await.is_ok();
        }
        if ok {
            // Whatever was published while it was away (the publisher may well
            // have sent again, on its own new connection, before this one
            // subscribed) reached no subscriber here: they read it from the store.
            mark_up(&state, &reconnected);
            attempt = 0;
            info!(channels = channels.len(), "feed subscriber connected to Redis");
        }
        while ok {
            tokio::select! {
                ch = wanted_rx.recv() => match ch {
                    Some(ch) => {
                        ok = sink.subscribe(&ch).await.is_ok();
                        channels.insert(ch);
                    }
                    None => return,
                },
                msg = stream.next() => match msg {
                    Some(msg) => match postcard::from_bytes::<Event>(msg.get_payload_bytes()) {
                        Ok(event) => local.publish(std::slice::from_ref(&event)),
                        Err(e) => warn!(error = %e, "an unreadable message on a feed channel"),
                    },
                    None => ok = false,
                },
            }
        }
        state.store(DOWN, Ordering::Relaxed);
        warn!("feed subscriber lost Redis; reconnecting");
        backoff(&mut attempt).await;
    }
}

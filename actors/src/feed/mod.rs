//! The live feed: every committed event of every shard, in sequence order.
//!
//! A shard publishes its events after the store made them durable, so a
//! subscriber never sees a change that could still be lost. Delivery is
//! at-most-once (as Redis pub/sub will be): every event carries its shard's
//! sequence number, a subscriber that falls behind is told from which sequence
//! it missed events, and [`crate::store::Store::events_after`] fills any gap.
//!
//! Backends: [`MemoryFeed`], an in-process broadcast (the default), and
//! [`redis::RedisFeed`], Redis pub/sub shared by several gateway processes.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::domain::{Event, ShardKey};

/// Where committed events go.
pub trait Feed: Send + Sync + 'static {
    /// Publishes one shard's newly committed events, in sequence order.
    fn publish(&self, events: &[Event]);

    /// A receiver of a shard's events from now on.
    fn subscribe(&self, shard: &ShardKey) -> broadcast::Receiver<Event>;

    /// How the feed is doing, for `/readyz` and statistics.
    fn status(&self) -> FeedStatus {
        FeedStatus { backend: "memory", connected: true, dropped: 0 }
    }

    /// A count that goes up each time the feed connects again after losing
    /// its backend, when events published meanwhile may have reached no
    /// subscriber here: each subscriber then reads what it missed from the
    /// store. `None` for a feed that never loses events that way.
    fn reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// How a feed is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStatus {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Whether events flow now (always for the in-process feed).
    pub connected: bool,
    /// Events not published because the backend was down or slow (recoverable by catch-up).
    pub dropped: u64,
}

/// An in-process broadcast per shard.
pub struct MemoryFeed {
    channels: Mutex<HashMap<ShardKey, broadcast::Sender<Event>>>,
    /// Events a slow subscriber may fall behind by before it is told it missed
    /// some: bounds memory whatever the subscriber does.
    capacity: usize,
}

impl MemoryFeed {
    /// A feed whose subscribers may lag by at most `capacity` events per shard.
    pub fn new(capacity: usize) -> Self {
        MemoryFeed { channels: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    fn sender(&self, shard: &ShardKey) -> broadcast::Sender<Event> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.entry(shard.clone()).or_insert_with(|| broadcast::channel(self.capacity).0).clone()
    }
}

impl Feed for MemoryFeed {
    fn publish(&self, events: &[Event]) {
        let Some(first) = events.first() else { return };
        let sender = self.sender(&first.shard);
        for event in events {
            // No subscriber is not an error: the event is durable and catch-up finds it.
            let _ = sender.send(event.clone());
        }
    }

    fn subscribe(&self, shard: &ShardKey) -> broadcast::Receiver<Event> {
        self.sender(shard).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, ProviderId, Timestamp};

    fn event(shard: &ShardKey, seq: u64) -> Event {
        Event {
            shard: shard.clone(),
            seq,
            at: Timestamp(0),
            kind: EventKind::CapacityChanged { provider: ProviderId::parse("P1234").unwrap() },
        }
    }

    #[tokio::test]
    async fn subscribers_get_their_shard_only_in_order() {
        let feed = MemoryFeed::new(16);
        let a = ShardKey::parse("IHA/111").unwrap();
        let b = ShardKey::parse("IHA/112").unwrap();
        let mut rx = feed.subscribe(&a);
        feed.publish(&[event(&b, 1)]);
        feed.publish(&[event(&a, 1), event(&a, 2)]);
        assert_eq!(rx.recv().await.unwrap().seq, 1);
        assert_eq!(rx.recv().await.unwrap().seq, 2);
        assert!(rx.try_recv().is_err(), "nothing from another shard");
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged_and_memory_stays_bounded() {
        let feed = MemoryFeed::new(4);
        let a = ShardKey::parse("IHA/111").unwrap();
        let mut rx = feed.subscribe(&a);
        let events: Vec<_> = (1..=10).map(|s| event(&a, s)).collect();
        feed.publish(&events);
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Lagged(6))));
        assert_eq!(rx.recv().await.unwrap().seq, 7, "the newest 4 are kept");
    }
}

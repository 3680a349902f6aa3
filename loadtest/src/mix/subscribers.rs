//! Live-feed subscribers: each watches one community of the target over
//! graphql-transport-ws and records, for every event, the time from its commit
//! (the event's `at`, the server's clock) to its arrival (this machine's clock:
//! on another machine the figure includes the clocks' offset).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::Args;
use super::recorder::{Outcome, Recorder};
use super::scenarios::Target;

/// What the subscribers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedSummary {
    /// Subscribers connected whose subscription was taken.
    pub subscribers: usize,
    /// Subscribers whose subscription the server refused (counted under its
    /// code as a failed `feedEvent` too), not among `subscribers`.
    pub refused: usize,
    /// Events delivered, over all subscribers.
    pub deliveries: u64,
    /// `MISSED` notices (a subscriber fell behind).
    pub missed_notices: u64,
}

/// The running subscribers.
pub struct Feed {
    tasks: Vec<JoinHandle<Watched>>,
}

/// What one subscriber saw.
struct Watched {
    deliveries: u64,
    missed: u64,
    /// The server refused the subscription before anything arrived.
    refused: bool,
}

/// Connects `args.subscribers` subscribers, round-robin over the communities.
pub async fn start(args: &Args, target: &Target, recorder: Arc<Recorder>, deadline: Instant) -> anyhow::Result<Feed> {
    let urls: Vec<String> =
        super::base_urls(&args.url).iter().map(|u| format!("{}/graphql", u.replacen("http", "ws", 1))).collect();
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let url = &urls[i % urls.len().max(1)];
        let community = &target.communities[i % target.communities.len()];
        let query = "subscription($c: String!) { communityEvents(communityCode: $c) { kind seq at } }";
        let mut ws = crate::client::subscribe(url, args.token.as_deref(), query, community)
            .await
            .with_context(|| format!("subscriber {i} connecting"))?;
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Watched { deliveries: 0, missed: 0, refused: false };
            // Events still in flight at the deadline get a moment to arrive.
            let end = deadline + Duration::from_secs(2);
            loop {
                let left = end.saturating_duration_since(Instant::now());
                let Ok(Some(message)) = tokio::time::timeout(left, crate::client::next_message(&mut ws)).await else {
                    break;
                };
                let errors =
                    if message["type"] == "error" { &message["payload"] } else { &message["payload"]["errors"] };
                if let Some(first) = errors.as_array().and_then(|e| e.first()) {
                    let code = first["extensions"]["code"].as_str().unwrap_or("SUBSCRIBE_FAILED");
                    recorder.record(super::recorder::FEED_EVENT, Duration::ZERO, Outcome::Failed(code.to_string()));
                    seen.refused = seen.deliveries == 0 && seen.missed == 0;
                    break;
                }
                let event = &message["payload"]["data"]["communityEvents"];
                if event["kind"] == "MISSED" {
                    seen.missed += 1;
                    continue;
                }
                let Some(at) = event["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
                    continue;
                };
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                let latency = Duration::from_millis(now_ms.saturating_sub(at.timestamp_millis()).max(0) as u64);
                recorder.record(super::recorder::FEED_EVENT, latency, Outcome::Ok);
                seen.deliveries += 1;
            }
            let _ = ws.close(None).await;
            seen
        }));
    }
    Ok(Feed { tasks })
}

/// Waits for the subscribers to finish and sums up.
pub async fn finish(feed: Feed) -> FeedSummary {
    let mut summary = FeedSummary::default();
    for task in feed.tasks {
        match task.await {
            Ok(seen) if seen.refused => summary.refused += 1,
            Ok(seen) => {
                summary.subscribers += 1;
                summary.deliveries += seen.deliveries;
                summary.missed_notices += seen.missed;
            }
            // A subscriber task that panicked still had connected.
            Err(_) => summary.subscribers += 1,
        }
    }
    summary
}

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
    /// Events a subscriber was never sent and never told of: gaps in the
    /// sequence numbers it received (for one that got no `MISSED` notice), and
    /// the events its community committed after its last delivery, read from
    /// the `events` query at the end. Subscribers that received nothing are
    /// not counted (where their stream began is unknown).
    pub missing: u64,
    /// Subscribers whose community's events could not be read back at the end
    /// (the server did not answer): what they were never sent is not in
    /// `missing`, which then counts too few.
    pub unchecked: u64,
}

impl FeedSummary {
    /// What the count of events never delivered leaves out, said after it:
    /// empty when every subscriber's community was read back.
    pub fn unchecked_note(&self) -> String {
        if self.unchecked == 0 {
            return String::new();
        }
        format!(
            " (not counting {} subscribers whose community's events could not be read back at the end: more may \
             be missing)",
            self.unchecked
        )
    }
}

/// The running subscribers.
pub struct Feed {
    tasks: Vec<JoinHandle<Watched>>,
}

/// What one subscriber saw.
struct Watched {
    community: String,
    deliveries: u64,
    missed: u64,
    /// The server refused the subscription before anything arrived.
    refused: bool,
    /// The distinct sequence numbers received.
    seqs: std::collections::BTreeSet<u64>,
}

impl Watched {
    /// Sequence numbers between the first and the last received that never came.
    fn gaps(&self) -> u64 {
        match (self.seqs.first(), self.seqs.last()) {
            (Some(first), Some(last)) => last - first + 1 - self.seqs.len() as u64,
            _ => 0,
        }
    }
}

/// Connects `args.subscribers` subscribers, round-robin over the communities.
pub async fn start(args: &Args, target: &Target, recorder: Arc<Recorder>, deadline: Instant) -> anyhow::Result<Feed> {
    let urls: Vec<String> =
        super::base_urls(&args.url).iter().map(|u| format!("{}/graphql", u.replacen("http", "ws", 1))).collect();
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let url = &urls[i % urls.len().max(1)];
        let community = target.communities[i % target.communities.len()].clone();
        let query = "subscription($c: String!) { communityEvents(communityCode: $c) { kind seq at } }";
        let mut ws = crate::client::subscribe(url, args.token.as_deref(), query, &community)
            .await
            .with_context(|| format!("subscriber {i} connecting"))?;
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Watched { community, deliveries: 0, missed: 0, refused: false, seqs: Default::default() };
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
                if let Some(seq) = event["seq"].as_u64() {
                    seen.seqs.insert(seq);
                }
            }
            let _ = ws.close(None).await;
            seen
        }));
    }
    Ok(Feed { tasks })
}

/// Waits for the subscribers to finish and sums up, asking `endpoint` (with
/// `token`) for each community's events after what its subscriber last got.
pub async fn finish(feed: Feed, client: &reqwest::Client, endpoint: &str, token: Option<&str>) -> FeedSummary {
    let mut summary = FeedSummary::default();
    let mut after: std::collections::HashMap<String, Option<u64>> = std::collections::HashMap::new();
    for task in feed.tasks {
        match task.await {
            Ok(seen) if seen.refused => summary.refused += 1,
            Ok(seen) => {
                summary.subscribers += 1;
                summary.deliveries += seen.deliveries;
                summary.missed_notices += seen.missed;
                if seen.missed == 0 {
                    summary.missing += seen.gaps();
                }
                if let Some(&last) = seen.seqs.last() {
                    let committed = match after.get(&seen.community) {
                        Some(&known) => known,
                        None => {
                            let committed = last_seq(client, endpoint, token, &seen.community, last).await;
                            after.insert(seen.community.clone(), committed);
                            committed
                        }
                    };
                    match committed {
                        Some(committed) => summary.missing += committed.saturating_sub(last),
                        None => summary.unchecked += 1,
                    }
                }
            }
            // A subscriber task that panicked still had connected.
            Err(_) => summary.subscribers += 1,
        }
    }
    summary
}

/// The last sequence number `community` committed, reading its `events` from
/// `after` (at most 100 pages); `None` when not even the first page can be read.
async fn last_seq(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    community: &str,
    after: u64,
) -> Option<u64> {
    let query =
        "query($c: String!, $a: Int!) { events(communityCode: $c, afterSeq: $a, first: 100) { hasMore lastSeq } }";
    let mut last = None;
    for _ in 0..100 {
        let mut request = client.post(endpoint).json(&serde_json::json!({
            "query": query, "variables": { "c": community, "a": last.unwrap_or(after) }
        }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let Ok(response) = request.send().await else { break };
        let Ok(body) = response.json::<serde_json::Value>().await else { break };
        let page = &body["data"]["events"];
        let Some(seq) = page["lastSeq"].as_u64() else { break };
        last = Some(seq.max(last.unwrap_or(after)));
        if page["hasMore"] != true {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_sequence_numbers_between_the_first_and_last_that_never_came() {
        let watched = |seqs: &[u64]| Watched {
            community: "111".into(),
            deliveries: seqs.len() as u64,
            missed: 0,
            refused: false,
            seqs: seqs.iter().copied().collect(),
        };
        assert_eq!(watched(&[]).gaps(), 0);
        assert_eq!(watched(&[7]).gaps(), 0);
        assert_eq!(watched(&[3, 4, 5]).gaps(), 0);
        assert_eq!(watched(&[3, 5, 9]).gaps(), 4, "4, 6, 7, 8");
    }

    #[tokio::test]
    async fn a_tail_that_cannot_be_read_back_is_reported_not_counted_as_nothing_missing() {
        let seen = Watched {
            community: "111".into(),
            deliveries: 2,
            missed: 0,
            refused: false,
            seqs: [4, 5].into_iter().collect(),
        };
        let feed = Feed { tasks: vec![tokio::spawn(async move { seen })] };
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build().unwrap();
        // Nothing listens there, as when the server stopped answering at the end of a run.
        let summary = finish(feed, &client, "http://127.0.0.1:9/graphql", None).await;
        assert_eq!((summary.subscribers, summary.missing, summary.unchecked), (1, 0, 1));
    }
}

//! Live-feed latency: N subscribers on one community over graphql-transport-ws,
//! registrations sent one at a time, and for every event the time from sending
//! the mutation to each subscriber receiving it. That bounds the commit-to-
//! subscriber latency from above (it includes the HTTP request and the store's
//! fsync as well as the feed: in-process, or Redis when the server runs with
//! `--redis`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::stats::summarise;

/// Options of `feed-latency`.
#[derive(clap::Args)]
pub struct Args {
    /// Base URL of a running Attach.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Community whose feed is watched and where households register.
    #[arg(long, default_value = "111")]
    community: String,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events (registrations) to send; bounded to 100,000.
    #[arg(long, default_value_t = 10_000)]
    events: u32,
    /// First PHN body to register (each event uses the next valid one); pick a
    /// range no earlier run used, since a PHN registers once.
    #[arg(long, default_value_t = 30_000_000)]
    phn_start: u32,
    /// Events a second to offer (0: each as soon as the last one was answered,
    /// which measures queueing at saturation rather than latency under a load).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many seconds whatever is left (bounded to 600).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Bearer token sent with every request (a coordinator or support token whose scope covers the community;
    /// registrations are public). Also `ATTACH_TOKEN`.
    #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the measurement.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = args.token.as_deref();
    anyhow::ensure!(
        (1..=100_000).contains(&args.events) && (1..=600).contains(&args.max_seconds) && args.rate >= 0.0,
        "runs are bounded: 1 to 100,000 events and 1 to 600 s, at a rate of 0 (unpaced) or more"
    );
    anyhow::ensure!((1..=10_000).contains(&args.subscribers), "subscribers are 1 to 10,000");
    crate::client::check_phn_range("--phn-start", args.phn_start, crate::client::bodies_for(args.events.into()))?;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let ws_url = format!("{}/graphql", args.url.trim_end_matches('/').replacen("http", "ws", 1));
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        subscribers.push(subscriber(&ws_url, token, &args.community, i, args.events as usize, deadline).await?);
    }
    // Let every subscription reach the server (and Redis) before the first event.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = crate::client::http(token, 1)?;
    let endpoint = format!("{}/graphql", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let last = u32::try_from(crate::client::PHN_BODIES).expect("eight digits");
    let mut bodies = (args.phn_start..last).filter_map(attach_actors::domain::Phn::with_body);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    for i in 0..args.events {
        if let Some(every) = interval {
            tokio::time::sleep_until((started + every * i).into()).await;
        }
        if Instant::now() > deadline {
            break;
        }
        let phn = bodies.next().context("PHN bodies exhausted")?.expose();
        let body = json!({
            "query": "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
            "variables": { "i": { "community": args.community, "postalCode": "V0B 1M0",
                "members": [{ "phn": phn, "givenName": "Load", "surname": "Test", "dateOfBirth": "1990-01-01" }] } },
        });
        let t = Instant::now();
        let resp: Value = client.post(&endpoint).json(&body).send().await?.json().await?;
        let reference = resp["data"]["registerHousehold"]["reference"]
            .as_str()
            .with_context(|| format!("registration failed: {resp}"))?
            .to_string();
        sent.insert(reference, t);
    }
    let sending = started.elapsed();
    // Every response is in: match each delivery with the time its mutation was sent.
    let expected = sent.len() as u64;
    let (mut from_send, mut from_event) = (Vec::new(), Vec::new());
    let mut missing = 0u64;
    for s in subscribers {
        let received = s.await?;
        let mut matched = 0u64;
        for d in &received {
            if let Some(t) = sent.get(&d.reference) {
                from_send.push(d.arrived.saturating_duration_since(*t));
                from_event.push(d.since_event);
                matched += 1;
            }
        }
        missing += expected.saturating_sub(matched);
    }
    let from_send = summarise("feed_event", from_send, missing, sending);
    let from_event = summarise("feed_event_from_commit_time", from_event, missing, sending);
    if args.json {
        let both = json!({ "from_send": from_send, "from_event_time": from_event });
        println!("{}", serde_json::to_string_pretty(&both)?);
    } else {
        let rate = if args.rate > 0.0 { format!(" at {}/s", args.rate) } else { String::new() };
        println!(
            "{} subscribers x {} events{rate}: {} deliveries, {} missing",
            args.subscribers, args.events, from_send.ok, from_send.errors
        );
        for (what, s) in [("from sending the mutation", &from_send), ("from the event's `at` (ms)", &from_event)] {
            println!(
                "  latency {what:27}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
    }
    Ok(())
}

/// One registration event as a subscriber received it.
struct Delivery {
    reference: String,
    /// When it arrived.
    arrived: Instant,
    /// From its `at` (when the shard took the mutation, before committing it;
    /// whole milliseconds, so this overstates by less than 1 ms) to its arrival,
    /// by the wall clock the server and this tool share on one machine.
    since_event: Duration,
}

/// One subscriber: connects, subscribes, and returns each registration it
/// received with the time it arrived. Arrival times are matched with send times
/// only once every mutation has been answered: an event often beats its own
/// mutation's response, and waiting for it here would spin on the cores the
/// server needs.
async fn subscriber(
    url: &str,
    token: Option<&str>,
    community: &str,
    index: usize,
    expected: usize,
    deadline: Instant,
) -> anyhow::Result<tokio::task::JoinHandle<Vec<Delivery>>> {
    let query = "subscription($c: String!) { communityEvents(communityCode: $c) { kind reference at } }";
    let mut ws = crate::client::subscribe(url, token, query, community)
        .await
        .with_context(|| format!("subscriber {index} connecting"))?;
    Ok(tokio::spawn(async move {
        let mut received = Vec::with_capacity(expected);
        // Events lost behind a MISSED notice never come: the loop also ends at
        // the deadline or after 10 s of silence.
        while received.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left.min(Duration::from_secs(10)), crate::client::next_message(&mut ws));
            let Ok(Some(v)) = next.await else { break };
            let now = Instant::now();
            if let Some(errors) = v["payload"]["errors"].as_array() {
                // Refused (no token, a role that may not read the feed, a cap): say why.
                eprintln!("subscriber {index}: the subscription was refused: {}", Value::from(errors.clone()));
                break;
            }
            let event = &v["payload"]["data"]["communityEvents"];
            if event["kind"] != "REGISTERED" {
                continue;
            }
            let at = event["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let (Some(reference), Some(at)) = (event["reference"].as_str(), at) {
                let since = chrono::Utc::now().signed_duration_since(at).to_std().unwrap_or_default();
                received.push(Delivery { reference: reference.to_string(), arrived: now, since_event: since });
            }
        }
        received
    }))
}

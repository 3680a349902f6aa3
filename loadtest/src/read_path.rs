//! The read-path scenario: the same server, the same connections, two phases:
//! a trivial query (`{ __typename }`, no actor, no data) and a waitlist page
//! through the community's shard actor. The ratio of their rates is the cost
//! of the read path over the bare GraphQL stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::{Summary, summarise};

/// Options of `read-path`.
#[derive(clap::Args)]
pub struct Args {
    /// Base URL of a running Attach.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Community whose waitlist is read.
    #[arg(long, default_value = "111")]
    community: String,
    /// Items per page.
    #[arg(long, default_value_t = 20)]
    page_size: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of each phase, in seconds (bounded to 300).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The most requests a phase sends (a second bound).
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Seconds of warm-up before each phase (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Fields to read per waitlist item (a GraphQL selection).
    #[arg(long, default_value = "reference registeredAt status householdSize needs")]
    fields: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs both phases and reports.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds <= 300 && args.warmup <= 60, "phases are bounded to 300 s, warm-up to 60 s");
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let endpoint = format!("{}/graphql", args.url.trim_end_matches('/'));
    let trivial = json!({ "query": "{ __typename }" });
    let page = json!({
        "query": format!("query($c: String!, $n: Int) {{ waitlist(communityCode: $c, first: $n) {{ totalCount nodes {{ {} }} pageInfo {{ hasNextPage endCursor }} }} }}", args.fields),
        "variables": { "c": args.community, "n": args.page_size },
    });
    // Check the page is real before measuring it.
    let probe: Value = client.post(&endpoint).json(&page).send().await?.json().await?;
    anyhow::ensure!(probe.get("errors").is_none(), "the waitlist query failed: {probe}");
    let items = probe["data"]["waitlist"]["nodes"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(items > 0, "community {} has an empty waitlist; seed it first (--demo)", args.community);

    let mut results = Vec::new();
    for (name, body) in [("trivial", &trivial), ("waitlist_page", &page)] {
        phase(&client, &endpoint, body, &args, Duration::from_secs(args.warmup), u64::MAX).await;
        results.push(
            phase(&client, &endpoint, body, &args, Duration::from_secs(args.seconds), args.max_requests)
                .await
                .named(name),
        );
    }
    let ratio = results[1].rps / results[0].rps.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "phases": results, "ratio": ratio, "page_items": items }))?
        );
    } else {
        for s in &results {
            println!(
                "{:<14} {:>9.0} req/s  ok {:>8}  errors {:>5}  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
                s.operation, s.rps, s.ok, s.errors, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
        println!("waitlist page ({items} items) / trivial query: {:.1}%", ratio * 100.0);
    }
    anyhow::ensure!(results.iter().all(|s| s.errors == 0), "some requests failed");
    Ok(())
}

struct Phase(Summary);

impl Phase {
    fn named(mut self, name: &str) -> Summary {
        self.0.operation = name.to_string();
        self.0
    }
}

async fn phase(
    client: &reqwest::Client,
    endpoint: &str,
    body: &Value,
    args: &Args,
    length: Duration,
    max: u64,
) -> Phase {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let body = Arc::new(serde_json::to_vec(body).expect("a JSON value serialises"));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let client = client.clone();
            let endpoint = endpoint.to_string();
            let body = body.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                    let t = Instant::now();
                    let ok = match client
                        .post(&endpoint)
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            // A 200 carrying GraphQL errors is a failure.
                            Ok(b) => !contains(&b, b"\"errors\""),
                            Err(_) => false,
                        },
                        _ => false,
                    };
                    if ok {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    Phase(summarise("", latencies, errors, started.elapsed()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

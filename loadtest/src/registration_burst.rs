//! Registration bursts: concurrent households registering across communities,
//! each request a durable commit. Shows what group commit buys: many shards'
//! writes share one fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::summarise;

/// Options of `registration-burst`.
#[derive(clap::Args)]
pub struct Args {
    /// Base URL of a running Attach.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Communities to register in, comma-separated.
    #[arg(long, default_value = "111,112,113,121,122,123,131,132")]
    communities: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the burst in seconds (bounded to 300).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The most registrations sent (a second bound).
    #[arg(long, default_value_t = 200_000)]
    max_requests: u32,
    /// First PHN body (each registration takes the next valid one): use a range no earlier run used.
    #[arg(long, default_value_t = 60_000_000)]
    phn_start: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the burst.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds <= 300, "a burst is bounded to 300 s");
    let communities: Vec<String> = args.communities.split(',').map(|c| c.trim().to_string()).collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let endpoint = format!("{}/graphql", args.url.trim_end_matches('/'));
    let next = Arc::new(AtomicU32::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (client, endpoint, next, communities) = (client.clone(), endpoint.clone(), next.clone(), communities.clone());
            let (phn_start, max) = (args.phn_start, args.max_requests);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= max {
                        break;
                    }
                    // Every body 10 apart is distinct; skip the ~2 in 11 without a check digit.
                    let Some(phn) = attach_actors::domain::Phn::with_body(phn_start + n) else { continue };
                    let community = &communities[(n as usize + w) % communities.len()];
                    let body = json!({
                        "query": "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
                        "variables": { "i": { "community": community, "postalCode": "V0B 1M0",
                            "members": [{ "phn": phn.expose(), "givenName": "Load", "surname": "Test", "dateOfBirth": "1990-01-01" }] } },
                    });
                    let t = Instant::now();
                    let ok = match client.post(&endpoint).json(&body).send().await {
                        Ok(r) => r.json::<Value>().await.is_ok_and(|v| v.get("errors").is_none()),
                        Err(_) => false,
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
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let s = summarise("register", latencies, errors, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "register  {:>7.0} req/s  ok {:>7}  errors {:>5}  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            s.rps, s.ok, s.errors, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        );
    }
    anyhow::ensure!(s.errors == 0, "some registrations failed");
    Ok(())
}

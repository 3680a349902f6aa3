//! Registration bursts: concurrent households registering across communities,
//! each request a durable commit. Shows what group commit buys: many shards'
//! writes share one fsync.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::summarise;
use crate::workers;

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
    /// Bearer token sent with every request (optional: registration is public, but a coordinator token registers
    /// under its own quota). Also `ATTACH_TOKEN`.
    #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the burst.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = args.token.as_deref();
    anyhow::ensure!((1..=300).contains(&args.seconds), "a burst is 1 to 300 s");
    anyhow::ensure!(args.max_requests >= 1, "--max-requests is at least 1: a burst of none measures nothing");
    crate::client::check_concurrency(args.concurrency)?;
    // One body per registration asked (those without a check digit are skipped, not retried).
    crate::client::check_phn_range("--phn-start", args.phn_start, args.max_requests.into())?;
    let communities: Vec<String> = args.communities.split(',').map(|c| c.trim().to_string()).collect();
    let client = crate::client::http(token, args.concurrency)?;
    let endpoint = format!("{}/graphql", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let phn_start = args.phn_start;
    let (latencies, errors) =
        workers::run(args.concurrency, deadline, u64::from(args.max_requests), move |worker, n| {
            // Every body 10 apart is distinct; skip the ~2 in 11 without a check digit.
            let phn = attach_actors::domain::Phn::with_body(phn_start + n as u32)?;
            let community = &communities[(n as usize + worker) % communities.len()];
            let body = json!({
                "query": "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference } }",
                "variables": { "i": { "community": community, "postalCode": "V0B 1M0",
                    "members": [{ "phn": phn.expose(), "givenName": "Load", "surname": "Test", "dateOfBirth": "1990-01-01" }] } },
            });
            let request = client.post(&endpoint).json(&body);
            Some(async move {
                match request.send().await {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v.get("errors").is_none()),
                    Err(_) => false,
                }
            })
        })
        .await?;
    let s = summarise("register", latencies, errors, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{}", s.line());
    }
    anyhow::ensure!(s.errors == 0, "some registrations failed");
    Ok(())
}

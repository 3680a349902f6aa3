//! The read-path scenario: the same server, the same connections, two phases:
//! a trivial query (`{ __typename }`, no actor, no data) and a waitlist page
//! through the community's shard actor. The ratio of their rates is the cost
//! of the read path over the bare GraphQL stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::{Summary, summarise};
use crate::workers;

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
    /// Bearer token sent with every request (a coordinator or support token that reads the community's waitlist).
    /// Also `ATTACH_TOKEN`.
    #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs both phases and reports.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = args.token.as_deref();
    anyhow::ensure!(
        (1..=300).contains(&args.seconds) && args.warmup <= 60 && 2 * (args.seconds + args.warmup) <= 600,
        "phases are 1 to 300 s, warm-up at most 60 s, and the two phases with their warm-ups at most 600 s"
    );
    anyhow::ensure!(args.max_requests >= 1, "--max-requests is at least 1: a phase of none measures nothing");
    crate::client::check_concurrency(args.concurrency)?;
    let client = crate::client::http(token, args.concurrency)?;
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
        phase(&client, &endpoint, name, body, &args, Duration::from_secs(args.warmup), u64::MAX).await?;
        results.push(
            phase(&client, &endpoint, name, body, &args, Duration::from_secs(args.seconds), args.max_requests).await?,
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
            println!("{}", s.line());
        }
        println!("waitlist page ({items} items) / trivial query: {:.1}%", ratio * 100.0);
    }
    anyhow::ensure!(results.iter().all(|s| s.errors == 0), "some requests failed");
    Ok(())
}

async fn phase(
    client: &reqwest::Client,
    endpoint: &str,
    name: &str,
    body: &Value,
    args: &Args,
    length: Duration,
    max: u64,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let body = Arc::new(serde_json::to_vec(body)?);
    let (client, endpoint) = (client.clone(), endpoint.to_string());
    let (latencies, errors) = workers::run(args.concurrency, started + length, max, move |_, _| {
        let request = client.post(&endpoint).header("content-type", "application/json").body(body.as_ref().clone());
        Some(async move {
            match request.send().await {
                // A 200 carrying GraphQL errors is a failure.
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok_and(|b| !has_errors(&b)),
                _ => false,
            }
        })
    })
    .await?;
    Ok(summarise(name, latencies, errors, started.elapsed()))
}

/// Whether a response body carries GraphQL `errors`. The load tool shares the
/// server's cores, so this is a SIMD substring search rather than a parse or a
/// window-by-window compare. The server writes compact JSON, where `"errors":`
/// can only be a key: a string value is followed by `,`, `}` or `]`.
fn has_errors(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"errors\":").is_some()
}

#[cfg(test)]
mod tests {
    use super::has_errors;

    #[test]
    fn a_body_with_graphql_errors_is_a_failure_and_data_alone_is_not() {
        assert!(has_errors(br#"{"data":null,"errors":[{"message":"no"}]}"#));
        assert!(!has_errors(br#"{"data":{"waitlist":{"totalCount":3}}}"#));
        assert!(!has_errors(br#"{"data":{"reason":"errors"}}"#), "a value that says errors is not the key");
    }
}

//! Panel files: `panel-file` writes a synthetic panel CSV (for `attach panel
//! import` and for uploads), and `panel-upload` times whole panels submitted
//! over HTTP as a provider's EMR would: a multipart upload of fresh patients,
//! one file at a time, each answered with its per-row report.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::stats::summarise;

/// Options of `panel-file`.
#[derive(clap::Args)]
pub struct FileArgs {
    /// Where to write the CSV.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Patient rows.
    #[arg(long, default_value_t = 2_000)]
    rows: u32,
    /// The facility number every row names.
    #[arg(long, default_value = "10000")]
    facility: String,
    /// First PHN body: the rows take the next valid ones.
    #[arg(long, default_value_t = 90_000_000)]
    phn_start: u32,
}

/// The most rows a generated file holds (the 1,000,000-row import of
/// docs/BENCHMARKS.md is the largest use).
const MAX_ROWS: u32 = 2_000_000;

/// One panel's CSV: a header, then `rows` patients with fresh PHNs from `phn_start`.
/// Returns the text and the next unused PHN body.
fn panel_csv(rows: u32, facility: &str, phn_start: u32) -> (String, u32) {
    let mut out = String::with_capacity(rows as usize * 56 + 64);
    out.push_str("PHN,Surname,Given name,Date of birth,Service code,Facility\r\n");
    let mut body = phn_start;
    let mut written = 0;
    // Bounded by the range as well (checked before: see `check_phn_range`).
    while written < rows && u64::from(body) < crate::client::PHN_BODIES {
        if let Some(phn) = attach_actors::domain::Phn::with_body(body) {
            let year = 1930 + (body % 90);
            let month = 1 + body % 12;
            let day = 1 + body % 28;
            out.push_str(&format!("{},Loadtest,Pat,{year:04}-{month:02}-{day:02},98990,{facility}\r\n", phn.expose()));
            written += 1;
        }
        body += 1;
    }
    (out, body)
}

/// Writes a panel file.
pub fn write_file(args: FileArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=MAX_ROWS).contains(&args.rows), "a file holds 1 to {MAX_ROWS} rows");
    crate::client::check_phn_range("--phn-start", args.phn_start, crate::client::bodies_for(args.rows.into()))?;
    let (text, next) = panel_csv(args.rows, &args.facility, args.phn_start);
    let mut file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    file.write_all(text.as_bytes())?;
    println!("{} rows, {} bytes, next unused PHN body {next}", args.rows, text.len());
    Ok(())
}

/// Options of `panel-upload`.
#[derive(clap::Args)]
pub struct UploadArgs {
    /// Base URL of a running Attach.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A bearer token for the provider (a medical director token naming the
    /// provider may also set up the clinic, with `--setup`).
    #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The provider whose panel is submitted.
    #[arg(long, default_value = "D10000")]
    provider: String,
    /// The clinic's facility number (the provider must be listed there).
    #[arg(long, default_value = "10000")]
    facility: String,
    /// Create the clinic (naming the provider its director) and the provider
    /// in this community first, and list the provider there.
    #[arg(long)]
    setup: Option<String>,
    /// Patient rows per file.
    #[arg(long, default_value_t = 2_000)]
    rows: u32,
    /// Files submitted, one after the other (bounded to 1000).
    #[arg(long, default_value_t = 10)]
    uploads: u32,
    /// Stop after this many seconds whatever is left (bounded to 600).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// First PHN body: use a range no earlier run used.
    #[arg(long, default_value_t = 90_000_000)]
    phn_start: u32,
}

const SUBMIT: &str = r#"mutation($p: ID!, $f: String!, $file: Upload!) {
  submitPanel(providerId: $p, facilityNumber: $f, file: $file) { totalRows accepted attachedFromWaitlist alreadyOnPanel }
}"#;

fn multipart(variables: Value, file: &[u8]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "attach-loadtest-3f9a";
    let mut body = Vec::with_capacity(file.len() + 1024);
    let mut part = |headers: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    let operations = json!({ "query": SUBMIT, "variables": variables }).to_string();
    part("Content-Disposition: form-data; name=\"operations\"", operations.as_bytes());
    part("Content-Disposition: form-data; name=\"map\"", br#"{"0":["variables.file"]}"#);
    part("Content-Disposition: form-data; name=\"0\"; filename=\"panel.csv\"\r\nContent-Type: text/csv", file);
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

async fn graphql(client: &reqwest::Client, args: &UploadArgs, query: &str, variables: Value) -> anyhow::Result<()> {
    let mut request = client.post(format!("{}/graphql", args.url.trim_end_matches('/')));
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let r: Value = request.json(&json!({ "query": query, "variables": variables })).send().await?.json().await?;
    anyhow::ensure!(r.get("errors").is_none(), "set-up failed: {r}");
    Ok(())
}

/// Sets up the registry, then submits the files one after the other.
pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1000).contains(&args.uploads)
            && (1..=600).contains(&args.max_seconds)
            && (1..=MAX_ROWS).contains(&args.rows),
        "1 to 1000 uploads and 1 to 600 s a run, of 1 to {MAX_ROWS} rows each"
    );
    let patients = u64::from(args.uploads) * u64::from(args.rows);
    crate::client::check_phn_range("--phn-start", args.phn_start, crate::client::bodies_for(patients))?;
    // A large file takes a while to check: a longer bound than other requests'.
    let client = reqwest::Client::builder()
        .connect_timeout(crate::client::CONNECT_TIMEOUT)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    if let Some(community) = &args.setup {
        let vars = json!({ "p": args.provider, "f": args.facility, "c": community });
        graphql(
            &client,
            &args,
            r#"mutation($p: ID!, $f: String!, $c: String!) {
            upsertClinic(input: { facilityNumber: $f, community: $c, name: "Load Test Clinic", address: "1 Test St",
              medicalDirectorId: $p }) { facilityNumber } }"#,
            vars.clone(),
        )
        .await?;
        graphql(&client, &args, r#"mutation($p: ID!, $c: String!) {
            upsertProvider(input: { id: $p, givenName: "Load", surname: "Test", kind: PHYSICIAN, community: $c }) { id } }"#,
            vars.clone()).await?;
        graphql(
            &client,
            &args,
            r#"mutation($p: ID!, $f: String!) {
            addProviderToClinic(facilityNumber: $f, providerId: $p) { id } }"#,
            vars,
        )
        .await?;
    }
    let mut latencies = Vec::with_capacity(args.uploads as usize);
    let mut errors = 0;
    let mut body = args.phn_start;
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(args.max_seconds);
    for _ in 0..args.uploads {
        if Instant::now() >= deadline {
            break;
        }
        let (csv, next) = panel_csv(args.rows, &args.facility, body);
        body = next;
        let (content_type, payload) =
            multipart(json!({ "p": args.provider, "f": args.facility, "file": null }), csv.as_bytes());
        let mut request = client
            .post(format!("{}/graphql", args.url.trim_end_matches('/')))
            .header("content-type", content_type)
            .body(payload);
        if let Some(t) = &args.token {
            request = request.bearer_auth(t);
        }
        let sent = Instant::now();
        let r: Value = request.send().await?.json().await?;
        let took = sent.elapsed();
        // A file sent again (the same --phn-start) is all ALREADY_ON_PANEL: also a success.
        let report = &r["data"]["submitPanel"];
        let on_panel = ["accepted", "attachedFromWaitlist", "alreadyOnPanel"]
            .iter()
            .map(|k| report[*k].as_u64().unwrap_or(0))
            .sum::<u64>();
        // Only uploads taken whole count as done (and in the latencies): a refused one is an error.
        if r.get("errors").is_some() || on_panel != u64::from(args.rows) {
            errors += 1;
            eprintln!("an upload was not fully accepted: {}", r.to_string().chars().take(300).collect::<String>());
        } else {
            latencies.push(took);
        }
    }
    let s = summarise("panel_upload", latencies, errors, started.elapsed());
    println!("{}  ({} rows per file; next unused PHN body {body})", s.line(), args.rows);
    anyhow::ensure!(s.errors == 0, "some uploads failed");
    Ok(())
}

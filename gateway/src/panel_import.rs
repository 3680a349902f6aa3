//! `attach panel import`: submits a panel file, and prints the rows not taken
//! and a summary. Two ways:
//!
//! - **against a running server** (`--url`, with a token): the file goes as the
//!   GraphQL multipart `submitPanel` upload a provider's EMR would send, so the
//!   server's limits, permissions, audit and live feed all apply;
//! - **into a data directory** (bulk loads before go-live, scripts): it opens
//!   the embedded store itself, so no server may be running on that directory.
//!   The store file is locked by one process at a time; when it is taken, the
//!   error says so and suggests `--url`.
//!
//! Either way the file goes through the same parser, limits and per-row report,
//! and the output is the same.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use attach_actors::domain::{FacilityNumber, ProviderId, Timestamp};
use attach_actors::feed::{Feed, MemoryFeed};
use attach_actors::panel::{Limits, RowReport, RowStatus, SubmissionReport, csv};
use attach_actors::regions::Regions;
use attach_actors::store::Store;
use attach_actors::store::embedded::{EmbeddedOptions, EmbeddedStore, StoreLocked};
use attach_actors::system::AttachSystem;
use serde_json::{Value, json};

use crate::config::Settings;

/// What to import.
#[derive(Debug, Clone)]
pub struct Import<'a> {
    /// The CSV file.
    pub file: &'a Path,
    /// Whose panel.
    pub provider: &'a str,
    /// For which clinic.
    pub facility: &'a str,
    /// File bounds (offline; a server applies its own).
    pub limits: Limits,
}

/// A running Attach to submit to.
#[derive(Debug, Clone)]
pub struct Remote<'a> {
    /// Its base URL (`http://host:port`) or its GraphQL endpoint (`…/graphql`).
    pub url: &'a str,
    /// A bearer token of the provider, their endorsed delegate, or another role allowed to submit.
    pub token: &'a str,
}

fn parse_ids(import: &Import<'_>) -> anyhow::Result<(ProviderId, FacilityNumber)> {
    let provider = ProviderId::parse(import.provider).map_err(|e| anyhow::anyhow!("--provider: {}", e.message))?;
    let facility = FacilityNumber::parse(import.facility).map_err(|e| anyhow::anyhow!("--facility: {}", e.message))?;
    Ok((provider, facility))
}

/// Imports one panel file into the data directory `settings` names, writing the
/// per-row problems and a summary to `out`.
pub async fn run(settings: &Settings, import: Import<'_>, out: &mut impl Write) -> anyhow::Result<SubmissionReport> {
    let (provider, facility) = parse_ids(&import)?;
    let size = std::fs::metadata(import.file).with_context(|| format!("reading {}", import.file.display()))?.len();
    if size > import.limits.max_bytes as u64 {
        anyhow::bail!("{} (raise it with --max-bytes)", csv::FileError::TooLarge { limit: import.limits.max_bytes });
    }
    let bytes = std::fs::read(import.file).with_context(|| format!("reading {}", import.file.display()))?;
    let today = Timestamp::now().to_utc().date_naive();
    let parsed = csv::parse(&bytes, &facility, import.limits, today).map_err(|e| match e {
        csv::FileError::TooManyRows { .. } => anyhow::anyhow!("{e} (raise it with --max-rows)"),
        e => anyhow::anyhow!("{e}"),
    })?;
    drop(bytes);

    let regions = Arc::new(Regions::load(&settings.regions)?);
    let path = settings.data_dir.join("attach.redb");
    // Never make a new, empty store out of a mistyped directory.
    anyhow::ensure!(
        path.exists(),
        "no Attach store in {} (attach.redb): give the data directory of the stopped server",
        settings.data_dir.display()
    );
    let options =
        EmbeddedOptions { cache_bytes: (settings.store_cache_mib as usize) << 20, ..EmbeddedOptions::default() };
    let opened = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, options)).await?;
    let store: Arc<dyn Store> = match opened {
        Ok(store) => Arc::new(store),
        Err(e) if e.downcast_ref::<StoreLocked>().is_some() => anyhow::bail!(
            "the data directory {} is in use: an `attach serve` is running on it. Submit through that server \
             instead with --url http://HOST:PORT --token TOKEN, or stop it first for an offline import",
            settings.data_dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("opening the store in {}", settings.data_dir.display())),
    };
    // As `attach serve` does, before starting any shard: starting one writes it into the
    // store for good, and a store holding another file's communities starts with neither.
    crate::startup::refuse_unknown_shards(store.as_ref(), &regions)
        .await
        .with_context(|| format!("regions file {}", settings.regions.display()))?;
    let feed: Arc<dyn Feed> = Arc::new(MemoryFeed::new(settings.feed.buffer));
    let owner = format!("attach-import-{}", std::process::id());
    let system = AttachSystem::new(regions, store, feed, settings.shard_config(), owner);
    system.start().await?;
    let started = std::time::Instant::now();
    let who = attach_actors::access::Principal::internal("panel-import");
    let result = system.submit_panel(&who, &provider, &facility, parsed).await;
    let elapsed = started.elapsed();
    system.stop().await;
    let report = result.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    print_report(out, &report, elapsed)?;
    Ok(report)
}

const SUBMIT: &str = r#"mutation($p: ID!, $f: String!, $file: Upload!) {
  submitPanel(providerId: $p, facilityNumber: $f, file: $file) { headerSkipped panelSize rows { line status message } }
}"#;

/// The GraphQL endpoint of a URL given as the server's base or as the endpoint itself.
fn endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/graphql") { url.to_string() } else { format!("{url}/graphql") }
}

/// A GraphQL multipart request (the multipart request spec) with `file` as `$file`.
fn multipart(variables: Value, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("attach-panel-import-{:016x}", rand_u64());
    let mut body = Vec::with_capacity(file.len() + 1024);
    let mut part = |headers: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    let operations = json!({ "query": SUBMIT, "variables": variables }).to_string();
    part("Content-Disposition: form-data; name=\"operations\"", operations.as_bytes());
    part("Content-Disposition: form-data; name=\"map\"", br#"{"0":["variables.file"]}"#);
    part("Content-Disposition: form-data; name=\"0\"; filename=\"panel.csv\"\r\nContent-Type: text/csv", file);
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A boundary must not occur in the file; a random one cannot be planted by it.
fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness the fixed part still makes a clash with a CSV file unlikely.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// The report a server answered, as the core's report type.
fn report_of(data: &Value) -> anyhow::Result<SubmissionReport> {
    let bad = || anyhow::anyhow!("the server's answer is not a panel report: {data}");
    let rows = data["rows"].as_array().ok_or_else(bad)?;
    let mut report = SubmissionReport {
        header: data["headerSkipped"].as_bool().ok_or_else(bad)?,
        panel_size: data["panelSize"].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)?,
        rows: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let line = row["line"].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)?;
        let status = row["status"].as_str().and_then(RowStatus::parse).ok_or_else(bad)?;
        report.rows.push(RowReport { line, status, message: row["message"].as_str().map(str::to_string) });
    }
    Ok(report)
}

/// Submits one panel file to a running server as a multipart upload, writing
/// the per-row problems and a summary to `out`, as the offline import does.
pub async fn run_remote(
    remote: Remote<'_>,
    import: Import<'_>,
    out: &mut impl Write,
) -> anyhow::Result<SubmissionReport> {
    let (provider, facility) = parse_ids(&import)?;
    let bytes = std::fs::read(import.file).with_context(|| format!("reading {}", import.file.display()))?;
    let variables = json!({ "p": provider.as_str(), "f": facility.as_str(), "file": null });
    let (content_type, body) = multipart(variables, &bytes);
    drop(bytes);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .context("building the HTTP client")?;
    let url = endpoint(remote.url);
    let started = std::time::Instant::now();
    let response = client
        .post(&url)
        .bearer_auth(remote.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending the file to {url}"))?;
    let status = response.status();
    let text = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
    let elapsed = started.elapsed();
    let answer: Value = serde_json::from_str(&text)
        .map_err(|_| anyhow::anyhow!("{url} answered HTTP {status}, not GraphQL: is it an Attach server?"))?;
    if let Some(error) = answer["errors"].as_array().and_then(|e| e.first()) {
        let code = error["extensions"]["code"].as_str().unwrap_or("ERROR");
        let message = error["message"].as_str().unwrap_or("no message");
        anyhow::bail!("the server refused the file (HTTP {status}): {code}: {message}");
    }
    let report = report_of(&answer["data"]["submitPanel"])?;
    print_report(out, &report, elapsed)?;
    Ok(report)
}

/// The rows not taken, one per line, then a one-line summary.
fn print_report(out: &mut impl Write, report: &SubmissionReport, elapsed: Duration) -> std::io::Result<()> {
    for row in report.rows.iter().filter(|r| !r.status.on_panel()) {
        writeln!(out, "line {}: {}: {}", row.line, row.status.name(), row.message.as_deref().unwrap_or(""))?;
    }
    let on_panel = report.rows.iter().filter(|r| r.status.on_panel()).count();
    writeln!(
        out,
        "{} rows: {} on the panel ({} new, {} from the waitlist, {} already there), {} not taken; \
         panel size {}; {:.2} s ({:.0} rows/s)",
        report.rows.len(),
        on_panel,
        report.count(RowStatus::Accepted),
        report.count(RowStatus::AttachedFromWaitlist),
        report.count(RowStatus::AlreadyOnPanel),
        report.rows.len() - on_panel,
        report.panel_size,
        elapsed.as_secs_f64(),
        report.rows.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_found_from_a_base_url_or_given_whole() {
        assert_eq!(endpoint("http://127.0.0.1:8080"), "http://127.0.0.1:8080/graphql");
        assert_eq!(endpoint("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/graphql");
        assert_eq!(endpoint("https://attach.example.ca/graphql"), "https://attach.example.ca/graphql");
    }

    #[test]
    fn a_servers_report_reads_back_and_prints_as_the_offline_one_does() {
        let data = json!({ "headerSkipped": true, "panelSize": 1002, "rows": [
            { "line": 2, "status": "ACCEPTED", "message": null },
            { "line": 3, "status": "CONFLICT", "message": "on another panel" },
            { "line": 4, "status": "ALREADY_ON_PANEL", "message": null },
        ] });
        let report = report_of(&data).unwrap();
        assert_eq!(report.rows[1], RowReport::because(3, RowStatus::Conflict, "on another panel"));
        let mut out = Vec::new();
        print_report(&mut out, &report, Duration::from_millis(10)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("line 3: CONFLICT: on another panel\n3 rows: 2 on the panel (1 new, 0 from"),
            "{text}"
        );
        assert!(text.contains("1 not taken; panel size 1002"), "{text}");
        assert!(report_of(&json!({ "rows": [{ "line": 1, "status": "MAYBE" }] })).is_err());
    }

    #[test]
    fn the_upload_follows_the_multipart_spec() {
        let (content_type, body) = multipart(json!({ "p": "P10001", "f": "0F111", "file": null }), b"a,b\r\n");
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"")));
        assert!(text.contains(r#"{"0":["variables.file"]}"#));
        assert!(text.contains("filename=\"panel.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\r\n\r\n"));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}

//! `run`: named scenarios in a weighted mix against a target (the province, some
//! health authorities, some communities), bounded by duration and request count,
//! optionally paced to a rate, with live-feed subscribers measuring event latency.
//!
//! Every response is checked: an HTTP 200 carrying GraphQL errors is a failure,
//! counted under its `extensions.code`. The run prints progress as it goes and
//! ends with a table per operation; `--json` and `--html` write the report.

mod recorder;
mod report;
mod scenarios;
mod subscribers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::recorder::Recorder;
use self::scenarios::{Scenario, Target};

/// Options of `run`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Base URL of a running Attach, or several nodes of one cluster separated
    /// by commas: requests (and subscribers) go to each in turn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// What to load: `province`, or a comma-separated list of `ha:CODE` and
    /// `community:CODE` (e.g. `ha:IHA,community:233`).
    #[arg(long, default_value = "province")]
    pub target: String,
    /// Scenario weights: `register`, `match`, `waitlist`, `panel`, `stats`, `upload`,
    /// `move`, `update` (e.g. `register=5,waitlist=10,match=1`). Scenarios left out
    /// do not run. `move` and `update` register a household first (counted as
    /// `registerHousehold`), then move it or add a newborn (with `--token`).
    #[arg(long, default_value = "register=4,waitlist=10,match=1,panel=3,stats=2")]
    pub mix: String,
    /// Total requests per second to aim for (0: as fast as the workers go).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Concurrent HTTP workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Length of the run in seconds (bounded to 600).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The most scenarios the run starts (a second bound). Each sends one
    /// request, except `move` and `update`, which register a household first:
    /// two.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Live-feed subscribers (over graphql-transport-ws) spread over the target's communities.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// Bearer token for coordinator work: matching, waitlists, statistics, the feed
    /// (a coordinator whose scope covers the target). Also `ATTACH_TOKEN`.
    #[arg(long, env = "ATTACH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Bearer token for panel reads (support, or the provider). Also `ATTACH_PANEL_TOKEN`.
    #[arg(long, env = "ATTACH_PANEL_TOKEN", hide_env_values = true)]
    pub panel_token: Option<String>,
    /// Bearer token of the provider (or their delegate) whose panel `upload` submits to.
    #[arg(long, env = "ATTACH_UPLOAD_TOKEN", hide_env_values = true)]
    pub upload_token: Option<String>,
    /// The provider `upload` submits panels for.
    #[arg(long)]
    pub upload_provider: Option<String>,
    /// The facility number `upload` files name (one of the provider's clinics).
    #[arg(long)]
    pub upload_facility: Option<String>,
    /// Patients per uploaded file.
    #[arg(long, default_value_t = 200)]
    pub upload_rows: u32,
    /// First PHN body for uploaded patients (apart from the registrations' range).
    #[arg(long, default_value_t = 70_000_000)]
    pub upload_phn_start: u32,
    /// First PHN body for registrations; pick a range no earlier run used.
    #[arg(long, default_value_t = 40_000_000)]
    pub phn_start: u32,
    /// First PHN body for the newborns `update` adds (apart from the other ranges).
    #[arg(long, default_value_t = 25_000_000)]
    pub newborn_phn_start: u32,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 5)]
    pub progress: u64,
    /// Seed of the scenario choice (the same seed picks the same sequence).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page with charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// The base URLs `--url` names (one, or several separated by commas).
pub fn base_urls(url: &str) -> Vec<String> {
    url.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect()
}

/// Parses `name=weight,...` into scenarios with positive weights.
pub fn parse_mix(mix: &str) -> anyhow::Result<Vec<(Scenario, u32)>> {
    let mut out = Vec::new();
    for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').with_context(|| format!("`{part}` is not name=weight"))?;
        let scenario = Scenario::parse(name.trim())?;
        let weight: u32 = weight.trim().parse().with_context(|| format!("`{weight}` is not a whole number"))?;
        ensure!(!out.iter().any(|(s, _)| *s == scenario), "`{name}` appears twice in the mix");
        if weight > 0 {
            out.push((scenario, weight));
        }
    }
    ensure!(!out.is_empty(), "the mix names no scenario with a positive weight");
    Ok(out)
}

/// Picks scenarios by weight.
struct Chooser {
    cumulative: Vec<(u32, Scenario)>,
    total: u32,
}

impl Chooser {
    fn new(mix: &[(Scenario, u32)]) -> Self {
        let mut total = 0;
        let cumulative = mix
            .iter()
            .map(|(s, w)| {
                total += w;
                (total, *s)
            })
            .collect();
        Chooser { cumulative, total }
    }

    fn pick(&self, rng: &mut StdRng) -> Scenario {
        let x = rng.random_range(0..self.total);
        self.cumulative.iter().find(|(upto, _)| x < *upto).map(|(_, s)| *s).unwrap_or(self.cumulative[0].1)
    }
}

/// Runs the mix and writes the reports.
pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!((1..=600).contains(&args.duration), "--duration is 1 to 600 s: runs are bounded");
    ensure!(args.max_requests >= 1, "--max-requests is at least 1: a run of none measures nothing");
    crate::client::check_concurrency(args.concurrency)?;
    ensure!(args.subscribers <= 10_000, "at most 10,000 subscribers");
    ensure!((1..=100_000).contains(&args.upload_rows), "an upload is 1 to 100,000 rows");
    // Each range must hold one ticket's patients at least; a ticket past its end
    // is counted as a failure (`PHN_RANGE_EXHAUSTED`), never skipped as done.
    for (flag, start, one) in [
        ("--phn-start", args.phn_start, 13),
        ("--newborn-phn-start", args.newborn_phn_start, 13),
        ("--upload-phn-start", args.upload_phn_start, 13 * u64::from(args.upload_rows)),
    ] {
        crate::client::check_phn_range(flag, start, one)?;
    }
    let mut mix = parse_mix(&args.mix)?;
    if args.panel_token.is_none() && mix.iter().any(|(s, _)| *s == Scenario::Panel) {
        // Every read would fail: panels are their providers' (and support's) to read.
        eprintln!(
            "warning: the mix's `panel` scenario is left out: it reads providers' panels, which needs --panel-token \
             (a provider's or support's token)"
        );
        mix.retain(|(s, _)| *s != Scenario::Panel);
        ensure!(!mix.is_empty(), "the mix names only `panel`, which needs --panel-token");
    }
    // A report that cannot be written is found now, not after the run.
    for path in [&args.json, &args.html].into_iter().flatten() {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        ensure!(dir.is_none_or(|d| d.is_dir()), "cannot write a report to {}: no such directory", path.display());
    }
    let recorder = Arc::new(Recorder::new());
    // Each request bounded, so a server that stops answering cannot hold the run past its duration.
    let client = crate::client::http(None, args.concurrency)?;
    let target = Target::resolve(&client, &args, &recorder).await?;
    if mix.iter().any(|(s, _)| *s == Scenario::Upload)
        && (args.upload_provider.is_none() || args.upload_facility.is_none())
    {
        bail!("the mix uploads panels: name --upload-provider and --upload-facility (and --upload-token)");
    }
    if mix.iter().any(|(s, _)| *s == Scenario::Move) && target.communities.len() < 2 {
        bail!("the mix moves households: the target needs at least two communities");
    }
    if mix.iter().any(|(s, _)| *s == Scenario::Panel) && target.providers.is_empty() {
        bail!("the mix reads panels but the target has no providers (seed it with --demo, or leave `panel` out)");
    }
    let named: Vec<String> = mix.iter().map(|(s, w)| format!("{}={w}", s.name())).collect();
    println!(
        "attach-loadtest run: {} communities, {} providers, mix {}, {} workers, {} s, rate {}",
        target.communities.len(),
        target.providers.len(),
        named.join(","),
        args.concurrency,
        args.duration,
        if args.rate == 0 { "unpaced".to_string() } else { format!("{}/s", args.rate) }
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let feed = subscribers::start(&args, &target, recorder.clone(), deadline).await?;
    let target = Arc::new(target);
    let chooser = Arc::new(Chooser::new(&mix));
    let progress = report::progress(recorder.clone(), started, args.progress);

    // The pacer hands out numbered tickets; workers stop at the deadline or
    // when `max_requests` tickets are gone.
    let (tickets, rx) = async_channel(args.concurrency * 2);
    let pacer = tokio::spawn({
        let rate = args.rate;
        let max = args.max_requests;
        async move {
            let mut interval = (rate > 0).then(|| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            for n in 0..max {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(i) = interval.as_mut() {
                    i.tick().await;
                }
                if tickets.send(n).await.is_err() {
                    break;
                }
            }
        }
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (rx, client, target, chooser, recorder) =
                (rx.clone(), client.clone(), target.clone(), chooser.clone(), recorder.clone());
            let args = args.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
                while let Ok(n) = rx.recv().await {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let scenario = chooser.pick(&mut rng);
                    scenarios::send(scenario, n, &client, &target, &args, &recorder, &mut rng).await;
                }
            })
        })
        .collect();
    drop(rx);
    for w in workers {
        w.await?;
    }
    pacer.abort();
    let wall = started.elapsed();
    // No progress line after the deadline, while the subscribers take their last events.
    progress.abort();
    let endpoint = format!("{}/graphql", base_urls(&args.url).first().map_or("", String::as_str));
    let feed_summary = subscribers::finish(feed, &client, &endpoint, args.token.as_deref()).await;

    let report = report::Report::build(&args, &recorder, wall, feed_summary);
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.html()).with_context(|| format!("writing {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    // A run in which nothing succeeded is a failed run, for scripts that check the exit code.
    ensure!(report.ok > 0 || report.failed == 0, "every one of the {} scenario requests failed", report.failed);
    Ok(())
}

/// A small bounded multi-consumer channel over tokio's mpsc and a mutex.
fn async_channel(bound: usize) -> (tokio::sync::mpsc::Sender<u64>, Tickets) {
    let (tx, rx) = tokio::sync::mpsc::channel(bound.max(1));
    (tx, Tickets(Arc::new(tokio::sync::Mutex::new(rx))))
}

/// The receiving side, shared by the workers.
#[derive(Clone)]
struct Tickets(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>>);

impl Tickets {
    async fn recv(&self) -> Result<u64, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_refuse_nonsense() {
        assert_eq!(
            base_urls("http://127.0.0.1:18401/, http://127.0.0.1:18402"),
            ["http://127.0.0.1:18401", "http://127.0.0.1:18402"]
        );
        assert_eq!(base_urls("http://a:1"), ["http://a:1"]);
        let mix = parse_mix("register=5, waitlist=10,match=0").unwrap();
        assert_eq!(mix, vec![(Scenario::Register, 5), (Scenario::Waitlist, 10)]);
        assert!(parse_mix("dance=1").is_err());
        assert!(parse_mix("register").is_err());
        assert!(parse_mix("register=1,register=2").is_err());
        assert!(parse_mix("register=0").is_err());
    }

    #[test]
    fn the_chooser_follows_the_weights() {
        let chooser = Chooser::new(&[(Scenario::Register, 1), (Scenario::Waitlist, 3)]);
        let mut rng = StdRng::seed_from_u64(7);
        let waitlist = (0..10_000).filter(|_| chooser.pick(&mut rng) == Scenario::Waitlist).count();
        assert!((7_000..8_000).contains(&waitlist), "{waitlist} of 10,000 were waitlist reads");
    }
}

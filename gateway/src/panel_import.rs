//! `attach panel import`: submits a panel file straight into a data directory,
//! for bulk loads (a province's panels before go-live) and scripts.
//!
//! It opens the data directory's store itself, so the server must not be
//! running on that directory (the store file is locked by one process at a
//! time; the error says so). Each file goes through exactly the path an upload
//! does: the same parser, limits and per-row report, the same shard actors.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use attach_actors::domain::{FacilityNumber, ProviderId, Timestamp};
use attach_actors::feed::{Feed, MemoryFeed};
use attach_actors::panel::{Limits, SubmissionReport, csv};
use attach_actors::regions::Regions;
use attach_actors::store::Store;
use attach_actors::store::embedded::{EmbeddedOptions, EmbeddedStore};
use attach_actors::system::AttachSystem;

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
    /// File bounds.
    pub limits: Limits,
}

/// Imports one panel file into the data directory `settings` names, writing the
/// per-row problems and a summary to `out`.
pub async fn run(settings: &Settings, import: Import<'_>, out: &mut impl Write) -> anyhow::Result<SubmissionReport> {
    let provider = ProviderId::parse(import.provider).map_err(|e| anyhow::anyhow!("--provider: {}", e.message))?;
    let facility = FacilityNumber::parse(import.facility).map_err(|e| anyhow::anyhow!("--facility: {}", e.message))?;
    let size = std::fs::metadata(import.file).with_context(|| format!("reading {}", import.file.display()))?.len();
    if size > import.limits.max_bytes as u64 {
        anyhow::bail!("{} (raise it with --max-bytes)", csv::FileError::TooLarge { limit: import.limits.max_bytes });
    }
    let bytes = std::fs::read(import.file).with_context(|| format!("reading {}", import.file.display()))?;
    let today = Timestamp::now().to_utc().date_naive();
    let parsed = csv::parse(&bytes, &facility, import.limits, today).map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(bytes);

    let regions = Arc::new(Regions::load(&settings.regions)?);
    let path = settings.data_dir.join("attach.redb");
    let options =
        EmbeddedOptions { cache_bytes: (settings.store_cache_mib as usize) << 20, ..EmbeddedOptions::default() };
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, options)).await?.with_context(|| {
            format!(
                "opening the store in {}: is `attach serve` running on this data directory? Stop it first",
                settings.data_dir.display()
            )
        })?,
    );
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
        report.count(attach_actors::panel::RowStatus::Accepted),
        report.count(attach_actors::panel::RowStatus::AttachedFromWaitlist),
        report.count(attach_actors::panel::RowStatus::AlreadyOnPanel),
        report.rows.len() - on_panel,
        report.panel_size,
        elapsed.as_secs_f64(),
        report.rows.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    )?;
    Ok(report)
}

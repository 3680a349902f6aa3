//! The run's report: a table in the terminal, JSON, and a self-contained HTML
//! page with charts (inline SVG, no scripts, nothing fetched).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Args;
use super::recorder::Recorder;
use super::subscribers::FeedSummary;
use crate::stats::summarise;

/// One operation's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    /// The operation.
    pub operation: String,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second over the run.
    pub rps: f64,
    /// Latency percentiles of successes, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// `[second, ok, failed]` for each second of the run.
    pub per_second: Vec<[u64; 3]>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server.
    pub url: String,
    /// What was loaded.
    pub target: String,
    /// The scenario weights.
    pub mix: String,
    /// Workers.
    pub concurrency: usize,
    /// Requests per second aimed for (0: unpaced).
    pub rate: u32,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// Every GraphQL request sent, set-up included (compare with the server's
    /// `attach_graphql_requests_total`).
    pub graphql_requests: u64,
    /// Successful scenario requests.
    pub ok: u64,
    /// Failed scenario requests.
    pub failed: u64,
    /// Per operation.
    pub operations: Vec<OperationReport>,
    /// The live-feed subscribers.
    pub feed: FeedSummary,
}

impl Report {
    /// Builds the report from what was recorded.
    pub fn build(args: &Args, recorder: &Recorder, wall: Duration, feed: FeedSummary) -> Report {
        let operations: Vec<OperationReport> = recorder
            .snapshot()
            .into_iter()
            .map(|(name, op)| {
                let failed = op.errors.values().sum();
                let s = summarise(&name, op.latencies, failed, wall);
                OperationReport {
                    operation: name,
                    ok: s.ok,
                    failed,
                    errors: op.errors,
                    rps: s.rps,
                    p50_ms: s.p50_ms,
                    p90_ms: s.p90_ms,
                    p99_ms: s.p99_ms,
                    max_ms: s.max_ms,
                    per_second: op.per_second.into_iter().map(|(sec, (ok, f))| [sec, ok, f]).collect(),
                }
            })
            .collect();
        let scenario = |o: &&OperationReport| o.operation != super::recorder::FEED_EVENT;
        Report {
            url: args.url.clone(),
            target: args.target.clone(),
            mix: args.mix.clone(),
            concurrency: args.concurrency,
            rate: args.rate,
            seconds: wall.as_secs_f64(),
            graphql_requests: recorder.graphql_requests.load(std::sync::atomic::Ordering::Relaxed),
            ok: operations.iter().filter(scenario).map(|o| o.ok).sum(),
            failed: operations.iter().filter(scenario).map(|o| o.failed).sum(),
            operations,
            feed,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}  errors",
            "operation", "req/s", "ok", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for o in &self.operations {
            let errors: Vec<String> = o.errors.iter().map(|(c, n)| format!("{c}={n}")).collect();
            let _ = writeln!(
                out,
                "{:<20} {:>9.1} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                o.operation,
                o.rps,
                o.ok,
                o.failed,
                o.p50_ms,
                o.p90_ms,
                o.p99_ms,
                o.max_ms,
                errors.join(" ")
            );
        }
        let _ = write!(
            out,
            "{:.1} s, {} GraphQL requests ({} ok, {} failed); feed: {} subscribers ({} refused), {} deliveries, {} missed \
             notices, {} never delivered nor told missed",
            self.seconds,
            self.graphql_requests,
            self.ok,
            self.failed,
            self.feed.subscribers,
            self.feed.refused,
            self.feed.deliveries,
            self.feed.missed_notices,
            self.feed.missing
        );
        out.push_str(&self.feed.unchecked_note());
        out
    }

    /// A self-contained HTML page: summary, a table, throughput over time and
    /// latency percentiles as SVG charts.
    pub fn html(&self) -> String {
        let mut rows = String::new();
        for o in &self.operations {
            let errors: Vec<String> = o.errors.iter().map(|(c, n)| format!("{}&nbsp;{n}", escape(c))).collect();
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
                escape(&o.operation),
                o.rps,
                o.ok,
                o.failed,
                o.p50_ms,
                o.p90_ms,
                o.p99_ms,
                o.max_ms,
                errors.join(", ")
            );
        }
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Attach load test</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
svg {{ background: #fafafa; border: 1px solid #ddd; margin: .5rem 0; }}
.legend span {{ display: inline-block; margin-right: 1rem; }}
</style></head><body>
<h1>Attach load test</h1>
<p>{url} &middot; target <b>{target}</b> &middot; mix <code>{mix}</code> &middot; {concurrency} workers &middot; rate {rate} &middot; {seconds:.1} s</p>
<p>{requests} GraphQL requests: {ok} succeeded, {failed} failed. Live feed: {subs} subscribers ({refused} refused), {deliveries} deliveries, {missed} missed notices, {missing} events never delivered nor told missed{unchecked}.</p>
<h2>Operations</h2>
<table><tr><th>operation</th><th>req/s</th><th>ok</th><th>failed</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>errors by code</th></tr>
{rows}</table>
<h2>Successful requests per second</h2>
{throughput}
<h2>Latency percentiles (ms)</h2>
{latency}
</body></html>
"#,
            url = escape(&self.url),
            target = escape(&self.target),
            mix = escape(&self.mix),
            concurrency = self.concurrency,
            rate = if self.rate == 0 { "unpaced".to_string() } else { format!("{}/s", self.rate) },
            seconds = self.seconds,
            requests = self.graphql_requests,
            ok = self.ok,
            failed = self.failed,
            subs = self.feed.subscribers,
            refused = self.feed.refused,
            deliveries = self.feed.deliveries,
            missed = self.feed.missed_notices,
            missing = self.feed.missing,
            unchecked = self.feed.unchecked_note(),
            throughput = self.throughput_chart(),
            latency = self.latency_chart(),
        )
    }

    fn throughput_chart(&self) -> String {
        let last = self.operations.iter().flat_map(|o| o.per_second.iter().map(|p| p[0])).max().unwrap_or(0).max(1);
        let top = self.operations.iter().flat_map(|o| o.per_second.iter().map(|p| p[1])).max().unwrap_or(0).max(1);
        let x = |s: u64| PAD + (W - 2.0 * PAD) * s as f64 / last as f64;
        let y = |v: u64| H - PAD - (H - 2.0 * PAD) * v as f64 / top as f64;
        let mut svg = format!(r#"<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">"#);
        axes(&mut svg, W, H, PAD, &format!("{top}/s"), &format!("{last} s"));
        let mut legend = String::new();
        for (i, o) in self.operations.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = o.per_second.iter().map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1]))).collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            let _ = write!(legend, r#"<span style="color:{colour}">&#9632; {}</span>"#, escape(&o.operation));
        }
        svg.push_str("</svg>");
        format!(r#"{svg}<div class="legend">{legend}</div>"#)
    }

    fn latency_chart(&self) -> String {
        let top = self.operations.iter().map(|o| o.p99_ms).fold(0.0_f64, f64::max).max(0.001);
        let n = self.operations.len().max(1) as f64;
        let group = (W - 2.0 * PAD) / n;
        let bar = group / 4.0;
        let mut svg = format!(r#"<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">"#);
        axes(&mut svg, W, H, PAD, &format!("{top:.1} ms"), "");
        for (i, o) in self.operations.iter().enumerate() {
            for (j, (value, colour)) in
                [(o.p50_ms, "#4c78a8"), (o.p90_ms, "#f58518"), (o.p99_ms, "#e45756")].iter().enumerate()
            {
                let h = (H - 2.0 * PAD) * value / top;
                let left = PAD + group * i as f64 + bar * (j as f64 + 0.5);
                let _ = write!(
                    svg,
                    r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{value:.2} ms</title></rect>"#,
                    H - PAD - h,
                    bar * 0.9
                );
            }
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                PAD + group * (i as f64 + 0.5),
                H - PAD + 14.0,
                escape(&o.operation)
            );
        }
        svg.push_str("</svg>");
        format!(
            r#"{svg}<div class="legend"><span style="color:#4c78a8">&#9632; p50</span><span style="color:#f58518">&#9632; p90</span><span style="color:#e45756">&#9632; p99</span></div>"#
        )
    }
}

/// Chart width, height and margin, in SVG units.
const W: f64 = 800.0;
const H: f64 = 260.0;
const PAD: f64 = 40.0;

const COLOURS: [&str; 8] = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#9d755d"];

fn axes(svg: &mut String, w: f64, h: f64, pad: f64, top_label: &str, right_label: &str) {
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#888"/><line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><text x="4" y="{t}" font-size="11">{top}</text><text x="{r}" y="{lb}" font-size="11" text-anchor="end">{right}</text>"##,
        b = h - pad,
        r = w - pad,
        t = pad - 6.0,
        lb = h - pad + 28.0,
        top = escape(top_label),
        right = escape(right_label),
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Prints a progress line every `every` seconds until aborted.
pub fn progress(recorder: Arc<Recorder>, started: Instant, every: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        let mut last = (0u64, 0u64);
        loop {
            tick.tick().await;
            let (ok, failed) = recorder.totals();
            let rate = (ok + failed - last.0 - last.1) as f64 / every as f64;
            println!(
                "[{:>5.0} s] {ok} ok, {failed} failed, {rate:.0} req/s over the last {every} s",
                started.elapsed().as_secs_f64()
            );
            last = (ok, failed);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_html_report_is_self_contained_and_escaped() {
        let report = Report {
            url: "http://127.0.0.1:1".into(),
            target: "ha:<IHA>".into(),
            mix: "register=1".into(),
            concurrency: 2,
            rate: 0,
            seconds: 2.0,
            graphql_requests: 3,
            ok: 2,
            failed: 1,
            operations: vec![OperationReport {
                operation: "registerHousehold".into(),
                ok: 2,
                failed: 1,
                errors: BTreeMap::from([("OVERLOADED".to_string(), 1)]),
                rps: 1.0,
                p50_ms: 1.0,
                p90_ms: 2.0,
                p99_ms: 3.0,
                max_ms: 4.0,
                per_second: vec![[0, 1, 0], [1, 1, 1]],
            }],
            feed: FeedSummary::default(),
        };
        let html = report.html();
        assert!(html.contains("<svg") && html.contains("<polyline") && html.contains("<rect"));
        assert!(html.contains("ha:&lt;IHA&gt;") && !html.contains("<IHA>"));
        assert!(!html.contains("<script") && !html.contains("http://cdn"), "nothing fetched, nothing run");
        assert!(report.table().contains("OVERLOADED=1"));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["operations"][0]["errors"]["OVERLOADED"], 1);
    }
}

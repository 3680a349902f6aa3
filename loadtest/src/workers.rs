//! The worker pool every HTTP scenario shares: `concurrency` tasks send
//! requests until the deadline or until `max` have been taken, timing each.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after the deadline a request in flight may still finish.
pub const GRACE: Duration = Duration::from_secs(5);

/// Runs the pool. `request(worker, n)` prepares the `n`th request (or `None`
/// to skip that number) and returns the future that sends it, answering
/// whether it succeeded; only the sending is timed.
/// Returns the latencies of successes and the count of failures. A request
/// still unanswered [`GRACE`] after the deadline is given up and counted as a
/// failure, so a server that stops answering cannot hold the run.
pub async fn run<F, Fut>(
    concurrency: usize,
    deadline: Instant,
    max: u64,
    request: F,
) -> anyhow::Result<(Vec<Duration>, u64)>
where
    F: Fn(usize, u64) -> Option<Fut> + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let cut_off = tokio::time::Instant::from_std(deadline) + GRACE;
    let taken = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (taken, request) = (taken.clone(), request.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let n = taken.fetch_add(1, Ordering::Relaxed);
                    if n >= max {
                        break;
                    }
                    let Some(send) = request(worker, n) else { continue };
                    let t = Instant::now();
                    match tokio::time::timeout_at(cut_off, send).await {
                        Ok(true) => latencies.push(t.elapsed()),
                        // A pause, so a server that went away does not make the worker spin.
                        Ok(false) => {
                            errors += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
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
    Ok((latencies, errors))
}

//! The HTTP server loop: axum's own `serve` (accept, a task per connection,
//! graceful shutdown that waits for the connections), with deadlines.
//!
//! axum's `serve` installs no timer in hyper, and hyper's deadline for reading
//! a request's headers does nothing without one. A tester held connections
//! open indefinitely by sending half a request line, or nothing: 300 of them
//! stopped a server with 256 file descriptors from answering anyone. Here a
//! connection must send a request's whole head within
//! [`Deadlines::header_read`] (which also closes a kept-alive connection idle
//! that long), a request body is read within a deadline of its own (in the
//! GraphQL handler), and at most [`Deadlines::max_connections`] are open at
//! once: the ones over are closed as soon as they are accepted, so the
//! process keeps file descriptors for its store and its peers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{trace, warn};

/// How long a connection may take, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For a request's head (its line and headers), from the first byte the
    /// connection waits for; also how long a kept-alive connection may idle.
    pub header_read: Duration,
    /// Connections open at once, WebSocket ones included (an upgraded
    /// connection keeps its [`Slot`] until the socket closes).
    pub max_connections: usize,
}

/// File descriptors kept for the store, the journal, peers and Redis, below
/// the process's limit, when connections are capped to fit under it.
const KEPT_DESCRIPTORS: u64 = 256;

impl Deadlines {
    /// `max_connections` as configured, or fewer when the process may not open
    /// that many files (its soft `RLIMIT_NOFILE`, read from `limits`, the text of
    /// `/proc/self/limits`), with 256 descriptors to spare: past that, the
    /// kernel refuses every new socket, whoever opens it, and the cap would never
    /// be reached (a verifier's server with the defaults ran out of descriptors
    /// first). Answers the cap and, when lowered, why.
    pub fn fitted(max_connections: usize, limits: Option<&str>) -> (usize, Option<String>) {
        let soft = limits.and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<u64>().ok()
        });
        match soft {
            Some(files) if (max_connections as u64).saturating_add(KEPT_DESCRIPTORS) > files => {
                let fitted = files.saturating_sub(KEPT_DESCRIPTORS).max(1) as usize;
                let why = format!(
                    "limits.max_connections ({max_connections}) is more than this process may open (its open-file \
                     limit is {files}, {KEPT_DESCRIPTORS} of them kept for the store and peers): at most {fitted} \
                     connections are kept; raise the limit (ulimit -n, LimitNOFILE) to keep more"
                );
                (fitted, Some(why))
            }
            _ => (max_connections, None),
        }
    }
}

/// A connection's place among [`Deadlines::max_connections`], held while it is
/// open. Each request carries it (as an extension), so a WebSocket upgrade
/// keeps it for as long as the socket lives: hyper's connection ends at the upgrade.
#[derive(Clone)]
pub struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// The router for one connection, which knows its peer's address (what
/// `into_make_service_with_connect_info` gave the handlers) and holds its slot.
#[derive(Clone)]
struct Connection {
    router: Router,
    peer: SocketAddr,
    slot: Slot,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Connection {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Router as tower_service::Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.slot.clone());
        // A router is always ready: it only routes.
        tower_service::Service::call(&mut self.router.clone(), request)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// the open connections to finish their requests (upgraded ones close
/// themselves when told). `tune` sets each accepted socket's options.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    deadlines: Deadlines,
    tune: impl Fn(&TcpStream) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    let open = Arc::new(Semaphore::new(deadlines.max_connections.max(1)));
    // Told at most once a minute while connections are refused.
    let mut told_full: Option<std::time::Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: as axum did, told, and tried again in a second.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if told_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                let max = deadlines.max_connections;
                warn!(max, "connections refused: as many are open as limits.max_connections allows");
                told_full = Some(std::time::Instant::now());
            }
            drop(tcp);
            continue;
        };
        tune(&tcp);
        let connection = Connection { router: router.clone(), peer, slot: Slot { _permit: Arc::new(permit) } };
        let (signal_tx, close_rx) = (signal_tx.clone(), close_rx.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(deadlines.header_read);
            let conn = builder.serve_connection(TokioIo::new(tcp), connection).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let mut told = std::pin::pin!(signal_tx.closed().fuse());
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            trace!(error = %e, "a connection ended with an error");
                        }
                        break;
                    }
                    () = &mut told => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Deadlines;

    #[test]
    fn the_cap_fits_under_the_open_file_limit() {
        let limits = |soft: &str| {
            format!(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max processes             95361                95361                processes\n\
                 Max open files            {soft}                 524288               files\n"
            )
        };
        assert_eq!(Deadlines::fitted(16_384, Some(&limits("1024"))).0, 768);
        let (cap, why) = Deadlines::fitted(16_384, Some(&limits("1024")));
        assert!(cap == 768 && why.is_some_and(|w| w.contains("1024")));
        assert_eq!(Deadlines::fitted(16_384, Some(&limits("65536"))), (16_384, None));
        assert_eq!(Deadlines::fitted(16_384, Some(&limits("unlimited"))), (16_384, None));
        assert_eq!(Deadlines::fitted(100, Some(&limits("100"))).0, 1, "never none");
        assert_eq!(Deadlines::fitted(16_384, None), (16_384, None), "no /proc: as configured");
    }
}

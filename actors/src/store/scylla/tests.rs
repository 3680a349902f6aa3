//! What needs no server (contact points, batch splitting, timestamps) and the
//! conformance suite against a live cluster when `SCYLLA_URI` is set:
//!
//! ```sh
//! SCYLLA_URI=scylla://127.0.0.1:9042 cargo test -p attach-actors --lib store::scylla -- --test-threads 4
//! ```
//!
//! Each check runs in its own keyspace (`attach_test_<random>`), dropped after.
//! `SCYLLA_REPLICATION` sets its replication (`datacenter1:3`; default
//! `datacenter1:1`, which any cluster can serve).

use scylla::value::CqlValue;

use super::*;

#[test]
fn contact_points_come_from_the_uri() {
    assert_eq!(parse_uri("scylla://127.0.0.1:9042").unwrap(), ["127.0.0.1:9042"]);
    assert_eq!(parse_uri("scylla://db1,db2:19042,db3/").unwrap(), ["db1:9042", "db2:19042", "db3:9042"]);
    for bad in ["redis://x", "scylla://", "scylla://a,,b", "scylla://a:port", "scylla://u@a", "scylla://a/ks"] {
        assert!(parse_uri(bad).is_err(), "{bad}");
    }
    assert!(is_scylla_uri("scylla://a") && !is_scylla_uri("embedded"));
}

#[test]
fn large_commits_split_in_order_and_small_ones_do_not() {
    let row = |n: usize| vec![CqlValue::Blob(vec![0; n])];
    let small: Vec<_> = (0..10).map(|i| (i, row(100))).collect();
    assert_eq!(chunks(small).len(), 1);
    // Each row counts its overhead as ScyllaDB sizes a batch, not only its values.
    let per_batch = (MAX_BATCH_BYTES / (ROW_OVERHEAD + 10)).min(MAX_BATCH_ROWS);
    assert!(per_batch < MAX_BATCH_BYTES / 10);
    let many: Vec<_> = (0..2 * per_batch + 50).map(|i| (i, row(10))).collect();
    let split = chunks(many);
    assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [per_batch, per_batch, 50]);
    let order: Vec<usize> = split.into_iter().flatten().map(|(i, _)| i).collect();
    assert_eq!(order, (0..2 * per_batch + 50).collect::<Vec<_>>(), "events must stay last");
    let third = MAX_BATCH_BYTES / 3 + 1;
    let big: Vec<_> = (0..5).map(|i| (i, row(third))).collect();
    assert_eq!(chunks(big).iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let huge = vec![(0, row(MAX_BATCH_BYTES * 2))];
    assert_eq!(chunks(huge).len(), 1, "a single oversized row still goes, alone");
}

#[test]
fn options_default_to_a_local_node_and_a_lease_that_fits_two_timeouts() {
    let o = ScyllaOptions::default();
    assert_eq!(o.nodes, ["127.0.0.1:9042"]);
    assert!(o.request_timeout * 2 <= o.lease / 3);
    check_keyspace(&o.keyspace).unwrap();
}

/// Conformance against a live cluster; skipped without `SCYLLA_URI`.
mod live {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use futures::future::BoxFuture;
    use scylla::client::session::Session;

    use super::super::{ScyllaOptions, ScyllaStore, connect_session, drop_keyspace, migrate, parse_uri};
    use crate::store::Store;
    use crate::store::conformance::Harness;

    /// A fresh keyspace on the cluster, dropped when the check ends.
    struct LiveHarness {
        options: ScyllaOptions,
        admin: Session,
    }

    impl LiveHarness {
        async fn fresh() -> Option<Self> {
            let Ok(uri) = std::env::var("SCYLLA_URI") else {
                eprintln!("skipped: SCYLLA_URI not set");
                return None;
            };
            let mut suffix = [0u8; 8];
            getrandom::fill(&mut suffix).expect("the operating system's random generator is available");
            let options = ScyllaOptions {
                nodes: parse_uri(&uri).expect("SCYLLA_URI is scylla://HOST:PORT[,HOST...]"),
                keyspace: format!("attach_test_{:016x}", u64::from_le_bytes(suffix)),
                replication: replication(),
                // Short, so expiry checks wait seconds, not a production lease.
                request_timeout: Duration::from_secs(1),
                lease: Duration::from_secs(6),
            };
            let admin = connect_session(&options).await.expect("SCYLLA_URI is reachable");
            migrate(&admin, &options.keyspace, &options.replication).await.expect("the schema applies");
            Some(LiveHarness { options, admin })
        }
    }

    fn replication() -> BTreeMap<String, u32> {
        let spec = std::env::var("SCYLLA_REPLICATION").unwrap_or_else(|_| "datacenter1:1".into());
        spec.split(',')
            .map(|dc| {
                let (name, factor) = dc.split_once(':').expect("SCYLLA_REPLICATION is DC:FACTOR[,DC:FACTOR]");
                (name.trim().to_string(), factor.trim().parse().expect("a replication factor is a number"))
            })
            .collect()
    }

    impl Harness for LiveHarness {
        fn open(&self) -> BoxFuture<'_, anyhow::Result<Arc<dyn Store>>> {
            Box::pin(async move { Ok(Arc::new(ScyllaStore::connect(self.options.clone()).await?) as Arc<dyn Store>) })
        }

        fn pass_time(&self, by: Duration) -> BoxFuture<'_, ()> {
            // The leases expire on the server, by its clock: only waiting will do.
            Box::pin(tokio::time::sleep(by))
        }
    }

    impl Drop for LiveHarness {
        fn drop(&mut self) {
            let (admin, keyspace) = (&self.admin, self.options.keyspace.clone());
            // The conformance tests run on a multi-threaded runtime, where blocking here is allowed.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    if let Err(e) = drop_keyspace(admin, &keyspace).await {
                        eprintln!("could not drop test keyspace {keyspace}: {e:#}");
                    }
                })
            });
        }
    }

    crate::store_conformance_tests!(match LiveHarness::fresh().await {
        Some(harness) => harness,
        None => return,
    });
}

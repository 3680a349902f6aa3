//! Two Attach nodes sharing one embedded store, in one process, for measuring
//! what forwarding a request to the node holding its shard costs (DECISIONS
//! 28). Only one process may open an embedded store, so this is the one way
//! to run two nodes on one machine without ScyllaDB.
//!
//! ```sh
//! cargo run --release -p attach-gateway --example two_nodes -- /tmp/two/data province
//! cargo run --release -p attach-gateway --example two_nodes -- /tmp/two/data province stand-in
//! ```
//!
//! With `stand-in`, B starts only once A stands in for every shard (after a
//! lease), so B must be handed its shards back: the time from B's start to its
//! readiness is printed.
//!
//! Node A (`127.0.0.1:18401`) seeds the demo on first start and takes every
//! shard; node B (`127.0.0.1:18402`) then starts and is handed the shards
//! rendezvous hashing gives it. It prints which node holds community 233, then
//! serves until Ctrl-C. Rate limits are off. Tokens: `attach token --data-dir DIR`.
//! There is no Redis here, so each node's live feed carries only the shards it
//! holds (which is why `attach serve` refuses `cluster.peers` without `redis`):
//! this is for measuring requests, not subscriptions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use attach_actors::domain::ShardKey;
use attach_actors::shard::Placement;
use attach_actors::store::Store;
use attach_actors::store::embedded::{EmbeddedOptions, EmbeddedStore};
use attach_gateway::config::Settings;
use attach_gateway::startup::Application;

const PEERS: [(&str, u16); 2] = [("node-a", 18401), ("node-b", 18402)];

fn settings(data_dir: &str, me: &str, port: u16, demo: Option<String>) -> Settings {
    let mut s = Settings {
        listen: ([127, 0, 0, 1], port).into(),
        data_dir: data_dir.into(),
        node: Some(me.to_string()),
        demo,
        ..Settings::default()
    };
    s.limits.rate.enabled = false;
    s.cluster.secret = "two-nodes-example-secret-0123456789".to_string();
    s.cluster.peers =
        PEERS.iter().filter(|(n, _)| *n != me).map(|(n, p)| format!("{n}=http://127.0.0.1:{p}")).collect();
    s
}

async fn ready(port: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let url = format!("http://127.0.0.1:{port}/readyz");
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} was not ready after 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the store says each shard is held by the node `owner` names.
async fn held_by<'a>(store: &dyn Store, shards: &'a [ShardKey], owner: impl Fn(&'a ShardKey) -> &'a str) -> bool {
    for s in shards {
        if store.shard_owner(s).await.ok().flatten().as_deref() != Some(owner(s)) {
            return false;
        }
    }
    true
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "two-nodes-data".to_string());
    let demo = args.next();
    let stand_in = args.next().as_deref() == Some("stand-in");
    std::fs::create_dir_all(&data_dir)?;
    let path = std::path::Path::new(&data_dir).join("attach.redb");
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&path, EmbeddedOptions::default()).context("opening the store")?);

    // A first, alone, so any demo is seeded before B loads a shard.
    let a = Application::build_with_store(settings(&data_dir, "node-a", PEERS[0].1, demo), store.clone()).await?;
    let a = tokio::spawn(a.run_until_stopped(async { tokio::signal::ctrl_c().await.unwrap_or(()) }));
    ready(PEERS[0].1).await?;
    let regions = attach_actors::regions::Regions::load(&Settings::default().regions)?;
    let shards: Vec<ShardKey> = regions.shards().cloned().collect();
    if stand_in {
        let started = Instant::now();
        while !held_by(store.as_ref(), &shards, |_| "node-a").await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("node-a stands in for every shard after {} ms", started.elapsed().as_millis());
    }
    let started = Instant::now();
    let b = Application::build_with_store(settings(&data_dir, "node-b", PEERS[1].1, None), store.clone()).await?;
    let b = tokio::spawn(b.run_until_stopped(async { tokio::signal::ctrl_c().await.unwrap_or(()) }));
    ready(PEERS[1].1).await?;
    println!("node-b ready {} ms after it started", started.elapsed().as_millis());

    let placement = Placement::new("node-a", ["node-b".to_string()]);
    while !held_by(store.as_ref(), &shards, |s| placement.preferred(s)).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("every shard on its node {} ms after node-b started", started.elapsed().as_millis());
    let on_b = shards.iter().filter(|s| placement.preferred(s) == "node-b").count();
    println!("node-b holds {on_b} of {} shards", shards.len());
    if let Some(c) = regions.community("233") {
        println!("community 233 ({}) belongs to {}", c.shard, placement.preferred(&c.shard));
    }
    for (name, port) in PEERS {
        println!("{name} serving on http://127.0.0.1:{port}");
    }
    a.await??;
    b.await??;
    Ok(())
}

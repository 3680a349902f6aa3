//! The health-authority supervisor: starts its communities' shard actors and
//! restarts any that fail, so a crashed shard comes back from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::domain::{HaCode, ShardKey};
use crate::store::StoreError;

use super::actor::{ShardActor, ShardArgs};
use super::directory::ShardDirectory;

/// Messages to a supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Try again to start a shard whose restart failed.
    Restart(ShardKey),
    /// Stop running these shards here (those of this supervisor's), releasing
    /// their leases, so the node they belong to can take them; answer once
    /// they have stopped. Each is tried again only after a lease, to stand in
    /// if that node does not take it.
    HandBack(Vec<ShardKey>, RpcReplyPort<()>),
    /// Start now the shards this node should hold that do not run (their
    /// stand-in has just handed them back), rather than at the next retry.
    StartOwn,
}

/// How long a stand-in waits for one shard it hands back to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a supervisor starts with.
pub struct SupervisorArgs {
    /// The health authority.
    pub ha: HaCode,
    /// Its shards, each with the arguments to start it.
    pub shards: Vec<ShardArgs>,
    /// Where running shards are published.
    pub directory: Arc<ShardDirectory>,
}

/// The supervisor actor.
pub struct HaSupervisor;

/// The supervisor's state.
pub struct SupervisorState {
    ha: HaCode,
    directory: Arc<ShardDirectory>,
    args: HashMap<ShardKey, ShardArgs>,
    /// Which child is which shard, to know what to restart.
    children: HashMap<ractor::ActorId, ShardKey>,
    /// Recent restarts per shard, to back off from a crash loop.
    restarts: HashMap<ShardKey, Vec<Instant>>,
    /// Shards being handed back: when their actor ends, wait before trying again.
    handing_back: std::collections::HashSet<ShardKey>,
    /// Shards with a `Restart` on its way: one at a time each, however many
    /// asks (`StartOwn`, a hand-back, a failure) want the shard tried again.
    pending: std::collections::HashSet<ShardKey>,
}

impl SupervisorState {
    /// Tries `key` again after `delay`, unless a try is on its way already.
    fn retry_after(&mut self, myself: &ActorRef<SupervisorMsg>, key: ShardKey, delay: Duration) {
        if self.pending.insert(key.clone()) {
            myself.send_after(delay, move || SupervisorMsg::Restart(key));
        }
    }
}

impl Actor for HaSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            ha: args.ha,
            directory: args.directory,
            args: args.shards.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            handing_back: Default::default(),
            pending: Default::default(),
        };
        // Start every shard; one that fails to load is retried, not fatal to its neighbours.
        // A shard another node should hold waits a lease first, so that node takes it if it is up.
        for shard in args.shards {
            let key = shard.key.clone();
            let lease = shard.store.lease();
            if !is_mine(&shard) {
                state.retry_after(&myself, key, lease);
                continue;
            }
            let delay = retry_delay(&shard);
            if let Err(e) = start(&myself, &mut state, shard).await {
                retry_later(&myself, &mut state, key, e.as_ref(), delay);
            }
        }
        info!(ha = state.ha.as_str(), shards = state.children.len(), "health authority supervisor started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(key) => {
                state.pending.remove(&key);
                // A shard handed back and restarted meanwhile by a supervision event is already running.
                if state.directory.actor(&key).is_none() {
                    restart(&myself, state, key).await;
                }
            }
            SupervisorMsg::HandBack(keys, reply) => {
                for key in keys {
                    let Some(actor) = state.args.contains_key(&key).then(|| state.directory.actor(&key)).flatten()
                    else {
                        continue;
                    };
                    info!(shard = %key, "handing the shard back to the node it belongs to");
                    state.handing_back.insert(key.clone());
                    // Stopped, its lease is released (the actor's `post_stop`): the node asking can take it at once.
                    if let Err(e) = actor.stop_and_wait(Some("handed back".into()), Some(STOP_TIMEOUT)).await {
                        warn!(shard = %key, error = %e, "a shard handed back did not stop in time");
                    }
                }
                let _ = reply.send(());
            }
            SupervisorMsg::StartOwn => {
                let own: Vec<ShardKey> = state
                    .args
                    .values()
                    .filter(|a| is_mine(a) && state.directory.actor(&a.key).is_none())
                    .map(|a| a.key.clone())
                    .collect();
                for key in own {
                    restart(&myself, state, key).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why): (ActorCell, String) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        if let Some(key) = state.children.remove(&cell.get_id()) {
            state.directory.remove(&key);
            if state.handing_back.remove(&key) {
                // Stand in again only if the node it went to has not taken it within a lease.
                if let Some(lease) = state.args.get(&key).map(|a| a.store.lease()) {
                    state.retry_after(&myself, key, lease);
                }
                return Ok(());
            }
            warn!(shard = %key, %why, "shard actor ended; restarting it from the store");
            restart(&myself, state, key).await;
        }
        Ok(())
    }
}

async fn start(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    args: ShardArgs,
) -> Result<(), ActorProcessingErr> {
    let key = args.key.clone();
    let (actor, _) = Actor::spawn_linked(None, ShardActor, args, myself.get_cell()).await?;
    state.children.insert(actor.get_id(), key.clone());
    state.directory.insert(key, actor);
    Ok(())
}

async fn restart(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, key: ShardKey) {
    let Some(args) = state.args.get(&key).cloned() else { return };
    // Five starts in a minute already: wait before the next, so a shard whose
    // store is down does not spin. Only starts count, not the waits, so the
    // shard is tried again once the oldest start is a minute old.
    let recent = state.restarts.entry(key.clone()).or_default();
    recent.retain(|t| t.elapsed() < CRASH_WINDOW);
    if recent.len() >= CRASH_STARTS {
        warn!(shard = %key, "shard restarting repeatedly; backing off");
        state.retry_after(myself, key, CRASH_BACKOFF);
        return;
    }
    let (tried, delay) = (Instant::now(), retry_delay(&args));
    let started = start(myself, state, args).await;
    // Another node holding it is no crash: waiting for its lease must not stop
    // this node from taking the shard when it can.
    if !started.as_ref().is_err_and(|e| leased_elsewhere(e.as_ref())) {
        state.restarts.entry(key.clone()).or_default().push(tried);
    }
    if let Err(e) = started {
        retry_later(myself, state, key, e.as_ref(), delay);
    }
}

/// The starts of one shard within [`CRASH_WINDOW`] after which it waits
/// [`CRASH_BACKOFF`] between tries.
const CRASH_STARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const CRASH_BACKOFF: Duration = Duration::from_secs(5);

/// How long to wait before trying a shard another node holds again: a lease
/// (the earliest it can have run out), or a quarter of one for a shard this
/// node should hold under a placement, which its stand-in is handing back.
fn retry_delay(args: &ShardArgs) -> Duration {
    let lease = args.store.lease();
    match args.config.placement.get() {
        Some(p) if p.is_mine(&args.key) => lease / 4,
        _ => lease,
    }
}

/// Whether this node should hold the shard (always, without a placement).
fn is_mine(args: &ShardArgs) -> bool {
    args.config.placement.get().is_none_or(|p| p.is_mine(&args.key))
}

/// Schedules another start of a shard that failed to start: after a second,
/// or, when another node holds its lease, after a lease (the earliest it can
/// have run out). A shard held elsewhere is normal on a standby node, not an error.
fn retry_later(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    key: ShardKey,
    e: &(dyn std::error::Error + Send + Sync + 'static),
    lease: Duration,
) {
    if leased_elsewhere(e) {
        info!(shard = %key, error = %e, "shard is held by another node; trying again after a lease");
        state.retry_after(myself, key, lease);
    } else {
        error!(shard = %key, error = %e, "shard failed to start; retrying");
        state.retry_after(myself, key, Duration::from_secs(1));
    }
}

/// Whether an error (or one it wraps) is the store's "another owner holds the lease".
fn leased_elsewhere(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if matches!(err.downcast_ref::<StoreError>(), Some(StoreError::LeaseHeld { .. })) {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_held_elsewhere_is_recognised_through_the_spawn_error() {
        let held: ActorProcessingErr = Box::new(StoreError::LeaseHeld { shard: "IHA/111".into(), owner: "n2".into() });
        let spawn: ActorProcessingErr = Box::new(ractor::SpawnErr::StartupFailed(held));
        assert!(leased_elsewhere(spawn.as_ref()));
        let other: ActorProcessingErr = Box::new(StoreError::Unavailable("down".into()));
        let spawn: ActorProcessingErr = Box::new(ractor::SpawnErr::StartupFailed(other));
        assert!(!leased_elsewhere(spawn.as_ref()));
    }
}

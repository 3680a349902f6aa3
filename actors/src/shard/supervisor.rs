//! The health-authority supervisor: starts its communities' shard actors and
//! restarts any that fail, so a crashed shard comes back from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use crate::domain::{HaCode, ShardKey};

use super::actor::{ShardActor, ShardArgs};
use super::directory::ShardDirectory;

/// Messages to a supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Try again to start a shard whose restart failed.
    Restart(ShardKey),
}

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
        };
        // Start every shard; one that fails to load is retried, not fatal to its neighbours.
        for shard in args.shards {
            let key = shard.key.clone();
            if let Err(e) = start(&myself, &mut state, shard).await {
                error!(shard = %key, error = %e, "shard failed to start; retrying");
                myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Restart(key));
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
            SupervisorMsg::Restart(key) => restart(&myself, state, key).await,
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
    // More than 5 restarts in a minute: wait before the next, so a shard whose
    // store is down does not spin.
    let recent = state.restarts.entry(key.clone()).or_default();
    recent.retain(|t| t.elapsed() < Duration::from_secs(60));
    recent.push(Instant::now());
    let backoff = if recent.len() > 5 { Duration::from_secs(5) } else { Duration::ZERO };
    if !backoff.is_zero() {
        warn!(shard = %key, "shard restarting repeatedly; backing off");
        myself.send_after(backoff, move || SupervisorMsg::Restart(key));
        return;
    }
    if let Err(e) = start(myself, state, args).await {
        error!(shard = %key, error = %e, "shard restart failed; retrying");
        myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Restart(key));
    }
}

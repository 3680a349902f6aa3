//! The shard directory: how callers find a shard's actor.
//!
//! Resolvers never hold actor references; they ask the directory, which knows
//! where each shard runs now (in this process today; on another node once
//! shards move) and bounds each shard's mailbox: a call beyond
//! `mailbox_capacity` in flight is refused with `OVERLOADED` instead of queuing
//! without bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::sync::Semaphore;

use crate::audit::AuditDraft;
use crate::domain::ShardKey;
use crate::error::{AttachError, ErrorCode};

use super::messages::{Reply, ShardMsg, Traced};

struct Slot {
    /// The running actor, absent while it restarts.
    actor: RwLock<Option<ActorRef<ShardMsg>>>,
    /// Permits for calls in flight: the mailbox bound.
    mailbox: Arc<Semaphore>,
}

/// Where every shard runs.
pub struct ShardDirectory {
    slots: HashMap<ShardKey, Slot>,
    capacity: usize,
    timeout: Duration,
}

impl ShardDirectory {
    /// A directory for these shards, none running yet.
    pub fn new(shards: impl IntoIterator<Item = ShardKey>, mailbox_capacity: usize, call_timeout: Duration) -> Self {
        let slots = shards
            .into_iter()
            .map(|k| (k, Slot { actor: RwLock::new(None), mailbox: Arc::new(Semaphore::new(mailbox_capacity)) }))
            .collect();
        ShardDirectory { slots, capacity: mailbox_capacity, timeout: call_timeout }
    }

    pub(crate) fn insert(&self, key: ShardKey, actor: ActorRef<ShardMsg>) {
        if let Some(slot) = self.slots.get(&key) {
            *slot.actor.write().unwrap_or_else(|e| e.into_inner()) = Some(actor);
        }
    }

    pub(crate) fn remove(&self, key: &ShardKey) {
        if let Some(slot) = self.slots.get(key) {
            *slot.actor.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The running actor of a shard, if it runs here.
    pub(crate) fn actor(&self, key: &ShardKey) -> Option<ActorRef<ShardMsg>> {
        self.slots.get(key).and_then(|s| s.actor.read().ok().and_then(|a| a.clone()))
    }

    /// How many of the shards `wanted` picks are running, of how many.
    pub fn running_of(&self, wanted: impl Fn(&ShardKey) -> bool) -> (usize, usize) {
        let mine: Vec<_> = self.slots.iter().filter(|(k, _)| wanted(k)).collect();
        let up = mine.iter().filter(|(_, s)| s.actor.read().map(|a| a.is_some()).unwrap_or(false)).count();
        (up, mine.len())
    }

    /// How many shards are running, of how many.
    pub fn running(&self) -> (usize, usize) {
        self.running_of(|_| true)
    }

    /// Calls in flight for a shard (its mailbox depth as callers see it).
    pub fn mailbox_depth(&self, key: &ShardKey) -> usize {
        self.slots.get(key).map_or(0, |s| self.capacity - s.mailbox.available_permits())
    }

    /// Every running shard actor, to stop them.
    pub fn actors(&self) -> Vec<ActorRef<ShardMsg>> {
        self.slots.values().filter_map(|s| s.actor.read().ok().and_then(|a| a.clone())).collect()
    }

    /// Asks a shard and waits for its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        key: &ShardKey,
        build: impl FnOnce(Reply<T>) -> ShardMsg,
    ) -> Result<T, AttachError> {
        self.call_with(key, None, build).await
    }

    /// Asks a shard for a change whose audit record it commits with the change
    /// (`audit.is_committed()` tells afterwards whether it did).
    pub async fn call_audited<T: Send + 'static>(
        &self,
        key: &ShardKey,
        audit: AuditDraft,
        build: impl FnOnce(Reply<T>) -> ShardMsg,
    ) -> Result<T, AttachError> {
        self.call_with(key, Some(audit), build).await
    }

    /// [`call`](Self::call), or [`call_audited`](Self::call_audited) when there is a draft.
    pub(crate) async fn call_with<T: Send + 'static>(
        &self,
        key: &ShardKey,
        audit: Option<AuditDraft>,
        build: impl FnOnce(Reply<T>) -> ShardMsg,
    ) -> Result<T, AttachError> {
        let slot = self.slots.get(key).ok_or_else(|| AttachError::not_found("community"))?;
        let _permit = slot.mailbox.clone().try_acquire_owned().map_err(|_| {
            AttachError::new(
                ErrorCode::Overloaded,
                format!("community {} is busy; nothing was changed, retry shortly", key.community.as_str()),
            )
        })?;
        let actor = slot.actor.read().unwrap_or_else(|e| e.into_inner()).clone();
        // No actor here: restarting, or held by another node (the gateway may look).
        let unavailable = || AttachError {
            not_here: Some(key.clone()),
            ..AttachError::new(
                ErrorCode::ShardUnavailable,
                format!("community {} is restarting; retry shortly", key.community.as_str()),
            )
        };
        let actor = actor.ok_or_else(unavailable)?;
        // The message carries the caller's span, so the shard's work joins its trace.
        let span = tracing::Span::current();
        let traced = move |reply| ShardMsg::Traced(Box::new(Traced { span, msg: build(reply), audit }));
        match actor.call(traced, Some(self.timeout)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(AttachError::new(
                ErrorCode::ShardUnavailable,
                format!(
                    "community {} did not answer in time; check the result before retrying",
                    key.community.as_str()
                ),
            )),
            Ok(CallResult::SenderError) | Err(_) => Err(unavailable()),
        }
    }
}

//! How many subscriptions a caller may hold at once: per WebSocket connection,
//! and per principal across all of their connections (so opening more
//! connections does not buy more). Beyond either cap: `RATE_LIMITED`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Context;
use attach_actors::access::Principal;
use attach_actors::error::{AttachError, ErrorCode};
use futures::stream::{BoxStream, StreamExt};

use super::error::to_graphql;
use super::query::caller;

/// The subscriptions open on one WebSocket connection, against its cap.
pub struct ConnectionSubscriptions {
    open: Arc<AtomicUsize>,
    cap: usize,
}

impl ConnectionSubscriptions {
    /// A fresh connection allowed `cap` subscriptions at once.
    pub fn new(cap: usize) -> Self {
        ConnectionSubscriptions { open: Arc::new(AtomicUsize::new(0)), cap }
    }

    fn acquire(&self) -> async_graphql::Result<Slot> {
        let taken = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1));
        match taken {
            Ok(_) => Ok(Slot(self.open.clone())),
            Err(_) => Err(to_graphql(AttachError::new(
                ErrorCode::RateLimited,
                format!("this connection already holds {} subscriptions; close one first", self.cap),
            ))),
        }
    }
}

/// One subscription's place on its connection, given back when its stream ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The subscriptions each principal holds, across every connection of this
/// process. Only principals holding one are in the map, so it is bounded by
/// the open subscriptions.
pub struct PrincipalSubscriptions {
    open: Arc<Mutex<HashMap<String, usize>>>,
    cap: usize,
}

impl PrincipalSubscriptions {
    /// Each principal allowed `cap` subscriptions at once.
    pub fn new(cap: usize) -> Self {
        PrincipalSubscriptions { open: Arc::default(), cap }
    }

    fn acquire(&self, principal: &Principal) -> async_graphql::Result<PrincipalSlot> {
        let key = format!("{}:{}", principal.role(), principal.subject());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return Err(to_graphql(AttachError::new(
                ErrorCode::RateLimited,
                format!("you already hold {} subscriptions; close one first", self.cap),
            )));
        }
        *n += 1;
        Ok(PrincipalSlot { open: self.open.clone(), key })
    }

    /// Principals holding at least one subscription.
    pub fn holders(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One subscription counted against its principal, given back when it ends.
struct PrincipalSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Takes a slot on the caller's connection and one of the caller's own
/// (neither exists over plain HTTP) and ties them to `stream`.
pub(super) fn hold_slot<T: Send + 'static>(
    ctx: &Context<'_>,
    stream: BoxStream<'static, T>,
) -> async_graphql::Result<BoxStream<'static, T>> {
    let connection = ctx.data_opt::<ConnectionSubscriptions>().map(ConnectionSubscriptions::acquire).transpose()?;
    let principal = ctx.data_opt::<Arc<PrincipalSubscriptions>>().map(|p| p.acquire(caller(ctx))).transpose()?;
    if connection.is_none() && principal.is_none() {
        return Ok(stream);
    }
    Ok(stream
        .map(move |event| {
            let _held = (&connection, &principal);
            event
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attach_actors::access::{Role, Scope};

    #[test]
    fn a_connection_cap_frees_a_slot_when_a_stream_ends() {
        let c = ConnectionSubscriptions::new(1);
        let first = c.acquire().unwrap();
        assert!(c.acquire().is_err(), "the cap holds");
        drop(first);
        assert!(c.acquire().is_ok(), "the slot came back");
    }

    #[test]
    fn a_principal_cap_spans_connections_and_forgets_principals_with_none() {
        let p = PrincipalSubscriptions::new(2);
        let me = Principal::new("c-1", Role::Coordinator, None, Scope::province());
        let other = Principal::new("c-2", Role::Coordinator, None, Scope::province());
        let a = p.acquire(&me).unwrap();
        let b = p.acquire(&me).unwrap();
        assert!(p.acquire(&me).is_err());
        let o = p.acquire(&other).unwrap();
        assert_eq!(p.holders(), 2);
        drop((a, o));
        assert_eq!(p.holders(), 1);
        assert!(p.acquire(&me).is_ok());
        drop(b);
    }
}

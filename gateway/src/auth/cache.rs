//! Tokens already verified, so a client sending the same bearer token with
//! every request pays for its signature check once, not per request (an ES256
//! check is tens of microseconds, more than a small query costs to run).
//!
//! What keeps this safe:
//! - the key is the whole token, compared byte for byte: a hit is the same
//!   signed bytes that passed every check;
//! - an entry belongs to the key set that verified it: when the JWKS is read
//!   again and changes, every entry from before is checked afresh;
//! - `exp` is checked again on every hit, with the same leeway;
//! - an entry lives at most [`TokenCache::ttl`], and refusals are never kept;
//! - the map is bounded: when it is full, it is emptied and fills again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::keys::KeySet;
use super::token::{Signed, TokenError};

struct Entry {
    signed: Signed,
    /// The key set that verified it (compared by identity: a refresh that
    /// changes the set swaps the `Arc`).
    keys: Arc<KeySet>,
    at: Instant,
}

/// Verified tokens, by their text.
pub struct TokenCache {
    entries: Mutex<HashMap<Box<str>, Entry>>,
    capacity: usize,
    ttl: Duration,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TokenCache { entries: Mutex::new(HashMap::new()), capacity, ttl }
    }

    /// How long an entry is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The verdict on `token` if it was verified against `keys` lately:
    /// `Some(Ok)` while it is still within its `exp` (plus `leeway`),
    /// `Some(Err(Expired))` after, `None` when it must be verified.
    pub fn get(&self, token: &str, keys: &Arc<KeySet>, leeway: Duration) -> Option<Result<Signed, TokenError>> {
        if self.capacity == 0 {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(token)?;
        if !Arc::ptr_eq(&entry.keys, keys) || entry.at.elapsed() >= self.ttl {
            return None;
        }
        if SystemTime::now() > entry.signed.expires + leeway {
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(entry.signed.clone()))
    }

    /// Keeps a token that `keys` just verified.
    pub fn put(&self, token: &str, keys: Arc<KeySet>, signed: &Signed) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.clear();
        }
        entries.insert(token.into(), Entry { signed: signed.clone(), keys, at: Instant::now() });
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attach_actors::access::{Principal, Role, Scope};

    fn signed(expires_in: i64) -> Signed {
        let now = SystemTime::now();
        let expires = if expires_in >= 0 {
            now + Duration::from_secs(expires_in as u64)
        } else {
            now - Duration::from_secs((-expires_in) as u64)
        };
        Signed {
            principal: Principal::new("u-1", Role::Coordinator, None, Scope::default()),
            expires,
            id: None,
            issued_at: None,
        }
    }

    fn keys() -> Arc<KeySet> {
        Arc::new(KeySet::default())
    }

    #[test]
    fn a_verified_token_is_served_until_its_keys_change() {
        let cache = TokenCache::new(8, Duration::from_secs(60));
        let (k1, k2) = (keys(), keys());
        assert!(cache.get("a.b.c", &k1, Duration::ZERO).is_none(), "never verified");
        cache.put("a.b.c", k1.clone(), &signed(300));
        let hit = cache.get("a.b.c", &k1, Duration::ZERO).unwrap().unwrap();
        assert_eq!(hit.principal.subject(), "u-1");
        assert!(cache.get("a.b.c", &k2, Duration::ZERO).is_none(), "the JWKS changed: check again");
        assert!(cache.get("a.b.d", &k1, Duration::ZERO).is_none(), "another token, even one byte off");
    }

    #[test]
    fn expiry_is_checked_on_every_hit() {
        let cache = TokenCache::new(8, Duration::from_secs(60));
        let k = keys();
        cache.put("old", k.clone(), &signed(-10));
        assert_eq!(cache.get("old", &k, Duration::ZERO).unwrap().unwrap_err(), TokenError::Expired);
        assert!(cache.get("old", &k, Duration::from_secs(30)).unwrap().is_ok(), "within the leeway");
    }

    #[test]
    fn entries_age_out_and_the_map_stays_bounded() {
        let k = keys();
        let stale = TokenCache::new(8, Duration::ZERO);
        stale.put("t", k.clone(), &signed(300));
        assert!(stale.get("t", &k, Duration::ZERO).is_none(), "past the ttl");

        let cache = TokenCache::new(3, Duration::from_secs(60));
        for t in ["t1", "t2", "t3", "t4"] {
            cache.put(t, k.clone(), &signed(300));
        }
        assert_eq!(cache.len(), 1, "full: emptied, then the newest kept");
        assert!(cache.get("t4", &k, Duration::ZERO).is_some());

        let off = TokenCache::new(0, Duration::from_secs(60));
        off.put("t", k.clone(), &signed(300));
        assert!(off.is_empty() && off.get("t", &k, Duration::ZERO).is_none(), "capacity 0 turns it off");
    }
}

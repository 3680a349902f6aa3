//! Time as the store keeps it: milliseconds since the Unix epoch, UTC.

use serde::{Deserialize, Serialize};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }

    /// Whole days from `self` to `later` (0 if `later` is earlier).
    pub fn days_until(self, later: Timestamp) -> u32 {
        u32::try_from(((later.0 - self.0).max(0)) / DAY_MS).unwrap_or(u32::MAX)
    }

    /// This instant moved by `ms` milliseconds.
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// As a chrono UTC time, for display and date arithmetic.
    pub fn to_utc(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }
}

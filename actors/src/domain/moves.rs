//! A household that moves to another community keeps its registration time
//! (and its reference). The move is two steps in two shards: the community
//! left marks its copy `MOVED` and keeps this record of where it went; the
//! community joined then takes a `WAITING` copy. Until the record says
//! `Completed`, the move is finished by asking for it again or by the next start.

use serde::{Deserialize, Serialize};

use super::{RegistrationRef, ShardKey, Timestamp};

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MoveStatus {
    /// The household has left; the community joined may not have its copy yet.
    Running,
    /// The community joined holds the registration.
    Completed,
}

/// A registration's latest move out of a community, kept by that community's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationMove {
    /// The registration.
    pub reference: RegistrationRef,
    /// The community left.
    pub from: ShardKey,
    /// The community joined.
    pub to: ShardKey,
    /// Where it stands.
    pub status: MoveStatus,
    /// When the household left.
    pub started_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl RegistrationMove {
    /// The same move, done.
    pub fn completed(&self, now: Timestamp) -> Self {
        RegistrationMove { status: MoveStatus::Completed, updated_at: now, ..self.clone() }
    }
}

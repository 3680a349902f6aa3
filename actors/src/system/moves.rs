//! A household moving to another community keeps its place in line: the same
//! reference and registration time, on the other community's waitlist.
//!
//! Two shards take part, so the move is three durable steps rather than one
//! transaction (docs/DECISIONS.md, "A move is three durable steps"):
//! 1. the community left marks its copy `MOVED` and records where it went;
//! 2. the community joined takes a `WAITING` copy and points the locator and
//!    the members' PHN claims at itself;
//! 3. the community left closes its record of the move.
//!
//! Each step is safe to repeat. A move interrupted after step 1 is finished by
//! asking for it again (the locator still leads to the community left, which
//! answers the same move) or by the next start, before the process is ready.

use futures::future::join_all;
use tracing::{info, warn};

use crate::access::{Operation, Principal};
use crate::domain::{CommunityCode, RegistrationMove, RegistrationRef, RegistrationStatus, ShardKey};
use crate::error::AttachError;
use crate::shard::{Moving, RegistrationView, ShardMsg};
use crate::store::Locator;

use super::{AttachSystem, Trail};

impl AttachSystem {
    /// Moves a waiting or proposed registration to `community`'s waitlist; an
    /// open proposal is cancelled. The household keeps its reference and its
    /// registration time, so its place in the new line is where its time puts
    /// it. The caller must be allowed to change the registration where it is
    /// now (the patient with the reference, or a coordinator of that
    /// community). Asking again for a move that finished answers the
    /// registration where it is.
    pub async fn move_registration(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        community: &CommunityCode,
    ) -> Result<RegistrationView, AttachError> {
        let mut trail = Trail::new(who, Operation::MoveRegistration).about(reference);
        let result = async {
            let from = trail.at(self.locate(Locator::Registration(*reference), "registration").await?);
            who.require(trail.op, Some(&from))?;
            self.require_owner(who, &from, *reference).await?;
            let to = self.shard_of(community)?;
            let r = *reference;
            if from == to {
                let view = self.directory.call(&from, |reply| ShardMsg::GetRegistration(r, reply)).await?;
                if view.registration.status != RegistrationStatus::Moved {
                    return Ok(view);
                }
            }
            // The caller's audit record commits with step one, the change that decides the move.
            let draft = Some(trail.draft());
            let (moving, record) =
                self.directory.call_with(&from, draft, |reply| ShardMsg::MoveOut(r, to, reply)).await?;
            // A spill-over proposal the move cancelled frees its places in the provider's community.
            self.settle_pending(&from).await;
            self.complete_move(moving, &record).await
        }
        .await;
        self.audited(trail, result).await.map(|view| super::seen_by(who, view))
    }

    /// Steps 2 and 3 of a move whose step 1 is durable.
    async fn complete_move(&self, moving: Moving, record: &RegistrationMove) -> Result<RegistrationView, AttachError> {
        let view = self.move_in(&record.to, moving).await?;
        let r = record.reference;
        self.directory.call(&record.from, |reply| ShardMsg::FinishMove(r, reply)).await?;
        Ok(view)
    }

    /// Finishes every move a previous process left part way. Called once the
    /// shards have started and before the process reports ready. Answers how
    /// many were finished; one that fails stays running, to be finished by
    /// asking for it again, by the next pass ([`resume_stalled`](Self::resume_stalled)) or the next start.
    pub async fn resume_moves(&self) -> usize {
        self.finish_moves(None).await
    }

    /// Finishes the moves and resumes the panel transfers of this node's
    /// shards that have been running for longer than `age`: a step that failed
    /// (the other community's shard was restarting, or on a peer that was
    /// away) is taken again without waiting for the caller or a restart. Moves
    /// younger than `age` are left to the requests running them. Answers the
    /// moves finished and the transfers resumed.
    pub async fn resume_stalled(self: &std::sync::Arc<Self>, age: std::time::Duration) -> (usize, usize) {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let moves = self.finish_moves(Some(crate::domain::Timestamp::now().plus_ms(-age_ms))).await;
        // Spill-over proposals closed by expiry (or whose settlement failed) are
        // settled here, and reservations whose proposals were never recorded freed.
        self.settle_everywhere().await;
        self.reclaim_orphans_everywhere().await;
        self.finish_intakes_everywhere(crate::domain::Timestamp::now().plus_ms(-age_ms)).await;
        (moves, self.resume_transfers().await)
    }

    /// Finishes the running moves of this node's shards (those started before `started_before`, if given).
    async fn finish_moves(&self, started_before: Option<crate::domain::Timestamp>) -> usize {
        let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
        let all = join_all(shards.iter().map(|s| self.directory.call(s, ShardMsg::RunningMoves))).await;
        let mut finished = 0;
        let stalled = all.into_iter().filter_map(Result::ok).flatten();
        for (moving, record) in stalled.filter(|(_, m)| started_before.is_none_or(|t| m.started_at < t)) {
            match self.complete_move(moving, &record).await {
                Ok(_) => finished += 1,
                Err(e) => warn!(error = %e, from = %record.from, to = %record.to, "a move could not be finished yet"),
            }
        }
        if finished > 0 {
            info!(finished, "moves between communities finished");
        }
        finished
    }
}

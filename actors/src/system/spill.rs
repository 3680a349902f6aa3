//! Spill-over matching across communities (the shard side and the two steps
//! are described in `shard/spill.rs`): after a community's own matching, its
//! households still waiting are offered the free places of providers in
//! neighbouring communities within the policy's distance, nearest first.

use futures::future::join_all;
use tracing::{info, warn};

use std::collections::HashSet;

use crate::domain::{CommunityCode, Proposal, ProposalId, ShardKey, Timestamp};
use crate::error::AttachError;
use crate::shard::ShardMsg;
use crate::store::Locator;

use super::AttachSystem;

impl AttachSystem {
    /// Spill-over proposals for `shard`'s households still waiting, community
    /// by community, nearest first. A neighbour that cannot be reached, or
    /// whose places are gone, is passed over; what was proposed stays.
    pub(super) async fn spill(&self, community: &CommunityCode, shard: &ShardKey) -> Vec<Proposal> {
        let neighbours = self.regions.neighbours(community.as_str(), self.config.policy.spill_km);
        let waiting = self.directory.call(shard, ShardMsg::Gauges).await.map_or(0, |g| g.waiting_households);
        if neighbours.is_empty() || waiting == 0 {
            return Vec::new();
        }
        // Each neighbour works out its spare places with a read-only matching
        // pass over its own waitlist, on its own actor: all at once.
        let spares = join_all(neighbours.iter().map(|(n, _)| self.spare_places_at(&n.shard))).await;
        let mut made = Vec::new();
        for ((neighbour, distance), spare) in neighbours.iter().zip(spares) {
            let result = match spare {
                Ok(providers) => self.spill_to(shard, &neighbour.shard, *distance, providers).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(proposals) => made.extend(proposals),
                Err(e) => warn!(error = %e, from = %shard, to = %neighbour.shard, "spill-over to a neighbour failed"),
            }
        }
        if !made.is_empty() {
            info!(shard = %shard, proposals = made.len(), "spill-over proposals made");
        }
        made
    }

    /// One neighbour: plan against its providers' spare places (as read
    /// there; a place taken since is refused by step one), reserve them
    /// there (step one), record the proposals here (step two), and free the
    /// places of any the household's shard no longer wanted.
    async fn spill_to(
        &self,
        shard: &ShardKey,
        neighbour: &ShardKey,
        distance: f64,
        providers: Vec<crate::shard::ProviderView>,
    ) -> Result<Vec<Proposal>, AttachError> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        // Whole kilometres, rounded up: the explanation never understates the distance.
        let km = distance.ceil() as u32;
        let planned = self
            .directory
            .call(shard, |reply| ShardMsg::PlanSpill { neighbour: neighbour.clone(), km, providers, reply })
            .await?;
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let reserved: HashSet<ProposalId> = self.reserve_at(neighbour, planned.clone()).await?.into_iter().collect();
        let reserved: Vec<Proposal> = planned.into_iter().filter(|p| reserved.contains(&p.id)).collect();
        if reserved.is_empty() {
            return Ok(Vec::new());
        }
        // If step two fails it is unknown whether it landed: the reservations
        // stay, freed by the settlement of a proposal that did land or, for one
        // that did not, by the periodic pass once it finds it unrecorded
        // (`reclaim_orphans`).
        let recorded = self.directory.call(shard, |reply| ShardMsg::RecordSpill(reserved.clone(), reply)).await?;
        let taken: HashSet<ProposalId> = recorded.iter().map(|p| p.id).collect();
        let unwanted: Vec<Proposal> = reserved.into_iter().filter(|p| !taken.contains(&p.id)).collect();
        self.free_reservations(neighbour, &unwanted).await;
        Ok(recorded)
    }

    /// Frees, in the provider's community `shard`, the places reserved for
    /// planned proposals the household's community did not record. One that
    /// cannot be freed now is found unrecorded and freed by a later periodic pass.
    /// Answers how many were freed.
    pub(super) async fn free_reservations(&self, shard: &ShardKey, unwanted: &[Proposal]) -> usize {
        let now = Timestamp::now();
        let mut freed = 0;
        // Planned proposals are open, so each can be cancelled.
        for cancelled in unwanted.iter().filter_map(|p| p.cancel(now).ok()) {
            let settlement = crate::domain::Settlement { proposal: cancelled, entries: Vec::new() };
            match self.settle_at(shard, settlement).await {
                Ok(()) => freed += 1,
                Err(e) => warn!(error = %e, shard = %shard, "a reservation no proposal took stays for the next pass"),
            }
        }
        freed
    }

    /// Pushes `shard`'s settlements to their providers' communities and
    /// forgets each one taken. Answers how many were taken; one that fails
    /// stays, for the next push.
    pub(super) async fn settle_pending(&self, shard: &ShardKey) -> usize {
        let Ok(pending) = self.directory.call(shard, ShardMsg::Settlements).await else { return 0 };
        let mut taken = 0;
        for settlement in pending {
            let (id, status) = (settlement.proposal.id, settlement.proposal.status);
            let result = async {
                let provider = Locator::Provider(settlement.proposal.provider.clone());
                let home = self.locate(provider, "provider").await?;
                self.settle_at(&home, settlement).await?;
                self.directory.call(shard, |reply| ShardMsg::Settled(id, status, reply)).await
            }
            .await;
            match result {
                Ok(()) => taken += 1,
                Err(e) => {
                    warn!(error = %e, shard = %shard, proposal = %id, "a spill-over proposal could not be settled yet")
                }
            }
        }
        taken
    }

    /// Looks for the proposals of `shard`'s old open reservations in their
    /// households' communities and cancels each reservation whose proposal is
    /// not there (a stop between spill-over's two steps orphaned it), freeing
    /// its places. Answers how many were freed. One whose household's
    /// community cannot be asked now is asked again on the next pass.
    pub(super) async fn reclaim_orphans(&self, shard: &ShardKey) -> usize {
        let Ok(old) = self.directory.call(shard, ShardMsg::UnconfirmedReservations).await else { return 0 };
        let mut orphans = Vec::new();
        for reservation in old {
            match self.proposal_recorded_at(&reservation.shard, reservation.id).await {
                Ok(true) => {
                    let id = reservation.id;
                    if let Err(e) = self.directory.call(shard, |reply| ShardMsg::ReservationConfirmed(id, reply)).await
                    {
                        warn!(error = %e, shard = %shard, proposal = %id, "could not note a reservation's proposal");
                    }
                }
                Ok(false) => orphans.push(reservation),
                Err(e) => warn!(error = %e, shard = %shard, proposal = %reservation.id,
                    "could not ask the household's community about a reservation yet"),
            }
        }
        let freed = self.free_reservations(shard, &orphans).await;
        if freed > 0 {
            info!(shard = %shard, freed, "reservations whose proposals were never recorded freed");
        }
        freed
    }

    /// Settles the closed spill-over proposals of every shard this node runs
    /// with their providers' communities (the periodic pass does this every
    /// lease). Answers how many were taken.
    pub async fn settle_everywhere(&self) -> usize {
        join_all(self.shards_here().iter().map(|s| self.settle_pending(s))).await.into_iter().sum()
    }

    /// Frees the orphaned reservations of every shard this node runs (the
    /// periodic pass does this every lease). Answers how many were freed.
    pub async fn reclaim_orphans_everywhere(&self) -> usize {
        join_all(self.shards_here().iter().map(|s| self.reclaim_orphans(s))).await.into_iter().sum()
    }

    /// The shards this node runs now.
    pub(super) fn shards_here(&self) -> Vec<ShardKey> {
        self.regions.shards().filter(|s| self.directory.actor(s).is_some()).cloned().collect()
    }
}

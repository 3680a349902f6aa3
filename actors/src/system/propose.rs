//! A coordinator's own proposal: this waiting household to this provider.
//!
//! Matching proposes households in priority order; a coordinator who knows a
//! household and a provider well may propose one directly (the design's
//! "a coordinator's (or the matcher's) suggestion"). The same rules check it as
//! any placement (places for the whole household, the complexity mix, hard
//! preferences), and the proposal then lives and closes like any other. A
//! provider homed in another community is proposed to as spill-over matching
//! proposes: their community reserves the places, then the household's records
//! the proposal (`shard/spill.rs`).

use crate::access::{Operation, Principal};
use crate::domain::{Proposal, ProviderId, RegistrationRef};
use crate::error::AttachError;
use crate::shard::ShardMsg;
use crate::store::Locator;

use super::{AttachSystem, Trail};

impl AttachSystem {
    /// Proposes the waiting household `reference` to `provider`, with the
    /// coordinator's `note` (shown with the proposal). The caller's scope must
    /// cover the household's community and the provider's. Refused with
    /// `CONFLICT` when the household is not waiting, the provider is not
    /// accepting, or a matching rule rules the pair out; nothing is then written.
    pub async fn propose_match(
        &self,
        who: &Principal,
        reference: &RegistrationRef,
        provider: &ProviderId,
        note: String,
    ) -> Result<Proposal, AttachError> {
        let mut trail = Trail::new(who, Operation::ProposeMatch).about(reference);
        let result = async {
            let shard = trail.at(self.locate(Locator::Registration(*reference), "registration").await?);
            who.require(trail.op, Some(&shard))?;
            let home = self.locate(Locator::Provider(provider.clone()), "provider").await?;
            let (reference, provider) = (*reference, provider.clone());
            if home == shard {
                return self
                    .directory
                    .call_audited(&shard, trail.draft(), |reply| ShardMsg::ProposeMatch {
                        reference,
                        provider,
                        note,
                        reply,
                    })
                    .await;
            }
            who.require(trail.op, Some(&home))?;
            let view = self.provider_at(&home, provider).await?;
            let km = self.km_between(&shard, &home);
            let planned = self
                .directory
                .call(&shard, |reply| ShardMsg::PlanProposal { reference, provider: view, km, note, reply })
                .await?;
            if self.reserve_at(&home, vec![planned.clone()]).await?.is_empty() {
                return Err(AttachError::conflict(format!(
                    "provider {} cannot hold places for this household now: their free places are gone, or \
                     this month's share for households with a complex need is taken",
                    planned.provider
                )));
            }
            // The caller's audit record commits with the proposal, the step that decides it.
            let recorded = self
                .directory
                .call_with(&shard, Some(trail.draft()), |reply| ShardMsg::RecordSpill(vec![planned.clone()], reply))
                .await?;
            match recorded.into_iter().next() {
                Some(proposal) => Ok(proposal),
                None => {
                    self.free_reservations(&home, std::slice::from_ref(&planned)).await;
                    Err(AttachError::conflict(format!(
                        "registration {} is no longer waiting as it was: it was proposed, changed, withdrawn or moved meanwhile",
                        planned.reference
                    )))
                }
            }
        }
        .await;
        self.audited(trail, result).await
    }

    /// Whole kilometres between two shards' community centres, rounded up: an
    /// explanation never understates the distance.
    fn km_between(&self, a: &crate::domain::ShardKey, b: &crate::domain::ShardKey) -> u32 {
        match (self.regions.community(a.community.as_str()), self.regions.community(b.community.as_str())) {
            (Some(a), Some(b)) => crate::regions::distance_km(a, b).ceil() as u32,
            _ => 0,
        }
    }
}

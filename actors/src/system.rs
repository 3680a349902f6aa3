//! The system: every shard of a province, started under health-authority
//! supervisors, and the operations the gateway's resolvers call.
//!
//! Resolvers validate input and then call one method here; nothing here touches
//! storage except the store's locators, which say which shard holds an id.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use ractor::{Actor, ActorRef};
use tracing::info;

use tokio::sync::broadcast;

use crate::domain::{
    Capacity, Clinic, CommunityCode, Event, FacilityNumber, HaCode, Household, Proposal, ProposalId, ProposalStatus,
    ProviderId, RegistrationRef, Seq, ShardKey,
};
use crate::error::AttachError;
use crate::feed::Feed;
use crate::regions::Regions;
use crate::shard::supervisor::SupervisorMsg;
use crate::shard::{
    Answer, ClinicCommand, HaSupervisor, PanelPage, ProposalPage, ProviderInput, ProviderView, RegistrationView,
    ShardArgs, ShardConfig, ShardDirectory, ShardMsg, ShardStats, SupervisorArgs, WaitlistPage, WaitlistQuery,
};
use crate::store::{Locator, Store};

mod panels;

/// Statistics for a community or a health authority.
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    /// The merged counts.
    pub counts: ShardStats,
    /// Median days waited by the households waiting now.
    pub median_wait_days: Option<u32>,
    /// Days someone registering today can expect to wait, from the people
    /// waiting and the attachment rate measured over the last 28 days; `None`
    /// when nobody was attached in that window (no rate to measure).
    pub estimated_wait_days: Option<u32>,
}

impl Statistics {
    fn from_counts(counts: ShardStats) -> Self {
        let total: u64 = counts.wait_histogram.values().sum();
        let mut seen = 0;
        let mut median = None;
        for (days, n) in &counts.wait_histogram {
            seen += n;
            if seen * 2 >= total && total > 0 {
                median = Some(*days);
                break;
            }
        }
        let estimated = (counts.attached_people_28d > 0).then(|| {
            let per_day = counts.attached_people_28d as f64 / 28.0;
            (counts.waiting_people as f64 / per_day).ceil().min(f64::from(u32::MAX)) as u32
        });
        Statistics { counts, median_wait_days: median, estimated_wait_days: estimated }
    }
}

fn merge(into: &mut ShardStats, s: ShardStats) {
    into.waiting_households += s.waiting_households;
    into.waiting_people += s.waiting_people;
    into.proposed_households += s.proposed_households;
    into.proposed_people += s.proposed_people;
    into.attached_people += s.attached_people;
    into.attached_people_week += s.attached_people_week;
    into.attached_people_28d += s.attached_people_28d;
    into.accepting_providers += s.accepting_providers;
    into.free_places += s.free_places;
    for (d, n) in s.wait_histogram {
        *into.wait_histogram.entry(d).or_default() += n;
    }
}

/// A running Attach core.
pub struct AttachSystem {
    regions: Arc<Regions>,
    directory: Arc<ShardDirectory>,
    store: Arc<dyn Store>,
    config: Arc<ShardConfig>,
    owner: String,
    feed: Arc<dyn Feed>,
    /// Kept to stop them on shutdown.
    supervisors: Mutex<Vec<ActorRef<SupervisorMsg>>>,
    /// Panel transfers this process is running, so asking to resume one that
    /// is already moving does not start a second runner.
    transfers: Mutex<std::collections::HashSet<(ProviderId, crate::domain::TransferKey)>>,
}

impl AttachSystem {
    /// A system over these regions and this store. No shard runs until [`start`](Self::start).
    pub fn new(
        regions: Arc<Regions>,
        store: Arc<dyn Store>,
        feed: Arc<dyn Feed>,
        config: ShardConfig,
        owner: String,
    ) -> Self {
        let directory =
            Arc::new(ShardDirectory::new(regions.shards().cloned(), config.mailbox_capacity, config.call_timeout));
        AttachSystem {
            regions,
            directory,
            store,
            config: Arc::new(config),
            owner,
            feed,
            supervisors: Mutex::new(vec![]),
            transfers: Mutex::new(Default::default()),
        }
    }

    /// Starts every health authority's supervisor and its shards (loading them
    /// from the store); returns when all have been started or retried.
    pub async fn start(&self) -> anyhow::Result<()> {
        let started = join_all(self.regions.health_authorities.iter().map(|ha| {
            let shards = ha
                .communities
                .iter()
                .map(|c| ShardArgs {
                    key: c.shard.clone(),
                    store: self.store.clone(),
                    config: self.config.clone(),
                    owner: self.owner.clone(),
                    feed: self.feed.clone(),
                })
                .collect();
            let args = SupervisorArgs { ha: ha.code.clone(), shards, directory: self.directory.clone() };
            Actor::spawn(None, HaSupervisor, args)
        }))
        .await;
        let mut supervisors = Vec::new();
        for result in started {
            supervisors.push(result?.0);
        }
        *self.supervisors.lock().unwrap_or_else(|e| e.into_inner()) = supervisors;
        let (up, total) = self.directory.running();
        info!(up, total, "shards started");
        Ok(())
    }

    /// Stops every supervisor and shard. State is already durable; nothing is flushed.
    pub async fn stop(&self) {
        let supervisors = std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(|e| e.into_inner()));
        join_all(supervisors.iter().map(|s| s.stop_and_wait(Some("shutting down".into()), None))).await;
    }

    /// The regions served.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The shard directory (readiness, mailbox depths).
    pub fn directory(&self) -> &ShardDirectory {
        &self.directory
    }

    /// The settings shards run with.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    fn shard_of(&self, community: &CommunityCode) -> Result<ShardKey, AttachError> {
        self.regions
            .community(community.as_str())
            .map(|c| c.shard.clone())
            .ok_or_else(|| AttachError::not_found("community"))
    }

    async fn locate(&self, what: Locator, name: &str) -> Result<ShardKey, AttachError> {
        self.store.locate(&what).await?.ok_or_else(|| AttachError::not_found(name))
    }

    /// Registers a household in a community.
    pub async fn register(
        &self,
        community: &CommunityCode,
        household: Household,
    ) -> Result<RegistrationView, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, |r| ShardMsg::Register(household, r)).await
    }

    /// A registration's standing, by reference.
    pub async fn registration(&self, reference: &RegistrationRef) -> Result<RegistrationView, AttachError> {
        let shard = self.locate(Locator::Registration(*reference), "registration").await?;
        let reference = *reference;
        self.directory.call(&shard, |r| ShardMsg::GetRegistration(reference, r)).await
    }

    /// Withdraws a registration.
    pub async fn withdraw(&self, reference: &RegistrationRef, reason: String) -> Result<RegistrationView, AttachError> {
        let shard = self.locate(Locator::Registration(*reference), "registration").await?;
        let reference = *reference;
        self.directory.call(&shard, |r| ShardMsg::Withdraw(reference, reason, r)).await
    }

    /// A page of a community's waitlist.
    pub async fn waitlist(&self, community: &CommunityCode, query: WaitlistQuery) -> Result<WaitlistPage, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, |r| ShardMsg::Waitlist(query, r)).await
    }

    /// Creates a provider homed in `community`, or updates one already there.
    pub async fn upsert_provider(
        &self,
        community: &CommunityCode,
        input: ProviderInput,
    ) -> Result<ProviderView, AttachError> {
        let shard = self.shard_of(community)?;
        if let Some(home) = self.store.locate(&Locator::Provider(input.id.clone())).await?
            && home != shard
        {
            return Err(AttachError::conflict(format!(
                "provider {} is homed in community {}; update them there",
                input.id,
                home.community.as_str()
            )));
        }
        self.directory.call(&shard, |r| ShardMsg::UpsertProvider(input, r)).await
    }

    /// Sets a provider's capacity and preferences.
    pub async fn set_capacity(&self, id: &ProviderId, capacity: Capacity) -> Result<ProviderView, AttachError> {
        let shard = self.locate(Locator::Provider(id.clone()), "provider").await?;
        let id = id.clone();
        self.directory.call(&shard, |r| ShardMsg::SetCapacity(id, capacity, r)).await
    }

    /// A provider.
    pub async fn provider(&self, id: &ProviderId) -> Result<ProviderView, AttachError> {
        let shard = self.locate(Locator::Provider(id.clone()), "provider").await?;
        let id = id.clone();
        self.directory.call(&shard, |r| ShardMsg::GetProvider(id, r)).await
    }

    /// Providers homed in a community.
    pub async fn providers(&self, community: &CommunityCode) -> Result<Vec<ProviderView>, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, ShardMsg::ListProviders).await
    }

    /// Creates or updates a clinic in a community.
    pub async fn upsert_clinic(&self, community: &CommunityCode, cmd: ClinicCommand) -> Result<Clinic, AttachError> {
        let shard = self.shard_of(community)?;
        if let Some(home) = self.store.locate(&Locator::Clinic(cmd.facility.clone())).await?
            && home != shard
        {
            return Err(AttachError::conflict(format!(
                "facility {} is registered in community {}",
                cmd.facility,
                home.community.as_str()
            )));
        }
        self.directory.call(&shard, |r| ShardMsg::UpsertClinic(cmd, r)).await
    }

    /// A clinic.
    pub async fn clinic(&self, facility: &FacilityNumber) -> Result<Clinic, AttachError> {
        let shard = self.locate(Locator::Clinic(facility.clone()), "clinic").await?;
        let facility = facility.clone();
        self.directory.call(&shard, |r| ShardMsg::GetClinic(facility, r)).await
    }

    /// Clinics in a community.
    pub async fn clinics(&self, community: &CommunityCode) -> Result<Vec<Clinic>, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, ShardMsg::ListClinics).await
    }

    /// Runs matching in a community; returns the proposals made.
    pub async fn run_matching(&self, community: &CommunityCode) -> Result<Vec<Proposal>, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, ShardMsg::RunMatching).await
    }

    /// A community's proposals, newest first.
    pub async fn proposals(
        &self,
        community: &CommunityCode,
        statuses: Vec<ProposalStatus>,
        provider: Option<ProviderId>,
        offset: usize,
        limit: usize,
    ) -> Result<ProposalPage, AttachError> {
        let shard = self.shard_of(community)?;
        self.directory.call(&shard, |reply| ShardMsg::ListProposals { statuses, provider, offset, limit, reply }).await
    }

    /// A proposal.
    pub async fn proposal(&self, id: &ProposalId) -> Result<Proposal, AttachError> {
        let shard = self.locate(Locator::Proposal(*id), "proposal").await?;
        let id = *id;
        self.directory.call(&shard, |r| ShardMsg::GetProposal(id, r)).await
    }

    /// Accepts or declines a proposal.
    pub async fn answer(&self, id: &ProposalId, answer: Answer) -> Result<Proposal, AttachError> {
        let shard = self.locate(Locator::Proposal(*id), "proposal").await?;
        let id = *id;
        self.directory.call(&shard, |r| ShardMsg::AnswerProposal(id, answer, r)).await
    }

    /// A page of a provider's panel.
    pub async fn panel(&self, provider: &ProviderId, offset: usize, limit: usize) -> Result<PanelPage, AttachError> {
        let shard = self.locate(Locator::Provider(provider.clone()), "provider").await?;
        let provider = provider.clone();
        self.directory.call(&shard, |reply| ShardMsg::Panel { provider, offset, limit, reply }).await
    }

    /// Up to `limit` of a community's committed events after sequence `after`, in order.
    pub async fn events_after(
        &self,
        community: &CommunityCode,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Event>, AttachError> {
        let shard = self.shard_of(community)?;
        Ok(self.store.events_after(&shard, after, limit).await?)
    }

    /// Every shard's gauges (shards not running are left out).
    pub async fn gauges(&self) -> Vec<(ShardKey, crate::shard::ShardGauges)> {
        let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
        let answers = join_all(shards.iter().map(|s| self.directory.call(s, ShardMsg::Gauges))).await;
        shards.into_iter().zip(answers).filter_map(|(s, a)| a.ok().map(|g| (s, g))).collect()
    }

    /// How the live feed is doing.
    pub fn feed_status(&self) -> crate::feed::FeedStatus {
        self.feed.status()
    }

    /// A live receiver of a community's events, and its shard.
    pub fn subscribe(&self, community: &CommunityCode) -> Result<(ShardKey, broadcast::Receiver<Event>), AttachError> {
        let shard = self.shard_of(community)?;
        let rx = self.feed.subscribe(&shard);
        Ok((shard, rx))
    }

    /// A community's statistics.
    pub async fn community_stats(&self, community: &CommunityCode) -> Result<Statistics, AttachError> {
        let shard = self.shard_of(community)?;
        let counts = self.directory.call(&shard, ShardMsg::Stats).await?;
        Ok(Statistics::from_counts(counts))
    }

    /// A health authority's statistics, merged from its communities.
    pub async fn health_authority_stats(&self, ha: &HaCode) -> Result<Statistics, AttachError> {
        let authority =
            self.regions.health_authority(ha.as_str()).ok_or_else(|| AttachError::not_found("health authority"))?;
        let all = join_all(authority.communities.iter().map(|c| self.directory.call(&c.shard, ShardMsg::Stats))).await;
        let mut counts = ShardStats::default();
        for s in all {
            merge(&mut counts, s?);
        }
        Ok(Statistics::from_counts(counts))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn median_and_estimate() {
        let counts = ShardStats {
            waiting_people: 280,
            attached_people_28d: 28,
            wait_histogram: BTreeMap::from([(1, 1), (5, 1), (9, 1)]),
            ..Default::default()
        };
        let s = Statistics::from_counts(counts);
        assert_eq!(s.median_wait_days, Some(5));
        assert_eq!(s.estimated_wait_days, Some(280));
        let none = Statistics::from_counts(ShardStats::default());
        assert_eq!((none.median_wait_days, none.estimated_wait_days), (None, None));
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = ShardStats { waiting_people: 3, wait_histogram: BTreeMap::from([(1, 2)]), ..Default::default() };
        merge(
            &mut a,
            ShardStats { waiting_people: 4, wait_histogram: BTreeMap::from([(1, 1), (2, 5)]), ..Default::default() },
        );
        assert_eq!(a.waiting_people, 7);
        assert_eq!(a.wait_histogram, BTreeMap::from([(1, 3), (2, 5)]));
    }
}

//! The live match feed: the `events` catch-up query and the subscriptions.
//!
//! A subscription subscribes to the live feed first and then replays from the
//! store whatever came after the client's `afterSeq`, so nothing falls between
//! the two; duplicates are dropped by sequence number. Events pub/sub lost (a
//! jump in sequence numbers: Redis restarted, say) are read from the store and
//! delivered in order before the event that showed the gap, up to
//! `feed.max_replay` of them. A subscriber that falls behind the feed's buffer,
//! or whose gap is larger or cannot be read, gets one `MISSED` event naming the
//! last sequence it saw, and fills the gap with the `events` query.

use std::collections::VecDeque;
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, SimpleObject, Subscription};
use attach_actors::access::{Operation, Principal};
use attach_actors::domain::{self as d, Event, EventKind, ShardKey};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::allowance::hold_slot;
use super::error::GqlResult;
use super::query::{caller, max_page, system};
use super::types::Responder;
use crate::config::FeedSettings;

/// What happened.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum MatchEventKind {
    /// A household joined the waitlist.
    Registered,
    /// A registration left the waitlist.
    Withdrawn,
    /// A household was proposed to a provider.
    Proposed,
    /// A proposal was accepted.
    Accepted,
    /// A proposal was declined; the household is back on the waitlist.
    Declined,
    /// A proposal expired; the household is back on the waitlist.
    Expired,
    /// Patients (`people`) who came off the waitlist were added to a panel in
    /// this community (service code 98990): matched, or listed on a submitted
    /// panel while waiting. Told once per patient, where the panel is: a
    /// household matched to a provider in another community is `ACCEPTED` in
    /// its own community's feed and `ATTACHED` in the provider's. Summing
    /// `people` over `ATTACHED` counts each attachment once, as the statistics do.
    Attached,
    /// A provider's capacity changed.
    CapacityChanged,
    /// A provider's registry entry changed.
    ProviderUpdated,
    /// A clinic's registry entry changed.
    ClinicUpdated,
    /// Patients were taken off a panel (removed, or moved out by a transfer).
    Detached,
    /// A panel transfer started, moved patients, or finished (`people`: moved so far).
    TransferUpdated,
    /// A household left this community's waitlist for `otherCommunity`'s.
    MovedOut,
    /// A household joined this community's waitlist from `otherCommunity`, keeping its registration time.
    MovedIn,
    /// A waiting household changed (members or needs), keeping its place in line (`people`: its size now).
    HouseholdUpdated,
    /// A household of `otherCommunity` was proposed to a provider homed here
    /// (spill-over matching): its `people` places are held here while the proposal is open.
    Reserved,
    /// Such a proposal closed with `proposalStatus`, and its places here are no
    /// longer held (an accepted household's members joined the panel: `ATTACHED`).
    ReservationClosed,
    /// Waiting members (`people`) of a household were listed on a provider's
    /// submitted panel and left the waitlist; the panel's community tells `ATTACHED`.
    LeftForPanel,
    /// An attachment fell through: the household (`people`) is waiting again
    /// with its registration time, and the provider's panel let its members go.
    Returned,
    /// Patients (`people`) already the provider's joined a panel in this
    /// community: a submitted panel's rows that were not waiting, or patients a
    /// transfer moved onto it. Not attachments, so not `ATTACHED`.
    Listed,
    /// An open proposal (`proposalId`) was cancelled because its household
    /// withdrew or moved to another community's waitlist.
    ProposalCancelled,
    /// This subscriber fell behind and missed events after `missedAfterSeq`:
    /// fetch them with the `events` query.
    Missed,
}

/// One committed change in a community. Carries ids, never a PHN or a name.
#[derive(SimpleObject, Clone)]
#[graphql(serial, complex)]
pub struct MatchEvent {
    /// Health authority code.
    pub health_authority: String,
    /// Community code.
    pub community: String,
    /// The community's sequence number (0 on a `MISSED` notice).
    pub seq: u64,
    /// When it was committed.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What happened.
    pub kind: MatchEventKind,
    /// The registration concerned, whole (the GraphQL field `reference` masks it by caller).
    #[graphql(skip)]
    pub reference: Option<ID>,
    /// The household's community: this one, or for a reservation the
    /// neighbouring community the household waits in.
    #[graphql(skip)]
    pub household: ShardKey,
    /// The proposal concerned.
    pub proposal_id: Option<ID>,
    /// The provider concerned.
    pub provider_id: Option<ID>,
    /// People in the household (registered) or attached.
    pub people: Option<u32>,
    /// Who declined.
    pub declined_by: Option<Responder>,
    /// The clinic concerned.
    pub facility_number: Option<String>,
    /// On `MOVED_OUT`: the community joined; on `MOVED_IN`: the community left.
    pub other_community: Option<String>,
    /// On `MISSED`: the last sequence number delivered before the gap.
    pub missed_after_seq: Option<u64>,
    /// On `RESERVATION_CLOSED`: how the proposal closed.
    pub proposal_status: Option<super::types::ProposalStatus>,
}

#[async_graphql::ComplexObject]
impl MatchEvent {
    /// The registration concerned: whole to coordinators and support whose
    /// scope holds the household's community; masked (`ABCD…YZ`) on a
    /// neighbouring community's reservation events for anyone else, since
    /// whoever holds a reference may change the registration.
    async fn reference(&self, ctx: &Context<'_>) -> Option<ID> {
        let who = caller(ctx);
        self.reference.as_ref().map(|r| super::access::reference_for(who, &self.household, r))
    }
}

impl MatchEvent {
    fn base(shard: &ShardKey, seq: u64, at: d::Timestamp, kind: MatchEventKind) -> Self {
        MatchEvent {
            household: shard.clone(),
            health_authority: shard.ha.as_str().to_string(),
            community: shard.community.as_str().to_string(),
            seq,
            at: at.to_utc(),
            kind,
            reference: None,
            proposal_id: None,
            provider_id: None,
            people: None,
            declined_by: None,
            facility_number: None,
            other_community: None,
            missed_after_seq: None,
            proposal_status: None,
        }
    }

    fn missed(shard: &ShardKey, after: u64) -> Self {
        MatchEvent {
            missed_after_seq: Some(after),
            ..Self::base(shard, 0, d::Timestamp::now(), MatchEventKind::Missed)
        }
    }
}

fn id(v: impl ToString) -> Option<ID> {
    Some(ID(v.to_string()))
}

impl From<Event> for MatchEvent {
    fn from(e: Event) -> Self {
        use MatchEventKind as K;
        let (kind, reference, proposal, provider) = match &e.kind {
            EventKind::Registered { reference, .. } => (K::Registered, id(reference), None, None),
            EventKind::Withdrawn { reference } => (K::Withdrawn, id(reference), None, None),
            EventKind::Proposed { proposal, reference, provider } => {
                (K::Proposed, id(reference), id(proposal), id(provider))
            }
            EventKind::Accepted { proposal, reference, provider } => {
                (K::Accepted, id(reference), id(proposal), id(provider))
            }
            EventKind::Declined { proposal, reference, provider, .. } => {
                (K::Declined, id(reference), id(proposal), id(provider))
            }
            EventKind::Expired { proposal, reference, provider } => {
                (K::Expired, id(reference), id(proposal), id(provider))
            }
            EventKind::Attached { reference, provider, .. } => {
                (K::Attached, reference.as_ref().and_then(id), None, id(provider))
            }
            EventKind::CapacityChanged { provider } => (K::CapacityChanged, None, None, id(provider)),
            EventKind::ProviderUpdated { provider } => (K::ProviderUpdated, None, None, id(provider)),
            EventKind::ClinicUpdated { .. } => (K::ClinicUpdated, None, None, None),
            EventKind::Detached { provider, .. } => (K::Detached, None, None, id(provider)),
            EventKind::TransferUpdated { from, .. } => (K::TransferUpdated, None, None, id(from)),
            EventKind::MovedOut { reference, .. } => (K::MovedOut, id(reference), None, None),
            EventKind::MovedIn { reference, .. } => (K::MovedIn, id(reference), None, None),
            EventKind::HouseholdUpdated { reference, .. } => (K::HouseholdUpdated, id(reference), None, None),
            EventKind::Reserved { proposal, reference, provider, .. } => {
                (K::Reserved, id(reference), id(proposal), id(provider))
            }
            EventKind::ReservationClosed { proposal, reference, provider, .. } => {
                (K::ReservationClosed, id(reference), id(proposal), id(provider))
            }
            EventKind::Returned { proposal, reference, provider, .. } => {
                (K::Returned, id(reference), id(proposal), id(provider))
            }
            EventKind::LeftForPanel { reference, provider, .. } => (K::LeftForPanel, id(reference), None, id(provider)),
            EventKind::Listed { provider, .. } => (K::Listed, None, None, id(provider)),
            EventKind::ProposalCancelled { proposal, reference, provider } => {
                (K::ProposalCancelled, id(reference), id(proposal), id(provider))
            }
        };
        let mut out = MatchEvent {
            reference,
            proposal_id: proposal,
            provider_id: provider,
            ..Self::base(&e.shard, e.seq, e.at, kind)
        };
        match e.kind {
            EventKind::Registered { household_size, .. } | EventKind::HouseholdUpdated { household_size, .. } => {
                out.people = Some(u32::from(household_size))
            }
            EventKind::Attached { patients, .. }
            | EventKind::LeftForPanel { patients, .. }
            | EventKind::Returned { people: patients, .. } => out.people = Some(u32::from(patients)),
            EventKind::Declined { by, .. } => out.declined_by = Some(by.into()),
            EventKind::ClinicUpdated { facility } => out.facility_number = Some(facility),
            EventKind::Detached { patients, .. } | EventKind::Listed { patients, .. } => out.people = Some(patients),
            EventKind::TransferUpdated { moved, .. } => out.people = Some(moved),
            EventKind::MovedOut { to, .. } => out.other_community = Some(to.community.as_str().to_string()),
            EventKind::MovedIn { from, household_size, .. } => {
                out.other_community = Some(from.community.as_str().to_string());
                out.people = Some(u32::from(household_size));
            }
            EventKind::Reserved { from, household_size, .. } => {
                out.other_community = Some(from.community.as_str().to_string());
                out.people = Some(u32::from(household_size));
                out.household = from;
            }
            EventKind::ReservationClosed { from, status, .. } => {
                out.other_community = Some(from.community.as_str().to_string());
                out.proposal_status = Some(status.into());
                out.household = from;
            }
            _ => {}
        }
        out
    }
}

/// A page of a community's events.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct EventPage {
    /// Events in sequence order.
    pub nodes: Vec<MatchEvent>,
    /// The sequence number of the last event returned (pass as `afterSeq` for more);
    /// `afterSeq` itself when there was nothing new.
    pub last_seq: u64,
    /// Whether more events may follow (the page was full).
    pub has_more: bool,
}

/// The catch-up query.
#[derive(Default)]
pub struct FeedQuery;

#[Object]
impl FeedQuery {
    /// A community's committed events after `afterSeq`, in sequence order: what a
    /// subscriber that reconnects or fell behind uses to fill its gap.
    async fn events(
        &self,
        ctx: &Context<'_>,
        community_code: String,
        #[graphql(default)] after_seq: u64,
        first: Option<i32>,
    ) -> async_graphql::Result<EventPage> {
        let code = super::query::community_arg(&community_code, "communityCode")?;
        let limit = super::cursor::page_size(first, max_page(ctx)).gql()?;
        let events = system(ctx).events_after(caller(ctx), &code, after_seq, limit).await.gql()?;
        let last_seq = events.last().map_or(after_seq, |e| e.seq);
        Ok(EventPage { has_more: events.len() == limit, last_seq, nodes: events.into_iter().map(Into::into).collect() })
    }
}

/// The subscriptions.
pub struct SubscriptionRoot;

/// One community's live events, replayed from `after` first.
struct Live {
    shard: ShardKey,
    rx: broadcast::Receiver<Event>,
    /// The last sequence number delivered (or replayed from): later duplicates
    /// are dropped, and a jump past `last + 1` is a gap. `None` until the first
    /// event of a subscription that started without `afterSeq`.
    last: Option<u64>,
    /// For such a subscription, the community's last sequence number when it
    /// started (read after subscribing): a first event past `since + 1` means
    /// pub/sub lost some in between. Events up to `since` that still arrive
    /// were committed around the start and are delivered.
    since: Option<u64>,
    /// Replayed events still to deliver.
    backlog: VecDeque<Event>,
    /// Reads a gap pub/sub left from the store (none: every gap is `MISSED`).
    filler: Option<Arc<GapFiller>>,
    /// Changes when the feed connects again after an outage: events published
    /// meanwhile reached nobody here, so the store is asked what came since
    /// `last`, rather than waiting for the community's next event to show the gap.
    reconnects: Option<tokio::sync::watch::Receiver<u64>>,
}

/// What to do next on a live stream.
enum Next {
    Event(Result<Event, RecvError>),
    /// The feed connected again.
    Reconnected,
}

/// Reads the events pub/sub lost from the store, as the subscriber would with `events`.
struct GapFiller {
    system: Arc<attach_actors::system::AttachSystem>,
    who: Principal,
    community: d::CommunityCode,
    /// The most events read for one gap.
    max: usize,
}

impl GapFiller {
    /// The events after `last` and before `next`, when the store has every one
    /// of them and there are at most `max`.
    async fn fill(&self, last: u64, next: u64) -> Option<Vec<Event>> {
        let wanted = usize::try_from(next.checked_sub(last + 1)?).ok().filter(|n| *n <= self.max)?;
        let events = self.system.events_after(&self.who, &self.community, last, wanted).await.ok()?;
        events.iter().map(|e| e.seq).eq(last + 1..next).then_some(events)
    }
}

impl Live {
    /// A stream from now on, with nothing delivered yet.
    fn new(
        shard: ShardKey,
        rx: broadcast::Receiver<Event>,
        filler: Option<Arc<GapFiller>>,
        reconnects: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Self {
        Live { shard, rx, last: None, since: None, backlog: VecDeque::new(), filler, reconnects }
    }

    /// The next event or reconnection.
    async fn next(&mut self) -> Next {
        let Some(reconnects) = self.reconnects.as_mut() else { return Next::Event(self.rx.recv().await) };
        tokio::select! {
            biased;
            e = self.rx.recv() => Next::Event(e),
            changed = reconnects.changed() => {
                if changed.is_err() {
                    // The feed is gone: nothing more to be told of.
                    self.reconnects = None;
                    return Next::Event(self.rx.recv().await);
                }
                Next::Reconnected
            }
        }
    }

    /// After the feed connected again: the events committed since the last
    /// one delivered, read from the store into the backlog, or a `MISSED`
    /// notice when they are too many or cannot be read (nor how many there
    /// are). Nothing when none were committed, or when where this subscriber
    /// stands is not known (it was just told `MISSED`).
    async fn catch_up(&mut self) -> Option<MatchEvent> {
        let last = self.last.or(self.since)?;
        let filler = self.filler.clone()?;
        let Some(latest) = filler.system.last_seq(&self.shard).await else {
            self.last = None;
            return Some(MatchEvent::missed(&self.shard, last));
        };
        if latest <= last {
            return None;
        }
        self.since = None;
        let found = filler.fill(last, latest + 1).await;
        self.fill_gap(last, found, None)
    }

    /// The first of the events a gap after `last` held (`found`, read from the
    /// store), the rest and then `then` (the event that showed the gap, if one
    /// did) kept to follow it; or, when they could not be read, a `MISSED`
    /// notice, with `then` kept to follow it.
    fn fill_gap(&mut self, last: u64, found: Option<Vec<Event>>, then: Option<Event>) -> Option<MatchEvent> {
        let Some(found) = found else {
            // Too many, or not readable: say so before going on.
            self.backlog.extend(then);
            self.last = None;
            return Some(MatchEvent::missed(&self.shard, last));
        };
        self.backlog.extend(found);
        self.backlog.extend(then);
        let first = self.backlog.pop_front()?;
        self.last = Some(first.seq);
        Some(MatchEvent::from(first))
    }
}

fn live_stream(live: Live) -> BoxStream<'static, MatchEvent> {
    stream::unfold(live, |mut s| async move {
        if let Some(e) = s.backlog.pop_front() {
            s.last = Some(e.seq);
            return Some((MatchEvent::from(e), s));
        }
        loop {
            let received = match s.next().await {
                Next::Event(received) => received,
                Next::Reconnected => match s.catch_up().await {
                    Some(event) => return Some((event, s)),
                    None => continue,
                },
            };
            match received {
                Ok(e) if s.last.is_some_and(|last| e.seq <= last) => continue,
                Ok(e) => {
                    let gap_from = s.last.or(s.since.take());
                    if let Some(last) = gap_from.filter(|last| e.seq > last + 1) {
                        // Pub/sub lost events (a Redis outage, say): the store has them.
                        let found = match &s.filler {
                            Some(filler) => filler.fill(last, e.seq).await,
                            None => None,
                        };
                        let event = s.fill_gap(last, found, Some(e))?;
                        return Some((event, s));
                    }
                    s.last = Some(e.seq);
                    return Some((MatchEvent::from(e), s));
                }
                Err(RecvError::Lagged(_)) => {
                    let notice = MatchEvent::missed(&s.shard, s.last.or(s.since.take()).unwrap_or(0));
                    s.last = None;
                    return Some((notice, s));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

async fn community_stream(
    ctx: &Context<'_>,
    code: &d::CommunityCode,
    after: Option<u64>,
) -> async_graphql::Result<BoxStream<'static, MatchEvent>> {
    let system = system(ctx);
    // Subscribe before reading the store, so no event falls between the two.
    let (shard, rx) = system.subscribe(caller(ctx), code).gql()?;
    let max_replay = ctx.data_unchecked::<FeedSettings>().max_replay;
    let filler = Some(Arc::new(GapFiller {
        system: system.clone(),
        who: caller(ctx).clone(),
        community: code.clone(),
        max: max_replay,
    }));
    let (backlog, last, since) = match after {
        // From now on: where "now" is, to tell a lost first event.
        None => (VecDeque::new(), None, system.last_seq(&shard).await),
        Some(after) => {
            let events = system.events_after(caller(ctx), code, after, max_replay + 1).await.gql()?;
            if events.len() > max_replay {
                // Too much to replay here: say so, and let the client page with `events`.
                let notice = MatchEvent::missed(&shard, after);
                let rest = live_stream(Live::new(shard, rx, filler, system.feed_reconnects()));
                return Ok(stream::once(async move { notice }).chain(rest).boxed());
            }
            (events.into(), Some(after), None)
        }
    };
    Ok(live_stream(Live { last, since, backlog, ..Live::new(shard, rx, filler, system.feed_reconnects()) }))
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// A community's events as they are committed, in sequence order. With
    /// `afterSeq`, events committed after that sequence are replayed first.
    async fn community_events(
        &self,
        ctx: &Context<'_>,
        community_code: String,
        after_seq: Option<u64>,
    ) -> async_graphql::Result<BoxStream<'static, MatchEvent>> {
        let code = super::query::community_arg(&community_code, "communityCode")?;
        let stream = community_stream(ctx, &code, after_seq).await?;
        hold_slot(ctx, stream)
    }

    /// Every community of a health authority, each in its own sequence order.
    async fn health_authority_events(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<BoxStream<'static, MatchEvent>> {
        let ha = d::HaCode::parse(&code).map_err(|e| d::DomainError { field: "code".into(), ..e }).gql()?;
        caller(ctx).require_health_authority(Operation::ReadEvents, &ha).gql()?;
        let authority = system(ctx)
            .regions()
            .health_authority(ha.as_str())
            .ok_or_else(|| super::error::to_graphql(attach_actors::system::ha_not_found(&ha)))?;
        // All at once: each asks its community's last event where it runs, perhaps on a peer.
        let streams = futures::future::try_join_all(
            authority.communities.iter().map(|c| community_stream(ctx, &c.shard.community, None)),
        )
        .await?;
        hold_slot(ctx, stream::select_all(streams).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attach_actors::domain::{ProviderId, Timestamp};

    fn shard() -> ShardKey {
        ShardKey::parse("IHA/111").unwrap()
    }

    fn event(seq: u64) -> Event {
        Event {
            shard: shard(),
            seq,
            at: Timestamp(0),
            kind: EventKind::CapacityChanged { provider: ProviderId::parse("P1234").unwrap() },
        }
    }

    fn describe(e: &MatchEvent) -> (u64, Option<u64>) {
        (e.seq, e.missed_after_seq)
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_once_and_goes_on() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = live_stream(Live::new(shard(), rx, None, None));
        tx.send(event(1)).unwrap();
        assert_eq!(describe(&s.next().await.unwrap()), (1, None));
        for seq in 2..=20 {
            tx.send(event(seq)).unwrap(); // nobody reads: the channel keeps the newest 4
        }
        assert_eq!(describe(&s.next().await.unwrap()), (0, Some(1)), "MISSED after seq 1");
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(s.next().await.unwrap().seq);
        }
        assert_eq!(got, [17, 18, 19, 20], "then the newest, in order; memory held: 4 events");
    }

    #[tokio::test]
    async fn a_jump_in_sequence_is_announced_and_duplicates_are_dropped() {
        let (tx, rx) = broadcast::channel(16);
        let backlog = VecDeque::from([event(3), event(4)]);
        let mut s = live_stream(Live { last: Some(2), backlog, ..Live::new(shard(), rx, None, None) });
        for seq in [3, 4, 5, 8] {
            tx.send(event(seq)).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(describe(&s.next().await.unwrap()));
        }
        assert_eq!(seen, [(3, None), (4, None), (5, None), (0, Some(5)), (8, None)]);
    }

    /// A subscription from now on, the community standing at `since`, with no store to fill gaps.
    fn from_now(rx: broadcast::Receiver<Event>, since: u64) -> BoxStream<'static, MatchEvent> {
        live_stream(Live { since: Some(since), ..Live::new(shard(), rx, None, None) })
    }

    #[tokio::test]
    async fn a_subscriber_from_now_on_is_told_of_a_lost_first_event() {
        // The community stood at seq 4 when the subscription started; 5 was lost.
        let (tx, rx) = broadcast::channel(16);
        let mut s = from_now(rx, 4);
        tx.send(event(6)).unwrap();
        tx.send(event(7)).unwrap();
        let seen: Vec<_> =
            [s.next().await.unwrap(), s.next().await.unwrap(), s.next().await.unwrap()].iter().map(describe).collect();
        assert_eq!(seen, [(0, Some(4)), (6, None), (7, None)]);
        // Committed around the start (at or before the count read): delivered, no notice.
        let (tx, rx) = broadcast::channel(16);
        let mut s = from_now(rx, 4);
        tx.send(event(4)).unwrap();
        tx.send(event(5)).unwrap();
        assert_eq!((describe(&s.next().await.unwrap()), describe(&s.next().await.unwrap())), ((4, None), (5, None)));
    }
}

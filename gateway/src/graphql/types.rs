//! Output types: what clients read. Built from the core's values; no PHN is
//! ever an output field.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_list;
use async_graphql::{
    ContextSelectionSet, Enum, ID, InputType, Name, OutputType, Positioned, ServerResult, SimpleObject, Value,
};
use attach_actors::domain as d;
use attach_actors::regions;
use attach_actors::shard::{ProviderView, RegistrationView};
use attach_actors::system::Statistics as CoreStatistics;
use chrono::{DateTime, NaiveDate, Utc};

/// A clinical need.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::Need")]
pub enum Need {
    /// Currently pregnant (a member aged 10 or more).
    Pregnancy,
    /// A baby under 12 months.
    Newborn,
    /// Frailty or reduced mobility.
    Frailty,
    /// Discharged from hospital in the last 30 days.
    RecentDischarge,
    /// Complex chronic conditions.
    ChronicComplex,
    /// Mental health or substance use care.
    MentalHealth,
    /// Palliative care.
    Palliative,
}

/// An age band.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::AgeGroup")]
pub enum AgeGroup {
    /// Under 18.
    Child,
    /// 18 to 64.
    Adult,
    /// 65 and over.
    Senior,
}

/// Physician or nurse practitioner.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::ProviderKind")]
pub enum ProviderKind {
    /// Family physician.
    Physician,
    /// Nurse practitioner.
    NursePractitioner,
}

/// Where a registration stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::RegistrationStatus")]
pub enum RegistrationStatus {
    /// On the waitlist.
    Waiting,
    /// Proposed to a provider.
    Proposed,
    /// On a provider's panel.
    Attached,
    /// Left the waitlist.
    Withdrawn,
    /// Moved to another community's waitlist, where the registration goes on
    /// with its registration time (this copy is the community left's record).
    Moved,
}

/// Where a proposal stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::ProposalStatus")]
pub enum ProposalStatus {
    /// Waiting for an answer.
    Open,
    /// Accepted.
    Accepted,
    /// Declined.
    Declined,
    /// Not answered in time.
    Expired,
    /// The household withdrew.
    Cancelled,
    /// Accepted, then the attachment fell through: the household was returned
    /// to the waitlist with its place (`returnToWaitlist`).
    Returned,
}

/// Who answered.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::Responder")]
pub enum Responder {
    /// The provider (a delegate manages a panel but does not answer proposals).
    Provider,
    /// The patient.
    Patient,
    /// An attachment coordinator.
    Coordinator,
}

/// A community: one waitlist.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Community {
    /// Code (in BC the local health area number).
    pub code: String,
    /// Name.
    pub name: String,
    /// Health authority code.
    pub health_authority: String,
    /// Health service delivery area code.
    pub hsda_code: String,
    /// Health service delivery area name.
    pub hsda_name: String,
    /// Approximate centre.
    pub latitude: f64,
    /// Approximate centre.
    pub longitude: f64,
    /// Approximate population.
    pub population: u64,
}

impl From<&regions::Community> for Community {
    fn from(c: &regions::Community) -> Self {
        Community {
            code: c.shard.community.as_str().to_string(),
            name: c.name.clone(),
            health_authority: c.shard.ha.as_str().to_string(),
            hsda_code: c.hsda_code.clone(),
            hsda_name: c.hsda_name.clone(),
            latitude: c.lat,
            longitude: c.lon,
            population: c.population,
        }
    }
}

/// A health authority.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct HealthAuthority {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Its communities.
    pub communities: Vec<Community>,
}

impl From<&regions::HealthAuthority> for HealthAuthority {
    fn from(h: &regions::HealthAuthority) -> Self {
        HealthAuthority {
            code: h.code.as_str().to_string(),
            name: h.name.clone(),
            communities: h.communities.iter().map(Community::from).collect(),
        }
    }
}

/// A match that fell through.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Decline {
    /// The proposal.
    pub proposal_id: ID,
    /// The provider it was for.
    pub provider_id: ID,
    /// Who declined; null when it expired unanswered.
    pub by: Option<Responder>,
    /// The reason: for coordinators, support and the provider it was for, and
    /// the household's own; a provider's or coordinator's reason is empty for
    /// a caller reading the registration by its reference alone.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One part of a priority score.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct ScorePart {
    /// What for.
    pub label: String,
    /// Points (one point is one day of waiting).
    pub points: i64,
}

/// Why a proposal was made.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Explanation {
    /// The parts of the score.
    pub parts: Vec<ScorePart>,
    /// How the provider was chosen.
    pub provider_fit: Vec<String>,
}

/// A proposal: this household to this provider.
#[derive(SimpleObject)]
#[graphql(serial, complex)]
pub struct Proposal {
    /// Id.
    pub id: ID,
    /// The registration proposed, whole (the GraphQL field `reference` masks it by caller).
    #[graphql(skip)]
    pub reference: ID,
    /// The household's community's shard.
    #[graphql(skip)]
    pub household: d::ShardKey,
    /// The provider.
    pub provider_id: ID,
    /// The household's community, where the proposal is kept and answered. A
    /// spill-over proposal's provider is homed in a neighbouring community,
    /// which lists it among its own proposals too.
    pub community: String,
    /// Places the household takes.
    pub household_size: u32,
    /// Whether the household counts as complex.
    pub complex: bool,
    /// Status.
    pub status: ProposalStatus,
    /// Priority score.
    pub score: i64,
    /// Why: the score's parts, and how the provider fits (the fit is not given
    /// to a caller reading the registration by its reference alone).
    pub explanation: Explanation,
    /// Made at.
    pub created_at: DateTime<Utc>,
    /// Expires at, if unanswered.
    pub expires_at: DateTime<Utc>,
    /// Answered or ended at.
    pub closed_at: Option<DateTime<Utc>>,
    /// Who declined.
    pub declined_by: Option<Responder>,
    /// Why it was declined (not given to a caller reading the registration by
    /// its reference alone).
    pub decline_reason: Option<String>,
}

#[async_graphql::ComplexObject]
impl Proposal {
    /// The registration proposed: whole to the household's community's
    /// coordinators and support, and to the household itself; masked
    /// (`ABCD…YZ`) to the provider, delegates and anyone else, since whoever
    /// holds a reference may change the registration.
    async fn reference(&self, ctx: &async_graphql::Context<'_>) -> ID {
        super::access::reference_for(super::query::caller(ctx), &self.household, &self.reference)
    }
}

impl From<d::Proposal> for Proposal {
    fn from(p: d::Proposal) -> Self {
        Proposal {
            id: ID(p.id.to_string()),
            reference: ID(p.reference.to_string()),
            household: p.shard.clone(),
            provider_id: ID(p.provider.to_string()),
            community: p.shard.community.as_str().to_string(),
            household_size: u32::from(p.household_size),
            complex: p.complex,
            status: p.status.into(),
            score: p.explanation.score,
            explanation: Explanation {
                parts: p
                    .explanation
                    .parts
                    .into_iter()
                    .map(|s| ScorePart { label: s.label, points: s.points })
                    .collect(),
                provider_fit: p.explanation.provider_fit,
            },
            created_at: p.created_at.to_utc(),
            expires_at: p.expires_at.to_utc(),
            closed_at: p.closed_at.map(d::Timestamp::to_utc),
            declined_by: p.declined_by.map(Into::into),
            decline_reason: p.decline_reason,
        }
    }
}

/// A household's registration.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Registration {
    /// Public reference: keep it to check your status.
    pub reference: ID,
    /// The community.
    pub community: String,
    /// Status.
    pub status: RegistrationStatus,
    /// When registered: the place in line, kept when a match falls through.
    pub registered_at: DateTime<Utc>,
    /// People in the household.
    pub household_size: u32,
    /// Needs reported.
    pub needs: Vec<Need>,
    /// Languages.
    pub languages: Vec<String>,
    /// 1-based place in the community's line, while waiting. Not given on
    /// waitlist pages, whose order is the line (count from the page's start).
    pub place_in_line: Option<u64>,
    /// People ahead in line, while waiting. Not given on waitlist pages.
    pub people_ahead: Option<u64>,
    /// Days this household can expect to wait from now, while waiting: the
    /// people ahead of it and its own members, at the rate people were attached
    /// in its community over the last 28 days. A clinical need can bring a
    /// match sooner, and a provider's preferences later. Null when nobody was
    /// attached there in that time (no rate to go by). Not given on waitlist
    /// pages, nor in the answer to a move to a community another node holds
    /// (read the registration again).
    pub estimated_wait_days: Option<u32>,
    /// The open proposal, or the last one (one closed longer ago than
    /// `shard.proposal_memory_days` only while waiting, as the last declined
    /// one). Not given on waitlist pages: read the registration, or `declines`.
    pub proposal: Option<Proposal>,
    /// The provider, once attached.
    pub provider_id: Option<ID>,
    /// Matches that fell through, oldest first.
    pub declines: Vec<Decline>,
    /// Why it was withdrawn.
    pub withdrawn_reason: Option<String>,
    /// When the registration last changed. Send it back as `updateHousehold`'s
    /// `ifUnchangedSince`, so that a change someone else made since you read it
    /// (a baby added by the household while a coordinator corrects a PHN) is
    /// not overwritten unseen.
    pub updated_at: DateTime<Utc>,
}

impl From<RegistrationView> for Registration {
    fn from(v: RegistrationView) -> Self {
        let mut reg = Registration::from(v.registration);
        reg.place_in_line = v.place.map(|p| p.0);
        reg.people_ahead = v.place.map(|p| p.1);
        reg.estimated_wait_days = v.estimated_wait_days;
        reg.proposal = v.proposal.map(Into::into);
        reg
    }
}

impl From<d::Registration> for Registration {
    fn from(r: d::Registration) -> Self {
        Registration::from(&r)
    }
}

/// From a shared record (a waitlist page's items): copies only what the type shows.
impl From<&d::Registration> for Registration {
    fn from(r: &d::Registration) -> Self {
        Registration {
            reference: ID(r.reference.to_string()),
            community: r.shard.community.as_str().to_string(),
            status: r.status.into(),
            registered_at: r.registered_at.to_utc(),
            household_size: r.household.members.len() as u32,
            needs: needs_of(r),
            languages: r.household.languages.iter().map(|l| l.as_str().to_string()).collect(),
            place_in_line: None,
            people_ahead: None,
            estimated_wait_days: None,
            proposal: None,
            provider_id: r.provider.as_ref().map(|p| ID(p.to_string())),
            updated_at: r.updated_at.to_utc(),
            declines: r
                .declines
                .iter()
                .map(|x| Decline {
                    proposal_id: ID(x.proposal.to_string()),
                    provider_id: ID(x.provider.to_string()),
                    by: x.by.map(Into::into),
                    reason: x.reason.clone(),
                    at: x.at.to_utc(),
                })
                .collect(),
            withdrawn_reason: r.withdrawn_reason.clone(),
        }
    }
}

fn needs_of(r: &d::Registration) -> Vec<Need> {
    r.household.needs().into_iter().map(Into::into).collect()
}

/// A page's registrations: `[Registration!]!` to clients, held as the shard's
/// shared records. When every field selected on the items is a plain field (a
/// scalar or enum, or a list of them, with no fragments, arguments or
/// directives), each item's value is read straight from its record. Any other
/// selection builds each item's [`Registration`] and goes through
/// async-graphql as usual. An end-to-end test checks that both agree.
pub struct RegistrationList(pub Vec<std::sync::Arc<d::Registration>>);

/// Reads one plain field of a registration, as [`Registration`] would show it.
type PlainField = fn(&d::Registration) -> Value;

fn text(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

/// The reader of a plain field, by its GraphQL name; `None` for any other.
/// A page's items are never asked their place in line (`placeInLine`,
/// `peopleAhead` and `estimatedWaitDays` are null on them, as on [`Registration::from`]).
fn plain_field(name: &str) -> Option<PlainField> {
    let read: PlainField = match name {
        "reference" => |r| text(r.reference),
        "community" => |r| text(r.shard.community.as_str()),
        "status" => |r| RegistrationStatus::from(r.status).to_value(),
        "registeredAt" => |r| r.registered_at.to_utc().to_value(),
        "updatedAt" => |r| r.updated_at.to_utc().to_value(),
        "householdSize" => |r| (r.household.members.len() as u32).to_value(),
        "needs" => |r| needs_of(r).to_value(),
        "languages" => |r| Value::List(r.household.languages.iter().map(|l| text(l.as_str())).collect()),
        "placeInLine" | "peopleAhead" | "estimatedWaitDays" => |_| Value::Null,
        "providerId" => |r| r.provider.as_ref().map_or(Value::Null, text),
        "withdrawnReason" => |r| r.withdrawn_reason.as_ref().map_or(Value::Null, text),
        "__typename" => |_| text("Registration"),
        _ => return None,
    };
    Some(read)
}

/// The response keys and readers of a selection made only of plain fields.
fn plain_selection(set: &Positioned<SelectionSet>) -> Option<Vec<(&Name, PlainField)>> {
    set.node
        .items
        .iter()
        .map(|selection| match &selection.node {
            Selection::Field(f)
                if f.node.arguments.is_empty()
                    && f.node.directives.is_empty()
                    && f.node.selection_set.node.items.is_empty() =>
            {
                plain_field(&f.node.name.node).map(|read| (&f.node.response_key().node, read))
            }
            _ => None,
        })
        .collect()
}

impl OutputType for RegistrationList {
    fn type_name() -> Cow<'static, str> {
        <Vec<Registration>>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<Registration>>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<Registration>>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        match plain_selection(ctx.item) {
            Some(fields) => Ok(Value::List(
                self.0
                    .iter()
                    .map(|r| Value::Object(fields.iter().map(|(key, read)| ((*key).clone(), read(r))).collect()))
                    .collect(),
            )),
            None => {
                let items: Vec<Registration> = self.0.iter().map(|r| Registration::from(&**r)).collect();
                resolve_list(ctx, field, &items, Some(items.len())).await
            }
        }
    }
}

/// A provider's declared capacity and preferences.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Capacity {
    /// Taking new patients.
    pub accepting_new_patients: bool,
    /// New patients a month.
    pub monthly_rate: u32,
    /// Panel size aimed for.
    pub desired_panel_size: u32,
    /// Most people of households with a complex need, as a percentage of the
    /// month's places (what this month's proposals already hold counts).
    pub complex_share_percent: u32,
    /// Languages offered.
    pub languages: Vec<String>,
    /// Age groups taken (empty: all).
    pub age_groups: Vec<AgeGroup>,
}

/// A provider.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Provider {
    /// Practitioner number.
    pub id: ID,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Kind.
    pub kind: ProviderKind,
    /// Home community.
    pub community: String,
    /// Clinics (facility numbers).
    pub clinics: Vec<String>,
    /// Capacity and preferences.
    pub capacity: Capacity,
    /// Patients on the panel known only as a count; each patient a submitted
    /// panel lists takes one off it (down to 0).
    pub reported_panel_size: u32,
    /// Current panel size.
    pub panel_size: u32,
    /// Places free for matching now.
    pub free_places: u32,
    /// Places held by open proposals.
    pub open_places: u32,
}

impl From<ProviderView> for Provider {
    fn from(v: ProviderView) -> Self {
        let p = v.provider;
        let c = p.capacity;
        Provider {
            id: ID(p.id.to_string()),
            given_name: p.given_name.as_str().to_string(),
            surname: p.surname.as_str().to_string(),
            kind: p.kind.into(),
            community: p.shard.community.as_str().to_string(),
            clinics: p.clinics.iter().map(|f| f.as_str().to_string()).collect(),
            capacity: Capacity {
                accepting_new_patients: c.accepting,
                monthly_rate: c.monthly_rate,
                desired_panel_size: c.desired_panel_size,
                complex_share_percent: u32::from(c.complexity.max_complex_share_pct),
                languages: c.languages.iter().map(|l| l.as_str().to_string()).collect(),
                age_groups: c.age_groups.into_iter().map(Into::into).collect(),
            },
            reported_panel_size: p.reported_panel_size,
            panel_size: v.panel_size,
            free_places: v.free_places,
            open_places: v.open_places,
        }
    }
}

/// A clinic.
#[derive(SimpleObject)]
#[graphql(serial, complex)]
pub struct Clinic {
    /// Facility number.
    pub facility_number: String,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Community.
    pub community: String,
    /// Hours.
    pub hours: String,
    /// Phone.
    pub phone: String,
    /// Medical director's provider id.
    pub medical_director_id: Option<ID>,
}

impl From<d::Clinic> for Clinic {
    fn from(c: d::Clinic) -> Self {
        Clinic {
            facility_number: c.facility.to_string(),
            name: c.name,
            address: c.address,
            community: c.shard.community.as_str().to_string(),
            hours: c.hours,
            phone: c.phone,
            medical_director_id: c.medical_director.map(|p| ID(p.to_string())),
        }
    }
}

/// One patient on a panel, as a provider sees their own panel.
#[derive(SimpleObject)]
#[graphql(serial, complex)]
pub struct PanelPatient {
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// When attached.
    pub attached_at: DateTime<Utc>,
    /// Billing service code of the attachment (98990, a $0 claim).
    pub service_code: String,
    /// The registration the patient came from, whole (the GraphQL field `reference` masks it).
    #[graphql(skip)]
    pub reference: Option<ID>,
    /// The clinic the patient was submitted, transferred or matched for. A match
    /// names the provider's clinic when they practise at exactly one; otherwise,
    /// and for matches made before clinics were recorded, it is null.
    pub facility_number: Option<String>,
    /// How the patient came onto the panel.
    pub source: PanelPatientSource,
}

/// How a patient came onto a panel.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PanelPatientSource {
    /// Matched from the waitlist and accepted.
    Matched,
    /// Submitted in the provider's panel list.
    Submitted,
    /// Moved from another provider's panel by a transfer.
    Transferred,
}

#[async_graphql::ComplexObject]
impl PanelPatient {
    /// The registration the patient came from, if they came off the waitlist,
    /// masked (`ABCD…YZ`): whoever holds a reference may change the
    /// registration, and a panel's readers (its provider, their delegates,
    /// support of the provider's community) need not hold the household's
    /// community, which may be another (spill-over, a submitted list).
    async fn reference(&self, ctx: &async_graphql::Context<'_>) -> Option<ID> {
        let whole = super::query::caller(ctx).role() == attach_actors::access::Role::Internal;
        self.reference.as_ref().map(|r| if whole { r.clone() } else { super::access::masked_reference(r) })
    }
}

impl From<d::PanelEntry> for PanelPatient {
    fn from(e: d::PanelEntry) -> Self {
        PanelPatient {
            given_name: e.given_name.as_str().to_string(),
            surname: e.surname.as_str().to_string(),
            date_of_birth: e.date_of_birth.date(),
            attached_at: e.attached_at.to_utc(),
            service_code: d::PanelEntry::SERVICE_CODE.to_string(),
            reference: e.source.reference().map(|r| ID(r.to_string())),
            facility_number: e.source.facility().map(|f| f.to_string()),
            source: match e.source {
                d::PanelSource::Match { .. }
                | d::PanelSource::Matched { .. }
                | d::PanelSource::MatchedWithNeeds { .. } => PanelPatientSource::Matched,
                d::PanelSource::Upload | d::PanelSource::Submitted { .. } => PanelPatientSource::Submitted,
                d::PanelSource::Transferred { .. }
                | d::PanelSource::TransferredWithNeeds { .. }
                | d::PanelSource::TransferredAttachment { .. } => PanelPatientSource::Transferred,
            },
        }
    }
}

/// Numbers for a community or health authority.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct Statistics {
    /// Households waiting.
    pub waiting_households: u64,
    /// People waiting.
    pub waiting_people: u64,
    /// Households with an open proposal.
    pub proposed_households: u64,
    /// People in them.
    pub proposed_people: u64,
    /// People attached in the last 7 days. Attachments count people who came
    /// off the waitlist onto a panel here (matched, or taken from the waitlist
    /// by a submitted panel) and are still on a panel: a transfer moves the
    /// count to where the panel now is, and a return or a removal from the
    /// panel takes it out.
    pub attached_this_week: u64,
    /// People attached in the last 28 days (the rate behind the estimated wait).
    pub attached_last_28_days: u64,
    /// People attached through Attach and still on a panel here.
    pub attached_total: u64,
    /// Median days waited by households waiting now (for an even count, the
    /// mean of the two middle waits, rounded half up).
    pub median_wait_days: Option<u32>,
    /// Expected wait in days for one person registering today: everyone waiting,
    /// then them, at the rate people were attached here over the last 28 days,
    /// as their registration's `estimatedWaitDays` will say (null: no
    /// attachments in 28 days to measure a rate).
    pub estimated_wait_days: Option<u32>,
    /// Providers accepting new patients.
    pub accepting_providers: u64,
    /// Places free for matching now.
    pub free_places: u64,
    /// The live feed of the process that answered.
    pub feed: FeedState,
}

/// How the live feed is doing.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct FeedState {
    /// `memory` (in-process) or `redis`.
    pub backend: String,
    /// Whether events flow now; when not, mutations still succeed and subscribers catch up.
    pub connected: bool,
    /// Events not published while the backend was down or slow (recoverable with `events`).
    pub dropped: u64,
}

impl From<attach_actors::feed::FeedStatus> for FeedState {
    fn from(f: attach_actors::feed::FeedStatus) -> Self {
        FeedState { backend: f.backend.to_string(), connected: f.connected, dropped: f.dropped }
    }
}

impl Statistics {
    /// Statistics from the core's numbers and this process's feed state.
    pub fn new(s: CoreStatistics, feed: attach_actors::feed::FeedStatus) -> Self {
        let c = s.counts;
        Statistics {
            waiting_households: c.waiting_households,
            waiting_people: c.waiting_people,
            proposed_households: c.proposed_households,
            proposed_people: c.proposed_people,
            attached_this_week: c.attached_people_week,
            attached_last_28_days: c.attached_people_28d,
            attached_total: c.attached_people,
            median_wait_days: s.median_wait_days,
            estimated_wait_days: s.estimated_wait_days,
            accepting_providers: c.accepting_providers,
            free_places: c.free_places,
            feed: feed.into(),
        }
    }
}

/// Paging state of a list.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PageInfo {
    /// Whether more items follow.
    pub has_next_page: bool,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// A page of the waitlist.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct RegistrationConnection {
    /// The registrations, in line order.
    pub nodes: RegistrationList,
    /// Paging.
    pub page_info: PageInfo,
    /// Households waiting in the community (unfiltered).
    pub total_count: u64,
}

/// A page of proposals.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct ProposalConnection {
    /// Newest first.
    pub nodes: Vec<Proposal>,
    /// Paging.
    pub page_info: PageInfo,
}

/// A page of a panel.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PanelConnection {
    /// Patients.
    pub nodes: Vec<PanelPatient>,
    /// Paging.
    pub page_info: PageInfo,
    /// Panel size (reported plus itemised).
    pub panel_size: u32,
}

/// The result of a matching run.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct MatchRun {
    /// The community.
    pub community: String,
    /// Proposals made.
    pub proposals: Vec<Proposal>,
}

//! Who the caller is, delegation endorsements, and the audit log.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use attach_actors::access as a;
use attach_actors::audit::{self as au, AuditCursor, AuditId, AuditQuery};
use attach_actors::domain::{self as d, Timestamp};
use chrono::{DateTime, Utc};

use super::cursor;
use super::error::GqlResult;
use super::query::{caller, max_page, system};
use super::types::PageInfo;

/// A role, as tokens carry it.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::access::Role")]
pub enum Role {
    /// No token.
    Public,
    /// A patient.
    Patient,
    /// A physician or nurse practitioner.
    Provider,
    /// A provider's staff member acting under an endorsement.
    Delegate,
    /// A clinic's medical director.
    MedicalDirector,
    /// An attachment coordinator.
    Coordinator,
    /// Support staff.
    Support,
    /// Operations.
    Operations,
    /// Attach itself (seeding, command-line imports).
    Internal,
}

/// The caller, as their token says.
#[derive(SimpleObject)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// The role.
    pub role: Role,
    /// Their own provider id (providers and medical directors).
    pub provider_id: Option<ID>,
    /// Where they work: `province`, `ha:CODE`, `community:CODE`.
    pub scope: Vec<String>,
}

/// Where an endorsement stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::EndorsementStatus")]
pub enum EndorsementStatus {
    /// Started by one party.
    Created,
    /// Seen by the other party.
    Received,
    /// Agreed by the other party.
    Approved,
    /// Refused by the other party.
    Declined,
    /// Confirmed by the party who started it: the delegate may act.
    Completed,
    /// Withdrawn or revoked.
    Cancelled,
}

/// A party of an endorsement.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::Party")]
pub enum Party {
    /// The provider who delegates.
    Provider,
    /// The staff member delegated to.
    Delegate,
}

/// A step of the endorsement workflow.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::domain::EndorsementStep")]
pub enum EndorsementStep {
    /// The other party acknowledges it (`CREATED → RECEIVED`).
    Receive,
    /// The other party agrees (`RECEIVED → APPROVED`).
    Approve,
    /// The other party refuses (`→ DECLINED`).
    Decline,
    /// The party who started it confirms (`APPROVED → COMPLETED`).
    Complete,
    /// Either party withdraws it, or revokes it once completed (`→ CANCELLED`).
    Cancel,
}

/// A delegation from a provider to a staff member, for panel management.
#[derive(SimpleObject)]
pub struct Endorsement {
    /// Its id.
    pub id: ID,
    /// The provider who delegates.
    pub provider_id: ID,
    /// The staff member's user id.
    pub delegate: String,
    /// Who started it.
    pub started_by: Party,
    /// Where it stands.
    pub status: EndorsementStatus,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<d::Endorsement> for Endorsement {
    fn from(e: d::Endorsement) -> Self {
        Endorsement {
            id: ID(e.id.to_string()),
            provider_id: ID(e.provider.to_string()),
            delegate: e.delegate.to_string(),
            started_by: e.started_by.into(),
            status: e.status.into(),
            created_at: e.created_at.to_utc(),
            updated_at: e.updated_at.to_utc(),
        }
    }
}

/// One audited access: who did what to which record, and how it ended.
#[derive(SimpleObject)]
pub struct AuditRecord {
    /// Its id.
    pub id: ID,
    /// When.
    pub at: DateTime<Utc>,
    /// The caller's token subject.
    pub subject: String,
    /// The caller's role.
    pub role: Role,
    /// The operation (e.g. `readWaitlist`, `answerProposal`).
    pub operation: String,
    /// The health authority touched.
    pub health_authority: Option<String>,
    /// The community touched.
    pub community: Option<String>,
    /// The id of the record touched (registration reference, proposal id,
    /// provider id, facility number, endorsement id); never personal data. A
    /// registration reference is shown masked (its first four and last two
    /// characters): the whole reference lets anyone read the registration.
    /// Filter by the whole reference to find its records.
    pub target: Option<String>,
    /// `OK`, or the error code of the refusal: the one the caller was given,
    /// except that `registrationByPhn` out of the caller's scope is recorded as
    /// `FORBIDDEN` while the caller is told `NOT_FOUND` (so the answer does not
    /// say where someone is registered, and the log does).
    pub outcome: String,
}

impl From<au::AuditRecord> for AuditRecord {
    fn from(r: au::AuditRecord) -> Self {
        AuditRecord {
            id: ID(r.id.to_string()),
            at: r.at.to_utc(),
            subject: r.subject,
            role: r.role.into(),
            operation: r.operation.as_str().to_string(),
            health_authority: r.shard.as_ref().map(|s| s.ha.as_str().to_string()),
            community: r.shard.as_ref().map(|s| s.community.as_str().to_string()),
            target: r.target.map(masked),
            outcome: r.outcome.as_str().to_string(),
        }
    }
}

/// A registration's reference as `who` is given it (DECISIONS 45): whole to
/// the household (the public and patients reach a registration, and its
/// proposals, only by its reference), to Attach itself, and to coordinators
/// and support whose scope holds the household's community (`household`);
/// masked (`ABCD…YZ`) to everyone else, providers and delegates above all,
/// since whoever holds a reference may change, move or withdraw the
/// registration. A masked reference still tells two households apart.
pub fn reference_for(who: &a::Principal, household: &d::ShardKey, reference: &ID) -> ID {
    let whole = match who.role() {
        a::Role::Public | a::Role::Patient | a::Role::Internal => true,
        a::Role::Coordinator | a::Role::Support => who.scope().covers(household),
        a::Role::Provider | a::Role::Delegate | a::Role::MedicalDirector | a::Role::Operations => false,
    };
    if whole { reference.clone() } else { masked_reference(reference) }
}

/// A registration's reference masked: its first four and last two characters.
pub fn masked_reference(reference: &ID) -> ID {
    ID(masked(reference.0.clone()))
}

/// A target as the audit log shows it: a registration reference masked, since
/// whoever holds it may read the registration; any other id as it is.
fn masked(target: String) -> String {
    let reference = target.len() == 12 && d::RegistrationRef::parse(&target).is_ok();
    if reference { format!("{}…{}", &target[..4], &target[10..]) } else { target }
}

/// A page of the audit log, oldest first.
#[derive(SimpleObject)]
pub struct AuditConnection {
    /// The records.
    pub nodes: Vec<AuditRecord>,
    /// Paging.
    pub page_info: PageInfo,
}

/// Which audit records to read (all filters optional, combined with AND).
#[derive(InputObject, Default)]
pub struct AuditFilter {
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Only this caller.
    pub subject: Option<String>,
    /// Only this role.
    pub role: Option<Role>,
    /// Only this operation, as records name it (e.g. `readWaitlist`;
    /// `registrationByPhn` is `findRegistration`, `acceptProposal` and
    /// `declineProposal` are `answerProposal`). An unknown name is refused with
    /// the list of them all.
    pub operation: Option<String>,
    /// Only this community (`HA/COMMUNITY`, e.g. `IHA/111`).
    pub shard: Option<String>,
    /// Only this record id.
    pub target: Option<String>,
}

impl AuditFilter {
    fn parse(self, after: Option<String>, limit: usize) -> Result<AuditQuery, d::DomainError> {
        let invalid = |field: &str, message: &str| d::DomainError { field: field.into(), message: message.into() };
        let operation = match self.operation {
            None => None,
            Some(op) => {
                // Records name the operation checked, not always the field asked for
                // (`registrationByPhn` is `findRegistration`): list those recorded.
                let names: Vec<&str> =
                    a::Operation::ALL.iter().filter(|o| o.is_audited()).map(|o| o.as_str()).collect();
                match a::Operation::parse(&op) {
                    Some(o) if o.is_audited() => Some(o),
                    Some(o) => {
                        let why = format!(
                            "{o} is never recorded: the log holds changes and reads of patients' records and of \
                             the log itself; the operations it holds are: {}",
                            names.join(", ")
                        );
                        return Err(invalid("filter.operation", &why));
                    }
                    None => {
                        let why = format!("no operation has that name; those recorded are: {}", names.join(", "));
                        return Err(invalid("filter.operation", &why));
                    }
                }
            }
        };
        let after = match after {
            None => None,
            Some(c) => cursor::decode_audit(&c).map(|(at, id)| Some(AuditCursor { at, id: AuditId(id) }))?,
        };
        Ok(AuditQuery {
            from: self.from.map(|t| Timestamp(t.timestamp_millis())),
            until: self.until.map(|t| Timestamp(t.timestamp_millis())),
            subject: self.subject,
            role: self.role.map(Into::into),
            operation,
            // Refused as the filter's own field, whichever half of `HA/COMMUNITY` is wrong.
            shard: self
                .shard
                .map(|s| d::ShardKey::parse(&s).map_err(|e| d::DomainError { field: "filter.shard".into(), ..e }))
                .transpose()?,
            target: self.target,
            after,
            limit,
        })
    }
}

/// Queries about access.
#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// Who the caller is, as their token says (`PUBLIC` without one).
    async fn me(&self, ctx: &Context<'_>) -> Caller {
        let who = caller(ctx);
        Caller {
            subject: who.subject().to_string(),
            role: who.role().into(),
            provider_id: who.provider().map(|p| ID(p.to_string())),
            scope: who.scope().entries(),
        }
    }

    /// An endorsement, for one of its parties or support within their scope
    /// (the provider's community).
    async fn endorsement(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Endorsement> {
        let id = d::EndorsementId::parse(&id).gql()?;
        system(ctx).endorsement(caller(ctx), &id).await.gql().map(Into::into)
    }

    /// A provider's endorsements (a delegate sees only their own).
    async fn endorsements(&self, ctx: &Context<'_>, provider_id: ID) -> async_graphql::Result<Vec<Endorsement>> {
        let id = d::ProviderId::parse(&provider_id).gql()?;
        let all = system(ctx).endorsements(caller(ctx), &id).await.gql()?;
        Ok(all.into_iter().map(Into::into).collect())
    }

    /// The audit log, oldest first (operations only).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: AuditFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AuditConnection> {
        let limit = cursor::page_size(first, max_page(ctx)).gql()?;
        // One more than asked tells whether another page follows.
        let query = filter.parse(after, limit + 1).gql()?;
        let mut records = system(ctx).audit_log(caller(ctx), query).await.gql()?;
        let has_next_page = records.len() > limit;
        records.truncate(limit);
        let end_cursor = records.last().map(|r| cursor::encode_audit(r.at, r.id.0));
        Ok(AuditConnection {
            nodes: records.into_iter().map(Into::into).collect(),
            page_info: PageInfo { has_next_page, end_cursor },
        })
    }
}

/// Delegation endorsements.
#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Starts an endorsement of a staff member (`delegate`, their user id, as
    /// their token's `sub` names them) by a provider, for panel management.
    /// Either party may start it; the other confirms it with
    /// `advanceEndorsement`. It replaces the pair's declined or cancelled
    /// endorsement, if there is one, and takes its id.
    async fn start_endorsement(
        &self,
        ctx: &Context<'_>,
        provider_id: ID,
        delegate: String,
    ) -> async_graphql::Result<Endorsement> {
        let provider = d::ProviderId::parse(&provider_id).gql()?;
        let delegate = d::DelegateId::parse_new(&delegate).gql()?;
        system(ctx).start_endorsement(caller(ctx), &provider, delegate).await.gql().map(Into::into)
    }

    /// Takes the next step of an endorsement for the caller's party.
    async fn advance_endorsement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        step: EndorsementStep,
    ) -> async_graphql::Result<Endorsement> {
        let id = d::EndorsementId::parse(&id).gql()?;
        system(ctx).advance_endorsement(caller(ctx), &id, step.into()).await.gql().map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_shard_filter_is_refused_as_that_filter() {
        for bad in ["IHA", "IHA/", "/111", "iha/1 1", "XXXXXXXXXXXXXXXXXXXXXXXXXXXX/111"] {
            let filter = AuditFilter { shard: Some(bad.to_string()), ..AuditFilter::default() };
            assert_eq!(filter.parse(None, 10).unwrap_err().field, "filter.shard", "{bad}");
        }
    }

    #[test]
    fn a_registration_reference_is_masked_in_the_audit_log_and_other_ids_are_not() {
        let reference = d::RegistrationRef::generate().as_str().to_string();
        let shown = masked(reference.clone());
        assert_eq!(shown, format!("{}…{}", &reference[..4], &reference[10..]));
        for other in ["P10001", "0F111", "0F111/rn-1", "ABCDEFGHJK"] {
            assert_eq!(masked(other.to_string()), other);
        }
    }
}

//! Mutations. Each is applied and durable, or refused with a code and nothing changed.

use async_graphql::{Context, ID, Object};
use attach_actors::domain::{self as d, Timestamp};
use attach_actors::shard::Answer;

use super::error::GqlResult;
use super::inputs::{CapacityInput, ClinicInput, HouseholdInput, ProviderInput, RegisterHouseholdInput};
use super::query::{caller, system};
use super::types::*;

/// The waitlist and registry mutations.
#[derive(Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Registers a household of 1 to 8 people on a community's waitlist. Keep the
    /// returned reference: it is how the household checks its status.
    ///
    /// A patient signed in owns what they register: its reference then works
    /// only for them (and for coordinators and support of its community), not
    /// for the public or another patient. A household registered without
    /// signing in, or by a coordinator, can be read by anyone holding its
    /// reference, and changed, moved or withdrawn by any patient signed in who
    /// holds it. A patient lists the households bound to them with `myRegistrations`.
    async fn register_household(
        &self,
        ctx: &Context<'_>,
        input: RegisterHouseholdInput,
    ) -> async_graphql::Result<Registration> {
        let today = Timestamp::now().to_utc().date_naive();
        let (community, household) = input.parse(today).gql()?;
        system(ctx).register(caller(ctx), &community, household).await.gql().map(Into::into)
    }

    /// Takes a waiting or proposed registration off the waitlist.
    async fn withdraw_registration(
        &self,
        ctx: &Context<'_>,
        reference: ID,
        reason: String,
    ) -> async_graphql::Result<Registration> {
        let (reference, reason) = reference_and_reason(&reference, &reason)?;
        system(ctx).withdraw(caller(ctx), &reference, reason).await.gql().map(Into::into)
    }

    /// The household turns down the provider it was proposed to: the open
    /// proposal of this registration is declined, the household returns to
    /// the waitlist keeping its place in line, and the provider sees the
    /// reason. For the patient, signed in, with the registration's reference
    /// (and for a coordinator in scope). `CONFLICT` when no proposal is open.
    async fn decline_match(&self, ctx: &Context<'_>, reference: ID, reason: String) -> async_graphql::Result<Proposal> {
        let (reference, reason) = reference_and_reason(&reference, &reason)?;
        system(ctx).decline_match(caller(ctx), &reference, reason).await.gql().map(Into::into)
    }

    /// An attachment fell through (the patient was never seen, or the
    /// provider and household agree it does not fit): the attached household
    /// goes back to the waitlist with its registration time, so its place in
    /// line, the accepted proposal becomes `RETURNED` with the reason, and the
    /// provider's panel lets its members go. For a coordinator in scope,
    /// within `shard.return_window_days` of the acceptance. `CONFLICT` for a
    /// household not attached by a match in that time, or with a member now on
    /// another panel or waitlist (nothing changes).
    async fn return_to_waitlist(
        &self,
        ctx: &Context<'_>,
        reference: ID,
        reason: String,
    ) -> async_graphql::Result<Registration> {
        let (reference, reason) = reference_and_reason(&reference, &reason)?;
        system(ctx).return_to_waitlist(caller(ctx), &reference, reason).await.gql().map(Into::into)
    }

    /// Replaces a waiting registration's household with the household as it
    /// is now: a baby born, a member who left, needs that changed. The
    /// reference and the registration time (the place in line) are kept. Added
    /// members must not be waiting or on a panel elsewhere (`CONFLICT`, nothing
    /// changed); members who left are free to register on their own. Someone
    /// who holds the place stays (by PHN, or by name and date of birth to
    /// correct a PHN): those who registered (again on coming back), and
    /// children born since; people
    /// added later share the place but do not hold it (`INVALID_INPUT`, field
    /// `members`). Refused while a proposal is open: answer it first. With `ifUnchangedSince` (the
    /// registration's `updatedAt` as read), refused with `CONFLICT` if it
    /// changed since: the household is replaced whole, so a change made from an
    /// older reading would undo someone else's.
    async fn update_household(
        &self,
        ctx: &Context<'_>,
        reference: ID,
        household: HouseholdInput,
        if_unchanged_since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> async_graphql::Result<Registration> {
        let reference = d::RegistrationRef::parse(&reference).gql()?;
        let household = household.parse(Timestamp::now().to_utc().date_naive()).gql()?;
        let if_unchanged = if_unchanged_since.map(|t| Timestamp(t.timestamp_millis()));
        let system = system(ctx);
        system.update_household_if(caller(ctx), &reference, household, if_unchanged).await.gql().map(Into::into)
    }

    /// Moves a waiting or proposed registration to another community's
    /// waitlist: the household keeps its reference and its registration time,
    /// so its place in the new line is where that time puts it. An open
    /// proposal is cancelled. Asking again after a move finished (or after it
    /// was interrupted) answers the registration where it is now.
    async fn move_registration(
        &self,
        ctx: &Context<'_>,
        reference: ID,
        community_code: String,
    ) -> async_graphql::Result<Registration> {
        let reference = d::RegistrationRef::parse(&reference).gql()?;
        let code = super::query::community_arg(&community_code, "communityCode")?;
        system(ctx).move_registration(caller(ctx), &reference, &code).await.gql().map(Into::into)
    }

    /// Creates or updates a clinic in the registry.
    async fn upsert_clinic(&self, ctx: &Context<'_>, input: ClinicInput) -> async_graphql::Result<Clinic> {
        let (community, cmd) = input.parse().gql()?;
        system(ctx).upsert_clinic(caller(ctx), &community, cmd).await.gql().map(Into::into)
    }

    /// Creates or updates a provider in the registry (capacity is set separately).
    /// A provider changes their own entry; a medical director creates new
    /// providers and changes the entry of a provider who practises only at
    /// clinics they direct.
    async fn upsert_provider(&self, ctx: &Context<'_>, input: ProviderInput) -> async_graphql::Result<Provider> {
        let (community, cmd) = input.parse().gql()?;
        system(ctx).upsert_provider(caller(ctx), &community, cmd).await.gql().map(Into::into)
    }

    /// Declares a provider's capacity and panel preferences.
    async fn set_provider_capacity(
        &self,
        ctx: &Context<'_>,
        provider_id: ID,
        input: CapacityInput,
    ) -> async_graphql::Result<Provider> {
        let id = d::ProviderId::parse(&provider_id).gql()?;
        let capacity = input.parse().gql()?;
        system(ctx).set_capacity(caller(ctx), &id, capacity).await.gql().map(Into::into)
    }

    /// Matches a community's waiting households to its providers' free places.
    async fn run_matching(&self, ctx: &Context<'_>, community_code: String) -> async_graphql::Result<MatchRun> {
        let code = super::query::community_arg(&community_code, "communityCode")?;
        let proposals = system(ctx).run_matching(caller(ctx), &code).await.gql()?;
        Ok(MatchRun {
            community: code.as_str().to_string(),
            proposals: proposals.into_iter().map(Into::into).collect(),
        })
    }

    /// Proposes a waiting household to a provider of the coordinator's choosing
    /// (a coordinator whose scope covers the household's community and the
    /// provider's). The rules matching applies still hold: free places for the
    /// whole household, the provider's complexity mix and hard preferences
    /// (`CONFLICT` otherwise, and nothing changes). Priority order is the
    /// coordinator's call: the explanation records the household's place in
    /// line and the note, which the provider sees. A provider homed in another
    /// community has the places held there, as for spill-over matching.
    async fn propose_match(
        &self,
        ctx: &Context<'_>,
        reference: ID,
        provider_id: ID,
        #[graphql(desc = "Why this household and this provider, for the provider (1 to 500 characters).")] note: String,
    ) -> async_graphql::Result<Proposal> {
        let reference = d::RegistrationRef::parse(&reference).gql()?;
        let provider = d::ProviderId::parse(&provider_id).gql()?;
        let note = d::parse_note(&note).gql()?;
        system(ctx).propose_match(caller(ctx), &reference, &provider, note).await.gql().map(Into::into)
    }

    /// Accepts a proposal: the household joins the provider's panel (service
    /// code 98990). The provider, or a coordinator whose scope holds the
    /// household's community and the provider's home community, recording the
    /// provider's acceptance.
    async fn accept_proposal(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "The clinic whose panel the household joins, for a provider listed at several \
                          (by default: the provider's only clinic, or none).")]
        facility_number: Option<String>,
    ) -> async_graphql::Result<Proposal> {
        let id = d::ProposalId::parse(&id).gql()?;
        let answer = match facility_number {
            Some(f) => Answer::AcceptAt(d::FacilityNumber::parse(&f).gql()?),
            None => Answer::Accept,
        };
        system(ctx).answer(caller(ctx), &id, answer).await.gql().map(Into::into)
    }

    /// Declines a proposal: the household returns to the waitlist keeping its
    /// place. The provider (`by: PROVIDER`), or a coordinator recording it:
    /// always within a scope holding the household's community, and the
    /// provider's decline only if it holds the provider's home community too.
    async fn decline_proposal(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
        #[graphql(default_with = "Responder::Provider")] by: Responder,
    ) -> async_graphql::Result<Proposal> {
        let id = d::ProposalId::parse(&id).gql()?;
        let reason = d::parse_reason(&reason).gql()?;
        system(ctx).answer(caller(ctx), &id, Answer::Decline { by: by.into(), reason }).await.gql().map(Into::into)
    }
}

/// A registration's reference and a free-text reason, as the household's own
/// steps (withdraw, decline, return) take them.
fn reference_and_reason(reference: &ID, reason: &str) -> async_graphql::Result<(d::RegistrationRef, String)> {
    Ok((d::RegistrationRef::parse(reference).gql()?, d::parse_reason(reason).gql()?))
}

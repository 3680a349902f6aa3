//! Queries. Each resolver parses its arguments, asks the core once, and maps the answer.

use std::sync::Arc;

use async_graphql::{Context, ID, Object};
use attach_actors::access::Principal;
use attach_actors::domain as d;
use attach_actors::shard::WaitlistQuery;
use attach_actors::system::AttachSystem;

use super::ApiLimits;
use super::cursor;
use super::error::GqlResult;
use super::inputs::WaitlistFilter;
use super::types::*;

/// The registry and waitlist reads.
#[derive(Default)]
pub struct QueryRoot;

pub(super) fn system<'a>(ctx: &Context<'a>) -> &'a Arc<AttachSystem> {
    ctx.data_unchecked::<Arc<AttachSystem>>()
}

/// The caller, as the HTTP layer authenticated them; without a token (or in a
/// schema executed without the HTTP layer) the public caller.
pub(super) fn caller<'a>(ctx: &Context<'a>) -> &'a Principal {
    static PUBLIC: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(Principal::public);
    ctx.data_opt::<Principal>().unwrap_or(&PUBLIC)
}

pub(super) fn max_page(ctx: &Context<'_>) -> usize {
    ctx.data_unchecked::<ApiLimits>().max_page_size
}

/// The (offset, limit) an offset-paged list asks for, checked against the page cap.
fn offset_window(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<(usize, usize)> {
    let limit = cursor::page_size(first, max_page(ctx)).gql()?;
    let offset = after.map(|c| cursor::decode_offset(&c)).transpose().gql()?.unwrap_or(0);
    Ok((offset, limit))
}

/// Paging state after `len` items read from `offset`.
fn offset_page_info(offset: usize, len: usize, has_next: bool) -> PageInfo {
    PageInfo { has_next_page: has_next, end_cursor: Some(cursor::encode_offset(offset + len)) }
}

/// A community code given as the argument `arg` (`communityCode`, or `code`),
/// refused as that argument.
pub(super) fn community_arg(code: &str, arg: &str) -> async_graphql::Result<d::CommunityCode> {
    d::CommunityCode::parse(code).map_err(|e| d::DomainError { field: arg.into(), ..e }).gql()
}

fn community(code: &str) -> async_graphql::Result<d::CommunityCode> {
    community_arg(code, "communityCode")
}

#[Object]
impl QueryRoot {
    /// Every health authority with its communities.
    async fn health_authorities(&self, ctx: &Context<'_>) -> Vec<HealthAuthority> {
        system(ctx).regions().health_authorities.iter().map(HealthAuthority::from).collect()
    }

    /// A community by code.
    async fn community(&self, ctx: &Context<'_>, code: String) -> Option<Community> {
        // Spaces around the code are taken away, as every other argument naming a community does.
        system(ctx).regions().community(code.trim()).map(Community::from)
    }

    /// A registration's status and place in line, by its reference.
    async fn registration(&self, ctx: &Context<'_>, reference: ID) -> async_graphql::Result<Registration> {
        let reference = d::RegistrationRef::parse(&reference).gql()?;
        system(ctx).registration(caller(ctx), &reference).await.gql().map(Into::into)
    }

    /// The registrations of the patient signed in: those they registered while
    /// signed in, in any community (one that moved, where it went), oldest
    /// first, withdrawn and attached ones included, so a patient who lost a
    /// reference finds it here. Households registered without signing in are
    /// not bound to anyone and are not listed. Patients only: the public gets
    /// `UNAUTHENTICATED`, other roles `FORBIDDEN`. Each one is audited as a read.
    async fn my_registrations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Registration>> {
        Ok(system(ctx).my_registrations(caller(ctx)).await.gql()?.into_iter().map(Into::into).collect())
    }

    /// The registration that holds a PHN: for support staff helping someone
    /// who lost their reference, and coordinators within their scope. Not for
    /// the public or patients. A household attached by a match is found
    /// (`ATTACHED`). `NOT_FOUND` when no registration holds it (never
    /// registered, withdrawn, left the household, or on a panel from a
    /// submitted list or a transfer), and when the registration is outside the
    /// caller's scope: the answer says neither whether nor where someone is
    /// registered. Audited, by the registration found (`FORBIDDEN` when out of
    /// scope); the PHN is never logged.
    async fn registration_by_phn(&self, ctx: &Context<'_>, phn: String) -> async_graphql::Result<Registration> {
        let phn = d::Phn::parse(&phn).gql()?;
        system(ctx).find_registration(caller(ctx), phn).await.gql().map(Into::into)
    }

    /// A community's waitlist in line order.
    async fn waitlist(
        &self,
        ctx: &Context<'_>,
        community_code: String,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<WaitlistFilter>,
    ) -> async_graphql::Result<RegistrationConnection> {
        let code = community(&community_code)?;
        let limit = cursor::page_size(first, max_page(ctx)).gql()?;
        let after = after.map(|c| cursor::decode_waitlist(&c, &code)).transpose().gql()?;
        let filter = filter.unwrap_or_default();
        let query = WaitlistQuery {
            after,
            limit,
            needs: filter.needs.into_iter().map(Into::into).collect(),
            min_wait_days: filter.min_wait_days,
        };
        let page = system(ctx).waitlist(caller(ctx), &code, query).await.gql()?;
        let end_cursor = page.items.last().map(|r| cursor::encode_waitlist(r.registered_at, &r.reference, &code));
        Ok(RegistrationConnection {
            nodes: RegistrationList(page.items),
            page_info: PageInfo { has_next_page: page.has_next, end_cursor },
            total_count: page.total_waiting,
        })
    }

    /// A provider by practitioner number.
    async fn provider(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Provider> {
        let id = d::ProviderId::parse(&id).gql()?;
        system(ctx).provider(caller(ctx), &id).await.gql().map(Into::into)
    }

    /// Providers homed in a community.
    async fn providers(&self, ctx: &Context<'_>, community_code: String) -> async_graphql::Result<Vec<Provider>> {
        let code = community(&community_code)?;
        Ok(system(ctx).providers(caller(ctx), &code).await.gql()?.into_iter().map(Into::into).collect())
    }

    /// A clinic by facility number.
    async fn clinic(&self, ctx: &Context<'_>, facility_number: String) -> async_graphql::Result<Clinic> {
        let f = d::FacilityNumber::parse(&facility_number).gql()?;
        system(ctx).clinic(caller(ctx), &f).await.gql().map(Into::into)
    }

    /// Clinics in a community.
    async fn clinics(&self, ctx: &Context<'_>, community_code: String) -> async_graphql::Result<Vec<Clinic>> {
        let code = community(&community_code)?;
        Ok(system(ctx).clinics(caller(ctx), &code).await.gql()?.into_iter().map(Into::into).collect())
    }

    /// A proposal by id.
    async fn proposal(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Proposal> {
        let id = d::ProposalId::parse(&id).gql()?;
        system(ctx).proposal(caller(ctx), &id).await.gql().map(Into::into)
    }

    /// A community's proposals, newest first. Each page's `endCursor` names its
    /// last proposal, so a proposal answered or made between two pages makes
    /// the next page neither skip nor repeat one.
    async fn proposals(
        &self,
        ctx: &Context<'_>,
        community_code: String,
        #[graphql(default)] status: Vec<ProposalStatus>,
        provider_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ProposalConnection> {
        let code = community(&community_code)?;
        let limit = cursor::page_size(first, max_page(ctx)).gql()?;
        let from = match &after {
            Some(c) => cursor::decode_proposals(c).gql()?,
            None => attach_actors::shard::ProposalsFrom::Start,
        };
        let provider = provider_id.map(|p| d::ProviderId::parse(&p)).transpose().gql()?;
        let statuses = status.into_iter().map(Into::into).collect();
        let page = system(ctx).proposals(caller(ctx), &code, statuses, provider, from, limit).await.gql()?;
        // The last proposal read names where the next page starts; an empty page keeps the cursor it was given.
        let end_cursor = page.items.last().map(|p| cursor::encode_proposal(p.created_at, &p.id)).or(after);
        Ok(ProposalConnection {
            page_info: PageInfo { has_next_page: page.has_next, end_cursor },
            nodes: page.items.into_iter().map(Into::into).collect(),
        })
    }

    /// A provider's panel.
    async fn panel(
        &self,
        ctx: &Context<'_>,
        provider_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PanelConnection> {
        let id = d::ProviderId::parse(&provider_id).gql()?;
        let (offset, limit) = offset_window(ctx, first, after)?;
        let page = system(ctx).panel(caller(ctx), &id, offset, limit).await.gql()?;
        Ok(PanelConnection {
            page_info: offset_page_info(offset, page.items.len(), page.has_next),
            nodes: page.items.into_iter().map(Into::into).collect(),
            panel_size: page.panel_size,
        })
    }

    /// A community's statistics.
    async fn community_statistics(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<Statistics> {
        let code = community_arg(&code, "code")?;
        let system = system(ctx);
        Ok(Statistics::new(system.community_stats(caller(ctx), &code).await.gql()?, system.feed_status()))
    }

    /// A health authority's statistics, over all its communities.
    async fn health_authority_statistics(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<Statistics> {
        let ha = d::HaCode::parse(&code).map_err(|e| d::DomainError { field: "code".into(), ..e }).gql()?;
        let system = system(ctx);
        Ok(Statistics::new(system.health_authority_stats(caller(ctx), &ha).await.gql()?, system.feed_status()))
    }
}

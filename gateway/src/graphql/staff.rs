//! Clinic staff lists: the medical director adds and removes staff members
//! (MOAs, nurses, managers), and the list is a field of the clinic. Being on
//! the list grants nothing: staff act for a provider only through that
//! provider's delegation endorsement.

use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject};
use attach_actors::domain as d;
use chrono::{DateTime, Utc};

use super::error::GqlResult;
use super::query::{caller, system};
use super::types::Clinic;

/// A member of a clinic's staff.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct ClinicStaffMember {
    /// The clinic.
    pub facility_number: String,
    /// Their sign-in user id (the `sub` of their tokens).
    pub subject: ID,
    /// Their name.
    pub name: String,
    /// Their role or title at the clinic (MOA, Nurse, …).
    pub title: String,
    /// When the medical director added them.
    pub added_at: DateTime<Utc>,
}

impl From<d::StaffMember> for ClinicStaffMember {
    fn from(m: d::StaffMember) -> Self {
        ClinicStaffMember {
            facility_number: m.facility.to_string(),
            subject: ID(m.subject.to_string()),
            name: m.name,
            title: m.title,
            added_at: m.added_at.to_utc(),
        }
    }
}

fn facility(number: &str) -> async_graphql::Result<d::FacilityNumber> {
    d::FacilityNumber::parse(number).gql()
}

fn subject(id: &str) -> async_graphql::Result<d::DelegateId> {
    d::DelegateId::parse(id)
        .map_err(|_| d::DomainError { field: "subject".into(), message: d::STAFF_RULE.into() })
        .gql()
}

#[ComplexObject]
impl Clinic {
    /// The clinic's staff list, by user id: all of it for the clinic's medical
    /// director and support, their own entry for a staff member on it. Others
    /// get null and a `FORBIDDEN` error.
    async fn staff(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<ClinicStaffMember>>> {
        let f = facility(&self.facility_number)?;
        let list = system(ctx).clinic_staff(caller(ctx), &f).await.gql()?;
        Ok(Some(list.into_iter().map(Into::into).collect()))
    }
}

/// Staff list mutations.
#[derive(Default)]
pub struct StaffMutation;

#[Object]
impl StaffMutation {
    /// Adds a member to a clinic's staff list (the clinic's medical director).
    /// It records who works there; it grants no access: a staff member acts for
    /// a provider only through the provider's delegation endorsement.
    async fn add_clinic_staff(
        &self,
        ctx: &Context<'_>,
        facility_number: String,
        subject: ID,
        name: String,
        title: String,
    ) -> async_graphql::Result<ClinicStaffMember> {
        let f = facility(&facility_number)?;
        let input = d::StaffInput::parse(&subject, &name, &title).gql()?;
        system(ctx).add_clinic_staff(caller(ctx), &f, input).await.gql().map(Into::into)
    }

    /// Takes a member off a clinic's staff list (the clinic's medical director);
    /// answers the member removed. Their endorsements are not touched: each
    /// provider cancels their own.
    async fn remove_clinic_staff(
        &self,
        ctx: &Context<'_>,
        facility_number: String,
        subject: ID,
    ) -> async_graphql::Result<ClinicStaffMember> {
        let f = facility(&facility_number)?;
        let s = self::subject(&subject)?;
        system(ctx).remove_clinic_staff(caller(ctx), &f, &s).await.gql().map(Into::into)
    }
}

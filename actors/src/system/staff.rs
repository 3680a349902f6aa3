//! Clinic staff lists: kept by each clinic's medical director, in the shard
//! of the clinic's community, which decides who may change and see them
//! against the clinic's own registry entry. Every change is audited as
//! [`Operation::ManageClinicStaff`].

use crate::access::{Operation, Principal};
use crate::domain::{DelegateId, FacilityNumber, StaffInput, StaffMember};
use crate::error::AttachError;
use crate::shard::ShardMsg;
use crate::store::Locator;

use super::{AttachSystem, Trail};

impl AttachSystem {
    /// Adds a member to a clinic's staff list: the clinic's medical director.
    /// The list grants nothing; a staff member acts for a provider only through
    /// that provider's delegation endorsement.
    pub async fn add_clinic_staff(
        &self,
        who: &Principal,
        facility: &FacilityNumber,
        input: StaffInput,
    ) -> Result<StaffMember, AttachError> {
        let mut trail = Trail::new(who, Operation::ManageClinicStaff).about(&format!("{facility}/{}", input.subject));
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Clinic(facility.clone()), "clinic").await?);
            who.require(trail.op, Some(&shard))?;
            let (facility, who) = (facility.clone(), who.clone());
            self.directory
                .call_audited(&shard, trail.draft(), |reply| ShardMsg::AddClinicStaff { facility, input, who, reply })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Takes a member off a clinic's staff list: the clinic's medical director.
    /// Answers the member removed.
    pub async fn remove_clinic_staff(
        &self,
        who: &Principal,
        facility: &FacilityNumber,
        subject: &DelegateId,
    ) -> Result<StaffMember, AttachError> {
        let mut trail = Trail::new(who, Operation::ManageClinicStaff).about(&format!("{facility}/{subject}"));
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Clinic(facility.clone()), "clinic").await?);
            who.require(trail.op, Some(&shard))?;
            let (facility, subject, who) = (facility.clone(), subject.clone(), who.clone());
            self.directory
                .call_audited(&shard, trail.draft(), |reply| ShardMsg::RemoveClinicStaff {
                    facility,
                    subject,
                    who,
                    reply,
                })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// The part of a clinic's staff list the caller may see: all of it for the
    /// clinic's medical director and support, their own entry for a member.
    pub async fn clinic_staff(
        &self,
        who: &Principal,
        facility: &FacilityNumber,
    ) -> Result<Vec<StaffMember>, AttachError> {
        who.require(Operation::ReadClinics, None)?;
        let shard = self.locate(Locator::Clinic(facility.clone()), "clinic").await?;
        let (facility, who) = (facility.clone(), who.clone());
        self.directory.call(&shard, |reply| ShardMsg::ClinicStaff(facility, who, reply)).await
    }
}

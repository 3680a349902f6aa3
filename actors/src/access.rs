//! Who may do what: the caller of an operation and the rules it is checked against.
//!
//! The gateway turns a verified token into a [`Principal`]; every operation of
//! [`AttachSystem`](crate::system::AttachSystem) takes one. Checks happen where
//! the data is decided, not only at the API edge:
//!
//! - [`Principal::require`] (the role's gate and the coordinator's scope) runs in
//!   the system once the shard an operation touches is known, because a
//!   registration's or a proposal's community is only known after it is located;
//! - checks that need a shard's data (is this proposal for this provider? is this
//!   caller the clinic's medical director? is the delegate's endorsement
//!   completed?) run inside the shard actor, against its own state, in the same
//!   step that decides the change.
//!
//! A principal is cheap to clone (one `Arc`) because it travels in actor messages.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{CommunityCode, HaCode, ProviderId, ShardKey};
use crate::error::{AttachError, ErrorCode};

/// What a caller is, as their token says (or `Public` without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// No token: only the public operations (self-registration, status by reference).
    Public,
    /// A patient signed in: self-service registration and status.
    Patient,
    /// A physician or nurse practitioner: their own capacity, proposals and panel.
    Provider,
    /// A provider's staff member: panel management for the providers whose
    /// endorsement of them is completed.
    Delegate,
    /// A provider who directs clinics: keeps those clinics' registry entries.
    MedicalDirector,
    /// An attachment coordinator: matching and the waitlist, within their scope.
    Coordinator,
    /// Support staff: read what they need to help; change nothing clinical.
    Support,
    /// Operations: statistics and the audit log, never patient details.
    Operations,
    /// Attach itself (the demo seed, command-line imports). Never from a token.
    Internal,
}

impl Role {
    /// Every role a token may carry, in a stable order.
    pub const FROM_TOKENS: [Role; 7] = [
        Role::Patient,
        Role::Provider,
        Role::Delegate,
        Role::MedicalDirector,
        Role::Coordinator,
        Role::Support,
        Role::Operations,
    ];

    /// The name used in tokens, configuration and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Public => "public",
            Role::Patient => "patient",
            Role::Provider => "provider",
            Role::Delegate => "delegate",
            Role::MedicalDirector => "medical_director",
            Role::Coordinator => "coordinator",
            Role::Support => "support",
            Role::Operations => "operations",
            Role::Internal => "internal",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AttachError;

    /// Parses a role a token may carry (`public` and `internal` are never accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::FROM_TOKENS.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            AttachError::new(ErrorCode::Unauthenticated, format!("the token's role `{s}` is not one Attach knows"))
        })
    }
}

/// The part of the province a caller works in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Every community.
    pub province: bool,
    /// Every community of these health authorities.
    pub health_authorities: BTreeSet<HaCode>,
    /// These communities.
    pub communities: BTreeSet<CommunityCode>,
}

impl Scope {
    /// The whole province.
    pub fn province() -> Self {
        Scope { province: true, ..Scope::default() }
    }

    /// Parses scope entries as tokens carry them: `province`, `ha:FHA`, `community:2011`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, AttachError> {
        let mut scope = Scope::default();
        for entry in entries {
            let bad = || {
                AttachError::new(
                    ErrorCode::Unauthenticated,
                    format!("the token's scope `{entry}` is not `province`, `ha:CODE` or `community:CODE`"),
                )
            };
            match entry.split_once(':') {
                None if entry == "province" => scope.province = true,
                Some(("ha", code)) => {
                    scope.health_authorities.insert(HaCode::parse(code).map_err(|_| bad())?);
                }
                Some(("community", code)) => {
                    scope.communities.insert(CommunityCode::parse(code).map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(scope)
    }

    /// The entries of this scope, as [`parse`](Self::parse) reads them.
    pub fn entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.province {
            out.push("province".to_string());
        }
        out.extend(self.health_authorities.iter().map(|h| format!("ha:{}", h.as_str())));
        out.extend(self.communities.iter().map(|c| format!("community:{}", c.as_str())));
        out
    }

    /// Whether the scope reaches a shard.
    pub fn covers(&self, shard: &ShardKey) -> bool {
        self.province || self.health_authorities.contains(&shard.ha) || self.communities.contains(&shard.community)
    }

    /// Whether the scope reaches every community of a health authority.
    pub fn covers_health_authority(&self, ha: &HaCode) -> bool {
        self.province || self.health_authorities.contains(ha)
    }

    /// True when the scope reaches nothing.
    pub fn is_empty(&self) -> bool {
        !self.province && self.health_authorities.is_empty() && self.communities.is_empty()
    }
}

/// Everything an operation is checked against.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    subject: String,
    role: Role,
    provider: Option<ProviderId>,
    scope: Scope,
}

/// The caller of an operation: who, in which role, for which provider, where.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal(Arc<Identity>);

/// Sent between the nodes of a cluster with a step they run for each other
/// (`system::remote`); never read from a client.
impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Identity::deserialize(deserializer).map(|identity| Principal(Arc::new(identity)))
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.role, self.0.subject)
    }
}

impl Principal {
    /// A caller with a verified identity. `provider` is the caller's own provider
    /// id (providers and medical directors); `scope` where they work.
    pub fn new(subject: impl Into<String>, role: Role, provider: Option<ProviderId>, scope: Scope) -> Self {
        Principal(Arc::new(Identity { subject: subject.into(), role, provider, scope }))
    }

    /// A caller without a token.
    pub fn public() -> Self {
        Principal::new("anonymous", Role::Public, None, Scope::default())
    }

    /// Attach itself: the demo seed and command-line tools running in-process.
    pub fn internal(purpose: &str) -> Self {
        Principal::new(format!("attach:{purpose}"), Role::Internal, None, Scope::province())
    }

    /// The token's subject (a user id, never personal data).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// The caller's own provider id, for providers and medical directors.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.0.provider.as_ref()
    }

    /// Where the caller works.
    pub fn scope(&self) -> &Scope {
        &self.0.scope
    }

    /// Whether this caller is `provider` themselves.
    pub fn is_provider(&self, provider: &ProviderId) -> bool {
        matches!(self.0.role, Role::Provider | Role::MedicalDirector) && self.0.provider.as_ref() == Some(provider)
    }

    /// Checks the role's gate for `op` and, where the role is scoped, that `shard`
    /// is within the caller's scope. Data-dependent rules are checked by the shard.
    pub fn require(&self, op: Operation, shard: Option<&ShardKey>) -> Result<(), AttachError> {
        let role = self.0.role;
        if !op.allows(role) {
            return Err(refusal(role, op));
        }
        let scoped = matches!(role, Role::Coordinator | Role::Support);
        match shard {
            Some(shard) if scoped && !self.0.scope.covers(shard) => Err(AttachError::new(
                ErrorCode::Forbidden,
                format!("community {} is outside your scope", shard.community.as_str()),
            )),
            _ => Ok(()),
        }
    }

    /// Like [`require`](Self::require) for an operation over a whole health authority.
    pub fn require_health_authority(&self, op: Operation, ha: &HaCode) -> Result<(), AttachError> {
        self.require(op, None)?;
        let scoped = matches!(self.0.role, Role::Coordinator | Role::Support);
        if scoped && !self.0.scope.covers_health_authority(ha) {
            return Err(AttachError::new(
                ErrorCode::Forbidden,
                format!("health authority {} is outside your scope", ha.as_str()),
            ));
        }
        Ok(())
    }

    /// `FORBIDDEN` unless this caller is `provider` (or Attach itself, or a
    /// role the operation lets act for any provider in scope).
    pub fn require_self(&self, provider: &ProviderId, what: &str) -> Result<(), AttachError> {
        match self.0.role {
            Role::Provider | Role::MedicalDirector if !self.is_provider(provider) => {
                Err(AttachError::new(ErrorCode::Forbidden, format!("you may only {what} for yourself")))
            }
            _ => Ok(()),
        }
    }
}

fn refusal(role: Role, op: Operation) -> AttachError {
    if role == Role::Public {
        AttachError::new(ErrorCode::Unauthenticated, format!("sign in to {}", op.describe()))
    } else {
        AttachError::new(ErrorCode::Forbidden, format!("the {role} role may not {}", op.describe()))
    }
}

/// Every operation the core performs for a caller: the unit of permission and of audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Put a household on a waitlist.
    RegisterHousehold,
    /// Look up a registration by reference.
    ReadRegistration,
    /// Take a registration off the waitlist.
    WithdrawRegistration,
    /// Read a community's waitlist.
    ReadWaitlist,
    /// Create or update a provider.
    UpsertProvider,
    /// Set a provider's capacity and preferences.
    SetCapacity,
    /// Read the provider registry.
    ReadProviders,
    /// Create or update a clinic.
    UpsertClinic,
    /// Read the clinic registry.
    ReadClinics,
    /// Run matching in a community.
    RunMatching,
    /// Read proposals.
    ReadProposals,
    /// Accept or decline a proposal.
    AnswerProposal,
    /// Read a provider's panel.
    ReadPanel,
    /// Read statistics.
    ReadStatistics,
    /// Read or subscribe to a community's events.
    ReadEvents,
    /// Read the audit log.
    ReadAudit,
    /// Start a delegation endorsement (until session 19, every step of one was
    /// recorded under this operation; the later ones now have their own).
    ManageEndorsement,
    /// Read endorsements.
    ReadEndorsements,
    /// Submit a panel list (a provider, or their endorsed delegate).
    SubmitPanel,
    /// Take patients off a panel (a provider, or their endorsed delegate).
    RemoveFromPanel,
    /// Change who works at a clinic: list providers at it or take them off it,
    /// add staff members to its staff list or remove them (its medical director).
    ManageClinicStaff,
    /// Move a whole panel to another provider (the receiving clinic's medical director).
    TransferPanel,
    /// Read panel reports and transfers (counts, never patients; a report is
    /// audited since session 20, a transfer's progress is not).
    ReadPanelReports,
    /// Move a registration to another community's waitlist, keeping its registration time.
    MoveRegistration,
    /// Change a waiting household's members or needs.
    UpdateHousehold,
    /// Find the registration that holds a PHN (support helping someone who
    /// lost their reference, a coordinator in scope).
    FindRegistration,
    /// Propose a waiting household to a provider of the coordinator's choosing.
    ProposeMatch,
    /// The household declines the proposal made for it (the patient, with the
    /// reference, or a coordinator in scope).
    DeclineMatch,
    /// Return an attached household to the waitlist with its place: the
    /// attachment fell through (a coordinator in scope).
    ReturnToWaitlist,
    /// Agree to a panel transfer or decline it (either of its providers), or
    /// withdraw it (a medical director of its clinic).
    AnswerPanelTransfer,
    /// Receive or approve a delegation endorsement (the party who did not
    /// start it; its refusal too until session 20).
    AnswerEndorsement,
    /// Complete an approved endorsement (the party who started it): from then on the delegate acts for the provider.
    CompleteEndorsement,
    /// Withdraw an endorsement, or revoke a completed one (either party).
    CancelEndorsement,
    /// List a provider at a clinic (its medical director; recorded as
    /// `ManageClinicStaff` until session 19, and taking them off it too until session 20).
    ListProviderAtClinic,
    /// Refuse a delegation endorsement (the party who did not start it).
    DeclineEndorsement,
    /// Take a provider off a clinic (its medical director).
    UnlistProviderAtClinic,
    /// A token whose signature held, refused because it expired or was
    /// revoked: recorded under the subject it was signed for.
    SignIn,
}

impl Operation {
    /// Every operation, in a stable order.
    pub const ALL: [Operation; 37] = [
        Operation::RegisterHousehold,
        Operation::ReadRegistration,
        Operation::WithdrawRegistration,
        Operation::ReadWaitlist,
        Operation::UpsertProvider,
        Operation::SetCapacity,
        Operation::ReadProviders,
        Operation::UpsertClinic,
        Operation::ReadClinics,
        Operation::RunMatching,
        Operation::ReadProposals,
        Operation::AnswerProposal,
        Operation::ReadPanel,
        Operation::ReadStatistics,
        Operation::ReadEvents,
        Operation::ReadAudit,
        Operation::ManageEndorsement,
        Operation::ReadEndorsements,
        Operation::SubmitPanel,
        Operation::RemoveFromPanel,
        Operation::ManageClinicStaff,
        Operation::TransferPanel,
        Operation::ReadPanelReports,
        Operation::MoveRegistration,
        Operation::UpdateHousehold,
        Operation::FindRegistration,
        Operation::ProposeMatch,
        Operation::DeclineMatch,
        Operation::ReturnToWaitlist,
        Operation::AnswerPanelTransfer,
        Operation::AnswerEndorsement,
        Operation::CompleteEndorsement,
        Operation::CancelEndorsement,
        Operation::ListProviderAtClinic,
        Operation::DeclineEndorsement,
        Operation::UnlistProviderAtClinic,
        Operation::SignIn,
    ];

    /// The name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::RegisterHousehold => "registerHousehold",
            Operation::ReadRegistration => "readRegistration",
            Operation::WithdrawRegistration => "withdrawRegistration",
            Operation::ReadWaitlist => "readWaitlist",
            Operation::UpsertProvider => "upsertProvider",
            Operation::SetCapacity => "setCapacity",
            Operation::ReadProviders => "readProviders",
            Operation::UpsertClinic => "upsertClinic",
            Operation::ReadClinics => "readClinics",
            Operation::RunMatching => "runMatching",
            Operation::ReadProposals => "readProposals",
            Operation::AnswerProposal => "answerProposal",
            Operation::ReadPanel => "readPanel",
            Operation::ReadStatistics => "readStatistics",
            Operation::ReadEvents => "readEvents",
            Operation::ReadAudit => "readAudit",
            Operation::ManageEndorsement => "manageEndorsement",
            Operation::ReadEndorsements => "readEndorsements",
            Operation::SubmitPanel => "submitPanel",
            Operation::RemoveFromPanel => "removeFromPanel",
            Operation::ManageClinicStaff => "manageClinicStaff",
            Operation::TransferPanel => "transferPanel",
            Operation::ReadPanelReports => "readPanelReports",
            Operation::MoveRegistration => "moveRegistration",
            Operation::UpdateHousehold => "updateHousehold",
            Operation::FindRegistration => "findRegistration",
            Operation::ProposeMatch => "proposeMatch",
            Operation::DeclineMatch => "declineMatch",
            Operation::ReturnToWaitlist => "returnToWaitlist",
            Operation::AnswerPanelTransfer => "answerPanelTransfer",
            Operation::AnswerEndorsement => "answerEndorsement",
            Operation::CompleteEndorsement => "completeEndorsement",
            Operation::CancelEndorsement => "cancelEndorsement",
            Operation::ListProviderAtClinic => "listProviderAtClinic",
            Operation::DeclineEndorsement => "declineEndorsement",
            Operation::UnlistProviderAtClinic => "unlistProviderAtClinic",
            Operation::SignIn => "signIn",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn describe(self) -> &'static str {
        match self {
            Operation::RegisterHousehold => "register a household",
            Operation::ReadRegistration => "look up a registration",
            Operation::WithdrawRegistration => "withdraw a registration",
            Operation::ReadWaitlist => "read a waitlist",
            Operation::UpsertProvider => "change the provider registry",
            Operation::SetCapacity => "set a provider's capacity",
            Operation::ReadProviders => "read the provider registry",
            Operation::UpsertClinic => "change the clinic registry",
            Operation::ReadClinics => "read the clinic registry",
            Operation::RunMatching => "run matching",
            Operation::ReadProposals => "read proposals",
            Operation::AnswerProposal => "answer a proposal",
            Operation::ReadPanel => "read a panel",
            Operation::ReadStatistics => "read statistics",
            Operation::ReadEvents => "read the match feed",
            Operation::ReadAudit => "read the audit log",
            Operation::ManageEndorsement => "start a delegation endorsement",
            Operation::ReadEndorsements => "read delegation endorsements",
            Operation::SubmitPanel => "submit a panel",
            Operation::RemoveFromPanel => "remove patients from a panel",
            Operation::ManageClinicStaff => "change who works at a clinic",
            Operation::TransferPanel => "transfer a panel",
            Operation::ReadPanelReports => "read panel reports",
            Operation::MoveRegistration => "move a registration to another community",
            Operation::UpdateHousehold => "change a waiting household",
            Operation::FindRegistration => "find a registration by PHN",
            Operation::ProposeMatch => "propose a household to a provider",
            Operation::DeclineMatch => "decline a household's match",
            Operation::ReturnToWaitlist => "return an attached household to the waitlist",
            Operation::AnswerPanelTransfer => "answer a panel transfer",
            Operation::AnswerEndorsement => "answer a delegation endorsement",
            Operation::CompleteEndorsement => "complete a delegation endorsement",
            Operation::CancelEndorsement => "cancel a delegation endorsement",
            Operation::ListProviderAtClinic => "list a provider at a clinic",
            Operation::DeclineEndorsement => "decline a delegation endorsement",
            Operation::UnlistProviderAtClinic => "take a provider off a clinic",
            Operation::SignIn => "sign in",
        }
    }

    /// Whether a change (audited as a mutation) rather than a read.
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Operation::RegisterHousehold
                | Operation::WithdrawRegistration
                | Operation::UpsertProvider
                | Operation::SetCapacity
                | Operation::UpsertClinic
                | Operation::RunMatching
                | Operation::ProposeMatch
                | Operation::DeclineMatch
                | Operation::ReturnToWaitlist
                | Operation::AnswerProposal
                | Operation::ManageEndorsement
                | Operation::SubmitPanel
                | Operation::RemoveFromPanel
                | Operation::ManageClinicStaff
                | Operation::TransferPanel
                | Operation::AnswerPanelTransfer
                | Operation::MoveRegistration
                | Operation::UpdateHousehold
                | Operation::AnswerEndorsement
                | Operation::CompleteEndorsement
                | Operation::CancelEndorsement
                | Operation::ListProviderAtClinic
                | Operation::DeclineEndorsement
                | Operation::UnlistProviderAtClinic
        )
    }

    /// Whether the audit log records it: every change, and every read of a
    /// patient's record (a registration, a waitlist, proposals, a panel).
    pub fn is_audited(self) -> bool {
        self.is_mutation()
            || matches!(
                self,
                Operation::ReadRegistration
                    | Operation::FindRegistration
                    | Operation::ReadWaitlist
                    | Operation::ReadProposals
                    | Operation::ReadPanel
                    // Counts, but a small panel's age groups and complexity say much of its patients.
                    | Operation::ReadPanelReports
                    // Who looked at who read what: the log holds every caller's subject.
                    | Operation::ReadAudit
                    | Operation::SignIn
            )
    }

    /// The role gate: which roles may attempt the operation at all. Which
    /// provider, clinic or community they may touch is checked against the data.
    pub fn allows(self, role: Role) -> bool {
        use Operation as O;
        use Role as R;
        if role == R::Internal {
            return true;
        }
        match self {
            // Public: a household registers itself and checks its standing with
            // the reference it was given (the reference is the capability, so
            // anyone holding it reads it, signed in or not, and in or out of
            // scope: refusing a signed-in caller would only send them back
            // without their token, and the audit would lose who read it),
            // unless a patient registered it signed in: then only they and
            // staff in scope (`AttachSystem::require_owner`, DECISIONS 46).
            O::RegisterHousehold => matches!(role, R::Public | R::Patient | R::Coordinator),
            O::ReadRegistration => true,
            O::WithdrawRegistration | O::MoveRegistration | O::UpdateHousehold | O::DeclineMatch => {
                matches!(role, R::Patient | R::Coordinator)
            }
            O::ReadWaitlist => matches!(role, R::Coordinator | R::Support),
            // Never the public or a patient: a PHN is not a capability, and
            // looking them up one by one would list who is waiting.
            O::FindRegistration => matches!(role, R::Coordinator | R::Support),
            O::UpsertProvider => matches!(role, R::Provider | R::MedicalDirector),
            O::SetCapacity => matches!(role, R::Provider | R::MedicalDirector),
            O::ReadProviders | O::ReadClinics => !matches!(role, R::Public | R::Patient),
            O::UpsertClinic => role == R::MedicalDirector,
            O::RunMatching | O::ProposeMatch | O::ReturnToWaitlist => role == R::Coordinator,
            O::ReadProposals => matches!(role, R::Provider | R::MedicalDirector | R::Coordinator | R::Support),
            O::AnswerProposal => matches!(role, R::Provider | R::MedicalDirector | R::Coordinator),
            O::ReadPanel => matches!(role, R::Provider | R::MedicalDirector | R::Delegate | R::Support),
            O::ReadStatistics => !matches!(role, R::Public | R::Patient),
            O::ReadEvents => matches!(role, R::Coordinator | R::Support),
            O::ReadAudit => role == R::Operations,
            // Only ever recorded, for a token refused at the door.
            O::SignIn => true,
            O::ManageEndorsement
            | O::AnswerEndorsement
            | O::DeclineEndorsement
            | O::CompleteEndorsement
            | O::CancelEndorsement => {
                matches!(role, R::Provider | R::MedicalDirector | R::Delegate)
            }
            O::ReadEndorsements => matches!(role, R::Provider | R::MedicalDirector | R::Delegate | R::Support),
            O::SubmitPanel | O::RemoveFromPanel => matches!(role, R::Provider | R::MedicalDirector | R::Delegate),
            O::ManageClinicStaff | O::TransferPanel | O::ListProviderAtClinic | O::UnlistProviderAtClinic => {
                role == R::MedicalDirector
            }
            O::AnswerPanelTransfer => matches!(role, R::Provider | R::MedicalDirector),
            O::ReadPanelReports => {
                matches!(role, R::Provider | R::MedicalDirector | R::Delegate | R::Support | R::Operations)
            }
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(ha: &str, community: &str) -> ShardKey {
        ShardKey::new(HaCode::parse(ha).unwrap(), CommunityCode::parse(community).unwrap())
    }

    #[test]
    fn scope_entries_round_trip() {
        let scope = Scope::parse(["ha:VIHA", "community:161"]).unwrap();
        assert!(scope.covers(&shard("VIHA", "61")));
        assert!(scope.covers(&shard("IHA", "161")));
        assert!(!scope.covers(&shard("FHA", "41")));
        assert_eq!(Scope::parse(scope.entries().iter().map(String::as_str)).unwrap(), scope);
        assert!(Scope::parse(["planet:earth"]).is_err());
        assert!(Scope::parse(["ha:"]).is_err());
        assert!(Scope::parse(["province"]).unwrap().covers(&shard("NHA", "51")));
    }

    #[test]
    fn roles_parse_only_from_tokens() {
        for role in Role::FROM_TOKENS {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("internal".parse::<Role>().is_err());
        assert!("public".parse::<Role>().is_err());
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn operations_parse_back() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
    }

    #[test]
    fn public_callers_are_asked_to_sign_in_and_others_are_forbidden() {
        let public = Principal::public();
        assert!(public.require(Operation::RegisterHousehold, None).is_ok());
        assert_eq!(public.require(Operation::ReadWaitlist, None).unwrap_err().code, ErrorCode::Unauthenticated);
        let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
        assert_eq!(ops.require(Operation::ReadWaitlist, None).unwrap_err().code, ErrorCode::Forbidden);
        assert!(ops.require(Operation::ReadAudit, None).is_ok());
    }

    #[test]
    fn coordinators_are_held_to_their_scope() {
        let c = Principal::new("c-1", Role::Coordinator, None, Scope::parse(["ha:VIHA"]).unwrap());
        assert!(c.require(Operation::RunMatching, Some(&shard("VIHA", "61"))).is_ok());
        assert_eq!(
            c.require(Operation::RunMatching, Some(&shard("FHA", "41"))).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(c.require_health_authority(Operation::ReadEvents, &HaCode::parse("VIHA").unwrap()).is_ok());
        assert!(c.require_health_authority(Operation::ReadEvents, &HaCode::parse("FHA").unwrap()).is_err());
        let nowhere = Principal::new("c-2", Role::Coordinator, None, Scope::default());
        assert!(nowhere.require(Operation::ReadWaitlist, Some(&shard("VIHA", "61"))).is_err());
    }

    #[test]
    fn providers_act_only_for_themselves() {
        let me = ProviderId::parse("A1234").unwrap();
        let other = ProviderId::parse("B9876").unwrap();
        let p = Principal::new("u-1", Role::Provider, Some(me.clone()), Scope::default());
        assert!(p.require_self(&me, "set capacity").is_ok());
        assert_eq!(p.require_self(&other, "set capacity").unwrap_err().code, ErrorCode::Forbidden);
        assert!(Principal::internal("test").require_self(&other, "set capacity").is_ok());
    }

    #[test]
    fn internal_may_do_everything_and_no_token_role_may_read_the_audit_but_operations() {
        for op in Operation::ALL {
            assert!(op.allows(Role::Internal));
        }
        let readers: Vec<Role> = Role::FROM_TOKENS.into_iter().filter(|r| Operation::ReadAudit.allows(*r)).collect();
        assert_eq!(readers, vec![Role::Operations]);
    }
}

//! Registrations on the waitlist and their lifecycle:
//! `WAITING → PROPOSED → ATTACHED`, `PROPOSED → WAITING` (returned, keeping the
//! original registration time), `WAITING|PROPOSED → WITHDRAWN`, and a move to
//! another community: `WAITING|PROPOSED → MOVED` in the community left, and a
//! `WAITING` copy, with the same reference and registration time, in the one joined.

use serde::{Deserialize, Serialize};

use super::{DomainError, Household, Phn, ProposalId, ProviderId, RegistrationRef, Responder, ShardKey, Timestamp};

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegistrationStatus {
    /// On the waitlist.
    Waiting,
    /// Proposed to a provider; the proposal is open.
    Proposed,
    /// On a provider's panel.
    Attached,
    /// Left the waitlist (moved, found a doctor, asked to be removed).
    Withdrawn,
    /// Moved to another community's waitlist, where the registration goes on
    /// with its registration time. This copy is the record of the move.
    Moved,
}

impl RegistrationStatus {
    /// The status as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            RegistrationStatus::Waiting => "WAITING",
            RegistrationStatus::Proposed => "PROPOSED",
            RegistrationStatus::Attached => "ATTACHED",
            RegistrationStatus::Withdrawn => "WITHDRAWN",
            RegistrationStatus::Moved => "MOVED",
        }
    }
}

/// A returned match: who declined, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The proposal that was declined or expired.
    pub proposal: ProposalId,
    /// The provider it was for.
    pub provider: ProviderId,
    /// Who declined (`None`: the proposal expired unanswered).
    pub by: Option<Responder>,
    /// The reason given.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// A household's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Public reference.
    pub reference: RegistrationRef,
    /// The community whose waitlist holds it.
    pub shard: ShardKey,
    /// Who registered.
    pub household: Household,
    /// The place in line. Never changes, whatever happens to a match.
    pub registered_at: Timestamp,
    /// Where it stands.
    pub status: RegistrationStatus,
    /// The open proposal while `Proposed`.
    pub proposal: Option<ProposalId>,
    /// The provider once `Attached`.
    pub provider: Option<ProviderId>,
    /// Every returned match, oldest first.
    pub declines: Vec<Decline>,
    /// Why it was withdrawn.
    pub withdrawn_reason: Option<String>,
    /// Last transition.
    pub updated_at: Timestamp,
}

/// The patient who registered a household while signed in: only they (and
/// staff whose scope holds its community) may read or change it by its
/// reference. A registration made without signing in, or by a coordinator,
/// has none, and its reference alone stays the capability (DECISIONS 46).
/// Written with the registration, carried by its moves, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationOwner {
    /// The registration.
    pub reference: RegistrationRef,
    /// The sign-in subject (`sub`) of the patient who registered it.
    pub subject: String,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransitionRefused(pub String);

impl Registration {
    /// A new registration, waiting.
    pub fn new(reference: RegistrationRef, shard: ShardKey, household: Household, now: Timestamp) -> Self {
        Registration {
            reference,
            shard,
            household,
            registered_at: now,
            status: RegistrationStatus::Waiting,
            proposal: None,
            provider: None,
            declines: vec![],
            withdrawn_reason: None,
            updated_at: now,
        }
    }

    fn refuse(&self, what: &str) -> TransitionRefused {
        if self.status == RegistrationStatus::Moved {
            // Asked of the community it left, in the moment its move takes to land.
            return TransitionRefused(format!(
                "registration {} is moving to another community and cannot be {what} until it lands there: \
                 try again in a moment",
                self.reference
            ));
        }
        TransitionRefused(format!("registration {} is {} and cannot be {what}", self.reference, self.status.name()))
    }

    /// `WAITING → PROPOSED`.
    pub fn propose(&self, proposal: ProposalId, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Waiting {
            return Err(self.refuse("proposed"));
        }
        Ok(Registration {
            status: RegistrationStatus::Proposed,
            proposal: Some(proposal),
            updated_at: now,
            ..self.clone()
        })
    }

    /// `PROPOSED → WAITING`: the match fell through; `registered_at` is kept.
    pub fn return_to_waitlist(&self, decline: Decline, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Proposed || self.proposal.as_ref() != Some(&decline.proposal) {
            return Err(self.refuse("returned to the waitlist"));
        }
        let mut next =
            Registration { status: RegistrationStatus::Waiting, proposal: None, updated_at: now, ..self.clone() };
        next.declines.push(decline);
        Ok(next)
    }

    /// `ATTACHED → WAITING`: an attachment made through a match fell through
    /// (`decline` names the accepted proposal); `registered_at` is kept, so the
    /// household stands where it stood before the match.
    pub fn return_from_panel(&self, decline: Decline, now: Timestamp) -> Result<Self, TransitionRefused> {
        if !self.is_attached_to(&decline.provider) {
            return Err(self.refuse("returned to the waitlist"));
        }
        let mut next =
            Registration { status: RegistrationStatus::Waiting, provider: None, updated_at: now, ..self.clone() };
        next.declines.push(decline);
        Ok(next)
    }

    /// The time a change made `now` carries: later than every earlier change of
    /// this registration, whatever the clock says. A PHN claim made for the
    /// change carries it too, so a claim newer than the registration is one
    /// for a change still under way.
    pub fn next_change_at(&self, now: Timestamp) -> Timestamp {
        now.max(self.updated_at.plus_ms(1))
    }

    /// Whether the household is attached, to `provider`.
    pub fn is_attached_to(&self, provider: &ProviderId) -> bool {
        self.status == RegistrationStatus::Attached && self.provider.as_ref() == Some(provider)
    }

    /// `PROPOSED → ATTACHED`.
    pub fn attach(&self, provider: ProviderId, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Proposed {
            return Err(self.refuse("attached"));
        }
        Ok(Registration {
            status: RegistrationStatus::Attached,
            proposal: None,
            provider: Some(provider),
            updated_at: now,
            ..self.clone()
        })
    }

    /// Members of a waiting household found on a provider's submitted panel
    /// leave the waitlist; the rest keep waiting with their place in line
    /// (docs/DECISIONS.md, "A waiting patient on a submitted panel"). When
    /// nobody is left, `WAITING → ATTACHED` to that provider, with the whole
    /// household kept as the record of who registered. PHNs not in the
    /// household are ignored (a retry after a crash).
    pub fn attach_members(
        &self,
        phns: &[Phn],
        provider: &ProviderId,
        now: Timestamp,
    ) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Waiting {
            return Err(self.refuse("attached from a submitted panel"));
        }
        let staying: Vec<_> = self.household.members.iter().filter(|m| !phns.contains(&m.phn)).cloned().collect();
        if staying.len() == self.household.members.len() {
            return Ok(self.clone());
        }
        if staying.is_empty() {
            return Ok(Registration {
                status: RegistrationStatus::Attached,
                provider: Some(provider.clone()),
                updated_at: now,
                ..self.clone()
            });
        }
        let household = Household { members: staying, ..self.household.clone() };
        Ok(Registration { household, updated_at: now, ..self.clone() })
    }

    /// `WAITING → WAITING` with the household as it is now (a baby born, a
    /// member who left, needs that changed): the reference, the registration
    /// time and so the place in line are kept. Refused while a proposal is open
    /// (answer it first: the provider was offered the household as it was).
    pub fn update_household(&self, household: Household, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Waiting {
            return Err(self.refuse("changed"));
        }
        Ok(Registration { household, updated_at: self.next_change_at(now), ..self.clone() })
    }

    /// `WAITING|PROPOSED → WITHDRAWN`.
    pub fn withdraw(&self, reason: &str, now: Timestamp) -> Result<Self, TransitionRefused> {
        if !matches!(self.status, RegistrationStatus::Waiting | RegistrationStatus::Proposed) {
            return Err(self.refuse("withdrawn"));
        }
        Ok(Registration {
            status: RegistrationStatus::Withdrawn,
            proposal: None,
            withdrawn_reason: Some(reason.to_string()),
            updated_at: now,
            ..self.clone()
        })
    }

    /// `WAITING|PROPOSED → MOVED`: the household leaves this community's line for
    /// another's. An open proposal is cancelled by the caller. The time of the
    /// change is later than every earlier change of this registration, wherever
    /// it was made, so the copies of a registration that moved several times
    /// can be told apart by `updated_at` alone (see [`Self::arrives_after`]).
    pub fn move_out(&self, now: Timestamp) -> Result<Self, TransitionRefused> {
        if !matches!(self.status, RegistrationStatus::Waiting | RegistrationStatus::Proposed) {
            return Err(self.refuse("moved to another community"));
        }
        Ok(Registration {
            status: RegistrationStatus::Moved,
            proposal: None,
            updated_at: self.next_change_at(now),
            ..self.clone()
        })
    }

    /// The copy a community joined by a move holds: `WAITING` in `shard`, with the
    /// same reference, household, registration time and past declines.
    pub fn move_in(&self, shard: ShardKey, now: Timestamp) -> Result<Self, TransitionRefused> {
        if self.status != RegistrationStatus::Moved {
            return Err(self.refuse("joined to another community's waitlist"));
        }
        Ok(Registration {
            shard,
            status: RegistrationStatus::Waiting,
            updated_at: self.next_change_at(now),
            ..self.clone()
        })
    }

    /// Whether `moving` (a `MOVED` copy on its way here) is newer than this copy
    /// of the same registration, which is then a record of an earlier stay. A
    /// `MOVED` copy here older than `moving` means the household left and is
    /// now coming back; anything else means `moving` already arrived (a retry).
    pub fn arrives_after(&self, moving: &Registration) -> bool {
        self.status == RegistrationStatus::Moved && self.updated_at < moving.updated_at
    }

    /// Whether this registration still holds its members' PHNs (so nobody may
    /// register them again). A `MOVED` copy holds them until the community it
    /// moved to says otherwise.
    pub fn holds_phns(&self) -> bool {
        self.status != RegistrationStatus::Withdrawn
    }

    /// Whether this registration holds `phn`: it holds its PHNs and lists the
    /// member. A member who left the household (changed, or gone to a panel)
    /// is not held, even if freeing their claim failed.
    pub fn holds(&self, phn: Phn) -> bool {
        self.holds_phns() && self.household.members.iter().any(|m| m.phn == phn)
    }
}

/// Checks a free-text reason (decline, withdrawal): 1–500 printable characters
/// (line breaks allowed; no control characters, nor bidirectional overrides
/// and isolates, which make text display in another order than stored).
pub fn parse_reason(input: &str) -> Result<String, DomainError> {
    free_text(input, "reason", "a reason is 1 to 500 printable characters (line breaks allowed)")
}

/// A coordinator's note on a proposal they make: as a reason, 1 to 500
/// printable characters, trimmed.
pub fn parse_note(input: &str) -> Result<String, DomainError> {
    free_text(input, "note", "a note is 1 to 500 printable characters (line breaks allowed)")
}

fn free_text(input: &str, field: &'static str, rule: &'static str) -> Result<String, DomainError> {
    super::readable(input, 1, 500, true).ok_or_else(|| DomainError::invalid(field, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_notes_are_kept_trimmed_and_composed() {
        assert_eq!(parse_reason(" Jose\u{301} moved ").unwrap(), "Jos\u{e9} moved");
        assert_eq!(parse_note("two\nlines").unwrap(), "two\nlines", "line breaks are allowed");
        assert!(parse_reason("\u{202E}devomer").is_err(), "a bidirectional override");
        assert!(parse_reason(&"x".repeat(501)).is_err());
        assert!(parse_reason(" ").is_err());
        assert_eq!(parse_reason("two\r\nlines").unwrap(), "two\nlines", "a browser's line break");
        for empty in ["\u{200B}", "\u{3164}\u{3164}", "\u{2800}", "\u{034F}", "\u{FE0F}", "\u{E0041}", "\u{0301}"] {
            assert!(parse_reason(empty).is_err(), "nothing that shows: {empty:?}");
        }
        assert!(parse_reason("Jose\u{301}").is_ok(), "a mark on a letter");
        assert!(parse_reason("a\u{2028}b").is_err(), "a line separator is not a newline");
    }
    use crate::domain::{DateOfBirth, Member, PersonName, Phn, PostalCode};

    fn registration() -> Registration {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let member = Member {
            phn: Phn::parse("9698658215").unwrap(),
            given_name: PersonName::parse("Ada").unwrap(),
            surname: PersonName::parse("Lovelace").unwrap(),
            date_of_birth: DateOfBirth::parse("1990-01-01", today).unwrap(),
            needs: Default::default(),
        };
        let household = Household::new(vec![member], PostalCode::parse("V8W 1A1").unwrap(), vec![]).unwrap();
        Registration::new(
            RegistrationRef::generate(),
            crate::domain::ShardKey::parse("IHA/111").unwrap(),
            household,
            Timestamp(1_000),
        )
    }

    fn decline(p: &ProposalId) -> Decline {
        Decline {
            proposal: *p,
            provider: ProviderId::parse("P1234").unwrap(),
            by: Some(Responder::Provider),
            reason: "panel full".into(),
            at: Timestamp(3_000),
        }
    }

    #[test]
    fn full_match_path() {
        let r = registration();
        let p = ProposalId::generate();
        let proposed = r.propose(p, Timestamp(2_000)).unwrap();
        assert_eq!(proposed.status, RegistrationStatus::Proposed);
        let attached = proposed.attach(ProviderId::parse("P1234").unwrap(), Timestamp(3_000)).unwrap();
        assert_eq!(attached.status, RegistrationStatus::Attached);
        assert_eq!(attached.registered_at, Timestamp(1_000));
        assert!(attached.holds_phns());
    }

    #[test]
    fn a_returned_match_keeps_the_place_in_line() {
        let r = registration();
        let p = ProposalId::generate();
        let back = r.propose(p, Timestamp(2_000)).unwrap().return_to_waitlist(decline(&p), Timestamp(3_000)).unwrap();
        assert_eq!(back.status, RegistrationStatus::Waiting);
        assert_eq!(back.registered_at, Timestamp(1_000));
        assert_eq!(back.declines.len(), 1);
        assert_eq!(back.declines[0].reason, "panel full");
    }

    #[test]
    fn an_attachment_that_falls_through_returns_the_household_to_its_place() {
        let r = registration();
        let p = ProposalId::generate();
        let attached =
            r.propose(p, Timestamp(2_000)).unwrap().attach(ProviderId::parse("P1234").unwrap(), Timestamp(3_000));
        let back = attached.unwrap().return_from_panel(decline(&p), Timestamp(4_000)).unwrap();
        assert_eq!((back.status, back.provider.as_ref(), back.proposal), (RegistrationStatus::Waiting, None, None));
        assert_eq!((back.registered_at, back.updated_at), (Timestamp(1_000), Timestamp(4_000)));
        assert_eq!(back.declines, vec![decline(&p)]);
        assert!(back.return_from_panel(decline(&p), Timestamp(5_000)).is_err(), "WAITING → WAITING");
        let proposed = r.propose(p, Timestamp(2_000)).unwrap();
        assert!(proposed.return_from_panel(decline(&p), Timestamp(3_000)).is_err(), "PROPOSED: decline it instead");
        let elsewhere = proposed.attach(ProviderId::parse("P9999").unwrap(), Timestamp(3_000)).unwrap();
        assert!(elsewhere.return_from_panel(decline(&p), Timestamp(4_000)).is_err(), "another provider's panel");
    }

    #[test]
    fn refused_transitions() {
        let r = registration();
        let p = ProposalId::generate();
        assert!(r.attach(ProviderId::parse("P1234").unwrap(), Timestamp(2)).is_err(), "WAITING → ATTACHED");
        assert!(r.return_to_waitlist(decline(&p), Timestamp(2)).is_err(), "WAITING → WAITING");
        let proposed = r.propose(p, Timestamp(2)).unwrap();
        assert!(proposed.propose(ProposalId::generate(), Timestamp(3)).is_err(), "PROPOSED → PROPOSED");
        let other = ProposalId::generate();
        assert!(proposed.return_to_waitlist(decline(&other), Timestamp(3)).is_err(), "returned by another proposal");
        let attached = proposed.attach(ProviderId::parse("P1234").unwrap(), Timestamp(3)).unwrap();
        assert!(attached.withdraw("moved", Timestamp(4)).is_err(), "ATTACHED → WITHDRAWN");
        assert!(attached.propose(ProposalId::generate(), Timestamp(4)).is_err(), "ATTACHED → PROPOSED");
        let withdrawn = r.withdraw("moved", Timestamp(5)).unwrap();
        assert!(!withdrawn.holds_phns());
        assert!(withdrawn.withdraw("again", Timestamp(6)).is_err(), "WITHDRAWN → WITHDRAWN");
        assert!(withdrawn.propose(ProposalId::generate(), Timestamp(6)).is_err(), "WITHDRAWN → PROPOSED");
        let err = withdrawn.withdraw("again", Timestamp(6)).unwrap_err().0;
        assert!(err.contains("is WITHDRAWN"), "{err}");
    }

    #[test]
    fn a_waiting_household_changes_and_keeps_its_place() {
        let r = registration();
        let mut household = r.household.clone();
        let mut baby = household.members[0].clone();
        baby.phn = (5000..).find_map(Phn::with_body).unwrap();
        baby.needs.insert(crate::domain::Need::Newborn);
        household.members.push(baby);
        let next = r.update_household(household.clone(), Timestamp(500)).unwrap();
        assert_eq!((next.household.members.len(), next.registered_at), (2, Timestamp(1_000)));
        assert_eq!(next.reference, r.reference);
        assert_eq!(next.updated_at, Timestamp(1_001), "later than the last change, whatever the clock says");
        let proposed = r.propose(ProposalId::generate(), Timestamp(2_000)).unwrap();
        let err = proposed.update_household(household.clone(), Timestamp(3_000)).unwrap_err().0;
        assert!(err.contains("is PROPOSED and cannot be changed"), "{err}");
        let withdrawn = r.withdraw("found a doctor", Timestamp(2_000)).unwrap();
        assert!(withdrawn.update_household(household.clone(), Timestamp(3_000)).is_err(), "WITHDRAWN");
        let attached = proposed.attach(ProviderId::parse("P1234").unwrap(), Timestamp(3_000)).unwrap();
        assert!(attached.update_household(household.clone(), Timestamp(4_000)).is_err(), "ATTACHED");
        let moved = r.move_out(Timestamp(2_000)).unwrap();
        assert!(moved.update_household(household, Timestamp(3_000)).is_err(), "MOVED");
    }

    #[test]
    fn a_proposed_registration_can_be_withdrawn() {
        let r = registration().propose(ProposalId::generate(), Timestamp(2)).unwrap();
        let w = r.withdraw("found a doctor", Timestamp(3)).unwrap();
        assert_eq!(w.status, RegistrationStatus::Withdrawn);
        assert_eq!(w.proposal, None);
    }

    #[test]
    fn members_on_a_submitted_panel_leave_the_rest_keep_waiting() {
        let mut r = registration();
        let second = Member { phn: Phn::with_body(1234).unwrap(), ..r.household.members[0].clone() };
        r.household.members.push(second.clone());
        let first = r.household.members[0].phn;
        let doc = ProviderId::parse("P1234").unwrap();
        let one_left = r.attach_members(&[first], &doc, Timestamp(5)).unwrap();
        assert_eq!(one_left.status, RegistrationStatus::Waiting);
        assert_eq!(one_left.household.members, vec![second.clone()]);
        assert_eq!(one_left.registered_at, r.registered_at, "the rest keep their place");
        assert_eq!(one_left.attach_members(&[first], &doc, Timestamp(6)).unwrap(), one_left, "a retry changes nothing");
        let done = one_left.attach_members(&[second.phn], &doc, Timestamp(7)).unwrap();
        assert_eq!((done.status, done.provider.clone()), (RegistrationStatus::Attached, Some(doc.clone())));
        assert_eq!(done.household.members.len(), 1, "the last household is kept as the record");
        assert!(done.attach_members(&[second.phn], &doc, Timestamp(8)).is_err());
        let proposed = r.propose(ProposalId::generate(), Timestamp(2)).unwrap();
        assert!(proposed.attach_members(&[first], &doc, Timestamp(3)).is_err(), "an open proposal stands");
    }

    #[test]
    fn a_move_keeps_the_place_in_line_and_the_history() {
        let p = ProposalId::generate();
        let r = registration().propose(p, Timestamp(2_000)).unwrap().return_to_waitlist(decline(&p), Timestamp(3_000));
        let r = r.unwrap();
        let moved = r.move_out(Timestamp(4_000)).unwrap();
        assert_eq!(moved.status, RegistrationStatus::Moved);
        assert!(moved.holds_phns(), "a household between two communities keeps its PHNs");
        let meanwhile = moved.update_household(r.household.clone(), Timestamp(4_500)).unwrap_err().0;
        assert!(meanwhile.contains("is moving to another community") && meanwhile.contains("try again"), "{meanwhile}");
        let there = crate::domain::ShardKey::parse("VCHA/233").unwrap();
        let arrived = moved.move_in(there.clone(), Timestamp(5_000)).unwrap();
        assert_eq!(arrived.status, RegistrationStatus::Waiting);
        assert_eq!(arrived.shard, there);
        assert_eq!((arrived.reference, arrived.registered_at), (r.reference, Timestamp(1_000)));
        assert_eq!(arrived.declines, r.declines, "past declines go with it");
        let proposed = registration().propose(ProposalId::generate(), Timestamp(2)).unwrap();
        assert_eq!(proposed.move_out(Timestamp(3)).unwrap().proposal, None, "PROPOSED → MOVED drops the proposal");
    }

    #[test]
    fn each_step_of_a_move_is_later_than_the_last_whatever_the_clocks_say() {
        let r = registration();
        let out = r.move_out(Timestamp(500)).unwrap();
        assert!(out.updated_at > r.updated_at, "a clock behind the last change");
        let there = crate::domain::ShardKey::parse("VCHA/233").unwrap();
        let arrived = out.move_in(there, Timestamp(out.updated_at.0)).unwrap();
        assert!(arrived.updated_at > out.updated_at, "within one millisecond");
        let back = arrived.move_out(Timestamp(0)).unwrap();
        // The first community holds `out`; `back` is the household coming back.
        assert!(out.arrives_after(&back), "an older record of a stay is replaced");
        assert!(!back.arrives_after(&out), "a retry of an older arrival is not");
        assert!(!arrived.arrives_after(&back), "a copy still waiting has already arrived");
    }

    #[test]
    fn refused_moves() {
        let r = registration();
        assert!(r.move_in(r.shard.clone(), Timestamp(2)).is_err(), "WAITING is not on its way");
        let withdrawn = r.withdraw("found a doctor", Timestamp(2)).unwrap();
        assert!(withdrawn.move_out(Timestamp(3)).is_err(), "WITHDRAWN → MOVED");
        let attached = r
            .propose(ProposalId::generate(), Timestamp(2))
            .and_then(|p| p.attach(ProviderId::parse("P1234").unwrap(), Timestamp(3)))
            .unwrap();
        assert!(attached.move_out(Timestamp(4)).is_err(), "ATTACHED → MOVED");
        let moved = r.move_out(Timestamp(2)).unwrap();
        assert!(moved.move_out(Timestamp(3)).is_err(), "MOVED → MOVED");
        assert!(moved.withdraw("left", Timestamp(3)).is_err(), "MOVED → WITHDRAWN");
        assert!(moved.propose(ProposalId::generate(), Timestamp(3)).is_err(), "MOVED → PROPOSED");
    }

    #[test]
    fn reasons() {
        assert_eq!(parse_reason("  moved  ").unwrap(), "moved");
        assert!(parse_reason("").is_err());
        assert!(parse_reason(&"x".repeat(501)).is_err());
        assert_eq!(parse_note(" knows the family\n").unwrap(), "knows the family");
        assert_eq!(parse_note(&"x".repeat(500)).unwrap().len(), 500);
        let e = parse_note("a\u{7}bell").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("note", "a note is 1 to 500 printable characters (line breaks allowed)")
        );
        assert_eq!(parse_note("line one\nline two").unwrap(), "line one\nline two");
        // Text that would display in another order than it is stored.
        for spoof in ["\u{202E}tnemtnioppa", "a\u{2066}b\u{2069}", "\u{202A}x"] {
            assert!(parse_note(spoof).is_err(), "{spoof:?}");
            assert!(parse_reason(spoof).is_err(), "{spoof:?}");
        }
        assert!(parse_note("שלום and \u{200F}hello").is_ok(), "right-to-left text and its marks are fine");
    }
}

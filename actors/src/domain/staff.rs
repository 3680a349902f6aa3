//! A clinic's staff list: the people who work there besides its providers
//! (medical office assistants, nurses, managers), kept by the clinic's medical
//! director.
//!
//! Being on the list grants nothing. A staff member acts for a provider only
//! through that provider's delegation endorsement (`domain/endorsement.rs`);
//! the list is the clinic's record of who works there (docs/DECISIONS.md 21).
//!
//! Each member is a record of its own, keyed by (clinic, subject), not a field
//! of [`Clinic`](super::Clinic): stored clinics are postcard-encoded, which
//! cannot take a new field without breaking the files already written.

use serde::{Deserialize, Serialize};

use super::{DelegateId, DomainError, FacilityNumber, Timestamp};

/// What a staff member's subject must be, for error messages.
pub const STAFF_RULE: &str = "a staff member is named by their user id, as their token's `sub` names them: 1 to 256 bytes, no control characters";

/// The most staff one clinic lists: bounds the record set and the answer.
pub const MAX_STAFF_PER_CLINIC: usize = 500;

/// One person on a clinic's staff list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    /// The clinic.
    pub facility: FacilityNumber,
    /// Their sign-in principal: the subject (`sub`) of their tokens.
    pub subject: DelegateId,
    /// Their name as the clinic shows it.
    pub name: String,
    /// Their role or title, as the clinic words it: `MOA`, `Nurse`, `Clinic manager`.
    pub title: String,
    /// When the medical director added them.
    pub added_at: Timestamp,
}

/// A staff member to add, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffInput {
    /// Their sign-in subject.
    pub subject: DelegateId,
    /// Name, 1–120 printable characters.
    pub name: String,
    /// Title, 1–60 printable characters.
    pub title: String,
}

impl StaffInput {
    /// Trims and checks each field.
    pub fn parse(subject: &str, name: &str, title: &str) -> Result<Self, DomainError> {
        // The shape first, with the staff list's own words; then the rules of a
        // new id (no spaces around it, not a PHN...) on the id as sent.
        DelegateId::parse(subject).map_err(|_| DomainError::invalid("subject", STAFF_RULE))?;
        let subject = DelegateId::parse_new(subject).map_err(|e| DomainError { field: "subject".into(), ..e })?;
        Ok(StaffInput { subject, name: printable(name, "name", 120)?, title: printable(title, "title", 60)? })
    }

    /// The member this input adds to `facility` at `now`.
    pub fn member(self, facility: FacilityNumber, now: Timestamp) -> StaffMember {
        StaffMember { facility, subject: self.subject, name: self.name, title: self.title, added_at: now }
    }
}

/// `value` trimmed and in Unicode's composed form (NFC), as person names are
/// held, if it is 1 to `max` printable characters.
fn printable(value: &str, field: &str, max: usize) -> Result<String, DomainError> {
    super::readable(value, 1, max, false)
        .ok_or_else(|| DomainError::invalid(field, &format!("{field} must be 1 to {max} printable characters")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_input_is_trimmed_and_bounded() {
        let ok = StaffInput::parse("moa-7@fernie", " Jo Tremblay ", "MOA").unwrap();
        assert_eq!((ok.subject.as_str(), ok.name.as_str(), ok.title.as_str()), ("moa-7@fernie", "Jo Tremblay", "MOA"));
        let field = |r: Result<StaffInput, DomainError>| r.unwrap_err().field;
        // A user id with spaces around it is refused, as a token's `sub` is: not trimmed quietly.
        assert_eq!(field(StaffInput::parse(" moa-7@fernie ", "Jo", "MOA")), "subject");
        assert_eq!(field(StaffInput::parse("", "Jo", "MOA")), "subject");
        assert_eq!(field(StaffInput::parse("has\ttab", "Jo", "MOA")), "subject");
        assert_eq!(field(StaffInput::parse(&"x".repeat(257), "Jo", "MOA")), "subject");
        assert!(StaffInput::parse("auth0|64f1c2ab", "Jo", "MOA").is_ok(), "any subject a token may carry");
        assert_eq!(field(StaffInput::parse("moa-1", "  ", "MOA")), "name");
        assert_eq!(field(StaffInput::parse("moa-1", &"a".repeat(121), "MOA")), "name");
        assert_eq!(field(StaffInput::parse("moa-1", "Jo", "")), "title");
        assert_eq!(field(StaffInput::parse("moa-1", "Jo", "MOA\u{7}")), "title");
        assert_eq!(field(StaffInput::parse("moa-1", "\u{202E}nnA", "MOA")), "name", "a bidirectional override");
        assert_eq!(field(StaffInput::parse("9698658215", "Jo", "MOA")), "subject", "a PHN is not a user id");
        assert!(StaffInput::parse("moa-1", &"é".repeat(120), &"N".repeat(60)).is_ok());
        let composed = StaffInput::parse("moa-1", "Zoe\u{308}", "MOA").unwrap();
        assert_eq!(composed.name, "Zo\u{eb}", "held composed, as person names are");
    }

    #[test]
    fn a_member_carries_its_clinic_and_time() {
        let f = FacilityNumber::parse("0F111").unwrap();
        let m = StaffInput::parse("rn-2", "Sam Lee", "Nurse").unwrap().member(f.clone(), Timestamp(42));
        assert_eq!((m.facility, m.added_at, m.subject.as_str()), (f, Timestamp(42), "rn-2"));
    }
}

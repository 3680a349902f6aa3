//! Domain types: parsed at the boundary, valid everywhere after it.
//!
//! Every type with rules has a `parse` constructor returning `Result`; past the
//! gateway, holding a value of the type is the proof that it is valid.

/// Stores a parsed newtype as its text and parses it again when read back, so
/// stored data passes the same rules as input. Needs `parse(&str)` and `as_str()`.
macro_rules! stored_as_text {
    ($($t:ty),+ $(,)?) => {$(
        impl TryFrom<String> for $t {
            type Error = $crate::domain::DomainError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.as_str().to_string()
            }
        }
    )+};
}

/// Whether `c` may not appear in free text that people read (notes, reasons,
/// clinic and staff entries): a control character, or one of Unicode's
/// bidirectional embedding, override and isolate controls, which make text
/// display in an order other than it is stored ("Trojan Source").
pub(crate) fn unprintable(c: char) -> bool {
    // Line and paragraph separators break lines as a newline does.
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Whether `text` holds a character no id or text people read may hold
/// (a control character, a bidirectional override or isolate, a line
/// separator): for checks made outside this module.
pub fn has_unprintable(text: &str) -> bool {
    text.chars().any(unprintable)
}

/// Whether `text` begins or ends with a character that shows nothing (a
/// space, a zero-width space, a byte-order mark...): an id so written is not
/// the id its reader sees.
pub fn has_invisible_ends(text: &str) -> bool {
    text.chars().next().is_some_and(invisible) || text.chars().next_back().is_some_and(invisible)
}

/// Whether `c` shows nothing by itself: a space; a zero-width, formatting or
/// joining character; a filler or blank that renders empty (Hangul fillers, a
/// braille blank); a variation selector or tag; or a combining mark, which
/// marks a letter but is not one (text made only of these reads as empty).
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || unicode_normalization::char::is_combining_mark(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// `text` in Unicode's composed form (NFC), as names are held: "José" typed with
/// a combining accent is then the same text, of the same length, as with "é".
pub(crate) fn composed(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfc().collect()
}

/// Free text that people read (notes, reasons, clinic and staff entries) as it
/// is kept: trimmed and in composed form (NFC), if it is `min` to `max`
/// characters, none is unprintable (a line break is allowed where
/// `line_breaks`, and a browser's CRLF is kept as LF), and, unless it may be
/// empty, something in it shows (not only zero-width characters).
pub(crate) fn readable(text: &str, min: usize, max: usize, line_breaks: bool) -> Option<String> {
    let text = if line_breaks { text.replace("\r\n", "\n") } else { text.to_string() };
    let t = composed(text.trim());
    let n = t.chars().count();
    let refused = |c: char| unprintable(c) && !(line_breaks && c == '\n');
    let shows = min == 0 || !t.chars().all(invisible);
    (min <= n && n <= max && shows && !t.chars().any(refused)).then_some(t)
}

mod clinic;
mod endorsement;
mod event;
mod holders;
mod ids;
mod moves;
mod panel;
mod person;
mod phn;
mod proposal;
mod provider;
mod registration;
mod shard;
mod staff;
mod time;
mod transfer;

pub use clinic::{Clinic, ClinicInput};
pub use endorsement::{DelegateId, Endorsement, EndorsementStatus, EndorsementStep, MAX_SUBJECT, Party, is_subject};
pub use event::{Event, EventKind, Seq};
pub use holders::{PlaceHolders, holders_after};
pub use ids::{EndorsementId, FacilityNumber, ProposalId, ProviderId, RegistrationRef};
pub use moves::{MoveStatus, RegistrationMove};
pub use panel::{PanelEntry, PanelIntake, PanelSource};
pub use person::{AgeGroup, DateOfBirth, Household, Language, Member, Need, PersonName, PostalCode};
pub use phn::Phn;
pub use proposal::{Proposal, ProposalStatus, Responder, ScoreExplanation, ScorePart, Settlement};
pub use provider::{Capacity, ComplexityMix, Provider, ProviderKind};
pub use registration::{
    Decline, Registration, RegistrationOwner, RegistrationStatus, TransitionRefused, parse_note, parse_reason,
};
pub use shard::{CommunityCode, HaCode, ShardKey};
pub use staff::{MAX_STAFF_PER_CLINIC, STAFF_RULE, StaffInput, StaffMember};
pub use time::{DAY_MS, Timestamp};
pub use transfer::{PanelTransfer, TransferKey, TransferSide, TransferStatus};

/// A value that failed its rule. `field` names the input, `message` says what a
/// person should change; neither ever contains the value itself (it may be a PHN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DomainError {
    /// The input that was refused, e.g. `members[1].phn`.
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl DomainError {
    pub(crate) fn invalid(field: &str, message: &str) -> Self {
        DomainError { field: field.to_string(), message: message.to_string() }
    }

    /// Prefixes the field with where it sits, e.g. `members[2].` + `phn`.
    pub fn at(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

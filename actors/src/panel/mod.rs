//! The provider side of panels: submission of panel lists, removal, transfer
//! between providers, and the reports payment models use.
//!
//! - [`csv`]: the pure parser of a panel file (PHN, surname, given name, date of
//!   birth, 98990, facility number) into rows, each valid or with its problem.
//! - The types here are what the shard actor is asked and answers when a panel
//!   is submitted ([`PanelChunk`] → [`ChunkAnswer`]), when waiting patients
//!   leave the waitlist for a panel ([`Release`]), and what a submission
//!   reports per row ([`SubmissionReport`]). The work itself is in
//!   `shard/panels.rs`; the orchestration across shards in `system/panels.rs`.
//!
//! A PHN is held by exactly one registration or panel (the store's PHN claim,
//! changed by compare-and-set). Submission claims each row's PHN for the
//! provider's panel: a PHN held by another panel is a *conflict* to resolve,
//! never a silent move; one held by a waiting registration moves to the panel
//! and the patient leaves the waitlist.

pub mod csv;

use serde::{Deserialize, Serialize};

use crate::domain::{FacilityNumber, Phn, ProviderId, RegistrationRef, ShardKey};

pub use csv::{FileError, Limits, PanelRow, ParsedPanel, ParsedRow, RowProblem};

/// What became of one row of a submitted panel file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// Added to the panel.
    Accepted,
    /// The patient was waiting on the registry: added to the panel, and they left the waitlist.
    AttachedFromWaitlist,
    /// Already on this provider's panel: nothing changed (a re-submission),
    /// except that a matched patient without a clinic is filed at the list's clinic.
    AlreadyOnPanel,
    /// The PHN is not a valid PHN.
    InvalidPhn,
    /// Not a panel row (fields, name, date, service code, facility, quoting).
    Malformed,
    /// The PHN appeared on an earlier row of the same file.
    Duplicate,
    /// The patient is held elsewhere (another provider's panel, an open proposal):
    /// to be resolved between the providers; nothing was moved.
    Conflict,
}

impl RowStatus {
    /// The status as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            RowStatus::Accepted => "ACCEPTED",
            RowStatus::AttachedFromWaitlist => "ATTACHED_FROM_WAITLIST",
            RowStatus::AlreadyOnPanel => "ALREADY_ON_PANEL",
            RowStatus::InvalidPhn => "INVALID_PHN",
            RowStatus::Malformed => "MALFORMED",
            RowStatus::Duplicate => "DUPLICATE",
            RowStatus::Conflict => "CONFLICT",
        }
    }

    /// Every status, in a stable order.
    pub const ALL: [RowStatus; 7] = [
        RowStatus::Accepted,
        RowStatus::AttachedFromWaitlist,
        RowStatus::AlreadyOnPanel,
        RowStatus::InvalidPhn,
        RowStatus::Malformed,
        RowStatus::Duplicate,
        RowStatus::Conflict,
    ];

    /// Parses [`name`](Self::name) (a report read back from the API).
    pub fn parse(name: &str) -> Option<Self> {
        RowStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the patient is on the panel after the submission.
    pub fn on_panel(self) -> bool {
        matches!(self, RowStatus::Accepted | RowStatus::AttachedFromWaitlist | RowStatus::AlreadyOnPanel)
    }
}

/// One row's outcome. The message never holds the row's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// The line of the file the row starts on.
    pub line: u32,
    /// What became of it.
    pub status: RowStatus,
    /// Why, for rows not accepted.
    pub message: Option<String>,
}

impl RowReport {
    /// A report without a message.
    pub fn ok(line: u32, status: RowStatus) -> Self {
        RowReport { line, status, message: None }
    }

    /// A report with a reason.
    pub fn because(line: u32, status: RowStatus, message: impl Into<String>) -> Self {
        RowReport { line, status, message: Some(message.into()) }
    }

    /// The report of a row the parser refused.
    pub fn of_problem(line: u32, problem: &RowProblem) -> Self {
        let status = match problem {
            RowProblem::InvalidPhn(_) => RowStatus::InvalidPhn,
            RowProblem::Malformed(_) => RowStatus::Malformed,
            RowProblem::Duplicate { .. } => RowStatus::Duplicate,
        };
        RowReport::because(line, status, problem.message())
    }
}

/// The answer to a submission: one report per patient row, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubmissionReport {
    /// Per row, by line.
    pub rows: Vec<RowReport>,
    /// Whether a header row was recognised and skipped.
    pub header: bool,
    /// The provider's panel size after the submission (reported plus itemised).
    pub panel_size: u32,
}

impl SubmissionReport {
    /// Rows with this status.
    pub fn count(&self, status: RowStatus) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// One valid row on its way to a panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedRow {
    /// Its line in the file.
    pub line: u32,
    /// The patient.
    pub row: PanelRow,
    /// Set on the second step for a patient who was waiting: the registration they left.
    pub from_waitlist: Option<RegistrationRef>,
}

/// A chunk of a submission, as the provider's shard receives it. Submissions
/// are cut into chunks so one large file never holds a shard's mailbox for long,
/// and each chunk is durable before the next is sent.
#[derive(Debug, Clone)]
pub struct PanelChunk {
    /// Whose panel.
    pub provider: ProviderId,
    /// For which clinic (the provider must practise there).
    pub facility: FacilityNumber,
    /// The rows.
    pub rows: Vec<SubmittedRow>,
}

/// A row whose patient is waiting on the registry: the registration's shard
/// must let them go before the panel takes them (two steps, see [`Release`]).
#[derive(Debug, Clone)]
pub struct Waitlisted {
    /// The row.
    pub row: SubmittedRow,
    /// The registration holding the PHN.
    pub reference: RegistrationRef,
    /// Its shard.
    pub shard: ShardKey,
}

/// What a shard answers for a chunk.
#[derive(Debug, Clone, Default)]
pub struct ChunkAnswer {
    /// Rows decided.
    pub rows: Vec<RowReport>,
    /// Rows waiting for their registration's shard to release them.
    pub waitlisted: Vec<Waitlisted>,
}

/// Asks a registration's shard to let members found on a submitted panel leave
/// the waitlist and hand their PHN claims to the panel. Step one of two: the
/// panel's shard then adds them (step two). A crash between the two leaves the
/// claims pointing at the panel without an entry; submitting the file again
/// finishes the move, because the panel's shard recognises those claims as its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    /// The registration.
    pub reference: RegistrationRef,
    /// The members leaving.
    pub phns: Vec<Phn>,
    /// The provider taking them.
    pub provider: ProviderId,
    /// The provider's shard, which will hold the claims.
    pub provider_shard: ShardKey,
}

/// A provider's panel as payment models count it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PanelReport {
    /// The provider.
    pub provider: Option<ProviderId>,
    /// Reported before Attach plus itemised.
    pub panel_size: u32,
    /// Reported before Attach (a count only).
    pub reported: u32,
    /// Patients itemised in Attach.
    pub itemised: u32,
    /// Itemised patients under 18.
    pub children: u32,
    /// Itemised patients 18 to 64.
    pub adults: u32,
    /// Itemised patients 65 and over.
    pub seniors: u32,
    /// Itemised patients whose needs are known (they came off the waitlist whole-household).
    pub complexity_known: u32,
    /// Of those, patients with a complex need.
    pub complex: u32,
    /// In a clinic's report: patients of this provider not counted for the
    /// clinic, because they are on the panel at another clinic or (for a
    /// provider at several clinics) carry no clinic at all. 0 in a provider's
    /// own report.
    pub not_at_clinic: u32,
}

impl PanelReport {
    /// Adds another report's counts (for a clinic's total).
    pub fn add(&mut self, other: &PanelReport) {
        self.panel_size += other.panel_size;
        self.reported += other.reported;
        self.itemised += other.itemised;
        self.children += other.children;
        self.adults += other.adults;
        self.seniors += other.seniors;
        self.complexity_known += other.complexity_known;
        self.complex += other.complex;
        self.not_at_clinic += other.not_at_clinic;
    }
}

/// A medical director's request to move a whole panel.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// The idempotency key.
    pub key: crate::domain::TransferKey,
    /// The provider whose panel moves.
    pub from: ProviderId,
    /// The provider receiving it.
    pub to: ProviderId,
    /// The receiving provider's shard.
    pub to_shard: ShardKey,
    /// The clinic the panel moves to.
    pub facility: FacilityNumber,
    /// Whether the provider whose panel moves asked for it (a director of the clinic).
    pub source_agreed: bool,
    /// Whether the provider taking it on asked for it.
    pub receiver_agreed: bool,
}

/// A provider's answer to a transfer, or its director's withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferAnswer {
    /// One of the providers agrees (or declines, `false`).
    Provider(crate::domain::TransferSide, bool),
    /// A medical director of the clinic withdraws it before it runs.
    Withdraw,
    /// Its runner stops it: the receiver has left the clinic.
    Stop,
}

/// Entries on their way from one panel to another (transfer step one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transferring {
    /// The source provider.
    pub from: ProviderId,
    /// Its shard (where the entries' PHN claims may point).
    pub from_shard: ShardKey,
    /// The receiving provider.
    pub to: ProviderId,
    /// The clinic they move to.
    pub facility: FacilityNumber,
    /// The entries, as the source panel holds them.
    pub entries: Vec<crate::domain::PanelEntry>,
}

/// What the receiving shard did with a chunk of a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferAccepted {
    /// PHNs now on the receiving panel (newly or already): drop them from the source.
    pub moved: Vec<Phn>,
    /// PHNs held by someone else entirely: the source's entry was stale; drop it too.
    pub skipped: Vec<Phn>,
}

#[cfg(test)]
mod tests {
    use super::RowStatus;

    #[test]
    fn row_statuses_parse_back_from_their_names() {
        for status in RowStatus::ALL {
            assert_eq!(RowStatus::parse(status.name()), Some(status));
        }
        assert_eq!(RowStatus::parse("accepted"), None);
    }
}

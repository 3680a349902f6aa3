//! The provider side: panel submission (a CSV file by multipart upload),
//! removal, clinic membership, whole-panel transfers and panel reports.

use std::io::Read;

use async_graphql::{Context, Enum, ID, Object, SimpleObject, Upload};
use attach_actors::access::Operation;
use attach_actors::domain::{self as d, Timestamp};
use attach_actors::error::{AttachError, ErrorCode};
use attach_actors::panel::{self as p, csv};
use chrono::{DateTime, Utc};

use super::ApiLimits;
use super::error::GqlResult;
use super::query::{caller, system};
use super::types::Provider;

/// What became of one row of a submitted panel file.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "attach_actors::panel::RowStatus")]
pub enum PanelRowStatus {
    /// Added to the panel.
    Accepted,
    /// The patient was waiting on the registry: added, and they left the waitlist.
    AttachedFromWaitlist,
    /// Already on this panel: nothing changed, except that a matched patient
    /// without a clinic is filed at the clinic of the list (the row's message says so).
    AlreadyOnPanel,
    /// Not a valid PHN.
    InvalidPhn,
    /// Not a panel row (fields, name, date, service code, facility, quoting).
    Malformed,
    /// The PHN appeared on an earlier row of the file.
    Duplicate,
    /// The patient is held elsewhere (another panel, an open proposal, a move
    /// under way), or waits with another date of birth than the row gives
    /// (most likely a mistyped PHN); nothing moved.
    Conflict,
}

/// One row's outcome. Never shows the row's values.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PanelRowReport {
    /// The line of the file the row starts on.
    pub line: u32,
    /// What became of it.
    pub status: PanelRowStatus,
    /// Why, when it was not taken.
    pub message: Option<String>,
}

/// The answer to a panel submission: counts and one report per patient row.
pub struct PanelSubmission(p::SubmissionReport);

#[Object]
impl PanelSubmission {
    /// Per row, by line. `problemsOnly` leaves out rows now on the panel.
    async fn rows(&self, #[graphql(default)] problems_only: bool) -> Vec<PanelRowReport> {
        self.0
            .rows
            .iter()
            .filter(|r| !problems_only || !r.status.on_panel())
            .map(|r| PanelRowReport { line: r.line, status: r.status.into(), message: r.message.clone() })
            .collect()
    }

    /// Patient rows in the file.
    async fn total_rows(&self) -> usize {
        self.0.rows.len()
    }

    /// Rows added to the panel whose patient was not waiting (`ACCEPTED`);
    /// those who left the waitlist for it are `attachedFromWaitlist`.
    async fn accepted(&self) -> usize {
        self.0.count(p::RowStatus::Accepted)
    }

    /// Rows added whose patient left the waitlist.
    async fn attached_from_waitlist(&self) -> usize {
        self.0.count(p::RowStatus::AttachedFromWaitlist)
    }

    /// Rows already on this panel.
    async fn already_on_panel(&self) -> usize {
        self.0.count(p::RowStatus::AlreadyOnPanel)
    }

    /// Rows with an invalid PHN.
    async fn invalid_phn(&self) -> usize {
        self.0.count(p::RowStatus::InvalidPhn)
    }

    /// Malformed rows.
    async fn malformed(&self) -> usize {
        self.0.count(p::RowStatus::Malformed)
    }

    /// Rows repeating an earlier row's PHN.
    async fn duplicate(&self) -> usize {
        self.0.count(p::RowStatus::Duplicate)
    }

    /// Rows refused as `CONFLICT`: the patient is held elsewhere, or waits with another date of birth.
    async fn conflict(&self) -> usize {
        self.0.count(p::RowStatus::Conflict)
    }

    /// Whether a header row was recognised and skipped.
    async fn header_skipped(&self) -> bool {
        self.0.header
    }

    /// The panel size after the submission (reported plus itemised).
    async fn panel_size(&self) -> u32 {
        self.0.panel_size
    }
}

/// The answer to a removal.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PanelRemoval {
    /// Patients taken off the panel.
    pub removed: u32,
    /// PHNs given that were not on the panel.
    pub not_on_panel: u32,
}

/// Where a transfer stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum TransferStatus {
    /// Moving patients (resumed by asking for the same idempotency key again).
    Running,
    /// Every patient has been moved.
    Completed,
    /// Asked for by a medical director, waiting for both providers to agree
    /// (`answerPanelTransfer`); no patient moves until they have.
    AwaitingAgreement,
    /// Declined by one of the providers or withdrawn by a medical director
    /// before it ran, or stopped while it ran because the receiver left the
    /// clinic: the patients moved by then (`moved`) stay with the receiver.
    Cancelled,
}

impl From<d::TransferStatus> for TransferStatus {
    fn from(s: d::TransferStatus) -> Self {
        match s {
            d::TransferStatus::Running => TransferStatus::Running,
            d::TransferStatus::Completed => TransferStatus::Completed,
            d::TransferStatus::Awaiting { .. } => TransferStatus::AwaitingAgreement,
            d::TransferStatus::Cancelled => TransferStatus::Cancelled,
        }
    }
}

/// A whole-panel transfer from one provider to another.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PanelTransfer {
    /// The idempotency key it was started with.
    pub idempotency_key: String,
    /// The provider whose panel moves.
    pub from_provider_id: ID,
    /// The provider receiving it.
    pub to_provider_id: ID,
    /// The clinic it moves to.
    pub facility_number: String,
    /// Where it stands.
    pub status: TransferStatus,
    /// Whether the provider whose panel moves has agreed (true once it runs,
    /// false once it is cancelled).
    pub source_agreed: bool,
    /// Whether the provider taking the panel on has agreed (true once it runs,
    /// false once it is cancelled).
    pub receiver_agreed: bool,
    /// Patients to move: those on the source panel when it started running
    /// (while it awaits agreement: when it was asked for), and once it runs,
    /// those moved or skipped so far and those still on the source panel
    /// (patients who join or leave it meanwhile count or stop counting).
    pub total: u32,
    /// Patients moved so far.
    pub moved: u32,
    /// Stale source entries dropped (the patient was held elsewhere).
    pub skipped: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Last progress.
    pub updated_at: DateTime<Utc>,
}

impl From<d::PanelTransfer> for PanelTransfer {
    fn from(t: d::PanelTransfer) -> Self {
        let (source_agreed, receiver_agreed) = match t.status {
            d::TransferStatus::Running | d::TransferStatus::Completed => (true, true),
            d::TransferStatus::Awaiting { source, receiver } => (source, receiver),
            d::TransferStatus::Cancelled => (false, false),
        };
        PanelTransfer {
            idempotency_key: t.key.to_string(),
            from_provider_id: ID(t.from.to_string()),
            to_provider_id: ID(t.to.to_string()),
            facility_number: t.facility.to_string(),
            status: t.status.into(),
            source_agreed,
            receiver_agreed,
            total: t.total,
            moved: t.moved,
            skipped: t.skipped,
            started_at: t.started_at.to_utc(),
            updated_at: t.updated_at.to_utc(),
        }
    }
}

/// A panel as payment models count it.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PanelReport {
    /// The provider (null on a clinic's total).
    pub provider_id: Option<ID>,
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
    /// Itemised patients whose needs are known (attached off the waitlist).
    pub complexity_known: u32,
    /// Of those, patients with a complex need.
    pub complex: u32,
    /// In a clinic's report: this provider's patients not counted for the clinic
    /// (on the panel at another clinic, or without a clinic for a provider at
    /// several). 0 in a provider's own report.
    pub not_at_clinic: u32,
}

impl From<p::PanelReport> for PanelReport {
    fn from(r: p::PanelReport) -> Self {
        PanelReport {
            provider_id: r.provider.map(|p| ID(p.to_string())),
            panel_size: r.panel_size,
            reported: r.reported,
            itemised: r.itemised,
            children: r.children,
            adults: r.adults,
            seniors: r.seniors,
            complexity_known: r.complexity_known,
            complex: r.complex,
            not_at_clinic: r.not_at_clinic,
        }
    }
}

/// The panels of a clinic's providers.
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct ClinicPanelReport {
    /// The clinic.
    pub facility_number: String,
    /// Each provider listed at the clinic: the part of their panel at this clinic.
    pub providers: Vec<PanelReport>,
    /// The sum over those providers.
    pub total: PanelReport,
}

fn provider_id(id: &str, field: &str) -> async_graphql::Result<d::ProviderId> {
    d::ProviderId::parse(id).map_err(|e| d::DomainError { field: field.into(), ..e }).gql()
}

fn facility(number: &str) -> async_graphql::Result<d::FacilityNumber> {
    d::FacilityNumber::parse(number).gql()
}

fn invalid_file(message: impl Into<String>) -> AttachError {
    AttachError { field: Some("file".into()), ..AttachError::new(ErrorCode::InvalidInput, message) }
}

/// Reads an upload, refusing one larger than the panel limit before reading it.
fn read_upload(ctx: &Context<'_>, file: &Upload, limits: csv::Limits) -> Result<Vec<u8>, AttachError> {
    let value = file.value(ctx).map_err(|_| invalid_file("the uploaded file could not be read"))?;
    let size = value.size().map_err(|_| invalid_file("the uploaded file could not be read"))?;
    if size > limits.max_bytes as u64 {
        return Err(invalid_file(csv::FileError::TooLarge { limit: limits.max_bytes }.to_string()));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    value
        .into_read()
        .take(limits.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| invalid_file("the uploaded file could not be read"))?;
    Ok(bytes)
}

/// Provider-side mutations.
#[derive(Default)]
pub struct PanelMutation;

#[Object]
impl PanelMutation {
    /// Submits a provider's panel list for a clinic, as an EMR or billing export
    /// gives it: a CSV file (multipart upload) of rows `PHN, surname, given name,
    /// date of birth, 98990, facility number`. Every row is reported on; patients
    /// held by another panel are conflicts, never moved. Submitting the same file
    /// again changes nothing.
    async fn submit_panel(
        &self,
        ctx: &Context<'_>,
        provider_id: ID,
        facility_number: String,
        file: Upload,
    ) -> async_graphql::Result<PanelSubmission> {
        let provider = provider_id_arg(&provider_id)?;
        let facility = facility(&facility_number)?;
        // The role's gate before the file is read: a caller who may not submit
        // is told so without the server parsing their upload, and audited as
        // any refused submission is.
        if let Err(e) = caller(ctx).require(Operation::SubmitPanel, None) {
            return Err(system(ctx).refuse_panel_file(caller(ctx), &provider, e).await).gql();
        }
        let limits = ctx.data_unchecked::<ApiLimits>().panel;
        let bytes = match read_upload(ctx, &file, limits) {
            Ok(bytes) => bytes,
            Err(e) => return Err(system(ctx).refuse_panel_file(caller(ctx), &provider, e).await).gql(),
        };
        let today = Timestamp::now().to_utc().date_naive();
        let parsed = match csv::parse(&bytes, &facility, limits, today) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Err(system(ctx).refuse_panel_file(caller(ctx), &provider, invalid_file(e.to_string())).await)
                    .gql();
            }
        };
        system(ctx).submit_panel(caller(ctx), &provider, &facility, parsed).await.gql().map(PanelSubmission)
    }

    /// Takes patients off a provider's panel (by PHN, at most 1000 at a time)
    /// and frees them to register or join another panel.
    async fn remove_from_panel(
        &self,
        ctx: &Context<'_>,
        provider_id: ID,
        phns: Vec<String>,
    ) -> async_graphql::Result<PanelRemoval> {
        let provider = provider_id_arg(&provider_id)?;
        if phns.is_empty() || phns.len() > 1000 {
            return Err(AttachError {
                field: Some("phns".into()),
                ..AttachError::new(ErrorCode::InvalidInput, "give 1 to 1000 PHNs")
            })
            .gql();
        }
        // A patient listed twice is removed, and counted, once.
        let phns = super::inputs::parse_distinct(&phns, "phns", d::Phn::parse).gql()?;
        let present = system(ctx).remove_from_panel(caller(ctx), &provider, phns).await.gql()?;
        let removed = present.iter().filter(|p| **p).count() as u32;
        Ok(PanelRemoval { removed, not_on_panel: present.len() as u32 - removed })
    }

    /// Lists a provider at a clinic (the clinic's medical director keeps the list).
    async fn add_provider_to_clinic(
        &self,
        ctx: &Context<'_>,
        facility_number: String,
        provider_id: ID,
    ) -> async_graphql::Result<Provider> {
        let (f, id) = (facility(&facility_number)?, provider_id_arg(&provider_id)?);
        system(ctx).set_provider_clinic(caller(ctx), &f, &id, true).await.gql().map(Into::into)
    }

    /// Takes a provider off a clinic's list. Their panel stays theirs until it is
    /// transferred or they remove patients.
    async fn remove_provider_from_clinic(
        &self,
        ctx: &Context<'_>,
        facility_number: String,
        provider_id: ID,
    ) -> async_graphql::Result<Provider> {
        let (f, id) = (facility(&facility_number)?, provider_id_arg(&provider_id)?);
        system(ctx).set_provider_clinic(caller(ctx), &f, &id, false).await.gql().map(Into::into)
    }

    /// Asks for a provider's whole panel to move to another provider at a clinic
    /// (the clinic's medical director; both providers must be listed there).
    /// It waits for both providers to agree (`answerPanelTransfer`; a director
    /// who is one of them agrees by asking), then moves the patients one by one,
    /// in the background; read its progress with `panelTransfer`. Asking again
    /// with the same idempotency key resumes a transfer that stopped (a
    /// restart) and never moves anyone twice.
    async fn transfer_panel(
        &self,
        ctx: &Context<'_>,
        from_provider_id: ID,
        to_provider_id: ID,
        facility_number: String,
        idempotency_key: String,
    ) -> async_graphql::Result<PanelTransfer> {
        let from = provider_id(&from_provider_id, "fromProviderId")?;
        let to = provider_id(&to_provider_id, "toProviderId")?;
        let f = facility(&facility_number)?;
        let key = d::TransferKey::parse_new(&idempotency_key).gql()?;
        let system = system(ctx);
        let t = system.begin_transfer(caller(ctx), key, &from, &to, &f).await.gql()?;
        if t.status == d::TransferStatus::Running {
            system.spawn_transfer(t.from.clone(), t.key.clone());
        }
        Ok(t.into())
    }

    /// One of a transfer's two providers agrees to it (`agree: true`) or
    /// declines it (`false`, which cancels it); a medical director of its
    /// clinic who is neither may withdraw it (`false`) before it runs. Once
    /// both providers have agreed it starts moving patients; an agreement
    /// while either provider is no longer listed at the clinic is a
    /// `CONFLICT`. Agreeing again, or withdrawing again, changes nothing;
    /// declining or withdrawing a transfer that runs or finished, and agreeing
    /// to a cancelled one, is a `CONFLICT`.
    async fn answer_panel_transfer(
        &self,
        ctx: &Context<'_>,
        from_provider_id: ID,
        idempotency_key: String,
        agree: bool,
    ) -> async_graphql::Result<PanelTransfer> {
        let from = provider_id(&from_provider_id, "fromProviderId")?;
        let key = d::TransferKey::parse(&idempotency_key).gql()?;
        let system = system(ctx);
        let t = system.answer_transfer(caller(ctx), &from, &key, agree).await.gql()?;
        if t.status == d::TransferStatus::Running {
            system.spawn_transfer(t.from.clone(), t.key.clone());
        }
        Ok(t.into())
    }
}

fn provider_id_arg(id: &str) -> async_graphql::Result<d::ProviderId> {
    provider_id(id, "providerId")
}

/// Provider-side reads.
#[derive(Default)]
pub struct PanelQuery;

#[Object]
impl PanelQuery {
    /// A provider's panel size and mix.
    async fn panel_report(&self, ctx: &Context<'_>, provider_id: ID) -> async_graphql::Result<PanelReport> {
        let id = provider_id_arg(&provider_id)?;
        system(ctx).panel_report(caller(ctx), &id).await.gql().map(Into::into)
    }

    /// The panels of every provider listed at a clinic, and their sum.
    async fn clinic_panel_report(
        &self,
        ctx: &Context<'_>,
        facility_number: String,
    ) -> async_graphql::Result<ClinicPanelReport> {
        let f = facility(&facility_number)?;
        let reports = system(ctx).clinic_panel_reports(caller(ctx), &f).await.gql()?;
        let mut total = p::PanelReport::default();
        reports.iter().for_each(|r| total.add(r));
        Ok(ClinicPanelReport {
            facility_number: f.to_string(),
            providers: reports.into_iter().map(Into::into).collect(),
            total: total.into(),
        })
    }

    /// Every panel transfer in which a provider is either side, newest first: a
    /// provider finds here the transfers awaiting their answer
    /// (`AWAITING_AGREEMENT`). For the provider themselves, support within their
    /// scope (transfers kept in their communities, of a provider homed there) and operations.
    async fn panel_transfers(&self, ctx: &Context<'_>, provider_id: ID) -> async_graphql::Result<Vec<PanelTransfer>> {
        let id = provider_id_arg(&provider_id)?;
        let list = system(ctx).panel_transfers(caller(ctx), &id).await.gql()?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// A panel transfer, by its source provider and idempotency key.
    async fn panel_transfer(
        &self,
        ctx: &Context<'_>,
        from_provider_id: ID,
        idempotency_key: String,
    ) -> async_graphql::Result<PanelTransfer> {
        let from = provider_id(&from_provider_id, "fromProviderId")?;
        let key = d::TransferKey::parse(&idempotency_key).gql()?;
        system(ctx).panel_transfer(caller(ctx), &from, &key).await.gql().map(Into::into)
    }
}

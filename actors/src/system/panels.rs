//! The provider side across shards: panel submission (with waiting patients
//! leaving the waitlist in their own community's shard), removal, clinic
//! membership, whole-panel transfers and panel reports.
//!
//! Who may do what: a provider (or their endorsed delegate) submits to and
//! removes from their own panel, checked by the provider's shard against its
//! endorsements; a medical director changes who practises at, and transfers
//! panels to, only the clinics they direct, checked against the clinic's
//! registry entry. Every change is audited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::{info, warn};

use crate::access::{Operation, Principal, Role};
use crate::domain::{Clinic, FacilityNumber, PanelTransfer, Phn, ProviderId, RegistrationRef, ShardKey, TransferKey};
use crate::error::{AttachError, ErrorCode};
use crate::panel::{
    PanelChunk, PanelReport, ParsedPanel, Release, RowReport, RowStatus, SubmissionReport, SubmittedRow,
    TransferAccepted, TransferAnswer, TransferRequest, Transferring,
};
use crate::shard::{ProviderView, ShardMsg};
use crate::store::Locator;

use super::{AttachSystem, Trail};

/// Rounds in a row a transfer may make no progress (every patient changed
/// under it) before it stops and reports; it can be resumed by its key.
const MAX_STALLS: u32 = 20;

impl AttachSystem {
    /// A clinic's registry entry, for checks made on the caller's behalf
    /// (on the node running its community, when that is another).
    pub(super) async fn clinic_record(&self, facility: &FacilityNumber) -> Result<Clinic, AttachError> {
        let shard = self.locate(Locator::Clinic(facility.clone()), "clinic").await?;
        self.clinic_at(&shard, facility.clone()).await
    }

    /// A provider, for checks made on the caller's behalf (on the node running
    /// their community, when that is another).
    pub(super) async fn provider_record(&self, id: &ProviderId) -> Result<ProviderView, AttachError> {
        let shard = self.locate(Locator::Provider(id.clone()), "provider").await?;
        self.provider_at(&shard, id.clone()).await
    }

    /// `FORBIDDEN` unless the caller directs `facility` (decided by the clinic's
    /// registry entry), or is Attach itself.
    async fn require_director(&self, who: &Principal, facility: &FacilityNumber) -> Result<Clinic, AttachError> {
        let clinic = self.clinic_record(facility).await?;
        let directs = who.role() == Role::MedicalDirector
            && who.provider().is_some_and(|me| clinic.medical_director.as_ref() == Some(me));
        if directs || who.role() == Role::Internal {
            Ok(clinic)
        } else {
            Err(AttachError::new(
                ErrorCode::Forbidden,
                format!("you are not the medical director of clinic {facility}"),
            ))
        }
    }

    /// Whether `who` may make `input` of a provider's registry entry, `current`
    /// being the entry as it is (`None` for a new provider). Who may act at all
    /// (the role, a provider only on their own entry) is checked before.
    ///
    /// - A medical director changes another provider's existing entry only
    ///   when every clinic that provider is listed at is one they direct.
    /// - The clinics an entry lists change only as each clinic's medical
    ///   director would change them (`addProviderToClinic`): every clinic added
    ///   or taken off must be one the caller directs, so nobody lists
    ///   themselves at someone else's clinic, or at one that does not exist.
    pub(super) async fn may_change_provider(
        &self,
        who: &Principal,
        input: &crate::shard::ProviderInput,
        current: Option<&crate::domain::Provider>,
    ) -> Result<(), AttachError> {
        let listed: &[FacilityNumber] = current.map_or(&[], |p| &p.clinics);
        if who.role() == Role::MedicalDirector && current.is_some() && who.provider() != Some(&input.id) {
            // Every clinic, not one: a listing needs no agreement, so a director
            // who could keep the entry of anyone listed at one of their clinics
            // could list any provider, rewrite them, and take them off again.
            let mut directs_all = !listed.is_empty();
            for facility in listed {
                match self.require_director(who, facility).await {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::Forbidden => {
                        directs_all = false;
                        break;
                    }
                    // A clinic not found or not reachable says nothing of who directs it.
                    Err(e) => return Err(e),
                }
            }
            if !directs_all {
                return Err(AttachError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "provider {} practises at a clinic you do not direct, or at none: a medical director keeps \
                         the registry entries of providers who practise only at clinics they direct; the provider \
                         changes their own",
                        input.id
                    ),
                ));
            }
        }
        let Some(clinics) = &input.clinics else { return Ok(()) };
        let added = clinics.iter().enumerate().filter(|(_, f)| !listed.contains(f));
        let removed = listed.iter().filter(|f| !clinics.contains(f)).map(|f| (None, f));
        for (index, facility) in added.map(|(i, f)| (Some(i), f)).chain(removed) {
            self.require_director(who, facility).await.map_err(|e| AttachError {
                field: Some(index.map_or_else(|| "clinics".to_string(), |i| format!("clinics[{i}]"))),
                message: match e.code {
                    ErrorCode::Forbidden => format!(
                        "{}; only a clinic's medical director lists providers there or takes them off \
                         (addProviderToClinic, removeProviderFromClinic)",
                        e.message
                    ),
                    _ => format!("clinic {facility}: {}", e.message),
                },
                ..e
            })?;
        }
        Ok(())
    }

    /// Submits a parsed panel file for `provider` at `facility`: every valid row
    /// is added to the panel, a chunk at a time, each chunk durable before the
    /// next; waiting patients leave the waitlist. Answers one report per row.
    ///
    /// If it fails part way (a shard overloaded, a restart), the chunks already
    /// answered stay done; submitting the same file again finishes the rest and
    /// reports the done rows as already on the panel.
    pub async fn submit_panel(
        &self,
        who: &Principal,
        provider: &ProviderId,
        facility: &FacilityNumber,
        parsed: ParsedPanel,
    ) -> Result<SubmissionReport, AttachError> {
        let mut trail = Trail::new(who, Operation::SubmitPanel).about(provider);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            self.clinic_record(facility).await?;
            let mut report = SubmissionReport { header: parsed.header, ..SubmissionReport::default() };
            let mut valid = Vec::with_capacity(parsed.rows.len());
            for r in parsed.rows {
                match r.row {
                    Ok(row) => valid.push(SubmittedRow { line: r.line, row, from_waitlist: None }),
                    Err(problem) => report.rows.push(RowReport::of_problem(r.line, &problem)),
                }
            }
            // One step at least, with no valid row too: the provider's shard decides
            // whether the caller may change this panel, whatever the file holds.
            let mut chunks: Vec<&[SubmittedRow]> = valid.chunks(self.config.panel_chunk_rows.max(1)).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            let mut added = 0;
            for chunk in chunks {
                let rows = match self.submit_chunk(&mut trail, &shard, provider, facility, chunk.to_vec()).await {
                    Ok(rows) => rows,
                    // The chunks before stay applied: say so, or the caller would think nothing was.
                    Err(mut e) if added > 0 => {
                        e.message = format!(
                            "{}; {added} patients of the file were added to the panel before this and stay there \
                             (submitting the file again reports them ALREADY_ON_PANEL)",
                            e.message
                        );
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                added += rows
                    .iter()
                    .filter(|r| matches!(r.status, RowStatus::Accepted | RowStatus::AttachedFromWaitlist))
                    .count();
                report.rows.extend(rows);
            }
            report.rows.sort_by_key(|r| r.line);
            report.panel_size = self.provider_record(provider).await?.panel_size;
            info!(
                provider = %provider,
                rows = report.rows.len(),
                // As the answer counts them: added, not already there.
                added = report.rows.iter().filter(|r| matches!(r.status, RowStatus::Accepted | RowStatus::AttachedFromWaitlist)).count(),
                on_panel = report.rows.iter().filter(|r| r.status.on_panel()).count(),
                "panel submitted"
            );
            Ok(report)
        }
        .await;
        self.audited(trail, result).await
    }

    /// Finishes, in each shard this node runs, the panel submissions cut off
    /// between finding waiting patients and saving their entries (DECISIONS
    /// 44), found before `before` (and the claim grace). Each patient goes on
    /// as the submission would have: on to the panel if their registration let
    /// them go or lets them go now; nowhere (the intake dropped) if it refuses
    /// or someone else holds them. Answers the patients attached.
    pub async fn finish_intakes_everywhere(&self, before: crate::domain::Timestamp) -> usize {
        let who = Principal::internal("panel-pass");
        let mut attached = 0;
        for shard in self.shards_here() {
            let stale = match self.directory.call(&shard, |reply| ShardMsg::StaleIntakes(before, reply)).await {
                Ok(stale) if !stale.is_empty() => stale,
                Ok(_) => continue,
                Err(e) => {
                    warn!(shard = %shard, error = %e, "could not read the intakes of cut-off panel submissions yet");
                    continue;
                }
            };
            let (mut take, mut forget) = (Vec::new(), Vec::new());
            for intake in stale {
                match self.goes_to_panel(&who, &shard, &intake).await {
                    Ok(true) => take.push(intake),
                    Ok(false) => forget.push((intake.provider, intake.phn)),
                    // Left for the next pass.
                    Err(e) => warn!(shard = %shard, error = %e, "could not finish a cut-off panel submission yet"),
                }
            }
            match self.directory.call(&shard, |reply| ShardMsg::SettleIntakes { take, forget, reply }).await {
                Ok(n) => attached += n,
                Err(e) => warn!(shard = %shard, error = %e, "could not finish a cut-off panel submission yet"),
            }
        }
        attached
    }

    /// Whether a cut-off submission's patient goes on to the panel: their
    /// claim passed to it, their registration let them go for it, or, still
    /// waiting, it lets them go now (the step the crash cut off).
    async fn goes_to_panel(
        &self,
        who: &Principal,
        shard: &ShardKey,
        intake: &crate::domain::PanelIntake,
    ) -> Result<bool, AttachError> {
        use crate::store::{PhnHolder, Record, RecordKey};
        match self.store.phn_claim(intake.phn).await?.map(|c| c.holder) {
            Some(PhnHolder::PanelFrom(p, r)) if p == intake.provider && r == intake.reference => return Ok(true),
            Some(PhnHolder::Registration(r)) if r == intake.reference => {}
            _ => return Ok(false),
        }
        let reg_shard = self.locate(Locator::Registration(intake.reference), "registration").await?;
        let record = self.store.read(&reg_shard, &RecordKey::Registration(intake.reference)).await?;
        if let Some(Record::Registration(reg)) = record
            && reg.status == crate::domain::RegistrationStatus::Attached
        {
            // Let go (the whole household) before the claim passed on: the panel's step takes it over.
            return Ok(
                reg.is_attached_to(&intake.provider) && reg.household.members.iter().any(|m| m.phn == intake.phn)
            );
        }
        let release = Release {
            reference: intake.reference,
            phns: vec![intake.phn],
            provider: intake.provider.clone(),
            provider_shard: shard.clone(),
        };
        let mut trail = Trail::new(who, Operation::SubmitPanel).about(&intake.provider);
        let draft = trail.step(Some(reg_shard.clone()), Some(intake.reference.to_string()));
        let born = vec![(intake.phn, intake.date_of_birth)];
        let released = self.release_to_panel(&reg_shard, release, born, draft).await?;
        Ok(released.iter().any(|(phn, why)| *phn == intake.phn && why.is_none()))
    }

    /// The answer to a panel file refused whole (`file_error`: empty, too large,
    /// too many rows): `FORBIDDEN` first if the caller may not change the
    /// provider's panel, so the answer does not depend on the file. Audited.
    pub async fn refuse_panel_file(
        &self,
        who: &Principal,
        provider: &ProviderId,
        file_error: AttachError,
    ) -> AttachError {
        let mut trail = Trail::new(who, Operation::SubmitPanel).about(provider);
        let result: Result<(), AttachError> = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            let (provider, who) = (provider.clone(), who.clone());
            self.directory.call(&shard, |reply| ShardMsg::MayChangePanel(provider, who, reply)).await?;
            Err(file_error)
        }
        .await;
        self.audited(trail, result).await.err().unwrap_or_else(|| AttachError::internal("a refused file was taken"))
    }

    /// One chunk of a submission. Each step that changes something (the
    /// chunk's panel entries, a registration letting members go) commits its
    /// own audit record with the change, so a crash part way through leaves a
    /// record of every step that landed.
    async fn submit_chunk(
        &self,
        trail: &mut Trail<'_>,
        shard: &ShardKey,
        provider: &ProviderId,
        facility: &FacilityNumber,
        rows: Vec<SubmittedRow>,
    ) -> Result<Vec<RowReport>, AttachError> {
        let who = trail.who;
        let chunk = PanelChunk { provider: provider.clone(), facility: facility.clone(), rows };
        let draft = trail.step(Some(shard.clone()), Some(provider.to_string()));
        let answer =
            self.directory.call_audited(shard, draft, |r| ShardMsg::SubmitPanel(chunk, who.clone(), r)).await?;
        let mut out = answer.rows;
        // Waiting patients: their registration's shard lets them go (step one),
        // then the panel takes them (step two).
        let mut by_registration: BTreeMap<RegistrationRef, (ShardKey, Vec<SubmittedRow>)> = BTreeMap::new();
        for w in answer.waitlisted {
            by_registration.entry(w.reference).or_insert_with(|| (w.shard.clone(), Vec::new())).1.push(w.row);
        }
        let mut second = Vec::new();
        let mut refused = Vec::new();
        for (reference, (reg_shard, rows)) in by_registration {
            let release = Release {
                reference,
                phns: rows.iter().map(|r| r.row.phn).collect(),
                provider: provider.clone(),
                provider_shard: shard.clone(),
            };
            let born = rows.iter().map(|r| (r.row.phn, r.row.date_of_birth)).collect();
            let draft = trail.step(Some(reg_shard.clone()), Some(reference.to_string()));
            let released = self.release_to_panel(&reg_shard, release, born, draft).await?;
            for row in rows {
                let why = match released.iter().find(|(phn, _)| *phn == row.row.phn) {
                    Some((_, None)) => {
                        second.push(SubmittedRow { from_waitlist: Some(reference), ..row });
                        continue;
                    }
                    Some((_, Some(why))) => why.as_str(),
                    None => "the patient could not be moved",
                };
                refused.push((provider.clone(), row.row.phn));
                out.push(RowReport::because(row.line, RowStatus::Conflict, why));
            }
        }
        // A row told CONFLICT is not taken later by the pass that finishes cut-off submissions.
        if !refused.is_empty() {
            let forget = |reply| ShardMsg::SettleIntakes { take: Vec::new(), forget: refused, reply };
            if let Err(e) = self.directory.call(shard, forget).await {
                warn!(error = %e, provider = %provider, "could not drop the intakes of rows refused");
            }
        }
        if !second.is_empty() {
            let chunk = PanelChunk { provider: provider.clone(), facility: facility.clone(), rows: second };
            let draft = trail.step(Some(shard.clone()), Some(provider.to_string()));
            let answer =
                self.directory.call_audited(shard, draft, |r| ShardMsg::SubmitPanel(chunk, who.clone(), r)).await?;
            out.extend(answer.rows);
            out.extend(answer.waitlisted.into_iter().map(|w| {
                RowReport::because(w.row.line, RowStatus::Conflict, "the patient is being moved; submit again")
            }));
        }
        Ok(out)
    }

    /// Removes patients from a provider's panel; per PHN, whether it was there.
    pub async fn remove_from_panel(
        &self,
        who: &Principal,
        provider: &ProviderId,
        phns: Vec<Phn>,
    ) -> Result<Vec<bool>, AttachError> {
        let mut trail = Trail::new(who, Operation::RemoveFromPanel).about(provider);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            let (provider, who) = (provider.clone(), who.clone());
            self.directory
                .call_audited(&shard, trail.draft(), |reply| ShardMsg::RemoveFromPanel { provider, phns, who, reply })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Lists a provider at a clinic (`present`) or takes them off it: the
    /// clinic's medical director. Their panel stays theirs until it is
    /// transferred or they remove patients.
    pub async fn set_provider_clinic(
        &self,
        who: &Principal,
        facility: &FacilityNumber,
        provider: &ProviderId,
        present: bool,
    ) -> Result<ProviderView, AttachError> {
        // As staff-list changes are: the clinic, then who (here the provider).
        let op = if present { Operation::ListProviderAtClinic } else { Operation::UnlistProviderAtClinic };
        let mut trail = Trail::new(who, op).about(&format!("{facility}/{provider}"));
        let result = async {
            who.require(trail.op, None)?;
            self.require_director(who, facility).await?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            let (provider, facility) = (provider.clone(), facility.clone());
            let draft = trail.draft();
            self.directory
                .call_audited(&shard, draft, |reply| ShardMsg::SetProviderClinic { provider, facility, present, reply })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Asks for `from`'s whole panel to move to `to` at `facility`, or finds the
    /// transfer already asked for with this key. It runs once both providers
    /// have agreed ([`answer_transfer`](Self::answer_transfer)); a director who
    /// is one of them agrees by asking. The moving itself is
    /// [`run_transfer`](Self::run_transfer).
    pub async fn begin_transfer(
        &self,
        who: &Principal,
        key: TransferKey,
        from: &ProviderId,
        to: &ProviderId,
        facility: &FacilityNumber,
    ) -> Result<PanelTransfer, AttachError> {
        let mut trail = Trail::new(who, Operation::TransferPanel).about(from);
        let result = async {
            who.require(trail.op, None)?;
            self.require_director(who, facility).await?;
            let from_shard = trail.at(self.locate(Locator::Provider(from.clone()), "provider").await?);
            let to_shard = self.locate(Locator::Provider(to.clone()), "provider").await?;
            // Between two of the clinic's providers: a director cannot take in another clinic's panel.
            if !self.listed_at(from, facility).await? {
                return Err(AttachError::conflict(format!(
                    "provider {from} is not listed at clinic {facility}; a panel moves between providers of one clinic"
                )));
            }
            if !self.listed_at(to, facility).await? {
                return Err(AttachError::conflict(format!(
                    "provider {to} is not listed at clinic {facility}; the clinic's medical director adds them first"
                )));
            }
            let req = TransferRequest {
                key,
                from: from.clone(),
                to: to.clone(),
                to_shard,
                facility: facility.clone(),
                // Attach itself (a command-line tool) acts for the province, not for a director.
                source_agreed: who.is_provider(from) || who.role() == Role::Internal,
                receiver_agreed: who.is_provider(to) || who.role() == Role::Internal,
            };
            self.directory.call_audited(&from_shard, trail.draft(), |r| ShardMsg::BeginTransfer(req, r)).await
        }
        .await;
        self.audited(trail, result).await
    }

    /// One of a transfer's providers agrees to it (`agree`) or declines it; a
    /// medical director of its clinic who is neither may withdraw it before it
    /// runs (`agree` false). Answers the transfer as it now stands: `RUNNING` once both
    /// providers have agreed (the caller then starts the runner).
    pub async fn answer_transfer(
        &self,
        who: &Principal,
        from: &ProviderId,
        key: &TransferKey,
        agree: bool,
    ) -> Result<PanelTransfer, AttachError> {
        let mut trail = Trail::new(who, Operation::AnswerPanelTransfer).about(from);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(from.clone()), "provider").await?);
            let t = self.transfer_at(&shard, from, key).await?;
            let answer = match who.provider().filter(|p| who.is_provider(p)).and_then(|p| t.side(p)) {
                Some(side) => TransferAnswer::Provider(side, agree),
                None if !agree => {
                    self.require_director(who, &t.facility).await.map_err(|_| {
                        AttachError::new(
                            ErrorCode::Forbidden,
                            "only the transfer's two providers answer it, and a director of its clinic withdraws it",
                        )
                    })?;
                    TransferAnswer::Withdraw
                }
                None => {
                    return Err(AttachError::new(
                        ErrorCode::Forbidden,
                        "only the provider whose panel moves and the provider taking it on agree to a transfer",
                    ));
                }
            };
            // A panel moves between two of the clinic's providers (checked when it was
            // asked for, again while it waits: the director may have taken one off meanwhile).
            if agree && matches!(t.status, crate::domain::TransferStatus::Awaiting { .. }) {
                for id in [&t.from, &t.to] {
                    if !self.listed_at(id, &t.facility).await? {
                        return Err(AttachError::conflict(format!(
                            "provider {id} is no longer listed at clinic {}; its medical director lists them \
                             again or withdraws the transfer",
                            t.facility
                        )));
                    }
                }
            }
            let (from, key) = (from.clone(), key.clone());
            self.directory
                .call_audited(&shard, trail.draft(), |reply| ShardMsg::AnswerTransfer { from, key, answer, reply })
                .await
        }
        .await;
        self.audited(trail, result).await
    }

    /// Moves a transfer's patients, a chunk at a time, until the source panel
    /// is empty. Each patient moves in two durable steps (claim and entry on
    /// the receiving panel, then the source entry dropped), so stopping
    /// anywhere (a crash) and running again neither loses nor duplicates anyone.
    pub async fn run_transfer(&self, from: &ProviderId, key: &TransferKey) -> Result<PanelTransfer, AttachError> {
        let from_shard = self.locate(Locator::Provider(from.clone()), "provider").await?;
        let limit = self.config.transfer_chunk.max(1);
        let mut stalls = 0;
        loop {
            let (from_, key_) = (from.clone(), key.clone());
            let (t, entries) = self
                .directory
                .call(&from_shard, |reply| ShardMsg::TransferBatch { from: from_, key: key_, limit, reply })
                .await?;
            if t.status != crate::domain::TransferStatus::Running {
                return Ok(t);
            }
            let done = if entries.is_empty() {
                TransferAccepted::default()
            } else {
                let moving = Transferring {
                    from: from.clone(),
                    from_shard: from_shard.clone(),
                    to: t.to.clone(),
                    facility: t.facility.clone(),
                    entries,
                };
                let entries = moving.entries.clone();
                match self.accept_transfer(&t.to_shard, moving).await {
                    Ok(done) => done,
                    // The receiver is no longer listed at the clinic: the transfer stops,
                    // and the patients moved so far stay with them.
                    Err(e) if !self.listed_at(&t.to, &t.facility).await? => {
                        warn!(from = %from, to = %t.to, moved = t.moved, error = %e, "panel transfer stopped");
                        return self.stop_transfer(&from_shard, from, key, &t.to, entries).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let progress = !(done.moved.is_empty() && done.skipped.is_empty());
            let (from_, key_) = (from.clone(), key.clone());
            let next = self
                .directory
                .call(&from_shard, |reply| ShardMsg::CompleteTransfer { from: from_, key: key_, done, reply })
                .await?;
            if next.status == crate::domain::TransferStatus::Completed {
                info!(from = %from, to = %next.to, moved = next.moved, "panel transfer completed");
                return Ok(next);
            }
            if progress {
                stalls = 0;
            } else {
                stalls += 1;
                if stalls >= MAX_STALLS {
                    return Err(AttachError::conflict(
                        "the transfer is making no progress (its patients keep changing); resume it later with its key",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Whether `provider` is listed at `facility` now (read where they are homed).
    async fn listed_at(&self, provider: &ProviderId, facility: &FacilityNumber) -> Result<bool, AttachError> {
        Ok(self.provider_record(provider).await?.provider.clinics.contains(facility))
    }

    /// A transfer as its source provider's community `shard` keeps it.
    async fn transfer_at(
        &self,
        shard: &ShardKey,
        from: &ProviderId,
        key: &TransferKey,
    ) -> Result<PanelTransfer, AttachError> {
        let (from, key) = (from.clone(), key.clone());
        let (t, _) = self.directory.call(shard, |reply| ShardMsg::TransferBatch { from, key, limit: 0, reply }).await?;
        Ok(t)
    }

    /// Stops a running transfer whose receiver is no longer listed at its clinic:
    /// the patients moved so far stay with them. Entries of this round the
    /// receiver already took (an earlier step two that failed) are dropped from
    /// the source first, by their PHN claims, so each patient stays on one panel.
    async fn stop_transfer(
        &self,
        from_shard: &ShardKey,
        from: &ProviderId,
        key: &TransferKey,
        to: &ProviderId,
        entries: Vec<crate::domain::PanelEntry>,
    ) -> Result<PanelTransfer, AttachError> {
        let mut done = TransferAccepted::default();
        for e in entries {
            let claim = self.store.phn_claim(e.phn).await?;
            if claim.is_some_and(|c| c.holder.panel() == Some(to)) {
                done.moved.push(e.phn);
            }
        }
        let (from_, key_) = (from.clone(), key.clone());
        self.directory
            .call(from_shard, |reply| ShardMsg::CompleteTransfer { from: from_, key: key_, done, reply })
            .await?;
        let (from, key) = (from.clone(), key.clone());
        let answer = TransferAnswer::Stop;
        self.directory.call(from_shard, |reply| ShardMsg::AnswerTransfer { from, key, answer, reply }).await
    }

    /// Runs a transfer in the background; its progress is read with [`panel_transfer`](Self::panel_transfer).
    /// Does nothing if this process is already running it; answers whether it started it.
    pub fn spawn_transfer(self: &Arc<Self>, from: ProviderId, key: TransferKey) -> bool {
        let id = (from, key);
        if !self.transfers.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone()) {
            return false;
        }
        let system = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = system.run_transfer(&id.0, &id.1).await {
                warn!(error = %e, from = %id.0, "panel transfer stopped; resume it with its key");
            }
            system.transfers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
        true
    }

    /// A transfer by its source provider and key: for the providers on either
    /// side, the receiving clinic's medical director, support within their
    /// scope (the source provider's community) and operations.
    pub async fn panel_transfer(
        &self,
        who: &Principal,
        from: &ProviderId,
        key: &TransferKey,
    ) -> Result<PanelTransfer, AttachError> {
        who.require(Operation::ReadPanelReports, None)?;
        let shard = self.locate(Locator::Provider(from.clone()), "provider").await?;
        who.require(Operation::ReadPanelReports, Some(&shard))?;
        let t = self.transfer_at(&shard, from, key).await?;
        let party = who.is_provider(&t.from) || who.is_provider(&t.to);
        if !(party || matches!(who.role(), Role::Support | Role::Operations | Role::Internal)) {
            // Answered as a key that names no transfer: a refusal naming the clinic
            // told anyone signed in that a panel was being moved, and where.
            self.require_director(who, &t.facility).await.map_err(|e| match e.code {
                ErrorCode::Forbidden => AttachError::not_found("transfer"),
                _ => e,
            })?;
        }
        Ok(t)
    }

    /// Every panel transfer in which `provider` is either side, newest first:
    /// for the provider themselves (to find the ones awaiting their answer),
    /// support within their scope (the provider's community) and operations.
    /// Transfers are kept by the source provider's
    /// community, so every community is asked.
    pub async fn panel_transfers(
        &self,
        who: &Principal,
        provider: &ProviderId,
    ) -> Result<Vec<PanelTransfer>, AttachError> {
        who.require(Operation::ReadPanelReports, None)?;
        if !(who.is_provider(provider) || matches!(who.role(), Role::Support | Role::Operations | Role::Internal)) {
            return Err(AttachError::new(ErrorCode::Forbidden, "you may only list your own panel transfers"));
        }
        if who.role() == Role::Support {
            let home = self.locate(Locator::Provider(provider.clone()), "provider").await?;
            who.require(Operation::ReadPanelReports, Some(&home))?;
        }
        // A transfer is kept by its source's community: support sees those in
        // their scope, as `panel_transfer` does.
        let in_scope = |s: &&ShardKey| who.role() != Role::Support || who.scope().covers(s);
        let shards: Vec<ShardKey> = self.regions.shards().filter(in_scope).cloned().collect();
        let all = join_all(shards.iter().map(|s| self.transfers_at(s, provider))).await;
        let mut list = Vec::new();
        for found in all {
            list.extend(found?);
        }
        list.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.key.cmp(&b.key)));
        Ok(list)
    }

    /// Resumes, in the background, every transfer of this node's shards that
    /// is running and not being run by this process (a previous process left
    /// it, or its runner stopped on an error).
    pub async fn resume_transfers(self: &Arc<Self>) -> usize {
        let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
        let all = join_all(shards.iter().map(|s| self.directory.call(s, ShardMsg::RunningTransfers))).await;
        let mut resumed = 0;
        for t in all.into_iter().filter_map(Result::ok).flatten() {
            if self.spawn_transfer(t.from.clone(), t.key.clone()) {
                info!(from = %t.from, to = %t.to, moved = t.moved, total = t.total, "resuming a panel transfer");
                resumed += 1;
            }
        }
        resumed
    }

    /// A provider's panel report: the provider, their endorsed delegate,
    /// support within their scope (the provider's community) and operations.
    pub async fn panel_report(&self, who: &Principal, provider: &ProviderId) -> Result<PanelReport, AttachError> {
        // Audited: a small panel's age groups and complexity say much of its patients.
        let mut trail = Trail::new(who, Operation::ReadPanelReports).about(provider);
        let result = async {
            who.require(trail.op, None)?;
            let shard = trail.at(self.locate(Locator::Provider(provider.clone()), "provider").await?);
            who.require(trail.op, Some(&shard))?;
            let reports = self.shard_panel_reports(&shard, Some(provider.clone()), None, who.clone()).await?;
            reports.into_iter().next().ok_or_else(|| AttachError::not_found("provider"))
        }
        .await;
        self.audited(trail, result).await
    }

    /// The panel reports of every provider listed at a clinic (wherever they are
    /// homed), by provider id: the clinic's medical director, support within
    /// their scope (the clinic's community) and operations.
    pub async fn clinic_panel_reports(
        &self,
        who: &Principal,
        facility: &FacilityNumber,
    ) -> Result<Vec<PanelReport>, AttachError> {
        let mut trail = Trail::new(who, Operation::ReadPanelReports).about(facility);
        let result = async {
            who.require(trail.op, None)?;
            if !matches!(who.role(), Role::Support | Role::Operations | Role::Internal) {
                self.require_director(who, facility).await?;
            } else {
                // Support within their scope: the clinic's community.
                let home = trail.at(self.locate(Locator::Clinic(facility.clone()), "clinic").await?);
                who.require(trail.op, Some(&home))?;
                self.clinic_at(&home, facility.clone()).await?;
            }
            let shards: Vec<ShardKey> = self.regions.shards().cloned().collect();
            let reports = shards.iter().map(|s| self.shard_panel_reports(s, None, Some(facility.clone()), who.clone()));
            let mut all = Vec::new();
            for r in join_all(reports).await {
                all.extend(r?);
            }
            all.sort_by(|a, b| a.provider.cmp(&b.provider));
            Ok(all)
        }
        .await;
        self.audited(trail, result).await
    }
}

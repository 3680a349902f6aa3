//! Panel work inside one shard: a chunk of a submitted panel, waiting members
//! leaving for a panel, removals, clinic membership, the steps of a transfer,
//! and panel reports.
//!
//! Every step is durable before it is answered and safe to repeat: the system
//! (`system/panels.rs`) strings the steps together across shards, and a retry
//! after a crash finds what was already done and goes on from there.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::join_all;

use crate::access::{Principal, Role};
use crate::domain::{
    AgeGroup, DateOfBirth, EventKind, FacilityNumber, PanelEntry, PanelIntake, PanelSource, PanelTransfer, Phn,
    Provider, ProviderId, Registration, RegistrationRef, RegistrationStatus, Timestamp, TransferKey, TransferStatus,
};
use crate::error::{AttachError, ErrorCode};
use crate::panel::{
    ChunkAnswer, PanelChunk, PanelReport, PanelRow, Release, RowReport, RowStatus, SubmittedRow, TransferAccepted,
    TransferAnswer, TransferRequest, Transferring, Waitlisted,
};
use crate::store::{CasOutcome, PhnClaim, PhnHolder, Record, RecordKey};

use super::actor::ShardRuntime;
use super::messages::ProviderView;
use super::state::Change;

/// The feed's event for a transfer that starts running (none while it awaits
/// the providers' agreement, or once it is cancelled: no patient moves).
fn started(t: &PanelTransfer) -> Option<EventKind> {
    (t.status == TransferStatus::Running).then(|| EventKind::TransferUpdated {
        from: t.from.clone(),
        to: t.to.clone(),
        moved: 0,
        done: false,
    })
}

/// Who holds a PHN a submission wants, as far as the submission cares.
enum Holder {
    /// This provider's panel (a crash between claim and commit, or step two of
    /// a release): with the registration the patient came off, when the claim
    /// still names it (its entry not saved yet).
    Ours(Option<RegistrationRef>),
    /// A claim nobody stands behind any more (a withdrawal, a crash): take it over.
    Dead,
    /// A waiting registration: it must let the patient go first.
    Waiting(RegistrationRef, crate::domain::ShardKey),
    /// A registration attached to this provider whose claim still names it
    /// though the patient has no entry here: the patient is the provider's, so
    /// the claim moves to the panel and the entry is added. Attached by an
    /// earlier submission whose claim never moved (a crash between its two
    /// steps), the patient came off the waitlist (`true`); attached by a match
    /// the provider accepted (a removal from the panel stopped by a crash
    /// before it freed the claim, or an acceptance next door whose entries have
    /// not arrived yet), they did so then and are only listed now (`false`).
    LeftForUs(RegistrationRef, bool),
    /// Someone else: a conflict to resolve, never a silent move.
    Conflict(&'static str),
}

const ON_ANOTHER_PANEL: &str = "the patient is on another provider's panel; nothing was moved. The providers resolve it: \
     the other provider removes the patient, or a medical director transfers the panel";
const PROPOSED: &str = "the patient's household has an open proposal to a provider; it must be answered or expire \
     before the patient can be added to a panel";
const BUSY: &str = "the patient is being registered or moved right now; submit the row again in a minute";
const BORN_ANOTHER_DAY: &str = "a patient waiting under this PHN was born on another day; nothing was moved. Check the \
     PHN and the date of birth: a mistyped PHN would take someone else off the waitlist";

/// Whether transfer `t` is to move `entry`: every patient on the source panel,
/// but one another transfer brought there after `t` began. Otherwise two
/// transfers between the same providers, one each way (or a ring of them),
/// would hand their patients back and forth, and a patient caught between the
/// two steps of both moves was left on neither panel.
fn to_move(t: &PanelTransfer, entry: &PanelEntry) -> bool {
    !(entry.source.transferred() && entry.attached_at >= t.started_at)
}

/// Whether `claim`, held by `reg`, stands for `reg`'s patients on
/// `provider`'s panel: the household is attached to that provider and the
/// claim is no newer than the attachment. A return to the waitlist renews its
/// members' claims with a later time before it commits, so a removal or a
/// transfer step reading the claim meanwhile leaves it to the household. A
/// renewal older than the claim grace (`grace_ms`) is a return that stopped
/// before its commit (a crash): the claim stands for the entry again.
pub(super) fn stands_for_attachment(
    claim: &PhnClaim,
    reg: &Registration,
    provider: &ProviderId,
    now: Timestamp,
    grace_ms: i64,
) -> bool {
    reg.is_attached_to(provider) && (claim.at <= reg.updated_at || now.0 - claim.at.0 >= grace_ms)
}

impl ShardRuntime {
    /// Whether the caller may change `provider`'s panel: the provider, or a
    /// delegate whose endorsement by them is completed (decided here, against
    /// the shard's endorsements).
    pub(super) fn may_change_panel(&self, who: &Principal, provider: &ProviderId) -> Result<(), AttachError> {
        self.may_act_on_panel(who, provider, "you may only change your own panel")
    }

    /// [`Self::may_change_panel`], refusing a provider with `not_theirs`.
    fn may_act_on_panel(&self, who: &Principal, provider: &ProviderId, not_theirs: &str) -> Result<(), AttachError> {
        let allowed = match who.role() {
            Role::Internal => true,
            Role::Delegate => self.state.delegation_in_force(provider, who.subject()),
            _ => who.is_provider(provider),
        };
        match (allowed, who.role()) {
            (true, _) => Ok(()),
            (false, Role::Delegate) => Err(AttachError::new(
                ErrorCode::Forbidden,
                "you act for this provider only while their endorsement of you is completed",
            )),
            (false, _) => Err(AttachError::new(ErrorCode::Forbidden, not_theirs)),
        }
    }

    /// Whether the caller may read `provider`'s panel report.
    fn may_read_report(&self, who: &Principal, provider: &ProviderId) -> Result<(), AttachError> {
        match who.role() {
            Role::Internal | Role::Support | Role::Operations => Ok(()),
            _ => self.may_act_on_panel(who, provider, "you may only read your own panel"),
        }
    }

    fn must_practise_at(&self, provider: &ProviderId, facility: &FacilityNumber) -> Result<(), AttachError> {
        let p = self.state.provider(provider).ok_or_else(|| AttachError::not_found("provider"))?;
        if p.clinics.contains(facility) {
            Ok(())
        } else {
            Err(AttachError::conflict(format!(
                "provider {provider} is not listed at clinic {facility}; the clinic's medical director adds them first"
            )))
        }
    }

    async fn holder_for_submission(
        &self,
        provider: &ProviderId,
        claim: &PhnClaim,
        phn: Phn,
        now: Timestamp,
    ) -> Result<Holder, AttachError> {
        match &claim.holder {
            PhnHolder::Panel(p) if p == provider && claim.shard == self.state.key => Ok(Holder::Ours(None)),
            // Counted as off the waitlist while the intake that stands for it is
            // kept: once the entry was saved (the claim left unsettled), listing
            // the patient again after a removal is not a second attachment.
            PhnHolder::PanelFrom(p, r) if p == provider && claim.shard == self.state.key => {
                Ok(Holder::Ours(self.state.intake(provider, phn).map(|_| *r)))
            }
            PhnHolder::Panel(_) | PhnHolder::PanelFrom(..) => Ok(if self.claim_is_live(claim, phn, now).await? {
                Holder::Conflict(ON_ANOTHER_PANEL)
            } else {
                Holder::Dead
            }),
            PhnHolder::Registration(r) => {
                let record = self.claimed_registration(&claim.shard, r).await?;
                Ok(match record.as_ref().map(|reg| reg.status) {
                    // Where the registration waits now, which a move may have changed.
                    Some(RegistrationStatus::Waiting) => {
                        Holder::Waiting(*r, record.map_or_else(|| claim.shard.clone(), |reg| reg.shard))
                    }
                    Some(RegistrationStatus::Proposed) => Holder::Conflict(PROPOSED),
                    Some(RegistrationStatus::Attached)
                        if record.as_ref().is_some_and(|reg| {
                            reg.household.members.iter().any(|m| m.phn == phn)
                                && stands_for_attachment(claim, reg, provider, now, self.config.claim_grace_ms())
                        }) =>
                    {
                        Holder::LeftForUs(*r, !self.state.accepted_match(r, provider))
                    }
                    Some(RegistrationStatus::Attached) => Holder::Conflict(ON_ANOTHER_PANEL),
                    Some(RegistrationStatus::Moved) => Holder::Conflict(BUSY),
                    Some(RegistrationStatus::Withdrawn) => Holder::Dead,
                    None if self.claim_is_live(claim, phn, now).await? => Holder::Conflict(BUSY),
                    None => Holder::Dead,
                })
            }
        }
    }

    /// Adds a chunk of a submitted panel: claims each row's PHN for the panel,
    /// answers per row, and commits the new entries in one batch.
    pub(super) async fn submit_panel(
        &mut self,
        chunk: PanelChunk,
        who: &Principal,
        now: Timestamp,
    ) -> Result<ChunkAnswer, AttachError> {
        self.must_practise_at(&chunk.provider, &chunk.facility)?;
        self.may_change_panel(who, &chunk.provider)?;
        self.take_rows(chunk, now).await
    }

    /// [`Self::submit_panel`] once the caller may: the rows' claims, the
    /// entries and the intakes, in one commit.
    async fn take_rows(&mut self, chunk: PanelChunk, now: Timestamp) -> Result<ChunkAnswer, AttachError> {
        let mine =
            PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Panel(chunk.provider.clone()), at: now };
        // The intakes this chunk ends: its rows that left a registration, whatever
        // becomes of them now (more are found below, taken as such).
        let mut ended: BTreeSet<Phn> =
            chunk.rows.iter().filter(|r| r.from_waitlist.is_some()).map(|r| r.row.phn).collect();
        let mut answer = ChunkAnswer::default();
        let (already, fresh): (Vec<SubmittedRow>, Vec<SubmittedRow>) =
            chunk.rows.into_iter().partition(|r| self.state.on_panel(&chunk.provider, r.row.phn));
        // A patient matched without a clinic (their provider practises at
        // several and the acceptance named none) is filed at the clinic whose
        // list names them: the provider's own record says where they are seen.
        let mut filed = Vec::new();
        for r in &already {
            let entry = self.state.panel(&chunk.provider).and_then(|p| p.get(&r.row.phn));
            let mut entry = entry.cloned().ok_or_else(|| AttachError::internal("a panel entry vanished"))?;
            // A waiting patient another submission of this panel took meanwhile, as the
            // provider's own (between this one's two steps their claim already named the
            // panel): the entry records the registration they came off, and counts so.
            if let (Some(reference), PanelSource::Submitted { reference: unknown @ None, .. }) =
                (r.from_waitlist, &mut entry.source)
            {
                *unknown = Some(reference);
                filed.push(Record::PanelEntry(entry));
                answer.rows.push(RowReport::ok(r.line, RowStatus::AttachedFromWaitlist));
                continue;
            }
            match entry.source.unset_facility() {
                Some(facility) => {
                    *facility = Some(chunk.facility.clone());
                    filed.push(Record::PanelEntry(entry));
                    let why = format!("already on the panel; now filed at clinic {}", chunk.facility);
                    answer.rows.push(RowReport::because(r.line, RowStatus::AlreadyOnPanel, why));
                }
                None => answer.rows.push(RowReport::ok(r.line, RowStatus::AlreadyOnPanel)),
            }
        }
        let held: HashMap<Phn, PhnClaim> = self
            .store
            .claim_phns(fresh.iter().map(|r| (r.row.phn, mine.clone())).collect())
            .await?
            .into_iter()
            .collect();
        let mut claimed = Vec::new();
        let mut taking = Vec::new();
        let mut takeovers = Vec::new();
        // Claims passed on by a registration, made the panel's own once the entries are saved.
        let mut settling = Vec::new();
        for mut r in fresh {
            let Some(existing) = held.get(&r.row.phn) else {
                claimed.push(r.row.phn);
                taking.push(r);
                continue;
            };
            match self.holder_for_submission(&chunk.provider, existing, r.row.phn, now).await? {
                Holder::Ours(None) => taking.push(r),
                Holder::Ours(Some(reference)) => {
                    r.from_waitlist = Some(reference);
                    settling.push((r.row.phn, existing.clone()));
                    taking.push(r);
                }
                Holder::Dead => takeovers.push((r, existing.clone())),
                Holder::LeftForUs(reference, came_off_the_waitlist) => {
                    r.from_waitlist = came_off_the_waitlist.then_some(reference);
                    takeovers.push((r, existing.clone()));
                }
                Holder::Waiting(reference, shard) => answer.waitlisted.push(Waitlisted { row: r, reference, shard }),
                Holder::Conflict(why) => answer.rows.push(RowReport::because(r.line, RowStatus::Conflict, why)),
            }
        }
        // Sent together, the compare-and-sets share one store commit.
        let outcomes =
            join_all(takeovers.iter().map(|(r, old)| self.store.cas_phn_claim(r.row.phn, Some(old), Some(&mine))))
                .await;
        for ((r, _), outcome) in takeovers.into_iter().zip(outcomes) {
            match outcome {
                Ok(CasOutcome::Applied) => {
                    claimed.push(r.row.phn);
                    taking.push(r);
                }
                Ok(CasOutcome::Conflict(_)) => answer.rows.push(RowReport::because(r.line, RowStatus::Conflict, BUSY)),
                Err(e) => {
                    self.release(&claimed, &mine).await;
                    return Err(e.into());
                }
            }
        }
        ended.extend(taking.iter().filter(|r| r.from_waitlist.is_some()).map(|r| r.row.phn));
        let deletes = ended
            .into_iter()
            .filter(|phn| self.state.intake(&chunk.provider, *phn).is_some())
            .map(|phn| RecordKey::PanelIntake(chunk.provider.clone(), phn))
            .collect();
        let mut change = Change { upserts: filed, deletes, ..Change::default() };
        // Waiting patients this first step found: kept until their entries are saved.
        for w in answer.waitlisted.iter().filter(|w| w.row.from_waitlist.is_none()) {
            change.upserts.push(Record::PanelIntake(PanelIntake {
                provider: chunk.provider.clone(),
                phn: w.row.row.phn,
                given_name: w.row.row.given_name.clone(),
                surname: w.row.row.surname.clone(),
                date_of_birth: w.row.row.date_of_birth,
                facility: chunk.facility.clone(),
                reference: w.reference,
                at: now,
            }));
        }
        for r in &taking {
            change.upserts.push(Record::PanelEntry(PanelEntry {
                provider: chunk.provider.clone(),
                phn: r.row.phn,
                given_name: r.row.given_name.clone(),
                surname: r.row.surname.clone(),
                date_of_birth: r.row.date_of_birth,
                attached_at: now,
                source: PanelSource::Submitted { facility: chunk.facility.clone(), reference: r.from_waitlist },
            }));
        }
        // The patients a provider itemises were, as far as Attach knows, among
        // those they reported as a count: the count shrinks as they are listed,
        // so the panel is not counted twice (a stale count stops at zero).
        if let Some(p) =
            self.state.provider(&chunk.provider).filter(|p| p.reported_panel_size > 0 && !taking.is_empty())
        {
            let itemised = u32::try_from(taking.len()).unwrap_or(u32::MAX);
            let reported_panel_size = p.reported_panel_size.saturating_sub(itemised);
            change.upserts.push(Record::Provider(Provider { reported_panel_size, updated_at: now, ..p.clone() }));
        }
        // Attachments are the patients who came off the waitlist; the provider's
        // existing patients are listed (the statistics count them so too).
        let from_waitlist = taking.iter().filter(|r| r.from_waitlist.is_some()).count();
        if from_waitlist > 0 {
            change.events.push(EventKind::Attached {
                reference: None,
                provider: chunk.provider.clone(),
                patients: u16::try_from(from_waitlist).unwrap_or(u16::MAX),
            });
        }
        if taking.len() > from_waitlist {
            change.events.push(EventKind::Listed {
                provider: chunk.provider.clone(),
                patients: u32::try_from(taking.len() - from_waitlist).unwrap_or(u32::MAX),
            });
        }
        if let Err(e) = self.commit(change, now).await {
            self.release(&claimed, &mine).await;
            return Err(e);
        }
        // A claim left naming the registration still stands for the saved entry
        // (`PhnHolder::panel`): one that cannot be settled is only logged.
        let settled =
            join_all(settling.iter().map(|(phn, old)| self.store.cas_phn_claim(*phn, Some(old), Some(&mine)))).await;
        if let Some(e) = settled.into_iter().find_map(Result::err) {
            tracing::warn!(shard = %self.state.key, error = %e, "could not settle a PHN claim passed on to a panel");
        }
        answer.rows.extend(taking.iter().map(|r| {
            let status = if r.from_waitlist.is_some() { RowStatus::AttachedFromWaitlist } else { RowStatus::Accepted };
            RowReport::ok(r.line, status)
        }));
        Ok(answer)
    }

    /// The intakes of submissions cut off between their steps (DECISIONS 44):
    /// older than `before` and than the claim grace, so a submission still
    /// running is left to finish.
    pub(super) fn stale_intakes(&self, before: Timestamp, now: Timestamp) -> Vec<PanelIntake> {
        let before = Timestamp(before.0.min(now.0 - self.config.claim_grace_ms()));
        self.state.intakes().filter(|i| i.at < before).cloned().collect()
    }

    /// Ends intakes: those in `take` get their entries (as attachments from
    /// the waitlist where their claim says so, `take_rows` reading it as for
    /// any row), those in `forget` are dropped. Only intakes still kept are
    /// touched. Answers how many patients were attached.
    pub(super) async fn settle_intakes(
        &mut self,
        take: Vec<PanelIntake>,
        forget: Vec<(ProviderId, Phn)>,
        now: Timestamp,
    ) -> Result<usize, AttachError> {
        let kept = |provider: &ProviderId, phn: Phn| self.state.intake(provider, phn).is_some();
        let dropped: Vec<RecordKey> = forget
            .into_iter()
            .filter(|(provider, phn)| kept(provider, *phn))
            .map(|(provider, phn)| RecordKey::PanelIntake(provider, phn))
            .collect();
        let mut chunks: BTreeMap<(ProviderId, FacilityNumber), Vec<SubmittedRow>> = BTreeMap::new();
        for i in take.into_iter().filter(|i| kept(&i.provider, i.phn)) {
            let row =
                PanelRow { phn: i.phn, surname: i.surname, given_name: i.given_name, date_of_birth: i.date_of_birth };
            let row = SubmittedRow { line: 0, row, from_waitlist: Some(i.reference) };
            chunks.entry((i.provider, i.facility)).or_default().push(row);
        }
        self.commit(Change { deletes: dropped, ..Change::default() }, now).await?;
        let mut attached = 0;
        for ((provider, facility), rows) in chunks {
            let answer = self.take_rows(PanelChunk { provider: provider.clone(), facility, rows }, now).await?;
            let patients = answer.rows.iter().filter(|r| r.status == RowStatus::AttachedFromWaitlist).count();
            tracing::warn!(
                shard = %self.state.key, provider = %provider, patients,
                "finished a panel submission cut off part way: its waiting patients are on the panel"
            );
            attached += patients;
        }
        Ok(attached)
    }

    /// Step one of moving waiting members to a panel: they leave the waitlist
    /// (committed first), then their claims move to the panel. Answers, per PHN,
    /// `None` when the claim now points at the panel, or why not.
    pub(super) async fn release_to_panel(
        &mut self,
        mut release: Release,
        born: &[(Phn, DateOfBirth)],
        now: Timestamp,
    ) -> Result<Vec<(Phn, Option<&'static str>)>, AttachError> {
        let reg = self.state.registration(&release.reference).ok_or_else(|| AttachError::not_found("registration"))?;
        let why = match reg.status {
            RegistrationStatus::Waiting => None,
            RegistrationStatus::Proposed => Some(PROPOSED),
            RegistrationStatus::Attached => Some(ON_ANOTHER_PANEL),
            // Moving to another community, or withdrawn while the row was on its way.
            RegistrationStatus::Moved | RegistrationStatus::Withdrawn => Some(BUSY),
        };
        if let Some(why) = why {
            return Ok(release.phns.iter().map(|p| (*p, Some(why))).collect());
        }
        // A panel row naming a waiting member's PHN with another date of birth
        // is most likely a mistyped PHN: that member stays where they are.
        let mut out = Vec::new();
        release.phns.retain(|phn| {
            let listed = born.iter().find(|(p, _)| p == phn).map(|(_, d)| d);
            let here = reg.household.members.iter().find(|m| m.phn == *phn).map(|m| &m.date_of_birth);
            let differs = matches!((listed, here), (Some(a), Some(b)) if a != b);
            if differs {
                out.push((*phn, Some(BORN_ANOTHER_DAY)));
            }
            !differs
        });
        if release.phns.is_empty() {
            return Ok(out);
        }
        let next = reg.attach_members(&release.phns, &release.provider, now)?;
        let leaving = reg.household.members.len() - next.household.members.len()
            + usize::from(next.status == RegistrationStatus::Attached) * next.household.members.len();
        if next != *reg {
            let mut upserts = Vec::with_capacity(2);
            // Those who leave for a panel still hold the household's place
            // (DECISIONS 43): with nothing kept, everyone in it held it, so
            // that is kept now, or they would be forgotten on coming back.
            if next.status == RegistrationStatus::Waiting && self.state.place_holders(&release.reference).is_none() {
                let everyone = crate::domain::PlaceHolders::everyone_in(release.reference, &reg.household);
                upserts.push(Record::PlaceHolders(everyone));
            }
            upserts.push(Record::Registration(next));
            let change = Change {
                upserts,
                // The panel's community tells ATTACHED when it takes them.
                events: vec![EventKind::LeftForPanel {
                    reference: release.reference,
                    provider: release.provider.clone(),
                    patients: u16::try_from(leaving).unwrap_or(u16::MAX),
                }],
                ..Change::default()
            };
            self.commit(change, now).await?;
        }
        // The members have left the waitlist; a crash from here leaves claims
        // naming the registration, and submitting again comes back here.
        // A claim made before the household moved here names the community it left.
        let ours = |c: &PhnClaim| c.holder == PhnHolder::Registration(release.reference);
        let theirs = PhnClaim {
            shard: release.provider_shard.clone(),
            holder: PhnHolder::PanelFrom(release.provider.clone(), release.reference),
            at: now,
        };
        let mut moves = Vec::new();
        for phn in &release.phns {
            match self.store.phn_claim(*phn).await? {
                Some(c) if ours(&c) => moves.push((*phn, c)),
                Some(c) if c.shard == theirs.shard && c.holder.panel() == Some(&release.provider) => {
                    out.push((*phn, None))
                }
                _ => out.push((*phn, Some(BUSY))),
            }
        }
        let outcomes =
            join_all(moves.iter().map(|(phn, old)| self.store.cas_phn_claim(*phn, Some(old), Some(&theirs)))).await;
        for ((phn, _), outcome) in moves.into_iter().zip(outcomes) {
            out.push((phn, if matches!(outcome?, CasOutcome::Applied) { None } else { Some(BUSY) }));
        }
        Ok(out)
    }

    /// Removes patients from a provider's panel and frees their PHNs. Answers,
    /// per PHN asked, whether it was on the panel.
    pub(super) async fn remove_from_panel(
        &mut self,
        provider: &ProviderId,
        phns: &[Phn],
        who: &Principal,
        now: Timestamp,
    ) -> Result<Vec<bool>, AttachError> {
        if self.state.provider(provider).is_none() {
            return Err(AttachError::not_found("provider"));
        }
        self.may_change_panel(who, provider)?;
        // A waiting patient a cut-off submission was taking (DECISIONS 44) is
        // on their way to the panel: removed, they are not taken.
        let intakes: BTreeMap<Phn, RegistrationRef> = phns
            .iter()
            .filter(|p| !self.state.on_panel(provider, **p))
            .filter_map(|p| self.state.intake(provider, *p).map(|i| (*p, i.reference)))
            .collect();
        let mut removed: Vec<PanelEntry> =
            phns.iter().filter_map(|p| self.state.panel(provider).and_then(|panel| panel.get(p)).cloned()).collect();
        // Each patient leaves once, and the feed counts them once, however often they were named.
        removed.sort_unstable_by_key(|e| e.phn);
        removed.dedup_by_key(|e| e.phn);
        // A patient whose claim names another panel is that panel's (DECISIONS
        // 20): a running transfer's first step put them there, and the entry
        // left here is its second step's to drop and count. Removed here, they
        // stayed on the receiver's panel while the answer said they had left.
        let mut moved_on = BTreeSet::new();
        let claims = join_all(removed.iter().map(|e| self.store.phn_claim(e.phn))).await;
        for (e, claim) in removed.iter().zip(claims) {
            if claim?.is_some_and(|c| self.names_another_panel(&c, provider)) {
                moved_on.insert(e.phn);
            }
        }
        // A cancelled transfer's chunk under way is still dropped by its second step.
        let transferring = self
            .state
            .transfers()
            .any(|t| &t.from == provider && matches!(t.status, TransferStatus::Running | TransferStatus::Cancelled));
        if transferring {
            removed.retain(|e| !moved_on.contains(&e.phn));
        }
        let on_panel: Vec<bool> =
            phns.iter().map(|p| self.state.on_panel(provider, *p) || intakes.contains_key(p)).collect();
        let answer = |moved_on: &BTreeSet<Phn>| -> Vec<bool> {
            phns.iter().zip(&on_panel).map(|(p, on)| *on && !moved_on.contains(p)).collect()
        };
        if removed.is_empty() && intakes.is_empty() {
            return Ok(answer(&moved_on));
        }
        let mut deletes: Vec<RecordKey> =
            removed.iter().map(|e| RecordKey::PanelEntry(provider.clone(), e.phn)).collect();
        deletes.extend(intakes.keys().map(|phn| RecordKey::PanelIntake(provider.clone(), *phn)));
        // Patients another panel holds were not this one's to detach (their stale entries go all the same).
        let detached = removed.iter().filter(|e| !moved_on.contains(&e.phn)).count();
        let events = if detached == 0 {
            vec![]
        } else {
            vec![EventKind::Detached { provider: provider.clone(), patients: detached as u32 }]
        };
        self.commit(Change { deletes, events, ..Change::default() }, now).await?;
        // The entries are gone; free the claims that stood for them. A claim
        // left behind by a crash here names a panel without the entry, and
        // counts as free once the claim grace has passed.
        let mut frees = Vec::new();
        let leaving =
            removed.iter().map(|e| (e.phn, e.source.reference())).chain(intakes.iter().map(|(p, r)| (*p, Some(*r))));
        for (phn, came_from) in leaving {
            if let Some(c) = self.store.phn_claim(phn).await? {
                // Taken by the transfer's first step since the look above: on the receiver's panel.
                if self.names_another_panel(&c, provider) {
                    moved_on.insert(phn);
                }
                // The panel's claim, or one a registration passed on to it (`PanelFrom`).
                let ours = c.shard == self.state.key && c.holder.panel() == Some(provider);
                // A registration that let the patient go for this panel (one still
                // waiting keeps its claim: the patient waits on).
                let by_registration = match &c.holder {
                    PhnHolder::Registration(r) if came_from == Some(*r) => self
                        .claimed_registration(&c.shard, r)
                        .await?
                        .is_none_or(|reg| stands_for_attachment(&c, &reg, provider, now, self.config.claim_grace_ms())),
                    _ => false,
                };
                if ours || by_registration {
                    frees.push((phn, c));
                }
            }
        }
        for outcome in join_all(frees.iter().map(|(phn, c)| self.store.cas_phn_claim(*phn, Some(c), None))).await {
            if let Err(e) = outcome {
                tracing::warn!(shard = %self.state.key, error = %e, "could not free a PHN claim after a removal");
            }
        }
        Ok(answer(&moved_on))
    }

    /// Whether claim `c` says a panel other than `provider`'s here holds the patient.
    fn names_another_panel(&self, c: &PhnClaim, provider: &ProviderId) -> bool {
        c.holder.panel().is_some_and(|p| p != provider || c.shard != self.state.key)
    }

    /// Lists a provider at a clinic, or takes them off it. Their panel stays
    /// theirs: patients move only by a transfer or a removal.
    pub(super) async fn set_provider_clinic(
        &mut self,
        provider: &ProviderId,
        facility: FacilityNumber,
        present: bool,
        now: Timestamp,
    ) -> Result<ProviderView, AttachError> {
        let p = self.state.provider(provider).ok_or_else(|| AttachError::not_found("provider"))?;
        let mut next = p.clone();
        next.clinics.retain(|f| f != &facility);
        if present {
            if next.clinics.len() >= 20 {
                return Err(AttachError::conflict("a provider is listed at most at 20 clinics"));
            }
            next.clinics.push(facility);
        }
        if next.clinics != p.clinics {
            next.updated_at = now;
            let change = Change {
                events: vec![EventKind::ProviderUpdated { provider: provider.clone() }],
                upserts: vec![Record::Provider(next)],
                ..Change::default()
            };
            self.commit(change, now).await?;
        }
        self.provider_view(provider, now)
    }

    /// Starts a transfer out of a provider homed here, or finds the one with this key.
    pub(super) async fn begin_transfer(
        &mut self,
        req: TransferRequest,
        now: Timestamp,
    ) -> Result<PanelTransfer, AttachError> {
        if let Some(t) = self.state.transfer(&req.from, &req.key) {
            if t.to != req.to || t.facility != req.facility {
                return Err(AttachError::conflict(format!(
                    "idempotency key {} was used for a transfer to another provider or clinic",
                    req.key
                )));
            }
            return Ok(t.clone());
        }
        if self.state.provider(&req.from).is_none() {
            return Err(AttachError::not_found("provider"));
        }
        if req.from == req.to {
            return Err(AttachError::conflict("a panel cannot be transferred to the same provider"));
        }
        if let Some(open) = self.state.transfers().find(|t| t.from == req.from && t.status.is_open()) {
            return Err(AttachError::conflict(match open.status {
                TransferStatus::Running => format!(
                    "a transfer of this panel is already running (idempotency key {}); resume it with that key",
                    open.key
                ),
                _ => format!(
                    "a transfer of this panel (idempotency key {}) is awaiting the providers' agreement; \
                     a director of its clinic may withdraw it",
                    open.key
                ),
            }));
        }
        let total = self.state.panel(&req.from).map_or(0, |p| p.len() as u32);
        let transfer = PanelTransfer {
            key: req.key,
            from: req.from,
            to: req.to,
            to_shard: req.to_shard,
            facility: req.facility,
            status: PanelTransfer::first_status(req.source_agreed, req.receiver_agreed),
            total,
            moved: 0,
            skipped: 0,
            started_at: now,
            updated_at: now,
        };
        let change = Change {
            events: started(&transfer).into_iter().collect(),
            upserts: vec![Record::Transfer(transfer.clone())],
            ..Change::default()
        };
        self.commit(change, now).await?;
        Ok(transfer)
    }

    /// A provider's agreement to a transfer (it runs once both have agreed) or
    /// refusal, or a director's withdrawal: durable before it is answered.
    pub(super) async fn answer_transfer(
        &mut self,
        from: &ProviderId,
        key: &TransferKey,
        answer: TransferAnswer,
        now: Timestamp,
    ) -> Result<PanelTransfer, AttachError> {
        let t = self.state.transfer(from, key).ok_or_else(|| AttachError::not_found("transfer"))?;
        let next = match answer {
            TransferAnswer::Provider(side, agree) => {
                let panel = self.state.panel(from).map_or(0, |p| p.len() as u32);
                t.answer(side, agree, panel, now)?
            }
            TransferAnswer::Withdraw => t.withdraw(now)?,
            TransferAnswer::Stop => t.stop(now)?,
        };
        if next == *t {
            return Ok(next);
        }
        let change = Change {
            events: started(&next).into_iter().collect(),
            upserts: vec![Record::Transfer(next.clone())],
            ..Change::default()
        };
        self.commit(change, now).await?;
        Ok(next)
    }

    /// A transfer and the next entries it has to move (the first of the source
    /// panel, in PHN order, that [`to_move`]: moved ones are gone from it).
    pub(super) fn transfer_batch(
        &self,
        from: &ProviderId,
        key: &TransferKey,
        limit: usize,
    ) -> Result<(PanelTransfer, Vec<PanelEntry>), AttachError> {
        let t = self.state.transfer(from, key).ok_or_else(|| AttachError::not_found("transfer"))?;
        let entries = match t.status {
            TransferStatus::Completed | TransferStatus::Awaiting { .. } | TransferStatus::Cancelled => Vec::new(),
            TransferStatus::Running => self.state.panel(from).map_or_else(Vec::new, |p| {
                // An entry matched before entries knew complexity travels with it
                // when the registration lives here, so the receiving panel's reports count it.
                let told = |e: &PanelEntry| match (e.source.complex(), self.complexity_here(e)) {
                    (None, Some(complex)) => {
                        PanelEntry { source: e.source.clone().knowing_complexity(complex), ..e.clone() }
                    }
                    _ => e.clone(),
                };
                p.values().filter(|e| to_move(t, e)).take(limit).map(told).collect()
            }),
        };
        Ok((t.clone(), entries))
    }

    /// Whether a patient on a panel here has a complex need: as the entry says
    /// (matches since session 9), or as their registration says when it lives here.
    fn complexity_here(&self, e: &PanelEntry) -> Option<bool> {
        e.source.complex().or_else(|| {
            let reg = self.state.registration(&e.source.reference()?)?;
            let member = reg.household.members.iter().find(|m| m.phn == e.phn)?;
            Some(member.needs.iter().any(|n| n.is_complex()))
        })
    }

    /// Transfer step one, in the receiving provider's shard: moves each PHN's
    /// claim to this panel and adds the entries. Repeating it is harmless.
    pub(super) async fn accept_transfer(
        &mut self,
        t: Transferring,
        now: Timestamp,
    ) -> Result<TransferAccepted, AttachError> {
        self.must_practise_at(&t.to, &t.facility)?;
        let mine = PhnClaim { shard: self.state.key.clone(), holder: PhnHolder::Panel(t.to.clone()), at: now };
        let mut out = TransferAccepted::default();
        let mut taking = Vec::new();
        let mut moves = Vec::new();
        for e in t.entries {
            if self.state.on_panel(&t.to, e.phn) {
                out.moved.push(e.phn);
                continue;
            }
            let current = self.store.phn_claim(e.phn).await?;
            // A registration's claim stands for the entry only while it is attached to the source provider
            // (the registration is read only for a claim naming the entry's own).
            let attached_here = match &current {
                Some(c @ PhnClaim { holder: PhnHolder::Registration(r), .. }) if e.source.reference() == Some(*r) => {
                    self.claimed_registration(&c.shard, r)
                        .await?
                        .is_some_and(|reg| stands_for_attachment(c, &reg, &t.from, now, self.config.claim_grace_ms()))
                }
                _ => false,
            };
            let from_source = |c: &PhnClaim| match &c.holder {
                PhnHolder::Panel(p) | PhnHolder::PanelFrom(p, _) => p == &t.from && c.shard == t.from_shard,
                // A patient matched to the source provider: their registration holds the PHN.
                PhnHolder::Registration(_) => attached_here,
            };
            match current {
                Some(c) if c.shard == mine.shard && c.holder == mine.holder => taking.push(e),
                Some(c) if from_source(&c) => moves.push((e, Some(c))),
                // Nobody holds them: the source's provider removed them since the
                // chunk was read (a removal frees the claim), so they are not the
                // panel's to move; taken, they landed on this panel though the
                // removal was answered done (found by a crash tester). Left out
                // of both lists: the source has no entry left to drop, and one
                // still there (a claim never made) stays for the next round.
                None => {}
                Some(_) => out.skipped.push(e.phn),
            }
        }
        let outcomes =
            join_all(moves.iter().map(|(e, old)| self.store.cas_phn_claim(e.phn, old.as_ref(), Some(&mine)))).await;
        for ((e, _), outcome) in moves.into_iter().zip(outcomes) {
            match outcome? {
                CasOutcome::Applied => taking.push(e),
                // Changed under us (a registration, another move): the next round looks again.
                CasOutcome::Conflict(_) => {}
            }
        }
        let mut change = Change::default();
        for e in &taking {
            out.moved.push(e.phn);
            change.upserts.push(Record::PanelEntry(PanelEntry {
                provider: t.to.clone(),
                attached_at: now,
                source: match (e.attachment_time(), e.source.complex()) {
                    // Still the attachment it was: counted at its time where the panel is now.
                    (Some(attached_at), complex) => PanelSource::TransferredAttachment {
                        from: t.from.clone(),
                        facility: t.facility.clone(),
                        complex,
                        attached_at,
                    },
                    (None, Some(complex)) => PanelSource::TransferredWithNeeds {
                        from: t.from.clone(),
                        facility: t.facility.clone(),
                        complex,
                    },
                    (None, None) => PanelSource::Transferred { from: t.from.clone(), facility: t.facility.clone() },
                },
                ..e.clone()
            }));
        }
        // Already attached (or the source's existing patients): not new attachments.
        if !taking.is_empty() {
            change.events.push(EventKind::Listed {
                provider: t.to.clone(),
                patients: u32::try_from(taking.len()).unwrap_or(u32::MAX),
            });
        }
        self.commit(change, now).await?;
        Ok(out)
    }

    /// Transfer step two, in the source shard: drops the moved (and stale)
    /// entries and records the progress; completes the transfer once the
    /// source panel is empty.
    pub(super) async fn complete_transfer(
        &mut self,
        from: &ProviderId,
        key: &TransferKey,
        done: TransferAccepted,
        now: Timestamp,
    ) -> Result<PanelTransfer, AttachError> {
        let t = self.state.transfer(from, key).ok_or_else(|| AttachError::not_found("transfer"))?.clone();
        // A chunk the receiver took is dropped here even if the transfer was
        // stopped meanwhile (cancelled while it ran): its patients are the receiver's.
        if !matches!(t.status, TransferStatus::Running | TransferStatus::Cancelled) {
            return Ok(t);
        }
        let on = |p: &Phn| self.state.on_panel(from, *p);
        let moved: Vec<Phn> = done.moved.iter().copied().filter(on).collect();
        let skipped: Vec<Phn> = done.skipped.iter().copied().filter(on).collect();
        let still = self.state.panel(from).map_or(0, |p| p.values().filter(|e| to_move(&t, e)).count());
        let left = still.saturating_sub(moved.len() + skipped.len());
        let mut next = PanelTransfer {
            moved: t.moved + moved.len() as u32,
            skipped: t.skipped + skipped.len() as u32,
            updated_at: now,
            ..t.clone()
        };
        // What is left to move, as the panel is now: patients who joined it while
        // the transfer ran are moved and counted too, and those who left are not.
        next.total = next.moved + next.skipped + left as u32;
        if left == 0 && t.status == TransferStatus::Running {
            next.status = TransferStatus::Completed;
        }
        if next == t {
            return Ok(t);
        }
        let mut change = Change::default();
        change.deletes.extend(moved.iter().chain(&skipped).map(|p| RecordKey::PanelEntry(from.clone(), *p)));
        if !change.deletes.is_empty() {
            change.events.push(EventKind::Detached { provider: from.clone(), patients: change.deletes.len() as u32 });
        }
        change.events.push(EventKind::TransferUpdated {
            from: from.clone(),
            to: next.to.clone(),
            moved: next.moved,
            done: next.status == TransferStatus::Completed,
        });
        change.upserts.push(Record::Transfer(next.clone()));
        self.commit(change, now).await?;
        Ok(next)
    }

    /// Panel reports of providers homed here: `provider` alone (which the
    /// caller must be allowed to read), or every one listed at `facility` (the
    /// caller's right to that clinic was checked against the clinic).
    pub(super) fn panel_reports(
        &self,
        provider: Option<&ProviderId>,
        facility: Option<&FacilityNumber>,
        who: &Principal,
        now: Timestamp,
    ) -> Result<Vec<PanelReport>, AttachError> {
        if let Some(id) = provider {
            if self.state.provider(id).is_none() {
                return Err(AttachError::not_found("provider"));
            }
            self.may_read_report(who, id)?;
        }
        let today = now.to_utc().date_naive();
        let reports = self
            .state
            .providers()
            .filter(|p| provider.is_none_or(|id| &p.id == id))
            // A provider taken off the clinic's list still has the patients filed
            // there: they stay in its report (nothing disappears from view).
            .filter(|p| {
                facility.is_none_or(|f| {
                    p.clinics.contains(f)
                        || self
                            .state
                            .panel(&p.id)
                            .is_some_and(|panel| panel.values().any(|e| e.source.facility() == Some(f)))
                })
            })
            .map(|p| {
                // In a clinic's report, an entry without a clinic (and the count
                // reported before Attach) belongs to the clinic only when the
                // provider practises nowhere else.
                let only_here = facility.is_none_or(|f| p.clinics.as_slice() == std::slice::from_ref(f));
                let counts = |entry_facility: Option<&FacilityNumber>| match (facility, entry_facility) {
                    (None, _) => true,
                    (Some(f), Some(at)) => f == at,
                    (Some(_), None) => only_here,
                };
                let mut r = PanelReport { provider: Some(p.id.clone()), ..PanelReport::default() };
                if only_here {
                    r.reported = p.reported_panel_size;
                } else {
                    r.not_at_clinic = p.reported_panel_size;
                }
                for e in self.state.panel(&p.id).into_iter().flat_map(|panel| panel.values()) {
                    if !counts(e.source.facility()) {
                        r.not_at_clinic += 1;
                        continue;
                    }
                    r.itemised += 1;
                    match AgeGroup::of_age(e.date_of_birth.age_on(today)) {
                        AgeGroup::Child => r.children += 1,
                        AgeGroup::Adult => r.adults += 1,
                        AgeGroup::Senior => r.seniors += 1,
                    }
                    if let Some(complex) = self.complexity_here(e) {
                        r.complexity_known += 1;
                        r.complex += u32::from(complex);
                    }
                }
                r.panel_size = r.reported + r.itemised;
                r
            })
            .collect();
        Ok(reports)
    }
}

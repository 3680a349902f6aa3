//! The provider side through the real actors and store: submission, waiting
//! patients leaving the waitlist, conflicts, removal, transfer and reports.

use crate::access::{Principal, Role, Scope};
use crate::domain::*;
use crate::error::ErrorCode;
use crate::panel::csv::{Limits, parse};
use crate::panel::{RowStatus, SubmissionReport};
use crate::shard::{ClinicCommand, ShardConfig, WaitlistQuery};
use crate::system::AttachSystem;

use super::tests::{c, household, phn, provider, sys, today, world};

pub(super) async fn clinic(system: &AttachSystem, facility: &str, community: &str) -> FacilityNumber {
    let f = FacilityNumber::parse(facility).unwrap();
    let details = ClinicInput::parse("Family Practice", "1 Main St", None, None).unwrap();
    let medical_director = Some(ProviderId::parse("MD999").unwrap());
    let cmd = ClinicCommand { facility: f.clone(), details, medical_director };
    system.upsert_clinic(&sys(), &c(community), cmd).await.unwrap();
    f
}

/// A panel file listing `phns`, born on the day `household` gives its members.
pub(super) fn csv_of(phns: &[Phn], facility: &str) -> String {
    csv_born(phns, facility, "1980-05-05")
}

/// A panel file listing `phns`, each born on `born`.
pub(super) fn csv_born(phns: &[Phn], facility: &str, born: &str) -> String {
    let mut out = String::from("PHN,Surname,Given name,Date of birth,Service code,Facility\r\n");
    for p in phns {
        out.push_str(&format!("{},Lee,Sam,{born},98990,{facility}\r\n", p.expose()));
    }
    out
}

pub(super) async fn submit(
    system: &AttachSystem,
    doc: &ProviderId,
    f: &FacilityNumber,
    text: &str,
) -> SubmissionReport {
    let parsed = parse(text.as_bytes(), f, Limits::default(), today()).unwrap();
    system.submit_panel(&sys(), doc, f, parsed).await.unwrap()
}

/// A world with provider P2222, homed in community 112, listed at clinic 0F111 of community 111.
async fn panel_of_112(config: ShardConfig) -> (super::tests::World, FacilityNumber, ProviderId) {
    let w = world(config).await;
    let f = clinic(&w.system, "0F111", "111").await;
    let doc = provider(&w.system, "P2222", "112", 0).await;
    w.system.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    (w, f, doc)
}

/// A submission's first step on the provider's shard (`IHA/112`): it finds
/// which of `phns` wait, and keeps an intake for each (DECISIONS 44).
async fn first_step(s: &AttachSystem, doc: &ProviderId, f: &FacilityNumber, phns: &[Phn]) -> usize {
    let parsed = parse(csv_of(phns, f.as_str()).as_bytes(), f, Limits::default(), today()).unwrap();
    let rows = parsed
        .rows
        .into_iter()
        .map(|r| crate::panel::SubmittedRow { line: r.line, row: r.row.unwrap(), from_waitlist: None })
        .collect();
    let chunk = crate::panel::PanelChunk { provider: doc.clone(), facility: f.clone(), rows };
    let there = ShardKey::parse("IHA/112").unwrap();
    let answer =
        s.directory().call(&there, |reply| crate::shard::ShardMsg::SubmitPanel(chunk, sys(), reply)).await.unwrap();
    answer.waitlisted.len()
}

pub(super) fn statuses(r: &SubmissionReport) -> Vec<RowStatus> {
    r.rows.iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn a_submission_adds_takes_waiting_patients_and_never_moves_anyone_silently() {
    let config = ShardConfig { panel_chunk_rows: 2, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 0).await;
    let other = provider(s, "P2222", "112", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &other, true).await.unwrap();

    // Waiting: a single in 111, a family of two in 112 (another community's shard).
    let single = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration.reference;
    let family = s.register(&sys(), &c("112"), household(&[phn(2), phn(3)], &[Need::Frailty])).await.unwrap();
    let family = family.registration.reference;
    // On another provider's panel already.
    submit(s, &other, &f, &csv_of(&[phn(9)], "0F111")).await;
    let (_, mut feed) = s.subscribe(&sys(), &c("112")).unwrap();
    let (_, mut panels_feed) = s.subscribe(&sys(), &c("111")).unwrap();

    let text = csv_of(&[phn(1), phn(2), phn(4), phn(5), phn(9), phn(4)], "0F111");
    let report = submit(s, &doc, &f, &text).await;
    use RowStatus::*;
    assert_eq!(
        statuses(&report),
        [AttachedFromWaitlist, AttachedFromWaitlist, Accepted, Accepted, Conflict, Duplicate]
    );
    assert_eq!(report.rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4, 5, 6, 7]);
    assert_eq!(report.panel_size, 1000, "the four listed were among the 1,000 reported");
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().provider.reported_panel_size, 996);
    assert!(report.rows[4].message.as_deref().unwrap().contains("another provider's panel"));

    // The single left the waitlist attached; only the family member on the panel left theirs.
    let gone = s.registration(&sys(), &single).await.unwrap().registration;
    assert_eq!((gone.status, gone.provider.as_ref()), (RegistrationStatus::Attached, Some(&doc)));
    let fam = s.registration(&sys(), &family).await.unwrap();
    assert_eq!(fam.registration.status, RegistrationStatus::Waiting);
    assert_eq!(fam.registration.household.members.iter().map(|m| m.phn).collect::<Vec<_>>(), [phn(3)]);
    assert_eq!(fam.place, Some((1, 0)), "the rest of the household keeps its place");
    let event = feed.recv().await.unwrap();
    assert_eq!(
        event.kind,
        EventKind::LeftForPanel { reference: family, provider: doc.clone(), patients: 1 },
        "the waitlist's community sees the member leave for the panel"
    );
    let waiting = s.waitlist(&sys(), &c("111"), WaitlistQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(waiting.total_waiting, 0);
    // The panel's community tells the two who came off the waitlist as attached,
    // the provider's two existing patients as listed: the statistics' count.
    let (mut attached, mut listed) = (0, 0);
    while let Ok(event) = panels_feed.try_recv() {
        match event.kind {
            EventKind::Attached { patients, .. } => attached += u32::from(patients),
            EventKind::Listed { patients, .. } => listed += patients,
            _ => {}
        }
    }
    assert_eq!((attached, listed), (2, 2));
    assert_eq!(s.community_stats(&sys(), &c("111")).await.unwrap().counts.attached_people, 2);

    // The same file again changes nothing.
    let again = submit(s, &doc, &f, &text).await;
    assert_eq!(statuses(&again), [AlreadyOnPanel, AlreadyOnPanel, AlreadyOnPanel, AlreadyOnPanel, Conflict, Duplicate]);
    assert_eq!(again.panel_size, report.panel_size);
    assert_eq!(s.panel(&sys(), &other, 0, 10).await.unwrap().items.len(), 1, "the conflict moved nobody");

    // Patients on a panel cannot register; removed ones can.
    let taken = s.register(&sys(), &c("111"), household(&[phn(4)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict);
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(4), phn(7)]).await.unwrap(), [true, false]);
    s.register(&sys(), &c("111"), household(&[phn(4)], &[])).await.unwrap();

    // Wrong clinic; a provider off the clinic.
    let elsewhere = clinic(s, "0F222", "112").await;
    let parsed = parse(csv_of(&[phn(8)], "0F222").as_bytes(), &elsewhere, Limits::default(), today()).unwrap();
    assert_eq!(s.submit_panel(&sys(), &doc, &elsewhere, parsed).await.unwrap_err().code, ErrorCode::Conflict);
    s.stop().await;
}

#[tokio::test]
async fn a_waiting_patient_another_submission_takes_between_the_two_steps_still_counts_as_attached() {
    let (w, f, doc) = panel_of_112(ShardConfig::default()).await;
    let s = &w.system;
    let family = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let before = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;

    // One submission's first steps: the panel finds the patient waiting, the
    // registration lets them go, the claim names the panel.
    assert_eq!(first_step(s, &doc, &f, &[phn(1)]).await, 1);
    let (home, there) = (ShardKey::parse("IHA/111").unwrap(), ShardKey::parse("IHA/112").unwrap());
    let release = crate::panel::Release {
        reference: family.reference,
        phns: vec![phn(1)],
        provider: doc.clone(),
        provider_shard: there.clone(),
    };
    let released = s
        .directory()
        .call(&home, |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply))
        .await
        .unwrap();
    assert_eq!(released, [(phn(1), None)]);
    // Another submission of the same panel, at that moment, takes the patient:
    // the claim names the registration they came off, so they count from there.
    let other = submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await;
    assert_eq!(statuses(&other), [RowStatus::AttachedFromWaitlist]);
    // The first submission's second step finds them there, and counts nothing again.
    let parsed = parse(csv_of(&[phn(1)], "0F111").as_bytes(), &f, Limits::default(), today()).unwrap();
    let row = parsed.rows.into_iter().next().unwrap();
    let second = crate::panel::PanelChunk {
        provider: doc.clone(),
        facility: f.clone(),
        rows: vec![crate::panel::SubmittedRow {
            line: row.line,
            row: row.row.unwrap(),
            from_waitlist: Some(family.reference),
        }],
    };
    let answer =
        s.directory().call(&there, |reply| crate::shard::ShardMsg::SubmitPanel(second, sys(), reply)).await.unwrap();
    assert_eq!(answer.rows.iter().map(|r| r.status).collect::<Vec<_>>(), [RowStatus::AlreadyOnPanel]);
    let entry = s.panel(&sys(), &doc, 0, 10).await.unwrap().items.remove(0);
    assert_eq!(entry.source.reference(), Some(family.reference));
    let after = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;
    assert_eq!(after, before + 1, "an attachment from the waitlist, once");
    s.stop().await;
}

#[tokio::test]
async fn a_crash_after_a_waiting_single_left_for_the_panel_is_mended_by_submitting_again() {
    let (w, f, doc) = panel_of_112(ShardConfig::default()).await;
    let s = &w.system;
    let single = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let before = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;

    // Step one committed (the registration is attached to the provider), and the
    // process died before the claim moved to the panel: it still names the registration.
    let claim = s.store().phn_claim(phn(1)).await.unwrap().unwrap();
    let (home, there) = (ShardKey::parse("IHA/111").unwrap(), ShardKey::parse("IHA/112").unwrap());
    let release = crate::panel::Release {
        reference: single.reference,
        phns: vec![phn(1)],
        provider: doc.clone(),
        provider_shard: there,
    };
    s.directory().call(&home, |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply)).await.unwrap();
    let moved = s.store().phn_claim(phn(1)).await.unwrap().unwrap();
    assert_eq!(
        s.store().cas_phn_claim(phn(1), Some(&moved), Some(&claim)).await.unwrap(),
        crate::store::CasOutcome::Applied
    );
    let gone = s.registration(&sys(), &single.reference).await.unwrap().registration;
    assert!(gone.is_attached_to(&doc));

    // Submitting the same file again puts the patient on the panel (it said
    // "on another provider's panel" for good, and the PHN was held by no panel).
    let again = submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await;
    assert_eq!(statuses(&again), [RowStatus::AttachedFromWaitlist]);
    let entry = s.panel(&sys(), &doc, 0, 10).await.unwrap().items.remove(0);
    assert_eq!((entry.phn, entry.source.reference()), (phn(1), Some(single.reference)));
    let holder = s.store().phn_claim(phn(1)).await.unwrap().unwrap().holder;
    assert_eq!(holder, crate::store::PhnHolder::Panel(doc.clone()));
    let after = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;
    assert_eq!(after, before + 1, "counted once, as an attachment from the waitlist");
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await), [RowStatus::AlreadyOnPanel]);

    // Another provider listing that patient is still a conflict.
    let other = provider(s, "P3333", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &other, true).await.unwrap();
    assert_eq!(statuses(&submit(s, &other, &f, &csv_of(&[phn(1)], "0F111")).await), [RowStatus::Conflict]);
    s.stop().await;
}

#[tokio::test]
async fn a_crash_after_waiting_patients_claims_passed_to_the_panel_still_counts_them_from_the_waitlist() {
    let (w, f, doc) = panel_of_112(ShardConfig::default()).await;
    let s = &w.system;
    let single = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let pair = s.register(&sys(), &c("111"), household(&[phn(2), phn(3)], &[])).await.unwrap().registration;
    let before = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;

    // The panel found them waiting, the registrations let them go and passed
    // their claims to the panel, and the process died before the panel's step.
    assert_eq!(first_step(s, &doc, &f, &[phn(1), phn(2)]).await, 2);
    let home = ShardKey::parse("IHA/111").unwrap();
    for (reference, phns) in [(single.reference, vec![phn(1)]), (pair.reference, vec![phn(2)])] {
        let release = crate::panel::Release {
            reference,
            phns,
            provider: doc.clone(),
            provider_shard: ShardKey::parse("IHA/112").unwrap(),
        };
        let answer = s
            .directory()
            .call(&home, |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply))
            .await
            .unwrap();
        assert!(answer.iter().all(|(_, why)| why.is_none()), "{answer:?}");
    }
    let passed = s.store().phn_claim(phn(2)).await.unwrap().unwrap().holder;
    assert_eq!(passed, crate::store::PhnHolder::PanelFrom(doc.clone(), pair.reference));
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());

    // Submitting the file again saves the entries as attachments from the
    // waitlist (it said ACCEPTED, one of the provider's existing patients, and
    // the attachments were never counted), and the claims become the panel's.
    let again = submit(s, &doc, &f, &csv_of(&[phn(1), phn(2)], "0F111")).await;
    assert_eq!(statuses(&again), [RowStatus::AttachedFromWaitlist, RowStatus::AttachedFromWaitlist]);
    let mut entries = s.panel(&sys(), &doc, 0, 10).await.unwrap().items;
    entries.sort_by_key(|e| e.phn);
    let sources: Vec<_> = entries.iter().map(|e| (e.phn, e.source.reference())).collect();
    assert_eq!(sources, [(phn(1), Some(single.reference)), (phn(2), Some(pair.reference))]);
    for p in [phn(1), phn(2)] {
        let holder = s.store().phn_claim(p).await.unwrap().unwrap().holder;
        assert_eq!(holder, crate::store::PhnHolder::Panel(doc.clone()));
    }
    let after = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;
    assert_eq!(after, before + 2, "both counted as attachments from the waitlist");
    let waiting = s.registration(&sys(), &pair.reference).await.unwrap().registration;
    assert_eq!((waiting.status, waiting.registered_at), (RegistrationStatus::Waiting, pair.registered_at));
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(2)], "0F111")).await), [RowStatus::AlreadyOnPanel]);
    // The submission sent again ended the intakes: nothing is left for the pass.
    let there = ShardKey::parse("IHA/112").unwrap();
    for p in [phn(1), phn(2)] {
        let intake = crate::store::RecordKey::PanelIntake(doc.clone(), p);
        assert_eq!(s.store().read(&there, &intake).await.unwrap(), None);
    }

    // Taken off the panel, the patient's PHN is free again.
    s.remove_from_panel(&sys(), &doc, vec![phn(2)]).await.unwrap();
    assert_eq!(s.store().phn_claim(phn(2)).await.unwrap(), None);
    // A claim naming the registration left over with no intake (its settling and
    // then a removal's freeing both failed) lists the patient, and counts nothing again.
    let left_over = crate::store::PhnClaim {
        shard: there,
        holder: crate::store::PhnHolder::PanelFrom(doc.clone(), pair.reference),
        at: Timestamp::now(),
    };
    s.store().cas_phn_claim(phn(2), None, Some(&left_over)).await.unwrap();
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(2)], "0F111")).await), [RowStatus::Accepted]);
    let again = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;
    assert_eq!(again, after - 1, "listed again, not a second attachment (the removal took the first one out)");
    s.stop().await;
}

#[tokio::test]
async fn a_submission_cut_off_between_its_steps_is_finished_by_the_next_pass_and_strands_nobody() {
    let config = ShardConfig { claim_grace: std::time::Duration::from_millis(50), ..ShardConfig::default() };
    let (w, f, doc) = panel_of_112(config.clone()).await;
    let s = &w.system;
    let single = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let pair = s.register(&sys(), &c("111"), household(&[phn(2), phn(3)], &[])).await.unwrap().registration;
    let unasked = s.register(&sys(), &c("111"), household(&[phn(4)], &[])).await.unwrap().registration;
    let halfway = s.register(&sys(), &c("111"), household(&[phn(5)], &[])).await.unwrap().registration;
    let before = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;

    // The provider's first step finds four patients waiting. Two registrations
    // let theirs go and pass the claims to the panel; one lets its patient go
    // and dies before passing the claim on; the last was never asked. Then the
    // process dies, before the panel saves anyone.
    let (home, there) = (ShardKey::parse("IHA/111").unwrap(), ShardKey::parse("IHA/112").unwrap());
    assert_eq!(first_step(s, &doc, &f, &[phn(1), phn(2), phn(4), phn(5)]).await, 4);
    let waiting_claim = s.store().phn_claim(phn(5)).await.unwrap().unwrap();
    for (reference, phns) in
        [(single.reference, vec![phn(1)]), (pair.reference, vec![phn(2)]), (halfway.reference, vec![phn(5)])]
    {
        let release = crate::panel::Release { reference, phns, provider: doc.clone(), provider_shard: there.clone() };
        let msg = |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply);
        assert!(s.directory().call(&home, msg).await.unwrap().iter().all(|(_, why)| why.is_none()));
    }
    let passed = s.store().phn_claim(phn(5)).await.unwrap().unwrap();
    let put_back = s.store().cas_phn_claim(phn(5), Some(&passed), Some(&waiting_claim)).await.unwrap();
    assert_eq!(put_back, crate::store::CasOutcome::Applied);
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let s = &super::tests::start(&path, config).await;

    // Off the waitlist and on no panel: until the pass, which leaves a young cut-off alone.
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    assert_eq!(s.finish_intakes_everywhere(Timestamp::now().plus_ms(-60_000)).await, 0, "too young");
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    // Past the claim grace, the panel's pending intake still holds the patient:
    // neither another provider's panel nor a new registration takes them.
    let other = provider(s, "P3333", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &other, true).await.unwrap();
    assert_eq!(statuses(&submit(s, &other, &f, &csv_of(&[phn(1)], "0F111")).await), [RowStatus::Conflict]);
    let taken = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict);
    let taken = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::Conflict, "in the panel's own community too");

    // The pass finishes what the provider asked for, each patient from where the crash left them.
    assert_eq!(s.finish_intakes_everywhere(Timestamp::now()).await, 4);
    let mut entries = s.panel(&sys(), &doc, 0, 10).await.unwrap().items;
    entries.sort_by_key(|e| e.phn);
    let sources: Vec<_> = entries.iter().map(|e| (e.phn, e.source.reference())).collect();
    let expected = [
        (phn(1), Some(single.reference)),
        (phn(2), Some(pair.reference)),
        (phn(4), Some(unasked.reference)),
        (phn(5), Some(halfway.reference)),
    ];
    assert_eq!(sources, expected);
    let after = s.community_stats(&sys(), &c("112")).await.unwrap().counts.attached_people;
    assert_eq!(after, before + 4, "counted as attachments from the waitlist, once each");
    for r in [&single, &unasked, &halfway] {
        let reg = s.registration(&sys(), &r.reference).await.unwrap().registration;
        assert!(reg.is_attached_to(&doc), "{reg:?}");
    }
    let left = s.registration(&sys(), &pair.reference).await.unwrap().registration;
    assert_eq!(
        (left.status, left.registered_at, left.household.members.len()),
        (RegistrationStatus::Waiting, pair.registered_at, 1)
    );
    for p in [phn(1), phn(2), phn(4), phn(5)] {
        let holder = s.store().phn_claim(p).await.unwrap().unwrap().holder;
        assert_eq!(holder, crate::store::PhnHolder::Panel(doc.clone()), "settled");
    }
    assert_eq!(s.finish_intakes_everywhere(Timestamp::now()).await, 0, "nothing left to finish");
    assert_eq!(
        statuses(&submit(s, &doc, &f, &csv_of(&[phn(1), phn(2)], "0F111")).await),
        [RowStatus::AlreadyOnPanel, RowStatus::AlreadyOnPanel]
    );

    // A row the submission was told is a CONFLICT leaves nothing for the pass:
    // a waiting patient born on another day than the file says stays waiting.
    let mistyped = s.register(&sys(), &c("111"), household(&[phn(6)], &[])).await.unwrap().registration;
    let report = submit(s, &doc, &f, &csv_born(&[phn(6)], "0F111", "1990-01-01")).await;
    assert_eq!(statuses(&report), [RowStatus::Conflict]);
    let intake = crate::store::RecordKey::PanelIntake(doc.clone(), phn(6));
    assert_eq!(s.store().read(&there, &intake).await.unwrap(), None);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert_eq!(s.finish_intakes_everywhere(Timestamp::now()).await, 0);
    let still = s.registration(&sys(), &mistyped.reference).await.unwrap().registration;
    assert_eq!(still.status, RegistrationStatus::Waiting);
    s.stop().await;
}

/// A provider who removes patients a cut-off submission was still taking
/// (DECISIONS 44) has them not taken: the pass finds nothing left to finish.
/// One the registration had let go stays off the waitlist with its claim free,
/// as any patient removed from the panel; one still waiting waits on.
#[tokio::test]
async fn patients_removed_before_the_pass_finishes_their_cut_off_submission_are_not_taken() {
    let config = ShardConfig { claim_grace: std::time::Duration::from_millis(50), ..ShardConfig::default() };
    let (w, f, doc) = panel_of_112(config).await;
    let s = &w.system;
    let let_go = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let waiting = s.register(&sys(), &c("111"), household(&[phn(2)], &[])).await.unwrap().registration;
    assert_eq!(first_step(s, &doc, &f, &[phn(1), phn(2)]).await, 2);
    let (home, there) = (ShardKey::parse("IHA/111").unwrap(), ShardKey::parse("IHA/112").unwrap());
    let release = crate::panel::Release {
        reference: let_go.reference,
        phns: vec![phn(1)],
        provider: doc.clone(),
        provider_shard: there,
    };
    let msg = |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply);
    assert!(s.directory().call(&home, msg).await.unwrap().iter().all(|(_, why)| why.is_none()));

    // The provider removes both before the pass: they were on their way, so they count as removed.
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1), phn(2)]).await.unwrap(), vec![true, true]);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert_eq!(s.finish_intakes_everywhere(Timestamp::now()).await, 0, "nothing left to take");
    assert!(s.panel(&sys(), &doc, 0, 10).await.unwrap().items.is_empty());
    assert_eq!(s.store().phn_claim(phn(1)).await.unwrap(), None, "free, as for any patient removed");
    let still = s.registration(&sys(), &waiting.reference).await.unwrap().registration;
    assert_eq!((still.status, still.registered_at), (RegistrationStatus::Waiting, waiting.registered_at));
    let holder = s.store().phn_claim(phn(2)).await.unwrap().unwrap().holder;
    assert_eq!(holder, crate::store::PhnHolder::Registration(waiting.reference), "the waiting household keeps it");
    // And the patient let go may join another list.
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await), [RowStatus::Accepted]);
    s.stop().await;
}

/// Two transfers between the same providers, one each way, running at once:
/// each moves the panel its source had, once, and nobody is left on neither
/// panel (an exploratory tester saw 4,000 patients fall to 500).
#[tokio::test]
async fn two_transfers_each_way_at_once_swap_the_panels_and_lose_nobody() {
    let config = ShardConfig { transfer_chunk: 3, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let a = provider(s, "P1111", "111", 0).await;
    let b = provider(s, "P2222", "112", 0).await;
    for p in [&a, &b] {
        s.set_provider_clinic(&sys(), &f, p, true).await.unwrap();
    }
    let (a_phns, b_phns): (Vec<Phn>, Vec<Phn>) = ((100..140).map(phn).collect(), (200..240).map(phn).collect());
    submit(s, &a, &f, &csv_of(&a_phns, "0F111")).await;
    submit(s, &b, &f, &csv_of(&b_phns, "0F111")).await;
    let (to_b, to_a) = (TransferKey::parse("a-to-b").unwrap(), TransferKey::parse("b-to-a").unwrap());
    s.begin_transfer(&sys(), to_b.clone(), &a, &b, &f).await.unwrap();
    s.begin_transfer(&sys(), to_a.clone(), &b, &a, &f).await.unwrap();
    let (one, other) = futures::join!(s.run_transfer(&a, &to_b), s.run_transfer(&b, &to_a));
    let (one, other) = (one.unwrap(), other.unwrap());
    assert_eq!((one.status, other.status), (TransferStatus::Completed, TransferStatus::Completed));
    assert_eq!((one.moved, other.moved), (40, 40), "each patient moved once");
    let on = |p: &ProviderId| {
        let p = p.clone();
        async move {
            let mut phns: Vec<Phn> = s.panel(&sys(), &p, 0, 200).await.unwrap().items.iter().map(|e| e.phn).collect();
            phns.sort();
            phns
        }
    };
    assert_eq!((on(&a).await, on(&b).await), (b_phns.clone(), a_phns.clone()), "the panels swapped");
    for phn in a_phns.iter().chain(&b_phns) {
        let holder = s.store().phn_claim(*phn).await.unwrap().unwrap().holder;
        let expected = if a_phns.contains(phn) { &b } else { &a };
        assert_eq!(holder, crate::store::PhnHolder::Panel(expected.clone()));
    }
    s.stop().await;
}

#[tokio::test]
async fn a_transfer_moves_every_patient_once_and_can_be_run_again() {
    let config = ShardConfig { transfer_chunk: 7, panel_chunk_rows: 50, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let a = provider(s, "P1111", "111", 0).await;
    let b = provider(s, "P2222", "112", 0).await;
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    let phns: Vec<Phn> = (100..160).map(phn).collect();
    submit(s, &a, &f, &csv_born(&phns, "0F111", "1950-05-05")).await;
    // A matched patient too: their registration holds the PHN.
    s.set_capacity(
        &sys(),
        &a,
        Capacity::new(true, 5, 2000, ComplexityMix::default(), vec![], Default::default()).unwrap(),
    )
    .await
    .unwrap();
    s.register(&sys(), &c("111"), household(&[phn(200)], &[Need::Palliative])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, crate::shard::Answer::Accept).await.unwrap();
    let report = s.panel_report(&sys(), &a).await.unwrap();
    assert_eq!((report.itemised, report.seniors, report.complexity_known, report.complex), (61, 60, 1, 1));

    let key = TransferKey::parse("move-a-to-b").unwrap();
    let refused = s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "B is not at the clinic yet");
    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &a, false).await.unwrap();
    // A left the clinic and B joined it: B's upload of A's patients moves nobody.
    let b_upload = submit(s, &b, &f, &csv_of(&phns, "0F111")).await;
    assert!(b_upload.rows.iter().all(|r| r.status == RowStatus::Conflict));
    assert_eq!(s.panel(&sys(), &a, 0, 100).await.unwrap().items.len(), 61, "still A's");
    // A panel moves between two of the clinic's providers: A is listed there for the handover.
    let refused = s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "A is not at the clinic now");
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    let t = s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    assert_eq!((t.total, t.status), (61, TransferStatus::Running));
    let done = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((done.moved, done.skipped, done.status), (61, 0, TransferStatus::Completed));
    assert_eq!(s.panel(&sys(), &a, 0, 100).await.unwrap().items.len(), 0);
    assert_eq!(s.panel(&sys(), &b, 0, 100).await.unwrap().items.len(), 61);
    // The matched patient's complexity moved with them (B is homed in 112, the registration in 111).
    let report = s.panel_report(&sys(), &b).await.unwrap();
    assert_eq!((report.itemised, report.complexity_known, report.complex), (61, 1, 1));
    // Now B's upload is already there.
    let b_again = submit(s, &b, &f, &csv_of(&phns, "0F111")).await;
    assert!(b_again.rows.iter().all(|r| r.status == RowStatus::AlreadyOnPanel));
    // Again: nothing changes; the same key for another target is refused.
    assert_eq!(s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap(), done);
    assert_eq!(s.run_transfer(&a, &key).await.unwrap(), done);
    let c2 = provider(s, "P3333", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &c2, true).await.unwrap();
    assert_eq!(s.begin_transfer(&sys(), key.clone(), &a, &c2, &f).await.unwrap_err().code, ErrorCode::Conflict);
    // B now holds the PHNs: B removes a patient, A cannot submit them silently.
    let back = parse(csv_of(&phns[..1], "0F111").as_bytes(), &f, Limits::default(), today()).unwrap();
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    assert_eq!(statuses(&s.submit_panel(&sys(), &a, &f, back).await.unwrap()), [RowStatus::Conflict]);
    let clinic_reports = s.clinic_panel_reports(&sys(), &f).await.unwrap();
    assert_eq!(clinic_reports.iter().map(|r| r.itemised).sum::<u32>(), 61);
    s.stop().await;
}

#[tokio::test]
async fn a_panel_moves_only_once_both_providers_agree() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let (a, b, d) = (
        provider(s, "P1111", "111", 0).await,
        provider(s, "P2222", "112", 0).await,
        provider(s, "P3333", "111", 0).await,
    );
    for p in [&a, &b, &d] {
        s.set_provider_clinic(&sys(), &f, p, true).await.unwrap();
    }
    submit(s, &a, &f, &csv_of(&[phn(1), phn(2)], "0F111")).await;
    let as_provider =
        |id: &ProviderId| Principal::new(format!("u-{id}"), Role::Provider, Some(id.clone()), Scope::default());
    let md = Principal::new("md", Role::MedicalDirector, Some(ProviderId::parse("MD999").unwrap()), Scope::default());
    let other_md =
        Principal::new("md2", Role::MedicalDirector, Some(ProviderId::parse("MD888").unwrap()), Scope::default());
    let code = |r: Result<PanelTransfer, crate::error::AttachError>| r.unwrap_err().code;

    // A director lists A and B and asks: neither has agreed, nothing moves.
    let key = TransferKey::parse("k1").unwrap();
    s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap();
    let other = TransferKey::parse("k2").unwrap();
    assert_eq!(code(s.begin_transfer(&md, other.clone(), &a, &d, &f).await), ErrorCode::Conflict, "one at a time");
    // The receiver (homed in 112; the transfer is kept in 111, with the source) finds it awaiting them.
    let awaiting = s.panel_transfers(&as_provider(&b), &b).await.unwrap();
    assert_eq!(awaiting.iter().map(|t| (&t.key, t.status.name())).collect::<Vec<_>>(), [(&key, "AWAITING_AGREEMENT")]);
    assert_eq!(s.panel_transfers(&as_provider(&a), &a).await.unwrap().len(), 1, "and the source");
    let listing = s.panel_transfers(&as_provider(&d), &b).await;
    assert_eq!(listing.map(|_| ()).unwrap_err().code, ErrorCode::Forbidden, "only their own");
    // Only the two providers answer; another director or provider may not.
    assert_eq!(code(s.answer_transfer(&as_provider(&d), &a, &key, true).await), ErrorCode::Forbidden);
    assert_eq!(code(s.answer_transfer(&md, &a, &key, true).await), ErrorCode::Forbidden);
    assert_eq!(code(s.answer_transfer(&other_md, &a, &key, false).await), ErrorCode::Forbidden);
    let t = s.answer_transfer(&as_provider(&b), &a, &key, true).await.unwrap();
    assert_eq!(t.status, TransferStatus::Awaiting { source: false, receiver: true });
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 0);
    assert_eq!(s.panel(&sys(), &a, 0, 10).await.unwrap().items.len(), 2, "still A's");
    // A declines: cancelled for good; the panel stays.
    let t = s.answer_transfer(&as_provider(&a), &a, &key, false).await.unwrap();
    assert_eq!(t.status, TransferStatus::Cancelled);
    assert_eq!(code(s.answer_transfer(&as_provider(&a), &a, &key, true).await), ErrorCode::Conflict);
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 0);

    // The director withdraws one asked for by mistake.
    let t = s.begin_transfer(&md, other.clone(), &a, &d, &f).await.unwrap();
    assert_eq!(t.status.name(), "AWAITING_AGREEMENT");
    assert_eq!(s.answer_transfer(&md, &a, &other, false).await.unwrap().status, TransferStatus::Cancelled);

    // A director who is the source agrees by asking; the receiver's agreement starts it.
    let a_directs = Principal::new("a", Role::MedicalDirector, Some(a.clone()), Scope::default());
    let details = ClinicInput::parse("Family Practice", "1 Main St", None, None).unwrap();
    let handed_over = ClinicCommand { facility: f.clone(), details, medical_director: Some(a.clone()) };
    s.upsert_clinic(&sys(), &c("111"), handed_over).await.unwrap();
    let third = TransferKey::parse("k3").unwrap();
    let t = s.begin_transfer(&a_directs, third.clone(), &a, &b, &f).await.unwrap();
    assert_eq!(t.status, TransferStatus::Awaiting { source: true, receiver: false });
    let t = s.answer_transfer(&as_provider(&b), &a, &third, true).await.unwrap();
    assert_eq!((t.status, t.total), (TransferStatus::Running, 2));
    assert_eq!(s.run_transfer(&a, &third).await.unwrap().moved, 2);
    assert_eq!(s.answer_transfer(&as_provider(&b), &a, &third, true).await.unwrap().status, TransferStatus::Completed);
    assert_eq!(code(s.answer_transfer(&as_provider(&a), &a, &third, false).await), ErrorCode::Conflict);
    s.stop().await;
}

#[tokio::test]
async fn a_transfer_whose_receiver_leaves_the_clinic_stops_instead_of_sticking() {
    let config = ShardConfig { transfer_chunk: 2, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 0).await, provider(s, "P2222", "112", 0).await);
    for p in [&a, &b] {
        s.set_provider_clinic(&sys(), &f, p, true).await.unwrap();
    }
    submit(s, &a, &f, &csv_of(&(1..=6).map(phn).collect::<Vec<_>>(), "0F111")).await;
    let as_provider =
        |id: &ProviderId| Principal::new(format!("u-{id}"), Role::Provider, Some(id.clone()), Scope::default());
    let md = Principal::new("md", Role::MedicalDirector, Some(ProviderId::parse("MD999").unwrap()), Scope::default());
    let code = |r: Result<PanelTransfer, crate::error::AttachError>| r.unwrap_err().code;

    // The receiver is taken off the clinic before agreeing: the agreement is refused, and the
    // director withdraws the transfer.
    let key = TransferKey::parse("k1").unwrap();
    s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap();
    s.answer_transfer(&as_provider(&a), &a, &key, true).await.unwrap();
    s.set_provider_clinic(&md, &f, &b, false).await.unwrap();
    assert_eq!(code(s.answer_transfer(&as_provider(&b), &a, &key, true).await), ErrorCode::Conflict);
    assert_eq!(s.answer_transfer(&md, &a, &key, false).await.unwrap().status, TransferStatus::Cancelled);

    // Listed again and agreed, then taken off once it runs: the runner stops it, and the
    // patients moved so far stay with the receiver; the panel is free for another transfer.
    s.set_provider_clinic(&md, &f, &b, true).await.unwrap();
    let key = TransferKey::parse("k2").unwrap();
    s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap();
    s.answer_transfer(&as_provider(&a), &a, &key, true).await.unwrap();
    s.answer_transfer(&as_provider(&b), &a, &key, true).await.unwrap();
    s.set_provider_clinic(&md, &f, &b, false).await.unwrap();
    let stopped = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((stopped.status, stopped.moved), (TransferStatus::Cancelled, 0));
    assert_eq!(s.panel(&sys(), &a, 0, 10).await.unwrap().items.len(), 6, "nobody moved, nobody lost");

    // Listed again; a chunk reached the receiver but its second step never ran (a failed
    // call), then the receiver is taken off: the runner drops what the receiver took from
    // the source before it stops, so each patient is on exactly one panel.
    s.set_provider_clinic(&md, &f, &b, true).await.unwrap();
    let key = TransferKey::parse("k3").unwrap();
    s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap();
    s.answer_transfer(&as_provider(&a), &a, &key, true).await.unwrap();
    s.answer_transfer(&as_provider(&b), &a, &key, true).await.unwrap();
    assert_eq!(code(s.answer_transfer(&md, &a, &key, false).await), ErrorCode::Conflict, "too late to withdraw");
    let chunk = read_chunk(s, &a, &b, &f, &key).await;
    assert_eq!(take_chunk(s, chunk).await.moved.len(), 2);
    s.set_provider_clinic(&md, &f, &b, false).await.unwrap();
    let stopped = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((stopped.status, stopped.moved), (TransferStatus::Cancelled, 2));
    let (left, moved) =
        (s.panel(&sys(), &a, 0, 10).await.unwrap().items, s.panel(&sys(), &b, 0, 10).await.unwrap().items);
    assert_eq!((left.len(), moved.len()), (4, 2), "every patient on exactly one panel");
    assert!(left.iter().all(|e| !moved.iter().any(|m| m.phn == e.phn)));
    s.stop().await;
}

/// A running transfer of four patients from P1111 (in 111) to P2222 (in
/// `receiver_community`), in chunks of two, with its first chunk read by the
/// runner and not yet sent: the world, the two providers, the clinic, the
/// transfer's key and the chunk as the receiver would take it.
async fn transfer_with_a_chunk_read(
    receiver_community: &str,
) -> (super::tests::World, ProviderId, ProviderId, TransferKey, crate::panel::Transferring) {
    let w = world(ShardConfig { transfer_chunk: 2, ..ShardConfig::default() }).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 0).await, provider(s, "P2222", receiver_community, 0).await);
    for p in [&a, &b] {
        s.set_provider_clinic(&sys(), &f, p, true).await.unwrap();
    }
    submit(s, &a, &f, &csv_of(&(1..=4).map(phn).collect::<Vec<_>>(), "0F111")).await;
    let key = TransferKey::parse("k1").unwrap();
    s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    let chunk = read_chunk(s, &a, &b, &f, &key).await;
    (w, a, b, key, chunk)
}

/// The next chunk of two of transfer `key` from `from`, as the runner reads it
/// from the source's shard, addressed to `to` at `facility`; not yet sent.
async fn read_chunk(
    s: &AttachSystem,
    from: &ProviderId,
    to: &ProviderId,
    facility: &FacilityNumber,
    key: &TransferKey,
) -> crate::panel::Transferring {
    let from_shard = s.provider(&sys(), from).await.unwrap().provider.shard;
    let (from_, key_) = (from.clone(), key.clone());
    let (_, entries) = s
        .directory()
        .call(&from_shard, |reply| crate::shard::ShardMsg::TransferBatch { from: from_, key: key_, limit: 2, reply })
        .await
        .unwrap();
    crate::panel::Transferring { from: from.clone(), from_shard, to: to.clone(), facility: facility.clone(), entries }
}

/// The chunk's step one, on the receiver's shard.
async fn take_chunk(s: &AttachSystem, chunk: crate::panel::Transferring) -> crate::panel::TransferAccepted {
    let to = s.provider(&sys(), &chunk.to).await.unwrap().provider.shard;
    s.directory().call(&to, |reply| crate::shard::ShardMsg::AcceptTransfer(chunk, reply)).await.unwrap()
}

fn phns_of(items: &[crate::domain::PanelEntry]) -> Vec<Phn> {
    let mut phns: Vec<Phn> = items.iter().map(|e| e.phn).collect();
    phns.sort_unstable();
    phns
}

#[tokio::test]
async fn a_removal_between_a_transfers_two_steps_leaves_the_moved_patients_to_the_receiver() {
    let (w, a, b, key, chunk) = transfer_with_a_chunk_read("112").await;
    let s = &w.system;
    // The chunk reaches the receiver; its second step has not run yet.
    let taken = phns_of(&chunk.entries);
    take_chunk(s, chunk).await;
    // The source's provider removes everyone: the two the receiver holds are not
    // theirs to remove any more (a tester saw them answered removed, yet kept on
    // the receiver's panel with their PHNs claimed).
    let everyone: Vec<Phn> = (1..=4).map(phn).collect();
    let answered = s.remove_from_panel(&sys(), &a, everyone.clone()).await.unwrap();
    let expected: Vec<bool> = everyone.iter().map(|p| !taken.contains(p)).collect();
    assert_eq!(answered, expected);
    let done = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((done.status, done.moved), (TransferStatus::Completed, 2), "{done:?}");
    assert_eq!(phns_of(&s.panel(&sys(), &b, 0, 10).await.unwrap().items), taken);
    assert!(s.panel(&sys(), &a, 0, 10).await.unwrap().items.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_patient_removed_after_a_transfer_read_its_chunk_is_not_moved_onto_the_receivers_panel() {
    let (w, a, b, key, chunk) = transfer_with_a_chunk_read("111").await;
    let s = &w.system;
    // The runner read the chunk; the provider removes its patients; then the chunk reaches the receiver.
    let read = phns_of(&chunk.entries);
    assert_eq!(s.remove_from_panel(&sys(), &a, read.clone()).await.unwrap(), [true, true]);
    let taken = take_chunk(s, chunk).await;
    assert!(taken.moved.is_empty() && taken.skipped.is_empty(), "{taken:?}");
    // A tester saw such patients on the receiver's panel, their PHNs held, though their removal was answered done.
    let done = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((done.status, done.moved), (TransferStatus::Completed, 2), "{done:?}");
    let received = phns_of(&s.panel(&sys(), &b, 0, 10).await.unwrap().items);
    assert!(received.iter().all(|p| !read.contains(p)), "{received:?}");
    for p in &read {
        assert!(s.store().phn_claim(*p).await.unwrap().is_none(), "free to register or be listed");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_clinics_report_counts_only_the_part_of_each_panel_at_that_clinic() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f1, f2) = (clinic(s, "0F111", "111").await, clinic(s, "0F222", "111").await);
    // A practises at both clinics, B at the first only; each reported 1,000
    // before Attach, and each patient listed is one of those counted.
    let a = provider(s, "P1111", "111", 0).await;
    let b = provider(s, "P2222", "111", 0).await;
    for (f, p) in [(&f1, &a), (&f2, &a), (&f1, &b)] {
        s.set_provider_clinic(&sys(), f, p, true).await.unwrap();
    }
    submit(s, &a, &f1, &csv_of(&[phn(1), phn(2), phn(3)], "0F111")).await;
    submit(s, &a, &f2, &csv_of(&[phn(4), phn(5)], "0F222")).await;
    submit(s, &b, &f1, &csv_of(&[phn(6)], "0F111")).await;

    let counts = |r: &crate::panel::PanelReport| (r.panel_size, r.reported, r.itemised, r.not_at_clinic);
    let first = s.clinic_panel_reports(&sys(), &f1).await.unwrap();
    assert_eq!(first.iter().map(counts).collect::<Vec<_>>(), [(3, 0, 3, 997), (1000, 999, 1, 0)]);
    let second = s.clinic_panel_reports(&sys(), &f2).await.unwrap();
    assert_eq!(second.iter().map(counts).collect::<Vec<_>>(), [(2, 0, 2, 998)]);
    assert_eq!(counts(&s.panel_report(&sys(), &a).await.unwrap()), (1000, 995, 5, 0), "the whole panel");
    // Each report read is audited, by what it reports on (a small panel's age
    // groups and complexity say much of its patients; an audit tester found none).
    let support = Principal::new("support-1", Role::Support, None, Scope::parse(["community:112"]).unwrap());
    assert_eq!(s.panel_report(&support, &a).await.unwrap_err().code, ErrorCode::Forbidden);
    let query = crate::audit::AuditQuery {
        operation: Some(crate::access::Operation::ReadPanelReports),
        limit: 50,
        ..Default::default()
    };
    let read = s.audit_log(&sys(), query).await.unwrap();
    let seen: Vec<_> = read.iter().map(|r| (r.target.as_deref().unwrap_or(""), r.outcome.as_str())).collect();
    assert_eq!(seen, [("0F111", "OK"), ("0F222", "OK"), ("P1111", "OK"), ("P1111", "FORBIDDEN")]);
    s.stop().await;
}

#[tokio::test]
async fn only_the_provider_their_delegate_and_the_clinics_director_change_panels() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let a = provider(s, "P1111", "111", 0).await;
    let b = provider(s, "P2222", "112", 0).await;
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    let as_provider =
        |id: &ProviderId| Principal::new(format!("u-{id}"), Role::Provider, Some(id.clone()), Scope::default());
    let director = |id: &str| {
        let id = ProviderId::parse(id).unwrap();
        Principal::new(format!("md-{id}"), Role::MedicalDirector, Some(id), Scope::default())
    };
    let file = || parse(csv_of(&[phn(1)], "0F111").as_bytes(), &f, Limits::default(), today()).unwrap();
    let code = |r: Result<SubmissionReport, crate::error::AttachError>| r.map(|_| ()).unwrap_err().code;

    assert_eq!(code(s.submit_panel(&as_provider(&b), &a, &f, file()).await), ErrorCode::Forbidden);
    let moa = Principal::new("moa-1", Role::Delegate, None, Scope::default());
    assert_eq!(code(s.submit_panel(&moa, &a, &f, file()).await), ErrorCode::Forbidden, "no endorsement");
    let coordinator = Principal::new("c-1", Role::Coordinator, None, Scope::province());
    assert_eq!(code(s.submit_panel(&coordinator, &a, &f, file()).await), ErrorCode::Forbidden);
    let report = s.submit_panel(&as_provider(&a), &a, &f, file()).await.unwrap();
    assert_eq!(statuses(&report), [RowStatus::Accepted]);
    let removal = s.remove_from_panel(&as_provider(&b), &a, vec![phn(1)]).await.unwrap_err();
    assert_eq!(removal.code, ErrorCode::Forbidden);
    assert_eq!(s.panel_report(&as_provider(&b), &a).await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(s.panel_report(&as_provider(&a), &a).await.unwrap().itemised, 1);

    // Clinic staff and transfers: the clinic's medical director only.
    let other_md = director("MD888");
    let refused = s.set_provider_clinic(&other_md, &f, &b, false).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    let key = TransferKey::parse("k1").unwrap();
    assert_eq!(s.begin_transfer(&other_md, key.clone(), &a, &b, &f).await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(
        s.begin_transfer(&as_provider(&a), key.clone(), &a, &b, &f).await.unwrap_err().code,
        ErrorCode::Forbidden
    );
    let md = director("MD999");
    let t = s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap();
    assert_eq!(t.status, TransferStatus::Awaiting { source: false, receiver: false });
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 0, "nobody moves before both providers agree");
    assert_eq!(s.answer_transfer(&as_provider(&a), &a, &key, true).await.unwrap().status.name(), "AWAITING_AGREEMENT");
    assert_eq!(s.answer_transfer(&as_provider(&b), &a, &key, true).await.unwrap().status, TransferStatus::Running);
    s.set_provider_clinic(&md, &f, &a, false).await.unwrap();
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 1);
    assert_eq!(s.panel_transfer(&as_provider(&b), &a, &key).await.unwrap().key, t.key);
    // Another clinic's director is told no more than of a key that names nothing.
    let missing = TransferKey::parse("no-such-key").unwrap();
    assert_eq!(
        s.panel_transfer(&other_md, &a, &key).await.unwrap_err(),
        s.panel_transfer(&other_md, &a, &missing).await.unwrap_err()
    );
    assert_eq!(s.panel_transfer(&other_md, &a, &key).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.clinic_panel_reports(&other_md, &f).await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(s.clinic_panel_reports(&md, &f).await.unwrap().iter().map(|r| r.itemised).sum::<u32>(), 1);
    s.stop().await;
}

#[tokio::test]
async fn free_places_honour_accepting_the_monthly_rate_and_the_desired_size() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    // Reported 1000, desired 1005, 5 a month: 5 free.
    let doc = provider(s, "P1111", "111", 5).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 5);
    // Listing patients already counted leaves the panel, and the places, as they were...
    submit(s, &doc, &f, &csv_of(&[phn(1), phn(2), phn(3)], "0F111")).await;
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 5);
    let capacity = |accepting, rate, size| {
        Capacity::new(accepting, rate, size, ComplexityMix::default(), vec![], Default::default()).unwrap()
    };
    // ...the desired size bounds them...
    s.set_capacity(&sys(), &doc, capacity(true, 5, 1002)).await.unwrap();
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 2);
    // ...and a listed panel is not new patients: a larger desired size leaves the whole monthly rate.
    s.set_capacity(&sys(), &doc, capacity(true, 5, 5000)).await.unwrap();
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 5);
    s.set_capacity(&sys(), &doc, capacity(false, 5, 5000)).await.unwrap();
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 0, "not accepting");
    s.stop().await;
}

#[tokio::test]
async fn a_months_places_once_taken_stay_taken_when_the_patients_leave_the_panel() {
    use crate::shard::Answer;
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    // Five a month, room on the panel for far more.
    let doc = provider(s, "P1111", "111", 5).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let capacity = Capacity::new(true, 5, 5000, ComplexityMix::default(), vec![], Default::default()).unwrap();
    s.set_capacity(&sys(), &doc, capacity).await.unwrap();
    // Three matched and accepted, one waiting patient listed on a submitted panel: four of the five.
    s.register(&sys(), &c("111"), household(&[phn(1), phn(2), phn(3)], &[])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    s.register(&sys(), &c("111"), household(&[phn(4)], &[])).await.unwrap();
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(4)], "0F111")).await), [RowStatus::AttachedFromWaitlist]);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 1);
    // Taking the matched patients off the panel does not give the month's places back.
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1), phn(2), phn(3)]).await.unwrap(), [true, true, true]);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().free_places, 1, "five a month, not eight");
    s.stop().await;
}

#[tokio::test]
async fn a_provider_at_several_clinics_names_the_clinic_when_accepting() {
    use crate::shard::Answer;
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f1, f2, elsewhere) =
        (clinic(s, "0F111", "111").await, clinic(s, "0F222", "111").await, clinic(s, "0F333", "111").await);
    let doc = provider(s, "P2222", "111", 4).await;
    s.set_provider_clinic(&sys(), &f1, &doc, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f2, &doc, true).await.unwrap();
    let r = s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();

    let refused = s.answer(&sys(), &p.id, Answer::AcceptAt(elsewhere.clone())).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::Conflict, Some("facilityNumber")));
    assert_eq!(s.proposal(&sys(), &p.id).await.unwrap().status, ProposalStatus::Open, "nothing was accepted");
    assert_eq!(s.registration(&sys(), &r.reference).await.unwrap().registration.status, RegistrationStatus::Proposed);

    s.answer(&sys(), &p.id, Answer::AcceptAt(f2.clone())).await.unwrap();
    let entries = s.panel(&sys(), &doc, 0, 10).await.unwrap().items;
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.source.facility() == Some(&f2)), "{entries:?}");
    let doc = &doc;
    let at = |f: FacilityNumber| async move {
        let reports = s.clinic_panel_reports(&sys(), &f).await.unwrap();
        reports.into_iter().find(|r| r.provider.as_ref() == Some(doc)).unwrap()
    };
    assert_eq!(at(f2.clone()).await.itemised, 2, "counted for the clinic named");
    let other = at(f1.clone()).await;
    assert_eq!(other.itemised, 0, "and not for the provider's other clinic: {other:?}");
    // Taken off the clinic's list, the provider's patients filed there stay in its report.
    s.set_provider_clinic(&sys(), &f2, doc, false).await.unwrap();
    assert_eq!(at(f2.clone()).await.itemised, 2, "nothing disappears from view");
    s.stop().await;
}

#[tokio::test]
async fn a_patient_matched_before_entries_knew_complexity_keeps_it_through_a_transfer() {
    use crate::store::{Batch, Record, Store};
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 3).await, provider(s, "P2222", "112", 0).await);
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    s.register(&sys(), &c("111"), household(&[phn(1)], &[Need::Palliative])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, crate::shard::Answer::Accept).await.unwrap();
    let entry = s.panel(&sys(), &a, 0, 10).await.unwrap().items.pop().unwrap();
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);

    // Rewritten as a match recorded before session 9: no complexity in the entry.
    let PanelSource::MatchedWithNeeds { proposal, reference, facility, complex: true } = entry.source.clone() else {
        panic!("a new match knows its complexity: {:?}", entry.source)
    };
    let old = PanelEntry { source: PanelSource::Matched { proposal, reference, facility }, ..entry };
    {
        let store = crate::store::embedded::EmbeddedStore::open(&path, Default::default()).unwrap();
        let shard = ShardKey::parse("IHA/111").unwrap();
        let epoch = store.acquire_shard(&shard, "rewriter").await.unwrap();
        let batch = Batch { upserts: vec![Record::PanelEntry(old)], ..Batch::default() };
        store.commit(&shard, epoch, &batch).await.unwrap();
        store.release_shard(&shard, "rewriter", epoch).await.unwrap();
    }
    let s = super::tests::start(&path, ShardConfig::default()).await;
    let known = |r: crate::panel::PanelReport| (r.itemised, r.complexity_known, r.complex);
    assert_eq!(known(s.panel_report(&sys(), &a).await.unwrap()), (1, 1, 1), "from the registration beside it");

    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    let key = TransferKey::parse("old-match").unwrap();
    s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 1);
    // B is homed in 112, where the registration is not: the entry itself now says.
    let moved = s.panel(&sys(), &b, 0, 10).await.unwrap().items;
    assert!(
        matches!(moved[0].source, PanelSource::TransferredAttachment { complex: Some(true), .. }),
        "{:?}",
        moved[0]
    );
    assert_eq!(known(s.panel_report(&sys(), &b).await.unwrap()), (1, 1, 1));
    s.stop().await;
}

#[tokio::test]
async fn an_attachment_moved_by_a_transfer_still_counts_where_the_panel_is_now() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 3).await, provider(s, "P2222", "112", 0).await);
    s.set_provider_clinic(&sys(), &f, &a, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, crate::shard::Answer::Accept).await.unwrap();
    let matched_at = s.panel(&sys(), &a, 0, 10).await.unwrap().items[0].attached_at;
    async fn week(s: &AttachSystem, community: &str) -> (u64, u64) {
        let counts = s.community_stats(&sys(), &c(community)).await.unwrap().counts;
        (counts.attached_people_week, counts.attached_people)
    }
    assert_eq!((week(s, "111").await, week(s, "112").await), ((1, 1), (0, 0)));

    let key = TransferKey::parse("retiring").unwrap();
    s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    assert_eq!(s.run_transfer(&a, &key).await.unwrap().moved, 1);
    let moved = s.panel(&sys(), &b, 0, 10).await.unwrap().items;
    assert_eq!(moved[0].attachment_time(), Some(matched_at), "the same attachment");
    assert_eq!((week(s, "111").await, week(s, "112").await), ((0, 0), (1, 1)), "counted where the panel is now");
    // The same after a restart, which counts from the entries.
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let s = super::tests::start(&path, ShardConfig::default()).await;
    assert_eq!((week(&s, "111").await, week(&s, "112").await), ((0, 0), (1, 1)));
    // Leaving the panel takes it out, live and after a restart alike.
    s.remove_from_panel(&sys(), &b, vec![phn(1)]).await.unwrap();
    assert_eq!(week(&s, "112").await, (0, 0));
    s.stop().await;
}

#[tokio::test]
async fn a_matched_patient_joins_the_providers_only_clinic_and_no_clinic_when_there_are_several() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (f1, f2) = (clinic(s, "0F111", "111").await, clinic(s, "0F222", "111").await);
    let single = provider(s, "P1111", "111", 2).await;
    s.set_provider_clinic(&sys(), &f1, &single, true).await.unwrap();
    let several = provider(s, "P2222", "111", 2).await;
    s.set_provider_clinic(&sys(), &f1, &several, true).await.unwrap();
    s.set_provider_clinic(&sys(), &f2, &several, true).await.unwrap();
    // Each provider takes at most 2 a month: the two households of two go one to each.
    s.register(&sys(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap();
    s.register(&sys(), &c("111"), household(&[phn(3), phn(4)], &[])).await.unwrap();
    let proposals = s.run_matching(&sys(), &c("111")).await.unwrap();
    assert_eq!(proposals.iter().map(|p| &p.provider).collect::<std::collections::BTreeSet<_>>().len(), 2);
    for p in &proposals {
        s.answer(&sys(), &p.id, crate::shard::Answer::Accept).await.unwrap();
    }
    let entries = |provider| async move { s.panel(&sys(), provider, 0, 10).await.unwrap().items };
    let one = entries(&single).await;
    assert_eq!(one.len(), 2);
    for e in &one {
        assert!(matches!(e.source, PanelSource::MatchedWithNeeds { complex: false, .. }), "{:?}", e.source);
        assert_eq!(e.source.facility(), Some(&f1), "a provider at one clinic: that clinic");
        assert!(e.source.reference().is_some(), "still counted as off the waitlist");
    }
    let two = entries(&several).await;
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|e| e.source.facility().is_none()), "several clinics: none is guessed");
    // Matched patients are still new attachments for the monthly rate.
    assert_eq!(s.provider(&sys(), &single).await.unwrap().free_places, 0);

    // The provider's next panel list from clinic 0F222 names them: they are filed there.
    let several_ref = &several;
    let report_at_f2 = |f: FacilityNumber| async move {
        let reports = s.clinic_panel_reports(&sys(), &f).await.unwrap();
        let mine = reports.into_iter().find(|r| r.provider.as_ref() == Some(several_ref)).unwrap();
        (mine.itemised, mine.not_at_clinic)
    };
    let (itemised, elsewhere) = report_at_f2(f2.clone()).await;
    assert_eq!(itemised, 0, "before: not counted at either clinic");
    let listed: Vec<Phn> = two.iter().map(|e| e.phn).collect();
    let report = submit(s, &several, &f2, &csv_of(&listed, "0F222")).await;
    assert_eq!(statuses(&report), [RowStatus::AlreadyOnPanel, RowStatus::AlreadyOnPanel]);
    let why = report.rows[0].message.as_deref().unwrap_or_default();
    assert!(why.contains("filed at clinic 0F222"), "{why}");
    let filed = entries(&several).await;
    assert!(filed.iter().all(|e| e.source.facility() == Some(&f2)), "{filed:?}");
    assert!(filed.iter().all(|e| e.source.reference().is_some()), "still matched off the waitlist");
    assert_eq!(report_at_f2(f2.clone()).await, (2, elsewhere - 2), "counted for the clinic that listed them");
    // Once filed, a list from the other clinic changes nothing.
    let again = submit(s, &several, &f1, &csv_of(&listed, "0F111")).await;
    assert!(again.rows.iter().all(|r| r.status == RowStatus::AlreadyOnPanel && r.message.is_none()));
    assert!(entries(&several).await.iter().all(|e| e.source.facility() == Some(&f2)));
    s.stop().await;
}

#[tokio::test]
async fn a_clinics_staff_list_is_kept_by_its_director_audited_and_published() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let md = Principal::new("md-1", Role::MedicalDirector, Some(ProviderId::parse("MD999").unwrap()), Scope::default());
    let other_md =
        Principal::new("md-2", Role::MedicalDirector, Some(ProviderId::parse("MD888").unwrap()), Scope::default());
    let (_, mut feed) = s.subscribe(&sys(), &c("111")).unwrap();
    let input = |subject: &str, title: &str| StaffInput::parse(subject, "Jo Tremblay", title).unwrap();

    let moa = s.add_clinic_staff(&md, &f, input("moa-1", "MOA")).await.unwrap();
    assert_eq!(feed.recv().await.unwrap().kind, EventKind::ClinicUpdated { facility: "0F111".into() });
    s.add_clinic_staff(&md, &f, input("rn-1", "Nurse")).await.unwrap();
    let code = |r: Result<StaffMember, crate::error::AttachError>| r.unwrap_err().code;
    assert_eq!(code(s.add_clinic_staff(&md, &f, input("moa-1", "Nurse")).await), ErrorCode::Conflict);
    assert_eq!(code(s.add_clinic_staff(&other_md, &f, input("moa-2", "MOA")).await), ErrorCode::Forbidden);
    let unknown = FacilityNumber::parse("0F999").unwrap();
    assert_eq!(code(s.add_clinic_staff(&md, &unknown, input("moa-2", "MOA")).await), ErrorCode::NotFound);
    let coordinator = Principal::new("c-1", Role::Coordinator, None, Scope::province());
    assert_eq!(code(s.add_clinic_staff(&coordinator, &f, input("moa-2", "MOA")).await), ErrorCode::Forbidden);
    let nobody = DelegateId::parse("moa-9").unwrap();
    assert_eq!(code(s.remove_clinic_staff(&md, &f, &nobody).await), ErrorCode::NotFound);
    assert_eq!(code(s.remove_clinic_staff(&other_md, &f, &moa.subject).await), ErrorCode::Forbidden);
    let names = |list: Vec<StaffMember>| list.into_iter().map(|m| m.subject.to_string()).collect::<Vec<_>>();
    assert_eq!(names(s.clinic_staff(&md, &f).await.unwrap()), ["moa-1", "rn-1"], "refusals changed nothing");

    assert_eq!(s.remove_clinic_staff(&md, &f, &moa.subject).await.unwrap(), moa);
    assert_eq!(feed.recv().await.unwrap().kind, EventKind::ClinicUpdated { facility: "0F111".into() });
    assert_eq!(names(s.clinic_staff(&md, &f).await.unwrap()), ["rn-1"]);
    let nurse = Principal::new("rn-1", Role::Delegate, None, Scope::default());
    assert_eq!(names(s.clinic_staff(&nurse, &f).await.unwrap()), ["rn-1"], "a member sees their own entry");
    assert_eq!(s.clinic_staff(&other_md, &f).await.unwrap_err().code, ErrorCode::Forbidden);

    // Every attempt, refused or not, left one audit record naming clinic and member.
    let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
    let query = crate::audit::AuditQuery {
        operation: Some(crate::access::Operation::ManageClinicStaff),
        limit: 100,
        ..Default::default()
    };
    let audit = s.audit_log(&ops, query).await.unwrap();
    assert_eq!(audit.len(), 9);
    assert_eq!(audit.iter().filter(|r| r.outcome == crate::audit::Outcome::Ok).count(), 3);
    assert_eq!(audit[0].target.as_deref(), Some("0F111/moa-1"));
    assert_eq!(audit[0].shard.as_ref().map(|s| s.community.as_str()), Some("111"));
    s.stop().await;
}

#[tokio::test]
async fn a_stale_reported_count_stops_at_zero_and_a_removal_still_shrinks_the_panel() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = ProviderId::parse("P1111").unwrap();
    let input = crate::shard::ProviderInput {
        id: doc.clone(),
        given_name: PersonName::parse("Jo").unwrap(),
        surname: PersonName::parse("Doc").unwrap(),
        kind: ProviderKind::Physician,
        clinics: Some(vec![f.clone()]),
        reported_panel_size: Some(2),
    };
    s.upsert_provider(&sys(), &c("111"), input).await.unwrap();
    // Reported 2, then listed 3 (one taken on since): the list is what counts.
    let report = submit(s, &doc, &f, &csv_of(&[phn(1), phn(2), phn(3)], "0F111")).await;
    assert_eq!(report.panel_size, 3);
    let view = s.provider(&sys(), &doc).await.unwrap();
    assert_eq!((view.provider.reported_panel_size, view.panel_size), (0, 3));
    // The count does not come back when a listed patient leaves.
    assert_eq!(s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap(), [true]);
    let view = s.provider(&sys(), &doc).await.unwrap();
    assert_eq!((view.provider.reported_panel_size, view.panel_size), (0, 2));
    s.stop().await;
}

#[tokio::test]
async fn a_submission_stopped_part_way_says_what_it_kept() {
    // One row a chunk: a delegate's access revoked while their file goes in stops it between chunks.
    let config = ShardConfig { panel_chunk_rows: 1, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let as_doc = Principal::new("doc", Role::Provider, Some(doc.clone()), Scope::default());
    let moa = Principal::new("moa-1", Role::Delegate, None, Scope::default());
    let e = s.start_endorsement(&as_doc, &doc, DelegateId::parse("moa-1").unwrap()).await.unwrap();
    for step in [EndorsementStep::Receive, EndorsementStep::Approve] {
        s.advance_endorsement(&moa, &e.id, step).await.unwrap();
    }
    s.advance_endorsement(&as_doc, &e.id, EndorsementStep::Complete).await.unwrap();
    let phns: Vec<Phn> = (0..300).map(|i| phn(10_000 + i)).collect();
    let parsed = parse(csv_of(&phns, "0F111").as_bytes(), &f, Limits::default(), today()).unwrap();
    let on_panel = async || s.panel(&sys(), &doc, 0, 2_000).await.unwrap().items.len();
    // Revoked once the file has started going in (300 chunks take far longer than this takes).
    let revoking = async {
        while on_panel().await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        s.advance_endorsement(&as_doc, &e.id, EndorsementStep::Cancel).await.unwrap();
    };
    let (result, ()) = tokio::join!(s.submit_panel(&moa, &doc, &f, parsed), revoking);
    let kept = on_panel().await;
    assert!((1..300).contains(&kept), "stopped part way: {kept}");
    let e = result.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let said = format!("{kept} patients of the file were added to the panel before this and stay there");
    assert!(e.message.contains(&said), "{}", e.message);
}

#[tokio::test]
async fn patients_who_join_a_panel_while_it_moves_are_counted_in_its_total() {
    let config = ShardConfig { transfer_chunk: 4, ..ShardConfig::default() };
    let w = world(config).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let a = provider(s, "P1111", "111", 0).await;
    let b = provider(s, "P2222", "111", 0).await;
    for p in [&a, &b] {
        s.set_provider_clinic(&sys(), &f, p, true).await.unwrap();
    }
    submit(s, &a, &f, &csv_of(&(100..110).map(phn).collect::<Vec<_>>(), "0F111")).await;
    let key = TransferKey::parse("k").unwrap();
    let t = s.begin_transfer(&sys(), key.clone(), &a, &b, &f).await.unwrap();
    assert_eq!((t.total, t.status), (10, TransferStatus::Running));
    // Three more join A's panel after it started, before it ran.
    submit(s, &a, &f, &csv_of(&(200..203).map(phn).collect::<Vec<_>>(), "0F111")).await;
    let done = s.run_transfer(&a, &key).await.unwrap();
    assert_eq!((done.moved, done.total, done.status), (13, 13, TransferStatus::Completed), "never past 100 %");
    assert_eq!(s.panel(&sys(), &b, 0, 100).await.unwrap().items.len(), 13);
}

#[tokio::test]
async fn a_matched_patient_removed_with_a_claim_left_behind_is_listed_not_attached_again() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 10).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let r = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    s.answer(&sys(), &p.id, crate::shard::Answer::Accept).await.unwrap();
    let matched_claim = s.store().phn_claim(phn(1)).await.unwrap().unwrap();
    assert_eq!(matched_claim.holder, crate::store::PhnHolder::Registration(r.reference));
    let (_, mut feed) = s.subscribe(&sys(), &c("111")).unwrap();
    // The provider removes the patient; the process dies before the claim is freed.
    s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap();
    if s.store().phn_claim(phn(1)).await.unwrap().is_none() {
        s.store().cas_phn_claim(phn(1), None, Some(&matched_claim)).await.unwrap();
    }
    // Months later the provider lists the patient again on a submitted panel.
    let again = submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await;
    let mut attached = 0;
    while let Ok(e) = feed.try_recv() {
        if let EventKind::Attached { patients, .. } = e.kind {
            attached += patients;
        }
    }
    assert_eq!(
        (statuses(&again), attached),
        (vec![RowStatus::Accepted], 0),
        "a patient matched before is listed, not a new attachment from the waitlist"
    );
    s.stop().await;
}

/// A panel row naming a waiting patient's PHN with another date of birth is
/// most likely a mistyped PHN: the patient stays on the waitlist, and the row
/// says why. Before, they left it silently for a provider they never saw.
#[tokio::test]
async fn a_row_with_a_waiting_patients_phn_and_another_birth_date_moves_nobody() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let family = s.register(&sys(), &c("112"), household(&[phn(2), phn(3)], &[])).await.unwrap();
    let family = family.registration.reference;
    // phn(2)'s row is someone born in 1950; phn(3)'s matches the household.
    let text =
        format!("{}{}", csv_born(&[phn(2)], "0F111", "1950-05-05"), csv_of(&[phn(3)], "0F111").lines().nth(1).unwrap());
    let report = submit(s, &doc, &f, &text).await;
    assert_eq!(statuses(&report), [RowStatus::Conflict, RowStatus::AttachedFromWaitlist]);
    assert!(report.rows[0].message.as_deref().unwrap().contains("born on another day"), "{:?}", report.rows[0]);
    let fam = s.registration(&sys(), &family).await.unwrap().registration;
    assert_eq!(fam.household.members.iter().map(|m| m.phn).collect::<Vec<_>>(), [phn(2)], "the other stays waiting");
    assert_eq!(fam.status, RegistrationStatus::Waiting);
    s.stop().await;
}

/// A registrant a panel takes still holds the household's place (DECISIONS
/// 43): taken off the panel and back in the household, she may keep it alone,
/// and someone added meanwhile may not. With nothing kept before (a household
/// never changed), the panel's step keeps who held it.
#[tokio::test]
async fn a_registrant_a_panel_took_holds_the_place_on_coming_back() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    // Three different people (the helper names everyone alike, which would read as PHN corrections).
    let mut people = household(&[phn(1), phn(2), phn(7)], &[]);
    for (m, name) in people.members.iter_mut().zip(["Ada", "Bo", "Xan"]) {
        m.given_name = PersonName::parse(name).unwrap();
    }
    let [ada, bo, xan] = [0, 1, 2].map(|i| people.members[i].clone());
    let registered = Household { members: vec![ada.clone(), bo.clone()], ..people.clone() };
    let family = s.register(&sys(), &c("112"), registered).await.unwrap().registration;
    assert_eq!(statuses(&submit(s, &doc, &f, &csv_of(&[phn(1)], "0F111")).await), [RowStatus::AttachedFromWaitlist]);
    // Xan joins the one still waiting; the panel's provider lets Ada go, and she comes back.
    let joined = Household { members: vec![bo.clone(), xan.clone()], ..people.clone() };
    s.update_household(&sys(), &family.reference, joined.clone()).await.unwrap();
    s.remove_from_panel(&sys(), &doc, vec![phn(1)]).await.unwrap();
    let back = Household { members: vec![xan.clone(), ada.clone()], ..joined };
    s.update_household(&sys(), &family.reference, back.clone()).await.unwrap();
    let xan_alone = Household { members: vec![back.members[0].clone()], ..back.clone() };
    let refused = s.update_household(&sys(), &family.reference, xan_alone).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidInput, "Xan, added later, does not hold it");
    let ada_alone = Household { members: vec![back.members[1].clone()], ..back };
    let kept = s.update_household(&sys(), &family.reference, ada_alone).await.unwrap();
    assert_eq!(kept.registration.registered_at, family.registered_at);
    s.stop().await;
}

/// A registration that moved on between a panel's two steps (the provider's
/// shard saw it waiting, then it left for another community) tells the row to
/// come again, not that the patient is on another provider's panel.
#[tokio::test]
async fn a_release_for_a_household_on_its_way_to_another_community_says_to_come_again() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 0).await;
    let r = s.register(&sys(), &c("112"), household(&[phn(1)], &[])).await.unwrap().registration.reference;
    let shard = |code: &str| ShardKey::parse(&format!("IHA/{code}")).unwrap();
    // Step one of a move only: the household is MOVED in 112, on its way to 111.
    s.directory().call(&shard("112"), |reply| crate::shard::ShardMsg::MoveOut(r, shard("111"), reply)).await.unwrap();
    let release =
        crate::panel::Release { reference: r, phns: vec![phn(1)], provider: doc, provider_shard: shard("111") };
    let released = s
        .directory()
        .call(&shard("112"), |reply| crate::shard::ShardMsg::ReleaseToPanel(release, vec![], reply))
        .await
        .unwrap();
    let why = released[0].1.unwrap();
    assert!(why.contains("moved right now") && !why.contains("another provider"), "{why}");
    s.stop().await;
}

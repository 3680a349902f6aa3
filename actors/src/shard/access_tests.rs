//! Who may do what, decided by the system and the shards against their data:
//! providers and their proposals and panels, delegation endorsements, medical
//! directors and their clinics, coordinators and their scope, and the audit log.

use crate::access::{Operation, Principal, Role, Scope};
use crate::audit::{AuditQuery, Outcome};
use crate::domain::*;
use crate::error::ErrorCode;
use crate::shard::ProposalsFrom;
use crate::shard::{Answer, ClinicCommand, ShardConfig};

use super::tests::{World, c, household, phn, provider, sys, world};

fn as_provider(id: &ProviderId) -> Principal {
    Principal::new(format!("user-{id}"), Role::Provider, Some(id.clone()), Scope::default())
}

fn delegate(name: &str) -> Principal {
    Principal::new(name, Role::Delegate, None, Scope::default())
}

fn coordinator(scope: &[&str]) -> Principal {
    Principal::new("coord-1", Role::Coordinator, None, Scope::parse(scope.iter().copied()).unwrap())
}

fn code<T: std::fmt::Debug>(r: Result<T, crate::error::AttachError>) -> ErrorCode {
    r.unwrap_err().code
}

/// A provider with one attached patient, and a second provider.
async fn practice() -> (World, ProviderId, ProviderId) {
    let w = world(ShardConfig::default()).await;
    let doc = provider(&w.system, "P1111", "111", 10).await;
    let other = provider(&w.system, "P2222", "111", 0).await;
    let r = w.system.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let p = w.system.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_eq!(p.reference, r.registration.reference);
    w.system.answer(&sys(), &p.id, Answer::Accept).await.unwrap();
    (w, doc, other)
}

#[tokio::test]
async fn providers_answer_and_read_only_their_own() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 10).await;
    let other = provider(s, "P2222", "111", 0).await;
    s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let p = s.run_matching(&coordinator(&["ha:IHA"]), &c("111")).await.unwrap().pop().unwrap();

    assert_eq!(code(s.answer(&as_provider(&other), &p.id, Answer::Accept).await), ErrorCode::Forbidden);
    assert_eq!(code(s.proposal(&as_provider(&other), &p.id).await), ErrorCode::Forbidden);
    let mine = s.proposals(&as_provider(&other), &c("111"), vec![], None, ProposalsFrom::Start, 10).await.unwrap();
    assert!(mine.items.is_empty(), "another provider's proposals are filtered out");
    let asked = s.proposals(&as_provider(&other), &c("111"), vec![], Some(doc.clone()), ProposalsFrom::Start, 10).await;
    assert_eq!(code(asked), ErrorCode::Forbidden);
    let patient_decline = Answer::Decline { by: Responder::Patient, reason: "moved".into() };
    assert_eq!(code(s.answer(&as_provider(&doc), &p.id, patient_decline).await), ErrorCode::Forbidden);
    let as_coordinator = Answer::Decline { by: Responder::Coordinator, reason: "not mine".into() };
    assert_eq!(code(s.answer(&as_provider(&doc), &p.id, as_coordinator).await), ErrorCode::Forbidden);
    assert_eq!(code(s.set_capacity(&as_provider(&other), &doc, Capacity::closed()).await), ErrorCode::Forbidden);

    let accepted = s.answer(&as_provider(&doc), &p.id, Answer::Accept).await.unwrap();
    assert_eq!(accepted.status, ProposalStatus::Accepted);
    assert_eq!(s.panel(&as_provider(&doc), &doc, 0, 10).await.unwrap().items.len(), 1);
    assert_eq!(code(s.panel(&as_provider(&other), &doc, 0, 10).await), ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_patient_declines_their_own_match_with_the_reference() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 10).await;
    let fam = s.register(&Principal::public(), &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap();
    let fam = fam.registration;
    let patient = Principal::new("patient-1", Role::Patient, None, Scope::default());
    let decline =
        |who: Principal| async move { s.decline_match(&who, &fam.reference, "too far to travel".into()).await };
    assert_eq!(code(decline(patient.clone()).await), ErrorCode::Conflict, "nothing proposed yet");
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let later = s.register(&sys(), &c("111"), household(&[phn(3)], &[])).await.unwrap().registration;

    assert_eq!(code(decline(Principal::public()).await), ErrorCode::Unauthenticated, "sign in to decline");
    assert_eq!(code(decline(as_provider(&doc)).await), ErrorCode::Forbidden, "the provider declines their way");
    assert_eq!(code(decline(coordinator(&["community:112"])).await), ErrorCode::Forbidden, "outside the scope");
    let unknown = s.decline_match(&patient, &RegistrationRef::generate(), "no".into()).await;
    assert_eq!(code(unknown), ErrorCode::NotFound);

    let declined = decline(patient.clone()).await.unwrap();
    assert_eq!(declined.id, p.id);
    assert_eq!(declined.status, ProposalStatus::Declined);
    assert_eq!(declined.declined_by, Some(Responder::Patient));
    assert_eq!(declined.decline_reason.as_deref(), Some("too far to travel"));
    let back = s.registration(&sys(), &fam.reference).await.unwrap();
    assert_eq!(back.registration.status, RegistrationStatus::Waiting);
    assert_eq!(back.registration.registered_at, fam.registered_at, "the place in line is kept");
    assert_eq!(back.place, Some((1, 0)), "ahead of the household registered later");
    let last = back.registration.declines.last().expect("the decline is on the record");
    assert_eq!((last.by, last.reason.as_str()), (Some(Responder::Patient), "too far to travel"));
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().open_places, 0, "the provider's places are free again");
    let twice = decline(patient.clone()).await.unwrap_err();
    assert_eq!(twice.code, ErrorCode::Conflict);
    assert!(twice.message.contains("is WAITING"), "{}", twice.message);
    assert_eq!(
        s.registration(&sys(), &later.reference).await.unwrap().registration.status,
        RegistrationStatus::Waiting
    );

    // Audited: each try, by whoever tried, about the registration.
    let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
    let query = AuditQuery { operation: Some(Operation::DeclineMatch), limit: 10, ..Default::default() };
    let log = s.audit_log(&ops, query).await.unwrap();
    let ok: Vec<_> = log.iter().filter(|a| a.outcome.as_str() == "OK").map(|a| a.subject.as_str()).collect();
    assert_eq!(ok, ["patient-1"]);
    assert!(log.len() >= 6, "refusals are audited too: {}", log.len());
}

#[tokio::test]
async fn coordinators_work_only_in_their_scope() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let r = s.register(&Principal::public(), &c("112"), household(&[phn(1)], &[])).await.unwrap();
    let fernie = coordinator(&["community:111"]);
    assert_eq!(code(s.run_matching(&fernie, &c("112")).await), ErrorCode::Forbidden);
    assert_eq!(code(s.waitlist(&fernie, &c("112"), Default::default()).await), ErrorCode::Forbidden);
    assert_eq!(code(s.withdraw(&fernie, &r.registration.reference, "moved".into()).await), ErrorCode::Forbidden);
    assert_eq!(code(s.events_after(&fernie, &c("112"), 0, 10).await), ErrorCode::Forbidden);
    assert!(s.waitlist(&fernie, &c("111"), Default::default()).await.is_ok());
    let interior = coordinator(&["ha:IHA"]);
    let page = crate::shard::WaitlistQuery { limit: 10, ..Default::default() };
    assert_eq!(s.waitlist(&interior, &c("112"), page).await.unwrap().items.len(), 1);
    let ha = HaCode::parse("IHA").unwrap();
    assert!(s.health_authority_stats(&interior, &ha).await.is_ok());
    let unknown = s.health_authority_stats(&interior, &HaCode::parse("PHSA").unwrap()).await.unwrap_err();
    assert_eq!(
        (unknown.code, unknown.message.as_str()),
        (ErrorCode::NotFound, "health authority PHSA not found: healthAuthorities lists them")
    );
    // Operations see statistics, never a waitlist.
    let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
    assert!(s.community_stats(&ops, &c("112")).await.is_ok());
    assert_eq!(code(s.waitlist(&ops, &c("112"), Default::default()).await), ErrorCode::Forbidden);
    // A registration's reference is its capability: whoever holds it reads it,
    // in scope or not, and the audit log names them.
    assert!(s.registration(&fernie, &r.registration.reference).await.is_ok());
    assert!(s.registration(&ops, &r.registration.reference).await.is_ok());
    assert_eq!(code(s.waitlist(&Principal::public(), &c("112"), Default::default()).await), ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn the_endorsement_workflow_grants_and_revokes_panel_access() {
    let (w, doc, other) = practice().await;
    let s = &w.system;
    let moa = delegate("moa-1");
    let moa_id = DelegateId::parse("moa-1").unwrap();
    assert_eq!(code(s.panel(&moa, &doc, 0, 10).await), ErrorCode::Forbidden, "no endorsement yet");
    // A provider naming their own sign-in as the delegate: surely the wrong id.
    let own = DelegateId::parse(as_provider(&doc).subject()).unwrap();
    let refused = s.start_endorsement(&as_provider(&doc), &doc, own).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::InvalidInput, Some("delegate")));

    // The provider starts it; the delegate receives and approves; the provider completes.
    let e = s.start_endorsement(&as_provider(&doc), &doc, moa_id.clone()).await.unwrap();
    assert_eq!(e.status, EndorsementStatus::Created);
    let again = s.start_endorsement(&moa, &doc, moa_id.clone()).await;
    assert_eq!(code(again), ErrorCode::Conflict, "one open endorsement per pair");
    let stranger = as_provider(&other);
    assert_eq!(code(s.advance_endorsement(&stranger, &e.id, EndorsementStep::Receive).await), ErrorCode::Forbidden);
    let own_step = s.advance_endorsement(&as_provider(&doc), &e.id, EndorsementStep::Receive).await;
    assert_eq!(code(own_step), ErrorCode::Conflict, "the starter cannot confirm their own endorsement");
    s.advance_endorsement(&moa, &e.id, EndorsementStep::Receive).await.unwrap();
    s.advance_endorsement(&moa, &e.id, EndorsementStep::Approve).await.unwrap();
    assert_eq!(code(s.panel(&moa, &doc, 0, 10).await), ErrorCode::Forbidden, "approved is not yet completed");
    let done = s.advance_endorsement(&as_provider(&doc), &e.id, EndorsementStep::Complete).await.unwrap();
    assert_eq!(done.status, EndorsementStatus::Completed);

    assert_eq!(s.panel(&moa, &doc, 0, 10).await.unwrap().items.len(), 1, "the delegate manages the panel");
    assert_eq!(code(s.panel(&moa, &other, 0, 10).await), ErrorCode::Forbidden, "only that provider's");
    assert_eq!(code(s.set_capacity(&moa, &doc, Capacity::closed()).await), ErrorCode::Forbidden, "only the panel");
    assert_eq!(code(s.panel(&delegate("moa-2"), &doc, 0, 10).await), ErrorCode::Forbidden);
    assert_eq!(s.endorsements(&moa, &doc).await.unwrap().len(), 1);
    assert!(s.endorsements(&delegate("moa-2"), &doc).await.unwrap().is_empty(), "others' are hidden");
    assert_eq!(code(s.endorsement(&delegate("moa-2"), &e.id).await), ErrorCode::Forbidden);

    // The delegate's access ends the moment the endorsement is cancelled.
    s.advance_endorsement(&as_provider(&doc), &e.id, EndorsementStep::Cancel).await.unwrap();
    assert_eq!(code(s.panel(&moa, &doc, 0, 10).await), ErrorCode::Forbidden);
    assert_eq!(s.endorsement(&moa, &e.id).await.unwrap().status, EndorsementStatus::Cancelled);

    // Starting and cancelling over and over keeps one record (and one id, so one locator) per pair.
    for _ in 0..5 {
        let again = s.start_endorsement(&moa, &doc, moa_id.clone()).await.unwrap();
        assert_eq!((again.id, again.status), (e.id, EndorsementStatus::Created), "the new one takes the old one's id");
        s.advance_endorsement(&moa, &again.id, EndorsementStep::Cancel).await.unwrap();
    }
    assert_eq!(s.endorsements(&as_provider(&doc), &doc).await.unwrap().len(), 1);
    s.stop().await;
    let path = w.path.clone();
    drop(w.system);
    let again = super::tests::start(&path, ShardConfig::default()).await;
    assert_eq!(again.endorsements(&as_provider(&doc), &doc).await.unwrap().len(), 1, "and so does the store");
    again.stop().await;
}

#[tokio::test]
async fn support_reads_a_providers_reports_and_endorsements_only_in_scope() {
    let (w, doc, _) = practice().await;
    let s = &w.system;
    let director = Principal::new("md-1", Role::MedicalDirector, Some(doc.clone()), Scope::default());
    let facility = FacilityNumber::parse("00A12").unwrap();
    let clinic = ClinicCommand {
        facility: facility.clone(),
        details: ClinicInput::parse("Fernie Family Practice", "1 Main St", None, None).unwrap(),
        medical_director: Some(doc.clone()),
    };
    s.upsert_clinic(&director, &c("111"), clinic).await.unwrap();
    let e = s.start_endorsement(&as_provider(&doc), &doc, DelegateId::parse("auth0|moa-1").unwrap()).await.unwrap();
    let support = |scope: &str| Principal::new("help-1", Role::Support, None, Scope::parse([scope]).unwrap());
    let (inside, outside) = (support("community:111"), support("community:112"));
    assert!(s.panel_report(&inside, &doc).await.is_ok());
    assert!(s.clinic_panel_reports(&inside, &facility).await.is_ok());
    assert!(s.panel_transfers(&inside, &doc).await.is_ok());
    assert_eq!(s.endorsements(&inside, &doc).await.unwrap().len(), 1);
    assert!(s.endorsement(&inside, &e.id).await.is_ok());
    assert_eq!(code(s.panel_report(&outside, &doc).await), ErrorCode::Forbidden);
    assert_eq!(code(s.clinic_panel_reports(&outside, &facility).await), ErrorCode::Forbidden);
    assert_eq!(code(s.panel_transfers(&outside, &doc).await), ErrorCode::Forbidden);
    assert_eq!(code(s.endorsements(&outside, &doc).await), ErrorCode::Forbidden);
    assert_eq!(code(s.endorsement(&outside, &e.id).await), ErrorCode::Forbidden);
    // A transfer to the provider from one homed out of scope is kept there, and not listed.
    let giver = provider(s, "P3333", "112", 0).await;
    for p in [&doc, &giver] {
        s.set_provider_clinic(&sys(), &facility, p, true).await.unwrap();
    }
    s.begin_transfer(&sys(), TransferKey::parse("in").unwrap(), &giver, &doc, &facility).await.unwrap();
    let province = support("province");
    assert_eq!(s.panel_transfers(&province, &doc).await.unwrap().len(), 1);
    assert!(s.panel_transfers(&inside, &doc).await.unwrap().is_empty(), "its source is out of scope");
    let key = TransferKey::parse("k-1").unwrap();
    assert_eq!(
        code(s.panel_transfer(&outside, &doc, &key).await),
        ErrorCode::Forbidden,
        "refused before it is looked for"
    );
}

#[tokio::test]
async fn a_providers_endorsements_are_listed_oldest_first() {
    let (w, doc, _) = practice().await;
    let s = &w.system;
    let mut started = Vec::new();
    for i in 0..6 {
        let moa = DelegateId::parse(&format!("moa-{i}")).unwrap();
        started.push(s.start_endorsement(&as_provider(&doc), &doc, moa).await.unwrap().id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let listed: Vec<EndorsementId> =
        s.endorsements(&as_provider(&doc), &doc).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(listed, started);
}

#[tokio::test]
async fn a_delegate_may_start_and_a_provider_decline() {
    let (w, doc, _) = practice().await;
    let s = &w.system;
    let moa = delegate("moa-7");
    let e = s.start_endorsement(&moa, &doc, DelegateId::parse("moa-7").unwrap()).await.unwrap();
    assert_eq!(e.started_by, Party::Delegate);
    let other_name = s.start_endorsement(&moa, &doc, DelegateId::parse("moa-8").unwrap()).await;
    assert_eq!(code(other_name), ErrorCode::Forbidden, "a delegate starts only their own");
    s.advance_endorsement(&as_provider(&doc), &e.id, EndorsementStep::Receive).await.unwrap();
    let declined = s.advance_endorsement(&as_provider(&doc), &e.id, EndorsementStep::Decline).await.unwrap();
    assert_eq!(declined.status, EndorsementStatus::Declined);
    assert_eq!(code(s.panel(&moa, &doc, 0, 10).await), ErrorCode::Forbidden);
}

#[tokio::test]
async fn medical_directors_keep_only_their_clinics() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let (a, b) = (provider(s, "P1111", "111", 0).await, provider(s, "P2222", "111", 0).await);
    let director =
        |id: &ProviderId| Principal::new(format!("md-{id}"), Role::MedicalDirector, Some(id.clone()), Scope::default());
    let clinic = |md: Option<&ProviderId>| ClinicCommand {
        facility: FacilityNumber::parse("00A12").unwrap(),
        details: ClinicInput::parse("Fernie Family Practice", "1 Main St", None, None).unwrap(),
        medical_director: md.cloned(),
    };
    assert_eq!(code(s.upsert_clinic(&director(&a), &c("111"), clinic(Some(&b))).await), ErrorCode::Forbidden);
    s.upsert_clinic(&director(&a), &c("111"), clinic(Some(&a))).await.unwrap();
    assert_eq!(code(s.upsert_clinic(&director(&b), &c("111"), clinic(Some(&b))).await), ErrorCode::Forbidden);
    assert_eq!(code(s.upsert_clinic(&as_provider(&a), &c("111"), clinic(Some(&a))).await), ErrorCode::Forbidden);
    // The director hands the clinic over; then only the new director keeps it.
    s.upsert_clinic(&director(&a), &c("111"), clinic(Some(&b))).await.unwrap();
    assert_eq!(code(s.upsert_clinic(&director(&a), &c("111"), clinic(Some(&a))).await), ErrorCode::Forbidden);
    s.upsert_clinic(&director(&b), &c("111"), clinic(Some(&b))).await.unwrap();
    // An update that leaves the director out keeps them: the clinic is never left to nobody.
    let kept = s.upsert_clinic(&director(&b), &c("111"), clinic(None)).await.unwrap();
    assert_eq!(kept.medical_director.as_ref(), Some(&b));
    // Nor handed to a provider the registry does not have.
    let nobody = ProviderId::parse("ZZ999").unwrap();
    let refused = s.upsert_clinic(&director(&b), &c("111"), clinic(Some(&nobody))).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::NotFound, Some("medicalDirectorId")));
    assert_eq!(
        s.clinic(&sys(), &FacilityNumber::parse("00A12").unwrap()).await.unwrap().medical_director,
        Some(b.clone())
    );
    // A new clinic naming someone else is refused, and holds no facility number: it can be
    // created in another community after.
    let squatted = ClinicCommand { facility: FacilityNumber::parse("00A14").unwrap(), ..clinic(Some(&a)) };
    assert_eq!(code(s.upsert_clinic(&director(&b), &c("111"), squatted.clone()).await), ErrorCode::Forbidden);
    s.upsert_clinic(&director(&a), &c("112"), squatted).await.unwrap();
    // A new clinic that leaves its director out names the director creating it.
    let other = ClinicCommand { facility: FacilityNumber::parse("00A13").unwrap(), ..clinic(None) };
    assert_eq!(s.upsert_clinic(&director(&a), &c("111"), other).await.unwrap().medical_director, Some(a));
}

#[tokio::test]
async fn a_providers_clinics_are_listed_by_the_clinics_director_and_an_entry_changed_by_its_own() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = super::panel_tests::clinic(s, "0F111", "111").await; // directed by MD999
    let doc = provider(s, "P1111", "111", 0).await;
    let md = Principal::new("md-1", Role::MedicalDirector, Some(ProviderId::parse("MD999").unwrap()), Scope::default());
    let other_md =
        Principal::new("md-2", Role::MedicalDirector, Some(ProviderId::parse("MD888").unwrap()), Scope::default());
    let entry = |clinics: Option<Vec<FacilityNumber>>, reported: Option<u32>| crate::shard::ProviderInput {
        id: doc.clone(),
        given_name: PersonName::parse("Jo").unwrap(),
        surname: PersonName::parse("Okafor").unwrap(),
        kind: ProviderKind::Physician,
        clinics,
        reported_panel_size: reported,
    };
    // The provider cannot list themselves at a clinic, nor at one that does not exist.
    let refused = s.upsert_provider(&as_provider(&doc), &c("111"), entry(Some(vec![f.clone()]), None)).await;
    let refused = refused.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::Forbidden, Some("clinics[0]")));
    let nowhere = vec![f.clone(), FacilityNumber::parse("ZZZZZ").unwrap()];
    let new_provider =
        crate::shard::ProviderInput { id: ProviderId::parse("P3333").unwrap(), ..entry(Some(nowhere), None) };
    let refused = s.upsert_provider(&md, &c("111"), new_provider).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::NotFound, Some("clinics[1]")));
    // Another clinic's director cannot change the entry of a provider who is not at theirs.
    assert_eq!(code(s.upsert_provider(&other_md, &c("111"), entry(None, Some(0))).await), ErrorCode::Forbidden);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().provider.reported_panel_size, 1000, "unchanged");
    // Nor may the clinic's director, while the provider is not at their clinic.
    let refused = s.upsert_provider(&md, &c("111"), entry(Some(vec![f.clone()]), None)).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    // The director lists them there; then the provider renames themselves,
    // leaving the clinics and the reported count out, and both are kept.
    s.set_provider_clinic(&md, &f, &doc, true).await.unwrap();
    let by_director = s.upsert_provider(&md, &c("111"), entry(None, Some(900))).await.unwrap().provider;
    assert_eq!(by_director.reported_panel_size, 900, "a provider at their clinic");
    let renamed = s.upsert_provider(&as_provider(&doc), &c("111"), entry(None, None)).await.unwrap().provider;
    assert_eq!((renamed.clinics, renamed.reported_panel_size), (vec![f.clone()], 900));
    // Taking themselves off is the director's too.
    let refused = s.upsert_provider(&as_provider(&doc), &c("111"), entry(Some(vec![]), None)).await.unwrap_err();
    assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::Forbidden, Some("clinics")));
    // A listing needs no agreement, so one at another clinic gives its director
    // no hold on the entry (a tester listed a provider, rewrote their reported
    // count, and took them off again), and the first director keeps it no more
    // while the provider also practises there.
    let g = FacilityNumber::parse("0F888").unwrap();
    let details = ClinicInput::parse("Other Practice", "2 Main St", None, None).unwrap();
    let theirs =
        ClinicCommand { facility: g.clone(), details, medical_director: Some(ProviderId::parse("MD888").unwrap()) };
    s.upsert_clinic(&other_md, &c("112"), theirs).await.unwrap();
    s.set_provider_clinic(&other_md, &g, &doc, true).await.unwrap();
    for director in [&other_md, &md] {
        let refused = s.upsert_provider(director, &c("111"), entry(None, Some(5_000))).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden, "{}", refused.message);
    }
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().provider.reported_panel_size, 900, "unchanged");
    s.set_provider_clinic(&other_md, &g, &doc, false).await.unwrap();
    s.upsert_provider(&md, &c("111"), entry(None, Some(800))).await.unwrap();
}

#[tokio::test]
async fn a_panel_moves_only_from_a_provider_listed_at_the_clinic() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = super::panel_tests::clinic(s, "0F111", "111").await;
    let (a, b) = (provider(s, "P1111", "111", 0).await, provider(s, "P2222", "111", 0).await);
    s.set_provider_clinic(&sys(), &f, &b, true).await.unwrap();
    let md = Principal::new("md-1", Role::MedicalDirector, Some(ProviderId::parse("MD999").unwrap()), Scope::default());
    let key = TransferKey::parse("take").unwrap();
    let refused = s.begin_transfer(&md, key.clone(), &a, &b, &f).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "{}", refused.message);
    s.set_provider_clinic(&md, &f, &a, true).await.unwrap();
    s.begin_transfer(&md, key, &a, &b, &f).await.unwrap();
}

#[tokio::test]
async fn each_audited_action_leaves_exactly_one_record() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let doc = provider(s, "P1111", "111", 10).await;
    let coord = coordinator(&["ha:IHA"]);
    let r = s.register(&Principal::public(), &c("111"), household(&[phn(1)], &[])).await.unwrap();
    let reference = r.registration.reference.to_string();
    s.registration(&Principal::public(), &r.registration.reference).await.unwrap();
    s.waitlist(&coord, &c("111"), Default::default()).await.unwrap();
    let refused = s.answer(&as_provider(&doc), &ProposalId::generate(), Answer::Accept).await;
    assert_eq!(code(refused), ErrorCode::NotFound);
    let p = s.run_matching(&coord, &c("111")).await.unwrap().pop().unwrap();
    s.answer(&as_provider(&doc), &p.id, Answer::Accept).await.unwrap();
    s.provider(&coord, &doc).await.unwrap(); // not a patient record: not audited

    let ops = Principal::new("ops-1", Role::Operations, None, Scope::province());
    assert_eq!(code(s.audit_log(&coord, AuditQuery { limit: 10, ..Default::default() }).await), ErrorCode::Forbidden);
    let log = s.audit_log(&ops, AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    // The set-up's own calls (by Attach itself) come first.
    let seen: Vec<_> = log.iter().filter(|a| a.role != Role::Internal).collect();
    let summary: Vec<_> = seen.iter().map(|a| (a.operation, a.role, a.outcome.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (Operation::RegisterHousehold, Role::Public, "OK"),
            (Operation::ReadRegistration, Role::Public, "OK"),
            (Operation::ReadWaitlist, Role::Coordinator, "OK"),
            (Operation::AnswerProposal, Role::Provider, "NOT_FOUND"),
            (Operation::RunMatching, Role::Coordinator, "OK"),
            (Operation::AnswerProposal, Role::Provider, "OK"),
            // A coordinator's try at the audit log is on it too.
            (Operation::ReadAudit, Role::Coordinator, "FORBIDDEN"),
        ]
    );
    assert_eq!(seen[0].target.as_deref(), Some(reference.as_str()));
    assert_eq!(seen[1].target.as_deref(), Some(reference.as_str()));
    assert_eq!(seen[5].target.as_deref(), Some(p.id.as_str()));
    assert_eq!(seen[5].subject, "user-P1111");
    assert!(
        seen.iter()
            .filter(|a| a.outcome == Outcome::Ok)
            .all(|a| a.shard.as_ref().is_some_and(|s| s.community.as_str() == "111"))
    );
    let only_mine = AuditQuery { subject: Some("coord-1".into()), limit: 10, ..Default::default() };
    // The waitlist page, the run and the refused try at the log.
    assert_eq!(s.audit_log(&ops, only_mine).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_providers_entry_is_not_written_over_a_clinic_list_changed_since_the_check() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let f = super::panel_tests::clinic(s, "0F111", "111").await;
    let doc = provider(s, "P1111", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    // Checked while the provider was at no clinic; the director listed them since.
    let input = crate::shard::ProviderInput {
        id: doc.clone(),
        given_name: PersonName::parse("Jo").unwrap(),
        surname: PersonName::parse("Okafor").unwrap(),
        kind: ProviderKind::Physician,
        clinics: Some(vec![]),
        reported_panel_size: None,
    };
    let shard = ShardKey::parse("IHA/111").unwrap();
    let stale = s.directory().call(&shard, |r| crate::shard::ShardMsg::UpsertProvider(input, Some(vec![]), r)).await;
    assert_eq!(code(stale), ErrorCode::Conflict);
    assert_eq!(s.provider(&sys(), &doc).await.unwrap().provider.clinics, vec![f], "the director's listing stands");
}

#[tokio::test]
async fn a_provider_reading_a_registration_sees_what_the_public_does_and_their_own_whole() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let first = provider(s, "P1111", "111", 1).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_eq!(p.provider, first);
    let reason = "previously discharged from this clinic";
    let decline = Answer::Decline { by: Responder::Provider, reason: reason.into() };
    s.answer(&as_provider(&first), &p.id, decline).await.unwrap();
    let second = provider(s, "P2222", "111", 1).await;
    let q = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    assert_eq!(q.provider, second);

    // The provider it went to next: their proposal whole, another's decline as
    // the public sees it (by the reference alone, which any caller may use):
    // without its reason.
    let seen = s.registration(&as_provider(&second), &fam.reference).await.unwrap();
    assert_eq!(seen.registration.declines.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), [""]);
    assert_eq!(seen.proposal.map(|p| p.id), Some(q.id));
    let public = s.registration(&Principal::public(), &fam.reference).await.unwrap();
    assert_eq!(public.registration.declines.len(), 1, "the public sees no less");
    // The provider who declined: their own decline's reason, and where the
    // household went as the public sees it (no coordinator's note).
    let seen = s.registration(&as_provider(&first), &fam.reference).await.unwrap();
    assert_eq!(seen.registration.declines.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), [reason]);
    assert!(
        seen.proposal.is_some_and(|p| p.explanation.provider_fit.is_empty()),
        "another provider's proposal, as public"
    );
    // Its coordinators see all of it; another community's, what anyone with the reference sees.
    let all = s.registration(&coordinator(&["community:111"]), &fam.reference).await.unwrap();
    assert_eq!((all.registration.declines[0].reason.as_str(), all.proposal.map(|p| p.id)), (reason, Some(q.id)));
    let elsewhere = s.registration(&coordinator(&["community:112"]), &fam.reference).await.unwrap();
    assert_eq!(elsewhere.registration.declines[0].reason, "", "out of their scope: the public view");
    assert!(elsewhere.proposal.is_some_and(|p| p.explanation.provider_fit.is_empty()));
    // By the reference alone (the household, or a provider leaving out their token), without what was written.
    let public = s.registration(&Principal::public(), &fam.reference).await.unwrap();
    assert_eq!(public.registration.declines.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), [""]);
    let open = public.proposal.unwrap();
    assert_eq!((open.id, open.explanation.provider_fit.len()), (q.id, 0), "the proposal, not the provider's fit");
    // A delegate sees what the public does: never less.
    let by_delegate = s.registration(&delegate("moa-1"), &fam.reference).await.unwrap();
    assert_eq!((by_delegate.registration.declines, by_delegate.proposal), (public.registration.declines, Some(open)));
}

#[tokio::test]
async fn the_households_own_changes_answer_no_more_than_reading_it_by_its_reference() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let first = provider(s, "P1111", "111", 1).await;
    let fam = s.register(&sys(), &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&sys(), &c("111")).await.unwrap().pop().unwrap();
    let reason = "previously discharged from this clinic";
    s.answer(&as_provider(&first), &p.id, Answer::Decline { by: Responder::Provider, reason: reason.into() })
        .await
        .unwrap();
    let coordinator = coordinator(&["community:111"]);
    s.propose_match(&coordinator, &fam.reference, &first, "knows the family".into()).await.unwrap();
    let patient = Principal::new("patient-1", Role::Patient, None, Scope::default());
    let written = |fit: &[String], declines: &[crate::domain::Decline]| {
        fit.iter().any(|f| f.contains("knows the family")) || declines.iter().any(|d| d.reason == reason)
    };

    // Declining the match: the household's own reason, not the coordinator's note.
    let declined = s.decline_match(&patient, &fam.reference, "we moved".into()).await.unwrap();
    assert!(declined.explanation.provider_fit.is_empty(), "{:?}", declined.explanation.provider_fit);
    assert_eq!(declined.decline_reason.as_deref(), Some("we moved"));
    // An update that changes nothing, and a withdrawal: no provider's reason, no note.
    let same = s.registration(&sys(), &fam.reference).await.unwrap().registration.household;
    let updated = s.update_household(&patient, &fam.reference, same).await.unwrap();
    let fit = updated.proposal.as_ref().map_or(vec![], |p| p.explanation.provider_fit.clone());
    assert!(!written(&fit, &updated.registration.declines), "{updated:?}");
    assert!(updated.registration.declines.iter().any(|d| d.reason == "we moved"), "the household's own reason stays");
    let gone = s.withdraw(&patient, &fam.reference, "found a doctor".into()).await.unwrap();
    let fit = gone.proposal.as_ref().map_or(vec![], |p| p.explanation.provider_fit.clone());
    assert!(!written(&fit, &gone.registration.declines), "{gone:?}");
    // Its coordinator still reads all of it.
    let all = s.registration(&coordinator, &fam.reference).await.unwrap();
    let fit = all.proposal.as_ref().map_or(vec![], |p| p.explanation.provider_fit.clone());
    assert!(written(&fit, &all.registration.declines));
}

#[tokio::test]
async fn a_household_a_patient_registered_signed_in_answers_only_to_them_by_its_reference() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    provider(s, "P1111", "112", 2).await;
    let patient = |sub: &str| Principal::new(sub, Role::Patient, None, Scope::default());
    let (owner, stranger, public) = (patient("patient-a"), patient("patient-b"), Principal::public());
    let fam = s.register(&owner, &c("111"), household(&[phn(1), phn(2)], &[])).await.unwrap().registration;
    let r = fam.reference;

    // Anyone else holding the reference: refused, and nothing changes.
    assert_eq!(code(s.registration(&public, &r).await), ErrorCode::Unauthenticated);
    assert_eq!(code(s.registration(&stranger, &r).await), ErrorCode::Forbidden);
    let same = fam.household.clone();
    assert_eq!(code(s.update_household(&stranger, &r, same.clone()).await), ErrorCode::Forbidden);
    assert_eq!(code(s.move_registration(&stranger, &r, &c("112")).await), ErrorCode::Forbidden);
    assert_eq!(code(s.decline_match(&stranger, &r, "no".into()).await), ErrorCode::Forbidden);
    assert_eq!(code(s.withdraw(&stranger, &r, "gone".into()).await), ErrorCode::Forbidden);
    let kept = s.registration(&sys(), &r).await.unwrap().registration;
    assert_eq!((kept.status, kept.shard.community.as_str()), (RegistrationStatus::Waiting, "111"));
    // The refusals are audited, naming who tried.
    let query = AuditQuery { subject: Some("patient-b".into()), limit: 100, ..AuditQuery::default() };
    let tried = s.audit_log(&sys(), query).await.unwrap();
    assert_eq!(tried.len(), 5, "{tried:?}");
    assert!(tried.iter().all(|a| a.outcome == Outcome::Refused("FORBIDDEN".into())), "{tried:?}");

    // Nor staff who do not hold its community (a reviewer found them reading it, needs and all).
    let doc = ProviderId::parse("P1111").unwrap();
    let outside = [as_provider(&doc), delegate("moa-1"), coordinator(&["community:112"])];
    for who in &outside {
        assert_eq!(code(s.registration(who, &r).await), ErrorCode::Forbidden, "{who:?}");
    }
    // The patient who registered it, and its community's coordinator and support, as before.
    s.registration(&owner, &r).await.unwrap();
    s.registration(&coordinator(&["community:111"]), &r).await.unwrap();
    let support = Principal::new("support-1", Role::Support, None, Scope::parse(["community:111"]).unwrap());
    s.registration(&support, &r).await.unwrap();
    // It goes with the household to the community it moves to, and is kept there.
    let moved = s.move_registration(&owner, &r, &c("112")).await.unwrap();
    assert_eq!(moved.registration.shard.community.as_str(), "112");
    assert_eq!(code(s.registration(&stranger, &r).await), ErrorCode::Forbidden);
    s.run_matching(&sys(), &c("112")).await.unwrap();
    assert_eq!(code(s.decline_match(&stranger, &r, "no".into()).await), ErrorCode::Forbidden);
    s.decline_match(&owner, &r, "too far".into()).await.unwrap();

    // And after a restart, read back from the store.
    w.system.stop().await;
    drop(w.system);
    let s = super::tests::start(&w.path, ShardConfig::default()).await;
    assert_eq!(code(s.withdraw(&stranger, &r, "gone".into()).await), ErrorCode::Forbidden);
    assert_eq!(code(s.registration(&public, &r).await), ErrorCode::Unauthenticated);
    s.update_household(&owner, &r, same).await.unwrap();

    // A household registered without signing in (or by a coordinator): its reference is enough, as before.
    let open = s.register(&public, &c("111"), household(&[phn(3)], &[])).await.unwrap().registration;
    s.registration(&public, &open.reference).await.unwrap();
    s.withdraw(&stranger, &open.reference, "found a doctor".into()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_patient_lists_the_households_they_registered_wherever_they_are_now() {
    let w = world(ShardConfig::default()).await;
    let s = &w.system;
    let patient = |sub: &str| Principal::new(sub, Role::Patient, None, Scope::default());
    let (owner, stranger) = (patient("patient-a"), patient("patient-b"));
    let references = |list: Vec<crate::shard::RegistrationView>| {
        list.into_iter().map(|v| v.registration.reference).collect::<Vec<_>>()
    };

    let first = s.register(&owner, &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let parent = s.register(&owner, &c("112"), household(&[phn(2)], &[])).await.unwrap().registration;
    let theirs = s.register(&stranger, &c("111"), household(&[phn(3)], &[])).await.unwrap().registration;
    // Registered without signing in: bound to nobody, so listed for nobody.
    s.register(&Principal::public(), &c("111"), household(&[phn(4)], &[])).await.unwrap();
    assert_eq!(references(s.my_registrations(&owner).await.unwrap()), [first.reference, parent.reference]);
    assert_eq!(references(s.my_registrations(&stranger).await.unwrap()), [theirs.reference]);

    // A household that moved is listed once, where it went; a withdrawn one stays listed as withdrawn.
    s.move_registration(&owner, &first.reference, &c("112")).await.unwrap();
    s.withdraw(&owner, &parent.reference, "found a doctor".into()).await.unwrap();
    let mine = s.my_registrations(&owner).await.unwrap();
    let seen: Vec<_> = mine.iter().map(|v| (v.registration.shard.community.as_str(), v.registration.status)).collect();
    assert_eq!(seen, [("112", RegistrationStatus::Waiting), ("112", RegistrationStatus::Withdrawn)]);

    // Only a patient has registrations of their own.
    assert_eq!(code(s.my_registrations(&Principal::public()).await), ErrorCode::Unauthenticated);
    for who in [coordinator(&["province"]), as_provider(&ProviderId::parse("P1111").unwrap())] {
        assert_eq!(code(s.my_registrations(&who).await), ErrorCode::Forbidden, "{who:?}");
    }
    // Each one listed is audited as a read of it, by the patient.
    let query = AuditQuery { subject: Some("patient-a".into()), limit: 100, ..AuditQuery::default() };
    let reads: Vec<_> = s
        .audit_log(&sys(), query)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.operation == Operation::ReadRegistration)
        .collect();
    let targets: Vec<_> = reads.iter().map(|a| a.target.clone().unwrap_or_default()).collect();
    assert_eq!(targets.iter().filter(|t| **t == first.reference.to_string()).count(), 2, "{reads:?}");

    // After a restart, from the store: the move back to where it came from included.
    w.system.stop().await;
    drop(w.system);
    let s = super::tests::start(&w.path, ShardConfig::default()).await;
    s.move_registration(&owner, &first.reference, &c("111")).await.unwrap();
    let mine = s.my_registrations(&owner).await.unwrap();
    let seen: Vec<_> = mine.iter().map(|v| (v.registration.shard.community.as_str(), v.registration.status)).collect();
    assert_eq!(seen, [("111", RegistrationStatus::Waiting), ("112", RegistrationStatus::Withdrawn)]);
    s.stop().await;
}

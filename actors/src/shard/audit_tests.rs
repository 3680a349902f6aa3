//! Changes made by one shard message commit their audit record with them: a
//! store that can no longer append audit records on their own loses none of
//! those, and refusals (written afterwards) are the ones it loses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::access::{Operation, Principal, Role, Scope};
use crate::audit::{AuditQuery, AuditRecord};
use crate::domain::*;
use crate::regions::Regions;
use crate::shard::{Answer, ShardConfig};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::{
    Batch, CasOutcome, Epoch, Locator, PhnClaim, Record, RecordKey, ShardImage, Store, StoreError, WriteStats,
};
use crate::system::AttachSystem;

use super::tests::{REGIONS, c, household, phn, provider, sys};

/// The embedded store, except that appending audit records on their own fails
/// once `broken` is set (a crash between a change's commit and its record
/// looks the same to the change). It counts the tries to acquire a shard.
pub(super) struct LateAuditFails {
    pub(super) inner: Arc<dyn Store>,
    pub(super) broken: AtomicBool,
    pub(super) acquires: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Store for LateAuditFails {
    fn write_stats(&self) -> Option<WriteStats> {
        self.inner.write_stats()
    }
    fn lease(&self) -> Duration {
        self.inner.lease()
    }
    async fn acquire_shard(&self, shard: &ShardKey, owner: &str) -> Result<Epoch, StoreError> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        self.inner.acquire_shard(shard, owner).await
    }
    async fn renew_lease(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        self.inner.renew_lease(shard, owner, epoch).await
    }
    async fn release_shard(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError> {
        self.inner.release_shard(shard, owner, epoch).await
    }
    async fn shard_owner(&self, shard: &ShardKey) -> Result<Option<String>, StoreError> {
        self.inner.shard_owner(shard).await
    }
    async fn held_shards(&self) -> Result<Vec<ShardKey>, StoreError> {
        self.inner.held_shards().await
    }
    async fn load_shard(&self, shard: &ShardKey) -> Result<ShardImage, StoreError> {
        self.inner.load_shard(shard).await
    }
    async fn commit(&self, shard: &ShardKey, epoch: Epoch, batch: &Batch) -> Result<(), StoreError> {
        self.inner.commit(shard, epoch, batch).await
    }
    async fn events_after(&self, shard: &ShardKey, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(shard, after, limit).await
    }
    async fn read(&self, shard: &ShardKey, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.inner.read(shard, key).await
    }
    async fn locate(&self, what: &Locator) -> Result<Option<ShardKey>, StoreError> {
        self.inner.locate(what).await
    }
    async fn claim_locator(&self, what: &Locator, shard: &ShardKey) -> Result<ShardKey, StoreError> {
        self.inner.claim_locator(what, shard).await
    }
    async fn phn_claim(&self, phn: Phn) -> Result<Option<PhnClaim>, StoreError> {
        self.inner.phn_claim(phn).await
    }
    async fn cas_phn_claim(
        &self,
        phn: Phn,
        expected: Option<&PhnClaim>,
        new: Option<&PhnClaim>,
    ) -> Result<CasOutcome<PhnClaim>, StoreError> {
        self.inner.cas_phn_claim(phn, expected, new).await
    }
    async fn claim_phns(&self, claims: Vec<(Phn, PhnClaim)>) -> Result<Vec<(Phn, PhnClaim)>, StoreError> {
        self.inner.claim_phns(claims).await
    }
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the test broke late audit writes".into()));
        }
        self.inner.append_audit(records).await
    }
    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_page(query).await
    }
}

/// A started system over a [`LateAuditFails`] store in a fresh directory.
async fn over_late_audit(config: ShardConfig) -> (AttachSystem, Arc<LateAuditFails>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap();
    let store =
        Arc::new(LateAuditFails { inner: Arc::new(embedded), broken: AtomicBool::new(false), acquires: 0.into() });
    let regions = Arc::new(Regions::parse(REGIONS).unwrap());
    let feed: Arc<dyn crate::feed::Feed> = Arc::new(crate::feed::MemoryFeed::new(64));
    let s = AttachSystem::new(regions, store.clone(), feed, config, "test".into());
    s.start().await.unwrap();
    (s, store, dir)
}

#[tokio::test]
async fn a_change_and_its_audit_record_are_one_commit() {
    let (s, store, _dir) = over_late_audit(ShardConfig::default()).await;
    let doc = provider(&s, "P1111", "111", 5).await;
    let coordinator = Principal::new("c-1", Role::Coordinator, None, Scope::province());
    let log = |op: Operation| {
        let store = store.clone();
        async move {
            let query = AuditQuery { operation: Some(op), limit: 50, ..Default::default() };
            store.audit_page(&query).await.unwrap()
        }
    };

    store.broken.store(true, Ordering::SeqCst);
    let r = s.register(&coordinator, &c("111"), household(&[phn(1)], &[])).await.unwrap().registration;
    let p = s.run_matching(&coordinator, &c("111")).await.unwrap().pop().unwrap();
    s.answer(&coordinator, &p.id, Answer::Decline { by: Responder::Coordinator, reason: "moved".into() })
        .await
        .unwrap();
    s.withdraw(&coordinator, &r.reference, "found a doctor".into()).await.unwrap();
    let as_doc = Principal::new("doc-1", Role::Provider, Some(doc.clone()), Scope::default());
    let moa = DelegateId::parse("moa-1").unwrap();
    let endorsement = s.start_endorsement(&as_doc, &doc, moa).await.unwrap();
    let mover = s.register(&coordinator, &c("111"), household(&[phn(2)], &[])).await.unwrap().registration;
    s.move_registration(&coordinator, &mover.reference, &c("112")).await.unwrap();

    let registered = log(Operation::RegisterHousehold).await;
    assert_eq!(registered.len(), 2, "{registered:?}");
    let reference = r.reference.to_string();
    assert_eq!((registered[0].subject.as_str(), registered[0].target.as_deref()), ("c-1", Some(reference.as_str())));
    assert_eq!(registered[0].shard, Some(r.shard.clone()));
    assert_eq!(registered[0].outcome, crate::audit::Outcome::Ok);
    let endorsed = log(Operation::ManageEndorsement).await;
    let id = endorsement.id.to_string();
    assert_eq!(endorsed.len(), 1, "{endorsed:?}");
    assert_eq!(endorsed[0].target.as_deref(), Some(id.as_str()), "named by the endorsement the shard created");
    // Each later step under its own operation: a tester could not tell a grant
    // from a revocation when all of them were `manageEndorsement`.
    let as_moa = Principal::new("moa-1", Role::Delegate, None, Scope::default());
    for (who, step) in [
        (&as_moa, EndorsementStep::Receive),
        (&as_moa, EndorsementStep::Approve),
        (&as_doc, EndorsementStep::Complete),
        (&as_doc, EndorsementStep::Cancel),
    ] {
        s.advance_endorsement(who, &endorsement.id, step).await.unwrap();
    }
    let steps = [Operation::AnswerEndorsement, Operation::CompleteEndorsement, Operation::CancelEndorsement];
    let mut counted = Vec::new();
    for op in steps {
        let records = log(op).await;
        assert!(records.iter().all(|r| r.target.as_deref() == Some(id.as_str())), "{records:?}");
        counted.push(records.len());
    }
    assert_eq!(counted, [2, 1, 1]);
    assert_eq!(log(Operation::ManageEndorsement).await.len(), 1, "the start only");
    // A refusal is not recorded as the approvals are (until session 20 both were `answerEndorsement`).
    let refused = s.start_endorsement(&as_doc, &doc, DelegateId::parse("moa-2").unwrap()).await.unwrap();
    let as_moa2 = Principal::new("moa-2", Role::Delegate, None, Scope::default());
    s.advance_endorsement(&as_moa2, &refused.id, EndorsementStep::Decline).await.unwrap();
    let declined = log(Operation::DeclineEndorsement).await;
    assert_eq!(declined.len(), 1, "{declined:?}");
    assert_eq!(declined[0].target.as_deref(), Some(refused.id.to_string().as_str()));
    assert_eq!(log(Operation::AnswerEndorsement).await.len(), 2, "the approvals only");
    for op in [
        Operation::RunMatching,
        Operation::AnswerProposal,
        Operation::WithdrawRegistration,
        Operation::MoveRegistration,
    ] {
        assert_eq!(log(op).await.len(), 1, "{op:?} has no record, or two");
    }

    // A refusal commits nothing, so its record is written afterwards: here, lost.
    let twice = s.withdraw(&coordinator, &r.reference, "again".into()).await.unwrap_err();
    assert_eq!(twice.code, crate::error::ErrorCode::Conflict);
    assert_eq!(log(Operation::WithdrawRegistration).await.len(), 1);
    store.broken.store(false, Ordering::SeqCst);
    s.withdraw(&coordinator, &r.reference, "again".into()).await.unwrap_err();
    let withdrawals = log(Operation::WithdrawRegistration).await;
    assert_eq!(withdrawals.len(), 2, "the refusal is audited once late writes work");
    assert_eq!(withdrawals[1].outcome.as_str(), "CONFLICT");
    s.stop().await;
}

#[tokio::test]
async fn each_step_of_a_panel_submission_commits_its_record() {
    let (s, store, _dir) = over_late_audit(ShardConfig { panel_chunk_rows: 2, ..ShardConfig::default() }).await;
    let f = super::panel_tests::clinic(&s, "0F111", "111").await;
    let doc = provider(&s, "P1111", "111", 0).await;
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let membership = AuditQuery { operation: Some(Operation::ListProviderAtClinic), limit: 5, ..Default::default() };
    let listed = store.audit_page(&membership).await.unwrap();
    assert_eq!(listed[0].target.as_deref(), Some("0F111/P1111"), "the clinic, then the provider, as for staff");
    // Taken off and listed again: each step under its own operation.
    s.set_provider_clinic(&sys(), &f, &doc, false).await.unwrap();
    s.set_provider_clinic(&sys(), &f, &doc, true).await.unwrap();
    let unlisting = AuditQuery { operation: Some(Operation::UnlistProviderAtClinic), ..membership.clone() };
    let unlisted = store.audit_page(&unlisting).await.unwrap();
    assert_eq!(unlisted.len(), 1, "{unlisted:?}");
    assert_eq!(unlisted[0].target.as_deref(), Some("0F111/P1111"));
    assert_eq!(store.audit_page(&membership).await.unwrap().len(), 2, "the listings only");
    let waiting = s.register(&sys(), &c("112"), household(&[phn(11)], &[])).await.unwrap().registration;
    let submissions = || {
        let store = store.clone();
        async move {
            let query = AuditQuery { operation: Some(Operation::SubmitPanel), limit: 50, ..Default::default() };
            store.audit_page(&query).await.unwrap()
        }
    };
    let text = super::panel_tests::csv_of(&[phn(11), phn(12), phn(13)], "0F111");
    let submit = || async {
        let parsed = crate::panel::csv::parse(text.as_bytes(), &f, Default::default(), super::tests::today()).unwrap();
        s.submit_panel(&sys(), &doc, &f, parsed).await
    };

    store.broken.store(true, Ordering::SeqCst);
    let report = submit().await.unwrap();
    assert!(report.rows.iter().all(|r| r.status.on_panel()), "{report:?}");
    // Chunk one (the new patient), the waiting patient's registration letting
    // them go, chunk one again (taking them), chunk two: four commits, four records.
    let records = submissions().await;
    let steps: Vec<_> = records.iter().map(|r| (r.shard.clone().unwrap(), r.target.clone().unwrap())).collect();
    let (panel, doc_id) = (s.regions().community("111").unwrap().shard.clone(), doc.to_string());
    assert_eq!(
        steps,
        [
            (panel.clone(), doc_id.clone()),
            (waiting.shard.clone(), waiting.reference.to_string()),
            (panel.clone(), doc_id.clone()),
            (panel.clone(), doc_id.clone()),
        ]
    );
    assert!(records.iter().all(|r| r.outcome == crate::audit::Outcome::Ok && r.subject == sys().subject()));

    // The same file again commits nothing, so its one record is written
    // afterwards (here lost, then kept once late writes work).
    submit().await.unwrap();
    assert_eq!(submissions().await.len(), 4);
    store.broken.store(false, Ordering::SeqCst);
    submit().await.unwrap();
    let records = submissions().await;
    assert_eq!(records.len(), 5);
    assert_eq!((records[4].shard.as_ref(), records[4].target.as_deref()), (Some(&panel), Some(doc_id.as_str())));
    s.stop().await;
}

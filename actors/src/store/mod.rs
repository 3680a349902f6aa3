//! The `Store` trait: persistence shaped for a partitioned wide-column database.
//!
//! Every read and write of shard data names its shard (the partition). There are
//! no cross-partition transactions. Two things are global and keyed by their own
//! id: *locators* (which shard holds a registration, proposal, provider or clinic;
//! plain writes, an orphan is harmless) and *PHN claims* (which registration or
//! panel holds a PHN; changed only by compare-and-set, because two shards must
//! never both take the same person). Shard ownership is a compare-and-set too: a
//! writer acquires a shard and gets a fencing [`Epoch`]; a commit carrying an
//! older epoch is refused.
//!
//! # Leases
//!
//! Ownership is a lease of [`Store::lease`] length: while it is live no other
//! owner can acquire the shard; the holder renews it ([`Store::renew_lease`],
//! the shard actor does so every third of the lease) and gives it back on a
//! clean stop ([`Store::release_shard`]). A commit is accepted only from the
//! current epoch *and* while its lease is live, so a writer that stalled past
//! its lease finds out before it writes, and re-acquires.
//!
//! The audit log is global too: append-only, ordered by time.
//!
//! Backends: [`embedded::EmbeddedStore`] (redb, the default) and
//! [`scylla::ScyllaStore`] (production). Both must pass [`conformance`].

mod codec;
pub mod conformance;
pub mod embedded;
pub mod lease;
pub mod scylla;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::audit::{AuditQuery, AuditRecord};
use crate::domain::{
    Clinic, DelegateId, Endorsement, EndorsementId, Event, FacilityNumber, PanelEntry, PanelIntake, PanelTransfer, Phn,
    PlaceHolders, Proposal, ProposalId, Provider, ProviderId, Registration, RegistrationMove, RegistrationOwner,
    RegistrationRef, Seq, Settlement, ShardKey, StaffMember, Timestamp, TransferKey,
};

/// How long a shard lease lasts unless renewed, when the configuration does not say.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// A fencing token: each acquisition of a shard gets a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

/// One row of shard data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A waitlist registration.
    Registration(Registration),
    /// A proposal.
    Proposal(Proposal),
    /// A provider homed in the shard.
    Provider(Provider),
    /// A clinic in the shard's community.
    Clinic(Clinic),
    /// One patient on one panel.
    PanelEntry(PanelEntry),
    /// A delegation endorsement of a provider homed in the shard.
    Endorsement(Endorsement),
    /// A panel transfer out of a provider homed in the shard.
    Transfer(PanelTransfer),
    /// A member of the staff of a clinic in the shard's community.
    ClinicStaff(StaffMember),
    /// A registration's latest move out of the shard's community.
    Move(RegistrationMove),
    /// Places of a provider homed in the shard held by a proposal made in a
    /// neighbouring community (spill-over matching): a copy of that proposal.
    Reservation(Proposal),
    /// A closed spill-over proposal not yet settled with the provider's shard.
    Settlement(Settlement),
    /// The members who hold a changed household's place in line (none kept: everyone in it).
    PlaceHolders(PlaceHolders),
    /// A waiting patient a submitted panel is taking, until their entry is saved.
    PanelIntake(PanelIntake),
    /// The patient who registered a household while signed in.
    Owner(RegistrationOwner),
}

/// The key of a [`Record`] within its shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    /// A registration by reference.
    Registration(RegistrationRef),
    /// A proposal by id.
    Proposal(ProposalId),
    /// A provider by id.
    Provider(ProviderId),
    /// A clinic by facility number.
    Clinic(FacilityNumber),
    /// A panel entry by provider and patient.
    PanelEntry(ProviderId, Phn),
    /// An endorsement by id.
    Endorsement(EndorsementId),
    /// A transfer by its source provider and idempotency key.
    Transfer(ProviderId, TransferKey),
    /// A staff member by clinic and sign-in subject.
    ClinicStaff(FacilityNumber, DelegateId),
    /// A registration's latest move out, by reference.
    Move(RegistrationRef),
    /// A reservation, by the proposal's id.
    Reservation(ProposalId),
    /// A settlement, by the proposal's id.
    Settlement(ProposalId),
    /// A registration's place holders, by reference.
    PlaceHolders(RegistrationRef),
    /// A panel intake, by provider and PHN.
    PanelIntake(ProviderId, Phn),
    /// A registration's owner, by reference.
    Owner(RegistrationRef),
}

impl Record {
    /// The record's key.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Registration(r) => RecordKey::Registration(r.reference),
            Record::Proposal(p) => RecordKey::Proposal(p.id),
            Record::Provider(p) => RecordKey::Provider(p.id.clone()),
            Record::Clinic(c) => RecordKey::Clinic(c.facility.clone()),
            Record::PanelEntry(e) => RecordKey::PanelEntry(e.provider.clone(), e.phn),
            Record::Endorsement(e) => RecordKey::Endorsement(e.id),
            Record::Transfer(t) => RecordKey::Transfer(t.from.clone(), t.key.clone()),
            Record::ClinicStaff(m) => RecordKey::ClinicStaff(m.facility.clone(), m.subject.clone()),
            Record::Move(m) => RecordKey::Move(m.reference),
            Record::Reservation(p) => RecordKey::Reservation(p.id),
            Record::Settlement(s) => RecordKey::Settlement(s.proposal.id),
            Record::PlaceHolders(h) => RecordKey::PlaceHolders(h.reference),
            Record::PanelIntake(i) => RecordKey::PanelIntake(i.provider.clone(), i.phn),
            Record::Owner(o) => RecordKey::Owner(o.reference),
        }
    }
}

/// Something findable by id alone, whose shard a [`Store::locate`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Locator {
    /// A registration.
    Registration(RegistrationRef),
    /// A proposal.
    Proposal(ProposalId),
    /// A provider.
    Provider(ProviderId),
    /// A clinic.
    Clinic(FacilityNumber),
    /// An endorsement.
    Endorsement(EndorsementId),
}

/// Everything one shard commits at once: durable together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records written (inserted or replaced whole).
    pub upserts: Vec<Record>,
    /// Records removed.
    pub deletes: Vec<RecordKey>,
    /// Events appended, in sequence order, continuing the shard's sequence.
    pub events: Vec<Event>,
    /// Locators pointing at this shard. Written before the shard's rows, so a
    /// crash between leaves at worst a locator to nothing.
    pub locators: Vec<Locator>,
    /// Audit records of the change, written with it or not at all.
    pub audit: Vec<AuditRecord>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.events.is_empty()
            && self.locators.is_empty()
            && self.audit.is_empty()
    }
}

/// A shard's whole partition, as loaded on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardImage {
    /// Every record, in no particular order.
    pub records: Vec<Record>,
    /// The sequence number of the shard's last event (0 if none).
    pub last_seq: Seq,
}

/// Who holds a PHN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhnHolder {
    /// A registration (waiting, proposed or attached through it).
    Registration(RegistrationRef),
    /// A provider's panel (uploaded, or moved there from a registration).
    Panel(ProviderId),
    /// A provider's panel taking a waiting patient off a registration: the
    /// registration let them go and passed the claim on, and the panel's entry
    /// may not be saved yet. The entry's step makes it `Panel`. Naming the
    /// registration, it lets a submission sent again after a crash in between
    /// count the patient as attached from the waitlist.
    PanelFrom(ProviderId, RegistrationRef),
}

impl PhnHolder {
    /// The provider whose panel holds the PHN, or is taking it.
    pub fn panel(&self) -> Option<&ProviderId> {
        match self {
            PhnHolder::Panel(p) | PhnHolder::PanelFrom(p, _) => Some(p),
            PhnHolder::Registration(_) => None,
        }
    }
}

/// The global claim on a PHN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhnClaim {
    /// The shard holding the PHN.
    pub shard: ShardKey,
    /// What in that shard holds it.
    pub holder: PhnHolder,
    /// When the claim was made (an unconfirmed claim older than a grace period is an orphan of a crash).
    pub at: Timestamp,
}

/// The answer of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome<T> {
    /// The value was as expected and is now the new one.
    Applied,
    /// The value was something else (shown), and nothing changed.
    Conflict(Option<T>),
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The writer's epoch is older than the shard's: another writer owns it now.
    #[error("shard {shard} is owned by a newer writer (epoch {current}, this writer holds {held})")]
    StaleEpoch {
        /// The shard.
        shard: String,
        /// The epoch the store holds.
        current: u64,
        /// The epoch the writer presented.
        held: u64,
    },
    /// Another owner holds a live lease on the shard.
    #[error("shard {shard} is leased to {owner}")]
    LeaseHeld {
        /// The shard.
        shard: String,
        /// Who holds it.
        owner: String,
    },
    /// The writer's lease ran out before the commit (it was not renewed in time):
    /// nothing was written, and the writer must acquire the shard again.
    #[error("the lease on shard {shard} ran out; acquire it again")]
    LeaseExpired {
        /// The shard.
        shard: String,
    },
    /// The backend is unreachable or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be read back; needs an operator.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// What a store's group-committing writer has done since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Write transactions committed or attempted (one fsync each).
    pub transactions: u64,
    /// Write requests they carried; `requests / transactions` is the grouping achieved.
    pub requests: u64,
}

/// Persistence for shards, locators and PHN claims. See the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The writer's counters, for a store that commits groups of writes itself
    /// (the embedded store). A database that takes each write on its own
    /// (ScyllaDB) has none.
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }

    /// How long a lease lasts unless renewed.
    fn lease(&self) -> Duration;

    /// Completes, with why, if the store cannot write again until the process
    /// opens it anew: the embedded database refuses every write after one I/O
    /// error (a disk that filled up, a failed `fsync`), since it can no longer
    /// tell what reached the disk. The gateway then stops, so that a restart
    /// recovers from the last durable state. Never completes by default.
    async fn broken(&self) -> String {
        std::future::pending().await
    }

    /// Takes ownership of `shard` for `owner` with a lease, returning an epoch
    /// higher than any handed out before for that shard. Refused with
    /// [`StoreError::LeaseHeld`] while another owner's lease is live; the same
    /// owner may acquire again (a restarted writer), which fences its older epoch.
    async fn acquire_shard(&self, shard: &ShardKey, owner: &str) -> Result<Epoch, StoreError>;

    /// Extends `owner`'s lease on `shard` by a whole lease from now, if `epoch`
    /// is still the shard's ([`StoreError::StaleEpoch`] otherwise).
    async fn renew_lease(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError>;

    /// Who holds a live lease on `shard` now, if anyone: where requests for
    /// it are served.
    async fn shard_owner(&self, shard: &ShardKey) -> Result<Option<String>, StoreError>;

    /// Every shard a node has acquired in this store, ever (its ownership row
    /// stays): a start checks them against the regions file, so data kept
    /// under a community the file no longer names is not silently cut off.
    async fn held_shards(&self) -> Result<Vec<ShardKey>, StoreError>;

    /// Gives the lease back so another owner may acquire at once. Releasing a
    /// lease that is no longer held (a stale epoch) does nothing.
    async fn release_shard(&self, shard: &ShardKey, owner: &str, epoch: Epoch) -> Result<(), StoreError>;

    /// Reads a shard's whole partition.
    async fn load_shard(&self, shard: &ShardKey) -> Result<ShardImage, StoreError>;

    /// Makes `batch` durable, all of it or none, if `epoch` is still the shard's
    /// and its lease, acquired through this handle, is live.
    async fn commit(&self, shard: &ShardKey, epoch: Epoch, batch: &Batch) -> Result<(), StoreError>;

    /// Up to `limit` events of `shard` with sequence numbers above `after`, in order.
    async fn events_after(&self, shard: &ShardKey, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// One record of a shard.
    async fn read(&self, shard: &ShardKey, key: &RecordKey) -> Result<Option<Record>, StoreError>;

    /// The shard a registration, proposal, provider or clinic lives in.
    async fn locate(&self, what: &Locator) -> Result<Option<ShardKey>, StoreError>;

    /// Points `what` at `shard` if it points nowhere yet, durably; answers
    /// where it points now (`shard` when it was taken, or already pointed
    /// there). For the ids callers choose (a provider's, a clinic's facility
    /// number), so two communities creating the same one at once cannot both
    /// succeed: the shard's commit then writes the same locator again.
    async fn claim_locator(&self, what: &Locator, shard: &ShardKey) -> Result<ShardKey, StoreError>;

    /// The current claim on a PHN.
    async fn phn_claim(&self, phn: Phn) -> Result<Option<PhnClaim>, StoreError>;

    /// Sets the claim on `phn` to `new` (`None` releases it) only if it is now `expected`.
    async fn cas_phn_claim(
        &self,
        phn: Phn,
        expected: Option<&PhnClaim>,
        new: Option<&PhnClaim>,
    ) -> Result<CasOutcome<PhnClaim>, StoreError>;

    /// Claims each PHN that nobody holds; for each one already held returns the
    /// claim found. Not atomic across PHNs: callers release what they took if
    /// they give up. Used for whole households and bulk loads.
    async fn claim_phns(&self, claims: Vec<(Phn, PhnClaim)>) -> Result<Vec<(Phn, PhnClaim)>, StoreError>;

    /// Makes audit records durable (all of them or none). The audit log is
    /// append-only: nothing ever rewrites or deletes a record.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// Audit records passing `query`'s filters, ordered by time then id, after
    /// its cursor and within its time range, at most `query.limit` of them.
    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
}

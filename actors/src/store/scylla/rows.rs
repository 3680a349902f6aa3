//! Rows ↔ domain types: the key columns each record, event, locator and claim
//! is stored under, and the values of the rows a lightweight transaction
//! returns. Pure functions: everything here is tested without a server.

use scylla::value::CqlValue;

use crate::domain::{Event, Phn, Seq, ShardKey};
use crate::store::codec::{decode, encode};
use crate::store::{Locator, Record, RecordKey, StoreError};

/// Hash buckets per shard for records. Fixed: changing it moves every record
/// to another partition, so it needs a data migration, not a restart.
pub(super) const RECORD_BUCKETS: u32 = 64;

/// Events per partition of the event log (bucket = seq / this).
pub(super) const EVENTS_PER_BUCKET: u64 = 65_536;

/// The partition-key columns a shard's rows share.
pub(super) fn shard_columns(shard: &ShardKey) -> (&str, &str) {
    (shard.ha.as_str(), shard.community.as_str())
}

/// Where a record lives in its shard: `(bucket, kind, id)`.
pub(super) fn record_columns(key: &RecordKey) -> (i32, i32, String) {
    let (kind, id) = match key {
        RecordKey::Registration(r) => (1, r.as_str().to_string()),
        RecordKey::Proposal(p) => (2, p.as_str().to_string()),
        RecordKey::Provider(p) => (3, p.as_str().to_string()),
        RecordKey::Clinic(c) => (4, c.as_str().to_string()),
        // Provider ids are letters and digits, so `:` cannot occur inside one.
        RecordKey::PanelEntry(provider, phn) => (5, format!("{}:{}", provider.as_str(), phn.as_u64())),
        RecordKey::Endorsement(e) => (6, e.as_str().to_string()),
        // Transfer keys are letters, digits, `-` and `_`: the first `:` ends the provider id.
        RecordKey::Transfer(provider, key) => (7, format!("{}:{}", provider.as_str(), key.as_str())),
        // Facility numbers are five letters or digits: the first `:` ends it.
        RecordKey::ClinicStaff(facility, subject) => (8, format!("{}:{}", facility.as_str(), subject.as_str())),
        RecordKey::Move(r) => (9, r.as_str().to_string()),
        RecordKey::Reservation(p) => (10, p.as_str().to_string()),
        RecordKey::Settlement(p) => (11, p.as_str().to_string()),
        RecordKey::PlaceHolders(r) => (12, r.as_str().to_string()),
        RecordKey::PanelIntake(provider, phn) => (13, format!("{}:{}", provider.as_str(), phn.as_u64())),
        RecordKey::Owner(r) => (14, r.as_str().to_string()),
    };
    (bucket_of(kind, &id), kind, id)
}

/// A stable hash (FNV-1a) of the record's kind and id, folded into a bucket.
/// Stable across builds and platforms, unlike `std`'s hasher: the bucket is
/// part of where the row is stored.
pub(super) fn bucket_of(kind: i32, id: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in kind.to_le_bytes().iter().chain(id.as_bytes()) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Below 64, so the cast is exact.
    (hash % RECORD_BUCKETS) as i32
}

/// Every record bucket, for loading a whole shard.
pub(super) fn all_record_buckets() -> impl Iterator<Item = i32> {
    (0..RECORD_BUCKETS).map(|b| b as i32)
}

/// The event-log partition holding `seq`.
pub(super) fn event_bucket(seq: Seq) -> i64 {
    // Below 2^48, so the cast is exact.
    (seq / EVENTS_PER_BUCKET) as i64
}

/// The last sequence number an event bucket can hold.
pub(super) fn bucket_end(bucket: i64) -> Seq {
    (bucket as u64 + 1) * EVENTS_PER_BUCKET - 1
}

/// A sequence number as CQL's `bigint`; sequence numbers never pass `i64::MAX`.
pub(super) fn seq_column(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt("a sequence number passed i64::MAX".into()))
}

/// A stored `bigint` sequence number back as a [`Seq`].
pub(super) fn seq_from_column(seq: i64) -> Result<Seq, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt("a stored sequence number is negative".into()))
}

/// A locator's key columns: `(kind, id)`.
pub(super) fn locator_columns(locator: &Locator) -> (i32, String) {
    match locator {
        Locator::Registration(r) => (1, r.as_str().to_string()),
        Locator::Proposal(p) => (2, p.as_str().to_string()),
        Locator::Provider(p) => (3, p.as_str().to_string()),
        Locator::Clinic(c) => (4, c.as_str().to_string()),
        Locator::Endorsement(e) => (5, e.as_str().to_string()),
    }
}

/// The `shard` column of a locator back as a key.
pub(super) fn shard_from_column(text: &str) -> Result<ShardKey, StoreError> {
    ShardKey::parse(text).map_err(|_| StoreError::Corrupt("a locator names a malformed shard".into()))
}

/// The PHN key column. PHNs are ten digits, far below `i64::MAX`.
pub(super) fn phn_column(phn: Phn) -> i64 {
    phn.as_u64() as i64
}

/// A record's blob.
pub(super) fn record_blob(record: &Record) -> Result<Vec<u8>, StoreError> {
    encode(record, "record")
}

/// A record back from its blob.
pub(super) fn record_from_blob(blob: &[u8]) -> Result<Record, StoreError> {
    decode(blob, "record")
}

/// An event's blob.
pub(super) fn event_blob(event: &Event) -> Result<Vec<u8>, StoreError> {
    encode(event, "event")
}

/// An event back from its blob, checked against the row's sequence number.
pub(super) fn event_from_row(seq: i64, blob: &[u8]) -> Result<Event, StoreError> {
    let event: Event = decode(blob, "event")?;
    if i64::try_from(event.seq).ok() != Some(seq) {
        return Err(StoreError::Corrupt("an event is stored under another sequence number".into()));
    }
    Ok(event)
}

/// The row a lightweight transaction answers with: whether it applied, and the
/// values the row had (ScyllaDB returns them whether or not it applied).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct LwtRow {
    pub(super) applied: bool,
    columns: Vec<(String, Option<CqlValue>)>,
}

impl LwtRow {
    /// From the columns of the first row of the answer, by name.
    pub(super) fn new(columns: Vec<(String, Option<CqlValue>)>) -> Result<Self, StoreError> {
        let applied = match columns.iter().find(|(name, _)| name == "[applied]") {
            Some((_, Some(CqlValue::Boolean(b)))) => *b,
            _ => return Err(StoreError::Unavailable("a conditional write answered without [applied]".into())),
        };
        Ok(LwtRow { applied, columns })
    }

    fn get(&self, name: &str) -> Option<&CqlValue> {
        self.columns.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_ref())
    }

    /// A `bigint` column of the previous row (`None`: null or no row).
    pub(super) fn bigint(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(CqlValue::BigInt(v)) => Some(*v),
            _ => None,
        }
    }

    /// A `text` column of the previous row.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(CqlValue::Text(v)) => Some(v),
            _ => None,
        }
    }

    /// A `blob` column of the previous row.
    pub(super) fn blob(&self, name: &str) -> Option<&[u8]> {
        match self.get(name) {
            Some(CqlValue::Blob(v)) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::domain::{
        DelegateId, EndorsementId, FacilityNumber, ProposalId, ProviderId, RegistrationRef, TransferKey,
    };
    use crate::store::conformance::fixtures::{World, phn, reference, shard};

    #[test]
    fn record_keys_map_to_distinct_columns_and_back_to_the_same_bucket() {
        let provider = ProviderId::parse("P12345").unwrap();
        let keys = [
            RecordKey::Registration(RegistrationRef::parse("000000000001").unwrap()),
            RecordKey::Proposal(ProposalId::parse("0000000001").unwrap()),
            RecordKey::Provider(provider.clone()),
            RecordKey::Clinic(FacilityNumber::parse("F0001").unwrap()),
            RecordKey::PanelEntry(provider.clone(), phn(1)),
            RecordKey::PanelEntry(provider, phn(2)),
            RecordKey::Endorsement(EndorsementId::parse("E000000001").unwrap()),
            RecordKey::Transfer(ProviderId::parse("P12345").unwrap(), TransferKey::parse("k-1").unwrap()),
            RecordKey::Transfer(ProviderId::parse("P12345").unwrap(), TransferKey::parse("k").unwrap()),
            RecordKey::ClinicStaff(FacilityNumber::parse("F0001").unwrap(), DelegateId::parse("moa-1").unwrap()),
            RecordKey::ClinicStaff(FacilityNumber::parse("F0001").unwrap(), DelegateId::parse("moa-10").unwrap()),
            RecordKey::ClinicStaff(FacilityNumber::parse("F0002").unwrap(), DelegateId::parse("moa-1").unwrap()),
            RecordKey::Move(RegistrationRef::parse("000000000001").unwrap()),
            RecordKey::Reservation(ProposalId::parse("0000000001").unwrap()),
            RecordKey::Settlement(ProposalId::parse("0000000001").unwrap()),
            RecordKey::PlaceHolders(RegistrationRef::parse("000000000001").unwrap()),
            RecordKey::PanelIntake(ProviderId::parse("P12345").unwrap(), phn(1)),
            RecordKey::Owner(RegistrationRef::parse("000000000001").unwrap()),
        ];
        let columns: BTreeSet<_> = keys.iter().map(record_columns).collect();
        assert_eq!(columns.len(), keys.len(), "two keys share a row");
        for key in &keys {
            let (bucket, kind, id) = record_columns(key);
            assert_eq!(bucket, bucket_of(kind, &id));
            assert!((0..RECORD_BUCKETS as i32).contains(&bucket));
        }
        let (_, kind, id) = record_columns(&RecordKey::PanelEntry(ProviderId::parse("P12345").unwrap(), phn(1)));
        assert_eq!((kind, id), (5, format!("P12345:{}", phn(1).as_u64())));
        let staff =
            RecordKey::ClinicStaff(FacilityNumber::parse("0F111").unwrap(), DelegateId::parse("rn@x.ca").unwrap());
        let (_, kind, id) = record_columns(&staff);
        assert_eq!((kind, id.as_str()), (8, "0F111:rn@x.ca"));
        let kinds: BTreeSet<i32> = keys.iter().map(|k| record_columns(k).1).collect();
        assert_eq!(kinds, (1..=14).collect(), "every record kind has its own kind number");
    }

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        // Fixed values: a change here moves stored rows, so it must be deliberate.
        assert_eq!(bucket_of(1, "000000000001"), bucket_of(1, "000000000001"));
        assert_eq!(bucket_of(3, "P12345"), 9);
        assert_eq!(bucket_of(1, ""), 4);
        let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
        for i in 0..64_000u32 {
            *counts.entry(record_columns(&RecordKey::Registration(reference(i))).0).or_default() += 1;
        }
        assert_eq!(counts.len(), RECORD_BUCKETS as usize, "some bucket is never used");
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert!(*min > 800 && *max < 1_200, "buckets are uneven: {min}..{max} of 1000 each");
        assert_eq!(all_record_buckets().count(), RECORD_BUCKETS as usize);
    }

    #[test]
    fn event_buckets_hold_contiguous_ranges_below_100k_rows() {
        const { assert!(EVENTS_PER_BUCKET < 100_000) };
        assert_eq!(event_bucket(0), 0);
        assert_eq!(event_bucket(EVENTS_PER_BUCKET - 1), 0);
        assert_eq!(event_bucket(EVENTS_PER_BUCKET), 1);
        assert_eq!(bucket_end(0), EVENTS_PER_BUCKET - 1);
        assert_eq!(event_bucket(bucket_end(7)), 7);
        assert_eq!(event_bucket(bucket_end(7) + 1), 8);
        assert!(seq_column(u64::MAX).is_err());
        assert!(seq_from_column(-1).is_err());
        assert_eq!(seq_from_column(seq_column(42).unwrap()).unwrap(), 42);
    }

    #[test]
    fn records_events_and_locators_round_trip() {
        let s = shard("IHA/111");
        let world = World::new(&s, 3);
        for record in world.records() {
            assert_eq!(record_from_blob(&record_blob(&record).unwrap()).unwrap(), record);
        }
        for event in world.events(7) {
            let seq = seq_column(event.seq).unwrap();
            assert_eq!(event_from_row(seq, &event_blob(&event).unwrap()).unwrap(), event);
            assert!(event_from_row(seq + 1, &event_blob(&event).unwrap()).is_err(), "a misfiled event was accepted");
        }
        let locators = world.locators();
        let kinds: BTreeSet<_> = locators.iter().map(|l| locator_columns(l).0).collect();
        assert_eq!(kinds.len(), locators.len(), "two kinds of locator share a kind number");
        assert_eq!(shard_columns(&s), ("IHA", "111"));
        assert_eq!(shard_from_column(&s.to_string()).unwrap(), s);
        assert!(matches!(shard_from_column("nonsense"), Err(StoreError::Corrupt(_))));
        assert_eq!(phn_column(phn(5)) as u64, phn(5).as_u64());
    }

    #[test]
    fn lwt_rows_read_applied_and_the_previous_values() {
        let row = LwtRow::new(vec![
            ("[applied]".into(), Some(CqlValue::Boolean(false))),
            ("epoch".into(), Some(CqlValue::BigInt(7))),
            ("owner".into(), Some(CqlValue::Text("node-1".into()))),
            ("claim".into(), Some(CqlValue::Blob(vec![1, 2]))),
            ("last_seq".into(), None),
        ])
        .unwrap();
        assert!(!row.applied);
        assert_eq!(row.bigint("epoch"), Some(7));
        assert_eq!(row.text("owner"), Some("node-1"));
        assert_eq!(row.blob("claim"), Some(&[1u8, 2][..]));
        assert_eq!(row.bigint("last_seq"), None);
        assert_eq!(row.bigint("missing"), None);
        assert!(LwtRow::new(vec![("epoch".into(), Some(CqlValue::BigInt(1)))]).is_err());
    }
}

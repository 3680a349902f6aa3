//! The byte layout of the embedded store: table definitions, keys and the value codec.
//!
//! Keys are built by hand rather than serialised, because their *order* matters:
//! a shard's rows and events must sit in one contiguous key range, and events must
//! sort by sequence number. Values are postcard behind a one-byte format version.

use redb::TableDefinition;

use crate::audit::AuditCursor;
use crate::domain::{Phn, Seq, ShardKey};
pub(super) use crate::store::codec::{decode, encode};
use crate::store::{Locator, RecordKey};

/// `shard \0 kind id` → versioned `Record`.
pub(super) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// `shard \0 seq(big-endian u64)` → versioned `Event`.
pub(super) const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// `shard` → the shard's current fencing epoch.
pub(super) const EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("epochs");
/// `kind id` → versioned `ShardKey`.
pub(super) const LOCATORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("locators");
/// PHN as an integer → versioned `PhnClaim`.
pub(super) const PHN_CLAIMS: TableDefinition<u64, &[u8]> = TableDefinition::new("phn_claims");
/// `time(order-preserving u64) id(u64)`, big-endian → versioned `AuditRecord`.
pub(super) const AUDIT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit");
/// `"layout"` → [`LAYOUT_VERSION`]: lets a future key layout refuse an old file (or migrate it).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The version of the key layout above.
pub(super) const LAYOUT_VERSION: u64 = 1;

/// Ends the shard part of a key. Shard names are `HA/COMMUNITY` in ASCII letters,
/// digits and `-`, so they never contain 0x00 (or 0x01, the end of the range):
/// the prefix of `IHA/111` can never be a prefix of `IHA/1110`'s keys.
const SHARD_END: u8 = 0x00;
/// Separates a panel entry's provider id from its PHN (ids are alphanumeric).
const FIELD_END: u8 = 0x00;

/// The shard's name as the `epochs` table keys it.
pub(super) fn shard_name(shard: &ShardKey) -> String {
    shard.to_string()
}

/// `shard \0`: the prefix shared by all of a shard's rows (and all its events).
pub(super) fn shard_prefix(shard: &ShardKey) -> Vec<u8> {
    let mut key = shard_name(shard).into_bytes();
    key.push(SHARD_END);
    key
}

/// The half-open range `[shard \0, shard \1)`: exactly the keys with the shard's prefix.
pub(super) fn shard_range(shard: &ShardKey) -> (Vec<u8>, Vec<u8>) {
    let start = shard_prefix(shard);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = SHARD_END + 1;
    }
    (start, end)
}

/// The key of a record inside its shard.
pub(super) fn record_key(shard: &ShardKey, key: &RecordKey) -> Vec<u8> {
    let mut out = shard_prefix(shard);
    match key {
        RecordKey::Registration(r) => tagged(&mut out, 1, r.as_str()),
        RecordKey::Proposal(p) => tagged(&mut out, 2, p.as_str()),
        RecordKey::Provider(p) => tagged(&mut out, 3, p.as_str()),
        RecordKey::Clinic(c) => tagged(&mut out, 4, c.as_str()),
        RecordKey::PanelEntry(provider, phn) => {
            tagged(&mut out, 5, provider.as_str());
            out.push(FIELD_END);
            out.extend_from_slice(&phn_key(*phn).to_be_bytes());
        }
        RecordKey::Endorsement(e) => tagged(&mut out, 6, e.as_str()),
        RecordKey::Transfer(provider, key) => {
            tagged(&mut out, 7, provider.as_str());
            out.push(FIELD_END);
            out.extend_from_slice(key.as_str().as_bytes());
        }
        // Facility numbers are five letters or digits, so the separator cannot occur inside one.
        RecordKey::ClinicStaff(facility, subject) => {
            tagged(&mut out, 8, facility.as_str());
            out.push(FIELD_END);
            out.extend_from_slice(subject.as_str().as_bytes());
        }
        RecordKey::Move(r) => tagged(&mut out, 9, r.as_str()),
        RecordKey::Reservation(p) => tagged(&mut out, 10, p.as_str()),
        RecordKey::Settlement(p) => tagged(&mut out, 11, p.as_str()),
        RecordKey::PlaceHolders(r) => tagged(&mut out, 12, r.as_str()),
        RecordKey::PanelIntake(provider, phn) => {
            tagged(&mut out, 13, provider.as_str());
            out.push(FIELD_END);
            out.extend_from_slice(&phn_key(*phn).to_be_bytes());
        }
        RecordKey::Owner(r) => tagged(&mut out, 14, r.as_str()),
    }
    out
}

/// The key of one event: big-endian, so byte order is sequence order.
pub(super) fn event_key(shard: &ShardKey, seq: Seq) -> Vec<u8> {
    let mut out = shard_prefix(shard);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The key of a locator (global, not per shard).
pub(super) fn locator_key(locator: &Locator) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match locator {
        Locator::Registration(r) => tagged(&mut out, 1, r.as_str()),
        Locator::Proposal(p) => tagged(&mut out, 2, p.as_str()),
        Locator::Provider(p) => tagged(&mut out, 3, p.as_str()),
        Locator::Clinic(c) => tagged(&mut out, 4, c.as_str()),
        Locator::Endorsement(e) => tagged(&mut out, 6, e.as_str()),
    }
    out
}

/// The key of a PHN claim.
pub(super) fn phn_key(phn: Phn) -> u64 {
    phn.as_u64()
}

/// The key of an audit record: time then id, so byte order is log order.
pub(super) fn audit_key(cursor: AuditCursor) -> [u8; 16] {
    // Flipping the sign bit maps i64 order onto u64 order (times before 1970 sort first).
    let at = (cursor.at.0 as u64) ^ (1 << 63);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&at.to_be_bytes());
    out[8..].copy_from_slice(&cursor.id.0.to_be_bytes());
    out
}

fn tagged(out: &mut Vec<u8>, kind: u8, id: &str) {
    out.push(kind);
    out.extend_from_slice(id.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProviderId, RegistrationRef};

    #[test]
    fn a_shard_range_holds_only_its_own_keys() {
        let short = ShardKey::parse("IHA/11").unwrap();
        let mid = ShardKey::parse("IHA/111").unwrap();
        let long = ShardKey::parse("IHA/1110").unwrap();
        let (start, end) = shard_range(&mid);
        let inside = |k: &[u8]| start.as_slice() <= k && k < end.as_slice();
        let r = RecordKey::Registration(RegistrationRef::generate());
        assert!(inside(&record_key(&mid, &r)));
        assert!(inside(&event_key(&mid, u64::MAX)));
        for other in [&short, &long] {
            assert!(!inside(&record_key(other, &r)));
            assert!(!inside(&event_key(other, 0)));
            assert!(!inside(&event_key(other, u64::MAX)));
        }
    }

    #[test]
    fn audit_keys_sort_by_time_then_id() {
        use crate::audit::AuditId;
        use crate::domain::Timestamp;
        let key = |at, id| audit_key(AuditCursor { at: Timestamp(at), id: AuditId(id) });
        assert!(key(-5, 9) < key(0, 0));
        assert!(key(0, u64::MAX) < key(1, 0));
        assert!(key(7, 1) < key(7, 2));
        assert!(key(1_700_000_000_000, 0) < key(1_800_000_000_000, 0));
    }

    #[test]
    fn event_keys_sort_by_sequence() {
        let s = ShardKey::parse("FHA/201").unwrap();
        assert!(event_key(&s, 255) < event_key(&s, 256));
        assert!(event_key(&s, 1) < event_key(&s, u64::MAX));
    }

    #[test]
    fn panel_keys_are_distinct_per_provider_and_phn() {
        let s = ShardKey::parse("FHA/201").unwrap();
        let p1 = ProviderId::parse("P1234").unwrap();
        let p2 = ProviderId::parse("P12345").unwrap();
        let a = Phn::parse("9698658215").unwrap();
        let b = Phn::with_body(1).unwrap();
        let keys = [(&p1, a), (&p1, b), (&p2, a), (&p2, b)]
            .map(|(p, phn)| record_key(&s, &RecordKey::PanelEntry(p.clone(), phn)));
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn staff_and_transfer_keys_are_distinct_and_stay_in_their_shard() {
        use crate::domain::{DelegateId, FacilityNumber, TransferKey};
        let s = ShardKey::parse("FHA/201").unwrap();
        let (f1, f2) = (FacilityNumber::parse("F0001").unwrap(), FacilityNumber::parse("F0002").unwrap());
        let (a, b) = (DelegateId::parse("moa-1").unwrap(), DelegateId::parse("moa-10").unwrap());
        let p = ProviderId::parse("P1234").unwrap();
        let keys = [
            RecordKey::ClinicStaff(f1.clone(), a.clone()),
            RecordKey::ClinicStaff(f1, b),
            RecordKey::ClinicStaff(f2, a),
            RecordKey::Transfer(p.clone(), TransferKey::parse("k").unwrap()),
            RecordKey::Transfer(p, TransferKey::parse("k-1").unwrap()),
        ]
        .map(|k| record_key(&s, &k));
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        let (start, end) = shard_range(&s);
        assert!(keys.iter().all(|k| start.as_slice() <= k.as_slice() && k.as_slice() < end.as_slice()));
    }
}

//! The audit log on ScyllaDB: ten-minute partitions in time order, and a small
//! index of the partitions that hold records so a read skips empty time.
//!
//! `audit (bucket) → (at, id) → record`, with `bucket = at / 10 min`, and
//! `audit_buckets (span) → bucket`, with `span = bucket / 50,000` (about a
//! year); the spans themselves are listed under the span [`SPANS`]. Appends
//! write the index rows and the records in one logged batch; the index rows are
//! the same cells every time, so repeating them costs nothing but the write.

use crate::audit::{AuditCursor, AuditId};
use crate::domain::Timestamp;

/// Milliseconds per audit partition.
pub(super) const BUCKET_MS: i64 = 10 * 60 * 1000;
/// Buckets per index partition.
pub(super) const BUCKETS_PER_SPAN: i64 = 50_000;
/// The index partition listing every span that holds records. No real span is
/// this low (it would be billions of years before 1970).
pub(super) const SPANS: i64 = i64::MIN;

/// The partition of a record made at `at`.
pub(super) fn bucket(at: Timestamp) -> i64 {
    at.0.div_euclid(BUCKET_MS)
}

/// The index partition of a bucket.
pub(super) fn span(bucket: i64) -> i64 {
    bucket.div_euclid(BUCKETS_PER_SPAN)
}

/// The first and last bucket of a span.
pub(super) fn span_buckets(span: i64) -> (i64, i64) {
    let first = span.saturating_mul(BUCKETS_PER_SPAN);
    (first, first.saturating_add(BUCKETS_PER_SPAN - 1))
}

/// The id as a `bigint` that sorts like the unsigned id.
pub(super) fn id_column(id: AuditId) -> i64 {
    (id.0 ^ (1 << 63)) as i64
}

/// The stored `bigint` back as the id.
pub(super) fn id_from_column(column: i64) -> AuditId {
    AuditId((column as u64) ^ (1 << 63))
}

/// A stored row's position in the log.
pub(super) fn cursor(at: i64, id: i64) -> AuditCursor {
    AuditCursor { at: Timestamp(at), id: id_from_column(id) }
}

/// The buckets a query may touch: from its start to the end of its range.
pub(super) fn bucket_range(start: AuditCursor, until: Option<Timestamp>) -> (i64, i64) {
    let last = until.map_or(i64::MAX, |u| bucket(Timestamp(u.0.saturating_sub(1))));
    (bucket(start.at), last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_order_as_bigints() {
        let ids = [0, 1, 1 << 62, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        for pair in ids.windows(2) {
            assert!(id_column(AuditId(pair[0])) < id_column(AuditId(pair[1])), "{pair:?}");
        }
        for id in ids {
            assert_eq!(id_from_column(id_column(AuditId(id))), AuditId(id));
        }
    }

    #[test]
    fn buckets_are_ten_minutes_and_spans_hold_fifty_thousand() {
        assert_eq!(bucket(Timestamp(0)), 0);
        assert_eq!(bucket(Timestamp(BUCKET_MS - 1)), 0);
        assert_eq!(bucket(Timestamp(BUCKET_MS)), 1);
        assert_eq!(bucket(Timestamp(-1)), -1, "times before 1970 still sort first");
        assert_eq!(span(BUCKETS_PER_SPAN - 1), 0);
        assert_eq!(span(BUCKETS_PER_SPAN), 1);
        assert_eq!(span(-1), -1);
        assert!(span(bucket(Timestamp(i64::MIN))) > SPANS);
        assert_eq!(span_buckets(1), (BUCKETS_PER_SPAN, 2 * BUCKETS_PER_SPAN - 1));
        // A 2026 record: bucket and span as stored.
        let at = Timestamp(1_767_225_600_000);
        assert_eq!(bucket(at), 2_945_376);
        assert_eq!(span(bucket(at)), 58);
    }

    #[test]
    fn a_query_range_ends_in_the_bucket_before_its_exclusive_end() {
        let start = AuditCursor { at: Timestamp(BUCKET_MS + 5), id: AuditId(0) };
        assert_eq!(bucket_range(start, Some(Timestamp(3 * BUCKET_MS))), (1, 2));
        assert_eq!(bucket_range(start, None), (1, i64::MAX));
        assert_eq!(cursor(7, id_column(AuditId(9))), AuditCursor { at: Timestamp(7), id: AuditId(9) });
    }
}

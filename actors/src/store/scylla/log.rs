//! Walking a shard's event log across its buckets: which bucket to read next.
//! Pure decisions, so the paging rules are tested without a server.
//!
//! Both rest on one fact: a shard's sequence numbers have no gaps. A bucket
//! whose newest event is its last possible one may have a successor; a bucket
//! that ends earlier is the last one.

use super::rows::{bucket_end, event_bucket};
use crate::domain::Seq;

/// Where `events_after` reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Read (more of) this bucket.
    Bucket(i64),
    /// There are no more events.
    Done,
}

/// After a page of `bucket` that asked for `want` events and got `got`, the
/// newest now being `last`.
pub(super) fn after_page(bucket: i64, last: Seq, got: usize, want: usize) -> Next {
    if last == bucket_end(bucket) {
        Next::Bucket(bucket + 1)
    } else if got < want {
        Next::Done
    } else {
        Next::Bucket(bucket)
    }
}

/// Finding the newest event from the `last_seq` hint on the ownership row. The
/// hint is written before the events, so it may be ahead of them (a commit that
/// failed after its fence) but is never behind; the walk copes with both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewestWalk {
    bucket: i64,
    /// The newest event seen in a full bucket below `bucket`.
    full_below: Seq,
}

impl NewestWalk {
    /// Starts at the hint's bucket.
    pub(super) fn from_hint(hint: Seq) -> Self {
        NewestWalk { bucket: event_bucket(hint), full_below: 0 }
    }

    /// The bucket whose newest event to read next.
    pub(super) fn bucket(&self) -> i64 {
        self.bucket
    }

    /// Takes that bucket's newest event; `Some` once the shard's newest is known.
    pub(super) fn observe(&mut self, newest_in_bucket: Option<Seq>) -> Option<Seq> {
        match newest_in_bucket {
            Some(seq) if seq == bucket_end(self.bucket) => {
                self.full_below = seq;
                self.bucket += 1;
                None
            }
            Some(seq) => Some(seq),
            None if self.full_below > 0 || self.bucket <= 0 => Some(self.full_below),
            None => {
                self.bucket -= 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::EVENTS_PER_BUCKET;
    use super::*;

    /// Runs the walk against a log holding events 1..=newest.
    fn walk(hint: Seq, newest: Seq) -> (Seq, usize) {
        let mut w = NewestWalk::from_hint(hint);
        for reads in 1..100 {
            let b = w.bucket();
            let first = (b as u64) * EVENTS_PER_BUCKET;
            let in_bucket = (newest >= first.max(1)).then(|| newest.min(bucket_end(b)));
            if let Some(found) = w.observe(in_bucket) {
                return (found, reads);
            }
        }
        panic!("the walk did not end");
    }

    #[test]
    fn the_newest_event_is_found_from_an_exact_early_or_late_hint() {
        let n = EVENTS_PER_BUCKET;
        assert_eq!(walk(0, 0), (0, 1), "an empty shard");
        assert_eq!(walk(7, 7), (7, 1), "an exact hint reads one bucket");
        assert_eq!(walk(3 * n + 5, 2 * n + 9), (2 * n + 9, 2), "a hint a bucket ahead walks down");
        assert_eq!(walk(5 * n, 2 * n + 9), (2 * n + 9, 4), "a hint far ahead walks down further");
        assert_eq!(walk(n - 1, n - 1), (n - 1, 2), "a full bucket looks at the next one");
        assert_eq!(walk(0, 2 * n + 3), (2 * n + 3, 3), "a hint behind walks up through full buckets");
        assert_eq!(walk(2 * n, n - 1), (n - 1, 4), "down to a full bucket, then one look above it");
    }

    #[test]
    fn paging_moves_to_the_next_bucket_only_past_a_full_one() {
        let end = bucket_end(0);
        assert_eq!(after_page(0, end, 3, 10), Next::Bucket(1), "the bucket ended exactly");
        assert_eq!(after_page(0, 500, 3, 10), Next::Done, "the bucket ended early: the log ended");
        assert_eq!(after_page(0, 500, 10, 10), Next::Bucket(0), "a full page: read on in the same bucket");
        assert_eq!(after_page(1, 20, 0, 10), Next::Done, "nothing after `after`");
    }
}

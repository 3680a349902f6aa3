//! The waitlist in line order, counted: where a registration stands and how
//! many people are ahead of it, without walking the people ahead.
//!
//! A sorted list cut into chunks of at most [`MOST`] entries, each chunk
//! knowing how many people it holds. A registration's place is the sum over the
//! chunks before its own plus a walk inside its chunk: about `n / MOST + MOST`
//! steps, against up to `n / 2` for walking the line itself (a household in the
//! middle of Surrey's 105,000 took 38 ms that way, holding its shard's actor).
//! Inserting or removing shifts at most one chunk.

use crate::domain::{RegistrationRef, Timestamp};

/// A place in line: registration time, then reference (unique).
pub type Key = (Timestamp, RegistrationRef);

/// Most entries a chunk holds before it is split in two.
const MOST: usize = 512;
/// A chunk this small is merged with its next one when they fit together.
const FEWEST: usize = MOST / 4;

#[derive(Debug, Default)]
struct Chunk {
    keys: Vec<Key>,
    /// People in each entry's household, beside `keys`.
    people: Vec<u32>,
    /// Sum of `people`.
    total: u64,
}

impl Chunk {
    fn last(&self) -> &Key {
        self.keys.last().expect("chunks are never empty")
    }
}

/// The waiting registrations in line order, with their households' sizes.
#[derive(Debug, Default)]
pub struct Line {
    /// In order, none empty; every key of a chunk is below every key of the next.
    chunks: Vec<Chunk>,
}

impl Line {
    /// An empty line.
    pub fn new() -> Self {
        Line::default()
    }

    /// The chunk `key` belongs in: the first whose last key is not below it
    /// (`chunks.len()` when it is above them all).
    fn chunk_of(&self, key: &Key) -> usize {
        self.chunks.partition_point(|c| c.last() < key)
    }

    /// Adds `key` with a household of `people`. A key already there is left as it is.
    pub fn insert(&mut self, key: Key, people: u32) {
        let c = self.chunk_of(&key).min(self.chunks.len().saturating_sub(1));
        if self.chunks.is_empty() {
            self.chunks.push(Chunk::default());
        }
        let chunk = &mut self.chunks[c];
        let Err(at) = chunk.keys.binary_search(&key) else { return };
        chunk.keys.insert(at, key);
        chunk.people.insert(at, people);
        chunk.total += u64::from(people);
        if chunk.keys.len() > MOST {
            let keys = chunk.keys.split_off(MOST / 2);
            let people = chunk.people.split_off(MOST / 2);
            let moved: u64 = people.iter().map(|&p| u64::from(p)).sum();
            chunk.total -= moved;
            self.chunks.insert(c + 1, Chunk { keys, people, total: moved });
        }
    }

    /// Takes `key` out; whether it was there.
    pub fn remove(&mut self, key: &Key) -> bool {
        let c = self.chunk_of(key);
        let Some(chunk) = self.chunks.get_mut(c) else { return false };
        let Ok(at) = chunk.keys.binary_search(key) else { return false };
        chunk.keys.remove(at);
        chunk.total -= u64::from(chunk.people.remove(at));
        if chunk.keys.is_empty() {
            self.chunks.remove(c);
        } else if chunk.keys.len() < FEWEST && c + 1 < self.chunks.len() {
            let next_len = self.chunks[c + 1].keys.len();
            if self.chunks[c].keys.len() + next_len <= MOST {
                let next = self.chunks.remove(c + 1);
                let chunk = &mut self.chunks[c];
                chunk.keys.extend(next.keys);
                chunk.people.extend(next.people);
                chunk.total += next.total;
            }
        }
        true
    }

    /// How many households and how many people stand ahead of `key`; `None`
    /// when it is not in line.
    pub fn ahead_of(&self, key: &Key) -> Option<(u64, u64)> {
        let c = self.chunk_of(key);
        let chunk = self.chunks.get(c)?;
        let at = chunk.keys.binary_search(key).ok()?;
        let before = &self.chunks[..c];
        let households = before.iter().map(|c| c.keys.len() as u64).sum::<u64>() + at as u64;
        let people =
            before.iter().map(|c| c.total).sum::<u64>() + chunk.people[..at].iter().map(|&p| u64::from(p)).sum::<u64>();
        Some((households, people))
    }

    /// The keys after `cursor` (all of them without one), in line order.
    pub fn after(&self, cursor: Option<&Key>) -> impl Iterator<Item = &Key> + '_ {
        let (c, at) = match cursor {
            None => (0, 0),
            Some(k) => {
                let c = self.chunks.partition_point(|ch| ch.last() <= k);
                (c, self.chunks.get(c).map_or(0, |ch| ch.keys.partition_point(|x| x <= k)))
            }
        };
        let first = self.chunks.get(c).map_or(&[][..], |ch| &ch.keys[at..]);
        first.iter().chain(self.chunks.iter().skip(c + 1).flat_map(|ch| ch.keys.iter()))
    }

    /// Households in line counted by `class`, which must not decrease or must
    /// not increase along the line (whole days waited, say): each class's
    /// entries then stand together, and each run of them is measured by a binary
    /// search instead of a walk. Classes in line order, each once.
    pub fn count_runs<K: PartialEq>(&self, class: impl Fn(&Key) -> K) -> Vec<(K, u64)> {
        let mut runs: Vec<(K, u64)> = Vec::new();
        for chunk in &self.chunks {
            let mut rest = &chunk.keys[..];
            while let Some(first) = rest.first() {
                let k = class(first);
                let n = rest.partition_point(|x| class(x) == k);
                rest = &rest[n..];
                match runs.last_mut() {
                    Some((last, count)) if *last == k => *count += n as u64,
                    _ => runs.push((k, n as u64)),
                }
            }
        }
        runs
    }

    /// Households in line (the shard counts them in its tallies; tests check both agree).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.keys.len()).sum()
    }

    /// Whether nobody is in line.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn key(t: i64, n: u32) -> Key {
        (Timestamp(t), RegistrationRef::parse(&format!("{n:012}")).expect("twelve digits are a reference"))
    }

    /// Every question the line answers, against a plain sorted map walked in full.
    fn agrees(line: &Line, plain: &BTreeMap<Key, u32>, rng: &mut StdRng) {
        assert_eq!(line.len(), plain.len());
        assert_eq!(line.is_empty(), plain.is_empty());
        let keys: Vec<&Key> = plain.keys().collect();
        assert_eq!(line.after(None).collect::<Vec<_>>(), keys);
        let mut people = 0u64;
        for (i, (k, p)) in plain.iter().enumerate() {
            assert_eq!(line.ahead_of(k), Some((i as u64, people)), "{k:?}");
            people += u64::from(*p);
        }
        for _ in 0..20 {
            let cursor = key(rng.random_range(0..3_000), rng.random_range(0..50));
            let want: Vec<&Key> =
                plain.range((std::ops::Bound::Excluded(cursor), std::ops::Bound::Unbounded)).map(|(k, _)| k).collect();
            assert_eq!(line.after(Some(&cursor)).collect::<Vec<_>>(), want, "after {cursor:?}");
            assert_eq!(line.ahead_of(&cursor).is_some(), plain.contains_key(&cursor));
        }
        // Counted in runs of a class that grows along the line, as by walking it.
        let mut walked: Vec<(i64, u64)> = Vec::new();
        for (t, _) in plain.keys() {
            match walked.last_mut() {
                Some((class, n)) if *class == t.0 / 100 => *n += 1,
                _ => walked.push((t.0 / 100, 1)),
            }
        }
        assert_eq!(line.count_runs(|(t, _)| t.0 / 100), walked);
        // The chunks keep their shape: none empty, none too large, each total right.
        for c in &line.chunks {
            assert!(!c.keys.is_empty() && c.keys.len() <= MOST);
            assert_eq!(c.total, c.people.iter().map(|&p| u64::from(p)).sum::<u64>());
        }
    }

    #[test]
    fn places_and_people_ahead_match_a_walk_of_the_line_through_random_changes() {
        let mut rng = StdRng::seed_from_u64(41);
        for round in 0..3 {
            let (mut line, mut plain) = (Line::new(), BTreeMap::new());
            // Mostly new registrations at the back, with returns and moves into the
            // middle, and households leaving from anywhere.
            for step in 0..6_000 {
                let k = if rng.random_range(0..4) == 0 {
                    key(rng.random_range(0..3_000), rng.random_range(0..50))
                } else {
                    key(1_000 + step, rng.random_range(0..50))
                };
                let people = rng.random_range(1..=8);
                if rng.random_range(0..3) == 0 {
                    assert_eq!(line.remove(&k), plain.remove(&k).is_some());
                } else {
                    line.insert(k, people);
                    plain.entry(k).or_insert(people);
                }
                if step % 1_500 == 0 {
                    agrees(&line, &plain, &mut rng);
                }
            }
            agrees(&line, &plain, &mut rng);
            assert!(line.chunks.len() > 4, "round {round}: the case should use several chunks");
            // Emptied again, from the front: small chunks merge, and nothing is left.
            let keys: Vec<Key> = plain.keys().copied().collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(line.remove(k));
                plain.remove(k);
                if i % 997 == 0 {
                    agrees(&line, &plain, &mut rng);
                }
            }
            assert!(line.is_empty() && line.chunks.is_empty());
        }
    }
}

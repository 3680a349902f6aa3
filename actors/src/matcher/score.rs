//! Priority: one point per day waited, plus the policy's bonus for each need,
//! and the order of consideration it gives.

use crate::domain::{Need, ScorePart, Timestamp};

use super::{Candidate, Policy};

/// The policy's bonus per need, indexed by `Need as usize`, so scoring a
/// candidate does no map look-ups.
pub(super) struct Bonuses([i64; Need::ALL.len()]);

impl Bonuses {
    pub(super) fn new(policy: &Policy) -> Self {
        let mut table = [0; Need::ALL.len()];
        for (&need, &days) in &policy.need_bonus_days {
            // `Need::ALL` lists every variant, so a fieldless discriminant is in range.
            table[need as usize] = i64::from(days);
        }
        Bonuses(table)
    }

    fn of(&self, need: Need) -> i64 {
        self.0[need as usize]
    }
}

/// Days waited, as scored: whole days, never negative.
fn days_waited(c: &Candidate, now: Timestamp) -> i64 {
    i64::from(c.registered_at.days_until(now))
}

/// The priority score. `needs` is a set, so each need counts once.
pub(super) fn score(c: &Candidate, bonuses: &Bonuses, now: Timestamp) -> i64 {
    days_waited(c, now) + c.needs.iter().map(|&n| bonuses.of(n)).sum::<i64>()
}

/// The score broken into the parts a coordinator sees; they sum to [`score`].
pub(super) fn parts(c: &Candidate, bonuses: &Bonuses, now: Timestamp) -> Vec<ScorePart> {
    let days = days_waited(c, now);
    let mut parts = Vec::with_capacity(1 + c.needs.len());
    let unit = if days == 1 { "day" } else { "days" };
    parts.push(ScorePart { label: format!("waited {days} {unit}"), points: days });
    for &need in &c.needs {
        let points = bonuses.of(need);
        // A need the policy gives nothing for would only be noise in the explanation.
        if points != 0 {
            parts.push(ScorePart { label: format!("need reported: {}", need_name(need)), points });
        }
    }
    parts
}

/// A candidate's place in line, with its sort key computed once and whatever
/// else the caller wants at hand without going back to the candidate.
pub(super) struct Ranked<T> {
    pub(super) score: i64,
    /// Copied beside the score so the sort compares without chasing into the candidates.
    registered_at: Timestamp,
    pub(super) index: usize,
    pub(super) extra: T,
}

/// The candidates in the order they are considered: score desc, then
/// registered_at asc, then reference asc. The key is total (references are
/// unique), so the input order cannot change the result. `extra` is read from
/// each candidate in input order, which is kinder to the cache than later
/// reads in priority order.
pub(super) fn rank<T>(
    candidates: &[Candidate],
    bonuses: &Bonuses,
    now: Timestamp,
    mut extra: impl FnMut(&Candidate) -> T,
) -> Vec<Ranked<T>> {
    let mut ranked: Vec<Ranked<T>> = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| Ranked {
            score: score(c, bonuses, now),
            registered_at: c.registered_at,
            index,
            extra: extra(c),
        })
        .collect();
    ranked.sort_unstable_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(a.registered_at.cmp(&b.registered_at))
            .then_with(|| candidates[a.index].reference.cmp(&candidates[b.index].reference))
            // Only a caller passing one reference twice gets here; fall back to
            // the input position so the sort is at least reproducible.
            .then(a.index.cmp(&b.index))
    });
    ranked
}

/// The need as the API names it.
pub(super) fn need_name(need: Need) -> &'static str {
    match need {
        Need::Pregnancy => "PREGNANCY",
        Need::Newborn => "NEWBORN",
        Need::Frailty => "FRAILTY",
        Need::RecentDischarge => "RECENT_DISCHARGE",
        Need::ChronicComplex => "CHRONIC_COMPLEX",
        Need::MentalHealth => "MENTAL_HEALTH",
        Need::Palliative => "PALLIATIVE",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::{DAY_MS, RegistrationRef};

    fn candidate(days: i64, needs: &[Need]) -> Candidate {
        Candidate {
            reference: RegistrationRef::parse("000000000001").expect("valid reference"),
            registered_at: Timestamp(NOW.0 - days * DAY_MS),
            size: 1,
            needs: needs.iter().copied().collect(),
            complex: false,
            age_groups: BTreeSet::new(),
            languages: vec![],
            passed: vec![],
        }
    }

    const NOW: Timestamp = Timestamp(1_000 * DAY_MS);

    #[test]
    fn score_is_days_plus_bonuses_and_parts_sum_to_it() {
        let bonuses = Bonuses::new(&Policy::default());
        let c = candidate(10, &[Need::Pregnancy, Need::RecentDischarge]);
        assert_eq!(score(&c, &bonuses, NOW), 10 + 90 + 60);
        let p = parts(&c, &bonuses, NOW);
        let labels: Vec<&str> = p.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["waited 10 days", "need reported: PREGNANCY", "need reported: RECENT_DISCHARGE"]);
        assert_eq!(p.iter().map(|p| p.points).sum::<i64>(), 160);
    }

    #[test]
    fn needs_without_a_bonus_add_nothing_and_no_part() {
        let mut policy = Policy::default();
        policy.need_bonus_days.remove(&Need::Pregnancy);
        policy.need_bonus_days.insert(Need::Newborn, 0);
        let bonuses = Bonuses::new(&policy);
        let c = candidate(3, &[Need::Pregnancy, Need::Newborn]);
        assert_eq!(score(&c, &bonuses, NOW), 3);
        assert_eq!(parts(&c, &bonuses, NOW).len(), 1);
    }

    #[test]
    fn registration_in_the_future_waits_zero_days() {
        let bonuses = Bonuses::new(&Policy::default());
        assert_eq!(score(&candidate(-5, &[]), &bonuses, NOW), 0);
    }

    #[test]
    fn every_need_has_a_screaming_snake_name() {
        let names: Vec<&str> = Need::ALL.iter().map(|&n| need_name(n)).collect();
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')));
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), Need::ALL.len());
    }
}

//! Choosing a provider for one household: who is eligible (places, complexity
//! mix, hard preferences) and who ranks first (soft preferences met, then most
//! free places, then provider id). When none has room as the run's earlier
//! choices left the places, one household placed earlier in the run may be
//! moved to another provider that suits it as well, to make room ([`Board::repack`]).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::domain::{AgeGroup, Language, ProviderId};

use super::{Candidate, Opening, Policy, PreferenceRule, Unfit};

/// An opening's running state. Preferences are pre-digested into bits so the
/// per-candidate scan compares integers, not strings or sets.
struct Slot {
    remaining: u32,
    /// Complex people this opening may take in this run.
    complex_cap: u32,
    complex_used: u32,
    /// Age groups taken, as [`age_bit`]s; 0 takes all.
    ages: u8,
    /// An opening that states no language is neutral on language.
    states_languages: bool,
}

/// The openings of one run and the places left in them.
pub(super) struct Board<'a> {
    /// Openings with places, in provider id order; indexes `slots`.
    openings: Vec<&'a Opening>,
    slots: Vec<Slot>,
    /// Indices of slots with places left, ascending, so the first of equally
    /// good providers is the one with the lowest id.
    active: Vec<usize>,
    free_total: u64,
    languages: LanguageSets<'a>,
    /// The candidate's languages as bits, reused between candidates.
    scratch: Vec<u64>,
    language_rule: PreferenceRule,
    age_rule: PreferenceRule,
    /// Keys of household profiles that found no eligible provider, sorted.
    /// Until a repack moves someone, places only get used up, so a profile
    /// refused once is refused again (cleared when a repack succeeds): most of
    /// a long waitlist is then skipped without scanning the providers again.
    refused: Vec<u128>,
    /// What each slot took in this run, in the order they arrived there (placed,
    /// or moved in), so a later household may ask one of them to move.
    placed: Vec<Vec<Placed>>,
    /// Placements made so far in this run: the next one's index.
    made: usize,
    /// Households that may still try repacking in this run: every household
    /// that finds no room uses one, so the run stays bounded whatever the
    /// waitlist holds.
    repacks_left: u32,
}

/// A household placed in this run.
#[derive(Debug, Clone, Copy)]
struct Placed {
    /// Its index among the run's placements.
    placement: usize,
    /// Its index among the run's candidates.
    candidate: usize,
    profile: Profile,
}

/// A household placed: with whom and why, and the household placed earlier in
/// the run that moved to make room for it, if one did.
#[derive(Debug)]
pub(super) struct Placing {
    pub provider: ProviderId,
    pub fit: Vec<String>,
    /// (its placement index, its new provider, why that one).
    pub moved: Option<(usize, ProviderId, Vec<String>)>,
}

/// Households that find no room and may try repacking, per run.
pub(super) const REPACKS: u32 = 1_000;

/// A household as eligibility sees it: size, complexity, and its age groups
/// and languages as the policy weighs them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Profile {
    size: u8,
    complex: bool,
    /// As [`age_bit`]s; 0 when the policy ignores age groups.
    ages: u8,
    /// False when the policy ignores language or the household states none.
    weigh_language: bool,
    /// Its languages as bits of the board's language sets; only filled when
    /// those fit one word (64 languages), else read from the candidate.
    languages: u64,
}

impl Profile {
    /// Everything in one sortable key, for the board's memory of refusals.
    /// Only meaningful when `languages` is filled.
    fn key(&self) -> u128 {
        let head = u64::from(self.size)
            | u64::from(self.complex) << 8
            | u64::from(self.ages) << 9
            | u64::from(self.weigh_language) << 12;
        u128::from(head) << 64 | u128::from(self.languages)
    }
}

/// The best provider found for a household.
struct Best {
    slot: usize,
    soft: u8,
    remaining: u32,
}

impl<'a> Board<'a> {
    pub(super) fn new(openings: &'a [Opening], policy: &Policy) -> Self {
        let mut openings: Vec<&Opening> = openings.iter().filter(|o| o.free_places > 0).collect();
        openings.sort_by(|a, b| opening_order(a, b));
        let slots: Vec<Slot> = openings
            .iter()
            .map(|o| Slot {
                remaining: o.free_places,
                complex_cap: complex_cap(o),
                complex_used: 0,
                ages: age_mask(&o.age_groups),
                states_languages: !o.languages.is_empty(),
            })
            .collect();
        let languages = LanguageSets::new(&openings);
        let slots_len = openings.len();
        Board {
            active: (0..openings.len()).collect(),
            free_total: openings.iter().map(|o| u64::from(o.free_places)).sum(),
            scratch: vec![0; languages.words],
            languages,
            openings,
            slots,
            language_rule: policy.language,
            age_rule: policy.age_groups,
            refused: Vec::new(),
            placed: vec![Vec::new(); slots_len],
            made: 0,
            repacks_left: REPACKS,
        }
    }

    /// True once no opening has a place left.
    pub(super) fn is_full(&self) -> bool {
        self.free_total == 0
    }

    /// Free places left across all openings.
    pub(super) fn capacity(&self) -> u64 {
        self.free_total
    }

    /// What eligibility depends on, read from the candidate once, in input
    /// order, so the scan in priority order touches a few bytes rather than
    /// the candidate's heap-allocated sets.
    pub(super) fn profile(&self, c: &Candidate) -> Profile {
        let weigh_language = self.language_rule != PreferenceRule::Ignore && !c.languages.is_empty();
        let mut languages = [0];
        if weigh_language && self.languages.words == 1 {
            self.languages.fill(&c.languages, &mut languages);
        }
        Profile {
            size: c.size,
            complex: c.complex,
            ages: if self.age_rule == PreferenceRule::Ignore { 0 } else { age_mask(&c.age_groups) },
            weigh_language,
            languages: languages[0],
        }
    }

    /// Places the whole household `c` (candidate `ci` of `candidates`), whose
    /// [`Board::profile`] is `h`, with the best eligible provider; failing
    /// that, with room made by moving one household placed earlier in the run
    /// ([`Board::repack`]). `None` if neither finds a provider.
    pub(super) fn place(&mut self, h: &Profile, c: &Candidate, ci: usize, candidates: &[Candidate]) -> Option<Placing> {
        let key = (self.languages.words == 1).then(|| h.key());
        if key.is_some_and(|k| self.refused.binary_search(&k).is_ok()) {
            // Its try is used up all the same, as it would be without the memory.
            self.repacks_left = self.repacks_left.saturating_sub(1);
            return None;
        }
        self.load_languages(h, c);
        let (best, eligible) = self.best_slot(h, c, None);
        let Some(best) = best else {
            if self.repacks_left > 0 {
                self.repacks_left -= 1;
                if let Some(placing) = self.repack(h, c, ci, candidates) {
                    // The places lie otherwise now: a profile refused before may fit.
                    self.refused.clear();
                    return Some(placing);
                }
            }
            // A household refused only for providers it was passed to before says nothing of its profile.
            if let Some(k) = key.filter(|_| c.passed.is_empty())
                && let Err(pos) = self.refused.binary_search(&k)
            {
                self.refused.insert(pos, k);
            }
            return None;
        };
        let fit = self.explain(c, &best, Some(eligible));
        self.take(best.slot, h, ci);
        Some(Placing { provider: self.openings[best.slot].provider.clone(), fit, moved: None })
    }

    /// The best slot with room for household `c` (profile `h`, languages
    /// loaded), other than `except`, and how many are eligible.
    fn best_slot(&self, h: &Profile, c: &Candidate, except: Option<usize>) -> (Option<Best>, u32) {
        let size = u32::from(h.size);
        let mut best: Option<Best> = None;
        let mut eligible = 0u32;
        for &s in &self.active {
            let slot = &self.slots[s];
            if Some(s) == except
                || slot.remaining < size
                || (h.complex && slot.complex_used.saturating_add(size) > slot.complex_cap)
            {
                continue;
            }
            if self.passed_over(s, c) {
                continue;
            }
            let Some(soft) = self.preferences(s, h) else {
                continue;
            };
            eligible += 1;
            // Strictly better only: on a full tie the earlier slot (lower id) stays.
            if best.as_ref().is_none_or(|b| (soft, slot.remaining) > (b.soft, b.remaining)) {
                best = Some(Best { slot: s, soft, remaining: slot.remaining });
            }
        }
        (best, eligible)
    }

    /// Takes household `h` (candidate `ci`)'s places in slot `s`, as the run's next placement.
    fn take(&mut self, s: usize, h: &Profile, ci: usize) {
        self.occupy(s, h);
        self.placed[s].push(Placed { placement: self.made, candidate: ci, profile: *h });
        self.made += 1;
    }

    /// Takes the places of household `h` in slot `s`.
    fn occupy(&mut self, s: usize, h: &Profile) {
        let size = u32::from(h.size);
        let slot = &mut self.slots[s];
        slot.remaining -= size;
        if h.complex {
            slot.complex_used += size;
        }
        self.free_total -= u64::from(size);
        if slot.remaining == 0
            && let Ok(pos) = self.active.binary_search(&s)
        {
            self.active.remove(pos);
        }
    }

    /// Gives back the places of `placed` in slot `s`.
    fn give_back(&mut self, s: usize, placed: &Placed) {
        let size = u32::from(placed.profile.size);
        let slot = &mut self.slots[s];
        if slot.remaining == 0
            && let Err(pos) = self.active.binary_search(&s)
        {
            self.active.insert(pos, s);
        }
        slot.remaining += size;
        if placed.profile.complex {
            slot.complex_used -= size;
        }
        self.free_total += u64::from(size);
        self.placed[s].retain(|p| p.placement != placed.placement);
    }

    /// Household `c` (candidate `ci`, profile `h`) fits no provider as the
    /// places lie: the run's earlier choices may have split them badly (a
    /// tester's case: places of 6 and 3, households of 2, 2, 2, 3, in that
    /// order; the third went to the 3, and the family of 3, fourth in line,
    /// was left waiting while the fifth, a single person, was proposed).
    /// Tries to move one household placed earlier in the run from a provider
    /// that would take `c` to another with room, which meets as many of its
    /// soft preferences as where it was (so it is served no worse), and places
    /// `c` in the room made. One move only. The providers that would take `c`
    /// are tried best first (soft preferences met, then places left, then
    /// order), each one's households latest placed first, and the first that
    /// can move, moves, to the provider [`Board::place`] would choose for it.
    ///
    /// Until a repack succeeds, the places only get used up, so a household
    /// refused once would be refused again: the memory of refusals holds.
    fn repack(&mut self, h: &Profile, c: &Candidate, ci: usize, candidates: &[Candidate]) -> Option<Placing> {
        if self.free_total < u64::from(h.size) {
            return None;
        }
        let size = u32::from(h.size);
        // Where `c` could go, room aside: the hard rules met and not passed over; best first.
        self.load_languages(h, c);
        let mut targets: Vec<Best> = (0..self.slots.len())
            .filter(|&s| !self.passed_over(s, c))
            .filter_map(|s| {
                self.preferences(s, h).map(|soft| Best { slot: s, soft, remaining: self.slots[s].remaining })
            })
            .collect();
        let eligible = targets.len() as u32;
        targets.sort_by(|a, b| (b.soft, b.remaining).cmp(&(a.soft, a.remaining)).then(a.slot.cmp(&b.slot)));
        // The two slots with most places left, so the room outside each target costs nothing to find.
        let mut most: [Option<(u32, usize)>; 2] = [None, None];
        for &q in &self.active {
            let r = (self.slots[q].remaining, q);
            if most[0].is_none_or(|m| r.0 > m.0) {
                most = [Some(r), most[0]];
            } else if most[1].is_none_or(|m| r.0 > m.0) {
                most[1] = Some(r);
            }
        }
        // Profiles of households that could not move out of the target slot:
        // within one repack nothing changes until a move, so one of the same
        // profile (and passed over by nobody) could not either. Kept for one
        // target at a time, so it holds a few profiles: one list for the whole
        // try held profiles × providers and its scan made the province bench
        // 2.1 s, and a hash set of them cost a fifth more than no memory (session 20).
        let mut stuck: Vec<u128> = Vec::new();
        for target in targets {
            let p = target.slot;
            stuck.clear();
            let slot = &self.slots[p];
            let need = size.saturating_sub(slot.remaining);
            if need == 0 {
                continue; // room enough, but not for its complex share: a move of room would not help
            }
            // Nobody who frees enough could go anywhere else: the common case once places run out.
            let room_elsewhere = most.iter().flatten().find(|(_, q)| *q != p).map(|(r, _)| *r);
            let Some(room_elsewhere) = room_elsewhere.filter(|r| *r >= need) else { continue };
            let movable: Vec<Placed> = self.placed[p]
                .iter()
                .rev()
                .filter(|g| (need..=room_elsewhere).contains(&u32::from(g.profile.size)))
                // Once it leaves, `c`'s complex people must fit the share here.
                .filter(|g| {
                    let freed = if g.profile.complex { u32::from(g.profile.size) } else { 0 };
                    !h.complex || (slot.complex_used - freed).saturating_add(size) <= slot.complex_cap
                })
                .copied()
                .collect();
            for g in movable {
                let other = &candidates[g.candidate];
                let key = (self.languages.words == 1 && other.passed.is_empty()).then(|| g.profile.key());
                if key.is_some_and(|k| stuck.contains(&k)) {
                    continue;
                }
                self.load_languages(&g.profile, other);
                let here = self.preferences(p, &g.profile).unwrap_or(0);
                let (to, others) = self.best_slot(&g.profile, other, Some(p));
                let Some(to) = to.filter(|to| to.soft >= here) else {
                    stuck.extend(key);
                    continue;
                };
                // The move: `g` to its new provider, then `c` in the room it left.
                // Eligible where it was, too.
                let moved_fit = self.explain(other, &to, Some(others + 1));
                self.give_back(p, &g);
                self.occupy(to.slot, &g.profile);
                self.placed[to.slot].push(g);
                self.load_languages(h, c);
                let mut fit = self.explain(c, &Best { remaining: self.slots[p].remaining, ..target }, Some(eligible));
                fit.push("room made by moving a household placed earlier in this run to another provider".into());
                self.take(p, h, ci);
                let moved = (g.placement, self.openings[to.slot].provider.clone(), moved_fit);
                return Some(Placing { provider: self.openings[p].provider.clone(), fit, moved: Some(moved) });
            }
            self.load_languages(h, c);
        }
        None
    }

    /// Puts the household's languages in `scratch`, where [`Board::preferences`] reads them.
    fn load_languages(&mut self, h: &Profile, c: &Candidate) {
        if self.languages.words == 1 {
            self.scratch[0] = h.languages;
        } else if h.weigh_language {
            self.languages.fill(&c.languages, &mut self.scratch);
        }
    }

    /// How slot `s` stands with household `h` under the preference rules,
    /// places aside: `None` if a hard rule rules it out, else how many soft
    /// preferences it meets. `scratch` must hold the household's languages.
    fn preferences(&self, s: usize, h: &Profile) -> Option<u8> {
        let mut soft = 0u8;
        let ages_taken = self.takes_ages(s, h);
        match self.age_rule {
            PreferenceRule::Hard if !ages_taken => return None,
            PreferenceRule::Soft if ages_taken => soft += 1,
            _ => {}
        }
        if let Some(shared) = self.shares_language(s, h) {
            match self.language_rule {
                PreferenceRule::Hard if !shared => return None,
                PreferenceRule::Soft if shared => soft += 1,
                _ => {}
            }
        }
        Some(soft)
    }

    /// Whether opening `s` is one household `c` was passed to before, which a
    /// run does not propose it to again.
    fn passed_over(&self, s: usize, c: &Candidate) -> bool {
        !c.passed.is_empty() && c.passed.contains(&self.openings[s].provider)
    }

    /// Whether slot `s` takes every age group of household `h`.
    fn takes_ages(&self, s: usize, h: &Profile) -> bool {
        let slot = &self.slots[s];
        slot.ages == 0 || h.ages & !slot.ages == 0
    }

    /// Whether slot `s` shares a language with household `h` (languages in
    /// `scratch`); `None` when either states none, which is neutral.
    fn shares_language(&self, s: usize, h: &Profile) -> Option<bool> {
        (h.weigh_language && self.slots[s].states_languages).then(|| self.languages.shares(s, &self.scratch))
    }

    /// The openings of the run, in the order [`Board::admitting`] numbers them.
    pub(super) fn openings(&self) -> &[&'a Opening] {
        &self.openings
    }

    /// Complex people opening `s` may take in a run: the share rule [`Board::place`] enforces.
    pub(super) fn complex_cap(&self, s: usize) -> u32 {
        self.slots[s].complex_cap
    }

    /// The openings (indices into [`Board::openings`]) that the hard rules let
    /// household `c` go to, places and complex share aside, less the providers
    /// it was passed to before: exactly the ones [`Board::place`] would weigh if
    /// they had room.
    pub(super) fn admitting(&mut self, c: &Candidate) -> Vec<usize> {
        let h = self.profile(c);
        self.load_languages(&h, c);
        (0..self.slots.len()).filter(|&s| self.preferences(s, &h).is_some() && !self.passed_over(s, c)).collect()
    }

    /// Checks household `c` against the board's first opening, as an
    /// attachment coordinator chose it (see [`super::assess`]): the same
    /// places, complexity mix and hard preferences [`Board::place`] applies.
    /// Answers why it fits, or why not. Takes no places.
    pub(super) fn assess(&mut self, c: &Candidate) -> Result<Vec<String>, Unfit> {
        let needed = u32::from(c.size);
        let Some(slot) = self.slots.first() else { return Err(Unfit::Places { free: 0, needed }) };
        if slot.remaining < needed {
            return Err(Unfit::Places { free: slot.remaining, needed });
        }
        let h = self.profile(c);
        self.load_languages(&h, c);
        let Some(soft) = self.preferences(0, &h) else {
            return Err(Unfit::Preferences(self.hard_misses(c, &h)));
        };
        let slot = &self.slots[0];
        if h.complex && slot.complex_used.saturating_add(needed) > slot.complex_cap {
            return Err(Unfit::ComplexShare { cap: slot.complex_cap, needed });
        }
        Ok(self.explain(c, &Best { slot: 0, soft, remaining: slot.remaining }, None))
    }

    /// The hard preferences of the first opening that household `c` (profile
    /// `h`, languages loaded) does not meet, in words.
    fn hard_misses(&self, c: &Candidate, h: &Profile) -> Vec<String> {
        let (opening, slot) = (self.openings[0], &self.slots[0]);
        let mut misses = Vec::new();
        if self.age_rule == PreferenceRule::Hard && !self.takes_ages(0, h) {
            misses.push(age_fit(c, opening, slot));
        }
        if self.language_rule == PreferenceRule::Hard && self.shares_language(0, h) == Some(false) {
            misses.push(language_fit(c, opening));
        }
        misses
    }

    /// Why this provider, in words a coordinator can check against the rules:
    /// among how many `eligible` providers, or chosen by a coordinator (`None`).
    /// Called before the places are taken, so counts are as the choice saw them.
    fn explain(&self, c: &Candidate, best: &Best, eligible: Option<u32>) -> Vec<String> {
        let opening = self.openings[best.slot];
        let slot = &self.slots[best.slot];
        let mut fit = Vec::with_capacity(6);
        fit.push(match eligible {
            None => "chosen by an attachment coordinator".to_string(),
            Some(1) => "only eligible provider".to_string(),
            Some(n) => format!("best of {n} eligible providers"),
        });
        let soft_rules = [self.language_rule, self.age_rule].iter().filter(|r| **r == PreferenceRule::Soft).count();
        if soft_rules > 0 {
            fit.push(format!("meets {} of {soft_rules} soft preferences", best.soft));
        }
        fit.push(format!("has {} free places", slot.remaining));
        if self.language_rule != PreferenceRule::Ignore {
            fit.push(language_fit(c, opening));
        }
        if self.age_rule != PreferenceRule::Ignore {
            fit.push(age_fit(c, opening, slot));
        }
        if c.complex {
            // Of the provider's share of the month's places (free and held), as
            // their capacity states it: a tester read "1/2 used" for a share of 5
            // when 8 of 10 places were held, which was the room left, not the share.
            let used = opening.complex_held + slot.complex_used + u32::from(c.size);
            let month = u64::from(opening.free_places) + u64::from(opening.places_held);
            let share = month * u64::from(opening.max_complex_share_pct) / 100;
            fit.push(format!(
                "complex share {used}/{share} used ({} % of {month} places this month)",
                opening.max_complex_share_pct
            ));
        }
        fit
    }
}

fn language_fit(c: &Candidate, opening: &Opening) -> String {
    if c.languages.is_empty() {
        return "household states no language".to_string();
    }
    if opening.languages.is_empty() {
        return "provider states no language".to_string();
    }
    // The household lists languages most preferred first: name the best one shared.
    match c.languages.iter().find(|l| opening.languages.contains(l)) {
        Some(l) => format!("shares language {}", l.as_str()),
        None => "shares no language".to_string(),
    }
}

fn age_fit(c: &Candidate, opening: &Opening, slot: &Slot) -> String {
    if slot.ages == 0 {
        return "takes all age groups".to_string();
    }
    let taken: Vec<&str> = opening.age_groups.iter().map(|&g| age_name(g)).collect();
    let taken = taken.join(", ");
    if age_mask(&c.age_groups) & !slot.ages == 0 {
        format!("takes age groups {taken}")
    } else {
        format!("takes age groups {taken}, not every member's")
    }
}

/// Complex people an opening may still take: a floor share of the month's
/// places (free now and already held), less the complex people already held.
/// Never more than the free places.
pub(super) fn complex_cap(o: &Opening) -> u32 {
    let month = u64::from(o.free_places) + u64::from(o.places_held);
    let cap = (month * u64::from(o.max_complex_share_pct) / 100).saturating_sub(u64::from(o.complex_held));
    u32::try_from(cap.min(u64::from(o.free_places))).unwrap_or(o.free_places)
}

/// A total order on openings, so that several openings for one provider (a
/// caller's mistake, but possible) still give a result independent of input order.
fn opening_order(a: &Opening, b: &Opening) -> Ordering {
    a.provider
        .cmp(&b.provider)
        .then(a.free_places.cmp(&b.free_places))
        .then(a.max_complex_share_pct.cmp(&b.max_complex_share_pct))
        .then_with(|| a.languages.cmp(&b.languages))
        .then_with(|| a.age_groups.cmp(&b.age_groups))
}

fn age_bit(g: AgeGroup) -> u8 {
    match g {
        AgeGroup::Child => 1,
        AgeGroup::Adult => 2,
        AgeGroup::Senior => 4,
    }
}

fn age_mask(groups: &BTreeSet<AgeGroup>) -> u8 {
    groups.iter().fold(0, |m, &g| m | age_bit(g))
}

/// The age group as the API names it.
fn age_name(g: AgeGroup) -> &'static str {
    match g {
        AgeGroup::Child => "CHILD",
        AgeGroup::Adult => "ADULT",
        AgeGroup::Senior => "SENIOR",
    }
}

/// Each opening's languages as a bit set over the languages any opening offers.
/// A candidate language no opening offers gets no bit: it can match nothing.
struct LanguageSets<'a> {
    /// Distinct languages offered, sorted; a language's bit is its position.
    /// Communities offer a handful, so a binary search beats hashing.
    index: Vec<&'a str>,
    /// u64 words per set; at least one, more only past 64 distinct languages.
    words: usize,
    /// `words` words per opening, in slot order.
    bits: Vec<u64>,
}

impl<'a> LanguageSets<'a> {
    fn new(openings: &[&'a Opening]) -> Self {
        let mut index: Vec<&str> = openings.iter().flat_map(|o| &o.languages).map(Language::as_str).collect();
        index.sort_unstable();
        index.dedup();
        let words = index.len().div_ceil(64).max(1);
        let mut bits = vec![0u64; words * openings.len()];
        for (i, o) in openings.iter().enumerate() {
            for l in &o.languages {
                let b = index.binary_search(&l.as_str()).expect("the index holds every offered language");
                bits[i * words + b / 64] |= 1 << (b % 64);
            }
        }
        LanguageSets { index, words, bits }
    }

    fn fill(&self, languages: &[Language], out: &mut [u64]) {
        out.fill(0);
        for b in languages.iter().filter_map(|l| self.index.binary_search(&l.as_str()).ok()) {
            out[b / 64] |= 1 << (b % 64);
        }
    }

    fn shares(&self, slot: usize, candidate: &[u64]) -> bool {
        let set = &self.bits[slot * self.words..(slot + 1) * self.words];
        set.iter().zip(candidate).any(|(a, b)| a & b != 0)
    }
}

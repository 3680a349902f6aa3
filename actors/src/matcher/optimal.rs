//! How far the greedy matcher is from an optimal assignment of the same input.
//!
//! The matcher serves households strictly in priority order: nobody is passed
//! over for someone who waited less unless they do not fit. That is fairness,
//! not optimality, so on a given input another assignment may place more
//! people, or more priority. This module measures by how much, under exactly
//! the hard rules the matcher enforces (whole households, each opening's free
//! places, its complex share, hard language and age-group preferences, and
//! never a provider a household was passed to before):
//!
//! - [`Instance`] reduces one matcher input to what those rules and the
//!   objectives see, using the matcher's own eligibility code.
//! - [`exact`] finds the optimum by branch and bound, for small inputs.
//! - [`upper_bound`] bounds the optimum from above by a max-weight flow, for
//!   inputs of any size.
//! - [`Instance::assignment`] and [`Instance::value`] value the matcher's own
//!   placements the same way.
//!
//! Soft preferences only rank providers; they never make an assignment
//! infeasible, so they play no part here.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{ProviderId, RegistrationRef, Timestamp};

use super::assign::Board;
use super::score::{self, Bonuses};
use super::{Candidate, Opening, Placement, Policy};

/// What an assignment is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// People placed: the places filled.
    People,
    /// Priority-weighted people: over placed households, the matcher's
    /// priority score times the household's size.
    Priority,
}

impl Objective {
    /// Both objectives, in the order reports list them.
    pub const BOTH: [Objective; 2] = [Objective::People, Objective::Priority];

    /// What one placed member of `h` is worth.
    fn per_person(self, h: &Household) -> u64 {
        match self {
            Objective::People => 1,
            Objective::Priority => h.score,
        }
    }
}

/// One assignment's worth under both objectives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Value {
    /// People placed.
    pub people: u64,
    /// Sum over placed households of score × size.
    pub priority: u64,
}

impl Value {
    /// The worth under `objective`.
    pub fn of(self, objective: Objective) -> u64 {
        match objective {
            Objective::People => self.people,
            Objective::Priority => self.priority,
        }
    }
}

/// A household as the optimiser sees it.
#[derive(Debug, Clone)]
struct Household {
    size: u32,
    score: u64,
    /// Index into [`Instance::classes`].
    class: usize,
}

/// Households that are alike to the hard rules, sizes aside: same complexity
/// and same openings allowed. The flow bound routes each class through one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Class {
    complex: bool,
    /// Openings the hard rules let these households go to, ascending.
    eligible: Vec<usize>,
}

/// One matcher input reduced to sizes, scores, the openings each household may
/// go to, and each opening's places and complex share.
#[derive(Debug, Clone)]
pub struct Instance {
    /// In the candidates' order.
    households: Vec<Household>,
    classes: Vec<Class>,
    /// Per opening, in the matcher's opening order: free places.
    places: Vec<u32>,
    /// Per opening: complex people it may take.
    complex_caps: Vec<u32>,
    /// Per opening: whose it is.
    providers: Vec<ProviderId>,
    /// Candidate index by reference, to read the matcher's placements.
    by_reference: BTreeMap<RegistrationRef, usize>,
}

impl Instance {
    /// Reduces a matcher input. Eligibility and the complex share come from the
    /// matcher's own `Board`, so both sides apply the same rules; the score is
    /// the matcher's priority score.
    pub fn new(candidates: &[Candidate], openings: &[Opening], policy: &Policy, now: Timestamp) -> Self {
        let mut board = Board::new(openings, policy);
        let bonuses = Bonuses::new(policy);
        let open = board.openings();
        let places = open.iter().map(|o| o.free_places).collect();
        let providers = open.iter().map(|o| o.provider.clone()).collect();
        let complex_caps = (0..open.len()).map(|s| board.complex_cap(s)).collect();
        let mut class_of: BTreeMap<Class, usize> = BTreeMap::new();
        let mut classes = Vec::new();
        let households = candidates
            .iter()
            .map(|c| {
                let class = Class { complex: c.complex, eligible: board.admitting(c) };
                let class = *class_of.entry(class).or_insert_with_key(|k| {
                    classes.push(k.clone());
                    classes.len() - 1
                });
                // Days waited and bonuses are never negative.
                let score = u64::try_from(score::score(c, &bonuses, now)).unwrap_or(0);
                Household { size: u32::from(c.size), score, class }
            })
            .collect();
        let by_reference = candidates.iter().enumerate().map(|(i, c)| (c.reference, i)).collect();
        Instance { households, classes, places, complex_caps, providers, by_reference }
    }

    /// Households (candidates), in input order.
    pub fn households(&self) -> usize {
        self.households.len()
    }

    /// Openings with free places.
    pub fn openings(&self) -> usize {
        self.places.len()
    }

    /// Free places over all openings.
    pub fn places(&self) -> u64 {
        self.places.iter().map(|&p| u64::from(p)).sum()
    }

    /// The opening each candidate got in `placements` (the matcher's output on
    /// the same input), as an index into this instance's openings. A placement
    /// naming an unknown household or provider is left out; if a provider has
    /// several openings (a caller's mistake) the first is taken.
    pub fn assignment(&self, placements: &[Placement]) -> Vec<Option<usize>> {
        let mut out = vec![None; self.households.len()];
        for p in placements {
            let opening = self.providers.iter().position(|id| *id == p.provider);
            if let (Some(&i), Some(j)) = (self.by_reference.get(&p.reference), opening) {
                out[i] = Some(j);
            }
        }
        out
    }

    /// What `assignment` (an opening or none per household) is worth.
    pub fn value(&self, assignment: &[Option<usize>]) -> Value {
        let placed = self.households.iter().zip(assignment).filter(|(_, a)| a.is_some()).map(|(h, _)| h);
        placed.fold(Value::default(), |v, h| Value {
            people: v.people + u64::from(h.size),
            priority: v.priority + h.score * u64::from(h.size),
        })
    }

    /// Whether `assignment` keeps every hard rule: each household placed whole
    /// with an opening it is eligible for, within each opening's places and
    /// complex share.
    pub fn is_feasible(&self, assignment: &[Option<usize>]) -> bool {
        if assignment.len() != self.households.len() {
            return false;
        }
        let mut room = Room::new(self);
        for (h, &a) in self.households.iter().zip(assignment) {
            let Some(j) = a else { continue };
            if !self.classes[h.class].eligible.contains(&j) || !room.fits(self, h, j) {
                return false;
            }
            room.take(self, h, j);
        }
        true
    }

    /// Household indices, most worth per person first; among equals, larger
    /// households first (they are the hard ones to pack), then input order.
    fn order(&self, objective: Objective) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.households.len()).collect();
        order.sort_by_key(|&i| {
            let h = &self.households[i];
            (std::cmp::Reverse(objective.per_person(h)), std::cmp::Reverse(h.size), i)
        });
        order
    }
}

/// Room left in each opening.
#[derive(Debug, Clone)]
struct Room {
    places: Vec<u32>,
    complex: Vec<u32>,
}

impl Room {
    fn new(inst: &Instance) -> Self {
        Room { places: inst.places.clone(), complex: inst.complex_caps.clone() }
    }

    /// Whether `h` fits whole in opening `j` now (eligibility aside).
    fn fits(&self, inst: &Instance, h: &Household, j: usize) -> bool {
        self.places[j] >= h.size && (!inst.classes[h.class].complex || self.complex[j] >= h.size)
    }

    /// Whether `h` fits whole in some opening it is eligible for.
    fn fits_somewhere(&self, inst: &Instance, h: &Household) -> bool {
        inst.classes[h.class].eligible.iter().any(|&j| self.fits(inst, h, j))
    }

    /// Takes `h`'s places in `j`, which it must fit.
    fn take(&mut self, inst: &Instance, h: &Household, j: usize) {
        self.places[j] -= h.size;
        if inst.classes[h.class].complex {
            self.complex[j] -= h.size;
        }
    }

    fn give_back(&mut self, inst: &Instance, h: &Household, j: usize) {
        self.places[j] += h.size;
        if inst.classes[h.class].complex {
            self.complex[j] += h.size;
        }
    }
}

/// An upper bound on the optimum of `objective`, for inputs of any size.
///
/// It drops one rule, wholeness: a household may be split between providers
/// or placed in part. What remains is a flow of people: from each household
/// (at most its size) to each opening it is eligible for, a complex household
/// through that opening's complex gate (at most its complex share), and from
/// each opening to the sink (at most its free places). Every whole assignment
/// is such a flow with the same worth, so the best flow is at least the
/// optimum. Each person placed is worth the same for all of a household's
/// members (1, or the household's score), so the best flow is found greedily:
/// the amounts of people a network can carry from its sources form a
/// polymatroid, on which taking sources in order of worth, each as far as
/// augmenting paths allow without undoing earlier ones, is optimal (Edmonds).
/// The bound is thus the linear relaxation of the whole-household problem,
/// tightened in two ways that no whole assignment can notice: households that
/// fit no opening whole are left out, and each opening's places (and complex
/// share) are lowered to the largest sum of sizes of households that could go
/// there (a subset sum).
pub fn upper_bound(instance: &Instance, objective: Objective) -> u64 {
    let order = instance.order(objective);
    relaxation(instance, objective, &order, &Room::new(instance))
}

/// A capacity no flow reaches: flows are at most the places of a run.
const UNLIMITED: u64 = u64::MAX / 4;

/// The relaxation of [`upper_bound`] for the households in `order` (most worth
/// per person first) with `room` left: the search's bound at each node.
fn relaxation(inst: &Instance, objective: Objective, order: &[usize], room: &Room) -> u64 {
    let room = &fillable(inst, order, room);
    let k = room.places.len();
    let classes = inst.classes.len();
    // Nodes: one per class, then each opening's complex gate, then each opening, then the sink.
    let gate = |j: usize| classes + j;
    let opening = |j: usize| classes + k + j;
    let sink = classes + 2 * k;
    let mut net = Network::new(sink + 1);
    for j in 0..k {
        net.edge(gate(j), opening(j), u64::from(room.complex[j]));
        net.edge(opening(j), sink, u64::from(room.places[j]));
    }
    for (c, class) in inst.classes.iter().enumerate() {
        for &j in &class.eligible {
            net.edge(c, if class.complex { gate(j) } else { opening(j) }, UNLIMITED);
        }
    }
    let mut left: u64 = room.places.iter().map(|&p| u64::from(p)).sum();
    // Submodularity: a class that can push no more now never can later.
    let mut saturated = vec![false; classes];
    let mut total = 0;
    for h in order.iter().map(|&i| &inst.households[i]) {
        if left == 0 {
            break;
        }
        if saturated[h.class] || !room.fits_somewhere(inst, h) {
            continue;
        }
        let mut want = u64::from(h.size);
        while want > 0 {
            let pushed = net.augment(h.class, sink, want);
            if pushed == 0 {
                saturated[h.class] = true;
                break;
            }
            want -= pushed;
            left -= pushed;
            total += objective.per_person(h) * pushed;
        }
    }
    total
}

/// The most each opening could still take from the households in `order`,
/// placed whole: its places and its complex share each lowered to the largest
/// sum of sizes of households that are eligible for it and fit, at most the
/// room left. Whatever whole households it gets add up to no more.
fn fillable(inst: &Instance, order: &[usize], room: &Room) -> Room {
    let mut places: Vec<Sums> = room.places.iter().map(|&p| Sums::new(p)).collect();
    let mut complex: Vec<Sums> = room.complex.iter().map(|&p| Sums::new(p)).collect();
    for h in order.iter().map(|&i| &inst.households[i]) {
        let class = &inst.classes[h.class];
        for &j in class.eligible.iter().filter(|&&j| room.fits(inst, h, j)) {
            places[j].add(h.size);
            if class.complex {
                complex[j].add(h.size);
            }
        }
    }
    Room { places: places.iter().map(Sums::most).collect(), complex: complex.iter().map(Sums::most).collect() }
}

/// The sums that subsets of some sizes reach, up to a cap: bit `s` is set when one sums to `s`.
struct Sums {
    bits: Vec<u64>,
    cap: u32,
}

impl Sums {
    /// Only the empty subset so far.
    fn new(cap: u32) -> Self {
        let mut bits = vec![0; cap as usize / 64 + 1];
        bits[0] = 1;
        Sums { bits, cap }
    }

    /// The top word with the bits above `cap` cleared.
    fn top(&self) -> u64 {
        let keep = self.cap % 64;
        self.bits[self.bits.len() - 1] & (u64::MAX >> (63 - keep))
    }

    /// Adds one more size to choose from.
    fn add(&mut self, size: u32) {
        if size == 0 || size > self.cap || self.top() >> (self.cap % 64) == 1 {
            return;
        }
        let (words, shift) = (size as usize / 64, size % 64);
        // From the top down, so each word reads words not yet shifted.
        for i in (words..self.bits.len()).rev() {
            let mut moved = self.bits[i - words] << shift;
            if shift > 0 && i > words {
                moved |= self.bits[i - words - 1] >> (64 - shift);
            }
            self.bits[i] |= moved;
        }
    }

    /// The largest sum reached.
    fn most(&self) -> u32 {
        let top = self.bits.len() - 1;
        let (i, word) = std::iter::once((top, self.top()))
            .chain(self.bits[..top].iter().copied().enumerate().rev())
            .find(|&(_, w)| w != 0)
            .unwrap_or((0, 1));
        i as u32 * 64 + (63 - word.leading_zeros())
    }
}

/// A residual flow network: edge `e ^ 1` is the reverse of edge `e`.
struct Network {
    /// Edge ids leaving each node.
    out: Vec<Vec<usize>>,
    head: Vec<usize>,
    residual: Vec<u64>,
    /// Per node, the edge the last search reached it by.
    via: Vec<Option<usize>>,
    queue: Vec<usize>,
}

impl Network {
    fn new(nodes: usize) -> Self {
        Network {
            out: vec![Vec::new(); nodes],
            head: Vec::new(),
            residual: Vec::new(),
            via: vec![None; nodes],
            queue: Vec::with_capacity(nodes),
        }
    }

    fn edge(&mut self, from: usize, to: usize, capacity: u64) {
        self.out[from].push(self.head.len());
        self.head.push(to);
        self.residual.push(capacity);
        self.out[to].push(self.head.len());
        self.head.push(from);
        self.residual.push(0);
    }

    /// Pushes up to `limit` units from `from` to `to` along one shortest path
    /// with room, and returns how many it pushed (0: no such path).
    fn augment(&mut self, from: usize, to: usize, limit: u64) -> u64 {
        self.via.fill(None);
        self.queue.clear();
        self.queue.push(from);
        let mut next = 0;
        while next < self.queue.len() && self.via[to].is_none() {
            let u = self.queue[next];
            next += 1;
            for &e in &self.out[u] {
                let v = self.head[e];
                if self.residual[e] > 0 && v != from && self.via[v].is_none() {
                    self.via[v] = Some(e);
                    self.queue.push(v);
                }
            }
        }
        if self.via[to].is_none() {
            return 0;
        }
        // `via[from]` stays unset, so both walks stop there.
        let mut pushed = limit;
        let mut v = to;
        while let Some(e) = self.via[v] {
            pushed = pushed.min(self.residual[e]);
            v = self.head[e ^ 1];
        }
        let mut v = to;
        while let Some(e) = self.via[v] {
            self.residual[e] -= pushed;
            self.residual[e ^ 1] += pushed;
            v = self.head[e ^ 1];
        }
        pushed
    }
}

/// The optimum of `objective` under the matcher's hard rules, or `None` if
/// proving it takes more than `max_nodes` search nodes.
///
/// Depth-first branch and bound over households, most worth per person first:
/// each goes to one opening it is eligible for and fits whole, or to none.
/// Three cuts keep the search small, each keeping an optimum within reach:
/// - Bound: a node whose worth so far plus the [`upper_bound`] relaxation of
///   the households still to decide, with the room left, cannot beat the best
///   found is not expanded.
/// - Kinds: households of one kind (same size, complexity and eligible
///   openings) are interchangeable, so once one is left out, so are the rest
///   of its kind, which come later and are worth no more: swapping a placed
///   one for a left-out one worth at least as much never loses.
/// - Memory: what the households still to decide can add depends only on the
///   room left in each opening and on which kinds are closed, and openings
///   eligible to the same classes can trade their room. A state reached again
///   with no more worth is not expanded again, and of such openings with the
///   same room left only the first is tried.
///
/// Meant for tens of households and a handful of openings.
pub fn exact(instance: &Instance, objective: Objective, max_nodes: u64) -> Option<u64> {
    let mut search = Search::new(instance, objective, max_nodes);
    search.descend(0).ok()?;
    Some(search.best)
}

/// The node budget ran out.
struct Exhausted;

/// States the search remembers at most, to bound its memory.
const REMEMBERED: usize = 1 << 20;

/// The branch and bound's state.
struct Search<'a> {
    inst: &'a Instance,
    objective: Objective,
    /// Households in the order decided.
    order: Vec<usize>,
    /// Per position in `order`: its household's kind.
    kind: Vec<usize>,
    /// Per position: the kinds of the households from there on, as a bit set.
    ahead: Vec<Vec<u64>>,
    /// Kinds of which one was left out, as a bit set.
    closed: Vec<u64>,
    /// Openings grouped by the classes eligible for them, each group ascending.
    groups: Vec<Vec<usize>>,
    /// Per opening: its group.
    group_of: Vec<usize>,
    /// The most worth each state was reached with (see [`Search::state`]).
    seen: HashMap<Vec<u32>, u64>,
    room: Room,
    worth: u64,
    best: u64,
    nodes: u64,
    max_nodes: u64,
}

impl<'a> Search<'a> {
    fn new(inst: &'a Instance, objective: Objective, max_nodes: u64) -> Self {
        let order = inst.order(objective);
        let mut kinds: BTreeMap<(usize, u32), usize> = BTreeMap::new();
        let kind: Vec<usize> = order
            .iter()
            .map(|&i| {
                let next = kinds.len();
                *kinds.entry((inst.households[i].class, inst.households[i].size)).or_insert(next)
            })
            .collect();
        let words = kinds.len().div_ceil(64);
        let mut ahead = vec![vec![0; words]; order.len() + 1];
        for pos in (0..order.len()).rev() {
            ahead[pos] = ahead[pos + 1].clone();
            ahead[pos][kind[pos] / 64] |= 1 << (kind[pos] % 64);
        }
        let mut columns: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let group_of = (0..inst.places.len())
            .map(|j| {
                let column: Vec<usize> =
                    (0..inst.classes.len()).filter(|&c| inst.classes[c].eligible.contains(&j)).collect();
                let group = *columns.entry(column).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[group].push(j);
                group
            })
            .collect();
        Search {
            inst,
            objective,
            order,
            kind,
            ahead,
            closed: vec![0; words],
            groups,
            group_of,
            seen: HashMap::new(),
            room: Room::new(inst),
            worth: 0,
            best: 0,
            nodes: 0,
            max_nodes,
        }
    }

    /// Decides the households from position `pos` on, every way that can still beat the best.
    fn descend(&mut self, pos: usize) -> Result<(), Exhausted> {
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return Err(Exhausted);
        }
        self.best = self.best.max(self.worth);
        if pos == self.order.len()
            || !self.first_visit(pos)
            || self.worth + relaxation(self.inst, self.objective, &self.order[pos..], &self.room) <= self.best
        {
            return Ok(());
        }
        let inst = self.inst;
        let h = &inst.households[self.order[pos]];
        let (word, bit) = (self.kind[pos] / 64, 1 << (self.kind[pos] % 64));
        if self.closed[word] & bit != 0 {
            return self.descend(pos + 1);
        }
        let mut tried: Vec<(usize, u32, u32)> = Vec::new();
        for &j in &inst.classes[h.class].eligible {
            let like = (self.group_of[j], self.room.places[j], self.room.complex[j]);
            if !self.room.fits(inst, h, j) || tried.contains(&like) {
                continue;
            }
            tried.push(like);
            self.room.take(inst, h, j);
            let gain = self.objective.per_person(h) * u64::from(h.size);
            self.worth += gain;
            let result = self.descend(pos + 1);
            self.worth -= gain;
            self.room.give_back(inst, h, j);
            result?;
        }
        self.closed[word] |= bit;
        let result = self.descend(pos + 1);
        self.closed[word] &= !bit;
        result
    }

    /// Notes reaching position `pos` in the current state with the current
    /// worth; false if that state was reached before with at least as much.
    fn first_visit(&mut self, pos: usize) -> bool {
        let state = self.state(pos);
        match self.seen.get_mut(&state) {
            Some(worth) if *worth >= self.worth => false,
            Some(worth) => {
                *worth = self.worth;
                true
            }
            None => {
                if self.seen.len() < REMEMBERED {
                    self.seen.insert(state, self.worth);
                }
                true
            }
        }
    }

    /// What the rest of the search from `pos` depends on: the position, the
    /// closed kinds still ahead, and the room left, sorted within each group
    /// of openings that can trade it.
    fn state(&self, pos: usize) -> Vec<u32> {
        let mut state = Vec::with_capacity(1 + 2 * self.closed.len() + 2 * self.room.places.len());
        state.push(pos as u32);
        for (closed, ahead) in self.closed.iter().zip(&self.ahead[pos]) {
            let bits = closed & ahead;
            state.extend([bits as u32, (bits >> 32) as u32]);
        }
        for group in &self.groups {
            let mut rooms: Vec<(u32, u32)> =
                group.iter().map(|&j| (self.room.places[j], self.room.complex[j])).collect();
            rooms.sort_unstable();
            state.extend(rooms.into_iter().flat_map(|(p, c)| [p, c]));
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ops::RangeInclusive;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::domain::{AgeGroup, DAY_MS, Language, Need};
    use crate::matcher::{PreferenceRule, run};

    const NOW: Timestamp = Timestamp(10_000 * DAY_MS);
    /// Far more nodes than any test input needs: running out is a failure.
    const NODES: u64 = 1_000_000;

    fn candidate(n: u32, days: i64, size: u8) -> Candidate {
        Candidate {
            reference: RegistrationRef::parse(&format!("{n:012}")).expect("digits are a valid reference"),
            registered_at: Timestamp(NOW.0 - days * DAY_MS),
            size,
            needs: BTreeSet::new(),
            complex: false,
            age_groups: BTreeSet::new(),
            languages: vec![],
            passed: vec![],
        }
    }

    fn opening(n: u32, free_places: u32) -> Opening {
        Opening {
            provider: ProviderId::parse(&format!("P{n:04}")).expect("valid provider id"),
            free_places,
            max_complex_share_pct: 100,
            places_held: 0,
            complex_held: 0,
            languages: vec![],
            age_groups: BTreeSet::new(),
        }
    }

    fn lang(code: &str) -> Language {
        Language::parse(code).expect("valid language")
    }

    /// Every combination of hard, soft and ignored language and age-group rules.
    fn policies() -> Vec<Policy> {
        let rules = [PreferenceRule::Hard, PreferenceRule::Soft, PreferenceRule::Ignore];
        rules
            .iter()
            .flat_map(|&language| {
                rules.iter().map(move |&age_groups| Policy { language, age_groups, ..Policy::default() })
            })
            .collect()
    }

    /// A random input: few languages and age groups, so hard rules bite; small
    /// places and shares, so wholeness and the complex share bite.
    fn random_input(
        rng: &mut StdRng,
        households: u32,
        openings: u32,
        max_size: u8,
        places: RangeInclusive<u32>,
    ) -> (Vec<Candidate>, Vec<Opening>) {
        let languages = [lang("en"), lang("fr"), lang("pa")];
        let groups = [AgeGroup::Child, AgeGroup::Adult, AgeGroup::Senior];
        let pick = |rng: &mut StdRng| -> Vec<Language> {
            (0..rng.random_range(0..=2)).map(|_| languages[rng.random_range(0..languages.len())]).collect()
        };
        let candidates = (0..households)
            .map(|n| Candidate {
                registered_at: Timestamp(NOW.0 - rng.random_range(0..400 * DAY_MS)),
                needs: Need::ALL.iter().copied().filter(|_| rng.random_range(0..6) == 0).collect(),
                complex: rng.random_range(0..4) == 0,
                age_groups: groups.iter().copied().filter(|_| rng.random::<bool>()).collect(),
                languages: pick(rng),
                passed: crate::matcher::tests::passed_over(rng, openings),
                ..candidate(n, 0, rng.random_range(1..=max_size))
            })
            .collect();
        let openings = (0..openings)
            .map(|n| Opening {
                max_complex_share_pct: [0, 25, 50, 100, rng.random_range(0..=100)][rng.random_range(0..5)],
                languages: pick(rng),
                age_groups: groups.iter().copied().filter(|_| rng.random_range(0..3) == 0).collect(),
                ..opening(n, rng.random_range(places.clone()))
            })
            .collect();
        (candidates, openings)
    }

    /// The optimum by trying every assignment, with the rules written plainly
    /// (strings and sets, as the design states them), independent of [`Board`].
    fn brute_force(candidates: &[Candidate], openings: &[Opening], policy: &Policy, objective: Objective) -> u64 {
        let open: Vec<&Opening> = openings.iter().filter(|o| o.free_places > 0).collect();
        let admits = |c: &Candidate, o: &Opening| {
            let ages_ok = o.age_groups.is_empty() || c.age_groups.is_subset(&o.age_groups);
            let neutral = c.languages.is_empty() || o.languages.is_empty();
            let shared = c.languages.iter().any(|l| o.languages.contains(l));
            (policy.age_groups != PreferenceRule::Hard || ages_ok)
                && (policy.language != PreferenceRule::Hard || neutral || shared)
                && !c.passed.contains(&o.provider)
        };
        let worth: Vec<u64> = candidates
            .iter()
            .map(|c| {
                let bonus: u32 = c.needs.iter().map(|n| policy.need_bonus_days.get(n).copied().unwrap_or(0)).sum();
                let score = u64::from(c.registered_at.days_until(NOW)) + u64::from(bonus);
                match objective {
                    Objective::People => u64::from(c.size),
                    Objective::Priority => score * u64::from(c.size),
                }
            })
            .collect();
        let eligible: Vec<Vec<usize>> =
            candidates.iter().map(|c| (0..open.len()).filter(|&j| admits(c, open[j])).collect()).collect();
        let mut left: Vec<u32> = open.iter().map(|o| o.free_places).collect();
        let mut complex_left: Vec<u32> = open
            .iter()
            .map(|o| (o.free_places * u32::from(o.max_complex_share_pct) / 100).min(o.free_places))
            .collect();
        fn best(
            i: usize,
            candidates: &[Candidate],
            eligible: &[Vec<usize>],
            worth: &[u64],
            left: &mut [u32],
            complex_left: &mut [u32],
        ) -> u64 {
            let Some(c) = candidates.get(i) else { return 0 };
            let size = u32::from(c.size);
            let mut most = best(i + 1, candidates, eligible, worth, left, complex_left);
            for &j in &eligible[i] {
                if left[j] >= size && (!c.complex || complex_left[j] >= size) {
                    left[j] -= size;
                    complex_left[j] -= if c.complex { size } else { 0 };
                    most = most.max(worth[i] + best(i + 1, candidates, eligible, worth, left, complex_left));
                    left[j] += size;
                    complex_left[j] += if c.complex { size } else { 0 };
                }
            }
            most
        }
        best(0, candidates, &eligible, &worth, &mut left, &mut complex_left)
    }

    #[test]
    fn subset_sums_match_a_plain_table() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..300 {
            let cap = rng.random_range(0..300);
            let sizes: Vec<u32> = (0..rng.random_range(0..8)).map(|_| rng.random_range(0..=150)).collect();
            let mut reached = vec![false; cap as usize + 1];
            reached[0] = true;
            let mut sums = Sums::new(cap);
            for &size in &sizes {
                for s in (size as usize..=cap as usize).rev() {
                    reached[s] |= reached[s - size as usize];
                }
                sums.add(size);
            }
            let most = reached.iter().rposition(|&r| r).expect("the empty sum");
            assert_eq!(sums.most() as usize, most, "cap {cap}, sizes {sizes:?}");
        }
    }

    #[test]
    fn exact_equals_brute_force_on_tiny_inputs() {
        let mut rng = StdRng::seed_from_u64(2024);
        let policies = policies();
        let mut placed_any = 0;
        for round in 0..270 {
            let (households, openings) = (rng.random_range(1..=7), rng.random_range(1..=3));
            let (candidates, openings) = random_input(&mut rng, households, openings, 4, 0..=12);
            let policy = &policies[round % policies.len()];
            let inst = Instance::new(&candidates, &openings, policy, NOW);
            for objective in Objective::BOTH {
                let want = brute_force(&candidates, &openings, policy, objective);
                assert_eq!(exact(&inst, objective, NODES), Some(want), "round {round}, {objective:?}");
                placed_any += usize::from(want > 0);
            }
        }
        assert!(placed_any > 300, "most inputs should place someone: {placed_any}");
    }

    /// Many small openings with the same places, which hard rules split into
    /// groups: the search's memory and its choice among like openings matter here.
    #[test]
    fn exact_equals_brute_force_on_crowded_inputs() {
        let mut rng = StdRng::seed_from_u64(31);
        let policies = policies();
        for round in 0..240 {
            let (households, openings) = (rng.random_range(6..=9), rng.random_range(3..=5));
            let (candidates, openings) = random_input(&mut rng, households, openings, 3, 2..=4);
            let policy = &policies[round % 3];
            let inst = Instance::new(&candidates, &openings, policy, NOW);
            for objective in Objective::BOTH {
                let want = brute_force(&candidates, &openings, policy, objective);
                assert_eq!(exact(&inst, objective, NODES), Some(want), "round {round}, {objective:?}");
            }
        }
    }

    #[test]
    fn greedy_is_feasible_and_at_most_exact_and_bound_at_least_exact() {
        let mut rng = StdRng::seed_from_u64(77);
        let policies = policies();
        let (mut greedy_below, mut bound_above) = ([0; 2], [0; 2]);
        for round in 0..45 {
            let (households, openings) = (rng.random_range(10..=18), rng.random_range(2..=4));
            let (candidates, openings) = random_input(&mut rng, households, openings, 6, 0..=18);
            let policy = &policies[round % policies.len()];
            let inst = Instance::new(&candidates, &openings, policy, NOW);
            let greedy = inst.assignment(&run(&candidates, &openings, policy, NOW));
            assert!(inst.is_feasible(&greedy), "round {round}: the matcher broke a rule the optimiser keeps");
            for (k, objective) in Objective::BOTH.into_iter().enumerate() {
                let best = exact(&inst, objective, NODES).expect("small inputs are solved within the budget");
                let (got, bound) = (inst.value(&greedy).of(objective), upper_bound(&inst, objective));
                assert!(got <= best, "round {round}, {objective:?}: greedy {got} above the optimum {best}");
                assert!(bound >= best, "round {round}, {objective:?}: bound {bound} below the optimum {best}");
                greedy_below[k] += usize::from(got < best);
                bound_above[k] += usize::from(bound > best);
            }
        }
        // Otherwise the comparisons above would prove little.
        assert!(greedy_below.iter().all(|&n| n >= 3), "greedy below the optimum: {greedy_below:?}");
        assert!(bound_above.iter().all(|&n| n >= 3), "bound above the optimum: {bound_above:?}");
    }

    #[test]
    fn a_large_household_that_waited_less_would_fill_the_place_left() {
        // Two places: the single (100 days) goes first, and the couple (60 days) no longer fits.
        let candidates = [candidate(1, 100, 1), candidate(2, 60, 2)];
        let openings = [opening(1, 2)];
        let policy = Policy::default();
        let inst = Instance::new(&candidates, &openings, &policy, NOW);
        let greedy = inst.value(&inst.assignment(&run(&candidates, &openings, &policy, NOW)));
        assert_eq!(greedy, Value { people: 1, priority: 100 });
        assert_eq!(exact(&inst, Objective::People, NODES), Some(2));
        assert_eq!(exact(&inst, Objective::Priority, NODES), Some(120));
        // Split, the couple's second member could take the place the single leaves.
        assert_eq!(upper_bound(&inst, Objective::People), 2);
        assert_eq!(upper_bound(&inst, Objective::Priority), 100 + 60);
        assert!(inst.is_feasible(&[None, Some(0)]));
        assert!(!inst.is_feasible(&[Some(0), Some(0)]), "three people in two places");
    }

    #[test]
    fn complex_share_is_the_matchers_floor() {
        // 9 places at 25%: at most 2 complex people, as the matcher counts.
        let openings = [Opening { max_complex_share_pct: 25, ..opening(1, 9) }];
        let complex = |n, size| Candidate { complex: true, ..candidate(n, 10, size) };
        let policy = Policy::default();
        let inst = Instance::new(&[complex(1, 3)], &openings, &policy, NOW);
        assert_eq!(exact(&inst, Objective::People, NODES), Some(0));
        assert_eq!(upper_bound(&inst, Objective::People), 0, "a household that fits nowhere whole adds nothing");
        let inst = Instance::new(&[complex(1, 2), complex(2, 1), candidate(3, 5, 4)], &openings, &policy, NOW);
        assert_eq!(exact(&inst, Objective::People, NODES), Some(6));
        assert!(!inst.is_feasible(&[Some(0), Some(0), None]), "three complex people");
    }

    #[test]
    fn hard_rules_bind_the_optimum_and_soft_ones_do_not() {
        let household = Candidate { languages: vec![lang("pa")], ..candidate(1, 10, 2) };
        let openings = [Opening { languages: vec![lang("fr")], ..opening(1, 5) }];
        for (language, people) in [(PreferenceRule::Hard, 0), (PreferenceRule::Soft, 2), (PreferenceRule::Ignore, 2)] {
            let policy = Policy { language, ..Policy::default() };
            let inst = Instance::new(std::slice::from_ref(&household), &openings, &policy, NOW);
            assert_eq!(exact(&inst, Objective::People, NODES), Some(people), "{language:?}");
            assert_eq!(upper_bound(&inst, Objective::People), people, "{language:?}");
        }
    }

    #[test]
    fn the_budget_is_reported_not_exceeded() {
        let mut rng = StdRng::seed_from_u64(5);
        let (candidates, openings) = random_input(&mut rng, 18, 4, 6, 0..=18);
        let inst = Instance::new(&candidates, &openings, &Policy::default(), NOW);
        assert_eq!(exact(&inst, Objective::People, 1), None);
    }
}

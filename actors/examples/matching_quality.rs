//! The greedy matcher against an optimal assignment of the same input.
//!
//! Generates fixed-seed inputs with the province demo's proportions (household
//! sizes, needs, languages, providers' complex shares and age groups) and, per
//! class of input, prints greedy / optimum for people placed and for
//! priority-weighted people. Small inputs are solved exactly, and again with
//! every household cut to one person to show what wholeness costs;
//! community-sized ones are compared with the flow upper bound only.
//!
//! ```sh
//! cargo run --release -p attach-actors --example matching_quality
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

use attach_actors::domain::{AgeGroup, DAY_MS, Language, Need, ProviderId, RegistrationRef, Timestamp};
use attach_actors::matcher::optimal::{self, Instance, Objective};
use attach_actors::matcher::{self, Candidate, Opening, Policy, PreferenceRule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// Search nodes allowed per exact solve; an input that needs more is counted as unsolved.
const NODES: u64 = 2_000_000;
/// The demo's free places per waiting household: 170,000 for 1,000,000.
const PLACES_PER_HOUSEHOLD: f64 = 0.17;

/// The demo's languages with its weights per thousand; English first.
const CULTURES: [(&str, u32); 8] =
    [("en", 780), ("fr", 40), ("pa", 55), ("zh", 55), ("tl", 25), ("fa", 20), ("ko", 12), ("vi", 13)];

/// One class of inputs in the report.
struct Class {
    name: &'static str,
    count: usize,
    households: (u32, u32),
    providers: (u32, u32),
    /// How many free places an input has in all.
    places: Places,
    policy: Policy,
    /// Whether to solve exactly (small inputs) or only bound.
    exact: bool,
    /// The seed of the class's inputs.
    seed: u64,
    /// Whether to cut every household to one person after drawing the input
    /// (places stay as drawn): the same inputs without the wholeness rule's bite.
    singles: bool,
}

/// How an input's free places are drawn.
enum Places {
    /// A share of the people waiting, drawn per input.
    ShareOfPeople(f64, f64),
    /// The demo's places per household.
    Demo,
}

/// Picks from `(value, weight)` pairs.
fn pick<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|t| t.1).sum();
    let mut roll = rng.random_range(0..total);
    for &(value, weight) in table {
        if roll < weight {
            return value;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

fn lang(code: &str) -> Language {
    Language::parse(code).expect("the report's language codes are valid")
}

/// A waiting household: the demo's sizes (1 to 5) with a thin tail to 8, a
/// need for a quarter of them, a language by culture, registered within three
/// years (more of them recently).
fn candidate(rng: &mut StdRng, n: u32) -> Candidate {
    let size = pick(rng, &[(1, 600), (2, 220), (3, 100), (4, 50), (5, 20), (6, 5), (7, 3), (8, 2)]);
    let needs: BTreeSet<Need> = if rng.random::<f64>() < 0.25 {
        let table = [
            (Need::Pregnancy, 15),
            (Need::Newborn, 10),
            (Need::Frailty, 8),
            (Need::RecentDischarge, 15),
            (Need::ChronicComplex, 27),
            (Need::MentalHealth, 20),
            (Need::Palliative, 5),
        ];
        BTreeSet::from([pick(rng, &table)])
    } else {
        BTreeSet::new()
    };
    let age_groups = match size {
        1 if rng.random::<f64>() < 0.2 => BTreeSet::from([AgeGroup::Senior]),
        1 => BTreeSet::from([AgeGroup::Adult]),
        2 if rng.random::<f64>() < 0.75 => {
            BTreeSet::from([if rng.random::<f64>() < 0.15 { AgeGroup::Senior } else { AgeGroup::Adult }])
        }
        _ => BTreeSet::from([AgeGroup::Adult, AgeGroup::Child]),
    };
    let culture = pick(rng, &CULTURES);
    let languages = match culture {
        "en" => vec![lang("en")],
        other if rng.random::<f64>() < 0.7 => vec![lang(other), lang("en")],
        other => vec![lang(other)],
    };
    let ago = (rng.random::<f64>().powf(1.3) * 3.0 * 365.0 * DAY_MS as f64) as i64;
    Candidate {
        reference: RegistrationRef::parse(&format!("{n:012}")).expect("digits are a valid reference"),
        registered_at: Timestamp(NOW.0 - ago.max(60_000)),
        size,
        complex: needs.iter().any(|n| n.is_complex()),
        needs,
        age_groups,
        languages,
        passed: vec![],
    }
}

/// An accepting provider as the demo declares them: mostly open to all, some
/// offering a language, 30% with a complex share of 20–60%, a few with an age restriction.
fn opening(rng: &mut StdRng, n: u32, free_places: u32) -> Opening {
    let culture = pick(rng, &CULTURES);
    let languages = if culture != "en" {
        vec![lang("en"), lang(culture)]
    } else if rng.random::<f64>() < 0.1 {
        vec![lang("en"), lang(CULTURES[rng.random_range(1..CULTURES.len())].0)]
    } else {
        Vec::new()
    };
    let roll = rng.random::<f64>();
    let age_groups = if roll < 0.03 {
        BTreeSet::from([AgeGroup::Adult, AgeGroup::Senior])
    } else if roll < 0.05 {
        BTreeSet::from([AgeGroup::Child, AgeGroup::Adult])
    } else {
        BTreeSet::new()
    };
    Opening {
        provider: ProviderId::parse(&format!("P{n:05}")).expect("P and five digits is a provider id"),
        free_places,
        max_complex_share_pct: if rng.random::<f64>() < 0.3 { rng.random_range(20..=60) } else { 100 },
        places_held: 0,
        complex_held: 0,
        languages,
        age_groups,
    }
}

/// Splits `total` places over `providers` by demo weights (50 to 149), each at least one.
fn split(rng: &mut StdRng, providers: u32, total: u32) -> Vec<u32> {
    let weights: Vec<u32> = (0..providers).map(|_| rng.random_range(50..150)).collect();
    let sum: u32 = weights.iter().sum();
    let spare = total.saturating_sub(providers);
    let mut parts: Vec<u32> = weights.iter().map(|w| 1 + spare * w / sum).collect();
    let short = total.max(providers) - parts.iter().sum::<u32>();
    for part in parts.iter_mut().take(short as usize) {
        *part += 1;
    }
    parts
}

fn input(rng: &mut StdRng, class: &Class) -> (Vec<Candidate>, Vec<Opening>) {
    let households = rng.random_range(class.households.0..=class.households.1);
    let providers = rng.random_range(class.providers.0..=class.providers.1);
    let candidates: Vec<Candidate> = (0..households).map(|n| candidate(rng, n)).collect();
    let people: u32 = candidates.iter().map(|c| u32::from(c.size)).sum();
    let places = match class.places {
        Places::ShareOfPeople(lo, hi) => (f64::from(people) * rng.random_range(lo..hi)).round() as u32,
        Places::Demo => (f64::from(households) * PLACES_PER_HOUSEHOLD).round() as u32,
    };
    let openings = split(rng, providers, places).into_iter().enumerate().map(|(n, free)| opening(rng, n as u32, free));
    let openings = openings.collect();
    if class.singles {
        return (candidates.into_iter().map(|c| Candidate { size: 1, ..c }).collect(), openings);
    }
    (candidates, openings)
}

/// Ratios of one objective over a class's inputs.
#[derive(Default)]
struct Ratios(Vec<f64>);

impl Ratios {
    /// `got / best`; nothing placeable counts as 1 (nothing was missed).
    fn push(&mut self, got: u64, best: u64) {
        self.0.push(if best == 0 { 1.0 } else { got as f64 / best as f64 });
    }

    fn cell(&self) -> String {
        if self.0.is_empty() {
            return "—".to_string();
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        let below = sorted.iter().filter(|&&r| r < 1.0).count();
        format!("{:.4} / {:.4} / {:.4} ({below} below 1)", sorted[0], median, mean)
    }
}

/// Greedy / optimum and greedy / bound, per objective, for one class.
#[derive(Default)]
struct Row {
    to_optimum: [Ratios; 2],
    to_bound: [Ratios; 2],
    optimum_to_bound: [Ratios; 2],
    unsolved: usize,
    households: u64,
    places: u64,
}

fn measure(class: &Class) -> Row {
    let mut rng = StdRng::seed_from_u64(class.seed);
    let mut row = Row::default();
    for _ in 0..class.count {
        let (candidates, openings) = input(&mut rng, class);
        let instance = Instance::new(&candidates, &openings, &class.policy, NOW);
        row.households += instance.households() as u64;
        row.places += instance.places();
        let greedy = instance.value(&instance.assignment(&matcher::run(&candidates, &openings, &class.policy, NOW)));
        for (k, objective) in Objective::BOTH.into_iter().enumerate() {
            let got = greedy.of(objective);
            let bound = optimal::upper_bound(&instance, objective);
            row.to_bound[k].push(got, bound);
            if class.exact {
                match optimal::exact(&instance, objective, NODES) {
                    Some(best) => {
                        row.to_optimum[k].push(got, best);
                        row.optimum_to_bound[k].push(best, bound);
                    }
                    None => row.unsolved += 1,
                }
            }
        }
    }
    row
}

fn main() {
    let default = Policy::default();
    let hard = Policy { language: PreferenceRule::Hard, ..Policy::default() };
    let small = |name, policy: &Policy, seed, singles| Class {
        name,
        count: 300,
        households: (20, 40),
        providers: (2, 6),
        places: Places::ShareOfPeople(0.1, 0.6),
        policy: policy.clone(),
        exact: true,
        seed,
        singles,
    };
    let community = |name, providers, policy: &Policy, seed| Class {
        name,
        count: 20,
        households: (3_000, 3_000),
        providers,
        places: Places::Demo,
        policy: policy.clone(),
        exact: false,
        seed,
        singles: false,
    };
    // The demo's largest communities hold about 100,000 waiting households.
    let largest = |name, policy: &Policy, seed| Class {
        name,
        count: 3,
        households: (100_000, 100_000),
        providers: (40, 60),
        places: Places::Demo,
        policy: policy.clone(),
        exact: false,
        seed,
        singles: false,
    };
    let classes = [
        small("small, default policy", &default, 2026, false),
        small("small, hard language", &hard, 2027, false),
        small("the same small, default policy, everyone single", &default, 2026, true),
        small("the same small, hard language, everyone single", &hard, 2027, true),
        community("community, 20–30 providers, default policy", (20, 30), &default, 2028),
        community("community, 20–30 providers, hard language", (20, 30), &hard, 2029),
        community("community, 2–4 providers, default policy", (2, 4), &default, 2030),
        largest("largest community, 40–60 providers, default policy", &default, 2031),
    ];
    println!(
        "| inputs | count | households | free places | people: greedy/optimum | priority: greedy/optimum | people: greedy/bound | priority: greedy/bound | optimum/bound (people, priority; mean) | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    for class in &classes {
        let class_started = Instant::now();
        let row = measure(class);
        let mean = |r: &Ratios| {
            if r.0.is_empty() {
                "—".to_string()
            } else {
                format!("{:.4}", r.0.iter().sum::<f64>() / r.0.len() as f64)
            }
        };
        let count = class.count as u64;
        println!(
            "| {} | {}{} | {} avg | {} avg | {} | {} | {} | {} | {}, {} | {:.1?} |",
            class.name,
            class.count,
            if row.unsolved > 0 { format!(" ({} solves over budget)", row.unsolved) } else { String::new() },
            row.households / count,
            row.places / count,
            row.to_optimum[0].cell(),
            row.to_optimum[1].cell(),
            row.to_bound[0].cell(),
            row.to_bound[1].cell(),
            mean(&row.optimum_to_bound[0]),
            mean(&row.optimum_to_bound[1]),
            class_started.elapsed(),
        );
    }
    println!(
        "\nCells: min / median / mean over the inputs, and how many were below 1. {:.1?} in all.",
        started.elapsed()
    );
}

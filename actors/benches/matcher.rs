//! Matcher benchmarks: a province-sized waitlist (300,000 households across 89
//! communities, 800 accepting providers with 170,000 free places, `run` called
//! once per community) and a single community of 5,000 households and 10
//! providers. Inputs are generated deterministically, outside the timed part.

use std::collections::BTreeSet;
use std::hint::black_box;

use attach_actors::domain::{AgeGroup, DAY_MS, Language, Need, ProviderId, RegistrationRef, Timestamp};
use attach_actors::matcher::{self, Candidate, Opening, Policy};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const COMMUNITIES: usize = 89;
const HOUSEHOLDS: usize = 300_000;
const PROVIDERS: usize = 800;
const FREE_PLACES: usize = 170_000;

/// One community's matcher input.
struct Community {
    candidates: Vec<Candidate>,
    openings: Vec<Opening>,
}

fn lang(code: &str) -> Language {
    Language::parse(code).expect("benchmark language codes are valid")
}

/// Splits `total` in proportion to `weights`, each part at least `min`; the
/// parts sum to `total` exactly (rounding leftovers go to the first parts).
fn split(total: usize, weights: &[f64], min: usize) -> Vec<usize> {
    let spare = total - min * weights.len();
    let sum: f64 = weights.iter().sum();
    let mut parts: Vec<usize> = weights.iter().map(|w| min + (spare as f64 * w / sum) as usize).collect();
    let short = total - parts.iter().sum::<usize>();
    for part in parts.iter_mut().take(short) {
        *part += 1;
    }
    parts
}

/// Zipf-like community sizes with some noise: a few big cities, a long tail of small towns.
fn community_weights(rng: &mut StdRng) -> Vec<f64> {
    (0..COMMUNITIES).map(|i| (0.7 + 0.6 * rng.random::<f64>()) / (i as f64 + 1.0)).collect()
}

fn reference(rng: &mut StdRng) -> RegistrationRef {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let code: String = (0..12).map(|_| ALPHABET[rng.random_range(0..32)] as char).collect();
    RegistrationRef::parse(&code).expect("generated from the reference alphabet")
}

fn candidate(rng: &mut StdRng, langs: &[Language]) -> Candidate {
    // Mostly singles and couples.
    let size = match rng.random::<f64>() {
        x if x < 0.45 => 1,
        x if x < 0.75 => 2,
        x if x < 0.87 => 3,
        x if x < 0.96 => 4,
        _ => 5,
    };
    const COMPLEX: [Need; 4] = [Need::Frailty, Need::ChronicComplex, Need::MentalHealth, Need::Palliative];
    const SIMPLE: [Need; 3] = [Need::Pregnancy, Need::Newborn, Need::RecentDischarge];
    let roll = rng.random::<f64>();
    let complex = roll < 0.10;
    let mut needs = BTreeSet::new();
    if complex {
        needs.insert(COMPLEX[rng.random_range(0..COMPLEX.len())]);
    }
    if roll < 0.25 && (!complex || rng.random::<f64>() < 0.3) {
        needs.insert(SIMPLE[rng.random_range(0..SIMPLE.len())]);
    }
    let mut age_groups = BTreeSet::new();
    if size == 1 {
        age_groups.insert(if rng.random::<f64>() < 0.75 { AgeGroup::Adult } else { AgeGroup::Senior });
    } else {
        age_groups.insert(AgeGroup::Adult);
        if size >= 3 || rng.random::<f64>() < 0.4 {
            age_groups.insert(AgeGroup::Child);
        }
        if rng.random::<f64>() < 0.15 {
            age_groups.insert(AgeGroup::Senior);
        }
    }
    let [en, fr, pa, zh] = langs else { unreachable!("four benchmark languages") };
    let languages = match rng.random::<f64>() {
        x if x < 0.60 => vec![*en],
        x if x < 0.70 => vec![*pa, *en],
        x if x < 0.75 => vec![*pa],
        x if x < 0.80 => vec![*zh],
        x if x < 0.85 => vec![*zh, *en],
        x if x < 0.90 => vec![*fr, *en],
        _ => vec![],
    };
    Candidate {
        reference: reference(rng),
        registered_at: Timestamp(NOW.0 - rng.random_range(0..3 * 365 * DAY_MS)),
        size,
        needs,
        complex,
        age_groups,
        languages,
        passed: vec![],
    }
}

fn opening(rng: &mut StdRng, id: usize, free_places: u32, langs: &[Language]) -> Opening {
    let [en, fr, pa, zh] = langs else { unreachable!("four benchmark languages") };
    let languages = match rng.random::<f64>() {
        x if x < 0.60 => vec![*en],
        x if x < 0.75 => vec![*en, *pa],
        x if x < 0.85 => vec![*en, *zh],
        x if x < 0.90 => vec![*fr, *en],
        _ => vec![],
    };
    let age_groups = match rng.random::<f64>() {
        x if x < 0.75 => BTreeSet::new(),
        x if x < 0.85 => BTreeSet::from([AgeGroup::Adult, AgeGroup::Senior]),
        x if x < 0.95 => BTreeSet::from([AgeGroup::Child, AgeGroup::Adult]),
        _ => BTreeSet::from([AgeGroup::Child]),
    };
    Opening {
        provider: ProviderId::parse(&format!("P{id:05}")).expect("P and five digits is a valid provider id"),
        free_places,
        max_complex_share_pct: rng.random_range(10..=40),
        places_held: 0,
        complex_held: 0,
        languages,
        age_groups,
    }
}

/// Free places per provider: skewed (a few big clinics), summing to `total`.
fn places(rng: &mut StdRng, providers: usize, total: usize) -> Vec<usize> {
    let weights: Vec<f64> = (0..providers).map(|_| 0.2 + rng.random::<f64>().powi(3) * 4.0).collect();
    split(total, &weights, 1)
}

fn province(seed: u64) -> Vec<Community> {
    let mut rng = StdRng::seed_from_u64(seed);
    let langs = [lang("en"), lang("fr"), lang("pa"), lang("zh")];
    let weights = community_weights(&mut rng);
    let households = split(HOUSEHOLDS, &weights, 20);
    let providers = split(PROVIDERS, &weights, 1);
    let free = places(&mut rng, PROVIDERS, FREE_PLACES);
    let mut next_provider = 0;
    households
        .iter()
        .zip(&providers)
        .map(|(&h, &p)| {
            let candidates = (0..h).map(|_| candidate(&mut rng, &langs)).collect();
            let openings =
                (next_provider..next_provider + p).map(|id| opening(&mut rng, id, free[id] as u32, &langs)).collect();
            next_provider += p;
            Community { candidates, openings }
        })
        .collect()
}

fn one_community(seed: u64) -> Community {
    let mut rng = StdRng::seed_from_u64(seed);
    let langs = [lang("en"), lang("fr"), lang("pa"), lang("zh")];
    // Same ratio of places to households as the province.
    let free = places(&mut rng, 10, 5_000 * FREE_PLACES / HOUSEHOLDS);
    Community {
        candidates: (0..5_000).map(|_| candidate(&mut rng, &langs)).collect(),
        openings: (0..10).map(|id| opening(&mut rng, id, free[id] as u32, &langs)).collect(),
    }
}

fn run_all(communities: &[Community], policy: &Policy) -> usize {
    communities.iter().map(|c| black_box(matcher::run(&c.candidates, &c.openings, policy, NOW)).len()).sum()
}

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let province = province(2026);
    let community = [one_community(7)];

    let sizes: Vec<usize> = province.iter().map(|c| c.candidates.len()).collect();
    let people: usize = province.iter().flat_map(|c| &c.candidates).map(|c| usize::from(c.size)).sum();
    eprintln!(
        "province: {} households ({people} people), largest communities {:?}, smallest {}; {} providers, {} free places; {} placed",
        sizes.iter().sum::<usize>(),
        &sizes[..4],
        sizes.iter().min().copied().unwrap_or(0),
        province.iter().map(|c| c.openings.len()).sum::<usize>(),
        province.iter().flat_map(|c| &c.openings).map(|o| o.free_places).sum::<u32>(),
        run_all(&province, &policy),
    );

    let mut group = c.benchmark_group("matcher");
    group.bench_function("community_5k_households_10_providers", |b| b.iter(|| run_all(&community, &policy)));
    group.sample_size(10);
    group.bench_function("province_300k_households_800_providers", |b| b.iter(|| run_all(&province, &policy)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! A synthetic province for demonstrations and load tests, seeded on first start.
//!
//! [`seed`] writes waiting registrations, providers and clinics straight through
//! the [`Store`], before any shard actor runs, in the proportions of DESIGN.md
//! section 3 ([`DemoSize::Province`]: a million households, 4,000 providers, 800
//! of them accepting with 170,000 free places) or a small slice of them
//! ([`DemoSize::Small`]).
//!
//! # Imported history, not events
//!
//! The seed is history imported from before Attach: it writes records and
//! locators only, no events. Shards therefore start at sequence 0, and feeds and
//! "this week" figures start empty; existing panels exist only as each
//! provider's `reported_panel_size`, never itemised.
//!
//! # Idempotent and crash-safe
//!
//! Everything is derived from a fixed seed, shard by shard in regions-file
//! order: references, PHNs, names, dates, capacities. A crash part way and a
//! re-run therefore write exactly the same records again (upserts) and claim the
//! same PHNs for the same registrations; a claim the store already holds for the
//! registration we are writing counts as ours. The very last write is a marker
//! locator ([`SEED_MARKER`], a provider id no registry issues, pointing at the
//! first shard and at no record: a locator to nothing is harmless). While the
//! marker is missing the seed runs again; once it is there, [`seed`] is a no-op.
//! Only the timestamps move with `now` between two runs (they are relative to it),
//! and upserts replace whole records, so the result is a single consistent seed.
//!
//! # Memory and speed
//!
//! Generation is per shard in chunks of [`CHUNK`] registrations; each chunk is
//! claimed and committed while the next one is generated, so one core builds
//! records while the store's writer thread writes them. Within a shard the
//! references are handed out in key order, so a shard's rows are appended to
//! the store's tree rather than scattered over it. Nothing but the current and
//! the next chunk is ever held.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use anyhow::{Context, bail};
use chrono::{Days, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::domain::{
    AgeGroup, Capacity, Clinic, ClinicInput, ComplexityMix, DAY_MS, DateOfBirth, FacilityNumber, Household, Language,
    Member, Need, PersonName, Phn, PostalCode, Provider, ProviderId, ProviderKind, Registration, RegistrationRef,
    ShardKey, Timestamp,
};
use crate::regions::{Community, Regions};
use crate::store::{Batch, Epoch, Locator, PhnClaim, PhnHolder, Record, Store};

/// The fixed seed everything is derived from. Changing it changes every
/// reference and PHN of the demo, so a half-seeded store would no longer be
/// finished by a re-run; leave it alone.
const SEED: u64 = 0x00A7_7AC4_2026_0001;

/// The lease holder while seeding; an interrupted seed run takes its shards back at once.
const DEMO_OWNER: &str = "demo-seed";

/// The provider id of the "seed complete" marker locator. Practitioner numbers
/// are digits (and the demo's are `D` + 5 digits), so no provider has it.
pub const SEED_MARKER: &str = "DEMOSEED";

/// The provider id of the "seed begun" marker locator, written once the seed
/// holds its shards and before any record: a store whose shards were held
/// without it has had a server on it, and is not the demo's to fill.
const SEED_BEGUN: &str = "DEMOBEGUN";

/// Registrations per commit: big enough that a commit's fsync is shared by many
/// rows, small enough that two chunks in memory stay a few tens of MB.
pub const CHUNK: usize = 20_000;

/// PHN bodies (digits 2–9, see [`Phn::with_body`]) the demo hands out, in order.
/// The province uses about 1.9 million of them. Load tests that register new
/// households should draw bodies outside this range, or they will collide with
/// seeded people.
pub const DEMO_PHN_BODIES: Range<u32> = 10_000_000..20_000_000;

/// How much synthetic data to seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemoSize {
    /// About 2,000 households and 60 providers: quick to start, for trying things.
    Small,
    /// A province at DESIGN.md section 3's scale: a million households.
    Province,
}

/// The totals a [`DemoSize`] spreads over the communities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// Registrations (households).
    pub registrations: u64,
    /// Providers.
    pub providers: u64,
    /// Providers accepting new patients.
    pub accepting: u64,
    /// Free places (desired minus reported panel size) over all accepting providers.
    pub free_places: u64,
}

impl DemoSize {
    /// The size's name, as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DemoSize::Small => "small",
            DemoSize::Province => "province",
        }
    }

    /// What the size seeds in total.
    pub fn targets(self) -> Targets {
        match self {
            DemoSize::Small => Targets { registrations: 2_000, providers: 60, accepting: 15, free_places: 400 },
            DemoSize::Province => {
                Targets { registrations: 1_000_000, providers: 4_000, accepting: 800, free_places: 170_000 }
            }
        }
    }
}

impl fmt::Display for DemoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A demo size that is neither `small` nor `province`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown demo size {0:?}: expected `small` or `province`")]
pub struct UnknownDemoSize(pub String);

impl FromStr for DemoSize {
    type Err = UnknownDemoSize;

    /// Parses `small` or `province` (any case, surrounding spaces forgiven).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(DemoSize::Small),
            "province" => Ok(DemoSize::Province),
            _ => Err(UnknownDemoSize(s.to_string())),
        }
    }
}

/// What [`seed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// The store was seeded before: nothing was written and every count is 0.
    pub already_seeded: bool,
    /// Registrations (households) written, all waiting.
    pub registrations: u64,
    /// People in them (PHNs claimed).
    pub people: u64,
    /// Providers written.
    pub providers: u64,
    /// Of them, accepting new patients.
    pub accepting: u64,
    /// Sum over accepting providers of desired minus reported panel size.
    pub free_places: u64,
    /// Clinics written.
    pub clinics: u64,
}

/// What one community's shard gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardPlan {
    /// Registrations (households).
    pub registrations: u64,
    /// Providers homed here.
    pub providers: u64,
    /// Of them, accepting.
    pub accepting: u64,
    /// Free places over the accepting ones.
    pub free_places: u64,
    /// Clinics: one per four providers, rounded up.
    pub clinics: u64,
}

/// Spreads a size's targets over communities of the given populations (in
/// regions-file order). Registrations and providers follow population; accepting
/// providers follow the providers (so a shard never accepts with more providers
/// than it has) and free places follow the accepting providers. Every total is
/// met exactly (largest remainders).
pub fn plan(populations: &[u64], size: DemoSize) -> Vec<ShardPlan> {
    let t = size.targets();
    let registrations = apportion(t.registrations, populations);
    let providers = apportion(t.providers, populations);
    let accepting = apportion(t.accepting.min(t.providers), &providers);
    let free_places = apportion(t.free_places, &accepting);
    (0..populations.len())
        .map(|i| ShardPlan {
            registrations: registrations[i],
            providers: providers[i],
            accepting: accepting[i],
            free_places: free_places[i],
            clinics: providers[i].div_ceil(4),
        })
        .collect()
}

/// Splits `total` in proportion to `weights` by the largest-remainder method:
/// the parts sum to `total` exactly, each is within one of its exact quota, and
/// a zero weight gets nothing (unless every weight is zero: then equal shares).
fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return if weights.is_empty() { Vec::new() } else { apportion(total, &vec![1; weights.len()]) };
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(total) * u128::from(*w);
        // The floor of a share is at most `total`, so it fits back into a u64.
        parts.push(u64::try_from(exact / sum).unwrap_or(total));
        remainders.push((exact % sum, i));
    }
    let mut left = total.saturating_sub(parts.iter().sum());
    // Ties go to the earlier community, so the split is deterministic.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (remainder, i) in remainders {
        if left == 0 || remainder == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Seeds `size` into `store` unless it was seeded before (see the module docs).
/// Call it before any shard actor starts: it acquires every shard it writes,
/// which fences whoever held them.
pub async fn seed(store: &dyn Store, regions: &Regions, size: DemoSize, now: Timestamp) -> anyhow::Result<SeedReport> {
    seed_until(store, regions, size, now, None).await
}

/// [`seed`], optionally stopping after `stop_after` chunks without writing the
/// marker: what a crash part way leaves behind, for the tests.
async fn seed_until(
    store: &dyn Store,
    regions: &Regions,
    size: DemoSize,
    now: Timestamp,
    stop_after: Option<usize>,
) -> anyhow::Result<SeedReport> {
    let marker = Locator::Provider(ProviderId::parse(SEED_MARKER).context("the seed marker is a valid provider id")?);
    if store.locate(&marker).await.context("looking for the demo seed marker")?.is_some() {
        tracing::info!(size = %size, "demo data already seeded; nothing to do");
        return Ok(SeedReport { already_seeded: true, ..SeedReport::default() });
    }
    let begun = Locator::Provider(ProviderId::parse(SEED_BEGUN).context("the seed's start is a valid provider id")?);
    if store.locate(&begun).await.context("looking for the demo seed's start")?.is_none()
        && !store.held_shards().await.context("reading which shards the store has held")?.is_empty()
    {
        bail!(
            "the data directory already holds data (a server has run on it), so --demo does not seed it: the demo's \
             households, registered up to years ago, would stand ahead of real ones in line. Start without --demo, or \
             give --demo a new --data-dir (a demo seed stopped in its first moment, or by a build before this check, \
             leaves a directory like this too: nothing in it is lost by starting again in a new one)"
        );
    }
    let communities: Vec<&Community> = regions.communities().collect();
    let Some(first) = communities.first().map(|c| c.shard.clone()) else {
        bail!("the regions file has no community to seed");
    };
    let plans = plan(&communities.iter().map(|c| c.population).collect::<Vec<_>>(), size);
    tracing::info!(size = %size, communities = communities.len(), "seeding demo data");
    let started = std::time::Instant::now();

    // The first shard, and at once the mark that the seed has begun: a stop
    // between the two is the one moment that leaves the store refused above.
    let epoch = store.acquire_shard(&first, DEMO_OWNER).await.context("acquiring the shards to seed")?;
    store
        .commit(&first, epoch, &Batch { locators: vec![begun], ..Batch::default() })
        .await
        .context("writing the demo seed's start")?;
    // The others at once, so the writer can take their acquisitions in one transaction.
    let mut epochs: HashMap<ShardKey, Epoch> =
        futures::future::try_join_all(communities.iter().skip(1).map(|c| async move {
            let epoch = store.acquire_shard(&c.shard, DEMO_OWNER).await?;
            Ok::<_, crate::store::StoreError>((c.shard.clone(), epoch))
        }))
        .await
        .context("acquiring the shards to seed")?
        .into_iter()
        .collect();
    epochs.insert(first.clone(), epoch);

    let mut generator = Generator::new(communities, plans, now);
    let mut pending: Option<Chunk> = None;
    let mut written = 0usize;
    let mut renewed = std::time::Instant::now();
    loop {
        if stop_after.is_some_and(|n| written >= n) {
            return Ok(generator.report);
        }
        // Seeding a province outlasts a lease: keep every shard's renewed.
        if renewed.elapsed() >= store.lease() / 3 {
            futures::future::try_join_all(epochs.iter().map(|(s, e)| store.renew_lease(s, DEMO_OWNER, *e)))
                .await
                .context("renewing the leases of the shards being seeded")?;
            renewed = std::time::Instant::now();
        }
        // Write the chunk in hand while generating the next: the store's writer
        // thread and this task then work at the same time.
        let current = pending.take();
        let had_chunk = current.is_some();
        // `join` polls the write first, so its request is queued before the
        // generation (synchronous, a few tens of ms) runs.
        let (write, next) = futures::future::join(
            async {
                match current {
                    Some(chunk) => write_chunk(store, &epochs, chunk).await,
                    None => Ok(()),
                }
            },
            async { generator.next_chunk() },
        )
        .await;
        write?;
        written += usize::from(had_chunk);
        match next? {
            Some(chunk) => pending = Some(chunk),
            None => break,
        }
    }

    // Last of all: from now on the seed is complete and never runs again.
    store
        .commit(&first, epoch, &Batch { locators: vec![marker], ..Batch::default() })
        .await
        .context("writing the demo seed marker")?;
    // The shard actors start next and need the shards free.
    futures::future::try_join_all(epochs.iter().map(|(s, e)| store.release_shard(s, DEMO_OWNER, *e)))
        .await
        .context("releasing the seeded shards")?;
    let r = generator.report;
    tracing::info!(
        size = %size,
        registrations = r.registrations,
        people = r.people,
        providers = r.providers,
        accepting = r.accepting,
        free_places = r.free_places,
        clinics = r.clinics,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "demo data seeded"
    );
    Ok(r)
}

/// One commit's worth of a shard, with the PHN claims its registrations need.
struct Chunk {
    shard: ShardKey,
    batch: Batch,
    /// In increasing PHN order (PHNs are handed out in order).
    claims: Vec<(Phn, PhnClaim)>,
}

/// Claims the chunk's PHNs, then commits its records: the order registration
/// uses, so a committed registration always holds its claims.
async fn write_chunk(store: &dyn Store, epochs: &HashMap<ShardKey, Epoch>, chunk: Chunk) -> anyhow::Result<()> {
    let Chunk { shard, batch, claims } = chunk;
    let epoch = epochs.get(&shard).copied().with_context(|| format!("shard {shard} was not acquired"))?;
    if !claims.is_empty() {
        let held = store.claim_phns(claims.clone()).await.with_context(|| format!("claiming PHNs in shard {shard}"))?;
        for (phn, existing) in held {
            // Held already: fine if by the very registration we write (an earlier,
            // interrupted run); anything else means the store holds other data.
            let ours = claims
                .binary_search_by_key(&phn, |(p, _)| *p)
                .ok()
                .and_then(|i| claims.get(i))
                .is_some_and(|(_, mine)| mine.shard == existing.shard && mine.holder == existing.holder);
            if !ours {
                // Never the PHN itself in the message: it may reach a log.
                bail!(
                    "a demo PHN in shard {shard} is already held by another registration or panel \
                     (in shard {}); this store holds data that is not the demo's, so the demo cannot be seeded",
                    existing.shard
                );
            }
        }
    }
    store.commit(&shard, epoch, &batch).await.with_context(|| format!("committing demo records to shard {shard}"))
}

// ---- generation ----

/// Builds the chunks, shard after shard, from the fixed seed.
struct Generator<'a> {
    communities: Vec<&'a Community>,
    plans: Vec<ShardPlan>,
    now: Timestamp,
    today: NaiveDate,
    pools: Pools,
    counters: Counters,
    /// The shard being generated and how far it got.
    current: Option<ShardCursor>,
    /// The index of the next shard to start.
    next_shard: usize,
    report: SeedReport,
}

/// Global counters: ids are unique across the whole province.
struct Counters {
    next_body: u32,
    next_registration: u64,
    next_provider: u64,
    next_clinic: u64,
}

/// One shard's generation in progress.
struct ShardCursor {
    index: usize,
    rng: StdRng,
    /// This shard's references, sorted, handed out in order.
    references: Vec<RegistrationRef>,
    done: usize,
    /// The forward sortation areas (first three characters of a postal code) of the community.
    fsas: [&'static str; 2],
    /// Providers and clinics go into the shard's first chunk.
    registry_written: bool,
}

impl<'a> Generator<'a> {
    fn new(communities: Vec<&'a Community>, plans: Vec<ShardPlan>, now: Timestamp) -> Self {
        Generator {
            communities,
            plans,
            now,
            today: now.to_utc().date_naive(),
            pools: Pools::new(),
            counters: Counters {
                next_body: DEMO_PHN_BODIES.start,
                next_registration: 0,
                next_provider: 0,
                next_clinic: 0,
            },
            current: None,
            next_shard: 0,
            report: SeedReport::default(),
        }
    }

    /// The next chunk, or `None` when every shard is done.
    fn next_chunk(&mut self) -> anyhow::Result<Option<Chunk>> {
        loop {
            let mut cursor = match self.current.take() {
                Some(cursor) => cursor,
                None => {
                    if self.next_shard >= self.communities.len() {
                        return Ok(None);
                    }
                    let cursor = self.start_shard(self.next_shard);
                    self.next_shard += 1;
                    cursor
                }
            };
            let community = self.communities[cursor.index];
            let shard = community.shard.clone();
            let mut batch = Batch::default();
            let mut claims = Vec::new();
            if !cursor.registry_written {
                cursor.registry_written = true;
                self.registry(&mut cursor, community, &mut batch)?;
            }
            let at = self.now;
            while cursor.done < cursor.references.len() && batch.upserts.len() < CHUNK {
                let reference = cursor.references[cursor.done];
                cursor.done += 1;
                let household = household(&mut cursor.rng, &mut self.counters, &self.pools, cursor.fsas, self.today)?;
                let holder = PhnClaim { shard: shard.clone(), holder: PhnHolder::Registration(reference), at };
                claims.extend(household.members.iter().map(|m| (m.phn, holder.clone())));
                self.report.registrations += 1;
                self.report.people += household.members.len() as u64;
                let registered_at = registered_at(&mut cursor.rng, self.now);
                batch.locators.push(Locator::Registration(reference));
                batch.upserts.push(Record::Registration(Registration::new(
                    reference,
                    shard.clone(),
                    household,
                    registered_at,
                )));
            }
            if cursor.done < cursor.references.len() {
                self.current = Some(cursor);
            } else {
                tracing::debug!(shard = %shard, registrations = cursor.references.len(), "demo shard generated");
            }
            if !batch.is_empty() {
                return Ok(Some(Chunk { shard, batch, claims }));
            }
        }
    }

    /// Starts shard `index`: its own generator (so each shard's data depends only
    /// on the seed and its place in the file) and its sorted references.
    fn start_shard(&mut self, index: usize) -> ShardCursor {
        let rng = StdRng::seed_from_u64(SEED ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let count = self.plans[index].registrations;
        let first = self.counters.next_registration;
        self.counters.next_registration += count;
        let mut references: Vec<RegistrationRef> = (first..first + count).map(reference).collect();
        // Key order: the store appends the shard's rows instead of scattering them.
        references.sort_unstable();
        let community = self.communities[index];
        let ha_index = self.communities[..index].iter().filter(|c| c.shard.ha == community.shard.ha).count();
        ShardCursor {
            index,
            rng,
            references,
            done: 0,
            fsas: fsas(community.shard.ha.as_str(), ha_index),
            registry_written: false,
        }
    }

    /// The shard's providers and clinics, into its first batch.
    fn registry(&mut self, cursor: &mut ShardCursor, community: &Community, batch: &mut Batch) -> anyhow::Result<()> {
        let plan = self.plans[cursor.index];
        let shard = &community.shard;
        let rng = &mut cursor.rng;
        let providers = usize::try_from(plan.providers).context("provider count fits in memory")?;
        let clinic_count = usize::try_from(plan.clinics).context("clinic count fits in memory")?;

        let mut facilities = Vec::with_capacity(clinic_count);
        for _ in 0..clinic_count {
            let n = 10_000 + self.counters.next_clinic;
            self.counters.next_clinic += 1;
            if n > 99_999 {
                bail!("the demo has more clinics than 5-digit facility numbers");
            }
            facilities
                .push(FacilityNumber::parse(&format!("{n:05}")).context("a 5-digit number is a facility number")?);
        }
        let ids = (0..providers)
            .map(|_| {
                let n = 10_000 + self.counters.next_provider;
                self.counters.next_provider += 1;
                ProviderId::parse(&format!("D{n:05}")).context("D and 5 digits is a provider id")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        // Which providers accept, and how the shard's free places split among them.
        let mut order: Vec<usize> = (0..providers).collect();
        order.shuffle(rng);
        let accepting_count = usize::try_from(plan.accepting).context("accepting count fits in memory")?.min(providers);
        let weights: Vec<u64> = (0..accepting_count).map(|_| rng.random_range(50..150)).collect();
        let places = apportion(plan.free_places, &weights);
        let mut free_of: Vec<Option<u64>> = vec![None; providers];
        for (k, &i) in order.iter().take(accepting_count).enumerate() {
            free_of[i] = Some(places[k]);
        }

        for (i, id) in ids.iter().enumerate() {
            let culture = self.pools.culture(rng);
            let kind =
                if rng.random::<f64>() < 0.12 { ProviderKind::NursePractitioner } else { ProviderKind::Physician };
            let (capacity, reported) = match free_of[i] {
                Some(free) => {
                    let reported: u32 = rng.random_range(600..1_800);
                    let free = u32::try_from(free).context("a provider's free places fit in u32")?;
                    (self.accepting_capacity(rng, reported + free, culture)?, reported)
                }
                None => {
                    let reported = if rng.random::<f64>() < 0.85 {
                        rng.random_range(1_000..=2_000)
                    } else {
                        rng.random_range(300..1_000)
                    };
                    (Capacity::closed(), reported)
                }
            };
            if capacity.accepting {
                self.report.accepting += 1;
                self.report.free_places += u64::from(capacity.desired_panel_size - reported);
            }
            let created_at = self.now.plus_ms(-rng.random_range(365..1_100) * DAY_MS);
            batch.locators.push(Locator::Provider(id.clone()));
            batch.upserts.push(Record::Provider(Provider {
                id: id.clone(),
                given_name: self.pools.given(rng, culture),
                surname: self.pools.surname(rng, culture),
                kind,
                shard: shard.clone(),
                clinics: vec![facilities[i % clinic_count.max(1)].clone()],
                capacity,
                reported_panel_size: reported,
                created_at,
                updated_at: created_at,
            }));
            self.report.providers += 1;
        }

        for (j, facility) in facilities.into_iter().enumerate() {
            let input = clinic_text(rng, community, j)?;
            batch.locators.push(Locator::Clinic(facility.clone()));
            batch.upserts.push(Record::Clinic(Clinic {
                facility,
                name: input.name,
                address: input.address,
                shard: shard.clone(),
                hours: input.hours.unwrap_or_default(),
                phone: input.phone.unwrap_or_default(),
                // Provider j is the first one practising at clinic j (providers go round the clinics).
                medical_director: ids.get(j).cloned(),
                created_at: self.now.plus_ms(-rng.random_range(1_100..4_000) * DAY_MS),
            }));
            self.report.clinics += 1;
        }
        Ok(())
    }

    /// An accepting provider's declaration: mostly open to all, some with a
    /// language offered, a complexity limit or (a few) an age restriction.
    fn accepting_capacity(&self, rng: &mut StdRng, desired: u32, culture: usize) -> anyhow::Result<Capacity> {
        let monthly_rate = rng.random_range(20..=60);
        let complexity = if rng.random::<f64>() < 0.3 {
            ComplexityMix::new(rng.random_range(20..=60))?
        } else {
            ComplexityMix::default()
        };
        let languages = if culture != 0 || rng.random::<f64>() < 0.1 {
            let other = if culture != 0 { culture } else { rng.random_range(1..CULTURES.len()) };
            vec![self.pools.languages[0], self.pools.languages[other]]
        } else {
            Vec::new()
        };
        let roll = rng.random::<f64>();
        let age_groups: BTreeSet<AgeGroup> = if roll < 0.03 {
            [AgeGroup::Adult, AgeGroup::Senior].into()
        } else if roll < 0.05 {
            [AgeGroup::Child, AgeGroup::Adult].into()
        } else {
            BTreeSet::new()
        };
        Ok(Capacity::new(true, monthly_rate, desired, complexity, languages, age_groups)?)
    }
}

/// The registration reference of the `n`th demo household. A bijection of `n`
/// onto 60 bits, so references are unique by construction and look random.
fn reference(n: u64) -> RegistrationRef {
    let bits = scramble(n);
    let mut bytes = [0u8; 12];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = ((bits >> (5 * i)) & 31) as u8;
    }
    RegistrationRef::from_entropy(bytes)
}

/// An invertible mix of the low 60 bits: odd multipliers and xor-shifts are each
/// bijective modulo 2^60.
fn scramble(n: u64) -> u64 {
    const MASK: u64 = (1 << 60) - 1;
    let mut x = (n ^ SEED) & MASK;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK;
    x ^= x >> 29;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB) & MASK;
    x ^= x >> 32;
    x
}

/// When a household joined: within the last three years, more of them recently
/// (the older part of a waitlist has been attached over time).
fn registered_at(rng: &mut StdRng, now: Timestamp) -> Timestamp {
    const SPAN_MS: f64 = 3.0 * 365.0 * DAY_MS as f64;
    let ago = (rng.random::<f64>().powf(1.3) * SPAN_MS) as i64;
    now.plus_ms(-ago.max(60_000))
}

/// One household: its size, ages, names, needs, languages and postal code.
fn household(
    rng: &mut StdRng,
    counters: &mut Counters,
    pools: &Pools,
    fsas: [&str; 2],
    today: NaiveDate,
) -> anyhow::Result<Household> {
    let size = pick(rng, &[(1, 60), (2, 22), (3, 10), (4, 6), (5, 2)]);
    let mut ages: Vec<u32> = Vec::with_capacity(size);
    match size {
        1 => ages.push(adult_age(rng)),
        2 if rng.random::<f64>() < 0.75 => {
            let a = adult_age(rng);
            ages.push(a);
            ages.push(a.saturating_add_signed(rng.random_range(-6..=6)).max(18));
        }
        _ => {
            // A family: one or two parents and children born when the parents were adults.
            let parent = rng.random_range(24..=52);
            ages.push(parent);
            let two_parents = size >= 3 && rng.random::<f64>() < 0.8;
            if two_parents {
                ages.push(parent.saturating_add_signed(rng.random_range(-4..=4)));
            }
            while ages.len() < size {
                ages.push(rng.random_range(1..=(parent - 18).min(17)));
            }
        }
    }
    let adults = ages.iter().filter(|a| **a >= 18).count();

    // About a quarter of households report a need, carried by one member.
    let mut need: Option<(usize, Need)> = None;
    if rng.random::<f64>() < 0.25 {
        if adults < ages.len() && rng.random::<f64>() < 0.3 {
            // A baby: the youngest child is under a year old.
            let last = ages.len() - 1;
            ages[last] = 0;
            need = Some((last, Need::Newborn));
        } else {
            let who = rng.random_range(0..ages.len());
            need = Some((who, need_for_age(rng, ages[who])));
        }
    }

    let culture = pools.culture(rng);
    let surname = pools.surname(rng, culture);
    let mut members = Vec::with_capacity(size);
    for (i, &age) in ages.iter().enumerate() {
        // A partner keeps their own surname now and then; children take the first.
        let own_surname = if i == 1 && age >= 18 && rng.random::<f64>() < 0.3 {
            pools.surname(rng, culture)
        } else {
            surname.clone()
        };
        let days = if age == 0 {
            rng.random_range(0..360)
        } else {
            u64::from(age) * 365 + u64::from(age / 4) + rng.random_range(0..365)
        };
        let born = today.checked_sub_days(Days::new(days)).context("a demo birth date is a real date")?;
        members.push(Member {
            phn: next_phn(counters)?,
            given_name: pools.given(rng, culture),
            surname: own_surname,
            date_of_birth: DateOfBirth::from_date(born, today)?,
            needs: match need {
                Some((who, n)) if who == i => [n].into(),
                _ => BTreeSet::new(),
            },
        });
    }
    let languages = pools.household_languages(rng, culture);
    let postal = PostalCode::parse(&format!(
        "{}{}{}{}",
        fsas[rng.random_range(0..2)],
        rng.random_range(0..10),
        char::from(POSTAL_LETTERS[rng.random_range(0..POSTAL_LETTERS.len())]),
        rng.random_range(0..10)
    ))?;
    Ok(Household::new(members, postal, languages)?)
}

/// A lone adult's age: mostly working age, a sixth seniors.
fn adult_age(rng: &mut StdRng) -> u32 {
    match pick(rng, &[(0, 35), (1, 35), (2, 12), (3, 18)]) {
        0 => rng.random_range(18..35),
        1 => rng.random_range(35..55),
        2 => rng.random_range(55..65),
        _ => rng.random_range(65..96),
    }
}

/// A need plausible at `age` (pregnancy only between 18 and 44; never a newborn
/// here, babies are made by the caller).
fn need_for_age(rng: &mut StdRng, age: u32) -> Need {
    let table: &[(Need, u32)] = match age {
        0..=17 => &[(Need::MentalHealth, 50), (Need::ChronicComplex, 40), (Need::RecentDischarge, 10)],
        18..=44 => {
            &[(Need::Pregnancy, 25), (Need::MentalHealth, 35), (Need::ChronicComplex, 25), (Need::RecentDischarge, 15)]
        }
        45..=64 => &[
            (Need::ChronicComplex, 45),
            (Need::MentalHealth, 25),
            (Need::RecentDischarge, 20),
            (Need::Frailty, 5),
            (Need::Palliative, 5),
        ],
        _ => &[
            (Need::Frailty, 35),
            (Need::ChronicComplex, 35),
            (Need::RecentDischarge, 15),
            (Need::Palliative, 10),
            (Need::MentalHealth, 5),
        ],
    };
    pick(rng, table)
}

/// The next demo PHN, skipping bodies that have no check digit.
fn next_phn(counters: &mut Counters) -> anyhow::Result<Phn> {
    while counters.next_body < DEMO_PHN_BODIES.end {
        let body = counters.next_body;
        counters.next_body += 1;
        if let Some(phn) = Phn::with_body(body) {
            return Ok(phn);
        }
    }
    bail!("the demo ran out of PHNs in its range")
}

/// A weighted choice. Weights are positive; the table is not empty.
fn pick<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (value, weight) in table {
        if roll < *weight {
            return *value;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

/// A clinic's name, address, hours and phone, checked as registry input.
fn clinic_text(rng: &mut StdRng, community: &Community, j: usize) -> anyhow::Result<ClinicInput> {
    const STREETS: [&str; 12] = [
        "Main St",
        "Oak St",
        "Cedar Ave",
        "1st Ave",
        "Maple Rd",
        "Hillside Ave",
        "Douglas St",
        "Columbia St",
        "Lakeshore Dr",
        "Victoria St",
        "Railway Ave",
        "Park Rd",
    ];
    const KINDS: [&str; 5] =
        ["Family Practice", "Medical Clinic", "Health Centre", "Family Medicine", "Primary Care Clinic"];
    const HOURS: [&str; 4] = [
        "Mon-Fri 8:30-17:00",
        "Mon-Fri 9:00-17:00, Sat 9:00-12:00",
        "Mon-Thu 8:00-18:00, Fri 8:00-16:00",
        "Mon-Fri 9:00-16:30",
    ];
    let street = STREETS[rng.random_range(0..STREETS.len())];
    let kind = KINDS[(j + rng.random_range(0..KINDS.len())) % KINDS.len()];
    // Numbered so that two clinics of a community never share a name.
    let name =
        if j == 0 { format!("{} {kind}", community.name) } else { format!("{} {kind} {}", community.name, j + 1) };
    let address = format!("{} {street}, {}, BC", rng.random_range(10..3_000), community.name);
    let area = if matches!(community.shard.ha.as_str(), "VCHA" | "FHA") { "604" } else { "250" };
    // 555-01xx numbers are reserved for fiction.
    let phone = format!("{area}-555-01{:02}", rng.random_range(0..100));
    Ok(ClinicInput::parse(&name, &address, Some(HOURS[rng.random_range(0..HOURS.len())]), Some(&phone))?)
}

/// Letters Canada Post uses inside a postal code.
const POSTAL_LETTERS: &[u8] = b"ABCEGHJKLMNPRSTVWXYZ";

/// Two forward sortation areas for the `k`th community of a health authority,
/// from the authority's real ones (BC codes all start with V; V0 is rural).
fn fsas(ha: &str, k: usize) -> [&'static str; 2] {
    let list: &[&'static str] = match ha {
        "VIHA" => &[
            "V8N", "V8P", "V8R", "V8S", "V8T", "V8V", "V8W", "V8X", "V8Z", "V9A", "V9B", "V9C", "V9E", "V9G", "V9K",
            "V9L", "V9M", "V9N", "V9P", "V9R", "V9S", "V9T", "V9V", "V9W", "V9Y", "V9Z", "V0R", "V0P",
        ],
        "VCHA" => &[
            "V5K", "V5L", "V5M", "V5N", "V5P", "V5R", "V5S", "V5T", "V5V", "V5W", "V5X", "V5Y", "V5Z", "V6A", "V6B",
            "V6E", "V6G", "V6H", "V6J", "V6K", "V6M", "V6N", "V6P", "V6R", "V6S", "V6X", "V6Y", "V7A", "V7C", "V7E",
            "V7G", "V7J", "V7L", "V7M", "V7N", "V7P", "V7R", "V7S", "V7T", "V7V", "V7W", "V0N",
        ],
        "FHA" => &[
            "V2P", "V2R", "V2S", "V2T", "V2V", "V2W", "V2X", "V2Y", "V2Z", "V3A", "V3B", "V3C", "V3E", "V3H", "V3J",
            "V3K", "V3L", "V3M", "V3N", "V3R", "V3S", "V3T", "V3V", "V3W", "V3X", "V3Y", "V3Z", "V4A", "V4B", "V4C",
            "V4E", "V4K", "V4L", "V4M", "V4N", "V4P", "V4R", "V4S", "V4W", "V4X", "V5A", "V5B", "V5C", "V5E", "V5G",
            "V5H", "V5J", "V0M", "V0X",
        ],
        "IHA" => &[
            "V1A", "V1B", "V1C", "V1E", "V1H", "V1K", "V1L", "V1N", "V1P", "V1R", "V1S", "V1T", "V1V", "V1W", "V1X",
            "V1Y", "V1Z", "V2A", "V2B", "V2C", "V2E", "V2G", "V2H", "V0A", "V0B", "V0E", "V0G", "V0H", "V0K",
        ],
        "NHA" => &["V1G", "V1J", "V2J", "V2K", "V2L", "V2M", "V2N", "V8G", "V8J", "V0C", "V0J", "V0T", "V0V"],
        _ => &["V0A", "V0B", "V0C", "V0E", "V0G", "V0H", "V0J", "V0K", "V0L", "V0M", "V0N", "V0P", "V0R", "V0S", "V0T"],
    };
    [list[(2 * k) % list.len()], list[(2 * k + 1) % list.len()]]
}

/// Names and languages of one cultural group. Index 0 is the general (English) one.
struct Culture {
    language: &'static str,
    /// Share of households, in tenths of a percent.
    weight: u32,
    /// Given names, comma-separated (a string, so the list stays compact).
    given: &'static str,
    /// Surnames, comma-separated.
    surnames: &'static str,
}

/// Households mostly English-speaking, with BC's larger other language communities.
const CULTURES: [Culture; 8] = [
    Culture {
        language: "en",
        weight: 780,
        given: "Olivia,Emma,Liam,Noah,Ava,Lucas,Charlotte,Ethan,Amelia,Benjamin,Sophia,Jack,Chloe,Owen,Hannah,William,\
            Grace,James,Ella,Logan,Maya,Nathan,Zoe,Ryan,Emily,Daniel,Sarah,Michael,Jessica,David,Karen,Robert,\
            Linda,John,Susan,Brian,Heather,Kevin,Megan,Tyler,Dakota,Aiyana",
        surnames: "Smith,Brown,Wilson,Taylor,Campbell,Anderson,Thompson,MacDonald,Johnson,Williams,Martin,Clark,\
            Robinson,Stewart,Walker,Young,Scott,Mitchell,Reid,Ross,O'Brien,Fraser,Morrison,Paul,Harris,Murray,Graham,\
            Jack,Wells,Hunter",
    },
    Culture {
        language: "fr",
        weight: 40,
        given: "Émilie,Louis,Gabriel,Chloé,Mathieu,Julie,Antoine,Camille,Luc,Sophie,Étienne,Manon",
        surnames: "Tremblay,Gagnon,Roy,Côté,Bouchard,Gauthier,Morin,Lavoie,Fortin,Pelletier,Bélanger",
    },
    Culture {
        language: "pa",
        weight: 55,
        given: "Harpreet,Gurpreet,Manpreet,Jaspreet,Amandeep,Navdeep,Simran,Arjun,Harjit,Baljit,Rajinder,Parminder",
        surnames: "Singh,Kaur,Gill,Sandhu,Dhaliwal,Grewal,Sidhu,Brar,Johal,Bains",
    },
    Culture {
        language: "zh",
        weight: 55,
        given: "Wei,Jing,Li Na,Hao,Mei,Jun,Xiaoming,Yan,Lei,Ying,Hui,Bo",
        surnames: "Wang,Li,Zhang,Liu,Chen,Yang,Huang,Zhao,Wu,Zhou,Lin,Wong",
    },
    Culture {
        language: "tl",
        weight: 25,
        given: "Maria,Jose,Angelica,Mark,Kristine,Joseph,Rowena,Jerome,Jasmine,Paolo,Rodel,Aileen",
        surnames: "Santos,Reyes,Cruz,Bautista,Garcia,Mendoza,Dela Cruz,Ramos,Aquino,Villanueva",
    },
    Culture {
        language: "fa",
        weight: 20,
        given: "Ali,Reza,Maryam,Sara,Mohammad,Fatemeh,Amir,Zahra,Parisa,Hossein,Niloufar,Dariush",
        surnames: "Ahmadi,Hosseini,Mohammadi,Rezaei,Karimi,Moradi,Jafari,Rahimi,Sadeghi,Kazemi",
    },
    Culture {
        language: "ko",
        weight: 12,
        given: "Min-jun,Seo-yeon,Ji-hoon,Ji-woo,Hyun-woo,Soo-ah,Dong-hyun,Eun-ji,Jae-won,Ha-eun",
        surnames: "Kim,Lee,Park,Choi,Jung,Kang,Cho,Yoon,Jang,Lim",
    },
    Culture {
        language: "vi",
        weight: 13,
        given: "Anh,Minh,Linh,Huy,Thao,Quang,Lan,Duc,Mai,Tuan,Hoa,Khanh",
        surnames: "Nguyễn,Trần,Lê,Phạm,Hoàng,Phan,Vũ,Đặng,Bùi,Đỗ",
    },
];

/// [`CULTURES`] parsed once into domain values, so each person costs a clone,
/// not a parse.
struct Pools {
    given: Vec<Vec<PersonName>>,
    surnames: Vec<Vec<PersonName>>,
    languages: Vec<Language>,
    weights: Vec<(usize, u32)>,
}

impl Pools {
    fn new() -> Self {
        let names = |list: &str| {
            list.split(',')
                .map(|n| PersonName::parse(n).expect("the demo's name lists hold valid names (a test checks them)"))
                .collect::<Vec<_>>()
        };
        Pools {
            given: CULTURES.iter().map(|c| names(c.given)).collect(),
            surnames: CULTURES.iter().map(|c| names(c.surnames)).collect(),
            languages: CULTURES
                .iter()
                .map(|c| Language::parse(c.language).expect("the demo's language codes are valid (a test checks them)"))
                .collect(),
            weights: CULTURES.iter().enumerate().map(|(i, c)| (i, c.weight)).collect(),
        }
    }

    fn culture(&self, rng: &mut StdRng) -> usize {
        pick(rng, &self.weights)
    }

    fn given(&self, rng: &mut StdRng, culture: usize) -> PersonName {
        let list = &self.given[culture];
        list[rng.random_range(0..list.len())].clone()
    }

    fn surname(&self, rng: &mut StdRng, culture: usize) -> PersonName {
        let list = &self.surnames[culture];
        list[rng.random_range(0..list.len())].clone()
    }

    /// English alone for most; others their language, usually with English as well.
    fn household_languages(&self, rng: &mut StdRng, culture: usize) -> Vec<Language> {
        if culture == 0 {
            vec![self.languages[0]]
        } else if rng.random::<f64>() < 0.7 {
            vec![self.languages[culture], self.languages[0]]
        } else {
            vec![self.languages[culture]]
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::domain::{DAY_MS, RegistrationStatus};
    use crate::shard::state::ShardState;
    use crate::store::RecordKey;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    fn bc() -> Regions {
        Regions::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml")).unwrap()
    }

    fn now() -> Timestamp {
        // 2026-11-24T12:00:00Z
        Timestamp(1_795_521_600_000)
    }

    fn fresh() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap();
        (dir, store)
    }

    fn populations(r: &Regions) -> Vec<u64> {
        r.communities().map(|c| c.population).collect()
    }

    #[test]
    fn the_seed_future_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let (_dir, store) = fresh();
        let r = bc();
        send(&seed(&store, &r, DemoSize::Small, now()));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("small".parse::<DemoSize>(), Ok(DemoSize::Small));
        assert_eq!(" Province ".parse::<DemoSize>(), Ok(DemoSize::Province));
        assert!("huge".parse::<DemoSize>().is_err());
        for s in [DemoSize::Small, DemoSize::Province] {
            assert_eq!(s.to_string().parse::<DemoSize>(), Ok(s));
        }
    }

    #[test]
    fn apportion_is_exact_and_proportional() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[0, 2, 0, 5]), vec![0, 2, 0, 5]);
        assert_eq!(apportion(5, &[0, 0]), vec![3, 2]);
        assert_eq!(apportion(5, &[]), Vec::<u64>::new());
        let weights = [745, 19_008, 595_200, 3, 1];
        let parts = apportion(1_000_000, &weights);
        assert_eq!(parts.iter().sum::<u64>(), 1_000_000);
        let total: u64 = weights.iter().sum();
        for (p, w) in parts.iter().zip(weights) {
            let quota = 1_000_000.0 * w as f64 / total as f64;
            assert!((*p as f64 - quota).abs() < 1.0, "{p} vs {quota}");
        }
    }

    #[test]
    fn the_province_plan_has_design_scale() {
        let r = bc();
        let plans = plan(&populations(&r), DemoSize::Province);
        assert_eq!(plans.len(), 89);
        let sum = |f: fn(&ShardPlan) -> u64| plans.iter().map(f).sum::<u64>();
        assert_eq!(sum(|p| p.registrations), 1_000_000);
        assert_eq!(sum(|p| p.providers), 4_000);
        assert_eq!(sum(|p| p.accepting), 800);
        assert_eq!(sum(|p| p.free_places), 170_000);
        let clinics = sum(|p| p.clinics);
        assert!((1_000..1_100).contains(&clinics), "about one clinic per four providers, got {clinics}");
        for p in &plans {
            assert!(p.accepting <= p.providers, "{p:?}");
            assert_eq!(p.free_places == 0, p.accepting == 0, "{p:?}");
            assert!(p.registrations > 0, "every community has a waitlist: {p:?}");
            if p.accepting > 0 {
                let each = p.free_places as f64 / p.accepting as f64;
                assert!((150.0..280.0).contains(&each), "about 212 places each: {p:?}");
            }
        }
        // Proportional to population: the biggest community gets its share.
        let pops = populations(&r);
        let (i, biggest) = pops.iter().enumerate().max_by_key(|(_, p)| **p).unwrap();
        let quota = 1_000_000.0 * *biggest as f64 / r.population() as f64;
        assert!((plans[i].registrations as f64 - quota).abs() < 1.0);
    }

    #[test]
    fn the_small_plan_is_the_same_shape_scaled_down() {
        let plans = plan(&populations(&bc()), DemoSize::Small);
        let sum = |f: fn(&ShardPlan) -> u64| plans.iter().map(f).sum::<u64>();
        assert_eq!(sum(|p| p.registrations), 2_000);
        assert_eq!(sum(|p| p.providers), 60);
        assert_eq!(sum(|p| p.accepting), 15);
        assert_eq!(sum(|p| p.free_places), 400);
        assert!(plans.iter().filter(|p| p.registrations > 0).count() > 80, "almost every community has a waitlist");
        assert!(plans.iter().all(|p| p.accepting <= p.providers));
    }

    #[test]
    fn references_are_unique_and_fixed() {
        let refs: HashSet<_> = (0..200_000).map(reference).collect();
        assert_eq!(refs.len(), 200_000);
        assert_eq!(reference(7), reference(7));
        for r in refs.iter().take(100) {
            assert_eq!(RegistrationRef::parse(r.as_str()).as_ref(), Ok(r));
        }
    }

    #[test]
    fn name_lists_languages_and_postal_areas_are_valid() {
        let pools = Pools::new();
        assert_eq!(pools.languages.len(), CULTURES.len());
        for (i, c) in CULTURES.iter().enumerate() {
            for list in [c.given, c.surnames] {
                // Exactly as written: no name loses a space to the continuation lines.
                assert!(list.split(',').all(|n| !n.is_empty() && n.trim() == n), "{list}");
            }
            assert!(pools.given[i].len() >= 10 && pools.surnames[i].len() >= 10, "{}", c.language);
        }
        assert_eq!(CULTURES.iter().map(|c| c.weight).sum::<u32>(), 1_000);
        for ha in ["VIHA", "VCHA", "FHA", "IHA", "NHA", "OTHER"] {
            for k in 0..60 {
                for fsa in fsas(ha, k) {
                    for ldu in ["0A0", "9Z9"] {
                        assert!(PostalCode::parse(&format!("{fsa}{ldu}")).is_ok(), "{fsa}");
                    }
                }
            }
        }
        for c in POSTAL_LETTERS {
            assert!(PostalCode::parse(&format!("V8W1{}1", char::from(*c))).is_ok());
        }
    }

    /// Checks every record of every shard against the domain rules, its locator
    /// and its PHN claims, and that the totals are the report's.
    async fn check_store(store: &EmbeddedStore, r: &Regions, report: &SeedReport) {
        let today = now().to_utc().date_naive();
        let mut phns = HashSet::new();
        let (mut regs, mut people, mut providers, mut accepting, mut places, mut clinics) = (0, 0, 0, 0, 0, 0);
        let mut with_need = 0;
        for shard in r.shards() {
            let image = store.load_shard(shard).await.unwrap();
            assert_eq!(image.last_seq, 0, "the demo writes no events");
            let mut state = ShardState::new(shard.clone());
            for record in &image.records {
                let locator = match record {
                    Record::Registration(reg) => {
                        assert_eq!(&reg.shard, shard);
                        assert_eq!(reg.status, RegistrationStatus::Waiting);
                        assert!(reg.registered_at < now() && reg.registered_at.0 > now().0 - 3 * 366 * DAY_MS);
                        let h = &reg.household;
                        assert!((1..=5).contains(&h.members.len()));
                        assert_eq!(PostalCode::parse(h.postal_code.as_str()).as_ref(), Ok(&h.postal_code));
                        assert!(h.postal_code.as_str().starts_with('V'));
                        assert!(!h.languages.is_empty());
                        for l in &h.languages {
                            assert_eq!(Language::parse(l.as_str()).as_ref(), Ok(l));
                        }
                        assert!(Household::new(h.members.clone(), h.postal_code, h.languages.clone()).is_ok());
                        if !h.needs().is_empty() {
                            with_need += 1;
                        }
                        for m in &h.members {
                            assert!(phns.insert(m.phn), "PHNs are unique across the province");
                            assert_eq!(Phn::parse(&m.phn.expose()), Ok(m.phn));
                            assert_eq!(PersonName::parse(m.given_name.as_str()).as_ref(), Ok(&m.given_name));
                            assert_eq!(PersonName::parse(m.surname.as_str()).as_ref(), Ok(&m.surname));
                            assert!(DateOfBirth::from_date(m.date_of_birth.date(), today).is_ok());
                            let age = m.date_of_birth.age_on(today);
                            if m.needs.contains(&Need::Pregnancy) {
                                assert!((18..=45).contains(&age), "pregnant at {age}");
                            }
                            if m.needs.contains(&Need::Newborn) {
                                assert_eq!(age, 0);
                            }
                            let claim = store.phn_claim(m.phn).await.unwrap().expect("every member's PHN is claimed");
                            assert_eq!(&claim.shard, shard);
                            assert_eq!(claim.holder, PhnHolder::Registration(reg.reference));
                        }
                        regs += 1;
                        people += h.members.len() as u64;
                        Locator::Registration(reg.reference)
                    }
                    Record::Provider(p) => {
                        assert_eq!(ProviderId::parse(p.id.as_str()).as_ref(), Ok(&p.id));
                        assert_eq!(PersonName::parse(p.given_name.as_str()).as_ref(), Ok(&p.given_name));
                        assert_eq!(PersonName::parse(p.surname.as_str()).as_ref(), Ok(&p.surname));
                        let c = &p.capacity;
                        assert_eq!(
                            Capacity::new(
                                c.accepting,
                                c.monthly_rate,
                                c.desired_panel_size,
                                c.complexity,
                                c.languages.clone(),
                                c.age_groups.clone()
                            )
                            .as_ref(),
                            Ok(c)
                        );
                        assert!(p.reported_panel_size >= 300 && p.reported_panel_size <= 2_000);
                        assert_eq!(p.clinics.len(), 1);
                        let clinic = store.read(shard, &RecordKey::Clinic(p.clinics[0].clone())).await.unwrap();
                        assert!(matches!(clinic, Some(Record::Clinic(_))), "a provider's clinic is in its community");
                        if c.accepting {
                            assert!((20..=60).contains(&c.monthly_rate));
                            accepting += 1;
                            places += u64::from(c.desired_panel_size - p.reported_panel_size);
                        }
                        providers += 1;
                        Locator::Provider(p.id.clone())
                    }
                    Record::Clinic(c) => {
                        assert_eq!(FacilityNumber::parse(c.facility.as_str()).as_ref(), Ok(&c.facility));
                        let input = ClinicInput::parse(&c.name, &c.address, Some(&c.hours), Some(&c.phone)).unwrap();
                        assert_eq!((input.name, input.address), (c.name.clone(), c.address.clone()));
                        let director = c.medical_director.clone().expect("every clinic has a medical director");
                        match store.read(shard, &RecordKey::Provider(director)).await.unwrap() {
                            Some(Record::Provider(p)) => {
                                assert!(p.clinics.contains(&c.facility), "the director practises there")
                            }
                            other => panic!("the director is a provider of the shard: {other:?}"),
                        }
                        clinics += 1;
                        Locator::Clinic(c.facility.clone())
                    }
                    other => panic!("the demo writes no {other:?}"),
                };
                assert_eq!(store.locate(&locator).await.unwrap().as_ref(), Some(shard), "{locator:?}");
            }
            state.apply(image.records, &[]);
            let waiting = state.tally(RegistrationStatus::Waiting);
            assert_eq!(waiting.households, state.registrations().count() as u64);
            assert_eq!(state.waitlist_after(None).count() as u64, waiting.households);
        }
        assert_eq!(
            *report,
            SeedReport {
                already_seeded: false,
                registrations: regs,
                people,
                providers,
                accepting,
                free_places: places,
                clinics
            }
        );
        let share = with_need as f64 / regs as f64;
        assert!((0.2..0.3).contains(&share), "about a quarter of households have a need: {share}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeds_small_once_with_valid_records() {
        let r = bc();
        let (_dir, store) = fresh();
        let report = seed(&store, &r, DemoSize::Small, now()).await.unwrap();
        assert!(!report.already_seeded);
        assert_eq!(report.registrations, 2_000);
        assert_eq!(report.providers, 60);
        assert_eq!(report.accepting, 15);
        assert_eq!(report.free_places, 400);
        assert!((15..=40).contains(&report.clinics), "{report:?}");
        assert!((3_000..3_800).contains(&report.people), "about 1.7 people per household: {report:?}");
        check_store(&store, &r, &report).await;

        // Loading the shards gives the same totals the report promised.
        let (mut waiting, mut people, mut free_now) = (0, 0, 0u64);
        for shard in r.shards() {
            let mut state = ShardState::new(shard.clone());
            state.apply(store.load_shard(shard).await.unwrap().records, &[]);
            let t = state.tally(RegistrationStatus::Waiting);
            waiting += t.households;
            people += t.people;
            free_now += state.providers().map(|p| u64::from(state.free_places(p, now()))).sum::<u64>();
        }
        assert_eq!((waiting, people), (report.registrations, report.people));
        assert!(free_now > 0 && free_now <= report.free_places, "monthly rates cap what is free now: {free_now}");

        let marker = Locator::Provider(ProviderId::parse(SEED_MARKER).unwrap());
        assert_eq!(store.locate(&marker).await.unwrap().as_ref(), r.shards().next());
        let before = store.write_stats();
        let again = seed(&store, &r, DemoSize::Small, now()).await.unwrap();
        assert_eq!(again, SeedReport { already_seeded: true, ..SeedReport::default() });
        assert_eq!(store.write_stats(), before, "a second seed writes nothing");
        let province = seed(&store, &r, DemoSize::Province, now()).await.unwrap();
        assert!(province.already_seeded, "whatever size was seeded first stays");
    }

    /// Every record of every shard, in key order, for comparing two stores.
    async fn dump(store: &EmbeddedStore, r: &Regions) -> Vec<Record> {
        let mut all = Vec::new();
        for shard in r.shards() {
            let mut records = store.load_shard(shard).await.unwrap().records;
            records.sort_by_key(Record::key);
            all.extend(records);
        }
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rerun_after_a_crash_finishes_the_same_seed() {
        let r = bc();
        let (_dir, store) = fresh();
        // A crash after three chunks (shards) were written: no marker yet.
        let partial = seed_until(&store, &r, DemoSize::Small, now(), Some(3)).await.unwrap();
        assert!(partial.registrations > 0 && partial.registrations < 2_000);
        let marker = Locator::Provider(ProviderId::parse(SEED_MARKER).unwrap());
        assert_eq!(store.locate(&marker).await.unwrap(), None);

        // Restarted an hour later: the same references and PHNs, claims found held by them.
        let later = now().plus_ms(3_600_000);
        let report = seed(&store, &r, DemoSize::Small, later).await.unwrap();
        assert!(!report.already_seeded);
        assert_eq!(report.registrations, 2_000);

        let (_dir2, clean) = fresh();
        let clean_report = seed(&clean, &r, DemoSize::Small, later).await.unwrap();
        assert_eq!(report, clean_report);
        assert!(dump(&store, &r).await == dump(&clean, &r).await, "a re-run leaves exactly what one clean run does");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demo_phn_held_by_someone_else_stops_the_seed() {
        let r = bc();
        let (_dir, store) = fresh();
        let phn = (DEMO_PHN_BODIES.start..).find_map(Phn::with_body).unwrap();
        let other = PhnClaim {
            shard: r.shards().next().unwrap().clone(),
            holder: PhnHolder::Panel(ProviderId::parse("P12345").unwrap()),
            at: now(),
        };
        assert_eq!(store.claim_phns(vec![(phn, other)]).await.unwrap(), vec![]);
        let err = seed(&store, &r, DemoSize::Small, now()).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("already held"), "{text}");
        assert!(!text.contains(&phn.expose()), "the PHN never appears in an error");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_a_server_has_run_on_is_not_seeded() {
        let r = bc();
        let (_dir, store) = fresh();
        // A server ran on it (and perhaps registered someone).
        let shard = r.shards().next().unwrap().clone();
        let epoch = store.acquire_shard(&shard, "node-1").await.unwrap();
        store.release_shard(&shard, "node-1", epoch).await.unwrap();
        let err = seed(&store, &r, DemoSize::Small, now()).await.unwrap_err();
        assert!(format!("{err:#}").contains("already holds data"), "{err:#}");
        let marker = Locator::Provider(ProviderId::parse(SEED_MARKER).unwrap());
        assert_eq!(store.locate(&marker).await.unwrap(), None, "nothing was written");
        assert_eq!(store.held_shards().await.unwrap(), vec![shard], "no shard was taken");
    }

    /// Seeds the whole province and reports how long it took. Run with
    /// `cargo test --release -p attach-actors demo -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "writes a million households; a timing run, not a unit test"]
    async fn province_seed_timing() {
        let r = bc();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("attach.redb"), EmbeddedOptions::default()).unwrap());
        let started = std::time::Instant::now();
        let report = seed(store.as_ref(), &r, DemoSize::Province, Timestamp::now()).await.unwrap();
        let seeded = started.elapsed();
        let size = std::fs::metadata(dir.path().join("attach.redb")).map(|m| m.len()).unwrap_or(0);
        println!("province seed: {report:?} in {seeded:?}, file {} MB, {:?}", size / 1_000_000, store.write_stats());
        assert_eq!(report.registrations, 1_000_000);
        assert_eq!(report.providers, 4_000);
        assert_eq!(report.accepting, 800);
        assert_eq!(report.free_places, 170_000);

        let started = std::time::Instant::now();
        let mut waiting = 0;
        for shard in r.shards() {
            let mut state = ShardState::new(shard.clone());
            state.apply(store.load_shard(shard).await.unwrap().records, &[]);
            waiting += state.tally(RegistrationStatus::Waiting).households;
        }
        println!("loading every shard: {:?}", started.elapsed());
        assert_eq!(waiting, 1_000_000);
    }
}

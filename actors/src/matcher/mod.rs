//! The matcher: fills accepting providers' free places with waiting households.
//!
//! Pure and deterministic: the same candidates, openings, policy and `now` give
//! the same placements. Priority is time waited (one point a day) raised by
//! clinical need as the [`Policy`] says, never by anything a provider could use
//! to cherry-pick. A household is placed whole or not at all. Every placement
//! carries the explanation of its score and of the provider chosen.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::{AgeGroup, Language, Need, ProviderId, RegistrationRef, ScoreExplanation, Timestamp};

mod assign;
pub mod optimal;
mod score;
#[cfg(test)]
mod tests;

use assign::Board;
use score::Bonuses;

/// Whether a preference rules a provider out (`Hard`), only ranks providers (`Soft`), or is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceRule {
    /// A provider that does not meet it is not eligible.
    Hard,
    /// Providers that meet it are preferred.
    Soft,
    /// Not considered.
    Ignore,
}

/// Matching policy, from configuration. A key it does not have is refused: a
/// misspelt `spill_km` would otherwise leave spill-over off without a word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Extra priority, in days of waiting, for each need a household reports
    /// (each need counts once per household).
    #[serde(deserialize_with = "need_bonus_days")]
    pub need_bonus_days: BTreeMap<Need, u32>,
    /// How a shared language between household and provider counts.
    pub language: PreferenceRule,
    /// How a provider's accepted age groups count.
    pub age_groups: PreferenceRule,
    /// Spill-over: households still waiting after their community's matching
    /// are proposed to providers with free places in communities whose centres
    /// lie within this many kilometres, nearest first. 0 (the default) keeps
    /// matching within each community.
    pub spill_km: u32,
    /// How long, in days, a run does not offer a household again to a provider
    /// after a no (a decline by either side, or a return): 0 (the default)
    /// for good. A coordinator's own proposal may always.
    pub pass_over_days: u32,
}

/// Reads `need_bonus_days` as configuration gives it. A need may be named as
/// the enum is (`Pregnancy`, how the defaults are written), as the API does
/// (`PREGNANCY`) or in snake case (`pregnancy`, what an `ATTACH_*` variable's
/// key becomes). Configuration merges the defaults, a file and the environment
/// key by key, so one need named two ways sits twice, and which came last
/// depended on how the spellings sort (`PREGNANCY = 1000` in a file was
/// ignored). So the spelling decides: the environment's over the API's (a
/// file's), and either over the enum's (the defaults').
fn need_bonus_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<Need, u32>, D::Error> {
    let given = BTreeMap::<String, u32>::deserialize(d)?;
    let need = |key: &str| Need::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(key));
    let mut ranked = Vec::with_capacity(given.len());
    for (key, days) in &given {
        let n = need(key)?;
        let rank = if format!("{n:?}") == *key {
            0
        } else if key.chars().any(|c| c.is_ascii_lowercase()) {
            2
        } else {
            1
        };
        ranked.push((rank, n, *days));
    }
    ranked.sort_by_key(|(rank, _, _)| *rank);
    Ok(ranked.into_iter().map(|(_, n, days)| (n, days)).collect())
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            need_bonus_days: BTreeMap::from([
                (Need::Pregnancy, 90),
                (Need::Newborn, 120),
                (Need::Frailty, 60),
                (Need::RecentDischarge, 60),
                (Need::ChronicComplex, 30),
                (Need::MentalHealth, 30),
                (Need::Palliative, 180),
            ]),
            language: PreferenceRule::Soft,
            age_groups: PreferenceRule::Hard,
            spill_km: 0,
            pass_over_days: 0,
        }
    }
}

/// A waiting household, as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its registration.
    pub reference: RegistrationRef,
    /// Its place in line.
    pub registered_at: Timestamp,
    /// People in the household: the places it takes.
    pub size: u8,
    /// Needs reported by any member.
    pub needs: BTreeSet<Need>,
    /// Whether any member has a complex need.
    pub complex: bool,
    /// The members' age groups.
    pub age_groups: BTreeSet<AgeGroup>,
    /// Languages the household can be cared for in.
    pub languages: Vec<Language>,
    /// Providers a run does not propose it to again: a match with them fell
    /// through because someone said no (declined by either side, or returned
    /// after acceptance). A coordinator's own choice ([`assess`]) may still.
    pub passed: Vec<ProviderId>,
}

/// An accepting provider's free places and preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The provider.
    pub provider: ProviderId,
    /// Places free now (capacity less panel and open proposals).
    pub free_places: u32,
    /// At most this share (percent) of the month's places may go to people of
    /// complex households: of `free_places` and `places_held` together.
    pub max_complex_share_pct: u8,
    /// Places the provider already holds this month (open proposals,
    /// attachments); 0 where unknown.
    pub places_held: u32,
    /// People of complex households among them; 0 where unknown.
    pub complex_held: u32,
    /// Languages offered (empty: not stated).
    pub languages: Vec<Language>,
    /// Age groups taken (empty: all).
    pub age_groups: BTreeSet<AgeGroup>,
}

/// One household placed with one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The household.
    pub reference: RegistrationRef,
    /// The provider.
    pub provider: ProviderId,
    /// Why.
    pub explanation: ScoreExplanation,
}

/// Why a provider a coordinator chose cannot take a household: a rule the
/// matcher would apply to the same pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// Too few free places for the whole household.
    Places {
        /// Places free now.
        free: u32,
        /// People in the household.
        needed: u32,
    },
    /// A hard preference rules the household out (each missed, in words).
    Preferences(Vec<String>),
    /// The provider's complexity mix leaves no room for a complex household this size.
    ComplexShare {
        /// Complex people the provider's free places take (their share of them).
        cap: u32,
        /// People in the household.
        needed: u32,
    },
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Places { free, needed } => {
                write!(f, "the provider has {free} free places and the household needs {needed}")
            }
            Unfit::Preferences(misses) => {
                write!(f, "the provider's preferences rule the household out: {}", misses.join("; "))
            }
            Unfit::ComplexShare { cap, needed } => write!(
                f,
                "the provider's complexity mix takes {cap} people with complex needs from their free places, \
                 and this complex household is {needed}"
            ),
        }
    }
}

/// Checks a provider an attachment coordinator chose for a household, by the
/// rules [`run`] applies to every placement: the whole household fits in the
/// free places, the complexity mix allows it and no hard preference rules it
/// out. Priority order is the coordinator's call, so it is not checked. The
/// explanation scores the household as [`run`] would and says the provider was
/// chosen by a coordinator.
pub fn assess(
    candidate: &Candidate,
    opening: &Opening,
    policy: &Policy,
    now: Timestamp,
) -> Result<ScoreExplanation, Unfit> {
    let provider_fit = Board::new(std::slice::from_ref(opening), policy).assess(candidate)?;
    let bonuses = Bonuses::new(policy);
    Ok(ScoreExplanation {
        score: score::score(candidate, &bonuses, now),
        parts: score::parts(candidate, &bonuses, now),
        provider_fit,
    })
}

/// People of complex households `opening` may still take: a floor share of
/// the month's places (free now and already held), less those already held,
/// and never more than the free places.
pub fn complex_room(opening: &Opening) -> u32 {
    assign::complex_cap(opening)
}

/// Places candidates with openings. See the module docs.
///
/// Candidates are taken in priority order (score desc, then registered_at asc,
/// then reference asc), each with the best eligible provider or skipped if none
/// is eligible; the placements come back in that order. A household placed
/// earlier may have its provider changed by a later one's repacking (see
/// `assign::Board::repack`). Openings with no free
/// places are ignored, and the run stops once every place is taken.
pub fn run(candidates: &[Candidate], openings: &[Opening], policy: &Policy, now: Timestamp) -> Vec<Placement> {
    run_counted(candidates, openings, policy, now).0
}

/// [`run`], also returning how many candidates were considered, so tests can
/// see the early stop.
fn run_counted(
    candidates: &[Candidate],
    openings: &[Opening],
    policy: &Policy,
    now: Timestamp,
) -> (Vec<Placement>, usize) {
    let mut board = Board::new(openings, policy);
    if board.is_full() {
        return (Vec::new(), 0);
    }
    let bonuses = Bonuses::new(policy);
    let order = score::rank(candidates, &bonuses, now, |c| board.profile(c));
    let most = usize::try_from(board.capacity()).unwrap_or(usize::MAX).min(candidates.len());
    let mut placements = Vec::with_capacity(most);
    let mut considered = 0;
    for ranked in &order {
        if board.is_full() {
            break;
        }
        considered += 1;
        let c = &candidates[ranked.index];
        if let Some(placing) = board.place(&ranked.extra, c, ranked.index, candidates) {
            if let Some((earlier, provider, provider_fit)) = placing.moved {
                let moved: &mut Placement = &mut placements[earlier];
                moved.provider = provider;
                moved.explanation.provider_fit = provider_fit;
            }
            let provider_fit = placing.fit;
            let explanation =
                ScoreExplanation { score: ranked.score, parts: score::parts(c, &bonuses, now), provider_fit };
            placements.push(Placement { reference: c.reference, provider: placing.provider, explanation });
        }
    }
    (placements, considered)
}

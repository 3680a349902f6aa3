//! Health authorities and communities, loaded from a data file.
//!
//! Regions are data, not code: a province brings its own file of the shape of
//! `infra/regions/bc.toml` (health authorities, each with service delivery areas,
//! each with communities that carry a code, a name, a centre and a population).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::{CommunityCode, HaCode, ShardKey};

/// A community: the unit a waitlist is kept for, one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Community {
    /// Its shard (health authority + community code).
    pub shard: ShardKey,
    /// Its name.
    pub name: String,
    /// The health service delivery area it belongs to (code).
    pub hsda_code: String,
    /// The health service delivery area's name.
    pub hsda_name: String,
    /// Approximate centre latitude.
    pub lat: f64,
    /// Approximate centre longitude.
    pub lon: f64,
    /// Approximate population.
    pub population: u64,
    /// Its time zone (the file's `timezone`, the nearest given: the
    /// community's, its health authority's or the province's; UTC if none):
    /// where a calendar month begins for its providers' monthly rates.
    pub timezone: jiff::tz::TimeZone,
}

/// A health authority and its communities.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthAuthority {
    /// Code, e.g. `IHA`.
    pub code: HaCode,
    /// Name, e.g. `Interior Health`.
    pub name: String,
    /// Its communities in file order.
    pub communities: Vec<Community>,
}

/// Every health authority and community of a province.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// Health authorities in file order.
    pub health_authorities: Vec<HealthAuthority>,
    /// Community code -> (health authority index, community index), for lookups.
    by_community: BTreeMap<String, (usize, usize)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    timezone: Option<String>,
    health_authority: Vec<HaShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaShape {
    code: String,
    name: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    hsda: Vec<HsdaShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HsdaShape {
    code: String,
    name: String,
    #[serde(default)]
    lha: Vec<LhaShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LhaShape {
    code: String,
    name: String,
    lat: f64,
    lon: f64,
    population: u64,
    #[serde(default)]
    timezone: Option<String>,
}

/// What a health service delivery area's code may be: a community code's rule.
const AREA_CODE: &str = "an area code is 1 to 12 letters, digits or '-', with a letter or digit";

/// Whether a code holds a letter or digit (not only `-`). Checked here, not
/// by [`CommunityCode::parse`], which also reads the codes already stored.
fn has_letter_or_digit(code: &str) -> bool {
    code.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// A name from the file as it is shown: trimmed, in composed form, 1 to 200
/// characters, something visible, and nothing that is not printed.
fn name_of(what: &str, code: &str, name: &str) -> anyhow::Result<String> {
    crate::domain::readable(name, 1, 200, false).ok_or_else(|| {
        anyhow::anyhow!(
            "{what} {code:?}: a name is 1 to 200 characters, something visible, without control characters or \
             bidirectional overrides"
        )
    })
}

/// The time zone a `timezone` key names (an IANA name, such as
/// `America/Vancouver`), if it names one.
fn zone_of(what: &str, name: Option<&str>) -> anyhow::Result<Option<jiff::tz::TimeZone>> {
    name.map(|n| {
        jiff::tz::TimeZone::get(n.trim())
            .map_err(|e| anyhow::anyhow!("{what}: timezone {n:?} is not a time zone, such as America/Vancouver ({e})"))
    })
    .transpose()
}

impl Regions {
    /// Loads and checks a regions file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading regions file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in regions file {}", path.display()))
    }

    /// Parses and checks regions from TOML text: codes valid and unique
    /// (community and area codes whatever their case), names readable,
    /// coordinates on Earth, populations that fit a GraphQL `Int`, and a
    /// community at least in every area (a health authority may have none,
    /// as a province-wide one such as BC's First Nations Health Authority).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let shape: FileShape = toml::from_str(text)?;
        let province_zone = zone_of("the file", shape.timezone.as_deref())?.unwrap_or(jiff::tz::TimeZone::UTC);
        let mut has = Vec::new();
        let mut seen_ha = HashSet::new();
        let mut seen_hsda = HashSet::new();
        let mut seen_community = HashSet::new();
        let mut by_community = BTreeMap::new();
        for ha in shape.health_authority {
            let code = HaCode::parse(&ha.code).map_err(|e| anyhow::anyhow!("health authority {:?}: {e}", ha.code))?;
            if !seen_ha.insert(code.clone()) {
                bail!("health authority {} appears twice", ha.code);
            }
            let name = name_of("health authority", &ha.code, &ha.name)?;
            let what = format!("health authority {}", ha.code);
            let ha_zone = zone_of(&what, ha.timezone.as_deref())?.unwrap_or_else(|| province_zone.clone());
            let mut communities = Vec::new();
            for hsda in ha.hsda {
                let hsda_code = CommunityCode::parse(&hsda.code)
                    .ok()
                    .filter(|c| has_letter_or_digit(c.as_str()))
                    .ok_or_else(|| anyhow::anyhow!("health service delivery area {:?}: {AREA_CODE}", hsda.code))?;
                if !seen_hsda.insert(hsda_code.as_str().to_ascii_uppercase()) {
                    bail!("health service delivery area {} appears twice (codes are compared in any case)", hsda.code);
                }
                let hsda_name = name_of("health service delivery area", &hsda.code, &hsda.name)?;
                if hsda.lha.is_empty() {
                    bail!(
                        "health service delivery area {} has no communities (is a [[health_authority.hsda.lha]] \
                         header missing?)",
                        hsda.code
                    );
                }
                for lha in hsda.lha {
                    let community = CommunityCode::parse(&lha.code)
                        .map_err(|e| anyhow::anyhow!("community {:?}: {e}", lha.code))?;
                    if !has_letter_or_digit(community.as_str()) {
                        bail!("community {:?}: a community code has a letter or digit", lha.code);
                    }
                    if !(-90.0..=90.0).contains(&lha.lat) || !(-180.0..=180.0).contains(&lha.lon) {
                        bail!("community {}: coordinates out of range", lha.code);
                    }
                    if lha.population > i32::MAX as u64 {
                        bail!("community {}: a population is at most {}", lha.code, i32::MAX);
                    }
                    if !seen_community.insert(community.as_str().to_ascii_uppercase()) {
                        bail!("community {} appears twice (codes are compared in any case)", lha.code);
                    }
                    by_community.insert(community.as_str().to_string(), (has.len(), communities.len()));
                    communities.push(Community {
                        shard: ShardKey::new(code.clone(), community),
                        name: name_of("community", &lha.code, &lha.name)?,
                        hsda_code: hsda_code.as_str().to_string(),
                        hsda_name: hsda_name.clone(),
                        lat: lha.lat,
                        lon: lha.lon,
                        population: lha.population,
                        timezone: zone_of(&format!("community {}", lha.code), lha.timezone.as_deref())?
                            .unwrap_or_else(|| ha_zone.clone()),
                    });
                }
            }
            has.push(HealthAuthority { code, name, communities });
        }
        if by_community.is_empty() {
            bail!("a regions file needs at least one community");
        }
        Ok(Regions { health_authorities: has, by_community })
    }

    /// A community by code.
    pub fn community(&self, code: &str) -> Option<&Community> {
        self.by_community.get(code).map(|&(h, c)| &self.health_authorities[h].communities[c])
    }

    /// A health authority by code.
    pub fn health_authority(&self, code: &str) -> Option<&HealthAuthority> {
        self.health_authorities.iter().find(|ha| ha.code.as_str() == code)
    }

    /// Every community, health authority by health authority.
    pub fn communities(&self) -> impl Iterator<Item = &Community> {
        self.health_authorities.iter().flat_map(|ha| ha.communities.iter())
    }

    /// Every shard.
    pub fn shards(&self) -> impl Iterator<Item = &ShardKey> {
        self.communities().map(|c| &c.shard)
    }

    /// The total population of all communities.
    pub fn population(&self) -> u64 {
        self.communities().map(|c| c.population).sum()
    }

    /// The other communities whose centres lie within `km` of `community`'s,
    /// nearest first (ties by code), each with its distance in kilometres. Empty
    /// for an unknown community or `km` of 0.
    pub fn neighbours(&self, community: &str, km: u32) -> Vec<(&Community, f64)> {
        let Some(here) = self.community(community) else { return Vec::new() };
        let mut near: Vec<(&Community, f64)> = self
            .communities()
            .filter(|c| c.shard != here.shard)
            .map(|c| (c, distance_km(here, c)))
            .filter(|(_, d)| *d <= f64::from(km))
            .collect();
        near.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.shard.community.cmp(&b.0.shard.community)));
        near
    }
}

/// Great-circle distance between two communities' centres (haversine, mean Earth radius).
pub fn distance_km(a: &Community, b: &Community) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (la, lb) = (a.lat.to_radians(), b.lat.to_radians());
    let (dlat, dlon) = ((b.lat - a.lat).to_radians(), (b.lon - a.lon).to_radians());
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[[health_authority]]
code = "IHA"
name = "Interior Health"
[[health_authority.hsda]]
code = "11"
name = "East Kootenay"
[[health_authority.hsda.lha]]
code = "111"
name = "Fernie"
lat = 49.5
lon = -115.0
population = 19008
[[health_authority]]
code = "FNHA"
name = "First Nations Health Authority"
"#;

    #[test]
    fn parses_a_small_file() {
        let r = Regions::parse(SMALL).unwrap();
        assert_eq!(r.health_authorities.len(), 2);
        let c = r.community("111").unwrap();
        assert_eq!(c.shard.to_string(), "IHA/111");
        assert_eq!(c.hsda_name, "East Kootenay");
        assert!(r.community("112").is_none());
        assert_eq!(r.population(), 19008);
    }

    #[test]
    fn refuses_duplicates_and_bad_values() {
        let dup = SMALL.replace("code = \"FNHA\"", "code = \"IHA\"");
        assert!(Regions::parse(&dup).is_err());
        assert!(Regions::parse(&SMALL.replace("lat = 49.5", "lat = 99.5")).is_err());
        assert!(Regions::parse(&SMALL.replace("code = \"111\"", "code = \"1 1\"")).is_err());
        assert!(Regions::parse("health_authority = []").is_err());
        assert!(Regions::parse(&SMALL.replace("population = 19008", "population = 19008\nextra = 1")).is_err());
        let refused = |from: &str, to: &str| {
            let text = SMALL.replacen(from, to, 1);
            assert_ne!(text, SMALL, "{from}");
            format!("{:#}", Regions::parse(&text).map(|_| ()).unwrap_err())
        };
        // Names shown to everyone: something visible, nothing hidden or reordered.
        assert!(refused("name = \"Fernie\"", "name = \"  \"").contains("community \"111\": a name"));
        assert!(refused("name = \"Fernie\"", "name = \"Fer\\u202Enie\"").contains("a name"));
        assert!(refused("name = \"East Kootenay\"", "name = \"East\\u0000\"").contains("area \"11\""));
        assert!(refused("name = \"Interior Health\"", "name = \"\"").contains("health authority"));
        // Area codes are checked as community codes are, and once each.
        assert!(refused("code = \"11\"", "code = \"\"").contains("area \"\""));
        assert!(refused("code = \"11\"", "code = \"Plaines du Sud\"").contains("area code"));
        let two_areas = SMALL.replace(
            "[[health_authority]]\ncode = \"FNHA\"",
            "[[health_authority.hsda]]\ncode = \"11\"\nname = \"Other\"\n[[health_authority.hsda.lha]]\ncode = \"112\"\n\
             name = \"Cranbrook\"\nlat = 49.5\nlon = -115.7\npopulation = 1\n[[health_authority]]\ncode = \"FNHA\"",
        );
        assert!(format!("{:#}", Regions::parse(&two_areas).unwrap_err()).contains("area 11 appears twice"));
        let empty_area = SMALL.replace(
            "[[health_authority]]\ncode = \"FNHA\"",
            "[[health_authority.hsda]]\ncode = \"12\"\nname = \"Empty\"\n[[health_authority]]\ncode = \"FNHA\"",
        );
        assert!(format!("{:#}", Regions::parse(&empty_area).unwrap_err()).contains("12 has no communities"));
        // Community codes that differ only in case, or hold no letter or digit.
        let cased = two_areas.replace("code = \"11\"\nname = \"Other\"", "code = \"12\"\nname = \"Other\"");
        assert!(Regions::parse(&cased).is_ok());
        let cased = cased.replace("code = \"112\"", "code = \"x\"").replacen("code = \"111\"", "code = \"X\"", 1);
        assert!(format!("{:#}", Regions::parse(&cased).unwrap_err()).contains("community x appears twice"));
        assert!(refused("code = \"111\"", "code = \"-\"").contains("community \"-\""));
        // A population a GraphQL Int can carry.
        assert!(refused("population = 19008", "population = 99999999999999").contains("at most 2147483647"));
    }

    #[test]
    fn neighbours_are_within_the_distance_nearest_first() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml");
        let r = Regions::load(&path).unwrap();
        let here = r.community("233").unwrap();
        assert!(r.neighbours("233", 0).is_empty(), "0 km turns spill-over off");
        assert!(r.neighbours("no such", 500).is_empty());
        let near = r.neighbours("233", 40);
        assert!(!near.is_empty(), "the Fraser Valley has communities within 40 km of {}", here.name);
        assert!(near.iter().all(|(c, d)| c.shard != here.shard && *d <= 40.0 && *d > 0.0));
        assert!(near.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
        let wider = r.neighbours("233", 200);
        assert!(wider.len() > near.len());
        assert!(near.iter().all(|(c, _)| wider.iter().any(|(w, _)| w.shard == c.shard)));
        // Vancouver to Victoria is about 95-100 km as the crow flies.
        let (van, vic) = (r.community("321").unwrap(), r.communities().find(|c| c.name == "Greater Victoria").unwrap());
        let d = distance_km(van, vic);
        assert!((80.0..120.0).contains(&d), "{d}");
        assert!((distance_km(van, van)).abs() < 1e-9);
    }

    #[test]
    fn the_bc_file_has_5_authorities_16_areas_89_communities() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml");
        let r = Regions::load(&path).unwrap();
        assert_eq!(r.health_authorities.len(), 5);
        let hsdas: HashSet<_> = r.communities().map(|c| c.hsda_code.clone()).collect();
        assert_eq!(hsdas.len(), 16);
        assert_eq!(r.communities().count(), 89);
        let pop = r.population();
        assert!((5_500_000..5_900_000).contains(&pop), "{pop}");
        // Each community's clocks: the province's, or its own where it keeps another.
        let zone = |code: &str| r.community(code).unwrap().timezone.iana_name().map(str::to_string);
        assert_eq!(zone("233").as_deref(), Some("America/Vancouver"));
        assert_eq!(zone("111").as_deref(), Some("America/Edmonton"));
        assert_eq!(zone("531").as_deref(), Some("America/Dawson_Creek"));
    }

    #[test]
    fn a_time_zone_is_the_nearest_one_given_and_must_exist() {
        let zone = |text: &str, code: &str| {
            let r = Regions::parse(text).unwrap();
            r.community(code).unwrap().timezone.iana_name().map(str::to_string)
        };
        assert_eq!(zone(SMALL, "111").as_deref(), Some("UTC"), "none given: UTC, as before");
        let province = format!("timezone = \"America/Halifax\"\n{SMALL}");
        assert_eq!(zone(&province, "111").as_deref(), Some("America/Halifax"));
        let authority =
            province.replace("name = \"Interior Health\"", "name = \"Interior Health\"\ntimezone = \"America/Regina\"");
        assert_eq!(zone(&authority, "111").as_deref(), Some("America/Regina"));
        let community = authority.replace("population = 19008", "population = 19008\ntimezone = \"America/Edmonton\"");
        assert_eq!(zone(&community, "111").as_deref(), Some("America/Edmonton"));
        let wrong = community.replace("America/Edmonton", "Mountain/Fernie");
        let error = format!("{:#}", Regions::parse(&wrong).unwrap_err());
        assert!(error.contains("community 111") && error.contains("Mountain/Fernie"), "{error}");
    }
}

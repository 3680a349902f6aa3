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
    health_authority: Vec<HaShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaShape {
    code: String,
    name: String,
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
}

impl Regions {
    /// Loads and checks a regions file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading regions file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in regions file {}", path.display()))
    }

    /// Parses and checks regions from TOML text: codes valid and unique,
    /// coordinates on Earth, at least one community.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let shape: FileShape = toml::from_str(text)?;
        let mut has = Vec::new();
        let mut seen_ha = HashSet::new();
        let mut by_community = BTreeMap::new();
        for ha in shape.health_authority {
            let code = HaCode::parse(&ha.code).map_err(|e| anyhow::anyhow!("health authority {:?}: {e}", ha.code))?;
            if !seen_ha.insert(code.clone()) {
                bail!("health authority {} appears twice", ha.code);
            }
            let mut communities = Vec::new();
            for hsda in ha.hsda {
                for lha in hsda.lha {
                    let community = CommunityCode::parse(&lha.code)
                        .map_err(|e| anyhow::anyhow!("community {:?}: {e}", lha.code))?;
                    if !(-90.0..=90.0).contains(&lha.lat) || !(-180.0..=180.0).contains(&lha.lon) {
                        bail!("community {}: coordinates out of range", lha.code);
                    }
                    if by_community.insert(lha.code.clone(), (has.len(), communities.len())).is_some() {
                        bail!("community {} appears twice", lha.code);
                    }
                    communities.push(Community {
                        shard: ShardKey::new(code.clone(), community),
                        name: lha.name,
                        hsda_code: hsda.code.clone(),
                        hsda_name: hsda.name.clone(),
                        lat: lha.lat,
                        lon: lha.lon,
                        population: lha.population,
                    });
                }
            }
            has.push(HealthAuthority { code, name: ha.name, communities });
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
    }
}

//! Shards: one (health authority, community) pair, the unit of ownership.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// A health authority code as the regions file names it (`IHA`, `FHA`, ...).
///
/// Shared, not copied: every record of a shard names its shard, so clones
/// point at one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HaCode(Arc<str>);

impl HaCode {
    /// 2–8 ASCII capitals or digits.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim().to_ascii_uppercase();
        if (2..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            Ok(HaCode(s.as_str().into()))
        } else {
            Err(DomainError::invalid(
                "healthAuthority",
                "a health authority code is 2 to 8 letters or digits, e.g. IHA",
            ))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A community code (in BC the three-digit local health area code, e.g. `111`).
/// Unique across a province, so a community code alone finds its shard.
///
/// Shared, not copied: every record of a shard names its shard, so clones
/// point at one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommunityCode(Arc<str>);

impl CommunityCode {
    /// 1–12 ASCII letters, digits or `-`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim();
        if (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            Ok(CommunityCode(s.into()))
        } else {
            Err(DomainError::invalid("community", "a community code is 1 to 12 letters or digits, e.g. 111"))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The unit of ownership, storage partitioning and the live feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardKey {
    /// The health authority whose supervisor runs the shard.
    pub ha: HaCode,
    /// The community whose waitlist the shard keeps.
    pub community: CommunityCode,
}

impl ShardKey {
    /// Builds a key from its parts.
    pub fn new(ha: HaCode, community: CommunityCode) -> Self {
        ShardKey { ha, community }
    }

    /// Parses `HA/COMMUNITY`, e.g. `IHA/111`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let (ha, community) = input
            .split_once('/')
            .ok_or_else(|| DomainError::invalid("shard", "a shard is written HA/COMMUNITY, e.g. IHA/111"))?;
        Ok(ShardKey { ha: HaCode::parse(ha)?, community: CommunityCode::parse(community)? })
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ha.0, self.community.0)
    }
}

stored_as_text!(HaCode, CommunityCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_key_round_trips() {
        let key = ShardKey::parse("IHA/111").unwrap();
        assert_eq!(key.ha.as_str(), "IHA");
        assert_eq!(key.community.as_str(), "111");
        assert_eq!(key.to_string(), "IHA/111");
        assert_eq!(ShardKey::parse("iha/111").unwrap(), key, "health authority codes are upper-cased");
    }

    #[test]
    fn shard_key_refuses_bad_shapes() {
        for bad in ["IHA", "IHA/", "/111", "IHA/1 1", "TOOLONGHA/1", "IHA/1234567890123"] {
            assert!(ShardKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Which node should hold each shard when several share a store: rendezvous
//! (highest random weight) hashing of the node names and the shard, so every
//! node computes the same answer from the same list of names, each node gets
//! about its share, and adding or removing a node moves only the shards that
//! node wins or held.
//!
//! A node starts the shards it is preferred for at once and the others only
//! after a delay (a lease), so a preferred node that is up takes its own first
//! and one that is down is stood in for. A node that starts asks its peers to
//! hand back the shards it is preferred for.

/// The nodes sharing a store, seen from one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    me: String,
    /// Every node, this one included, sorted and without repeats.
    nodes: Vec<String>,
}

impl Placement {
    /// `me` among `peers` (other nodes' names).
    pub fn new(me: &str, peers: impl IntoIterator<Item = String>) -> Self {
        let mut nodes: Vec<String> = peers.into_iter().chain(std::iter::once(me.to_string())).collect();
        nodes.sort();
        nodes.dedup();
        Placement { me: me.to_string(), nodes }
    }

    /// The node that should hold `shard`.
    pub fn preferred(&self, shard: &crate::domain::ShardKey) -> &str {
        let name = shard.to_string();
        self.nodes
            .iter()
            .max_by_key(|node| (weight(node, &name), node.as_str()))
            .map_or(self.me.as_str(), String::as_str)
    }

    /// Whether this node should hold `shard`.
    pub fn is_mine(&self, shard: &crate::domain::ShardKey) -> bool {
        self.preferred(shard) == self.me
    }

    /// The other nodes, sorted.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(String::as_str).filter(|n| *n != self.me)
    }
}

/// The placement a node goes by, shared by its system and every shard's
/// supervisor: a change of the cluster's node list replaces it while the node
/// runs. None: this node takes every shard it can.
#[derive(Debug, Clone, Default)]
pub struct PlacementCell(std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<Placement>>>>);

impl PlacementCell {
    /// A cell holding `placement`.
    pub fn new(placement: Option<Placement>) -> Self {
        PlacementCell(std::sync::Arc::new(std::sync::RwLock::new(placement.map(std::sync::Arc::new))))
    }

    /// The placement now.
    pub fn get(&self) -> Option<std::sync::Arc<Placement>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the placement, for every holder of this cell.
    pub fn set(&self, placement: Option<Placement>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = placement.map(std::sync::Arc::new);
    }
}

/// FNV-1a of the node and the shard: stable across builds and machines.
fn weight(node: &str, shard: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(std::iter::once(0)).chain(shard.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for inputs that differ only at the end: finish with a xorshift-multiply.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ShardKey;
    use crate::regions::Regions;

    fn shards() -> Vec<ShardKey> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/regions/bc.toml");
        Regions::load(&path).unwrap().shards().cloned().collect()
    }

    #[test]
    fn every_node_agrees_and_each_gets_a_share() {
        let shards = shards();
        let a = Placement::new("node-a", ["node-b".to_string(), "node-c".to_string()]);
        let b = Placement::new("node-b", ["node-c".to_string(), "node-a".to_string()]);
        for s in &shards {
            assert_eq!(a.preferred(s), b.preferred(s), "{s}");
            assert_eq!(a.is_mine(s), a.preferred(s) == "node-a");
        }
        for node in ["node-a", "node-b", "node-c"] {
            let n = shards.iter().filter(|s| a.preferred(s) == node).count();
            assert!((15..=45).contains(&n), "{node} is preferred for {n} of {} shards", shards.len());
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_shards() {
        let shards = shards();
        let three = Placement::new("node-a", ["node-b".to_string(), "node-c".to_string()]);
        let two = Placement::new("node-a", ["node-b".to_string()]);
        for s in &shards {
            if three.preferred(s) != "node-c" {
                assert_eq!(two.preferred(s), three.preferred(s), "{s} moved though its node stayed");
            }
        }
        let alone = Placement::new("node-a", Vec::new());
        assert!(shards.iter().all(|s| alone.is_mine(s)));
    }
}

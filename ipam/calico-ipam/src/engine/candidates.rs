//! The order in which a node considers a pool's blocks (libcalico-go's `randomBlockGenerator`):
//! start at a pseudo-random block, walk forward, wrap around, visit every block once.
//!
//! The start is seeded by the FNV-1 hash of the node name, so every request of one node
//! converges on the same block (retries and concurrent pods on a node do not scatter over
//! the pool) while different nodes diverge (they rarely race for the same block). With
//! single-address blocks (/32, /128) converging would only make a node's requests collide,
//! so those start from a time seed instead. Go's PRNG is not reproduced: only the
//! properties above matter to other Calico components.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;

use crate::model::{offset, IpPool};

/// FNV-1 (multiply, then xor), 32 bits, as Go's `hash/fnv.New32`.
pub fn fnv1_32(data: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 2_166_136_261;
    const PRIME: u32 = 16_777_619;
    data.iter().fold(OFFSET_BASIS, |hash, byte| {
        hash.wrapping_mul(PRIME) ^ u32::from(*byte)
    })
}

/// SplitMix64: a few lines, full period, good enough to pick a uniform start.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How many blocks a pool holds (`None` when its block size is smaller than the pool or
/// the count does not fit: such a pool is not usable).
pub fn block_count(pool: &IpPool) -> Option<u128> {
    let bits: u8 = if pool.cidr.is_ipv4() { 32 } else { 128 };
    if pool.block_size < pool.cidr.prefix() || pool.block_size > bits {
        return None;
    }
    1u128.checked_shl(u32::from(pool.block_size - pool.cidr.prefix()))
}

/// The block CIDR holding `ip` in a pool with `block_size`.
pub fn block_of(ip: IpAddr, block_size: u8) -> Option<IpNetwork> {
    let net = IpNetwork::new(ip, block_size).ok()?;
    IpNetwork::new(net.network(), block_size).ok()
}

/// The blocks of one pool in this node's order.
pub struct BlockCandidates {
    base: IpAddr,
    block_size: u8,
    /// Addresses per block.
    stride: u128,
    count: u128,
    start: u128,
    visited: u128,
}

impl BlockCandidates {
    pub fn new(pool: &IpPool, node: &str) -> Option<BlockCandidates> {
        let count = block_count(pool)?;
        let bits: u32 = if pool.cidr.is_ipv4() { 32 } else { 128 };
        let stride = 1u128.checked_shl(bits - u32::from(pool.block_size))?;
        let single_address = stride == 1;
        let seed = if single_address {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        } else {
            u64::from(fnv1_32(node.as_bytes()))
        };
        let mut rng = SplitMix64(seed);
        let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
        // The count is a power of two, so masking keeps the start uniform.
        let start = random & (count - 1);
        Some(BlockCandidates {
            base: pool.cidr.network(),
            block_size: pool.block_size,
            stride,
            count,
            start,
            visited: 0,
        })
    }

    /// Where `index` (a block's position from the pool base) falls in this walk.
    pub fn position_of(&self, index: u128) -> u128 {
        index.wrapping_sub(self.start) & (self.count - 1)
    }

    /// The position of a block CIDR in this walk, if the block belongs to the pool.
    pub fn position_of_block(&self, cidr: &IpNetwork) -> Option<u128> {
        if cidr.prefix() != self.block_size || cidr.is_ipv4() != self.base.is_ipv4() {
            return None;
        }
        let delta =
            crate::model::to_u128(cidr.network()).checked_sub(crate::model::to_u128(self.base))?;
        let index = delta / self.stride;
        (index < self.count).then(|| self.position_of(index))
    }
}

impl Iterator for BlockCandidates {
    type Item = IpNetwork;

    fn next(&mut self) -> Option<IpNetwork> {
        if self.visited >= self.count {
            return None;
        }
        let index = self.start.wrapping_add(self.visited) & (self.count - 1);
        self.visited += 1;
        let network = offset(self.base, index * self.stride);
        IpNetwork::new(network, self.block_size).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn pool(cidr: &str, block_size: u8) -> IpPool {
        let mut p = IpPool::new(cidr.parse().expect("cidr"));
        p.block_size = block_size;
        p
    }

    #[test]
    fn fnv1_matches_go() {
        // Go: fnv.New32(); Write([]byte("")) → 0x811c9dc5; "a" → 0x050c5d7e.
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
    }

    #[test]
    fn every_block_once_with_wrap_around() {
        let p = pool("10.0.0.0/24", 28);
        let walk: Vec<IpNetwork> = BlockCandidates::new(&p, "node-1").expect("pool").collect();
        assert_eq!(walk.len(), 16);
        let distinct: BTreeSet<_> = walk.iter().collect();
        assert_eq!(distinct.len(), 16);
        for (i, pair) in walk.windows(2).enumerate() {
            let a = crate::model::to_u128(pair[0].network());
            let b = crate::model::to_u128(pair[1].network());
            assert!(
                b == a + 16 || b == 0x0a00_0000,
                "step {i} is sequential or wraps"
            );
            assert!(p.cidr.contains(pair[0].network()));
        }
    }

    #[test]
    fn deterministic_per_node_and_positions_agree() {
        let p = pool("10.0.0.0/16", 26);
        let first = |node: &str| BlockCandidates::new(&p, node).and_then(|mut c| c.next());
        assert_eq!(first("node-1"), first("node-1"));
        let starts: BTreeSet<_> = (0..20).map(|i| first(&format!("node-{i}"))).collect();
        assert!(
            starts.len() > 10,
            "different nodes start in different places"
        );
        let walk = BlockCandidates::new(&p, "n").expect("pool");
        let order: Vec<IpNetwork> = BlockCandidates::new(&p, "n").expect("pool").collect();
        for (i, cidr) in order.iter().enumerate().take(50) {
            assert_eq!(walk.position_of_block(cidr), Some(i as u128));
        }
        let outside: IpNetwork = "10.1.0.0/26".parse().expect("cidr");
        assert_eq!(walk.position_of_block(&outside), None);
    }

    #[test]
    fn huge_v6_pools_and_single_address_blocks() {
        let p = pool("fd00::/48", 122);
        let mut walk = BlockCandidates::new(&p, "n").expect("pool");
        let first = walk.next().expect("a block");
        assert_eq!(first.prefix(), 122);
        assert!(p.cidr.contains(first.network()));
        let p = pool("10.0.0.0/30", 32);
        assert_eq!(BlockCandidates::new(&p, "n").expect("pool").count(), 4);
        assert!(BlockCandidates::new(&pool("10.0.0.0/24", 20), "n").is_none());
    }
}

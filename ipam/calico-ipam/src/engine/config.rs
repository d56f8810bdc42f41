//! The cluster-wide IPAM settings (`IPAMConfig` named `default`).

use super::{Ipam, IpamError, DEFAULT_MAX_BLOCKS_PER_HOST};
use crate::model::IpamConfig;
use crate::store::StoreError;

/// Creating the default races with other nodes doing the same; a few rounds settle it.
const CONFIG_ATTEMPTS: usize = 4;

impl Ipam<'_> {
    /// The stored IPAM config, or Calico's default (`strictAffinity: false`,
    /// `autoAllocateBlocks: true`), written to the store when none exists yet so every node
    /// agrees on it from then on.
    pub fn ipam_config(&self) -> Result<IpamConfig, IpamError> {
        let mut last = None;
        for _ in 0..CONFIG_ATTEMPTS {
            if let Some(stored) = self.store.get_ipam_config()? {
                return Ok(stored.value);
            }
            let default = IpamConfig::default();
            match self.store.create_ipam_config(&default) {
                Ok(_) => return Ok(default),
                // Someone else created it between our read and our write: read theirs.
                Err(e @ StoreError::AlreadyExists(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or(IpamError::MaxRetries, IpamError::from))
    }
}

/// The block limit in force: the request's if set and not above the config's, else the
/// config's, else 20.
pub fn effective_block_limit(config: &IpamConfig, requested: u32) -> u32 {
    let global = if config.max_blocks_per_host == 0 {
        DEFAULT_MAX_BLOCKS_PER_HOST
    } else {
        config.max_blocks_per_host
    };
    if requested != 0 && requested <= global {
        requested
    } else {
        global
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_limit_request_below_global_wins() {
        let mut config = IpamConfig::default();
        assert_eq!(effective_block_limit(&config, 0), 20);
        assert_eq!(effective_block_limit(&config, 5), 5);
        assert_eq!(effective_block_limit(&config, 50), 20);
        config.max_blocks_per_host = 3;
        assert_eq!(effective_block_limit(&config, 0), 3);
        assert_eq!(effective_block_limit(&config, 2), 2);
        assert_eq!(effective_block_limit(&config, 4), 3);
    }
}

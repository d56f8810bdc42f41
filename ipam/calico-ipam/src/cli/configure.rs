//! `calico-ipam configure`: the cluster's IPAM configuration (one object, `default`), changed
//! with compare-and-swap so that two operators' changes never silently overwrite each other.

use crate::model::IpamConfig;
use crate::store::{Store, StoreError};

/// How often a change is retried when someone else changed the object in between.
const ATTEMPTS: usize = 5;

pub fn run(
    store: &dyn Store,
    strict_affinity: Option<bool>,
    max_blocks_per_host: Option<u32>,
) -> Result<i32, String> {
    let apply = |config: &mut IpamConfig| {
        if let Some(strict) = strict_affinity {
            config.strict_affinity = strict;
        }
        if let Some(max) = max_blocks_per_host {
            config.max_blocks_per_host = max;
        }
    };
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let outcome = match store.get_ipam_config().map_err(|e| e.to_string())? {
            Some(mut stored) => {
                apply(&mut stored.value);
                store.update_ipam_config(&stored.value, &stored.revision)
            }
            None => {
                let mut config = IpamConfig::default();
                apply(&mut config);
                store.create_ipam_config(&config)
            }
        };
        match outcome {
            Ok(_) => {
                if let Some(strict) = strict_affinity {
                    println!("Successfully set StrictAffinity to: {strict}");
                }
                if let Some(max) = max_blocks_per_host {
                    println!("Successfully set MaxBlocksPerHost to: {max}");
                }
                return Ok(0);
            }
            // Changed or created by someone else since it was read: read again.
            Err(e @ (StoreError::Conflict(_) | StoreError::AlreadyExists(_))) => last = Some(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the IPAM configuration kept changing under us ({}); try again",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

//! `calico-ipam configure`: the cluster's IPAM configuration.

use crate::store::Store;

pub fn run(
    _store: &dyn Store,
    _strict_affinity: bool,
    _max_blocks_per_host: Option<u32>,
) -> Result<i32, String> {
    Err("configure is not supported yet".into())
}

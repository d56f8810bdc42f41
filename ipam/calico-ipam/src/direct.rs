//! IPAM work the calico plugin does in its own process, as Calico's plugin calls its IPAM
//! library directly rather than through the calico-ipam binary.

use std::net::IpAddr;

use crate::cni::IpamPluginError;
use crate::datastore;
use crate::engine::Ipam;
use crate::lock::HostLock;
use crate::netconf::IpamNetConf;

/// Releases `ips`, whoever holds them, under the node's IPAM lock, with the datastore and
/// node of the network configuration `stdin`. Returns the addresses that were not allocated.
///
/// Used when a pod that asks for fixed addresses (`ipAddrs`) gets a new sandbox while its
/// endpoint still holds them: without this, the IPAM plugin would refuse the same addresses
/// as already assigned (spec §3.1 step 5).
pub fn release_addresses(stdin: &[u8], ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamPluginError> {
    let conf: IpamNetConf = shared::gojson::from_slice(stdin)
        .map_err(|e| IpamPluginError::Config(format!("invalid calico-ipam configuration: {e}")))?;
    let node = conf.node.resolve()?;
    let store = datastore::open(&conf)?;
    let _lock = HostLock::acquire(&conf.lock_file());
    Ok(Ipam::new(store.as_ref(), &node).release_ips(ips)?)
}

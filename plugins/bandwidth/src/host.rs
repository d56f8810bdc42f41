//! Finding the host end of the pod's veth from the previous result, as the reference does:
//! the container interface's veth peer index, looked up on the host, must be an interface
//! of prevResult without a sandbox and with the same name.

use std::path::Path;

use shared::netlink::{Handle, Link};
use shared::netns::NetNs;
use shared::spec::result::Interface;

use crate::error::BandwidthError;

/// The host veth, as a link of the host namespace `host`.
pub fn host_interface(
    host: &mut Handle,
    interfaces: &[Interface],
    netns: &Path,
    ifname: &str,
) -> Result<Link, BandwidthError> {
    if interfaces.is_empty() {
        return Err(BandwidthError::HostInterface(
            "no interfaces provided".to_string(),
        ));
    }
    let no_peer = |why: String| {
        BandwidthError::HostInterface(format!(
            "container interface {ifname} has no veth peer: {why}"
        ))
    };
    let ns = NetNs::open(netns)?;
    let container = Handle::in_netns(&ns)?
        .link_by_name(ifname)?
        .ok_or_else(|| no_peer("Link not found".to_string()))?;
    // IFLA_LINK of a veth is its peer's index (in the peer's namespace), what ethtool's
    // peer_ifindex reports to the reference.
    let peer_index = match (container.kind.as_deref(), container.link_index) {
        (Some("veth"), Some(index)) if index > 0 => index,
        (kind, _) => {
            return Err(no_peer(format!(
                "{ifname} is a {} device, not a veth",
                kind.unwrap_or("physical")
            )))
        }
    };
    let peer = host.link_by_index(peer_index)?.ok_or_else(|| {
        BandwidthError::HostInterface(format!(
            "veth peer with index {peer_index} is not in host ns"
        ))
    })?;
    if interfaces
        .iter()
        .any(|i| i.sandbox.is_empty() && i.name == peer.name)
    {
        Ok(peer)
    } else {
        Err(BandwidthError::HostInterface(
            "no veth peer of container interface found in host ns".to_string(),
        ))
    }
}

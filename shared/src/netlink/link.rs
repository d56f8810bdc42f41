//! Links: look up, create veth pairs, change, move and delete interfaces.

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::socket::{Failure, Handle};
use super::{format_mac, mac_from};
use crate::error::Result;
use crate::netns::NetNs;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for interfaces without an Ethernet address (`lo` has one of zeros, tunnels none).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`), whether or not it has a carrier.
    pub up: bool,
    /// The driver kind, such as `"veth"` or `"dummy"`; `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, its peer's index (in the peer's namespace, see
    /// [`Link::link_netnsid`]).
    pub link_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when [`Link::link_index`] lives in another namespace.
    pub link_netnsid: Option<i32>,
}

/// Settings for [`Handle::create_veth`]; `None` lets the kernel choose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VethOptions {
    /// MTU of both ends.
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub peer_mac: Option<[u8; 6]>,
    /// TX and RX queues of both ends.
    pub num_queues: Option<u32>,
}

impl Handle {
    /// The link called `name`, or `None` when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
            .map_err(|f| f.into_error(format!("look up link {name:?}")))
    }

    /// The link with `index`, or `None` when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
            .map_err(|f| f.into_error(format!("look up link index {index}")))
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(skip_stats());
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(msg))
            .map_err(|f| f.into_error("list links".into()))?;
        Ok(replies.into_iter().filter_map(link_from_reply).collect())
    }

    /// Creates a veth pair: `name` here, `peer_name` directly inside `peer_ns` (or here when
    /// `None`). The peer never exists in this namespace, so there is no window in which a
    /// half-made pair could collide with another interface or be seen by anyone.
    ///
    /// Fails with `EEXIST` when either name is taken in its namespace.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&NetNs>,
        options: &VethOptions,
    ) -> Result<()> {
        let msg = veth_message(name, peer_name, peer_ns, options);
        self.change(
            RouteNetlinkMessage::NewLink(msg),
            netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
        )
        .map_err(|f| {
            let place = match peer_ns {
                Some(ns) => format!(" in {}", ns.path().display()),
                None => String::new(),
            };
            f.into_error(format!(
                "create veth {name:?} with peer {peer_name:?}{place}"
            ))
        })
    }

    /// Sets the link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let result = self.set_link(updown(index, true));
        self.on_link(result, index, |link| format!("set {link} up"))
    }

    /// Sets the link administratively down.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let result = self.set_link(updown(index, false));
        self.on_link(result, index, |link| format!("set {link} down"))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let result = self.set_link(with_attribute(index, LinkAttribute::Mtu(mtu)));
        self.on_link(result, index, |link| format!("set mtu {mtu} on {link}"))
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let result = self.set_link(with_attribute(index, LinkAttribute::Address(mac.to_vec())));
        self.on_link(result, index, |link| {
            format!("set mac {} on {link}", format_mac(&mac))
        })
    }

    /// Renames the link. Older kernels refuse (`EBUSY`) while it is up; set it down first to
    /// work everywhere.
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        let result = self.set_link(with_attribute(
            index,
            LinkAttribute::IfName(name.to_string()),
        ));
        self.on_link(result, index, |link| format!("rename {link} to {name:?}"))
    }

    /// Moves the link into `ns`; it leaves this namespace (and this handle's view).
    pub fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<()> {
        let result = self.set_link(with_attribute(index, LinkAttribute::NetNsFd(ns.raw_fd())));
        self.on_link(result, index, |link| {
            format!("move {link} to {}", ns.path().display())
        })
    }

    /// Deletes the link (for a veth, both ends go). A missing link fails with `ENODEV`.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let result = self.change(RouteNetlinkMessage::DelLink(msg), 0);
        self.on_link(result, index, |link| format!("delete {link}"))
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none, which is what DEL
    /// wants after a half-done ADD or a second DEL.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.change(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(false),
            Err(f) => Err(f.into_error(format!("delete link {name:?}"))),
        }
    }

    fn get_link(&mut self, mut msg: LinkMessage) -> std::result::Result<Option<Link>, Failure> {
        msg.attributes.push(skip_stats());
        match self.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(replies.into_iter().find_map(link_from_reply)),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(None),
            Err(f) => Err(f),
        }
    }

    fn set_link(&mut self, msg: LinkMessage) -> std::result::Result<(), Failure> {
        self.change(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Turns a failed request on link `index` into an error naming the link, looked up only
    /// now that we need it for the message.
    pub(crate) fn on_link<T>(
        &mut self,
        result: std::result::Result<T, Failure>,
        index: u32,
        op: impl FnOnce(&str) -> String,
    ) -> Result<T> {
        result.map_err(|f| {
            let link = self.describe_link(index);
            f.into_error(op(&link))
        })
    }

    /// `link "eth0" (index 3)`, or `link index 3` when it cannot be found.
    pub(crate) fn describe_link(&mut self, index: u32) -> String {
        format!("link {}", self.name_link(index))
    }

    /// `"eth0" (index 3)`, or `index 3` when it cannot be found.
    pub(crate) fn name_link(&mut self, index: u32) -> String {
        match self.link_by_index(index) {
            Ok(Some(link)) => format!("{:?} (index {index})", link.name),
            _ => format!("index {index}"),
        }
    }
}

/// Asks the kernel to leave the counters out of link replies: we never read them and they
/// make up most of each message.
fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

fn updown(index: u32, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
    msg
}

fn with_attribute(index: u32, attribute: LinkAttribute) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(attribute);
    msg
}

/// The `RTM_NEWLINK` for a veth pair. The peer's own link message rides inside
/// `IFLA_LINKINFO/IFLA_INFO_DATA/VETH_INFO_PEER`, with the target namespace's fd, which is how
/// the kernel creates it there directly.
fn veth_message(
    name: &str,
    peer_name: &str,
    peer_ns: Option<&NetNs>,
    options: &VethOptions,
) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_string()));
    common_attributes(&mut peer, options.mtu, options.peer_mac, options.num_queues);
    if let Some(ns) = peer_ns {
        peer.attributes.push(LinkAttribute::NetNsFd(ns.raw_fd()));
    }

    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    common_attributes(&mut msg, options.mtu, options.mac, options.num_queues);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

fn common_attributes(
    msg: &mut LinkMessage,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    queues: Option<u32>,
) {
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(queues) = queues {
        msg.attributes.push(LinkAttribute::NumTxQueues(queues));
        msg.attributes.push(LinkAttribute::NumRxQueues(queues));
    }
}

fn link_from_reply(reply: RouteNetlinkMessage) -> Option<Link> {
    match reply {
        RouteNetlinkMessage::NewLink(msg) => Some(link_from_message(&msg)),
        _ => None,
    }
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        link_index: None,
        link_netnsid: None,
    };
    for attribute in &msg.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) => link.mac = mac_from(bytes),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Link(index) => link.link_index = Some(*index),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    /// Emits and re-parses, as the kernel would see the bytes.
    fn round_trip(msg: &LinkMessage) -> LinkMessage {
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        LinkMessage::parse(&bytes[..]).unwrap()
    }

    #[test]
    fn veth_message_carries_the_peer_with_its_namespace() {
        let ns = NetNs::current().unwrap();
        let options = VethOptions {
            mtu: Some(1400),
            mac: Some([0xee; 6]),
            peer_mac: Some([2, 0, 0, 0, 0, 1]),
            num_queues: Some(2),
        };
        let msg = round_trip(&veth_message("cali1", "eth0", Some(&ns), &options));
        let link = link_from_message(&msg);
        assert_eq!(link.name, "cali1");
        assert_eq!(link.mtu, 1400);
        assert_eq!(link.mac, Some([0xee; 6]));
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert!(msg.attributes.contains(&LinkAttribute::NumTxQueues(2)));

        let peer = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("peer message");
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::NetNsFd(ns.raw_fd())));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1])));
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(1400)));
    }

    #[test]
    fn veth_message_without_options_leaves_choices_to_the_kernel() {
        let msg = veth_message("a", "b", None, &VethOptions::default());
        assert_eq!(msg.attributes.len(), 2); // name + linkinfo
    }

    #[test]
    fn updown_changes_only_the_up_flag() {
        let up = updown(4, true);
        assert_eq!(up.header.index, 4);
        assert_eq!(up.header.flags, LinkFlags::Up);
        assert_eq!(up.header.change_mask, LinkFlags::Up);
        let down = updown(4, false);
        assert!(down.header.flags.is_empty());
        assert_eq!(down.header.change_mask, LinkFlags::Up);
    }

    #[test]
    fn link_from_message_reads_index_peer_and_state() {
        let mut msg = LinkMessage::default();
        msg.header.index = 9;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes.push(LinkAttribute::IfName("veth0".into()));
        msg.attributes.push(LinkAttribute::Link(12));
        msg.attributes.push(LinkAttribute::LinkNetNsId(0));
        msg.attributes.push(LinkAttribute::Address(vec![0; 6]));
        let link = link_from_message(&round_trip(&msg));
        assert_eq!(link.index, 9);
        assert!(link.up);
        assert_eq!(link.link_index, Some(12));
        assert_eq!(link.link_netnsid, Some(0));
        assert_eq!(link.kind, None);
    }
}

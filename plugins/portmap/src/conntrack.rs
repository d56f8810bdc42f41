//! Deleting the UDP conntrack entries of new host ports, over NETLINK_NETFILTER.
//!
//! A UDP flow that hit a host port before its DNAT existed (or while it pointed at a
//! previous pod) stays pinned to the old destination by conntrack: the new pod never sees
//! the traffic. So ADD deletes every UDP entry whose original destination port is one of
//! the new host ports, as the reference does with vishvananda/netlink.
//!
//! Why hand-built messages: the kernel cannot delete by port (a DELETE without a tuple
//! flushes the whole table), so this is a dump and a DELETE per matching entry, which needs
//! only the nfgenmsg header and three attributes. `netlink-packet-netfilter` does not cover
//! ctnetlink deletion, and the `conntrack` binary would cost a process per port;
//! `netlink-sys` (already used by `shared`) gives the socket.

use std::io;

use netlink_sys::{Socket, SocketAddr};

use crate::model::Family;

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_UDP: u8 = 17;
const HEADER: usize = 16;
const NFGENMSG: usize = 4;

/// Deletes the UDP entries of `family` whose original destination port is in `ports`;
/// returns how many went.
pub fn flush_udp_ports(family: Family, ports: &[u16]) -> io::Result<usize> {
    if ports.is_empty() || table_is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind(&SocketAddr::new(0, 0))?;
    let af = match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    };
    let dump = message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, af, &[]);
    socket.send(&dump, 0)?;
    let mut doomed = Vec::new();
    'dump: loop {
        let (datagram, _) = socket.recv_from_full()?;
        for (kind, payload) in messages(&datagram) {
            match kind {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let errno = error_code(payload);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    break 'dump;
                }
                k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                    if let Some(entry) = matching_entry(payload, ports) {
                        doomed.push(entry);
                    }
                }
                _ => {}
            }
        }
    }
    let mut deleted = 0;
    for (n, attrs) in doomed.iter().enumerate() {
        let seq = 2 + n as u32;
        let msg = message(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            af,
            attrs,
        );
        socket.send(&msg, 0)?;
        let (datagram, _) = socket.recv_from_full()?;
        for (kind, payload) in messages(&datagram) {
            if kind == NLMSG_ERROR {
                match -error_code(payload) {
                    0 => deleted += 1,
                    // Gone already (timed out or deleted by someone else).
                    libc::ENOENT => {}
                    errno => return Err(io::Error::from_raw_os_error(errno)),
                }
            }
        }
    }
    Ok(deleted)
}

/// Whether this namespace's conntrack table holds no entry at all: then there is nothing
/// to delete, and the dump (which walks every bucket of the table, a few milliseconds for
/// an empty one of 262144) can be skipped. Unknown (no conntrack sysctls) is not empty.
fn table_is_empty() -> bool {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .is_ok_and(|count| count.trim() == "0")
}

/// A ctnetlink request: nlmsghdr, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = HEADER + NFGENMSG + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0 (NFNETLINK_V0), resource id (big endian) 0.
    out.extend_from_slice(&[family, 0, 0, 0]);
    out.extend_from_slice(attrs);
    out
}

/// The netlink messages in a datagram: (type, payload after the 16-byte header).
fn messages(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < HEADER || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        out.push((kind, &data[HEADER..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The errno of an NLMSG_ERROR payload (0 for an ACK), negative as the kernel sends it.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EIO)
}

/// Attributes: (type without flags, whole attribute bytes, payload).
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 4 || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        out.push((kind, &data[..len], &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn find(data: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(data)
        .into_iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, _, payload)| payload)
}

/// For a UDP entry whose original destination port is in `ports`, the attributes that
/// name it in a DELETE: its original tuple, and its zone if it has one.
fn matching_entry(payload: &[u8], ports: &[u16]) -> Option<Vec<u8>> {
    let attrs = payload.get(NFGENMSG..)?;
    let all = attributes(attrs);
    let (_, tuple_whole, tuple) = all.iter().find(|(k, _, _)| *k == CTA_TUPLE_ORIG)?;
    let proto = find(tuple, CTA_TUPLE_PROTO)?;
    let num = *find(proto, CTA_PROTO_NUM)?.first()?;
    let port = find(proto, CTA_PROTO_DST_PORT)?;
    let port = u16::from_be_bytes([*port.first()?, *port.get(1)?]);
    if num != IPPROTO_UDP || !ports.contains(&port) {
        return None;
    }
    let mut out = tuple_whole.to_vec();
    out.resize(align(out.len()), 0);
    if let Some((_, zone, _)) = all.iter().find(|(k, _, _)| *k == CTA_ZONE) {
        out.extend_from_slice(zone);
        out.resize(align(out.len()), 0);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    fn entry(proto: u8, dport: u16) -> Vec<u8> {
        let mut p = attr(CTA_PROTO_NUM, &[proto]);
        p.extend(attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
        let tuple = attr(CTA_TUPLE_ORIG | 0x8000, &attr(CTA_TUPLE_PROTO | 0x8000, &p));
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(tuple);
        payload
    }

    #[test]
    fn selects_udp_entries_on_the_given_ports() {
        assert!(matching_entry(&entry(17, 5353), &[5353]).is_some());
        assert!(matching_entry(&entry(17, 5354), &[5353]).is_none());
        assert!(matching_entry(&entry(6, 5353), &[5353]).is_none());
        let attrs = matching_entry(&entry(17, 5353), &[5353]).unwrap();
        assert_eq!(attrs, entry(17, 5353)[4..]);
    }

    #[test]
    fn frames_requests_and_survives_garbage() {
        let msg = message(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            2,
            &[1, 2, 3, 4],
        );
        assert_eq!(msg.len(), 24);
        let parsed = messages(&msg);
        assert_eq!(parsed[0].0, 0x102);
        assert!(messages(&[0xff; 10]).is_empty());
        assert!(matching_entry(&[1, 2], &[1]).is_none());
        assert!(attributes(&[200, 0, 1, 0]).is_empty());
    }
}

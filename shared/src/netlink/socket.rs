//! The route-netlink socket: framing, sequence numbers, ACKs, dumps and kernel errors.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// `NLMSGERR_ATTR_MSG`: the human-readable reason in an extended ACK.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Message types below this are netlink's own (NOOP, ERROR, DONE, OVERRUN).
const NLMSG_MIN_TYPE: u16 = 0x10;
/// A dump that raced with a change (`NLM_F_DUMP_INTR`) is retried this many times.
const DUMP_ATTEMPTS: usize = 5;

/// A route-netlink socket bound to one network namespace (the one it was opened in).
#[derive(Debug)]
pub struct Handle {
    socket: Socket,
    seq: u32,
}

/// A request that did not succeed, before we know how to describe it to the operator.
#[derive(Debug)]
pub(crate) struct Failure {
    source: io::Error,
    /// The kernel's extended-ACK message ("Nexthop has invalid gateway"), when it sent one.
    kernel_says: Option<String>,
}

impl Failure {
    fn io(source: io::Error) -> Failure {
        Failure {
            source,
            kernel_says: None,
        }
    }

    pub(crate) fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// The public error, with `op` saying what we tried.
    pub(crate) fn into_error(self, op: String) -> Error {
        let op = match self.kernel_says {
            Some(reason) => format!("{op} ({reason})"),
            None => op,
        };
        Error::Netlink {
            op,
            source: self.source,
        }
    }
}

impl Handle {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Handle> {
        let fail = |step: &str, source: io::Error| Error::Netlink {
            op: format!("{step} route netlink socket"),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| fail("open", e))?;
        // Port 0: the kernel picks a unique one, so handles never collide.
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(|e| fail("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| fail("connect", e))?;
        // Optional niceties, absent on old kernels: a short error reply without a copy of our
        // request, and the kernel's reason in words. Neither is needed for correctness.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Handle { socket, seq: 0 })
    }

    /// A socket inside `ns`, opened on a short-lived thread that entered it; it keeps working
    /// on `ns` from any thread afterwards.
    pub fn in_netns(ns: &NetNs) -> Result<Handle> {
        ns.run(Handle::new)?
    }

    /// Sends a request that changes something and waits for the kernel's ACK.
    pub(crate) fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<(), Failure> {
        self.exchange(msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// Sends a single-object GET and returns the kernel's replies (one message when found).
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, Failure> {
        self.exchange(msg, NLM_F_ACK)
    }

    /// Dumps every object of the request's kind, until `NLMSG_DONE`.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut attempt = 1;
        loop {
            match self.exchange(msg.clone(), NLM_F_DUMP) {
                Err(failure) if failure.errno() == Some(libc::EINTR) && attempt < DUMP_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(msg, flags, seq);
        self.socket.send(&bytes, 0).map_err(Failure::io)?;
        self.receive(seq, flags & NLM_F_DUMP == NLM_F_DUMP)
    }

    fn receive(
        &mut self,
        seq: u32,
        dump: bool,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(Failure::io)?;
            for item in split(&datagram) {
                let (header, payload) = item.map_err(Failure::io)?;
                if header.sequence_number != seq {
                    // Left over from an earlier request that failed half-way through a dump.
                    log::debug!(
                        "netlink: skipping reply to request {} while waiting for {seq}",
                        header.sequence_number
                    );
                    continue;
                }
                interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                match payload {
                    Payload::Message(msg) => {
                        replies.push(msg);
                        // Without NLM_F_ACK, a GET would end here; we always ask for the ACK.
                    }
                    Payload::Undecodable(reason) => {
                        // One object we cannot parse (a newer kernel attribute, say) must not
                        // hide all the others.
                        log::warn!("netlink: skipping a reply we cannot decode: {reason}");
                    }
                    Payload::Malformed(reason) => return Err(Failure::io(invalid(reason))),
                    Payload::Ack => {
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    Payload::Done => {
                        if interrupted {
                            return Err(Failure::io(io::Error::from_raw_os_error(libc::EINTR)));
                        }
                        return Ok(replies);
                    }
                    Payload::Refused { errno, kernel_says } => {
                        return Err(Failure {
                            source: io::Error::from_raw_os_error(errno),
                            kernel_says,
                        });
                    }
                }
            }
        }
    }
}

/// Serializes one request.
fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// What one netlink message in a reply means to us.
#[derive(Debug)]
enum Payload {
    Message(RouteNetlinkMessage),
    /// A data message we cannot parse: skipped.
    Undecodable(String),
    /// A control message we cannot parse: the request's outcome is unknown.
    Malformed(String),
    Ack,
    Done,
    Refused {
        errno: i32,
        kernel_says: Option<String>,
    },
}

/// Splits a datagram into its messages. A malformed frame ends the datagram with an error,
/// since nothing after it can be located.
fn split(datagram: &[u8]) -> impl Iterator<Item = io::Result<(NetlinkHeader, Payload)>> + '_ {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= datagram.len() {
            return None;
        }
        let rest = &datagram[offset..];
        let frame = match NetlinkBuffer::new_checked(rest) {
            Ok(frame) => frame,
            Err(e) => {
                offset = datagram.len();
                return Some(Err(invalid(format!("malformed netlink frame: {e}"))));
            }
        };
        let length = frame.length() as usize;
        if length < NLMSG_HDRLEN {
            offset = datagram.len();
            return Some(Err(invalid(format!("netlink frame of {length} bytes"))));
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        offset += (length + 3) & !3;
        Some(Ok(decode(&rest[..length])))
    })
}

fn decode(frame: &[u8]) -> (NetlinkHeader, Payload) {
    let raw = NetlinkBuffer::new(frame);
    let mut header = NetlinkHeader::default();
    header.length = raw.length();
    header.message_type = raw.message_type();
    header.flags = raw.flags();
    header.sequence_number = raw.sequence_number();
    header.port_number = raw.port_number();
    let payload = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame) {
        Ok(msg) => match msg.payload {
            NetlinkPayload::InnerMessage(inner) => Payload::Message(inner),
            NetlinkPayload::Error(e) => match e.code {
                None => Payload::Ack,
                Some(code) => Payload::Refused {
                    errno: code.get().saturating_abs(),
                    kernel_says: extack_message(header.flags, &e.header),
                },
            },
            NetlinkPayload::Done(done) if done.code != 0 => Payload::Refused {
                errno: done.code.saturating_abs(),
                kernel_says: None,
            },
            NetlinkPayload::Done(_) => Payload::Done,
            // NOOP and OVERRUN never answer a request of ours.
            _ => Payload::Undecodable(format!("message type {}", header.message_type)),
        },
        // An ACK, error or DONE we cannot read would leave us waiting forever.
        Err(e) if header.message_type < NLMSG_MIN_TYPE => {
            Payload::Malformed(format!("control message type {}: {e}", header.message_type))
        }
        Err(e) => Payload::Undecodable(format!("type {}: {e}", header.message_type)),
    };
    (header, payload)
}

/// The reason text of an extended ACK. `after_code` is an `NLMSG_ERROR` payload after its
/// errno: our request's header (and body, unless the kernel capped it), then attributes.
fn extack_message(flags: u16, after_code: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = u32::from_ne_bytes(after_code.get(..4)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let attributes = after_code.get(echoed..)?;
    NlasIterator::new(attributes)
        .filter_map(|nla| nla.ok())
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value();
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            String::from_utf8_lossy(&text[..end]).into_owned()
        })
        .filter(|text| !text.is_empty())
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, Emitable, ErrorMessage, NLM_F_MULTIPART};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use std::num::NonZeroI32;

    fn frame(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32, flags: u16) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    fn link_named(name: &str) -> RouteNetlinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = 7;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(link)
    }

    #[test]
    fn encode_sets_request_flags_sequence_and_length() {
        let bytes = encode(link_named("eth0"), NLM_F_ACK, 42);
        let raw = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(raw.length() as usize, bytes.len());
        assert_eq!(raw.sequence_number(), 42);
        assert_eq!(raw.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(raw.message_type(), 16); // RTM_NEWLINK
    }

    #[test]
    fn split_walks_a_multipart_datagram() {
        let mut datagram = frame(
            NetlinkPayload::InnerMessage(link_named("a")),
            3,
            NLM_F_MULTIPART,
        );
        datagram.extend(frame(
            NetlinkPayload::InnerMessage(link_named("bb")),
            3,
            NLM_F_MULTIPART,
        ));
        datagram.extend(frame(
            NetlinkPayload::Done(DoneMessage::default()),
            3,
            NLM_F_MULTIPART,
        ));
        let items: Vec<_> = split(&datagram).map(|i| i.unwrap()).collect();
        assert_eq!(items.len(), 3);
        assert!(matches!(
            items[0].1,
            Payload::Message(RouteNetlinkMessage::NewLink(_))
        ));
        assert!(matches!(items[1].1, Payload::Message(_)));
        assert!(matches!(items[2].1, Payload::Done));
        assert!(items.iter().all(|(h, _)| h.sequence_number == 3));
    }

    #[test]
    fn ack_and_refusal_are_told_apart() {
        let ack = frame(NetlinkPayload::Error(ErrorMessage::default()), 1, 0);
        let (_, payload) = decode(&ack);
        assert!(matches!(payload, Payload::Ack));

        let mut nack = ErrorMessage::default();
        nack.code = NonZeroI32::new(-libc::EEXIST);
        nack.header = vec![0; NLMSG_HDRLEN];
        let (_, payload) = decode(&frame(NetlinkPayload::Error(nack), 1, NLM_F_CAPPED));
        match payload {
            Payload::Refused { errno, kernel_says } => {
                assert_eq!(errno, libc::EEXIST);
                assert_eq!(kernel_says, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_error_reply_is_malformed_not_skipped() {
        // NLMSG_ERROR with a 2-byte body: too short for its errno.
        let mut bytes = vec![0u8; NLMSG_HDRLEN + 2];
        let mut raw = NetlinkBuffer::new(&mut bytes[..]);
        raw.set_length((NLMSG_HDRLEN + 2) as u32);
        raw.set_message_type(2);
        let (_, payload) = decode(&bytes);
        assert!(matches!(payload, Payload::Malformed(_)), "{payload:?}");
    }

    #[test]
    fn a_failure_keeps_the_errno_and_names_the_operation() {
        let failure = Failure {
            source: io::Error::from_raw_os_error(libc::ENODEV),
            kernel_says: Some("no such device".into()),
        };
        match failure.into_error("set link \"x\" up".into()) {
            Error::Netlink { op, source } => {
                assert_eq!(op, "set link \"x\" up (no such device)");
                assert_eq!(source.raw_os_error(), Some(libc::ENODEV));
            }
            other => panic!("{other:?}"),
        }
    }

    fn extack_payload(capped: bool, text: &[u8]) -> Vec<u8> {
        // Echoed request header: length 20 (header + 4 bytes body, body only when uncapped).
        let mut bytes = Vec::new();
        bytes.extend(20u32.to_ne_bytes());
        bytes.extend([0u8; 12]);
        if !capped {
            bytes.extend([0u8; 4]);
        }
        let nla = netlink_packet_core::DefaultNla::new(NLMSGERR_ATTR_MSG, text.to_vec());
        let mut attr = vec![0; nla.buffer_len()];
        nla.emit(&mut attr);
        bytes.extend(attr);
        bytes
    }

    #[test]
    fn extack_message_is_found_after_capped_or_full_echo() {
        let text = b"Nexthop has invalid gateway\0";
        let capped = extack_payload(true, text);
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &capped).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        let full = extack_payload(false, text);
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS, &full).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(extack_message(0, &full), None);
        assert_eq!(extack_message(NLM_F_ACK_TLVS, &[1, 2]), None);
    }
}

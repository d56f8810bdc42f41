//! Traffic control: the qdiscs, filter and IFB device the bandwidth plugin sets up.
//!
//! netlink-packet-route knows the ingress qdisc, the u32 filter and the mirred action, so
//! those are typed messages. It has no TBF, so a TBF's `TCA_OPTIONS` are built here by hand
//! from the kernel's `struct tc_tbf_qopt` ([`tbf_options`], tested byte for byte), and read
//! back from dumps the same way ([`Tbf::from_options`]).

use netlink_packet_core::{DefaultNla, Nla, NlasIterator, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::socket::Handle;
use crate::error::Result;

/// `TCA_TBF_PARMS`: `struct tc_tbf_qopt`.
const TCA_TBF_PARMS: u16 = 1;
/// `TCA_TBF_RATE64`: the rate when it does not fit the 32 bits of `tc_ratespec.rate`.
const TCA_TBF_RATE64: u16 = 4;
/// `sizeof(struct tc_tbf_qopt)`: two 12-byte `tc_ratespec`, then limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 36;
/// `ETH_P_ALL`: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// The priority the reference plugin gives its redirect filter.
const REDIRECT_PRIORITY: u16 = 1;
/// `/proc/net/psched` on every kernel since 2.6.26 with high-resolution timers: one tick is
/// 1000/64 µs. Used only when the file cannot be read.
const DEFAULT_TICK_IN_USEC: f64 = 15.625;

/// A token bucket filter's parameters, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// The bucket, in scheduler ticks (see [`tick_in_usec`]).
    pub buffer: u32,
    /// Bytes that may wait in the queue.
    pub limit: u32,
}

/// One qdisc, as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// The parameters of a `tbf`; `None` for other kinds.
    pub tbf: Option<Tbf>,
}

impl Tbf {
    /// Reads `struct tc_tbf_qopt` (and `TCA_TBF_RATE64`) from a TBF's nested options.
    pub fn from_options(nested: &[u8]) -> Option<Tbf> {
        let mut rate64 = None;
        let mut parms = None;
        for nla in NlasIterator::new(nested).filter_map(|n| n.ok()) {
            match nla.kind() {
                TCA_TBF_PARMS => parms = Some(nla.value().to_vec()),
                TCA_TBF_RATE64 => {
                    rate64 = nla
                        .value()
                        .get(..8)?
                        .try_into()
                        .ok()
                        .map(u64::from_ne_bytes)
                }
                _ => {}
            }
        }
        let parms = parms?;
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(parms.get(at..at + 4)?.try_into().ok()?))
        };
        // tc_ratespec: cell_log, linklayer (1 byte each), overhead, cell_align, mpu (2 each),
        // then the rate at offset 8. limit at 24, buffer at 28.
        let rate32 = word(8)?;
        Some(Tbf {
            rate: rate64.unwrap_or(u64::from(rate32)),
            limit: word(24)?,
            buffer: word(28)?,
        })
    }
}

/// The `TCA_OPTIONS` content of a TBF, as the reference's netlink library sends it: the
/// `tc_tbf_qopt` with the rate (truncated to 32 bits, the kernel then reads
/// `TCA_TBF_RATE64`), limit and buffer, no peak rate, no rate table.
pub fn tbf_options(tbf: &Tbf) -> Vec<DefaultNla> {
    let mut qopt = [0u8; TBF_QOPT_LEN];
    // Truncation is intended: the 64-bit attribute below carries large rates.
    qopt[8..12].copy_from_slice(&(tbf.rate as u32).to_ne_bytes());
    qopt[24..28].copy_from_slice(&tbf.limit.to_ne_bytes());
    qopt[28..32].copy_from_slice(&tbf.buffer.to_ne_bytes());
    let mut options = vec![DefaultNla::new(TCA_TBF_PARMS, qopt.to_vec())];
    if tbf.rate >= 1 << 32 {
        options.push(DefaultNla::new(
            TCA_TBF_RATE64,
            tbf.rate.to_ne_bytes().to_vec(),
        ));
    }
    options
}

/// `tc qdisc add dev <index> root handle 1: tbf ...`, as a message.
fn tbf_message(index: u32, tbf: &Tbf) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.handle = TcHandle { major: 1, minor: 0 };
    msg.header.parent = TcHandle::ROOT;
    msg.attributes.push(TcAttribute::Kind("tbf".into()));
    msg.attributes.push(TcAttribute::Options(
        tbf_options(tbf).into_iter().map(TcOption::Other).collect(),
    ));
    msg
}

/// `tc qdisc add dev <index> handle ffff: ingress`.
fn ingress_message(index: u32) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.header.parent = TcHandle::INGRESS;
    msg.attributes.push(TcAttribute::Kind("ingress".into()));
    msg
}

/// One mirred "egress redirect to `target`" action at position `tab` of a filter's list.
fn redirect_action(tab: u16, target: u32, verdict: TcActionType) -> TcAction {
    let mut generic = TcActionGeneric::default();
    generic.action = verdict;
    let mut mirror = TcMirror::default();
    mirror.generic = generic;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = target;
    let mut action = TcAction::default();
    action.tab = tab;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

/// `tc filter add dev <index> parent ffff: protocol all prio 1 u32 match u32 0 0 flowid 1:1
/// action mirred egress redirect dev <target>`, with the action list the reference sends:
/// its netlink library prepends a redirect with verdict "stolen" because the filter names a
/// redirect target, then adds the plugin's own (verdict 0), so the kernel lists two.
fn redirect_filter_message(index: u32, target: u32) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    // tcm_info: priority in the upper half, protocol (network order) in the lower.
    msg.header.info = (u32::from(REDIRECT_PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    // One all-zero key: mask 0 matches every packet.
    selector.keys = vec![TcU32Key::default()];
    msg.attributes.push(TcAttribute::Kind("u32".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor: 1 })),
        TcOption::U32(TcFilterU32Option::Action(vec![
            redirect_action(1, target, TcActionType::Stolen),
            redirect_action(2, target, TcActionType::Ok),
        ])),
    ]));
    msg
}

/// `ip link add <name> mtu <mtu> txqueuelen 0 up type ifb`.
fn ifb_message(name: &str, mtu: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    // The reference leaves the queue length at 0 (upstream: not above 0 until the queue
    // count issues between the veth and the IFB are settled).
    msg.attributes.push(LinkAttribute::TxQueueLen(0));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    msg
}

fn qdisc_from_reply(reply: RouteNetlinkMessage) -> Option<Qdisc> {
    let RouteNetlinkMessage::NewQueueDiscipline(msg) = reply else {
        return None;
    };
    let mut kind = String::new();
    let mut options = None;
    for attribute in &msg.attributes {
        match attribute {
            TcAttribute::Kind(k) => kind = k.clone(),
            TcAttribute::Options(opts) => options = Some(opts.clone()),
            _ => {}
        }
    }
    let tbf = if kind == "tbf" {
        // An unknown kind's TCA_OPTIONS come back whole, as one attribute.
        options.iter().flatten().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut nested = vec![0; nla.value_len()];
                nla.emit_value(&mut nested);
                Tbf::from_options(&nested)
            }
            _ => None,
        })
    } else {
        None
    };
    Some(Qdisc {
        index: u32::try_from(msg.header.index).unwrap_or(0),
        handle: msg.header.handle.into(),
        parent: msg.header.parent.into(),
        kind,
        tbf,
    })
}

/// Microseconds per scheduler tick, from `/proc/net/psched` as the reference's netlink
/// library computes it (TBF buffers are given in ticks).
pub fn tick_in_usec() -> f64 {
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|text| parse_psched(&text))
        .unwrap_or(DEFAULT_TICK_IN_USEC)
}

fn parse_psched(text: &str) -> Option<f64> {
    let mut fields = text
        .split_whitespace()
        .map(|f| u64::from_str_radix(f, 16).ok());
    let t2us = fields.next()??;
    let us2t = fields.next()??;
    let clock_res = fields.next()??;
    if us2t == 0 {
        return None;
    }
    // Old kernels with a nanosecond clock report t2us differently (iproute2's rule).
    let t2us = if clock_res == 1_000_000_000 {
        us2t
    } else {
        t2us
    };
    Some(t2us as f64 / us2t as f64 * (clock_res as f64 / 1_000_000.0))
}

impl Handle {
    /// A TBF as the root qdisc (handle `1:`) of the link.
    pub fn add_tbf(&mut self, index: u32, tbf: &Tbf) -> Result<()> {
        let result = self.change(
            RouteNetlinkMessage::NewQueueDiscipline(tbf_message(index, tbf)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        self.on_link(result, index, |link| {
            format!(
                "add tbf (rate {} B/s, buffer {}, limit {}) to {link}",
                tbf.rate, tbf.buffer, tbf.limit
            )
        })
    }

    /// The ingress qdisc (handle `ffff:`) of the link.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        let result = self.change(
            RouteNetlinkMessage::NewQueueDiscipline(ingress_message(index)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        self.on_link(result, index, |link| format!("add ingress qdisc to {link}"))
    }

    /// A match-all u32 filter on the link's ingress qdisc redirecting every packet to the
    /// egress of `target` (see [`redirect_filter_message`]).
    pub fn add_redirect_filter(&mut self, index: u32, target: u32) -> Result<()> {
        let result = self.change(
            RouteNetlinkMessage::NewTrafficFilter(redirect_filter_message(index, target)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        self.on_link(result, index, |link| {
            format!("add redirect filter from {link} to index {target}")
        })
    }

    /// The qdiscs of one link.
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let mut msg = TcMessage::default();
        msg.header.index = index as i32;
        let result = self.dump(RouteNetlinkMessage::GetQueueDiscipline(msg));
        let replies = self.on_link(result, index, |link| format!("list qdiscs of {link}"))?;
        Ok(replies
            .into_iter()
            .filter_map(qdisc_from_reply)
            .filter(|q| q.index == index)
            .collect())
    }

    /// Creates an IFB device, up; fails with `EEXIST` when the name is taken.
    pub fn create_ifb(&mut self, name: &str, mtu: u32) -> Result<()> {
        self.change(
            RouteNetlinkMessage::NewLink(ifb_message(name, mtu)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|f| f.into_error(format!("create ifb {name:?}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn emit(msg: &TcMessage) -> Vec<u8> {
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        bytes
    }

    /// The body of `RTM_NEWQDISC` for `tc qdisc add dev #7 root handle 1: tbf rate 1250000
    /// buffer 195312 limit 31250` without rate table, written out from the kernel's structs.
    #[test]
    fn tbf_message_is_the_kernel_layout_byte_for_byte() {
        let tbf = Tbf {
            rate: 1_250_000,
            buffer: 195_312,
            limit: 31_250,
        };
        let mut expected = Vec::new();
        // struct tcmsg: family, 3 pad bytes, ifindex, handle 1:0, parent root, info.
        expected.extend([0u8, 0, 0, 0]);
        expected.extend(7i32.to_ne_bytes());
        expected.extend(0x0001_0000u32.to_ne_bytes());
        expected.extend(0xffff_ffffu32.to_ne_bytes());
        expected.extend(0u32.to_ne_bytes());
        // TCA_KIND "tbf\0".
        expected.extend(8u16.to_ne_bytes());
        expected.extend(1u16.to_ne_bytes());
        expected.extend(b"tbf\0");
        // TCA_OPTIONS { TCA_TBF_PARMS tc_tbf_qopt }.
        expected.extend((4u16 + 4 + 36).to_ne_bytes());
        expected.extend(2u16.to_ne_bytes());
        expected.extend((4u16 + 36).to_ne_bytes());
        expected.extend(1u16.to_ne_bytes());
        expected.extend([0u8; 8]); // rate: cell_log, linklayer, overhead, cell_align, mpu
        expected.extend(1_250_000u32.to_ne_bytes());
        expected.extend([0u8; 12]); // peakrate: unset
        expected.extend(31_250u32.to_ne_bytes()); // limit
        expected.extend(195_312u32.to_ne_bytes()); // buffer
        expected.extend(0u32.to_ne_bytes()); // mtu
        assert_eq!(emit(&tbf_message(7, &tbf)), expected);
    }

    #[test]
    fn large_rates_add_the_64_bit_attribute() {
        let tbf = Tbf {
            rate: (1 << 32) + 5,
            buffer: 1,
            limit: 2,
        };
        let options = tbf_options(&tbf);
        assert_eq!(options.len(), 2);
        let mut nested = Vec::new();
        for nla in &options {
            let mut bytes = vec![0; nla.buffer_len()];
            nla.emit(&mut bytes);
            nested.extend(bytes);
        }
        // The 32-bit field holds the truncated value; the reader prefers the 64-bit one.
        assert_eq!(&nested[4 + 8..4 + 12], &5u32.to_ne_bytes());
        assert_eq!(Tbf::from_options(&nested), Some(tbf));
    }

    #[test]
    fn a_dumped_tbf_is_read_back() {
        let tbf = Tbf {
            rate: 2,
            buffer: 62_500_000,
            limit: 1,
        };
        let mut msg = tbf_message(3, &tbf);
        msg.header.index = 3;
        let parsed = TcMessage::parse(&emit(&msg)[..]).unwrap();
        let qdisc = qdisc_from_reply(RouteNetlinkMessage::NewQueueDiscipline(parsed)).unwrap();
        assert_eq!(qdisc.kind, "tbf");
        assert_eq!(qdisc.handle, 0x0001_0000);
        assert_eq!(qdisc.parent, 0xffff_ffff);
        assert_eq!(qdisc.tbf, Some(tbf));
    }

    #[test]
    fn redirect_filter_matches_everything_and_redirects_twice() {
        let msg = redirect_filter_message(4, 9);
        assert_eq!(
            msg.header.parent,
            TcHandle {
                major: 0xffff,
                minor: 0
            }
        );
        // prio 1, protocol ETH_P_ALL in network order.
        assert_eq!(msg.header.info, 0x0001_0300);
        let bytes = emit(&msg);
        let parsed = TcMessage::parse(&bytes[..]).unwrap();
        assert_eq!(parsed, msg);
        let TcAttribute::Options(options) = &msg.attributes[1] else {
            panic!("options")
        };
        let actions = options
            .iter()
            .find_map(|o| match o {
                TcOption::U32(TcFilterU32Option::Action(a)) => Some(a),
                _ => None,
            })
            .unwrap();
        assert_eq!(actions.len(), 2);
    }

    #[test]
    fn psched_gives_the_tick_length() {
        assert_eq!(
            parse_psched("000003e8 00000040 000f4240 3b9aca00\n"),
            Some(15.625)
        );
        assert_eq!(parse_psched("garbage"), None);
        assert_eq!(parse_psched("1 0 1 1"), None);
    }
}

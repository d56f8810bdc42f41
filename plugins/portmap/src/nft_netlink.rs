//! The nftables backend spoken as nf_tables netlink, in process: dumps of our chains
//! (`NFT_MSG_GETCHAIN`) and of the rules of the shared ones (`NFT_MSG_GETRULE`, filtered by
//! the kernel to table `cni_hostport` and one chain, so that a container's own chain of
//! thousands of rules is never read when it is to be replaced or deleted) and one
//! batch (`NFNL_MSG_BATCH_BEGIN` … `NFNL_MSG_BATCH_END`) per change, sent with one
//! `sendmsg` and applied by the kernel as one transaction, as `nft -f` does.
//!
//! The messages are the ones nft 1.0.6 sends for the same script, attribute for attribute
//! (checked against a capture in the tests below), so `nft list` shows the same ruleset
//! whichever path wrote it. Layouts: `include/uapi/linux/netfilter/nf_tables.h` and
//! libnftnl's `src/expr/*.c` (attribute order as libnftnl emits it).
//!
//! Why hand-built messages: the rules need a handful of expressions (meta, payload, cmp,
//! immediate, fib, nat, masq) and the dump needs three attributes of a rule;
//! `netlink-packet-netfilter` does not cover nf_tables, and the crates that do wrap
//! libnftnl (C). `netlink-sys` (already used by `shared` and [`crate::conntrack`]) gives the
//! socket.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr};

use crate::model::{Family, Protocol};
use crate::nftables::{Listed, Listing, Op, Rule, CONTAINER_CHAINS, TABLE};

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HEADER: usize = 16;
const NFGENMSG: usize = 4;

const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

// enum nft_table_attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
// enum nft_chain_attributes
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_HANDLE: u16 = 2;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
// enum nft_rule_attributes
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
// libnftnl udata: NFTNL_UDATA_TABLE_COMMENT and NFTNL_UDATA_RULE_COMMENT.
const UDATA_COMMENT: u8 = 0;
// enum nft_data_attributes, nft_verdict_attributes
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
// registers
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
// meta
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_L4PROTO: u32 = 16;
// payload
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
// cmp
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
// immediate
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
// fib
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
// nat
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
// hooks (enum nf_inet_hooks)
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_OUT: u32 = 3;
pub const NF_INET_POST_ROUTING: u32 = 4;

fn nfproto(family: Family) -> u8 {
    match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Netlink attributes being written.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn str(&mut self, kind: u16, text: &str) -> &mut Self {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        self.put(kind, &bytes)
    }

    fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut nested = Attrs::default();
        inner(&mut nested);
        self.put(kind | NLA_F_NESTED, &nested.0)
    }

    /// One expression of a rule's list.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) -> &mut Self {
        self.nest(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name);
            e.nest(NFTA_EXPR_DATA, data);
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expr("payload", |d| {
            d.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                .be32(NFTA_PAYLOAD_BASE, base)
                .be32(NFTA_PAYLOAD_OFFSET, offset)
                .be32(NFTA_PAYLOAD_LEN, len);
        })
    }

    fn cmp_eq(&mut self, value: &[u8]) -> &mut Self {
        self.expr("cmp", |d| {
            d.be32(NFTA_CMP_SREG, NFT_REG_1)
                .be32(NFTA_CMP_OP, NFT_CMP_EQ)
                .nest(NFTA_CMP_DATA, |v| {
                    v.put(NFTA_DATA_VALUE, value);
                });
        })
    }

    fn immediate(&mut self, reg: u32, value: &[u8]) -> &mut Self {
        self.expr("immediate", |d| {
            d.be32(NFTA_IMMEDIATE_DREG, reg)
                .nest(NFTA_IMMEDIATE_DATA, |v| {
                    v.put(NFTA_DATA_VALUE, value);
                });
        })
    }

    fn jump(&mut self, chain: &str) -> &mut Self {
        self.expr("immediate", |d| {
            d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                .nest(NFTA_IMMEDIATE_DATA, |v| {
                    v.nest(NFTA_DATA_VERDICT, |verdict| {
                        verdict
                            .be32(NFTA_VERDICT_CODE, NFT_JUMP as u32)
                            .str(NFTA_VERDICT_CHAIN, chain);
                    });
                });
        })
    }

    /// `ip daddr` / `ip6 saddr` … `== addr`.
    fn match_addr(&mut self, addr: IpAddr, source: bool) -> &mut Self {
        let (offset, bytes) = match addr {
            IpAddr::V4(a) => (if source { 12 } else { 16 }, a.octets().to_vec()),
            IpAddr::V6(a) => (if source { 8 } else { 24 }, a.octets().to_vec()),
        };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bytes.len() as u32)
            .cmp_eq(&bytes)
    }
}

fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ipproto(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// libnftnl's userdata: type, length, value (the comment with its NUL).
fn udata_comment(text: &str) -> Result<Vec<u8>, String> {
    let len = u8::try_from(text.len() + 1)
        .map_err(|_| format!("comment {text:?} is longer than nftables allows"))?;
    let mut out = vec![UDATA_COMMENT, len];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Ok(out)
}

/// The expressions and userdata of a rule; `Err` for what only nft can compile (free-form
/// conditions).
fn rule_attrs(family: Family, rule: &Rule, attrs: &mut Attrs) -> Result<(), String> {
    let mut exprs = Attrs::default();
    let mut comment = None;
    match rule {
        Rule::Jump(chain) => {
            exprs.jump(chain);
        }
        Rule::Pod { chain, comment: c } => {
            exprs.jump(chain);
            comment = Some(c);
        }
        Rule::Hook { conditions } => {
            if !conditions.is_empty() {
                return Err(format!("conditions {conditions:?} need nft to compile"));
            }
            exprs
                .expr("fib", |d| {
                    d.be32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR)
                        .be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
                        .be32(NFTA_FIB_DREG, NFT_REG_1);
                })
                .cmp_eq(&RTN_LOCAL.to_ne_bytes())
                .jump("hostports_all");
        }
        Rule::Dnat {
            daddr,
            protocol,
            port,
            to,
            to_port,
            comment: c,
        } => {
            if let Some(daddr) = daddr {
                exprs.match_addr(*daddr, false);
            }
            exprs
                .expr("meta", |d| {
                    d.be32(NFTA_META_KEY, NFT_META_L4PROTO)
                        .be32(NFTA_META_DREG, NFT_REG_1);
                })
                .cmp_eq(&[ipproto(*protocol)])
                .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
                .cmp_eq(&port.to_be_bytes())
                .immediate(NFT_REG_1, &ip_bytes(*to))
                .immediate(NFT_REG_2, &to_port.to_be_bytes())
                .expr("nat", |d| {
                    d.be32(NFTA_NAT_TYPE, NFT_NAT_DNAT)
                        .be32(NFTA_NAT_FAMILY, u32::from(nfproto(family)))
                        .be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1)
                        .be32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2)
                        .be32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
                });
            comment = Some(c);
        }
        Rule::Masquerade {
            saddr,
            daddr,
            comment: c,
        } => {
            exprs
                .match_addr(*saddr, true)
                .match_addr(*daddr, false)
                .expr("masq", |_| {});
            comment = Some(c);
        }
    }
    attrs.put(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs.0);
    if let Some(c) = comment {
        attrs.put(NFTA_RULE_USERDATA, &udata_comment(c)?);
    }
    Ok(())
}

/// One nf_tables transaction being written.
pub struct Batch {
    bytes: Vec<u8>,
    seq: u32,
    /// Whether the last change asks for an ACK (nft does not: it waits for errors only).
    /// The kernel reports every failing change anyway, in order, so an ACK of the last one
    /// says the whole batch was answered; one ACK per change would let a large batch
    /// overflow the socket's buffer with them.
    ack: bool,
    /// Where the last change's header starts.
    last: Option<usize>,
    /// What each change's sequence number is, for error messages.
    what: BTreeMap<u32, String>,
}

impl Batch {
    pub fn new(first_seq: u32, ack: bool) -> Batch {
        let mut batch = Batch {
            bytes: Vec::new(),
            seq: first_seq,
            ack,
            last: None,
            what: BTreeMap::new(),
        };
        batch.message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        batch
    }

    fn message(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) {
        let len = HEADER + NFGENMSG + attrs.len();
        self.bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&self.seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(family);
        self.bytes.push(0);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        self.bytes.extend_from_slice(attrs);
        self.seq = self.seq.wrapping_add(1);
    }

    fn change(&mut self, kind: u16, flags: u16, family: Family, attrs: &Attrs, what: String) {
        self.last = Some(self.bytes.len());
        self.what.insert(self.seq, what);
        self.message(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | flags,
            nfproto(family),
            0,
            &attrs.0,
        );
    }

    /// Adds one operation; `Err` when it cannot be said without nft.
    pub fn push(&mut self, op: &Op) -> Result<(), String> {
        let mut a = Attrs::default();
        match op {
            Op::AddTable(family) => {
                a.str(NFTA_TABLE_NAME, TABLE).be32(NFTA_TABLE_FLAGS, 0).put(
                    NFTA_TABLE_USERDATA,
                    &udata_comment(crate::nftables::COMMENT)?,
                );
                self.change(NFT_MSG_NEWTABLE, 0, *family, &a, op.text());
            }
            Op::AddChain { family, name, hook } => {
                a.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
                if let Some(hook) = hook {
                    a.str(NFTA_CHAIN_TYPE, "nat").nest(NFTA_CHAIN_HOOK, |h| {
                        h.be32(NFTA_HOOK_HOOKNUM, hook.number())
                            .be32(NFTA_HOOK_PRIORITY, hook.priority() as u32);
                    });
                }
                self.change(NFT_MSG_NEWCHAIN, NLM_F_CREATE, *family, &a, op.text());
            }
            Op::Flush { family, chain } => {
                a.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain);
                self.change(NFT_MSG_DELRULE, 0, *family, &a, op.text());
            }
            Op::DelChain { family, name } => {
                a.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
                self.change(NFT_MSG_DELCHAIN, 0, *family, &a, op.text());
            }
            Op::AddRule {
                family,
                chain,
                rule,
            } => {
                a.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain);
                rule_attrs(*family, rule, &mut a)?;
                self.change(
                    NFT_MSG_NEWRULE,
                    NLM_F_CREATE | NLM_F_APPEND,
                    *family,
                    &a,
                    op.text(),
                );
            }
            Op::DelRule(rule) => {
                a.str(NFTA_RULE_TABLE, TABLE)
                    .str(NFTA_RULE_CHAIN, &rule.chain)
                    .put(NFTA_RULE_HANDLE, &rule.handle.to_be_bytes());
                self.change(NFT_MSG_DELRULE, 0, rule.family, &a, op.text());
            }
        }
        Ok(())
    }

    /// The whole batch, ended.
    pub fn finish(mut self) -> (Vec<u8>, BTreeMap<u32, String>, u32) {
        let begin = self.seq.wrapping_sub(self.what.len() as u32 + 1);
        if let Some(at) = self.last.filter(|_| self.ack) {
            let flags = u16::from_ne_bytes([self.bytes[at + 6], self.bytes[at + 7]]) | NLM_F_ACK;
            self.bytes[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
        }
        self.message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        (self.bytes, self.what, begin)
    }
}

/// Whether every operation can be sent as netlink (free-form conditions cannot).
pub fn expressible(ops: &[Op]) -> bool {
    let mut batch = Batch::new(1, true);
    ops.iter().all(|op| batch.push(op).is_ok())
}

fn socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind(&SocketAddr::new(0, 0))?;
    // Short ACKs: errors do not echo the whole request back.
    socket.set_cap_ack(true)?;
    Ok(socket)
}

/// Room for what a change's error answer costs in the receive buffer (a small skb each).
const ERROR_ROOM: usize = 1024;
/// The buffers' sizes when the batch is small: what the kernel gives by default.
const MIN_BUFFER: usize = 1 << 20;

/// Makes `socket`'s send buffer hold a batch of `bytes` and its receive buffer the errors
/// of `changes` changes. `SO_*BUFFORCE` passes the `wmem_max`/`rmem_max` limits (as nft
/// does, with the same CAP_NET_ADMIN that nf_tables needs); without the capability the
/// plain options give what those limits allow, and a batch that still does not fit fails
/// with EMSGSIZE before anything changed.
fn size_buffers(socket: &Socket, bytes: usize, changes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let send = bytes.saturating_add(HEADER).max(MIN_BUFFER);
    let receive = changes.saturating_mul(ERROR_ROOM).max(MIN_BUFFER);
    let forced = setsockopt(socket, sockopt::SndBufForce, &send)
        .or_else(|_| setsockopt(socket, sockopt::SndBuf, &send));
    if let Err(e) = forced {
        log::debug!("nf_tables socket: a {send} byte send buffer: {e}");
    }
    let forced = setsockopt(socket, sockopt::RcvBufForce, &receive)
        .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &receive));
    if let Err(e) = forced {
        log::debug!("nf_tables socket: a {receive} byte receive buffer: {e}");
    }
}

/// The netlink messages in a datagram: (type, seq, payload after the header).
fn messages(mut data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < HEADER || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        out.push((kind, seq, &data[HEADER..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

/// The errno of an NLMSG_ERROR payload (0 for an ACK), positive.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(libc::EIO)
}

/// Attributes: (type without flags, payload).
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 4 || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        out.push((kind, &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The comment in a rule's userdata, if any.
fn udata_find_comment(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (kind, len) = (data[0], data[1] as usize);
        let value = data.get(2..2 + len)?;
        if kind == UDATA_COMMENT {
            return Some(c_string(value));
        }
        data = &data[2 + len..];
    }
    None
}

/// One rule of a dump, if it is of an ip or ip6 table `cni_hostport`.
fn parse_rule(payload: &[u8]) -> Option<Listed> {
    let family = match *payload.first()? {
        NFPROTO_IPV4 => Family::V4,
        NFPROTO_IPV6 => Family::V6,
        _ => return None,
    };
    let mut table = None;
    let mut chain = None;
    let mut handle = None;
    let mut comment = None;
    for (kind, value) in attributes(payload.get(NFGENMSG..)?) {
        match kind {
            NFTA_RULE_TABLE => table = Some(c_string(value)),
            NFTA_RULE_CHAIN => chain = Some(c_string(value)),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(value.try_into().ok()?)),
            NFTA_RULE_USERDATA => comment = udata_find_comment(value),
            _ => {}
        }
    }
    if table.as_deref() != Some(TABLE) {
        return None;
    }
    Some(Listed {
        family,
        chain: chain?,
        handle: handle?,
        comment,
    })
}

/// The chains a dumped rule jumps or goes to (its immediate verdicts), whatever its table.
fn jump_targets(payload: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(attrs) = payload.get(NFGENMSG..) else {
        return out;
    };
    for (kind, exprs) in attributes(attrs) {
        if kind != NFTA_RULE_EXPRESSIONS {
            continue;
        }
        for (_, expr) in attributes(exprs) {
            let fields = attributes(expr);
            let immediate = fields
                .iter()
                .any(|(k, v)| *k == NFTA_EXPR_NAME && c_string(v) == "immediate");
            if !immediate {
                continue;
            }
            for (_, data) in fields.iter().filter(|(k, _)| *k == NFTA_EXPR_DATA) {
                for (_, value) in attributes(data)
                    .into_iter()
                    .filter(|(k, _)| *k == NFTA_IMMEDIATE_DATA)
                {
                    for (_, verdict) in attributes(value)
                        .into_iter()
                        .filter(|(k, _)| *k == NFTA_DATA_VERDICT)
                    {
                        out.extend(
                            attributes(verdict)
                                .into_iter()
                                .filter(|(k, _)| *k == NFTA_VERDICT_CHAIN)
                                .map(|(_, name)| c_string(name)),
                        );
                    }
                }
            }
        }
    }
    out
}

/// The name of a chain of a dump, if it is of table `cni_hostport`.
fn parse_chain(payload: &[u8]) -> Option<String> {
    let mut table = None;
    let mut name = None;
    for (kind, value) in attributes(payload.get(NFGENMSG..)?) {
        match kind {
            NFTA_CHAIN_TABLE => table = Some(c_string(value)),
            NFTA_CHAIN_NAME => name = Some(c_string(value)),
            _ => {}
        }
    }
    (table.as_deref() == Some(TABLE)).then_some(name).flatten()
}

/// What a dump asks for: the chains of table `cni_hostport`, or the rules of one of its
/// chains.
#[derive(Debug, Clone, Copy)]
enum Dump<'a> {
    Chains,
    /// The rules of chain `.1` of table `.0`: ours, or iptables-nft's `nat`.
    Rules(&'a str, &'a str),
}

/// The dump request of `what` in `family`.
fn dump_request(family: u8, seq: u32, what: Dump) -> Vec<u8> {
    let mut a = Attrs::default();
    let kind = match what {
        Dump::Chains => {
            a.str(NFTA_CHAIN_TABLE, TABLE);
            NFT_MSG_GETCHAIN
        }
        Dump::Rules(table, chain) => {
            a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
            NFT_MSG_GETRULE
        }
    };
    request(family, seq, kind, NLM_F_REQUEST | NLM_F_DUMP, &a)
}

/// A request for one object of our table (`NFT_MSG_GETCHAIN` or `NFT_MSG_GETRULE` without
/// a dump, its name or handle in `attrs`): the kernel answers with the object, or ENOENT.
fn get_request(family: u8, seq: u32, kind: u16, attrs: &Attrs) -> Vec<u8> {
    request(family, seq, kind, NLM_F_REQUEST, attrs)
}

/// One nf_tables request outside a batch: header, nfgenmsg, attributes.
fn request(family: u8, seq: u32, kind: u16, flags: u16, attrs: &Attrs) -> Vec<u8> {
    let len = HEADER + NFGENMSG + attrs.0.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, 0, 0]);
    out.extend_from_slice(&attrs.0);
    out
}

/// The handle of a chain of a dump or a get.
fn chain_handle(payload: &[u8]) -> Option<u64> {
    attributes(payload.get(NFGENMSG..)?)
        .into_iter()
        .find(|(kind, _)| *kind == NFTA_CHAIN_HANDLE)
        .and_then(|(_, value)| Some(u64::from_be_bytes(value.try_into().ok()?)))
}

/// One NETLINK_NETFILTER socket for everything an invocation does: the listing and the
/// transaction.
///
/// Closing such a socket (which process exit does too) waits for the kernel to release
/// the objects of recent transactions, which waits for an RCU grace period
/// (`nft_rcv_nl_event` flushes the nf_tables destroy work; about 10 ms on a small VM):
/// the larger part of a change's cost. So there is one socket, closed once, when the
/// invocation is done: ADD holds it while it flushes conntrack entries and sets
/// route_localnet, and the grace period passes meanwhile.
pub struct Session {
    /// `None` when the kernel has no nf_tables netlink: nothing can be ours.
    socket: Option<Socket>,
    seq: u32,
}

impl Session {
    pub fn open() -> Result<Session, String> {
        let socket = match socket() {
            Ok(s) => Some(s),
            Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => None,
            Err(e) => return Err(format!("nf_tables netlink: {e}")),
        };
        Ok(Session { socket, seq: 1 })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(n);
        seq
    }

    /// Our chains, both families, and the rules of those of them that are shared or in
    /// `chains`. No table is no chain.
    pub fn list(&mut self, chains: &[String]) -> Result<Listing, String> {
        let mut out = Listing::default();
        // Dumps per family: a dump filtered by table name stops after the first table of
        // that name, whatever its family.
        for family in [Family::V4, Family::V6] {
            let fail = |e: io::Error| format!("nf_tables dump ({}): {e}", family.name());
            let seq = self.next_seq(1);
            let Some(socket) = &self.socket else {
                return Ok(out);
            };
            let mut names = Vec::new();
            dump_family(socket, nfproto(family), seq, Dump::Chains, &mut |payload| {
                names.extend(parse_chain(payload));
            })
            .map_err(fail)?;
            let wanted = names
                .iter()
                .filter(|name| CONTAINER_CHAINS.contains(&name.as_str()) || chains.contains(name));
            for chain in wanted {
                let seq = self.next_seq(1);
                let Some(socket) = &self.socket else {
                    return Ok(out);
                };
                dump_family(
                    socket,
                    nfproto(family),
                    seq,
                    Dump::Rules(TABLE, chain),
                    &mut |p| {
                        out.rules.extend(parse_rule(p));
                    },
                )
                .map_err(fail)?;
            }
            out.chains
                .extend(names.into_iter().map(|name| (family, name)));
        }
        Ok(out)
    }

    /// One object of our table in `family`, by a get (`kind`, `what` naming it for
    /// errors): its payload, or `None` when it does not exist.
    fn get_one(
        &mut self,
        family: Family,
        kind: u16,
        attrs: &Attrs,
        what: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let seq = self.next_seq(1);
        let Some(socket) = &self.socket else {
            return Ok(None);
        };
        let fail = |e: io::Error| format!("nf_tables {what} ({}): {e}", family.name());
        let answer = match kind {
            NFT_MSG_GETCHAIN => NFT_MSG_NEWCHAIN,
            _ => NFT_MSG_NEWRULE,
        };
        socket
            .send(&get_request(nfproto(family), seq, kind, attrs), 0)
            .map_err(fail)?;
        loop {
            let (datagram, _) = socket.recv_from_full().map_err(fail)?;
            for (k, reply_seq, payload) in messages(&datagram) {
                if reply_seq != seq {
                    continue;
                }
                match k {
                    k if k == (NFNL_SUBSYS_NFTABLES << 8) | answer => {
                        return Ok(Some(payload.to_vec()))
                    }
                    NLMSG_ERROR => match error_code(payload) {
                        0 => {}
                        libc::ENOENT => return Ok(None),
                        errno => return Err(fail(io::Error::from_raw_os_error(errno))),
                    },
                    _ => {}
                }
            }
        }
    }

    /// The handle of our chain `name` in `family`, by one lookup whatever else the table
    /// holds; `None` when it does not exist.
    pub fn chain_handle(&mut self, family: Family, name: &str) -> Result<Option<u64>, String> {
        let mut a = Attrs::default();
        a.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
        let found = self.get_one(family, NFT_MSG_GETCHAIN, &a, &format!("chain {name}"))?;
        Ok(found.as_deref().and_then(chain_handle))
    }

    /// The rule of our chain `chain` with `handle`, by one lookup; `None` when there is none.
    pub fn rule(
        &mut self,
        family: Family,
        chain: &str,
        handle: u64,
    ) -> Result<Option<Listed>, String> {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, chain)
            .put(NFTA_RULE_HANDLE, &handle.to_be_bytes());
        let found = self.get_one(
            family,
            NFT_MSG_GETRULE,
            &a,
            &format!("rule {chain} {handle}"),
        )?;
        Ok(found.as_deref().and_then(parse_rule))
    }

    /// The rules of our chain `name` in `family` alone; none when it does not exist.
    pub fn rules_of(&mut self, family: Family, name: &str) -> Result<Vec<Listed>, String> {
        let seq = self.next_seq(1);
        let mut out = Vec::new();
        let Some(socket) = &self.socket else {
            return Ok(out);
        };
        dump_family(
            socket,
            nfproto(family),
            seq,
            Dump::Rules(TABLE, name),
            &mut |p| {
                out.extend(parse_rule(p));
            },
        )
        .map_err(|e| format!("nf_tables dump of {name} ({}): {e}", family.name()))?;
        Ok(out)
    }

    /// The chains the rules of `chain` in another table (`nat`, as iptables-nft keeps it)
    /// jump to, each rule's in turn; empty when the table or chain does not exist.
    pub fn foreign_jumps(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Vec<Vec<String>>, String> {
        let seq = self.next_seq(1);
        let mut out = Vec::new();
        let Some(socket) = &self.socket else {
            return Ok(out);
        };
        dump_family(
            socket,
            nfproto(family),
            seq,
            Dump::Rules(table, chain),
            &mut |p| out.push(jump_targets(p)),
        )
        .map_err(|e| format!("nf_tables dump of {table} {chain} ({}): {e}", family.name()))?;
        Ok(out)
    }

    /// Applies `ops` as one transaction: all or nothing.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), String> {
        let mut batch = Batch::new(self.seq, true);
        for op in ops {
            batch.push(op)?;
        }
        let (bytes, what, begin) = batch.finish();
        self.next_seq(what.len() as u32 + 2);
        if what.is_empty() {
            return Ok(());
        }
        let socket = self
            .socket
            .as_ref()
            .ok_or("nf_tables netlink: not supported by this kernel")?;
        // The kernel applies a batch only when it arrives whole, in one datagram (one
        // skb: `nfnetlink_rcv_batch` aborts a batch whose END is not in the same skb as its
        // BEGIN), so a large transaction cannot be split over several sends: the send
        // buffer must hold all of it (netlink refuses a datagram larger than the buffer
        // with EMSGSIZE). The receive buffer must hold an error for every change that
        // fails, or they are dropped. nft sizes both the same way.
        size_buffers(socket, bytes.len(), what.len());
        socket.send(&bytes, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::EMSGSIZE) => format!(
                "nf_tables batch of {} bytes ({} changes) is larger than the socket's send \
                 buffer could be made: {e}",
                bytes.len(),
                what.len()
            ),
            _ => format!("nf_tables batch: {e}"),
        })?;
        let last = what.keys().next_back().copied().unwrap_or(begin);
        let mut answered = false;
        let mut first_error: Option<String> = None;
        while !answered {
            let (datagram, _) = socket
                .recv_from_full()
                .map_err(|e| format!("nf_tables batch: {e}"))?;
            for (kind, seq, payload) in messages(&datagram) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let errno = error_code(payload);
                if seq == begin {
                    // The batch as a whole was refused (permission, memory, commit).
                    if errno != 0 {
                        return Err(format!(
                            "nf_tables batch: {}",
                            io::Error::from_raw_os_error(errno)
                        ));
                    }
                    continue;
                }
                answered |= seq == last;
                if errno != 0 && first_error.is_none() {
                    first_error = Some(format!(
                        "{}: {}",
                        what.get(&seq).map(String::as_str).unwrap_or("nf_tables"),
                        io::Error::from_raw_os_error(errno)
                    ));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs one dump, handing each object's payload to `each`.
fn dump_family(
    socket: &Socket,
    family: u8,
    seq: u32,
    what: Dump,
    each: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let want = match what {
        Dump::Chains => NFT_MSG_NEWCHAIN,
        Dump::Rules(..) => NFT_MSG_NEWRULE,
    };
    socket.send(&dump_request(family, seq, what), 0)?;
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        for (kind, reply_seq, payload) in messages(&datagram) {
            if reply_seq != seq {
                // A late answer to an earlier request of this socket.
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    return match error_code(payload) {
                        0 | libc::ENOENT | libc::EOPNOTSUPP => Ok(()),
                        errno => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | want => each(payload),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nftables::Hook;

    /// `strace -e write=3 nft -f` (nft 1.0.6) of this script; the last delete's handle did
    /// not exist, which does not change what was sent:
    ///
    /// ```text
    /// add table ip cni_hostport { comment "CNI portmap plugin" ; }
    /// add chain ip cni_hostport hostports
    /// add chain ip cni_hostport hostports_all
    /// flush chain ip cni_hostport hostports_all
    /// add rule ip cni_hostport hostports_all jump hostports
    /// add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
    /// flush chain ip cni_hostport prerouting
    /// add rule ip cni_hostport prerouting fib daddr type local jump hostports_all
    /// add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
    /// add rule ip cni_hostport hostports ip daddr 192.168.0.2 udp dport 8081 dnat to 10.0.0.2:81 comment "c1"
    /// add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "c1"
    /// add table ip6 cni_hostport { comment "CNI portmap plugin" ; }
    /// add chain ip6 cni_hostport hostports
    /// add rule ip6 cni_hostport hostports sctp dport 8080 dnat to [fd00::2]:80 comment "c1"
    /// delete rule ip cni_hostport hostports handle 3
    /// ```
    const CAPTURED: &[&str] = &[
        "140000001000010000000000000000000000000a4c000000000a010001000000000000000200000011000100636e695f",
        "686f7374706f7274000000000800020000000000190006000013434e4920706f72746d617020706c7567696e00000000",
        "38000000030a010402000000000000000200000011000100636e695f686f7374706f7274000000000e000300686f7374",
        "706f7274730000003c000000030a010403000000000000000200000011000100636e695f686f7374706f727400000000",
        "12000300686f7374706f7274735f616c6c0000003c000000080a010004000000000000000200000011000100636e695f",
        "686f7374706f72740000000012000200686f7374706f7274735f616c6c00000080000000060a010c0500000000000000",
        "0200000011000100636e695f686f7374706f72740000000012000200686f7374706f7274735f616c6c00000044000480",
        "400001800e000100696d6d6564696174650000002c0002800800010000000000200002801c00028008000100fffffffd",
        "0e000200686f7374706f72747300000054000000030a010406000000000000000200000011000100636e695f686f7374",
        "706f7274000000000f000300707265726f7574696e670000080007006e61740014000480080001000000000008000200",
        "ffffff9c38000000080a010007000000000000000200000011000100636e695f686f7374706f7274000000000f000200",
        "707265726f7574696e670000d4000000060a010c08000000000000000200000011000100636e695f686f7374706f7274",
        "000000000f000200707265726f7574696e6700009c0004802800018008000100666962001c0002800800030000000002",
        "080002000000000308000100000000012c00018008000100636d70002000028008000100000000010800020000000000",
        "0c0003800800010002000000440001800e000100696d6d65646961746500000030000280080001000000000024000280",
        "2000028008000100fffffffd12000200686f7374706f7274735f616c6c00000058000000030a01040900000000000000",
        "0200000011000100636e695f686f7374706f727400000000110003006d6173717565726164696e670000000008000700",
        "6e6174001400048008000100000000040800020000000064e8010000060a010c0a000000000000000200000011000100",
        "636e695f686f7374706f7274000000000e000200686f7374706f727473000000a4010480340001800c0001007061796c",
        "6f6164002400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100",
        "636d700020000280080001000000000108000200000000000c00038008000100c0a8000224000180090001006d657461",
        "0000000014000280080002000000001008000100000000012c00018008000100636d7000200002800800010000000001",
        "08000200000000000c0003800500010011000000340001800c0001007061796c6f616400240002800800010000000001",
        "0800020000000002080003000000000208000400000000022c00018008000100636d7000200002800800010000000001",
        "08000200000000000c000380060001001f9100002c0001800e000100696d6d6564696174650000001800028008000100",
        "000000010c000280080001000a0000022c0001800e000100696d6d656469617465000000180002800800010000000002",
        "0c000280060001000051000038000180080001006e6174002c0002800800010000000001080002000000000208000300",
        "000000010800050000000002080007000000000209000700000363310000000020010000060a010c0b00000000000000",
        "0200000011000100636e695f686f7374706f727400000000110002006d6173717565726164696e6700000000d8000480",
        "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400",
        "000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001007f000001",
        "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400",
        "000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001000a000002",
        "14000180090001006d61737100000000040002800900070000036331000000004c000000000a01000c00000000000000",
        "0a00000011000100636e695f686f7374706f7274000000000800020000000000190006000013434e4920706f72746d61",
        "7020706c7567696e0000000038000000030a01040d000000000000000a00000011000100636e695f686f7374706f7274",
        "000000000e000300686f7374706f72747300000094010000060a010c0e000000000000000a00000011000100636e695f",
        "686f7374706f7274000000000e000200686f7374706f7274730000005001048024000180090001006d65746100000000",
        "14000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200",
        "000000000c0003800500010084000000340001800c0001007061796c6f61640024000280080001000000000108000200",
        "00000002080003000000000208000400000000022c00018008000100636d700020000280080001000000000108000200",
        "000000000c000380060001001f900000380001800e000100696d6d656469617465000000240002800800010000000001",
        "1800028014000100fd0000000000000000000000000000022c0001800e000100696d6d65646961746500000018000280",
        "08000100000000020c000280060001000050000038000180080001006e6174002c000280080001000000000108000200",
        "0000000a08000300000000010800050000000002080007000000000209000700000363310000000044000000080a0100",
        "0f000000000000000200000011000100636e695f686f7374706f7274000000000e000200686f7374706f727473000000",
        "0c0003000000000000000003140000001100010010000000000000000000000a",
    ];

    fn unhex(lines: &[&str]) -> Vec<u8> {
        let text: String = lines.concat();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn captured_ops() -> Vec<Op> {
        let v4 = Family::V4;
        let v6 = Family::V6;
        let chain = |family, name: &str| Op::AddChain {
            family,
            name: name.into(),
            hook: None,
        };
        vec![
            Op::AddTable(v4),
            chain(v4, "hostports"),
            chain(v4, "hostports_all"),
            Op::Flush {
                family: v4,
                chain: "hostports_all".into(),
            },
            Op::AddRule {
                family: v4,
                chain: "hostports_all".into(),
                rule: Rule::Jump("hostports"),
            },
            Op::AddChain {
                family: v4,
                name: "prerouting".into(),
                hook: Some(Hook::Prerouting),
            },
            Op::Flush {
                family: v4,
                chain: "prerouting".into(),
            },
            Op::AddRule {
                family: v4,
                chain: "prerouting".into(),
                rule: Rule::Hook {
                    conditions: String::new(),
                },
            },
            Op::AddChain {
                family: v4,
                name: "masquerading".into(),
                hook: Some(Hook::Postrouting),
            },
            Op::AddRule {
                family: v4,
                chain: "hostports".into(),
                rule: Rule::Dnat {
                    daddr: Some("192.168.0.2".parse().unwrap()),
                    protocol: Protocol::Udp,
                    port: 8081,
                    to: "10.0.0.2".parse().unwrap(),
                    to_port: 81,
                    comment: "c1".into(),
                },
            },
            Op::AddRule {
                family: v4,
                chain: "masquerading".into(),
                rule: Rule::Masquerade {
                    saddr: "127.0.0.1".parse().unwrap(),
                    daddr: "10.0.0.2".parse().unwrap(),
                    comment: "c1".into(),
                },
            },
            Op::AddTable(v6),
            chain(v6, "hostports"),
            Op::AddRule {
                family: v6,
                chain: "hostports".into(),
                rule: Rule::Dnat {
                    daddr: None,
                    protocol: Protocol::Sctp,
                    port: 8080,
                    to: "fd00::2".parse().unwrap(),
                    to_port: 80,
                    comment: "c1".into(),
                },
            },
            Op::DelRule(Listed {
                family: v4,
                chain: "hostports".into(),
                handle: 3,
                comment: None,
            }),
        ]
    }

    #[test]
    fn batch_is_byte_for_byte_what_nft_sends() {
        let mut batch = Batch::new(0, false);
        for op in captured_ops() {
            batch.push(&op).unwrap();
        }
        let (bytes, what, begin) = batch.finish();
        assert_eq!(begin, 0);
        assert_eq!(what.len(), 15);
        let want = unhex(CAPTURED);
        assert_eq!(bytes.len(), want.len());
        // Message by message, for a readable failure.
        let got: Vec<_> = messages(&bytes)
            .into_iter()
            .map(|(k, s, p)| (k, s, p.to_vec()))
            .collect();
        let expected: Vec<_> = messages(&want)
            .into_iter()
            .map(|(k, s, p)| (k, s, p.to_vec()))
            .collect();
        assert_eq!(got.len(), 17);
        for (g, w) in got.iter().zip(&expected) {
            assert_eq!(g, w);
        }
        assert_eq!(bytes, want);
    }

    #[test]
    fn acked_batches_flag_every_change_and_refuse_conditions() {
        let mut batch = Batch::new(7, true);
        batch.push(&Op::AddTable(Family::V4)).unwrap();
        batch.push(&Op::AddTable(Family::V6)).unwrap();
        let (bytes, what, begin) = batch.finish();
        assert_eq!(begin, 7);
        assert_eq!(what.keys().copied().collect::<Vec<_>>(), [8, 9]);
        assert_eq!(messages(&bytes).len(), 4);
        // BATCH_BEGIN is 20 bytes, each NEWTABLE 76: only the last change asks for an ACK.
        let flags_at = |at: usize| u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]);
        assert_eq!(flags_at(20), NLM_F_REQUEST);
        assert_eq!(flags_at(20 + 76), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(flags_at(20 + 76 + 76), NLM_F_REQUEST);
        let hook = Op::AddRule {
            family: Family::V4,
            chain: "prerouting".into(),
            rule: Rule::Hook {
                conditions: "ip saddr 10.0.0.0/8".into(),
            },
        };
        assert!(!expressible(&[hook]));
        assert!(expressible(&captured_ops()));
        assert!(udata_comment(&"x".repeat(300)).is_err());
    }

    #[test]
    fn parses_dumped_rules_of_our_tables_only() {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, "hostports")
            .put(NFTA_RULE_HANDLE, &9u64.to_be_bytes())
            .nest(NFTA_RULE_EXPRESSIONS, |_| {})
            .put(NFTA_RULE_USERDATA, &udata_comment("c1").unwrap());
        let mut payload = vec![NFPROTO_IPV6, 0, 0, 0];
        payload.extend_from_slice(&a.0);
        assert_eq!(
            parse_rule(&payload),
            Some(Listed {
                family: Family::V6,
                chain: "hostports".into(),
                handle: 9,
                comment: Some("c1".into()),
            })
        );
        payload[0] = 1; // inet
        assert_eq!(parse_rule(&payload), None);
        let mut other = Attrs::default();
        other
            .str(NFTA_RULE_TABLE, "nat")
            .str(NFTA_RULE_CHAIN, "hostports")
            .put(NFTA_RULE_HANDLE, &9u64.to_be_bytes());
        let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
        payload.extend_from_slice(&other.0);
        assert_eq!(parse_rule(&payload), None);
        assert_eq!(parse_rule(&[2, 0]), None);
        assert_eq!(udata_find_comment(&[0, 9, b'a']), None);
        assert_eq!(
            udata_find_comment(&[1, 1, 0, 0, 2, b'x', 0]),
            Some("x".into())
        );
        assert_eq!(dump_request(NFPROTO_IPV6, 1, Dump::Chains).len(), 40);
        let mut chain = Attrs::default();
        chain
            .str(NFTA_CHAIN_TABLE, TABLE)
            .str(NFTA_CHAIN_NAME, "pod_c1");
        let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
        payload.extend_from_slice(&chain.0);
        assert_eq!(parse_chain(&payload), Some("pod_c1".into()));
    }
}

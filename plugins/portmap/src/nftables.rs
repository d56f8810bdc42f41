//! The nftables backend, laid out as the reference's (v1.9) one but for one chain per
//! container: tables `ip cni_hostport` and `ip6 cni_hostport`; chain `hostports` jumps to
//! each container's chain `pod_<id>`, which holds its DNAT rules, and its masquerade rules
//! are in `masquerading`, each rule commented with the container id; hooks `prerouting`
//! and `output` jump to `hostports_all` for local destinations only (`fib daddr type
//! local`), so transit traffic is never touched.
//!
//! Why a chain per container: the kernel finds a rule to delete by walking its chain from
//! the start, so deleting a container's rules one handle at a time from a chain shared
//! with all of them costs time quadratic in their number (6 s for 20,000 mappings).
//! Flushing and deleting the container's own chain costs time in proportion to its rules,
//! and DEL never reads them. DNAT rules of the shared layout (written before) are still
//! found by their comment and removed.
//!
//! On a node already set up (its skeleton carries the marker of these settings, see
//! [`skeleton_marker`]), ADD adds and DEL deletes without reading other containers' rules:
//! ADD commits additions only, DEL finds the container's rules in the shared chains by
//! handle from its own chain's. Otherwise, a change is a list of [`Op`]s applied as one
//! transaction (all or nothing), preceded by a listing of our chains and of the rules of
//! the shared ones, to find the handles of the container's existing rules. Both go
//! over nf_tables netlink in process ([`crate::nft_netlink`]); `nft -f -` (and
//! `nft -j list ruleset`) is used instead for hook conditions, which are nft syntax only
//! nft can compile, and for everything when `PORTMAP_NFTABLES_VIA=nft` is set.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::config::Settings;
use crate::model::{Container, Family, Mapping, Protocol};
use crate::tool::{self, ToolError};

pub const TABLE: &str = "cni_hostport";

/// A rule of our tables, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub family: Family,
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// The shared chains whose rules belong to containers (by comment).
pub const CONTAINER_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

/// What the chain of a container's DNAT rules is named after.
pub const POD_PREFIX: &str = "pod_";

/// The longest chain name nftables takes (`NFT_NAME_MAXLEN` less its NUL).
const CHAIN_NAME_MAX: usize = 255;

/// The chain of container `id`'s DNAT rules: `pod_<id>`, readable in `nft list`. An id
/// too long for a chain name gives `pod_/` and a digest instead: `/` is in no container
/// id, so the two forms never meet, and nft reads both unquoted (it takes no quoted chain
/// name).
pub fn pod_chain(id: &str) -> String {
    if POD_PREFIX.len() + id.len() <= CHAIN_NAME_MAX {
        return format!("{POD_PREFIX}{id}");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{POD_PREFIX}/{hex}")
}

/// Our chains and the rules of the chains that were listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub chains: Vec<(Family, String)>,
    pub rules: Vec<Listed>,
}

impl Listing {
    pub fn has_chain(&self, family: Family, name: &str) -> bool {
        self.chains.iter().any(|(f, n)| *f == family && n == name)
    }
}

fn keyword(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn family_of(item: &Value) -> Option<Family> {
    match item.get("family").and_then(Value::as_str)? {
        "ip" => Some(Family::V4),
        "ip6" => Some(Family::V6),
        _ => None,
    }
}

/// The chains and rules of our two tables in `nft -j list ruleset` output.
pub fn parse_listing(json: &str) -> Result<Listing, String> {
    if json.trim().is_empty() {
        return Ok(Listing::default());
    }
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j list ruleset: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft -j list ruleset: no \"nftables\" list")?;
    let ours = |item: &&Value| item.get("table").and_then(Value::as_str) == Some(TABLE);
    let chains = items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(ours)
        .filter_map(|chain| Some((family_of(chain)?, chain.get("name")?.as_str()?.to_string())))
        .collect();
    let rules = items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(ours)
        .filter_map(|rule| {
            let family = family_of(rule)?;
            Some(Listed {
                family,
                chain: rule.get("chain")?.as_str()?.to_string(),
                handle: rule.get("handle")?.as_u64()?,
                comment: rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect();
    Ok(Listing { chains, rules })
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The table's comment.
pub const COMMENT: &str = "CNI portmap plugin";

/// The base chains: all nat, at the priorities of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }

    /// `enum nf_inet_hooks`.
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => crate::nft_netlink::NF_INET_PRE_ROUTING,
            Hook::Output => crate::nft_netlink::NF_INET_LOCAL_OUT,
            Hook::Postrouting => crate::nft_netlink::NF_INET_POST_ROUTING,
        }
    }

    pub fn priority(self) -> i32 {
        match self {
            Hook::Prerouting | Hook::Output => -100,
            Hook::Postrouting => 100,
        }
    }
}

/// A rule of our tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `jump <chain>`.
    Jump(&'static str),
    /// `jump <chain> comment <id>`: from `hostports` to a container's own chain.
    Pod { chain: String, comment: String },
    /// `<conditions> fib daddr type local jump hostports_all`: the entry from a hook.
    Hook { conditions: String },
    /// `[ip daddr <daddr>] <proto> dport <port> dnat to <to>:<to_port> comment <id>`.
    Dnat {
        daddr: Option<IpAddr>,
        protocol: Protocol,
        port: u16,
        to: IpAddr,
        to_port: u16,
        comment: String,
    },
    /// `ip saddr <saddr> ip daddr <daddr> masquerade comment <id>`.
    Masquerade {
        saddr: IpAddr,
        daddr: IpAddr,
        comment: String,
    },
}

impl Rule {
    fn text(&self, family: Family) -> String {
        let f = keyword(family);
        match self {
            Rule::Jump(chain) => format!("jump {chain}"),
            Rule::Pod { chain, comment } => format!("jump {chain} comment {}", quote(comment)),
            Rule::Hook { conditions } => {
                let sep = if conditions.is_empty() { "" } else { " " };
                format!("{conditions}{sep}fib daddr type local jump hostports_all")
            }
            Rule::Dnat {
                daddr,
                protocol,
                port,
                to,
                to_port,
                comment,
            } => {
                let daddr = daddr.map(|h| format!("{f} daddr {h} ")).unwrap_or_default();
                let to = match to {
                    IpAddr::V4(ip) => format!("{ip}:{to_port}"),
                    IpAddr::V6(ip) => format!("[{ip}]:{to_port}"),
                };
                format!(
                    "{daddr}{} dport {port} dnat to {to} comment {}",
                    protocol.as_str(),
                    quote(comment)
                )
            }
            Rule::Masquerade {
                saddr,
                daddr,
                comment,
            } => format!(
                "{f} saddr {saddr} {f} daddr {daddr} masquerade comment {}",
                quote(comment)
            ),
        }
    }
}

/// One change of a transaction, as both the nft script line and the netlink message
/// ([`crate::nft_netlink`]) say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddTable(Family),
    AddChain {
        family: Family,
        name: String,
        hook: Option<Hook>,
    },
    Flush {
        family: Family,
        chain: String,
    },
    /// Of a chain that is empty by then and that nothing jumps to.
    DelChain {
        family: Family,
        name: String,
    },
    AddRule {
        family: Family,
        chain: String,
        rule: Rule,
    },
    DelRule(Listed),
}

impl Op {
    /// The line of an `nft -f` script.
    pub fn text(&self) -> String {
        match self {
            Op::AddTable(family) => format!(
                "add table {} {TABLE} {{ comment {} ; }}",
                keyword(*family),
                quote(COMMENT)
            ),
            Op::AddChain { family, name, hook } => {
                let base = hook
                    .map(|h| {
                        format!(
                            " {{ type nat hook {} priority {} ; }}",
                            h.name(),
                            h.priority()
                        )
                    })
                    .unwrap_or_default();
                format!("add chain {} {TABLE} {name}{base}", keyword(*family))
            }
            Op::Flush { family, chain } => {
                format!("flush chain {} {TABLE} {chain}", keyword(*family))
            }
            Op::DelChain { family, name } => {
                format!("delete chain {} {TABLE} {name}", keyword(*family))
            }
            Op::AddRule {
                family,
                chain,
                rule,
            } => format!(
                "add rule {} {TABLE} {chain} {}",
                keyword(*family),
                rule.text(*family)
            ),
            Op::DelRule(rule) => format!(
                "delete rule {} {TABLE} {} handle {}",
                keyword(rule.family),
                rule.chain,
                rule.handle
            ),
        }
    }
}

/// The `nft -f` script of a transaction.
pub fn render(ops: &[Op]) -> String {
    ops.iter().map(|op| op.text() + "\n").collect()
}

/// Deletes every container rule of the shared chains whose comment `stale` selects (the
/// jumps to the containers' chains among them), then every container chain that
/// `stale_chain` selects, emptied first.
fn delete_into(
    out: &mut Vec<Op>,
    existing: &Listing,
    families: &[Family],
    stale: impl Fn(&str) -> bool,
    stale_chain: impl Fn(&str) -> bool,
) {
    for rule in &existing.rules {
        let Some(comment) = &rule.comment else {
            continue;
        };
        if families.contains(&rule.family)
            && CONTAINER_CHAINS.contains(&rule.chain.as_str())
            && stale(comment)
        {
            out.push(Op::DelRule(rule.clone()));
        }
    }
    // After the jumps: a chain something still jumps to cannot be deleted.
    for (family, name) in &existing.chains {
        if families.contains(family) && name.starts_with(POD_PREFIX) && stale_chain(name) {
            out.push(Op::Flush {
                family: *family,
                chain: name.clone(),
            });
            out.push(Op::DelChain {
                family: *family,
                name: name.clone(),
            });
        }
    }
}

pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

/// What the name of the skeleton's marker chain starts with.
const MARKER_PREFIX: &str = "skeleton_";

/// The skeleton's marker: an empty chain named after what the skeleton depends on (the
/// hook conditions, whether there is masquerading, this layout's version), created in the
/// transaction that writes the skeleton when no rule of the shared layout is left. An ADD
/// that finds the marker of its own settings knows the skeleton is as it would write it,
/// and that nothing of an earlier layout needs removing, without reading or rewriting it: rewriting
/// it (flushing the hook chains) is a change the kernel must release after an RCU grace
/// period, which the invocation would wait for on exit.
pub fn skeleton_marker(settings: &Settings, family: Family) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(b"v1\0");
    digest.update(settings.conditions(family).join(" ").as_bytes());
    digest.update(if settings.snat { b"\0snat" } else { b"\0none" });
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{MARKER_PREFIX}{hex}")
}

/// Whether rules of the shared layout (a container's DNAT rules among everyone's, from
/// before each container had a chain) are left in `family` once container `id`'s are
/// deleted: a rule of `hostip_hostports`, or one of `hostports` with no chain of its
/// container to jump to.
fn shared_layout_left(existing: &Listing, family: Family, id: &str) -> bool {
    existing.rules.iter().any(|r| {
        let Some(comment) = &r.comment else {
            return false;
        };
        r.family == family
            && comment != id
            && (r.chain == "hostip_hostports"
                || (r.chain == "hostports" && !existing.has_chain(family, &pod_chain(comment))))
    })
}

/// ADD on a node whose skeleton carries this config's marker, for a container with no
/// chain yet: only additions (the container's chain, its rules, the jump to it and its
/// masquerade rules), so the transaction leaves the kernel nothing to release. Where the
/// skeleton is not what the marker says after all, a rule's chain is missing and the
/// transaction fails whole.
pub fn add_only_script(
    settings: &Settings,
    containers: &[Container],
    mappings: &[Mapping],
) -> Vec<Op> {
    containers
        .iter()
        .flat_map(|c| container_ops(settings, c, mappings))
        // A new chain has nothing to flush.
        .filter(|op| !matches!(op, Op::Flush { .. }))
        .collect()
}

/// ADD: the skeleton of each table the container needs (hooks rewritten with the current
/// conditions), the container's previous rules deleted, its new ones added.
pub fn add_script(
    existing: &Listing,
    settings: &Settings,
    containers: &[Container],
    mappings: &[Mapping],
) -> Vec<Op> {
    let mut out = Vec::new();
    for c in containers {
        let family = c.family();
        out.push(Op::AddTable(family));
        for name in ["hostports", "hostip_hostports", "hostports_all"] {
            out.push(Op::AddChain {
                family,
                name: name.into(),
                hook: None,
            });
        }
        out.push(Op::Flush {
            family,
            chain: "hostports_all".into(),
        });
        for target in ["hostip_hostports", "hostports"] {
            out.push(Op::AddRule {
                family,
                chain: "hostports_all".into(),
                rule: Rule::Jump(target),
            });
        }
        let conditions = settings.conditions(family).join(" ");
        for hook in [Hook::Prerouting, Hook::Output] {
            let chain = hook.name();
            out.push(Op::AddChain {
                family,
                name: chain.into(),
                hook: Some(hook),
            });
            out.push(Op::Flush {
                family,
                chain: chain.into(),
            });
            out.push(Op::AddRule {
                family,
                chain: chain.into(),
                rule: Rule::Hook {
                    conditions: conditions.clone(),
                },
            });
        }
        if settings.snat {
            out.push(Op::AddChain {
                family,
                name: "masquerading".into(),
                hook: Some(Hook::Postrouting),
            });
        }
        let marker = skeleton_marker(settings, family);
        // Kept only while no rule of the shared layout is left: ADD-only would leave
        // such rules of a container added again in place.
        let keep = !shared_layout_left(existing, family, &c.id);
        for (f, name) in &existing.chains {
            if *f == family && name.starts_with(MARKER_PREFIX) && (*name != marker || !keep) {
                out.push(Op::DelChain {
                    family,
                    name: name.clone(),
                });
            }
        }
        if keep {
            out.push(Op::AddChain {
                family,
                name: marker,
                hook: None,
            });
        }
    }
    let families: Vec<Family> = containers.iter().map(Container::family).collect();
    let id = containers
        .first()
        .map(|c| c.id.as_str())
        .unwrap_or_default();
    // The container's own chain is kept and emptied below: the jump to it goes, and comes
    // back after its new rules.
    delete_into(&mut out, existing, &families, |c| c == id, |_| false);
    for c in containers {
        out.extend(container_ops(settings, c, mappings));
    }
    out
}

/// The container's chain and rules in one family.
pub fn container_ops(settings: &Settings, c: &Container, mappings: &[Mapping]) -> Vec<Op> {
    let family = c.family();
    let ip = c.ip.ip();
    let chain = pod_chain(&c.id);
    let mut out = vec![
        Op::AddChain {
            family,
            name: chain.clone(),
            hook: None,
        },
        Op::Flush {
            family,
            chain: chain.clone(),
        },
    ];
    for m in mappings.iter().filter(|m| m.applies_to(family)) {
        out.push(Op::AddRule {
            family,
            chain: chain.clone(),
            rule: Rule::Dnat {
                daddr: m.host_ip_match(),
                protocol: m.protocol,
                port: m.host_port,
                to: ip,
                to_port: m.container_port,
                comment: c.id.clone(),
            },
        });
    }
    out.push(Op::AddRule {
        family,
        chain: "hostports".into(),
        rule: Rule::Pod {
            chain,
            comment: c.id.clone(),
        },
    });
    if settings.snat {
        let mut sources = vec![ip];
        if family == Family::V4 {
            sources.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        for saddr in sources {
            out.push(Op::AddRule {
                family,
                chain: "masquerading".into(),
                rule: Rule::Masquerade {
                    saddr,
                    daddr: ip,
                    comment: c.id.clone(),
                },
            });
        }
    }
    out
}

/// The container's rules in one family, as `add rule` lines.
pub fn container_rules(settings: &Settings, c: &Container, mappings: &[Mapping]) -> Vec<String> {
    container_ops(settings, c, mappings)
        .iter()
        .map(Op::text)
        .collect()
}

/// DEL: every rule and chain of the container, in both families.
pub fn del_script(existing: &Listing, container_id: &str) -> Vec<Op> {
    let mut out = Vec::new();
    let chain = pod_chain(container_id);
    delete_into(
        &mut out,
        existing,
        &BOTH,
        |comment| comment == container_id,
        |name| name == chain,
    );
    out
}

/// GC: every container rule and chain whose container is not kept.
pub fn gc_script(existing: &Listing, keep: &[&str]) -> Vec<Op> {
    let mut out = Vec::new();
    let kept: Vec<String> = keep.iter().map(|id| pod_chain(id)).collect();
    delete_into(
        &mut out,
        existing,
        &BOTH,
        |comment| !keep.contains(&comment),
        |name| !kept.iter().any(|k| k == name),
    );
    out
}

/// CHECK for one family: as many DNAT rules as mappings of the family, and the masquerade
/// rules when snat.
pub fn check(
    existing: &Listing,
    settings: &Settings,
    c: &Container,
    mappings: &[Mapping],
) -> Result<(), String> {
    let family = c.family();
    let count = |chain: &str| {
        existing
            .rules
            .iter()
            .filter(|r| r.family == family && r.chain == chain)
            .filter(|r| r.comment.as_deref() == Some(c.id.as_str()))
            .count()
    };
    let want = mappings.iter().filter(|m| m.applies_to(family)).count();
    let chain = pod_chain(&c.id);
    let have = if existing.has_chain(family, &chain) {
        if count("hostports") == 0 {
            return Err(format!(
                "{} {TABLE}: nothing jumps to {chain}, the chain of container {}",
                keyword(family),
                c.id
            ));
        }
        count(&chain)
    } else {
        // Written in the shared layout, before chains per container.
        count("hostports")
    };
    if have < want {
        return Err(format!(
            "{} {TABLE}: {have} of {want} DNAT rules of container {} found",
            keyword(family),
            c.id
        ));
    }
    if settings.snat {
        let want = if family == Family::V4 { 2 } else { 1 };
        let have = count("masquerading");
        if have < want {
            return Err(format!(
                "{} {TABLE}: {have} of {want} masquerade rules of container {} found",
                keyword(family),
                c.id
            ));
        }
    }
    Ok(())
}

/// The switch to the `nft` binary for every change and listing.
pub const VIA_ENV: &str = "PORTMAP_NFTABLES_VIA";

fn via_nft() -> bool {
    std::env::var(VIA_ENV).is_ok_and(|v| v == "nft")
}

/// Where an invocation's listings and changes go: nf_tables netlink, or the nft binary
/// ([`VIA_ENV`]). Dropping it may wait for the kernel (see [`crate::nft_netlink::Session`]).
pub struct Session(Option<crate::nft_netlink::Session>);

impl Session {
    pub fn open() -> Result<Session, ToolError> {
        if via_nft() {
            Ok(Session(None))
        } else {
            Ok(Session(Some(crate::nft_netlink::Session::open()?)))
        }
    }

    /// Our chains, and the rules of the shared ones and of `chains` (by netlink; nft
    /// lists every rule).
    pub fn list(&mut self, chains: &[String]) -> Result<Listing, ToolError> {
        match &mut self.0 {
            Some(netlink) => Ok(netlink.list(chains)?),
            None => list_nft().map(Option::unwrap_or_default),
        }
    }

    /// Whether our table in `family` has chain `name`, by one lookup. Through nft, which
    /// has no such lookup, never: the caller then lists.
    pub fn has_chain(&mut self, family: Family, name: &str) -> Result<bool, ToolError> {
        Ok(self.chain_handle(family, name)?.is_some())
    }

    /// The handle of our chain `name` in `family`, by one lookup (none through nft).
    pub fn chain_handle(&mut self, family: Family, name: &str) -> Result<Option<u64>, ToolError> {
        match &mut self.0 {
            Some(netlink) => Ok(netlink.chain_handle(family, name)?),
            None => Ok(None),
        }
    }

    /// The rule of our chain `chain` with `handle`, by one lookup (none through nft).
    pub fn rule(
        &mut self,
        family: Family,
        chain: &str,
        handle: u64,
    ) -> Result<Option<Listed>, ToolError> {
        match &mut self.0 {
            Some(netlink) => Ok(netlink.rule(family, chain, handle)?),
            None => Ok(None),
        }
    }

    /// The rules of our chain `name` in `family` alone (none through nft).
    pub fn rules_of(&mut self, family: Family, name: &str) -> Result<Vec<Listed>, ToolError> {
        match &mut self.0 {
            Some(netlink) => Ok(netlink.rules_of(family, name)?),
            None => Ok(Vec::new()),
        }
    }

    /// Applies `ops` as one transaction.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), ToolError> {
        match &mut self.0 {
            Some(netlink) if crate::nft_netlink::expressible(ops) => {
                log::debug!("nf_tables batch:\n{}", render(ops));
                Ok(netlink.apply(ops)?)
            }
            _ => {
                let script = render(ops);
                log::debug!("nft -f:\n{script}");
                apply_nft(&script)
            }
        }
    }
}

/// `nft -j list ruleset`. `Ok(None)` when nft is not installed (nothing can be ours).
pub fn list_nft() -> Result<Option<Listing>, ToolError> {
    let out = match tool::run("nft", &["-j", "list", "ruleset"], b"") {
        Ok(out) => out,
        Err(e) if e.not_installed() => return Ok(None),
        Err(e) => return Err(e),
    };
    if !out.status.success() {
        return Err(ToolError::Failed(format!(
            "nft -j list ruleset: {}",
            out.stderr
        )));
    }
    Ok(Some(parse_listing(&out.stdout)?))
}

/// `nft -f -` fed `script`: one transaction.
pub fn apply_nft(script: &str) -> Result<(), ToolError> {
    let out = tool::run("nft", &["-f", "-"], script.as_bytes())?;
    if !out.status.success() {
        return Err(ToolError::Failed(format!("nft -f: {}", out.stderr)));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::model::Protocol;

    fn settings(snat: bool) -> Settings {
        Settings {
            backend: Backend::Nftables,
            snat,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec![],
            conditions_v6: vec!["ip6".into(), "saddr".into(), "fd00::/8".into()],
        }
    }

    fn mappings() -> Vec<Mapping> {
        vec![
            Mapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            Mapping {
                host_port: 8081,
                container_port: 81,
                protocol: Protocol::Udp,
                host_ip: Some("192.168.0.2".parse().unwrap()),
            },
        ]
    }

    fn container(ip: &str) -> Container {
        Container {
            network: "net".into(),
            id: "c1".into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn v4_rules_with_masquerade() {
        let got = container_rules(&settings(true), &container("10.0.0.2/24"), &mappings());
        assert_eq!(
            got,
            [
                "add chain ip cni_hostport pod_c1",
                "flush chain ip cni_hostport pod_c1",
                "add rule ip cni_hostport pod_c1 tcp dport 8080 dnat to 10.0.0.2:80 comment \"c1\"",
                "add rule ip cni_hostport pod_c1 ip daddr 192.168.0.2 udp dport 8081 dnat to 10.0.0.2:81 comment \"c1\"",
                "add rule ip cni_hostport hostports jump pod_c1 comment \"c1\"",
                "add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"c1\"",
                "add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment \"c1\"",
            ]
        );
    }

    #[test]
    fn v6_rules_without_snat_and_hooks_with_conditions() {
        let c = container("fd00::2/128");
        let got = container_rules(&settings(false), &c, &mappings());
        assert_eq!(
            got[2..],
            [
                "add rule ip6 cni_hostport pod_c1 tcp dport 8080 dnat to [fd00::2]:80 comment \"c1\"",
                "add rule ip6 cni_hostport hostports jump pod_c1 comment \"c1\"",
            ]
        );
        let script = render(&add_script(
            &Listing::default(),
            &settings(false),
            &[c],
            &mappings(),
        ));
        assert!(script.contains(
            "add rule ip6 cni_hostport prerouting ip6 saddr fd00::/8 fib daddr type local jump hostports_all\n"
        ));
        assert!(script.contains("add rule ip6 cni_hostport output ip6 saddr fd00::/8 fib daddr type local jump hostports_all\n"));
        assert!(!script.contains("masquerading"));
        assert!(!script.contains("add table ip cni_hostport"));
    }

    #[test]
    fn add_script_renders_the_whole_transaction() {
        let c = container("10.0.0.2/24");
        let existing = Listing {
            chains: vec![
                (Family::V4, "pod_c1".into()),
                // The marker of other settings: the skeleton is rewritten, and marked anew.
                (Family::V4, "skeleton_0123456789abcdef".into()),
            ],
            rules: vec![Listed {
                family: Family::V4,
                chain: "hostports".into(),
                handle: 9,
                comment: Some("c1".into()),
            }],
        };
        let marker = skeleton_marker(&settings(true), Family::V4);
        let script = render(&add_script(
            &existing,
            &settings(true),
            &[c],
            &mappings()[..1],
        ));
        assert_eq!(
            script,
            "add table ip cni_hostport { comment \"CNI portmap plugin\" ; }\n\
             add chain ip cni_hostport hostports\n\
             add chain ip cni_hostport hostip_hostports\n\
             add chain ip cni_hostport hostports_all\n\
             flush chain ip cni_hostport hostports_all\n\
             add rule ip cni_hostport hostports_all jump hostip_hostports\n\
             add rule ip cni_hostport hostports_all jump hostports\n\
             add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }\n\
             flush chain ip cni_hostport prerouting\n\
             add rule ip cni_hostport prerouting fib daddr type local jump hostports_all\n\
             add chain ip cni_hostport output { type nat hook output priority -100 ; }\n\
             flush chain ip cni_hostport output\n\
             add rule ip cni_hostport output fib daddr type local jump hostports_all\n\
             add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }\n\
             delete chain ip cni_hostport skeleton_0123456789abcdef\n\
             add chain ip cni_hostport {marker}\n\
             delete rule ip cni_hostport hostports handle 9\n\
             add chain ip cni_hostport pod_c1\n\
             flush chain ip cni_hostport pod_c1\n\
             add rule ip cni_hostport pod_c1 tcp dport 8080 dnat to 10.0.0.2:80 comment \"c1\"\n\
             add rule ip cni_hostport hostports jump pod_c1 comment \"c1\"\n\
             add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"c1\"\n\
             add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment \"c1\"\n"
                .replace("{marker}", &marker)
        );
    }

    #[test]
    fn add_only_adds_the_containers_chain_and_rules_and_nothing_else() {
        let c4 = container("10.0.0.2/24");
        let c6 = container("fd00::2/64");
        let containers = [c4.clone(), c6.clone()];
        let ops = add_only_script(&settings(true), &containers, &mappings());
        assert!(
            ops.iter()
                .all(|op| matches!(op, Op::AddRule { .. } | Op::AddChain { hook: None, .. })),
            "{}",
            render(&ops)
        );
        let chains: Vec<&Op> = ops
            .iter()
            .filter(|op| matches!(op, Op::AddChain { .. }))
            .collect();
        assert_eq!(chains.len(), 2, "the container's chain in each family");
        // The same rules as a planned ADD writes for the container.
        let rules = |ops: &[Op]| -> Vec<String> {
            ops.iter()
                .filter(|op| matches!(op, Op::AddRule { .. }))
                .map(Op::text)
                .collect()
        };
        let planned: Vec<Op> = [c4, c6]
            .iter()
            .flat_map(|c| container_ops(&settings(true), c, &mappings()))
            .collect();
        assert_eq!(rules(&ops), rules(&planned));
    }

    #[test]
    fn the_marker_names_the_settings_the_skeleton_was_written_with() {
        let plain = settings(true);
        let mut conditioned = settings(true);
        conditioned.conditions_v4 = vec!["ip saddr 10.0.0.0/8".into()];
        let marker = skeleton_marker(&plain, Family::V4);
        assert!(marker.starts_with(MARKER_PREFIX) && marker.len() <= CHAIN_NAME_MAX);
        assert_eq!(marker, skeleton_marker(&plain, Family::V4), "stable");
        assert_ne!(marker, skeleton_marker(&conditioned, Family::V4));
        assert_ne!(marker, skeleton_marker(&settings(false), Family::V4));
        // IPv6's conditions are not IPv4's.
        assert_eq!(
            skeleton_marker(&plain, Family::V6),
            skeleton_marker(&conditioned, Family::V6)
        );
    }

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "ip", "name": "cni_hostport", "handle": 1, "comment": "CNI portmap plugin"}},
      {"chain": {"family": "ip", "table": "cni_hostport", "name": "hostports", "handle": 2}},
      {"chain": {"family": "ip", "table": "cni_hostport", "name": "pod_c1", "handle": 3}},
      {"chain": {"family": "ip6", "table": "cni_hostport", "name": "pod_c2", "handle": 3}},
      {"chain": {"family": "ip", "table": "nat", "name": "pod_c3", "handle": 3}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "pod_c1", "handle": 12, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports_all", "handle": 6, "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 9, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 10, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 11, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip6", "table": "cni_hostport", "chain": "hostports", "handle": 4, "comment": "c2", "expr": []}},
      {"rule": {"family": "ip", "table": "nat", "chain": "hostports", "handle": 3, "comment": "c1", "expr": []}}]}"#;

    #[test]
    fn deletes_by_comment_in_our_tables_only() {
        let listed = parse_listing(LISTING).unwrap();
        assert_eq!(listed.rules.len(), 6);
        assert_eq!(listed.chains.len(), 3);
        // The jump goes before the chain it jumps to; the chain's rules are not named.
        assert_eq!(
            render(&del_script(&listed, "c1")),
            "delete rule ip cni_hostport hostports handle 9\n\
             delete rule ip cni_hostport masquerading handle 10\n\
             delete rule ip cni_hostport masquerading handle 11\n\
             flush chain ip cni_hostport pod_c1\n\
             delete chain ip cni_hostport pod_c1\n"
        );
        assert_eq!(
            render(&gc_script(&listed, &["c1"])),
            "delete rule ip6 cni_hostport hostports handle 4\n\
             flush chain ip6 cni_hostport pod_c2\n\
             delete chain ip6 cni_hostport pod_c2\n"
        );
        let c = container("10.0.0.2/32");
        assert_eq!(
            check(&listed, &settings(true), &c, &mappings()[..1]),
            Ok(())
        );
        assert!(check(&listed, &settings(true), &c, &mappings()).is_err());
        // A chain nothing jumps to is not forwarding anything.
        let mut unjumped = listed.clone();
        unjumped.rules.retain(|r| r.handle != 9);
        assert!(check(&unjumped, &settings(true), &c, &mappings()[..1]).is_err());
        // The shared layout of before: the DNAT rules in `hostports`.
        let mut shared = listed.clone();
        shared.chains.retain(|(_, n)| n != "pod_c1");
        assert_eq!(
            check(&shared, &settings(true), &c, &mappings()[..1]),
            Ok(())
        );
        let again = render(&add_script(&listed, &settings(true), &[c], &mappings()));
        assert!(again.contains("delete rule ip cni_hostport hostports handle 9\n"));
        assert!(!again.contains("handle 4"));
        assert!(!again.contains("delete chain"));
    }

    #[test]
    fn a_container_chain_name_is_one_nft_reads_unquoted() {
        assert_eq!(pod_chain("a.b-c_9"), "pod_a.b-c_9");
        let long = "x".repeat(300);
        let name = pod_chain(&long);
        assert!(
            name.starts_with("pod_/") && name.len() <= CHAIN_NAME_MAX,
            "{name}"
        );
        assert_eq!(name, pod_chain(&long));
        assert_ne!(name, pod_chain(&"x".repeat(301)));
        assert_eq!(pod_chain(&"y".repeat(251)).len(), CHAIN_NAME_MAX);
    }
}

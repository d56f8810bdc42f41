//! The portmap plugin: forwards host ports to a container (DNAT), with masquerading for
//! hairpin traffic (the container reaching itself through its host port) and for
//! `127.0.0.1:<hostPort>` on the node.
//!
//! The rules are data ([`iptables::rules`], [`nftables`]) rendered to one `iptables-restore`
//! input per family, or one nft transaction, per invocation. DEL finds the container's rules
//! from the firewall state itself, so it works without `portMappings` (the reference skips
//! DEL then and leaks), and again after everything is gone.

pub mod config;
pub mod conntrack;
pub mod iptables;
pub mod localnet;
pub mod model;
pub mod nft_netlink;
pub mod nftables;
pub mod tool;

use std::collections::BTreeSet;

use shared::netlink::Handle;
use shared::skel::{Attachment, Plugin, Released, Request};
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::CniResult;

use config::{Backend, PortmapConf, Settings};
use model::{Container, Family, Mapping, Protocol};
use tool::ToolError;

#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error(transparent)]
    Shared(#[from] shared::Error),
    #[error("{0}")]
    Config(String),
    #[error("must be called as chained plugin")]
    NotChained,
    #[error("Required prevResult missing")]
    NoPrevResult,
    #[error("{0}")]
    Firewall(String),
    /// A firewall tool outlived the invocation's deadline.
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Check(String),
    #[error("unable to enable route_localnet: {0}")]
    Localnet(String),
}

impl From<PortmapError> for CniError {
    fn from(e: PortmapError) -> CniError {
        let msg = e.to_string();
        match e {
            PortmapError::Shared(inner) => inner.into(),
            PortmapError::Config(_) => CniError::new(ErrorCode::InvalidNetworkConfig, msg)
                .with_details("fix the portmap configuration or the pod's port mappings; no rule was written"),
            PortmapError::NotChained | PortmapError::NoPrevResult => {
                CniError::new(ErrorCode::InvalidNetworkConfig, msg).with_details(
                    "portmap runs in a conflist after the plugin that gives the container its addresses",
                )
            }
            PortmapError::Firewall(_) => CniError::new(ErrorCode::Firewall, msg).with_details(
                "each change is one transaction, so a failed one left the rules as they were; \
                 check that iptables-restore (or nft) works on this node",
            ),
            PortmapError::TimedOut(_) => CniError::new(ErrorCode::TryAgainLater, msg)
                .with_details(
                    "the tool was killed before it answered; retry later, and if it keeps \
                     timing out, see what holds the xtables lock or the nftables ruleset up",
                ),
            PortmapError::Check(_) => CniError::new(ErrorCode::CheckFailed, msg)
                .with_details("something removed the container's port forwarding rules; recreate the pod"),
            PortmapError::Localnet(_) => CniError::new(ErrorCode::Sysctl, msg),
        }
    }
}

pub struct Portmap;

/// A failure of a change to the firewall, naming the family.
fn firewall(family: Family, what: &str, e: ToolError) -> PortmapError {
    tool_error(&format!("{what} ({})", family.name()), e)
}

/// A tool's failure: a timeout stays one (code 11: retry later), anything else is the
/// firewall's.
fn tool_error(what: &str, e: ToolError) -> PortmapError {
    match e {
        e @ ToolError::TimedOut { .. } => PortmapError::TimedOut(format!("{what}: {e}")),
        e => PortmapError::Firewall(format!("{what}: {e}")),
    }
}

/// Several failures as one: a timeout among them makes it one, so the runtime retries.
fn combined(errors: Vec<PortmapError>) -> PortmapError {
    let timed_out = errors
        .iter()
        .any(|e| matches!(e, PortmapError::TimedOut(_)));
    let msg = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if timed_out {
        PortmapError::TimedOut(msg)
    } else {
        PortmapError::Firewall(msg)
    }
}

/// How often a change is rebuilt from fresh state when another writer raced us (a rule we
/// meant to delete went away between the save and the restore).
const ATTEMPTS: usize = 3;

/// Reads a family's nat table, builds a script from it and restores it; `Ok(false)` when
/// the family is unusable (its save failed) and `optional`.
fn iptables_change(
    family: Family,
    what: &str,
    optional: bool,
    build: impl Fn(&iptables::NatTable) -> iptables::Script,
) -> Result<bool, PortmapError> {
    let mut last = ToolError::Failed(String::new());
    for _ in 0..ATTEMPTS {
        let saved = match iptables::save(family) {
            Ok(text) => text,
            // A tool that hangs is not an unusable family: the deadline has passed.
            Err(e @ ToolError::TimedOut { .. }) => return Err(firewall(family, what, e)),
            Err(e) if optional => {
                log::info!("{} unusable, skipped: {e}", iptables::tool(family));
                return Ok(false);
            }
            Err(e) => return Err(firewall(family, what, e)),
        };
        let table = iptables::NatTable::parse(&saved);
        log::debug!(
            "{}: {} rules read",
            iptables::tool(family),
            table.rules.len()
        );
        let script = build(&table);
        if script.is_empty() {
            return Ok(true);
        }
        let text = script.render();
        log::debug!("{} restore:\n{text}", iptables::tool(family));
        match iptables::restore(family, &text) {
            Ok(()) => return Ok(true),
            Err(e @ ToolError::TimedOut { .. }) => return Err(firewall(family, what, e)),
            Err(e) => last = e,
        }
    }
    Err(firewall(family, what, last))
}

/// Lists our nftables rules, builds a script and applies it, retrying on a race.
fn nftables_change(
    what: &str,
    build: impl Fn(&nftables::Listing) -> Vec<nftables::Op>,
) -> Result<Option<nftables::Session>, PortmapError> {
    let fail = |e: ToolError| tool_error(what, e);
    let mut session = nftables::Session::open().map_err(fail)?;
    let mut last = ToolError::Failed(String::new());
    for _ in 0..ATTEMPTS {
        // The containers' own chains are not read: a change empties or deletes them whole.
        let listed = session.list(&[]).map_err(fail)?;
        log::debug!(
            "nftables: {} chains and {} rules read",
            listed.chains.len(),
            listed.rules.len()
        );
        let ops = build(&listed);
        if ops.is_empty() {
            return Ok(Some(session));
        }
        match session.apply(&ops) {
            Ok(()) => return Ok(Some(session)),
            Err(e @ ToolError::TimedOut { .. }) => return Err(fail(e)),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// ADD on nftables when the node is set up and the container is new: per family, a
/// lookup of the skeleton's marker and of the container's chain and the hook chains' rules,
/// then one transaction of additions only ([`nftables::add_only_script`]), which leaves the
/// kernel nothing to release after a grace period. `None` when that does not apply, or
/// failed having changed nothing: the caller lists and plans.
fn nftables_add_only(w: &Wanted) -> Result<Option<nftables::Session>, PortmapError> {
    let what = "could not set up dnat";
    let fail = |e: ToolError| tool_error(what, e);
    let mut session = nftables::Session::open().map_err(fail)?;
    let mut read = 0;
    for c in &w.containers {
        let family = c.family();
        let marker = nftables::skeleton_marker(&w.settings, family);
        if !session.has_chain(family, &marker).map_err(fail)?
            || session
                .has_chain(family, &nftables::pod_chain(&c.id))
                .map_err(fail)?
        {
            return Ok(None);
        }
        // The hooks are what traffic goes through: each must still hold its one rule.
        for hook in [nftables::Hook::Prerouting, nftables::Hook::Output] {
            let rules = session.rules_of(family, hook.name()).map_err(fail)?;
            read += rules.len();
            if rules.len() != 1 {
                return Ok(None);
            }
        }
    }
    let ops = nftables::add_only_script(&w.settings, &w.containers, &w.mappings);
    apply_unlisted(
        session,
        &ops,
        read,
        what,
        "the skeleton is not as its marker says",
    )
}

/// Applies a change planned without a listing (`read` rules read for it). A failure other
/// than a timeout has changed nothing and gives `None`: the caller lists and plans.
fn apply_unlisted(
    mut session: nftables::Session,
    ops: &[nftables::Op],
    read: usize,
    what: &str,
    why: &str,
) -> Result<Option<nftables::Session>, PortmapError> {
    match session.apply(ops) {
        Ok(()) => {
            log::debug!("nftables: 0 chains and {read} rules read");
            Ok(Some(session))
        }
        Err(e @ ToolError::TimedOut { .. }) => Err(tool_error(what, e)),
        Err(e) => {
            log::debug!("nftables: {why} ({e}): listing");
            Ok(None)
        }
    }
}

/// What ADD and CHECK work from.
struct Wanted {
    settings: Settings,
    mappings: Vec<Mapping>,
    containers: Vec<Container>,
}

type Req<'a> = Request<'a, PortmapConf>;

fn wanted(req: &Req, prev: &CniResult) -> Result<Wanted, PortmapError> {
    let settings = Settings::parse(req.config)?;
    let mappings = config::mappings(&req.conf.runtime_config.port_mappings)?;
    let containers = if mappings.is_empty() {
        Vec::new()
    } else {
        let ips = config::container_ips(prev, &req.env.ifname);
        config::containers(&req.conf.name, &req.env.container_id, &ips, &mappings)?
    };
    Ok(Wanted {
        settings,
        mappings,
        containers,
    })
}

/// What DEL knows of the rules ADD made, from its own config: enough to remove them
/// without reading anyone else's. DEL works without it, from the table.
struct Known {
    settings: Settings,
    mappings: Vec<Mapping>,
    /// The families the container has an address in, when DEL was given a prevResult.
    families: Option<Vec<Family>>,
}

impl Known {
    /// `None` when the config says nothing usable: DEL never fails on what it only uses
    /// to go faster.
    fn of(req: &Req, settings: &Settings) -> Option<Known> {
        let mappings = config::mappings(&req.conf.runtime_config.port_mappings).ok()?;
        let families = req.prev_result.as_ref().map(|prev| {
            config::container_ips(prev, &req.env.ifname)
                .iter()
                .map(|ip| Family::of(&ip.ip()))
                .collect()
        });
        Some(Known {
            settings: settings.clone(),
            mappings,
            families,
        })
    }

    /// The mappings ADD wrote entry rules for in `family`.
    fn mappings_in(&self, family: Family) -> &[Mapping] {
        match &self.families {
            Some(families) if !families.contains(&family) => &[],
            _ => &self.mappings,
        }
    }
}

fn del_iptables(network: &str, id: &str, known: Option<&Known>) -> Result<(), PortmapError> {
    let mut usable = false;
    let mut errors = Vec::new();
    for family in [Family::V4, Family::V6] {
        match del_iptables_family(family, network, id, known) {
            Ok(done) => usable |= done,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(combined(errors));
    }
    if !usable {
        return Err(PortmapError::Firewall(
            "neither iptables nor ip6tables is usable".into(),
        ));
    }
    Ok(())
}

/// DEL for one family, in time proportional to the container's own rules: blind from what
/// DEL knows ([`iptables::del_blind_script`]), which reads nothing; else from the entry
/// rules alone ([`iptables::del_plan`]). When neither can be done (no
/// `CNI-HOSTPORT-DNAT`, an unusable family, a reference from elsewhere), from the whole
/// table as before.
fn del_iptables_family(
    family: Family,
    network: &str,
    id: &str,
    known: Option<&Known>,
) -> Result<bool, PortmapError> {
    let tool = iptables::tool(family);
    let blind = known.and_then(|k| {
        iptables::del_blind_script(&k.settings, network, id, family, k.mappings_in(family))
    });
    if let Some(script) = blind {
        match iptables::restore(family, &script.render()) {
            Ok(()) => {
                log::debug!("{tool}: 0 rules read");
                return Ok(true);
            }
            Err(e @ ToolError::TimedOut { .. }) => {
                return Err(firewall(family, "could not teardown dnat", e))
            }
            Err(e) => log::debug!("{tool}: the rules are not as DEL's config says ({e}): listing"),
        }
    }
    if let Ok(listing) = iptables::list_chain(family, iptables::rules::TOP_CHAIN) {
        let top = iptables::NatTable::parse_listing(&listing);
        log::debug!("{}: {} rules read", iptables::tool(family), top.rules.len());
        let Some(plan) = iptables::del_plan(&top, network, id) else {
            return Ok(true);
        };
        let flushed = match &plan.flush_first {
            Some(script) => iptables::restore(family, &script.render()),
            None => Ok(()),
        };
        match flushed.and_then(|()| iptables::restore(family, &plan.script.render())) {
            Ok(()) => return Ok(true),
            Err(e @ ToolError::TimedOut { .. }) => {
                return Err(firewall(family, "could not teardown dnat", e))
            }
            Err(e) => log::info!("teardown from the entry rules failed ({e}); reading the table"),
        }
    }
    iptables_change(family, "could not teardown dnat", true, |t| {
        iptables::del_script(t, network, id)
    })
}

/// The chains of table `nat` that are not ours: our hooks are the shared rules in them.
const BUILT_IN_CHAINS: [&str; 3] = ["PREROUTING", "OUTPUT", "POSTROUTING"];

/// Whether iptables-nft's table `nat` in nf_tables holds every hook of ours in the built-in
/// chains (the jumps to `CNI-HOSTPORT-DNAT` and `-MASQ`), read in process from those
/// chains' few rules. False when it does not, or the node's iptables keeps its tables
/// elsewhere (legacy): the restore then checks them itself. The rules inside our own shared
/// chains are not looked at: they are made with the chains, in one transaction.
fn hooks_in_nf_tables(
    session: &mut Option<nft_netlink::Session>,
    settings: &Settings,
    family: Family,
) -> bool {
    if session.is_none() {
        *session = nft_netlink::Session::open().ok();
    }
    let Some(session) = session else {
        return false;
    };
    iptables::rules::shared_rules(settings)
        .1
        .iter()
        .filter(|s| BUILT_IN_CHAINS.contains(&s.rule.chain.as_str()))
        .all(|s| {
            let Some(target) = s.rule.spec.rsplit(" -j ").next() else {
                return false;
            };
            session
                .foreign_jumps(family, "nat", &s.rule.chain)
                .is_ok_and(|rules| rules.iter().any(|jumps| jumps.iter().any(|j| j == target)))
        })
}

/// ADD for one family: blind first ([`iptables::add_blind_script`]), which reads nothing and
/// applies on a node already set up; from the whole table when it does not apply.
fn add_iptables_family(
    netlink: &mut Option<nft_netlink::Session>,
    settings: &Settings,
    c: &Container,
    mappings: &[Mapping],
) -> Result<(), PortmapError> {
    let family = c.family();
    let hooked = hooks_in_nf_tables(netlink, settings, family);
    let blind = iptables::add_blind_script(settings, c, mappings, !hooked).render();
    log::debug!("{} restore:\n{blind}", iptables::tool(family));
    match iptables::restore(family, &blind) {
        Ok(()) => {
            log::debug!("{}: 0 rules read", iptables::tool(family));
            return Ok(());
        }
        Err(e @ ToolError::TimedOut { .. }) => {
            return Err(firewall(family, "could not set up dnat", e))
        }
        Err(e) => log::debug!(
            "the node is not set up or the container has rules ({e}): reading the table"
        ),
    }
    iptables_change(family, "could not set up dnat", false, |t| {
        iptables::add_script(t, settings, c, mappings)
    })
    .map(drop)
}

/// The nftables session is returned to be dropped last (see `nft_netlink::Session`).
fn add_rules(w: &Wanted) -> Result<Option<nftables::Session>, PortmapError> {
    match w.settings.backend {
        Backend::Iptables => {
            // One socket for both families' hook lookups.
            let mut netlink = None;
            for c in &w.containers {
                add_iptables_family(&mut netlink, &w.settings, c, &w.mappings)?;
            }
            Ok(None)
        }
        Backend::Nftables => {
            if let Some(session) = nftables_add_only(w)? {
                return Ok(Some(session));
            }
            nftables_change("could not set up dnat", |listed| {
                nftables::add_script(listed, &w.settings, &w.containers, &w.mappings)
            })
        }
    }
}

fn del_rules(
    backend: Backend,
    network: &str,
    id: &str,
    known: Option<&Known>,
) -> Result<(), PortmapError> {
    match backend {
        Backend::Iptables => del_iptables(network, id, known),
        Backend::Nftables => {
            if let Some(k) = known {
                if nftables_del_own(&k.settings, id)?.is_some() {
                    return Ok(());
                }
            }
            nftables_change("could not teardown dnat", |listed| {
                nftables::del_script(listed, id)
            })
            .map(drop)
        }
    }
}

/// DEL on nftables from the container's own chain, reading nothing of other containers:
/// its chain's handle and rules, then the rules it had added to the shared chains, found
/// by handle. One transaction allocates handles in order from one counter per table, so
/// the container's rules follow its chain's: the jump from `hostports` right after its
/// chain's last rule, then its masquerade rules. Each is looked up by handle and taken only
/// with the container's comment. `None` when that does not find them (a repeated ADD, a
/// skeleton without the marker of these settings, where rules of the shared layout may be
/// left): the caller lists.
fn nftables_del_own(
    settings: &Settings,
    id: &str,
) -> Result<Option<nftables::Session>, PortmapError> {
    let what = "could not teardown dnat";
    let fail = |e: ToolError| tool_error(what, e);
    let mut session = nftables::Session::open().map_err(fail)?;
    let chain = nftables::pod_chain(id);
    let ours = |r: &nftables::Listed| r.comment.as_deref() == Some(id);
    let mut ops = Vec::new();
    let mut read = 0;
    for family in nftables::BOTH {
        if !session
            .has_chain(family, &nftables::skeleton_marker(settings, family))
            .map_err(fail)?
        {
            return Ok(None);
        }
        let Some(handle) = session.chain_handle(family, &chain).map_err(fail)? else {
            // With the marker, nothing of the container is left outside its chain.
            continue;
        };
        let own = session.rules_of(family, &chain).map_err(fail)?;
        read += own.len();
        let mut next = own.iter().map(|r| r.handle).fold(handle, u64::max) + 1;
        match session.rule(family, "hostports", next).map_err(fail)? {
            Some(jump) if ours(&jump) => ops.push(nftables::Op::DelRule(jump)),
            _ => return Ok(None),
        }
        read += 1;
        next += 1;
        while let Some(masq) = session
            .rule(family, "masquerading", next)
            .map_err(fail)?
            .filter(ours)
        {
            ops.push(nftables::Op::DelRule(masq));
            read += 1;
            next += 1;
        }
        ops.push(nftables::Op::Flush {
            family,
            chain: chain.clone(),
        });
        ops.push(nftables::Op::DelChain {
            family,
            name: chain.clone(),
        });
    }
    apply_unlisted(
        session,
        &ops,
        read,
        what,
        "teardown from the container's chain failed",
    )
}

/// Removes the container's rules from both backends; succeeds when one of them could be
/// cleaned (the other may simply not be usable on this node).
fn del_everywhere(network: &str, id: &str) -> Result<(), PortmapError> {
    let mut errors = Vec::new();
    let mut any = false;
    for backend in [Backend::Iptables, Backend::Nftables] {
        match del_rules(backend, network, id, None) {
            Ok(()) => any = true,
            Err(e) => errors.push(e),
        }
    }
    if any {
        for e in errors {
            log::info!("a backend this node does not use was skipped: {e}");
        }
        return Ok(());
    }
    Err(combined(errors))
}

impl Plugin for Portmap {
    type Config = PortmapConf;
    type Error = PortmapError;

    fn name(&self) -> &'static str {
        "portmap"
    }

    /// A chained plugin needs a `prevResult`: 0.3.0 on, as the reference's.
    fn supported_versions(&self) -> &'static [shared::spec::version::Version] {
        &shared::spec::version::Version::CHAINING
    }

    fn add(&self, req: &Req) -> Result<CniResult, PortmapError> {
        let prev = req.prev_result.as_ref().ok_or(PortmapError::NotChained)?;
        let w = wanted(req, prev)?;
        if w.mappings.is_empty() {
            return Ok(prev.clone());
        }
        // Held to the end: its release waits out the transaction's RCU grace period,
        // which passes meanwhile (see `nft_netlink::Session`).
        let _session = match add_rules(&w) {
            Ok(committed) => committed,
            Err(e) => {
                // One family may have gone in before the other failed: take it out again.
                let known = Known {
                    settings: w.settings.clone(),
                    mappings: w.mappings.clone(),
                    families: Some(w.containers.iter().map(Container::family).collect()),
                };
                if let Err(undo) = del_rules(
                    w.settings.backend,
                    &req.conf.name,
                    &req.env.container_id,
                    Some(&known),
                ) {
                    log::warn!("undoing a failed ADD: {undo}");
                }
                return Err(e);
            }
        };
        let udp: Vec<u16> = w
            .mappings
            .iter()
            .filter(|m| m.protocol == Protocol::Udp)
            .map(|m| m.host_port)
            .collect();
        for c in &w.containers {
            // As the reference: a stale entry only delays traffic, so this never fails ADD.
            match conntrack::flush_udp_ports(c.family(), &udp) {
                Ok(n) if n > 0 => log::debug!("deleted {n} UDP conntrack entries"),
                Ok(_) => {}
                Err(e) => log::warn!("could not delete UDP conntrack entries: {e}"),
            }
        }
        if w.settings.snat {
            if let Some(v4) = w.containers.iter().find(|c| c.family() == Family::V4) {
                let mut handle = Handle::new()?;
                let ifname = localnet::outgoing_interface(&mut handle, v4.ip.ip())?;
                localnet::enable(&ifname)?;
            }
        }
        Ok(prev.clone())
    }

    fn del(&self, req: &Req) -> Result<Released, PortmapError> {
        let id = &req.env.container_id;
        // Mappings and prevResult are not needed, the firewall state says what is ours;
        // with them, DEL need not read other containers' rules.
        let backend = match Settings::parse(req.config) {
            Ok(settings) => {
                let known = Known::of(req, &settings);
                del_rules(settings.backend, &req.conf.name, id, known.as_ref())?;
                match settings.backend {
                    Backend::Iptables => "iptables",
                    Backend::Nftables => "nftables",
                }
            }
            // Settings ADD would have refused: no ADD can have succeeded with them, but a
            // node may have switched backends since. Clean up wherever rules can be.
            Err(e) => {
                log::warn!("DEL with settings ADD refuses ({e}): cleaning up both backends");
                del_everywhere(&req.conf.name, id)?;
                "iptables and nftables"
            }
        };
        Ok(Released::of(format!(
            "the port mappings of {id}, if any ({backend})"
        )))
    }

    fn check(&self, req: &Req) -> Result<(), PortmapError> {
        let prev = req.prev_result.as_ref().ok_or(PortmapError::NoPrevResult)?;
        let w = wanted(req, prev)?;
        if w.mappings.is_empty() {
            return Ok(());
        }
        match w.settings.backend {
            Backend::Iptables => {
                // Only the families the container has addresses in (the reference 1.1.1
                // checked both and failed every IPv4-only pod on a node with ip6tables).
                for c in &w.containers {
                    let family = c.family();
                    let saved = iptables::save(family)
                        .map_err(|e| firewall(family, "could not read rules", e))?;
                    let table = iptables::NatTable::parse(&saved);
                    iptables::check(&table, &w.settings, c, &w.mappings).map_err(|e| {
                        PortmapError::Check(format!("could not check {} dnat: {e}", family.name()))
                    })?;
                }
            }
            Backend::Nftables => {
                let chain = nftables::pod_chain(&req.env.container_id);
                let listed = nftables::Session::open()
                    .and_then(|mut s| s.list(&[chain]))
                    .map_err(|e| tool_error("could not read rules", e))?;
                for c in &w.containers {
                    nftables::check(&listed, &w.settings, c, &w.mappings).map_err(|e| {
                        PortmapError::Check(format!(
                            "could not check {} dnat: {e}",
                            c.family().name()
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Req, valid: &[Attachment]) -> Result<(), PortmapError> {
        let settings = Settings::parse(req.config)?;
        let keep: BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        match settings.backend {
            Backend::Iptables => {
                let mut errors = Vec::new();
                for family in [Family::V4, Family::V6] {
                    if let Err(e) = iptables_change(family, "could not collect rules", true, |t| {
                        iptables::gc_script(t, &req.conf.name, &keep)
                    }) {
                        errors.push(e);
                    }
                }
                if !errors.is_empty() {
                    return Err(combined(errors));
                }
                Ok(())
            }
            Backend::Nftables => {
                let keep: Vec<&str> = keep.into_iter().collect();
                nftables_change("could not collect rules", |listed| {
                    nftables::gc_script(listed, &keep)
                })
                .map(drop)
            }
        }
    }
}

//! calico-ipam as a CNI IPAM plugin: one address per family for each attachment, under the
//! handle `<network>.<containerID>`, from this node's blocks first.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use shared::skel::{Attachment, Plugin, Released, Request};
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::{CniResult, IpConfig};

use crate::block_hint;
use crate::datastore::{self, DatastoreError};
use crate::engine::{AutoAssign, Ipam, IpamError};
use crate::lock::HostLock;
use crate::model::IpPool;
use crate::names;
use crate::netconf::{Datastore, IpamNetConf};
use crate::nodename::NodenameError;
use crate::store::{Store, StoreError};
use crate::timestamp;

#[derive(Debug, thiserror::Error)]
pub enum IpamPluginError {
    #[error(transparent)]
    Shared(#[from] shared::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Nodename(#[from] NodenameError),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("failed to request {family} addresses: {detail}")]
    Short {
        family: &'static str,
        detail: String,
    },
    #[error("no usable IP pool: {0}")]
    NoUsablePool(String),
    /// The engine found no Node of this name; `origin` says where the name came from.
    #[error("resource does not exist: Node({node}) (the node name came from {origin})")]
    NodeNotRegistered { node: String, origin: String },
}

impl From<StoreError> for IpamPluginError {
    fn from(e: StoreError) -> Self {
        IpamPluginError::Ipam(IpamError::Store(e))
    }
}

/// What to do when the datastore has no Node of this node's name.
const NODE_HINT: &str = "calico/node registers this node's Node object when it starts: check \
                         that it runs on this host, and that the name is the one it registered";

/// The engine's errors, by what the operator has to do about them.
fn ipam_code(e: &IpamError) -> (ErrorCode, &'static str) {
    use ErrorCode as C;
    match e {
        IpamError::Store(s @ StoreError::Unavailable(_)) => (
            s.cni_code(),
            "the datastore did not answer; the runtime will retry",
        ),
        IpamError::Store(s @ StoreError::Denied(_)) => (
            s.cni_code(),
            "check the CNI kubeconfig's credentials (calico-node refreshes its token) and \
             the ClusterRole bound to its user",
        ),
        IpamError::Store(s @ StoreError::Misconfigured(_)) => (
            s.cni_code(),
            "fix the etcd_* TLS settings of the network configuration; retries fail the same \
             way until then",
        ),
        IpamError::Store(s) => (s.cni_code(), ""),
        IpamError::NoQualifiedPool
        | IpamError::NoPoolForNode(_)
        | IpamError::NoPoolForUse(_)
        | IpamError::PoolNotEnabled(_)
        | IpamError::WrongFamilyPool { .. }
        | IpamError::InvalidSelector { .. } => (
            C::InvalidNetworkConfig,
            "check ipam.ipv4_pools / ipv6_pools and the IPPools (enabled, nodeSelector, \
             allowedUses)",
        ),
        IpamError::BlockLimit | IpamError::NoBlockClaim => (
            C::AddressExhausted,
            "this node may not claim another block: raise maxBlocksPerHost, enable \
             autoAllocateBlocks, or release stale allocations",
        ),
        IpamError::MaxRetries => (C::TryAgainLater, "too many concurrent IPAM writers"),
        IpamError::AlreadyAssigned(_)
        | IpamError::NotInPool(_)
        | IpamError::UseNotAllowed { .. }
        | IpamError::AffinityMismatch { .. } => (C::AddressConflict, ""),
        IpamError::HandleNotFound(_) => (
            C::CheckFailed,
            "the datastore holds no allocation for this container",
        ),
        IpamError::NodeNotFound(_) => (C::TryAgainLater, NODE_HINT),
    }
}

impl From<IpamPluginError> for CniError {
    fn from(e: IpamPluginError) -> CniError {
        use ErrorCode as C;
        let e = match e {
            IpamPluginError::Shared(inner) => return inner.into(),
            other => other,
        };
        let msg = e.to_string();
        let (code, details) = match &e {
            IpamPluginError::Shared(_) => (C::Internal, ""),
            IpamPluginError::Config(_) => (C::InvalidNetworkConfig, ""),
            IpamPluginError::Nodename(NodenameError::FileMissing { nodename_set, .. }) => (
                C::TryAgainLater,
                crate::nodename::missing_file_hint(*nodename_set),
            ),
            IpamPluginError::Nodename(NodenameError::Invalid { .. }) => {
                (C::InvalidNetworkConfig, "")
            }
            IpamPluginError::Nodename(_) => (C::State, ""),
            IpamPluginError::Datastore(d) => match d {
                DatastoreError::Store(s) => (s.cni_code(), ""),
                DatastoreError::Unsupported(_) => (C::UnsupportedField, ""),
                DatastoreError::Config(_) => (C::InvalidNetworkConfig, ""),
            },
            IpamPluginError::Ipam(i) => ipam_code(i),
            IpamPluginError::Short { .. } => (
                C::AddressExhausted,
                "the pools have no free address for this node: add a pool, widen one, or \
                 release stale allocations (`calico-ipam check`, `calico-ipam release --ip`)",
            ),
            IpamPluginError::NoUsablePool(_) => (C::NotAvailable, ""),
            IpamPluginError::NodeNotRegistered { .. } => (C::TryAgainLater, NODE_HINT),
        };
        CniError::new(code, msg).with_details(details)
    }
}

pub struct CalicoIpam;

/// What every verb derives from the request.
struct Context {
    conf: IpamNetConf,
    node: String,
    /// Where `node` came from, for messages about it.
    node_origin: String,
    store: Box<dyn Store>,
}

impl Context {
    fn new(req: &Req) -> Result<Context, IpamPluginError> {
        let conf = req.config.clone();
        let (node, node_origin) = conf.node.resolve_with_origin()?;
        let store = datastore::open(&conf)?;
        Ok(Context {
            conf,
            node,
            node_origin,
            store,
        })
    }

    /// An engine error, with where the node's name came from when the datastore has no
    /// Node of that name.
    fn engine_error(&self, e: IpamError) -> IpamPluginError {
        match e {
            IpamError::NodeNotFound(node) => IpamPluginError::NodeNotRegistered {
                node,
                origin: self.node_origin.clone(),
            },
            other => IpamPluginError::Ipam(other),
        }
    }

    fn ipam(&self) -> Ipam<'_> {
        Ipam::new(self.store.as_ref(), &self.node)
    }

    /// Pools named in the config, as CIDRs of the right family: a name is looked up among
    /// the IPPools, listed into `pools` the first time one is needed (the rest of the ADD
    /// reuses that list).
    fn resolve_pools(
        &self,
        entries: &[String],
        v4: bool,
        pools: &mut Option<Vec<IpPool>>,
    ) -> Result<Vec<IpNetwork>, IpamPluginError> {
        let family = if v4 { "IPv4" } else { "IPv6" };
        let mut out = Vec::new();
        for entry in entries {
            let cidr = match entry.parse::<IpNetwork>() {
                Ok(cidr) => cidr,
                Err(_) => {
                    let all = match pools {
                        Some(all) => all,
                        None => pools.insert(self.store.list_pools()?),
                    };
                    all.iter()
                        .find(|p| &p.name == entry)
                        .map(|p| p.cidr)
                        .ok_or_else(|| {
                            IpamPluginError::Config(format!(
                                "the given pool ({entry}) does not exist, or is not enabled"
                            ))
                        })?
                }
            };
            if cidr.is_ipv4() != v4 {
                return Err(IpamPluginError::Config(format!(
                    "pool {entry} in ipam.{}_pools is not an {family} pool",
                    if v4 { "ipv4" } else { "ipv6" }
                )));
            }
            out.push(cidr);
        }
        Ok(out)
    }
}

/// The legacy handle Calico also releases on DEL: `<namespace>.<pod>` for a pod, the
/// container id otherwise. `None` when the pod's names could not make a handle's key (a
/// `/`, a leading `.`): no allocation can be under it, and asking for it would fail the DEL
/// for ever on arguments the ADD was refused for.
fn legacy_handle(req: &Req) -> Option<String> {
    let handle = match (
        req.env
            .args
            .get("K8S_POD_NAMESPACE")
            .filter(|s| !s.is_empty()),
        req.env.args.get("K8S_POD_NAME").filter(|s| !s.is_empty()),
    ) {
        (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
        _ => req.env.container_id.clone(),
    };
    let usable = !handle.starts_with('.')
        && !handle.contains('/')
        && !handle.chars().any(|c| c.is_control() || c.is_whitespace());
    if !usable {
        log::warn!("DEL skips the legacy handle {handle:?}: it cannot name an allocation");
    }
    usable.then_some(handle)
}

/// `node`, `timestamp`, and for a pod `pod` and `namespace`: what kube-controllers' IPAM
/// garbage collection reads to tell a live allocation from a leak.
fn attributes(req: &Req, node: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    attrs.insert("node".to_string(), node.to_string());
    attrs.insert("timestamp".to_string(), timestamp::now());
    if let (Some(ns), Some(pod)) = (
        req.env
            .args
            .get("K8S_POD_NAMESPACE")
            .filter(|s| !s.is_empty()),
        req.env.args.get("K8S_POD_NAME").filter(|s| !s.is_empty()),
    ) {
        attrs.insert("namespace".to_string(), ns.to_string());
        attrs.insert("pod".to_string(), pod.to_string());
    }
    attrs
}

fn result_of(addresses: Vec<IpNetwork>) -> CniResult {
    CniResult {
        ips: addresses
            .into_iter()
            .map(|address| IpConfig {
                address,
                gateway: None,
                interface: None,
            })
            .collect(),
        ..CniResult::default()
    }
}

fn host_prefix(ip: IpAddr) -> IpNetwork {
    match ip {
        IpAddr::V4(v4) => IpNetwork::V4(v4.into()),
        IpAddr::V6(v6) => IpNetwork::V6(v6.into()),
    }
}

type Req<'a> = Request<'a, IpamNetConf>;

impl Plugin for CalicoIpam {
    type Config = IpamNetConf;
    type Error = IpamPluginError;

    fn name(&self) -> &'static str {
        "calico-ipam"
    }

    fn add(&self, req: &Req) -> Result<CniResult, IpamPluginError> {
        let ctx = Context::new(req)?;
        let handle = names::handle_id(&ctx.conf.name, &req.env.container_id);
        let attrs = attributes(req, &ctx.node);

        // A specific address (`IP=` in CNI_ARGS, as the calico plugin passes annotations).
        if let Some(text) = req.env.args.get("IP").filter(|s| !s.is_empty()) {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| IpamPluginError::Config(format!("IP={text} is not an address")))?;
            if ctx.conf.datastore() == Ok(Datastore::Local) {
                // The local store has no operator to create pools: the configured ones
                // appear on first use, and a static address may be that first use.
                let mut pools = None;
                let pools4 = ctx.resolve_pools(&ctx.conf.ipam.ipv4_pools, true, &mut pools)?;
                let pools6 = ctx.resolve_pools(&ctx.conf.ipam.ipv6_pools, false, &mut pools)?;
                datastore::ensure_pools(&ctx.conf, ctx.store.as_ref(), &pools4, &pools6)?;
            }
            let _lock = HostLock::acquire(&ctx.conf.lock_file());
            ctx.ipam().assign_ip(ip, &handle, &attrs)?;
            return Ok(result_of(vec![host_prefix(ip)]));
        }

        // The IPPools are listed at most once per ADD (on etcd each list is a round trip):
        // for pool names in the config, for the local store's pool creation, and for the
        // engine, whichever needs them first.
        let mut pools = None;
        let mut request = AutoAssign {
            num4: usize::from(ctx.conf.assign_v4()),
            num6: usize::from(ctx.conf.assign_v6()),
            handle_id: handle.clone(),
            attrs,
            pools4: ctx.resolve_pools(&ctx.conf.ipam.ipv4_pools, true, &mut pools)?,
            pools6: ctx.resolve_pools(&ctx.conf.ipam.ipv6_pools, false, &mut pools)?,
            max_blocks_per_host: 0,
            usage: "Workload".to_string(),
            prefer: Vec::new(),
        };
        if ctx.conf.datastore() == Ok(Datastore::Local) {
            let listed = match pools.take() {
                Some(listed) => listed,
                None => ctx.store.list_pools()?,
            };
            let missing = request
                .pools4
                .iter()
                .chain(&request.pools6)
                .any(|cidr| !listed.iter().any(|p| p.cidr == *cidr));
            if missing {
                // Only the first ADD of a pool gets here: it creates the pool, and the
                // engine then lists the pools afresh.
                datastore::ensure_pools(
                    &ctx.conf,
                    ctx.store.as_ref(),
                    &request.pools4,
                    &request.pools6,
                )?;
            } else {
                pools = Some(listed);
            }
        }
        let _lock = HostLock::acquire(&ctx.conf.lock_file());
        let hint = block_hint::path_for(&ctx.conf.lock_file());
        request.prefer = block_hint::read(&hint, &ctx.node);
        let ipam = ctx.ipam();
        let assigned = match pools {
            Some(pools) => ipam.auto_assign_with_pools(&request, pools),
            None => ipam.auto_assign(&request),
        }
        .map_err(|e| ctx.engine_error(e))?;
        let short4 = assigned.ipv4.len() < request.num4;
        let short6 = assigned.ipv6.len() < request.num6;
        if short4 || short6 {
            // All or nothing: give back what the other family got.
            let got: Vec<IpAddr> = assigned
                .ipv4
                .iter()
                .chain(&assigned.ipv6)
                .map(IpNetwork::ip)
                .collect();
            if !got.is_empty() {
                if let Err(e) = ipam.release_ips(&got) {
                    log::error!("releasing the partial assignment {got:?}: {e}");
                }
            }
            let (family, wanted, have) = if short4 {
                ("IPv4", request.num4, assigned.ipv4.len())
            } else {
                ("IPv6", request.num6, assigned.ipv6.len())
            };
            let mut detail =
                format!("Assigned {have} out of {wanted} requested {family} addresses");
            for m in &assigned.messages {
                detail.push_str("; ");
                detail.push_str(m);
            }
            return Err(IpamPluginError::Short { family, detail });
        }
        let addresses: Vec<IpNetwork> = assigned.ipv4.into_iter().chain(assigned.ipv6).collect();
        let used = block_hint::blocks_of(&addresses);
        if used != request.prefer {
            block_hint::write(&hint, &ctx.node, &used);
        }
        Ok(result_of(addresses))
    }

    fn del(&self, req: &Req) -> Result<Released, IpamPluginError> {
        let ctx = Context::new(req)?;
        let _lock = HostLock::acquire(&ctx.conf.lock_file());
        let ipam = ctx.ipam();
        let handles = [
            Some(names::handle_id(&ctx.conf.name, &req.env.container_id)),
            legacy_handle(req),
        ];
        let mut released = Released::nothing();
        for handle in handles.into_iter().flatten() {
            match ipam.release_by_handle(&handle) {
                Ok(ips) => {
                    released.add(format!("{} and handle {handle}", Released::addresses(&ips)))
                }
                Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(released)
    }

    fn check(&self, req: &Req) -> Result<(), IpamPluginError> {
        let ctx = Context::new(req)?;
        let handle = names::handle_id(&ctx.conf.name, &req.env.container_id);
        match ctx.store.get_handle(&handle)? {
            Some(h) if !h.value.block.is_empty() => Ok(()),
            _ => Err(IpamPluginError::Ipam(IpamError::HandleNotFound(handle))),
        }
    }

    /// Releases the handles of this network on this node whose container the runtime no
    /// longer has.
    fn gc(&self, req: &Req, valid: &[Attachment]) -> Result<(), IpamPluginError> {
        let ctx = Context::new(req)?;
        let live: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let prefix = format!("{}.", ctx.conf.name);
        let mut stale: Vec<String> = Vec::new();
        for v4 in [true, false] {
            for block in ctx.store.list_blocks(v4)? {
                for attr in &block.value.attributes {
                    let Some(handle) = attr.handle_id.as_deref().map(names::sanitize_handle) else {
                        continue;
                    };
                    let ours = attr.secondary.get("node").map(String::as_str) == Some(&ctx.node);
                    let Some(container) = handle.strip_prefix(&prefix) else {
                        continue;
                    };
                    if ours && !live.contains(container) && !stale.iter().any(|s| s == handle) {
                        stale.push(handle.to_string());
                    }
                }
            }
        }
        let _lock = HostLock::acquire(&ctx.conf.lock_file());
        let ipam = ctx.ipam();
        let mut failures = Vec::new();
        for handle in stale {
            log::info!("gc: releasing {handle}");
            match ipam.release_by_handle(&handle) {
                Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => failures.push(format!("{handle}: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(IpamPluginError::Config(format!(
                "GC could not release every stale handle: {}",
                failures.join("; ")
            )))
        }
    }

    /// Ready when the datastore answers and a pool this plugin may use exists for each
    /// family it assigns.
    fn status(&self, req: &Req) -> Result<(), IpamPluginError> {
        let ctx = Context::new(req)?;
        ctx.store.ping()?;
        let pools = ctx.store.list_pools()?;
        for (wanted, v4, family) in [
            (ctx.conf.assign_v4(), true, "IPv4"),
            (ctx.conf.assign_v6(), false, "IPv6"),
        ] {
            let usable = pools
                .iter()
                .any(|p| p.cidr.is_ipv4() == v4 && !p.disabled && p.allows("Workload"));
            let configured = if v4 {
                !ctx.conf.ipam.ipv4_pools.is_empty()
            } else {
                !ctx.conf.ipam.ipv6_pools.is_empty()
            };
            if wanted && !usable && !(configured && ctx.conf.datastore() == Ok(Datastore::Local)) {
                return Err(IpamPluginError::NoUsablePool(format!(
                    "no enabled {family} pool allows workloads"
                )));
            }
        }
        Ok(())
    }
}

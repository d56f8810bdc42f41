//! The calico CNI plugin: wires a pod into the node the way Calico does (a veth pair,
//! routed, no bridge), with addresses from whichever IPAM plugin the config names.
//!
//! ADD is all or nothing: once the IPAM plugin has handed out addresses, any later failure
//! removes the veth (its routes go with it) and gives the addresses back. DEL tries every
//! step and reports every failure.

pub mod annotations;
pub mod config;
pub mod connection_test;
pub mod dataplane;
pub mod datastore;
pub mod endpoint;
pub mod identity;
pub mod ipam;
pub mod kdd;
pub mod pod_cidr;
pub mod readiness;
pub mod wep_name;

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use shared::delegate;
use shared::netlink::{default_destination, IpFamily};
use shared::netns::NetNs;
use shared::skel::{Attachment, Plugin, Released, Request};
use shared::spec::env::Command;
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::{CniResult, Interface, IpConfig};

use calico_ipam::k8s::KubeError;
use calico_ipam::store::StoreError;
use calico_ipam::workload::{EndpointError, Removal};
use config::CalicoConf;
use dataplane::Plan;
use identity::{Workload, INTERFACE_PREFIX_ENV};

#[derive(Debug, thiserror::Error)]
pub enum CalicoError {
    #[error(transparent)]
    Shared(#[from] shared::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "stat {path}: no such file or directory: check that the calico/node container is \
         running and has mounted /var/lib/calico/"
    )]
    NodenameFileMissing { path: String, nodename_set: bool },
    #[error("{0}")]
    NodeState(String),
    #[error("failed to read MTU file {0}: it does not exist and require_mtu_file is set")]
    MtuFileMissing(String),
    #[error("failed to read MTU file {path}: {reason}")]
    MtuFile { path: String, reason: String },
    #[error("IPAM plugin returned missing IP config")]
    NoAddresses,
    #[error("{0}")]
    Dataplane(String),
    #[error(
        "route (Ifindex: {index}, Dst: {dst}, Scope: link) already exists for an interface \
         other than '{veth}': route (Dst: {dst}, Iface: {other})"
    )]
    RouteConflict {
        dst: IpNetwork,
        veth: String,
        index: u32,
        other: String,
    },
    #[error("{0}")]
    CheckFailed(String),
    /// ClusterInformation `default` does not say the datastore is ready.
    #[error("Calico is currently not ready to process requests")]
    NotReady,
    #[error("error getting ClusterInformation: {0}")]
    ClusterInformation(StoreError),
    /// Any other Kubernetes API failure; `what` says what the plugin was doing.
    #[error("{what}: {source}")]
    Kube { what: String, source: KubeError },
    #[error("pod {0} not found")]
    PodNotFound(String),
    #[error("no podCidr for node {0}")]
    NoPodCidr(String),
    #[error("{0}")]
    PodCidr(String),
    /// A pod or namespace annotation that cannot be honoured.
    #[error("{0}")]
    Annotation(String),
    #[error("requested feature is not enabled: {0}")]
    FeatureDisabled(&'static str),
    /// CNI_ARGS that cannot be used.
    #[error("{0}")]
    Args(String),
    /// The workload's endpoint in the datastore (a WorkloadEndpoint on etcd or `local`, the
    /// Pod's annotations on Kubernetes).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The workload's identifiers cannot make a WorkloadEndpoint name.
    #[error(transparent)]
    EndpointName(#[from] wep_name::WepNameError),
    /// `ipAddrs` on a pod whose endpoint still holds addresses: releasing them failed.
    #[error("releasing the pod's previous addresses: {}", .0.msg)]
    PreviousAddresses(CniError),
    /// DEL went through every step; these failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CniError>),
}

impl From<CalicoError> for CniError {
    fn from(e: CalicoError) -> CniError {
        use ErrorCode as C;
        let e = match e {
            CalicoError::Shared(inner) => return inner.into(),
            other => other,
        };
        let msg = e.to_string();
        let (code, details) = match &e {
            CalicoError::Shared(_) => (C::Internal, ""),
            CalicoError::Config(_) => (C::InvalidNetworkConfig, ""),
            CalicoError::Unsupported(_) => (C::UnsupportedField, ""),
            CalicoError::NodenameFileMissing { nodename_set, .. } => (
                C::TryAgainLater,
                calico_ipam::nodename::missing_file_hint(*nodename_set),
            ),
            CalicoError::MtuFileMissing(_) => (
                C::TryAgainLater,
                "calico/node writes this file when it starts; or set mtu in the network \
                 configuration",
            ),
            CalicoError::NodeState(_) | CalicoError::MtuFile { .. } => (
                C::State,
                "fix or remove the file; calico/node rewrites it when it starts",
            ),
            CalicoError::NoAddresses => (
                C::Delegation,
                "the IPAM plugin succeeded without an address: check its configuration",
            ),
            CalicoError::Dataplane(_) => (C::Netlink, ""),
            CalicoError::RouteConflict { .. } => (
                C::AddressConflict,
                "another interface already routes this address: it was probably handed out \
                 twice, or a deleted pod's route is stale; find the owner with `ip route`",
            ),
            CalicoError::CheckFailed(_) => (C::CheckFailed, ""),
            CalicoError::NotReady => (
                C::TryAgainLater,
                "ClusterInformation \"default\" does not say datastoreReady: true; calico/node \
                 sets it once the datastore is ready (it is cleared during upgrades): check \
                 that calico/node is running",
            ),
            CalicoError::ClusterInformation(source) => (source.cni_code(), store_hint(source)),
            CalicoError::Kube { source, .. } => kube_code(source),
            CalicoError::PodNotFound(_) => (
                C::Datastore,
                "the pod is not in the API server: it was probably deleted meanwhile",
            ),
            CalicoError::NoPodCidr(_) => (
                C::TryAgainLater,
                "usePodCidr takes the node's spec.podCIDRs, which the controller manager \
                 assigns (--allocate-node-cidrs); or set ipam.subnet explicitly",
            ),
            CalicoError::PodCidr(_) => (
                C::InvalidNetworkConfig,
                "make the usePodCidr / usePodCidrIPv6 subnets match the node's spec.podCIDRs",
            ),
            CalicoError::Annotation(_) => (
                C::InvalidEnvironment,
                "fix the cni.projectcalico.org annotations of the pod (or its namespace)",
            ),
            CalicoError::FeatureDisabled(_) => (
                C::InvalidNetworkConfig,
                "enable it under feature_control in the network configuration, or remove the \
                 pod's annotation",
            ),
            CalicoError::Args(_) => (C::InvalidEnvironment, ""),
            CalicoError::Endpoint(e) => endpoint_code(e),
            CalicoError::EndpointName(e) if e.field == "node" => (
                C::InvalidNetworkConfig,
                "the node name is one segment of the WorkloadEndpoint name: set a nodename \
                 that does not start or end with '-'",
            ),
            CalicoError::EndpointName(_) => (
                C::InvalidEnvironment,
                "the pod name, container id and interface name are segments of the \
                 WorkloadEndpoint name and may not start or end with '-'",
            ),
            CalicoError::PreviousAddresses(inner) => (inner.code, inner.details.as_str()),
            // The first failure decides the code; the message lists them all.
            CalicoError::Several(all) => (all.first().map(|f| f.code).unwrap_or(C::Internal), ""),
        };
        CniError::new(code, msg).with_details(details)
    }
}

/// The code of a Kubernetes API failure: retry later when the server is down or refuses
/// the credentials or the RBAC verb (calico-node refreshes the token; an operator fixes the
/// ClusterRole); the configuration when the kubeconfig is unusable; else the datastore's.
/// What to do about a datastore that could not answer the readiness question.
fn store_hint(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) | StoreError::Denied(_) => {
            "check that the datastore (etcd_endpoints, or the API server of the CNI \
             kubeconfig) is reachable from the node and that the credentials are current and \
             allowed; the runtime will retry"
        }
        StoreError::Misconfigured(_) => {
            "fix the etcd_* TLS settings of the network configuration; retries fail the same \
             way until then"
        }
        _ => "the datastore refused the request or holds an unreadable ClusterInformation",
    }
}

/// The code of a failed endpoint request, and what the operator should do.
fn endpoint_code(error: &EndpointError) -> (ErrorCode, &'static str) {
    use ErrorCode as C;
    match error {
        EndpointError::Config(_) => (C::InvalidNetworkConfig, ""),
        EndpointError::Store {
            source: StoreError::Unavailable(_),
            ..
        } => (
            C::TryAgainLater,
            "the datastore did not answer; check etcd_endpoints and that etcd is up; the \
             runtime will retry",
        ),
        EndpointError::Store {
            source: StoreError::Misconfigured(_),
            ..
        } => (
            C::InvalidNetworkConfig,
            "fix the etcd_* TLS settings of the network configuration; retries fail the same \
             way until then",
        ),
        EndpointError::Store {
            source: StoreError::Conflict(_),
            ..
        } => (
            C::TryAgainLater,
            "another writer kept changing the endpoint; the runtime will retry",
        ),
        EndpointError::Store { .. } => (
            C::Datastore,
            "the datastore refused the request or holds an unreadable object: fix or remove \
             the key named above",
        ),
        EndpointError::Kube { source, .. } => kube_code(source),
        EndpointError::PodNotFound(_) => (
            C::Datastore,
            "the pod is not in the API server: it was probably deleted meanwhile",
        ),
        EndpointError::Modified => (
            C::TryAgainLater,
            "the endpoint kept changing between read and update; the runtime retries DEL",
        ),
        EndpointError::Uid(_) => (C::IoFailure, ""),
    }
}

fn kube_code(error: &KubeError) -> (ErrorCode, &'static str) {
    match error {
        e if e.is_transient() => (
            ErrorCode::TryAgainLater,
            "check that the API server is reachable from the node and that the CNI \
             kubeconfig's credentials are current and allowed by RBAC",
        ),
        KubeError::Config(_) => (
            ErrorCode::InvalidNetworkConfig,
            "check kubernetes.kubeconfig (and the policy.k8s_* overrides) in the network \
             configuration",
        ),
        _ => (ErrorCode::Datastore, ""),
    }
}

pub struct Calico;

/// A request with Calico's config decoded.
pub(crate) type Req<'a> = Request<'a, CalicoConf>;

/// Everything ADD, DEL and CHECK derive from the request.
struct Invocation<'a> {
    conf: CalicoConf,
    req: &'a Req<'a>,
    host_veth: String,
    /// The IPAM plugin, with the stdin and CNI_ARGS it gets.
    ipam: ipam::Ipam<'a>,
    /// The pod interface's MAC, when the pod asks for one.
    container_mac: Option<[u8; 6]>,
}

impl<'a> Invocation<'a> {
    fn new(req: &'a Req<'a>) -> Result<Invocation<'a>, CalicoError> {
        let conf = req.config.clone();
        // DEL undoes whatever an ADD made; settings ADD refuses must not stop it.
        if req.env.command != Command::Del {
            conf.validate()?;
        }
        conf.node_name()?;
        let workload = Workload::from_args(&req.env.args, &req.env.container_id);
        let prefix = std::env::var(INTERFACE_PREFIX_ENV).ok();
        let host_veth = workload.host_veth_name(prefix.as_deref());
        let mut ipam = ipam::Ipam::new(
            &conf.ipam.plugin_type,
            &req.env.path,
            &req.env.args_raw,
            req.stdin,
            req.version,
        );
        // Only ADD needs the node's pod CIDRs (see pod_cidr).
        if req.env.command != Command::Add {
            if let Some(stdin) = pod_cidr::stdin_with_dummies(req.stdin) {
                ipam.set_stdin(stdin);
            }
        }
        Ok(Invocation {
            conf,
            req,
            host_veth,
            ipam,
            container_mac: None,
        })
    }

    fn ipam(&self, command: Command) -> Result<(), shared::Error> {
        self.ipam.call(command)
    }

    /// What the Kubernetes side decided: the IPAM plugin's stdin, the pod's MAC.
    fn follow(&mut self, plan: &kdd::AddPlan) {
        if let Some(stdin) = &plan.ipam_stdin {
            self.ipam.set_stdin(stdin.clone());
        }
        self.container_mac = plan.mac;
    }

    /// The pod's routes: host-local's `routes` when given (only their destinations; the
    /// defaults too with `include_default_routes`), else a default route per family.
    fn route_destinations(&self) -> Result<Vec<IpNetwork>, CalicoError> {
        let defaults = || {
            vec![
                default_destination(IpFamily::V4),
                default_destination(IpFamily::V6),
            ]
        };
        let custom: Vec<IpNetwork> = if self.conf.ipam.plugin_type == "host-local" {
            self.conf
                .ipam
                .routes
                .iter()
                .map(|r| {
                    r.dst.parse::<IpNetwork>().map_err(|_| {
                        CalicoError::Config(format!(
                            "ipam route destination {:?} is not a CIDR",
                            r.dst
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        if custom.is_empty() {
            return Ok(defaults());
        }
        let mut routes = if self.conf.include_default_routes {
            defaults()
        } else {
            Vec::new()
        };
        routes.extend(custom);
        Ok(routes)
    }

    fn plan<'n>(
        &'n self,
        netns: &'n NetNs,
        addresses: Vec<IpNetwork>,
    ) -> Result<Plan<'n>, CalicoError> {
        Ok(Plan {
            host_veth: &self.host_veth,
            ifname: &self.req.env.ifname,
            netns,
            mtu: self.conf.mtu()?,
            num_queues: self.conf.num_queues(),
            addresses,
            routes: self.route_destinations()?,
            allow_ip_forwarding: self.conf.container_settings.allow_ip_forwarding,
            container_mac: self.container_mac,
        })
    }

    fn netns(&self) -> Result<NetNs, CalicoError> {
        let path = self.req.env.netns.clone().unwrap_or_default();
        Ok(NetNs::open(&path)?)
    }
}

/// A pod address as the pod gets it: a single host (/32, /128), whatever the pool's prefix.
fn host_network(ip: IpAddr) -> IpNetwork {
    match ip {
        IpAddr::V4(v4) => IpNetwork::V4(v4.into()),
        IpAddr::V6(v6) => IpNetwork::V6(v6.into()),
    }
}

impl Plugin for Calico {
    type Config = CalicoConf;
    type Error = CalicoError;

    fn name(&self) -> &'static str {
        "calico"
    }

    fn add(&self, req: &Req) -> Result<CniResult, CalicoError> {
        let mut inv = Invocation::new(req)?;
        // Everything that can be checked before an address is taken is checked first.
        let netns = inv.netns()?;
        inv.conf.mtu()?;
        inv.route_destinations()?;
        // Calico must be ready, and the endpoint's name valid, before an address is taken.
        let endpoints = datastore::open(&inv.conf)?;
        let key = match &endpoints {
            Some(_) => Some(endpoint::key_of(&inv.conf, req)?),
            None => None,
        };
        // With the Kubernetes API: the node's pod CIDRs, the pod's annotations.
        let plan = kdd::prepare_add(&inv.conf, req, endpoints.as_deref(), key.as_ref())?;
        inv.follow(&plan);

        let ipam_result = inv.ipam.obtain(&plan.addresses)?;
        let wired = wire(&inv, &netns, ipam_result).and_then(|result| {
            if let (Some(endpoints), Some(key)) = (&endpoints, &key) {
                let endpoint = endpoint::build(key, &inv.conf, req, &result, plan.pod.as_ref())?;
                endpoints.publish(&endpoint)?;
            }
            Ok(result)
        });
        match wired {
            Ok(result) => Ok(result),
            Err(e) => {
                log::error!("ADD failed after IPAM: {e}; rolling back");
                if let Err(undo) = dataplane::remove_host_veth(&inv.host_veth) {
                    log::error!("rollback: removing {}: {undo}", inv.host_veth);
                }
                if ipam::Ipam::holds(&plan.addresses) {
                    if let Err(undo) = inv.ipam(Command::Del) {
                        log::error!("rollback: releasing the addresses: {undo}");
                    }
                }
                Err(e)
            }
        }
    }

    /// DEL in Calico's order (spec §5.3), every step tried that may be.
    ///
    /// A pod: the endpoint first, then the pod's interface, then its addresses. An endpoint
    /// that cannot be read or removed stops DEL there: the pod might still be running, and
    /// its addresses must not go to another pod while a stored endpoint claims them; the
    /// runtime's retry gets further. A plain container: addresses, endpoint, interface,
    /// and every failure is reported.
    fn del(&self, req: &Req) -> Result<Released, CalicoError> {
        let inv = Invocation::new(req)?;
        let mut released = Released::nothing();
        let endpoints = datastore::open(&inv.conf)?;
        // ADD could never have written an endpoint under an invalid name.
        let key = endpoints.as_ref().and_then(|_| {
            endpoint::key_of(&inv.conf, req)
                .map_err(|e| log::info!("no endpoint to delete: {e}"))
                .ok()
        });
        let mut failures: Vec<CniError> = Vec::new();
        let release_endpoint = |released: &mut Released| -> Result<(), CalicoError> {
            let (Some(endpoints), Some(key)) = (&endpoints, &key) else {
                return Ok(());
            };
            match endpoints.release(key)? {
                Removal::Deleted => released.add(endpoints.describe(key)),
                Removal::Kept { owner } => log::info!(
                    "{} belongs to container {owner}, not {}: left in place",
                    endpoints.describe(key),
                    key.container_id
                ),
                Removal::Absent => {}
            }
            Ok(())
        };
        // ADD refuses a config without an IPAM type, so such a config never took an address:
        // nothing to release, and no plugin to ask. The IPAM plugin's own DEL line says
        // which addresses it released.
        let release_addresses = || {
            if inv.conf.ipam.plugin_type.is_empty() {
                log::warn!("DEL: no ipam.type in the config; no address to release");
                return Ok(());
            }
            inv.ipam(Command::Del).map_err(CalicoError::from)
        };
        let pod = matches!(
            identity::Workload::from_args(&req.env.args, &req.env.container_id),
            identity::Workload::Kubernetes { .. }
        );
        if pod {
            release_endpoint(&mut released)?;
        } else if let Err(e) = release_addresses() {
            failures.push(e.into());
        }
        if !pod {
            if let Err(e) = release_endpoint(&mut released) {
                failures.push(e.into());
            }
        }
        match dataplane::teardown(req.env.netns.as_deref(), &req.env.ifname) {
            Ok(true) => released.add(format!(
                "interface {} and its host-side veth",
                req.env.ifname
            )),
            Ok(false) => {}
            Err(e) => failures.push(e.into()),
        }
        if pod {
            if let Err(e) = release_addresses() {
                failures.push(e.into());
            }
        }
        if failures.is_empty() {
            Ok(released)
        } else {
            Err(CalicoError::Several(failures))
        }
    }

    fn check(&self, req: &Req) -> Result<(), CalicoError> {
        let inv = Invocation::new(req)?;
        let Some(prev) = &req.prev_result else {
            return Err(CalicoError::CheckFailed(
                "CHECK needs the ADD result as prevResult".into(),
            ));
        };
        let addresses = prev
            .ips
            .iter()
            .map(|ip| host_network(ip.address.ip()))
            .collect();
        let netns = inv.netns()?;
        dataplane::check(&inv.plan(&netns, addresses)?)?;
        inv.ipam(Command::Check)?;
        Ok(())
    }

    fn gc(&self, req: &Req, _valid: &[Attachment]) -> Result<(), CalicoError> {
        let conf = req.config;
        conf.validate()?;
        let stdin = pod_cidr::stdin_with_dummies(req.stdin);
        delegate::call(
            &conf.ipam.plugin_type,
            &req.env.path,
            Command::Gc,
            &[],
            stdin.as_deref().unwrap_or(req.stdin),
        )?;
        Ok(())
    }

    fn status(&self, req: &Req) -> Result<(), CalicoError> {
        let conf = req.config;
        conf.validate()?;
        let stdin = pod_cidr::stdin_with_dummies(req.stdin);
        delegate::call(
            &conf.ipam.plugin_type,
            &req.env.path,
            Command::Status,
            &[],
            stdin.as_deref().unwrap_or(req.stdin),
        )?;
        Ok(())
    }
}

/// The dataplane part of ADD, and the result it reports.
fn wire(inv: &Invocation, netns: &NetNs, ipam: CniResult) -> Result<CniResult, CalicoError> {
    if ipam.ips.is_empty() {
        return Err(CalicoError::NoAddresses);
    }
    let addresses: Vec<IpNetwork> = ipam
        .ips
        .iter()
        .map(|ip| host_network(ip.address.ip()))
        .collect();
    let plan = inv.plan(netns, addresses.clone())?;
    let wired = dataplane::setup(&plan)?;
    let netns_path = inv.req.env.netns.clone().unwrap_or_default();
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: inv.host_veth.clone(),
                ..Interface::default()
            },
            Interface {
                name: inv.req.env.ifname.clone(),
                mac: wired.container_mac,
                sandbox: netns_path.display().to_string(),
                mtu: plan.mtu,
                ..Interface::default()
            },
        ],
        ips: addresses
            .into_iter()
            .map(|address| IpConfig {
                address,
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        routes: ipam.routes,
        dns: ipam.dns,
    })
}

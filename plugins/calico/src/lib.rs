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
pub mod identity;
pub mod ipam;
pub mod kdd;
pub mod pod_cidr;
pub mod readiness;
pub mod wep_name;
pub mod workload_endpoint;

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
    #[error("error deleting endpoint: endpoint was modified before it could be deleted")]
    EndpointModified,
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
    /// ClusterInformation readiness and the WorkloadEndpoint on etcd or `local`.
    #[error(transparent)]
    Endpoint(#[from] workload_endpoint::WepError),
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
            CalicoError::EndpointModified => (
                C::TryAgainLater,
                "the Pod kept changing between read and update; the runtime retries DEL",
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
            CalicoError::Endpoint(e) => e.code_and_details(),
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
        // On etcd or `local`: Calico must be ready, and the endpoint's name valid, before an
        // address is taken.
        let endpoint = workload_endpoint::Session::open_for_add(&inv.conf, req)?;

        // With the Kubernetes API: readiness, the node's pod CIDRs, the pod's annotations.
        let (kube, plan) = kdd::Session::open_for_add(&inv.conf, req)?;
        inv.follow(&plan);

        let ipam_result = inv.ipam.obtain(&plan.addresses)?;
        let pod_object = kube.as_ref().and_then(kdd::Session::pod_object);
        let wired = wire(&inv, &netns, ipam_result)
            .and_then(|result| match &endpoint {
                Some(endpoint) => endpoint.write(&result, pod_object).map(|()| result),
                None => Ok(result),
            })
            .and_then(|result| match &kube {
                Some(kube) => kube.publish(&result).map(|()| result),
                None => Ok(result),
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

    fn del(&self, req: &Req) -> Result<Released, CalicoError> {
        let inv = Invocation::new(req)?;
        let mut released = Released::nothing();
        // Kubernetes datastore: refused while Calico is not ready; the Pod's addresses are
        // cleared before anything is torn down, and an unreadable Pod stops DEL here.
        if let Some(kube) = kdd::Session::open_for_del(&inv.conf, req)? {
            if kube.release()? {
                released.add("the pod's podIP/podIPs annotations");
            }
        }
        // The teardown adds what it removed; the steps run in the order `Session::del` picks.
        let steps = std::cell::RefCell::new(Released::nothing());
        let teardown = || {
            if dataplane::teardown(req.env.netns.as_deref(), &req.env.ifname)? {
                steps.borrow_mut().add(format!(
                    "interface {} and its host-side veth",
                    req.env.ifname
                ));
            }
            Ok(())
        };
        // ADD refuses a config without an IPAM type, so such a config never took an address:
        // nothing to release, and no plugin to ask. The IPAM plugin's own DEL line says
        // which addresses it released.
        let release = || {
            if inv.conf.ipam.plugin_type.is_empty() {
                log::warn!("DEL: no ipam.type in the config; no address to release");
                return Ok(());
            }
            inv.ipam(Command::Del).map_err(CalicoError::from)
        };
        // On etcd or `local`: refused while Calico is not ready; the endpoint goes too.
        let failures: Vec<CniError> = match workload_endpoint::Session::open(&inv.conf, req)? {
            Some(endpoint) => endpoint.del(teardown, release, &mut released),
            None => [teardown(), release()]
                .into_iter()
                .filter_map(|r| r.err().map(CniError::from))
                .collect(),
        };
        released.merge(steps.into_inner());
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

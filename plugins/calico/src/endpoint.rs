//! The workload's endpoint as this plugin describes it (spec §2, §3.1, §5.4): its key (the
//! WorkloadEndpoint name Calico computes), its profiles, what the Pod says of itself, and
//! what ADD wired. Where and how it is stored is the datastore library's business
//! (`calico_ipam::workload`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_ipam::workload::kube_objects::Pod;
use calico_ipam::workload::{Endpoint, EndpointKey, EndpointPort, IpNat};
use shared::spec::result::CniResult;

use crate::config::CalicoConf;
use crate::identity::Workload;
use crate::wep_name::{check_namespace, wep_name, WepNameError, WepWorkload};
use crate::{CalicoError, Req};

/// The namespace of every endpoint outside Kubernetes.
pub const CNI_NAMESPACE: &str = "default";

/// The endpoint of this request: its namespace, Calico's name for it, and its sandbox.
pub fn key_of(conf: &CalicoConf, req: &Req) -> Result<EndpointKey, CalicoError> {
    let node = conf.node_name()?;
    let workload = Workload::from_args(&req.env.args, &req.env.container_id);
    Ok(key(
        &node,
        &workload,
        &req.env.container_id,
        &req.env.ifname,
    )?)
}

pub fn key(
    node: &str,
    workload: &Workload,
    container_id: &str,
    ifname: &str,
) -> Result<EndpointKey, WepNameError> {
    let (namespace, pod, segment) = match workload {
        Workload::Kubernetes { namespace, pod } => {
            (namespace.clone(), Some(pod.clone()), WepWorkload::Pod(pod))
        }
        Workload::Container { id } => (CNI_NAMESPACE.to_string(), None, WepWorkload::Container(id)),
    };
    check_namespace(&namespace)?;
    Ok(EndpointKey {
        name: wep_name(node, segment, ifname)?,
        namespace,
        pod,
        container_id: container_id.to_string(),
    })
}

/// What a pod's Kubernetes object adds to its endpoint, when it has been read (with
/// `policy.type: k8s`): labels, service account, `generateName`, named and host ports, and
/// the annotations validated before IPAM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub generate_name: Option<String>,
    pub ports: Vec<EndpointPort>,
    /// `floatingIPs`: the endpoint's `ipNATs`.
    pub floating_ips: Vec<IpAddr>,
    /// `allowedSourcePrefixes`: `allowSpoofedSourcePrefixes`.
    pub allowed_source_prefixes: Vec<String>,
}

impl PodInfo {
    pub fn of_pod(pod: &Pod) -> PodInfo {
        let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        let annotations = &pod.metadata.annotations;
        PodInfo {
            labels: pod.metadata.labels.clone(),
            service_account: non_empty(&pod.spec.service_account_name),
            generate_name: non_empty(&pod.metadata.generate_name),
            ports: pod.endpoint_ports(),
            // Refused before IPAM when unreadable: what is left here reads.
            floating_ips: crate::annotations::floating_ips(annotations).unwrap_or_default(),
            allowed_source_prefixes: crate::annotations::allowed_source_prefixes(annotations)
                .unwrap_or_default(),
        }
    }
}

/// Profiles name the policy (spec §2): `kns.<namespace>` (and `ksa.<ns>.<sa>`) for a pod
/// with `policy.type: k8s`, else the network's name.
fn profiles(key: &EndpointKey, conf: &CalicoConf, service_account: Option<&str>) -> Vec<String> {
    if key.pod.is_none() || !conf.policy.is_k8s() {
        return vec![conf.name.clone()];
    }
    let mut profiles = vec![format!("kns.{}", key.namespace)];
    if let Some(sa) = service_account {
        profiles.push(format!("ksa.{}.{sa}", key.namespace));
    }
    profiles
}

/// Each floating IP NATed to the pod's (single-host) address of its family; one with no
/// such address cannot be honoured.
fn nats(result: &CniResult, floating: &[IpAddr]) -> Result<Vec<IpNat>, CalicoError> {
    floating
        .iter()
        .map(|&external| {
            result
                .ips
                .iter()
                .map(|ip| ip.address)
                .find(|a| {
                    a.is_ipv4() == external.is_ipv4()
                        && a.prefix() == if a.is_ipv4() { 32 } else { 128 }
                })
                .map(|internal| IpNat {
                    internal: internal.ip(),
                    external,
                })
                .ok_or_else(|| {
                    CalicoError::Config(format!(
                        "floating IP {external} has no pod address of its family to NAT to"
                    ))
                })
        })
        .collect()
}

/// The endpoint ADD publishes: interface 0 of the result is the host veth, 1 the
/// container's, and the addresses already carry their /32 and /128.
pub fn build(
    key: &EndpointKey,
    conf: &CalicoConf,
    req: &Req,
    result: &CniResult,
    pod: Option<&PodInfo>,
) -> Result<Endpoint, CalicoError> {
    let info = pod.cloned().unwrap_or_default();
    let policy_named = conf.policy.policy_type.as_deref().is_none_or(str::is_empty);
    Ok(Endpoint {
        key: key.clone(),
        node: conf.node_name()?,
        interface: req.env.ifname.clone(),
        profiles: profiles(key, conf, info.service_account.as_deref()),
        network_profile: policy_named.then(|| conf.name.clone()),
        host_interface: result
            .interfaces
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default(),
        mac: result
            .interfaces
            .get(1)
            .map(|i| i.mac.clone())
            .unwrap_or_default(),
        ip_networks: result.ips.iter().map(|ip| ip.address).collect(),
        ip_nats: nats(result, &info.floating_ips)?,
        labels: info.labels,
        service_account: info.service_account,
        generate_name: info.generate_name,
        ports: info.ports,
        allowed_source_prefixes: info.allowed_source_prefixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use shared::spec::args::CniArgs;
    use shared::spec::result::IpConfig;

    fn conf(extra: Value) -> CalicoConf {
        let mut v = json!({"name": "net", "ipam": {"type": "calico-ipam"}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        CalicoConf::parse(v.to_string().as_bytes()).expect("valid conf")
    }

    fn pod_key(container: &str) -> EndpointKey {
        let args = CniArgs::parse("K8S_POD_NAMESPACE=ns-1;K8S_POD_NAME=web-0").expect("args");
        key(
            "node-a",
            &Workload::from_args(&args, container),
            container,
            "eth0",
        )
        .expect("key")
    }

    fn result(addresses: &[&str]) -> CniResult {
        CniResult {
            ips: addresses
                .iter()
                .map(|a| IpConfig {
                    address: a.parse().expect("cidr"),
                    gateway: None,
                    interface: Some(1),
                })
                .collect(),
            ..CniResult::default()
        }
    }

    #[test]
    fn names_are_calicos_and_bad_segments_are_refused() {
        assert_eq!(pod_key("c1").name, "node--a-k8s-web--0-eth0");
        assert_eq!(pod_key("c1").namespace, "ns-1");
        let container = Workload::Container {
            id: "0123abcd".into(),
        };
        let k = key("node-a", &container, "0123abcd", "eth0").expect("key");
        assert_eq!(
            (k.namespace.as_str(), k.name.as_str(), k.pod),
            ("default", "node--a-cni-0123abcd-eth0", None)
        );
        assert_eq!(
            key("-node", &container, "0123abcd", "eth0")
                .expect_err("node")
                .field,
            "node"
        );
    }

    #[test]
    fn profiles_follow_the_policy_type() {
        let k = pod_key("c1");
        assert_eq!(profiles(&k, &conf(json!({})), Some("sa")), vec!["net"]);
        let k8s = conf(json!({"policy": {"type": "k8s"}}));
        assert_eq!(profiles(&k, &k8s, None), vec!["kns.ns-1"]);
        assert_eq!(
            profiles(&k, &k8s, Some("builder")),
            vec!["kns.ns-1", "ksa.ns-1.builder"]
        );
    }

    #[test]
    fn floating_ips_become_nats_of_the_same_family() {
        let both = result(&["10.0.0.5/32", "fd00::5/128"]);
        let floating: Vec<IpAddr> = vec![
            "192.0.2.7".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        ];
        let got = nats(&both, &floating).expect("both families");
        assert_eq!(
            serde_json::to_value(&got).expect("json"),
            json!([{"internalIP": "10.0.0.5", "externalIP": "192.0.2.7"},
                   {"internalIP": "fd00::5", "externalIP": "2001:db8::7"}])
        );
        assert!(matches!(
            nats(&result(&["10.0.0.5/32"]), &floating),
            Err(CalicoError::Config(m)) if m.contains("2001:db8::7")
        ));
    }
}

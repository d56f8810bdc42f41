//! Which addresses the cluster's objects say are in use, read as Calico reads them: a
//! WorkloadEndpoint's `ipNetworks` and a v3 Node's tunnel addresses (etcd and local), a
//! pod's Calico annotations or status and a Kubernetes Node's tunnel annotations
//! (Kubernetes). `calico-ipam check` compares them with the blocks' allocations.

use std::net::IpAddr;

use serde_json::Value;

use crate::model::{NodeTunnelAddresses, WorkloadAddresses};
use crate::store::codec::corrupt;
use crate::store::StoreError;

/// The pod annotations the calico plugin writes its addresses into (CIDRs, comma-separated).
pub const POD_IPS_ANNOTATION: &str = "cni.projectcalico.org/podIPs";
pub const POD_IP_ANNOTATION: &str = "cni.projectcalico.org/podIP";

/// A Kubernetes Node's annotations for its tunnel addresses, as calico/node writes them.
const NODE_TUNNEL_ANNOTATIONS: [&str; 5] = [
    "projectcalico.org/IPv4IPIPTunnelAddr",
    "projectcalico.org/IPv4VXLANTunnelAddr",
    "projectcalico.org/IPv6VXLANTunnelAddr",
    "projectcalico.org/IPv4WireguardInterfaceAddr",
    "projectcalico.org/IPv6WireguardInterfaceAddr",
];

/// The same addresses in a v3 Node's spec: (path, field) pairs.
const NODE_TUNNEL_FIELDS: [(&[&str], &str); 5] = [
    (&["bgp"], "ipv4IPIPTunnelAddr"),
    (&[], "ipv4VXLANTunnelAddr"),
    (&[], "ipv6VXLANTunnelAddr"),
    (&["wireguard"], "interfaceIPv4Address"),
    (&["wireguard"], "interfaceIPv6Address"),
];

/// `10.0.0.5/32` or `10.0.0.5`: the address (Calico's `ParseCIDROrIP`).
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.split_once('/').map_or(text, |(ip, _)| ip).parse().ok()
}

fn addresses<'a>(
    what: &str,
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<IpAddr>, StoreError> {
    texts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| address(t).ok_or_else(|| corrupt(what, format!("{t:?} is not an address"))))
        .collect()
}

fn text<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(object, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// A v3 WorkloadEndpoint (etcd and local).
pub fn from_workload_endpoint(key: &str, bytes: &[u8]) -> Result<WorkloadAddresses, StoreError> {
    let object: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))?;
    let networks = object["spec"]["ipNetworks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    // The key is `.../workloadendpoints/<namespace>/<name>`: what the metadata lacks.
    let mut parts = key.rsplit('/');
    let key_name = parts.next().unwrap_or_default();
    let key_namespace = parts.next().unwrap_or_default();
    let or = |field: &str, fallback: &str| {
        Some(text(&object, &["metadata", field]))
            .filter(|s| !s.is_empty())
            .unwrap_or(fallback)
            .to_string()
    };
    Ok(WorkloadAddresses {
        namespace: or("namespace", key_namespace),
        name: or("name", key_name),
        pod: text(&object, &["spec", "pod"]).to_string(),
        ips: addresses(key, networks)?,
    })
}

/// A v3 Node's tunnel addresses (etcd and local).
pub fn from_v3_node(key: &str, bytes: &[u8]) -> Result<NodeTunnelAddresses, StoreError> {
    let object: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))?;
    let spec = &object["spec"];
    let texts = NODE_TUNNEL_FIELDS.iter().map(|(path, field)| {
        let mut full = path.to_vec();
        full.push(field);
        text(spec, &full)
    });
    let node = Some(text(&object, &["metadata", "name"]))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| key.rsplit('/').next().unwrap_or_default());
    Ok(NodeTunnelAddresses {
        node: node.to_string(),
        ips: addresses(key, texts)?,
    })
}

/// The addresses of a pod's endpoint in Calico's order (`status.podIPs`, else
/// `status.podIP`, else the calico plugin's `podIPs` annotation, else `podIP`): the first of
/// them that holds any. A text that is not an address is an error naming it.
pub fn pod_ips(pod: &Value) -> Result<Vec<IpAddr>, String> {
    let parse = |texts: Vec<&str>| -> Result<Vec<IpAddr>, String> {
        texts
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| address(t).ok_or_else(|| format!("{t:?} is not an address")))
            .collect()
    };
    let status: Vec<&str> = pod["status"]["podIPs"]
        .as_array()
        .map(|a| a.iter().map(|p| text(p, &["ip"])).collect())
        .unwrap_or_default();
    let annotations = &pod["metadata"]["annotations"];
    let candidates = [
        status,
        vec![text(pod, &["status", "podIP"])],
        annotations[POD_IPS_ANNOTATION]
            .as_str()
            .map(|l| l.split(',').collect())
            .unwrap_or_default(),
        vec![annotations[POD_IP_ANNOTATION].as_str().unwrap_or_default()],
    ];
    for texts in candidates {
        let ips = parse(texts)?;
        if !ips.is_empty() {
            return Ok(ips);
        }
    }
    Ok(Vec::new())
}

/// A pod, as Calico's Kubernetes datastore turns it into a WorkloadEndpoint: none for a
/// host-network or unscheduled pod; no addresses once it has finished; else [`pod_ips`].
pub fn from_pod(pod: &Value) -> Result<Option<WorkloadAddresses>, StoreError> {
    if pod["spec"]["hostNetwork"] == Value::Bool(true)
        || text(pod, &["spec", "nodeName"]).is_empty()
    {
        return Ok(None);
    }
    let namespace = text(pod, &["metadata", "namespace"]).to_string();
    let name = text(pod, &["metadata", "name"]).to_string();
    let phase = text(pod, &["status", "phase"]);
    let ips = if phase == "Succeeded" || phase == "Failed" {
        Vec::new()
    } else {
        pod_ips(pod).map_err(|e| corrupt(&format!("Pod {namespace}/{name}"), e))?
    };
    Ok(Some(WorkloadAddresses {
        namespace,
        pod: name.clone(),
        name,
        ips,
    }))
}

/// A Kubernetes Node's tunnel addresses, from calico/node's annotations.
pub fn from_kubernetes_node(node: &Value) -> Result<NodeTunnelAddresses, StoreError> {
    let name = text(node, &["metadata", "name"]).to_string();
    let annotations = &node["metadata"]["annotations"];
    let texts = NODE_TUNNEL_ANNOTATIONS
        .iter()
        .map(|a| annotations[*a].as_str().unwrap_or_default());
    Ok(NodeTunnelAddresses {
        ips: addresses(&format!("Node {name}"), texts)?,
        node: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_pod_uses_its_status_then_the_plugins_annotations() {
        let mut pod = json!({
            "metadata": {"namespace": "ns", "name": "web",
                         "annotations": {POD_IPS_ANNOTATION: "10.0.0.5/32,fd00::5/128",
                                         POD_IP_ANNOTATION: "10.0.0.5/32"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.9.9.9"}]},
        });
        let w = from_pod(&pod).expect("decodes").expect("a workload");
        assert_eq!(w.ips, vec![ip("10.9.9.9")]);
        pod["status"] = json!({"phase": "Pending"});
        let w = from_pod(&pod).expect("decodes").expect("a workload");
        assert_eq!(w.ips, vec![ip("10.0.0.5"), ip("fd00::5")]);
        pod["metadata"]["annotations"][POD_IPS_ANNOTATION] = json!("");
        assert_eq!(pod_ips(&pod), Ok(vec![ip("10.0.0.5")]));
        pod["status"]["phase"] = json!("Succeeded");
        let w = from_pod(&pod).expect("decodes").expect("a workload");
        assert!(w.ips.is_empty(), "a finished pod holds nothing");
        pod["spec"]["hostNetwork"] = json!(true);
        assert_eq!(from_pod(&pod).expect("decodes"), None);
    }

    #[test]
    fn a_bad_address_is_corrupt_data_not_a_free_address() {
        let pod = json!({
            "metadata": {"namespace": "ns", "name": "web",
                         "annotations": {POD_IP_ANNOTATION: "10.0.0.300/32"}},
            "spec": {"nodeName": "n1"},
        });
        assert!(matches!(from_pod(&pod), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn node_tunnels_in_both_layouts() {
        let v3 = json!({"metadata": {"name": "n1"},
                        "spec": {"bgp": {"ipv4IPIPTunnelAddr": "10.0.0.1"},
                                 "wireguard": {"interfaceIPv4Address": "10.0.0.2"}}});
        let n = from_v3_node("k/n1", v3.to_string().as_bytes()).expect("decodes");
        assert_eq!(n.ips, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let k8s = json!({"metadata": {"name": "n1", "annotations": {
            "projectcalico.org/IPv4VXLANTunnelAddr": "10.0.0.3"}}});
        let n = from_kubernetes_node(&k8s).expect("decodes");
        assert_eq!((n.node.as_str(), n.ips), ("n1", vec![ip("10.0.0.3")]));
    }
}

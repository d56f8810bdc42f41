//! The parts of Calico's network configuration calico-ipam reads: which datastore, how to
//! reach it, which node this is, and what to assign from which pools.

use std::path::PathBuf;

use serde::Deserialize;
use shared::gojson::{Decode, DecodeError, Document};

use crate::k8s::settings::{KubernetesSection, PolicySection};
use crate::nodename::NodenameConf;

/// `/var/run/calico/ipam.lock`: one IPAM operation at a time on a node, as Calico does.
pub const DEFAULT_LOCK_FILE: &str = "/var/run/calico/ipam.lock";
/// Where the `local` datastore keeps its objects unless `local_data_dir` says otherwise.
pub const DEFAULT_LOCAL_DATA_DIR: &str = "/var/lib/calico/local-datastore";

/// Which datastore, and how to reach it: keys the calico plugin reads too.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DatastoreConf {
    /// `etcdv3` (Calico's default when unset), `kubernetes`, or our `local`.
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    /// `http` or `https`: for `etcd_authority`, and endpoints written without one.
    #[serde(default)]
    pub etcd_scheme: Option<String>,
    /// `host:port` of the one etcd, when `etcd_endpoints` is not given (older configs).
    #[serde(default)]
    pub etcd_authority: Option<String>,
    /// A domain whose `_etcd-client-ssl._tcp` / `_etcd-client._tcp` SRV records list etcd.
    #[serde(default)]
    pub etcd_discovery_srv: Option<String>,
    /// Ours: the directory of the `local` datastore.
    #[serde(default)]
    pub local_data_dir: Option<String>,
}

/// calico-ipam's view of the network config. Calico's Go `NetConf` has the datastore and
/// node keys at the top level; here they are their own types (the calico plugin reads them
/// too), decoded from the same document.
#[derive(Debug, Clone, Default)]
pub struct IpamNetConf {
    pub name: String,
    pub datastore: DatastoreConf,
    pub node: NodenameConf,
    pub ipam_lock_file: Option<String>,
    pub ipam: IpamSection,
    /// `kubeconfig` and `k8s_api_root`: the API server of the Kubernetes datastore.
    pub kubernetes: KubernetesSection,
    /// The legacy connection overrides (`k8s_api_root`, `k8s_auth_token`, ...).
    pub policy: PolicySection,
}

/// The keys of [`IpamNetConf`] that are calico-ipam's alone.
#[derive(Debug, Clone, Default, Deserialize)]
struct OwnKeys {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ipam_lock_file: Option<String>,
    #[serde(default)]
    ipam: IpamSection,
    #[serde(default)]
    kubernetes: KubernetesSection,
    #[serde(default)]
    policy: PolicySection,
}

impl Decode for IpamNetConf {
    fn decode(doc: &Document) -> Result<IpamNetConf, DecodeError> {
        let own: OwnKeys = doc.decode()?;
        Ok(IpamNetConf {
            name: own.name,
            datastore: doc.decode()?,
            node: doc.decode()?,
            ipam_lock_file: own.ipam_lock_file,
            ipam: own.ipam,
            kubernetes: own.kubernetes,
            policy: own.policy,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamSection {
    /// Strings, as Calico reads them: only `"false"` turns IPv4 off.
    #[serde(default)]
    pub assign_ipv4: Option<String>,
    /// Only `"true"` turns IPv6 on.
    #[serde(default)]
    pub assign_ipv6: Option<String>,
    /// Pool CIDRs or IPPool names.
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

impl DatastoreConf {
    pub fn kind(&self) -> Result<Datastore, String> {
        match self.datastore_type.as_deref().unwrap_or("") {
            "" | "etcdv3" => Ok(Datastore::Etcd),
            "kubernetes" => Ok(Datastore::Kubernetes),
            "local" => Ok(Datastore::Local),
            other => Err(format!(
                "unknown datastore_type {other:?}: use etcdv3, kubernetes or local"
            )),
        }
    }
}

/// The datastores calico-ipam can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    Etcd,
    Kubernetes,
    Local,
}

impl IpamNetConf {
    pub fn datastore(&self) -> Result<Datastore, String> {
        self.datastore.kind()
    }

    pub fn assign_v4(&self) -> bool {
        self.ipam.assign_ipv4.as_deref() != Some("false")
    }

    pub fn assign_v6(&self) -> bool {
        self.ipam.assign_ipv6.as_deref() == Some("true")
    }

    pub fn lock_file(&self) -> PathBuf {
        PathBuf::from(
            self.ipam_lock_file
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or(DEFAULT_LOCK_FILE),
        )
    }

    pub fn local_data_dir(&self) -> PathBuf {
        PathBuf::from(
            self.datastore
                .local_data_dir
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or(DEFAULT_LOCAL_DATA_DIR),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_recorded_input_is_read() {
        // calico's delegated stdin, as containerd's CRI and podman ran the chain.
        for (stdin, datastore) in [
            (&include_bytes!("../../../shared/tests/fixtures/containerd-cri/kubernetes-datastore/calico-ipam-add.json")[..], Datastore::Kubernetes),
            (&include_bytes!("../../../shared/tests/fixtures/containerd-cri/local-datastore/calico-ipam-del.json")[..], Datastore::Local),
            (&include_bytes!("../../../shared/tests/fixtures/podman/calico-ipam-add.json")[..], Datastore::Local),
        ] {
            let conf: IpamNetConf = shared::gojson::from_slice(stdin).expect("decodes");
            assert_eq!(conf.datastore(), Ok(datastore));
            assert!(conf.assign_v4() && conf.assign_v6());
        }
    }

    fn conf(json: &str) -> IpamNetConf {
        shared::gojson::from_slice(json.as_bytes()).expect("parses")
    }

    #[test]
    fn calicos_defaults() {
        let c = conf(r#"{"name":"k8s-pod-network","ipam":{"type":"calico-ipam"}}"#);
        assert_eq!(c.datastore(), Ok(Datastore::Etcd));
        assert!(c.assign_v4());
        assert!(!c.assign_v6());
        assert_eq!(c.lock_file(), PathBuf::from(DEFAULT_LOCK_FILE));
    }

    #[test]
    fn families_are_strings() {
        let c = conf(r#"{"ipam":{"assign_ipv4":"false","assign_ipv6":"true"}}"#);
        assert!(!c.assign_v4());
        assert!(c.assign_v6());
        let c = conf(r#"{"ipam":{"assign_ipv4":"no","assign_ipv6":"yes"}}"#);
        assert!(c.assign_v4(), "only \"false\" disables IPv4");
        assert!(!c.assign_v6(), "only \"true\" enables IPv6");
        assert!(conf(r#"{"datastore_type":"consul"}"#).datastore().is_err());
    }

    #[test]
    fn keys_are_matched_as_calicos_go_code_matches_them() {
        let c = conf(
            r#"{"Datastore_Type":"kubernetes","NODENAME":"n1",
                "IPAM":{"Assign_IPv6":"true","IPv4_Pools":["default-ipv4-ippool"]},
                "Kubernetes":{"Kubeconfig":"/etc/cni/net.d/calico-kubeconfig"}}"#,
        );
        assert_eq!(c.datastore(), Ok(Datastore::Kubernetes));
        assert_eq!(c.node.nodename.as_deref(), Some("n1"));
        assert!(c.assign_v6());
        assert_eq!(c.ipam.ipv4_pools, ["default-ipv4-ippool"]);
        assert_eq!(
            c.kubernetes.kubeconfig.as_deref(),
            Some("/etc/cni/net.d/calico-kubeconfig")
        );
    }
}

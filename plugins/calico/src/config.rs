//! The calico plugin's configuration: the keys of Calico's network config that matter on
//! Linux, with Calico's defaults. Unknown keys are accepted (Calico ignores them too).

use std::path::Path;

use calico_ipam::k8s::settings::{KubernetesSection, PolicySection};
use calico_ipam::netconf::{Datastore, DatastoreConf};
use calico_ipam::nodename::{NodenameConf, NodenameError};
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::gojson::{Decode, DecodeError, Document};

use crate::CalicoError;

/// Written by calico-node with the MTU it detected for pods.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";

/// Calico's keys. Its Go `NetConf` has the node and datastore keys at the top level; here
/// they are their own types (calico-ipam reads them too), decoded from the same document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self")]
pub struct CalicoConf {
    #[serde(default)]
    pub name: String,
    /// `nodename`, `nodename_file`, `nodename_file_optional`, `hostname`.
    #[serde(skip)]
    pub node: NodenameConf,
    /// `datastore_type`, `etcd_*`, `local_data_dir`: read by calico-ipam from the same
    /// config, and by this plugin for the datastore it writes workload state to.
    #[serde(skip)]
    pub datastore: DatastoreConf,
    #[serde(default)]
    pub mtu: i64,
    /// Ours: where the MTU file lives (Calico hard-codes `/var/lib/calico/mtu`).
    #[serde(default)]
    pub mtu_file: Option<String>,
    #[serde(default)]
    pub require_mtu_file: bool,
    #[serde(default)]
    pub num_queues: i64,
    #[serde(default)]
    pub device_type: Option<String>,
    #[serde(default)]
    pub ipam: IpamConf,
    /// `type` (`k8s`: read the Pod and Namespace, honour their annotations) and the legacy
    /// API server overrides.
    #[serde(default)]
    pub policy: PolicySection,
    /// `kubeconfig`, `k8s_api_root`, `node_name` (the node whose podCIDRs `usePodCidr`
    /// takes).
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    #[serde(default)]
    pub container_settings: ContainerSettings,
    #[serde(default)]
    pub feature_control: FeatureControl,
    #[serde(default)]
    pub include_default_routes: bool,
    #[serde(default)]
    pub dataplane_options: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// host-local's container routes: only their destinations are used.
    #[serde(default)]
    pub routes: Vec<IpamRoute>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpamRoute {
    #[serde(default)]
    pub dst: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerSettings {
    #[serde(default)]
    pub allow_ip_forwarding: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FeatureControl {
    #[serde(default)]
    pub ip_addrs_no_ipam: bool,
    #[serde(default)]
    pub floating_ips: bool,
}

impl Decode for CalicoConf {
    fn decode(doc: &Document) -> Result<CalicoConf, DecodeError> {
        let mut conf = CalicoConf::deserialize(doc.deserializer())?;
        conf.node = doc.decode()?;
        conf.datastore = doc.decode()?;
        Ok(conf)
    }
}

impl CalicoConf {
    /// Decodes and validates a config outside the plugin skeleton (`calico -t`).
    pub fn parse(stdin: &[u8]) -> Result<CalicoConf, CalicoError> {
        let conf: CalicoConf = shared::gojson::from_slice(stdin)
            .map_err(|e| CalicoError::Config(format!("invalid calico configuration: {e}")))?;
        conf.validate()?;
        Ok(conf)
    }

    /// What Calico refuses before touching anything.
    pub fn validate(&self) -> Result<(), CalicoError> {
        match self.device_type.as_deref() {
            None | Some("") | Some("veth") => {}
            Some("netkit") => {
                return Err(CalicoError::Unsupported(
                    "device_type \"netkit\" is not supported by this plugin; use \"veth\"".into(),
                ))
            }
            Some(other) => {
                return Err(CalicoError::Config(format!(
                    "unknown device_type {other:?}: use \"veth\""
                )))
            }
        }
        if let Some(options) = &self.dataplane_options {
            return Err(match options.get("type").and_then(Value::as_str) {
                Some("grpc") => CalicoError::Unsupported(
                    "dataplane_options type \"grpc\" (an external dataplane) is not supported; \
                     remove dataplane_options to use the Linux dataplane"
                        .into(),
                ),
                _ => CalicoError::Config(
                    "invalid dataplane type: remove dataplane_options to use the Linux dataplane"
                        .into(),
                ),
            });
        }
        if self.ipam.plugin_type.is_empty() {
            return Err(CalicoError::Config(
                "missing \"ipam\".\"type\": name the IPAM plugin (calico-ipam, host-local, ...)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The node name, decided as Calico decides it (see [`calico_ipam::nodename`]).
    pub fn node_name(&self) -> Result<String, CalicoError> {
        self.node.resolve().map_err(|e| match e {
            NodenameError::FileMissing { path, nodename_set } => {
                CalicoError::NodenameFileMissing { path, nodename_set }
            }
            e @ NodenameError::Invalid { .. } => CalicoError::Config(e.to_string()),
            other => CalicoError::NodeState(other.to_string()),
        })
    }

    /// The MTU for both ends of the veth: the config's, else the MTU file's, else `None` (the
    /// kernel's default).
    pub fn mtu(&self) -> Result<Option<u32>, CalicoError> {
        if self.mtu != 0 {
            return match u32::try_from(self.mtu) {
                Ok(mtu) if MTU_RANGE.contains(&mtu) => Ok(Some(mtu)),
                _ => Err(CalicoError::Config(format!(
                    "mtu {} is outside {}-{}: set an MTU the kernel accepts on a veth, or 0 \
                     (or no mtu) to use the one calico/node writes to {DEFAULT_MTU_FILE}",
                    self.mtu,
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ))),
            };
        }
        let file = self
            .mtu_file
            .as_deref()
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_MTU_FILE);
        let mtu = read_mtu_file(Path::new(file), self.require_mtu_file)?;
        match mtu {
            Some(m) if !MTU_RANGE.contains(&m) => Err(CalicoError::MtuFile {
                path: file.to_string(),
                reason: format!("{m} is outside {}-{}", MTU_RANGE.start(), MTU_RANGE.end()),
            }),
            other => Ok(other),
        }
    }

    /// `datastore_type: kubernetes`: Calico's state is in the API server, the endpoint is
    /// the Pod's annotations.
    pub fn kubernetes_datastore(&self) -> bool {
        self.datastore.kind().ok() == Some(Datastore::Kubernetes)
    }

    /// TX and RX queues of the veth: at least one.
    pub fn num_queues(&self) -> u32 {
        u32::try_from(self.num_queues.max(1)).unwrap_or(1)
    }
}

/// What a veth takes: IPv4's minimum to the kernel's maximum.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// The largest MTU file read: calico/node writes a number.
const MAX_MTU_FILE: u64 = 4096;

fn read_mtu_file(path: &Path, required: bool) -> Result<Option<u32>, CalicoError> {
    match shared::file::read_regular_text(path, MAX_MTU_FILE) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| CalicoError::MtuFile {
                path: path.display().to_string(),
                // Quoted short: the path may point at a file that is not calico/node's.
                reason: format!(
                    "{:?} is not an MTU",
                    shared::redact::excerpt(text.trim(), 16)
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CalicoError::MtuFileMissing(path.display().to_string()))
        }
        Err(e) => Err(CalicoError::MtuFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtimes_recorded_input_is_read() {
        // What containerd's CRI and podman sent (tests/tests/runtime_cri.rs, runtime_podman.rs).
        for (stdin, kubernetes) in [
            (&include_bytes!("../../../shared/tests/fixtures/containerd-cri/kubernetes-datastore/calico-add.json")[..], true),
            (&include_bytes!("../../../shared/tests/fixtures/containerd-cri/local-datastore/calico-del.json")[..], false),
            (&include_bytes!("../../../shared/tests/fixtures/podman/calico-add.json")[..], false),
        ] {
            let conf = CalicoConf::parse(stdin).expect("decodes");
            assert_eq!(conf.kubernetes_datastore(), kubernetes);
            assert_eq!(conf.ipam.plugin_type, "calico-ipam");
        }
    }

    fn conf(v: Value) -> Result<CalicoConf, CalicoError> {
        CalicoConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn reads_calicos_keys_and_accepts_unknown_ones() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "log_level": "info", "datastore_type": "kubernetes", "mtu": 1440,
            "nodename": "node-a", "num_queues": 4, "something_new": {"x": 1},
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true"},
            "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
            "container_settings": {"allow_ip_forwarding": true}
        }))
        .expect("valid");
        assert_eq!(c.mtu().expect("mtu"), Some(1440));
        assert_eq!(c.num_queues(), 4);
        assert!(c.container_settings.allow_ip_forwarding);
        assert_eq!(c.ipam.plugin_type, "calico-ipam");
        assert!(c.policy.is_k8s());
        assert!(c.kubernetes_datastore());
        assert_eq!(
            c.kubernetes.kubeconfig.as_deref(),
            Some("/etc/cni/net.d/calico-kubeconfig")
        );
    }

    #[test]
    fn kubernetes_sections_are_optional_and_typed() {
        let c = conf(json!({"name": "n", "ipam": {"type": "host-local"}})).expect("valid");
        assert!(!c.policy.is_k8s());
        assert!(!c.kubernetes_datastore());
        assert_eq!(c.kubernetes.node_name, None);
        let err = conf(json!({"name": "n", "ipam": {"type": "host-local"},
                              "kubernetes": {"kubeconfig": 7}}))
        .expect_err("not a path");
        assert!(err.to_string().contains("kubernetes.kubeconfig"), "{err}");
    }

    #[test]
    fn refuses_what_calico_refuses() {
        let base = || json!({"name": "n", "ipam": {"type": "host-local"}});
        let mut v = base();
        v["device_type"] = json!("netkit");
        assert!(matches!(conf(v), Err(CalicoError::Unsupported(_))));
        let mut v = base();
        v["device_type"] = json!("macvlan");
        assert!(matches!(conf(v), Err(CalicoError::Config(_))));
        let mut v = base();
        v["dataplane_options"] = json!({"type": "bogus"});
        assert!(
            matches!(conf(v), Err(CalicoError::Config(m)) if m.contains("invalid dataplane type"))
        );
        assert!(matches!(
            conf(json!({"name": "n"})),
            Err(CalicoError::Config(_))
        ));
        let mut v = base();
        v["mtu"] = json!("1500");
        assert!(matches!(conf(v), Err(CalicoError::Config(m)) if m.contains("mtu")));
    }

    #[test]
    fn node_name_comes_from_the_config_keys_and_a_missing_file_is_retryable() {
        // The precedence itself is calico_ipam::nodename's; here: the keys reach it, and a
        // missing file becomes the error the plugin maps to "try again later".
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nodename");
        let c = conf(json!({"name": "n", "ipam": {"type": "host-local"},
                            "nodename_file": file, "nodename": "node-a"}))
        .expect("valid");
        assert!(matches!(
            c.node_name(),
            Err(CalicoError::NodenameFileMissing {
                nodename_set: true,
                ..
            })
        ));
        std::fs::write(&file, "node-from-file").expect("write");
        assert_eq!(c.node_name().expect("name"), "node-a");
    }

    #[test]
    fn mtu_from_the_file_when_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mtu");
        let mut c = conf(json!({"name": "n", "ipam": {"type": "host-local"},
                                "mtu_file": file}))
        .expect("valid");
        assert_eq!(c.mtu().expect("no file"), None);
        std::fs::write(&file, "1410\n").expect("write");
        assert_eq!(c.mtu().expect("file"), Some(1410));
        std::fs::write(&file, "big").expect("write");
        assert!(matches!(c.mtu(), Err(CalicoError::MtuFile { .. })));
        std::fs::remove_file(&file).expect("rm");
        c.require_mtu_file = true;
        assert!(matches!(c.mtu(), Err(CalicoError::MtuFileMissing(_))));
    }
}

//! Who the workload is, and the host-side interface name derived from it. Felix derives the
//! same name from the Pod to find the interface, so it must match Calico's bit for bit.

use sha1::{Digest, Sha1};
use shared::spec::args::CniArgs;

/// The prefix Felix is configured with; its first comma-separated element names our veths.
pub const INTERFACE_PREFIX_ENV: &str = "FELIX_INTERFACEPREFIX";
const DEFAULT_PREFIX: &str = "cali";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// Both K8S_POD_NAMESPACE and K8S_POD_NAME were given.
    Kubernetes { namespace: String, pod: String },
    /// Anything else: a plain container, in namespace `default`.
    Container { id: String },
}

impl Workload {
    pub fn from_args(args: &CniArgs, container_id: &str) -> Workload {
        match (
            args.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty()),
            args.get("K8S_POD_NAME").filter(|s| !s.is_empty()),
        ) {
            (Some(namespace), Some(pod)) => Workload::Kubernetes {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
            },
            _ => Workload::Container {
                id: container_id.to_string(),
            },
        }
    }

    /// `cali` + 11 hex digits of SHA-1("<namespace>.<pod>") for a pod (the prefix from
    /// `FELIX_INTERFACEPREFIX` when set); `cali` + the first 11 characters of the container
    /// id otherwise. Either way 15 bytes at most, the kernel's limit.
    pub fn host_veth_name(&self, prefix_env: Option<&str>) -> String {
        match self {
            Workload::Kubernetes { namespace, pod } => {
                let prefix = prefix_env
                    .and_then(|p| p.split(',').next())
                    .filter(|p| !p.is_empty())
                    .unwrap_or(DEFAULT_PREFIX);
                let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("{prefix}{}", &hex[..11])
            }
            Workload::Container { id } => {
                let short: String = id.chars().take(11).collect();
                format!("{DEFAULT_PREFIX}{short}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(ns: &str, pod: &str) -> Workload {
        Workload::Kubernetes {
            namespace: ns.into(),
            pod: pod.into(),
        }
    }

    #[test]
    fn pod_names_hash_like_calico() {
        // Calico keeps the first 11 hex digits of the SHA-1.
        let expected = {
            let d = Sha1::digest(b"default.nginx");
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("cali{}", &hex[..11])
        };
        assert_eq!(k8s("default", "nginx").host_veth_name(None), expected);
        assert_eq!(expected.len(), 15);
        // A known vector, computed independently with sha1sum.
        assert_eq!(
            k8s("default", "nginx").host_veth_name(None),
            "calic440f455693"
        );
    }

    #[test]
    fn the_prefix_comes_from_felix_configuration() {
        let name = k8s("default", "nginx").host_veth_name(Some("tap,cali"));
        assert!(name.starts_with("tap"), "{name}");
        assert_eq!(name.len(), 14);
        assert!(k8s("a", "b").host_veth_name(Some("")).starts_with("cali"));
    }

    #[test]
    fn plain_containers_use_their_id() {
        let w = Workload::Container {
            id: "0123456789abcdef".into(),
        };
        assert_eq!(w.host_veth_name(Some("tap")), "cali0123456789a");
        assert_eq!(
            Workload::Container { id: "abc".into() }.host_veth_name(None),
            "caliabc"
        );
    }

    #[test]
    fn kubernetes_needs_both_namespace_and_pod() {
        let args =
            CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p").expect("args");
        assert_eq!(Workload::from_args(&args, "c"), k8s("ns", "p"));
        let args = CniArgs::parse("K8S_POD_NAME=p").expect("args");
        assert_eq!(
            Workload::from_args(&args, "c"),
            Workload::Container { id: "c".into() }
        );
    }
}

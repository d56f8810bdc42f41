//! Which API server and credentials a network configuration names (spec §3.1 step 1):
//! the kubeconfig of `kubernetes.kubeconfig` (else `$KUBECONFIG`), with the overrides of
//! `policy` (`k8s_api_root`, `k8s_auth_token`, `k8s_client_certificate`, `k8s_client_key`,
//! `k8s_certificate_authority`) and `kubernetes.k8s_api_root`, which wins.

use serde::Deserialize;

/// The environment variable Calico exports `kubernetes.kubeconfig` as, and reads back.
pub const KUBECONFIG_ENV: &str = "KUBECONFIG";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KubernetesSection {
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub k8s_api_root: Option<String>,
    /// The node whose podCIDRs `usePodCidr` uses (defaults to the node name).
    #[serde(default)]
    pub node_name: Option<String>,
}

/// `policy`: `type` (`k8s` or empty) and the legacy connection overrides.
#[derive(Clone, Default, Deserialize)]
pub struct PolicySection {
    #[serde(rename = "type", default)]
    pub policy_type: Option<String>,
    #[serde(default)]
    pub k8s_api_root: Option<String>,
    #[serde(default)]
    pub k8s_auth_token: Option<String>,
    #[serde(default)]
    pub k8s_client_certificate: Option<String>,
    #[serde(default)]
    pub k8s_client_key: Option<String>,
    #[serde(default)]
    pub k8s_certificate_authority: Option<String>,
}

// A hand-written Debug so that a logged configuration never shows the token.
impl std::fmt::Debug for PolicySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySection")
            .field("type", &self.policy_type)
            .field("k8s_api_root", &self.k8s_api_root)
            .field(
                "k8s_auth_token",
                &self.k8s_auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("k8s_client_certificate", &self.k8s_client_certificate)
            .field("k8s_client_key", &self.k8s_client_key)
            .field("k8s_certificate_authority", &self.k8s_certificate_authority)
            .finish()
    }
}

impl PolicySection {
    /// `policy.type: k8s`: the plugin reads the Pod and Namespace (their annotations).
    pub fn is_k8s(&self) -> bool {
        self.policy_type.as_deref() == Some("k8s")
    }
}

/// Where the API server is and how to authenticate, after the overrides.
#[derive(Clone, Default)]
pub struct KubeSettings {
    pub kubeconfig: Option<String>,
    /// `https://host:port`, without any `/api/...` suffix.
    pub server: Option<String>,
    pub token: Option<String>,
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    pub certificate_authority: Option<String>,
}

impl std::fmt::Debug for KubeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSettings")
            .field("kubeconfig", &self.kubeconfig)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("certificate_authority", &self.certificate_authority)
            .finish()
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Calico's `k8s_api_root` may be a full API path (`https://h:6443/api/v1/`): the server is
/// what comes before `/api/`.
fn server_of(api_root: &str) -> String {
    let server = match api_root.find("/api/") {
        Some(at) => &api_root[..at],
        None => api_root,
    };
    server.trim_end_matches('/').to_string()
}

impl KubeSettings {
    /// The settings of one network configuration; `$KUBECONFIG` when the configuration
    /// names no kubeconfig (Calico exports the key as that variable and reads it back).
    pub fn from_conf(kubernetes: &KubernetesSection, policy: &PolicySection) -> KubeSettings {
        let kubeconfig = non_empty(&kubernetes.kubeconfig)
            .or_else(|| std::env::var(KUBECONFIG_ENV).ok().filter(|v| !v.is_empty()));
        let server = non_empty(&kubernetes.k8s_api_root)
            .or_else(|| non_empty(&policy.k8s_api_root))
            .map(|root| server_of(&root));
        KubeSettings {
            kubeconfig,
            server,
            token: non_empty(&policy.k8s_auth_token),
            client_certificate: non_empty(&policy.k8s_client_certificate),
            client_key: non_empty(&policy.k8s_client_key),
            certificate_authority: non_empty(&policy.k8s_certificate_authority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_root_is_cut_at_api() {
        assert_eq!(
            server_of("https://10.0.0.1:6443/api/v1/"),
            "https://10.0.0.1:6443"
        );
        assert_eq!(server_of("https://10.0.0.1:6443/"), "https://10.0.0.1:6443");
        assert_eq!(server_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn kubernetes_api_root_wins_over_policy() {
        let k: KubernetesSection = serde_json::from_value(serde_json::json!({
            "kubeconfig": "/etc/cni/net.d/calico-kubeconfig",
            "k8s_api_root": "https://a:6443/api/v1"
        }))
        .expect("parses");
        let p: PolicySection = serde_json::from_value(serde_json::json!({
            "type": "k8s", "k8s_api_root": "https://b:6443", "k8s_auth_token": "secret"
        }))
        .expect("parses");
        let s = KubeSettings::from_conf(&k, &p);
        assert_eq!(s.server.as_deref(), Some("https://a:6443"));
        assert_eq!(
            s.kubeconfig.as_deref(),
            Some("/etc/cni/net.d/calico-kubeconfig")
        );
        assert!(p.is_k8s());
        assert!(
            !format!("{s:?} {p:?}").contains("secret"),
            "tokens are never printed"
        );
    }
}

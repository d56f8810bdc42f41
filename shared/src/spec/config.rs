//! The network configuration a plugin reads on stdin: the keys every plugin shares, the
//! well-known runtime capabilities, and everything else kept as it came.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::env::validate_network_name;
use super::result::{CniResult, Dns};
use super::version::Version;
use crate::error::{Error, Result};

/// The keys every plugin's config has. Plugin-specific keys stay in `extra`; plugins parse
/// their own typed config from the raw bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// 1.1.0: the versions this config may be used with (runtimes pick one for us).
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Dns::is_empty"
    )]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(
        rename = "runtimeConfig",
        default,
        deserialize_with = "null_as_default"
    )]
    pub runtime_config: RuntimeConfig,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The well-known capabilities (CONVENTIONS.md). A runtime may send `null` for any of them
/// (containerd sends `"portMappings": null` for pods without ports): that means "none".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default, deserialize_with = "null_as_default")]
    pub port_mappings: Vec<PortMapping>,
    /// host-local range sets; host-local parses them.
    #[serde(rename = "ipRanges", default, skip_serializing_if = "Option::is_none")]
    pub ip_ranges: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthLimits>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<RuntimeDns>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddrOrEmpty>,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

/// `hostIP` is often sent as `""` meaning "every address".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IpAddrOrEmpty {
    Addr(IpAddr),
    Text(String),
}

/// Bits per second and bits, as the bandwidth capability carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthLimits {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

/// The `dns` capability: note the key names differ from a result's `dns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDns {
    #[serde(default, deserialize_with = "null_as_default")]
    pub servers: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub searches: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: Vec<String>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl NetConf {
    /// Parses stdin: a JSON object with a valid `name`. The version is checked separately,
    /// against the plugin's supported list, by [`NetConf::negotiate_version`].
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(Error::DecodeConfig)?;
        validate_network_name(&conf.name)?;
        Ok(conf)
    }

    /// The config's `cniVersion` must be one the plugin speaks, exactly.
    pub fn negotiate_version(&self, supported: &'static [Version]) -> Result<Version> {
        self.cni_version
            .parse::<Version>()
            .ok()
            .filter(|v| supported.contains(v))
            .ok_or_else(|| Error::IncompatibleVersion {
                config: self.cni_version.clone(),
                supported,
            })
    }

    /// The previous plugin's result, read in the config's version when it names none.
    pub fn prev_result(&self, version: Version) -> Result<Option<CniResult>> {
        self.prev_result
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| CniResult::from_value(v, version))
            .transpose()
    }

    /// `args.cni.<key>`, the convention that supersedes CNI_ARGS.
    pub fn cni_arg(&self, key: &str) -> Option<&Value> {
        self.args.as_ref()?.get("cni")?.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUPPORTED: &[Version] = &Version::ALL;

    #[test]
    fn parses_a_chained_config_and_keeps_unknown_keys() {
        let conf = NetConf::parse(
            json!({
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "type": "portmap",
                "snat": true,
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": ""}
                ], "someFuture": 1},
                "prevResult": {"cniVersion": "1.0.0",
                               "ips": [{"address": "10.0.0.2/32"}]},
                "cni.dev/something": "x"
            })
            .to_string()
            .as_bytes(),
        )
        .expect("parses");
        assert_eq!(
            conf.negotiate_version(SUPPORTED).expect("ok"),
            Version::V1_0_0
        );
        assert_eq!(conf.runtime_config.port_mappings.len(), 2);
        assert_eq!(conf.runtime_config.port_mappings[1].protocol, "udp");
        assert_eq!(conf.extra.get("snat"), Some(&json!(true)));
        assert!(conf.extra.contains_key("cni.dev/something"));
        assert!(conf.runtime_config.extra.contains_key("someFuture"));
        let prev = conf
            .prev_result(Version::V1_0_0)
            .expect("parses")
            .expect("present");
        assert_eq!(prev.ips.len(), 1);
    }

    #[test]
    fn null_capabilities_mean_none() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n","type":"portmap",
                 "runtimeConfig":{"portMappings":null,"ips":null},"dns":null}"#,
        )
        .expect("parses");
        assert!(conf.runtime_config.port_mappings.is_empty());
        assert!(conf.runtime_config.ips.is_empty());
        assert!(conf.dns.is_empty());
    }

    #[test]
    fn version_must_be_exactly_supported() {
        let conf = |v: &str| {
            NetConf::parse(format!(r#"{{"cniVersion":"{v}","name":"n"}}"#).as_bytes())
                .expect("parses")
        };
        for bad in ["", "0.2.0", "9.9.9", "1.0"] {
            match conf(bad).negotiate_version(SUPPORTED) {
                Err(Error::IncompatibleVersion { config, .. }) => assert_eq!(config, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let no_version = NetConf::parse(br#"{"name":"n"}"#).expect("parses");
        assert!(no_version.negotiate_version(SUPPORTED).is_err());
        assert!(conf("0.3.0").negotiate_version(&[Version::V1_0_0]).is_err());
    }

    #[test]
    fn refuses_bad_json_and_bad_names() {
        assert!(matches!(
            NetConf::parse(b"{not json"),
            Err(Error::DecodeConfig(_))
        ));
        assert!(matches!(
            NetConf::parse(b"[1]"),
            Err(Error::DecodeConfig(_))
        ));
        assert!(matches!(
            NetConf::parse(br#"{"cniVersion":"1.0.0"}"#),
            Err(Error::MissingNetworkName)
        ));
        assert!(matches!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b"}"#),
            Err(Error::InvalidNetworkName(_))
        ));
    }

    #[test]
    fn numbers_passed_through_survive_print_and_reparse() {
        // Found by fuzzing: a long decimal in a key the plugin does not know changed its
        // last bit once printed for the next plugin and read again.
        let text = br#"{"name":"n","mtu":14499999900000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000018446744073709551607}"#;
        let conf = NetConf::parse(text).expect("parses");
        let printed = serde_json::to_vec(&conf).expect("prints");
        let again = NetConf::parse(&printed).expect("re-parses");
        assert_eq!(conf.extra["mtu"], again.extra["mtu"]);
    }

    #[test]
    fn reads_args_cni_and_bandwidth() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n",
                 "args":{"cni":{"ips":["10.0.0.9"]}},
                 "runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":2000}}}"#,
        )
        .expect("parses");
        assert_eq!(conf.cni_arg("ips"), Some(&json!(["10.0.0.9"])));
        let bw = conf.runtime_config.bandwidth.expect("bandwidth");
        assert_eq!(bw.ingress_rate, 1_000_000);
        assert_eq!(bw.egress_rate, 0);
    }
}

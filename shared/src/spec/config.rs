//! The network configuration a plugin reads on stdin: the keys every plugin shares and the
//! well-known runtime capabilities, decoded as Go decodes them ([`crate::gojson`]). Each
//! plugin decodes its own keys from the same [`Document`]; nothing is parsed twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::env::validate_network_name;
use super::result::{CniResult, Dns};
use super::version::Version;
use crate::error::{Error, Result};
use crate::gojson::{self, Document};

/// The keys every plugin's config has, as libcni's `types.NetConf` has them, plus Calico's
/// logging keys, which every plugin of the suite honours.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// 1.1.0: the versions this config may be used with (runtimes pick one for us).
    #[serde(rename = "cniVersions", default)]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    /// Kept as written: `args.cni.*` is read by each plugin that knows its keys.
    #[serde(default)]
    pub args: Option<gojson::Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// Decoded by [`NetConf::prev_result`], in the negotiated version.
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<gojson::Value>,
    #[serde(default)]
    pub log_level: String,
    #[serde(default)]
    pub log_file_path: String,
    /// Calico's rotation keys (MB, days, files); 0 or less means Calico's default
    /// ([`crate::log_rotate::Limits::from_calico`]).
    #[serde(default)]
    pub log_file_max_size: i64,
    #[serde(default)]
    pub log_file_max_age: i64,
    #[serde(default)]
    pub log_file_max_count: i64,
    /// GC's list of attachments to keep; see [`NetConf::valid_attachments`].
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<gojson::Value>,
    /// The key the 1.1.0 text named; libcni sends both.
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<gojson::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// The well-known capabilities (CONVENTIONS.md), as libcni and the runtimes send them.
/// `null` for any of them (containerd sends `"portMappings": null` for pods without ports)
/// means none.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    /// host-local range sets; host-local decodes them.
    #[serde(rename = "ipRanges", default)]
    pub ip_ranges: Option<gojson::Value>,
    #[serde(default)]
    pub bandwidth: Option<BandwidthLimits>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub dns: Option<RuntimeDns>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(rename = "deviceID", default)]
    pub device_id: String,
    #[serde(rename = "cgroupPath", default)]
    pub cgroup_path: String,
    #[serde(rename = "infinibandGUID", default)]
    pub infiniband_guid: String,
}

/// One `portMappings` entry, typed as the Go plugins type it: ports are plain integers
/// (validated by portmap, so a bad one gets portmap's message, not a decoder's), `hostIP` a
/// string where `""` means every address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort", default)]
    pub host_port: i64,
    #[serde(rename = "containerPort", default)]
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
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
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// An attachment the runtime still wants (GC keeps these).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// Only the name, first: libcni's skeleton reports a config it cannot read as JSON, or
/// whose `name` is not a string, as a decoding failure (code 6) before anything else.
#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

impl NetConf {
    /// When the log file rotates and what is kept, from Calico's keys.
    pub fn log_limits(&self) -> crate::log_rotate::Limits {
        let positive = |v: i64| u64::try_from(v).unwrap_or(0);
        crate::log_rotate::Limits::from_calico(
            positive(self.log_file_max_size),
            positive(self.log_file_max_age),
            positive(self.log_file_max_count),
        )
    }

    /// Parses stdin: JSON with a valid `name`, then the shared keys. The version is checked
    /// separately, against the plugin's supported list, by [`NetConf::negotiate_version`].
    /// With `lenient` (DEL), a shared key that cannot be decoded is left at its default and
    /// returned, for the log.
    pub fn parse(doc: &Document, lenient: bool) -> Result<(NetConf, Vec<gojson::DecodeError>)> {
        let name: NameOnly = doc.decode().map_err(Error::DecodeConfig)?;
        validate_network_name(&name.name)?;
        if lenient {
            doc.decode_lenient().map_err(Error::ConfigField)
        } else {
            Ok((doc.decode().map_err(Error::ConfigField)?, Vec::new()))
        }
    }

    /// The config's `cniVersion` must be one the plugin speaks, exactly; none (or an empty
    /// one) means 0.1.0, as libcni reads it.
    pub fn negotiate_version(&self, supported: &'static [Version]) -> Result<Version> {
        let named = if self.cni_version.is_empty() {
            Ok(Version::UNNAMED)
        } else {
            self.cni_version.parse::<Version>()
        };
        named
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
            .map(|v| CniResult::from_gojson(v, version))
            .transpose()
    }

    /// GC's attachments to keep, under either key (the newer wins when both are sent); an
    /// absent list means nothing is valid.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>> {
        let raw = self
            .valid_attachments
            .as_ref()
            .filter(|v| !v.is_null())
            .or(self.attachments.as_ref());
        match raw {
            None => Ok(Vec::new()),
            Some(v) => gojson::from_value(v).map_err(|e| {
                Error::InvalidConfig(format!(
                    "cni.dev/valid-attachments must be a list of {{containerID, ifname}}: {e}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUPPORTED: &[Version] = &Version::ALL;

    fn parse(text: &[u8]) -> Result<NetConf> {
        let doc = Document::parse(text).map_err(Error::DecodeConfig)?;
        NetConf::parse(&doc, false).map(|(c, _)| c)
    }

    #[test]
    fn parses_a_chained_config() {
        let conf = parse(
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
        assert_eq!(conf.capabilities.get("portMappings"), Some(&true));
        let prev = conf
            .prev_result(Version::V1_0_0)
            .expect("parses")
            .expect("present");
        assert_eq!(prev.ips.len(), 1);
    }

    #[test]
    fn reads_what_containerds_cri_sends() {
        // Go structs without json tags: every capability's keys capitalised.
        let conf = parse(
            br#"{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"portmap",
                 "runtimeConfig":{"portMappings":[{"HostPort":30081,"ContainerPort":80,
                 "Protocol":"tcp","HostIP":""}],
                 "bandwidth":{"IngressRate":10000000,"IngressBurst":4294967295,
                 "EgressRate":20000000,"EgressBurst":4294967295}}}"#,
        )
        .expect("parses");
        assert_eq!(
            conf.runtime_config.port_mappings,
            vec![PortMapping {
                host_port: 30081,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new()
            }]
        );
        assert_eq!(
            conf.runtime_config.bandwidth,
            Some(BandwidthLimits {
                ingress_rate: 10_000_000,
                ingress_burst: 4_294_967_295,
                egress_rate: 20_000_000,
                egress_burst: 4_294_967_295,
            })
        );
    }

    #[test]
    fn null_capabilities_mean_none() {
        let conf = parse(
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
            parse(format!(r#"{{"cniVersion":"{v}","name":"n"}}"#).as_bytes()).expect("parses")
        };
        for bad in ["9.9.9", "1.0", "0.2"] {
            match conf(bad).negotiate_version(SUPPORTED) {
                Err(Error::IncompatibleVersion { config, .. }) => assert_eq!(config, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // No version, or an empty one, is 0.1.0, as libcni reads it: fine for a plugin that
        // speaks it, refused naming the empty version by one that starts at 0.3.0.
        let no_version = parse(br#"{"name":"n"}"#).expect("parses");
        assert_eq!(
            no_version.negotiate_version(SUPPORTED).ok(),
            Some(Version::V0_1_0)
        );
        assert_eq!(
            conf("").negotiate_version(SUPPORTED).ok(),
            Some(Version::V0_1_0)
        );
        match no_version.negotiate_version(&Version::CHAINING) {
            Err(Error::IncompatibleVersion { config, .. }) => assert_eq!(config, ""),
            other => panic!("{other:?}"),
        }
        assert!(conf("0.3.0").negotiate_version(&[Version::V1_0_0]).is_err());
    }

    #[test]
    fn refuses_bad_json_and_bad_names() {
        assert!(matches!(parse(b"{not json"), Err(Error::DecodeConfig(_))));
        assert!(matches!(parse(b"[1]"), Err(Error::DecodeConfig(_))));
        assert!(matches!(
            parse(br#"{"cniVersion":"1.0.0"}"#),
            Err(Error::MissingNetworkName)
        ));
        assert!(matches!(
            parse(br#"{"cniVersion":"1.0.0","name":"a b"}"#),
            Err(Error::InvalidNetworkName(_))
        ));
        // A shared key of the wrong shape names itself; DEL reads past it.
        let text = br#"{"name":"n","runtimeConfig":{"bandwidth":{"ingressRate":-1}}}"#;
        match parse(text) {
            Err(Error::ConfigField(e)) => {
                assert_eq!(e.path_string(), "runtimeConfig.bandwidth.ingressRate")
            }
            other => panic!("{other:?}"),
        }
        let doc = Document::parse(text).expect("json");
        let (conf, unread) = NetConf::parse(&doc, true).expect("lenient");
        assert_eq!(
            conf.runtime_config.bandwidth,
            Some(BandwidthLimits::default())
        );
        assert_eq!(unread.len(), 1);
    }

    #[test]
    fn numbers_passed_through_survive_print_and_reparse() {
        // Found by fuzzing: a long decimal in a key the plugin does not know changed its
        // last bit once printed for the next plugin and read again.
        let text = br#"{"name":"n","mtu":14499999900000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000018446744073709551607}"#;
        let doc = Document::parse(text).expect("parses");
        let printed = serde_json::to_vec(&doc.to_json()).expect("prints");
        let again = Document::parse(&printed).expect("re-parses");
        assert_eq!(doc.to_json()["mtu"], again.to_json()["mtu"]);
    }

    #[test]
    fn reads_args_bandwidth_and_attachments() {
        let conf = parse(
            br#"{"cniVersion":"1.1.0","name":"n",
                 "args":{"cni":{"ips":["10.0.0.9"]}},
                 "runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":2000}},
                 "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .expect("parses");
        assert!(conf.args.is_some());
        let bw = conf.runtime_config.bandwidth.as_ref().expect("bandwidth");
        assert_eq!(bw.ingress_rate, 1_000_000);
        assert_eq!(bw.egress_rate, 0);
        let kept = conf.valid_attachments().expect("attachments");
        assert_eq!(kept[0].container_id, "a");
    }
}

//! portmap's own keys, validated before anything is written: the backend and its options,
//! the port mappings, and the container's addresses from the previous result.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use shared::spec::config::PortMapping;
use shared::spec::result::CniResult;

use crate::model::{Container, Family, Mapping, Protocol};
use crate::PortmapError;

/// Where the rules go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

/// The plugin's settings, from the config's own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub backend: Backend,
    pub snat: bool,
    /// `1 << markMasqBit`.
    pub mark: u32,
    pub external_set_mark_chain: Option<String>,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
}

impl Settings {
    pub fn conditions(&self, family: Family) -> &[String] {
        match family {
            Family::V4 => &self.conditions_v4,
            Family::V6 => &self.conditions_v6,
        }
    }
}

/// portmap's own keys, typed as the reference types them (its `PortMapConf`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PortmapConf {
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
}

fn invalid(msg: impl Into<String>) -> PortmapError {
    PortmapError::Config(msg.into())
}

/// Whether a binary is on PATH: the cheap way to learn which firewall tools this node has,
/// without running one.
fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(binary)))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The longest chain name iptables takes (`XT_EXTENSION_MAXNAMELEN` less the NUL).
const CHAIN_NAME_MAX: usize = 28;

/// `externalSetMarkChain` becomes a token of iptables-restore text: a name as iptables
/// allows it, so that it can never end the line or the table section it is in.
fn check_chain_name(chain: &str) -> Result<(), PortmapError> {
    let printable = chain
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'));
    if chain.len() > CHAIN_NAME_MAX || !printable || chain.starts_with(['-', '!']) {
        return Err(invalid(format!(
            "invalid externalSetMarkChain {chain:?}: a chain name is 1 to {CHAIN_NAME_MAX} \
             printable characters, without spaces or quotes, not starting with - or !"
        )));
    }
    Ok(())
}

/// Conditions are tokens of a rule: iptables tokens are quoted into iptables-restore
/// text, nft tokens joined into an nft rule, so a token may hold nothing that ends the rule,
/// the line or the command there (a line break, a control character; for nft also `;`, `#`,
/// quotes, `$` and backslashes), or every later word would be a rule or a table of its own.
fn check_conditions(key: &str, conds: &[String], backend: Backend) -> Result<(), PortmapError> {
    for token in conds {
        let bad = token.chars().find(|&c| {
            c.is_control()
                || (backend == Backend::Nftables
                    && (c.is_whitespace() || matches!(c, ';' | '#' | '"' | '\'' | '$' | '\\')))
        });
        if token.is_empty() || bad.is_some() {
            return Err(invalid(format!(
                "invalid {key} token {token:?}: give one word per list entry, with no line \
                 breaks or control characters{}",
                if backend == Backend::Nftables {
                    ", spaces, quotes, or any of ; # $ \\"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

/// iptables conditions start with an option (`-s`, `! -d`); nft ones with a keyword.
fn iptables_style(conditions: &[String]) -> bool {
    conditions
        .first()
        .is_some_and(|c| c.starts_with('-') || c.starts_with('!'))
}

impl Settings {
    /// The plugin's keys, checked as the reference checks them.
    pub fn parse(raw: &PortmapConf) -> Result<Settings, PortmapError> {
        let raw = raw.clone();
        if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
            return Err(invalid(
                "Cannot specify externalSetMarkChain and markMasqBit",
            ));
        }
        let bit = raw.mark_masq_bit.unwrap_or(13);
        if !(0..=31).contains(&bit) {
            return Err(invalid("MasqMarkBit must be between 0 and 31"));
        }
        let conditions_v4 = raw.conditions_v4.unwrap_or_default();
        let conditions_v6 = raw.conditions_v6.unwrap_or_default();
        if let Some(chain) = raw.external_set_mark_chain.as_deref() {
            check_chain_name(chain)?;
        }
        let mut iptables_opts = Vec::new();
        let mut nftables_opts = Vec::new();
        if raw.external_set_mark_chain.is_some() {
            iptables_opts.push("externalSetMarkChain");
        }
        for (key, conds) in [
            ("conditionsV4", &conditions_v4),
            ("conditionsV6", &conditions_v6),
        ] {
            if conds.is_empty() {
                continue;
            }
            if iptables_style(conds) {
                iptables_opts.push(key);
            } else {
                nftables_opts.push(key);
            }
        }
        let backend = match raw.backend.as_deref() {
            Some("iptables") => Backend::Iptables,
            Some("nftables") => Backend::Nftables,
            Some(other) => return Err(invalid(format!("unrecognized backend {other:?}"))),
            None if !iptables_opts.is_empty() => Backend::Iptables,
            None if !nftables_opts.is_empty() => Backend::Nftables,
            // The reference's rule: iptables unless only nftables is usable.
            None if !on_path("iptables-restore") && on_path("nft") => Backend::Nftables,
            None => Backend::Iptables,
        };
        for (key, conds) in [
            ("conditionsV4", &conditions_v4),
            ("conditionsV6", &conditions_v6),
        ] {
            check_conditions(key, conds, backend)?;
        }
        let (other, wrong) = match backend {
            Backend::Iptables => ("nftables", &nftables_opts),
            Backend::Nftables => ("iptables", &iptables_opts),
        };
        if !wrong.is_empty() {
            let this = if other == "iptables" {
                "nftables"
            } else {
                "iptables"
            };
            return Err(invalid(format!(
                "{this} backend was requested but configuration contains {other}-specific options {wrong:?}"
            )));
        }
        Ok(Settings {
            backend,
            snat: raw.snat.unwrap_or(true),
            mark: 1u32 << bit,
            external_set_mark_chain: raw.external_set_mark_chain.filter(|c| !c.is_empty()),
            conditions_v4,
            conditions_v6,
        })
    }
}

/// The runtime's `portMappings`, validated: ports 1..65535 (the reference's messages for
/// zero and negatives), a known protocol (none given is TCP), a hostIP that is an address
/// or empty.
pub fn mappings(raw: &[PortMapping]) -> Result<Vec<Mapping>, PortmapError> {
    raw.iter()
        .map(|m| {
            let container_port = port(m.container_port).ok_or_else(|| {
                invalid(format!(
                    "Invalid container port number: {}",
                    m.container_port
                ))
            })?;
            let host_port = port(m.host_port)
                .ok_or_else(|| invalid(format!("Invalid host port number: {}", m.host_port)))?;
            let protocol = match m.protocol.as_str() {
                "" => Some(Protocol::Tcp),
                text => Protocol::parse(text),
            }
            .ok_or_else(|| {
                invalid(format!(
                    "unknown protocol {:?} for host port {}: use tcp, udp or sctp",
                    m.protocol, m.host_port
                ))
            })?;
            let host_ip = match m.host_ip.as_str() {
                "" => None,
                text => Some(text.parse::<IpAddr>().map_err(|_| {
                    invalid(format!(
                        "invalid hostIP {text:?} for host port {}: not an IP address",
                        m.host_port
                    ))
                })?),
            };
            Ok(Mapping {
                host_port,
                container_port,
                protocol,
                host_ip,
            })
        })
        .collect()
}

fn port(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The first IPv4 and first IPv6 address of the container interface in `prev`: an entry is
/// skipped when it names an interface that is another one or on the host side.
pub fn container_ips(prev: &CniResult, ifname: &str) -> Vec<ipnetwork::IpNetwork> {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        if let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i)) {
            if iface.name != ifname || iface.sandbox.is_empty() {
                continue;
            }
        }
        let slot = match ip.address.ip() {
            IpAddr::V4(_) => &mut v4,
            IpAddr::V6(_) => &mut v6,
        };
        slot.get_or_insert(ip.address);
    }
    v4.into_iter().chain(v6).collect()
}

/// The containers (one per family) the mappings apply to; refuses mappings that cannot be
/// honoured: a hostIP of a family the container has no address in, or no address at all.
pub fn containers(
    network: &str,
    id: &str,
    ips: &[ipnetwork::IpNetwork],
    mappings: &[Mapping],
) -> Result<Vec<Container>, PortmapError> {
    if ips.is_empty() {
        return Err(invalid(
            "prevResult has no IP address for the container interface: nothing to forward ports to",
        ));
    }
    for m in mappings {
        if let Some(ip) = m.host_ip {
            let family = Family::of(&ip);
            if !ips.iter().any(|c| Family::of(&c.ip()) == family) {
                return Err(invalid(format!(
                    "hostIP {ip} of host port {} is {} but the container has no {} address",
                    m.host_port,
                    family.name(),
                    family.name()
                )));
            }
        }
    }
    Ok(ips
        .iter()
        .map(|ip| Container {
            network: network.to_string(),
            id: id.to_string(),
            ip: *ip,
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use shared::gojson::Document;
    use shared::spec::{NetConf, Version};

    fn settings(v: Value) -> Result<Settings, PortmapError> {
        let conf: PortmapConf = shared::gojson::from_json(&v).unwrap();
        Settings::parse(&conf)
    }

    #[test]
    fn defaults() {
        let s = settings(json!({"type": "portmap"})).unwrap();
        assert!(s.snat);
        assert_eq!(s.mark, 0x2000);
        assert_eq!(s.external_set_mark_chain, None);
    }

    #[test]
    fn backend_options_must_match_the_backend() {
        let s =
            settings(json!({"backend": "nftables", "conditionsV4": ["ip", "saddr", "1.2.3.4"]}))
                .unwrap();
        assert_eq!(s.backend, Backend::Nftables);
        let s = settings(json!({"conditionsV4": ["-s", "1.2.3.4"]})).unwrap();
        assert_eq!(s.backend, Backend::Iptables);
        assert!(
            settings(json!({"backend": "nftables", "conditionsV4": ["-s", "1.2.3.4"]})).is_err()
        );
        assert!(
            settings(json!({"backend": "iptables", "conditionsV6": ["ip6", "saddr", "::1"]}))
                .is_err()
        );
        assert!(settings(json!({"backend": "nftables", "externalSetMarkChain": "X"})).is_err());
        let e = settings(json!({"backend": "ebpf"})).unwrap_err();
        assert_eq!(e.to_string(), "unrecognized backend \"ebpf\"");
    }

    #[test]
    fn strings_that_reach_a_rule_cannot_end_it() {
        // Each of these would add rules or tables of their own to the firewall.
        let refused = |v: Value| settings(v).unwrap_err().to_string();
        let chain = refused(json!({"externalSetMarkChain":
            "MARK\nCOMMIT\n*filter\n-A INPUT -s 7.7.7.7 -j ACCEPT"}));
        assert!(chain.contains("invalid externalSetMarkChain"), "{chain}");
        for bad in ["A B", "-X", "!X", "\"X\"", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012"] {
            assert!(
                settings(json!({"externalSetMarkChain": bad})).is_err(),
                "{bad}"
            );
        }
        assert!(settings(json!({"externalSetMarkChain": "KUBE-MARK-MASQ"})).is_ok());
        let nft = refused(json!({"backend": "nftables", "conditionsV4":
            ["ip", "saddr", "1.2.3.4", "accept;", "add", "table", "ip", "rtevil"]}));
        assert!(
            nft.contains("invalid conditionsV4 token \"accept;\""),
            "{nft}"
        );
        for bad in ["a\nb", "a b", "#", "\"x\"", "$v", ""] {
            let v = json!({"backend": "nftables", "conditionsV6": ["ip6", bad]});
            assert!(settings(v).is_err(), "{bad:?}");
        }
        let ipt = json!({"conditionsV4": ["-s", "10.0.0.0/8\n-A INPUT -j ACCEPT"]});
        assert!(refused(ipt).contains("invalid conditionsV4 token"));
        // iptables tokens are quoted, so spaces in them are fine.
        assert!(settings(json!({"conditionsV4": ["-m", "comment", "--comment", "a b"]})).is_ok());
        assert!(settings(json!({"backend": "nftables",
                                "conditionsV4": ["ip", "saddr", "!=", "{10.0.0.0/8,", "1.2.3.4}"]}))
        .is_ok());
    }

    #[test]
    fn mark_bit_range_and_exclusivity() {
        assert_eq!(settings(json!({"markMasqBit": 5})).unwrap().mark, 0x20);
        assert!(settings(json!({"markMasqBit": 32})).is_err());
        assert!(settings(json!({"markMasqBit": -1})).is_err());
        assert!(settings(json!({"markMasqBit": 5, "externalSetMarkChain": "X"})).is_err());
        // A mistyped key is a decode error naming the key, before any validation runs.
        let err = shared::gojson::from_json::<PortmapConf>(&json!({"snat": "yes"})).unwrap_err();
        assert_eq!(err.path_string(), "snat");
    }

    fn pm(v: Value) -> Vec<PortMapping> {
        shared::gojson::from_json(&v).unwrap()
    }

    #[test]
    fn mappings_are_validated() {
        let ok = mappings(&pm(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": ""},
            {"hostPort": 54, "containerPort": 53, "protocol": "sctp", "hostIP": "::"}
        ])))
        .unwrap();
        assert_eq!(ok[0].protocol, Protocol::Tcp);
        assert_eq!(ok[1].host_ip, None);
        assert!(ok[2].host_ip.unwrap().is_unspecified());
        let err = |v| mappings(&pm(v)).unwrap_err().to_string();
        assert_eq!(
            err(json!([{"hostPort": 0, "containerPort": 80}])),
            "Invalid host port number: 0"
        );
        assert_eq!(
            err(json!([{"hostPort": 1, "containerPort": 0}])),
            "Invalid container port number: 0"
        );
        assert!(
            err(json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]))
                .contains("unknown protocol")
        );
        assert!(
            err(json!([{"hostPort": 1, "containerPort": 1, "hostIP": "nope"}]))
                .contains("invalid hostIP")
        );
        assert_eq!(
            err(json!([{"hostPort": -5, "containerPort": 80}])),
            "Invalid host port number: -5"
        );
        assert_eq!(
            err(json!([{"hostPort": 65536, "containerPort": 80}])),
            "Invalid host port number: 65536"
        );
    }

    #[test]
    fn containerds_mappings_are_read() {
        // containerd's CRI marshals its Go struct without tags.
        let ok = mappings(&pm(json!([
            {"HostPort": 30081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
            {"HostPort": 30053, "ContainerPort": 53, "Protocol": "udp", "HostIP": "10.1.2.3"}
        ])))
        .unwrap();
        assert_eq!((ok[0].host_port, ok[0].container_port), (30081, 80));
        assert_eq!(ok[0].host_ip, None);
        assert_eq!(ok[1].protocol, Protocol::Udp);
        assert_eq!(ok[1].host_ip, Some("10.1.2.3".parse().unwrap()));
    }

    /// stdin as the runtimes sent it (recorded by tests/tests/runtime_cri.rs and
    /// runtime_podman.rs): containerd's Go field names, podman's tags.
    const CONTAINERD_ADD: &[u8] = include_bytes!(
        "../../../shared/tests/fixtures/containerd-cri/kubernetes-datastore/portmap-add.json"
    );
    const CONTAINERD_DEL: &[u8] = include_bytes!(
        "../../../shared/tests/fixtures/containerd-cri/local-datastore/portmap-del.json"
    );
    const PODMAN_ADD: &[u8] =
        include_bytes!("../../../shared/tests/fixtures/podman/portmap-add.json");

    fn recorded(stdin: &[u8]) -> (NetConf, Settings, Vec<Mapping>) {
        let doc = Document::parse(stdin).unwrap();
        let (conf, dropped) = NetConf::parse(&doc, false).unwrap();
        assert!(dropped.is_empty());
        let own: PortmapConf = doc.decode().unwrap();
        let settings = Settings::parse(&own).unwrap();
        let mappings = mappings(&conf.runtime_config.port_mappings).unwrap();
        (conf, settings, mappings)
    }

    #[test]
    fn runtimes_recorded_input_is_read() {
        let (conf, settings, got) = recorded(CONTAINERD_ADD);
        assert!(settings.snat);
        let ports: Vec<(u16, u16, Protocol)> = got
            .iter()
            .map(|m| (m.host_port, m.container_port, m.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                (30081, 80, Protocol::Tcp),
                (30053, 53, Protocol::Udp),
                (30082, 80, Protocol::Tcp)
            ]
        );
        assert_eq!((got[0].host_ip, got[1].host_ip), (None, None));
        assert!(got[2].host_ip.is_some_and(|ip| ip.is_ipv4()));
        let prev = conf.prev_result(Version::V0_3_1).unwrap().unwrap();
        assert_eq!(container_ips(&prev, "eth0").len(), 2);

        let (_, _, del) = recorded(CONTAINERD_DEL);
        assert_eq!(del.len(), 3, "DEL carries the mappings again");

        let (_, _, podman) = recorded(PODMAN_ADD);
        assert_eq!(
            (
                podman[0].host_port,
                podman[0].container_port,
                podman[0].protocol
            ),
            (8080, 80, Protocol::Tcp)
        );
    }

    #[test]
    fn container_ips_skip_host_side_and_other_interfaces() {
        let prev: CniResult = serde_json::from_value(json!({
            "interfaces": [{"name": "host"}, {"name": "container", "sandbox": "/run/netns/x"}],
            "ips": [
                {"address": "10.0.0.1/24", "interface": 0},
                {"address": "2001:db8:1::2/64", "interface": 1},
                {"address": "10.0.0.2/24", "interface": 1}
            ]
        }))
        .unwrap();
        let ips: Vec<String> = container_ips(&prev, "container")
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2/24", "2001:db8:1::2/64"]);
        let bare: CniResult =
            serde_json::from_value(json!({"ips": [{"address": "10.0.0.9/32"}]})).unwrap();
        assert_eq!(container_ips(&bare, "eth0")[0].to_string(), "10.0.0.9/32");
    }

    #[test]
    fn host_ip_family_needs_a_container_address() {
        let v4: Vec<ipnetwork::IpNetwork> = vec!["10.0.0.2/32".parse().unwrap()];
        let m = mappings(&pm(
            json!([{"hostPort": 1, "containerPort": 1, "hostIP": "fd00::1"}]),
        ))
        .unwrap();
        assert!(containers("n", "c", &v4, &m).is_err());
        assert!(containers("n", "c", &[], &[]).is_err());
        let both: Vec<ipnetwork::IpNetwork> = vec![
            "10.0.0.2/32".parse().unwrap(),
            "fd00::2/128".parse().unwrap(),
        ];
        assert_eq!(containers("n", "c", &both, &m).unwrap().len(), 2);
    }
}

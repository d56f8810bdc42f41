//! The pod and namespace annotations Calico honours with `policy.type: k8s` (spec §3.1 steps
//! 4, 5 and 9, §5.2): which pools and families calico-ipam assigns from, fixed addresses
//! (through IPAM or without it), and the pod interface's MAC.
//!
//! Everything is parsed and validated here, before any address is taken: a pod whose
//! annotations are wrong fails ADD with nothing to roll back.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use crate::config::CalicoConf;
use crate::CalicoError;

pub const IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
pub const IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
pub const IP_FAMILIES: &str = "cni.projectcalico.org/ipFamilies";
pub const IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
pub const IP_ADDRS_NO_IPAM: &str = "cni.projectcalico.org/ipAddrsNoIpam";
pub const HW_ADDR: &str = "cni.projectcalico.org/hwAddr";
pub const FLOATING_IPS: &str = "cni.projectcalico.org/floatingIPs";
pub const ALLOWED_SOURCE_PREFIXES: &str = "cni.projectcalico.org/allowedSourcePrefixes";

const CALICO_IPAM: &str = "calico-ipam";

/// Where the pod's addresses come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddressSource {
    /// The IPAM plugin chooses (no address annotation).
    #[default]
    Ipam,
    /// `ipAddrs`: the IPAM plugin is asked for each address in turn (`IP=<address>`), so
    /// that it records them as taken.
    IpamPerAddress(Vec<IpAddr>),
    /// `ipAddrsNoIpam`: the addresses are used as given; no IPAM plugin runs.
    NoIpam(Vec<IpAddr>),
}

/// What a pod asks for through its (and its namespace's) annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequest {
    /// `ipv4pools` / `ipv6pools`: replace `ipam.ipv4_pools` / `ipam.ipv6_pools`.
    pub ipv4_pools: Option<Vec<String>>,
    pub ipv6_pools: Option<Vec<String>>,
    /// `ipFamilies`: `(assign_ipv4, assign_ipv6)`.
    pub families: Option<(bool, bool)>,
    pub addresses: AddressSource,
    /// `hwAddr`: the pod interface's MAC.
    pub mac: Option<[u8; 6]>,
}

/// The `metadata.annotations` of a Kubernetes object (empty when it has none).
pub fn of(object: &Value) -> Map<String, Value> {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> CalicoError {
    CalicoError::Annotation(format!("annotation {key}={value:?}: {why}"))
}

/// A non-empty annotation value. Annotation values are strings; anything else is refused.
fn text<'m>(
    annotations: &'m Map<String, Value>,
    key: &str,
) -> Result<Option<&'m str>, CalicoError> {
    match annotations.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(key, &other.to_string(), "the value is not a string")),
    }
}

/// The pod's value of `key`, else the namespace's: the pod wins whenever it sets the key, an
/// empty value included (which then turns the namespace's default off).
fn layered<'m>(
    namespace: &'m Map<String, Value>,
    pod: &'m Map<String, Value>,
    key: &str,
) -> Result<Option<&'m str>, CalicoError> {
    if pod.contains_key(key) {
        text(pod, key)
    } else {
        text(namespace, key)
    }
}

fn json_strings(key: &str, value: &str) -> Result<Vec<String>, CalicoError> {
    serde_json::from_str::<Vec<String>>(value)
        .map_err(|e| bad(key, value, format_args!("not a JSON array of strings: {e}")))
}

impl PodRequest {
    /// Reads the annotations of a namespace and a pod. Pool and family annotations only
    /// matter to calico-ipam and are ignored with any other IPAM plugin, as Calico does.
    pub fn parse(
        namespace: &Map<String, Value>,
        pod: &Map<String, Value>,
        conf: &CalicoConf,
    ) -> Result<PodRequest, CalicoError> {
        let calico_ipam = conf.ipam.plugin_type == CALICO_IPAM;
        let mut request = PodRequest::default();
        if calico_ipam {
            if let Some(v) = layered(namespace, pod, IPV4_POOLS)? {
                request.ipv4_pools = Some(json_strings(IPV4_POOLS, v)?);
            }
            if let Some(v) = layered(namespace, pod, IPV6_POOLS)? {
                request.ipv6_pools = Some(json_strings(IPV6_POOLS, v)?);
            }
            if let Some(v) = layered(namespace, pod, IP_FAMILIES)? {
                request.families = Some(families(v)?);
            }
        }
        request.addresses = match (text(pod, IP_ADDRS)?, text(pod, IP_ADDRS_NO_IPAM)?) {
            (None, None) => AddressSource::Ipam,
            (Some(_), Some(_)) => {
                return Err(CalicoError::Annotation(
                    "can't have both annotations: 'ipAddrs' and 'ipAddrsNoIpam' in use at the \
                     same time"
                        .into(),
                ))
            }
            (None, Some(v)) => {
                if !conf.feature_control.ip_addrs_no_ipam {
                    return Err(CalicoError::FeatureDisabled("ip_addrs_no_ipam"));
                }
                needs_calico_ipam(conf, "ipAddrsNoIpam")?;
                AddressSource::NoIpam(addresses(IP_ADDRS_NO_IPAM, v)?)
            }
            (Some(v), None) => {
                needs_calico_ipam(conf, "ipAddrs")?;
                AddressSource::IpamPerAddress(addresses(IP_ADDRS, v)?)
            }
        };
        if let Some(v) = text(pod, HW_ADDR)? {
            request.mac = Some(parse_mac(v).map_err(|why| bad(HW_ADDR, v, why))?);
        }
        // Felix honours the annotation by itself on the Kubernetes datastore: the plugin is
        // the only gate, and it closes before an address is taken.
        if text(pod, FLOATING_IPS)?.is_some() && !conf.feature_control.floating_ips {
            return Err(CalicoError::FeatureDisabled("floating_ips"));
        }
        floating_ips(pod)?;
        allowed_source_prefixes(pod)?;
        Ok(request)
    }

    /// Whether the IPAM plugin's stdin changes.
    pub fn rewrites_ipam(&self) -> bool {
        self.ipv4_pools.is_some() || self.ipv6_pools.is_some() || self.families.is_some()
    }

    /// Writes the pools and families into the `ipam` object of a network configuration;
    /// everything else in it is left as it was.
    pub fn apply(&self, stdin: &mut Value) -> Result<(), CalicoError> {
        let Some(ipam) = stdin.get_mut("ipam").and_then(Value::as_object_mut) else {
            return Err(CalicoError::Config(
                "the network configuration's \"ipam\" is not an object".into(),
            ));
        };
        if let Some(pools) = &self.ipv4_pools {
            ipam.insert("ipv4_pools".into(), json!(pools));
        }
        if let Some(pools) = &self.ipv6_pools {
            ipam.insert("ipv6_pools".into(), json!(pools));
        }
        if let Some((v4, v6)) = self.families {
            // Strings, as calico-ipam reads them.
            ipam.insert("assign_ipv4".into(), json!(v4.to_string()));
            ipam.insert("assign_ipv6".into(), json!(v6.to_string()));
        }
        Ok(())
    }
}

/// `floatingIPs`: a JSON list of addresses, each reached from outside as the pod's address of
/// its family.
pub fn floating_ips(pod: &Map<String, Value>) -> Result<Vec<IpAddr>, CalicoError> {
    let Some(value) = text(pod, FLOATING_IPS)? else {
        return Ok(Vec::new());
    };
    json_strings(FLOATING_IPS, value)?
        .iter()
        .map(|t| {
            t.parse().map_err(|_| {
                bad(
                    FLOATING_IPS,
                    value,
                    format_args!("failed to parse {t:?} as an IP address"),
                )
            })
        })
        .collect()
}

/// `allowedSourcePrefixes`: a JSON list of CIDRs the pod may send from besides its own
/// addresses, each written as its network (`10.1.2.0/24` for `10.1.2.3/24`), as Go's
/// `ParseCIDR` returns it.
pub fn allowed_source_prefixes(pod: &Map<String, Value>) -> Result<Vec<String>, CalicoError> {
    let Some(value) = text(pod, ALLOWED_SOURCE_PREFIXES)? else {
        return Ok(Vec::new());
    };
    json_strings(ALLOWED_SOURCE_PREFIXES, value)?
        .iter()
        .map(|t| {
            let cidr: IpNetwork = t.parse().ok().filter(|_| t.contains('/')).ok_or_else(|| {
                bad(
                    ALLOWED_SOURCE_PREFIXES,
                    value,
                    format_args!("invalid CIDR {t:?}"),
                )
            })?;
            Ok(format!("{}/{}", cidr.network(), cidr.prefix()))
        })
        .collect()
}

fn needs_calico_ipam(conf: &CalicoConf, annotation: &str) -> Result<(), CalicoError> {
    if conf.ipam.plugin_type == CALICO_IPAM {
        Ok(())
    } else {
        Err(CalicoError::Annotation(format!(
            "the pod's {annotation} annotation is not compatible with configured IPAM: {} \
             (it needs calico-ipam)",
            conf.ipam.plugin_type
        )))
    }
}

/// `["IPv4"]`, `["IPv6"]` or both.
fn families(value: &str) -> Result<(bool, bool), CalicoError> {
    let (mut v4, mut v6) = (false, false);
    for family in json_strings(IP_FAMILIES, value)? {
        match family.as_str() {
            "IPv4" => v4 = true,
            "IPv6" => v6 = true,
            other => {
                return Err(bad(
                    IP_FAMILIES,
                    value,
                    format_args!("invalid IP family {other:?}: use \"IPv4\" and/or \"IPv6\""),
                ))
            }
        }
    }
    if !v4 && !v6 {
        return Err(bad(IP_FAMILIES, value, "names no IP family"));
    }
    Ok((v4, v6))
}

/// A JSON list of at most one IPv4 and one IPv6 address.
fn addresses(key: &str, value: &str) -> Result<Vec<IpAddr>, CalicoError> {
    let list = json_strings(key, value)?;
    if list.is_empty() {
        return Err(bad(key, value, "specified but empty"));
    }
    let (mut v4, mut v6) = (false, false);
    let mut out = Vec::with_capacity(list.len());
    for text in list {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| bad(key, value, format_args!("invalid IP address {text:?}")))?;
        let seen = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if *seen {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(bad(
                key,
                value,
                format_args!("cannot have more than one {family} address"),
            ));
        }
        *seen = true;
        out.push(ip);
    }
    Ok(out)
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`): a unicast Ethernet address the kernel accepts on a
/// veth.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let mut mac = [0u8; 6];
    if parts.len() != mac.len() {
        return Err("not a MAC address: use six hex octets, aa:bb:cc:dd:ee:ff".into());
    }
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(format!("{part:?} is not a hex octet"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{part:?} is not a hex octet"))?;
    }
    if mac[0] & 1 == 1 {
        return Err("a multicast address cannot be an interface's MAC".into());
    }
    if mac == [0; 6] {
        return Err("the all-zero address cannot be an interface's MAC".into());
    }
    Ok(mac)
}

/// The pod's addresses as the plugin uses them: one host each (/32, /128).
pub fn host_networks(ips: &[IpAddr]) -> Vec<IpNetwork> {
    ips.iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => IpNetwork::V4((*v4).into()),
            IpAddr::V6(v6) => IpNetwork::V6((*v6).into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ipam: &str, no_ipam: bool) -> CalicoConf {
        let v = json!({"name": "n", "ipam": {"type": ipam},
                       "feature_control": {"ip_addrs_no_ipam": no_ipam}});
        CalicoConf::parse(v.to_string().as_bytes()).expect("conf")
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn parse(ns: Value, pod: Value, c: &CalicoConf) -> Result<PodRequest, CalicoError> {
        PodRequest::parse(&map(ns), &map(pod), c)
    }

    #[test]
    fn namespace_defaults_and_pod_overrides_per_key() {
        let c = conf("calico-ipam", false);
        let r = parse(
            json!({IPV4_POOLS: "[\"ns-pool\"]", IPV6_POOLS: "[\"fd00::/64\"]",
                   IP_FAMILIES: "[\"IPv4\",\"IPv6\"]"}),
            json!({IPV4_POOLS: "[\"10.1.0.0/16\", \"pod-pool\"]", IP_FAMILIES: "[\"IPv6\"]"}),
            &c,
        )
        .expect("valid");
        assert_eq!(
            r.ipv4_pools,
            Some(vec!["10.1.0.0/16".to_string(), "pod-pool".to_string()])
        );
        assert_eq!(r.ipv6_pools, Some(vec!["fd00::/64".to_string()]));
        assert_eq!(r.families, Some((false, true)));
        assert!(r.rewrites_ipam());

        let mut stdin = json!({"name": "n", "ipam": {"type": "calico-ipam", "x": 1,
                                                     "ipv4_pools": ["old"]}});
        r.apply(&mut stdin).expect("applied");
        assert_eq!(
            stdin["ipam"],
            json!({"type": "calico-ipam", "x": 1, "ipv4_pools": ["10.1.0.0/16", "pod-pool"],
                   "ipv6_pools": ["fd00::/64"], "assign_ipv4": "false", "assign_ipv6": "true"})
        );

        // An empty pod value turns the namespace's default off.
        let r = parse(json!({IPV4_POOLS: "[\"a\"]"}), json!({IPV4_POOLS: ""}), &c).expect("ok");
        assert_eq!(r, PodRequest::default());
    }

    #[test]
    fn pools_only_matter_to_calico_ipam() {
        let r = parse(
            json!({IPV4_POOLS: "not json"}),
            json!({}),
            &conf("host-local", false),
        )
        .expect("ignored");
        assert!(!r.rewrites_ipam());
    }

    #[test]
    fn malformed_annotations_are_refused_with_their_key() {
        let c = conf("calico-ipam", true);
        for (ns, pod, needle) in [
            (json!({IPV4_POOLS: "[oops"}), json!({}), IPV4_POOLS),
            (json!({}), json!({IPV6_POOLS: "\"fd00::/64\""}), IPV6_POOLS),
            (json!({}), json!({IP_FAMILIES: "[\"IPv5\"]"}), "IPv5"),
            (json!({}), json!({IP_FAMILIES: "[]"}), "no IP family"),
            (
                json!({}),
                json!({IP_ADDRS: "[\"10.0.0.1\", \"10.0.0.2\"]"}),
                "more than one IPv4",
            ),
            (
                json!({}),
                json!({IP_ADDRS: "[\"fd00::1\", \"fd00::2\"]"}),
                "more than one IPv6",
            ),
            (
                json!({}),
                json!({IP_ADDRS_NO_IPAM: "[\"10.0.0.300\"]"}),
                "invalid IP address",
            ),
            (json!({}), json!({IP_ADDRS: "[]"}), "specified but empty"),
            (
                json!({}),
                json!({IP_ADDRS: "[\"10.0.0.1\"]", IP_ADDRS_NO_IPAM: "[\"10.0.0.1\"]"}),
                "can't have both",
            ),
            (json!({}), json!({HW_ADDR: "zz:00:00:00:00:01"}), HW_ADDR),
            (json!({}), json!({HW_ADDR: 7}), "not a string"),
        ] {
            let err = parse(ns.clone(), pod.clone(), &c).expect_err("refused");
            assert!(matches!(err, CalicoError::Annotation(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn addresses_from_annotations() {
        let c = conf("calico-ipam", true);
        let r = parse(
            json!({}),
            json!({IP_ADDRS: "[\"10.0.0.7\", \"fd00::7\"]"}),
            &c,
        )
        .expect("valid");
        assert_eq!(
            r.addresses,
            AddressSource::IpamPerAddress(vec![
                "10.0.0.7".parse().expect("ip"),
                "fd00::7".parse().expect("ip")
            ])
        );
        let r = parse(json!({}), json!({IP_ADDRS_NO_IPAM: "[\"10.0.0.8\"]"}), &c).expect("ok");
        assert_eq!(
            r.addresses,
            AddressSource::NoIpam(vec!["10.0.0.8".parse().expect("ip")])
        );
        assert_eq!(
            host_networks(&[
                "10.0.0.8".parse().expect("ip"),
                "fd00::8".parse().expect("ip")
            ])
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
            ["10.0.0.8/32", "fd00::8/128"]
        );
    }

    #[test]
    fn ip_addrs_no_ipam_needs_the_feature_and_calico_ipam() {
        let pod = json!({IP_ADDRS_NO_IPAM: "[\"10.0.0.8\"]"});
        let err = parse(json!({}), pod.clone(), &conf("calico-ipam", false)).expect_err("off");
        assert_eq!(
            err.to_string(),
            "requested feature is not enabled: ip_addrs_no_ipam"
        );
        let err = parse(json!({}), pod, &conf("host-local", true)).expect_err("host-local");
        assert!(err.to_string().contains("host-local"), "{err}");
        let err = parse(
            json!({}),
            json!({IP_ADDRS: "[\"10.0.0.8\"]"}),
            &conf("host-local", true),
        )
        .expect_err("host-local");
        assert!(err.to_string().contains("ipAddrs"), "{err}");
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02"),
            Ok([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])
        );
        assert_eq!(parse_mac("02-42-ac-11-00-03").map(|m| m[5]), Ok(3));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0242ac110002",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "2:42:ac:11:0:2",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}

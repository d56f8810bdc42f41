//! Results: one model (the newest, 1.1.0, a superset of the others) and its conversion to and
//! from every version spoken.
//!
//! Going down to 0.3.x/0.4.0 adds the `version` field ("4"/"6") to each IP and drops the
//! 1.1.0-only fields; going up drops `version`. Everything else is the same shape, except in
//! 0.1.0/0.2.0 (see [`legacy`]): one `ip4` and one `ip6`, each with its routes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::version::Version;
use crate::error::{Error, Result};
use crate::gojson;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for a container interface; empty for a host interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with the prefix length of its subnet, host bits kept: `10.1.2.3/24`.
    #[serde(deserialize_with = "cidr")]
    pub address: IpNetwork,
    #[serde(
        default,
        deserialize_with = "go_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(deserialize_with = "cidr")]
    pub dst: IpNetwork,
    #[serde(
        default,
        deserialize_with = "go_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gw: Option<IpAddr>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// 1.1.0; 0 is a meaningful table, hence the Option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings of a result (and of a plugin config's `dns` key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// CIDR notation with an explicit prefix, as Go's `net.ParseCIDR` demands: a bare address
/// in a result is a mistake, not a /32.
fn cidr<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<IpNetwork, D::Error> {
    let s = String::deserialize(d)?;
    if !s.contains('/') {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is not in CIDR notation (address/prefix)"
        )));
    }
    s.parse().map_err(serde::de::Error::custom)
}

/// An address as Go's `net.IP` reads text: `""` is no address, anything else must parse.
fn go_ip<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<IpAddr>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid IP address: {text:?}"))),
    }
}

impl CniResult {
    /// Parses a result of any spoken version, as Go plugins parse a `prevResult` (keys
    /// matched as `encoding/json` matches them). A result without `cniVersion` is taken to
    /// be of `assumed` (libcni does the same with a prevResult that lacks it).
    pub fn from_gojson(value: &gojson::Value, assumed: Version) -> Result<CniResult> {
        if !matches!(value, gojson::Value::Object(_)) {
            return Err(Error::DecodePrevResult(
                "a result must be a JSON object".into(),
            ));
        }
        let header: ResultHeader =
            gojson::from_value(value).map_err(|e| Error::DecodePrevResult(e.to_string()))?;
        let version = match header.cni_version.as_deref() {
            None | Some("") => assumed,
            Some(s) => s.parse().map_err(|e: super::version::UnknownVersion| {
                Error::DecodePrevResult(e.to_string())
            })?,
        };
        if version.is_legacy() {
            return legacy::from_gojson(value);
        }
        if version.ips_carry_version() {
            check_ip_versions(&header)?;
        }
        let mut result: CniResult =
            gojson::from_value(value).map_err(|e| Error::DecodePrevResult(e.to_string()))?;
        if version < Version::V1_1_0 {
            // Fields that did not exist in the result's version cannot have been meant.
            result.strip_1_1_fields();
        }
        Ok(result)
    }

    /// [`CniResult::from_gojson`] for a value already held as plain JSON.
    pub fn from_value(value: &Value, assumed: Version) -> Result<CniResult> {
        CniResult::from_gojson(&gojson::Value::from_json(value), assumed)
    }

    /// Parses result bytes (a delegated plugin's stdout).
    pub fn from_slice(bytes: &[u8], assumed: Version) -> Result<CniResult> {
        let doc =
            gojson::Document::parse(bytes).map_err(|e| Error::DecodePrevResult(e.to_string()))?;
        CniResult::from_gojson(doc.root(), assumed)
    }

    /// The result as `version` spells it, `cniVersion` first.
    pub fn to_value(&self, version: Version) -> Value {
        if version.is_legacy() {
            return legacy::to_value(self, version);
        }
        let mut copy = self.clone();
        if version < Version::V1_1_0 {
            copy.strip_1_1_fields();
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        // The model holds only strings, numbers and lists: this cannot fail.
        if let Ok(Value::Object(body)) = serde_json::to_value(&copy) {
            out.extend(body);
        }
        if version.ips_carry_version() {
            if let Some(Value::Array(ips)) = out.get_mut("ips") {
                for (ip, model) in ips.iter_mut().zip(&copy.ips) {
                    if let Value::Object(ip) = ip {
                        let family = if model.address.is_ipv4() { "4" } else { "6" };
                        let mut with_version = Map::new();
                        with_version.insert("version".into(), Value::String(family.into()));
                        with_version.extend(std::mem::take(ip));
                        *ip = with_version;
                    }
                }
            }
        }
        Value::Object(out)
    }

    /// The result as printed by a plugin: JSON indented by four spaces, as the Go plugins
    /// print it, and a final newline.
    pub fn to_pretty_json(&self, version: Version) -> String {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        // A Value of strings, numbers and lists always serialises.
        let _ = self.to_value(version).serialize(&mut ser);
        out.push(b'\n');
        String::from_utf8_lossy(&out).into_owned()
    }

    fn strip_1_1_fields(&mut self) {
        for i in &mut self.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for r in &mut self.routes {
            r.mtu = None;
            r.advmss = None;
            r.priority = None;
            r.table = None;
            r.scope = None;
        }
    }
}

/// The 0.1.0/0.2.0 result: `{"cniVersion", "ip4": {"ip", "gateway", "routes"}, "ip6": ...,
/// "dns"}`, converted as libcni converts: the first address of each family, and each route
/// under the family of its destination.
mod legacy {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Legacy {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip4: Option<LegacyIp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip6: Option<LegacyIp>,
        /// Go's `omitempty` never omits a struct: `"dns": {}` is always there.
        #[serde(default)]
        dns: Dns,
    }

    #[derive(Serialize, Deserialize)]
    struct LegacyIp {
        #[serde(deserialize_with = "cidr")]
        ip: IpNetwork,
        #[serde(
            default,
            deserialize_with = "go_ip",
            skip_serializing_if = "Option::is_none"
        )]
        gateway: Option<IpAddr>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routes: Vec<LegacyRoute>,
    }

    #[derive(Serialize, Deserialize)]
    struct LegacyRoute {
        #[serde(deserialize_with = "cidr")]
        dst: IpNetwork,
        #[serde(
            default,
            deserialize_with = "go_ip",
            skip_serializing_if = "Option::is_none"
        )]
        gw: Option<IpAddr>,
    }

    pub(super) fn to_value(result: &CniResult, version: Version) -> Value {
        let first = |v4: bool| {
            result
                .ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == v4)
                .map(|ip| LegacyIp {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: result
                        .routes
                        .iter()
                        .filter(|r| r.dst.is_ipv4() == v4)
                        .map(|r| LegacyRoute {
                            dst: r.dst,
                            gw: r.gw,
                        })
                        .collect(),
                })
        };
        let legacy = Legacy {
            ip4: first(true),
            ip6: first(false),
            dns: result.dns.clone(),
        };
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        if let Ok(Value::Object(body)) = serde_json::to_value(&legacy) {
            out.extend(body);
        }
        Value::Object(out)
    }

    pub(super) fn from_gojson(value: &gojson::Value) -> Result<CniResult> {
        let legacy: Legacy =
            gojson::from_value(value).map_err(|e| Error::DecodePrevResult(e.to_string()))?;
        let mut result = CniResult {
            dns: legacy.dns,
            ..CniResult::default()
        };
        for ip in [legacy.ip4, legacy.ip6].into_iter().flatten() {
            result.ips.push(IpConfig {
                address: ip.ip,
                gateway: ip.gateway,
                interface: None,
            });
            result
                .routes
                .extend(ip.routes.into_iter().map(|r| Route::new(r.dst, r.gw)));
        }
        Ok(result)
    }
}

/// What is read of a result before the result itself: its version, and the IPs' `version`
/// fields, which 0.3.x/0.4.0 results carry.
#[derive(Deserialize)]
struct ResultHeader {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    ips: Vec<IpHeader>,
}

#[derive(Deserialize)]
struct IpHeader {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    address: String,
}

/// When present, an IP's `version` must agree with its address.
fn check_ip_versions(header: &ResultHeader) -> Result<()> {
    for ip in &header.ips {
        let Some(v) = &ip.version else {
            continue;
        };
        let Ok(net) = ip.address.parse::<IpNetwork>() else {
            continue; // the typed parse reports it
        };
        let expected = if net.is_ipv4() { "4" } else { "6" };
        if v != expected {
            return Err(Error::DecodePrevResult(format!(
                "ip {} has version {v:?}, expected {expected:?}",
                ip.address
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The spec's example ADD result (SPEC.md, 1.0.0 "Success" example), extended with the
    /// 1.1.0 fields.
    fn spec_example_1_1() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44",
                 "sandbox": "/var/run/netns/blue", "mtu": 1450,
                 "socketPath": "/run/sock", "pciID": "0000:00:1f.6"}
            ],
            "ips": [
                {"address": "10.10.0.1/16", "gateway": "10.10.0.1", "interface": 2},
                {"address": "2001:db8::3/64", "interface": 2}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.10.0.1", "mtu": 1400, "advmss": 1360,
                 "priority": 10, "table": 0, "scope": 0},
                {"dst": "::/0"}
            ],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com",
                    "search": ["example.com"], "options": ["ndots:2"]}
        })
    }

    /// The same result as 0.4.0 (and 0.3.x) spell it.
    fn spec_example_0_4(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [
                {"version": "4", "address": "10.10.0.1/16", "gateway": "10.10.0.1",
                 "interface": 2},
                {"version": "6", "address": "2001:db8::3/64", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com",
                    "search": ["example.com"], "options": ["ndots:2"]}
        })
    }

    fn spec_example_1_0() -> Value {
        let mut v = spec_example_0_4("1.0.0");
        for ip in v["ips"].as_array_mut().expect("ips") {
            ip.as_object_mut().expect("object").remove("version");
        }
        v
    }

    fn example_in(version: Version) -> Value {
        match version {
            Version::V1_1_0 => spec_example_1_1(),
            Version::V1_0_0 => spec_example_1_0(),
            v => spec_example_0_4(v.as_str()),
        }
    }

    #[test]
    fn every_version_pair_converts_as_the_spec_says() {
        for from in Version::CHAINING {
            let parsed = CniResult::from_value(&example_in(from), Version::V0_3_0)
                .unwrap_or_else(|e| panic!("parse {from}: {e}"));
            for to in Version::CHAINING {
                let got = parsed.to_value(to);
                // 1.1.0-only fields survive only when both ends have them.
                let expected = if from == Version::V1_1_0 || to < Version::V1_1_0 {
                    example_in(to)
                } else {
                    let mut e = spec_example_1_0();
                    e["cniVersion"] = json!(to.as_str());
                    e
                };
                assert_eq!(got, expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn legacy_results_have_one_address_per_family_with_its_routes() {
        let mut model = CniResult::from_value(&spec_example_1_0(), Version::V1_0_0).expect("parse");
        // A second IPv4 address has no place in 0.2.0: the first of each family is kept.
        model.ips.push(IpConfig {
            address: "10.10.0.9/16".parse().expect("cidr"),
            gateway: None,
            interface: Some(2),
        });
        let expected = json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.10.0.1/16", "gateway": "10.10.0.1",
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}]},
            "ip6": {"ip": "2001:db8::3/64", "routes": [{"dst": "::/0"}]},
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com",
                    "search": ["example.com"], "options": ["ndots:2"]}
        });
        assert_eq!(model.to_value(Version::V0_2_0), expected);
        let mut v010 = expected.clone();
        v010["cniVersion"] = json!("0.1.0");
        assert_eq!(model.to_value(Version::V0_1_0), v010);
        // Read back (as calico reads a 0.2.0 IPAM plugin's answer): the addresses and routes.
        let back = CniResult::from_value(&expected, Version::V0_2_0).expect("parse 0.2.0");
        assert_eq!(back.ips.len(), 2);
        assert_eq!(back.ips[0].address, model.ips[0].address);
        assert_eq!(back.ips[1].address, model.ips[1].address);
        assert_eq!(back.routes, model.routes);
        assert_eq!(back.dns, model.dns);
        // No address at all: only the DNS, which Go always prints.
        assert_eq!(
            CniResult::default().to_value(Version::V0_2_0),
            json!({"cniVersion": "0.2.0", "dns": {}})
        );
    }

    #[test]
    fn conversion_down_and_back_up_keeps_what_both_versions_have() {
        let model = CniResult::from_value(&spec_example_1_1(), Version::V1_1_0).expect("parse");
        let down = model.to_value(Version::V0_3_1);
        let up = CniResult::from_value(&down, Version::V1_1_0).expect("parse down");
        let mut expected = model.clone();
        expected.strip_1_1_fields();
        assert_eq!(up, expected);
    }

    #[test]
    fn version_field_comes_first_and_agrees_with_the_family() {
        let model = CniResult::from_value(&spec_example_1_0(), Version::V1_0_0).expect("parse");
        let text = serde_json::to_string(&model.to_value(Version::V0_3_1)).expect("json");
        assert!(
            text.contains(r#"{"version":"4","address":"10.10.0.1/16""#),
            "{text}"
        );
        assert!(
            text.starts_with(r#"{"cniVersion":"0.3.1","interfaces""#),
            "{text}"
        );
    }

    #[test]
    fn refuses_a_version_field_that_contradicts_the_address() {
        let mut bad = spec_example_0_4("0.4.0");
        bad["ips"][0]["version"] = json!("6");
        assert!(CniResult::from_value(&bad, Version::V0_4_0).is_err());
    }

    #[test]
    fn missing_cni_version_takes_the_assumed_one() {
        let mut v = spec_example_0_4("0.4.0");
        v.as_object_mut().expect("object").remove("cniVersion");
        let parsed = CniResult::from_value(&v, Version::V0_4_0).expect("parse");
        assert_eq!(parsed.to_value(Version::V0_4_0), spec_example_0_4("0.4.0"));
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let mut v = spec_example_1_0();
        v["cniVersion"] = json!("0.0.9");
        assert!(CniResult::from_value(&v, Version::V1_0_0).is_err());
        assert!(CniResult::from_value(&json!([1, 2]), Version::V1_0_0).is_err());
        let mut v = spec_example_1_0();
        v["ips"][0]["address"] = json!("10.10.0.1");
        assert!(
            CniResult::from_value(&v, Version::V1_0_0).is_err(),
            "address needs a prefix"
        );
    }

    #[test]
    fn ipam_result_without_interfaces_round_trips() {
        let ipam = json!({"cniVersion": "0.3.1",
                          "ips": [{"version": "4", "address": "10.1.0.5/24",
                                   "gateway": "10.1.0.1"}],
                          "dns": {}});
        let model = CniResult::from_value(&ipam, Version::V0_3_1).expect("parse");
        assert_eq!(model.ips[0].interface, None);
        assert_eq!(
            model.to_value(Version::V1_0_0),
            json!({"cniVersion": "1.0.0",
                   "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]})
        );
    }

    #[test]
    fn empty_gateways_mean_none_as_gos_net_ip_reads_them() {
        // Go plugins marshal a nil net.IP as "" in some versions; Go reads "" back as nil.
        let prev = json!({"cniVersion": "1.0.0",
                          "ips": [{"address": "10.1.0.5/24", "gateway": ""}],
                          "routes": [{"dst": "0.0.0.0/0", "gw": ""}]});
        let model = CniResult::from_value(&prev, Version::V1_0_0).expect("parse");
        assert_eq!(model.ips[0].gateway, None);
        assert_eq!(model.routes[0].gw, None);
        let bad = json!({"ips": [{"address": "10.1.0.5/24", "gateway": "nope"}]});
        assert!(CniResult::from_value(&bad, Version::V1_0_0).is_err());
    }

    #[test]
    fn table_zero_is_kept_in_1_1() {
        let model = CniResult::from_value(&spec_example_1_1(), Version::V1_1_0).expect("parse");
        assert_eq!(model.routes[0].table, Some(0));
        assert_eq!(
            model.to_value(Version::V1_1_0)["routes"][0]["table"],
            json!(0)
        );
    }
}

//! host-local with `usePodCidr` (spec §3.1 step 2): the subnet keywords `usePodCidr` and
//! `usePodCidrIPv6` (any case) in `ipam.subnet` and in every `ipam.ranges[][].subnet` stand
//! for the node's pod CIDRs (`spec.podCIDRs` of the Kubernetes Node). The IPAM plugin gets the
//! network configuration with them replaced; every other key goes through untouched (the
//! configuration is handled as plain JSON for that reason).
//!
//! Only ADD needs the real CIDRs. host-local releases, checks and collects by container id,
//! so the other commands get `0.0.0.0/0` and `::/0` instead, as Calico passes on DEL, and no
//! API call is made.

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::CalicoError;

const USE_POD_CIDR: &str = "usePodCidr";
const USE_POD_CIDR_V6: &str = "usePodCidrIPv6";
const HOST_LOCAL: &str = "host-local";

/// Which keyword a subnet value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    V4,
    V6,
}

fn keyword(value: &Value) -> Option<Keyword> {
    let text = value.as_str()?;
    if text.eq_ignore_ascii_case(USE_POD_CIDR) {
        Some(Keyword::V4)
    } else if text.eq_ignore_ascii_case(USE_POD_CIDR_V6) {
        Some(Keyword::V6)
    } else {
        None
    }
}

/// Every `subnet` value of a host-local `ipam` object: the top-level one and each range's.
fn subnets(ipam: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    let Some(ipam) = ipam.as_object_mut() else {
        return out;
    };
    for (key, value) in ipam.iter_mut() {
        // Go's JSON decoding matches keys regardless of case: so does Calico's rewrite.
        if key.eq_ignore_ascii_case("subnet") {
            out.push(value);
        } else if key.eq_ignore_ascii_case("ranges") {
            let sets = value.as_array_mut().into_iter().flatten();
            for range in sets.flat_map(|set| set.as_array_mut().into_iter().flatten()) {
                if let Some(range) = range.as_object_mut() {
                    out.extend(
                        range
                            .iter_mut()
                            .filter(|(k, _)| k.eq_ignore_ascii_case("subnet"))
                            .map(|(_, v)| v),
                    );
                }
            }
        }
    }
    out
}

fn host_local_ipam(stdin: &mut Value) -> Option<&mut Value> {
    let ipam = stdin.get_mut("ipam")?;
    if ipam.get("type").and_then(Value::as_str) == Some(HOST_LOCAL) {
        Some(ipam)
    } else {
        None
    }
}

/// Whether a network configuration asks for the node's pod CIDRs.
pub fn wanted(stdin: &Value) -> bool {
    let mut copy = stdin.get("ipam").cloned().unwrap_or(Value::Null);
    stdin.pointer("/ipam/type").and_then(Value::as_str) == Some(HOST_LOCAL)
        && subnets(&mut copy).into_iter().any(|v| keyword(v).is_some())
}

/// The node's pod CIDRs: at most one per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodCidrs {
    pub v4: Option<String>,
    pub v6: Option<String>,
}

impl PodCidrs {
    /// From a Node object's `spec.podCIDRs`.
    pub fn of_node(node_name: &str, listed: &[String]) -> Result<PodCidrs, CalicoError> {
        if listed.is_empty() {
            return Err(CalicoError::NoPodCidr(node_name.to_string()));
        }
        let mut cidrs = PodCidrs::default();
        for text in listed {
            let text = text.as_str();
            let net: IpNetwork = text.parse().map_err(|_| {
                CalicoError::PodCidr(format!("node {node_name} has an invalid podCIDR {text:?}"))
            })?;
            let slot = if net.is_ipv4() {
                &mut cidrs.v4
            } else {
                &mut cidrs.v6
            };
            if slot.is_some() {
                return Err(CalicoError::PodCidr(
                    "ClusterCIDR contains two ranges of the same type".into(),
                ));
            }
            *slot = Some(text.to_string());
        }
        Ok(cidrs)
    }
}

/// Replaces the keywords with the node's CIDRs. A keyword whose family the node lacks is
/// an error.
pub fn rewrite(stdin: &mut Value, cidrs: &PodCidrs) -> Result<(), CalicoError> {
    let Some(ipam) = host_local_ipam(stdin) else {
        return Ok(());
    };
    for subnet in subnets(ipam) {
        let (cidr, family, word) = match keyword(subnet) {
            Some(Keyword::V4) => (&cidrs.v4, "IPv4", USE_POD_CIDR),
            Some(Keyword::V6) => (&cidrs.v6, "IPv6", USE_POD_CIDR_V6),
            None => continue,
        };
        let Some(cidr) = cidr else {
            return Err(CalicoError::PodCidr(format!(
                "{word} found but there is no {family} CIDR configured"
            )));
        };
        *subnet = Value::String(cidr.clone());
    }
    Ok(())
}

/// Replaces the keywords with `0.0.0.0/0` and `::/0`; `false` when there were none.
pub fn rewrite_with_dummies(stdin: &mut Value) -> bool {
    let Some(ipam) = host_local_ipam(stdin) else {
        return false;
    };
    let mut changed = false;
    for subnet in subnets(ipam) {
        let dummy = match keyword(subnet) {
            Some(Keyword::V4) => "0.0.0.0/0",
            Some(Keyword::V6) => "::/0",
            None => continue,
        };
        *subnet = Value::String(dummy.into());
        changed = true;
    }
    changed
}

/// The IPAM plugin's stdin for a command other than ADD: `None` when `stdin` has no
/// keyword (or is not JSON, which the IPAM plugin then reports itself).
pub fn stdin_with_dummies(stdin: &[u8]) -> Option<Vec<u8>> {
    let mut conf: Value = shared::gojson::Document::parse(stdin).ok()?.to_json();
    if rewrite_with_dummies(&mut conf) {
        serde_json::to_vec(&conf).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dual() -> PodCidrs {
        PodCidrs {
            v4: Some("10.244.3.0/24".into()),
            v6: Some("fd00:10:244:3::/64".into()),
        }
    }

    #[test]
    fn both_forms_and_any_case_are_replaced_and_the_rest_kept() {
        let mut stdin = json!({
            "name": "k8s-pod-network", "cniVersion": "0.3.1", "type": "calico",
            "ipam": {"type": "host-local", "subnet": "USEPODCIDR", "dataDir": "/d",
                     "ranges": [[{"subnet": "usePodCidr", "gateway": "10.244.3.1"}],
                                [{"Subnet": "usepodcidripv6"}, {"subnet": "192.168.0.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "unknown": {"a": [1]}},
            "other": true
        });
        assert!(wanted(&stdin));
        rewrite(&mut stdin, &dual()).expect("rewritten");
        assert_eq!(
            stdin,
            json!({
                "name": "k8s-pod-network", "cniVersion": "0.3.1", "type": "calico",
                "ipam": {"type": "host-local", "subnet": "10.244.3.0/24", "dataDir": "/d",
                         "ranges": [[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}],
                                    [{"Subnet": "fd00:10:244:3::/64"},
                                     {"subnet": "192.168.0.0/24"}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "unknown": {"a": [1]}},
                "other": true
            })
        );
        assert!(!wanted(&stdin));
    }

    #[test]
    fn only_host_local_is_rewritten() {
        let mut stdin = json!({"ipam": {"type": "calico-ipam", "subnet": "usePodCidr"}});
        assert!(!wanted(&stdin));
        rewrite(&mut stdin, &PodCidrs::default()).expect("nothing to do");
        assert_eq!(stdin["ipam"]["subnet"], "usePodCidr");
        assert!(!rewrite_with_dummies(&mut stdin));
    }

    #[test]
    fn a_missing_family_is_named() {
        let mut stdin = json!({"ipam": {"type": "host-local",
                                        "ranges": [[{"subnet": "usePodCidrIPv6"}]]}});
        let only_v4 = PodCidrs {
            v4: Some("10.0.0.0/24".into()),
            v6: None,
        };
        let err = rewrite(&mut stdin, &only_v4).expect_err("no v6");
        assert_eq!(
            err.to_string(),
            "usePodCidrIPv6 found but there is no IPv6 CIDR configured"
        );
        let mut stdin = json!({"ipam": {"type": "host-local", "subnet": "usePodCidr"}});
        let err = rewrite(&mut stdin, &PodCidrs::default()).expect_err("no v4");
        assert_eq!(
            err.to_string(),
            "usePodCidr found but there is no IPv4 CIDR configured"
        );
    }

    #[test]
    fn node_pod_cidrs() {
        let cidrs = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            PodCidrs::of_node("n", &cidrs(&["10.0.0.0/24", "fd00::/64"])).expect("dual"),
            PodCidrs {
                v4: Some("10.0.0.0/24".into()),
                v6: Some("fd00::/64".into())
            }
        );
        let err = PodCidrs::of_node("n1", &[]).expect_err("none");
        assert_eq!(err.to_string(), "no podCidr for node n1");
        let err =
            PodCidrs::of_node("n", &cidrs(&["10.0.0.0/24", "10.1.0.0/24"])).expect_err("two v4");
        assert_eq!(
            err.to_string(),
            "ClusterCIDR contains two ranges of the same type"
        );
        let err = PodCidrs::of_node("n", &cidrs(&["nope"])).expect_err("bad");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn other_commands_get_dummies() {
        let stdin = json!({"name": "n", "ipam": {"type": "host-local", "subnet": "usePodCidr",
                           "ranges": [[{"subnet": "usePodCidrIPv6"}]]}});
        let out = stdin_with_dummies(stdin.to_string().as_bytes()).expect("rewritten");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(out["ipam"]["subnet"], "0.0.0.0/0");
        assert_eq!(out["ipam"]["ranges"][0][0]["subnet"], "::/0");
        let plain = json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}});
        assert_eq!(stdin_with_dummies(plain.to_string().as_bytes()), None);
        assert_eq!(stdin_with_dummies(b"not json"), None);
    }
}

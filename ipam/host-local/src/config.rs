//! host-local's configuration: range sets (including the legacy single range and the
//! `ipRanges` capability), routes, the data directory, resolvConf, and the addresses a
//! runtime asks for. Loaded and checked in the reference plugin's order.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use shared::gojson::{Decode, DecodeError, Document};
use shared::spec::args::CniArgs;
use shared::spec::result::Route;

use crate::range::{RangeConf, RangeSet};
use crate::HostLocalError;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// What every verb works from.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub name: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// From CNI_ARGS `IP`, `args.cni.ips`, `runtimeConfig.ips`, in that order, once each.
    pub requested: Vec<IpAddr>,
}

/// host-local's keys as the reference decodes them: its `IPAMConfig` embeds one `Range`
/// (the legacy single range at the top of `ipam`), which Go reads from the same object;
/// here it is a second view of it.
#[derive(Debug, Clone, Default)]
pub struct HostLocalConf {
    raw: RawConf,
    legacy: RangeConf,
}

impl Decode for HostLocalConf {
    fn decode(doc: &Document) -> Result<HostLocalConf, DecodeError> {
        let raw: RawConf = doc.decode()?;
        let legacy: LegacyView = doc.decode()?;
        Ok(HostLocalConf {
            raw,
            legacy: legacy.ipam.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawConf {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    args: Option<RawArgs>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: RawRuntime,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct LegacyView {
    #[serde(default)]
    ipam: Option<RangeConf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawIpam {
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeConf>>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
}

/// `args.cni.ips`: the convention that supersedes CNI_ARGS `IP=`.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniArgs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawCniArgs {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRuntime {
    #[serde(default)]
    ips: Vec<String>,
    #[serde(rename = "ipRanges", default)]
    ip_ranges: Option<Vec<Vec<RangeConf>>>,
}

fn invalid(msg: impl Into<String>) -> HostLocalError {
    HostLocalError::Config(msg.into())
}

/// An address as runtimes write it: `10.1.2.3` or `10.1.2.3/24` (the prefix is ignored).
fn parse_requested(text: &str) -> Option<IpAddr> {
    match text.split_once('/') {
        Some(_) => text.parse::<IpNetwork>().ok().map(|n| n.ip()),
        None => text.parse().ok(),
    }
}

/// Where the store is: all DEL needs, so that a config ADD would refuse is still removable.
pub fn data_dir(conf: &HostLocalConf) -> PathBuf {
    conf.raw
        .ipam
        .as_ref()
        .and_then(|i| i.data_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string())
        .into()
}

/// The whole configuration, checked as the reference checks it.
pub fn load(
    conf: &HostLocalConf,
    name: &str,
    env_args: &CniArgs,
) -> Result<IpamConfig, HostLocalError> {
    let ipam = conf
        .raw
        .ipam
        .clone()
        .ok_or_else(|| invalid("IPAM config missing 'ipam' key"))?;
    let runtime = conf.raw.runtime_config.clone();
    let all_ranges = runtime
        .ip_ranges
        .iter()
        .chain(ipam.ranges.iter())
        .flatten()
        .flatten()
        .chain(std::iter::once(&conf.legacy));
    for range in all_ranges {
        range.check_syntax().map_err(|e| invalid(e.to_string()))?;
    }

    let mut requested: Vec<IpAddr> = Vec::new();
    env_args.check_known(&["IP"])?;
    // `IP=` with nothing after it asks for nothing, as the reference reads it.
    if let Some(text) = env_args.get("IP").filter(|t| !t.is_empty()) {
        let ip = parse_requested(text).ok_or_else(|| shared::Error::ArgsBadValue {
            pair: format!("IP={text}"),
            reason: format!("invalid IP address {text}"),
        })?;
        requested.push(ip);
    }
    let from_args = conf
        .raw
        .args
        .as_ref()
        .and_then(|a| a.cni.as_ref())
        .map(|c| c.ips.as_slice())
        .unwrap_or_default();
    for text in from_args.iter().chain(runtime.ips.iter()) {
        let ip = parse_requested(text)
            .ok_or_else(|| invalid(format!("cannot understand ip: {text:?} is not an address")))?;
        requested.push(ip);
    }
    let mut seen = std::collections::HashSet::new();
    requested.retain(|ip| seen.insert(*ip));

    // Runtime ranges first, then the legacy single range, then `ranges`.
    let mut raw_sets: Vec<Vec<RangeConf>> = runtime.ip_ranges.unwrap_or_default();
    if conf.legacy.subnet.is_some() {
        raw_sets.push(vec![conf.legacy.clone()]);
    }
    raw_sets.extend(ipam.ranges.unwrap_or_default());
    if raw_sets.is_empty() {
        return Err(invalid("no IP ranges specified"));
    }
    let range_sets = raw_sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            RangeSet::canonicalize(set)
                .map_err(|source| HostLocalError::RangeSet { index: i, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in range_sets.iter().enumerate() {
        if let Some(j) = range_sets[i + 1..].iter().position(|b| a.overlaps(b)) {
            return Err(HostLocalError::SetsOverlap(i, i + 1 + j));
        }
    }

    Ok(IpamConfig {
        name: name.to_string(),
        range_sets,
        routes: ipam.routes.clone().unwrap_or_default(),
        data_dir: data_dir(conf),
        resolv_conf: ipam.resolv_conf.filter(|p| !p.is_empty()).map(Into::into),
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn load_json(v: Value, args: &str) -> Result<IpamConfig, HostLocalError> {
        let doc = Document::parse(v.to_string().as_bytes()).expect("json");
        let conf: HostLocalConf = doc.decode().map_err(|e| invalid(e.to_string()))?;
        load(&conf, "n", &CniArgs::parse(args).expect("args"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn runtime_ranges_come_first_then_legacy_then_ranges() {
        let c = load_json(
            json!({"cniVersion": "1.0.0", "name": "n",
                   "runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]]},
                   "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
                            "ranges": [[{"subnet": "10.2.0.0/24"}]]}}),
            "",
        )
        .expect("valid");
        let firsts: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(firsts, ["10.3.0.0/24", "10.1.0.0/24", "10.2.0.0/24"]);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn requested_addresses_from_every_source_in_order() {
        let c = load_json(
            json!({"cniVersion": "1.0.0", "name": "n",
                   "args": {"cni": {"ips": ["10.1.0.7/24", "10.1.0.5"]}},
                   "runtimeConfig": {"ips": ["2001:db8::9"]},
                   "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]]}}),
            "IgnoreUnknown=1;IP=10.1.0.5/24;K8S_POD_NAME=x",
        )
        .expect("valid");
        assert_eq!(
            c.requested,
            [ip("10.1.0.5"), ip("10.1.0.7"), ip("2001:db8::9")]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |v: Value, args: &str| load_json(v, args).expect_err("invalid").to_string();
        assert_eq!(
            err(json!({"cniVersion": "1.0.0", "name": "n"}), ""),
            "IPAM config missing 'ipam' key"
        );
        assert_eq!(
            err(json!({"name": "n", "ipam": {"type": "host-local"}}), ""),
            "no IP ranges specified"
        );
        assert_eq!(
            err(json!({"name": "n", "ipam": {"ranges": [[]]}}), ""),
            "invalid range set 0: empty range set"
        );
        assert_eq!(
            err(
                json!({"name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}],
                                                         [{"subnet": "10.0.0.0/16"}]]}}),
                ""
            ),
            "range set 0 overlaps with 1"
        );
        assert!(err(
            json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24"}}),
            "IP=10.0.0.300"
        )
        .contains("IP=10.0.0.300"));
        assert!(err(
            json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24"}}),
            "FOO=1"
        )
        .contains("unknown args"));
        assert_eq!(
            err(
                json!({"name": "n", "ipam": {"ranges": [[{"subnet": "bogus"}]]}}),
                ""
            ),
            "invalid CIDR address: bogus"
        );
        assert!(
            err(json!({"name": "n", "ipam": {"ranges": "10.1.2.0/24"}}), "")
                .contains("ipam.ranges")
        );
        assert!(err(
            json!({"name": "n", "ipam": {"ranges": [[{"subnet": "usePodCidr"}]]}}),
            ""
        )
        .contains("calico plugin"));
    }
}

//! The runtime's CNI result cache (libcni's `<cache>/results/<network>-<container>-<ifname>`,
//! one file per live attachment): on a single node with the `local` datastore, the
//! attachments the runtime still has are workloads too, even those whose plugin writes no
//! WorkloadEndpoint (another plugin delegating to calico-ipam).

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

/// An attachment the runtime keeps, with the addresses its result gave it.
pub struct CachedAttachment {
    pub container_id: String,
    pub interface: String,
    pub ips: Vec<IpAddr>,
}

/// The attachments of `network` cached under `cache_dir`. A file that is not a libcni
/// cache entry is skipped: the cache belongs to the runtime, not to us.
pub fn attachments(cache_dir: &Path, network: &str) -> Vec<CachedAttachment> {
    let Ok(entries) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<CachedAttachment> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(|entry| entry["networkName"] == network)
        .map(|entry| CachedAttachment {
            container_id: text(&entry, "containerId"),
            interface: text(&entry, "ifName"),
            ips: entry["result"]["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| (&a.container_id, &a.interface).cmp(&(&b.container_id, &b.interface)));
    out
}

fn text(entry: &Value, key: &str) -> String {
    entry[key].as_str().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_networks_entries_count() {
        let dir = tempfile::tempdir().expect("dir");
        let results = dir.path().join("results");
        std::fs::create_dir_all(&results).expect("mkdir");
        let entry = |net: &str, id: &str, ip: &str| {
            serde_json::json!({"kind": "cniCacheV1", "containerId": id, "ifName": "eth0",
                               "networkName": net,
                               "result": {"cniVersion": "1.0.0", "ips": [{"address": ip}]}})
            .to_string()
        };
        std::fs::write(results.join("k8s-a-eth0"), entry("k8s", "a", "10.0.0.2/32")).expect("w");
        std::fs::write(
            results.join("other-b-eth0"),
            entry("other", "b", "10.1.0.2/24"),
        )
        .expect("w");
        std::fs::write(results.join("junk"), b"not json").expect("w");
        let found = attachments(dir.path(), "k8s");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].container_id, "a");
        assert_eq!(
            found[0].ips,
            vec!["10.0.0.2".parse::<IpAddr>().expect("ip")]
        );
    }
}

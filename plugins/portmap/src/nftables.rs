//! The nftables backend, laid out as the reference's (v1.9) one: tables `ip cni_hostport`
//! and `ip6 cni_hostport`; the DNAT rules of every container in chain `hostports` and its
//! masquerade rules in `masquerading`, each rule commented with the container id; hooks
//! `prerouting` and `output` jump to `hostports_all` for local destinations only
//! (`fib daddr type local`), so transit traffic is never touched.
//!
//! A change is one `nft -f -` transaction (all or nothing), preceded by one
//! `nft -j list ruleset` to find the handles of the container's existing rules.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::config::Settings;
use crate::model::{Container, Family, Mapping};

pub const TABLE: &str = "cni_hostport";

/// A rule of our tables, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub family: Family,
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// The chains whose rules belong to containers (by comment).
const CONTAINER_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

fn keyword(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// The rules of our two tables in `nft -j list ruleset` output.
pub fn parse_listing(json: &str) -> Result<Vec<Listed>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j list ruleset: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft -j list ruleset: no \"nftables\" list")?;
    Ok(items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule.get("table").and_then(Value::as_str) == Some(TABLE))
        .filter_map(|rule| {
            let family = match rule.get("family").and_then(Value::as_str)? {
                "ip" => Family::V4,
                "ip6" => Family::V6,
                _ => return None,
            };
            Some(Listed {
                family,
                chain: rule.get("chain")?.as_str()?.to_string(),
                handle: rule.get("handle")?.as_u64()?,
                comment: rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect())
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Deletes every container rule whose comment `stale` selects.
fn delete_into(out: &mut String, existing: &[Listed], stale: impl Fn(&str) -> bool) {
    for rule in existing {
        let Some(comment) = &rule.comment else {
            continue;
        };
        if CONTAINER_CHAINS.contains(&rule.chain.as_str()) && stale(comment) {
            out.push_str(&format!(
                "delete rule {} {TABLE} {} handle {}\n",
                keyword(rule.family),
                rule.chain,
                rule.handle
            ));
        }
    }
}

/// ADD: the skeleton of each table the container needs (hooks rewritten with the current
/// conditions), the container's previous rules deleted, its new ones added.
pub fn add_script(
    existing: &[Listed],
    settings: &Settings,
    containers: &[Container],
    mappings: &[Mapping],
) -> String {
    let mut out = String::new();
    for c in containers {
        let f = keyword(c.family());
        let t = format!("{f} {TABLE}");
        out.push_str(&format!(
            "add table {t} {{ comment \"CNI portmap plugin\" ; }}\n"
        ));
        for chain in ["hostports", "hostip_hostports", "hostports_all"] {
            out.push_str(&format!("add chain {t} {chain}\n"));
        }
        out.push_str(&format!("flush chain {t} hostports_all\n"));
        out.push_str(&format!(
            "add rule {t} hostports_all jump hostip_hostports\n"
        ));
        out.push_str(&format!("add rule {t} hostports_all jump hostports\n"));
        let conditions = settings.conditions(c.family()).join(" ");
        let sep = if conditions.is_empty() { "" } else { " " };
        for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
            out.push_str(&format!(
                "add chain {t} {chain} {{ type nat hook {hook} priority -100 ; }}\n"
            ));
            out.push_str(&format!("flush chain {t} {chain}\n"));
            out.push_str(&format!(
                "add rule {t} {chain} {conditions}{sep}fib daddr type local jump hostports_all\n"
            ));
        }
        if settings.snat {
            out.push_str(&format!(
                "add chain {t} masquerading {{ type nat hook postrouting priority 100 ; }}\n"
            ));
        }
    }
    let families: Vec<Family> = containers.iter().map(Container::family).collect();
    let mine: Vec<Listed> = existing
        .iter()
        .filter(|r| families.contains(&r.family))
        .cloned()
        .collect();
    let id = containers
        .first()
        .map(|c| c.id.as_str())
        .unwrap_or_default();
    delete_into(&mut out, &mine, |comment| comment == id);
    for c in containers {
        for rule in container_rules(settings, c, mappings) {
            out.push_str(&rule);
            out.push('\n');
        }
    }
    out
}

/// The container's rules in one family, as `add rule` lines.
pub fn container_rules(settings: &Settings, c: &Container, mappings: &[Mapping]) -> Vec<String> {
    let family = c.family();
    let f = keyword(family);
    let ip = c.ip.ip();
    let comment = quote(&c.id);
    let mut out = Vec::new();
    for m in mappings.iter().filter(|m| m.applies_to(family)) {
        let daddr = m
            .host_ip_match()
            .map(|h| format!("{f} daddr {h} "))
            .unwrap_or_default();
        let to = match family {
            Family::V4 => format!("{ip}:{}", m.container_port),
            Family::V6 => format!("[{ip}]:{}", m.container_port),
        };
        out.push(format!(
            "add rule {f} {TABLE} hostports {daddr}{} dport {} dnat to {to} comment {comment}",
            m.protocol.as_str(),
            m.host_port
        ));
    }
    if settings.snat {
        out.push(format!(
            "add rule {f} {TABLE} masquerading {f} saddr {ip} {f} daddr {ip} masquerade comment {comment}"
        ));
        if family == Family::V4 {
            out.push(format!(
                "add rule {f} {TABLE} masquerading {f} saddr 127.0.0.1 {f} daddr {ip} masquerade comment {comment}"
            ));
        }
    }
    out
}

/// DEL: every rule of the container, in both families.
pub fn del_script(existing: &[Listed], container_id: &str) -> String {
    let mut out = String::new();
    delete_into(&mut out, existing, |comment| comment == container_id);
    out
}

/// GC: every container rule whose container is not kept.
pub fn gc_script(existing: &[Listed], keep: &[&str]) -> String {
    let mut out = String::new();
    delete_into(&mut out, existing, |comment| !keep.contains(&comment));
    out
}

/// CHECK for one family: as many DNAT rules as mappings of the family, and the masquerade
/// rules when snat.
pub fn check(
    existing: &[Listed],
    settings: &Settings,
    c: &Container,
    mappings: &[Mapping],
) -> Result<(), String> {
    let family = c.family();
    let count = |chain: &str| {
        existing
            .iter()
            .filter(|r| r.family == family && r.chain == chain)
            .filter(|r| r.comment.as_deref() == Some(c.id.as_str()))
            .count()
    };
    let want = mappings.iter().filter(|m| m.applies_to(family)).count();
    let have = count("hostports");
    if have < want {
        return Err(format!(
            "{} {TABLE}: {have} of {want} DNAT rules of container {} found",
            keyword(family),
            c.id
        ));
    }
    if settings.snat {
        let want = if family == Family::V4 { 2 } else { 1 };
        let have = count("masquerading");
        if have < want {
            return Err(format!(
                "{} {TABLE}: {have} of {want} masquerade rules of container {} found",
                keyword(family),
                c.id
            ));
        }
    }
    Ok(())
}

/// `nft -j list ruleset`. `Ok(None)` when nft is not installed (nothing can be ours).
pub fn list() -> Result<Option<Vec<Listed>>, String> {
    let out = match Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("nft: {e}")),
    };
    if !out.status.success() {
        return Err(format!(
            "nft -j list ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_listing(&String::from_utf8_lossy(&out.stdout)).map(Some)
}

/// `nft -f -` fed `script`: one transaction.
pub fn apply(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if let Some(Err(e)) = written {
        return Err(format!("nft: writing rules: {e}"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::model::Protocol;

    fn settings(snat: bool) -> Settings {
        Settings {
            backend: Backend::Nftables,
            snat,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec![],
            conditions_v6: vec!["ip6".into(), "saddr".into(), "fd00::/8".into()],
        }
    }

    fn mappings() -> Vec<Mapping> {
        vec![
            Mapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            Mapping {
                host_port: 8081,
                container_port: 81,
                protocol: Protocol::Udp,
                host_ip: Some("192.168.0.2".parse().unwrap()),
            },
        ]
    }

    fn container(ip: &str) -> Container {
        Container {
            network: "net".into(),
            id: "c1".into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn v4_rules_with_masquerade() {
        let got = container_rules(&settings(true), &container("10.0.0.2/24"), &mappings());
        assert_eq!(
            got,
            [
                "add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment \"c1\"",
                "add rule ip cni_hostport hostports ip daddr 192.168.0.2 udp dport 8081 dnat to 10.0.0.2:81 comment \"c1\"",
                "add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"c1\"",
                "add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment \"c1\"",
            ]
        );
    }

    #[test]
    fn v6_rules_without_snat_and_hooks_with_conditions() {
        let c = container("fd00::2/128");
        let got = container_rules(&settings(false), &c, &mappings());
        assert_eq!(
            got,
            ["add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [fd00::2]:80 comment \"c1\""]
        );
        let script = add_script(&[], &settings(false), &[c], &mappings());
        assert!(script.contains(
            "add rule ip6 cni_hostport prerouting ip6 saddr fd00::/8 fib daddr type local jump hostports_all\n"
        ));
        assert!(script.contains("add rule ip6 cni_hostport output ip6 saddr fd00::/8 fib daddr type local jump hostports_all\n"));
        assert!(!script.contains("masquerading"));
        assert!(!script.contains("add table ip cni_hostport"));
    }

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "ip", "name": "cni_hostport", "handle": 1, "comment": "CNI portmap plugin"}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports_all", "handle": 6, "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 9, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 10, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 11, "comment": "c1", "expr": []}},
      {"rule": {"family": "ip6", "table": "cni_hostport", "chain": "hostports", "handle": 4, "comment": "c2", "expr": []}},
      {"rule": {"family": "ip", "table": "nat", "chain": "hostports", "handle": 3, "comment": "c1", "expr": []}}]}"#;

    #[test]
    fn deletes_by_comment_in_our_tables_only() {
        let listed = parse_listing(LISTING).unwrap();
        assert_eq!(listed.len(), 5);
        assert_eq!(
            del_script(&listed, "c1"),
            "delete rule ip cni_hostport hostports handle 9\n\
             delete rule ip cni_hostport masquerading handle 10\n\
             delete rule ip cni_hostport masquerading handle 11\n"
        );
        assert_eq!(
            gc_script(&listed, &["c1"]),
            "delete rule ip6 cni_hostport hostports handle 4\n"
        );
        let c = container("10.0.0.2/32");
        assert_eq!(
            check(&listed, &settings(true), &c, &mappings()[..1]),
            Ok(())
        );
        assert!(check(&listed, &settings(true), &c, &mappings()).is_err());
        let again = add_script(&listed, &settings(true), &[c], &mappings());
        assert!(again.contains("delete rule ip cni_hostport hostports handle 9\n"));
        assert!(!again.contains("handle 4"));
    }
}

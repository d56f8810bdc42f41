//! The reference's iptables rules, as data: each rule is the text `iptables-save` prints
//! after `-A <chain> `, so what we write and what we read back compare as strings.

use std::fmt::Write;

use ipnetwork::IpNetwork;

use crate::config::Settings;
use crate::model::{dnat_chain, Container, Family, Mapping, Protocol};

pub const TOP_CHAIN: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// multiport takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;
/// The comment match's limit, in bytes.
const COMMENT_MAX: usize = 255;

/// One rule: the chain and the spec after `-A <chain> `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    fn new(chain: &str, spec: String) -> Rule {
        Rule {
            chain: chain.to_string(),
            spec,
        }
    }

    /// Whether it jumps to `target`.
    pub fn jumps_to(&self, target: &str) -> bool {
        self.spec.ends_with(&format!(" -j {target}")) || self.spec == format!("-j {target}")
    }
}

/// A shared rule and where it goes when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRule {
    pub rule: Rule,
    /// `-I <chain> 1` rather than `-A`.
    pub first: bool,
}

/// A token as iptables-save quotes it: in double quotes, with `\` and `"` escaped, when it
/// holds anything but a plain word.
pub fn quote(token: &str) -> String {
    let plain = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,!=+@[]%".contains(c));
    if plain {
        return token.to_string();
    }
    let mut out = String::from("\"");
    for c in token.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `0x2000/0x2000`.
fn mark(settings: &Settings) -> String {
    format!("{:#x}/{:#x}", settings.mark, settings.mark)
}

/// The chains and rules every container shares, in the order the reference creates them:
/// the masquerade mark and its POSTROUTING hook when snat uses our own mark chain, then
/// the DNAT entry from PREROUTING and OUTPUT.
pub fn shared_rules(settings: &Settings) -> (Vec<&'static str>, Vec<SharedRule>) {
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    if settings.snat && settings.external_set_mark_chain.is_none() {
        chains.extend([SETMARK_CHAIN, MASQ_CHAIN]);
        rules.push(SharedRule {
            rule: Rule::new(
                SETMARK_CHAIN,
                format!(
                    "-m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark {}",
                    mark(settings)
                ),
            ),
            first: false,
        });
        rules.push(SharedRule {
            rule: Rule::new(
                MASQ_CHAIN,
                format!("-m mark --mark {} -j MASQUERADE", mark(settings)),
            ),
            first: false,
        });
        rules.push(SharedRule {
            rule: Rule::new(
                "POSTROUTING",
                format!(
                    "-m comment --comment \"CNI portfwd requiring masquerade\" -j {MASQ_CHAIN}"
                ),
            ),
            first: true,
        });
    }
    chains.push(TOP_CHAIN);
    for hook in ["PREROUTING", "OUTPUT"] {
        rules.push(SharedRule {
            rule: Rule::new(hook, format!("-m addrtype --dst-type LOCAL -j {TOP_CHAIN}")),
            first: false,
        });
    }
    (chains, rules)
}

/// `dnat name: "<net>" id: "<id>"`, cut to the comment match's limit as the reference does.
pub fn entry_comment(network: &str, id: &str) -> String {
    let comment = format!("dnat name: \"{network}\" id: \"{id}\"");
    if comment.len() <= COMMENT_MAX {
        return comment;
    }
    let mut cut = COMMENT_MAX - 2;
    while !comment.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &comment[..cut])
}

/// The rules in CNI-HOSTPORT-DNAT that send this container's host ports to its chain: one
/// per protocol (sorted), ports in input order, at most 15 per rule. Every mapping counts,
/// whatever its hostIP's family (the chain sorts them out).
pub fn entry_rules(settings: &Settings, c: &Container, mappings: &[Mapping]) -> Vec<Rule> {
    entry_rules_of(settings, &c.network, &c.id, c.family(), mappings)
}

/// [`entry_rules`] from what DEL knows: they do not depend on the container's address.
pub fn entry_rules_of(
    settings: &Settings,
    network: &str,
    id: &str,
    family: Family,
    mappings: &[Mapping],
) -> Vec<Rule> {
    let chain = dnat_chain(network, id);
    let comment = quote(&entry_comment(network, id));
    let mut protocols: Vec<Protocol> = mappings.iter().map(|m| m.protocol).collect();
    protocols.sort();
    protocols.dedup();
    let mut out = Vec::new();
    for proto in protocols {
        let ports: Vec<String> = mappings
            .iter()
            .filter(|m| m.protocol == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for group in ports.chunks(MULTIPORT_MAX) {
            let mut spec = format!(
                "-p {} -m comment --comment {comment} -m multiport --dports {}",
                proto.as_str(),
                group.join(",")
            );
            for token in settings.conditions(family) {
                spec.push(' ');
                spec.push_str(&quote(token));
            }
            let _ = write!(spec, " -j {chain}");
            out.push(Rule::new(TOP_CHAIN, spec));
        }
    }
    out
}

/// `10.0.0.0/24` for `10.0.0.2/24`: iptables keeps only the network part of a source.
fn network_of(net: &IpNetwork) -> String {
    match IpNetwork::new(net.network(), net.prefix()) {
        Ok(n) => n.to_string(),
        Err(_) => net.to_string(),
    }
}

fn host(ip: std::net::IpAddr) -> String {
    match Family::of(&ip) {
        Family::V4 => format!("{ip}/32"),
        Family::V6 => format!("{ip}/128"),
    }
}

/// The container's own chain: per mapping of its family, the hairpin mark (snat), the
/// localhost mark (snat, IPv4), and the DNAT.
pub fn dnat_rules(settings: &Settings, c: &Container, mappings: &[Mapping]) -> Vec<Rule> {
    let chain = dnat_chain(&c.network, &c.id);
    let family = c.family();
    let set_mark = settings
        .external_set_mark_chain
        .as_deref()
        .unwrap_or(SETMARK_CHAIN);
    let mut out = Vec::new();
    for m in mappings.iter().filter(|m| m.applies_to(family)) {
        let proto = m.protocol.as_str();
        let dst = m
            .host_ip_match()
            .map(|ip| format!(" -d {}", host(ip)))
            .unwrap_or_default();
        let port = format!("-p {proto} -m {proto} --dport {}", m.host_port);
        if settings.snat {
            out.push(Rule::new(
                &chain,
                format!("-s {}{dst} {port} -j {set_mark}", network_of(&c.ip)),
            ));
            if family == Family::V4 {
                out.push(Rule::new(
                    &chain,
                    format!("-s 127.0.0.1/32{dst} {port} -j {set_mark}"),
                ));
            }
        }
        let to = match family {
            Family::V4 => format!("{}:{}", c.ip.ip(), m.container_port),
            Family::V6 => format!("[{}]:{}", c.ip.ip(), m.container_port),
        };
        let dst = dst.trim_start();
        let sep = if dst.is_empty() { "" } else { " " };
        out.push(Rule::new(
            &chain,
            format!("{dst}{sep}{port} -j DNAT --to-destination {to}"),
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::model::Protocol::{Tcp, Udp};

    fn settings(snat: bool) -> Settings {
        Settings {
            backend: Backend::Iptables,
            snat,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec!["-a".into(), "b".into()],
            conditions_v6: vec![],
        }
    }

    fn m(host: u16, cont: u16, protocol: Protocol, ip: Option<&str>) -> Mapping {
        Mapping {
            host_port: host,
            container_port: cont,
            protocol,
            host_ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    /// The mappings of the reference's rule-generation test.
    fn reference_mappings() -> Vec<Mapping> {
        vec![
            m(8080, 80, Tcp, None),
            m(8081, 80, Tcp, None),
            m(8080, 81, Udp, None),
            m(8082, 82, Udp, None),
            m(8083, 83, Tcp, Some("192.168.0.2")),
            m(8084, 84, Tcp, Some("0.0.0.0")),
            m(8085, 85, Tcp, Some("2001:db8:a::1")),
            m(8086, 86, Tcp, Some("::")),
        ]
    }

    fn container(ip: &str) -> Container {
        Container {
            network: "test".into(),
            id: "icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y".into(),
            ip: ip.parse().unwrap(),
        }
    }

    fn text(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("-A {} {}", r.chain, r.spec))
            .collect()
    }

    #[test]
    fn entry_rules_group_ports_by_protocol_with_conditions() {
        let c = container("10.0.0.2/24");
        let comment = r#""dnat name: \"test\" id: \"icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y\"""#;
        assert_eq!(
            text(&entry_rules(&settings(true), &c, &reference_mappings())),
            [
                format!("-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {comment} -m multiport --dports 8080,8081,8083,8084,8085,8086 -a b -j CNI-DN-67e92b96e692a494b6b85"),
                format!("-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {comment} -m multiport --dports 8080,8082 -a b -j CNI-DN-67e92b96e692a494b6b85"),
            ]
        );
    }

    #[test]
    fn more_than_15_ports_split() {
        let c = container("10.0.0.2/32");
        let many: Vec<Mapping> = (1..=17).map(|p| m(p, p, Tcp, None)).collect();
        let rules = entry_rules(&settings(true), &c, &many);
        assert_eq!(rules.len(), 2);
        assert!(rules[0]
            .spec
            .contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 "));
        assert!(rules[1].spec.contains("--dports 16,17 "));
    }

    #[test]
    fn v4_chain_has_hairpin_localhost_and_dnat() {
        let c = container("10.0.0.2/24");
        let ch = "CNI-DN-67e92b96e692a494b6b85";
        let got = text(&dnat_rules(&settings(true), &c, &reference_mappings()));
        let mut want = Vec::new();
        for (port, to, proto, dst) in [
            (8080, 80, "tcp", ""),
            (8081, 80, "tcp", ""),
            (8080, 81, "udp", ""),
            (8082, 82, "udp", ""),
            (8083, 83, "tcp", " -d 192.168.0.2/32"),
            (8084, 84, "tcp", ""),
        ] {
            let p = format!("-p {proto} -m {proto} --dport {port}");
            want.push(format!(
                "-A {ch} -s 10.0.0.0/24{dst} {p} -j CNI-HOSTPORT-SETMARK"
            ));
            want.push(format!(
                "-A {ch} -s 127.0.0.1/32{dst} {p} -j CNI-HOSTPORT-SETMARK"
            ));
            let dst = dst.trim_start();
            let sep = if dst.is_empty() { "" } else { " " };
            want.push(format!(
                "-A {ch} {dst}{sep}{p} -j DNAT --to-destination 10.0.0.2:{to}"
            ));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn v6_chain_has_hairpin_and_dnat_only() {
        let c = container("2001:db8::2/64");
        let ch = "CNI-DN-67e92b96e692a494b6b85";
        let got = text(&dnat_rules(&settings(true), &c, &reference_mappings()));
        assert_eq!(got.len(), 2 * 6, "{got:#?}");
        assert_eq!(
            got[0],
            format!("-A {ch} -s 2001:db8::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK")
        );
        assert_eq!(
            got[1],
            format!("-A {ch} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8::2]:80")
        );
        assert_eq!(
            got[8],
            format!("-A {ch} -s 2001:db8::/64 -d 2001:db8:a::1/128 -p tcp -m tcp --dport 8085 -j CNI-HOSTPORT-SETMARK")
        );
        assert!(!got.iter().any(|r| r.contains("8083") || r.contains("8084")));
    }

    #[test]
    fn without_snat_only_dnat_and_external_mark_chain_replaces_ours() {
        let c = container("10.0.0.2/24");
        let rules = dnat_rules(&settings(false), &c, &reference_mappings());
        assert!(rules.iter().all(|r| r.spec.contains("-j DNAT")));
        let mut s = settings(true);
        s.external_set_mark_chain = Some("PLZ-SET-MARK".into());
        let rules = dnat_rules(&s, &c, &reference_mappings());
        assert!(rules.iter().any(|r| r.spec.ends_with("-j PLZ-SET-MARK")));
        assert!(!rules
            .iter()
            .any(|r| r.spec.contains("CNI-HOSTPORT-SETMARK")));
        let (chains, shared) = shared_rules(&s);
        assert_eq!(chains, [TOP_CHAIN]);
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn shared_chains_carry_the_mark() {
        let mut s = settings(true);
        s.mark = 0x20;
        let (chains, rules) = shared_rules(&s);
        assert_eq!(chains, [SETMARK_CHAIN, MASQ_CHAIN, TOP_CHAIN]);
        let got: Vec<String> = rules
            .iter()
            .map(|r| text(std::slice::from_ref(&r.rule))[0].clone())
            .collect();
        assert_eq!(
            got,
            [
                "-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x20/0x20",
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE",
                "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            ]
        );
        assert!(rules[2].first);
    }

    #[test]
    fn long_comments_are_cut_like_the_reference() {
        let id = "x".repeat(300);
        let c = entry_comment("net", &id);
        assert_eq!(c.len(), 256);
        assert!(c.ends_with("..."));
        assert_eq!(quote("a b\"c"), "\"a b\\\"c\"");
        assert_eq!(quote("10.0.0.0/24"), "10.0.0.0/24");
    }
}

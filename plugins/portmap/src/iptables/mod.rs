//! The iptables backend: the reference's chains and rules in table `nat`, written with one
//! `iptables-restore --noflush --wait` per family and invocation, after one
//! `iptables-save -t nat` to learn what is already there.
//!
//! Plans are pure: (current table, wanted rules) → restore text. A restore is atomic, so a
//! failed ADD writes nothing. With `--noflush`, declaring an existing user chain
//! (`:CNI-DN-… - [0:0]`) flushes it, which is how a repeated ADD replaces a container's
//! rules; shared chains are declared only when missing, so other containers' rules stay.
//! Rules are removed by their exact saved text (`-D <chain> <spec>`), never by number.
//!
//! DEL does not read the whole table: with iptables-nft, reading rules costs time quadratic
//! in how many are read, and one container with 100,000 mappings has 300,000. It reads
//! `CNI-HOSTPORT-DNAT` alone, which holds the entry rules (one per 15 ports), and deletes
//! the container's chains without reading them ([`del_plan`]).

mod exec;
pub mod rules;
pub mod state;

use std::collections::BTreeSet;

use crate::config::Settings;
use crate::model::{dnat_chain, legacy_snat_chain, Container, Family, Mapping};
pub use exec::{list_chain, restore, save};
use rules::{dnat_rules, entry_rules, shared_rules, Rule, TOP_CHAIN};
pub use state::NatTable;

/// An `iptables-restore` input for table `nat`: chain declarations first, then changes.
#[derive(Debug, Default)]
pub struct Script {
    declare: Vec<String>,
    changes: Vec<String>,
}

impl Script {
    fn declare(&mut self, chain: &str) {
        let line = format!(":{chain} - [0:0]");
        if !self.declare.contains(&line) {
            self.declare.push(line);
        }
    }

    fn append(&mut self, rule: &Rule) {
        self.changes
            .push(format!("-A {} {}", rule.chain, rule.spec));
    }

    fn insert_first(&mut self, rule: &Rule) {
        self.changes
            .push(format!("-I {} 1 {}", rule.chain, rule.spec));
    }

    fn delete(&mut self, rule: &Rule) {
        self.changes
            .push(format!("-D {} {}", rule.chain, rule.spec));
    }

    fn delete_chain(&mut self, chain: &str) {
        self.changes.push(format!("-X {chain}"));
    }

    /// `-N`: fails the whole restore when the chain exists.
    fn create_chain(&mut self, chain: &str) {
        self.changes.push(format!("-N {chain}"));
    }

    /// `-C`: fails the whole restore when the rule is missing.
    fn assert_present(&mut self, rule: &Rule) {
        self.changes
            .push(format!("-C {} {}", rule.chain, rule.spec));
    }

    pub fn is_empty(&self) -> bool {
        self.declare.is_empty() && self.changes.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::from("*nat\n");
        for line in self.declare.iter().chain(&self.changes) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Removes `chains` (flushed, then deleted) and every rule that jumps to them.
fn teardown_into(script: &mut Script, table: &NatTable, chains: &[String]) {
    for chain in chains {
        for rule in table.references(chain) {
            if !chains.contains(&rule.chain) {
                script.delete(rule);
            }
        }
    }
    for chain in chains {
        if table.has_chain(chain) {
            script.declare(chain);
            script.delete_chain(chain);
        }
    }
}

/// ADD for one family: the shared chains and hooks where missing, this container's entry
/// rules and chain replaced whole.
pub fn add_script(
    table: &NatTable,
    settings: &Settings,
    container: &Container,
    mappings: &[Mapping],
) -> Script {
    let mut script = Script::default();
    let (chains, shared) = shared_rules(settings);
    for chain in chains {
        if !table.has_chain(chain) {
            script.declare(chain);
        }
    }
    for shared in &shared {
        if table.has_rule(&shared.rule) {
            continue;
        }
        if shared.first {
            script.insert_first(&shared.rule);
        } else {
            script.append(&shared.rule);
        }
    }
    let chain = dnat_chain(&container.network, &container.id);
    for rule in table.references(&chain) {
        script.delete(rule);
    }
    script.declare(&chain);
    for rule in entry_rules(settings, container, mappings) {
        script.append(&rule);
    }
    for rule in dnat_rules(settings, container, mappings) {
        script.append(&rule);
    }
    script
}

/// ADD for one family on a node already set up, read from nothing: the restore checks
/// (`-C`) every shared rule when `check_shared`, creates the container's chain (`-N`,
/// which fails when it exists) and appends its entry and DNAT rules, which fail when the
/// shared chains are missing. It applies only when the node's skeleton is whole and the
/// container has no chain yet, which is every ADD but a node's first and a repeated one;
/// otherwise it fails, changing nothing, and the caller plans from the table
/// ([`add_script`]). A container without a chain has no entry rules either: ADD writes
/// both in one transaction and DEL removes both in one.
///
/// The checks are left to the caller where it can look the hooks up itself: any `-C`
/// makes iptables-nft's restore read every rule of the table (and `-C` of a hook, every
/// rule of the chain it jumps to, which holds every container's entry rules): 20 ms more
/// on a node with 1,000 containers.
pub fn add_blind_script(
    settings: &Settings,
    container: &Container,
    mappings: &[Mapping],
    check_shared: bool,
) -> Script {
    let mut script = Script::default();
    if check_shared {
        for shared in shared_rules(settings).1 {
            script.assert_present(&shared.rule);
        }
    }
    script.create_chain(&dnat_chain(&container.network, &container.id));
    for rule in entry_rules(settings, container, mappings) {
        script.append(&rule);
    }
    for rule in dnat_rules(settings, container, mappings) {
        script.append(&rule);
    }
    script
}

/// DEL for one family: the container's chain, its legacy SNAT chain and whatever jumps to
/// them; nothing when none exists.
pub fn del_script(table: &NatTable, network: &str, container_id: &str) -> Script {
    let mut script = Script::default();
    let chains = [
        dnat_chain(network, container_id),
        legacy_snat_chain(network, container_id),
    ];
    teardown_into(&mut script, table, &chains);
    script
}

/// Entry rules beyond which DEL empties the container's chain in a transaction of its own
/// first: deleting a rule by its text makes iptables-nft read the rules of the chain it
/// jumps to, 20 seconds for 300,000 of them, and nothing for an empty chain. Below, the
/// chain is small (at most 15 ports per entry rule, 3 rules per port) and one transaction
/// does it all.
pub const FLUSH_FIRST_ENTRIES: usize = 64;

/// DEL for one family from `CNI-HOSTPORT-DNAT` alone ([`exec::list_chain`]). `None` when
/// no entry rule jumps to the container's chains: ADD makes the chains and their entry
/// rules in one transaction and DEL removes them in one, so there is nothing of the
/// container's (GC, which reads the whole table, removes what someone left by hand). That
/// is every DEL of a pod without host ports: it runs no restore.
#[derive(Debug)]
pub struct DelPlan {
    /// Declares (so empties) the container's chain, when it is large.
    pub flush_first: Option<Script>,
    /// Empties both of the container's chains (creating them if missing), deletes the
    /// entry rules that jump to them, and deletes the chains: whatever was there, nothing
    /// is left. It fails, changing nothing, when a rule outside `CNI-HOSTPORT-DNAT` still
    /// jumps to one of them (a legacy SNAT hook); the caller then reads the whole table.
    pub script: Script,
}

pub fn del_plan(top: &NatTable, network: &str, container_id: &str) -> Option<DelPlan> {
    let chains = [
        dnat_chain(network, container_id),
        legacy_snat_chain(network, container_id),
    ];
    let entries: Vec<&Rule> = top
        .rules_in(TOP_CHAIN)
        .filter(|r| chains.iter().any(|c| r.jumps_to(c)))
        .collect();
    if entries.is_empty() {
        return None;
    }
    let flush_first = (entries.len() > FLUSH_FIRST_ENTRIES).then(|| {
        let mut script = Script::default();
        script.declare(&chains[0]);
        script
    });
    let mut script = Script::default();
    for chain in &chains {
        script.declare(chain);
    }
    for rule in entries {
        script.delete(rule);
    }
    for chain in &chains {
        script.delete_chain(chain);
    }
    Some(DelPlan {
        flush_first,
        script,
    })
}

/// DEL for one family read from nothing: the container's chains emptied and deleted with
/// the entry rules ADD wrote for `mappings` (none when the container had no address in
/// this family, or DEL was not told its mappings). It fails, changing nothing, when one of
/// those rules is missing or anything else still jumps to the chains; the caller then
/// plans from the entry rules listed ([`del_plan`]). A chain left by a crash before its
/// entry rules existed cannot be: ADD makes both in one transaction.
///
/// `None` for a container so large that its chain must be emptied first (see
/// [`FLUSH_FIRST_ENTRIES`]): emptying it before knowing the entry rules are there could
/// leave an empty chain behind when they are not.
pub fn del_blind_script(
    settings: &Settings,
    network: &str,
    container_id: &str,
    family: Family,
    mappings: &[Mapping],
) -> Option<Script> {
    let chains = [
        dnat_chain(network, container_id),
        legacy_snat_chain(network, container_id),
    ];
    let entries = rules::entry_rules_of(settings, network, container_id, family, mappings);
    if entries.len() > FLUSH_FIRST_ENTRIES {
        return None;
    }
    let mut script = Script::default();
    for chain in &chains {
        script.declare(chain);
    }
    for rule in &entries {
        script.delete(rule);
    }
    for chain in &chains {
        script.delete_chain(chain);
    }
    Some(script)
}

/// `(network, container id)` from an entry rule's comment, when it was not cut short.
fn owner_of(rule: &Rule) -> Option<(&str, &str)> {
    let rest = rule.spec.split("--comment \"dnat name: \\\"").nth(1)?;
    let (network, rest) = rest.split_once("\\\" id: \\\"")?;
    let (id, _) = rest.split_once("\\\"\"")?;
    Some((network, id))
}

/// GC for one family: the chains of this network's containers that are not in `keep`,
/// found through the owner named in their entry rules' comments. Chains of other networks
/// and rules written by anyone else are left alone.
pub fn gc_script(table: &NatTable, network: &str, keep: &BTreeSet<&str>) -> Script {
    let mut stale = Vec::new();
    for rule in table.rules_in(TOP_CHAIN) {
        let Some((net, id)) = owner_of(rule) else {
            continue;
        };
        if net != network || keep.contains(id) {
            continue;
        }
        for chain in [dnat_chain(net, id), legacy_snat_chain(net, id)] {
            if !stale.contains(&chain) {
                stale.push(chain);
            }
        }
    }
    let mut script = Script::default();
    teardown_into(&mut script, table, &stale);
    script
}

/// CHECK for one family: the container's chain and every rule ADD writes are present.
pub fn check(
    table: &NatTable,
    settings: &Settings,
    container: &Container,
    mappings: &[Mapping],
) -> Result<(), String> {
    let family = container.family();
    let chain = dnat_chain(&container.network, &container.id);
    if !table.has_chain(&chain) {
        return Err(format!(
            "chain {chain} not found in {} table nat",
            tool(family)
        ));
    }
    let missing = |rule: &Rule| {
        format!(
            "rule [{}] in chain {} not found in table nat",
            rule.spec, rule.chain
        )
    };
    for shared in shared_rules(settings).1 {
        if !table.has_rule(&shared.rule) {
            return Err(missing(&shared.rule));
        }
    }
    for rule in dnat_rules(settings, container, mappings) {
        if !table.has_rule(&rule) {
            return Err(missing(&rule));
        }
    }
    // Entry rules: iptables may print user conditions differently from how they were
    // given, so match on protocol, ports and target.
    for rule in entry_rules(settings, container, mappings) {
        let proto = rule.spec.split_whitespace().nth(1).unwrap_or_default();
        let ports = rule
            .spec
            .split_once("--dports ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default();
        let found = table.references(&chain).any(|r| {
            let padded = format!(" {} ", r.spec);
            r.chain == TOP_CHAIN
                && padded.contains(&format!(" -p {proto} "))
                && padded.contains(&format!(" --dports {ports} "))
        });
        if !found {
            return Err(missing(&rule));
        }
    }
    Ok(())
}

pub fn tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::model::Protocol;

    fn settings() -> Settings {
        Settings {
            backend: Backend::Iptables,
            snat: true,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec![],
            conditions_v6: vec![],
        }
    }

    fn container(id: &str) -> Container {
        Container {
            network: "net".into(),
            id: id.into(),
            ip: "10.0.0.2/32".parse().unwrap(),
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
                host_port: 5353,
                container_port: 53,
                protocol: Protocol::Udp,
                host_ip: None,
            },
        ]
    }

    /// What the table looks like after `script` is applied to an empty one, as
    /// iptables-save would print it (the restore text is in saved form already).
    fn applied(script: &Script) -> NatTable {
        let text = script
            .render()
            .replace("-I POSTROUTING 1 ", "-A POSTROUTING ");
        NatTable::parse(&text)
    }

    #[test]
    fn first_add_creates_everything_in_one_script() {
        let c = container("c1");
        let script = add_script(&NatTable::default(), &settings(), &c, &mappings());
        let ch = dnat_chain("net", "c1");
        assert_eq!(
            script.render(),
            format!(
                "*nat
:CNI-HOSTPORT-SETMARK - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:{ch} - [0:0]
-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"net\\\" id: \\\"c1\\\"\" -m multiport --dports 8080 -j {ch}
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment \"dnat name: \\\"net\\\" id: \\\"c1\\\"\" -m multiport --dports 5353 -j {ch}
-A {ch} -s 10.0.0.2/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {ch} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {ch} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
-A {ch} -s 10.0.0.2/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A {ch} -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A {ch} -p udp -m udp --dport 5353 -j DNAT --to-destination 10.0.0.2:53
COMMIT
"
            )
        );
        assert_eq!(
            check(&applied(&script), &settings(), &c, &mappings()),
            Ok(())
        );
    }

    #[test]
    fn second_add_touches_only_its_container() {
        let first = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings(),
        ));
        let again = add_script(&first, &settings(), &container("c2"), &mappings()).render();
        assert!(!again.contains("CNI-HOSTPORT-SETMARK - "), "{again}");
        assert!(!again.contains("PREROUTING"), "{again}");
        assert!(!again.contains(&dnat_chain("net", "c1")), "{again}");
        // The same container again: its entry rules are replaced, its chain flushed.
        let repeat = add_script(&first, &settings(), &container("c1"), &mappings()).render();
        assert_eq!(
            repeat.matches("-D CNI-HOSTPORT-DNAT").count(),
            2,
            "{repeat}"
        );
        assert!(repeat.contains(&format!(":{} - [0:0]", dnat_chain("net", "c1"))));
    }

    #[test]
    fn del_removes_the_chain_and_its_references_only() {
        let mut table = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings(),
        ));
        table.rules.push(Rule {
            chain: "PREROUTING".into(),
            spec: "-p tcp -m tcp --dport 22 -j ACCEPT".into(),
        });
        let ch = dnat_chain("net", "c1");
        let script = del_script(&table, "net", "c1").render();
        assert_eq!(script.matches("-D ").count(), 2, "{script}");
        assert!(script.contains(&format!(":{ch} - [0:0]\n")));
        assert!(script.contains(&format!("-X {ch}\n")));
        assert!(!script.contains("dport 22"));
        assert!(!script.contains("-X CNI-HOSTPORT"));
        assert!(del_script(&NatTable::default(), "net", "c1").is_empty());
        assert!(check(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings()
        )
        .unwrap_err()
        .contains("not found"));
    }

    /// TCP ports 1 to `n`, each to the same port of the container.
    fn tcp_ports(n: u16) -> Vec<Mapping> {
        (1..=n)
            .map(|p| Mapping {
                host_port: p,
                container_port: p,
                protocol: Protocol::Tcp,
                host_ip: None,
            })
            .collect()
    }

    /// The lines of a rendered script that begin with `prefix`.
    fn lines_with(script: &Script, prefix: &str) -> Vec<String> {
        script
            .render()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn blind_add_checks_the_skeleton_and_adds_what_a_planned_add_would() {
        let set_up = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings(),
        ));
        let c2 = container("c2");
        let blind = add_blind_script(&settings(), &c2, &mappings(), true);
        let planned = add_script(&set_up, &settings(), &c2, &mappings());
        // The same rules appended as when planned from the table...
        assert_eq!(lines_with(&blind, "-A "), lines_with(&planned, "-A "));
        // ...but nothing declared (which would flush an existing chain): the chain is
        // created, failing when it exists, and every shared rule must be there.
        assert!(lines_with(&blind, ":").is_empty(), "{}", blind.render());
        assert_eq!(
            lines_with(&blind, "-N "),
            vec![format!("-N {}", dnat_chain("net", "c2"))]
        );
        let checked = lines_with(&blind, "-C ");
        let shared = shared_rules(&settings()).1;
        assert_eq!(checked.len(), shared.len());
        for s in shared {
            assert!(
                checked.contains(&format!("-C {} {}", s.rule.chain, s.rule.spec)),
                "{checked:?}"
            );
        }
        // Checked by the caller: the same changes, no check.
        let unchecked = add_blind_script(&settings(), &c2, &mappings(), false);
        assert!(lines_with(&unchecked, "-C ").is_empty());
        assert_eq!(lines_with(&unchecked, "-A "), lines_with(&blind, "-A "));
    }

    #[test]
    fn blind_del_is_what_the_entry_rules_listed_would_plan() {
        let table = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings(),
        ));
        let blind = del_blind_script(&settings(), "net", "c1", Family::V4, &mappings())
            .expect("two entry rules");
        let listed = del_plan(&table, "net", "c1").expect("c1 has entry rules");
        assert_eq!(blind.render(), listed.script.render());
        // No mappings (no address in the family): only chains, which fail when referenced.
        let none = del_blind_script(&settings(), "net", "c1", Family::V6, &[])
            .expect("nothing to empty first")
            .render();
        assert!(!none.contains("-D "), "{none}");
        assert_eq!(none.matches("-X ").count(), 2, "{none}");
        // A chain too large to empty with its entry rules in one transaction: no blind DEL.
        let many = tcp_ports(1000);
        assert!(del_blind_script(&settings(), "net", "c1", Family::V4, &many).is_none());
    }

    #[test]
    fn del_plan_reads_only_the_entry_rules_and_empties_a_large_chain_first() {
        let mut table = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &mappings(),
        ));
        let other = applied(&add_script(
            &table,
            &settings(),
            &container("c2"),
            &mappings(),
        ));
        table.rules.extend(other.rules);
        let top = NatTable {
            chains: vec![TOP_CHAIN.into()],
            rules: table.rules_in(TOP_CHAIN).cloned().collect(),
        };
        let (dn, sn) = (dnat_chain("net", "c1"), legacy_snat_chain("net", "c1"));
        let plan = del_plan(&top, "net", "c1").expect("c1 has entry rules");
        assert!(plan.flush_first.is_none(), "two entry rules");
        let script = plan.script.render();
        assert_eq!(
            script.matches("-D CNI-HOSTPORT-DNAT ").count(),
            2,
            "{script}"
        );
        assert!(!script.contains(&dnat_chain("net", "c2")), "{script}");
        for chain in [&dn, &sn] {
            assert!(script.contains(&format!(":{chain} - [0:0]\n")), "{script}");
            assert!(script.contains(&format!("-X {chain}\n")), "{script}");
        }
        // Nothing of c3 there: no restore at all.
        assert!(del_plan(&top, "net", "c3").is_none());
        assert!(del_plan(&NatTable::default(), "net", "c1").is_none());
        // 1,000 ports: 67 entry rules, and the chain is emptied on its own first.
        let many = tcp_ports(1000);
        let big = applied(&add_script(
            &NatTable::default(),
            &settings(),
            &container("c1"),
            &many,
        ));
        let plan = del_plan(&big, "net", "c1").expect("entry rules");
        assert_eq!(
            plan.flush_first.map(|s| s.render()),
            Some(format!("*nat\n:{dn} - [0:0]\nCOMMIT\n"))
        );
        assert_eq!(plan.script.render().matches("-D ").count(), 67);
    }

    #[test]
    fn gc_removes_stale_containers_of_this_network_only() {
        let mut table = NatTable::default();
        for (net, id) in [("net", "keep"), ("net", "gone"), ("other", "gone")] {
            let c = Container {
                network: net.into(),
                ..container(id)
            };
            let next = add_script(&table, &settings(), &c, &mappings());
            let mut t = applied(&next);
            table.chains.append(&mut t.chains);
            table.rules.append(&mut t.rules);
        }
        let keep = BTreeSet::from(["keep"]);
        let script = gc_script(&table, "net", &keep).render();
        assert!(script.contains(&format!("-X {}", dnat_chain("net", "gone"))));
        assert!(!script.contains(&dnat_chain("net", "keep")));
        assert!(!script.contains(&dnat_chain("other", "gone")));
    }
}

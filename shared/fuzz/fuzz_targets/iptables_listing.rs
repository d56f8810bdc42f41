//! portmap's readers of what iptables holds: `iptables-save -t nat` output
//! (`NatTable::parse`) and `iptables -S <chain>` output (`NatTable::parse_listing`), and
//! the DEL and GC plans made from what they read, rendered as `iptables-restore` input.
//!
//! Properties: nothing panics; a plan renders as one `*nat` ... `COMMIT` transaction of
//! declarations and changes, one per line (nothing read can add a line); every rule it
//! deletes is one the table holds, by its exact text; DEL and GC remove only chains the
//! table has.

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use portmap::iptables::rules::Rule;
use portmap::iptables::{del_plan, del_script, gc_script, NatTable, Script};

/// Checks a rendered plan against the table it was made from; `exact` when it may delete
/// only chains that exist.
fn check(table: &NatTable, script: &Script, exact: bool) {
    let text = script.render();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("*nat"), "{text}");
    assert_eq!(lines.next_back(), Some("COMMIT"), "{text}");
    for line in lines {
        if let Some(rest) = line.strip_prefix("-D ") {
            let (chain, spec) = rest.split_once(' ').expect("-D <chain> <spec>");
            let rule = Rule {
                chain: chain.to_string(),
                spec: spec.to_string(),
            };
            assert!(table.has_rule(&rule), "{line:?} deletes a rule not read");
        } else if let Some(chain) = line.strip_prefix("-X ") {
            assert!(!exact || table.has_chain(chain), "{line:?}: no such chain");
        } else {
            assert!(
                line.starts_with(':') || line.starts_with("-A ") || line.starts_with("-I "),
                "{line:?} is not a declaration or a change:\n{text}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keep = BTreeSet::from(["cid"]);
    for table in [NatTable::parse(text), NatTable::parse_listing(text)] {
        check(&table, &del_script(&table, "net", "cid"), true);
        check(&table, &gc_script(&table, "net", &keep), true);
        check(&table, &gc_script(&table, "net", &BTreeSet::new()), true);
        if let Some(plan) = del_plan(&table, "net", "cid") {
            check(&table, &plan.script, false);
            if let Some(first) = &plan.flush_first {
                check(&table, first, false);
            }
        }
    }
});

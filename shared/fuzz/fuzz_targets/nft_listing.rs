//! portmap's reader of what nftables holds: `nft -j list ruleset` output
//! (`nftables::parse_listing`), and the DEL and GC transactions made from the rules it
//! finds, rendered as `nft -f` input.
//!
//! Properties: nothing panics; the transactions delete only rules that were listed (by
//! family, chain and handle), each with one line of the script (nothing listed can add a
//! line or a command); DEL deletes only the container's rules, GC only other containers'.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portmap::nftables::{del_script, gc_script, parse_listing, render, Listed, Op};

fn check(listed: &[Listed], ops: &[Op], ours: impl Fn(&str) -> bool) {
    let script = render(ops);
    assert_eq!(script.lines().count(), ops.len(), "{script}");
    for (op, line) in ops.iter().zip(script.lines()) {
        let Op::DelRule(rule) = op else {
            panic!("not a deletion: {line}");
        };
        assert!(listed.contains(rule), "{line} deletes a rule not listed");
        assert!(
            rule.comment.as_deref().is_some_and(&ours),
            "{line} deletes a rule of someone else"
        );
        assert!(
            line.starts_with("delete rule ") && line.ends_with(&format!(" handle {}", rule.handle)),
            "{line}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(listed) = parse_listing(text) else {
        return;
    };
    check(&listed, &del_script(&listed, "cid"), |c| c == "cid");
    check(&listed, &gc_script(&listed, &["cid"]), |c| c != "cid");
});

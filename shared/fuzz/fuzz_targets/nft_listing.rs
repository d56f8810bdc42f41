//! portmap's reader of what nftables holds: `nft -j list ruleset` output
//! (`nftables::parse_listing`), and the DEL and GC transactions made from it, rendered as
//! `nft -f` input.
//!
//! Properties: nothing panics; each operation is one line of the script (nothing listed can
//! add a line or a command); the transactions only delete: rules that were listed (by
//! family, chain and handle) and belong to the container (DEL) or to others (GC), and
//! containers' own chains that were listed, flushed before they are deleted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portmap::nftables::{
    del_script, gc_script, parse_listing, pod_chain, render, Listing, Op, POD_PREFIX,
};

fn check(
    listing: &Listing,
    ops: &[Op],
    ours: impl Fn(&str) -> bool,
    our_chain: impl Fn(&str) -> bool,
) {
    let script = render(ops);
    assert_eq!(script.lines().count(), ops.len(), "{script}");
    let mut flushed = Vec::new();
    for (op, line) in ops.iter().zip(script.lines()) {
        match op {
            Op::DelRule(rule) => {
                assert!(
                    listing.rules.contains(rule),
                    "{line} deletes a rule not listed"
                );
                assert!(
                    rule.comment.as_deref().is_some_and(&ours),
                    "{line} deletes a rule of someone else"
                );
                assert!(
                    line.starts_with("delete rule ")
                        && line.ends_with(&format!(" handle {}", rule.handle)),
                    "{line}"
                );
            }
            Op::Flush { family, chain } => {
                assert!(listing.has_chain(*family, chain), "{line}: not listed");
                assert!(chain.starts_with(POD_PREFIX) && our_chain(chain), "{line}");
                flushed.push((*family, chain.clone()));
            }
            Op::DelChain { family, name } => {
                assert!(listing.has_chain(*family, name), "{line}: not listed");
                assert!(name.starts_with(POD_PREFIX) && our_chain(name), "{line}");
                assert!(
                    flushed.contains(&(*family, name.clone())),
                    "{line}: not flushed first"
                );
            }
            other => panic!("not a deletion: {}", other.text()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(listing) = parse_listing(text) else {
        return;
    };
    let own = pod_chain("cid");
    check(
        &listing,
        &del_script(&listing, "cid"),
        |c| c == "cid",
        |n| n == own,
    );
    check(
        &listing,
        &gc_script(&listing, &["cid"]),
        |c| c != "cid",
        |n| n != own,
    );
});

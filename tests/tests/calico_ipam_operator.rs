//! The operator's `show` of calico-ipam against a `local` store, given the node's conflist:
//! use per pool and, with --show-blocks, per block, and with --ip who holds an address. Every
//! datastore's `show` is in `calico_ipam_show.rs`; `check` and `release` in
//! `calico_ipam_check.rs`.

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{operator, Backend, IpamFixture};
use serde_json::json;

const NODE: &str = "node-a";
const POOL: &str = "10.88.0.0/24";

fn run(conflist: &std::path::Path, args: &[&str]) -> Outcome {
    operator(conflist, args)
}

/// The lines of `out` that mention all of `words`.
fn lines_with<'a>(out: &'a Outcome, words: &[&str]) -> Vec<&'a str> {
    out.stdout
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .collect()
}

#[test]
fn show_lists_pools_and_blocks_and_who_holds_an_address() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL]}));
    let list = fx.write_conflist(&conf);
    let first = fx.add(
        &conf,
        "c1",
        &[
            ("K8S_POD_NAMESPACE", "ns1"),
            ("K8S_POD_NAME", "pod1"),
            ("IgnoreUnknown", "1"),
        ],
    );
    fx.add(&conf, "c2", &[]);
    let block = fx.blocks().remove(0);

    let out = run(&list, &["show"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(
        lines_with(
            &out,
            &["| IP Pool ", POOL, " 256 |", " 2 (1%) |", " 254 (99%) |"]
        )
        .len(),
        1,
        "the pool's row: its size, use and free addresses:\n{}",
        out.stdout
    );
    assert!(
        lines_with(&out, &["| Block "]).is_empty(),
        "blocks only with --show-blocks:\n{}",
        out.stdout
    );
    let out = run(&list, &["show", "--show-blocks"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(
        lines_with(
            &out,
            &[
                "| Block ",
                block.cidr(),
                " 64 |",
                " 2 (3%) |",
                " 62 (97%) |"
            ]
        )
        .len(),
        1,
        "the block and its use:\n{}",
        out.stdout
    );

    let ip = first.to_string();
    let out = run(&list, &["show", "--ip", &ip]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stdout.starts_with(&format!(
            "IP {ip} is in use\nHandle ID: ipam-e2e.c1\nActive Owner Attributes:\n"
        )),
        "{}",
        out.stdout
    );
    for words in [
        &["  namespace: ns1"][..],
        &["  node: ", NODE],
        &["  pod: pod1"],
        &["  timestamp: "],
    ] {
        assert_eq!(
            lines_with(&out, words).len(),
            1,
            "{words:?} in:\n{}",
            out.stdout
        );
    }

    let free = "10.88.0.250";
    let out = run(&list, &["show", "--ip", free]);
    assert_eq!(out.exit, Some(0), "as calicoctl: {}", out.describe());
    assert_eq!(out.stdout, format!("{free} is not assigned\n"));
}

//! `calico-ipam show` in the shape of `calicoctl ipam show`, on every datastore: the use
//! table (go-pretty's bordered style; GROUPING, CIDR, IPS TOTAL, IPS IN USE, IPS RESERVED,
//! IPS FREE, with one `IP Pool` row per pool and, with `--show-blocks`, one `Block` row per
//! block), `--ip` (who holds an address, or that none does), `--show-borrowed` (addresses a
//! node took from a block affine to another node) and `--show-configuration` (the IPAM
//! configuration). Reserved addresses in the table: `calico_ipam_reservations`.

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{operator, Backend, IpamFixture, BLOCK_PREFIX, IPAM_CONFIG_KEY, NET};
use serde_json::{json, Value};

fn conf(fx: &IpamFixture, node: &str, pool: &str) -> Value {
    fx.conf("1.0.0", node, json!({"ipv4_pools": [pool]}))
}

fn del(fx: &IpamFixture, conf: &Value, id: &str) {
    let out = fx.call("DEL", conf, id, &[]);
    assert_eq!(out.exit, Some(0), "DEL {id}: {}", out.describe());
}

fn pod(namespace: &'static str, name: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("IgnoreUnknown", "1"),
    ]
}

fn show(conf: &Value, fx: &IpamFixture, args: &[&str]) -> Outcome {
    let list = fx.write_conflist(conf);
    let mut all = vec!["show"];
    all.extend_from_slice(args);
    let out = operator(&list, &all);
    assert_eq!(out.exit, Some(0), "show {args:?}: {}", out.describe());
    out
}

/// The cells of a go-pretty table, header first, after checking its rules: a `+---+` rule
/// above the header, below it and (when there are rows) below the last row.
fn table(out: &Outcome) -> Vec<Vec<String>> {
    let lines: Vec<&str> = out.stdout.lines().take_while(|l| !l.is_empty()).collect();
    let is_rule = |l: &str| l.starts_with("+-") && l.ends_with('+') && !l.contains(' ');
    assert!(lines.len() >= 3, "no table:\n{}", out.stdout);
    assert!(is_rule(lines[0]), "top rule:\n{}", out.stdout);
    assert!(is_rule(lines[2]), "rule under the header:\n{}", out.stdout);
    assert!(
        is_rule(lines[lines.len() - 1]),
        "bottom rule:\n{}",
        out.stdout
    );
    assert!(
        lines.iter().all(|l| l.len() == lines[0].len()),
        "ragged table:\n{}",
        out.stdout
    );
    lines
        .iter()
        .filter(|l| l.starts_with("| "))
        .map(|l| {
            let inner = &l[1..l.len() - 1];
            inner.split('|').map(|c| c.trim().to_string()).collect()
        })
        .collect()
}

fn cells(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

const USE_HEADER: [&str; 6] = [
    "GROUPING",
    "CIDR",
    "IPS TOTAL",
    "IPS IN USE",
    "IPS RESERVED",
    "IPS FREE",
];

fn show_counts_use_per_pool_and_per_block(backend: Backend) {
    const POOL: &str = "10.91.0.0/24";
    const EMPTY: &str = "10.92.0.0/24";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 26);
    fx.create_pool(EMPTY, 26);
    let conf = conf(&fx, "show-node-a", POOL);
    let ids = ["use-1", "use-2", "use-3"];
    for id in ids {
        fx.add(&conf, id, &[]);
    }
    let blocks = fx.blocks();
    assert_eq!(blocks.len(), 1, "one block for three addresses");
    let block = blocks[0].cidr().to_string();

    let rows = table(&show(&conf, &fx, &[]));
    let mut pools = rows[1..].to_vec();
    pools.sort();
    assert_eq!(rows[0], cells(&USE_HEADER));
    assert_eq!(
        pools,
        vec![
            cells(&["IP Pool", POOL, "256", "3 (1%)", "0 (0%)", "253 (99%)"]),
            cells(&["IP Pool", EMPTY, "256", "0 (0%)", "0 (0%)", "256 (100%)"]),
        ],
        "one row per pool, no block rows"
    );
    // The numbers are right-aligned, as calicoctl's.
    let out = show(&conf, &fx, &[]);
    assert!(
        out.stdout.contains("|       256 |"),
        "IPS TOTAL right-aligned:\n{}",
        out.stdout
    );

    let rows = table(&show(&conf, &fx, &["--show-blocks"]));
    assert_eq!(rows[0], cells(&USE_HEADER));
    let at = |cidr: &str| rows.iter().position(|r| r[1] == cidr).expect("row");
    assert_eq!(
        rows[at(&block)],
        cells(&["Block", &block, "64", "3 (5%)", "0 (0%)", "61 (95%)"])
    );
    assert_eq!(
        at(&block),
        at(POOL) + 1,
        "the block under its pool:\n{rows:?}"
    );
    assert_eq!(rows.len(), 4, "header, two pools, one block: {rows:?}");

    for id in ids {
        del(&fx, &conf, id);
    }
    let rows = table(&show(&conf, &fx, &[]));
    assert!(
        rows.contains(&cells(&[
            "IP Pool",
            POOL,
            "256",
            "0 (0%)",
            "0 (0%)",
            "256 (100%)"
        ])),
        "{rows:?}"
    );
}

fn show_ip_names_the_holder_and_its_attributes(backend: Backend) {
    const POOL: &str = "10.93.0.0/24";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 26);
    let conf = conf(&fx, "show-node-ip", POOL);
    let ip = fx
        .add(&conf, "holder-1", &pod("show-ns", "show-pod"))
        .to_string();

    let out = show(&conf, &fx, &["--ip", &ip]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", out.stdout);
    assert_eq!(lines[0], format!("IP {ip} is in use"));
    assert_eq!(lines[1], format!("Handle ID: {NET}.holder-1"));
    assert_eq!(lines[2], "Active Owner Attributes:");
    assert_eq!(lines[3], "  namespace: show-ns");
    assert_eq!(lines[4], "  node: show-node-ip");
    assert_eq!(lines[5], "  pod: show-pod");
    assert!(lines[6].starts_with("  timestamp: 20"), "{}", out.stdout);

    // Not assigned is an answer, not a failure: calicoctl exits 0.
    let free = "10.93.0.200";
    let out = show(&conf, &fx, &["--ip", free]);
    assert_eq!(out.stdout, format!("{free} is not assigned\n"));
    // Nor is an address no block covers.
    let out = show(&conf, &fx, &["--ip", "10.250.0.1"]);
    assert_eq!(out.stdout, "10.250.0.1 is not assigned\n");

    del(&fx, &conf, "holder-1");
    let out = show(&conf, &fx, &["--ip", &ip]);
    assert_eq!(out.stdout, format!("{ip} is not assigned\n"));
}

fn show_borrowed_lists_what_a_node_took_from_another_nodes_block(backend: Backend) {
    // One block of four: node B finds no block to claim and borrows from node A's.
    const POOL: &str = "10.94.0.0/30";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 30);
    let conf_a = conf(&fx, "lender-a", POOL);
    let conf_b = conf(&fx, "borrower-b", POOL);
    fx.add(&conf_a, "own-1", &pod("ns-a", "pod-a"));
    let header = cells(&[
        "IP",
        "BORROWING-NODE",
        "BLOCK",
        "BLOCK OWNER",
        "TYPE",
        "ALLOCATED-TO",
    ]);

    let out = show(&conf_a, &fx, &["--show-borrowed"]);
    assert_eq!(table(&out), vec![header.clone()], "nothing borrowed yet");
    assert!(!out.stdout.contains("Note:"), "{}", out.stdout);

    let b = fx
        .add(&conf_b, "borrow-1", &pod("ns-b", "pod-b"))
        .to_string();
    let blocks = fx.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].affinity(), Some("host:lender-a"));
    let out = show(&conf_a, &fx, &["--show-borrowed"]);
    assert_eq!(
        table(&out),
        vec![
            header.clone(),
            cells(&[&b, "borrower-b", POOL, "lender-a", "pod", "ns-b/pod-b"]),
        ],
        "only node B's address, not node A's own:\n{}",
        out.stdout
    );
    // Any node's conflist gives the same cluster-wide view.
    assert_eq!(
        table(&show(&conf_b, &fx, &["--show-borrowed"])),
        table(&out)
    );

    del(&fx, &conf_b, "borrow-1");
    del(&fx, &conf_a, "own-1");
    let out = show(&conf_a, &fx, &["--show-borrowed"]);
    assert_eq!(table(&out), vec![header]);
}

/// Allocations of old writers have no `node` attribute: calicoctl cannot tell whether they
/// are borrowed, and says how many there are after the table.
fn show_borrowed_counts_allocations_without_a_node(backend: Backend) {
    const POOL: &str = "10.96.0.0/24";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 26);
    let conf = conf(&fx, "show-node-old", POOL);
    fx.add(&conf, "old-1", &pod("ns-old", "pod-old"));
    fx.add(&conf, "old-2", &pod("ns-old", "pod-old-2"));
    let snapshot = fx.snapshot();
    let (key, text) = snapshot
        .iter()
        .find(|(k, _)| k.starts_with(BLOCK_PREFIX))
        .expect("a block");
    let mut block: Value = serde_json::from_str(text).expect("block JSON");
    for attr in block["attributes"].as_array_mut().expect("attributes") {
        if let Some(secondary) = attr["secondary"].as_object_mut() {
            secondary.remove("node");
        }
    }
    fx.put(key, &block.to_string());

    let out = show(&conf, &fx, &["--show-borrowed"]);
    assert_eq!(table(&out).len(), 1, "none borrowed:\n{}", out.stdout);
    assert!(
        out.stdout.ends_with(
            "\n\nNote: found 2 IP allocations without an explicit node association. \
             Unable to determine if they are borrowed.\n"
        ),
        "{}",
        out.stdout
    );

    del(&fx, &conf, "old-1");
    del(&fx, &conf, "old-2");
    let out = show(&conf, &fx, &["--show-borrowed"]);
    assert!(!out.stdout.contains("Note:"), "{}", out.stdout);
}

fn show_configuration_prints_the_ipam_config(backend: Backend) {
    const POOL: &str = "10.95.0.0/24";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 26);
    let conf = conf(&fx, "show-node-config", POOL);
    let header = cells(&["PROPERTY", "VALUE"]);

    // No IPAMConfig: libcalico-go's defaults.
    assert_eq!(
        table(&show(&conf, &fx, &["--show-configuration"])),
        vec![
            header.clone(),
            cells(&["StrictAffinity", "false"]),
            cells(&["AutoAllocateBlocks", "true"]),
            cells(&["MaxBlocksPerHost", "0"]),
        ]
    );

    fx.put(
        IPAM_CONFIG_KEY,
        &json!({"strict_affinity": true, "auto_allocate_blocks": false, "maxBlocksPerHost": 7})
            .to_string(),
    );
    assert_eq!(
        table(&show(&conf, &fx, &["--show-configuration"])),
        vec![
            header.clone(),
            cells(&["StrictAffinity", "true"]),
            cells(&["AutoAllocateBlocks", "false"]),
            cells(&["MaxBlocksPerHost", "7"]),
        ]
    );

    fx.set_ipam_config(false);
    assert_eq!(
        table(&show(&conf, &fx, &["--show-configuration"])),
        vec![
            header,
            cells(&["StrictAffinity", "false"]),
            cells(&["AutoAllocateBlocks", "true"]),
            cells(&["MaxBlocksPerHost", "0"]),
        ]
    );
}

cni_tests::on_every_datastore!(
    show_counts_use_per_pool_and_per_block,
    show_ip_names_the_holder_and_its_attributes,
    show_borrowed_lists_what_a_node_took_from_another_nodes_block,
    show_borrowed_counts_allocations_without_a_node,
    show_configuration_prints_the_ipam_config,
);

//! `calico-ipam configure`, as `calicoctl ipam configure`: `--strictaffinity` and
//! `--max-blocks-per-host` change the cluster's IPAMConfig (`/calico/ipam/v2/config`, on
//! Kubernetes the IPAMConfig `default`) field by field, keep what they were not asked to
//! change, and the plugin obeys the result at once. Bad values change nothing.

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{operator, Backend, IpamFixture, IPAM_CONFIG_KEY};
use cni_tests::on_every_datastore;
use serde_json::{json, Value};

const POOL: &str = "10.81.0.0/30";

fn conf(fx: &IpamFixture, node: &str) -> Value {
    fx.conf("1.0.0", node, json!({"ipv4_pools": [POOL]}))
}

fn configure(fx: &IpamFixture, args: &[&str]) -> Outcome {
    let list = fx.write_conflist(&conf(fx, "node-a"));
    let mut all = vec!["configure"];
    all.extend_from_slice(args);
    operator(&list, &all)
}

/// The IPAMConfig as Calico's etcd layout spells it, whatever the datastore.
fn stored(fx: &IpamFixture) -> Option<Value> {
    fx.get(IPAM_CONFIG_KEY)
}

/// On Kubernetes, the custom resource itself (the fake API server has checked it against
/// the CRD's schema on write).
fn crd_spec(fx: &IpamFixture) -> Option<Value> {
    (fx.backend == Backend::Kubernetes).then(|| {
        let configs = fx.api().list("ipamconfigs");
        assert_eq!(configs.len(), 1, "{configs:?}");
        assert_eq!(configs[0]["metadata"]["name"], "default");
        configs[0]["spec"].clone()
    })
}

fn strict_affinity_set_by_the_operator_stops_borrowing(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 30);
    let out = fx.call("ADD", &conf(&fx, "node-a"), "a-1", &[]);
    assert_eq!(
        out.exit,
        Some(0),
        "node A takes the only block: {}",
        out.describe()
    );

    let out = configure(&fx, &["--strictaffinity=true"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("Successfully set StrictAffinity to: true"),
        "{}",
        out.stdout
    );
    let config = stored(&fx).expect("an IPAMConfig");
    assert_eq!(config["strict_affinity"], true, "{config}");
    assert_eq!(config["auto_allocate_blocks"], true, "kept: {config}");
    if let Some(spec) = crd_spec(&fx) {
        assert_eq!(spec["strictAffinity"], true, "{spec}");
        assert_eq!(spec["autoAllocateBlocks"], true, "{spec}");
    }

    // Node B has no block of its own and may not borrow node A's.
    let out = fx.call("ADD", &conf(&fx, "node-b"), "b-1", &[]);
    assert_eq!(out.code(), Some(105), "{}", out.describe());

    // And back: borrowing is allowed again.
    let out = configure(&fx, &["--strictaffinity", "false"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(stored(&fx).expect("config")["strict_affinity"], Value::Null);
    let out = fx.call("ADD", &conf(&fx, "node-b"), "b-2", &[]);
    assert_eq!(out.exit, Some(0), "borrows now: {}", out.describe());
}

fn one_setting_changes_and_the_others_stay(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 30);
    fx.set_ipam_config(true);

    let out = configure(&fx, &["--max-blocks-per-host=3"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("Successfully set MaxBlocksPerHost to: 3")
            && !out.stdout.contains("StrictAffinity"),
        "{}",
        out.stdout
    );
    let config = stored(&fx).expect("config");
    assert_eq!(config["maxBlocksPerHost"], 3, "{config}");
    assert_eq!(config["strict_affinity"], true, "untouched: {config}");
    if let Some(spec) = crd_spec(&fx) {
        assert_eq!(spec["maxBlocksPerHost"], 3, "{spec}");
        assert_eq!(spec["strictAffinity"], true, "{spec}");
    }

    // Both at once.
    let out = configure(
        &fx,
        &["--strictaffinity=False", "--max-blocks-per-host", "7"],
    );
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let config = stored(&fx).expect("config");
    assert_eq!(config["maxBlocksPerHost"], 7, "{config}");
    assert_eq!(
        config["strict_affinity"],
        Value::Null,
        "false is omitted: {config}"
    );
}

fn a_first_configure_creates_the_config(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 30);
    assert_eq!(stored(&fx), None, "no IPAMConfig before any allocation");
    let out = configure(&fx, &["--strictaffinity=t"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let config = stored(&fx).expect("created");
    assert_eq!(config["strict_affinity"], true, "{config}");
    assert_eq!(
        config["auto_allocate_blocks"], true,
        "Calico's default: {config}"
    );
}

fn bad_values_and_no_option_change_nothing(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 30);
    fx.set_ipam_config(false);
    fx.register_node("node-a");
    let before = fx.snapshot();
    for args in [
        &["--strictaffinity=maybe"][..],
        &["--max-blocks-per-host=-1"],
        &["--max-blocks-per-host=many"],
        &[],
    ] {
        let out = configure(&fx, args);
        assert_ne!(out.exit, Some(0), "{args:?}: {}", out.describe());
        assert!(!out.stderr.trim().is_empty(), "{args:?} says why");
        assert_eq!(fx.snapshot(), before, "{args:?} wrote something");
    }
}

on_every_datastore!(
    strict_affinity_set_by_the_operator_stops_borrowing,
    one_setting_changes_and_the_others_stay,
    a_first_configure_creates_the_config,
    bad_values_and_no_option_change_nothing,
);

//! Our `bandwidth` against Debian's reference binary (1.1.1), same input in twin node
//! namespaces: the same result, the same qdiscs (`tc -j qdisc show`), the same ingress
//! filter and actions (`tc -j filter show`), the same IFB device (name, MTU, queue length,
//! flags); each binary's CHECK accepts what the other set up; DEL removes the IFB in both.
//! Needs root.

use std::path::PathBuf;

use cni_tests::bandwidth::{
    all_qdiscs, direct_config, expected_ifb_name, ifb_names, ingress_filters, limits, link_details,
    VethPod, NET,
};
use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use serde_json::{json, Value};

const VERSION: &str = "1.0.0";
const HOST_VETH: &str = "vethbw0";

fn ours() -> PathBuf {
    plugin_dir().join("bandwidth")
}

fn reference() -> PathBuf {
    reference_plugin_dir().join("bandwidth")
}

/// A result with the IFB's random MAC blanked and the empty `dns` the 1.1.1 binary prints
/// dropped.
fn normalised_result(stdout: &[u8]) -> Value {
    let mut result: Value = serde_json::from_slice(stdout).expect("result JSON");
    if let Some(list) = result["interfaces"].as_array_mut() {
        for iface in list
            .iter_mut()
            .filter(|i| i["name"].as_str().is_some_and(|n| n.starts_with("bwp")))
        {
            assert!(
                iface["mac"].as_str().is_some_and(|m| m.len() == 17),
                "{iface}"
            );
            iface["mac"] = json!("<mac>");
        }
    }
    if result["dns"] == json!({}) {
        result.as_object_mut().map(|o| o.remove("dns"));
    }
    result
}

/// What both binaries left in their node.
fn snapshot(pod: &VethPod, container_id: &str) -> Value {
    let ifb = expected_ifb_name(NET, container_id);
    json!({
        "qdiscs": all_qdiscs(&pod.node),
        "filters": ingress_filters(&pod.node, &pod.host_veth),
        "ifb": link_details(&pod.node, &ifb),
        "ifbs": ifb_names(&pod.node),
    })
}

/// ADD with both binaries, compare everything, cross-CHECK, DEL twice.
fn same_as_reference(extra: Value) {
    same_as_reference_in(VERSION, extra)
}

fn same_as_reference_in(version: &str, extra: Value) {
    let container_id = "diff-container-1";
    let ref_pod = VethPod::new(HOST_VETH);
    let our_pod = VethPod::new(HOST_VETH);
    let conf =
        |pod: &VethPod| direct_config(version, extra.clone(), Some(pod.prev_result(version)));

    let ref_add = ref_pod.call(&reference(), "ADD", container_id, &conf(&ref_pod));
    let our_add = our_pod.call(&ours(), "ADD", container_id, &conf(&our_pod));
    assert!(ref_add.success(), "reference ADD: {}", ref_add.stdout_str());
    assert!(
        our_add.success(),
        "our ADD: {} {}",
        our_add.stdout_str(),
        our_add.stderr_str()
    );
    // The results name each pod's own sandbox; compare them with that replaced.
    let rename = |v: Value, pod: &VethPod| {
        serde_json::from_str::<Value>(&v.to_string().replace(&pod.pod.path_str(), "<netns>"))
            .expect("json")
    };
    assert_eq!(
        rename(normalised_result(&our_add.stdout), &our_pod),
        rename(normalised_result(&ref_add.stdout), &ref_pod),
        "ADD result, config {extra}"
    );
    let ours_now = snapshot(&our_pod, container_id);
    assert!(
        ours_now["qdiscs"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["kind"] == "tbf")),
        "a TBF somewhere: {ours_now}"
    );
    assert_eq!(
        ours_now,
        snapshot(&ref_pod, container_id),
        "tc objects and IFB, config {extra}"
    );

    // Drop-in both ways: each CHECK accepts the other's shaping (CHECK came with 0.4.0).
    let check_allowed = !version.starts_with("0.3.");
    let with_result = |add: &[u8]| {
        direct_config(
            version,
            extra.clone(),
            Some(serde_json::from_slice(add).expect("json")),
        )
    };
    if check_allowed {
        let check = our_pod.call(
            &reference(),
            "CHECK",
            container_id,
            &with_result(&our_add.stdout),
        );
        assert!(
            check.success(),
            "reference CHECK of our shaping: {}",
            check.stdout_str()
        );
        let check = ref_pod.call(
            &ours(),
            "CHECK",
            container_id,
            &with_result(&ref_add.stdout),
        );
        assert!(
            check.success(),
            "our CHECK of the reference's shaping: {}",
            check.stdout_str()
        );
    }

    for (pod, binary) in [(&ref_pod, reference()), (&our_pod, ours())] {
        for round in ["first", "second"] {
            let del = pod.call(&binary, "DEL", container_id, &conf(pod));
            assert!(
                del.success(),
                "{round} DEL by {}: {}",
                binary.display(),
                del.stdout_str()
            );
        }
        assert!(
            ifb_names(&pod.node).is_empty(),
            "DEL by {} leaves no IFB",
            binary.display()
        );
    }
}

#[test]
fn both_directions_from_static_config() {
    same_as_reference(limits(10_000_000, 1_000_000, 20_000_000, 800_000));
}

#[test]
fn ingress_only_from_the_capability() {
    same_as_reference(json!({"runtimeConfig": {"bandwidth": limits(50_000_000, 5_000_000, 0, 0)}}));
}

#[test]
fn egress_only_from_the_capability() {
    same_as_reference(json!({"runtimeConfig": {"bandwidth": limits(0, 0, 1_000_000, 100_000)}}));
}

#[test]
fn static_config_wins_over_the_capability() {
    let mut extra = limits(8_000_000, 80_000, 0, 0);
    extra["runtimeConfig"] = json!({"bandwidth": limits(1_000_000, 10_000, 2_000_000, 20_000)});
    same_as_reference(extra);
}

#[test]
fn the_reference_test_vectors() {
    // ingress 8 bit/s burst 8 → 1 B/s limit 1; egress 16/8 → 2 B/s limit 1.
    same_as_reference(limits(8, 8, 16, 8));
}

#[test]
fn rates_beyond_32_bits_of_bytes() {
    // 40 Gbit/s = 5e9 B/s: the kernel takes it from TCA_TBF_RATE64.
    same_as_reference(limits(
        40_000_000_000,
        400_000_000,
        40_000_000_000,
        400_000_000,
    ));
}

#[test]
fn the_burst_container_runtimes_pass_with_annotations() {
    // containerd: rate from the annotation, burst 2^32−1 bits; the reference's buffer
    // arithmetic wraps around 32 bits here, and ours must wrap the same way.
    let burst = u64::from(u32::MAX);
    same_as_reference(limits(10_000_000, burst, 100_000_000, burst));
}

#[test]
fn results_in_every_version_the_reference_speaks() {
    for version in ["0.3.0", "0.3.1", "0.4.0"] {
        same_as_reference_in(version, limits(10_000_000, 1_000_000, 20_000_000, 800_000));
    }
}

#[test]
fn the_same_config_errors() {
    for extra in [
        limits(0, 123, 0, 0),
        limits(5, 0, 0, 0),
        limits(0, 0, 1000, 4 * 1024 * 1024 * 1024 * 8),
    ] {
        let ref_pod = VethPod::new(HOST_VETH);
        let our_pod = VethPod::new(HOST_VETH);
        let r = ref_pod.call(
            &reference(),
            "ADD",
            "c",
            &direct_config(VERSION, extra.clone(), Some(ref_pod.prev_result(VERSION))),
        );
        let o = our_pod.call(
            &ours(),
            "ADD",
            "c",
            &direct_config(VERSION, extra.clone(), Some(our_pod.prev_result(VERSION))),
        );
        assert!(!r.success() && !o.success(), "{extra}");
        let msg =
            |out: &[u8]| serde_json::from_slice::<Value>(out).expect("error JSON")["msg"].clone();
        assert_eq!(msg(&o.stdout), msg(&r.stdout), "{extra}");
        assert_eq!(
            snapshot(&our_pod, "c"),
            snapshot(&ref_pod, "c"),
            "nothing created: {extra}"
        );
    }
}

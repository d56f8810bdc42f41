//! The `calico-ipam` binary as a runtime (or the calico plugin) calls it, on both of its
//! datastores (`local` files and a real etcd): ADD hands out block-prefixed addresses and
//! records handle, attributes and affinity as Calico does (spec §6.1, §7.2, §9); DEL releases
//! by handle and by the legacy `<namespace>.<pod>` handle and is idempotent (§6.2); CHECK
//! tells an allocated container from a released one; `IP=` assigns exactly one address.
//! The datastore is read back raw, key by key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use cni_tests::fixtures::{plugin_dir, run_plugin};
use cni_tests::host_local::{normalize, Outcome};
use cni_tests::ipam::{allocations, contains, offset, Backend, Block, IpamFixture, NET};
use serde_json::{json, Value};

const NODE: &str = "node-a";
const POOL4: &str = "10.77.0.0/24";
const POOL6: &str = "fd00:77::/120";

/// A fresh store with the two pools: etcd needs them as IPPool resources; the `local`
/// store creates the pools its config names by itself.
fn fixture(backend: Backend) -> IpamFixture {
    let fx = IpamFixture::new(backend);
    if backend != Backend::Local {
        fx.create_pool(POOL4, 26);
        fx.create_pool(POOL6, 122);
    }
    fx
}

fn dual(fx: &IpamFixture, version: &str) -> Value {
    fx.conf(
        version,
        NODE,
        json!({"ipv4_pools": [POOL4], "ipv6_pools": [POOL6], "assign_ipv6": "true"}),
    )
}

fn v4_only(fx: &IpamFixture, version: &str) -> Value {
    fx.conf(version, NODE, json!({"ipv4_pools": [POOL4]}))
}

fn k8s(namespace: &'static str, pod: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", pod),
        ("K8S_POD_INFRA_CONTAINER_ID", "unused"),
    ]
}

/// A successful call: exit 0; returns the result (an empty `dns` dropped) or Null.
fn ok(out: &Outcome, what: &str) -> Value {
    assert_eq!(out.exit, Some(0), "{what}: {}", out.describe());
    out.json.clone().map(normalize).unwrap_or(Value::Null)
}

/// `ips[].address` of a result, in order.
fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .map(|ip| ip["address"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn ip_of(address: &str) -> IpAddr {
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} is not an address"))
}

fn prefix_of(address: &str) -> &str {
    address.split_once('/').map_or("", |(_, p)| p)
}

/// The block holding `ip`.
fn block_of(fx: &IpamFixture, ip: IpAddr) -> Block {
    fx.blocks()
        .into_iter()
        .find(|b| contains(b.cidr(), ip))
        .unwrap_or_else(|| panic!("no block holds {ip}"))
}

fn handle(container: &str) -> String {
    format!("{NET}.{container}")
}

/// Seconds since the epoch of Go's `time.Time.String()` in UTC:
/// `2025-05-01 10:20:30.123456789 +0000 UTC`.
fn parse_go_utc(text: &str) -> Option<i64> {
    let rest = text.strip_suffix(" +0000 UTC")?;
    let (date, time) = rest.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 || date.len() != 10 || hms.len() != 8 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let (y, m, day) = if d[1] <= 2 {
        (d[0] - 1, d[1], d[2])
    } else {
        (d[0], d[1], d[2])
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The allocation of `ip` belongs to `container` with exactly `secondary` (plus a
/// `timestamp` of about now).
fn assert_attribute(fx: &IpamFixture, ip: IpAddr, container: &str, secondary: &[(&str, &str)]) {
    let block = block_of(fx, ip);
    let ordinal = block.ordinal_of(ip).expect("in block");
    let attr = block
        .attribute_of(ordinal)
        .unwrap_or_else(|| panic!("{ip} is not allocated in {}", block.key));
    assert_eq!(attr["handle_id"], handle(container), "{ip}: {attr}");
    let mut got: BTreeMap<String, String> =
        serde_json::from_value(attr["secondary"].clone()).expect("secondary is a string map");
    let stamp = got.remove("timestamp").unwrap_or_default();
    let at = parse_go_utc(&stamp)
        .unwrap_or_else(|| panic!("{ip}: timestamp {stamp:?} is not Go's UTC time text"));
    assert!(
        (now_secs() - at).abs() < 300,
        "{ip}: timestamp {stamp:?} is not now"
    );
    let want: BTreeMap<String, String> = secondary
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want, "{ip}: attributes");
}

fn add_records_handle_attributes_and_affinity(backend: Backend) {
    let fx = fixture(backend);
    let conf = dual(&fx, "1.0.0");
    let result = ok(
        &fx.call("ADD", &conf, "c1", &k8s("ns1", "pod1")),
        "ADD pod1",
    );
    let ips = addresses(&result);
    assert_eq!(ips.len(), 2, "one v4 and one v6: {result}");
    let (v4, v6) = (ip_of(&ips[0]), ip_of(&ips[1]));
    assert!(
        contains(POOL4, v4) && v4.is_ipv4(),
        "v4 first, from the pool: {result}"
    );
    assert!(
        contains(POOL6, v6) && v6.is_ipv6(),
        "then v6 from its pool: {result}"
    );
    assert_eq!(prefix_of(&ips[0]), "26", "the block's prefix: {result}");
    assert_eq!(prefix_of(&ips[1]), "122", "the block's prefix: {result}");
    assert_eq!(
        result,
        json!({"cniVersion": "1.0.0", "ips": [{"address": ips[0]}, {"address": ips[1]}]}),
        "no gateway, no interface, no routes"
    );

    let (b4, b6) = (block_of(&fx, v4), block_of(&fx, v6));
    let h = fx
        .handles()
        .remove(&handle("c1"))
        .unwrap_or_else(|| panic!("no handle {}: {:?}", handle("c1"), fx.snapshot().keys()));
    assert_eq!(
        h["block"],
        json!({b4.cidr(): 1, b6.cidr(): 1}),
        "handle counts: {h}"
    );
    assert_eq!(h["deleted"], json!(false));
    for (b, family) in [(&b4, "ipv4"), (&b6, "ipv6")] {
        assert_eq!(b.affinity(), Some("host:node-a"), "{}", b.key);
        let key = format!(
            "/calico/ipam/v2/host/{NODE}/{family}/block/{}",
            b.cidr().replace('/', "-")
        );
        let affinity = fx
            .get(&key)
            .unwrap_or_else(|| panic!("no affinity {key}: {:?}", fx.snapshot().keys()));
        assert_eq!(affinity["state"], "confirmed", "{key}: {affinity}");
    }
    let pod = [("node", NODE), ("namespace", "ns1"), ("pod", "pod1")];
    assert_attribute(&fx, v4, "c1", &pod);
    assert_attribute(&fx, v6, "c1", &pod);

    // The next container: the next address of the same blocks; no pod attributes outside
    // Kubernetes.
    let result = ok(&fx.call("ADD", &conf, "c2", &[]), "ADD c2");
    let next = addresses(&result);
    assert_eq!(
        next,
        vec![
            format!("{}/26", offset(v4, 1)),
            format!("{}/122", offset(v6, 1))
        ],
        "the next free address of this node's blocks"
    );
    assert_attribute(&fx, offset(v4, 1), "c2", &[("node", NODE)]);
    assert_attribute(&fx, offset(v6, 1), "c2", &[("node", NODE)]);
    let held = allocations(&fx.snapshot()).expect("consistent IPAM state");
    assert_eq!(held.len(), 4, "{held:?}");
}

fn del_releases_and_is_idempotent(backend: Backend) {
    let fx = fixture(backend);
    let conf = dual(&fx, "1.0.0");
    let first = addresses(&ok(&fx.call("ADD", &conf, "c1", &[]), "ADD c1"));
    let second = addresses(&ok(&fx.call("ADD", &conf, "c2", &[]), "ADD c2"));
    let blocks_before: Vec<String> = fx.blocks().iter().map(|b| b.key.clone()).collect();

    ok(&fx.call("DEL", &conf, "c1", &[]), "DEL c1");
    assert!(!fx.handles().contains_key(&handle("c1")), "handle c1 gone");
    for address in &first {
        let ip = ip_of(address);
        let block = block_of(&fx, ip);
        let ordinal = block.ordinal_of(ip).expect("in block");
        assert!(
            block.attribute_of(ordinal).is_none(),
            "{ip} still allocated"
        );
        assert_eq!(
            block.unallocated().last(),
            Some(&ordinal),
            "a released ordinal goes to the tail of unallocated: {}",
            block.value
        );
        assert!(
            block.value["sequenceNumberForAllocation"]
                .get(ordinal.to_string())
                .is_none(),
            "{ip}: the allocation's sequence number stays: {}",
            block.value
        );
        assert!(
            !block.value["attributes"]
                .to_string()
                .contains(&handle("c1")),
            "an attribute still names the released handle: {}",
            block.value
        );
        assert_eq!(block.affinity(), Some("host:node-a"), "affinity kept");
    }
    for address in &second {
        assert_attribute(&fx, ip_of(address), "c2", &[("node", NODE)]);
    }
    allocations(&fx.snapshot()).expect("consistent IPAM state");

    // Again, and for a container never added: success, and nothing written.
    let before = fx.snapshot();
    ok(&fx.call("DEL", &conf, "c1", &[]), "second DEL c1");
    ok(
        &fx.call("DEL", &conf, "never-added", &[]),
        "DEL never-added",
    );
    ok(
        &fx.call("DEL", &conf, "never-added-pod", &k8s("ns9", "ghost")),
        "DEL of a pod never added",
    );
    assert_eq!(fx.snapshot(), before, "an idempotent DEL changes nothing");

    ok(&fx.call("DEL", &conf, "c2", &[]), "DEL c2");
    assert_eq!(fx.handles(), BTreeMap::new(), "no handle left");
    let blocks = fx.blocks();
    assert_eq!(
        blocks.iter().map(|b| b.key.clone()).collect::<Vec<_>>(),
        blocks_before,
        "the node's affine blocks are kept"
    );
    for b in &blocks {
        assert!(b.all_free(), "every address free again: {}", b.value);
        assert_eq!(b.affinity(), Some("host:node-a"), "{}", b.key);
    }
}

fn del_releases_the_legacy_pod_handle(backend: Backend) {
    let fx = fixture(backend);
    // An allocation an older Calico made under `<namespace>.<pod>`: a network named `ns1`
    // and container `pod1` make exactly that handle.
    let mut legacy = v4_only(&fx, "1.0.0");
    legacy["name"] = json!("ns1");
    let old = addresses(&ok(&fx.call("ADD", &legacy, "pod1", &[]), "legacy ADD"));
    let other = addresses(&ok(&fx.call("ADD", &legacy, "pod2", &[]), "legacy ADD"));
    assert!(fx.handles().contains_key("ns1.pod1"), "{:?}", fx.handles());

    let conf = v4_only(&fx, "1.0.0");
    ok(
        &fx.call("DEL", &conf, "sandbox-2", &k8s("ns1", "pod1")),
        "DEL of pod1's new sandbox",
    );
    let handles = fx.handles();
    assert!(
        !handles.contains_key("ns1.pod1"),
        "DEL releases the legacy handle <namespace>.<pod>: {handles:?}"
    );
    assert!(
        handles.contains_key("ns1.pod2"),
        "another pod's handle stays"
    );
    let held = allocations(&fx.snapshot()).expect("consistent IPAM state");
    assert!(!held.contains_key(&ip_of(&old[0])), "{held:?}");
    assert_eq!(
        held.get(&ip_of(&other[0])).map(String::as_str),
        Some("ns1.pod2")
    );
}

fn check_tells_allocated_from_released(backend: Backend) {
    let fx = fixture(backend);
    for version in ["0.4.0", "1.0.0"] {
        let conf = dual(&fx, version);
        let id = format!("check-{version}");
        ok(&fx.call("ADD", &conf, &id, &[]), "ADD");
        ok(&fx.call("CHECK", &conf, &id, &[]), "CHECK after ADD");
        ok(&fx.call("DEL", &conf, &id, &[]), "DEL");
        let before = fx.snapshot();
        let msg = fx
            .call("CHECK", &conf, &id, &[])
            .refused(109, "CHECK after DEL");
        assert!(msg.contains(&handle(&id)), "names the handle: {msg}");
        assert_eq!(fx.snapshot(), before, "CHECK writes nothing");
        fx.call("CHECK", &conf, "never-added", &[])
            .refused(109, "CHECK of a container never added");
    }
}

fn ip_arg_assigns_exactly_that_address(backend: Backend) {
    // A fresh store: the first thing this node ever does is a static address.
    let fx = fixture(backend);
    let conf = v4_only(&fx, "1.0.0");
    let wanted: IpAddr = "10.77.0.200".parse().expect("ip");
    let result = ok(
        &fx.call("ADD", &conf, "static-1", &[("IP", "10.77.0.200")]),
        "ADD IP=10.77.0.200",
    );
    assert_eq!(
        result,
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.200/32"}]})
    );
    assert_attribute(&fx, wanted, "static-1", &[("node", NODE)]);
    let block = block_of(&fx, wanted);
    assert_eq!(
        block.cidr(),
        "10.77.0.192/26",
        "the pool's block holding it"
    );
    assert_eq!(
        fx.handles()[&handle("static-1")]["block"],
        json!({"10.77.0.192/26": 1})
    );

    // The same address for someone else: a conflict, and nothing changes.
    let before = fx.snapshot();
    let msg = fx
        .call("ADD", &conf, "static-2", &[("IP", "10.77.0.200")])
        .refused(110, "the same IP twice");
    assert!(msg.contains("10.77.0.200"), "names the address: {msg}");
    assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");

    // Automatic assignment never hands it out.
    let auto = addresses(&ok(&fx.call("ADD", &conf, "auto", &[]), "ADD auto"));
    assert_ne!(ip_of(&auto[0]), wanted);

    // Free again after DEL: the next static request gets it.
    ok(&fx.call("DEL", &conf, "static-1", &[]), "DEL static-1");
    let result = ok(
        &fx.call("ADD", &conf, "static-2", &[("IP", "10.77.0.200")]),
        "the same IP after DEL",
    );
    assert_eq!(addresses(&result), ["10.77.0.200/32"]);
    assert_attribute(&fx, wanted, "static-2", &[("node", NODE)]);

    // v6 too.
    let conf6 = dual(&fx, "1.0.0");
    let result = ok(
        &fx.call("ADD", &conf6, "static-6", &[("IP", "fd00:77::99")]),
        "ADD IP=fd00:77::99",
    );
    assert_eq!(addresses(&result), ["fd00:77::99/128"]);
    assert_attribute(
        &fx,
        "fd00:77::99".parse().expect("ip"),
        "static-6",
        &[("node", NODE)],
    );

    // Outside every pool: refused, nothing written.
    let before = fx.snapshot();
    let out = fx.call("ADD", &conf, "static-x", &[("IP", "192.0.2.1")]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(
        out.msg()
            .unwrap_or_default()
            .contains("not in a configured pool"),
        "{}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before);
    allocations(&fx.snapshot()).expect("consistent IPAM state");
}

fn results_follow_the_config_version(backend: Backend) {
    let fx = fixture(backend);
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let conf = dual(&fx, version);
        let result = ok(&fx.call("ADD", &conf, &format!("v{i}"), &[]), version);
        let ips = addresses(&result);
        assert_eq!(ips.len(), 2, "{version}: {result}");
        let expected = if version == "1.0.0" {
            json!({"cniVersion": version,
                   "ips": [{"address": ips[0]}, {"address": ips[1]}]})
        } else {
            json!({"cniVersion": version,
                   "ips": [{"version": "4", "address": ips[0]},
                           {"version": "6", "address": ips[1]}]})
        };
        assert_eq!(result, expected, "{version}");
    }
}

fn put_pool(fx: &IpamFixture, name: &str, cidr: &str, selector: &str) {
    fx.put(
        &format!("/calico/resources/v3/projectcalico.org/ippools/{name}"),
        &json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": name},
                "spec": {"cidr": cidr, "blockSize": 26, "nodeSelector": selector}})
        .to_string(),
    );
}

/// Pools by name; without a request, only pools whose nodeSelector selects the node
/// (this node has no labels); a requested pool regardless of its selector (spec §8.1).
fn pool_selection(backend: Backend) {
    let fx = IpamFixture::new(backend);
    put_pool(&fx, "blue", "10.91.0.0/24", "zone == 'east'");
    let auto = fx.conf("1.0.0", NODE, json!({}));
    let out = fx.call("ADD", &auto, "none-selects", &[]);
    assert_eq!(
        out.code(),
        Some(7),
        "no pool selects the node: {}",
        out.describe()
    );
    assert!(
        out.msg().unwrap_or_default().contains(NODE),
        "names the node: {}",
        out.describe()
    );

    put_pool(&fx, "green", "10.92.0.0/24", "all()");
    let result = ok(&fx.call("ADD", &auto, "auto", &[]), "ADD without pools");
    let ip = ip_of(&addresses(&result)[0]);
    assert!(
        contains("10.92.0.0/24", ip),
        "the pool selecting the node: {ip}"
    );

    let named = fx.conf("1.0.0", NODE, json!({"ipv4_pools": ["blue"]}));
    let result = ok(&fx.call("ADD", &named, "named", &[]), "ADD from pool blue");
    let ip = ip_of(&addresses(&result)[0]);
    assert!(
        contains("10.91.0.0/24", ip),
        "a requested pool, whatever its selector: {ip}"
    );
    allocations(&fx.snapshot()).expect("consistent IPAM state");
}

/// DEL never needs the container's namespace: the runtime may have removed it already.
fn del_needs_no_netns(backend: Backend) {
    let fx = fixture(backend);
    let conf = v4_only(&fx, "1.0.0");
    ok(&fx.call("ADD", &conf, "gone-ns", &[]), "ADD");
    let bin = plugin_dir();
    let path = bin.display().to_string();
    let out = run_plugin(
        &bin.join("calico-ipam"),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "gone-ns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &path),
        ],
        &serde_json::to_vec(&conf).expect("encode"),
    )
    .expect("run calico-ipam");
    assert_eq!(out.code, Some(0), "{}", out.stdout_str());
    assert_eq!(fx.handles(), BTreeMap::new(), "released");
}

cni_tests::on_every_datastore!(
    add_records_handle_attributes_and_affinity,
    del_releases_and_is_idempotent,
    del_releases_the_legacy_pod_handle,
    check_tells_allocated_from_released,
    ip_arg_assigns_exactly_that_address,
    results_follow_the_config_version,
    pool_selection,
    del_needs_no_netns,
);

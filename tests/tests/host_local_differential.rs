//! Our host-local against Debian's reference binary (containernetworking-plugins 1.1.1):
//! the same ADD/DEL/CHECK sequence on the same config, one data directory per binary, must
//! give the same exit status, the same result (as JSON, `"dns": {}` counting as absent),
//! the same error message (codes differ by design: the reference prints 999), and the same
//! store files (names and contents) after every step. Then both binaries on one store, as
//! when a node switches plugin: each continues where the other left off. Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use cni_tests::host_local::{
    conf, files_only, ranges, reservation, seed, show, snapshot, store, HostLocal, Outcome,
    REFERENCE_VERSIONS,
};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

/// One binary and its own data directory.
struct Side {
    hl: HostLocal,
    data: PathBuf,
}

struct Pair {
    dir: TestDir,
    _netns: TestNetns,
    ours: Side,
    reference: Side,
    version: &'static str,
    /// The `ipam` section without `dataDir`, and top-level extras (`args`, `runtimeConfig`).
    ipam: Value,
    extra: Value,
}

/// Whether the store may differ on this step in `last_reserved_ip.*`: on an ADD that fails
/// after a reservation was made (an unconsumed requested IP), the reference 1.1.1 keeps the
/// moved `last_reserved_ip`, while ours writes nothing on failure. The reservation files
/// must still match, and ours must be unchanged.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    Same,
    SameButReferenceLastReserved,
}

impl Pair {
    fn new(version: &'static str, ipam: Value) -> Pair {
        let dir = TestDir::new().expect("temp dir");
        let netns = TestNetns::new("hld").expect("netns");
        let side = |bin: PathBuf, name: &str| Side {
            hl: HostLocal::in_dir(&bin, netns.path_str()),
            data: dir.path().join(name),
        };
        let ours = side(plugin_dir(), "ours");
        let reference = side(reference_plugin_dir(), "reference");
        Pair {
            dir,
            _netns: netns,
            ours,
            reference,
            version,
            ipam,
            extra: json!({}),
        }
    }

    fn conf_for(&self, side: &Side) -> Value {
        let mut c = conf(self.version, &side.data, self.ipam.clone());
        for (k, v) in self.extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    }

    /// Runs one step on both sides and compares everything; returns ours' outcome.
    fn step(&self, command: &str, id: &str, ifname: &str, args: &str) -> Outcome {
        self.step_with(command, id, ifname, args, Store::Same)
    }

    fn step_with(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        args: &str,
        store_rule: Store,
    ) -> Outcome {
        let what = format!(
            "{} {command} {id}/{ifname} args {args:?} ipam {} extra {}",
            self.version, self.ipam, self.extra
        );
        let ours_before = files_only(&snapshot(&self.ours.data).expect("snapshot"));
        let run = |side: &Side| {
            side.hl
                .op(command, &self.conf_for(side), id, ifname, args)
                .expect("run host-local")
        };
        let reference = run(&self.reference);
        let ours = run(&self.ours);
        assert_eq!(
            ours.exit,
            reference.exit,
            "{what}\nours: {}\nreference: {}",
            ours.describe(),
            reference.describe()
        );
        if reference.ok() {
            assert_eq!(ours.result(), reference.result(), "{what}");
        } else {
            assert!(
                reference.msg().is_some(),
                "{what}: {}",
                reference.describe()
            );
            assert_eq!(
                ours.msg(),
                reference.msg(),
                "{what}\nours: {}",
                ours.describe()
            );
        }
        let ours_after = files_only(&snapshot(&self.ours.data).expect("snapshot"));
        let ref_after = files_only(&snapshot(&self.reference.data).expect("snapshot"));
        let (o, r) = match store_rule {
            Store::Same => (ours_after.clone(), ref_after.clone()),
            Store::SameButReferenceLastReserved => {
                assert_eq!(ours_after, ours_before, "{what}: ours changed its store");
                (without_last(&ours_after), without_last(&ref_after))
            }
        };
        assert_eq!(
            o,
            r,
            "{what}: stores differ\nours:\n{}\nreference:\n{}",
            show(&ours_after),
            show(&ref_after)
        );
        if store_rule == Store::SameButReferenceLastReserved {
            self.align_last_reserved();
        }
        ours
    }

    /// Puts ours' `last_reserved_ip.*` into the reference store, so that the sequence
    /// goes on from one state after the reference kept a moved one on a failed ADD.
    fn align_last_reserved(&self) {
        let theirs = store(&self.reference.data);
        for entry in fs::read_dir(&theirs).expect("read store").flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("last_reserved_ip.")
            {
                fs::remove_file(entry.path()).expect("remove");
            }
        }
        for entry in fs::read_dir(store(&self.ours.data))
            .expect("read store")
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("last_reserved_ip.")
            {
                fs::copy(entry.path(), theirs.join(entry.file_name())).expect("copy");
            }
        }
    }

    /// Writes the same file into both stores.
    fn seed(&self, name: &str, contents: &[u8]) {
        seed(&self.ours.data, name, contents).expect("seed ours");
        seed(&self.reference.data, name, contents).expect("seed reference");
    }
}

fn without_last(snap: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    snap.iter()
        .filter(|(k, _)| !k.contains("last_reserved_ip."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn single_range_add_check_del() {
    for &version in REFERENCE_VERSIONS {
        let p = Pair::new(version, json!({"ranges": ranges(&[&["10.1.2.0/24"]])}));
        for id in ["a", "b", "c"] {
            p.step("ADD", id, "eth0", "");
        }
        // CHECK arrived with 0.4.0; before that both refuse it the same way.
        p.step("CHECK", "a", "eth0", "");
        p.step("CHECK", "nobody", "eth0", "");
        p.step("DEL", "b", "eth0", "");
        let out = p.step("ADD", "d", "eth0", "");
        assert_eq!(out.addresses(), ["10.1.2.5/24"], "round robin goes on");
        p.step("ADD", "a", "eth0", "");
        p.step("ADD", "a", "eth1", "");
        p.step("DEL", "a", "eth0", "");
        p.step("DEL", "a", "eth0", "");
        p.step("DEL", "unknown", "eth0", "");
        p.step("CHECK", "a", "eth0", "");
        p.step("CHECK", "a", "eth1", "");
        p.step("ADD", "a", "eth0", "");
        for id in ["a", "c", "d"] {
            p.step("DEL", id, "eth0", "");
        }
        p.step("DEL", "a", "eth1", "");
        let left: Vec<String> = files_only(&snapshot(&store(&p.ours.data)).expect("snap"))
            .into_keys()
            .collect();
        assert_eq!(left, ["last_reserved_ip.0", "lock"], "{version}");
    }
}

#[test]
fn dual_stack_with_routes_and_dns() {
    for &version in REFERENCE_VERSIONS {
        let mut p = Pair::new(version, json!({}));
        let resolv = p.dir.path().join("resolv.conf");
        fs::write(
            &resolv,
            "# test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch svc.example example\n\
             domain example\noptions ndots:5\n",
        )
        .expect("write resolv.conf");
        p.ipam = json!({
            "ranges": ranges(&[&["10.1.2.0/24", "10.2.2.0/24"], &["2001:db8:1::/64"]]),
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"},
                       {"dst": "192.168.0.0/16", "gw": "10.1.2.254"}],
            "resolvConf": resolv,
        });
        let first = p.step("ADD", "a", "eth0", "");
        assert_eq!(first.addresses(), ["10.1.2.2/24", "2001:db8:1::2/64"]);
        p.step("ADD", "a", "eth1", "");
        p.step("ADD", "b", "eth0", "");
        p.step("CHECK", "b", "eth0", "");
        p.step("DEL", "a", "eth0", "");
        p.step("ADD", "c", "eth0", "");
        p.step("ADD", "b", "eth0", "");
        p.step("DEL", "b", "eth0", "");
        p.step("CHECK", "b", "eth0", "");
        // The second pool of the IPv4 set takes over where the first ends.
        p.seed("last_reserved_ip.0", b"10.1.2.254");
        let out = p.step("ADD", "d", "eth0", "");
        assert_eq!(out.addresses(), ["10.2.2.2/24", "2001:db8:1::6/64"]);
        p.seed("last_reserved_ip.0", b"10.2.2.254");
        let out = p.step("ADD", "e", "eth0", "");
        assert_eq!(out.addresses()[0], "10.1.2.2/24", "wraps to the first pool");
    }
}

#[test]
fn requested_ips_from_every_source() {
    for &version in REFERENCE_VERSIONS {
        let mut p = Pair::new(
            version,
            json!({"ranges": ranges(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]])}),
        );
        p.step("ADD", "a", "eth0", "IP=10.1.2.50");
        p.step(
            "ADD",
            "b",
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.51/24",
        );
        p.extra = json!({"args": {"cni": {"ips": ["10.1.2.60", "2001:db8:1::60"]}}});
        p.step("ADD", "c", "eth0", "");
        p.extra = json!({"runtimeConfig": {"ips": ["2001:db8:1::70/64"]}});
        p.step("ADD", "d", "eth0", "");
        p.extra = json!({});
        // Round robin carries on after the last requested address.
        let out = p.step("ADD", "e", "eth0", "");
        assert_eq!(out.addresses(), ["10.1.2.62/24", "2001:db8:1::71/64"]);
        // Taken, gateway, taken by the same container: refused alike, nothing written.
        p.step("ADD", "f", "eth0", "IP=10.1.2.50");
        p.step("ADD", "f", "eth0", "IP=10.1.2.1");
        // The IPv4 set allocates dynamically before the IPv6 request fails: the reference
        // keeps the last_reserved_ip.0 it moved (ours writes nothing), until the next
        // successful reservation in that set brings both back in line.
        p.extra = json!({"runtimeConfig": {"ips": ["2001:db8:1::60"]}});
        p.step_with("ADD", "f", "eth0", "", Store::SameButReferenceLastReserved);
        p.extra = json!({});
        p.step("DEL", "a", "eth0", "");
        p.step("ADD", "f", "eth0", "IP=10.1.2.50");
        // Requested addresses that no range set consumes: the reference keeps the
        // last_reserved_ip it moved for the dynamic allocation before failing.
        p.step_with(
            "ADD",
            "g",
            "eth0",
            "IP=10.9.9.9",
            Store::SameButReferenceLastReserved,
        );
    }
}

#[test]
fn exhaustion_of_a_slash29() {
    for &version in REFERENCE_VERSIONS {
        let p = Pair::new(version, json!({"ranges": ranges(&[&["10.1.2.0/29"]])}));
        for i in 0..5 {
            p.step("ADD", &format!("c{i}"), "eth0", "");
        }
        let out = p.step("ADD", "c5", "eth0", "");
        assert!(
            out.msg()
                .is_some_and(|m| m.contains("no IP addresses available")),
            "{}",
            out.describe()
        );
        p.step("DEL", "c2", "eth0", "");
        let out = p.step("ADD", "c5", "eth0", "");
        assert_eq!(out.addresses(), ["10.1.2.4/29"]);
        p.step("ADD", "c6", "eth0", "");
        p.step("ADD", "c6", "eth0", "IP=10.1.2.4");
        p.step("ADD", "c6", "eth0", "IP=10.1.2.7");
    }
}

#[test]
fn several_pools_in_one_range_set() {
    let p = Pair::new(
        "1.0.0",
        json!({"ranges": [[
            {"subnet": "10.0.0.0/30"},
            {"subnet": "10.0.1.0/29", "rangeStart": "10.0.1.4", "rangeEnd": "10.0.1.5",
             "gateway": "10.0.1.6"}
        ]]}),
    );
    for id in ["a", "b", "c", "d"] {
        p.step("ADD", id, "eth0", "");
    }
    p.step("DEL", "a", "eth0", "");
    p.step("ADD", "d", "eth0", "");
    p.step("ADD", "e", "eth0", "");
}

#[test]
fn legacy_and_odd_store_contents() {
    let p = Pair::new("1.0.0", json!({"ranges": ranges(&[&["10.1.2.0/24"]])}));
    p.seed("10.1.2.2", b"legacy");
    p.seed("10.1.2.3", b" spaced\r\neth0\n");
    p.seed("last_reserved_ip.0", b"10.1.2.3");
    p.step("CHECK", "legacy", "eth0", "");
    p.step("CHECK", "spaced", "eth0", "");
    p.step("ADD", "legacy", "eth0", "");
    p.step("ADD", "spaced", "eth0", "");
    p.step("ADD", "new", "eth0", "");
    p.step("DEL", "legacy", "eth1", "");
    p.step("DEL", "spaced", "eth0", "");
    p.step("DEL", "legacy", "eth0", "");
    // A last_reserved_ip outside the range set starts over at the beginning.
    p.seed("last_reserved_ip.0", b"192.168.0.1");
    p.step("ADD", "other", "eth0", "");
}

#[test]
fn error_messages_match() {
    let bad_ipams = [
        json!({"ranges": []}),
        json!({"ranges": [[]]}),
        json!({"ranges": [[{"subnet": "10.1.2.1/24"}]]}),
        json!({"ranges": [[{"subnet": "2001:db8::1/64"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/31"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.1.9"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.9"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "2001:db8::/64"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.2.0/25"}]]}),
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.0.0/16"}]]}),
        json!({"subnet": "10.1.2.0/24", "ranges": ranges(&[&["10.1.2.0/24"]])}),
    ];
    for ipam in bad_ipams {
        let p = Pair::new("1.0.0", ipam);
        for command in ["ADD", "CHECK"] {
            p.step(command, "a", "eth0", "");
        }
        // The one difference on purpose: DEL needs only the store, so ranges ADD refuses
        // do not make it fail (the reference's failing DEL stops the runtime's chain).
        let del = |side: &Side| {
            side.hl
                .op("DEL", &p.conf_for(side), "a", "eth0", "")
                .expect("run host-local")
        };
        assert_eq!(del(&p.reference).exit, Some(1), "{}", p.ipam);
        let ours = del(&p.ours);
        assert!(ours.ok(), "{}: {}", p.ipam, ours.describe());
    }
    let p = Pair::new("1.0.0", json!({"ranges": ranges(&[&["10.1.2.0/24"]])}));
    for args in [
        "IP=10.1.2.300",
        "IP",
        "FOO=1",
        "IP=10.1.2.5;FOO=bar",
        "IgnoreUnknown=0;FOO=bar",
    ] {
        p.step("ADD", "a", "eth0", args);
    }
    p.step("CHECK", "a", "eth0", "");
    for version in ["0.3.0", "0.3.1"] {
        let p = Pair::new(version, json!({"ranges": ranges(&[&["10.1.2.0/24"]])}));
        p.step("ADD", "a", "eth0", "");
        p.step("CHECK", "a", "eth0", "");
    }
    // No ipam section at all.
    let p = Pair::new("1.0.0", json!({}));
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "mynet", "type": "host-local"});
    let ours = p.ours.hl.add(&no_ipam, "a", "eth0").expect("run ours");
    let reference = p
        .reference
        .hl
        .add(&no_ipam, "a", "eth0")
        .expect("run reference");
    assert_eq!(ours.exit, Some(1), "{}", ours.describe());
    assert_eq!(reference.exit, Some(1), "{}", reference.describe());
    assert_eq!(ours.msg(), reference.msg(), "{}", ours.describe());
    assert!(files_only(&snapshot(&p.ours.data).expect("snap")).is_empty());
}

#[test]
fn empty_cni_args_ip_requests_nothing() {
    // The reference parses `IP=` as no address at all and allocates dynamically.
    let p = Pair::new("1.0.0", json!({"ranges": ranges(&[&["10.1.2.0/24"]])}));
    let out = p.step("ADD", "a", "eth0", "IP=");
    assert_eq!(out.addresses(), ["10.1.2.2/24"]);
    p.step("ADD", "b", "eth0", "IgnoreUnknown=1;IP=;K8S_POD_NAME=b");
}

// ---------------------------------------------------------------------------------------
// One store, both binaries

#[test]
fn switch_over_on_one_store() {
    let dir = TestDir::new().expect("temp dir");
    let netns = TestNetns::new("hlsw").expect("netns");
    let data = dir.path().join("data");
    let ours = HostLocal::in_dir(&plugin_dir(), netns.path_str());
    let reference = HostLocal::in_dir(&reference_plugin_dir(), netns.path_str());
    let conf = conf(
        "1.0.0",
        &data,
        json!({"ranges": ranges(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]])}),
    );
    let add = |hl: &HostLocal, id: &str| -> Vec<String> {
        let out = hl.add(&conf, id, "eth0").expect("run ADD");
        assert!(out.ok(), "ADD {id}: {}", out.describe());
        out.addresses()
    };
    let ok = |hl: &HostLocal, command: &str, id: &str| {
        let out = hl.op(command, &conf, id, "eth0", "").expect("run");
        assert!(out.ok(), "{command} {id}: {}", out.describe());
    };

    // Pods added by the reference, then ours continues the round robin.
    assert_eq!(add(&reference, "a"), ["10.1.2.2/24", "2001:db8:1::2/64"]);
    assert_eq!(add(&reference, "b"), ["10.1.2.3/24", "2001:db8:1::3/64"]);
    assert_eq!(add(&ours, "c"), ["10.1.2.4/24", "2001:db8:1::4/64"]);
    assert_eq!(add(&reference, "d"), ["10.1.2.5/24", "2001:db8:1::5/64"]);
    assert_eq!(add(&ours, "e"), ["10.1.2.6/24", "2001:db8:1::6/64"]);
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (n, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        want.insert(format!("10.1.2.{}", n + 2), reservation(id, "eth0"));
        want.insert(format!("2001:db8:1::{}", n + 2), reservation(id, "eth0"));
    }
    want.insert("last_reserved_ip.0".into(), b"10.1.2.6".to_vec());
    want.insert("last_reserved_ip.1".into(), b"2001:db8:1::6".to_vec());
    want.insert("lock".into(), Vec::new());
    assert_eq!(files_only(&snapshot(&store(&data)).expect("snap")), want);

    // Each sees the other's reservations: CHECK both ways, duplicates refused both ways.
    ok(&ours, "CHECK", "a");
    ok(&reference, "CHECK", "c");
    let dup = ours.add(&conf, "b", "eth0").expect("run");
    assert_eq!(
        dup.msg(),
        Some(
            "failed to allocate for range 0: 10.1.2.3 has been allocated to b, \
             duplicate allocation is not allowed"
        ),
        "{}",
        dup.describe()
    );
    let dup = reference.add(&conf, "e", "eth0").expect("run");
    assert_eq!(
        dup.msg(),
        Some(
            "failed to allocate for range 0: 10.1.2.6 has been allocated to e, \
             duplicate allocation is not allowed"
        ),
        "{}",
        dup.describe()
    );
    assert_eq!(files_only(&snapshot(&store(&data)).expect("snap")), want);

    // Each releases the other's reservations.
    ok(&ours, "DEL", "a");
    ok(&reference, "DEL", "c");
    for ip in ["10.1.2.2", "2001:db8:1::2", "10.1.2.4", "2001:db8:1::4"] {
        want.remove(ip);
    }
    assert_eq!(files_only(&snapshot(&store(&data)).expect("snap")), want);
    for (hl, id) in [(&reference, "a"), (&ours, "c")] {
        let out = hl.check(&conf, id, "eth0").expect("run CHECK");
        assert_eq!(
            out.msg().map(str::to_string),
            Some(format!(
                "host-local: Failed to find address added by container {id}"
            )),
            "{}",
            out.describe()
        );
    }

    // The round robin goes on from the other's last reservation, past the freed addresses.
    assert_eq!(add(&ours, "f"), ["10.1.2.7/24", "2001:db8:1::7/64"]);
    assert_eq!(add(&reference, "g"), ["10.1.2.8/24", "2001:db8:1::8/64"]);
    let seen: Vec<String> = files_only(&snapshot(&store(&data)).expect("snap"))
        .into_values()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect();
    for id in ["b", "d", "e", "f", "g"] {
        let owner = reservation(id, "eth0");
        let n = seen
            .iter()
            .filter(|s| s.as_bytes() == owner.as_slice())
            .count();
        assert_eq!(n, 2, "{id} owns one address per range set");
    }
    for (hl, id) in [
        (&ours, "b"),
        (&reference, "d"),
        (&ours, "e"),
        (&reference, "f"),
        (&ours, "g"),
    ] {
        ok(hl, "DEL", id);
    }
    let left: Vec<String> = files_only(&snapshot(&store(&data)).expect("snap"))
        .into_keys()
        .collect();
    assert_eq!(left, ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

/// Both binaries treat the lock file of a store the other created the same way.
#[test]
fn store_created_by_ours_is_used_by_the_reference() {
    let dir = TestDir::new().expect("temp dir");
    let netns = TestNetns::new("hlsw").expect("netns");
    let data: &Path = &dir.path().join("data");
    let ours = HostLocal::in_dir(&plugin_dir(), netns.path_str());
    let reference = HostLocal::in_dir(&reference_plugin_dir(), netns.path_str());
    let conf = conf(
        "1.0.0",
        data,
        json!({"ranges": ranges(&[&["10.1.2.0/30"]])}),
    );
    let out = ours.add(&conf, "a", "eth0").expect("run");
    assert_eq!(out.addresses(), ["10.1.2.2/30"], "{}", out.describe());
    let out = reference.add(&conf, "b", "eth0").expect("run");
    assert_eq!(
        out.msg(),
        Some("failed to allocate for range 0: no IP addresses available in range set: 10.1.2.1-10.1.2.2"),
        "{}",
        out.describe()
    );
    let out = reference.del(&conf, "a", "eth0").expect("run");
    assert!(out.ok(), "{}", out.describe());
    let out = ours.add(&conf, "b", "eth0").expect("run");
    assert_eq!(out.addresses(), ["10.1.2.2/30"], "{}", out.describe());
}

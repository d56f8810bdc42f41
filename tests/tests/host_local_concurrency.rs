//! Many host-local processes on one store at once, as on a node starting a burst of pods:
//! every ADD gets its own address, every DEL removes exactly its own reservation, and our
//! binary and the reference serialise on the same `<dataDir>/<network>/lock` (flock), so
//! they can share a store. Needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::thread;

use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use cni_tests::host_local::{
    conf, files_only, ranges, reservation, show, snapshot, store, HostLocal, Outcome,
};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

/// Runs `command` for `ctr-<i>` on `binaries[i]`, all at once (one thread each).
fn parallel(binaries: &[HostLocal], conf: &Value, command: &str) -> Vec<Outcome> {
    thread::scope(|s| {
        let handles: Vec<_> = binaries
            .iter()
            .enumerate()
            .map(|(i, hl)| {
                s.spawn(move || {
                    hl.op(command, conf, &format!("ctr-{i}"), "eth0", "")
                        .expect("run host-local")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn store_files(data: &Path) -> BTreeMap<String, Vec<u8>> {
    files_only(&snapshot(&store(data)).expect("snapshot"))
}

/// All ADDs succeeded with distinct addresses, each recorded for its container, and
/// `last_reserved_ip.0` names one of them.
fn assert_distinct_reservations(outs: &[Outcome], data: &Path, who: &[&str]) {
    let mut seen = BTreeSet::new();
    let mut want = BTreeMap::new();
    for (i, out) in outs.iter().enumerate() {
        assert!(
            out.ok(),
            "ADD ctr-{i} ({}): {}",
            who[i % who.len()],
            out.describe()
        );
        let addrs = out.addresses();
        assert_eq!(addrs.len(), 1, "ctr-{i}: {}", out.describe());
        let ip = addrs[0].split('/').next().unwrap_or_default().to_string();
        assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        want.insert(ip, reservation(&format!("ctr-{i}"), "eth0"));
    }
    assert_eq!(seen.len(), outs.len());
    let mut files = store_files(data);
    let last = files
        .remove("last_reserved_ip.0")
        .expect("last_reserved_ip.0");
    assert!(
        seen.contains(String::from_utf8_lossy(&last).as_ref()),
        "last_reserved_ip.0 = {:?}",
        String::from_utf8_lossy(&last)
    );
    assert_eq!(files.remove("lock"), Some(Vec::new()), "lock file");
    assert_eq!(files, want, "store:\n{}", show(&store_files(data)));
}

fn assert_only_bookkeeping_left(outs: &[Outcome], data: &Path) {
    for (i, out) in outs.iter().enumerate() {
        assert!(out.ok(), "DEL ctr-{i}: {}", out.describe());
    }
    let left: Vec<String> = store_files(data).into_keys().collect();
    assert_eq!(left, ["last_reserved_ip.0", "lock"]);
}

fn setup(prefix: &str) -> (TestDir, TestNetns, PathBuf) {
    let dir = TestDir::new().expect("temp dir");
    let netns = TestNetns::new(prefix).expect("netns");
    let data = dir.path().join("data");
    (dir, netns, data)
}

#[test]
fn sixty_four_parallel_adds_then_dels() {
    let (_dir, netns, data) = setup("hlc");
    let conf = conf(
        "1.0.0",
        &data,
        json!({"ranges": ranges(&[&["10.20.0.0/24"]])}),
    );
    let ours = vec![HostLocal::in_dir(&plugin_dir(), netns.path_str()); 64];
    let outs = parallel(&ours, &conf, "ADD");
    assert_distinct_reservations(&outs, &data, &["ours"]);
    let outs = parallel(&ours, &conf, "DEL");
    assert_only_bookkeeping_left(&outs, &data);
}

#[test]
fn reference_and_ours_in_parallel_on_one_store() {
    let (_dir, netns, data) = setup("hlc");
    let conf = conf(
        "1.0.0",
        &data,
        json!({"ranges": ranges(&[&["10.20.0.0/24"]])}),
    );
    let ours = HostLocal::in_dir(&plugin_dir(), netns.path_str());
    let reference = HostLocal::in_dir(&reference_plugin_dir(), netns.path_str());
    // Interleaved: even containers by the reference, odd ones by ours.
    let binaries: Vec<HostLocal> = (0..64)
        .map(|i| {
            if i % 2 == 0 {
                reference.clone()
            } else {
                ours.clone()
            }
        })
        .collect();
    let outs = parallel(&binaries, &conf, "ADD");
    assert_distinct_reservations(&outs, &data, &["reference", "ours"]);
    // And the other way round for DEL: each releases what the other reserved.
    let swapped: Vec<HostLocal> = (0..64)
        .map(|i| {
            if i % 2 == 0 {
                ours.clone()
            } else {
                reference.clone()
            }
        })
        .collect();
    let outs = parallel(&swapped, &conf, "DEL");
    assert_only_bookkeeping_left(&outs, &data);
}

/// More containers than addresses: exactly as many ADDs succeed as there are addresses,
/// the others fail with "no IP addresses available" and leave nothing behind.
fn oversubscribed(bin_dir: &Path, ours: bool) {
    let (_dir, netns, data) = setup("hlc");
    // A /26 has .2–.62 to give: 61 addresses for 64 containers.
    let conf = conf(
        "1.0.0",
        &data,
        json!({"ranges": ranges(&[&["10.30.0.0/26"], &["2001:db8:30::/64"]])}),
    );
    let binaries = vec![HostLocal::in_dir(bin_dir, netns.path_str()); 64];
    let outs = parallel(&binaries, &conf, "ADD");
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    let mut failed = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        if out.ok() {
            let a = out.addresses();
            assert_eq!(a.len(), 2, "ctr-{i}: {}", out.describe());
            assert!(v4.insert(a[0].clone()), "{} twice", a[0]);
            assert!(v6.insert(a[1].clone()), "{} twice", a[1]);
        } else {
            assert_eq!(out.exit, Some(1), "ctr-{i}: {}", out.describe());
            assert_eq!(
                out.msg(),
                Some(
                    "failed to allocate for range 0: no IP addresses available in range set: \
                     10.30.0.1-10.30.0.62"
                ),
                "ctr-{i}: {}",
                out.describe()
            );
            if ours {
                assert_eq!(out.code(), Some(105), "ctr-{i}: {}", out.describe());
            }
            failed.push(format!("ctr-{i}"));
        }
    }
    assert_eq!(v4.len(), 61);
    assert_eq!(failed.len(), 3);
    // The losers hold nothing in either range set.
    let files = store_files(&data);
    for id in &failed {
        let owner = reservation(id, "eth0");
        let held: Vec<&String> = files
            .iter()
            .filter(|(_, v)| v.as_slice() == owner.as_slice())
            .map(|(k, _)| k)
            .collect();
        assert!(held.is_empty(), "{id} holds {held:?}");
    }
    // 61 × 2 reservations, two last_reserved_ip files and the lock.
    assert_eq!(files.len(), 61 * 2 + 3, "{}", show(&files));
}

#[test]
fn oversubscribed_range_ours() {
    oversubscribed(&plugin_dir(), true);
}

#[test]
fn oversubscribed_range_reference() {
    oversubscribed(&reference_plugin_dir(), false);
}

//! calico-ipam on a three-member etcd cluster that loses its leader — the member listed
//! first in `etcd_endpoints` — in the middle of a run of sequential and parallel ADDs from
//! two nodes: the ADDs caught by the loss may fail, but only with "try again later" (11);
//! once the two survivors have a leader every ADD succeeds with the dead member still first
//! in the list; and at the end no address belongs to two handles, every handle's counts are
//! its allocations, and DEL of the failed attempts leaves exactly the successful ones.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cni_tests::etcd::EtcdCluster;
use cni_tests::host_local::Outcome;
use cni_tests::ipam::{
    allocations, etcd_post, etcd_put, held_addresses, Backend, IpamFixture, NET,
};
use serde_json::{json, Value};

const POOL: &str = "10.81.0.0/22";
const NODES: [&str; 2] = ["node-a", "node-b"];

/// The member that is the raft leader, by index in `urls`.
fn leader(urls: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, url) in urls.iter().enumerate() {
            if let Ok(status) = etcd_post(url, "/v3/maintenance/status", &json!({})) {
                if status["leader"] == status["header"]["member_id"] {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no etcd leader");
        thread::sleep(Duration::from_millis(50));
    }
}

struct Run<'a> {
    fx: &'a IpamFixture,
    confs: Vec<Value>,
    next: AtomicUsize,
}

impl Run<'_> {
    /// One ADD on node `n % 2` with a fresh container id.
    fn add(&self, n: usize) -> (String, Outcome) {
        let id = format!("c{:03}", self.next.fetch_add(1, Ordering::Relaxed));
        let out = self.fx.call("ADD", &self.confs[n % 2], &id, &[]);
        (id, out)
    }

    fn sequential(&self, count: usize) -> Vec<(String, Outcome)> {
        (0..count).map(|n| self.add(n)).collect()
    }

    fn parallel(&self, count: usize) -> Vec<(String, Outcome)> {
        thread::scope(|s| {
            let calls: Vec<_> = (0..count).map(|n| s.spawn(move || self.add(n))).collect();
            calls
                .into_iter()
                .map(|c| c.join().expect("caller thread"))
                .collect()
        })
    }
}

fn address(out: &Outcome) -> IpAddr {
    out.addresses()
        .first()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address: {}", out.describe()))
}

fn all_succeed(phase: &str, calls: &[(String, Outcome)]) {
    for (id, out) in calls {
        assert_eq!(out.exit, Some(0), "{phase}: ADD {id}: {}", out.describe());
    }
}

#[test]
fn losing_the_leader_mid_run_keeps_allocating_without_duplicates() {
    let mut cluster = EtcdCluster::start(3).expect("start a 3-member etcd cluster");
    let urls = cluster.client_urls();
    let dead = leader(&urls);
    // The leader first: the plugin talks to it until it dies.
    let mut ordered = vec![urls[dead].clone()];
    ordered.extend(
        urls.iter()
            .enumerate()
            .filter(|(i, _)| *i != dead)
            .map(|(_, u)| u.clone()),
    );
    let fx = IpamFixture::on_etcd(&ordered.join(","));
    assert_eq!(fx.backend, Backend::Etcd);
    fx.create_pool(POOL, 26);
    let run = Run {
        fx: &fx,
        confs: NODES
            .iter()
            .map(|node| fx.conf("1.0.0", node, json!({"ipv4_pools": [POOL]})))
            .collect(),
        next: AtomicUsize::new(0),
    };

    let mut ok: Vec<(String, Outcome)> = Vec::new();
    let before = [run.sequential(6), run.parallel(12)].concat();
    all_succeed("before the loss", &before);
    ok.extend(before);

    // The leader dies while a parallel batch runs.
    let finished = AtomicUsize::new(0);
    let during: Vec<(String, Outcome)> = thread::scope(|s| {
        let calls: Vec<_> = (0..16)
            .map(|n| {
                let (run, finished) = (&run, &finished);
                s.spawn(move || {
                    let r = run.add(n);
                    finished.fetch_add(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while finished.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        cluster.kill_member(dead);
        calls
            .into_iter()
            .map(|c| c.join().expect("caller thread"))
            .collect()
    });
    let mut failed = Vec::new();
    for (id, out) in during {
        if out.exit == Some(0) {
            ok.push((id, out));
        } else {
            assert_eq!(
                out.code(),
                Some(11),
                "an ADD caught by the loss may only ask to be retried: {id}: {}",
                out.describe()
            );
            failed.push(id);
        }
    }

    // The survivors elect a leader (they accept writes again).
    let survivors: Vec<String> = ordered[1..].to_vec();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !survivors
        .iter()
        .any(|u| etcd_put(u, "/cni-test/probe", b"x").is_ok())
    {
        assert!(
            Instant::now() < deadline,
            "the two survivors never accepted a write:\n{}",
            cluster.log_tail(1)
        );
        thread::sleep(Duration::from_millis(100));
    }

    let after = [run.sequential(6), run.parallel(12)].concat();
    all_succeed(
        "after the loss (dead member first in etcd_endpoints)",
        &after,
    );
    ok.extend(after);

    // Nothing handed out twice, and the datastore agrees with every answer.
    let mut given: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (id, out) in &ok {
        if let Some(other) = given.insert(address(out), id.clone()) {
            panic!("{} handed to both {other} and {id}", address(out));
        }
    }
    // (A handle object may still count what a failed ADD could not finish: checked after
    // the DELs below.)
    let held = held_addresses(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    for (ip, id) in &given {
        assert_eq!(
            held.get(ip),
            Some(&format!("{NET}.{id}")),
            "{ip} of {id} in the datastore"
        );
    }

    // A runtime retries a failed ADD after a DEL: the DELs clean up whatever the ambiguous
    // writes left, and exactly the successful allocations remain.
    for id in &failed {
        let out = fx.call("DEL", &run.confs[0], id, &[]);
        assert_eq!(out.exit, Some(0), "DEL {id}: {}", out.describe());
    }
    let held = allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeMap<IpAddr, String> = given
        .iter()
        .map(|(ip, id)| (*ip, format!("{NET}.{id}")))
        .collect();
    assert_eq!(held, expected, "exactly the successful ADDs hold addresses");
    eprintln!(
        "{} ADDs succeeded, {} caught by the leader's loss",
        ok.len(),
        failed.len()
    );
}

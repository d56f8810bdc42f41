//! Crash safety of the whole chain, soaked: N ADD/DEL cycles of calico + calico-ipam (the
//! `local` datastore) + portmap (one host port; the iptables and the nftables backend in
//! turn, at random) + bandwidth (ingress and egress, so an IFB), each pod in a fresh network
//! namespace, the plugins inside a node namespace of the test's own. In about a third of the
//! cycles one plugin process — calico, the calico-ipam calico execs, portmap or bandwidth —
//! is killed with SIGKILL at a random moment of its ADD or of its DEL; a killed DEL is
//! retried (and may be killed again) until it succeeds. After every cycle's DEL nothing may
//! be left: no link, host route, qdisc, IFB, NAT rule (iptables or nftables), IPAM handle or
//! allocation, workload endpoint, cached result, pod interface or network namespace.
//!
//! `SOAK_CYCLES` (default 40) sets N, `SOAK_SEED` replays a run: the seed is printed first,
//! and every failure names it with the cycle. `scripts/soak.sh` runs the long version.
//! Needs root.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cni_tests::bandwidth::limits;
use cni_tests::fixtures::plugin_dir;
use cni_tests::ipam::{handles_of, merge, Backend, IpamFixture};
use cni_tests::pod::{link_names, Node};
use cni_tests::soak::{
    files_in, netns_named, resume, seed_from_env, still_running, store_leaks, Action, Arm,
    KillSwitch, NodeState, OpLog, Rng, OP_ENV, WEP_PREFIX,
};
use cni_tests::{ConfList, RunError, Runner, RuntimeConf, TestNetns};
use serde_json::{json, Value};

const NET: &str = "soak-net";
const NODE: &str = "soak-node";
const POOL4: &str = "172.31.0.0/24";
const POOL6: &str = "fd00:172:31::/120";
const HOST_PORT: u16 = 18080;
const IFNAME: &str = "eth0";
/// Every plugin process that may be killed: the chain's, and the IPAM plugin calico execs.
const VICTIMS: [&str; 4] = ["calico", "calico-ipam", "portmap", "bandwidth"];
const BACKENDS: [&str; 2] = ["iptables", "nftables"];
const DEFAULT_CYCLES: usize = 40;
/// The first cycles run untouched: they measure how long each plugin runs (every untouched
/// process is measured), which bounds the random kill delays.
const CALIBRATION_CYCLES: usize = 2;
/// The kill window of a plugin not measured yet.
const DEFAULT_WINDOW: Duration = Duration::from_millis(8);
/// A DEL is retried until it succeeds; only the first attempts may be killed, so this
/// bound is reached only when DEL keeps failing by itself.
const DEL_ATTEMPTS: usize = 6;
const KILLABLE_DEL_ATTEMPTS: usize = 3;
/// How often the leftover network namespaces are looked for.
const NETNS_CHECK_EVERY: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Add,
    Del,
}

impl Phase {
    fn command(self) -> &'static str {
        match self {
            Phase::Add => "ADD",
            Phase::Del => "DEL",
        }
    }
}

/// The attachment of one pod: one host port, ingress and egress limits, and for a
/// Kubernetes pod (`Some(n)`: `soak/pod-<n>`) the CNI_ARGS containerd passes.
fn runtime_conf(id: &str, pod: &TestNetns, k8s: Option<usize>) -> RuntimeConf {
    let mut rt = RuntimeConf::new(id, pod.path_str(), IFNAME)
        .with_capability(
            "portMappings",
            json!([{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]),
        )
        .with_capability(
            "bandwidth",
            limits(10_000_000, 1_000_000, 20_000_000, 2_000_000),
        );
    if let Some(n) = k8s {
        rt = rt
            .with_arg("IgnoreUnknown", "1")
            .with_arg("K8S_POD_NAMESPACE", "soak")
            .with_arg("K8S_POD_NAME", format!("pod-{n}"))
            .with_arg("K8S_POD_INFRA_CONTAINER_ID", id)
            .with_arg("K8S_POD_UID", "6b1f3c2a-4d5e-4f60-8a7b-9c0d1e2f3a4b");
    }
    rt
}

/// What one cycle does.
#[derive(Debug, Clone)]
struct Plan {
    backend: usize,
    k8s: bool,
    kill: Option<(Phase, Arm)>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "portmap {}, {}",
            BACKENDS[self.backend],
            if self.k8s {
                "Kubernetes pod"
            } else {
                "plain container"
            }
        )?;
        match &self.kill {
            Some((_, arm)) => write!(
                f,
                ", kill -9 {} {} after {:?}",
                arm.plugin, arm.command, arm.delay
            ),
            None => write!(f, ", no kill"),
        }
    }
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Stats {
    cycles: usize,
    killed_cycles: usize,
    /// (plugin, command) → (armed, delivered).
    kills: BTreeMap<(String, String), (usize, usize)>,
    add_failed_after_kill: usize,
    del_failed_after_kill: usize,
    del_attempts: usize,
    per_backend: [usize; 2],
}

struct Soak {
    seed: u64,
    cycles: usize,
    rng: Rng,
    node: Node,
    store: IpamFixture,
    switch: KillSwitch,
    lists: Vec<ConfList>,
    baseline: NodeState,
    log_file: PathBuf,
    op: u64,
    /// (plugin, command) → (total, samples) of lifetimes in untouched operations.
    windows: BTreeMap<(String, String), (Duration, u32)>,
    stats: Stats,
}

impl Soak {
    fn new(seed: u64, cycles: usize) -> Soak {
        let node = Node::new();
        let store = IpamFixture::new(Backend::Local);
        store.create_pool(POOL4, 26);
        store.create_pool(POOL6, 122);
        let switch =
            KillSwitch::new(node.dir.path(), &plugin_dir(), &VICTIMS).expect("kill switch");
        let log_file = node.dir.path().join("plugins.log");
        // calico/node's file must exist (it says calico/node runs); `nodename` names the node.
        let nodename_file = node.dir.path().join("soak-nodename");
        fs::write(&nodename_file, NODE).expect("nodename file");
        let mut calico = json!({
            "type": "calico",
            "log_level": "info",
            "log_file_path": log_file,
            "nodename": NODE,
            "nodename_file": nodename_file,
            "mtu_file": node.mtu_file(),
            "ipam_lock_file": store.lock_file(NODE),
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true",
                     "ipv4_pools": [POOL4], "ipv6_pools": [POOL6]},
        });
        merge(&mut calico, &store.datastore_keys());
        let lists = BACKENDS
            .iter()
            .map(|backend| {
                let raw = json!({
                    "cniVersion": "1.0.0",
                    "name": NET,
                    "plugins": [
                        calico,
                        {"type": "portmap", "backend": backend,
                         "capabilities": {"portMappings": true},
                         "log_level": "info", "log_file_path": log_file},
                        {"type": "bandwidth", "capabilities": {"bandwidth": true},
                         "log_level": "info", "log_file_path": log_file},
                    ],
                });
                ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist")
            })
            .collect();
        let baseline = NodeState::read(&node.netns).expect("read the node");
        Soak {
            seed,
            cycles,
            rng: Rng::new(seed),
            node,
            store,
            switch,
            lists,
            baseline,
            log_file,
            op: 0,
            windows: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn window(&self, plugin: &str, command: &str) -> Duration {
        match self.windows.get(&(plugin.to_string(), command.to_string())) {
            Some((total, n)) if *n > 0 => *total / *n,
            _ => DEFAULT_WINDOW,
        }
    }

    fn arm(&mut self, phase: Phase) -> Arm {
        let plugin = self.rng.pick(&VICTIMS).to_string();
        let window = self.window(&plugin, phase.command());
        Arm::kill(&plugin, phase.command(), self.rng.delay(window))
    }

    fn plan(&mut self, cycle: usize) -> Plan {
        let backend = self.rng.below(BACKENDS.len() as u64) as usize;
        let k8s = self.rng.chance(1, 2);
        let kill = if cycle > CALIBRATION_CYCLES && self.rng.chance(1, 3) {
            let phase = if self.rng.chance(2, 3) {
                Phase::Add
            } else {
                Phase::Del
            };
            Some((phase, self.arm(phase)))
        } else {
            None
        };
        Plan { backend, k8s, kill }
    }

    /// Runs one operation of the chain through the kill switch.
    fn op<T>(
        &mut self,
        arm: Option<Arm>,
        run: impl FnOnce(&Runner) -> Result<T, RunError>,
    ) -> (Result<T, RunError>, OpLog) {
        self.op += 1;
        let runner = Runner::new(
            vec![self.switch.cni_path().to_path_buf()],
            self.node.dir.cache_dir(),
        )
        .host_netns(Some(self.node.netns.path().to_path_buf()))
        .with_env(OP_ENV, self.op.to_string());
        if let Some(a) = &arm {
            self.stats
                .kills
                .entry((a.plugin.clone(), a.command.clone()))
                .or_default()
                .0 += 1;
        }
        self.switch.begin(self.op, arm);
        let result = run(&runner);
        let log = self.switch.end().expect("kill switch");
        if let Some(kill) = log.kill.as_ref().filter(|k| k.delivered) {
            self.stats
                .kills
                .entry((kill.arm.plugin.clone(), kill.arm.command.clone()))
                .or_default()
                .1 += 1;
        }
        for l in &log.lifetimes {
            let w = self
                .windows
                .entry((l.plugin.clone(), l.command.clone()))
                .or_default();
            w.0 += l.ran;
            w.1 += 1;
        }
        (result, log)
    }

    fn delivered(log: &OpLog) -> bool {
        log.kill.as_ref().is_some_and(|k| k.delivered)
    }

    /// Panics with everything needed to replay and understand a failure.
    fn fail(&self, cycle: usize, plan: &Plan, what: &str) -> ! {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "soak failed at cycle {cycle} of {} ({plan})\n\
             replay: SOAK_SEED={} SOAK_CYCLES={}\n{what}\n\
             --- last plugin log lines ---\n{tail}",
            self.cycles, self.seed, self.cycles
        );
    }

    fn run(&mut self) {
        for cycle in 1..=self.cycles {
            self.cycle(cycle);
            if cycle % NETNS_CHECK_EVERY == 0 || cycle == self.cycles {
                let left = netns_named(&format!("soak-pod-{}-", std::process::id()));
                if !left.is_empty() {
                    let plan = Plan {
                        backend: 0,
                        k8s: false,
                        kill: None,
                    };
                    self.fail(cycle, &plan, &format!("network namespaces left: {left:?}"));
                }
            }
        }
    }

    fn cycle(&mut self, cycle: usize) {
        let plan = self.plan(cycle);
        self.stats.cycles += 1;
        self.stats.per_backend[plan.backend] += 1;
        if plan.kill.is_some() {
            self.stats.killed_cycles += 1;
        }
        let pod = TestNetns::new("soak-pod").expect("pod netns");
        let id = format!("soak-{cycle:06}-{:08x}", self.rng.next_u64() as u32);
        let rt = runtime_conf(&id, &pod, plan.k8s.then_some(cycle));
        let list = self.lists[plan.backend].clone();

        let add_arm = match &plan.kill {
            Some((Phase::Add, arm)) => Some(arm.clone()),
            _ => None,
        };
        let armed = add_arm.is_some();
        let (added, log) = self.op(add_arm, |r| r.add(&list, &rt));
        match added {
            Err(e) if Self::delivered(&log) => {
                self.stats.add_failed_after_kill += 1;
                let _ = e;
            }
            Err(e) => self.fail(
                cycle,
                &plan,
                &format!(
                    "ADD failed {}: {e}",
                    if armed {
                        "though the kill missed"
                    } else {
                        "without a kill"
                    }
                ),
            ),
            Ok(result) if !Self::delivered(&log) => self.assert_wired(cycle, &plan, &id, &result),
            Ok(_) => {}
        }

        for attempt in 1..=DEL_ATTEMPTS {
            self.stats.del_attempts += 1;
            let arm = match &plan.kill {
                Some((Phase::Del, arm)) if attempt == 1 => Some(arm.clone()),
                // A retry may be killed too, now and then.
                Some((Phase::Del, _)) if attempt <= KILLABLE_DEL_ATTEMPTS => {
                    if self.rng.chance(1, 4) {
                        Some(self.arm(Phase::Del))
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let (deleted, log) = self.op(arm, |r| r.del(&list, &rt));
            match deleted {
                Ok(()) => break,
                Err(_) if Self::delivered(&log) => self.stats.del_failed_after_kill += 1,
                Err(e) => self.fail(
                    cycle,
                    &plan,
                    &format!("DEL attempt {attempt} failed without a kill: {e}"),
                ),
            }
            if attempt == DEL_ATTEMPTS {
                self.fail(cycle, &plan, "DEL was killed on every attempt");
            }
        }

        let leaks = match self.leaks(&pod) {
            Ok(leaks) => leaks,
            Err(e) => self.fail(cycle, &plan, &e),
        };
        if !leaks.is_empty() {
            self.fail(
                cycle,
                &plan,
                &format!("left behind after DEL of {id}:\n  {}", leaks.join("\n  ")),
            );
        }
    }

    /// Everything a pod left: in the node, the datastore, the pod's namespace and the
    /// runtime's result cache; one line per thing.
    fn leaks(&self, pod: &TestNetns) -> Result<Vec<String>, String> {
        let mut leaks = NodeState::read(&self.node.netns)
            .map_err(|e| format!("cannot read the node: {e}"))?
            .leaks_since(&self.baseline);
        leaks.extend(store_leaks(&self.store.snapshot()));
        leaks.extend(
            link_names(pod)
                .into_iter()
                .filter(|l| l != "lo")
                .map(|l| format!("interface {l} in the pod")),
        );
        let cached = files_in(&self.node.dir.cache_dir().join("results"));
        leaks.extend(cached.iter().map(|c| format!("cached result {c}")));
        Ok(leaks)
    }

    /// After an untouched ADD everything the chain makes is there, and the leak checks can
    /// see each kind of it (a check that cannot see a thing would never report its leak).
    fn assert_wired(&self, cycle: usize, plan: &Plan, id: &str, result: &Value) {
        let state = match NodeState::read(&self.node.netns) {
            Ok(s) => s,
            Err(e) => self.fail(cycle, plan, &format!("cannot read the node: {e}")),
        };
        let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
        let name = |i: usize| interfaces.get(i).and_then(|x| x["name"].as_str());
        let veth = name(0).unwrap_or_default().to_string();
        let ifb = interfaces
            .iter()
            .filter_map(|x| x["name"].as_str())
            .find(|n| n.starts_with("bwp"))
            .unwrap_or_default()
            .to_string();
        let mut missing = Vec::new();
        if !veth.starts_with("cali") || !state.links.contains(&veth) {
            missing.push(format!("host veth {veth:?}"));
        }
        if ifb.is_empty() || !state.links.contains(&ifb) {
            missing.push(format!("IFB {ifb:?}"));
        }
        for dev in [&veth, &ifb] {
            if !state
                .qdiscs
                .iter()
                .any(|q| q.starts_with(&format!("{dev} tbf ")))
            {
                missing.push(format!("TBF qdisc on {dev}"));
            }
        }
        let ips: Vec<String> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .filter_map(|a| a.split('/').next())
            .map(str::to_string)
            .collect();
        if ips.len() != 2 {
            missing.push(format!(
                "an IPv4 and an IPv6 address in the result: {ips:?}"
            ));
        }
        for ip in &ips {
            let routed = state.routes.iter().any(|r| {
                (r.starts_with(&format!("{ip} ")) || r.starts_with(&format!("{ip}/")))
                    && r.contains(&format!("dev {veth}"))
            });
            if !routed {
                missing.push(format!("host route to {ip} via {veth}"));
            }
        }
        match BACKENDS[plan.backend] {
            "iptables" => {
                for family in ["v4", "v6"] {
                    let prefix = format!("{family} -A CNI-DN-");
                    if !state.nat.iter().any(|l| l.starts_with(&prefix)) {
                        missing.push(format!("{family} CNI-DN- rules"));
                    }
                }
            }
            _ => {
                for family in ["ip ", "ip6 "] {
                    if !state
                        .nft
                        .iter()
                        .any(|r| r.starts_with(family) && r.contains(id))
                    {
                        missing.push(format!("nft {family}rules commented with {id}"));
                    }
                }
            }
        }
        let snapshot = self.store.snapshot();
        if !handles_of(&snapshot).keys().any(|h| h.contains(id)) {
            missing.push(format!("IPAM handle of {id}"));
        }
        if !snapshot.keys().any(|k| k.starts_with(WEP_PREFIX)) {
            missing.push("workload endpoint".to_string());
        }
        if !missing.is_empty() {
            self.fail(
                cycle,
                plan,
                &format!(
                    "after an untouched ADD, missing: {}\nresult: {result}",
                    missing.join(", ")
                ),
            );
        }
    }

    fn summary(&self, took: Duration) -> String {
        let mut out = format!(
            "soak summary: seed {} — {} cycles ({} iptables, {} nftables), {} with a kill, \
             {} DEL runs; wall time {:.1} s\n",
            self.seed,
            self.stats.cycles,
            self.stats.per_backend[0],
            self.stats.per_backend[1],
            self.stats.killed_cycles,
            self.stats.del_attempts,
            took.as_secs_f64()
        );
        out.push_str("  kills (plugin command: armed / SIGKILL sent to the live process):\n");
        for ((plugin, command), (armed, delivered)) in &self.stats.kills {
            let window = self.window(plugin, command);
            out.push_str(&format!(
                "    {plugin:<11} {command}: {armed:>3} / {delivered:>3}   (delays 0..{:.1} ms)\n",
                window.as_secs_f64() * 1000.0
            ));
        }
        out.push_str(&format!(
            "  operations that failed after a kill: {} ADD, {} DEL (each DEL retried until it \
             succeeded); nothing left behind after any cycle",
            self.stats.add_failed_after_kill, self.stats.del_failed_after_kill
        ));
        out
    }
}

#[test]
fn soak_chain_survives_kill_9_and_leaks_nothing() {
    let seed = seed_from_env().unwrap_or_else(|e| panic!("{e}"));
    let cycles = match std::env::var("SOAK_CYCLES") {
        Ok(n) if !n.trim().is_empty() => n
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("SOAK_CYCLES={n:?}: {e}")),
        _ => DEFAULT_CYCLES,
    };
    eprintln!("soak: seed {seed} (replay with SOAK_SEED={seed}), {cycles} cycles");
    let started = Instant::now();
    let mut soak = Soak::new(seed, cycles);
    soak.run();
    eprintln!("{}", soak.summary(started.elapsed()));
}

/// The leak check itself: a pod that is never deleted shows up as every kind of leftover
/// the soak looks for, on both portmap backends; DEL then clears all of it.
#[test]
fn soak_leak_check_names_everything_a_pod_leaves() {
    let mut soak = Soak::new(0, 0);
    let pods: Vec<(TestNetns, RuntimeConf, usize)> = (0..BACKENDS.len())
        .map(|backend| {
            let pod = TestNetns::new("soak-pod").expect("pod netns");
            let rt = runtime_conf(&format!("soak-leak-{backend}"), &pod, Some(backend));
            (pod, rt, backend)
        })
        .collect();
    for (_, rt, backend) in &pods {
        let list = soak.lists[*backend].clone();
        soak.op(None, |r| r.add(&list, rt)).0.expect("ADD");
    }
    let leaks = soak.leaks(&pods[0].0).expect("read the leftovers");
    for expected in [
        "link: cali",
        "link: bwp",
        "route: 172.31.0.",
        "route: fd00:172:31::",
        "qdisc: cali",
        "qdisc: bwp",
        "iptables nat: v4 :CNI-DN-",
        "iptables nat: v6 -A CNI-HOSTPORT-DNAT ",
        "nft rule: ip hostports",
        "nft rule: ip6 hostports",
        "address 172.31.0.",
        "address fd00:172:31::",
        "handle soak-net.soak-leak-0",
        "handle soak-net.soak-leak-1",
        "workload endpoint",
        "interface eth0 in the pod",
        "cached result soak-net-soak-leak-0-eth0",
    ] {
        assert!(
            leaks.iter().any(|l| l.starts_with(expected)),
            "no leftover starting with {expected:?} among:\n{}",
            leaks.join("\n")
        );
    }
    for (_, rt, backend) in &pods {
        let list = soak.lists[*backend].clone();
        soak.op(None, |r| r.del(&list, rt)).0.expect("DEL");
    }
    for (pod, _, _) in &pods {
        let leaks = soak.leaks(pod).expect("read the leftovers");
        assert!(leaks.is_empty(), "after DEL:\n{}", leaks.join("\n"));
    }
}

/// How many ADDs an orphan scenario may take to catch the child: the harness finds it by
/// polling /proc, and a short-lived child on a loaded machine can finish between two looks.
const ORPHAN_ATTEMPTS: usize = 20;

/// Kills `parent` running ADD as soon as it has started `child`, which the scheduler holds
/// back meanwhile (it is stopped); the runtime's DEL comes and goes; then `child` runs.
/// Returns what is left behind afterwards.
fn orphan_scenario(backend: usize, parent: &str, child: &str) -> Vec<String> {
    let mut soak = Soak::new(0, 0);
    let pod = TestNetns::new("soak-pod").expect("pod netns");
    let rt = runtime_conf(&format!("soak-orphan-{parent}"), &pod, Some(0));
    let list = soak.lists[backend].clone();
    let mut attempt = 0;
    let kill = loop {
        attempt += 1;
        let arm = Arm {
            action: Action::StopChildThenKill(child.to_string()),
            ..Arm::kill(parent, "ADD", Duration::ZERO)
        };
        let (added, log) = soak.op(Some(arm), |r| r.add(&list, &rt));
        let kill = log.kill.expect("the parent started");
        if kill.delivered {
            assert!(added.is_err(), "ADD fails when {parent} is killed");
            break kill;
        }
        // The child came and went unseen: undo this ADD, which must leave nothing, and try
        // again.
        assert!(
            attempt < ORPHAN_ATTEMPTS,
            "{child} was never caught running under {parent} in {attempt} ADDs"
        );
        soak.op(None, |r| r.del(&list, &rt))
            .0
            .expect("DEL of an uninterrupted ADD");
        let leaks = soak.leaks(&pod).expect("read the leftovers");
        assert!(leaks.is_empty(), "after ADD and DEL:\n{}", leaks.join("\n"));
    };
    soak.op(None, |r| r.del(&list, &rt))
        .0
        .expect("DEL after the kill");

    resume(&kill);
    // Bounded only so that a hung process cannot hang the suite; how long it takes does
    // not matter.
    let deadline = Instant::now() + Duration::from_secs(30);
    while still_running(&kill) {
        assert!(
            Instant::now() < deadline,
            "{child} (pid {}) still runs",
            kill.pid
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    soak.leaks(&pod).expect("read the leftovers")
}

/// calico is killed while the calico-ipam it started has not reached the datastore yet.
/// Once the pod's DEL is done, that calico-ipam must not allocate: nothing would ever
/// release the address.
#[test]
fn soak_calico_killed_before_its_ipam_plugin_ran_leaks_no_address() {
    let leaks = orphan_scenario(0, "calico", "calico-ipam");
    assert!(
        leaks.is_empty(),
        "left behind by a calico-ipam that outlived calico:\n{}",
        leaks.join("\n")
    );
}

/// portmap (iptables) is killed while its iptables-restore has the rules but has not
/// committed them. Once the pod's DEL is done, they must not appear.
#[test]
fn soak_portmap_killed_before_its_iptables_restore_ran_leaks_no_rule() {
    // comm holds 15 bytes of the name.
    let leaks = orphan_scenario(0, "portmap", "iptables-restor");
    assert!(
        leaks.is_empty(),
        "left behind by an iptables-restore that outlived portmap:\n{}",
        leaks.join("\n")
    );
}

//! The runtime's DEL removes whatever an ADD made, whatever the input: the whole chain
//! (calico + calico-ipam on the `local` datastore, portmap, bandwidth) is run with inputs as
//! Go programs write them (Go field names, `null` capabilities, upper-case keys) and with
//! inputs that make a plugin refuse ADD half-way (an unusable host port, a mistyped key, a
//! rate without a burst, an MTU written as a float), each alone and then in random
//! combinations, DEL sometimes given a `runtimeConfig` of its own. An ADD that Go's plugins
//! accept must succeed; one they refuse must fail; DEL must succeed every time and leave
//! nothing: no link, route, qdisc, IFB, NAT rule, allocation, handle, endpoint or cached
//! result. `ODD_INPUTS_SEED` replays the random part (the seed is printed). Needs root.

use cni_tests::fixtures::plugin_dir;
use cni_tests::ipam::{merge, Backend, IpamFixture};
use cni_tests::pod::{link_names, Node};
use cni_tests::soak::{files_in, store_leaks, NodeState, Rng};
use cni_tests::{ConfList, Runner, RuntimeConf, TestNetns};
use serde_json::{json, Value};

const NET: &str = "odd-net";
const NODE: &str = "odd-node";
const POOL4: &str = "172.30.7.0/24";
const POOL6: &str = "fd00:172:30:7::/120";
const RANDOM_ROUNDS: usize = 10;

/// One attachment's input: the chain's plugin entries and the runtime's capability args
/// for ADD and for DEL.
#[derive(Debug, Clone)]
struct Input {
    calico: Value,
    portmap: Value,
    bandwidth: Value,
    port_mappings: Value,
    bandwidth_cap: Value,
    /// `Some`: DEL's capability args differ from ADD's (portMappings, bandwidth).
    del_caps: Option<(Value, Value)>,
}

/// One oddity: its name, whether Go's plugins would still accept the ADD, the parts of the
/// input it changes (bits: so that a combination never has two oddities overwrite each
/// other), and the change.
type Oddity = (&'static str, bool, u8, fn(&mut Input));

const PORTS: u8 = 1;
const RATES: u8 = 2;
const CALICO: u8 = 4;
const PORTMAP: u8 = 8;
const BANDWIDTH: u8 = 16;
const DEL: u8 = 32;

const ODDITIES: &[Oddity] = &[
    ("containerd's Go field names", true, PORTS | RATES, |i| {
        i.port_mappings =
            json!([{"HostPort": 18081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]);
        i.bandwidth_cap = json!({"IngressRate": 10_000_000, "IngressBurst": 4294967295u64,
                                 "EgressRate": 20_000_000, "EgressBurst": 4294967295u64});
    }),
    ("null capabilities", true, PORTS | RATES, |i| {
        i.port_mappings = Value::Null;
        i.bandwidth_cap = Value::Null;
    }),
    (
        "upper-case and unknown keys",
        true,
        CALICO | PORTMAP | BANDWIDTH,
        |i| {
            i.calico["MTU"] = json!(1400);
            i.calico["frobnicate"] = json!({"x": [1, 2]});
            i.portmap["SNAT"] = json!(false);
            i.bandwidth["Extra"] = json!("ignored");
        },
    ),
    ("a hostIP that is no address", false, PORTS, |i| {
        i.port_mappings = json!([{"hostPort": 18082, "containerPort": 80, "hostIP": "nope"}]);
    }),
    ("a host port as a string", false, PORTS, |i| {
        i.port_mappings = json!([{"hostPort": "18083", "containerPort": 80}]);
    }),
    ("a host port out of range", false, PORTS, |i| {
        i.port_mappings = json!([{"hostPort": 70000, "containerPort": 80}]);
    }),
    ("portMappings that are no list", false, PORTS, |i| {
        i.port_mappings = json!({"hostPort": 18084});
    }),
    ("a rate without a burst", false, RATES, |i| {
        i.bandwidth_cap = json!({"ingressRate": 1000});
    }),
    ("a mistyped static rate", false, BANDWIDTH, |i| {
        i.bandwidth["ingressRate"] = json!("fast");
    }),
    ("a mistyped snat", false, PORTMAP, |i| {
        i.portmap["snat"] = json!("yes");
    }),
    ("a mark bit out of range", false, PORTMAP, |i| {
        i.portmap["markMasqBit"] = json!(40);
    }),
    ("an MTU written as a float", false, CALICO, |i| {
        i.calico["mtu"] = json!(1400.0);
    }),
    ("DEL with capabilities of its own", true, DEL, |i| {
        i.del_caps = Some((json!("garbage"), json!(5)));
    }),
];

struct Chain {
    node: Node,
    store: IpamFixture,
    baseline: NodeState,
}

impl Chain {
    fn new() -> Chain {
        let node = Node::new();
        let store = IpamFixture::new(Backend::Local);
        store.create_pool(POOL4, 26);
        store.create_pool(POOL6, 122);
        let baseline = NodeState::read(&node.netns).expect("read the node");
        Chain {
            node,
            store,
            baseline,
        }
    }

    fn input(&self) -> Input {
        let nodename_file = self.node.dir.path().join("odd-nodename");
        std::fs::write(&nodename_file, NODE).expect("nodename file");
        let mut calico = json!({
            "type": "calico",
            "log_level": "debug",
            "log_file_path": self.node.dir.path().join("plugins.log"),
            "nodename": NODE,
            "nodename_file": nodename_file,
            "mtu_file": self.node.mtu_file(),
            "ipam_lock_file": self.store.lock_file(NODE),
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true",
                     "ipv4_pools": [POOL4], "ipv6_pools": [POOL6]},
        });
        merge(&mut calico, &self.store.datastore_keys());
        Input {
            calico,
            portmap: json!({"type": "portmap", "snat": true,
                            "capabilities": {"portMappings": true}}),
            bandwidth: json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            port_mappings: json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
            bandwidth_cap: json!({"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                                  "egressRate": 20_000_000, "egressBurst": 2_000_000}),
            del_caps: None,
        }
    }

    /// ADD then DEL of `input`; panics (naming `what`) unless ADD's outcome is `accepted`,
    /// DEL succeeds and nothing is left.
    fn add_and_del(&self, round: usize, what: &str, input: &Input, accepted: bool) {
        let list = ConfList::from_bytes(
            json!({
                "cniVersion": "1.0.0",
                "name": NET,
                "plugins": [input.calico, input.portmap, input.bandwidth],
            })
            .to_string()
            .as_bytes(),
        )
        .expect("conflist");
        let pod = TestNetns::new("odd-pod").expect("pod netns");
        let id = format!("odd-{round:03}-{}", std::process::id());
        let rt = |caps: (&Value, &Value)| {
            RuntimeConf::new(&id, pod.path_str(), "eth0")
                .with_capability("portMappings", caps.0.clone())
                .with_capability("bandwidth", caps.1.clone())
        };
        let runner = Runner::new(vec![plugin_dir()], self.node.dir.cache_dir())
            .host_netns(Some(self.node.netns.path().to_path_buf()));
        let add_rt = rt((&input.port_mappings, &input.bandwidth_cap));
        let added = runner.add(&list, &add_rt);
        let log = || std::fs::read_to_string(self.node.dir.path().join("plugins.log"));
        match (&added, accepted) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(_), false) => panic!("{what}: ADD succeeded; Go's plugins refuse it"),
            (Err(e), true) => panic!("{what}: ADD failed: {e}\n{:?}", log()),
        }
        if added.is_ok() {
            // What was accepted was read: a DNAT for each host port, a TBF for the rates.
            let state = NodeState::read(&self.node.netns).expect("read the node");
            let ports = input.port_mappings.as_array().map_or(0, Vec::len);
            let dnat = state.nat.iter().filter(|l| l.contains("DNAT")).count();
            assert_eq!(dnat > 0, ports > 0, "{what}: DNAT rules {:?}", state.nat);
            let shaped = state.qdiscs.iter().any(|q| q.contains(" tbf "));
            assert_eq!(
                shaped,
                !input.bandwidth_cap.is_null(),
                "{what}: {:?}",
                state.qdiscs
            );
        }
        if let Err(e) = &added {
            let code = e.cni_error().map(|c| c.code.as_u32());
            assert!(
                code.is_some_and(|c| c != 999),
                "{what}: ADD's error has no CNI code: {e}"
            );
        }
        let del_rt = match &input.del_caps {
            Some((p, b)) => rt((p, b)),
            None => add_rt,
        };
        if let Err(e) = runner.del(&list, &del_rt) {
            panic!("{what}: DEL failed: {e}\n{:?}", log());
        }
        let mut leaks = NodeState::read(&self.node.netns)
            .expect("read the node")
            .leaks_since(&self.baseline);
        leaks.extend(store_leaks(&self.store.snapshot()));
        leaks.extend(
            link_names(&pod)
                .into_iter()
                .filter(|l| l != "lo")
                .map(|l| format!("interface {l} in the pod")),
        );
        leaks.extend(
            files_in(&self.node.dir.cache_dir().join("results"))
                .iter()
                .map(|c| format!("cached result {c}")),
        );
        assert!(
            leaks.is_empty(),
            "{what}: left after DEL:\n  {}",
            leaks.join("\n  ")
        );
    }
}

#[test]
fn every_odd_input_alone_is_removed_by_del() {
    let chain = Chain::new();
    for (round, (what, accepted, _, apply)) in ODDITIES.iter().enumerate() {
        let mut input = chain.input();
        apply(&mut input);
        chain.add_and_del(round, what, &input, *accepted);
    }
}

#[test]
fn random_combinations_of_odd_inputs_are_removed_by_del() {
    let seed = std::env::var("ODD_INPUTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("ODD_INPUTS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let chain = Chain::new();
    for round in 0..RANDOM_ROUNDS {
        let mut input = chain.input();
        let mut names = Vec::new();
        let mut accepted = true;
        let mut touched = 0;
        for _ in 0..=rng.below(3) {
            let (what, ok, touches, apply) = rng.pick(ODDITIES);
            if touched & touches != 0 {
                continue;
            }
            touched |= touches;
            apply(&mut input);
            names.push(*what);
            accepted &= ok;
        }
        let what = format!(
            "ODD_INPUTS_SEED={seed} round {round}: {}",
            names.join(" + ")
        );
        chain.add_and_del(100 + round, &what, &input, accepted);
    }
}

//! Lays out a large cluster in a datastore, for the scale rows of `scripts/bench.sh`: the
//! layout of `tests/cluster_growth.rs` around `NODE`'s first IPv4 block, which the node must
//! already have (one ADD claims it).
//!
//! `grow_cluster fill|grow local|etcdv3|kubernetes DIR|URL|KUBECONFIG NODE`: `fill` brings
//! the node's first block to 40 addresses (the small cluster), `grow` adds the rest. On
//! etcd the other nodes' Node objects are written too; on Kubernetes they are not (no ADD
//! reads another node's Node).

#[path = "../tests/cluster_growth.rs"]
mod growth;

use std::path::Path;

use calico_ipam::k8s::KubeSettings;
use calico_ipam::store::codec;
use calico_ipam::store::etcd::{EtcdConfig, EtcdKv};
use calico_ipam::store::kube::KubeStore;
use calico_ipam::store::kv::Kv;
use calico_ipam::store::local::local_store;
use calico_ipam::store::Store;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [step, kind, place, node] = args.as_slice() else {
        eprintln!("usage: grow_cluster fill|grow local|etcdv3|kubernetes DIR|URL|KUBECONFIG NODE");
        std::process::exit(2);
    };
    let grow = step == "grow";
    match kind.as_str() {
        "local" => lay_out(
            &local_store(Path::new(place)).expect("local store"),
            node,
            grow,
            &mut |_| {},
        ),
        "etcdv3" => {
            let store = EtcdKv::store(&EtcdConfig::new(vec![place.clone()])).expect("etcd store");
            let mut register = |name: &str| {
                let object = serde_json::json!({"kind": "Node", "apiVersion": "projectcalico.org/v3",
                                                "metadata": {"name": name}, "spec": {}});
                store
                    .kv
                    .create(&codec::node_key(name), object.to_string().as_bytes())
                    .expect("node");
            };
            lay_out(&store, node, grow, &mut register);
        }
        "kubernetes" => {
            let settings = KubeSettings {
                kubeconfig: Some(place.clone()),
                ..KubeSettings::default()
            };
            lay_out(
                &KubeStore::connect(&settings).expect("kubernetes store"),
                node,
                grow,
                &mut |_| {},
            );
        }
        other => {
            eprintln!("grow_cluster: unknown datastore {other}");
            std::process::exit(2);
        }
    }
}

fn lay_out(store: &dyn Store, node: &str, grow: bool, register: &mut dyn FnMut(&str)) {
    let first = store
        .list_affinities("host", node, true)
        .expect("list affinities")
        .first()
        .map(|a| a.value.cidr)
        .unwrap_or_else(|| panic!("{node} has no block yet: run one ADD first"));
    if grow {
        growth::grow(store, node, first, register);
    } else {
        growth::fill_first(store, node, first);
    }
}

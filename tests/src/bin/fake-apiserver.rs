//! `fake-apiserver DIR [--node NAME]... [--pool CIDR]...`: the tests' fake Kubernetes API
//! server as a process, for benchmarks and for trying the Kubernetes datastore by hand.
//! Writes `DIR/kubeconfig`, seeds a ready ClusterInformation, the named Nodes and IPPools
//! (block size 26 / 122), prints the server's URL and serves until killed.

use std::process::ExitCode;

use cni_tests::kube_api::FakeApiServer;
use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: fake-apiserver DIR [--node NAME]... [--pool CIDR]...");
        return ExitCode::FAILURE;
    };
    let server = FakeApiServer::start();
    server.put(
        "clusterinformations",
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "ClusterInformation",
               "metadata": {"name": "default"},
               "spec": {"datastoreReady": true, "clusterType": "k8s,bgp,kdd"}}),
    );
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else {
            eprintln!("fake-apiserver: {flag} needs a value");
            return ExitCode::FAILURE;
        };
        match flag.as_str() {
            "--node" => {
                server.put(
                    "nodes",
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": value}}),
                );
            }
            "--pool" => {
                let block_size = if value.contains(':') { 122 } else { 26 };
                server.put(
                    "ippools",
                    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                           "metadata": {"name": value.replace(['.', ':', '/'], "-")},
                           "spec": {"cidr": value, "blockSize": block_size,
                                    "ipipMode": "Never", "vxlanMode": "Never",
                                    "natOutgoing": true, "nodeSelector": "all()"}}),
                );
            }
            other => {
                eprintln!("fake-apiserver: unknown option {other}");
                return ExitCode::FAILURE;
            }
        }
    }
    let kubeconfig = server.kubeconfig(std::path::Path::new(dir));
    println!("{} {}", server.url(), kubeconfig.display());
    loop {
        std::thread::park();
    }
}

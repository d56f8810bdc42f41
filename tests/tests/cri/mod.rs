//! The kubelet's side of the CRI, for the tests: a containerd of the test's own with its CRI
//! plugin on, a pause image built from Debian's static busybox and imported with `ctr`, and
//! a gRPC client (`k8s-cri` over tonic) that runs pod sandboxes as the kubelet does.
//!
//! containerd's CRI plugin runs the conflist in the test's conf dir with the plugins of the
//! test's bin dir, exactly as on a node: it builds `runtimeConfig` from the sandbox's port
//! mappings and bandwidth annotations, names the network namespace it creates under
//! `/var/run/netns`, and runs DEL itself when an ADD fails. Everything it keeps in fixed
//! places (`/run`, `/var/lib/cni`) is private to the test (see `cni_tests::runtime`).
//!

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use cni_tests::fixtures::unique_name;
use cni_tests::runtime::{
    busybox, checked, output, remove_cgroup_tree, retry, spawn_containerd, stop_child,
    PrivateMounts, RuntimeError, SpawnedContainerd, STEP_LIMIT,
};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PortMapping, Protocol,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

/// The sandbox ("pause") image the CRI plugin is configured with.
pub const PAUSE_IMAGE: &str = "docker.io/cni-test/pause:1";

fn setup(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Setup(what.to_string())
}

/// An OCI image layout tar at `<dir>/pause.tar`: one layer with `/bin/busybox`, an
/// entrypoint that sleeps until the runtime kills it, named [`PAUSE_IMAGE`].
pub fn pause_image(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let work = dir.join("pause-image");
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    for d in [rootfs.join("bin"), blobs.clone()] {
        fs::create_dir_all(&d).map_err(|e| setup(format!("create {}: {e}", d.display())))?;
    }
    fs::copy(busybox()?, rootfs.join("bin/busybox"))
        .map_err(|e| setup(format!("copy busybox: {e}")))?;
    let layer_tar = work.join("layer.tar");
    checked(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer_tar)
            .arg("."),
    )?;
    let layer = fs::read(&layer_tar).map_err(|e| setup(format!("read the layer: {e}")))?;
    let blob = |bytes: &[u8]| -> Result<(String, usize), RuntimeError> {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let file = blobs.join(digest.trim_start_matches("sha256:"));
        fs::write(&file, bytes).map_err(|e| setup(format!("write a blob: {e}")))?;
        Ok((digest, bytes.len()))
    };
    let (layer_digest, layer_size) = blob(&layer)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = blob(config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                            "org.opencontainers.image.ref.name": "1"}
        }]
    });
    for (name, body) in [
        ("index.json", index.to_string()),
        (
            "oci-layout",
            json!({"imageLayoutVersion": "1.0.0"}).to_string(),
        ),
    ] {
        fs::write(layout.join(name), body).map_err(|e| setup(format!("write {name}: {e}")))?;
    }
    let tar = dir.join("pause.tar");
    checked(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .args(["oci-layout", "index.json", "blobs"]),
    )?;
    Ok(tar)
}

/// A containerd of the test's own with the CRI plugin on: root, state and sockets under the
/// test's directory, the CNI conf and bin dirs the test's, the native snapshotter (no
/// overlay of overlays), and `/run` and `/var/lib/cni` private. It runs inside the node
/// network namespace, so the plugins it execs see the node.
pub struct CriContainerd {
    node: PathBuf,
    dir: PathBuf,
    address: PathBuf,
    daemon: Option<Child>,
    mounts: PrivateMounts,
    /// The pod cgroups' parent, removed on drop.
    pub cgroup_parent: String,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl CriContainerd {
    pub fn start(
        node: &Path,
        dir: &Path,
        cni_bin: &Path,
        net_d: &Path,
    ) -> Result<CriContainerd, RuntimeError> {
        let dir = dir.join("containerd-cri");
        let q = |p: &Path| json!(p).to_string();
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        // The CRI plugin's tables, after the common ones.
        let cri_config = format!(
            "[{cri}]\n\
               sandbox_image = \"{PAUSE_IMAGE}\"\n\
               stream_server_address = \"127.0.0.1\"\n\
               stream_server_port = \"0\"\n\
               disable_apparmor = true\n\
               restrict_oom_score_adj = true\n\
             [{cri}.containerd]\n\
               snapshotter = \"native\"\n\
               default_runtime_name = \"runc\"\n\
             [{cri}.containerd.runtimes.runc]\n\
               runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.cni]\n\
               bin_dir = {bin}\n\
               conf_dir = {conf}\n\
               max_conf_num = 1\n",
            bin = q(cni_bin),
            conf = q(net_d),
        );
        let SpawnedContainerd {
            address,
            log_path,
            mounts,
            daemon,
        } = spawn_containerd(node, &dir, ("", &cri_config), Vec::new())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(format!("tokio runtime: {e}")))?;
        let mut daemon = Some(daemon);
        let daemon_log = || fs::read_to_string(&log_path).unwrap_or_default();
        let socket = address.clone();
        let client = retry("containerd's CRI answering", STEP_LIMIT, || {
            if let Some(Ok(Some(status))) = daemon.as_mut().map(Child::try_wait) {
                return Ok(Err(status));
            }
            runtime
                .block_on(connect(&socket))
                .map(Ok)
                .map_err(|e| e.to_string())
        });
        let client = match client {
            Ok(Ok(client)) => client,
            Ok(Err(status)) => {
                return Err(RuntimeError::Failed {
                    command: "containerd".into(),
                    status: status.to_string(),
                    stdout: String::new(),
                    stderr: daemon_log(),
                })
            }
            Err(e) => {
                if let Some(mut d) = daemon.take() {
                    stop_child(&mut d, "containerd", STEP_LIMIT);
                }
                return Err(setup(format!("{e}\ncontainerd log:\n{}", daemon_log())));
            }
        };
        Ok(CriContainerd {
            node: node.to_path_buf(),
            dir,
            address,
            daemon,
            mounts,
            cgroup_parent: unique_name("/cni-cri-test"),
            runtime,
            client,
        })
    }

    /// `ctr --address <ours> --namespace k8s.io <args>` in the private namespaces.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = self.mounts.command(&self.node, "ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .args(["--namespace", "k8s.io"])
            .args(args);
        cmd
    }

    /// Imports the pause image (built by [`pause_image`]) into the CRI's namespace.
    pub fn import_pause(&self, tar: &Path) -> Result<(), RuntimeError> {
        let tar = tar.display().to_string();
        checked(&mut self.ctr(&["images", "import", "--snapshotter", "native", &tar]))?;
        let list = checked(&mut self.ctr(&["images", "ls", "--quiet"]))?;
        if !list.lines().any(|l| l.trim() == PAUSE_IMAGE) {
            return Err(setup(format!("{PAUSE_IMAGE} not imported: {list}")));
        }
        Ok(())
    }

    /// The network namespace files the CRI plugin holds (`/var/run/netns`, private).
    pub fn netns_files(&self) -> Vec<String> {
        let mut cmd = self.mounts.command(&self.node, "ls");
        cmd.args(["-1", "/run/netns"]);
        match output(&mut cmd) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// What libcni cached for the sandboxes (`/var/lib/cni`, private).
    pub fn cni_cache(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A pod sandbox config as the kubelet writes one.
    pub fn pod(&self, pod: &PodSpec) -> PodSandboxConfig {
        let log_dir = self.dir.join("pod-logs").join(&pod.name);
        let _ = fs::create_dir_all(&log_dir);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: pod.attempt,
            }),
            hostname: pod.name.clone(),
            log_directory: log_dir.display().to_string(),
            port_mappings: pod.ports.clone(),
            labels: HashMap::from([("app".to_string(), pod.name.clone())]),
            annotations: pod.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    /// RunPodSandbox: the sandbox id, or the status containerd answered with.
    pub fn run_pod_sandbox(&mut self, pod: &PodSpec) -> Result<String, tonic::Status> {
        let config = self.pod(pod);
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let client = &mut self.client;
        self.runtime
            .block_on(client.run_pod_sandbox(request))
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// PodSandboxStatus, verbose: the IPs containerd reports and its `info` JSON.
    pub fn status(&mut self, id: &str) -> Result<SandboxStatus, tonic::Status> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let client = &mut self.client;
        let response = self
            .runtime
            .block_on(client.pod_sandbox_status(request))?
            .into_inner();
        let network = response.status.and_then(|s| s.network).unwrap_or_default();
        let mut ips: Vec<String> = vec![network.ip];
        ips.extend(network.additional_ips.into_iter().map(|p| p.ip));
        ips.retain(|ip| !ip.is_empty());
        let info = response
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        Ok(SandboxStatus { ips, info })
    }

    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let client = &mut self.client;
        self.runtime
            .block_on(client.stop_pod_sandbox(request))
            .map(|_| ())
    }

    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let client = &mut self.client;
        self.runtime
            .block_on(client.remove_pod_sandbox(request))
            .map(|_| ())
    }

    /// The sandboxes containerd still knows.
    pub fn sandboxes(&mut self) -> Vec<String> {
        let request = k8s_cri::v1::ListPodSandboxRequest { filter: None };
        let client = &mut self.client;
        self.runtime
            .block_on(client.list_pod_sandbox(request))
            .map(|r| r.into_inner().items.into_iter().map(|s| s.id).collect())
            .unwrap_or_default()
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        // What a failed test left: the kubelet would stop and remove it, so do we.
        for id in self.sandboxes() {
            let _ = self.stop_pod_sandbox(&id);
            let _ = self.remove_pod_sandbox(&id);
        }
        if let Some(mut daemon) = self.daemon.take() {
            stop_child(&mut daemon, "containerd", STEP_LIMIT);
        }
        // The shims outlive containerd until their tasks are gone; they were killed above.
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, String> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = RuntimeServiceClient::new(channel);
    // containerd serves the socket before its CRI plugin is up; Version answers once it is.
    client
        .version(k8s_cri::v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// What the kubelet knows of a pod when it asks for its sandbox.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub ports: Vec<PortMapping>,
    pub annotations: HashMap<String, String>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: format!("{:x}", Sha256::digest(unique_name(name).as_bytes()))[..32].to_string(),
            ..PodSpec::default()
        }
    }

    pub fn port(mut self, protocol: Protocol, container: i32, host: i32, host_ip: &str) -> Self {
        self.ports.push(PortMapping {
            protocol: protocol as i32,
            container_port: container,
            host_port: host,
            host_ip: host_ip.to_string(),
        });
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}

/// PodSandboxStatus as the tests read it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub ips: Vec<String>,
    pub info: Value,
}

impl SandboxStatus {
    /// The pause process, whose network namespace is the pod's.
    pub fn pid(&self) -> Option<u64> {
        self.info["pid"].as_u64()
    }
}

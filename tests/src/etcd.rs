//! Real etcd servers for datastore tests: Debian's `etcd` on free loopback ports with a
//! throwaway data directory, killed and removed on drop (panics included).
//!
//! - [`EtcdServer`]: one member, plain HTTP or TLS with client certificates ([`TestPki`]);
//! - [`EtcdCluster`]: several members with a static `--initial-cluster`, one of which a test
//!   can kill to check the client survives it.
//!
//! Every URL is `127.0.0.1:<port>`: nothing listens beyond the loopback. Readiness is
//! polled on a plain-HTTP metrics listener (`/health`), so it works the same with TLS on the
//! client port.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::json;

use crate::fixtures::unique_name;

/// Overrides where the etcd binary is.
pub const ETCD_BIN_ENV: &str = "CNI_TEST_ETCD";
/// Debian's `etcd-server` package.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// A cluster on a loaded machine (tests start many at once) elects a leader in a few
/// seconds; past this something is wrong.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports are picked free and then handed to etcd: another process can take one in between.
const START_ATTEMPTS: usize = 5;

fn etcd_bin() -> PathBuf {
    std::env::var_os(ETCD_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN))
}

/// Whether an etcd binary is there to run.
pub fn etcd_available() -> bool {
    etcd_bin().is_file()
}

/// Server and client certificates for a TLS etcd, signed by a throwaway CA (made with the
/// `openssl` command). The server certificate is for `IP:127.0.0.1`.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> io::Result<TestPki> {
        let pki = TestPki {
            dir: tempfile::Builder::new().prefix("etcd-pki-").tempdir()?,
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        pki.openssl(&[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=test-ca",
                "-days",
                "1",
            ],
        ])?;
        for (name, usage, san) in [
            // etcd's JSON gateway dials etcd's own gRPC port presenting the server
            // certificate as a client one: it needs both usages.
            (
                "server",
                "serverAuth,clientAuth",
                "subjectAltName=IP:127.0.0.1\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            std::fs::write(
                pki.dir.path().join(format!("{name}.ext")),
                format!("{san}extendedKeyUsage={usage}\n"),
            )?;
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subj = format!("/CN={name}");
            pki.openssl(&[
                &["req"],
                &ec[..],
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ])?;
            pki.openssl(&[&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ]])?;
        }
        Ok(pki)
    }

    fn openssl(&self, parts: &[&[&str]]) -> io::Result<()> {
        let args: Vec<&str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

/// One etcd process.
#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    metrics_addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// `n` distinct loopback ports, all free at once a moment ago.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // Holding every listener until all are picked keeps the kernel from handing out the
    // same port twice.
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// `GET /health` on the plain-HTTP metrics listener says the member has a leader.
fn healthy(addr: SocketAddr) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.replace(' ', "").contains("\"health\":\"true\""))
    };
    attempt().unwrap_or(false)
}

/// A set of etcd members forming one cluster; every process is killed and every data
/// directory removed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    // Dropped after `members` (field order), so the processes are gone before their data.
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each has a leader.
    pub fn start(size: usize) -> io::Result<EtcdCluster> {
        EtcdCluster::start_with(size, None)
    }

    fn start_with(size: usize, pki: Option<&TestPki>) -> io::Result<EtcdCluster> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::spawn(size, pki)?;
            match cluster.wait_ready() {
                Ok(()) => return Ok(cluster),
                // Someone took a port between the pick and the bind: pick again.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    fn spawn(size: usize, pki: Option<&TestPki>) -> io::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("etcd-").tempdir()?;
        let ports = free_ports(3 * size)?;
        let token = unique_name("cni-test-etcd");
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut members: Vec<Member> = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| Member {
                name: format!("m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", p[0]),
                peer_url: format!("http://127.0.0.1:{}", p[1]),
                metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, p[2])),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
        };
        for mut m in members.drain(..) {
            let data_dir = cluster.dir.path().join(&m.name);
            let log = File::create(&m.log)?;
            let mut cmd = Command::new(etcd_bin());
            // etcd reads ETCD_* variables as flags: keep the test's environment out.
            cmd.env_clear()
                .arg(format!("--name={}", m.name))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls={}", m.client_url))
                .arg(format!("--advertise-client-urls={}", m.client_url))
                .arg(format!("--listen-peer-urls={}", m.peer_url))
                .arg(format!("--initial-advertise-peer-urls={}", m.peer_url))
                .arg(format!("--listen-metrics-urls=http://{}", m.metrics_addr))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .arg(format!("--initial-cluster-token={token}"))
                .arg("--initial-cluster-state=new")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if let Some(pki) = pki {
                cmd.arg(format!("--cert-file={}", pki.server_cert().display()))
                    .arg(format!("--key-file={}", pki.server_key().display()))
                    .arg(format!("--trusted-ca-file={}", pki.ca().display()))
                    .arg("--client-cert-auth");
            }
            m.child = Some(cmd.spawn()?);
            // Registered at once, so a failure further on still kills what started.
            cluster.members.push(m);
        }
        Ok(cluster)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for m in &mut self.members {
                if let Some(child) = m.child.as_mut() {
                    if let Some(status) = child.try_wait()? {
                        let tail = m.log_tail();
                        let kind = if tail.contains("address already in use") {
                            io::ErrorKind::AddrInUse
                        } else {
                            io::ErrorKind::Other
                        };
                        return Err(io::Error::new(
                            kind,
                            format!("etcd {} exited ({status}):\n{tail}", m.name),
                        ));
                    }
                }
            }
            if self.members.iter().all(|m| healthy(m.metrics_addr)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}:\n{}", m.name, m.log_tail()))
                    .collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd not ready in {READY_TIMEOUT:?}\n{}", logs.join("\n")),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL, in member order (killed ones included).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URLs as `etcd_endpoints` spells them.
    pub fn endpoints(&self) -> String {
        self.client_urls().join(",")
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Kills member `i` (SIGKILL, no goodbye to its peers); its URL stays in the list.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(m) = self.members.get_mut(i) {
            m.kill();
        }
    }

    /// The last lines of member `i`'s log, for a failing test's message.
    pub fn log_tail(&self, i: usize) -> String {
        self.members
            .get(i)
            .map(Member::log_tail)
            .unwrap_or_default()
    }

    /// Where the members' data and logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// One etcd member on its own.
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Plain HTTP on `127.0.0.1:<port>`.
    pub fn start() -> io::Result<EtcdServer> {
        Ok(EtcdServer {
            cluster: EtcdCluster::start_with(1, None)?,
        })
    }

    /// HTTPS with `pki`'s server certificate, and only clients with a certificate from
    /// `pki`'s CA accepted.
    pub fn start_tls(pki: &TestPki) -> io::Result<EtcdServer> {
        Ok(EtcdServer {
            cluster: EtcdCluster::start_with(1, Some(pki))?,
        })
    }

    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn client_url(&self) -> String {
        self.cluster.client_urls().remove(0)
    }

    /// Kills the process; the data stays until drop.
    pub fn kill(&mut self) {
        self.cluster.kill_member(0);
    }

    pub fn log_tail(&self) -> String {
        self.cluster.log_tail(0)
    }
}

/// etcd's own users and roles, set up as an operator would for Calico: `root` (etcd will
/// not enable authentication without it), and `user` with a role that may read and write
/// the keys under `prefix` and nothing else; then authentication is switched on.
pub fn enable_auth(
    url: &str,
    root_password: &str,
    user: &str,
    password: &str,
    prefix: &str,
) -> Result<(), String> {
    use crate::ipam::etcd_post;
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let steps = [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": root_password}),
        ),
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": user, "password": password}),
        ),
        ("/v3/auth/role/add", json!({"name": user})),
        (
            "/v3/auth/role/grant",
            json!({"name": user, "perm": {"permType": "READWRITE",
                   "key": B64.encode(prefix), "range_end": B64.encode(&end)}}),
        ),
        ("/v3/auth/user/grant", json!({"user": user, "role": user})),
        ("/v3/auth/enable", json!({})),
    ];
    for (path, body) in steps {
        etcd_post(url, path, &body)?;
    }
    Ok(())
}

/// A token for `user` on an etcd with authentication enabled.
pub fn auth_token(url: &str, user: &str, password: &str) -> Result<String, String> {
    let answer = crate::ipam::etcd_post(
        url,
        "/v3/auth/authenticate",
        &json!({"name": user, "password": password}),
    )?;
    answer["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no token in {answer}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() {
        let mut ports = free_ports(6).expect("ports");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }

    #[test]
    fn a_server_answers_and_is_gone_after_drop() {
        if !etcd_available() {
            panic!("{DEFAULT_ETCD_BIN} missing: apt-get install -y etcd-server");
        }
        let server = EtcdServer::start().expect("etcd");
        let metrics = server.cluster.members[0].metrics_addr;
        let dir = server.cluster.dir().to_path_buf();
        assert!(healthy(metrics));
        drop(server);
        assert!(!healthy(metrics));
        assert!(!dir.exists());
    }
}

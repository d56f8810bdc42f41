//! Pieces of the crash-safety soak test: a seeded random source, a kill switch that SIGKILLs
//! one plugin process (or the IPAM plugin calico execs) at a chosen moment, and a view of a
//! node's state in which anything a pod left behind shows up.
//!
//! [`KillSwitch`] puts a wrapper script per plugin in a directory of its own, used as
//! CNI_PATH: the wrapper writes `<op> <pid> <plugin> <command>` to a FIFO and `exec`s the real
//! binary, so the pid it reports is the plugin's. That holds for plugins the runner starts
//! and for the ones they start themselves (calico finds calico-ipam on the same CNI_PATH). A
//! thread reads the FIFO and, when the armed plugin reports for the armed command, waits the
//! armed delay and kills it. The runner's environment carries the operation's number
//! (`SOAK_OP`), which every plugin passes on to the processes it starts, so a report left in
//! the FIFO by an earlier operation never triggers a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{mkfifo, Pid};
use serde_json::Value;

use crate::ipam::{allocations, blocks_of, handles_of};
use crate::pod::{link_names, routes, Family};
use crate::TestNetns;

/// The environment variable that carries the operation number to every plugin process.
pub const OP_ENV: &str = "SOAK_OP";

/// SplitMix64: small, seedable, and good enough to pick plugins and delays; the same seed
/// replays the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Uniform in `0..=max`, to the microsecond.
    pub fn delay(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.below(micros.saturating_add(1)))
    }
}

/// `$SOAK_SEED` when set (decimal or `0x` hex), else one from the clock and the pid.
pub fn seed_from_env() -> Result<u64, String> {
    match std::env::var("SOAK_SEED") {
        Ok(text) if !text.trim().is_empty() => {
            let t = text.trim();
            let parsed = match t.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.map_err(|e| format!("SOAK_SEED={text:?}: {e}"))
        }
        _ => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            Ok(nanos ^ (u64::from(std::process::id()) << 32))
        }
    }
}

/// What to kill in one operation: the first process of `plugin` running `command`, `delay`
/// after it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    pub plugin: String,
    pub command: String,
    pub delay: Duration,
    pub action: Action,
}

impl Arm {
    /// SIGKILL `plugin` running `command`, `delay` after it reported.
    pub fn kill(plugin: &str, command: &str, delay: Duration) -> Arm {
        Arm {
            plugin: plugin.to_string(),
            command: command.to_string(),
            delay,
            action: Action::Kill,
        }
    }
}

/// What the switch does to the armed process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Kill,
    /// Waits (without the delay) for the armed process to start a child whose command name
    /// (`comm`, at most 15 bytes) is this, SIGSTOPs the child and SIGKILLs the armed process:
    /// a child (calico-ipam, iptables-restore) that the scheduler holds back while its
    /// parent dies. The test lets it go on with [`resume`].
    StopChildThenKill(String),
}

/// A plugin process that reported during an operation, `at` after the operation began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub plugin: String,
    pub command: String,
    pub at: Duration,
}

/// What became of an armed kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub arm: Arm,
    /// SIGKILL reached the live process (not a zombie, not a reused pid).
    pub delivered: bool,
    /// The process acted on last (the stopped child for [`Action::StopChildThenKill`]), and
    /// its start time (which tells it from a later process with the same pid).
    pub pid: i32,
    pub start: Option<u64>,
}

/// How long a plugin process ran, from its report until it exited (to within
/// [`WATCH_INTERVAL`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    pub plugin: String,
    pub command: String,
    pub ran: Duration,
}

/// Everything one operation did, as the kill switch saw it.
#[derive(Debug, Clone, Default)]
pub struct OpLog {
    pub reports: Vec<Report>,
    pub kill: Option<Kill>,
    /// Of the processes that were not killed.
    pub lifetimes: Vec<Lifetime>,
    /// From [`KillSwitch::begin`] to [`KillSwitch::end`].
    pub took: Duration,
}

/// How often a watched process is looked at; small next to a plugin's run time.
pub const WATCH_INTERVAL: Duration = Duration::from_micros(250);

#[derive(Debug, Default)]
struct State {
    op: u64,
    started: Option<Instant>,
    arm: Option<Arm>,
    in_flight: bool,
    reports: Vec<Report>,
    kill: Option<Kill>,
    lifetimes: Vec<Lifetime>,
    /// Processes still being watched until they exit.
    watching: usize,
    /// The last end marker the reader has seen.
    synced: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the reader thread poisons the lock; the state itself stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See the module documentation. Dropping it stops the reader thread.
#[derive(Debug)]
pub struct KillSwitch {
    bin: PathBuf,
    fifo: File,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl KillSwitch {
    /// Wrappers for `plugins` (binaries of `real_dir`) in `<dir>/soak-bin`, the FIFO
    /// `<dir>/soak-reports`, and the reader thread.
    pub fn new(dir: &Path, real_dir: &Path, plugins: &[&str]) -> io::Result<KillSwitch> {
        let bin = dir.join("soak-bin");
        fs::create_dir_all(&bin)?;
        let fifo_path = dir.join("soak-reports");
        // A runtime hands its plugins its own stderr, a file: it never waits for a process
        // that inherited it (a pipe would make the runner wait for an orphaned calico-ipam,
        // and hide what happens when the runtime's DEL overtakes it).
        let stderr_path = dir.join("soak-stderr");
        mkfifo(&fifo_path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)?;
        for plugin in plugins {
            let real = real_dir.join(plugin);
            // printf is a builtin and one line is far below PIPE_BUF: one atomic write.
            let script = format!(
                "#!/bin/sh\n\
                 # Reports this process to the soak test's kill switch, then becomes the plugin.\n\
                 printf '%s %s %s %s\\n' \"${{{OP_ENV}:-0}}\" \"$$\" '{plugin}' \"${{CNI_COMMAND:-}}\" > '{fifo}'\n\
                 exec '{real}' \"$@\" 2>>'{stderr}'\n",
                fifo = fifo_path.display(),
                real = real.display(),
                stderr = stderr_path.display(),
            );
            let path = bin.join(plugin);
            fs::write(&path, script)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        // Read and write: the FIFO always has a reader (a wrapper never blocks opening it)
        // and never reports end-of-file between operations.
        let fifo = OpenOptions::new().read(true).write(true).open(&fifo_path)?;
        let reader_end = fifo.try_clone()?;
        let shared = Arc::new(Shared::default());
        let for_reader = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name("soak-kill-switch".into())
            .spawn(move || read_reports(reader_end, &for_reader))?;
        Ok(KillSwitch {
            bin,
            fifo,
            shared,
            reader: Some(reader),
        })
    }

    /// The directory of the wrappers: the CNI_PATH to run the chain with.
    pub fn cni_path(&self) -> &Path {
        &self.bin
    }

    /// Starts operation `op` (> 0; the runner must pass it as [`OP_ENV`]), with a kill
    /// armed or not.
    pub fn begin(&self, op: u64, arm: Option<Arm>) {
        let mut s = self.shared.lock();
        s.op = op;
        s.started = Some(Instant::now());
        s.arm = arm;
        s.reports.clear();
        s.kill = None;
        s.lifetimes.clear();
    }

    /// Ends the current operation: waits until the reader has seen every report written
    /// before now, any kill in flight is done and every watched process is gone, then
    /// disarms.
    pub fn end(&self) -> io::Result<OpLog> {
        let took = self
            .shared
            .lock()
            .started
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let op = self.shared.lock().op;
        // The FIFO keeps order: once the reader sees this marker, every report that a
        // plugin of the operation wrote is in.
        (&self.fifo).write_all(format!("end {op}\n").as_bytes())?;
        let mut s = self.shared.lock();
        while s.synced < op || s.in_flight || s.watching > 0 {
            s = self
                .shared
                .changed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
        s.arm = None;
        s.started = None;
        Ok(OpLog {
            reports: std::mem::take(&mut s.reports),
            kill: s.kill.take(),
            lifetimes: std::mem::take(&mut s.lifetimes),
            took,
        })
    }
}

impl Drop for KillSwitch {
    fn drop(&mut self) {
        // Nothing to do about a failure while dropping; the thread then ends with the test.
        let _ = (&self.fifo).write_all(b"quit\n");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_reports(fifo: File, shared: &Arc<Shared>) {
    for line in BufReader::new(fifo).lines() {
        let Ok(line) = line else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["quit"] => return,
            ["end", op] => {
                let op = op.parse().unwrap_or(0);
                shared.lock().synced = op;
                shared.changed.notify_all();
            }
            [op, pid, plugin, command] => {
                let (Ok(op), Ok(pid)) = (op.parse::<u64>(), pid.parse::<i32>()) else {
                    continue;
                };
                on_report(shared, op, pid, plugin, command);
            }
            _ => {}
        }
    }
}

fn on_report(shared: &Arc<Shared>, op: u64, pid: i32, plugin: &str, command: &str) {
    let arm = {
        let mut s = shared.lock();
        let Some(started) = s.started.filter(|_| s.op == op) else {
            return;
        };
        s.reports.push(Report {
            plugin: plugin.to_string(),
            command: command.to_string(),
            at: started.elapsed(),
        });
        let hit = s
            .arm
            .as_ref()
            .is_some_and(|a| a.plugin == plugin && a.command == command);
        if !hit {
            s.watching += 1;
            drop(s);
            watch(shared, pid, plugin, command);
            return;
        }
        s.in_flight = true;
        s.arm.take()
    };
    let Some(arm) = arm else { return };
    // The start time tells the process from a later one that reuses its pid.
    let identity = process_start(pid);
    thread::sleep(arm.delay);
    let alive = identity.is_some() && process_start(pid) == identity && !is_zombie(pid);
    let mut victim = (pid, identity);
    let delivered = alive
        && match &arm.action {
            Action::Kill => kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok(),
            Action::StopChildThenKill(name) => match child_named(pid, identity, name) {
                Some(child) => {
                    victim = (child, process_start(child));
                    let stopped = kill(Pid::from_raw(child), Signal::SIGSTOP).is_ok();
                    // The parent has given the child all its input: the child, once let go,
                    // has everything it needs to finish the job.
                    wait_for_stdin_closed(pid, identity, child);
                    stopped && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
                }
                None => false,
            },
        };
    let mut s = shared.lock();
    s.kill = Some(Kill {
        arm,
        delivered,
        pid: victim.0,
        start: victim.1,
    });
    s.in_flight = false;
    shared.changed.notify_all();
}

/// Measures how long `pid` runs, on a thread of its own: the reader must stay free to
/// take the next report (calico-ipam reports while calico runs).
fn watch(shared: &Arc<Shared>, pid: i32, plugin: &str, command: &str) {
    let for_watcher = Arc::clone(shared);
    let (plugin, command) = (plugin.to_string(), command.to_string());
    let since = Instant::now();
    let spawned = thread::Builder::new()
        .name("soak-watch".into())
        .spawn(move || {
            let shared = for_watcher;
            let identity = process_start(pid);
            // A stopped process (see Action::StopChildThenKill) ends the watch unmeasured:
            // the operation must not wait for it.
            let mut stopped = false;
            while identity.is_some() && process_start(pid) == identity && !is_zombie(pid) {
                if is_stopped(pid) {
                    stopped = true;
                    break;
                }
                thread::sleep(WATCH_INTERVAL);
            }
            let mut s = shared.lock();
            if !stopped {
                s.lifetimes.push(Lifetime {
                    plugin,
                    command,
                    ran: since.elapsed(),
                });
            }
            s.watching -= 1;
            shared.changed.notify_all();
        });
    if spawned.is_err() {
        // No thread, no measurement; the kill windows keep their defaults.
        shared.lock().watching -= 1;
    }
}

/// Polls the children of `pid` until one is called `name`, or `pid` is gone.
fn child_named(pid: i32, identity: Option<u64>, name: &str) -> Option<i32> {
    while process_start(pid) == identity && !is_zombie(pid) {
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let found = tasks
            .filter_map(Result::ok)
            .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .find(|child| {
                fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == name)
            });
        if found.is_some() {
            return found;
        }
        thread::sleep(Duration::from_micros(50));
    }
    None
}

/// Waits until `parent` no longer holds the pipe that is `child`'s stdin (it wrote its input
/// and closed it), or is gone. Nothing to wait for when that stdin is not a pipe.
fn wait_for_stdin_closed(parent: i32, identity: Option<u64>, child: i32) {
    let Ok(stdin) = fs::read_link(format!("/proc/{child}/fd/0")) else {
        return;
    };
    if !stdin.to_string_lossy().starts_with("pipe:") {
        return;
    }
    let holds = || {
        fs::read_dir(format!("/proc/{parent}/fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == stdin))
        })
    };
    while process_start(parent) == identity && !is_zombie(parent) && holds() {
        thread::sleep(Duration::from_micros(50));
    }
}

/// Whether the process `kill` names is still there (neither exited nor replaced by another
/// with its pid).
pub fn still_running(kill: &Kill) -> bool {
    kill.start.is_some() && process_start(kill.pid) == kill.start && !is_zombie(kill.pid)
}

/// Lets the process `kill` stopped go on (see [`Action::StopThenKillParent`]); `false` when
/// it is gone.
pub fn resume(kill: &Kill) -> bool {
    still_running(kill) && nix::sys::signal::kill(Pid::from_raw(kill.pid), Signal::SIGCONT).is_ok()
}

/// Field 22 of `/proc/<pid>/stat` (the start time), if the process exists.
fn process_start(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

fn is_stopped(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "T" || s == "t"))
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces), from
/// field 3 (the state) on.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// What a node namespace holds that a pod's ADD adds and its DEL must take away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub links: BTreeSet<String>,
    /// Both families, as [`crate::pod::routes`] prints them.
    pub routes: BTreeSet<String>,
    /// `<dev> <kind> <handle> <parent>` per qdisc.
    pub qdiscs: BTreeSet<String>,
    /// Per-container iptables NAT lines: `CNI-DN-*` chains and their rules, and the rules of
    /// `CNI-HOSTPORT-DNAT` (which jump to them), prefixed with `v4`/`v6`.
    pub nat: BTreeSet<String>,
    /// Rules in the container chains of the nftables `cni_hostport` tables:
    /// `<family> <chain> <comment>`.
    pub nft: BTreeSet<String>,
}

impl NodeState {
    pub fn read(ns: &TestNetns) -> Result<NodeState, String> {
        let mut all_routes: BTreeSet<String> = routes(ns, Family::V4).into_iter().collect();
        all_routes.extend(routes(ns, Family::V6));
        Ok(NodeState {
            links: link_names(ns),
            routes: all_routes,
            qdiscs: qdiscs(ns)?,
            nat: nat_lines(ns)?,
            nft: nft_rules(ns)?,
        })
    }

    /// What `self` holds beyond `baseline`, one line per thing, empty when nothing.
    pub fn leaks_since(&self, baseline: &NodeState) -> Vec<String> {
        let mut out = Vec::new();
        let mut extra = |what: &str, now: &BTreeSet<String>, then: &BTreeSet<String>| {
            out.extend(now.difference(then).map(|x| format!("{what}: {x}")));
        };
        extra("link", &self.links, &baseline.links);
        extra("route", &self.routes, &baseline.routes);
        extra("qdisc", &self.qdiscs, &baseline.qdiscs);
        extra("iptables nat", &self.nat, &baseline.nat);
        extra("nft rule", &self.nft, &baseline.nft);
        for gone in baseline.links.difference(&self.links) {
            out.push(format!("link of the node removed: {gone}"));
        }
        out
    }
}

fn output_of(ns: &TestNetns, argv: &[&str]) -> Result<String, String> {
    ns.exec_checked(argv)
        .map_err(|e| format!("{}: {e}", argv.join(" ")))
}

fn qdiscs(ns: &TestNetns) -> Result<BTreeSet<String>, String> {
    let text = output_of(ns, &["tc", "-j", "qdisc", "show"])?;
    if text.trim().is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Value = serde_json::from_str(&text).map_err(|e| format!("tc -j qdisc: {e}"))?;
    let field = |q: &Value, k: &str| q[k].as_str().unwrap_or("-").to_string();
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            format!(
                "{} {} {} {}",
                field(q, "dev"),
                field(q, "kind"),
                field(q, "handle"),
                if q["root"] == true {
                    "root".to_string()
                } else {
                    field(q, "parent")
                }
            )
        })
        .collect())
}

/// Lines of `iptables-save -t nat` that belong to one container (see [`NodeState::nat`]).
pub fn is_container_nat_line(line: &str) -> bool {
    line.starts_with(":CNI-DN-")
        || line.starts_with("-A CNI-DN-")
        || line.starts_with("-A CNI-HOSTPORT-DNAT ")
}

fn nat_lines(ns: &TestNetns) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for (family, tool) in [("v4", "iptables-save"), ("v6", "ip6tables-save")] {
        let text = output_of(ns, &[tool, "-t", "nat"])?;
        out.extend(
            text.lines()
                .filter(|l| is_container_nat_line(l))
                // Chain declarations carry packet counters.
                .map(|l| match l.strip_prefix(':') {
                    Some(decl) => {
                        format!(":{}", decl.split_whitespace().next().unwrap_or_default())
                    }
                    None => l.to_string(),
                })
                .map(|l| format!("{family} {l}")),
        );
    }
    Ok(out)
}

/// The nftables chains of portmap that hold one rule set per container.
const NFT_CONTAINER_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

fn nft_rules(ns: &TestNetns) -> Result<BTreeSet<String>, String> {
    let text = output_of(ns, &["nft", "-j", "list", "ruleset"])?;
    if text.trim().is_empty() {
        return Ok(BTreeSet::new());
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("nft -j: {e}"))?;
    Ok(doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .filter(|r| r["table"] == "cni_hostport")
        .filter(|r| {
            r["chain"]
                .as_str()
                .is_some_and(|c| NFT_CONTAINER_CHAINS.contains(&c))
        })
        .map(|r| {
            format!(
                "{} {} {}",
                r["family"].as_str().unwrap_or("?"),
                r["chain"].as_str().unwrap_or("?"),
                r["comment"].as_str().unwrap_or("(no comment)")
            )
        })
        .collect())
}

/// Workload endpoints in a Calico key-value snapshot.
pub const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// What a Calico datastore snapshot holds of pods: handles, allocations, endpoints, and
/// any inconsistency between blocks and handles. Empty when every block is free.
pub fn store_leaks(snapshot: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    match allocations(snapshot) {
        Ok(held) => out.extend(
            held.iter()
                .map(|(ip, handle)| format!("address {ip} allocated to {handle}")),
        ),
        Err(e) => out.push(format!("IPAM state inconsistent: {e}")),
    }
    for block in blocks_of(snapshot) {
        if !block.all_free() {
            out.push(format!(
                "block {} not all free: {}",
                block.cidr(),
                block.value
            ));
        }
    }
    out.extend(
        handles_of(snapshot)
            .into_iter()
            .map(|(id, value)| format!("handle {id}: {value}")),
    );
    out.extend(
        snapshot
            .keys()
            .filter(|k| k.starts_with(WEP_PREFIX))
            .map(|k| format!("workload endpoint {k}")),
    );
    out
}

/// Entries of `/run/netns` whose names start with `prefix`.
pub fn netns_named(prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// Files in a directory (none when it does not exist), for the runtime's result cache.
pub fn files_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_choices() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..8).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 1000));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        let d = Rng::new(7).delay(Duration::from_millis(3));
        assert!(d <= Duration::from_millis(3));
    }

    #[test]
    fn container_nat_lines() {
        assert!(is_container_nat_line(":CNI-DN-1a2b - [0:0]"));
        assert!(is_container_nat_line("-A CNI-DN-1a2b -p tcp -j DNAT"));
        assert!(is_container_nat_line(
            "-A CNI-HOSTPORT-DNAT -p tcp -j CNI-DN-1a2b"
        ));
        assert!(!is_container_nat_line(":CNI-HOSTPORT-DNAT - [0:0]"));
        assert!(!is_container_nat_line("-A PREROUTING -j CNI-HOSTPORT-DNAT"));
    }

    #[test]
    fn a_kill_switch_kills_the_armed_plugin_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        // A "plugin" that runs until it is killed (exec: the reported pid is the sleeper).
        fs::write(real.join("slow"), "#!/bin/sh\nexec sleep 30\n").expect("write");
        fs::set_permissions(real.join("slow"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(real.join("quick"), "#!/bin/sh\necho done\n").expect("write");
        fs::set_permissions(real.join("quick"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let switch = KillSwitch::new(dir.path(), &real, &["slow", "quick"]).expect("switch");
        let run = |name: &str, op: u64| {
            std::process::Command::new(switch.cni_path().join(name))
                .env(OP_ENV, op.to_string())
                .env("CNI_COMMAND", "ADD")
                .output()
                .expect("run")
        };
        let arm = Arm::kill("slow", "ADD", Duration::from_millis(1));
        switch.begin(1, Some(arm.clone()));
        let quick = run("quick", 1);
        let slow = run("slow", 1);
        let log = switch.end().expect("end");
        assert!(quick.status.success());
        assert_eq!(slow.status.code(), None, "killed by a signal");
        let kill = log.kill.expect("a kill");
        assert!(!still_running(&kill));
        assert_eq!((kill.arm, kill.delivered), (arm, true));
        let names: Vec<&str> = log.reports.iter().map(|r| r.plugin.as_str()).collect();
        assert_eq!(names, ["quick", "slow"]);
        // Only the process that ran its course has a lifetime.
        let ran: Vec<&str> = log.lifetimes.iter().map(|l| l.plugin.as_str()).collect();
        assert_eq!(ran, ["quick"]);
        // Disarmed: the next operation runs untouched, and a report of another operation
        // counts for nothing.
        switch.begin(2, None);
        assert!(run("quick", 2).status.success());
        assert!(run("quick", 7).status.success());
        let log = switch.end().expect("end");
        assert_eq!(log.kill, None);
        assert_eq!(log.reports.len(), 1);
    }
}

//! A conflist runner with libcni's semantics (`libcni/api.go`): ADD through the chain with
//! `prevResult`, DEL in reverse with the cached result, CHECK, GC and STATUS, and the result
//! cache in between. Configs and results stay raw JSON, as in libcni, so whatever a plugin
//! prints reaches the next one unchanged.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use shared::spec::error::{CniError, ErrorCode};

use crate::cache::{CacheError, CachedAttachment, CachedInfo, ResultCache, CACHE_KIND};
use crate::config::{build_plugin_config, gc_config, status_config, GcAttachment};
use crate::conflist::{ConfList, PluginConf};
use crate::exec::{decode_result, exec_plugin, find_in_path, CniEnv, ExecError};
use crate::version::{self, BadVersion};

/// The per-attachment arguments of one operation (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments; each plugin gets those it declares in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(
        container_id: impl Into<String>,
        netns: impl Into<String>,
        ifname: impl Into<String>,
    ) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            ..RuntimeConf::default()
        }
    }

    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> RuntimeConf {
        self.args.push((key.into(), value.into()));
        self
    }

    pub fn with_capability(mut self, name: impl Into<String>, value: Value) -> RuntimeConf {
        self.capability_args.insert(name.into(), value);
        self
    }
}

/// The operation a plugin failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Del,
    Check,
    Gc,
    Status,
}

impl Op {
    /// The CNI_COMMAND value.
    pub fn command(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
            Op::Gc => "GC",
            Op::Status => "STATUS",
        }
    }
}

/// A conflist operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A plugin of the chain failed. Displayed as libcni words it: ADD and DEL wrap it as
    /// `plugin type="X" name="N" failed (add): ...`, GC as `failed to GC plugin X: ...`, and
    /// CHECK and STATUS pass the plugin's error on unwrapped.
    #[error("{}", PluginFailure { plugin_type, plugin_name: plugin_name.as_deref(), op: *op, source })]
    Plugin {
        plugin_type: String,
        plugin_name: Option<String>,
        op: Op,
        source: ExecError,
    },
    #[error("failed to set network {network:?} cached result: {source}")]
    CacheWrite { network: String, source: CacheError },
    #[error("failed to get network {network:?} cached result: {source}")]
    CacheRead { network: String, source: CacheError },
    #[error("configuration version {0:?} does not support the CHECK command")]
    CheckNotSupported(String),
    #[error(transparent)]
    Version(#[from] BadVersion),
    #[error("failed to delete stale attachment {container_id} {ifname}: {source}")]
    StaleAttachment {
        container_id: String,
        ifname: String,
        source: Box<RunError>,
    },
    /// GC carries on past failures and reports them all, one per line (Go's `errors.Join`).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Multiple(Vec<RunError>),
}

impl RunError {
    /// The CNI error object a plugin returned (or libcni's stand-in for one), when the
    /// failure came from a plugin; for several failures, the first one that has one.
    pub fn cni_error(&self) -> Option<&CniError> {
        match self {
            RunError::Plugin { source, .. } => source.cni_error(),
            RunError::StaleAttachment { source, .. } => source.cni_error(),
            RunError::Multiple(errs) => errs.iter().find_map(RunError::cni_error),
            _ => None,
        }
    }
}

struct PluginFailure<'a> {
    plugin_type: &'a str,
    plugin_name: Option<&'a str>,
    op: Op,
    source: &'a ExecError,
}

impl fmt::Display for PluginFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.op {
            Op::Add => "add",
            Op::Del => "delete",
            Op::Gc => {
                return write!(
                    f,
                    "failed to GC plugin {}: {}",
                    self.plugin_type, self.source
                )
            }
            Op::Check | Op::Status => return write!(f, "{}", self.source),
        };
        write!(f, "plugin type={:?}", self.plugin_type)?;
        if let Some(name) = self.plugin_name {
            write!(f, " name={name:?}")?;
        }
        write!(f, " failed ({verb}): {}", self.source)
    }
}

/// Executes conflists. `cni_path` is searched for plugin binaries (and passed on as
/// CNI_PATH), `cache_dir` holds the result cache.
#[derive(Debug, Clone)]
pub struct Runner {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// When set, every plugin runs in this network namespace (see [`Runner::host_netns`]).
    pub host_netns: Option<PathBuf>,
    /// Variables added to the inherited environment of every plugin (CNI_* still win).
    pub env: Vec<(String, String)>,
}

impl Runner {
    pub fn new(cni_path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Runner {
        Runner {
            cni_path,
            cache_dir: cache_dir.into(),
            host_netns: None,
            env: Vec::new(),
        }
    }

    /// Runs every plugin inside the network namespace at `path` (e.g. `/run/netns/node-1`)
    /// through `nsenter --net=<path> --`: the plugin's "host" is that namespace, so its
    /// routes, sysctls and firewall rules stay there. Only the network namespace changes;
    /// files and the container netns path are reached as usual.
    pub fn host_netns(mut self, path: Option<PathBuf>) -> Runner {
        self.host_netns = path;
        self
    }

    /// Adds an environment variable for every plugin run.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Runner {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cache(&self) -> ResultCache {
        ResultCache::new(&self.cache_dir)
    }

    /// ADD: every plugin in order, each with the previous one's result as `prevResult`;
    /// stops at the first failure. The final result is cached and returned.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<Value, RunError> {
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            let r = self
                .add_one(list, plugin, result.as_ref(), rt)
                .map_err(|source| plugin_error(plugin, Op::Add, source))?;
            result = Some(r);
        }
        // A conflist always has at least one plugin, so there is a result.
        let result = result.unwrap_or(Value::Null);
        let info = CachedInfo {
            kind: CACHE_KIND.to_string(),
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.clone()),
        };
        self.cache()
            .write(&info)
            .map_err(|source| RunError::CacheWrite {
                network: list.name.clone(),
                source,
            })?;
        Ok(result)
    }

    fn add_one(
        &self,
        list: &ConfList,
        plugin: &PluginConf,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Result<Value, ExecError> {
        let binary = find_in_path(&plugin.plugin_type, &self.cni_path)?;
        validate_container_id(&rt.container_id)?;
        validate_network_name(&list.name)?;
        validate_ifname(&rt.ifname)?;
        let conf = build_plugin_config(list, plugin, prev, &rt.capability_args);
        let stdout = self.exec(&binary, Op::Add, rt, &conf)?;
        decode_result(&stdout, &list.cni_version)
    }

    /// DEL: every plugin in reverse order, each with the cached final ADD result as
    /// `prevResult` when the list version is 0.4.0 or later; stops at the first failure. The
    /// cache entry is removed once all plugins succeeded, and right away when it is unreadable.
    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), RunError> {
        let cache = self.cache();
        let mut cached = None;
        if version::at_least(&list.cni_version, "0.4.0")? {
            match cache.result(&list.name, &rt.container_id, &rt.ifname, &list.cni_version) {
                Ok(r) => cached = r,
                Err(_) => cache.delete(&list.name, &rt.container_id, &rt.ifname),
            }
        }
        for plugin in list.plugins.iter().rev() {
            self.run_without_result(list, plugin, Op::Del, cached.as_ref(), rt)
                .map_err(|source| plugin_error(plugin, Op::Del, source))?;
        }
        // As libcni: only an entry that was actually read is removed here.
        if cached.is_some() {
            cache.delete(&list.name, &rt.container_id, &rt.ifname);
        }
        Ok(())
    }

    /// CHECK: needs list version 0.4.0 or later; a list with `disableCheck` succeeds at once.
    /// Every plugin in order with the cached result as `prevResult`. Like libcni, a missing
    /// cache entry means no `prevResult` (the plugins then complain), an unreadable one fails.
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), RunError> {
        if !version::at_least(&list.cni_version, "0.4.0")? {
            return Err(RunError::CheckNotSupported(list.cni_version.clone()));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result(list, rt)
            .map_err(|source| RunError::CacheRead {
                network: list.name.clone(),
                source,
            })?;
        for plugin in &list.plugins {
            self.run_without_result(list, plugin, Op::Check, cached.as_ref(), rt)
                .map_err(|source| plugin_error(plugin, Op::Check, source))?;
        }
        Ok(())
    }

    /// GC: DEL every cached attachment of this network that is not in `valid` (`None`: none
    /// is valid, as cnitool's `gc`), then, for list version 1.1.0 or later, GC to every plugin
    /// with the valid attachments injected. Carries on past failures and returns them all.
    /// `disableGC` makes it a no-op.
    pub fn gc(&self, list: &ConfList, valid: Option<&[GcAttachment]>) -> Result<(), RunError> {
        if list.disable_gc {
            return Ok(());
        }
        let valid_set: HashSet<&GcAttachment> = valid.unwrap_or(&[]).iter().collect();
        let mut errors = Vec::new();
        // libcni gives up silently when the cache cannot be listed.
        let attachments = self.cache().attachments(None).unwrap_or_default();
        for a in attachments.iter().filter(|a| a.network == list.name) {
            let key = GcAttachment {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            };
            if valid_set.contains(&key) {
                continue;
            }
            if let Err(e) = self.del(list, &runtime_conf_of(a)) {
                errors.push(RunError::StaleAttachment {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                    source: Box::new(e),
                });
            }
        }
        if version::at_least(&list.cni_version, "1.1.0").unwrap_or(false) {
            for plugin in &list.plugins {
                let conf = gc_config(list, plugin, valid);
                if let Err(source) = self.run_global(plugin, Op::Gc, &conf) {
                    errors.push(plugin_error(plugin, Op::Gc, source));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RunError::Multiple(errors))
        }
    }

    /// STATUS: every plugin in order for list version 1.1.0 or later (earlier: success);
    /// the first failure is returned as the plugin reported it.
    pub fn status(&self, list: &ConfList) -> Result<(), RunError> {
        if !version::at_least(&list.cni_version, "1.1.0").unwrap_or(false) {
            return Ok(());
        }
        for plugin in &list.plugins {
            let conf = status_config(list, plugin);
            self.run_global(plugin, Op::Status, &conf)
                .map_err(|source| plugin_error(plugin, Op::Status, source))?;
        }
        Ok(())
    }

    /// The cached final ADD result of an attachment, in the list's version.
    pub fn cached_result(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
    ) -> Result<Option<Value>, CacheError> {
        self.cache()
            .result(&list.name, &rt.container_id, &rt.ifname, &list.cni_version)
    }

    fn run_without_result(
        &self,
        list: &ConfList,
        plugin: &PluginConf,
        op: Op,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Result<(), ExecError> {
        let binary = find_in_path(&plugin.plugin_type, &self.cni_path)?;
        let conf = build_plugin_config(list, plugin, prev, &rt.capability_args);
        self.exec(&binary, op, rt, &conf).map(drop)
    }

    /// GC and STATUS: no attachment, so the attachment variables are empty.
    fn run_global(
        &self,
        plugin: &PluginConf,
        op: Op,
        conf: &Map<String, Value>,
    ) -> Result<(), ExecError> {
        let binary = find_in_path(&plugin.plugin_type, &self.cni_path)?;
        self.exec(&binary, op, &RuntimeConf::default(), conf)
            .map(drop)
    }

    fn exec(
        &self,
        binary: &Path,
        op: Op,
        rt: &RuntimeConf,
        conf: &Map<String, Value>,
    ) -> Result<Vec<u8>, ExecError> {
        let stdin = serde_json::to_vec(conf).map_err(ExecError::Encode)?;
        let env = CniEnv {
            command: op.command().to_string(),
            container_id: rt.container_id.clone(),
            netns: rt.netns.clone(),
            ifname: rt.ifname.clone(),
            args: rt.args.clone(),
            path: self.cni_path.clone(),
        };
        exec_plugin(binary, &env, &self.env, &stdin, self.host_netns.as_deref())
    }
}

fn plugin_error(plugin: &PluginConf, op: Op, source: ExecError) -> RunError {
    RunError::Plugin {
        plugin_type: plugin.plugin_type.clone(),
        plugin_name: plugin.name().map(str::to_string),
        op,
        source,
    }
}

fn runtime_conf_of(a: &CachedAttachment) -> RuntimeConf {
    RuntimeConf {
        container_id: a.container_id.clone(),
        netns: a.netns.clone(),
        ifname: a.ifname.clone(),
        args: a.cni_args.clone(),
        capability_args: a.capability_args.clone(),
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the rule for container ids and network names.
fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

// libcni (`pkg/utils`) checks these before an ADD; same codes and messages.

fn validate_container_id(id: &str) -> Result<(), ExecError> {
    if id.is_empty() {
        return Err(ExecError::Invalid(CniError::new(
            ErrorCode::UnknownContainer,
            "missing containerID",
        )));
    }
    if !valid_identifier(id) {
        return Err(ExecError::Invalid(
            CniError::new(
                ErrorCode::InvalidEnvironment,
                "invalid characters in containerID",
            )
            .with_details(id),
        ));
    }
    Ok(())
}

fn validate_network_name(name: &str) -> Result<(), ExecError> {
    if name.is_empty() {
        return Err(ExecError::Invalid(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "missing network name",
        )));
    }
    if !valid_identifier(name) {
        return Err(ExecError::Invalid(
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "invalid characters found in network name",
            )
            .with_details(name),
        ));
    }
    Ok(())
}

fn validate_ifname(ifname: &str) -> Result<(), ExecError> {
    let invalid = |msg: &str| ExecError::Invalid(CniError::new(ErrorCode::InvalidEnvironment, msg));
    if ifname.is_empty() {
        return Err(invalid("interface name is empty"));
    }
    if ifname.len() > 15 {
        return Err(ExecError::Invalid(
            CniError::new(ErrorCode::InvalidEnvironment, "interface name is too long")
                .with_details("interface name should be less than 16 characters"),
        ));
    }
    if ifname == "." || ifname == ".." {
        return Err(invalid("interface name is . or .."));
    }
    if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(invalid(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A fake plugin: a shell script that appends "<type> <CNI_COMMAND>" and its stdin to a
    /// log, then prints `result` (ADD) or fails with `error` when the command matches.
    fn fake_plugin(dir: &Path, name: &str, log: &Path, fail_on: Option<&str>) {
        let fail = match fail_on {
            Some(cmd) => format!(
                "if [ \"$CNI_COMMAND\" = {cmd} ]; then echo '{{\"code\":11,\"msg\":\"busy\",\"details\":\"later\"}}'; exit 1; fi\n"
            ),
            None => String::new(),
        };
        let script = format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s %s %s\\n' {name} \"$CNI_COMMAND\" \"$in\" >> {log}\n{fail}\
             if [ \"$CNI_COMMAND\" = ADD ]; then echo '{{\"ips\":[{{\"address\":\"10.0.0.{n}/32\"}}]}}'; fi\n",
            log = log.display(),
            n = name.len(),
        );
        let path = dir.join(name);
        fs::write(&path, script).expect("write plugin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    struct Setup {
        _dir: tempfile::TempDir,
        runner: Runner,
        log: PathBuf,
    }

    fn setup(fail: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("mkdir");
        let log = dir.path().join("log");
        for name in ["a", "bb", "ccc"] {
            let f = fail.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
            fake_plugin(&bin, name, &log, f);
        }
        let runner = Runner::new(vec![bin], dir.path().join("cache"));
        Setup {
            _dir: dir,
            runner,
            log,
        }
    }

    /// (plugin, command, stdin config) per invocation, in order.
    fn calls(log: &Path) -> Vec<(String, String, Value)> {
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let name = parts.next().unwrap_or("").to_string();
                let cmd = parts.next().unwrap_or("").to_string();
                let conf = serde_json::from_str(parts.next().unwrap_or("null")).expect("json");
                (name, cmd, conf)
            })
            .collect()
    }

    fn list(version: &str) -> ConfList {
        ConfList::from_bytes(
            format!(
                r#"{{"cniVersion":"{version}","name":"net","plugins":[
                {{"type":"a"}},{{"type":"bb","capabilities":{{"portMappings":true}}}},{{"type":"ccc","name":"third"}}]}}"#
            )
            .as_bytes(),
        )
        .expect("list")
    }

    fn rt() -> RuntimeConf {
        RuntimeConf::new("c1", "/run/netns/none", "eth0")
            .with_arg("K", "V")
            .with_capability("portMappings", json!([{"hostPort": 1}]))
            .with_capability("bandwidth", json!({}))
    }

    #[test]
    fn add_chains_results_and_caches_the_last() {
        let s = setup(&[]);
        let result = s.runner.add(&list("1.0.0"), &rt()).expect("add");
        assert_eq!(
            result,
            json!({"ips":[{"address":"10.0.0.3/32"}],"cniVersion":"1.0.0"})
        );
        let calls = calls(&s.log);
        let order: Vec<_> = calls.iter().map(|(n, c, _)| format!("{n} {c}")).collect();
        assert_eq!(order, ["a ADD", "bb ADD", "ccc ADD"]);
        assert!(calls[0].2.get("prevResult").is_none());
        assert_eq!(calls[1].2["prevResult"]["ips"][0]["address"], "10.0.0.1/32");
        assert_eq!(calls[2].2["prevResult"]["ips"][0]["address"], "10.0.0.2/32");
        assert_eq!(
            calls[1].2["runtimeConfig"],
            json!({"portMappings":[{"hostPort":1}]})
        );
        assert!(calls[2].2.get("runtimeConfig").is_none());
        let cached = s
            .runner
            .cache()
            .entry("net", "c1", "eth0")
            .expect("ok")
            .expect("cached");
        assert_eq!(cached.result, Some(result));
        assert_eq!(cached.config, list("1.0.0").bytes);
        assert_eq!(cached.cni_args, [("K".to_string(), "V".to_string())]);
    }

    #[test]
    fn del_runs_in_reverse_with_the_cached_result_and_drops_the_cache() {
        let s = setup(&[]);
        let l = list("1.0.0");
        s.runner.add(&l, &rt()).expect("add");
        fs::remove_file(&s.log).expect("reset log");
        s.runner.del(&l, &rt()).expect("del");
        let calls = calls(&s.log);
        let order: Vec<_> = calls.iter().map(|(n, c, _)| format!("{n} {c}")).collect();
        assert_eq!(order, ["ccc DEL", "bb DEL", "a DEL"]);
        for (_, _, conf) in &calls {
            assert_eq!(conf["prevResult"]["ips"][0]["address"], "10.0.0.3/32");
        }
        assert!(s.runner.cached_result(&l, &rt()).expect("ok").is_none());
        // A second DEL has no cached result to pass.
        s.runner.del(&l, &rt()).expect("del again");
        assert!(calls_after(&s.log, 3)
            .iter()
            .all(|(_, _, c)| c.get("prevResult").is_none()));
    }

    fn calls_after(log: &Path, skip: usize) -> Vec<(String, String, Value)> {
        calls(log).into_iter().skip(skip).collect()
    }

    #[test]
    fn del_before_0_4_0_passes_no_prev_result() {
        let s = setup(&[]);
        let l = list("0.3.1");
        s.runner.add(&l, &rt()).expect("add");
        fs::remove_file(&s.log).expect("reset log");
        s.runner.del(&l, &rt()).expect("del");
        assert!(calls(&s.log)
            .iter()
            .all(|(_, _, c)| c.get("prevResult").is_none()));
    }

    #[test]
    fn del_stops_at_the_first_failure_and_keeps_the_cache() {
        let s = setup(&[("bb", "DEL")]);
        let l = list("1.0.0");
        s.runner.add(&l, &rt()).expect("add");
        fs::remove_file(&s.log).expect("reset log");
        let err = s.runner.del(&l, &rt()).expect_err("bb fails");
        assert_eq!(
            err.to_string(),
            "plugin type=\"bb\" failed (delete): busy; later"
        );
        let cni = err.cni_error().expect("plugin error");
        assert_eq!(cni.code, ErrorCode::TryAgainLater);
        assert_eq!(cni.details, "later");
        let order: Vec<_> = calls(&s.log).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(order, ["ccc", "bb"]);
        assert!(s.runner.cached_result(&l, &rt()).expect("ok").is_some());
    }

    #[test]
    fn add_failure_names_the_plugin_and_caches_nothing() {
        let s = setup(&[("ccc", "ADD")]);
        let l = list("1.0.0");
        let err = s.runner.add(&l, &rt()).expect_err("ccc fails");
        assert_eq!(
            err.to_string(),
            "plugin type=\"ccc\" name=\"third\" failed (add): busy; later"
        );
        assert!(s.runner.cached_result(&l, &rt()).expect("ok").is_none());
    }

    #[test]
    fn add_validates_the_attachment_first() {
        let s = setup(&[]);
        let l = list("1.0.0");
        let bad = RuntimeConf::new("bad id", "", "eth0");
        let err = s.runner.add(&l, &bad).expect_err("refused");
        assert_eq!(
            err.cni_error().expect("cni").code,
            ErrorCode::InvalidEnvironment
        );
        let long = RuntimeConf::new("c", "", "a-very-long-ifname");
        assert!(s.runner.add(&l, &long).is_err());
        assert!(!s.log.exists());
    }

    #[test]
    fn check_needs_0_4_0_honours_disable_check_and_passes_the_cache() {
        let s = setup(&[]);
        assert!(matches!(
            s.runner.check(&list("0.3.1"), &rt()),
            Err(RunError::CheckNotSupported(_))
        ));
        let disabled = ConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","disableCheck":true,"plugins":[{"type":"missing"}]}"#,
        )
        .expect("list");
        s.runner.check(&disabled, &rt()).expect("skipped");
        let l = list("1.0.0");
        s.runner.add(&l, &rt()).expect("add");
        fs::remove_file(&s.log).expect("reset log");
        s.runner.check(&l, &rt()).expect("check");
        let calls = calls(&s.log);
        let order: Vec<_> = calls.iter().map(|(n, c, _)| format!("{n} {c}")).collect();
        assert_eq!(order, ["a CHECK", "bb CHECK", "ccc CHECK"]);
        assert!(calls
            .iter()
            .all(|(_, _, c)| c["prevResult"]["ips"][0]["address"] == "10.0.0.3/32"));
    }

    #[test]
    fn gc_deletes_stale_attachments_then_gcs_every_plugin() {
        let s = setup(&[]);
        let l = list("1.1.0");
        s.runner.add(&l, &rt()).expect("add c1");
        let mut keep = rt();
        keep.container_id = "c2".into();
        s.runner.add(&l, &keep).expect("add c2");
        fs::remove_file(&s.log).expect("reset log");
        let valid = [GcAttachment {
            container_id: "c2".into(),
            ifname: "eth0".into(),
        }];
        s.runner.gc(&l, Some(&valid)).expect("gc");
        let calls = calls(&s.log);
        let order: Vec<_> = calls.iter().map(|(n, c, _)| format!("{n} {c}")).collect();
        assert_eq!(
            order,
            ["ccc DEL", "bb DEL", "a DEL", "a GC", "bb GC", "ccc GC"]
        );
        assert_eq!(
            calls[3].2["cni.dev/valid-attachments"],
            json!([{"containerID":"c2","ifname":"eth0"}])
        );
        assert_eq!(
            calls[3].2["cni.dev/attachments"],
            calls[3].2["cni.dev/valid-attachments"]
        );
        let left: Vec<_> = s
            .runner
            .cache()
            .attachments(None)
            .expect("ok")
            .into_iter()
            .map(|a| a.container_id)
            .collect();
        assert_eq!(left, ["c2"]);
    }

    #[test]
    fn gc_collects_every_error_and_status_stops_at_the_first() {
        let s = setup(&[("a", "GC"), ("ccc", "GC"), ("bb", "STATUS")]);
        let l = list("1.1.0");
        let err = s.runner.gc(&l, None).expect_err("two failures");
        let RunError::Multiple(errs) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(errs.len(), 2);
        assert!(err
            .to_string()
            .starts_with("failed to GC plugin a: busy; later\n"));
        let err = s.runner.status(&l).expect_err("bb fails");
        assert_eq!(err.to_string(), "busy; later");
        let order: Vec<_> = calls(&s.log)
            .into_iter()
            .filter(|(_, c, _)| c == "STATUS")
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(order, ["a", "bb"]);
        // Before 1.1.0 neither verb reaches a plugin.
        fs::remove_file(&s.log).expect("reset log");
        s.runner.gc(&list("1.0.0"), None).expect("no plugin gc");
        s.runner.status(&list("1.0.0")).expect("no status");
        assert!(!s.log.exists());
    }

    #[test]
    fn identifiers_follow_libcnis_rule() {
        assert!(valid_identifier("abc-1.2_3"));
        assert!(!valid_identifier("-abc"));
        assert!(!valid_identifier(""));
        assert!(!valid_identifier("a b"));
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_ifname("..").is_err());
    }
}

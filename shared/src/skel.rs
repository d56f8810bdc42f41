//! The common entry point: every plugin's `main` builds its plugin value and calls [`run`].
//!
//! The skeleton reads the environment and stdin, validates them in the order libcni's
//! skeleton does (so the first problem reported is the same), negotiates the version,
//! dispatches, prints the result or the error object on stdout, and returns the exit code.
//! It never exits mid-stack: guards and files held by the plugin drop normally.

use std::io::{Read, Write};

use log::LevelFilter;

use crate::error::Error;
use crate::gojson::{Decode, Document};
use crate::log::Workload;
use crate::spec::config::NetConf;
use crate::spec::env::{Command, Environment};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::{self, Version};

pub use crate::released::Released;
pub use crate::spec::config::Attachment;

/// The `Config` of a plugin that has no keys of its own.
pub type NoConfig = serde::de::IgnoredAny;

/// One invocation, validated and decoded: what every verb gets.
pub struct Request<'a, C> {
    pub env: &'a Environment,
    /// The keys every plugin shares.
    pub conf: &'a NetConf,
    /// The plugin's own keys, decoded once from the same document.
    pub config: &'a C,
    /// stdin, parsed: for code that forwards or edits the config as Go code edits a map.
    pub document: &'a Document,
    /// The config exactly as read from stdin, for delegation.
    pub stdin: &'a [u8],
    /// The negotiated version: results are printed in it.
    pub version: Version,
    /// The previous plugin's result, already parsed: a malformed one is refused before the
    /// plugin changes anything (DEL does without it).
    pub prev_result: Option<CniResult>,
}

/// What a plugin implements. GC and STATUS default to success: a plugin with nothing to
/// collect and no dependency to probe is always ready.
pub trait Plugin {
    /// The plugin's own keys. On DEL the skeleton decodes them leniently: a key that cannot
    /// be read is left at its default, because DEL must clean up whatever ADD made.
    type Config: Decode;

    /// The crate's error type, converted once into a CNI error at the skeleton.
    type Error: Into<CniError> + std::fmt::Display;

    /// The binary's name, for logs and the about line.
    fn name(&self) -> &'static str;

    /// The versions this plugin speaks.
    fn supported_versions(&self) -> &'static [Version] {
        &Version::ALL
    }

    fn add(&self, req: &Request<Self::Config>) -> Result<CniResult, Self::Error>;
    /// Says what it removed, for the DEL's log line.
    fn del(&self, req: &Request<Self::Config>) -> Result<Released, Self::Error>;
    fn check(&self, req: &Request<Self::Config>) -> Result<(), Self::Error>;

    fn gc(&self, _req: &Request<Self::Config>, _valid: &[Attachment]) -> Result<(), Self::Error> {
        Ok(())
    }

    fn status(&self, _req: &Request<Self::Config>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The process entry point: real environment, stdin and stdout. Returns the exit code.
pub fn run<P: Plugin>(plugin: &P) -> i32 {
    crate::panic::install(plugin.name());
    crate::deadline::arm(
        crate::deadline::DEFAULT_BUDGET,
        std::env::var(crate::deadline::ENV).ok().as_deref(),
    );
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let code = run_with(
        plugin,
        // As bytes: a variable that is not UTF-8 is reported, not taken for absent.
        |k| std::env::var_os(k),
        stdin.lock(),
        &mut stdout.lock(),
    );
    let _ = stdout.lock().flush();
    code
}

/// [`run`] with everything injected, for tests.
pub fn run_with<P: Plugin, V: Into<std::ffi::OsString>>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<V>,
    stdin: impl Read,
    stdout: &mut impl Write,
) -> i32 {
    let env = match Environment::from_lookup(&lookup) {
        Ok(env) => env,
        Err(e) => {
            if matches!(&e, Error::MissingEnv(m) if m.contains(&"CNI_COMMAND")) {
                // Someone ran the binary by hand: say what it is, then the error.
                let _ = writeln!(
                    std::io::stderr(),
                    "CNI {} plugin {}\nCNI protocol versions supported: {}",
                    plugin.name(),
                    env!("CARGO_PKG_VERSION"),
                    version::list(plugin.supported_versions())
                );
            }
            return fail(stdout, plugin.name(), &Workload::default(), e.into(), None);
        }
    };
    let mut workload = Workload {
        container_id: env.container_id.clone(),
        interface: env.ifname.clone(),
        namespace: env
            .args
            .get("K8S_POD_NAMESPACE")
            .unwrap_or_default()
            .to_string(),
        pod: env.args.get("K8S_POD_NAME").unwrap_or_default().to_string(),
        network: String::new(),
    };
    let name = plugin.name();
    if env.command == Command::Version {
        let _ = stdout.write_all(version::version_reply(plugin.supported_versions()).as_bytes());
        return 0;
    }
    let mut input = Vec::new();
    if let Err(e) = { stdin }.read_to_end(&mut input) {
        return fail(stdout, name, &workload, Error::ReadStdin(e).into(), None);
    }
    // DEL must clean up whatever the runtime kept: what it does not need must not stop it.
    let lenient = env.command == Command::Del;
    let doc = match Document::parse(&input) {
        Ok(doc) => doc,
        Err(e) => return fail(stdout, name, &workload, Error::DecodeConfig(e).into(), None),
    };
    let (conf, unread) = match NetConf::parse(&doc, lenient).and_then(|c| env.validate().map(|_| c))
    {
        Ok(c) => c,
        Err(e) => return fail(stdout, name, &workload, e.into(), None),
    };
    workload.network = conf.name.clone();
    let version = match conf
        .negotiate_version(plugin.supported_versions())
        .and_then(|v| allowed(env.command, v).map(|_| v))
    {
        Ok(v) => v,
        Err(e) => return fail(stdout, name, &workload, e.into(), None),
    };
    init_logging(name, &workload, &conf);
    for e in unread {
        log::warn!("DEL ignores a network config key it cannot read: {e}");
    }
    for key in &env.args_skipped {
        log::warn!("DEL ignores the CNI_ARGS pair with key {key:?}: it is not valid UTF-8");
    }
    let prev_result = match conf.prev_result(version) {
        Ok(prev) => prev,
        Err(e) if lenient => {
            log::warn!("ignoring unreadable prevResult on DEL: {e}");
            None
        }
        Err(e) => return fail(stdout, name, &workload, e.into(), Some(version)),
    };
    let config = match decode_config::<P>(plugin.name(), &doc, lenient) {
        Ok(c) => c,
        Err(e) => return fail(stdout, name, &workload, e.into(), Some(version)),
    };
    let req = Request {
        env: &env,
        conf: &conf,
        config: &config,
        document: &doc,
        stdin: &input,
        version,
        prev_result,
    };
    log::debug!("{} {}", env.command.as_str(), env.ifname);
    match dispatch(plugin, &req) {
        Ok(Done::Result(result)) => {
            if env.command == Command::Add {
                log::info!("{}", wired(&result));
            }
            let _ = stdout.write_all(result.to_pretty_json(version).as_bytes());
            0
        }
        Ok(Done::Released(released)) => {
            log::info!("DEL succeeded: {released}");
            0
        }
        Ok(Done::Nothing) => {
            log::debug!("{} succeeded", env.command.as_str());
            0
        }
        Err(e) => fail(stdout, name, &workload, e, Some(version)),
    }
}

/// What a verb that succeeded leaves to print or log.
enum Done {
    Result(CniResult),
    Released(Released),
    Nothing,
}

/// The info line of a successful ADD: the addresses and the host-side interface it wired.
fn wired(result: &CniResult) -> String {
    let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
    let mut line = format!("ADD succeeded: addresses [{}]", addresses.join(", "));
    let host: Vec<&str> = result
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name.as_str())
        .collect();
    if !host.is_empty() {
        line.push_str(&format!(" host interface {}", host.join(", ")));
    }
    line
}

/// The plugin's own keys; leniently for DEL, where each key that cannot be read is logged
/// and left at its default.
fn decode_config<P: Plugin>(
    plugin: &'static str,
    doc: &Document,
    lenient: bool,
) -> Result<P::Config, Error> {
    let wrap = |source| Error::PluginConfig { plugin, source };
    if !lenient {
        return doc.decode::<P::Config>().map_err(wrap);
    }
    let (config, dropped) = doc.decode_lenient::<P::Config>().map_err(wrap)?;
    for e in dropped {
        log::warn!("DEL ignores a {plugin} setting it cannot read: {e}");
    }
    Ok(config)
}

fn dispatch<P: Plugin>(plugin: &P, req: &Request<P::Config>) -> Result<Done, CniError> {
    let out = match req.env.command {
        Command::Add => plugin.add(req).map(Done::Result),
        Command::Del => plugin.del(req).map(Done::Released),
        Command::Check => plugin.check(req).map(|_| Done::Nothing),
        Command::Status => plugin.status(req).map(|_| Done::Nothing),
        Command::Gc => {
            let valid = req.conf.valid_attachments().map_err(CniError::from)?;
            plugin.gc(req, &valid).map(|_| Done::Nothing)
        }
        // Answered before stdin was read.
        Command::Version => Ok(Done::Nothing),
    };
    out.map_err(Into::into)
}

/// CHECK came with 0.4.0, GC and STATUS with 1.1.0; an older config cannot ask for them.
fn allowed(command: Command, config: Version) -> Result<(), Error> {
    let ok = match command {
        Command::Check => config.allows_check(),
        Command::Gc | Command::Status => config.allows_gc_and_status(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::VersionForbidsCommand {
            command: command.as_str(),
            config,
        })
    }
}

/// `log_level`, `log_file_path` and the rotation keys (`log_file_max_size`, `_age`,
/// `_count`) are Calico's; every plugin of the suite honours them.
fn init_logging(name: &'static str, workload: &Workload, conf: &NetConf) {
    let level = match conf.log_level.as_str() {
        "" => LevelFilter::Warn,
        text => crate::log::parse_level(text, LevelFilter::Warn),
    };
    let file = Some(conf.log_file_path.as_str())
        .filter(|s| !s.is_empty())
        .map(std::path::Path::new);
    crate::log::init(name, workload, level, file, conf.log_limits());
}

/// Prints the error object, after logging its message (on stderr when the config was not
/// read far enough to say where the log goes).
fn fail(
    stdout: &mut impl Write,
    plugin: &'static str,
    workload: &Workload,
    e: CniError,
    version: Option<Version>,
) -> i32 {
    crate::log::init_fallback(plugin, workload);
    if e.details.is_empty() {
        log::error!("{}", e.msg);
    } else {
        log::error!("{} ({})", e.msg, e.details);
    }
    let _ = stdout.write_all(e.to_json(version).as_bytes());
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;
    use serde::Deserialize;
    use serde_json::Value;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records what it was asked to do.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<(Command, Version)>>,
        kept: RefCell<Vec<Attachment>>,
        seen: RefCell<Vec<OwnKeys>>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    struct OwnKeys {
        #[serde(rename = "markBit", default)]
        mark_bit: u8,
        #[serde(default)]
        tag: String,
    }

    impl Plugin for Recorder {
        type Config = OwnKeys;
        type Error = CniError;
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn add(&self, req: &Request<OwnKeys>) -> Result<CniResult, CniError> {
            self.calls.borrow_mut().push((Command::Add, req.version));
            self.seen.borrow_mut().push(req.config.clone());
            Ok(CniResult::default())
        }
        fn del(&self, req: &Request<OwnKeys>) -> Result<Released, CniError> {
            self.calls.borrow_mut().push((Command::Del, req.version));
            self.seen.borrow_mut().push(req.config.clone());
            Err(CniError::new(ErrorCode::Netlink, "boom"))
        }
        fn check(&self, req: &Request<OwnKeys>) -> Result<(), CniError> {
            self.calls.borrow_mut().push((Command::Check, req.version));
            Ok(())
        }
        fn gc(&self, _req: &Request<OwnKeys>, valid: &[Attachment]) -> Result<(), CniError> {
            self.kept.borrow_mut().extend_from_slice(valid);
            Ok(())
        }
    }

    fn invoke(p: &Recorder, cmd: &str, stdin: &str) -> (i32, Value) {
        let mut env: HashMap<&str, &str> = HashMap::from([
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        env.insert("CNI_COMMAND", cmd);
        let mut out = Vec::new();
        let code = run_with(
            p,
            |k| env.get(k).map(|v| v.to_string()),
            stdin.as_bytes(),
            &mut out,
        );
        (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    #[test]
    fn add_prints_the_result_in_the_configs_version() {
        let p = Recorder::default();
        let (code, out) = invoke(&p, "ADD", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(code, 0);
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(*p.calls.borrow(), vec![(Command::Add, Version::V0_3_1)]);
    }

    #[test]
    fn plugin_errors_become_the_error_object_and_exit_1() {
        let p = Recorder::default();
        let (code, out) = invoke(&p, "DEL", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(code, 1);
        assert_eq!(out["code"], 100);
        assert_eq!(out["msg"], "boom");
        assert_eq!(out["cniVersion"], "1.0.0");
    }

    #[test]
    fn check_needs_0_4_0_and_gc_needs_1_1_0() {
        let p = Recorder::default();
        let (code, out) = invoke(&p, "CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((code, out["code"].clone()), (1, 1.into()));
        let (code, out) = invoke(&p, "GC", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((code, out["code"].clone()), (1, 1.into()));
        assert!(p.calls.borrow().is_empty(), "nothing dispatched");
    }

    #[test]
    fn gc_reads_valid_attachments_under_either_key() {
        let p = Recorder::default();
        let (code, _) = invoke(
            &p,
            "GC",
            r#"{"cniVersion":"1.1.0","name":"n",
                "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(p.kept.borrow()[0].container_id, "a");
    }

    #[test]
    fn a_malformed_prev_result_stops_add_but_not_del() {
        let p = Recorder::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#;
        let (code, out) = invoke(&p, "ADD", conf);
        assert_eq!((code, out["code"].clone()), (1, 6.into()));
        assert!(p.calls.borrow().is_empty(), "ADD must not run");
        invoke(&p, "DEL", conf);
        assert_eq!(*p.calls.borrow(), vec![(Command::Del, Version::V1_0_0)]);
    }

    #[test]
    fn version_ignores_stdin() {
        let p = Recorder::default();
        let (code, out) = invoke(&p, "VERSION", "garbage");
        assert_eq!(code, 0);
        assert_eq!(out["cniVersion"], "1.1.0");
        assert_eq!(out["supportedVersions"][0], "0.1.0");
    }

    #[test]
    fn problems_are_reported_in_libcni_order() {
        let p = Recorder::default();
        // Bad JSON is reported before the version.
        let (_, out) = invoke(&p, "ADD", "{");
        assert_eq!(out["code"], 6);
        // The network name before the version.
        let (_, out) = invoke(&p, "ADD", r#"{"cniVersion":"7.0.0"}"#);
        assert_eq!(out["code"], 7);
        let (_, out) = invoke(&p, "ADD", r#"{"cniVersion":"7.0.0","name":"n"}"#);
        assert_eq!(out["code"], 1);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn the_plugins_keys_are_decoded_once_as_go_decodes_them() {
        let p = Recorder::default();
        let (code, _) = invoke(
            &p,
            "ADD",
            r#"{"cniVersion":"1.0.0","NAME":"n","MarkBit":5,"markbit":6,"TAG":"x"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(
            p.seen.borrow()[0],
            OwnKeys {
                mark_bit: 6,
                tag: "x".into()
            }
        );
    }

    #[test]
    fn a_mistyped_key_stops_add_with_its_path_but_not_del() {
        let p = Recorder::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","markBit":"five","tag":"t",
                       "runtimeConfig":{"portMappings":[{"HostPort":"x"}]}}"#;
        let (code, out) = invoke(&p, "ADD", conf);
        assert_eq!((code, out["code"].clone()), (1, 7.into()));
        assert!(
            out["msg"]
                .as_str()
                .is_some_and(|m| m.contains("runtimeConfig.portMappings[0].hostPort")),
            "{out}"
        );
        let conf = r#"{"cniVersion":"1.0.0","name":"n","markBit":"five","tag":"t"}"#;
        let (code, out) = invoke(&p, "ADD", conf);
        assert_eq!((code, out["code"].clone()), (1, 7.into()));
        assert_eq!(
            out["msg"],
            "invalid recorder configuration: markBit: invalid type: string \"five\", expected u8"
        );
        assert!(p.calls.borrow().is_empty(), "ADD must not run");
        // DEL runs, with the unreadable key at its default and the rest as written.
        let conf = r#"{"cniVersion":"1.0.0","name":"n","markBit":"five","tag":"t",
                       "runtimeConfig":{"portMappings":[{"HostPort":"x"}]},"dns":7}"#;
        let (code, _) = invoke(&p, "DEL", conf);
        assert_eq!(code, 1, "the recorder's DEL fails by design");
        assert_eq!(*p.calls.borrow(), vec![(Command::Del, Version::V1_0_0)]);
        assert_eq!(
            p.seen.borrow()[0],
            OwnKeys {
                mark_bit: 0,
                tag: "t".into()
            }
        );
    }

    #[test]
    fn a_name_that_is_not_a_string_is_a_decoding_failure() {
        let p = Recorder::default();
        let (_, out) = invoke(&p, "ADD", r#"{"cniVersion":"1.0.0","name":7}"#);
        assert_eq!(out["code"], 6);
        let (_, out) = invoke(&p, "DEL", r#"{"cniVersion":"1.0.0","name":null}"#);
        assert_eq!(out["code"], 7, "null is no name: {out}");
    }
}

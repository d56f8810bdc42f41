//! The `cnitool` command, compatible with the Go cnitool (`cnitool/cnitool.go`):
//!
//! ```text
//! cnitool add|check|del|gc|status <net> <netns>
//! ```
//!
//! Environment: NETCONFPATH (conflist directory, default /etc/cni/net.d), CNI_PATH,
//! CNI_IFNAME (default eth0 when unset), CNI_ARGS (`K=V;K=V`), CAP_ARGS (JSON object of
//! capability arguments), and, beyond the Go tool, CNI_CACHE_DIR (default /var/lib/cni).
//! The container id is derived from the netns path exactly as the Go tool derives it, so
//! both tools find each other's cache entries.
//!
//! Beyond the Go tool, `--annotation KEY=VALUE` (repeatable, anywhere on the line) gives the
//! pod annotations a container runtime would read: `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` become the `bandwidth` capability exactly as containerd
//! translates them (see `shared::spec::quantity`), replacing any `bandwidth` in CAP_ARGS, so
//! an operator can reproduce by hand what the kubelet asks for.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha512};
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::quantity::bandwidth_from_annotations;

use crate::conflist::{ConfError, ConfList};
use crate::runner::{RunError, Runner, RuntimeConf};

pub const DEFAULT_NET_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

#[derive(Debug, thiserror::Error)]
pub enum CnitoolError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("invalid CAP_ARGS: {0}")]
    CapArgs(String),
    #[error("invalid CNI_ARGS pair {0:?}")]
    CniArgs(String),
    /// A pod annotation the runtime would refuse; code 7, as nothing was configured.
    #[error("invalid pod annotations: {0}")]
    Annotation(CniError),
    #[error("{0}")]
    Path(std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The Go cnitool's container id: `cnitool-` and the hex of the first 10 bytes of the
/// SHA-512 of the (absolute) netns path.
pub fn container_id(netns: &str) -> String {
    let digest = Sha512::digest(netns.as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

/// CNI_ARGS as the Go cnitool splits it: `;`-separated pairs, each exactly `K=V` with both
/// sides non-empty.
pub fn parse_cni_args(args: &str) -> Result<Vec<(String, String)>, CnitoolError> {
    args.split(';')
        .map(|pair| {
            let kv: Vec<&str> = pair.split('=').collect();
            match kv.as_slice() {
                [k, v] if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(CnitoolError::CniArgs(pair.to_string())),
            }
        })
        .collect()
}

/// CAP_ARGS: a JSON object.
pub fn parse_cap_args(text: &str) -> Result<Map<String, Value>, CnitoolError> {
    serde_json::from_str(text).map_err(|e| CnitoolError::CapArgs(e.to_string()))
}

/// Go's `filepath.Abs`: made absolute against the working directory, then cleaned
/// lexically (`.` and `..` resolved without touching the file system).
pub fn absolute(path: &str) -> Result<String, CnitoolError> {
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(CnitoolError::Path)?.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out.display().to_string())
}

pub fn usage(exe: &str) -> String {
    let mut s = format!(
        "{exe}: Add, check, remove, gc or status network interfaces from a network namespace\n"
    );
    for cmd in ["add   ", "check ", "del   ", "gc    ", "status"] {
        s.push_str(&format!("  {exe} {cmd} <net> <netns>\n"));
    }
    s.push_str("  options: --annotation KEY=VALUE   a pod annotation (bandwidth), repeatable\n");
    s
}

/// One `--annotation KEY=VALUE`.
pub type Annotation = (String, String);

/// Splits `--annotation KEY=VALUE` / `--annotation=KEY=VALUE` options from the positional
/// arguments.
pub fn split_annotations(args: &[String]) -> Result<(Vec<String>, Vec<Annotation>), CnitoolError> {
    let mut positional = Vec::new();
    let mut annotations = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let pair = if arg == "--annotation" {
            rest.next()
                .ok_or_else(|| CnitoolError::Usage("--annotation needs KEY=VALUE".to_string()))?
        } else if let Some(pair) = arg.strip_prefix("--annotation=") {
            pair
        } else {
            positional.push(arg.clone());
            continue;
        };
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                annotations.push((key.to_string(), value.to_string()))
            }
            _ => {
                return Err(CnitoolError::Usage(format!(
                    "--annotation takes KEY=VALUE, got {pair:?}"
                )))
            }
        }
    }
    Ok((positional, annotations))
}

/// Adds the capabilities a runtime derives from pod annotations to `capability_args`.
pub fn apply_annotations(
    annotations: &[Annotation],
    capability_args: &mut Map<String, Value>,
) -> Result<(), CnitoolError> {
    let pairs = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let bandwidth = bandwidth_from_annotations(pairs).map_err(|e| {
        CnitoolError::Annotation(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            e.to_string(),
        ))
    })?;
    if let Some(limits) = bandwidth {
        let value = serde_json::to_value(limits)
            .map_err(|e| CnitoolError::CapArgs(format!("bandwidth: {e}")))?;
        capability_args.insert("bandwidth".to_string(), value);
    }
    Ok(())
}

/// Runs one cnitool invocation. `args` is argv without the program name; `env` looks up
/// environment variables. Returns what to print on stdout (the ADD result).
pub fn run(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, CnitoolError> {
    let (args, annotations) = split_annotations(args)?;
    let [command, net, netns, ..] = args.as_slice() else {
        return Err(CnitoolError::Usage(String::new()));
    };
    if !matches!(command.as_str(), "add" | "check" | "del" | "gc" | "status") {
        return Err(CnitoolError::Usage(format!("unknown command {command:?}")));
    }
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    let net_dir = non_empty("NETCONFPATH").unwrap_or_else(|| DEFAULT_NET_DIR.to_string());
    let list = ConfList::load(Path::new(&net_dir), net)?;

    let mut capability_args = match non_empty("CAP_ARGS") {
        Some(text) => parse_cap_args(&text)?,
        None => Map::new(),
    };
    // Before anything runs: a runtime refuses the pod on a bad annotation.
    apply_annotations(&annotations, &mut capability_args)?;
    let cni_args = match non_empty("CNI_ARGS") {
        Some(text) => parse_cni_args(&text)?,
        None => Vec::new(),
    };
    // Go uses LookupEnv: a set-but-empty CNI_IFNAME stays empty.
    let ifname = env("CNI_IFNAME").unwrap_or_else(|| "eth0".to_string());
    let netns = absolute(netns)?;
    let rt = RuntimeConf {
        container_id: container_id(&netns),
        netns,
        ifname,
        args: cni_args,
        capability_args,
    };
    let cni_path: Vec<PathBuf> = env("CNI_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let cache_dir = non_empty("CNI_CACHE_DIR").unwrap_or_else(|| DEFAULT_CACHE_DIR.to_string());
    let runner = Runner::new(cni_path, cache_dir);

    match command.as_str() {
        "add" => {
            let result = runner.add(&list, &rt)?;
            Ok(Some(pretty(&result)))
        }
        "check" => runner.check(&list, &rt).map(|()| None).map_err(Into::into),
        "del" => runner.del(&list, &rt).map(|()| None).map_err(Into::into),
        // The Go tool passes no GC arguments: no attachment is valid.
        "gc" => runner.gc(&list, None).map(|()| None).map_err(Into::into),
        _ => runner.status(&list).map(|()| None).map_err(Into::into),
    }
}

/// `json.MarshalIndent(result, "", "    ")`, as the Go tool prints a result (no newline).
pub fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_the_go_tool() {
        // Expected value from `printf %s /var/run/netns/testing | sha512sum | cut -c1-20`:
        // the first 10 bytes of the digest, in hex.
        assert_eq!(
            container_id("/var/run/netns/testing"),
            "cnitool-77383ca0a0715733ca6f"
        );
    }

    #[test]
    fn parses_cni_args_like_the_go_tool() {
        assert_eq!(
            parse_cni_args("A=1;B=2").expect("ok"),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        for bad in ["A", "A=", "=1", "A=1=2", "A=1;"] {
            assert!(parse_cni_args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_cleans_like_go() {
        assert_eq!(
            absolute("/run/netns/../netns/./x").expect("ok"),
            "/run/netns/x"
        );
        let rel = absolute("x").expect("ok");
        assert!(rel.starts_with('/') && rel.ends_with("/x"));
    }

    #[test]
    fn annotations_are_split_from_the_positional_arguments() {
        let args: Vec<String> = [
            "add",
            "--annotation",
            "kubernetes.io/ingress-bandwidth=10M",
            "net",
            "--annotation=kubernetes.io/egress-bandwidth=1G",
            "/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (positional, annotations) = split_annotations(&args).expect("ok");
        assert_eq!(positional, ["add", "net", "/x"]);
        assert_eq!(annotations.len(), 2);
        assert_eq!(annotations[1].1, "1G");
        for bad in [
            &["--annotation"][..],
            &["--annotation", "novalue"],
            &["--annotation==x"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(matches!(
                split_annotations(&bad),
                Err(CnitoolError::Usage(_))
            ));
        }
    }

    #[test]
    fn bandwidth_annotations_become_the_capability() {
        let mut caps = parse_cap_args(r#"{"portMappings": [], "bandwidth": {"ingressRate": 1}}"#)
            .expect("caps");
        let annotations = vec![(
            "kubernetes.io/ingress-bandwidth".to_string(),
            "10M".to_string(),
        )];
        apply_annotations(&annotations, &mut caps).expect("ok");
        assert_eq!(caps["bandwidth"]["ingressRate"], 10_000_000);
        assert_eq!(caps["bandwidth"]["ingressBurst"], 4_294_967_295u64);
        assert_eq!(caps["bandwidth"]["egressRate"], 0);
        assert!(caps.contains_key("portMappings"));

        let bad = vec![(
            "kubernetes.io/egress-bandwidth".to_string(),
            "-10M".to_string(),
        )];
        match apply_annotations(&bad, &mut Map::new()) {
            Err(CnitoolError::Annotation(e)) => {
                assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
                assert!(e.msg.contains("unreasonably small"), "{}", e.msg);
            }
            other => panic!("{other:?}"),
        }
        let mut untouched = Map::new();
        apply_annotations(&[("other".into(), "x".into())], &mut untouched).expect("ok");
        assert!(untouched.is_empty());
    }

    #[test]
    fn refuses_short_or_unknown_commands() {
        let none = |_: &str| None;
        assert!(matches!(
            run(&["add".into(), "n".into()], none),
            Err(CnitoolError::Usage(_))
        ));
        assert!(matches!(
            run(&["frob".into(), "n".into(), "/x".into()], none),
            Err(CnitoolError::Usage(_))
        ));
    }
}

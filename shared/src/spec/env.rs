//! The CNI_* environment: which variables each command needs, and the spec's rules for
//! container ids, network names and interface names.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::args::CniArgs;
use crate::error::{Error, Result};

/// The verbs of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// The variables this command cannot do without, in the order libcni's skeleton reports
    /// them. CNI_NETNS is optional on DEL: the container may already be gone.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &[
                "CNI_COMMAND",
                "CNI_CONTAINERID",
                "CNI_NETNS",
                "CNI_IFNAME",
                "CNI_PATH",
            ],
            Command::Del => &["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Gc | Command::Status => &["CNI_COMMAND", "CNI_PATH"],
            Command::Version => &["CNI_COMMAND"],
        }
    }

    /// Commands that act on one attachment (container id + interface).
    pub fn targets_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The environment of one invocation, validated for its command.
#[derive(Debug, Clone)]
pub struct Environment {
    pub command: Command,
    /// Empty for GC, STATUS and VERSION.
    pub container_id: String,
    /// `None` when unset or empty (allowed on DEL, GC, STATUS).
    pub netns: Option<PathBuf>,
    /// Empty for GC, STATUS and VERSION.
    pub ifname: String,
    pub args: CniArgs,
    /// CNI_ARGS as given, passed on unchanged to delegated plugins; on DEL, less the pairs
    /// it skipped (see `args_skipped`).
    pub args_raw: String,
    /// The keys (printed lossily) of CNI_ARGS pairs that are not UTF-8, which DEL skips
    /// rather than fail on input it does not need; every other command refuses them.
    pub args_skipped: Vec<String>,
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Reads the process environment, as bytes: a variable that is not UTF-8 is not absent.
    pub fn from_process() -> Result<Environment> {
        Environment::from_lookup(|k| std::env::var_os(k))
    }

    /// Reads the variables through `lookup` and checks that the command has what it needs.
    /// Identity checks (container id, interface name) are separate, in [`Self::validate`],
    /// so the skeleton can report problems in the same order as libcni's.
    pub fn from_lookup<V: Into<OsString>>(
        lookup: impl Fn(&str) -> Option<V>,
    ) -> Result<Environment> {
        let raw = |k: &str| lookup(k).map(Into::into).unwrap_or_default();
        // Names and words must be text; paths may be any bytes, as the kernel allows.
        let text = |k: &'static str| {
            raw(k).into_string().map_err(|v| Error::EnvNotUtf8 {
                var: k,
                value: v.to_string_lossy().into_owned(),
            })
        };
        let raw_command = text("CNI_COMMAND")?;
        if raw_command.is_empty() {
            return Err(Error::MissingEnv(vec!["CNI_COMMAND"]));
        }
        let command = Command::parse(&raw_command).ok_or(Error::UnknownCommand(raw_command))?;
        let missing: Vec<&'static str> = command
            .required()
            .iter()
            .copied()
            .filter(|k| raw(k).is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingEnv(missing));
        }
        let args_bytes = raw("CNI_ARGS");
        let (args, not_utf8) = CniArgs::parse_bytes(args_bytes.as_bytes())?;
        let args_raw = match not_utf8.first() {
            // Every pair is text, so the whole is (the separators are ASCII).
            None => args_bytes.to_string_lossy().into_owned(),
            // DEL acts on the container id and interface alone: a pair it cannot read is
            // no reason to leave the container's resources behind.
            Some(_) if command == Command::Del => args
                .pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
            // Refused rather than dropped: dropping one pair silently would change what
            // the others mean (an `IP=` honoured or not), and Go plugins read them all.
            Some(key) => return Err(Error::ArgsNotUtf8 { key: key.clone() }),
        };
        let netns = Some(raw("CNI_NETNS"))
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let path = raw("CNI_PATH")
            .as_bytes()
            .split(|&b| b == b':')
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(OsStr::from_bytes(s)))
            .collect();
        Ok(Environment {
            command,
            container_id: text("CNI_CONTAINERID")?,
            netns,
            ifname: text("CNI_IFNAME")?,
            args,
            args_raw,
            args_skipped: not_utf8,
            path,
        })
    }

    /// The container id and interface name rules, for the commands that carry them.
    pub fn validate(&self) -> Result<()> {
        if !self.command.targets_attachment() {
            return Ok(());
        }
        validate_container_id(&self.container_id)?;
        validate_ifname(&self.ifname)
    }
}

/// Container ids and network names: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    }
}

pub fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::MissingContainerId);
    }
    if !is_valid_identifier(id) {
        return Err(Error::InvalidContainerId(id.to_string()));
    }
    Ok(())
}

pub fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::MissingNetworkName);
    }
    if !is_valid_identifier(name) {
        return Err(Error::InvalidNetworkName(name.to_string()));
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes (IFNAMSIZ - 1), not `.` or `..`, no `/`, `:` or
/// whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::EmptyIfName);
    }
    if name.len() > 15 {
        return Err(Error::IfNameTooLong(name.to_string()));
    }
    if name == "." || name == ".." {
        return Err(Error::IfNameDots(name.to_string()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Error::IfNameBadChars(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> Result<Environment> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::from_lookup(|k| map.get(k).cloned())
    }

    const FULL: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn reads_a_complete_add_environment() {
        let env = env_of(&FULL).expect("valid");
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(env.args.get("K8S_POD_NAME"), Some("p"));
        env.validate().expect("valid identity");
    }

    /// An environment whose values are bytes, as the kernel hands them over.
    fn env_of_bytes(pairs: &[(&str, &[u8])]) -> Result<Environment> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsStr::from_bytes(v).to_os_string()))
            .collect();
        Environment::from_lookup(|k| map.get(k).cloned())
    }

    fn with(
        command: &[u8],
        var: &'static str,
        value: &'static [u8],
    ) -> Vec<(&'static str, &'static [u8])> {
        let mut pairs: Vec<(&str, &[u8])> = FULL
            .iter()
            .map(|&(k, v)| (k, v.as_bytes()))
            .filter(|(k, _)| *k != var && *k != "CNI_COMMAND")
            .collect();
        pairs.push((
            "CNI_COMMAND",
            if command == b"ADD" { b"ADD" } else { b"DEL" },
        ));
        pairs.push((var, value));
        pairs
    }

    #[test]
    fn a_cni_args_pair_that_is_not_utf8_is_refused_but_never_hides_the_others() {
        let raw: &[u8] = b"IgnoreUnknown=1;IP=10.0.0.2;X=\xff";
        match env_of_bytes(&with(b"ADD", "CNI_ARGS", raw)) {
            Err(e @ Error::ArgsNotUtf8 { .. }) => {
                let cni = crate::spec::error::CniError::from(e);
                assert_eq!(cni.code.as_u32(), 4);
                assert!(
                    cni.msg.contains("CNI_ARGS") && cni.msg.contains("\"X\""),
                    "{}",
                    cni.msg
                );
            }
            other => panic!("{other:?}"),
        }
        // DEL needs none of it: the pair is skipped, the rest read and passed on.
        let env = env_of_bytes(&with(b"DEL", "CNI_ARGS", raw)).expect("DEL reads on");
        assert_eq!(env.args.get("IP"), Some("10.0.0.2"));
        assert_eq!(env.args_skipped, ["X"]);
        assert_eq!(env.args_raw, "IgnoreUnknown=1;IP=10.0.0.2");
    }

    #[test]
    fn paths_keep_their_bytes_and_names_must_be_text() {
        let env = env_of_bytes(&with(b"ADD", "CNI_NETNS", b"/run/netns/\xffx")).expect("valid");
        assert_eq!(
            env.netns.expect("netns").as_os_str().as_bytes(),
            b"/run/netns/\xffx"
        );
        let env = env_of_bytes(&with(b"ADD", "CNI_PATH", b"/opt/\xff:/b")).expect("valid");
        assert_eq!(env.path[0].as_os_str().as_bytes(), b"/opt/\xff");
        for var in ["CNI_IFNAME", "CNI_CONTAINERID"] {
            assert!(
                matches!(env_of_bytes(&with(b"DEL", var, b"eth\xff")), Err(Error::EnvNotUtf8 { var: v, .. }) if v == var),
                "{var}"
            );
        }
    }

    #[test]
    fn reports_every_missing_variable_in_order() {
        match env_of(&[("CNI_COMMAND", "ADD")]) {
            Err(Error::MissingEnv(m)) => assert_eq!(
                m,
                vec!["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            ),
            other => panic!("{other:?}"),
        }
        match env_of(&[]) {
            Err(Error::MissingEnv(m)) => assert_eq!(m, vec!["CNI_COMMAND"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn netns_is_optional_on_del_only() {
        let del: Vec<_> = FULL
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(env_of(&del).expect("DEL without netns").netns, None);
        let check: Vec<_> = del
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "CHECK")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert!(matches!(env_of(&check), Err(Error::MissingEnv(m)) if m == vec!["CNI_NETNS"]));
    }

    #[test]
    fn gc_and_status_need_only_the_path() {
        for cmd in ["GC", "STATUS"] {
            let env = env_of(&[("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")]).expect("valid");
            env.validate().expect("no identity needed");
        }
        assert!(env_of(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn unknown_command_is_refused() {
        assert!(matches!(
            env_of(&[("CNI_COMMAND", "add")]),
            Err(Error::UnknownCommand(c)) if c == "add"
        ));
    }

    #[test]
    fn container_id_rules() {
        for ok in ["a", "0", "abc-DEF_1.2", "cni-0123456789abcdef"] {
            validate_container_id(ok).expect(ok);
        }
        assert!(matches!(
            validate_container_id(""),
            Err(Error::MissingContainerId)
        ));
        for bad in [
            "-a",
            "_a",
            ".a",
            "a/b",
            "../../etc",
            "a b",
            "a;rm -rf",
            "a\nb",
            "ä",
        ] {
            assert!(
                matches!(
                    validate_container_id(bad),
                    Err(Error::InvalidContainerId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn network_name_rules() {
        validate_network_name("k8s-pod-network").expect("valid");
        assert!(matches!(
            validate_network_name(""),
            Err(Error::MissingNetworkName)
        ));
        assert!(matches!(
            validate_network_name("bad/name"),
            Err(Error::InvalidNetworkName(_))
        ));
    }

    #[test]
    fn ifname_rules() {
        validate_ifname("eth0").expect("valid");
        validate_ifname("a23456789012345").expect("15 bytes is the limit");
        assert!(matches!(
            validate_ifname("a234567890123456"),
            Err(Error::IfNameTooLong(_))
        ));
        assert!(matches!(validate_ifname(""), Err(Error::EmptyIfName)));
        for dots in [".", ".."] {
            assert!(matches!(validate_ifname(dots), Err(Error::IfNameDots(_))));
        }
        for bad in ["a/b", "eth0:1", "a b", "a\tb", "a\u{00a0}b"] {
            assert!(
                matches!(validate_ifname(bad), Err(Error::IfNameBadChars(_))),
                "{bad:?}"
            );
        }
    }
}

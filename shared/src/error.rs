//! The shared crate's error type, and its one mapping to CNI error codes.
//!
//! Plugin crates wrap this enum in their own (`#[from] shared::Error`) and map the rest of
//! their variants the same way.

use std::io;
use std::path::PathBuf;

use crate::spec::error::{CniError, ErrorCode};
use crate::spec::version::{self, Version};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- environment (CNI_*) -------------------------------------------------------------
    #[error("required env variables [{}] missing", .0.join(","))]
    MissingEnv(Vec<&'static str>),
    #[error("unknown CNI_COMMAND: {0}")]
    UnknownCommand(String),
    #[error("missing containerID")]
    MissingContainerId,
    #[error("invalid characters in containerID")]
    InvalidContainerId(String),
    #[error("interface name is empty")]
    EmptyIfName,
    #[error("interface name is too long")]
    IfNameTooLong(String),
    #[error("interface name is . or ..")]
    IfNameDots(String),
    #[error("interface name contains / or : or whitespace characters")]
    IfNameBadChars(String),
    /// A name or word of the environment that is not UTF-8 (paths may be any bytes).
    #[error("{var} is not valid UTF-8: {value:?}")]
    EnvNotUtf8 { var: &'static str, value: String },
    #[error("ARGS: invalid pair {0:?}")]
    ArgsInvalidPair(String),
    /// The key is printed lossily: the bytes themselves cannot go into JSON.
    #[error("CNI_ARGS: the pair with key {key:?} is not valid UTF-8")]
    ArgsNotUtf8 { key: String },
    #[error("ARGS: unknown args {0:?}")]
    ArgsUnknown(Vec<String>),
    #[error("ARGS: error parsing value of pair {pair:?}: {reason}")]
    ArgsBadValue { pair: String, reason: String },

    // ---- stdin and network configuration -------------------------------------------------
    #[error("error reading from stdin: {0}")]
    ReadStdin(#[source] io::Error),
    #[error("error unmarshall network config: {0}")]
    DecodeConfig(#[source] crate::gojson::DecodeError),
    /// A key every plugin shares has the wrong shape (`runtimeConfig.portMappings[0]...`).
    #[error("invalid network config: {0}")]
    ConfigField(#[source] crate::gojson::DecodeError),
    /// The plugin's own keys have the wrong shape.
    #[error("invalid {plugin} configuration: {source}")]
    PluginConfig {
        plugin: &'static str,
        #[source]
        source: crate::gojson::DecodeError,
    },
    #[error("missing network name")]
    MissingNetworkName,
    #[error("invalid characters found in network name")]
    InvalidNetworkName(String),
    #[error("incompatible CNI versions")]
    IncompatibleVersion {
        config: String,
        supported: &'static [Version],
    },
    #[error("config version does not allow {command}")]
    VersionForbidsCommand {
        command: &'static str,
        config: Version,
    },
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    #[error("could not parse prevResult: {0}")]
    DecodePrevResult(String),
    #[error("cannot convert result: {0}")]
    ConvertResult(String),

    // ---- Linux: namespaces, netlink, sysctls ---------------------------------------------
    #[error("network namespace {} does not exist", .path.display())]
    NetnsNotFound { path: PathBuf },
    #[error("{} is not a network namespace", .path.display())]
    NotANetns { path: PathBuf },
    #[error("network namespace {}: {op}: {source}", .path.display())]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: io::Error,
    },

    // ---- delegation to an IPAM plugin ----------------------------------------------------
    #[error("invalid plugin name: {0}")]
    InvalidPluginName(String),
    #[error("failed to find plugin {name:?} in path {path:?}")]
    PluginNotFound { name: String, path: Vec<String> },
    #[error("failed to run plugin {name:?}: {source}")]
    PluginExec {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("plugin {name:?} failed with no error message: {status}")]
    PluginFailedSilently { name: String, status: String },
    #[error("plugin {name:?} did not answer within the invocation's deadline ({} ms)", .waited.as_millis())]
    PluginTimedOut {
        name: String,
        waited: std::time::Duration,
    },
    #[error("plugin {name:?} returned an unreadable result: {reason}")]
    PluginBadOutput { name: String, reason: String },
    /// The delegated plugin's own error, passed through with its code.
    #[error("{0}")]
    Delegated(CniError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for CniError {
    fn from(e: Error) -> CniError {
        use ErrorCode as C;
        let msg = e.to_string();
        let (code, details) = match e {
            Error::MissingEnv(_) => (
                C::InvalidEnvironment,
                "the runtime must set these CNI_* variables for this command".to_string(),
            ),
            Error::UnknownCommand(_) => (
                C::InvalidEnvironment,
                "CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION".to_string(),
            ),
            Error::MissingContainerId => (
                C::UnknownContainer,
                "set CNI_CONTAINERID to the container's id".to_string(),
            ),
            Error::InvalidContainerId(id) => (
                C::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID {id:?} must start with a letter or digit and contain only \
                     letters, digits, '_', '.' and '-'"
                ),
            ),
            Error::EmptyIfName => (
                C::InvalidEnvironment,
                "set CNI_IFNAME to the interface name to create in the container".to_string(),
            ),
            Error::IfNameTooLong(name) => (
                C::InvalidEnvironment,
                format!(
                    "interface name should be less than 16 characters: CNI_IFNAME {name:?} is {} \
                     bytes long",
                    name.len()
                ),
            ),
            Error::IfNameDots(name) | Error::IfNameBadChars(name) => (
                C::InvalidEnvironment,
                format!("CNI_IFNAME {name:?} is not a usable Linux interface name"),
            ),
            Error::EnvNotUtf8 { var, .. } => {
                (C::InvalidEnvironment, format!("{var} must be UTF-8 text"))
            }
            Error::ArgsNotUtf8 { .. } => (
                C::InvalidEnvironment,
                "every CNI_ARGS key and value must be UTF-8 text; fix or remove the pair"
                    .to_string(),
            ),
            Error::ArgsInvalidPair(_) | Error::ArgsUnknown(_) | Error::ArgsBadValue { .. } => (
                C::InvalidEnvironment,
                "CNI_ARGS must be K=V pairs separated by ';'; add IgnoreUnknown=1 to pass keys \
                 this plugin does not know"
                    .to_string(),
            ),
            Error::ReadStdin(_) => (C::IoFailure, String::new()),
            Error::DecodeConfig(e) => (
                C::DecodingFailure,
                if e.is_syntax() {
                    "the network configuration on stdin must be one JSON object".to_string()
                } else {
                    "the network configuration must be a JSON object with a string \"name\""
                        .to_string()
                },
            ),
            Error::ConfigField(e) | Error::PluginConfig { source: e, .. } => (
                C::InvalidNetworkConfig,
                match e.path_string() {
                    p if p.is_empty() => "fix the network configuration".to_string(),
                    p => format!("fix {p:?} in the network configuration"),
                },
            ),
            Error::MissingNetworkName => (
                C::InvalidNetworkConfig,
                "set \"name\" in the network configuration".to_string(),
            ),
            Error::InvalidNetworkName(name) => (
                C::InvalidNetworkConfig,
                format!(
                    "network name {name:?} must start with a letter or digit and contain only \
                     letters, digits, '_', '.' and '-'"
                ),
            ),
            Error::IncompatibleVersion { config, supported } => (
                C::IncompatibleVersion,
                if config.is_empty() {
                    format!(
                        "the network configuration has no \"cniVersion\"; set it to one of {}",
                        version::list(supported)
                    )
                } else {
                    format!(
                        "config is {config:?}, plugin supports {}; set \"cniVersion\" to one of \
                         them",
                        version::list(supported)
                    )
                },
            ),
            Error::VersionForbidsCommand { command, config } => (
                C::IncompatibleVersion,
                format!(
                    "{command} needs cniVersion {} or later; config has {config}",
                    {
                        if command == "CHECK" {
                            "0.4.0"
                        } else {
                            "1.1.0"
                        }
                    }
                ),
            ),
            Error::InvalidConfig(_) => (C::InvalidNetworkConfig, String::new()),
            Error::DecodePrevResult(_) | Error::ConvertResult(_) => {
                (C::DecodingFailure, String::new())
            }
            Error::NetnsNotFound { .. } => (
                C::UnknownContainer,
                "CNI_NETNS must name an existing network namespace; the container may be gone"
                    .to_string(),
            ),
            Error::NotANetns { .. } => (
                C::InvalidEnvironment,
                "CNI_NETNS must be a network namespace file such as /run/netns/NAME or \
                 /proc/PID/ns/net"
                    .to_string(),
            ),
            Error::Netns { .. } => (C::Netns, String::new()),
            Error::Netlink { .. } => (C::Netlink, String::new()),
            Error::Sysctl { .. } => (C::Sysctl, String::new()),
            Error::InvalidPluginName(_) => (
                C::InvalidNetworkConfig,
                "\"ipam\".\"type\" must be a plugin file name, not a path".to_string(),
            ),
            Error::PluginNotFound { .. } => (
                C::Delegation,
                "install the plugin into one of the CNI_PATH directories or fix \"type\""
                    .to_string(),
            ),
            Error::PluginTimedOut { .. } => (
                C::TryAgainLater,
                "the plugin was killed; its datastore or the node may be stalled, see its log"
                    .to_string(),
            ),
            Error::PluginExec { .. }
            | Error::PluginFailedSilently { .. }
            | Error::PluginBadOutput { .. } => (C::Delegation, String::new()),
            Error::Delegated(inner) => return inner,
        };
        CniError { code, msg, details }
    }
}

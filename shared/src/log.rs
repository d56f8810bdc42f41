//! Logging for plugins: to stderr (which runtimes pass on to their own logs) or, with
//! `log_file_path`, appended to a file. Never stdout: stdout carries only the result or the
//! error object.
//!
//! A plugin process lives for milliseconds and logs a few lines, so a small `log::Log` sink
//! does the job; a full logging framework would cost start-up time for nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

thread_local! {
    /// Set while this thread writes a log line: a panic there must not log again (the file's
    /// lock is held by the very write that panicked).
    static WRITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is in the middle of writing a log line.
pub fn in_progress() -> bool {
    WRITING.with(std::cell::Cell::get)
}

/// Where log lines go.
enum Sink {
    Stderr,
    File(Mutex<crate::log_rotate::RotatingFile>),
}

/// The workload an invocation is about, as Calico's plugin names it in every line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub interface: String,
    /// K8S_POD_NAMESPACE from CNI_ARGS.
    pub namespace: String,
    /// K8S_POD_NAME from CNI_ARGS.
    pub pod: String,
    /// The network config's `name`.
    pub network: String,
}

impl Workload {
    /// The ` Key="value"` tail of a line: keys sorted as logrus sorts them, empty ones left
    /// out, values quoted as Go's `%q` would (backslash and quote escaped).
    fn fields(&self) -> String {
        let mut out = String::new();
        for (key, value) in [
            ("ContainerID", &self.container_id),
            ("InterfaceName", &self.interface),
            ("Namespace", &self.namespace),
            ("Network", &self.network),
            ("Pod", &self.pod),
        ] {
            if value.is_empty() {
                continue;
            }
            out.push(' ');
            out.push_str(key);
            out.push_str("=\"");
            for c in crate::redact::url_credentials(value).chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() => out.push(' '),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out
    }
}

struct PluginLogger {
    plugin: &'static str,
    fields: String,
    level: LevelFilter,
    sink: Sink,
}

impl Log for PluginLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let place = match (record.module_path(), record.line()) {
            (Some(m), Some(l)) => format!("{m} {l}"),
            (Some(m), None) => m.to_string(),
            _ => record.target().to_string(),
        };
        let line = format!(
            "{} [{}][{}] {} {place}: {}{}\n",
            local_time(),
            level_name(record.level()),
            std::process::id(),
            self.plugin,
            message(&record.args().to_string()),
            self.fields,
        );
        WRITING.with(|w| w.set(true));
        // A failed log write must never fail the plugin.
        match &self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_line(line.as_bytes());
                }
            }
        }
        WRITING.with(|w| w.set(false));
    }

    fn flush(&self) {}
}

/// A message as a line holds it: on one line, with credentials hidden.
fn message(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::redact::secrets(&one_line)
}

/// Calico's (logrus's) level names.
fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Now, in the host's local time zone, to the millisecond: `2024-05-02 10:21:32.123`.
fn local_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = now.subsec_millis();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(libc::time_t::MAX);
    match local_tm(secs) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => format!("{}.{millis:03}", now.as_secs()),
    }
}

/// `localtime_r`: reentrant, reads TZ and /etc/localtime as every C program on the host does.
#[allow(unsafe_code)]
fn local_tm(secs: libc::time_t) -> Option<libc::tm> {
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the
    // call and the function keeps neither.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    }
}

/// Reads a `log_level` value as Calico writes it (`debug`, `info`, `warning`, `error`,
/// `fatal`, `panic`, `none`); anything unknown falls back to `default`.
pub fn parse_level(text: &str, default: LevelFilter) -> LevelFilter {
    match text.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warn" | "warning" => LevelFilter::Warn,
        "error" | "fatal" | "panic" => LevelFilter::Error,
        "none" | "off" => LevelFilter::Off,
        _ => default,
    }
}

/// Installs the process-wide logger once. A log file that cannot be opened falls back to
/// stderr (and says so) rather than failing the plugin. The file rotates within `limits`.
pub fn init(
    plugin: &'static str,
    workload: &Workload,
    level: LevelFilter,
    file: Option<&Path>,
    limits: crate::log_rotate::Limits,
) {
    let sink = match file {
        None => Sink::Stderr,
        Some(path) => match crate::log_rotate::RotatingFile::open(path, limits, open_log_file) {
            Ok(f) => Sink::File(Mutex::new(f)),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{plugin}: cannot open log file {}: {e}; logging to stderr",
                    path.display()
                );
                Sink::Stderr
            }
        },
    };
    let logger = PluginLogger {
        plugin,
        fields: workload.fields(),
        level,
        sink,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For an error found before the config said where to log: stderr, warnings and errors, as
/// Calico's plugin logs before it has read its config. Does nothing once a logger is set.
pub fn init_fallback(plugin: &'static str, workload: &Workload) {
    if !INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        init(
            plugin,
            workload,
            LevelFilter::Warn,
            None,
            crate::log_rotate::Limits::default(),
        );
    }
}

/// The log holds container ids, pod names and datastore errors: readable by its owner and
/// group only, in directories no wider than 0755, whatever the umask. A log an earlier
/// version made wider is narrowed.
const LOG_MODE: u32 = 0o640;

fn open_log_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        // Non-blocking: a FIFO in the log's place would otherwise block the open until a
        // reader came; it is then refused as not a regular file.
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    if meta.is_file() && meta.mode() & 0o037 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & LOG_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_sorted_quoted_and_empty_ones_left_out() {
        let w = Workload {
            container_id: "abc".into(),
            interface: "eth0".into(),
            namespace: String::new(),
            pod: "we\"b".into(),
            network: "k8s-pod-network".into(),
        };
        assert_eq!(
            w.fields(),
            r#" ContainerID="abc" InterfaceName="eth0" Network="k8s-pod-network" Pod="we\"b""#
        );
    }

    #[test]
    fn the_time_is_local_with_milliseconds() {
        let t = local_time();
        let b = t.as_bytes();
        assert_eq!(t.len(), 23, "{t}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b' ', b':', b':', b'.')
        );
    }

    #[test]
    fn messages_are_one_line_without_secrets() {
        assert_eq!(
            message("denied\nAuthorization: Bearer abc.def https://u:p@h/x"),
            "denied Authorization: Bearer *** https://***@h/x"
        );
    }

    #[test]
    fn reads_calico_level_names() {
        assert_eq!(parse_level("WARNING", LevelFilter::Info), LevelFilter::Warn);
        assert_eq!(parse_level("debug", LevelFilter::Info), LevelFilter::Debug);
        assert_eq!(parse_level("fatal", LevelFilter::Info), LevelFilter::Error);
        assert_eq!(parse_level("none", LevelFilter::Info), LevelFilter::Off);
        assert_eq!(parse_level("loud", LevelFilter::Info), LevelFilter::Info);
    }
}

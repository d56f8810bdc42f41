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

struct PluginLogger {
    plugin: &'static str,
    container: String,
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
        let line = format!(
            "{} [{}] {} pid={} container={}: {}\n",
            unix_time(),
            level_name(record.level()),
            self.plugin,
            std::process::id(),
            self.container,
            record.args()
        );
        let line = crate::redact::url_credentials(&line);
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

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

fn unix_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
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
    container: &str,
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
        container: container.to_string(),
        level,
        sink,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
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
    fn reads_calico_level_names() {
        assert_eq!(parse_level("WARNING", LevelFilter::Info), LevelFilter::Warn);
        assert_eq!(parse_level("debug", LevelFilter::Info), LevelFilter::Debug);
        assert_eq!(parse_level("fatal", LevelFilter::Info), LevelFilter::Error);
        assert_eq!(parse_level("none", LevelFilter::Info), LevelFilter::Off);
        assert_eq!(parse_level("loud", LevelFilter::Info), LevelFilter::Info);
    }
}

//! The plugins' log file, rotated as Calico's plugin rotates `cni.log`: past
//! `log_file_max_size` MB the file is renamed to `<name>-<UTC time>.<ext>` (the backup names
//! Calico's rotation library gives) and a new one started; backups beyond
//! `log_file_max_count`, or older than `log_file_max_age` days, are removed.
//!
//! Unlike that library, it is safe with many writers: every plugin invocation of a node
//! appends to the same file, often several at once. Each line is written with one `write`
//! on an `O_APPEND` descriptor while holding an exclusive `flock` on the file it goes to, and
//! only the holder of that lock renames the file. A writer that waited on a file someone
//! else renamed meanwhile notices (the path's inode is no longer its descriptor's) and moves
//! to the new file before writing. So no line is cut, interleaved or lost, and no backup is
//! overwritten.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

/// Calico's defaults for `log_file_max_size` (MB), `log_file_max_age` (days) and
/// `log_file_max_count`, used when a key is absent or 0.
pub const DEFAULT_MAX_SIZE_MB: u64 = 100;
pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
pub const DEFAULT_MAX_COUNT: usize = 10;

const MB: u64 = 1024 * 1024;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// When to rotate and what to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_size: u64,
    pub max_age: Duration,
    pub max_count: usize,
}

impl Limits {
    /// From Calico's keys; 0 (or absent) means Calico's default.
    pub fn from_calico(max_size_mb: u64, max_age_days: u64, max_count: u64) -> Limits {
        let or = |v: u64, default: u64| if v == 0 { default } else { v };
        Limits {
            max_size: or(max_size_mb, DEFAULT_MAX_SIZE_MB).saturating_mul(MB),
            max_age: DAY.saturating_mul(
                u32::try_from(or(max_age_days, DEFAULT_MAX_AGE_DAYS)).unwrap_or(u32::MAX),
            ),
            max_count: usize::try_from(or(max_count, DEFAULT_MAX_COUNT as u64))
                .unwrap_or(usize::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_calico(0, 0, 0)
    }
}

/// How the log file is (re)opened: for appending, refusing links and non-regular files.
pub type Opener = fn(&Path) -> io::Result<File>;

/// An open log file that rotates itself.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    limits: Limits,
    open: Opener,
}

impl RotatingFile {
    pub fn open(path: &Path, limits: Limits, open: Opener) -> io::Result<RotatingFile> {
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file: open(path)?,
            limits,
            open,
        })
    }

    /// Appends one line (which should end in a newline), rotating first if it would take
    /// the file past its size.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut attempts = 0;
        loop {
            let file = self.file.try_clone()?;
            let locked = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
            // Renamed by another writer while we waited: follow the path to the new file.
            if !same_file(&locked, &self.path) && attempts < 8 {
                attempts += 1;
                drop(locked);
                self.file = (self.open)(&self.path)?;
                continue;
            }
            let size = locked.metadata()?.len();
            if size > 0 && size + line.len() as u64 > self.limits.max_size && attempts < 8 {
                attempts += 1;
                self.rotate()?;
                drop(locked);
                self.file = (self.open)(&self.path)?;
                continue;
            }
            // One write on an O_APPEND descriptor: whole, at the end, under the lock.
            return (&*locked).write_all(line);
        }
    }

    /// Renames the current file to a backup and removes the backups beyond the limits.
    /// Called with the current file's lock held.
    fn rotate(&self) -> io::Result<()> {
        let backup = free_backup_name(&self.path, SystemTime::now());
        std::fs::rename(&self.path, &backup)?;
        prune(&self.path, &self.limits, SystemTime::now());
        Ok(())
    }
}

/// Whether `path` still names the file open as `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `dir/name.ext` → (`dir`, `name-`, `.ext`): backups are `name-<time>.ext`.
fn backup_parts(path: &Path) -> (PathBuf, String, String) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_string(), name[dot..].to_string()),
        _ => (name, String::new()),
    };
    (dir, format!("{stem}-"), ext)
}

/// `name-2006-01-02T15-04-05.000.ext` in UTC; should that exist (two rotations in one
/// millisecond), a counter is appended to the time rather than overwrite it.
fn free_backup_name(path: &Path, now: SystemTime) -> PathBuf {
    let (dir, prefix, ext) = backup_parts(path);
    let stamp = utc_stamp(now);
    let mut candidate = dir.join(format!("{prefix}{stamp}{ext}"));
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        candidate = dir.join(format!("{prefix}{stamp}-{n}{ext}"));
        n += 1;
    }
    candidate
}

/// Removes backups beyond `max_count` (oldest first) and older than `max_age`. Failures are
/// left for the next rotation: pruning must never cost a log line.
fn prune(path: &Path, limits: &Limits, now: SystemTime) {
    let (dir, prefix, ext) = backup_parts(path);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut backups: Vec<(String, PathBuf, SystemTime)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let middle = name.strip_prefix(&prefix)?.strip_suffix(ext.as_str())?;
            is_stamp(middle).then_some(())?;
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((name, e.path(), meta.modified().unwrap_or(now)))
        })
        .collect();
    // The stamp sorts as time does.
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    for (index, (_, backup, modified)) in backups.iter().enumerate() {
        let too_old = now
            .duration_since(*modified)
            .is_ok_and(|age| age > limits.max_age);
        if index >= limits.max_count || too_old {
            let _ = std::fs::remove_file(backup);
        }
    }
}

/// `2006-01-02T15-04-05.000`, optionally followed by `-<n>`.
fn is_stamp(text: &str) -> bool {
    let (stamp, counter) = match text.get(23..) {
        Some(rest) => (&text[..23], rest),
        None => return false,
    };
    let shape_ok = stamp.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 | 13 | 16 => b == b'-',
        10 => b == b'T',
        19 => b == b'.',
        _ => b.is_ascii_digit(),
    });
    shape_ok
        && (counter.is_empty()
            || counter
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// The UTC time as `2006-01-02T15-04-05.000`.
fn utc_stamp(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) =
        crate::civil_date::civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}.{:03}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs::OpenOptions;

    fn append(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    fn small(max_size: u64, max_count: usize) -> Limits {
        Limits {
            max_size,
            max_age: DAY * 30,
            max_count,
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn calico_defaults_when_unset_or_zero() {
        let l = Limits::from_calico(0, 0, 0);
        assert_eq!(l.max_size, 100 * MB);
        assert_eq!(l.max_age, DAY * 30);
        assert_eq!(l.max_count, 10);
        let l = Limits::from_calico(1, 2, 3);
        assert_eq!((l.max_size, l.max_age, l.max_count), (MB, DAY * 2, 3));
    }

    #[test]
    fn stamps_are_utc_and_recognised() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_190_849_541);
        let stamp = utc_stamp(at);
        assert_eq!(stamp, "2026-12-02T05-54-09.541");
        assert!(is_stamp(&stamp));
        assert!(is_stamp(&format!("{stamp}-12")));
        assert!(!is_stamp("2026-12-02T05-54-09"));
        assert!(!is_stamp(&format!("{stamp}-")));
    }

    #[test]
    fn a_full_file_becomes_a_backup_with_calicos_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cni.log");
        let mut log = RotatingFile::open(&path, small(100, 10), append).expect("open");
        let line = [b'x'; 39];
        let mut line = line.to_vec();
        line.push(b'\n');
        for _ in 0..3 {
            log.write_line(&line).expect("write");
        }
        let all = files(dir.path());
        assert_eq!(all.len(), 2, "{all:?}");
        let backup = all
            .iter()
            .find(|p| *p != &path)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .expect("a backup");
        let middle = backup
            .strip_prefix("cni-")
            .and_then(|b| b.strip_suffix(".log"))
            .expect("cni-<time>.log");
        assert!(is_stamp(middle), "{backup}");
        assert_eq!(
            std::fs::read(dir.path().join(&backup)).expect("read").len(),
            80
        );
        assert_eq!(std::fs::read(&path).expect("read").len(), 40);
    }

    #[test]
    fn backups_beyond_the_count_or_age_are_removed_and_others_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cni.log");
        let unrelated = dir.path().join("cni-notes.log");
        std::fs::write(&unrelated, "keep me").expect("write");
        let mut log = RotatingFile::open(&path, small(10, 2), append).expect("open");
        for i in 0..6 {
            log.write_line(format!("line {i:03}\n").as_bytes())
                .expect("write");
        }
        let all = files(dir.path());
        // The current file, two backups, and the unrelated file.
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all.contains(&unrelated));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "line 005\n");

        // An old backup goes at the next rotation whatever the count.
        let old = dir.path().join("cni-2001-01-01T00-00-00.000.log");
        std::fs::write(&old, "old\n").expect("write");
        let file = OpenOptions::new().write(true).open(&old).expect("open");
        file.set_modified(SystemTime::now() - DAY * 31)
            .expect("set mtime");
        let mut log = RotatingFile::open(
            &path,
            Limits {
                max_count: 10,
                ..small(10, 10)
            },
            append,
        )
        .expect("open");
        log.write_line(b"line 006\n").expect("write");
        assert!(!old.exists(), "older than max_age: {:?}", files(dir.path()));
    }

    /// Writers with their own descriptors, as plugin processes have, writing and rotating at
    /// once: every line arrives whole, exactly once, in some file.
    #[test]
    fn concurrent_writers_lose_and_cut_no_line() {
        const WRITERS: usize = 8;
        const LINES: usize = 400;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cni.log");
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let path = &path;
                s.spawn(move || {
                    let mut log =
                        RotatingFile::open(path, small(4096, 1000), append).expect("open");
                    for n in 0..LINES {
                        let line = format!("writer {w:02} line {n:04} {}\n", "y".repeat(w * 7));
                        log.write_line(line.as_bytes()).expect("write");
                    }
                });
            }
        });
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let all = files(dir.path());
        assert!(all.len() > 2, "rotated: {all:?}");
        for file in &all {
            let text = std::fs::read_to_string(file).expect("read");
            assert!(text.ends_with('\n'), "{file:?} ends mid-line");
            assert!(
                text.len() as u64 <= 4096,
                "{file:?} is {} bytes",
                text.len()
            );
            // A backup is only ever a file that was full: no writer renamed a fresh file
            // because it still wrote to one renamed before.
            if file != &path {
                assert!(
                    text.len() + 100 > 4096,
                    "{file:?} rotated at {} bytes",
                    text.len()
                );
            }
            for line in text.lines() {
                let mut words = line.split(' ');
                let (Some("writer"), Some(w), Some("line"), Some(_)) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    panic!("a cut or mixed line in {file:?}: {line:?}");
                };
                let w: usize = w.parse().expect("writer number");
                assert_eq!(words.next().unwrap_or("").len(), w * 7, "{line:?}");
                *seen.entry(line.to_string()).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), WRITERS * LINES, "lines lost");
        assert!(seen.values().all(|&n| n == 1), "a line written twice");
    }
}

//! The shared log file rotates with Calico's keys while many plugin processes write to it:
//! `log_file_max_size` (MB) past which the file becomes `<name>-<UTC time>.<ext>`, and
//! `log_file_max_count` backups kept. Lines are never cut, mixed or lost, and the file that
//! was full is kept whole as the backup. Needs root (a network namespace for host-local).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use cni_tests::fixtures::plugin_dir;
use cni_tests::host_local::{conf, ranges, HostLocal};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

const MB: usize = 1024 * 1024;
const PODS: usize = 24;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    all.sort();
    all
}

fn logging_conf(data: &Path, log: &Path, extra: Value) -> Value {
    let mut c = conf(
        "1.0.0",
        data,
        json!({"ranges": ranges(&[&["10.21.0.0/24"]])}),
    );
    c["log_level"] = json!("debug");
    c["log_file_path"] = json!(log);
    if let (Some(obj), Value::Object(more)) = (c.as_object_mut(), extra) {
        obj.extend(more);
    }
    c
}

/// A log one line short of the size limit, then a burst of pods, each process logging
/// several lines: the first one over the limit rotates, the others follow it.
#[test]
fn a_full_log_rotates_once_under_a_burst_of_writers() {
    let dir = TestDir::new().expect("temp dir");
    let netns = TestNetns::new("logrot").expect("netns");
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("cni.log");
    // Old lines, each whole, filling the file to just under 1 MB.
    let old_line = format!("{} old\n", "o".repeat(59));
    let old = old_line.repeat((MB - 100) / old_line.len());
    fs::write(&log, &old).expect("prefill");
    let conf = logging_conf(
        &dir.path().join("data"),
        &log,
        json!({"log_file_max_size": 1, "log_file_max_count": 3}),
    );

    let plugin = HostLocal::in_dir(&plugin_dir(), netns.path_str());
    let outs: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = (0..PODS)
            .map(|i| {
                let (plugin, conf) = (&plugin, &conf);
                s.spawn(move || plugin.add(conf, &format!("rot-{i}"), "eth0").expect("run"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, out) in outs.iter().enumerate() {
        assert!(out.ok(), "ADD rot-{i}: {}", out.describe());
    }

    let all = files(&logs);
    assert_eq!(all.len(), 2, "one rotation: {all:?}");
    let backup = all.iter().find(|p| **p != log).expect("a backup");
    let name = backup.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let stamp = name
        .strip_prefix("cni-")
        .and_then(|n| n.strip_suffix(".log"))
        .unwrap_or_else(|| panic!("backup named {name}"));
    assert_eq!(stamp.len(), "2006-01-02T15-04-05.000".len(), "{name}");
    assert_eq!(&stamp[10..11], "T", "{name}");

    // The old content is the backup's beginning, untouched; nothing is cut.
    let backed_up = fs::read_to_string(backup).expect("read backup");
    assert!(backed_up.starts_with(&old), "the full file was kept whole");
    assert!(backed_up.len() <= MB, "{} bytes", backed_up.len());
    let current = fs::read_to_string(&log).expect("read log");
    let mut containers = BTreeSet::new();
    for text in [&backed_up[old.len()..], current.as_str()] {
        assert!(text.is_empty() || text.ends_with('\n'), "ends mid-line");
        for line in text.lines() {
            assert!(
                line.contains("host-local") && line.contains("rot-"),
                "a cut or mixed line: {line:?}"
            );
            if let Some(at) = line.find("rot-") {
                let id: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                containers.insert(id);
            }
        }
    }
    assert_eq!(
        containers.len(),
        PODS,
        "every process logged: {containers:?}"
    );
}

/// Backups beyond `log_file_max_count` go, oldest first, at the next rotation.
#[test]
fn backups_beyond_the_count_are_removed() {
    let dir = TestDir::new().expect("temp dir");
    let netns = TestNetns::new("logcnt").expect("netns");
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("cni.log");
    let older = [
        "cni-2026-01-01T00-00-00.000.log",
        "cni-2026-01-02T00-00-00.000.log",
        "cni-2026-01-03T00-00-00.000.log",
    ];
    for name in older {
        fs::write(logs.join(name), "old backup\n").expect("write");
    }
    let unrelated = logs.join("calico-node.log");
    fs::write(&unrelated, "not ours\n").expect("write");
    fs::write(&log, "x".repeat(MB)).expect("prefill");
    let conf = logging_conf(
        &dir.path().join("data"),
        &log,
        json!({"log_file_max_size": 1, "log_file_max_count": 2}),
    );
    let plugin = HostLocal::in_dir(&plugin_dir(), netns.path_str());
    let out = plugin.add(&conf, "cnt-1", "eth0").expect("run");
    assert!(out.ok(), "{}", out.describe());

    let names: Vec<String> = files(&logs)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // The new backup and the newest old one; the two oldest are gone; others untouched.
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"calico-node.log".to_string()), "{names:?}");
    assert!(names.contains(&older[2].to_string()), "{names:?}");
    assert!(!names.contains(&older[0].to_string()), "{names:?}");
    assert!(!names.contains(&older[1].to_string()), "{names:?}");
    assert!(fs::read_to_string(&log).expect("read").contains("cnt-1"));
}

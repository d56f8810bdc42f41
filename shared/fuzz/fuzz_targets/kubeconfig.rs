//! The kubeconfig calico-ipam reads for the Kubernetes datastore (`kubernetes.kubeconfig`):
//! kube's YAML parse (several documents merged), the current-context choice, our overrides,
//! the check of every file it names, the `tokenFile` read and trimmed, and kube's loading of
//! the cluster URL, CA bundle, client identity and proxy into a client configuration
//! (`k8s::client::load_kubeconfig`: what `KubeClient::connect` does before it builds the
//! client; nothing is run or sent).
//!
//! Properties: loading never panics; a failure is `KubeError::Config`, and its message never
//! quotes a `token:` or `password:` value of the file.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use calico_ipam::k8s::client::load_kubeconfig;
use calico_ipam::k8s::{KubeError, KubeSettings};
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fn dir() -> &'static Path {
    static READY: OnceLock<()> = OnceLock::new();
    let dir = scratch::dir("kubeconfig");
    READY.get_or_init(|| {
        // Files a kubeconfig may name, relative to itself.
        std::fs::write(dir.join("token"), "s3cr3t-from-a-file\n").expect("token file");
        std::fs::write(dir.join("empty"), "").expect("empty file");
    });
    dir
}

/// The values of `token:` and `password:` keys, as written on their line (unquoted).
fn secrets(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for line in text.lines() {
        for key in ["token:", "password:"] {
            let mut rest = line;
            while let Some(at) = rest.find(key) {
                let before = rest[..at].chars().next_back();
                let after = &rest[at + key.len()..];
                rest = after;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                    continue;
                }
                let value = after
                    .trim()
                    .trim_end_matches([',', '}'])
                    .trim_matches(['"', '\''])
                    .trim();
                if value.chars().count() >= 8 {
                    found.push(value);
                }
            }
        }
    }
    found
}

fn load(text: &[u8]) -> Result<(), KubeError> {
    let path = dir().join("kubeconfig");
    std::fs::write(&path, text).expect("write the kubeconfig");
    load_kubeconfig(&KubeSettings {
        kubeconfig: Some(path.display().to_string()),
        ..KubeSettings::default()
    })
    .map(drop)
}

fuzz_target!(|data: &[u8]| {
    let Err(err) = load(data) else {
        return;
    };
    let KubeError::Config(message) = &err else {
        panic!("not a configuration error: {err:?}");
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for secret in secrets(text) {
        // Only a value written once, so that changing it changes nothing else.
        if !message.contains(secret) || text.matches(secret).count() != 1 {
            continue;
        }
        // The value may also be a word of the message (a context's name, "kubeconfig"):
        // the message quotes the file only if it follows the value when the value changes.
        let stand_in: String = "Q".repeat(secret.len());
        if text.contains(&stand_in) {
            continue;
        }
        if let Err(again) = load(text.replace(secret, &stand_in).as_bytes()) {
            let again = again.to_string();
            assert!(
                !again.contains(&stand_in),
                "the message quotes the secret {secret:?}: {message}"
            );
        }
    }
});

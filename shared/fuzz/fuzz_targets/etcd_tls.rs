//! The TLS material of the `etcdv3` datastore: `etcd_cert_file`, `etcd_key_file` and
//! `etcd_ca_cert_file` as `EtcdKv::new` reads and checks them (PEM sections, private keys
//! of every kind, the DER walk to a v1 or v3 certificate's public key, the key-belongs-to-
//! the-certificate check). The first byte says which files are configured (bit 0: the
//! client certificate and key, bit 1: the CA); the rest is the certificate, the key and the
//! CA, separated by NUL bytes (which PEM never holds).
//!
//! Properties: building the client never panics; a failure is a typed configuration error
//! naming one of the configured files, and its message says which.

#![no_main]

use std::path::PathBuf;

use calico_ipam::store::etcd::{EtcdConfig, EtcdConfigError, EtcdKv};
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let mut file = |name: &str| -> PathBuf {
        let path = scratch::dir("etcd_tls").join(name);
        std::fs::write(&path, parts.next().unwrap_or_default()).expect("write a scratch file");
        path
    };
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let mut config = EtcdConfig::new(vec!["https://127.0.0.1:2379".into()]);
    if flags & 1 != 0 {
        config.cert_file = Some(cert.clone());
        config.key_file = Some(key.clone());
    }
    if flags & 2 != 0 {
        config.ca_cert_file = Some(ca.clone());
    }
    let Err(err) = EtcdKv::new(&config) else {
        return;
    };
    let configured = [&config.cert_file, &config.key_file, &config.ca_cert_file];
    let path = match &err {
        EtcdConfigError::BadPem { path, .. } | EtcdConfigError::BadClientIdentity { path, .. } => {
            path
        }
        other => panic!("not an error about a file: {other:?}"),
    };
    assert!(
        configured.iter().any(|c| c.as_ref() == Some(path)),
        "{} is not a configured file: {err}",
        path.display()
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the message does not name the file: {err}"
    );
});

//! calico-ipam on an etcd with its own authentication on (users and roles), as operators
//! run it: with `ETCD_USERNAME` / `ETCD_PASSWORD` in the plugin's environment ADD and DEL
//! work; a wrong password fails with the configuration's code (7) and a message that names
//! the user, never the password, and nothing changes in the datastore. Needs Debian's
//! `etcd-server`.

use cni_tests::etcd::{auth_token, enable_auth, EtcdServer};
use cni_tests::ipam::{call_with_env, etcd_range_as, IpamFixture, NET};
use serde_json::json;

const POOL: &str = "10.83.0.0/24";
const PASSWORD: &str = "calico-pw-2c9e";

#[test]
fn calico_ipam_authenticates_to_etcd_and_refused_credentials_change_nothing() {
    let server = EtcdServer::start().expect("etcd (apt-get install -y etcd-server)");
    let url = server.client_url();
    let fx = IpamFixture::on_etcd(&url);
    fx.create_pool(POOL, 26);
    let conf = fx.conf("1.0.0", "node-auth", json!({"ipv4_pools": [POOL]}));
    enable_auth(&url, "root-pw", "calico", PASSWORD, "/calico/").expect("enable auth");
    let root = auth_token(&url, "root", "root-pw").expect("root token");
    let state = || etcd_range_as(&url, "/calico/", Some(&root)).expect("read as root");
    let creds = [("ETCD_USERNAME", "calico"), ("ETCD_PASSWORD", PASSWORD)];

    let added = call_with_env("ADD", &conf, "auth-c1", &[], &creds);
    assert_eq!(added.exit, Some(0), "{}", added.describe());
    let address = added.addresses().first().cloned().expect("an address");
    assert!(address.starts_with("10.83.0."), "{address}");
    let before = state();
    assert!(
        before
            .keys()
            .any(|k| k.ends_with(&format!("/handle/{NET}.auth-c1"))),
        "{before:?}"
    );

    let wrong = [
        ("ETCD_USERNAME", "calico"),
        ("ETCD_PASSWORD", "wrong-pw-81"),
    ];
    for (what, env) in [("wrong password", &wrong[..]), ("no credentials", &[][..])] {
        let out = call_with_env("ADD", &conf, "auth-c2", &[], env);
        assert_eq!(out.exit, Some(1), "{what}: {}", out.describe());
        let error = out.json.clone().expect("a CNI error");
        assert_eq!(error["code"], 7, "{what}: {error}");
        assert!(
            !out.stdout.contains("wrong-pw-81"),
            "{what}: {}",
            out.stdout
        );
        assert!(
            !out.stderr.contains("wrong-pw-81"),
            "{what}: {}",
            out.stderr
        );
        assert!(out.stdout.contains("ETCD_"), "{what}: {}", out.stdout);
        assert_eq!(state(), before, "{what}: nothing changed");
    }

    let deleted = call_with_env("DEL", &conf, "auth-c1", &[], &creds);
    assert_eq!(deleted.exit, Some(0), "{}", deleted.describe());
    assert!(
        !state().keys().any(|k| k.contains("/handle/")),
        "the handle is released"
    );
}

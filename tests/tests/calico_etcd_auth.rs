//! calico-ipam on etcd as operators run it. With its own authentication on (users and roles),
//! and `ETCD_USERNAME` / `ETCD_PASSWORD` in the plugin's environment, ADD and DEL
//! work; a wrong password fails with the configuration's code (7) and a message that names
//! the user, never the password, and nothing changes in the datastore. Needs Debian's
//! `etcd-server`. And with the members found through DNS SRV records (`etcd_discovery_srv`).

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

/// `etcd_discovery_srv`: the members come from the domain's SRV records, through the
/// resolver the environment names: lowest priority first, so a dead member listed first is
/// passed over for the live one. Endpoints and discovery together are refused, as Calico
/// refuses them; a domain without records fails naming the domain, and changes nothing.
#[test]
fn calico_ipam_finds_etcd_through_dns_srv_records() {
    use cni_tests::dns::SrvResponder;
    use cni_tests::fixtures::free_tcp_port;
    use std::collections::BTreeMap;

    let server = EtcdServer::start().expect("etcd (apt-get install -y etcd-server)");
    let url = server.client_url();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let dead = free_tcp_port().expect("a free port");
    let dns = SrvResponder::start(BTreeMap::from([(
        "_etcd-client._tcp.etcd.cluster.test".to_string(),
        vec![
            (10, 1, port, "127.0.0.1.".to_string()),
            (0, 1, dead, "127.0.0.1.".to_string()),
        ],
    )]))
    .expect("DNS responder");
    let fx = IpamFixture::on_etcd(&url);
    fx.create_pool(POOL, 26);
    let mut conf = fx.conf("1.0.0", "node-srv", json!({"ipv4_pools": [POOL]}));
    let resolver = dns.addr().to_string();
    let env = [("CALICO_ETCD_DISCOVERY_NAMESERVER", resolver.as_str())];

    conf["etcd_discovery_srv"] = json!("etcd.cluster.test");
    let both = call_with_env("ADD", &conf, "srv-c0", &[], &env);
    assert_eq!(both.exit, Some(1), "{}", both.describe());
    assert!(
        both.stdout.contains("etcd_discovery_srv"),
        "{}",
        both.stdout
    );

    if let Some(o) = conf.as_object_mut() {
        o.remove("etcd_endpoints");
    }
    let before = cni_tests::ipam::etcd_range(&url, "/calico/").expect("read");
    let mut unknown = conf.clone();
    unknown["etcd_discovery_srv"] = json!("nothing.test");
    let out = call_with_env("ADD", &unknown, "srv-c0", &[], &env);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("nothing.test"), "{}", out.stdout);
    assert_eq!(
        cni_tests::ipam::etcd_range(&url, "/calico/").expect("read"),
        before
    );

    let added = call_with_env("ADD", &conf, "srv-c1", &[], &env);
    assert_eq!(added.exit, Some(0), "{}", added.describe());
    let handles = cni_tests::ipam::etcd_range(&url, "/calico/ipam/v2/handle/").expect("read");
    assert_eq!(
        handles.keys().collect::<Vec<_>>(),
        [&format!("/calico/ipam/v2/handle/{NET}.srv-c1")]
    );
    let deleted = call_with_env("DEL", &conf, "srv-c1", &[], &env);
    assert_eq!(deleted.exit, Some(0), "{}", deleted.describe());
    assert!(cni_tests::ipam::etcd_range(&url, "/calico/ipam/v2/handle/")
        .expect("read")
        .is_empty());
}

//! IPReservations on every datastore, as libcalico-go honours them: an ADD never gets a
//! reserved address (IPv4 or IPv6); once only reserved addresses are left the pool is
//! exhausted, with the error a full pool gives, and nothing is left behind; reservations of
//! the other family or outside the pools change nothing; an address asked for by name
//! (`IP=`) is given even when reserved, as Calico's `AssignIP` gives it. `calico-ipam show`
//! counts them in calicoctl's IPS RESERVED column. On Kubernetes the API server refuses a
//! reservation its CRD's schema refuses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni_tests::ipam::{
    allocations, contains, handles_of, operator, Backend, IpamFixture, RESERVATION_PREFIX,
};
use cni_tests::on_every_datastore;
use serde_json::{json, Value};

const NODE: &str = "node-resv";

fn reserve(fx: &IpamFixture, name: &str, cidrs: &[&str]) {
    let reservation = json!({
        "kind": "IPReservation",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name},
        "spec": {"reservedCIDRs": cidrs},
    });
    fx.put(
        &format!("{RESERVATION_PREFIX}{name}"),
        &reservation.to_string(),
    );
}

fn v4(fx: &IpamFixture, pool: &str) -> Value {
    fx.conf("1.0.0", NODE, json!({"ipv4_pools": [pool]}))
}

fn dual(fx: &IpamFixture, pool4: &str, pool6: &str) -> Value {
    fx.conf(
        "1.0.0",
        NODE,
        json!({"ipv4_pools": [pool4], "ipv6_pools": [pool6], "assign_ipv6": "true"}),
    )
}

/// Every address of a successful ADD.
fn add_all(fx: &IpamFixture, conf: &Value, id: &str, args: &[(&str, &str)]) -> Vec<IpAddr> {
    let out = fx.call("ADD", conf, id, args);
    assert_eq!(out.exit, Some(0), "ADD {id}: {}", out.describe());
    out.addresses()
        .iter()
        .map(|a| {
            a.split('/')
                .next()
                .and_then(|ip| ip.parse().ok())
                .unwrap_or_else(|| panic!("ADD {id}: bad address {a}"))
        })
        .collect()
}

/// An ADD refused as a full pool is, that leaves the datastore as it was: byte for byte
/// when the ADD got nothing at all, and with the same allocations and handles when it gave
/// back what the other family got (the block write bumps its sequence number and puts the
/// address at the tail of the free list).
fn exhausted(fx: &IpamFixture, conf: &Value, id: &str, family: u8, pool: &str) {
    let before = fx.snapshot();
    let msg = fx.call("ADD", conf, id, &[]).refused(105, "ADD");
    assert!(
        msg.contains(&format!(
            "Assigned 0 out of 1 requested IPv{family} addresses"
        )) && msg.contains(pool),
        "says the pool is used up: {msg}"
    );
    let after = fx.snapshot();
    if family == 4 {
        assert_eq!(after, before, "a refused ADD writes nothing");
    } else {
        assert_eq!(
            allocations(&after).expect("consistent after"),
            allocations(&before).expect("consistent before"),
            "a refused ADD holds nothing"
        );
        assert_eq!(
            handles_of(&after),
            handles_of(&before),
            "and counts nothing"
        );
    }
}

fn ips(text: &[&str]) -> BTreeSet<IpAddr> {
    text.iter().map(|t| t.parse().expect("ip")).collect()
}

fn reserved_addresses_are_never_handed_out(backend: Backend) {
    const POOL4: &str = "10.86.0.0/29";
    const POOL6: &str = "fd00:86::/125";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 29);
    fx.create_pool(POOL6, 125);
    // Three IPv4 and two IPv6 addresses are left, over two reservations.
    reserve(&fx, "low", &["10.86.0.0/30", "fd00:86::/126"]);
    reserve(&fx, "singles", &["10.86.0.6/32", "fd00:86::4/127"]);
    let conf = dual(&fx, POOL4, POOL6);

    let mut got = BTreeSet::new();
    for i in 0..2 {
        got.extend(add_all(&fx, &conf, &format!("dual-{i}"), &[]));
    }
    let unreserved6 = ips(&["fd00:86::6", "fd00:86::7"]);
    assert_eq!(
        got.iter()
            .filter(|ip| ip.is_ipv6())
            .copied()
            .collect::<BTreeSet<_>>(),
        unreserved6
    );
    let v4_got: BTreeSet<IpAddr> = got.iter().filter(|ip| ip.is_ipv4()).copied().collect();
    assert_eq!(v4_got.len(), 2);
    assert!(v4_got.is_subset(&ips(&["10.86.0.4", "10.86.0.5", "10.86.0.7"])));

    // IPv6 is used up: the IPv4 address the ADD got first is given back, nothing is left.
    exhausted(&fx, &conf, "dual-2", 6, POOL6);

    // The last unreserved IPv4 address is still there for an IPv4-only ADD, then the pool
    // is as full as a full one.
    let conf4 = v4(&fx, POOL4);
    let last = add_all(&fx, &conf4, "v4-0", &[]);
    assert_eq!(last.len(), 1);
    assert!(!v4_got.contains(&last[0]) && !contains("10.86.0.0/30", last[0]));
    assert_ne!(last[0], "10.86.0.6".parse::<IpAddr>().expect("ip"));
    exhausted(&fx, &conf4, "v4-1", 4, POOL4);

    // A DEL frees an unreserved address for the next ADD.
    let out = fx.call("DEL", &conf4, "v4-0", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(add_all(&fx, &conf4, "v4-2", &[]), last);
}

fn reservations_elsewhere_change_nothing(backend: Backend) {
    const POOL4: &str = "10.87.0.0/30";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 30);
    // The other family (including the IPv6 address with the pool's number), and outside.
    reserve(&fx, "v6", &["fd00:87::/64", "::a57:0/126"]);
    reserve(&fx, "outside", &["10.87.1.0/24", "10.86.255.255/32"]);
    let conf = v4(&fx, POOL4);
    let got: BTreeSet<IpAddr> = (0..4)
        .flat_map(|i| add_all(&fx, &conf, &format!("c-{i}"), &[]))
        .collect();
    assert_eq!(
        got,
        ips(&["10.87.0.0", "10.87.0.1", "10.87.0.2", "10.87.0.3"]),
        "every address of the pool"
    );
    exhausted(&fx, &conf, "c-4", 4, POOL4);
}

fn an_address_asked_for_by_name_is_given_even_if_reserved(backend: Backend) {
    const POOL4: &str = "10.88.0.0/29";
    const POOL6: &str = "fd00:88::/125";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 29);
    fx.create_pool(POOL6, 125);
    reserve(&fx, "everything", &[POOL4, POOL6]);
    let conf = v4(&fx, POOL4);

    // libcalico-go's AssignIP does not look at reservations: IP= gets the address.
    assert_eq!(
        add_all(&fx, &conf, "pinned", &[("IP", "10.88.0.3")]),
        ["10.88.0.3".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        add_all(
            &fx,
            &dual(&fx, POOL4, POOL6),
            "pinned-6",
            &[("IP", "fd00:88::2")]
        ),
        ["fd00:88::2".parse::<IpAddr>().expect("ip")]
    );
    // Automatic assignment still gets nothing, from the block now claimed or any other.
    exhausted(&fx, &conf, "auto", 4, POOL4);
}

fn a_malformed_entry_is_skipped_and_the_rest_honoured(backend: Backend) {
    // Written past validation (an old writer, or etcd, which has none): libcalico-go skips
    // the entry rather than failing every ADD of the cluster.
    const POOL4: &str = "10.89.0.0/30";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 30);
    reserve(
        &fx,
        "sloppy",
        &[
            "not-a-cidr",
            "10.89.0.300/32",
            " 10.89.0.1 ",
            "10.89.0.2/31",
        ],
    );
    let conf = v4(&fx, POOL4);
    assert_eq!(
        add_all(&fx, &conf, "only", &[]),
        ["10.89.0.0".parse::<IpAddr>().expect("ip")],
        "10.89.0.1 (a bare address) and 10.89.0.2/31 are reserved"
    );
    exhausted(&fx, &conf, "more", 4, POOL4);
}

/// The rows of `calico-ipam show` (`--show-blocks` if asked) for `cidr`, as cells.
fn show_rows(fx: &IpamFixture, conf: &Value, args: &[&str], cidr: &str) -> Vec<Vec<String>> {
    let list = fx.write_conflist(conf);
    let mut all = vec!["show"];
    all.extend_from_slice(args);
    let out = operator(&list, &all);
    assert_eq!(out.exit, Some(0), "show: {}", out.describe());
    let rows: Vec<Vec<String>> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("| "))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "GROUPING",
            "CIDR",
            "IPS TOTAL",
            "IPS IN USE",
            "IPS RESERVED",
            "IPS FREE"
        ],
        "{}",
        out.stdout
    );
    rows.into_iter().filter(|r| r[1] == cidr).collect()
}

fn show_counts_reserved_addresses(backend: Backend) {
    const POOL4: &str = "10.91.4.0/28";
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 28);
    // Six of sixteen, one of them twice over, one outside the pool.
    reserve(&fx, "a", &["10.91.4.0/30", "10.91.4.12/31"]);
    reserve(&fx, "b", &["10.91.4.1/32", "10.91.5.0/24"]);
    let conf = v4(&fx, POOL4);
    let row = |kind: &str, in_use: &str, reserved: &str, free: &str| {
        [kind, POOL4, "16", in_use, reserved, free]
            .map(String::from)
            .to_vec()
    };
    assert_eq!(
        show_rows(&fx, &conf, &[], POOL4),
        [row("IP Pool", "0 (0%)", "6 (38%)", "10 (62%)")],
        "no block yet: the reservations are counted all the same"
    );
    for i in 0..3 {
        add_all(&fx, &conf, &format!("c-{i}"), &[]);
    }
    assert_eq!(
        show_rows(&fx, &conf, &["--show-blocks"], POOL4),
        [
            row("IP Pool", "3 (19%)", "6 (38%)", "7 (44%)"),
            row("Block", "3 (19%)", "6 (38%)", "7 (44%)"),
        ]
    );
    // A reserved address given by name is in use and still reserved; free is unchanged.
    add_all(&fx, &conf, "pinned", &[("IP", "10.91.4.13")]);
    assert_eq!(
        show_rows(&fx, &conf, &[], POOL4),
        [row("IP Pool", "4 (25%)", "6 (38%)", "7 (44%)")]
    );
}

on_every_datastore!(
    show_counts_reserved_addresses,
    reserved_addresses_are_never_handed_out,
    reservations_elsewhere_change_nothing,
    an_address_asked_for_by_name_is_given_even_if_reserved,
    a_malformed_entry_is_skipped_and_the_rest_honoured,
);

/// On Kubernetes the CRD's schema (`format: cidr`, `x-kubernetes-list-type: set`) keeps bad
/// reservations out; one it accepts is honoured at once.
#[test]
fn kubernetes_refuses_an_invalid_reservation() {
    const POOL4: &str = "10.90.0.0/30";
    let fx = IpamFixture::new(Backend::Kubernetes);
    fx.create_pool(POOL4, 30);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |cidrs: Value| -> (u16, Value) {
        let body = json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "IPReservation",
            "metadata": {"name": "gateways"},
            "spec": {"reservedCIDRs": cidrs},
        });
        let mut resp = agent
            .post(format!(
                "{}/apis/crd.projectcalico.org/v1/ipreservations",
                fx.api().url()
            ))
            .header("Authorization", format!("Bearer {}", fx.api().token()))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("POST ipreservations");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).expect("JSON"))
    };
    for bad in [
        json!(["10.90.0.300/32"]),
        json!(["10.90.0.1"]),
        json!(["10.90.0.0/33"]),
        json!(["10.90.0.1/32", "10.90.0.1/32"]),
    ] {
        let (status, body) = post(bad.clone());
        assert_eq!(status, 422, "{bad} is refused: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("spec.reservedCIDRs"),
            "names the field: {body}"
        );
    }
    assert!(fx.api().list("ipreservations").is_empty(), "nothing stored");

    let (status, body) = post(json!(["10.90.0.0/31", "10.90.0.3/32"]));
    assert_eq!(status, 201, "{body}");
    let conf = v4(&fx, POOL4);
    assert_eq!(
        add_all(&fx, &conf, "only", &[]),
        ["10.90.0.2".parse::<IpAddr>().expect("ip")]
    );
    exhausted(&fx, &conf, "more", 4, POOL4);
}

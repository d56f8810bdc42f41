//! calico-ipam's stdin (`IpamNetConf`, decoded as the plugin decodes it, by Go's rules), its datastore,
//! family and pool keys, and, for the `local` datastore, the pools the config creates and
//! one ADD's automatic assignment from them on an in-memory store.
//!
//! Properties: nothing panics; an assignment hands out addresses of the requested family
//! from the configured pools only.

#![no_main]

use std::collections::BTreeMap;

use calico_ipam::datastore::ensure_pools;
use calico_ipam::engine::{AutoAssign, Ipam};
use calico_ipam::k8s::settings::KubeSettings;
use calico_ipam::netconf::{Datastore, IpamNetConf};
use calico_ipam::store::memory::MemoryKv;
use ipnetwork::IpNetwork;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = shared::gojson::from_slice::<IpamNetConf>(data) else {
        return;
    };
    let _ = conf.assign_v4();
    let _ = conf.assign_v6();
    let _ = conf.lock_file();
    let _ = conf.local_data_dir();
    let _ = KubeSettings::from_conf(&conf.kubernetes, &conf.policy);
    if conf.datastore() != Ok(Datastore::Local) {
        return;
    }
    // Pool names would need a listing of existing pools; the CIDRs are what the config makes.
    let cidrs = |entries: &[String], v4: bool| -> Option<Vec<IpNetwork>> {
        entries
            .iter()
            .map(|e| e.parse::<IpNetwork>().ok().filter(|c| c.is_ipv4() == v4))
            .collect()
    };
    let (Some(pools4), Some(pools6)) = (
        cidrs(&conf.ipam.ipv4_pools, true),
        cidrs(&conf.ipam.ipv6_pools, false),
    ) else {
        return;
    };
    let store = MemoryKv::store();
    if ensure_pools(&conf, &store, &pools4, &pools6).is_err() {
        return;
    }
    let request = AutoAssign {
        num4: usize::from(conf.assign_v4()),
        num6: usize::from(conf.assign_v6()),
        handle_id: "fuzz.container".into(),
        attrs: BTreeMap::new(),
        pools4: pools4.clone(),
        pools6: pools6.clone(),
        ..AutoAssign::default()
    };
    let Ok(assigned) = Ipam::new(&store, "fuzz-node").auto_assign(&request) else {
        return;
    };
    assert!(assigned.ipv4.len() <= request.num4 && assigned.ipv6.len() <= request.num6);
    for (got, pools) in [(&assigned.ipv4, &pools4), (&assigned.ipv6, &pools6)] {
        for ip in got {
            assert!(
                pools.is_empty() || pools.iter().any(|p| p.contains(ip.ip())),
                "{ip} is in none of the pools {pools:?}"
            );
        }
    }
});

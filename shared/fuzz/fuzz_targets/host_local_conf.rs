//! host-local's stdin and CNI_ARGS (`host_local::config::load`): range sets, the legacy
//! range, the `ipRanges` capability, routes, requested addresses.
//!
//! Input: the stdin bytes, optionally followed by a NUL byte and the CNI_ARGS text.
//!
//! Properties: nothing panics; every canonical range has start <= end inside its subnet,
//! of one family per set; capacities and the allocation walk stay inside the set.

#![no_main]

use std::net::IpAddr;

use host_local::allocator::Candidates;
use host_local::range::to_u128;
use libfuzzer_sys::fuzz_target;
use shared::spec::args::CniArgs;

fuzz_target!(|data: &[u8]| {
    let (stdin, args) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(args) = std::str::from_utf8(args) else {
        return;
    };
    let Ok(args) = CniArgs::parse(args) else {
        return;
    };
    let Ok(own) = shared::gojson::from_slice::<host_local::config::HostLocalConf>(stdin) else {
        return;
    };
    let _ = host_local::config::data_dir(&own);
    let Ok(conf) = host_local::config::load(&own, "fuzz-net", &args) else {
        return;
    };
    for set in &conf.range_sets {
        let v4 = set.is_ipv4();
        for r in &set.0 {
            assert_eq!(r.is_ipv4(), v4, "mixed families in {set}");
            assert!(
                to_u128(r.start) <= to_u128(r.end),
                "range {r} starts after its end"
            );
            assert!(
                r.contains(r.start) && r.contains(r.end),
                "range {r} outside {}",
                r.subnet
            );
            assert!(r.capacity() <= to_u128(r.end) - to_u128(r.start) + 1);
        }
        let _ = set.capacity();
        // The reference's walk, from the start and resumed after a requested address.
        let resume = conf.requested.first().copied();
        for last in [None, resume, Some(set.0[0].end)] {
            for (ip, gateway) in Candidates::new(set, last).take(8) {
                assert!(set.contains(ip.ip()), "candidate {ip} outside {set}");
                assert_ne!(ip.ip(), gateway, "the gateway is never a candidate");
            }
        }
    }
    for ip in &conf.requested {
        let _ = conf.range_sets.iter().any(|s| s.contains(*ip));
        let _: IpAddr = *ip;
    }
});

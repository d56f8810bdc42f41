//! portmap's stdin: its own keys (`Settings::parse`), the `portMappings` capability, the
//! container addresses from prevResult, and the rules rendered from them for both backends.
//!
//! Properties: nothing panics from parse to rendered iptables-restore and nft text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portmap::config::{self, Settings};
use portmap::iptables::state::NatTable;
use portmap::{iptables, nftables};
use shared::gojson::Document;
use shared::spec::{NetConf, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse(data) else {
        return;
    };
    let (Ok((conf, _)), Ok(own)) = (NetConf::parse(&doc, false), doc.decode()) else {
        return;
    };
    let settings = Settings::parse(&own);
    let mappings = config::mappings(&conf.runtime_config.port_mappings);
    let version = conf
        .negotiate_version(&Version::ALL)
        .unwrap_or(Version::LATEST);
    let Ok(Some(prev)) = conf.prev_result(version) else {
        return;
    };
    let ips = config::container_ips(&prev, "eth0");
    let (Ok(settings), Ok(mappings)) = (settings, mappings) else {
        return;
    };
    let Ok(containers) = config::containers(&conf.name, "fuzz-container", &ips, &mappings) else {
        return;
    };
    let table = NatTable::parse("");
    for c in &containers {
        let _ = iptables::add_script(&table, &settings, c, &mappings).render();
    }
    let _ = nftables::render(&nftables::add_script(
        &nftables::Listing::default(),
        &settings,
        &containers,
        &mappings,
    ));
});

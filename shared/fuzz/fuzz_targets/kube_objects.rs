//! What calico-ipam reads from the Kubernetes API: Calico's `crd.projectcalico.org/v1`
//! objects (IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig, IPPool with its legacy
//! fields), Nodes and ClusterInformation, as `store::kube::objects` decodes them from any
//! JSON value.
//!
//! Properties: nothing panics; a decoded block is the one its object's name says
//! (`metadata.name == names::block_name(cidr)`); a decoded block, affinity, handle, IPAM
//! config or pool written back as an object decodes to the very same model (unknown fields
//! included).

#![no_main]

use calico_ipam::store::kube::{names, objects};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = objects::marked_deleted(&object);
    let _ = objects::revision_of(&object);
    if let Ok(block) = objects::block_from(&object) {
        assert_eq!(objects::name_of(&object), names::block_name(&block.cidr));
        let again = objects::block_from(&objects::block(&block));
        assert_eq!(again.as_ref().ok(), Some(&block), "{again:?}");
    }
    if let Ok(affinity) = objects::affinity_from(&object) {
        let again = objects::affinity_from(&objects::affinity(&affinity));
        assert_eq!(again.as_ref().ok(), Some(&affinity), "{again:?}");
    }
    if let Ok(handle) = objects::handle_from(&object) {
        let again = objects::handle_from(&objects::handle(&handle));
        assert_eq!(again.as_ref().ok(), Some(&handle), "{again:?}");
    }
    if let Ok(config) = objects::ipam_config_from(&object) {
        let again = objects::ipam_config_from(&objects::ipam_config(&config));
        assert_eq!(again.as_ref().ok(), Some(&config), "{again:?}");
    }
    if let Ok(pool) = objects::pool_from(&object) {
        let again = objects::pool_from(&objects::pool(&pool));
        assert_eq!(again.as_ref().ok(), Some(&pool), "{again:?}");
    }
    let _ = objects::node_from(&object);
    let _ = objects::cluster_information_from(&object);
});

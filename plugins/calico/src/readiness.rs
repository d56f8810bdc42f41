//! Whether Calico is ready to process requests (spec §3 step 4), asked of the datastore
//! library on every datastore (`calico_ipam::readiness`): ADD and DEL both ask, as Calico
//! does, and so does `calico -t`.

use calico_ipam::workload::EndpointStore;

use crate::CalicoError;

/// `Ok` when ClusterInformation `default` says the datastore is ready.
pub fn check(store: &dyn EndpointStore) -> Result<(), CalicoError> {
    match store.ready() {
        Ok(true) => Ok(()),
        Ok(false) => Err(CalicoError::NotReady),
        Err(e) => Err(CalicoError::ClusterInformation(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_ipam::store::kv::Kv;
    use calico_ipam::store::memory::MemoryKv;
    use calico_ipam::workload::kv::KvEndpoints;

    #[test]
    fn the_library_decides_and_the_plugin_says_it_in_calicos_words() {
        let kv = MemoryKv::with_calico_node();
        let err = check(&KvEndpoints::new(&kv)).expect_err("no ClusterInformation");
        assert_eq!(
            err.to_string(),
            "Calico is currently not ready to process requests"
        );
        kv.create(
            &calico_ipam::store::codec::cluster_information_key(),
            br#"{"spec":{"datastoreReady":true}}"#,
        )
        .expect("put");
        assert!(check(&KvEndpoints::new(&kv)).is_ok());
    }
}

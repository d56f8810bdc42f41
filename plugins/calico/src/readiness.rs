//! Whether Calico is ready to process requests (spec §3 step 4), asked of the datastore
//! library on every datastore (`calico_ipam::readiness`): ADD and DEL both ask, as Calico
//! does, and so does `calico -t`.

use calico_ipam::store::Store;

use crate::CalicoError;

/// `Ok` when ClusterInformation `default` says the datastore is ready.
pub fn check(store: &dyn Store) -> Result<(), CalicoError> {
    match calico_ipam::readiness::is_ready(store) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CalicoError::NotReady),
        Err(e) => Err(CalicoError::ClusterInformation(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_ipam::store::kv::{Kv, KvStore};
    use calico_ipam::store::memory::MemoryKv;

    #[test]
    fn the_library_decides_and_the_plugin_says_it_in_calicos_words() {
        let store = KvStore::new(MemoryKv::with_calico_node());
        let err = check(&store).expect_err("no ClusterInformation");
        assert_eq!(
            err.to_string(),
            "Calico is currently not ready to process requests"
        );
        store
            .kv
            .create(
                &calico_ipam::store::codec::cluster_information_key(),
                br#"{"spec":{"datastoreReady":true}}"#,
            )
            .expect("put");
        assert!(check(&store).is_ok());
    }
}

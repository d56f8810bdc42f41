//! Whether Calico is ready to process requests (spec §3 step 4), on every datastore through
//! the one seam: ClusterInformation `default`'s `spec.datastoreReady`. calico/node sets it
//! once the datastore is initialised, and an upgrade or a restore clears it so that no pod
//! is wired (or unwired) against a datastore in flux; the plugin's ADD and DEL, and
//! `calico -t`, all ask here.

use crate::store::{Store, StoreError};

/// Where calico/node runs, only an explicit `true` is ready (a missing object, field or a
/// non-boolean is not: Calico's Go code reads a missing pointer as not ready). The
/// single-node `local` store has no calico/node: there a missing object or field is ready,
/// and only an explicit `false` (an operator pausing the node) stops.
pub fn is_ready(store: &dyn Store) -> Result<bool, StoreError> {
    let ready = store
        .get_cluster_information()?
        .and_then(|info| info.value.datastore_ready);
    Ok(if store.has_calico_node() {
        ready == Some(true)
    } else {
        ready != Some(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::cluster_information_key;
    use crate::store::kv::{Kv, KvStore};
    use crate::store::memory::MemoryKv;

    fn with(kv: MemoryKv, value: Option<&str>) -> KvStore<MemoryKv> {
        if let Some(v) = value {
            kv.create(&cluster_information_key(), v.as_bytes())
                .expect("put");
        }
        KvStore::new(kv)
    }

    #[test]
    fn where_calico_node_runs_only_an_explicit_true_is_ready() {
        let cases = [
            (None, false),
            (Some(r#"{"spec":{"datastoreReady":false}}"#), false),
            (Some(r#"{"spec":{"clusterGUID":"x"}}"#), false),
            (Some(r#"{"spec":{"datastoreReady":"true"}}"#), false),
            (Some(r#"{"spec":{"datastoreReady":true}}"#), true),
        ];
        for (value, ready) in cases {
            let store = with(MemoryKv::with_calico_node(), value);
            assert_eq!(is_ready(&store).expect("reads"), ready, "{value:?}");
        }
    }

    #[test]
    fn on_a_single_node_only_an_explicit_false_stops() {
        let cases = [
            (None, true),
            (Some(r#"{"spec":{"clusterGUID":"x"}}"#), true),
            (Some(r#"{"spec":{"datastoreReady":false}}"#), false),
            (Some(r#"{"spec":{"datastoreReady":true}}"#), true),
        ];
        for (value, ready) in cases {
            let store = with(MemoryKv::new(), value);
            assert_eq!(is_ready(&store).expect("reads"), ready, "{value:?}");
        }
    }

    #[test]
    fn an_unreadable_object_is_an_error_not_a_verdict() {
        let store = with(MemoryKv::with_calico_node(), Some("[1]"));
        assert!(matches!(is_ready(&store), Err(StoreError::Corrupt { .. })));
    }
}

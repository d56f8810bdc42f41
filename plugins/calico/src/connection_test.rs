//! `calico -t`: the installer's "can this node's plugin reach its datastore?" (spec §0).
//! Reads a network configuration on stdin, reaches the datastore it names, and passes only
//! when ClusterInformation `default` says `datastoreReady: true`; with a kubeconfig, the API
//! server's `/version` must answer too. Nothing is written.

use crate::config::CalicoConf;
use crate::{datastore, CalicoError};

/// What `-t` prints on failure, as Calico does; the cause goes into `details`.
pub const FAILED: &str = "data store connection failed";

pub fn run(stdin: &[u8]) -> Result<(), CalicoError> {
    let conf = CalicoConf::parse(stdin)?;
    let Some(store) = datastore::open(&conf)? else {
        return Err(CalicoError::Config(
            "the network configuration names no datastore: set datastore_type (kubernetes, \
             etcdv3 or local)"
                .into(),
        ));
    };
    if let (Some(kube), Some(_)) = (store.kubernetes(), &conf.kubernetes.kubeconfig) {
        kube.check_version().map_err(|source| CalicoError::Kube {
            what: "GET /version".into(),
            source,
        })?;
    }
    Ok(())
}

//! The datastore a configuration names, as this plugin uses it: opened once per
//! invocation and found ready (spec §3 step 4) before anything changes. A configuration
//! without datastore keys names none; the plugin then only wires the pod (see
//! `calico_ipam::workload::kind`).

use calico_ipam::netconf::Datastore;
use calico_ipam::store::kube::KubeStore;
use calico_ipam::workload::{self, EndpointStore};

use crate::config::CalicoConf;
use crate::{kdd, readiness, CalicoError};

/// The configuration's endpoint store, found ready; `None` when it names no datastore.
pub fn open(conf: &CalicoConf) -> Result<Option<Box<dyn EndpointStore>>, CalicoError> {
    let store: Box<dyn EndpointStore> = match workload::kind(&conf.datastore)? {
        None => return Ok(None),
        Some(Datastore::Kubernetes) => {
            Box::new(workload::pod_endpoints(KubeStore::new(kdd::connect(conf)?)))
        }
        Some(Datastore::Etcd | Datastore::Local) => {
            Box::new(workload::open_kv_endpoints(&conf.datastore)?)
        }
    };
    readiness::check(store.as_ref())?;
    Ok(Some(store))
}

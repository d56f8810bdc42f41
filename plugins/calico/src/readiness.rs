//! Whether Calico is ready to process requests, on the Kubernetes datastore (spec §3, prologue
//! step 4): ClusterInformation `default` says so in `spec.datastoreReady`. calico-node sets it
//! once the datastore is initialised, and an upgrade or a restore clears it so that no pod is
//! wired (or unwired) against a datastore in flux. ADD and DEL both ask, as Calico does.

use calico_ipam::k8s::KubeClient;
use serde_json::Value;

use crate::CalicoError;

/// The one ClusterInformation Calico reads.
pub const CLUSTER_INFORMATION_PATH: &str =
    "/apis/crd.projectcalico.org/v1/clusterinformations/default";

/// `Ok` when ClusterInformation `default` exists and its `spec.datastoreReady` is `true`.
pub fn check(client: &KubeClient) -> Result<(), CalicoError> {
    let info = client
        .get(CLUSTER_INFORMATION_PATH)
        .map_err(CalicoError::ClusterInformation)?;
    verdict(info.as_ref())
}

/// The decision on what the GET returned (`None`: not found). A missing or non-boolean
/// `datastoreReady` counts as not ready: Calico's Go code reads a missing pointer as not
/// ready too.
pub fn verdict(info: Option<&Value>) -> Result<(), CalicoError> {
    let ready = info
        .and_then(|i| i.pointer("/spec/datastoreReady"))
        .and_then(Value::as_bool)
        == Some(true);
    if ready {
        Ok(())
    } else {
        Err(CalicoError::NotReady)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_explicit_true_is_ready() {
        assert!(verdict(Some(&json!({"spec": {"datastoreReady": true}}))).is_ok());
        for info in [
            json!({"spec": {"datastoreReady": false}}),
            json!({"spec": {}}),
            json!({}),
            json!({"spec": {"datastoreReady": "true"}}),
        ] {
            assert!(
                matches!(verdict(Some(&info)), Err(CalicoError::NotReady)),
                "{info}"
            );
        }
        assert!(matches!(verdict(None), Err(CalicoError::NotReady)));
        assert_eq!(
            CalicoError::NotReady.to_string(),
            "Calico is currently not ready to process requests"
        );
    }
}

//! WorkloadEndpoint names (spec §2): `<node>-k8s-<pod>-<ifname>` for a pod,
//! `<node>-cni-<containerID>-<ifname>` for a plain container. Each segment's own `-` is
//! doubled, so the single dashes between segments stay unambiguous; a segment may therefore
//! neither start nor end with `-`. Calico (libcalico-go's `names`) computes the same name
//! from the endpoint's spec and refuses to store an endpoint under any other, so this must
//! match it byte for byte: Calico's DEL finds our endpoints by it, and we find theirs.

/// A segment that cannot be part of a name: `field` says which identifier it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error constructing WorkloadEndpoint name: {field} {value:?} must not {what}")]
pub struct WepNameError {
    /// `node`, `pod`, `containerID` or `endpoint`, as Calico names the spec fields.
    pub field: &'static str,
    pub value: String,
    what: &'static str,
}

/// The orchestrator-specific part of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WepWorkload<'a> {
    /// Kubernetes: the pod's name.
    Pod(&'a str),
    /// Any other runtime: the container id.
    Container(&'a str),
}

/// The name of the endpoint of `workload` on `node` through interface `endpoint`.
pub fn wep_name(node: &str, workload: WepWorkload, endpoint: &str) -> Result<String, WepNameError> {
    let (orchestrator, field, value) = match workload {
        WepWorkload::Pod(pod) => ("k8s", "pod", pod),
        WepWorkload::Container(id) => ("cni", "containerID", id),
    };
    let parts = [
        escape("node", node)?,
        orchestrator.to_string(),
        escape(field, value)?,
        escape("endpoint", endpoint)?,
    ];
    Ok(parts.join("-"))
}

/// A namespace is a key segment of its own: a DNS label, as Kubernetes allows.
pub fn check_namespace(namespace: &str) -> Result<(), WepNameError> {
    let valid = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(WepNameError {
            field: "namespace",
            value: namespace.to_string(),
            what: "be anything but a DNS label (lowercase letters, digits and '-', at most 63)",
        })
    }
}

fn escape(field: &'static str, value: &str) -> Result<String, WepNameError> {
    let what = if value.is_empty() {
        // Calico: "field should be assigned". An empty segment would make `a--b`, which
        // reads back as one segment.
        Some("be empty")
    } else if value.starts_with('-') {
        Some("begin with a '-'")
    } else if value.ends_with('-') {
        Some("end with a '-'")
    } else if value.contains('/') || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The name is the last segment of a datastore key.
        Some("contain '/', whitespace or control characters")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(WepNameError {
            field,
            value: value.to_string(),
            what,
        });
    }
    Ok(value.replace('-', "--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example() {
        assert_eq!(
            wep_name("node-1", WepWorkload::Pod("nginx-abc"), "eth0").expect("valid"),
            "node--1-k8s-nginx--abc-eth0"
        );
    }

    #[test]
    fn plain_containers_are_named_by_their_id() {
        assert_eq!(
            wep_name("e2e-node", WepWorkload::Container("0123abcd"), "eth0").expect("valid"),
            "e2e--node-cni-0123abcd-eth0"
        );
        assert_eq!(
            wep_name("n", WepWorkload::Container("a-b-c"), "net1").expect("valid"),
            "n-cni-a--b--c-net1"
        );
    }

    #[test]
    fn dashes_at_the_edges_are_refused_naming_the_field() {
        let err = wep_name("-node", WepWorkload::Pod("p"), "eth0").expect_err("leading");
        assert_eq!(err.field, "node");
        assert!(err.to_string().contains("must not begin"), "{err}");
        let err = wep_name("node", WepWorkload::Pod("p-"), "eth0").expect_err("trailing");
        assert_eq!(err.field, "pod");
        assert!(err.to_string().contains("must not end"), "{err}");
        let err = wep_name("node", WepWorkload::Container("-c"), "eth0").expect_err("id");
        assert_eq!(err.field, "containerID");
        let err = wep_name("node", WepWorkload::Pod("p"), "eth-").expect_err("ifname");
        assert_eq!(err.field, "endpoint");
        let err = wep_name("", WepWorkload::Pod("p"), "eth0").expect_err("empty node");
        assert_eq!(err.field, "node");
        assert!(wep_name("node", WepWorkload::Pod("-"), "eth0").is_err());
    }
}

//! Names Calico derives, which other Calico components look objects up by.

use ipnetwork::IpNetwork;

/// A CIDR as an object name: `10.244.1.64/26` → `10-244-1-64-26`,
/// `fd00:10:244:1::40/122` → `fd00-10-244-1--40-122`.
pub fn cidr_to_name(cidr: &IpNetwork) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// The IPAM handle of a CNI attachment: `<network>.<containerID>`.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// Handles written by an old host-local migration carry `\r\neth0`: everything from the
/// first `\r` on is not part of the handle.
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_names_match_calicos() {
        let v4: IpNetwork = "10.244.1.64/26".parse().expect("cidr");
        assert_eq!(cidr_to_name(&v4), "10-244-1-64-26");
        let v6: IpNetwork = "fd00:10:244:1::40/122".parse().expect("cidr");
        assert_eq!(cidr_to_name(&v6), "fd00-10-244-1--40-122");
    }

    #[test]
    fn handles() {
        assert_eq!(handle_id("k8s-pod-network", "abc"), "k8s-pod-network.abc");
        assert_eq!(sanitize_handle("net.abc\r\neth0"), "net.abc");
        assert_eq!(sanitize_handle("net.abc"), "net.abc");
    }
}

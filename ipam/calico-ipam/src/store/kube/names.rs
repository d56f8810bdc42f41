//! The names and labels Calico gives its IPAM objects in the Kubernetes datastore (spec
//! §7.1). Other Calico components (calico-node, kube-controllers, calicoctl, a newer Calico
//! listing affinities by label) find our objects by exactly these, so they are derived bit
//! for bit as libcalico-go derives them.

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha256};
use sha3::Sha3_256;

use crate::names::cidr_to_name;

/// Kubernetes object names are at most 253 characters (a DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;

/// Label: base32 of SHA3-256 of the node name (node names may be longer than a label
/// value may be, so newer Calico selects a node's affinities by this hash).
pub const HOSTNAME_HASH_LABEL: &str = "projectcalico.org/hostname-hash";
/// Label: the affinity's type (`host` or `virtual`).
pub const AFFINITY_TYPE_LABEL: &str = "projectcalico.org/affinity-type";
/// Label: `4` or `6`.
pub const IP_VERSION_LABEL: &str = "projectcalico.org/ip-version";

/// An IPAMBlock's name: its CIDR with `.`, `:` and `/` as `-`.
pub fn block_name(cidr: &IpNetwork) -> String {
    cidr_to_name(cidr)
}

/// A BlockAffinity's name: `<node>-<cidr name>`; when that would reach 253 characters, the
/// node name is cut and a hash of the whole node name and CIDR keeps names distinct.
pub fn affinity_name(node: &str, cidr: &IpNetwork) -> String {
    let cidr_name = cidr_to_name(cidr);
    let name = format!("{node}-{cidr_name}");
    if name.len() < MAX_NAME_LEN {
        return name;
    }
    let digest = Sha256::digest(format!("{node}+{cidr_name}").as_bytes());
    let hash: String = hex(&digest).chars().take(11).collect();
    // 252 - len(cidr name) - 13 bytes of the node name; node names are ASCII (DNS names),
    // but never cut inside a character whatever they hold.
    let keep = (MAX_NAME_LEN - 1)
        .saturating_sub(cidr_name.len())
        .saturating_sub(13);
    let mut cut = keep.min(node.len());
    while !node.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{cidr_name}-{hash}", &node[..cut])
}

/// An IPAMHandle's name: the handle ID lower-cased (object names cannot hold capitals; the
/// original spelling is kept in `spec.handleID`).
pub fn handle_name(handle_id: &str) -> String {
    handle_id.to_lowercase()
}

/// The `projectcalico.org/hostname-hash` label of `node`'s affinities: RFC 4648 base32
/// (standard alphabet, no padding) of SHA3-256(node), 52 characters.
pub fn hostname_hash(node: &str) -> String {
    base32_nopad(&Sha3_256::digest(node.as_bytes()))
}

/// The label selector of one node's affinities of one type and IP family.
pub fn affinity_selector(affinity_type: &str, node: &str, v4: bool) -> String {
    format!(
        "{HOSTNAME_HASH_LABEL}={},{AFFINITY_TYPE_LABEL}={affinity_type},{IP_VERSION_LABEL}={}",
        hostname_hash(node),
        ip_version(v4)
    )
}

pub fn ip_version(v4: bool) -> &'static str {
    if v4 {
        "4"
    } else {
        "6"
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4648 §6 base32 without `=` padding: five bits per character, most significant first.
fn base32_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 §10, padding removed.
        for (input, want) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_nopad(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn hostname_hash_is_52_characters_of_sha3() {
        // Independent values (Python's hashlib.sha3_256 and base64.b32encode).
        let h = hostname_hash("");
        assert_eq!(h, "U774N6F7D3LWMUOBI5LKAYOWML2YB72N4Q5UT6UC3AFEXAHYINFA");
        assert_eq!(h.len(), 52);
        assert_eq!(
            hostname_hash("node-a"),
            "PY3TQE2E3XMTETLM2MJO3UITKPFB27YUJ4T4E5XGPEJON3SM4QAA"
        );
        assert_ne!(hostname_hash("node-a"), hostname_hash("node-b"));
    }

    #[test]
    fn names_as_calico_derives_them() {
        assert_eq!(block_name(&cidr("10.244.1.64/26")), "10-244-1-64-26");
        assert_eq!(
            affinity_name("node-1", &cidr("fd00:10:244:1::40/122")),
            "node-1-fd00-10-244-1--40-122"
        );
        assert_eq!(
            handle_name("k8s-pod-network.ABC123"),
            "k8s-pod-network.abc123"
        );
    }

    #[test]
    fn long_affinity_names_are_cut_and_hashed() {
        let node = "n".repeat(240);
        let c = cidr("10.244.1.64/26");
        let name = affinity_name(&node, &c);
        assert_eq!(name.len(), 252, "{name}");
        let prefix = "n".repeat(252 - "10-244-1-64-26".len() - 13);
        assert!(
            name.starts_with(&format!("{prefix}-10-244-1-64-26-")),
            "{name}"
        );
        let digest = Sha256::digest(format!("{node}+10-244-1-64-26").as_bytes());
        assert!(name.ends_with(&hex(&digest)[..11]), "{name}");
        // Just below the limit: unchanged.
        let short = "n".repeat(253 - 1 - "10-244-1-64-26".len() - 1);
        assert_eq!(affinity_name(&short, &c), format!("{short}-10-244-1-64-26"));
    }
}

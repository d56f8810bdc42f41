//! The IFB device's name: derived, never stored, so DEL and GC find it from the network name
//! and container id alone, and so must match the reference's bit for bit.

use sha2::{Digest, Sha512};

/// `bwp` + the first 12 hex digits of SHA-512(network name + container id): 15 characters,
/// the most an interface name may have.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::new()
        .chain_update(network.as_bytes())
        .chain_update(container_id.as_bytes())
        .finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")
}

/// Whether a link name looks like one of ours (for GC).
pub fn is_ifb_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("bwp")
        && name[3..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_bwp_and_twelve_hex_digits_of_the_hash() {
        // printf %s 'mynetdummy' | sha512sum | cut -c1-12
        let name = ifb_name("mynet", "dummy");
        assert_eq!(name, "bwp1b29d9511ed2");
        assert!(is_ifb_name(&name), "{name}");
        assert_ne!(name, ifb_name("mynet", "dummy2"));
        assert_eq!(name, ifb_name("myne", "tdummy"), "the two are concatenated");
        assert!(!is_ifb_name("bwp123"));
        assert!(!is_ifb_name("cali1234567890a"));
    }
}

//! `metadata.uid` for the objects the plugin creates: a random (version 4) UUID, as Calico's
//! client gives every new object. Sixteen bytes of the kernel's randomness are all it takes;
//! no crate needed.

use std::fs::File;
use std::io::{self, Read};

pub fn uuid_v4() -> io::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_4_variant_1_and_never_the_same_twice() {
        let a = super::uuid_v4().expect("uuid");
        let b = super::uuid_v4().expect("uuid");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "{a}");
        assert!("89ab".contains(&a[19..20]), "{a}");
        assert_ne!(a, b);
    }
}

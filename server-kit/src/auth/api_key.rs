//! API keys as configuration holds them: their SHA-256 (bff-partner's `[[gateway.keys]]`), so a
//! leaked configuration file leaks no key. Here rather than in bff-partner so that tools that
//! make keys (the development launcher) need not link a gateway.

use sha2::{Digest, Sha256};

/// Lowercase hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The SHA-256 of `key` as 64 lowercase hex digits: what `[[gateway.keys]] sha256` holds.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_to_its_lowercase_sha256_hex() {
        // `printf %s abc | sha256sum`
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

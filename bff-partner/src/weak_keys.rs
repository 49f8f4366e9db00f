//! Refusing configured keys anyone could guess.
//!
//! Keys are configured only as SHA-256 hashes, so the gateway cannot measure a key's entropy.
//! What it can do is hash the keys an attacker tries first and refuse a configured hash equal to
//! one of them ([`first_weak`], run by the configuration check at start-up). The candidates:
//!
//! - the empty key;
//! - every key of 1 or 2 printable ASCII characters (`0x20`–`0x7e`);
//! - every key of 3 lowercase letters or digits, and every 4-digit key;
//! - a built-in list of common secrets ([`COMMON`]: `password`, `changeme`, `secret`, `test`,
//!   `dev-key`, `apikey`, …), each also in upper case and capitalized, and each of those followed
//!   by `1`, `123` or `!`.
//!
//! That is 66 641 hashes, about 50 ms in a debug build and a few in a release build (all 857 375
//! keys of three printable characters took half a second in a debug build: too slow for every
//! start and every test).
//! Passing this check does not make a key strong: only a random key of at least 128 bits is (e.g.
//! `openssl rand -base64 32`).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Common secrets people configure as keys, in lower case (variants are derived).
pub const COMMON: &[&str] = &[
    "password",
    "changeme",
    "changeit",
    "secret",
    "test",
    "testing",
    "dev",
    "dev-key",
    "devkey",
    "dev_key",
    "test-key",
    "testkey",
    "test_key",
    "apikey",
    "api-key",
    "api_key",
    "api-token",
    "token",
    "key",
    "secret-key",
    "secretkey",
    "secret_key",
    "partner",
    "partner-key",
    "default",
    "example",
    "demo",
    "sample",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "1234567890",
    "letmein",
    "admin",
    "administrator",
    "root",
    "guest",
    "user",
    "welcome",
    "qwerty",
    "qwertz",
    "azerty",
    "abc123",
    "passw0rd",
    "p@ssw0rd",
    "pass",
    "hunter2",
    "iloveyou",
    "trustno1",
    "monkey",
    "dragon",
    "master",
    "sunshine",
    "football",
    "foobar",
    "hello",
    "s3cr3t",
    "supersecret",
    "topsecret",
    "insecure",
    "local",
    "localhost",
    "staging",
    "production",
    "prod",
    "your-api-key",
    "my-api-key",
    "bearer",
    "null",
    "undefined",
    "none",
];

/// Suffixes appended to every variant of a [`COMMON`] secret.
const SUFFIXES: [&str; 4] = ["", "1", "123", "!"];

/// Printable ASCII, the alphabet of the 1- and 2-character candidates.
const PRINTABLE: std::ops::RangeInclusive<u8> = 0x20..=0x7e;

/// Lowercase letters and digits, the alphabet of the 3-character candidates.
const LOWER_ALNUM: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The index of the first of `hashes` (hex SHA-256, either case) that is the hash of a candidate
/// weak key (see the module documentation), if any. Entries that are not 64 hex digits are
/// skipped: the configuration check reports those on its own.
pub fn first_weak<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    let mut configured: HashMap<[u8; 32], usize> = HashMap::new();
    for (index, hash) in hashes.into_iter().enumerate() {
        if let Some(digest) = decode(hash) {
            configured.entry(digest).or_insert(index);
        }
    }
    if configured.is_empty() {
        return None;
    }
    let mut first: Option<usize> = None;
    for_each_candidate(|key| {
        let digest: [u8; 32] = Sha256::digest(key).into();
        if let Some(&index) = configured.get(&digest) {
            first = Some(first.map_or(index, |first| first.min(index)));
        }
    });
    first
}

/// Calls `f` with every candidate weak key.
fn for_each_candidate(mut f: impl FnMut(&[u8])) {
    f(b"");
    for a in PRINTABLE {
        f(&[a]);
        for b in PRINTABLE {
            f(&[a, b]);
        }
    }
    for &a in LOWER_ALNUM {
        for &b in LOWER_ALNUM {
            for &c in LOWER_ALNUM {
                f(&[a, b, c]);
            }
        }
    }
    for n in 0..10_000_u32 {
        f(format!("{n:04}").as_bytes());
    }
    let mut key = String::new();
    for word in COMMON {
        let capitalized = {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        };
        for variant in [word.to_string(), word.to_ascii_uppercase(), capitalized] {
            for suffix in SUFFIXES {
                key.clear();
                key.push_str(&variant);
                key.push_str(suffix);
                f(key.as_bytes());
            }
        }
    }
}

/// 64 hex digits as 32 bytes.
fn decode(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    // `crate::hash_key` itself, named at its source: the configuration re-exports it, and uses
    // this module.
    use server_kit::auth::hash_api_key as hash_key;

    use super::*;

    #[test]
    fn short_and_common_keys_are_found_in_either_case_of_hex() {
        for weak in [
            "",
            " ",
            "x",
            "~~",
            "a9z",
            "0000",
            "9999",
            "Secret!",
            "CHANGEME123",
            "Test1",
        ] {
            let hash = hash_key(weak);
            assert_eq!(first_weak([hash.as_str()]), Some(0), "{weak:?}");
            let upper = hash.to_ascii_uppercase();
            assert_eq!(first_weak([upper.as_str()]), Some(0), "{weak:?}");
        }
    }

    #[test]
    fn the_first_weak_one_is_named_and_random_keys_pass() {
        let strong = hash_key("q3Jc9nY0b1mXoQe7Rk2WvT5sLz8HdUaF4pGiNyBtC6E=");
        let weak = hash_key("letmein");
        let also_weak = hash_key("ab");
        assert_eq!(
            first_weak([
                strong.as_str(),
                "not hex",
                weak.as_str(),
                also_weak.as_str()
            ]),
            Some(2)
        );
        assert_eq!(first_weak([strong.as_str()]), None);
        assert_eq!(first_weak([]), None);
    }
}

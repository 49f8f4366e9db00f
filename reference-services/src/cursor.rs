//! Opaque page cursors that only the issuing service can mint.
//!
//! A cursor carries the sort key of the last item of a page (key-set paging: the next page starts
//! strictly after that key, so items inserted meanwhile neither shift nor repeat pages), followed by
//! a 128-bit HMAC-SHA256 tag over that key and the cursor's *scope* (the listing and its filters).
//! The whole is base64url without padding, which fits the contract's `^[A-Za-z0-9_-]{1,200}$`.
//! A cursor that does not verify (forged, truncated, or issued for another listing or other
//! filters) is a 400.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// Bytes of the HMAC tag kept in a cursor.
const TAG_LEN: usize = 16;
/// SHA-256 block size, for HMAC.
const BLOCK: usize = 64;
/// Longest cursor the contract allows.
const MAX_CURSOR_LEN: usize = 200;

/// The secret that signs cursors; random per [`World`](crate::World), so cursors from another
/// process or an earlier run are not accepted.
#[derive(Clone)]
pub(crate) struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// A fresh random key.
    pub(crate) fn random() -> Self {
        CursorKey(rand::random())
    }

    /// HMAC-SHA256 (RFC 2104) of `scope`, a separator and `position`, truncated.
    fn tag(&self, scope: &[u8], position: &[u8]) -> [u8; TAG_LEN] {
        let mut key = [0u8; BLOCK];
        key[..self.0.len()].copy_from_slice(&self.0);
        let pad = |byte: u8| key.map(|k| k ^ byte);
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update((scope.len() as u64).to_be_bytes())
            .chain_update(scope)
            .chain_update(position)
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&outer[..TAG_LEN]);
        tag
    }

    /// Mints the cursor for `position` (the sort key of a page's last item) within `scope`.
    pub(crate) fn seal(&self, scope: &[u8], position: &[u8]) -> String {
        let mut raw = Vec::with_capacity(position.len() + TAG_LEN);
        raw.extend_from_slice(position);
        raw.extend_from_slice(&self.tag(scope, position));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The position in a cursor this key minted for `scope`; 400 for anything else.
    pub(crate) fn open(&self, scope: &[u8], cursor: &str) -> Result<Vec<u8>, ApiError> {
        let invalid =
            || ApiError::bad_request("query parameter cursor is not a cursor this service issued");
        let well_formed = (1..=MAX_CURSOR_LEN).contains(&cursor.len())
            && cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        if raw.len() < TAG_LEN {
            return Err(invalid());
        }
        let (position, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = self.tag(scope, position);
        // Constant-time comparison, as for any MAC.
        let difference = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 {
            Ok(position.to_vec())
        } else {
            Err(invalid())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_cursors_open_only_in_their_scope() {
        let key = CursorKey::random();
        let cursor = key.seal(b"products", b"position");
        assert!(cursor.len() <= MAX_CURSOR_LEN);
        assert_eq!(key.open(b"products", &cursor), Ok(b"position".to_vec()));
        assert!(key.open(b"orders", &cursor).is_err());
        assert!(CursorKey::random().open(b"products", &cursor).is_err());
    }

    #[test]
    fn tampered_cursors_are_rejected() {
        let key = CursorKey::random();
        let cursor = key.seal(b"s", b"abcdef");
        let mut raw = URL_SAFE_NO_PAD.decode(&cursor).unwrap_or_default();
        raw[0] ^= 1;
        assert!(key.open(b"s", &URL_SAFE_NO_PAD.encode(raw)).is_err());
        assert!(key.open(b"s", "").is_err());
        assert!(key.open(b"s", "abc").is_err());
        assert!(key.open(b"s", "a+b/").is_err());
    }

    #[test]
    fn tags_depend_on_the_key_and_on_where_the_scope_ends() {
        let key = CursorKey([7; 32]);
        assert_eq!(key.tag(b"a", b"b"), key.tag(b"a", b"b"));
        assert_ne!(key.tag(b"a", b"b"), CursorKey([8; 32]).tag(b"a", b"b"));
        assert_ne!(key.tag(b"ab", b""), key.tag(b"a", b"b"));
    }
}

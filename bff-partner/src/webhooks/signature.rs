//! [Standard Webhooks](https://www.standardwebhooks.com) v1 signatures: what lets a partner check
//! that a delivery comes from us and was not altered or replayed.
//!
//! Every delivery attempt carries three headers:
//! - [`HEADER_ID`] (`webhook-id`): the message id ([`new_message_id`]), the same on every attempt
//!   of one delivery, so a receiver can drop duplicates;
//! - [`HEADER_TIMESTAMP`] (`webhook-timestamp`): the attempt's time in Unix seconds, fresh on each
//!   attempt (receivers refuse old ones, which defeats replays);
//! - [`HEADER_SIGNATURE`] (`webhook-signature`): [`signature_header`], one `v1,<base64>` per
//!   secret, space-separated, where each is [`sign`]: the HMAC-SHA256 of `{id}.{timestamp}.{body}`
//!   keyed with the secret's bytes.
//!
//! The policy:
//! - An endpoint's [`Secret`] is 32 random bytes from the operating system
//!   ([`Secret::generate`]), shown to the partner once, as `whsec_` + standard base64 (with
//!   padding). The spec allows 24 to 64 bytes, which is what a stored secret may have
//!   ([`Secret::parse`]).
//! - A secret never prints: `Debug` and `Display` show `whsec_[redacted]`. Only
//!   [`Secret::expose`] gives its text, for the one response that returns it at creation (or
//!   rotation) and for storing it.
//! - While a secret is rotated, every attempt is signed with the new secret and the old one (for
//!   the configured overlap), so a receiver still holding the old one keeps verifying.
//! - Message ids are ours (never a partner's text) and never contain a `.`, the field separator
//!   of the signed content.

use std::{fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::{Rng, TryRngCore, rngs::OsRng};
use sha2::Sha256;

/// The header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the attempt's time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// What a secret's text starts with, so partners (and secret scanners) recognise it.
pub const SECRET_PREFIX: &str = "whsec_";
/// How many random bytes [`Secret::generate`] draws: 256 bits, the output size of SHA-256.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// The fewest bytes a secret may have (the spec's minimum, 192 bits).
pub const MIN_SECRET_BYTES: usize = 24;
/// The most bytes a secret may have (the spec's maximum, 512 bits).
pub const MAX_SECRET_BYTES: usize = 64;
/// What a message id starts with.
pub const MESSAGE_ID_PREFIX: &str = "msg_";
/// What a signature starts with: the scheme (`v1` is HMAC-SHA256) and a comma.
pub const SIGNATURE_PREFIX: &str = "v1,";

/// An endpoint's signing secret: its key bytes, which never print.
///
/// Build one with [`Secret::generate`] (a new endpoint, a rotation) or [`Secret::parse`] (a
/// stored one). There is deliberately no `Serialize`: storing a secret is an explicit
/// [`Secret::expose`]. Nor `PartialEq`: nothing compares secrets (a delivery signs, it does not
/// verify), and a comparison that is not constant-time would be a trap.
#[derive(Clone)]
pub struct Secret {
    /// The HMAC key: the base64-decoded part of the text after `whsec_`.
    key: Box<[u8]>,
}

/// Why a stored secret's text is not a secret.
///
/// The messages never repeat the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with `whsec_`")]
    MissingPrefix,
    /// What follows `whsec_` is not standard base64 (with its padding).
    #[error("a webhook secret is `whsec_` followed by standard base64")]
    NotBase64,
    /// The decoded key is shorter or longer than the spec allows.
    #[error(
        "a webhook secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one has {0}"
    )]
    Length(usize),
}

impl Secret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] random bytes from the operating system's
    /// random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes (then no secret can be made safely).
    pub fn generate() -> Self {
        let mut key = [0u8; GENERATED_SECRET_BYTES];
        OsRng
            .try_fill_bytes(&mut key)
            .expect("the operating system's random number generator failed");
        Self { key: key.into() }
    }

    /// The secret whose text is `stored` (`whsec_` + standard base64 of 24 to 64 bytes), as
    /// [`Secret::expose`] gave it.
    pub fn parse(stored: &str) -> Result<Self, SecretError> {
        let encoded = stored
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self { key: key.into() })
    }

    /// The secret's text, `whsec_<base64>`: for the response that shows it to the partner once,
    /// and for storing it. Nowhere else (never in a log).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(stored: &str) -> Result<Self, Self::Err> {
        Self::parse(stored)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_[redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

/// The `v1` signature of one attempt: `v1,` + base64 of the HMAC-SHA256, keyed with `secret`,
/// of `{msg_id}.{timestamp_secs}.{body}`.
///
/// `body` must be the exact bytes sent. `msg_id` must not contain a `.` (ours never do: see
/// [`new_message_id`]).
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    debug_assert!(!msg_id.contains('.'), "a message id never contains a `.`");
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.key).expect("HMAC takes keys of any size");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The value of the [`HEADER_SIGNATURE`] header: [`sign`] with each of `secrets`, in order,
/// separated by spaces.
///
/// Pass the endpoint's current secret, then, while a rotation's overlap lasts, the previous one.
/// `secrets` should not be empty (the header would be empty, and every receiver would refuse it).
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    debug_assert!(
        !secrets.is_empty(),
        "a delivery is signed with at least one secret"
    );
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Crockford's base32 alphabet (no `I`, `L`, `O`, `U`), as ULIDs use.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new message id: `msg_` + a ULID of the current time and 80 random bits.
///
/// Ids sort by creation time (to the millisecond) and cannot be guessed. They hold only `msg_`
/// and ASCII letters and digits (no `.`), 30 characters.
pub fn new_message_id() -> String {
    let unix_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    message_id_at(
        u64::try_from(unix_millis).unwrap_or(u64::MAX),
        &mut rand::rng(),
    )
}

/// The message id of time `unix_millis` (milliseconds since the Unix epoch; only the low 48 bits
/// count, as in a ULID, which lasts until the year 10889) with 80 bits drawn from `rng`:
/// [`new_message_id`] with its clock and randomness given.
pub fn message_id_at(unix_millis: u64, rng: &mut impl Rng) -> String {
    let time = u128::from(unix_millis & ((1 << 48) - 1));
    let random = rng.random::<u128>() & ((1 << 80) - 1);
    let value = (time << 80) | random;
    // 26 digits of 5 bits hold 130 bits: the first digit carries the top 3 bits.
    let mut id = String::with_capacity(MESSAGE_ID_PREFIX.len() + 26);
    id.push_str(MESSAGE_ID_PREFIX);
    for digit in (0..26).rev() {
        id.push(char::from(
            CROCKFORD[((value >> (5 * digit)) & 31) as usize],
        ));
    }
    id
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::parse(text).expect("a valid secret")
    }

    /// A verifier written from the spec, independent of [`sign`]: recomputes each signature of
    /// the header with the `hmac` crate's own verification (constant time).
    fn verifies(secret_text: &str, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
        let key = STANDARD
            .decode(secret_text.trim_start_matches("whsec_"))
            .expect("base64");
        header.split(' ').any(|signature| {
            let Some(encoded) = signature.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = STANDARD.decode(encoded) else {
                return false;
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&tag).is_ok()
        })
    }

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // From the reference libraries' tests (standard-webhooks/standard-webhooks,
        // libraries/javascript/src/webhook.test.ts "sign function works", and the PHP one).
        assert_eq!(
            sign(
                &secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn signature_matches_the_reference_rust_library_vector() {
        // standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs `test_sign`.
        assert_eq!(
            sign(
                &secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_signature_changes_with_the_id_the_timestamp_the_body_and_the_secret() {
        let key = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let base = sign(&key, "msg_1", 1_700_000_000, b"{}");
        assert_ne!(base, sign(&key, "msg_2", 1_700_000_000, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 1_700_000_001, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 1_700_000_000, b"{ }"));
        assert_ne!(
            base,
            sign(&Secret::generate(), "msg_1", 1_700_000_000, b"{}")
        );
        assert_eq!(base, sign(&key, "msg_1", 1_700_000_000, b"{}"));
    }

    #[test]
    fn a_rotation_header_carries_the_new_then_the_old_signature() {
        let new = Secret::generate();
        let old = Secret::generate();
        let body = br#"{"type":"ping"}"#;
        let header = signature_header(&[&new, &old], "msg_abc", 1_700_000_000, body);

        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                sign(&new, "msg_abc", 1_700_000_000, body),
                sign(&old, "msg_abc", 1_700_000_000, body)
            ]
        );
        // A receiver holding either secret verifies it; one holding another does not.
        assert!(verifies(
            &new.expose(),
            &header,
            "msg_abc",
            1_700_000_000,
            body
        ));
        assert!(verifies(
            &old.expose(),
            &header,
            "msg_abc",
            1_700_000_000,
            body
        ));
        let other = Secret::generate().expose();
        assert!(!verifies(&other, &header, "msg_abc", 1_700_000_000, body));
    }

    #[test]
    fn a_header_with_one_secret_is_one_signature_an_independent_verifier_accepts() {
        let key = Secret::generate();
        let header = signature_header(&[&key], "msg_abc", 1_700_000_000, b"{}");
        assert!(!header.contains(' '));
        assert!(verifies(
            &key.expose(),
            &header,
            "msg_abc",
            1_700_000_000,
            b"{}"
        ));
        assert!(!verifies(
            &key.expose(),
            &header,
            "msg_abc",
            1_700_000_001,
            b"{}"
        ));
    }

    #[test]
    fn a_secret_never_shows_in_debug_or_display() {
        let key = Secret::generate();
        let text = key.expose();
        let encoded = text.trim_start_matches(SECRET_PREFIX);
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{:?}", Some(&key)),
        ] {
            assert!(!shown.contains(encoded), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn a_generated_secret_is_32_random_bytes_and_parses_back() {
        let key = Secret::generate();
        let text = key.expose();
        assert!(text.starts_with("whsec_"));
        let decoded = STANDARD.decode(&text[6..]).expect("base64");
        assert_eq!(decoded.len(), GENERATED_SECRET_BYTES);
        assert_eq!(
            Secret::parse(&text).map(|back| back.expose()),
            Ok(text.clone())
        );
        assert_eq!(
            text.parse::<Secret>().map(|back| back.expose()),
            Ok(text.clone())
        );
        assert_ne!(Secret::generate().expose(), text);
    }

    #[test]
    fn a_stored_secret_needs_the_prefix_base64_and_24_to_64_bytes() {
        let of_len = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert!(Secret::parse(&of_len(24)).is_ok());
        assert!(Secret::parse(&of_len(64)).is_ok());
        assert_eq!(
            Secret::parse(&of_len(23)).err(),
            Some(SecretError::Length(23))
        );
        assert_eq!(
            Secret::parse(&of_len(65)).err(),
            Some(SecretError::Length(65))
        );
        assert_eq!(Secret::parse("").err(), Some(SecretError::MissingPrefix));
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(),
            Some(SecretError::MissingPrefix)
        );
        assert_eq!(
            Secret::parse("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(),
            Some(SecretError::MissingPrefix)
        );
        for bad in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ",
            // URL-safe alphabet.
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa_w",
            // 32 bytes without their padding.
            of_len(32).trim_end_matches('='),
        ] {
            assert_eq!(
                Secret::parse(bad).err(),
                Some(SecretError::NotBase64),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_errors_do_not_repeat_the_text() {
        let text = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
        let error = Secret::parse(text).expect_err("too short");
        assert_eq!(
            error.to_string(),
            "a webhook secret has 24 to 64 bytes, this one has 20"
        );
        assert!(!format!("{error:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn a_message_id_is_msg_and_a_ulid_of_its_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let id = message_id_at(1_469_918_176_385, &mut rng);
        assert_eq!(id.len(), 30);
        assert!(id.starts_with("msg_"));
        assert!(
            id[4..].bytes().all(|b| CROCKFORD.contains(&b)),
            "{id} is Crockford base32"
        );
        // The ulid JavaScript library's README: `decodeTime("01ARYZ6S41TSV4RRFFQ69G5FAV")` is
        // 1469918176385.
        assert_eq!(&id[4..14], "01ARYZ6S41");
        // The largest time still starts with a digit of at most 3 bits.
        let last = message_id_at((1 << 48) - 1, &mut rng);
        assert_eq!(&last[4..14], "7ZZZZZZZZZ");
    }

    #[test]
    fn message_ids_sort_by_time_and_differ_at_the_same_time() {
        let mut rng = StdRng::seed_from_u64(1);
        let earlier = message_id_at(1_000, &mut rng);
        let later = message_id_at(1_001, &mut rng);
        assert!(earlier < later);
        assert_ne!(message_id_at(5, &mut rng), message_id_at(5, &mut rng));
        assert_ne!(new_message_id(), new_message_id());
        assert!(!new_message_id().contains('.'));
    }
}

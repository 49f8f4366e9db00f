//! [`VerifiedTokens`]: bearer tokens already verified, remembered so that a signed-in client's
//! next requests skip the signature check (an HMAC for HS256, an RSA or ECDSA verification for
//! JWKS keys, the most expensive part of a request served from cache).
//!
//! Rules, all in [`VerifiedTokens::get`] and [`VerifiedTokens::keep`]:
//! - only tokens that passed every check of [`Authenticator::verify`](super::Authenticator) are
//!   kept; a refusal is never remembered;
//! - an entry is found by the SHA-256 of the token's bytes: the token itself is never a key,
//!   never logged, and two different tokens never share an entry (a collision of SHA-256 is not
//!   a concern);
//! - an entry answers until the token's `exp` (plus `leeway`, as the verifier allows it) and never
//!   longer than `token_cache_max_ttl` after the verification. `exp` and `nbf` are checked again
//!   on every hit against the clock, so an expired token is refused even while its entry is
//!   still held (`token_expired`, as the verifier would say);
//! - a token verified with a JWKS key answers from its entry only while the key cache still
//!   holds that very key under its `kid` (the same allocation): the lookup runs on every hit,
//!   exactly as a verification's would, so a due background refresh still starts, and once a
//!   refresh drops or replaces the key (rotation, removal) the token is verified anew against
//!   the new key set. A removed key therefore stops being accepted exactly when it would without
//!   this cache. Any successful refresh makes every JWKS entry verify once more (the keys are
//!   new allocations), which costs one verification per token per `jwks_refresh_interval`;
//! - the HS256 secret cannot change while the process runs, so its tokens need no such check;
//! - at most `token_cache_capacity` entries (moka's admission and eviction: the least useful go
//!   first); `0` keeps nothing and every request is verified.
//!
//! Time: `tokio::time::Instant` bounds an entry's age (tests drive it with
//! `tokio::time::pause()`), the system clock decides `exp` and `nbf` as `jsonwebtoken` does
//! (in seconds since the Unix epoch); the unit tests move it with [`VerifiedTokens::skew_clock`].

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{jwks::JwksKey, user::AuthenticatedUser};

/// The key of an entry: the SHA-256 of the token.
pub(super) type TokenDigest = [u8; 32];

/// The SHA-256 of `token`, the key of its entry.
pub(super) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// One verified token.
pub(super) struct Verified {
    /// The user it authenticates, handed out (cloned: an `Arc` inside) on every hit.
    user: AuthenticatedUser,
    /// Its `nbf` (seconds since the epoch), checked again on a hit like `exp` (the user holds
    /// `exp`); `None` without one.
    not_before: Option<u64>,
    /// The JWKS `kid` and key that verified it; `None` for an HS256 token.
    key: Option<(Box<str>, Arc<JwksKey>)>,
    /// When it was verified: the entry answers for `max_ttl` after that at most.
    verified_at: Instant,
    /// How long moka keeps it: until `exp` + `leeway`, at most `max_ttl` (memory only; a hit
    /// checks the clocks itself).
    lifetime: Duration,
}

impl Verified {
    /// The JWKS `kid` and key that verified the token, to compare with the key cache's current
    /// one; `None` for an HS256 token.
    pub(super) fn key(&self) -> Option<(&str, &Arc<JwksKey>)> {
        self.key.as_ref().map(|(kid, key)| (&**kid, key))
    }

    /// The user the token authenticates.
    pub(super) fn user(&self) -> &AuthenticatedUser {
        &self.user
    }
}

/// Why an entry did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Miss {
    /// Nothing kept for the token (or the cache is off): verify it.
    Absent,
    /// Kept, but verified longer than `max_ttl` ago: verify it again.
    Old,
    /// Kept, but its `exp` (plus `leeway`) has passed: the token is expired.
    Expired,
    /// Kept, but its `nbf` (minus `leeway`) is ahead of the clock (the clock went back): verify.
    NotYetValid,
}

/// The remembered verified tokens of one [`Authenticator`](super::Authenticator).
pub(super) struct VerifiedTokens {
    /// The entries by token digest; `None` when the capacity is 0.
    entries: Option<moka::sync::Cache<TokenDigest, Arc<Verified>>>,
    /// Longest time an entry answers after its verification.
    max_ttl: Duration,
    /// The verifier's clock-skew allowance on `exp` and `nbf`, in seconds.
    leeway: u64,
    /// Seconds added to the system clock: the unit tests' way to make tokens expire.
    #[cfg(test)]
    skew: std::sync::atomic::AtomicU64,
}

/// Tells moka how long each entry may stay: its own `lifetime`.
struct UntilExpiry;

impl moka::Expiry<TokenDigest, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens (`0`: none), each answering for `max_ttl` at most;
    /// `leeway` as the verifier's.
    pub(super) fn new(capacity: u64, max_ttl: Duration, leeway: Duration) -> Self {
        let entries = (capacity > 0 && !max_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build()
        });
        Self {
            entries,
            max_ttl,
            leeway: leeway.as_secs(),
            #[cfg(test)]
            skew: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether tokens are remembered at all (capacity above 0).
    pub(super) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The entry of the token whose digest is `digest`, if it may answer now; otherwise why not
    /// (an entry that may not answer is dropped).
    pub(super) fn get(&self, digest: &TokenDigest) -> Result<Arc<Verified>, Miss> {
        let entries = self.entries.as_ref().ok_or(Miss::Absent)?;
        let verified = entries.get(digest).ok_or(Miss::Absent)?;
        let now = self.unix_now();
        let miss = if verified.user.expires_at().saturating_add(self.leeway) < now {
            Some(Miss::Expired)
        } else if verified
            .not_before
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            Some(Miss::NotYetValid)
        } else if verified.verified_at.elapsed() >= self.max_ttl {
            Some(Miss::Old)
        } else {
            None
        };
        match miss {
            Some(miss) => {
                entries.invalidate(digest);
                Err(miss)
            }
            None => Ok(verified),
        }
    }

    /// Forgets the token whose digest is `digest` (its JWKS key is no longer the current one).
    pub(super) fn forget(&self, digest: &TokenDigest) {
        if let Some(entries) = &self.entries {
            entries.invalidate(digest);
        }
    }

    /// Remembers that the token whose digest is `digest` was just verified: it authenticates
    /// `user` (whose `expires_at` is the token's `exp`), has `not_before` as `nbf`, and was
    /// verified with `key` (a JWKS `kid` and key; `None` for HS256).
    pub(super) fn keep(
        &self,
        digest: TokenDigest,
        user: &AuthenticatedUser,
        not_before: Option<u64>,
        key: Option<(&str, Arc<JwksKey>)>,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let remaining = user
            .expires_at()
            .saturating_add(self.leeway)
            .saturating_sub(self.unix_now());
        let lifetime = self.max_ttl.min(Duration::from_secs(remaining));
        if lifetime.is_zero() {
            return;
        }
        let verified = Verified {
            user: user.clone(),
            not_before,
            key: key.map(|(kid, key)| (Box::from(kid), key)),
            verified_at: Instant::now(),
            lifetime,
        };
        entries.insert(digest, Arc::new(verified));
    }

    /// Now, in seconds since the Unix epoch, as `jsonwebtoken` reads it.
    fn unix_now(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        #[cfg(test)]
        let now = now + self.skew.load(std::sync::atomic::Ordering::SeqCst);
        now
    }

    /// Moves this cache's view of the system clock `by` forward (tests only: `jsonwebtoken`'s
    /// own checks keep the real clock).
    #[cfg(test)]
    pub(super) fn skew_clock(&self, by: Duration) {
        self.skew
            .fetch_add(by.as_secs(), std::sync::atomic::Ordering::SeqCst);
    }

    /// How many entries are held, after moka's pending evictions ran.
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.entry_count()
        })
    }
}

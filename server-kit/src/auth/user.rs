//! [`AuthenticatedUser`]: the user of a verified bearer token. A leaf both sides use:
//! `verify` creates it, `extract` hands it to handlers.

use shared_clients::UserId;

/// A user whose bearer token was verified. Only [`Authenticator`](super::Authenticator) creates
/// one, so holding one proves the request was authenticated.
///
/// As an extractor (see `extract`): a missing or invalid token is refused with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The token's `sub`: whom cart and order calls act for (`X-User-Id` downstream).
    user_id: UserId,
    /// The token's `exp` (seconds since the Unix epoch).
    expires_at: u64,
}

impl AuthenticatedUser {
    /// Wraps the id of a user whose token was just verified.
    pub(super) fn new(user_id: UserId, expires_at: u64) -> Self {
        Self {
            user_id,
            expires_at,
        }
    }

    /// When the token expires (its `exp`, seconds since the Unix epoch): a connection that
    /// outlives its request (a subscription, a stream) ends what the token allowed then.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// How long until the token expires (zero when it already has).
    pub fn expires_in(&self) -> std::time::Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        std::time::Duration::from_secs(self.expires_at.saturating_sub(now))
    }

    /// The user's id, to pass downstream.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The user's id, by value.
    pub fn into_user_id(self) -> UserId {
        self.user_id
    }
}

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
}

impl AuthenticatedUser {
    /// Wraps the id of a user whose token was just verified.
    pub(super) fn new(user_id: UserId) -> Self {
        Self { user_id }
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

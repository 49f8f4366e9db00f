//! The axum extractors: [`AuthenticatedUser`] where a user is required, [`OptionalUser`] where
//! anonymous requests are served too.
//!
//! Both take the [`Authenticator`] from the router's state, so a gateway only needs
//! `impl FromRef<AppState> for Authenticator`. Both reject with an [`AuthError`] (a 401 problem);
//! a handler that wants another error shape takes `Result<AuthenticatedUser, AuthError>`.

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use shared_clients::UserId;

use super::{error::AuthError, verify::Authenticator};

/// A user whose bearer token was verified. Only [`Authenticator`] creates one, so holding one
/// proves the request was authenticated.
///
/// As an extractor: a missing or invalid token is refused with 401.
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

impl<S> FromRequestParts<S> for AuthenticatedUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Authenticator::from_ref(state)
            .authenticate(&parts.headers)
            .await?
            .ok_or(AuthError::Missing)
    }
}

/// The user of a request that may be anonymous: `None` when the request has no `Authorization`
/// header. A header that is present but invalid is still refused with 401 — a broken token never
/// silently turns a request anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalUser(pub Option<AuthenticatedUser>);

impl OptionalUser {
    /// The user's id, `None` for an anonymous request.
    pub fn user_id(&self) -> Option<&UserId> {
        self.0.as_ref().map(AuthenticatedUser::user_id)
    }

    /// The authenticated user, if any.
    pub fn into_inner(self) -> Option<AuthenticatedUser> {
        self.0
    }
}

impl<S> FromRequestParts<S> for OptionalUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Authenticator::from_ref(state)
            .authenticate(&parts.headers)
            .await
            .map(Self)
    }
}

//! The axum extractors: [`AuthenticatedUser`] (defined in `user`) where a user is required,
//! [`OptionalUser`] where anonymous requests are served too.
//!
//! Both take the [`Authenticator`] from the router's state, so a gateway only needs
//! `impl FromRef<AppState> for Authenticator`. Both reject with an [`AuthError`] (a 401 problem);
//! a handler that wants another error shape takes `Result<AuthenticatedUser, AuthError>`.

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use shared_clients::UserId;

use super::{error::AuthError, user::AuthenticatedUser, verify::Authenticator};

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

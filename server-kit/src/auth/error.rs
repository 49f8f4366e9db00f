//! Why a bearer token was refused, and how that is told to the client.
//!
//! [`AuthError::code`] is precise and stable, for logs, metrics and the gateways' own mapping
//! (GraphQL: `UNAUTHENTICATED`). The client is told less: a REST response carries only one of
//! four public codes (`missing_token`, `token_expired`, `keys_unavailable`, `invalid_token`),
//! because telling a forger *which* check failed (signature, key id, algorithm, issuer, …) helps
//! them more than it helps a legitimate client, who can only get a new token either way.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::problem::Problem;

/// A bearer token was missing or not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request has no `Authorization` header (only an error where a user is required).
    #[error("no bearer token")]
    Missing,
    /// The `Authorization` header or the token cannot be read: not `Bearer <token>`, too large,
    /// not a JWT, bad encoding, `exp` missing or of the wrong type, an unknown `crit` header.
    #[error("malformed bearer token")]
    Malformed,
    /// The token's `alg` is not one the configuration allows (`none`, HS256 without a secret,
    /// RS256/ES256 without a JWKS, or an algorithm that does not match its key).
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The signature does not match the token.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` is missing or does not name the configured audience.
    #[error("wrong token audience")]
    WrongAudience,
    /// `sub` is missing or not a valid user id.
    #[error("missing or invalid token subject")]
    InvalidSubject,
    /// No usable JWKS key has the token's `kid` (or the token has none), even after a re-fetch.
    #[error("unknown token signing key")]
    UnknownKey,
    /// The JWKS could not be fetched and no keys are cached, so no RS256/ES256 token can be
    /// verified right now.
    #[error("token signing keys unavailable")]
    KeysUnavailable,
    /// A token could not be signed ([`dev_token`](super::dev_token) only; never a verification
    /// outcome).
    #[error("token signing failed")]
    Signing,
}

impl AuthError {
    /// A stable, machine-readable code naming the exact reason, for logs, metrics and the
    /// gateways' own error mapping. Not meant to be shown to clients as is (see
    /// [`AuthError::public_code`]).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed => "malformed_token",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidSubject => "invalid_subject",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Signing => "signing_failed",
        }
    }

    /// The code a client may see: `missing_token` (send one), `token_expired` (refresh it),
    /// `keys_unavailable` (retry later, the token may be fine) or `invalid_token` (everything
    /// else, deliberately not told apart).
    pub fn public_code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Expired => "token_expired",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Signing => "internal_error",
            _ => "invalid_token",
        }
    }

    /// The human explanation a client may see, as vague as [`AuthError::public_code`].
    fn public_detail(&self) -> &'static str {
        match self {
            Self::Missing => "This resource needs a bearer token in the Authorization header.",
            Self::Expired => "The bearer token has expired.",
            Self::KeysUnavailable => {
                "The bearer token cannot be verified right now; try again shortly."
            }
            Self::Signing => "The token could not be created.",
            _ => "The bearer token is not valid.",
        }
    }

    /// The `WWW-Authenticate` challenge of RFC 6750 §3: no error code when the request had no
    /// token at all (§3.1), `invalid_token` otherwise.
    fn challenge(&self) -> &'static str {
        match self {
            Self::Missing => "Bearer",
            Self::Expired => {
                r#"Bearer error="invalid_token", error_description="The token expired""#
            }
            _ => r#"Bearer error="invalid_token""#,
        }
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let status = match error {
            AuthError::Signing => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        };
        Problem::status(status)
            .with_detail(error.public_detail())
            .with_extension("code", error.public_code().into())
    }
}

impl IntoResponse for AuthError {
    /// A 401 problem with a `WWW-Authenticate: Bearer …` challenge.
    fn into_response(self) -> Response {
        let mut response = Problem::from(self).into_response();
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.challenge()),
            );
        }
        response
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    /// Classifies a failure of `jsonwebtoken::decode` (the one place its errors are mapped).
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidSubject => Self::InvalidSubject,
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "iss" => Self::WrongIssuer,
                "aud" => Self::WrongAudience,
                "sub" => Self::InvalidSubject,
                _ => Self::Malformed,
            },
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => Self::AlgorithmNotAllowed,
            // The key itself is unusable (bad JWKS material): no key can check this token.
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::UnknownKey,
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_401_with_a_bearer_challenge_and_a_vague_public_code() {
        for error in [
            AuthError::Malformed,
            AuthError::AlgorithmNotAllowed,
            AuthError::BadSignature,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::InvalidSubject,
            AuthError::UnknownKey,
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                r#"Bearer error="invalid_token""#
            );
            assert_eq!(error.public_code(), "invalid_token");
        }
        let missing = AuthError::Missing.into_response();
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(AuthError::Expired.public_code(), "token_expired");
        assert_eq!(AuthError::KeysUnavailable.public_code(), "keys_unavailable");
        assert_eq!(
            AuthError::Signing.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

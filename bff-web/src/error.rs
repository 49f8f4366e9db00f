//! Errors of the HTTP transport: [`TransportError`], a request refused before the schema ran it,
//! answered as a GraphQL error body without `data` in the response type the client negotiated.
//!
//! Which error is used when:
//! - Once the schema executes a request, its errors travel in `errors` next to partial `data`,
//!   with the codes of `schema::error` (an error left without a code gets
//!   [`codes::INTERNAL`], and a generic message, after execution started).
//! - Anything refused before that is a [`TransportError`], whose status follows GraphQL over
//!   HTTP ([`TransportError::status`]): a body or query string that is not a GraphQL request at
//!   all is 400 whatever the response type; a document refused before execution (too deeply
//!   nested to parse, a limit exceeded, a required variable left out) and a refused persisted
//!   query are 400 with `application/graphql-response+json` and 200 with `application/json` —
//!   except `PERSISTED_QUERY_NOT_FOUND`, 200 either way (Apollo clients expect that to resend
//!   the text); a document refused because it is in no manifest (`enforce` mode,
//!   `PERSISTED_DOCUMENT_REQUIRED`) is 400 either way, an unknown `documentId`
//!   (`PERSISTED_DOCUMENT_NOT_FOUND`) is a request error like a refused document;
//!   415, 406 and 405 (with `Allow: POST`) as their names say; a bearer token that is
//!   present but refused is 401 `UNAUTHENTICATED` with its public `reason` and a
//!   `WWW-Authenticate` challenge.
//!
//! Nothing is logged here (the `Authenticator` logs a refused token, at `debug`): the body tells
//! the client what to change.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use server_kit::auth::AuthError;

use crate::{
    apq::ApqError,
    response::{Media, json_response},
    schema,
    trusted::TrustedError,
};

/// Transport error codes (the request never reached the schema).
pub mod codes {
    /// The body or query string is not a GraphQL request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// A mutation was sent with `GET`.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// The body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// The client accepts no response type this endpoint produces.
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// An error without a code of its own after execution started (a bug).
    pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
}

/// A request refused before the schema ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The body or query string is not a GraphQL request, or it has no `query`; says why.
    BadRequest(&'static str),
    /// A `POST` body that is not `application/json`.
    UnsupportedMediaType,
    /// The client accepts neither response type (answered in `application/json` all the same).
    NotAcceptable,
    /// A mutation sent with `GET`.
    MutationViaGet,
    /// Automatic persisted queries could not supply the document.
    PersistedQuery(ApqError),
    /// Trusted documents refused the request: an unknown `documentId`, or (`enforce` mode) a
    /// document in no manifest.
    PersistedDocument(TrustedError),
    /// The document was refused before execution: its code says why (a parse failure, a limit
    /// of `schema::limits`, `BAD_USER_INPUT` for a required variable left out).
    Refused {
        /// `extensions.code`.
        code: String,
        /// What the client should change.
        message: String,
    },
    /// A subscription sent as a plain request: it needs a stream.
    SubscriptionNeedsStream,
    /// A bearer token was sent but refused: the whole request, catalog included, is refused, so
    /// a broken or expired token never silently turns a request anonymous.
    Unauthenticated(AuthError),
}

impl TransportError {
    /// The status answered with `media`.
    pub fn status(&self, media: Media) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::MutationViaGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::PersistedQuery(ApqError::NotFound) => StatusCode::OK,
            Self::PersistedDocument(TrustedError::Required | TrustedError::Both) => {
                StatusCode::BAD_REQUEST
            }
            Self::PersistedDocument(TrustedError::NotFound) => media.request_error_status(),
            Self::PersistedQuery(_) | Self::Refused { .. } | Self::SubscriptionNeedsStream => {
                media.request_error_status()
            }
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The answer: a GraphQL error body without `data`, in `media` (406 always in
    /// `application/json`: the client accepts nothing else this endpoint has).
    pub fn respond(self, media: Media) -> Response {
        let media = match self {
            Self::NotAcceptable => Media::Json,
            _ => media,
        };
        if let Self::Unauthenticated(refused) = self {
            return unauthenticated(media, refused);
        }
        let status = self.status(media);
        let body = serde_json::json!({ "errors": self.errors() });
        let mut response = json_response(media, status, &body);
        if self == Self::MutationViaGet {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }

    /// The error as a GraphQL `errors` list (of one), e.g. for a WebSocket's `error` message.
    pub fn errors(&self) -> serde_json::Value {
        let (code, message): (&str, &str) = match self {
            Self::BadRequest(message) => (codes::BAD_REQUEST, message),
            Self::UnsupportedMediaType => (
                codes::UNSUPPORTED_MEDIA_TYPE,
                "Send the request as `Content-Type: application/json`.",
            ),
            Self::NotAcceptable => (
                codes::NOT_ACCEPTABLE,
                "Accept `application/graphql-response+json` or `application/json`.",
            ),
            Self::MutationViaGet => (
                codes::METHOD_NOT_ALLOWED,
                "Mutations must be sent with POST.",
            ),
            Self::PersistedQuery(error) => (error.code(), error.message()),
            Self::PersistedDocument(error) => (error.code(), error.message()),
            Self::Refused { code, message } => (code, message),
            Self::SubscriptionNeedsStream => (
                codes::BAD_REQUEST,
                "Subscriptions are served over a WebSocket (subprotocol `graphql-transport-ws`) \
                 or as server-sent events (`Accept: text/event-stream`).",
            ),
            Self::Unauthenticated(refused) => {
                let error = schema::error::unauthenticated(*refused);
                return serde_json::json!([{
                    "message": error.message,
                    "extensions": {
                        "code": schema::error::Code::Unauthenticated.as_str(),
                        "reason": refused.public_code(),
                    },
                }]);
            }
        };
        serde_json::json!([{ "message": message, "extensions": { "code": code } }])
    }
}

/// 401 for a bearer token that is present but refused. The body is a GraphQL error
/// (`UNAUTHENTICATED` with the public `reason`), with a `WWW-Authenticate` challenge.
fn unauthenticated(media: Media, refused: AuthError) -> Response {
    let error = schema::error::unauthenticated(refused);
    let reason = refused.public_code();
    let body = serde_json::json!({
        "errors": [{
            "message": error.message,
            "extensions": { "code": schema::error::Code::Unauthenticated.as_str(), "reason": reason },
        }]
    });
    let mut response = json_response(media, StatusCode::UNAUTHORIZED, &body);
    let challenge = match refused {
        AuthError::Expired => {
            r#"Bearer error="invalid_token", error_description="The token expired""#
        }
        _ => r#"Bearer error="invalid_token""#,
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

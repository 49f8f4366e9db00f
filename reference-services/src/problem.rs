//! [`ApiError`], the one error type of all three services, answered as an RFC 9457
//! `application/problem+json` body with `type`, `title`, `status` and `detail`.
//!
//! When to use which variant:
//! - [`ApiError::BadRequest`]: the request violates the contract (path id, query value, header or
//!   body not matching its schema, a cursor the service did not issue, malformed JSON).
//! - [`ApiError::Forbidden`]: the identity headers do not own the resource (carts, order creation
//!   and listing). For a single order the service answers [`ApiError::NotFound`] instead, so that
//!   order ids cannot be probed.
//! - [`ApiError::Conflict`]: the change would break an invariant (cart line above 99, an order
//!   status change its lifecycle does not allow).
//! - [`ApiError::PreconditionFailed`]: `If-Match` did not match.
//! - [`ApiError::UnsupportedMediaType`]: a request body that is not `application/json`.
//! - [`ApiError::Unprocessable`]: well-formed but not acceptable (mixed currencies, an
//!   `Idempotency-Key` reused with a different body; in the admin API, an unknown category or a
//!   `list_price` that cannot be one).
//! - [`ApiError::Unavailable`]: an injected fault (see [`crate::admin`]).
//!
//! The `detail` only ever describes what was wrong with the request; nothing internal is shown.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every way a request can fail, each with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request does not match the contract; the text says what and where.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the identity headers do not own what the request names.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or, for orders, not one the caller owns).
    #[error("{0}")]
    NotFound(String),
    /// 409: the change would break an invariant; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// 412: the `If-Match` precondition failed; nothing was changed.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the request body is larger than the service accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the request body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: understood but refused (mixed currencies, idempotency key reused with another body).
    #[error("{0}")]
    Unprocessable(String),
    /// 503: an injected fault; the service is (pretending to be) unavailable.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// Shorthand for [`ApiError::BadRequest`].
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest(detail.into())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable last segment of the problem `type` URI.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid-request",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed(_) => "precondition-failed",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        match self {
            ApiError::BadRequest(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::Conflict(d)
            | ApiError::PreconditionFailed(d)
            | ApiError::PayloadTooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unprocessable(d)
            | ApiError::Unavailable(d) => d,
        }
    }
}

/// The problem `type` URI of a code (a stable identifier; it is not meant to be fetched).
pub fn problem_type(code: &str) -> String {
    format!("https://problems.reference-services.example/{code}")
}

/// The body of an RFC 9457 problem, as the contract's `Problem` schema describes it.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    /// Identifies the kind of problem, so clients can branch on it without parsing text.
    #[serde(rename = "type")]
    kind: String,
    /// The status's standard phrase.
    title: &'a str,
    /// Repeats the HTTP status, as RFC 9457 recommends.
    status: u16,
    /// What exactly was wrong with this request.
    detail: &'a str,
}

/// Builds a problem+json response; used by [`ApiError`] and by the layers that answer outside of
/// handlers (405, injected faults).
pub fn problem_response(status: StatusCode, code: &str, detail: &str) -> Response {
    let problem = Problem {
        kind: problem_type(code),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
    };
    // Serializing a struct of strings and an integer cannot fail; fall back to a minimal body anyway.
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::debug!(status = %self.status(), detail = self.detail(), "answering with an error");
        }
        problem_response(self.status(), self.code(), self.detail())
    }
}

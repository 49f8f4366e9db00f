//! RFC 9457 problem details: the error body of every REST response this project sends.
//!
//! A [`Problem`] is what a client sees; it never carries internal error text. Gateways define
//! their own documented `type` URIs; generic HTTP errors (unknown route, wrong method, body too
//! large, …) use `about:blank`, whose meaning is the status code itself.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A URI naming the kind of problem; stable and documented, so clients can branch on it.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the kind of problem; the same for every occurrence of one `type`.
    pub title: String,
    /// The HTTP status code, repeated so the body stands on its own.
    pub status: u16,
    /// A human explanation of this occurrence, safe to show (never internal error text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (e.g. a machine-readable `code`, the invalid parameters).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of a documented `type` with its `title`.
    pub fn new(status: StatusCode, type_uri: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            type_uri: type_uri.into(),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// A generic problem whose meaning is its status code (`type` is `about:blank`, `title` the
    /// status's reason phrase).
    pub fn status(status: StatusCode) -> Self {
        Self::new(
            status,
            "about:blank",
            status.canonical_reason().unwrap_or("Error"),
        )
    }

    /// Adds an explanation of this occurrence.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member.
    #[must_use]
    pub fn with_extension(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }

    /// The status code, falling back to 500 for a value outside the valid range.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

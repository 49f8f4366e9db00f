//! Extractors that read a request the way the contract defines it and reject in the contract's
//! problem format instead of axum's plain-text rejections:
//! - [`PathOf`]: path parameters (a bad percent-encoding is a 400).
//! - [`QueryParams`]: the query string as pairs; a parameter named twice is a 400.
//! - [`JsonBody`]: `application/json` only (else 415), valid JSON (else 400); the handler then
//!   checks the value against its schema with [`crate::validate::Fields`].
//! - [`id_header`]: an identity header (`X-User-Id`, `X-Partner-Id`) that must be an id.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Query, Request,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use bytes::Bytes;
use serde_json::Value;

use crate::{problem::ApiError, validate};

/// Path parameters, deserialized like axum's `Path` but rejected as a problem+json 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct PathOf<T>(pub(crate) T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is too large".to_owned())
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    }
}

/// The decoded query string, in order, for handlers to look parameters up by name.
#[derive(Debug, Default)]
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The value of a parameter, `None` if absent; a parameter given twice violates the contract
    /// (each is a single value), so that is a 400.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some((_, value)), None) => Ok(Some(value)),
            (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
                "query parameter {name} must be given at most once"
            ))),
        }
    }

    /// An optional id parameter.
    pub(crate) fn id(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let value = self.get(name)?;
        if let Some(value) = value {
            validate::id(&format!("query parameter {name}"), value)?;
        }
        Ok(value)
    }

    /// The `limit` parameter: an integer from 1 to 100 (`26.0` counts), 20 when absent.
    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        const DEFAULT: usize = 20;
        const MAX: i64 = 100;
        match self.get("limit")? {
            None => Ok(DEFAULT),
            Some(raw) => match validate::query_integer(raw) {
                // In 1..=100, so the conversion cannot fail.
                Some(limit @ 1..=MAX) => Ok(usize::try_from(limit).unwrap_or(DEFAULT)),
                _ => Err(ApiError::bad_request(
                    "query parameter limit must be an integer from 1 to 100",
                )),
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        Ok(QueryParams(pairs))
    }
}

/// A JSON request body, parsed but not yet checked against its schema.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be application/json".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(request, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
            })
    }
}

/// Whether the `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Reads a header that must hold an id when present: `Ok(None)` when absent, 400 when present but
/// not a single valid id.
pub(crate) fn id_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "header {name} must be given at most once"
        )));
    }
    match value.to_str() {
        Ok(s) if validate::is_id(s) => Ok(Some(s.to_owned())),
        _ => Err(ApiError::bad_request(format!(
            "header {name} must match ^[A-Za-z0-9_-]{{1,64}}$"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jsonx"),
        );
        assert!(!is_json(&headers));
    }

    #[test]
    fn id_headers_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(id_header(&headers, "x-user-id"), Ok(None));
        headers.insert("x-user-id", HeaderValue::from_static("u-0001"));
        assert_eq!(
            id_header(&headers, "x-user-id"),
            Ok(Some("u-0001".to_owned()))
        );
        headers.append("x-user-id", HeaderValue::from_static("u-0002"));
        assert!(id_header(&headers, "x-user-id").is_err());
        headers.insert("x-user-id", HeaderValue::from_static("not valid"));
        assert!(id_header(&headers, "x-user-id").is_err());
    }
}

//! How successful responses are built: a JSON body, its `Content-Type`, and the `Cache-Control`
//! the contract requires (`public, max-age=N` on product reads, `private, no-store` on cart and
//! order bodies, `no-store` on the admin API's).

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::problem::ApiError;

/// `Cache-Control` of every cart and order response with a body.
pub(crate) fn private_no_store() -> HeaderValue {
    HeaderValue::from_static("private, no-store")
}

/// `Cache-Control` of admin answers: never kept by anyone.
pub(crate) fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// `Cache-Control` of product reads, cacheable by anyone for `max_age` seconds.
pub(crate) fn public_max_age(max_age_secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={max_age_secs}"))
        .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=0"))
}

/// A JSON response from already serialized bytes.
pub(crate) fn json_bytes(
    status: StatusCode,
    cache_control: HeaderValue,
    body: impl Into<Body>,
) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache_control),
        ],
        body.into(),
    )
        .into_response()
}

/// A JSON response from a value.
pub(crate) fn json<T: Serialize>(
    status: StatusCode,
    cache_control: HeaderValue,
    value: &T,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|error| {
        // Our own types always serialize; if one ever does not, say so without details.
        tracing::error!(%error, "failed to serialize a response");
        ApiError::Unavailable("the response could not be produced".to_owned())
    })?;
    Ok(json_bytes(status, cache_control, body))
}

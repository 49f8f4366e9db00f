//! The middleware stack every gateway router gets, and the one place it is assembled.
//!
//! From the outside in:
//! 1. credentials (`Authorization`, `Cookie`, `X-Api-Key`) are marked sensitive, so no log line
//!    prints them;
//! 2. a request id: the client's `X-Request-Id` when it is sane (≤ 128 characters of
//!    `[A-Za-z0-9._:-]`), otherwise a new UUID; echoed on the response and passed downstream;
//! 3. one `tracing` span per request with method, route template and request id, and one log
//!    line when it finishes (status, latency);
//! 4. a panic in a handler becomes a 500 problem, never a dropped connection;
//! 5. every error response that is not already JSON (axum's plain-text rejections, an empty 405,
//!    the body limit's 413, …) becomes `application/problem+json`, keeping `Allow`,
//!    `Retry-After` and `WWW-Authenticate`;
//! 6. request bodies above `server.max_body_bytes` get 413 (enforced by every body extractor
//!    through axum's `DefaultBodyLimit`; handlers read bodies only through extractors).

use std::any::Any;

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{config::ServerConfig, problem::Problem};

/// The request id header, set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Largest error body read back to turn into a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Wraps `router` in the common middleware, adds the problem+json 404 fallback.
pub fn apply(router: Router, config: &ServerConfig) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-api-key"),
        ]))
        .layer(middleware::map_request(drop_unsafe_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(problem_for_plain_errors))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    router
        .fallback(|| async { Problem::status(StatusCode::NOT_FOUND) })
        .layer(middleware)
}

/// The request id of a request that went through [`apply`]'s middleware.
pub fn request_id(request: &http::request::Parts) -> Option<&str> {
    request
        .headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
}

fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
    )
}

/// Removes a client-supplied request id that is too long or has characters unfit for logs and
/// downstream headers, so a fresh one is generated instead.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let unsafe_id = request
        .headers()
        .get(&REQUEST_ID)
        .is_some_and(|value| !is_sane_request_id(value));
    if unsafe_id {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// Turns a non-JSON error response into a problem document.
async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut problem = Problem::status(status);
    if status.is_client_error() {
        // axum's rejection texts explain what was wrong with the request; they hold no secrets.
        if let Ok(bytes) = axum::body::to_bytes(body, MAX_DETAIL_BYTES).await {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if !text.is_empty() {
                problem = problem.with_detail(text);
            }
        }
    }
    let mut converted = problem.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        for value in parts.headers.get_all(&name) {
            converted.headers_mut().append(name.clone(), value.clone());
        }
    }
    converted
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_for_length_and_characters() {
        assert!(is_sane_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!is_sane_request_id(&HeaderValue::from_static("")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("has space")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("quote\"")));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!is_sane_request_id(
            &HeaderValue::from_str(&long).expect("ascii")
        ));
    }
}

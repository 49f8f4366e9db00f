//! Response rules that hold for every path of every service, applied as layers around the router:
//! - `X-Request-Id` is echoed (or, when the caller sent none, a fresh one is set, so every response
//!   can be correlated with the service's logs).
//! - axum answers a method a path does not list with an empty 405; the contract wants a problem
//!   body, with the `Allow` header kept.
//! - Paths no service route matches get a problem+json 404.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};

use crate::problem::{ApiError, problem_response};

/// The correlation header the contract asks services to echo.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Echoes the caller's `X-Request-Id`, or sets a new UUID when there was none.
pub(crate) async fn echo_request_id(request: Request, next: Next) -> Response {
    let sent = request.headers().get(&X_REQUEST_ID).cloned();
    let mut response = next.run(request).await;
    let value = sent.unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    });
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
}

/// Gives axum's bodiless 405 a problem body, keeping its `Allow` header.
pub(crate) async fn method_not_allowed_body(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let detail = match allow.as_ref().and_then(|value| value.to_str().ok()) {
        Some(methods) => format!("this path allows {methods}"),
        None => "this method is not allowed on this path".to_owned(),
    };
    let mut problem = problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        &detail,
    );
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}

/// The fallback: a path this service does not serve.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such path on this service".to_owned())
}

//! Correct caching and cheap revalidation.
//!
//! - [`Screen`] is what every handler returns: the payload plus who may cache it.
//!   Catalog screens are `public, max-age=<gateway.catalog_max_age>`; anything with user data is
//!   `private, no-store`; a degraded catalog screen is `no-cache` (it may be kept, but must be
//!   revalidated, so the complete screen replaces it as soon as it is back). `Vary` always names
//!   `Accept-Encoding`, plus whatever request headers the screen read (`Authorization`, `DPR`,
//!   `Width`).
//! - [`revalidate`] (middleware) gives every successful GET a strong `ETag`, a hash of its JSON
//!   bytes, and answers `If-None-Match` with a matching tag (weak comparison, RFC 9110 §13.1.2)
//!   with 304 and no body, keeping `ETag`, `Cache-Control` and `Vary`. A [`Screen`] carries the
//!   tag of its own bytes already, so only another body (the OpenAPI document) is hashed here.
//!   The shared compression (`server_kit::compression`), outside this layer, sends a compressed
//!   answer with the tag made weak (`W/"…"`): another representation may not share a strong
//!   tag, and weak comparison still matches it.
//! - [`Rendered`] is a screen already serialized, with its headers and tag: a handler may keep
//!   it and answer it again while its inputs are the same. [`DetailMemo`] keeps the product
//!   detail screens so (the app state holds it; the product screen fills and reads it).

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use server_kit::http::{entity_tag, etag_matches};
use shared_clients::{Derived, Product, ProductId};

use crate::error::ApiError;

/// `Cache-Control` of anything with user data.
const PRIVATE: &str = "private, no-store";

/// `Cache-Control` of a degraded public screen.
const REVALIDATE: &str = "no-cache";

/// Who may cache a screen, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Anyone, for this long.
    Public(Duration),
    /// Only the user's app, and it must not store it.
    Private,
}

/// A screen's payload with its caching rules; serialized as compact JSON.
#[derive(Debug)]
pub struct Screen<T> {
    /// 200, or 201 for a checkout that created its order.
    status: StatusCode,
    /// The payload.
    body: T,
    /// Who may cache it.
    audience: Audience,
    /// Whether parts are missing (see [`Screen::degraded`]).
    degraded: bool,
    /// Request headers the payload depends on, besides `Accept-Encoding`.
    vary: Vec<&'static str>,
}

impl<T: Serialize> Screen<T> {
    /// A catalog screen anyone may cache for `max_age`.
    pub fn public(body: T, max_age: Duration) -> Self {
        Self::new(body, Audience::Public(max_age))
    }

    /// A screen with user data: `private, no-store`.
    pub fn private(body: T) -> Self {
        Self::new(body, Audience::Private)
    }

    fn new(body: T, audience: Audience) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            audience,
            degraded: false,
            vary: Vec::new(),
        }
    }

    /// Marks a screen with missing parts, so public caches revalidate it every time.
    #[must_use]
    pub fn degraded(mut self, degraded: bool) -> Self {
        self.degraded = degraded;
        self
    }

    /// Names a request header the payload depends on.
    #[must_use]
    pub fn vary(mut self, header: &'static str) -> Self {
        self.vary.push(header);
        self
    }

    /// Answers with `status` instead of 200.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl<T: Serialize> Screen<T> {
    /// Serializes the screen once: its bytes, their entity tag and its caching headers.
    pub fn render(self) -> Result<Rendered, ApiError> {
        let bytes = serde_json::to_vec(&self.body)
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let cache_control = match self.audience {
            Audience::Private => HeaderValue::from_static(PRIVATE),
            Audience::Public(_) if self.degraded => HeaderValue::from_static(REVALIDATE),
            Audience::Public(max_age) => {
                HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
                    .unwrap_or_else(|_| HeaderValue::from_static(REVALIDATE))
            }
        };
        let mut vary = String::from("Accept-Encoding");
        for name in &self.vary {
            vary.push_str(", ");
            vary.push_str(name);
        }
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, cache_control);
        if let Ok(vary) = HeaderValue::from_str(&vary) {
            headers.insert(header::VARY, vary);
        }
        headers.insert(header::ETAG, entity_tag(&bytes));
        Ok(Rendered {
            status: self.status,
            headers,
            body: Bytes::from(bytes),
        })
    }
}

impl<T: Serialize> IntoResponse for Screen<T> {
    fn into_response(self) -> Response {
        match self.render() {
            Ok(rendered) => rendered.into_response(),
            Err(error) => error.into_response(),
        }
    }
}

/// A serialized screen: status, headers (`Content-Type`, `Cache-Control`, `Vary`, `ETag`) and
/// body. Cheap to clone (the body is shared), so it can be kept and answered again.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The screen's status.
    pub(crate) status: StatusCode,
    /// Its headers, the entity tag of `body` included.
    pub(crate) headers: HeaderMap,
    /// The JSON bytes.
    pub(crate) body: Bytes,
}

impl IntoResponse for Rendered {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// Rendered product detail screens, by product and image width (`gateway.rendered_details` at
/// most), answered again while the catalog cache serves the very same product value. The screen
/// is public catalog data, the same for every user, so sharing it is safe.
pub type DetailMemo = Derived<(ProductId, u32), Product, Rendered>;

/// Middleware: a strong `ETag` on every successful GET, and 304 for a matching `If-None-Match`.
pub async fn revalidate(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    // Only the header's values are kept (nothing is allocated without one).
    let if_none_match: Vec<HeaderValue> = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .cloned()
        .collect();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    // A screen's tag is over its JSON bytes (an encoded body, which compression outside this
    // layer never makes, would get a tag of its own).
    let tagged = response.headers().contains_key(header::ETAG)
        && !response.headers().contains_key(header::CONTENT_ENCODING);
    let (mut parts, mut body) = response.into_parts();
    if !tagged {
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => return ApiError::Internal(error.to_string()).into_response(),
        };
        parts.headers.insert(header::ETAG, entity_tag(&bytes));
        parts.headers.remove(header::CONTENT_LENGTH);
        body = Body::from(bytes);
    }
    let matched = !if_none_match.is_empty()
        && parts
            .headers
            .get(header::ETAG)
            .is_some_and(|tag| etag_matches(&if_none_match, tag));
    if matched {
        parts.status = StatusCode::NOT_MODIFIED;
        strip_content_headers(&mut parts.headers);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, body)
}

/// A 304 has no body, so headers describing one go.
fn strip_content_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(name);
    }
}

//! How every answer of the endpoint is written: its media type ([`Media`], negotiated from
//! `Accept`) and [`json_response`], which adds the headers every answer carries.
//!
//! Responses are never cached by browsers or proxies (`Cache-Control: no-store`): they may hold
//! the viewer's private data. The exception is an answer the response cache holds
//! ([`shared_response`]): public data, which a `GET` answers with `Cache-Control: public,
//! max-age=N` (N: the freshness its contents have left) and an `ETag`, and `304` to a matching
//! `If-None-Match`. `Vary` names `Accept` and `Authorization` on every answer.

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::response_cache::Stored;

/// `application/graphql-response+json`, the GraphQL-over-HTTP response type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The response type a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/graphql-response+json`: status codes say whether the request ran.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request.
    Json,
}

impl Media {
    /// The status of a request refused before execution (it has no `data`): 400 for
    /// `application/graphql-response+json`, 200 for `application/json`.
    pub fn request_error_status(self) -> StatusCode {
        match self {
            Self::Json => StatusCode::OK,
            Self::GraphqlResponse => StatusCode::BAD_REQUEST,
        }
    }

    /// The `Content-Type` value.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }
}

/// Chooses the response type from `Accept`; `None` when the client accepts neither.
pub fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if accept.is_empty() {
        return Some(Media::Json);
    }
    let mut graphql = false;
    let mut json = false;
    for range in accept.iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            GRAPHQL_RESPONSE_JSON => graphql = true,
            "application/json" | "application/*" | "*/*" => json = true,
            _ => {}
        }
    }
    if graphql {
        Some(Media::GraphqlResponse)
    } else if json {
        Some(Media::Json)
    } else {
        None
    }
}

/// A response with a GraphQL body.
pub fn json_response(media: Media, status: StatusCode, body: &impl serde::Serialize) -> Response {
    bytes_response(
        media,
        status,
        serde_json::to_vec(body).unwrap_or_default().into(),
    )
}

/// A response with a GraphQL body already serialized, never to be cached.
pub fn bytes_response(media: Media, status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static(VARY));
    response
}

/// What every answer varies on.
const VARY: &str = "Accept, Authorization";

/// The answer the response cache holds, `200`: over `GET` public for the freshness it has left,
/// with its `ETag`, and `304` (no body) when `If-None-Match` names that tag; over `POST`, as any
/// other answer (`no-store`).
pub fn shared_response(
    media: Media,
    stored: &Stored,
    via_get: bool,
    request: &HeaderMap,
) -> Response {
    if !via_get {
        return bytes_response(media, StatusCode::OK, stored.body.clone());
    }
    let cache_control = HeaderValue::try_from(format!(
        "public, max-age={}",
        stored.max_age(tokio::time::Instant::now())
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    let not_modified =
        server_kit::http::etag_matches(request.get_all(header::IF_NONE_MATCH), &stored.etag);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (StatusCode::OK, stored.body.clone()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.content_type()),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(header::ETAG, stored.etag.clone());
    headers.insert(header::VARY, HeaderValue::from_static(VARY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_prefers_the_graphql_response_type_and_defaults_to_json() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(negotiate(&accept("application/json")), Some(Media::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(Media::Json));
        assert_eq!(
            negotiate(&accept(
                "application/json, application/graphql-response+json;q=0.9"
            )),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0, application/json"
            )),
            Some(Media::Json)
        );
        assert_eq!(negotiate(&accept("text/plain")), None);
    }
}

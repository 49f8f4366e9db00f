//! The API versions served side by side, and the deprecation notice every `/v1` response carries.
//!
//! `/v1` is deprecated: each of its responses says so with `Deprecation: @<unix-seconds>`
//! (RFC 9745), when it goes away with `Sunset: <HTTP-date>` (RFC 8594), and where to go instead
//! with `Link: </v2/…>; rel="successor-version"` (RFC 5829), the same path under `/v2`. The dates
//! come from `gateway.deprecation`.

use std::time::SystemTime;

use axum::{
    extract::{OriginalUri, Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::Response,
};

use crate::config::DeprecationConfig;

/// The `Deprecation` header (RFC 9745).
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// The `Sunset` header (RFC 8594).
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// A version of the partner API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The older, simpler shape; deprecated.
    V1,
    /// The current, richer shape.
    V2,
}

impl Version {
    /// Both versions, oldest first.
    pub const ALL: [Version; 2] = [Version::V1, Version::V2];

    /// `v1` or `v2`: the path prefix without its slash.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// The precomputed deprecation headers of `/v1`.
#[derive(Debug, Clone)]
pub struct Deprecation {
    /// `@<unix-seconds>` of the deprecation date.
    deprecation: HeaderValue,
    /// The HTTP-date of the sunset.
    sunset: HeaderValue,
}

impl Deprecation {
    /// The headers for the configured dates.
    pub fn new(config: &DeprecationConfig) -> Self {
        let seconds = config
            .v1_deprecated_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Self {
            deprecation: HeaderValue::from(seconds)
                .to_str()
                .ok()
                .and_then(|digits| HeaderValue::from_str(&format!("@{digits}")).ok())
                .unwrap_or_else(|| HeaderValue::from_static("@0")),
            sunset: HeaderValue::from_str(&httpdate::fmt_http_date(config.v1_sunset_at))
                .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
        }
    }
}

/// Middleware of `/v1`: adds `Deprecation`, `Sunset` and the successor `Link` to every response.
pub async fn announce_deprecation(
    State(deprecation): State<Deprecation>,
    request: Request,
    next: Next,
) -> Response {
    // Inside the nested `/v1` router the URI has lost its prefix; the original one has it.
    let successor = match request.extensions().get::<OriginalUri>() {
        Some(OriginalUri(uri)) => successor_link(uri),
        None => successor_link(request.uri()),
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(DEPRECATION, deprecation.deprecation.clone());
    headers.insert(SUNSET, deprecation.sunset.clone());
    if let Some(link) = successor {
        headers.append(header::LINK, link);
    }
    response
}

/// `</v2/same/path?same=query>; rel="successor-version"` for a `/v1` request URI.
fn successor_link(uri: &http::Uri) -> Option<HeaderValue> {
    let path = uri.path().strip_prefix("/v1")?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    HeaderValue::from_str(&format!("</v2{path}{query}>; rel=\"successor-version\"")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_use_the_rfc_forms() {
        let deprecation = Deprecation::new(&DeprecationConfig::default());
        assert_eq!(deprecation.deprecation, "@1767225600");
        assert_eq!(deprecation.sunset, "Thu, 01 Jul 2027 00:00:00 GMT");
    }

    #[test]
    fn the_successor_is_the_same_path_under_v2() {
        let uri: http::Uri = "/v1/products?limit=2".parse().expect("uri");
        assert_eq!(
            successor_link(&uri).expect("link"),
            "</v2/products?limit=2>; rel=\"successor-version\""
        );
    }
}

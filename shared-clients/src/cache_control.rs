//! HTTP caching metadata of catalog responses: `Cache-Control`, `Age` and `ETag`.
//!
//! The catalog service marks its answers `Cache-Control: max-age=N`; the cache keeps an answer for
//! at most that long (and never longer than its configured maximum). Parsing is tolerant: unknown
//! directives are ignored, a malformed `max-age` counts as absent (not cacheable), and a malformed
//! `ETag` is dropped rather than failing the call.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};

/// Longest freshness lifetime accepted from a service (a year), so absurd values cannot overflow.
const MAX_AGE_CAP: u64 = 365 * 24 * 60 * 60;

/// The caching directives of one response, as far as a shared cache cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age`: how long the response is fresh, counted from when it was generated.
    pub max_age: Option<Duration>,
    /// `s-maxage`: like `max-age` but for shared caches (such as ours), taking precedence.
    pub s_maxage: Option<Duration>,
    /// `no-store`: the response must not be stored at all.
    pub no_store: bool,
    /// `no-cache`: the response must be revalidated before every reuse, so it is never fresh.
    pub no_cache: bool,
    /// `private`: the response is for one user only and must not enter a shared cache.
    pub private: bool,
    /// The `Age` header: how long the response already spent in caches on its way to us.
    pub age: Option<Duration>,
}

impl CacheControl {
    /// Reads every `Cache-Control` header and the `Age` header of a response.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                if name.eq_ignore_ascii_case("max-age") {
                    cc.max_age = min_duration(cc.max_age, arg.and_then(parse_seconds));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    cc.s_maxage = min_duration(cc.s_maxage, arg.and_then(parse_seconds));
                } else if name.eq_ignore_ascii_case("no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    cc.private = true;
                }
            }
        }
        cc.age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_seconds(v.trim()));
        cc
    }

    /// How long a shared cache may still serve this response as fresh: `s-maxage` (else
    /// `max-age`) minus `Age`. `None` when it must not be cached at all (`no-store`, `no-cache`,
    /// `private`, no lifetime, or already expired).
    pub fn fresh_for(&self) -> Option<Duration> {
        if self.no_store || self.no_cache || self.private {
            return None;
        }
        let lifetime = self.s_maxage.or(self.max_age)?;
        let remaining = lifetime.saturating_sub(self.age.unwrap_or_default());
        (!remaining.is_zero()).then_some(remaining)
    }
}

/// Parses delta-seconds (digits only), capped at a year.
fn parse_seconds(value: &str) -> Option<Duration> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: a parse failure can only be overflow, which means "very long".
    let secs = value.parse::<u64>().unwrap_or(MAX_AGE_CAP);
    Some(Duration::from_secs(secs.min(MAX_AGE_CAP)))
}

/// The smaller of two optional durations; a repeated directive is read conservatively.
fn min_duration(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An entity tag (`"…"` or `W/"…"`), which identifies one version of a product for conditional
/// revalidation with `If-None-Match`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(HeaderValue);

impl ETag {
    /// Accepts an entity tag as RFC 9110 §8.8.3 defines it: `"…"` or `W/"…"` with visible ASCII
    /// (other than `"`) inside.
    pub fn parse(value: &str) -> Option<Self> {
        let opaque = value.strip_prefix("W/").unwrap_or(value);
        let inner = opaque.strip_prefix('"')?.strip_suffix('"')?;
        if !inner
            .bytes()
            .all(|b| b == b'!' || (b'#'..=b'~').contains(&b))
        {
            return None;
        }
        HeaderValue::from_str(value).ok().map(Self)
    }

    /// Reads a response's `ETag`, dropping a malformed one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
    }

    /// The tag as sent, quotes included.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The tag as a header value, ready to send in `If-None-Match`.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(values: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        CacheControl::from_headers(&headers)
    }

    #[test]
    fn max_age_gives_the_freshness_lifetime() {
        assert_eq!(
            cc(&["public, max-age=30"]).fresh_for(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            cc(&["Max-Age=\"12\""]).fresh_for(),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            cc(&["max-age=30", "s-maxage=5"]).fresh_for(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            cc(&["max-age=30, max-age=10"]).fresh_for(),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn responses_without_a_usable_lifetime_are_not_cacheable() {
        for values in [
            &[][..],
            &["public"],
            &["max-age=0"],
            &["max-age=abc"],
            &["max-age=-1"],
            &["max-age=30, no-store"],
            &["private, no-store"],
            &["max-age=30", "no-cache"],
        ] {
            assert_eq!(cc(values).fresh_for(), None, "{values:?}");
        }
    }

    #[test]
    fn age_is_subtracted_and_huge_values_are_capped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=30"),
        );
        headers.insert(header::AGE, HeaderValue::from_static("25"));
        assert_eq!(
            CacheControl::from_headers(&headers).fresh_for(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).fresh_for(),
            Some(Duration::from_secs(MAX_AGE_CAP))
        );
    }

    #[test]
    fn etags_are_validated() {
        assert_eq!(ETag::parse("\"abc\"").unwrap().as_str(), "\"abc\"");
        assert!(ETag::parse("W/\"abc\"").is_some());
        assert!(ETag::parse("\"\"").is_some());
        assert!(ETag::parse("abc").is_none());
        assert!(ETag::parse("\"a\"b\"").is_none());
        assert!(ETag::parse("\"a b\"").is_none());
    }
}

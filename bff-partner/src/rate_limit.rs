//! Per-key quotas: token buckets, and the `RateLimit-Policy` / `RateLimit` headers.
//!
//! Each key has a bucket of `burst` tokens refilled at `per_second`; a request takes one token or
//! is refused with 429 and `Retry-After` (seconds until a token is back). The limiter is behind the
//! [`RateLimiter`] trait: [`InProcessLimiter`] (the default) keeps buckets in this process, so N
//! replicas allow N times the quota; a shared (e.g. Redis-backed) limiter can implement the same
//! trait later.
//!
//! Headers follow the IETF draft "RateLimit header fields for HTTP"
//! (draft-ietf-httpapi-ratelimit-headers-09), whose fields are structured-field lists:
//!
//! - `RateLimit-Policy: "default";q=20;w=2`: the policy named `default` allows a quota `q` of 20
//!   requests per window `w` of 2 seconds. For a token bucket, `q` is the burst and `w` the time
//!   the bucket takes to refill from empty (`ceil(burst / per_second)`), so the sustained rate is
//!   `q / w`.
//! - `RateLimit: "default";r=7;t=1`: `r` requests remain right now; `t` seconds until the bucket is
//!   full again.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::{sync::Mutex, time::Instant};

use crate::config::RateLimitConfig;

/// The `RateLimit-Policy` header.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The name of the (only) policy in the headers.
const POLICY_NAME: &str = "default";

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// How long until the bucket is full again (the `t` of `RateLimit`).
    pub reset: Duration,
    /// When refused: how long until a token is back (`Retry-After`).
    pub retry_after: Duration,
}

/// Decides whether a key may make another request.
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one token from `key`'s bucket of shape `quota`, or refuses.
    fn acquire<'a>(&'a self, key: &'a str, quota: RateLimitConfig) -> BoxFuture<'a, Decision>;
}

/// Token buckets kept in this process, one per key.
#[derive(Debug, Default)]
pub struct InProcessLimiter {
    /// Key id → bucket. Keys come from configuration, so this map is bounded.
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in the bucket (fractional: refill is continuous).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl InProcessLimiter {
    /// An empty limiter: every key starts with a full bucket.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RateLimiter for InProcessLimiter {
    fn acquire<'a>(&'a self, key: &'a str, quota: RateLimitConfig) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let now = Instant::now();
            let rate = f64::from(quota.per_second.max(1));
            let burst = f64::from(quota.burst.max(1));
            let mut buckets = self.buckets.lock().await;
            let bucket = match buckets.get_mut(key) {
                Some(bucket) => bucket,
                None => buckets.entry(Arc::from(key)).or_insert(Bucket {
                    tokens: burst,
                    updated: now,
                }),
            };
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.updated = now;
            let allowed = bucket.tokens >= 1.0;
            if allowed {
                bucket.tokens -= 1.0;
            }
            let tokens = bucket.tokens;
            Decision {
                allowed,
                remaining: tokens.floor() as u32,
                reset: Duration::from_secs_f64(((burst - tokens) / rate).max(0.0)),
                retry_after: Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.0)),
            }
        })
    }
}

/// The headers this module sets, so that rendering an error keeps them.
pub fn header_names() -> [HeaderName; 2] {
    [RATELIMIT_POLICY, RATELIMIT]
}

/// Whole seconds, rounded up (a client waiting that long is never early).
pub fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` for `quota` and `decision`.
pub fn add_headers(headers: &mut HeaderMap, quota: RateLimitConfig, decision: &Decision) {
    let window = u64::from(quota.burst).div_ceil(u64::from(quota.per_second.max(1)));
    let policy = format!("\"{POLICY_NAME}\";q={};w={window}", quota.burst);
    let current = format!(
        "\"{POLICY_NAME}\";r={};t={}",
        decision.remaining,
        ceil_secs(decision.reset)
    );
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, current)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: RateLimitConfig = RateLimitConfig {
        per_second: 2,
        burst: 3,
    };

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_the_burst_then_refuses() {
        let limiter = InProcessLimiter::new();
        for remaining in [2, 1, 0] {
            let decision = limiter.acquire("k", QUOTA).await;
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = limiter.acquire("k", QUOTA).await;
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.reset, Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_configured_rate() {
        let limiter = InProcessLimiter::new();
        for _ in 0..3 {
            assert!(limiter.acquire("k", QUOTA).await.allowed);
        }
        assert!(!limiter.acquire("k", QUOTA).await.allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.acquire("k", QUOTA).await.allowed);
        assert!(!limiter.acquire("k", QUOTA).await.allowed);
        // Never more than the burst, however long the pause.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limiter.acquire("k", QUOTA).await.remaining, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_buckets() {
        let limiter = InProcessLimiter::new();
        for _ in 0..3 {
            assert!(limiter.acquire("a", QUOTA).await.allowed);
        }
        assert!(!limiter.acquire("a", QUOTA).await.allowed);
        assert!(limiter.acquire("b", QUOTA).await.allowed);
    }

    #[test]
    fn headers_use_the_draft_syntax() {
        let mut headers = HeaderMap::new();
        let decision = Decision {
            allowed: true,
            remaining: 7,
            reset: Duration::from_millis(1200),
            retry_after: Duration::ZERO,
        };
        add_headers(
            &mut headers,
            RateLimitConfig {
                per_second: 10,
                burst: 20,
            },
            &decision,
        );
        assert_eq!(headers[RATELIMIT_POLICY], "\"default\";q=20;w=2");
        assert_eq!(headers[RATELIMIT], "\"default\";r=7;t=2");
    }
}

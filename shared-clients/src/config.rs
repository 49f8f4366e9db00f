//! Configuration of the downstream clients, their resilience and their caches.
//!
//! Every struct here is deserialized from the gateways' layered configuration (defaults, then a
//! TOML file, then `BFF_…` environment variables), under `downstream.` (for example
//! `downstream.product.retry.max_attempts`, or `BFF_DOWNSTREAM__PRODUCT__RETRY__MAX_ATTEMPTS`).
//! Durations are human strings such as `"250ms"`. Every field has a sane default, so an empty
//! configuration works against the reference services on their default ports; `docs/resilience.md`
//! explains the policies these settings tune.
//!
//! Out-of-range numbers are not errors here; they are clamped where they are used (a
//! `max_attempts` of 0 means 1, a `failure_rate` above 1 means 1, a `max_in_flight` of 0 means 1).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the three downstream services live and how to talk to them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamConfig {
    /// The catalog service (products, categories): public, cacheable data.
    pub product: ServiceConfig,
    /// The cart service: private, per-user, frequently written.
    pub cart: ServiceConfig,
    /// The order service: private, per user or per partner.
    pub order: ServiceConfig,
    /// Caching of public catalog data.
    pub cache: CacheConfig,
    /// Caching of private data (carts, orders), per owner.
    pub private_cache: PrivateCacheConfig,
    /// The default time budget of one inbound request for all its downstream calls together
    /// (gateways give each request's [`RequestContext`](crate::RequestContext) this deadline
    /// unless a route says otherwise), so nothing waits on the downstream past it.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        Self {
            product: ServiceConfig::with_url("http://127.0.0.1:9101"),
            cart: ServiceConfig::with_url("http://127.0.0.1:9102"),
            order: ServiceConfig::with_url("http://127.0.0.1:9103"),
            cache: CacheConfig::default(),
            private_cache: PrivateCacheConfig::default(),
            deadline: Duration::from_secs(3),
        }
    }
}

/// How to reach one downstream service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Base URL of the service (`http://host:port`, optionally with a path prefix); the contract's
    /// paths are appended to it.
    pub url: String,
    /// Longest wait for a TCP (and TLS) connection to be established, so a dead host fails fast.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one whole call (request sent to body read). A request's remaining deadline
    /// may shorten it further, never lengthen it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle keep-alive connections kept per host, so bursts reuse warm connections.
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection is kept before it is closed.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Retries of idempotent calls that failed transiently.
    pub retry: RetryConfig,
    /// The circuit breaker that stops calling the service while it is failing.
    pub breaker: BreakerConfig,
    /// The cap on calls in flight, so one slow service cannot take all the gateway's capacity.
    pub bulkhead: BulkheadConfig,
}

impl ServiceConfig {
    /// A service at `url` with every other setting at its default.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            connect_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(90),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            bulkhead: BulkheadConfig::default(),
        }
    }
}

/// Caching of public catalog data (products, categories).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound on how long a product or category list is considered fresh. The effective TTL is
    /// the smaller of this and the service's `Cache-Control: max-age`.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Memory budget of the catalog cache, in bytes (entries are weighed by their approximate size,
    /// not counted), so a burst of large products cannot exhaust memory.
    pub max_bytes: u64,
    /// How long after it stops being fresh an entry is still answered at once, marked stale,
    /// while one background call refreshes it (stale-while-revalidate), so readers never wait for
    /// a refresh. `"0s"` turns this off: an expired entry is then fetched before answering.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// How long after it stops being fresh an entry may still be answered, marked stale, when
    /// fetching a new one fails (error, timeout, open circuit breaker), so a failing service
    /// degrades the answer instead of failing it. `"0s"` turns this off.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// How long a product the service answered 404 for is remembered as absent (negative
    /// caching), so unknown ids cannot be used to hammer the service. `"0s"` turns this off.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// With change events (`shared.redis_url` and `shared.events`): how long a product or the
    /// category list stays fresh while the event consumer is healthy (connected, no more than
    /// `shared.events_max_lag` behind, no gap), because a change evicts it at once. When the
    /// consumer is not healthy, entries fall back to the ordinary freshness (`max_ttl` and the
    /// service's `max-age`) at once. `"0s"` (the default) keeps the ordinary freshness always:
    /// turn it on only when the downstream services publish the events.
    #[serde(with = "humantime_serde")]
    pub event_driven_max_ttl: Duration,
    /// Upper bound on how long a catalog page (a list by category, a search, the first page of
    /// everything, a cursor) is fresh. Kept short: a page changes with any of its products.
    /// With healthy change events it lasts `event_driven_max_ttl`, since an event that touches
    /// one of its products or its category drops it. `"0s"` turns page caching off.
    #[serde(with = "humantime_serde")]
    pub page_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(60),
            max_bytes: 64 * 1024 * 1024,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            event_driven_max_ttl: Duration::ZERO,
            page_ttl: Duration::from_secs(5),
        }
    }
}

/// Caching of private data: carts and orders, only ever per owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateCacheConfig {
    /// How long a user's cart or an owner's orders are reused. Short, because writes made
    /// elsewhere (another gateway replica, the service itself) only show after it; writes through
    /// this gateway invalidate at once. `"0s"` turns private caching off (calls still coalesce).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Memory budget of the private caches, in bytes (shared between carts and orders as
    /// [`CacheConfig::max_bytes`] is between products and categories: a quarter for carts, the
    /// rest for orders).
    pub max_bytes: u64,
}

/// Share of the private cache budget given to carts (orders get the rest).
const CART_BUDGET_DIVISOR: u64 = 4;

impl PrivateCacheConfig {
    /// The carts' share of `max_bytes`.
    pub(crate) fn cart_bytes(&self) -> u64 {
        self.max_bytes / CART_BUDGET_DIVISOR
    }

    /// The orders' share of `max_bytes`: what the carts do not get.
    pub(crate) fn order_bytes(&self) -> u64 {
        self.max_bytes - self.cart_bytes()
    }
}

impl Default for PrivateCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Retries of one service's idempotent calls (`GET`s, and order creation with its idempotency
/// key). Other writes are never retried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most attempts of one call, the first included (`1` turns retries off).
    pub max_attempts: u32,
    /// Upper bound of the (fully jittered) wait before the first retry; doubled for each further
    /// retry, so retries spread out instead of arriving in waves.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any wait before a retry. A `Retry-After` longer than this ends the retries
    /// (the error, carrying it, is returned at once).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retries allowed per request over the budget window, on top of `budget_min_retries`
    /// (`0.1`: at most 10% extra load), so retries cannot multiply load on a struggling service.
    pub budget_ratio: f64,
    /// Retries always allowed per budget window, so a quiet service still gets its retries.
    pub budget_min_retries: u32,
    /// The sliding window over which requests and retries are counted for the budget.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            budget_ratio: 0.1,
            budget_min_retries: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// The circuit breaker of one service: stop calling it while most calls fail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Whether the breaker is in use at all (off: every call goes out).
    pub enabled: bool,
    /// Share of failed calls (timeouts, connection errors, 5xx) over the window that opens the
    /// breaker, from 0 to 1.
    pub failure_rate: f64,
    /// Fewest calls in the window before the failure rate is trusted, so a few early failures
    /// cannot open it.
    pub minimum_calls: u32,
    /// The sliding window over which calls and failures are counted.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long the breaker stays open (calls fail fast without touching the network) before it
    /// lets a single probe call through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }
}

/// The bulkhead of one service: a cap on its calls in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadConfig {
    /// Most calls to the service in flight at once from this process.
    pub max_in_flight: u32,
    /// How long a call beyond the cap may wait for a slot (never past its deadline) before it
    /// fails as unavailable; `"0s"` fails it at once.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_wait: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_survive_a_round_trip_with_durations_as_human_strings() {
        let defaults = DownstreamConfig::default();
        let value = serde_json::to_value(&defaults).unwrap();
        assert_eq!(value["deadline"], "3s");
        assert_eq!(value["product"]["retry"]["initial_backoff"], "25ms");
        assert_eq!(value["product"]["bulkhead"]["max_wait"], "0s");
        assert_eq!(value["cache"]["stale_if_error"], "5m");
        let back: DownstreamConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back, defaults);
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults_and_unknown_keys_are_refused() {
        let config: DownstreamConfig = serde_json::from_value(serde_json::json!({
            "deadline": "800ms",
            "product": { "retry": { "max_attempts": 5 }, "breaker": { "open_for": "30s" } },
            "private_cache": { "ttl": "0s" }
        }))
        .unwrap();
        assert_eq!(config.deadline, Duration::from_millis(800));
        assert_eq!(config.product.retry.max_attempts, 5);
        assert_eq!(config.product.retry.budget_ratio, 0.1);
        assert_eq!(config.product.breaker.open_for, Duration::from_secs(30));
        assert_eq!(
            config.product.url, "",
            "a section set in part starts from its own default"
        );
        assert_eq!(config.cart.breaker, BreakerConfig::default());
        assert!(config.private_cache.ttl.is_zero());

        let typo = serde_json::from_value::<DownstreamConfig>(serde_json::json!({
            "product": { "retry": { "max_attempt": 5 } }
        }));
        assert!(typo.unwrap_err().to_string().contains("max_attempt"));
    }
}

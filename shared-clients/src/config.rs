//! Configuration of the downstream clients and their caches.
//!
//! Every struct here is deserialized from the gateways' layered configuration (defaults, then a
//! TOML file, then `BFF_…` environment variables). Durations are human strings such as `"250ms"`.
//! Every field has a sane default, so an empty configuration works against the reference services
//! on their default ports.

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
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        Self {
            product: ServiceConfig::with_url("http://127.0.0.1:9101"),
            cart: ServiceConfig::with_url("http://127.0.0.1:9102"),
            order: ServiceConfig::with_url("http://127.0.0.1:9103"),
            cache: CacheConfig::default(),
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(60),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

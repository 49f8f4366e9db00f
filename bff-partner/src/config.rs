//! The `[gateway]` section of `bff-partner`'s configuration: API keys, quotas, paging limits,
//! the deprecation dates of `/v1` and webhooks (`[gateway.webhooks]`).
//!
//! Set in a TOML file (`--config`) or with `BFF_GATEWAY__…` environment variables. Every field has
//! a default, so the gateway starts with no configuration at all, but then no key is accepted:
//! every API request is a 401 until at least one `[[gateway.keys]]` entry is configured.
//!
//! [`PartnerConfig`] is this gateway's [`GatewayConfig`]: it listens on `127.0.0.1:8082` (metrics
//! on `127.0.0.1:9182`) unless `[server]` says otherwise, and is validated at start-up (and by
//! `--check-config`) with [`PartnerConfig::check`].
//!
//! ```toml
//! [[gateway.keys]]
//! sha256 = "d73eda733856f614802361e2d170bbb4f59f866657ffe9255558bbcf7f68a1ea"
//! partner_id = "partner-acme"
//! scopes = ["catalog:read", "orders:read", "orders:write"]
//! rate_limit = { per_second = 10, burst = 20 }
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use server_kit::{ConfigError, GatewayConfig};
use shared_clients::{OrderPlacementConfig, PartnerId};

/// The SHA-256 of `key` as 64 lowercase hex digits: what `[[gateway.keys]] sha256` holds.
pub use server_kit::auth::hash_api_key as hash_key;

/// Largest page the downstream contract serves; no configured page size may exceed it.
pub const DOWNSTREAM_MAX_PAGE: u32 = 100;

/// Settings of `bff-partner` alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerConfig {
    /// The API keys partners authenticate with, as SHA-256 hashes (the keys themselves are never
    /// stored in configuration, so a leaked configuration file does not leak keys).
    pub keys: Vec<KeyConfig>,
    /// The quota of a key that does not set its own `rate_limit`.
    pub default_rate_limit: RateLimitConfig,
    /// How many requests with an unknown key one client address may make before all its requests
    /// are refused (429, before their key is looked at), so keys cannot be guessed at speed.
    pub auth_failure_limit: AuthFailureLimitConfig,
    /// The request header holding the client's address when a proxy in front of the gateway sets
    /// it, e.g. `x-forwarded-for`: the rightmost address in it (the one the nearest proxy saw) is
    /// the client's, for `auth_failure_limit`. Unset (the default), the client is the peer of the
    /// TCP connection. Set it only behind a proxy that sets (or appends to) this header on every
    /// request: otherwise clients choose their own address.
    pub client_ip_header: Option<String>,
    /// How many items a list returns.
    pub paging: PagingConfig,
    /// When `/v1` was deprecated and when it goes away, announced on every `/v1` response.
    pub deprecation: DeprecationConfig,
    /// The `Retry-After` sent with a 503 when the downstream service did not say how long to wait,
    /// so partners back off instead of retrying at once.
    #[serde(with = "humantime_serde")]
    pub unavailable_retry_after: Duration,
    /// How many product bodies (one per product and API version) are kept serialized, to be
    /// answered again while the catalog cache serves the same product; `0` keeps none.
    pub rendered_products: u64,
    /// How order creations are remembered by `Idempotency-Key`, so a retry gets the same order:
    /// for how long, and within how many bytes and entries (the same settings as bff-web's and
    /// bff-mobile's `checkout`).
    pub checkout: OrderPlacementConfig,
    /// Webhooks (`/v2/webhooks`): partners' endpoints and how deliveries to them are made.
    pub webhooks: WebhooksConfig,
}

impl Default for PartnerConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            default_rate_limit: RateLimitConfig::default(),
            auth_failure_limit: AuthFailureLimitConfig::default(),
            client_ip_header: None,
            paging: PagingConfig::default(),
            deprecation: DeprecationConfig::default(),
            unavailable_retry_after: Duration::from_secs(5),
            rendered_products: 10_000,
            checkout: OrderPlacementConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

/// One partner API key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The SHA-256 of the key, as 64 lowercase or uppercase hex digits (see [`hash_key`]); the
    /// key itself appears nowhere in configuration. The hash
    /// of a well-known or very short key is refused ([`crate::weak_keys`]): make keys random, at
    /// least 128 bits (`openssl rand -base64 32`).
    pub sha256: String,
    /// The partner the key acts for: its orders are the only ones it sees, and orders it creates
    /// carry this partner id.
    pub partner_id: PartnerId,
    /// What the key may do (`catalog:read`, `orders:read`, `orders:write`); anything else is a 403.
    pub scopes: Vec<Scope>,
    /// This key's quota; `default_rate_limit` when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// Something a key may be allowed to do; each operation requires one
/// ([`Authorized`](crate::auth::Authorized)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read products and categories.
    #[serde(rename = "catalog:read")]
    CatalogRead,
    /// List and read the partner's own orders.
    #[serde(rename = "orders:read")]
    OrdersRead,
    /// Create orders for the partner.
    #[serde(rename = "orders:write")]
    OrdersWrite,
    /// Register, change, test and delete the partner's webhook endpoints, see their secrets
    /// (once) and their deliveries, and redeliver (`/v2/webhooks`).
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
}

impl Scope {
    /// The scope's name as configured and documented, e.g. `orders:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatalogRead => "catalog:read",
            Self::OrdersRead => "orders:read",
            Self::OrdersWrite => "orders:write",
            Self::WebhooksManage => "webhooks:manage",
        }
    }
}

/// Webhooks (`[gateway.webhooks]`): the management API's rules and the delivery engine's
/// settings. Webhooks need Redis (`shared.redis_url`): without it the API answers 501.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Whether the webhook API is served (with Redis); `false` answers 501 as without Redis.
    pub enabled: bool,
    /// Accept `http://` and loopback target URLs (never private or link-local ones). For
    /// development and tests only: in production a partner could make the gateway call
    /// services on its own host.
    pub allow_insecure_targets: bool,
    /// How long a rotated-out secret keeps signing deliveries alongside the new one, so a
    /// partner can switch its verifier without missing one.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// Most endpoints one partner may register (more is a 422).
    pub max_endpoints_per_partner: u32,
    /// Deliveries kept per endpoint (the newest), for the delivery log and redelivery.
    pub deliveries_kept: usize,
    /// Longest wait for the DNS answer when a target URL's host is checked.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// The delays between delivery attempts (`["5s", "1m", …]`), each jittered by ±20 %;
    /// after the last, the delivery has failed.
    pub schedule: crate::webhooks::schedule::Schedule,
    /// Longest wait for a receiver's answer to one attempt.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long a replica holds a delivery it is attempting before another may take it over
    /// (longer than `delivery_timeout`).
    #[serde(with = "humantime_serde")]
    pub delivery_lease: Duration,
    /// Attempts in flight to one endpoint at most, so one slow partner cannot hold back others.
    pub max_concurrency_per_endpoint: u32,
    /// Bytes of a receiver's answer read (and kept, truncated, as the attempt's error).
    pub response_body_limit: usize,
    /// How long an order event may stay read but not acknowledged by a replica (one that
    /// crashed, or could not handle it yet) before another replica takes it over (`XAUTOCLAIM`);
    /// replicas look for such events every half of it, at most every 30 s. Shorter recovers
    /// sooner; longer than handling an event takes (an order read), so a live replica keeps its
    /// own (taking one over is harmless: it makes no second delivery).
    #[serde(with = "humantime_serde")]
    pub event_claim_idle: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_insecure_targets: false,
            secret_overlap: Duration::from_secs(24 * 3600),
            max_endpoints_per_partner: 20,
            deliveries_kept: crate::webhooks::store::DEFAULT_DELIVERIES_KEPT,
            resolve_timeout: Duration::from_secs(2),
            schedule: crate::webhooks::schedule::Schedule::default(),
            delivery_timeout: Duration::from_secs(10),
            delivery_lease: Duration::from_secs(60),
            max_concurrency_per_endpoint: 4,
            response_body_limit: 4 * 1024,
            event_claim_idle: Duration::from_secs(60),
        }
    }
}

impl WebhooksConfig {
    /// Range checks, naming the setting at fault.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, message: &str| {
            Err(ConfigError::invalid(
                format!("gateway.webhooks.{setting}"),
                message.to_owned(),
            ))
        };
        if self.secret_overlap > Duration::from_secs(7 * 24 * 3600) {
            return invalid("secret_overlap", "must be at most 7 days");
        }
        if !(1..=1000).contains(&self.max_endpoints_per_partner) {
            return invalid("max_endpoints_per_partner", "must be from 1 to 1000");
        }
        if !(1..=100_000).contains(&self.deliveries_kept) {
            return invalid("deliveries_kept", "must be from 1 to 100000");
        }
        if self.resolve_timeout.is_zero() || self.resolve_timeout > Duration::from_secs(30) {
            return invalid("resolve_timeout", "must be above 0 and at most 30s");
        }
        if self.delivery_timeout.is_zero() || self.delivery_timeout > Duration::from_secs(60) {
            return invalid("delivery_timeout", "must be above 0 and at most 60s");
        }
        if self.delivery_lease <= self.delivery_timeout {
            return invalid(
                "delivery_lease",
                "must be longer than gateway.webhooks.delivery_timeout",
            );
        }
        if !(1..=64).contains(&self.max_concurrency_per_endpoint) {
            return invalid("max_concurrency_per_endpoint", "must be from 1 to 64");
        }
        if !(1..=1024 * 1024).contains(&self.response_body_limit) {
            return invalid("response_body_limit", "must be from 1 byte to 1 MiB");
        }
        if self.event_claim_idle < Duration::from_secs(1)
            || self.event_claim_idle > Duration::from_secs(3600)
        {
            return invalid("event_claim_idle", "must be from 1s to 1h");
        }
        Ok(())
    }
}

/// A token-bucket quota: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The sustained rate: tokens added to the bucket per second.
    pub per_second: u32,
    /// The bucket's size: how many requests may arrive at once after a quiet period.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 10,
            burst: 20,
        }
    }
}

/// The budget of failed authentications of one client address (see
/// [`crate::auth_throttle`]): `burst` unknown keys at once, then one more per `refill_every`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailureLimitConfig {
    /// How many requests with an unknown key an address may make in a row; the next request from
    /// it (whatever its key) is refused with 429 until one failure is forgiven.
    pub burst: u32,
    /// One failure is forgiven per this much time: after the burst, an address can try one key
    /// per `refill_every` at most.
    #[serde(with = "humantime_serde")]
    pub refill_every: Duration,
    /// Most client addresses tracked at once, which bounds the limiter's memory (about 64 bytes
    /// each); beyond it, the addresses closest to being forgiven are forgotten first.
    pub max_addresses: usize,
}

impl Default for AuthFailureLimitConfig {
    fn default() -> Self {
        Self {
            burst: 20,
            refill_every: Duration::from_secs(1),
            max_addresses: 10_000,
        }
    }
}

/// Page sizes of the list endpoints.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PagingConfig {
    /// The page size when a request has no `limit`.
    pub default_limit: u32,
    /// The largest `limit` accepted (at most 100, the downstream maximum); above it is a 400.
    pub max_limit: u32,
}

impl Default for PagingConfig {
    fn default() -> Self {
        Self {
            default_limit: 20,
            max_limit: DOWNSTREAM_MAX_PAGE,
        }
    }
}

/// The dates announced on every `/v1` response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeprecationConfig {
    /// When `/v1` was (or will be) deprecated, as RFC 3339; sent as `Deprecation: @<unix-seconds>`
    /// (RFC 9745).
    #[serde(with = "humantime_serde")]
    pub v1_deprecated_at: SystemTime,
    /// When `/v1` stops being served, as RFC 3339; sent as `Sunset: <HTTP-date>` (RFC 8594).
    #[serde(with = "humantime_serde")]
    pub v1_sunset_at: SystemTime,
}

impl Default for DeprecationConfig {
    fn default() -> Self {
        Self {
            // 2026-01-01T00:00:00Z
            v1_deprecated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            // 2027-07-01T00:00:00Z
            v1_sunset_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_814_400_000),
        }
    }
}

impl GatewayConfig for PartnerConfig {
    const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082);
    const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9182);

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }
}

impl PartnerConfig {
    /// Range and consistency checks the types cannot express, naming the setting at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_rate("gateway.default_rate_limit", &self.default_rate_limit)?;
        let failures = &self.auth_failure_limit;
        if failures.burst == 0 || failures.max_addresses == 0 {
            return Err(ConfigError::invalid(
                "gateway.auth_failure_limit",
                "burst and max_addresses must be greater than 0",
            ));
        }
        if failures.refill_every.is_zero() || failures.refill_every > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "gateway.auth_failure_limit.refill_every",
                "must be above 0 and at most 1h",
            ));
        }
        if let Some(header) = &self.client_ip_header
            && http::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(
                "gateway.client_ip_header",
                "must be a header name, e.g. `x-forwarded-for`",
            ));
        }
        for (index, key) in self.keys.iter().enumerate() {
            let setting = format!("gateway.keys[{index}]");
            let hex_ok =
                key.sha256.len() == 64 && key.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                return Err(ConfigError::invalid(
                    format!("{setting}.sha256"),
                    "must be 64 hex digits (the SHA-256 of the key)",
                ));
            }
            let duplicate = self.keys[..index]
                .iter()
                .any(|other| other.sha256.eq_ignore_ascii_case(&key.sha256));
            if duplicate {
                return Err(ConfigError::invalid(
                    format!("{setting}.sha256"),
                    "the same key is configured twice",
                ));
            }
            if let Some(rate) = &key.rate_limit {
                check_rate(&format!("{setting}.rate_limit"), rate)?;
            }
        }
        let hashes = self.keys.iter().map(|key| key.sha256.as_str());
        if let Some(index) = crate::weak_keys::first_weak(hashes) {
            return Err(ConfigError::invalid(
                format!("gateway.keys[{index}].sha256"),
                "is the SHA-256 of a well-known or very short key, which anyone could guess; use \
                 a random key of at least 128 bits (e.g. `openssl rand -base64 32`) and configure \
                 its hash (`printf %s \"$KEY\" | sha256sum`)",
            ));
        }
        let paging = &self.paging;
        if paging.max_limit == 0 || paging.max_limit > DOWNSTREAM_MAX_PAGE {
            return Err(ConfigError::invalid(
                "gateway.paging.max_limit",
                format!("must be between 1 and {DOWNSTREAM_MAX_PAGE}"),
            ));
        }
        if paging.default_limit == 0 || paging.default_limit > paging.max_limit {
            return Err(ConfigError::invalid(
                "gateway.paging.default_limit",
                "must be between 1 and gateway.paging.max_limit",
            ));
        }
        if self.deprecation.v1_sunset_at < self.deprecation.v1_deprecated_at {
            return Err(ConfigError::invalid(
                "gateway.deprecation.v1_sunset_at",
                "must not be before gateway.deprecation.v1_deprecated_at",
            ));
        }
        if self.deprecation.v1_deprecated_at < SystemTime::UNIX_EPOCH {
            return Err(ConfigError::invalid(
                "gateway.deprecation.v1_deprecated_at",
                "must be after 1970",
            ));
        }
        self.webhooks.check()
    }
}

fn check_rate(setting: &str, rate: &RateLimitConfig) -> Result<(), ConfigError> {
    if rate.per_second == 0 || rate.burst == 0 {
        return Err(ConfigError::invalid(
            setting,
            "per_second and burst must be greater than 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use server_kit::config::load_from;

    use super::*;
    use crate::PartnerSettings;

    /// A key as `openssl rand -base64 32` makes one.
    const STRONG_KEY: &str = "q3Jc9nY0b1mXoQe7Rk2WvT5sLz8HdUaF4pGiNyBtC6E=";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_hash_to_lowercase_sha256_hex() {
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn scopes_use_their_documented_names() {
        let scopes: Vec<Scope> = serde_json::from_str(
            r#"["catalog:read","orders:read","orders:write","webhooks:manage"]"#,
        )
        .expect("valid scopes");
        assert_eq!(
            scopes,
            [
                Scope::CatalogRead,
                Scope::OrdersRead,
                Scope::OrdersWrite,
                Scope::WebhooksManage
            ]
        );
        assert!(serde_json::from_str::<Scope>(r#""orders:delete""#).is_err());
    }

    #[test]
    fn defaults_need_no_configuration_and_accept_no_key() {
        let settings: PartnerSettings = load_from(None, env(&[])).expect("defaults load");
        assert!(settings.gateway.keys.is_empty());
        assert_eq!(settings.gateway.paging.max_limit, 100);
        assert_eq!(settings.gateway.default_rate_limit.burst, 20);
        assert_eq!(settings.gateway.checkout.max_bytes, 64 * 1024 * 1024);
        let failures = settings.gateway.auth_failure_limit;
        assert_eq!(failures.burst, 20);
        assert_eq!(failures.refill_every, Duration::from_secs(1));
        assert_eq!(failures.max_addresses, 10_000);
        assert_eq!(settings.gateway.client_ip_header, None);
        let webhooks = &settings.gateway.webhooks;
        assert!(webhooks.enabled);
        assert!(!webhooks.allow_insecure_targets);
        assert_eq!(webhooks.secret_overlap, Duration::from_secs(24 * 3600));
        assert_eq!(webhooks.max_endpoints_per_partner, 20);
        assert_eq!(webhooks.delivery_timeout, Duration::from_secs(10));
        assert_eq!(webhooks.max_concurrency_per_endpoint, 4);
        assert_eq!(webhooks.response_body_limit, 4096);
        assert_eq!(webhooks.schedule.max_attempts(), 8);
        assert_eq!(webhooks.event_claim_idle, Duration::from_secs(60));
    }

    #[test]
    fn webhook_settings_are_read_and_checked_naming_the_setting() {
        let settings: PartnerSettings = load_from(
            None,
            env(&[
                ("BFF_GATEWAY__WEBHOOKS__SCHEDULE", r#"["1s","2m"]"#),
                ("BFF_GATEWAY__WEBHOOKS__SECRET_OVERLAP", "1h"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.gateway.webhooks.schedule.max_attempts(), 3);
        assert_eq!(
            settings.gateway.webhooks.secret_overlap,
            Duration::from_secs(3600)
        );
        for (name, value, setting) in [
            ("BFF_GATEWAY__WEBHOOKS__SCHEDULE", "[]", "schedule"),
            (
                "BFF_GATEWAY__WEBHOOKS__MAX_ENDPOINTS_PER_PARTNER",
                "0",
                "gateway.webhooks.max_endpoints_per_partner",
            ),
            (
                "BFF_GATEWAY__WEBHOOKS__DELIVERY_LEASE",
                "5s",
                "gateway.webhooks.delivery_lease",
            ),
            (
                "BFF_GATEWAY__WEBHOOKS__RESPONSE_BODY_LIMIT",
                "0",
                "gateway.webhooks.response_body_limit",
            ),
            (
                "BFF_GATEWAY__WEBHOOKS__EVENT_CLAIM_IDLE",
                "500ms",
                "gateway.webhooks.event_claim_idle",
            ),
        ] {
            let error =
                load_from::<PartnerConfig>(None, env(&[(name, value)])).expect_err("refused");
            assert!(error.to_string().contains(setting), "{error}");
        }
    }

    #[test]
    fn a_key_can_be_configured_from_one_environment_variable() {
        let hash = hash_key(STRONG_KEY);
        let keys = format!(
            r#"[{{sha256="{hash}",partner_id="partner-acme",scopes=["catalog:read","orders:read","orders:write"],rate_limit={{per_second=5,burst=10}}}}]"#
        );
        let settings: PartnerSettings = load_from(
            None,
            env(&[
                ("BFF_GATEWAY__KEYS", &keys),
                (
                    "BFF_GATEWAY__DEPRECATION__V1_SUNSET_AT",
                    "2030-01-01T00:00:00Z",
                ),
            ]),
        )
        .expect("loads");
        let key = &settings.gateway.keys[0];
        assert_eq!(key.sha256, hash);
        assert_eq!(key.partner_id.as_str(), "partner-acme");
        assert_eq!(key.scopes.len(), 3);
        assert_eq!(key.scopes[2], Scope::OrdersWrite);
        assert_eq!(key.rate_limit.map(|r| r.burst), Some(10));
        assert_eq!(
            settings.gateway.deprecation.v1_sunset_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
        );
    }

    #[test]
    fn bad_keys_and_limits_are_refused_naming_the_setting() {
        for (name, value, setting) in [
            (
                "BFF_GATEWAY__KEYS",
                r#"[{sha256="abc",partner_id="p",scopes=[]}]"#,
                "gateway.keys[0].sha256",
            ),
            (
                "BFF_GATEWAY__PAGING__MAX_LIMIT",
                "500",
                "gateway.paging.max_limit",
            ),
            (
                "BFF_GATEWAY__DEFAULT_RATE_LIMIT__BURST",
                "0",
                "gateway.default_rate_limit",
            ),
            (
                "BFF_GATEWAY__AUTH_FAILURE_LIMIT__BURST",
                "0",
                "gateway.auth_failure_limit",
            ),
            (
                "BFF_GATEWAY__AUTH_FAILURE_LIMIT__REFILL_EVERY",
                "0s",
                "gateway.auth_failure_limit.refill_every",
            ),
            (
                "BFF_GATEWAY__CLIENT_IP_HEADER",
                "x forwarded for",
                "gateway.client_ip_header",
            ),
            (
                "BFF_GATEWAY__KEYS",
                r#"[{sha256="x",partner_id="p",scopes=["orders:delete"]}]"#,
                "orders:delete",
            ),
        ] {
            let error =
                load_from::<PartnerConfig>(None, env(&[(name, value)])).expect_err("refused");
            assert!(error.to_string().contains(setting), "{error}");
        }
    }

    #[test]
    fn hashes_of_well_known_or_very_short_keys_are_refused_naming_the_setting() {
        for weak in [
            "",
            "a",
            "Z",
            "~",
            "ab",
            "9!",
            "abc",
            "k3y",
            "007",
            "1234",
            "password",
            "Password",
            "PASSWORD",
            "password1",
            "changeme",
            "secret",
            "test",
            "dev-key",
            "apikey",
            "api-key",
            "123456",
            "letmein",
            "admin",
            "Admin123",
        ] {
            let keys = format!(
                r#"[{{sha256="{}",partner_id="partner-acme",scopes=["catalog:read"]}},{{sha256="{}",partner_id="partner-acme",scopes=["catalog:read"]}}]"#,
                hash_key(STRONG_KEY),
                hash_key(weak).to_ascii_uppercase(),
            );
            let error = load_from::<PartnerConfig>(None, env(&[("BFF_GATEWAY__KEYS", &keys)]))
                .expect_err("a weak key is refused");
            let message = error.to_string();
            assert!(
                message.contains("gateway.keys[1].sha256"),
                "{weak:?}: {message}"
            );
            assert!(message.contains("128 bits"), "{message}");
            assert!(message.contains("openssl rand -base64 32"), "{message}");
        }
    }

    #[test]
    fn random_keys_are_accepted() {
        let keys: Vec<String> = [
            STRONG_KEY,
            "bffdev_3f1c0e6a9b2d4c8e8f7a6b5c4d3e2f10",
            "9b1f3c2e8d4a7f60c5e1b9d8a2f4c6e0",
        ]
        .iter()
        .map(|key| {
            format!(
                r#"{{sha256="{}",partner_id="partner-acme",scopes=[]}}"#,
                hash_key(key)
            )
        })
        .collect();
        let keys = format!("[{}]", keys.join(","));
        let settings: PartnerSettings =
            load_from(None, env(&[("BFF_GATEWAY__KEYS", &keys)])).expect("accepted");
        assert_eq!(settings.gateway.keys.len(), 3);
        // How long the check takes is measured by `cargo bench`, not asserted here (a loaded
        // machine would fail a timing assertion, not the code).
    }
}

//! What every live transport shares (bff-web's GraphQL subscriptions over WebSocket and SSE,
//! bff-mobile's order stream): the `gateway.subscriptions` settings ([`LiveConfig`]) and the
//! limits on open streams ([`LiveLimiter`]).
//!
//! A *stream* is one long-lived client connection that pushes values: a WebSocket (which may carry
//! several subscriptions) or one SSE response. Limits, each refused clearly (WebSocket close code
//! 4429 or `429` problem+json, before anything is streamed) and counted in
//! `bff_live_refusals_total{reason}`:
//! - `max_streams_per_address` open streams per client address;
//! - `max_streams_per_user` open streams per signed-in user (a WebSocket counts once its token is
//!   known, at `connection_init`);
//! - `max_streams` open streams on this replica;
//! - `max_subscriptions` subscriptions on this replica (all streams), and
//!   `max_subscriptions_per_connection` on one WebSocket.
//!
//! A client that stops reading is disconnected once a push waits longer than `send_timeout`:
//! nothing is buffered for it beyond one message (values are produced when the client can take
//! them, and a subscriber that wakes late sees only the latest change).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use shared_clients::UserId;

use crate::{ConfigError, metrics::Metrics, problem::Problem};

/// `gateway.subscriptions`: live updates and their limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Whether live streams are served at all.
    pub enabled: bool,
    /// Without change events (no Redis, or the stream's consumer down), how often a followed
    /// resource is read from its service to find changes: one read per resource per interval,
    /// whatever the number of subscribers.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often an idle stream gets a keep-alive (a `ping` on a WebSocket, a comment on SSE), so
    /// that proxies keep it open and a dead client is noticed.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How long a new WebSocket may take to send `connection_init` (close 4408 after it).
    #[serde(with = "humantime_serde")]
    pub init_timeout: Duration,
    /// How long one push may wait for the client to take it; a client slower than this is
    /// disconnected (so a client that stops reading costs one buffered message, not more).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Most open streams on this replica. Each holds a client connection, so keep it below
    /// `server.max_connections` (10,000 by default), leaving room for ordinary requests.
    pub max_streams: usize,
    /// Most open streams per client address.
    pub max_streams_per_address: usize,
    /// Most open streams per signed-in user.
    pub max_streams_per_user: usize,
    /// Most subscriptions on this replica, across all streams.
    pub max_subscriptions: usize,
    /// Most subscriptions on one WebSocket at once.
    pub max_subscriptions_per_connection: usize,
    /// The header a trusted proxy in front writes the client's address to (e.g.
    /// `x-forwarded-for`): its rightmost address (the one the nearest proxy saw) counts for
    /// `max_streams_per_address`. Unset, the TCP peer counts, which behind a load balancer is the
    /// balancer's address for every client. Set it only behind a proxy that always sets or
    /// appends it, or clients choose their own address.
    pub client_ip_header: Option<String>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_secs(2),
            keep_alive: Duration::from_secs(15),
            init_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(10),
            max_streams: 8_000,
            max_streams_per_address: 256,
            max_streams_per_user: 16,
            max_subscriptions: 100_000,
            max_subscriptions_per_connection: 32,
            client_ip_header: None,
        }
    }
}

impl LiveConfig {
    /// Valid settings that are unwise with `server`: streams that could take every connection.
    pub fn warnings(&self, prefix: &str, server: &crate::ServerConfig) -> Vec<String> {
        if self.enabled && self.max_streams >= server.max_connections {
            vec![format!(
                "{prefix}.max_streams ({}) is not below server.max_connections ({}): open \
                 streams could take every connection, leaving none for ordinary requests",
                self.max_streams, server.max_connections
            )]
        } else {
            Vec::new()
        }
    }

    /// Checks beyond the types; `prefix` is where the section sits (`gateway.subscriptions`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("keep_alive", self.keep_alive),
            ("init_timeout", self.init_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        for (name, value) in [
            ("max_streams", self.max_streams),
            ("max_streams_per_address", self.max_streams_per_address),
            ("max_streams_per_user", self.max_streams_per_user),
            ("max_subscriptions", self.max_subscriptions),
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{name}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(name) = &self.client_ip_header
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.client_ip_header"),
                format!("`{name}` is not a header name"),
            ));
        }
        Ok(())
    }

    /// The address a stream counts for: the rightmost address of `client_ip_header` when it is
    /// set and holds one, else `peer` (IPv4-mapped IPv6 addresses as IPv4).
    pub fn client_address(&self, headers: &http::HeaderMap, peer: IpAddr) -> IpAddr {
        self.client_ip_header
            .as_deref()
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|address| address.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer)
            .to_canonical()
    }
}

/// The `type` of the problem a refused stream gets.
pub const PROBLEM_TYPE: &str = "https://bff.example.com/problems/too-many-streams";

/// Why a stream or subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `max_streams`.
    #[error("This server has as many open streams as it serves; retry later or elsewhere.")]
    Streams,
    /// `max_streams_per_address`.
    #[error("Too many open streams from this address.")]
    PerAddress,
    /// `max_streams_per_user`.
    #[error("Too many open streams for this user.")]
    PerUser,
    /// `max_subscriptions`.
    #[error("This server has as many subscriptions as it serves; retry later or elsewhere.")]
    Subscriptions,
    /// `max_subscriptions_per_connection`.
    #[error("Too many subscriptions on this connection.")]
    PerConnection,
}

impl Refusal {
    /// Every refusal, in the order of the variants.
    pub const ALL: [Self; 5] = [
        Self::Streams,
        Self::PerAddress,
        Self::PerUser,
        Self::Subscriptions,
        Self::PerConnection,
    ];

    /// Shows `bff_live_refusals_total` of every reason in `metrics` from the start, at zero, so
    /// that the alert on refusals (`deploy/prometheus`) watches a series that exists.
    pub fn show_from_start(metrics: &Metrics) {
        metrics.record(|| {
            for refusal in Self::ALL {
                metrics::counter!("bff_live_refusals_total", "reason" => refusal.reason())
                    .increment(0);
            }
        });
    }

    /// The label of `bff_live_refusals_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Streams => "streams",
            Refusal::PerAddress => "per_address",
            Refusal::PerUser => "per_user",
            Refusal::Subscriptions => "subscriptions",
            Refusal::PerConnection => "per_connection",
        }
    }

    /// The error code clients see (GraphQL `extensions.code`, problem `code`).
    pub fn code(self) -> &'static str {
        "TOO_MANY_SUBSCRIPTIONS"
    }

    /// Counts the refusal.
    pub fn count(self, metrics: Option<&Metrics>) {
        if let Some(metrics) = metrics {
            metrics.record(|| {
                metrics::counter!("bff_live_refusals_total", "reason" => self.reason())
                    .increment(1);
            });
        }
    }
}

impl IntoResponse for Refusal {
    /// `429` problem+json with `Retry-After: 5`.
    fn into_response(self) -> Response {
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            PROBLEM_TYPE,
            "Too many live streams or subscriptions",
        )
        .with_detail(self.to_string())
        .with_extension("code", self.code().into())
        .with_extension("limit", self.reason().into())
        .into_response();
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        );
        response
    }
}

/// Counts open streams and subscriptions against the limits. Cheap to clone (one per gateway).
#[derive(Clone)]
pub struct LiveLimiter {
    /// Shared by every clone.
    inner: Arc<LimiterInner>,
}

/// The parts of [`LiveLimiter`].
struct LimiterInner {
    /// The limits.
    config: LiveConfig,
    /// The counts.
    counts: Mutex<Counts>,
}

/// What is open now.
#[derive(Default)]
struct Counts {
    /// Streams.
    streams: usize,
    /// Streams per client address.
    per_address: HashMap<IpAddr, usize>,
    /// Streams per user.
    per_user: HashMap<UserId, usize>,
    /// Subscriptions.
    subscriptions: usize,
}

impl LiveLimiter {
    /// A limiter for `config`'s limits.
    pub fn new(config: &LiveConfig) -> Self {
        Self {
            inner: Arc::new(LimiterInner {
                config: config.clone(),
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    /// Opens a stream from `address` (for `user`, when already known), or says which limit
    /// refuses it. The stream counts until the permit is dropped.
    pub fn open(&self, address: IpAddr, user: Option<&UserId>) -> Result<StreamPermit, Refusal> {
        let config = &self.inner.config;
        let mut counts = self.lock();
        if counts.streams >= config.max_streams {
            return Err(Refusal::Streams);
        }
        if counts.per_address.get(&address).copied().unwrap_or(0) >= config.max_streams_per_address
        {
            return Err(Refusal::PerAddress);
        }
        if let Some(user) = user
            && counts.per_user.get(user).copied().unwrap_or(0) >= config.max_streams_per_user
        {
            return Err(Refusal::PerUser);
        }
        counts.streams += 1;
        *counts.per_address.entry(address).or_default() += 1;
        if let Some(user) = user {
            *counts.per_user.entry(user.clone()).or_default() += 1;
        }
        Ok(StreamPermit {
            limiter: self.clone(),
            address,
            user: user.cloned(),
        })
    }

    /// Counts one more subscription on this replica, or refuses it.
    pub fn subscribe(&self) -> Result<SubscriptionPermit, Refusal> {
        let mut counts = self.lock();
        if counts.subscriptions >= self.inner.config.max_subscriptions {
            return Err(Refusal::Subscriptions);
        }
        counts.subscriptions += 1;
        Ok(SubscriptionPermit {
            limiter: self.clone(),
        })
    }

    /// Open streams and subscriptions now.
    pub fn open_now(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.streams, counts.subscriptions)
    }

    /// Locks the counts (recovering them if a holder panicked: each update is one step).
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for LiveLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLimiter")
            .field("open", &self.open_now())
            .finish_non_exhaustive()
    }
}

/// One open stream; dropping it frees its place.
pub struct StreamPermit {
    /// Where it counts.
    limiter: LiveLimiter,
    /// Its client's address.
    address: IpAddr,
    /// Its user, once known.
    user: Option<UserId>,
}

impl StreamPermit {
    /// Counts the stream for `user` too (a WebSocket learns its user at `connection_init`), or
    /// refuses it when that user has as many streams as allowed. Once only: a permit already
    /// counted for a user keeps that user.
    pub fn set_user(&mut self, user: &UserId) -> Result<(), Refusal> {
        if self.user.is_some() {
            return Ok(());
        }
        let mut counts = self.limiter.lock();
        let open = counts.per_user.get(user).copied().unwrap_or(0);
        if open >= self.limiter.inner.config.max_streams_per_user {
            return Err(Refusal::PerUser);
        }
        *counts.per_user.entry(user.clone()).or_default() += 1;
        drop(counts);
        self.user = Some(user.clone());
        Ok(())
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        counts.streams = counts.streams.saturating_sub(1);
        decrement(&mut counts.per_address, &self.address);
        if let Some(user) = &self.user {
            decrement(&mut counts.per_user, user);
        }
    }
}

/// One subscription; dropping it frees its place.
pub struct SubscriptionPermit {
    /// Where it counts.
    limiter: LiveLimiter,
}

impl Drop for SubscriptionPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        counts.subscriptions = counts.subscriptions.saturating_sub(1);
    }
}

/// Takes one from `key`'s count, forgetting the key at zero (so the maps hold only what is open).
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LiveLimiter {
        LiveLimiter::new(&LiveConfig {
            max_streams: 4,
            max_streams_per_address: 3,
            max_streams_per_user: 2,
            max_subscriptions: 2,
            ..LiveConfig::default()
        })
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn each_limit_refuses_and_frees_its_place() {
        let limiter = limiter();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.open(a, Some(&user("u-1"))).unwrap();
        let mut second = limiter.open(a, None).unwrap();
        second.set_user(&user("u-1")).unwrap();
        // u-1 has two: a third is refused, at open or at init.
        assert_eq!(
            limiter.open(b, Some(&user("u-1"))).err(),
            Some(Refusal::PerUser)
        );
        let mut third = limiter.open(a, None).unwrap();
        assert_eq!(third.set_user(&user("u-1")), Err(Refusal::PerUser));
        // Address a has three.
        assert_eq!(limiter.open(a, None).err(), Some(Refusal::PerAddress));
        let _fourth = limiter.open(b, None).unwrap();
        assert_eq!(limiter.open(b, None).err(), Some(Refusal::Streams));
        drop(first);
        let _again = limiter.open(b, Some(&user("u-1"))).unwrap();
        drop((second, third));
        assert_eq!(limiter.open_now().0, 2);

        let one = limiter.subscribe().unwrap();
        let _two = limiter.subscribe().unwrap();
        assert_eq!(limiter.subscribe().err(), Some(Refusal::Subscriptions));
        drop(one);
        assert!(limiter.subscribe().is_ok());
    }

    #[test]
    fn the_client_address_is_the_proxys_rightmost_only_when_configured() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.append("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(LiveConfig::default().client_address(&headers, peer), peer);
        let behind_proxy = LiveConfig {
            client_ip_header: Some("x-forwarded-for".to_owned()),
            ..LiveConfig::default()
        };
        assert_eq!(
            behind_proxy.client_address(&headers, peer),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(behind_proxy.client_address(&headers, peer), peer);
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let config = LiveConfig {
            max_streams_per_user: 0,
            ..LiveConfig::default()
        };
        let err = config.validate("gateway.subscriptions").unwrap_err();
        assert!(
            err.to_string()
                .contains("gateway.subscriptions.max_streams_per_user")
        );
    }
}

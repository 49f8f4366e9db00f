//! State shared by every replica of every gateway, in Redis (optional).
//!
//! Policy:
//! - **Optional, never required to start or to answer.** Without a Redis (`shared.redis_url`,
//!   `shared.redis_cluster_nodes` or `shared.redis_sentinel`) a [`SharedState`] is *disabled*:
//!   every feature that would use it keeps its in-process behaviour. With one, the connection
//!   is made lazily (nothing is contacted at start-up) and re-made by itself after a failure.
//! - **One server, a Redis Cluster or Sentinel.** The crate's own clients route commands (slot
//!   map, `MOVED`/`ASK`, topology refresh) and follow a failover; see `redis_link`.
//! - **Bounded.** Every command is cut off after `shared.command_timeout` (tens of
//!   milliseconds): a slow Redis costs a request at most that, once. After a failure that says
//!   Redis is unreachable (connection refused or dropped, or three timeouts in a row), every
//!   feature skips Redis for
//!   `shared.retry_after` and uses its in-process behaviour at once, so an outage does not add the
//!   timeout to every request; the first command after that window tries again, and the features
//!   are shared again as soon as one succeeds.
//! - **Counted and logged, not failed.** Each failure is counted by operation
//!   (`bff_redis_errors_total{op}`), each time a feature fell back by feature
//!   (`bff_redis_fallback_total{feature}`), and logged at most once a minute.
//! - **Keys carry hash tags.** [`SharedState::key`] builds `<prefix>{<tag>}:<rest>`: every key a
//!   script or pipeline touches together shares the tag (e.g. one owner's generation and checkout
//!   records: `bff:{u:42}:gen`, `bff:{u:42}:checkout:…`), so they land in one slot of a Redis
//!   Cluster and no command is ever cross-slot.
//! - **Garbage is a miss.** A value of the wrong type or shape under one of our keys is an error
//!   of that one command (counted), which its feature treats as a miss, never as a failed request.
//!
//! - **Traced as client spans, within a trace only.** While traces are exported, each command,
//!   pipeline or script run for a recorded span is a `redis` client span under it, with the
//!   OpenTelemetry database attributes (`db.system.name = redis`, the command as
//!   `db.operation.name`: `GET`, `PIPELINE`, `EVALSHA`, …); commands run outside any trace (the
//!   background loops' polling) make no span, which would be a trace of its own every time.
//!
//! `docs/scale-out.md` describes each shared feature and what happens when Redis fails.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::{FromRedisValue, RedisError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::error::BuildError;
use crate::redis_link::{Endpoint, Link, Timeouts};

/// Commands timing out in a row before every feature skips Redis for `retry_after` (a refused or
/// dropped connection makes them skip it at once).
const TIMEOUTS_BEFORE_BACK_OFF: u64 = 3;

/// How often, at most, a Redis failure is logged (every failure is counted).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Settings of the shared state (`[shared]`, env `BFF_SHARED__…`; the URL also `BFF_REDIS_URL`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Where Redis is: `redis://[:password@]host:port/db`, or `rediss://…` for TLS. Unset (the
    /// default): nothing is shared, every feature works in this process alone. Its password is
    /// never printed.
    #[serde(deserialize_with = "RedisUrl::deserialize_optional")]
    pub redis_url: Option<RedisUrl>,
    /// The seed nodes of a Redis Cluster (env `BFF_REDIS_CLUSTER_NODES`, comma-separated:
    /// `redis://10.0.0.1:6379,redis://10.0.0.2:6379`); any of them will do to learn the rest.
    /// Empty (the default): no cluster. At most one of `redis_url`, `redis_cluster_nodes` and
    /// `redis_sentinel` is set.
    #[serde(deserialize_with = "RedisUrl::deserialize_list")]
    pub redis_cluster_nodes: Vec<RedisUrl>,
    /// A Redis whose master is named by Sentinel (failover followed by itself). Unset (the
    /// default): no Sentinel.
    pub redis_sentinel: Option<SentinelConfig>,
    /// Whether `/ready` fails while Redis does not answer (off by default: the gateways work
    /// without it, only less shared).
    pub redis_required: bool,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis command; past it the feature falls back to its in-process
    /// behaviour for this request.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait for a connection to Redis to be made.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// After Redis was found unreachable, how long every feature uses its in-process behaviour
    /// without trying Redis.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Multiplexed connections to Redis (each pipelines every concurrent command); requests are
    /// spread over them. 1 is enough for most; 2–4 help a gateway on many cores.
    pub connections: usize,
    /// How many replicas of this gateway run. Used only when Redis is unreachable: a partner's
    /// quota is then enforced per replica, divided by this number, so the total stays near the
    /// configured one.
    pub replicas: u32,
    /// Whether products and categories are kept in Redis too (a second level behind each
    /// replica's own cache), so a replica's miss is often another's hit and a new replica starts
    /// warm.
    pub catalog_l2: bool,
    /// The largest catalog entry (serialized) kept in Redis; larger ones stay in the replica.
    pub l2_max_entry_bytes: usize,
    /// How long a replica that fetches a missing catalog key holds its lease (the others wait for
    /// its value rather than calling the product service too). Past it, if no value appeared, the
    /// others fetch themselves (the holder is presumed dead).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Longest a replica waits for another's leased fetch before it calls the service itself.
    #[serde(with = "humantime_serde")]
    pub lease_wait: Duration,
    /// Whether every replica reads the downstream services' change events (Redis Streams, see
    /// `contracts/events.asyncapi.yaml`) and drops what they make stale at once.
    pub events: bool,
    /// Prefix of the event streams (`<prefix>catalog`, `…cart`, `…order`), as the services use.
    pub events_stream_prefix: String,
    /// How long one read of a stream waits for new events (`XREAD BLOCK`).
    #[serde(with = "humantime_serde")]
    pub events_block: Duration,
    /// How far behind (the age of the last event when it was applied) the catalog consumer may
    /// be and still count as healthy for `downstream.cache.event_driven_max_ttl`.
    #[serde(with = "humantime_serde")]
    pub events_max_lag: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            redis_sentinel: None,
            redis_required: false,
            key_prefix: "bff:".to_owned(),
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            connections: 2,
            replicas: 1,
            catalog_l2: true,
            l2_max_entry_bytes: 256 * 1024,
            lease_ttl: Duration::from_secs(2),
            lease_wait: Duration::from_millis(500),
            events: true,
            events_stream_prefix: "bff:events:".to_owned(),
            events_block: Duration::from_secs(1),
            events_max_lag: Duration::from_secs(2),
        }
    }
}

impl SharedConfig {
    /// Checks beyond the types: a URL Redis' client accepts, a usable timeout, at least one
    /// connection and replica. Names the setting in the error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let topologies = usize::from(self.redis_url.is_some())
            + usize::from(!self.redis_cluster_nodes.is_empty())
            + usize::from(self.redis_sentinel.is_some());
        if topologies > 1 {
            return Err((
                "shared.redis_url",
                "set only one of shared.redis_url, shared.redis_cluster_nodes and \
                 shared.redis_sentinel"
                    .to_owned(),
            ));
        }
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.0.as_str()).map_err(|err| {
                (
                    "shared.redis_url",
                    format!("not a Redis URL ({})", err.category()),
                )
            })?;
        }
        for url in &self.redis_cluster_nodes {
            redis::Client::open(url.0.as_str()).map_err(|err| {
                (
                    "shared.redis_cluster_nodes",
                    format!("{url} is not a Redis URL ({})", err.category()),
                )
            })?;
        }
        if let Some(sentinel) = &self.redis_sentinel {
            if sentinel.master_name.trim().is_empty() {
                return Err((
                    "shared.redis_sentinel.master_name",
                    "must name the master the sentinels watch".to_owned(),
                ));
            }
            if sentinel.sentinels.is_empty() {
                return Err((
                    "shared.redis_sentinel.sentinels",
                    "must list at least one sentinel".to_owned(),
                ));
            }
            for url in &sentinel.sentinels {
                redis::Client::open(url.0.as_str()).map_err(|err| {
                    (
                        "shared.redis_sentinel.sentinels",
                        format!("{url} is not a Redis URL ({})", err.category()),
                    )
                })?;
            }
        }
        if self.command_timeout.is_zero() || self.command_timeout > Duration::from_secs(10) {
            return Err((
                "shared.command_timeout",
                "must be more than 0 and at most 10s".to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(("shared.connect_timeout", "must be more than 0".to_owned()));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(("shared.connections", "must be from 1 to 64".to_owned()));
        }
        if self.lease_ttl.is_zero() || self.lease_wait > self.lease_ttl.saturating_mul(4) {
            return Err((
                "shared.lease_ttl",
                "must be more than 0 (and lease_wait at most 4 times it)".to_owned(),
            ));
        }
        if self.events_block.is_zero() || self.events_block > Duration::from_secs(60) {
            return Err((
                "shared.events_block",
                "must be more than 0 and at most 60s".to_owned(),
            ));
        }
        if self.replicas == 0 {
            return Err(("shared.replicas", "must be at least 1".to_owned()));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err((
                "shared.key_prefix",
                "must not contain { or } (they delimit a key's hash tag)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A Redis behind Sentinel (`[shared.redis_sentinel]`, env `BFF_SHARED__REDIS_SENTINEL__…`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels watch the master under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The sentinels' URLs (comma-separated in the environment); a password here is the
    /// sentinels' own. Commands then go to the master they name.
    #[serde(deserialize_with = "RedisUrl::deserialize_list")]
    pub sentinels: Vec<RedisUrl>,
}

/// A Redis URL. `Debug`, `Display` and `Serialize` hide its password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password replaced by `[redacted]`.
    fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return "[redacted]".to_owned();
        };
        let authority_end = url[scheme_end..]
            .find('/')
            .map_or(url.len(), |i| scheme_end + i);
        match url[scheme_end..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &url[scheme_end..scheme_end + at];
                let user = userinfo.split(':').next().unwrap_or_default();
                format!(
                    "{}{user}:[redacted]{}",
                    &url[..scheme_end],
                    &url[scheme_end + at..]
                )
            }
            None => url.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Deserializes an optional URL where an empty string means unset (`BFF_REDIS_URL=`).
impl RedisUrl {
    /// For `#[serde(deserialize_with)]`: `""` is `None`.
    pub fn deserialize_optional<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Self>, D::Error> {
        let value = Option::<String>::deserialize(deserializer)?;
        Ok(value.filter(|url| !url.trim().is_empty()).map(Self))
    }

    /// For `#[serde(deserialize_with)]`: a list of URLs, or one string of them separated by
    /// commas (how an environment variable gives them); blanks are skipped.
    pub fn deserialize_list<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Self>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum List {
            Many(Vec<String>),
            One(String),
        }
        let urls = match Option::<List>::deserialize(deserializer)? {
            None => Vec::new(),
            Some(List::Many(urls)) => urls,
            Some(List::One(text)) => text.split(',').map(str::to_owned).collect(),
        };
        Ok(urls
            .into_iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .map(Self)
            .collect())
    }
}

/// The catalog second level's settings (see [`SharedConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2Settings {
    /// `shared.l2_max_entry_bytes`.
    pub(crate) max_entry_bytes: usize,
    /// `shared.lease_ttl`.
    pub(crate) lease_ttl: Duration,
    /// `shared.lease_wait`.
    pub(crate) lease_wait: Duration,
}

/// What a shared feature is, in `bff_redis_fallback_total{feature}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Per-owner generations: read-your-writes across replicas.
    Generations,
    /// The catalog's second-level cache.
    CatalogL2,
    /// Leases that coalesce catalog misses across replicas.
    Leases,
    /// Partner quotas.
    Quotas,
    /// Checkout attempt records.
    Idempotency,
    /// Automatic persisted queries.
    Apq,
    /// Readiness checks of Redis itself.
    Ready,
    /// Partner webhooks: endpoints, deliveries and their due queue (bff-partner). Redis is
    /// their only store: without it the webhook API answers that it is unavailable.
    Webhooks,
}

impl Feature {
    /// Every feature, in the order of the fallback counters.
    pub const ALL: [Feature; 8] = [
        Feature::Generations,
        Feature::CatalogL2,
        Feature::Leases,
        Feature::Quotas,
        Feature::Idempotency,
        Feature::Apq,
        Feature::Ready,
        Feature::Webhooks,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Generations => "generations",
            Feature::CatalogL2 => "catalog_l2",
            Feature::Leases => "leases",
            Feature::Quotas => "quotas",
            Feature::Idempotency => "idempotency",
            Feature::Apq => "apq",
            Feature::Ready => "ready",
            Feature::Webhooks => "webhooks",
        }
    }

    /// The slot of this feature's counter.
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a shared operation did not happen; the caller falls back to its in-process behaviour.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SharedError {
    /// No Redis is configured.
    #[error("no Redis is configured")]
    Disabled,
    /// Redis was found unreachable a moment ago; it is not tried again until `retry_after`.
    #[error("Redis is unavailable (backing off)")]
    BackingOff,
    /// The command did not complete within `shared.command_timeout`.
    #[error("Redis command timed out")]
    Timeout,
    /// The connection failed or Redis answered an error (wrong type, script error, …).
    #[error("Redis error: {0}")]
    Redis(String),
}

/// The shared state: a handle on Redis, or nothing. Cheap to clone.
#[derive(Clone, Default)]
pub struct SharedState {
    /// `None` when no Redis is configured.
    inner: Option<Arc<Inner>>,
}

/// The parts of an enabled [`SharedState`].
struct Inner {
    /// Connections, used in turn.
    connections: Vec<Link>,
    /// Which connection the next command uses.
    next: AtomicUsize,
    /// `shared.key_prefix`.
    prefix: String,
    /// `shared.command_timeout`.
    timeout: Duration,
    /// `shared.retry_after`.
    retry_after: Duration,
    /// `shared.redis_required`.
    required: bool,
    /// `shared.replicas`.
    replicas: u32,
    /// The catalog's second level, when on.
    l2: Option<L2Settings>,
    /// Where the connections were made to (the event consumer makes its own there).
    endpoint: Endpoint,
    /// The event consumer's settings, when `shared.events` is on.
    events: Option<crate::events::ConsumerSettings>,
    /// Origin of the millisecond clocks below.
    epoch: Instant,
    /// Until when (ms since `epoch`) Redis is not tried; 0: try.
    down_until_ms: AtomicU64,
    /// When (ms since `epoch`, plus one) a failure was last logged; 0: never.
    logged_at_ms: AtomicU64,
    /// Failures by operation.
    errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Fallbacks by feature, in [`Feature::ALL`] order.
    fallbacks: [AtomicU64; Feature::ALL.len()],
    /// Commands sent (successful or not).
    commands: AtomicU64,
    /// Commands that timed out in a row.
    timeouts: AtomicU64,
}

impl SharedState {
    /// Nothing shared: every feature works in this process alone.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// The shared state `config` describes: disabled without a URL, else a handle whose
    /// connections are made on first use (nothing is contacted here). Must be called within a
    /// tokio runtime. Fails only on a URL the Redis client does not accept.
    pub fn connect(config: &SharedConfig) -> Result<Self, BuildError> {
        let timeouts = Timeouts {
            connect: config.connect_timeout,
            response: config.command_timeout,
            max_delay: config.retry_after,
        };
        let (setting, endpoint) = if let Some(url) = &config.redis_url {
            ("shared.redis_url", Endpoint::standalone(url.0.as_str()))
        } else if !config.redis_cluster_nodes.is_empty() {
            let urls: Vec<&str> = config
                .redis_cluster_nodes
                .iter()
                .map(|url| url.0.as_str())
                .collect();
            (
                "shared.redis_cluster_nodes",
                Endpoint::cluster(&urls, timeouts),
            )
        } else if let Some(sentinel) = &config.redis_sentinel {
            let urls: Vec<&str> = sentinel
                .sentinels
                .iter()
                .map(|url| url.0.as_str())
                .collect();
            (
                "shared.redis_sentinel",
                Endpoint::sentinel(&sentinel.master_name, &urls),
            )
        } else {
            return Ok(Self::disabled());
        };
        let failed = |err: RedisError| BuildError::Shared(format!("{setting}: {}", err.category()));
        let endpoint = endpoint.map_err(failed)?;
        let connections = (0..config.connections.max(1))
            .map(|_| endpoint.shared(timeouts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                connections,
                next: AtomicUsize::new(0),
                prefix: config.key_prefix.clone(),
                timeout: config.command_timeout,
                retry_after: config.retry_after,
                required: config.redis_required,
                replicas: config.replicas.max(1),
                endpoint,
                events: config.events.then(|| crate::events::ConsumerSettings {
                    prefix: config.events_stream_prefix.clone(),
                    block: config.events_block,
                    connect_timeout: config.connect_timeout,
                    max_lag: config.events_max_lag,
                }),
                l2: config.catalog_l2.then_some(L2Settings {
                    max_entry_bytes: config.l2_max_entry_bytes,
                    lease_ttl: config.lease_ttl,
                    lease_wait: config.lease_wait,
                }),
                epoch: Instant::now(),
                down_until_ms: AtomicU64::new(0),
                logged_at_ms: AtomicU64::new(0),
                errors: std::sync::Mutex::new(std::collections::BTreeMap::new()),
                fallbacks: std::array::from_fn(|_| AtomicU64::new(0)),
                commands: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
            })),
        })
    }

    /// Whether a Redis is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The catalog's second-level settings, when Redis is configured and `catalog_l2` is on.
    pub(crate) fn l2_settings(&self) -> Option<L2Settings> {
        self.inner.as_ref().and_then(|inner| inner.l2)
    }

    /// Where Redis is and the event consumer's settings, when events are on.
    pub(crate) fn events(&self) -> Option<(&Endpoint, &crate::events::ConsumerSettings)> {
        let inner = self.inner.as_ref()?;
        Some((&inner.endpoint, inner.events.as_ref()?))
    }

    /// Whether `/ready` requires Redis.
    pub fn is_required(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.required)
    }

    /// `shared.replicas` (1 when disabled).
    pub fn replicas(&self) -> u32 {
        self.inner.as_ref().map_or(1, |inner| inner.replicas)
    }

    /// A key: the prefix, `{tag}` (the hash tag that decides the key's slot in a cluster) and
    /// `rest`, e.g. `key("u:42", "gen")` is `bff:{u:42}:gen`.
    ///
    /// ```
    /// use shared_clients::shared_state::{SharedConfig, SharedState, RedisUrl};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let config = SharedConfig { redis_url: Some(RedisUrl::new("redis://127.0.0.1:1")), ..Default::default() };
    /// let shared = SharedState::connect(&config).unwrap();
    /// assert_eq!(shared.key("u:42", "gen"), "bff:{u:42}:gen");
    /// # });
    /// ```
    pub fn key(&self, tag: &str, rest: &str) -> String {
        let prefix = self
            .inner
            .as_ref()
            .map_or("", |inner| inner.prefix.as_str());
        let mut key = String::with_capacity(prefix.len() + tag.len() + rest.len() + 3);
        key.push_str(prefix);
        key.push('{');
        key.push_str(tag);
        key.push('}');
        if !rest.is_empty() {
            key.push(':');
            key.push_str(rest);
        }
        key
    }

    /// Runs one command, bounded by the command timeout.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        feature: Feature,
        cmd: &redis::Cmd,
    ) -> Result<T, SharedError> {
        let name = match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => std::str::from_utf8(name).unwrap_or("COMMAND"),
            _ => "COMMAND",
        };
        self.run(op, feature, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .instrument(command_span(name, op))
        .await
    }

    /// Runs a pipeline (or a `MULTI` transaction), bounded by the command timeout.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        op: &'static str,
        feature: Feature,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedError> {
        self.run(op, feature, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .instrument(command_span("PIPELINE", op))
        .await
    }

    /// Runs a Lua script by `EVALSHA` (loading it first when Redis does not know it), bounded by
    /// the command timeout.
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        feature: Feature,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        self.run(op, feature, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .instrument(command_span("EVALSHA", op))
        .await
    }

    /// Runs independent commands, each on its `key` (or on keys of that key's hash tag), in as
    /// few round trips as the topology allows (one per slot on a cluster, where a pipeline may
    /// not span slots), bounded by the command timeout. The answers in order.
    pub(crate) async fn batch(
        &self,
        op: &'static str,
        feature: Feature,
        commands: &[(String, redis::Cmd)],
    ) -> Result<Vec<redis::Value>, SharedError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.run(
            op,
            feature,
            |mut conn| async move { conn.batch(commands).await },
        )
        .await
    }

    /// Deletes every key matching the glob `pattern` (`SCAN` then `UNLINK`, a thousand at a
    /// time), for the rare case where a whole kind of shared entry can no longer be vouched for.
    /// Best effort: stops at the first failure (counted).
    pub(crate) async fn delete_matching(&self, feature: Feature, pattern: &str) {
        // On a cluster, each master holds its own keys: each is scanned in turn.
        let Ok(nodes) = self
            .run("scan", feature, |mut conn| async move {
                conn.key_holders().await
            })
            .await
        else {
            return;
        };
        for node in &nodes {
            if !self.delete_matching_on(feature, node, pattern).await {
                return;
            }
        }
    }

    /// [`SharedState::delete_matching`] on one node; `false` after a failure.
    async fn delete_matching_on(
        &self,
        feature: Feature,
        node: &crate::redis_link::Node,
        pattern: &str,
    ) -> bool {
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let scanned: Result<(u64, Vec<String>), _> = self
                .run("scan", feature, |mut conn| async move {
                    let value = conn.query_on(node, &scan).await?;
                    redis::from_redis_value(value).map_err(RedisError::from)
                })
                .await;
            let Ok((next, keys)) = scanned else {
                return false;
            };
            if !keys.is_empty() {
                // One key per command: the keys have different hash tags, and a multi-key
                // command across slots is refused by a Redis Cluster.
                let unlinks: Vec<(String, redis::Cmd)> = keys
                    .into_iter()
                    .map(|key| {
                        let unlink = redis::cmd("UNLINK").arg(&key).clone();
                        (key, unlink)
                    })
                    .collect();
                if self.batch("unlink", feature, &unlinks).await.is_err() {
                    return false;
                }
            }
            if next == 0 {
                return true;
            }
            cursor = next;
        }
    }

    /// Asks Redis `PING` (for `/ready`).
    pub async fn ping(&self) -> Result<(), SharedError> {
        let _: String = self
            .query("ping", Feature::Ready, &redis::cmd("PING"))
            .await?;
        Ok(())
    }

    /// Counts that `feature` used its in-process behaviour for a reason the caller found (a
    /// value under our key that is not ours, say); the errors of [`SharedState::query`] and its
    /// siblings are counted already.
    pub fn count_fallback(&self, feature: Feature) {
        if let Some(inner) = &self.inner {
            inner.fallbacks[feature.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a value under our key that could not be read (wrong shape), as an error of `op`,
    /// and the fallback of `feature`.
    pub fn count_garbage(&self, op: &'static str, feature: Feature) {
        if let Some(inner) = &self.inner {
            inner.count_error(op);
            inner.fallbacks[feature.index()].fetch_add(1, Ordering::Relaxed);
            inner.log(
                op,
                "a value under a shared key has the wrong shape; treated as a miss",
            );
        }
    }

    /// Whether Redis is currently being skipped after a failure.
    pub fn is_backing_off(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.backing_off())
    }

    /// Runs `f` on a connection, with the timeout, the back-off and the counting.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        feature: Feature,
        f: F,
    ) -> Result<T, SharedError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(inner) = &self.inner else {
            return Err(SharedError::Disabled);
        };
        if inner.backing_off() {
            inner.fallbacks[feature.index()].fetch_add(1, Ordering::Relaxed);
            return Err(SharedError::BackingOff);
        }
        let index = inner.next.fetch_add(1, Ordering::Relaxed) % inner.connections.len();
        let conn = inner.connections[index].clone();
        inner.commands.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(inner.timeout, f(conn)).await;
        let error = match outcome {
            Ok(Ok(value)) => {
                inner.timeouts.store(0, Ordering::Relaxed);
                return Ok(value);
            }
            Ok(Err(err)) => {
                let unreachable = err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_unrecoverable_error();
                if unreachable {
                    inner.back_off();
                }
                inner.log(op, &err.to_string());
                SharedError::Redis(err.category().to_owned())
            }
            Err(_) => {
                // One slow command (a large read, a scheduling hiccup) is not an outage: only
                // several in a row make every feature skip Redis.
                if inner.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_BEFORE_BACK_OFF {
                    inner.back_off();
                }
                inner.log(op, "command timed out");
                SharedError::Timeout
            }
        };
        inner.count_error(op);
        inner.fallbacks[feature.index()].fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    /// Counters for `/metrics`; `None` when disabled.
    pub fn metrics(&self) -> Option<RedisMetricsSnapshot> {
        let inner = self.inner.as_ref()?;
        let errors = inner
            .errors
            .lock()
            .map(|errors| errors.iter().map(|(op, n)| (*op, *n)).collect())
            .unwrap_or_default();
        Some(RedisMetricsSnapshot {
            commands: inner.commands.load(Ordering::Relaxed),
            errors,
            fallbacks: Feature::ALL
                .iter()
                .map(|f| {
                    (
                        f.as_str(),
                        inner.fallbacks[f.index()].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            backing_off: inner.backing_off(),
        })
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Milliseconds since `epoch`.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis is being skipped.
    fn backing_off(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// Skips Redis for `retry_after`.
    fn back_off(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX));
        self.down_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Counts a failure of `op`.
    fn count_error(&self, op: &'static str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(op).or_default() += 1;
        }
    }

    /// Logs a failure, at most once per [`LOG_EVERY`].
    fn log(&self, op: &'static str, what: &str) {
        let now = self.now_ms().saturating_add(1);
        let last = self.logged_at_ms.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return;
        }
        if self
            .logged_at_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                op,
                error = what,
                "Redis failed; shared features use their in-process behaviour until it answers \
                 (logged at most once a minute; see bff_redis_errors_total)"
            );
        }
    }
}

/// The span of one command (`operation`: `GET`, `PIPELINE`, `EVALSHA`, …) for `op`, a child
/// of the current span; a disabled span when no trace is being recorded (see the module docs).
fn command_span(operation: &str, op: &'static str) -> tracing::Span {
    if crate::trace_context::current_span_context().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "redis",
        "otel.name" = operation,
        "otel.kind" = "client",
        "db.system.name" = "redis",
        "db.operation.name" = operation,
        "bff.redis.op" = op,
    )
}

/// Counters of the shared state, for `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RedisMetricsSnapshot {
    /// Commands sent (pipelines and scripts count one).
    pub commands: u64,
    /// Failures by operation (`bff_redis_errors_total{op}`).
    pub errors: Vec<(&'static str, u64)>,
    /// Fallbacks to in-process behaviour by feature (`bff_redis_fallback_total{feature}`).
    pub fallbacks: Vec<(&'static str, u64)>,
    /// Whether Redis is being skipped right now after a failure.
    pub backing_off: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_never_shows_its_password() {
        let url = RedisUrl::new("redis://default:s3cret@cache.internal:6380/2");
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("cache.internal:6380/2"), "{shown}");
        }
        let no_user = RedisUrl::new("rediss://:pw@host:6379");
        assert_eq!(no_user.to_string(), "rediss://:[redacted]@host:6379");
        let plain = RedisUrl::new("redis://127.0.0.1:6379/0");
        assert_eq!(plain.to_string(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn settings_are_checked() {
        let ok = SharedConfig::default();
        assert!(ok.validate().is_ok());
        let bad_url = SharedConfig {
            redis_url: Some(RedisUrl::new("http://nope")),
            ..SharedConfig::default()
        };
        assert_eq!(bad_url.validate().unwrap_err().0, "shared.redis_url");
        let zero = SharedConfig {
            command_timeout: Duration::ZERO,
            ..SharedConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "shared.command_timeout");
        let braces = SharedConfig {
            key_prefix: "a{b}:".into(),
            ..SharedConfig::default()
        };
        assert_eq!(braces.validate().unwrap_err().0, "shared.key_prefix");
    }

    #[tokio::test]
    async fn disabled_state_shares_nothing_and_counts_nothing() {
        let shared = SharedState::connect(&SharedConfig::default()).unwrap();
        assert!(!shared.is_enabled());
        assert_eq!(shared.ping().await, Err(SharedError::Disabled));
        assert!(shared.metrics().is_none());
        assert_eq!(shared.replicas(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_within_the_timeout_then_is_skipped() {
        // Nothing listens on port 1.
        let config = SharedConfig {
            redis_url: Some(RedisUrl::new("redis://127.0.0.1:1")),
            retry_after: Duration::from_secs(60),
            ..SharedConfig::default()
        };
        let shared = SharedState::connect(&config).unwrap();
        // A refused connection backs off at once; timeouts only after a few in a row.
        let mut failures = 0;
        while !shared.is_backing_off() {
            let error = shared.ping().await.unwrap_err();
            assert!(
                matches!(error, SharedError::Redis(_) | SharedError::Timeout),
                "{error:?}"
            );
            failures += 1;
            assert!(failures <= TIMEOUTS_BEFORE_BACK_OFF, "never backed off");
        }
        // Skipped at once, and counted as a fallback, not as another error.
        assert_eq!(shared.ping().await, Err(SharedError::BackingOff));
        let metrics = shared.metrics().unwrap();
        assert_eq!(metrics.errors, vec![("ping", failures)]);
        let ready = metrics
            .fallbacks
            .iter()
            .find(|(feature, _)| *feature == "ready")
            .unwrap();
        assert_eq!(ready.1, failures + 1);
    }
}

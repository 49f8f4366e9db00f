//! Change events on Redis Streams, as `contracts/events.asyncapi.yaml` (at the repository root)
//! describes them: each service appends one CloudEvents 1.0 event (structured JSON mode) for
//! every change it makes, with `XADD <prefix><stream> MAXLEN ~ 100000 * event <json>`, to its own
//! stream (`catalog` for the product service, `cart`, `order`).
//!
//! This module knows the envelope and the transport, never the services' data: each service
//! builds its own messages' `data` (product.rs, cart.rs, order.rs) and hands them to its
//! [`Publisher`]. Publishing is off unless [`EventsConfig`] is given (`--events-redis-url`,
//! `--events-redis-cluster-nodes` or `--events-redis-sentinel-master`); off, nothing is
//! serialized and nothing is sent.
//!
//! Where the streams live ([`EventsRedis`]): one server, a Redis Cluster (the `redis` crate's
//! cluster client routes each `XADD` to the master of its stream's slot and follows `MOVED`/`ASK`
//! and resharding) or the master Sentinel names (asked again after every failure, so a failover
//! is followed). Each `XADD` touches one key, its stream, so nothing is ever cross-slot; a
//! stream is one key on one shard.
//!
//! How a change becomes an event, so that the contract's rules hold:
//! - **In order per resource.** A store announces the change (`Publisher::announce`) while it
//!   still holds the lock under which it made it, so one resource's events are queued in the order
//!   of its changes. One writer task per stream appends the queue in that order.
//! - **Event after commit.** The writer appends an event only once the `Announcement` the store
//!   returned was released, which the caller does after the store's lock is gone: the change is
//!   visible over HTTP before its event is in the stream.
//! - **Event before the answer.** The handler then waits (`Announcement::published`) until the
//!   writer says the event was appended (at most [`PUBLISH_WAIT`]), and only then answers: a
//!   client that got the answer of a write finds its event in the stream.
//! - **The bus never fails a write.** A reference service must not refuse changes because its
//!   event bus is down: when Redis cannot be reached (or does not answer within
//!   [`REDIS_TIMEOUT`]), the events are dropped, counted ([`EventStats::failed`], also at
//!   `GET /__admin/events`) and logged (once when failing starts, once when it ends), and the
//!   writes succeed as usual. After a failure Redis is left alone for [`RETRY_AFTER`] (events of
//!   that time are dropped at once, so writes are not slowed down), then tried again. Consumers
//!   miss the dropped events; the contract has no way to tell them, so this reference
//!   implementation chooses availability of the writes over completeness of the stream.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::http::HeaderMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::ServiceKind;

/// The stream prefix when none is configured, as in the contract.
pub const DEFAULT_STREAM_PREFIX: &str = "bff:events:";
/// `MAXLEN ~` of every `XADD`: streams are trimmed to about this many entries (the contract's
/// number; consumers detect the gaps trimming makes).
pub const MAX_STREAM_LEN: u64 = 100_000;
/// How long a write waits for its event to be appended before it answers anyway.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(3);
/// How long connecting to Redis, or one `XADD` batch, may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis is left alone after a failure (events are dropped meanwhile).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most events appended in one pipeline.
const MAX_BATCH: usize = 256;
/// The CloudEvents version of every event.
const SPEC_VERSION: &str = "1.0";
/// The longest `tracestate` the contract allows.
const MAX_TRACESTATE: usize = 512;
/// The longest `tracestate` list-member kept when the whole is too long (W3C: longer ones go first).
const MAX_TRACESTATE_MEMBER: usize = 128;
/// Most `tracestate` list-members (W3C).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A Redis URL (`redis://[:password@]host:port/db`, `rediss://...`). It may hold a password, so
/// it never prints whole: `Debug` and `Display` hide the user information.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL (it is checked when the publisher is built; see [`crate::cli`] for the
    /// command line, which refuses a malformed one at start).
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    /// The URL, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => write!(f, "{scheme}://***@{host}"),
                None => f.write_str(&self.0),
            },
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// Where the streams live: one server, a Redis Cluster, or the master Sentinel names. URLs may
/// hold passwords, so it prints with them hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsRedis {
    /// One server (`--events-redis-url`).
    Standalone(RedisUrl),
    /// A Redis Cluster, from seed nodes (`--events-redis-cluster-nodes`): any of them will do to
    /// learn the others.
    Cluster(Vec<RedisUrl>),
    /// The master named by sentinels (`--events-redis-sentinel-master`,
    /// `--events-redis-sentinels`), followed through failovers.
    Sentinel {
        /// The name the sentinels monitor the master under.
        master_name: String,
        /// The sentinels' URLs (`redis://host:26379`).
        sentinels: Vec<RedisUrl>,
    },
}

impl fmt::Display for EventsRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |urls: &[RedisUrl]| {
            urls.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Standalone(url) => write!(f, "{url}"),
            Self::Cluster(nodes) => write!(f, "cluster {}", list(nodes)),
            Self::Sentinel {
                master_name,
                sentinels,
            } => write!(f, "master {master_name} of sentinels {}", list(sentinels)),
        }
    }
}

/// Where the services publish their change events (`--events-redis-url` or its cluster and
/// Sentinel siblings, `--events-stream-prefix`). Absent from [`Config`](crate::Config), nothing
/// is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The Redis (7 or later, for Streams) the three streams live in.
    pub redis: EventsRedis,
    /// Put before `catalog`, `cart` and `order` to name the streams, so that several systems
    /// (or test runs) can share one Redis; the consumers must be configured with the same one.
    pub stream_prefix: String,
}

impl EventsConfig {
    /// Publishing to the one server at `redis_url`, on the contract's streams
    /// ([`DEFAULT_STREAM_PREFIX`]).
    pub fn new(redis_url: impl Into<String>) -> EventsConfig {
        EventsConfig::to(EventsRedis::Standalone(RedisUrl::new(redis_url)))
    }

    /// Publishing to the Redis Cluster whose seed nodes are `nodes`, on the contract's streams.
    pub fn cluster<U: Into<String>>(nodes: impl IntoIterator<Item = U>) -> EventsConfig {
        EventsConfig::to(EventsRedis::Cluster(
            nodes.into_iter().map(RedisUrl::new).collect(),
        ))
    }

    /// Publishing to the master the `sentinels` name `master_name`, on the contract's streams.
    pub fn sentinel<U: Into<String>>(
        master_name: impl Into<String>,
        sentinels: impl IntoIterator<Item = U>,
    ) -> EventsConfig {
        EventsConfig::to(EventsRedis::Sentinel {
            master_name: master_name.into(),
            sentinels: sentinels.into_iter().map(RedisUrl::new).collect(),
        })
    }

    /// Publishing to `redis` on the contract's streams.
    fn to(redis: EventsRedis) -> EventsConfig {
        EventsConfig {
            redis,
            stream_prefix: DEFAULT_STREAM_PREFIX.to_owned(),
        }
    }

    /// The name of the stream a service appends to, e.g. `bff:events:catalog`.
    pub fn stream(&self, kind: ServiceKind) -> String {
        format!("{}{}", self.stream_prefix, stream_name(kind))
    }
}

/// The contract's name of a service's stream (without prefix).
pub fn stream_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Product => "catalog",
        ServiceKind::Cart => "cart",
        ServiceKind::Order => "order",
    }
}

/// The CloudEvents `source` of a service's events.
fn source(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Product => "product-service",
        ServiceKind::Cart => "cart-service",
        ServiceKind::Order => "order-service",
    }
}

/// The W3C trace context of the request that caused a change, copied into its event (the
/// CloudEvents Distributed Tracing extension), so one trace leads from the request to its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`, exactly as sent (version, trace id, parent id, flags).
    traceparent: String,
    /// `tracestate`, its list-members joined with `,` (trimmed to 512 characters), if sent.
    tracestate: Option<String>,
}

impl TraceContext {
    /// The trace context of a request: `None` without a valid `traceparent` (one header, in the
    /// form the contract allows, trace and parent ids not all zeros); `tracestate` is then ignored
    /// too, as W3C Trace Context asks.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let mut parents = headers.get_all("traceparent").iter();
        let (Some(parent), None) = (parents.next(), parents.next()) else {
            return None;
        };
        let traceparent = parent.to_str().ok()?;
        if !is_traceparent(traceparent) {
            return None;
        }
        let members: Vec<&str> = headers
            .get_all("tracestate")
            .iter()
            .map(|value| value.to_str().ok())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(|member| member.trim_matches([' ', '\t']))
            .filter(|member| !member.is_empty())
            .collect();
        Some(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate(members),
        })
    }
}

/// Whether `value` is `version-traceid-parentid-flags` in lower-case hex, with a version other
/// than `ff` and ids that are not all zeros.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return false;
    };
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zeros = |part: &str| part.bytes().all(|b| b == b'0');
    hex(version, 2)
        && *version != "ff"
        && hex(trace_id, 32)
        && !zeros(trace_id)
        && hex(parent_id, 16)
        && !zeros(parent_id)
        && hex(flags, 2)
}

/// The `tracestate` to carry: at most 32 printable list-members, joined with `,`, at most 512
/// characters (members longer than 128 go first, then members from the end, as W3C allows);
/// `None` when nothing is left.
fn tracestate(members: Vec<&str>) -> Option<String> {
    let printable = |member: &&str| member.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let mut kept: Vec<&str> = members
        .into_iter()
        .filter(printable)
        .take(MAX_TRACESTATE_MEMBERS)
        .collect();
    let length = |kept: &[&str]| {
        kept.iter().map(|member| member.len()).sum::<usize>() + kept.len().saturating_sub(1)
    };
    if length(&kept) > MAX_TRACESTATE {
        kept.retain(|member| member.len() <= MAX_TRACESTATE_MEMBER);
    }
    while length(&kept) > MAX_TRACESTATE {
        kept.pop();
    }
    (!kept.is_empty()).then(|| kept.join(","))
}

/// One event as appended: the CloudEvents envelope around a service's `data`.
#[derive(Debug, Serialize)]
struct Envelope<'a, T> {
    /// Always `1.0`.
    specversion: &'static str,
    /// Unique per event: consumers deduplicate by it.
    id: String,
    /// The service that made the change (`product-service`, ...).
    source: &'static str,
    /// What happened, e.g. `com.bff.product.changed`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the change was made, RFC 3339.
    time: String,
    /// The id of the resource that changed.
    subject: &'a str,
    /// Always `application/json`: `data` is JSON.
    datacontenttype: &'static str,
    /// The message's own fields (ids, the new version, ...).
    data: &'a T,
    /// The causing request's `traceparent`, when it sent a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    /// The causing request's `tracestate`, when it sent one with a valid `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
}

/// How many events a publisher has handled, for `GET /__admin/events` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventStats {
    /// Which service publishes.
    pub service: String,
    /// Whether publishing is configured at all.
    pub enabled: bool,
    /// The stream appended to, `None` when publishing is off.
    pub stream: Option<String>,
    /// Events appended to the stream.
    pub published: u64,
    /// Events dropped because Redis could not be reached or did not answer in time.
    pub failed: u64,
}

/// One service's way to the event bus: does nothing when publishing is off. Cheap to clone; the
/// clones share one queue, one writer task and one Redis connection.
#[derive(Clone)]
pub struct Publisher {
    /// The service whose stream this is.
    kind: ServiceKind,
    /// `None` when publishing is off.
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("kind", &self.kind)
            .field(
                "stream",
                &self.inner.as_ref().map(|inner| &inner.target.stream),
            )
            .finish_non_exhaustive()
    }
}

/// What an enabled publisher shares among its clones.
struct Inner {
    /// Where events go and how many went, shared with the writer task.
    target: Arc<Target>,
    /// The writer's queue, started by the first event (so that building a world needs no
    /// runtime, and a process serving one service never connects for the others). The writer
    /// ends when the last clone is dropped, since it holds no sender of its own.
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

/// The stream a writer appends to, and its counters.
struct Target {
    /// The stream's full name, e.g. `bff:events:cart`.
    stream: String,
    /// The Redis client (no connection yet), or why its URLs were refused.
    client: Result<Client, String>,
    /// Events appended.
    published: AtomicU64,
    /// Events dropped.
    failed: AtomicU64,
}

/// An event waiting for the writer.
struct Queued {
    /// The event, serialized.
    json: String,
    /// Resolves once the change is visible (its sender is dropped after the store's lock).
    released: oneshot::Receiver<()>,
    /// Told whether the event was appended.
    done: oneshot::Sender<bool>,
}

impl Publisher {
    /// A publisher that publishes nothing.
    pub fn disabled(kind: ServiceKind) -> Publisher {
        Publisher { kind, inner: None }
    }

    /// The publisher of a service's stream, or a disabled one without `config`. Connects
    /// nothing: the connection is made by the first event.
    pub fn new(config: Option<&EventsConfig>, kind: ServiceKind) -> Publisher {
        let Some(config) = config else {
            return Publisher::disabled(kind);
        };
        let client = Client::new(&config.redis)
            .map_err(|error| format!("{} is not a usable Redis: {error}", config.redis));
        Publisher {
            kind,
            inner: Some(Arc::new(Inner {
                target: Arc::new(Target {
                    stream: config.stream(kind),
                    client,
                    published: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                }),
                queue: OnceLock::new(),
            })),
        }
    }

    /// The service whose stream this is.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// Whether events are published.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The counters.
    pub fn stats(&self) -> EventStats {
        let count = |counter: fn(&Target) -> &AtomicU64| {
            self.inner
                .as_ref()
                .map_or(0, |inner| counter(&inner.target).load(Ordering::Relaxed))
        };
        EventStats {
            service: self.kind.to_string(),
            enabled: self.is_enabled(),
            stream: self.inner.as_ref().map(|inner| inner.target.stream.clone()),
            published: count(|target| &target.published),
            failed: count(|target| &target.failed),
        }
    }

    /// Queues the event of a change: `kind` is its CloudEvents `type`, `subject` the id of the
    /// resource, `data` the message's fields. Call it while still holding the lock the change was
    /// made under, then release the lock and wait for the returned [`Announcement`]. Does nothing
    /// (not even serialize) when publishing is off.
    pub(crate) fn announce<T: Serialize>(
        &self,
        kind: &'static str,
        subject: &str,
        data: &T,
        trace: Option<&TraceContext>,
    ) -> Announcement {
        let Some(inner) = &self.inner else {
            return Announcement::none();
        };
        let envelope = Envelope {
            specversion: SPEC_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            source: source(self.kind),
            kind,
            time: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            subject,
            datacontenttype: "application/json",
            data,
            traceparent: trace.map(|trace| trace.traceparent.as_str()),
            tracestate: trace.and_then(|trace| trace.tracestate.as_deref()),
        };
        let json = match serde_json::to_string(&envelope) {
            Ok(json) => json,
            Err(error) => {
                // Our own plain data always serializes; if it ever does not, the write stands.
                tracing::error!(%error, event = kind, "could not serialize a change event");
                inner.target.failed.fetch_add(1, Ordering::Relaxed);
                return Announcement::none();
            }
        };
        let (release, released) = oneshot::channel();
        let (done, outcome) = oneshot::channel();
        let queued = Queued {
            json,
            released,
            done,
        };
        match self.queue(inner) {
            Some(queue) if queue.send(queued).is_ok() => Announcement {
                pending: Some((release, outcome)),
            },
            _ => {
                inner.target.failed.fetch_add(1, Ordering::Relaxed);
                Announcement::none()
            }
        }
    }

    /// The writer's queue, starting the writer on first use; `None` outside a tokio runtime.
    fn queue<'a>(&self, inner: &'a Inner) -> Option<&'a mpsc::UnboundedSender<Queued>> {
        if let Some(queue) = inner.queue.get() {
            return Some(queue);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(inner.queue.get_or_init(|| {
            let (queue, receiver) = mpsc::unbounded_channel();
            runtime.spawn(write(receiver, inner.target.clone()));
            queue
        }))
    }
}

/// A queued event, handed back to the code that made the change. Dropping it (or calling
/// [`Announcement::published`]) tells the writer the change is visible; keep it only until the
/// store's lock is released.
#[must_use = "wait for the event with `published` once the store's lock is released"]
pub(crate) struct Announcement {
    /// The release signal and the writer's answer; `None` when nothing was queued.
    pending: Option<(oneshot::Sender<()>, oneshot::Receiver<bool>)>,
}

impl Announcement {
    /// Nothing to announce (no change, or publishing off).
    pub(crate) fn none() -> Announcement {
        Announcement { pending: None }
    }

    /// Releases the event and waits until it is appended (or dropped, or [`PUBLISH_WAIT`]
    /// passed); returns whether it is in the stream (`true` when there was nothing to publish).
    pub(crate) async fn published(self) -> bool {
        all_published(vec![self]).await
    }
}

/// [`Announcement::published`] for several events at once: releases them all first (the writer
/// appends them in queue order, so waiting for one before releasing the next could stall it).
pub(crate) async fn all_published(announcements: Vec<Announcement>) -> bool {
    let outcomes: Vec<oneshot::Receiver<bool>> = announcements
        .into_iter()
        .filter_map(|announcement| announcement.pending)
        .map(|(release, outcome)| {
            drop(release);
            outcome
        })
        .collect();
    let deadline = Instant::now() + PUBLISH_WAIT;
    let mut all = true;
    for outcome in outcomes {
        let appended = matches!(
            tokio::time::timeout_at(deadline, outcome).await,
            Ok(Ok(true))
        );
        all &= appended;
    }
    all
}

/// The writer of one stream: appends queued events in order, in pipelined batches, each once
/// its change is visible; tells each waiting write how it went. Ends when every publisher clone
/// is gone.
async fn write(mut queue: mpsc::UnboundedReceiver<Queued>, target: Arc<Target>) {
    let mut connection: Option<Connection> = None;
    let mut retry_at: Option<Instant> = None;
    // Events dropped since appending last worked, for the recovery log line.
    let mut dropped: u64 = 0;
    let mut batch: Vec<Queued> = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        for queued in &mut batch {
            // Sent or dropped, either way the change is visible now.
            let _ = (&mut queued.released).await;
        }
        let outcome = match retry_at {
            Some(at) if Instant::now() < at => Err(None),
            _ => append(&target, &mut connection, &batch).await.map_err(Some),
        };
        let count = batch.len() as u64;
        let appended = outcome.is_ok();
        match outcome {
            Ok(()) => {
                target.published.fetch_add(count, Ordering::Relaxed);
                if retry_at.take().is_some() {
                    tracing::info!(
                        stream = %target.stream,
                        dropped,
                        "appending change events again"
                    );
                }
                dropped = 0;
            }
            Err(error) => {
                target.failed.fetch_add(count, Ordering::Relaxed);
                if let Some(error) = error {
                    if retry_at.is_none() {
                        tracing::warn!(
                            stream = %target.stream,
                            %error,
                            "cannot append change events; the writes stand, their events are dropped until Redis answers again"
                        );
                    } else {
                        tracing::debug!(stream = %target.stream, %error, "still cannot append change events");
                    }
                    retry_at = Some(Instant::now() + RETRY_AFTER);
                }
                dropped += count;
            }
        }
        for queued in batch.drain(..) {
            // The write may have stopped waiting; nothing to tell then.
            let _ = queued.done.send(appended);
        }
    }
}

/// `XADD <stream> MAXLEN ~ 100000 * event <json>`, as the contract writes it.
fn xadd(stream: &str, json: &str) -> redis::Cmd {
    let mut command = redis::cmd("XADD");
    command
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAX_STREAM_LEN)
        .arg("*")
        .arg("event")
        .arg(json);
    command
}

/// What connections to the streams' Redis are made from.
enum Client {
    /// One server.
    Standalone(redis::Client),
    /// A Redis Cluster (the crate's client: slot map, redirections, topology refresh).
    Cluster(ClusterClient),
    /// The sentinels that name the master (asking them needs the client exclusively).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Client {
    /// The client of `redis`; connects nothing.
    fn new(redis: &EventsRedis) -> redis::RedisResult<Client> {
        let urls = |urls: &[RedisUrl]| -> Vec<String> {
            urls.iter().map(|url| url.expose().to_owned()).collect()
        };
        Ok(match redis {
            EventsRedis::Standalone(url) => Client::Standalone(redis::Client::open(url.expose())?),
            EventsRedis::Cluster(nodes) => Client::Cluster(
                ClusterClient::builder(urls(nodes))
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(2)
                    .build()?,
            ),
            EventsRedis::Sentinel {
                master_name,
                sentinels,
            } => Client::Sentinel(tokio::sync::Mutex::new(SentinelClient::build(
                urls(sentinels),
                master_name.clone(),
                None,
                SentinelServerType::Master,
            )?)),
        })
    }

    /// A connection: a lazy one to a single server (it reconnects by itself); a cluster
    /// connection, which learns the slot map now; or a lazy one to the master the sentinels
    /// name now. Bounded by [`REDIS_TIMEOUT`].
    async fn connect(&self) -> Result<Connection, String> {
        let manager = |client: redis::Client| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(RETRY_AFTER);
            ConnectionManager::new_lazy_with_config(client, config)
                .map(Connection::Manager)
                .map_err(|error| error.to_string())
        };
        match self {
            Client::Standalone(client) => manager(client.clone()),
            Client::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT);
                in_time(
                    tokio::time::timeout(
                        REDIS_TIMEOUT,
                        client.get_async_connection_with_config(config),
                    )
                    .await,
                )
                .map(|connection| Connection::Cluster(Box::new(connection)))
            }
            Client::Sentinel(sentinels) => {
                let master = in_time(
                    tokio::time::timeout(REDIS_TIMEOUT, async {
                        sentinels.lock().await.async_get_client().await
                    })
                    .await,
                )?;
                manager(master)
            }
        }
    }

    /// Whether a connection that failed should be made again for the next batch: a cluster
    /// connection learns the slot map afresh, and Sentinel is asked again for the master (a
    /// failover moves it); a single server's connection reconnects by itself.
    fn reconnects_after_failure(&self) -> bool {
        !matches!(self, Client::Standalone(_))
    }
}

/// The value of a Redis call cut off after [`REDIS_TIMEOUT`], or what went wrong.
fn in_time<T>(
    outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, String> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("Redis did not answer in time".to_owned()),
    }
}

/// A connection to the streams' Redis.
enum Connection {
    /// To one server (or the master Sentinel named), reconnecting by itself.
    Manager(ConnectionManager),
    /// To a Redis Cluster (boxed: it is large, and made once).
    Cluster(Box<ClusterConnection>),
}

impl Connection {
    /// Runs `pipeline`, ignoring its answers.
    async fn run(&mut self, pipeline: &redis::Pipeline) -> redis::RedisResult<()> {
        match self {
            Connection::Manager(connection) => pipeline.query_async(connection).await,
            Connection::Cluster(connection) => pipeline.query_async(connection.as_mut()).await,
        }
    }
}

/// Appends a batch with one pipeline of `XADD`s (all on one stream, so one slot of a cluster),
/// connecting first if needed.
async fn append(
    target: &Target,
    connection: &mut Option<Connection>,
    batch: &[Queued],
) -> Result<(), String> {
    let client = target.client.as_ref().map_err(Clone::clone)?;
    let open = match connection {
        Some(open) => open,
        None => connection.insert(client.connect().await?),
    };
    let mut pipeline = redis::pipe();
    for queued in batch {
        pipeline
            .add_command(xadd(&target.stream, &queued.json))
            .ignore();
    }
    let outcome = match tokio::time::timeout(REDIS_TIMEOUT, open.run(&pipeline)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("Redis did not answer in time".to_owned()),
    };
    if outcome.is_err() && client.reconnects_after_failure() {
        *connection = None;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                *name,
                HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_carried_with_its_tracestate() {
        let trace = TraceContext::from_headers(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ("tracestate", "a=1"),
        ]));
        assert_eq!(
            trace,
            Some(TraceContext {
                traceparent: PARENT.to_owned(),
                tracestate: Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,a=1".to_owned()),
            })
        );
    }

    #[test]
    fn invalid_traceparents_carry_nothing() {
        for bad in [
            "",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            let trace = TraceContext::from_headers(&headers(&[
                ("traceparent", bad),
                ("tracestate", "a=1"),
            ]));
            assert_eq!(trace, None, "{bad}");
        }
        assert_eq!(
            TraceContext::from_headers(&headers(&[
                ("traceparent", PARENT),
                ("traceparent", PARENT)
            ])),
            None,
            "twice"
        );
    }

    #[test]
    fn a_long_tracestate_is_cut_to_512_characters_by_whole_members() {
        let long = format!("big={}", "x".repeat(200));
        let small: Vec<String> = (0..40).map(|n| format!("k{n:02}=vvvvvvvvvv")).collect();
        let mut members = vec![long.as_str()];
        members.extend(small.iter().map(String::as_str));
        let kept = tracestate(members).unwrap_or_default();
        assert!(kept.len() <= MAX_TRACESTATE, "{}", kept.len());
        assert!(
            !kept.contains("big="),
            "members over 128 characters go first"
        );
        assert!(kept.starts_with("k00="), "{kept}");
        assert_eq!(tracestate(vec![]), None);
    }

    #[test]
    fn redis_urls_never_print_their_password() {
        let url = RedisUrl::new("redis://user:secret@example.com:6379/0");
        assert_eq!(url.to_string(), "redis://***@example.com:6379/0");
        assert!(!format!("{:?}", EventsConfig::new(url.expose())).contains("secret"));
        let cluster = EventsConfig::cluster(["redis://:secret@a:1", "redis://b:2"]);
        assert_eq!(
            cluster.redis.to_string(),
            "cluster redis://***@a:1,redis://b:2"
        );
        assert!(!format!("{cluster:?}").contains("secret"));
        let sentinel = EventsConfig::sentinel("main", ["redis://:secret@s:26379"]);
        assert_eq!(
            sentinel.redis.to_string(),
            "master main of sentinels redis://***@s:26379"
        );
        assert!(!format!("{sentinel:?}").contains("secret"));
        assert_eq!(
            RedisUrl::new("redis://127.0.0.1:6379/0").to_string(),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn events_are_appended_as_the_contract_writes_it() {
        let packed = xadd("bff:events:cart", "{}").get_packed_command();
        let packed = String::from_utf8_lossy(&packed);
        // RESP: `*<count>`, then `$<length>` and the word, for each word.
        let lines: Vec<&str> = packed.split("\r\n").collect();
        let words: Vec<&str> = lines
            .windows(2)
            .filter(|pair| pair[0].starts_with('$'))
            .map(|pair| pair[1])
            .collect();
        assert_eq!(
            words,
            [
                "XADD",
                "bff:events:cart",
                "MAXLEN",
                "~",
                "100000",
                "*",
                "event",
                "{}"
            ]
        );
    }

    #[tokio::test]
    async fn a_disabled_publisher_queues_nothing() {
        let publisher = Publisher::disabled(ServiceKind::Cart);
        let announcement = publisher.announce("com.bff.cart.changed", "u-1", &1, None);
        assert!(announcement.pending.is_none());
        assert!(announcement.published().await);
        assert_eq!(
            publisher.stats(),
            EventStats {
                service: "cart".to_owned(),
                enabled: false,
                stream: None,
                published: 0,
                failed: 0
            }
        );
    }
}

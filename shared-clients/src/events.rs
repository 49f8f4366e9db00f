//! Change events: every replica reads the downstream services' streams and drops what a change
//! made stale, at once (`contracts/events.asyncapi.yaml`).
//!
//! Policy:
//! - **Every replica reads every event.** One task per stream (`<prefix>catalog`, `…cart`,
//!   `…order`; one key each, so each read stays on one node of a Redis Cluster) reads with
//!   `XREAD BLOCK` on a connection of its own (a blocking read would stall the commands of the
//!   shared connections), from where it stopped: not a consumer group.
//! - **At most once by version.** The last version applied per resource is remembered (bounded);
//!   an event whose `data.version` is not above it changes nothing (a replay, or an older event
//!   arriving late).
//! - **What an event drops.** `product.changed` / `product.deleted`: the product, in this
//!   replica's memory and in L2 (with its lease), and any fetch of it in flight keeps nothing.
//!   `category.changed`: the category list. `cart.changed`: the user's cached cart, here and on
//!   every replica (the owner's shared generation, as a write through the gateway does).
//!   `order.created` / `order.status_changed`: the owner's cached orders, likewise.
//! - **Traced.** An event that carries the causing request's trace context (`traceparent`,
//!   `tracestate`) is processed in a `process` span, a child of that context, with the
//!   OpenTelemetry messaging attributes (`messaging.system = redis`, the stream as
//!   `messaging.destination.name`, the entry id as `messaging.message.id`); the context goes on
//!   with the change ([`Sink::apply`]) to what it wakes (the live hub's topic). Events without
//!   one get no span (it would start a trace of its own for every event), and neither does the
//!   read itself (it waits in a loop: a trace per `XREAD` would say nothing). What an event
//!   drops from the caches is counted, not traced one by one.
//! - **Malformed events** (not JSON, not the contract's shape, an unknown type) are counted and
//!   skipped; the consumer never stops on one.
//! - **Health.** A stream's consumer is *up* while connected. Every read checks for a gap, in
//!   the same atomic step as it reads: the stream's first entry is newer than the last one it
//!   read (trimmed past it), or the stream vanished (Redis restarted empty). On the first read
//!   after it (re)connects, and then on the first read 5 s or more after the last such check
//!   (not on every read: asking costs Redis an `INFO`), it also checks which server answers for
//!   the stream: another one than before (its `run_id`) is a gap too, as a failover promoted a
//!   replica, whose asynchronous copy may lack the last events the old master acknowledged. On
//!   a gap, what this replica holds of that stream's resources can no longer be vouched for and
//!   is dropped from its memory. Without events the caches keep their ordinary TTLs, so a
//!   consumer that is down or lagging costs freshness, never correctness of what the TTLs
//!   promise.
//!
//! Metrics: events applied, ignored (old version) and malformed per type, gaps per stream, whether
//! each stream's consumer is up, how old the last event read was when it was applied (lag), and
//! the age of the last event read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::Owner;
use crate::id::{CategoryId, OrderId, PartnerId, ProductId, UserId};
use crate::trace_context::TraceContext;

/// Entries read per `XREAD`.
const BATCH: usize = 256;

/// Wait before reconnecting after a failure.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// How many resources' last applied versions are remembered.
const VERSIONS_REMEMBERED: u64 = 200_000;

/// How long a resource's last applied version is remembered.
const VERSION_MEMORY: Duration = Duration::from_secs(3600);

/// How often a connected consumer asks which server answers for its stream (the read script's
/// `INFO server`, for its `run_id`), besides the first read of each connection. `INFO` formats
/// the whole section (tens of µs of Redis CPU, against ≈ 1 µs for the rest of a read), so it is
/// not run on every read: a failover that a connection follows without breaking (a cluster
/// connection is redirected to the promoted replica by itself) is seen at the first read this
/// long after the last check (within this long plus `shared.events_block` when idle).
const SERVER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// One of the three streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Products and categories.
    Catalog,
    /// Carts.
    Cart,
    /// Orders.
    Order,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 3] = [Stream::Catalog, Stream::Cart, Stream::Order];

    /// The stream's name after the prefix, and its label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Catalog => "catalog",
            Stream::Cart => "cart",
            Stream::Order => "order",
        }
    }

    /// Its slot in per-stream arrays.
    fn index(self) -> usize {
        self as usize
    }
}

/// What an event says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A product changed or was deleted.
    Product {
        /// Which.
        id: ProductId,
        /// Its category, when the event names one.
        category: Option<CategoryId>,
        /// Whether it still exists: a changed product may move in or within lists (a listing's
        /// order may follow any change, e.g. newest first by `updated_at`); a deleted one only
        /// leaves the pages that show it.
        exists: bool,
    },
    /// A category changed (so the category list did).
    Category(CategoryId),
    /// A user's cart changed.
    Cart(UserId),
    /// An order was created or moved.
    Order {
        /// Whose it is.
        owner: Owner,
        /// Which.
        id: OrderId,
    },
}

/// What applies changes: the caches (implemented by the downstream facade).
pub(crate) trait Sink: Send + Sync + 'static {
    /// Drops what `change` (to `version` of its resource) made stale; `trace` is the trace
    /// context of the request that caused it, for what the change wakes.
    fn apply<'a>(
        &'a self,
        change: &'a Change,
        version: u64,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, ()>;

    /// Drops everything this replica holds of `stream`'s resources, and what L2 holds of them
    /// (a gap was detected).
    fn stale_all(&self, stream: Stream) -> BoxFuture<'_, ()>;

    /// Learns whether `stream`'s consumer is connected and reading.
    fn stream_up(&self, stream: Stream, up: bool);
}

/// The consumer's settings.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    /// `shared.events_stream_prefix`.
    pub(crate) prefix: String,
    /// `shared.events_block`: how long one `XREAD` waits for entries.
    pub(crate) block: Duration,
    /// `shared.connect_timeout`.
    pub(crate) connect_timeout: Duration,
    /// `shared.events_max_lag`.
    pub(crate) max_lag: Duration,
}

/// Whether one stream's consumer can vouch for the cached copies of its resources: connected,
/// not too far behind, no gap since they were cached. Entries kept while it could remember the
/// *epoch*; any loss of health starts a new epoch, so no entry outlives its ordinary freshness
/// on the strength of events that might have been missed.
#[derive(Debug)]
pub(crate) struct Health {
    /// Connected and reading.
    up: AtomicBool,
    /// Whether the last event applied was older than `max_lag` when it was.
    lagging: AtomicBool,
    /// Bumped at every loss of health.
    epoch: AtomicU64,
    /// When the current epoch began: data fetched before may predate an event that was missed.
    since: Mutex<Instant>,
}

impl Health {
    /// Not (yet) healthy: nothing is vouched for until the consumer reads.
    pub(crate) fn new() -> Self {
        Self {
            up: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            since: Mutex::new(Instant::now()),
        }
    }

    /// The current epoch, if healthy and if data fetched at `fetched_at` was fetched within it.
    pub(crate) fn healthy_since(&self, fetched_at: Instant) -> Option<u64> {
        let epoch = self.healthy_epoch()?;
        let since = self.since.lock().map(|since| *since).ok()?;
        (fetched_at >= since).then_some(epoch)
    }

    /// Starts a new epoch now.
    fn new_epoch(&self) {
        if let Ok(mut since) = self.since.lock() {
            *since = Instant::now();
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The current epoch while healthy; `None` while not.
    pub(crate) fn healthy_epoch(&self) -> Option<u64> {
        let healthy = self.up.load(Ordering::Acquire) && !self.lagging.load(Ordering::Acquire);
        healthy.then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Connected (`true`) or not; losing the connection starts a new epoch.
    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        if was != up {
            self.new_epoch();
        }
    }

    /// Records how far behind the consumer is; falling behind starts a new epoch.
    fn set_lagging(&self, lagging: bool) {
        if self.lagging.swap(lagging, Ordering::AcqRel) != lagging {
            self.new_epoch();
        }
    }

    /// Events were missed: a new epoch.
    fn gap(&self) {
        self.new_epoch();
    }
}

/// The running consumer: its tasks stop when it is dropped.
pub(crate) struct Consumer {
    /// One task per stream.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The catalog consumer's health (whether it vouches for longer freshness).
    catalog: Arc<Health>,
    /// Counters and states, shared with the tasks.
    metrics: Arc<EventMetrics>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Consumer {
    /// Starts one task per stream reading with `client`, applying to `sink` while it lives;
    /// `catalog` follows the catalog stream's health.
    pub(crate) fn start(
        endpoint: &crate::redis_link::Endpoint,
        settings: &ConsumerSettings,
        sink: Weak<dyn Sink>,
        catalog: Arc<Health>,
    ) -> Self {
        let metrics = Arc::new(EventMetrics::default());
        let versions = moka::future::Cache::builder()
            .max_capacity(VERSIONS_REMEMBERED)
            .time_to_live(VERSION_MEMORY)
            .build();
        let tasks = Stream::ALL
            .iter()
            .map(|&stream| {
                let reader = Reader {
                    endpoint: endpoint.clone(),
                    stream,
                    key: format!("{}{}", settings.prefix, stream.as_str()),
                    settings: settings.clone(),
                    sink: sink.clone(),
                    metrics: Arc::clone(&metrics),
                    versions: versions.clone(),
                    health: (stream == Stream::Catalog).then(|| Arc::clone(&catalog)),
                    ordinal: AtomicU64::new(0),
                    server: std::sync::Mutex::new(None),
                };
                tokio::spawn(reader.run())
            })
            .collect();
        Self {
            tasks,
            metrics,
            catalog,
        }
    }

    /// The catalog stream's epoch while it is healthy (see [`Health::healthy_epoch`]).
    pub(crate) fn catalog_epoch(&self) -> Option<u64> {
        self.catalog.healthy_epoch()
    }

    /// The counters, for `/metrics`.
    pub(crate) fn metrics(&self) -> EventsMetricsSnapshot {
        let mut snapshot = self.metrics.snapshot();
        snapshot.catalog_healthy = self.catalog.healthy_epoch().is_some();
        snapshot
    }
}

/// Counters and states of the consumer.
#[derive(Default)]
struct EventMetrics {
    /// `(type, outcome)` → count; outcomes `applied`, `ignored`, `malformed`.
    events: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Gaps detected, per stream.
    gaps: [AtomicU64; 3],
    /// Whether each stream's consumer is connected.
    up: [AtomicBool; 3],
    /// The time (ms since the epoch) in the id of the last entry read, per stream; 0: none.
    last_event_ms: [AtomicU64; 3],
    /// How old (ms) the last entry was when it was applied, per stream.
    lag_ms: [AtomicU64; 3],
    /// Entries appended but not yet read at the last check, per stream.
    lag_entries: [AtomicU64; 3],
}

impl EventMetrics {
    /// Counts one event of `kind` with `outcome`.
    fn count(&self, kind: &str, outcome: &'static str) {
        if let Ok(mut events) = self.events.lock() {
            // Types come from the stream: unknown ones are counted under one label.
            let kind = if KNOWN_TYPES.contains(&kind) {
                kind
            } else {
                "unknown"
            };
            *events.entry((kind.to_owned(), outcome)).or_default() += 1;
        }
    }

    /// The counters now.
    fn snapshot(&self) -> EventsMetricsSnapshot {
        let now = now_ms();
        EventsMetricsSnapshot {
            catalog_healthy: false,
            events: self
                .events
                .lock()
                .map(|events| {
                    events
                        .iter()
                        .map(|((kind, outcome), n)| (kind.clone(), *outcome, *n))
                        .collect()
                })
                .unwrap_or_default(),
            streams: Stream::ALL
                .iter()
                .map(|&stream| {
                    let i = stream.index();
                    let last = self.last_event_ms[i].load(Ordering::Relaxed);
                    StreamSnapshot {
                        stream: stream.as_str(),
                        up: self.up[i].load(Ordering::Relaxed),
                        gaps: self.gaps[i].load(Ordering::Relaxed),
                        lag_seconds: self.lag_ms[i].load(Ordering::Relaxed) as f64 / 1000.0,
                        lag_entries: self.lag_entries[i].load(Ordering::Relaxed),
                        last_event_age_seconds: (last != 0)
                            .then(|| now.saturating_sub(last) as f64 / 1000.0),
                    }
                })
                .collect(),
        }
    }
}

/// The contract's event types.
const KNOWN_TYPES: [&str; 6] = [
    "com.bff.product.changed",
    "com.bff.product.deleted",
    "com.bff.category.changed",
    "com.bff.cart.changed",
    "com.bff.order.created",
    "com.bff.order.status_changed",
];

/// The consumer's counters, for `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventsMetricsSnapshot {
    /// `(type, outcome, count)`: outcomes `applied`, `ignored` (old version), `malformed`.
    pub events: Vec<(String, &'static str, u64)>,
    /// Per stream.
    pub streams: Vec<StreamSnapshot>,
    /// Whether the catalog consumer is healthy (connected, not lagging, no gap since the entries
    /// it vouches for were kept): `false` means ordinary freshness (the fallback).
    pub catalog_healthy: bool,
}

/// One stream's consumer, for `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamSnapshot {
    /// `catalog`, `cart` or `order`.
    pub stream: &'static str,
    /// Whether it is connected and reading.
    pub up: bool,
    /// Gaps detected (missed events: what was held was dropped).
    pub gaps: u64,
    /// How old the last event was when it was applied.
    pub lag_seconds: f64,
    /// Entries appended but not yet read, at the last check.
    pub lag_entries: u64,
    /// How old the last event read is now (`None`: none read yet).
    pub last_event_age_seconds: Option<f64>,
}

/// The reading task of one stream.
struct Reader {
    /// Where Redis is.
    endpoint: crate::redis_link::Endpoint,
    /// Which stream.
    stream: Stream,
    /// Its key.
    key: String,
    /// Settings.
    settings: ConsumerSettings,
    /// Where changes go; the task ends when it is gone.
    sink: Weak<dyn Sink>,
    /// Counters.
    metrics: Arc<EventMetrics>,
    /// Last version applied per resource (`kind:id` → version).
    versions: moka::future::Cache<String, u64>,
    /// How many entries the stream had received when the consumer's position was appended
    /// (Redis 7's `entries-added` counts every entry ever added, trimmed or not): reading one
    /// entry adds one, so a stream whose count is higher when the consumer has caught up holds
    /// entries it never read.
    ordinal: AtomicU64,
    /// The health this stream's consumer reports (the catalog's only).
    health: Option<Arc<Health>>,
    /// The `run_id` of the server that answered the last read that asked for it (`None`: none
    /// yet).
    server: std::sync::Mutex<Option<String>>,
}

impl Reader {
    /// Records whether this stream's consumer is connected.
    fn set_up(&self, up: bool) {
        self.metrics.up[self.stream.index()].store(up, Ordering::Relaxed);
        if let Some(health) = &self.health {
            health.set_up(up);
        }
        if let Some(sink) = self.sink.upgrade() {
            sink.stream_up(self.stream, up);
        }
    }

    /// Reads until the sink is gone, reconnecting after failures.
    ///
    /// Entries are consumed with [`READ_SCRIPT`], which reads the stream's counters and the
    /// entries after our position in one atomic step, so the count of entries we consumed
    /// (`ordinal`) is exact and a trim that removed entries we never read is always seen. A
    /// blocking `XREAD` serves only to wait for new entries. The script also says which server
    /// answered (its `run_id`) when asked: on the first read of each connection, then at most
    /// every [`SERVER_CHECK_EVERY`] ([`ServerCheck`]).
    async fn run(self) {
        let mut position: Option<String> = None;
        let script = redis::Script::new(READ_SCRIPT);
        loop {
            if self.sink.strong_count() == 0 {
                return;
            }
            let timeouts = crate::redis_link::Timeouts {
                connect: self.settings.connect_timeout,
                response: self.settings.block + self.settings.connect_timeout,
                max_delay: RECONNECT_AFTER,
            };
            let mut conn = match self.endpoint.dedicated(timeouts).await {
                Ok(conn) => conn,
                Err(_) => {
                    self.set_up(false);
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            };
            // The first time, start at the stream's end: what happened before is not news.
            if position.is_none() {
                match stream_end(&mut conn, &self.key).await {
                    Ok(end) => {
                        let (id, added, _) = end.unwrap_or_else(|| ("0-0".to_owned(), 0, 0));
                        self.ordinal.store(added, Ordering::Relaxed);
                        position = Some(id);
                    }
                    Err(_) => {
                        self.set_up(false);
                        tokio::time::sleep(RECONNECT_AFTER).await;
                        continue;
                    }
                }
            }
            self.set_up(true);
            let mut server_check = ServerCheck::default();
            while let Some(at) = position.clone() {
                let Some(sink) = self.sink.upgrade() else {
                    return;
                };
                let ask_server = server_check.due(Instant::now());
                let Ok(consumed) = self
                    .consume(&mut conn, &script, &at, ask_server, sink.as_ref())
                    .await
                else {
                    break;
                };
                drop(sink);
                let full = consumed.read == BATCH;
                position = Some(consumed.position);
                if full {
                    continue;
                }
                // Wait for something after our position (the entries are read by the script).
                let waited: Result<redis::Value, _> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(u64::try_from(self.settings.block.as_millis()).unwrap_or(1000))
                    .arg("STREAMS")
                    .arg(&self.key)
                    .arg(position.as_deref().unwrap_or("0-0"))
                    .query_async(&mut conn)
                    .await;
                if waited.is_err() {
                    break;
                }
            }
            self.set_up(false);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// Reads and applies what follows `at` (up to [`BATCH`] entries), after checking, in the same
    /// atomic read, that nothing between was trimmed away: a gap (entries trimmed before we read
    /// them, the stream gone or recreated after we read from it, and, when `ask_server`, another
    /// server answering than at the last check) drops this replica's copies of the stream's
    /// resources first.
    async fn consume(
        &self,
        conn: &mut crate::redis_link::Link,
        script: &redis::Script,
        at: &str,
        ask_server: bool,
        sink: &dyn Sink,
    ) -> Result<Consumed, redis::RedisError> {
        let from = if at == "0-0" {
            "-".to_owned()
        } else {
            format!("({at}")
        };
        let (added, length, entries, server): (i64, u64, redis::Value, String) = script
            .key(&self.key)
            .arg(from)
            .arg(BATCH)
            .arg(u8::from(ask_server))
            .invoke_async(conn)
            .await?;
        // Another server than before holds the stream (a replica promoted by a failover, in a
        // cluster or behind Sentinel, or Redis restarted): replication is asynchronous, so the
        // last writes the old one acknowledged, events among them, may be lost with it. What
        // was held is dropped, as for any gap. (Empty: not asked this time.)
        if !server.is_empty() {
            let previous = self
                .server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(server.clone());
            if previous.is_some_and(|previous| previous != server) {
                self.gap(sink).await;
            }
        }
        let ordinal = self.ordinal.load(Ordering::Relaxed);
        let Ok(added) = u64::try_from(added) else {
            // The stream does not exist: a gap if we had read from it (Redis lost it).
            if ordinal > 0 || at != "0-0" {
                self.gap(sink).await;
            }
            self.ordinal.store(0, Ordering::Relaxed);
            return Ok(Consumed {
                position: "0-0".to_owned(),
                read: 0,
            });
        };
        // Entries trimmed from the front so far; entries 1..=ordinal were read by us.
        let trimmed = added.saturating_sub(length);
        let recreated = added < ordinal;
        let mut ordinal = ordinal;
        if trimmed > ordinal || recreated {
            self.gap(sink).await;
            ordinal = trimmed;
        }
        self.metrics.lag_entries[self.stream.index()]
            .store(added.saturating_sub(ordinal), Ordering::Relaxed);
        let entries: redis::streams::StreamRangeReply =
            redis::from_redis_value(entries).map_err(|err| {
                redis::RedisError::from((redis::ErrorKind::Client, "XRANGE", err.to_string()))
            })?;
        let mut position = at.to_owned();
        let read = entries.ids.len();
        for entry in entries.ids {
            self.handle(sink, &entry).await;
            ordinal += 1;
            position = entry.id;
        }
        self.ordinal.store(ordinal, Ordering::Relaxed);
        Ok(Consumed { position, read })
    }

    /// Records a gap: counted, logged, a new epoch, and this replica's copies of the stream's
    /// resources dropped (in L2 too for the catalog).
    async fn gap(&self, sink: &dyn Sink) {
        self.metrics.gaps[self.stream.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(health) = &self.health {
            health.gap();
        }
        tracing::warn!(
            stream = self.stream.as_str(),
            "missed change events (stream trimmed or Redis restarted): dropping this replica's cached copies"
        );
        sink.stale_all(self.stream).await;
    }

    /// Parses and applies one entry.
    async fn handle(&self, sink: &dyn Sink, entry: &redis::streams::StreamId) {
        let index = self.stream.index();
        if let Some(ms) = id_ms(&entry.id) {
            let lag = now_ms().saturating_sub(ms);
            self.metrics.last_event_ms[index].store(ms, Ordering::Relaxed);
            self.metrics.lag_ms[index].store(lag, Ordering::Relaxed);
            if let Some(health) = &self.health {
                let max_lag = u64::try_from(self.settings.max_lag.as_millis()).unwrap_or(u64::MAX);
                health.set_lagging(lag > max_lag);
            }
        }
        let event = entry
            .map
            .get("event")
            .and_then(|value| redis::from_redis_value_ref::<Vec<u8>>(value).ok())
            .and_then(|bytes| serde_json::from_slice::<Event>(&bytes).ok());
        let Some(event) = event else {
            self.metrics.count("unknown", "malformed");
            return;
        };
        let Some((resource, change)) = event.change() else {
            self.metrics.count(&event.kind, "malformed");
            return;
        };
        let version = event.data.version;
        let newer = self
            .versions
            .get(&resource)
            .await
            .is_none_or(|applied| version > applied);
        if !newer {
            self.metrics.count(&event.kind, "ignored");
            return;
        }
        self.versions.insert(resource, version).await;
        let trace = event.trace();
        match &trace {
            Some(trace) => {
                let span = tracing::info_span!(
                    "process",
                    "otel.name" = %format_args!("process {}", self.key),
                    "otel.kind" = "consumer",
                    "messaging.system" = "redis",
                    "messaging.destination.name" = %self.key,
                    "messaging.operation.type" = "process",
                    "messaging.operation.name" = "process",
                    "messaging.message.id" = %entry.id,
                    "cloudevents.event_id" = event.id.as_deref().unwrap_or_default(),
                    "cloudevents.event_type" = %event.kind,
                );
                trace.adopt(&span);
                sink.apply(&change, version, Some(trace))
                    .instrument(span)
                    .await;
            }
            None => sink.apply(&change, version, None).await,
        }
        self.metrics.count(&event.kind, "applied");
    }
}

/// When the read script is next asked which server answers (`INFO server`, costly for Redis):
/// on the first read of a connection, then at most every [`SERVER_CHECK_EVERY`]. One per
/// connection: a new connection asks again at once (a reconnect is when a failover or a restart
/// is most likely to have happened).
#[derive(Debug, Default)]
struct ServerCheck {
    /// When the last read that asked began; `None`: none yet on this connection.
    last: Option<Instant>,
}

impl ServerCheck {
    /// Whether the read starting `now` asks; if it does, it is the last check from now on.
    fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= SERVER_CHECK_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// What one [`Reader::consume`] did.
struct Consumed {
    /// The id of the last entry read (or the position it started from).
    position: String,
    /// How many entries it read.
    read: usize,
}

/// Reads a stream's counters and the entries after a position in one atomic step:
/// `{entries-added, length, entries, run_id}`, or `{-1, 0, {}, run_id}` when the stream does not
/// exist. `ARGV[1]` is the exclusive start (`(<id>` or `-`), `ARGV[2]` the most entries;
/// `ARGV[3]` `1` asks for the server's `run_id` (`INFO server`, the script's costliest call:
/// see [`ServerCheck`]), which is otherwise empty. One key, so on a cluster `INFO` is the
/// stream's node's.
const READ_SCRIPT: &str = r"
local run_id = ''
if ARGV[3] == '1' then
  run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, {}, run_id} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added, length = -1, 0
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1] end
  if info[i] == 'length' then length = info[i + 1] end
end
if added == -1 then return redis.error_reply('XINFO STREAM has no entries-added (Redis 7 needed)') end
return {added, length, redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2]), run_id}
";

/// The stream's last entry id, how many entries it ever received and how many it holds
/// (`XINFO STREAM` `last-generated-id`, `entries-added` (Redis 7) and `length`), read together;
/// `None` when it does not exist. A Redis that does not say `entries-added` is an error (the
/// consumer cannot detect gaps there), not a missing stream.
async fn stream_end(
    conn: &mut crate::redis_link::Link,
    key: &str,
) -> Result<Option<(String, u64, u64)>, redis::RedisError> {
    let info: Result<redis::Value, redis::RedisError> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(conn)
        .await;
    let info = match info {
        Ok(info) => info,
        // "ERR no such key": the stream does not exist (yet, or any more).
        Err(err)
            if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                && err.to_string().contains("no such key") =>
        {
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let pairs: Vec<(redis::Value, redis::Value)> = match info {
        redis::Value::Array(items) => items
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect(),
        redis::Value::Map(pairs) => pairs,
        _ => return Ok(None),
    };
    let mut last = None;
    let mut added = None;
    let mut length = None;
    for (name, value) in &pairs {
        match redis::from_redis_value_ref::<String>(name).ok().as_deref() {
            Some("last-generated-id") => last = redis::from_redis_value_ref::<String>(value).ok(),
            Some("entries-added") => added = redis::from_redis_value_ref::<u64>(value).ok(),
            Some("length") => length = redis::from_redis_value_ref::<u64>(value).ok(),
            _ => {}
        }
    }
    match (last, added, length) {
        (Some(last), Some(added), Some(length)) => Ok(Some((last, added, length))),
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "XINFO STREAM without last-generated-id, entries-added and length (Redis 7 needed)",
        ))),
    }
}

/// An entry id as `(ms, seq)`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The time part of an entry id.
fn id_ms(id: &str) -> Option<u64> {
    parse_id(id).map(|(ms, _)| ms)
}

/// The wall clock in ms since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The part of a CloudEvent the consumer reads.
#[derive(Debug, Deserialize)]
struct Event {
    /// The event's id (CloudEvents `id`).
    #[serde(default)]
    id: Option<String>,
    /// `com.bff.product.changed`, …
    #[serde(rename = "type")]
    kind: String,
    /// The causing request's `traceparent` (CloudEvents Distributed Tracing), if it sent one.
    #[serde(default)]
    traceparent: Option<String>,
    /// Its `tracestate`, if any.
    #[serde(default)]
    tracestate: Option<String>,
    /// The change.
    data: EventData,
}

/// The fields of `data` the consumer reads (each type has some of them).
#[derive(Debug, Deserialize)]
struct EventData {
    /// The resource's new version.
    version: u64,
    /// Product events.
    #[serde(default)]
    product_id: Option<String>,
    /// Category events.
    #[serde(default)]
    category_id: Option<String>,
    /// Cart events.
    #[serde(default)]
    user_id: Option<String>,
    /// Order events.
    #[serde(default)]
    order_id: Option<String>,
    /// Order events.
    #[serde(default)]
    owner: Option<EventOwner>,
}

/// An order's owner: exactly one of the two.
#[derive(Debug, Deserialize)]
struct EventOwner {
    /// A user.
    #[serde(default)]
    user_id: Option<String>,
    /// A partner.
    #[serde(default)]
    partner_id: Option<String>,
}

impl Event {
    /// The causing request's trace context, when the event carries a valid one.
    fn trace(&self) -> Option<TraceContext> {
        TraceContext::parse(self.traceparent.as_deref()?, self.tracestate.as_deref())
    }

    /// The resource it is about (for versions) and what it changes, when it is well-formed.
    fn change(&self) -> Option<(String, Change)> {
        let data = &self.data;
        if data.version == 0 {
            return None;
        }
        match self.kind.as_str() {
            "com.bff.product.changed" | "com.bff.product.deleted" => {
                let id = ProductId::parse(data.product_id.as_deref()?).ok()?;
                let category = match data.category_id.as_deref() {
                    Some(category) => Some(CategoryId::parse(category).ok()?),
                    None => None,
                };
                let change = Change::Product {
                    id: id.clone(),
                    category,
                    exists: self.kind == "com.bff.product.changed",
                };
                Some((format!("p:{}", id.as_str()), change))
            }
            "com.bff.category.changed" => {
                let id = CategoryId::parse(data.category_id.as_deref()?).ok()?;
                Some((format!("c:{}", id.as_str()), Change::Category(id)))
            }
            "com.bff.cart.changed" => {
                let user = UserId::parse(data.user_id.as_deref()?).ok()?;
                Some((format!("u:{}", user.as_str()), Change::Cart(user)))
            }
            "com.bff.order.created" | "com.bff.order.status_changed" => {
                let order = data.order_id.as_deref()?;
                let id = OrderId::parse(order).ok()?;
                let owner = data.owner.as_ref()?;
                let owner = match (&owner.user_id, &owner.partner_id) {
                    (Some(user), None) => Owner::User(UserId::parse(user).ok()?),
                    (None, Some(partner)) => Owner::Partner(PartnerId::parse(partner).ok()?),
                    _ => return None,
                };
                Some((format!("o:{order}"), Change::Order { owner, id }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Option<(String, Change)> {
        serde_json::from_str::<Event>(json).ok()?.change()
    }

    #[test]
    fn events_name_the_resource_they_change() {
        let product = event(
            r#"{"type":"com.bff.product.changed","data":{"product_id":"p-00001","version":3,"changed":["price"]}}"#,
        );
        assert_eq!(
            product,
            Some((
                "p:p-00001".to_owned(),
                Change::Product {
                    id: ProductId::parse("p-00001").unwrap(),
                    category: None,
                    exists: true,
                }
            ))
        );
        let renamed = event(
            r#"{"type":"com.bff.product.changed","data":{"product_id":"p-00001","category_id":"c-2","version":4,"changed":["details"]}}"#,
        )
        .unwrap();
        assert!(matches!(
            renamed.1,
            Change::Product {
                exists: true,
                category: Some(_),
                ..
            }
        ));
        let deleted = event(
            r#"{"type":"com.bff.product.deleted","data":{"product_id":"p-00001","version":5}}"#,
        )
        .unwrap();
        assert!(matches!(deleted.1, Change::Product { exists: false, .. }));
        let order = event(
            r#"{"type":"com.bff.order.status_changed","data":{"order_id":"o-1","owner":{"user_id":null,"partner_id":"partner-acme"},"status":"shipped","previous_status":"confirmed","version":4}}"#,
        )
        .unwrap();
        assert_eq!(order.0, "o:o-1");
        assert!(matches!(
            order.1,
            Change::Order {
                owner: Owner::Partner(_),
                ..
            }
        ));
    }

    #[test]
    fn malformed_events_change_nothing() {
        for json in [
            r#"{"type":"com.bff.product.changed","data":{"product_id":"p-00001","version":0}}"#,
            r#"{"type":"com.bff.product.changed","data":{"version":2}}"#,
            r#"{"type":"com.bff.unknown","data":{"version":2}}"#,
            r#"{"type":"com.bff.cart.changed","data":{"user_id":"bad id!","version":2}}"#,
            r#"{"type":"com.bff.order.created","data":{"order_id":"o-1","owner":{"user_id":"u-1","partner_id":"p-1"},"version":2}}"#,
        ] {
            assert_eq!(event(json), None, "{json}");
        }
        assert!(serde_json::from_str::<Event>("not json").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_is_asked_on_a_connections_first_read_then_every_few_seconds() {
        let mut check = ServerCheck::default();
        assert!(
            check.due(Instant::now()),
            "the first read of a connection asks"
        );
        assert!(!check.due(Instant::now()), "the next read does not");
        tokio::time::advance(SERVER_CHECK_EVERY - Duration::from_millis(1)).await;
        assert!(
            !check.due(Instant::now()),
            "nor any read before the interval"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(check.due(Instant::now()), "the first read after it asks");
        assert!(!check.due(Instant::now()));
        tokio::time::advance(SERVER_CHECK_EVERY * 3).await;
        assert!(check.due(Instant::now()), "once, however long it waited");
        assert!(!check.due(Instant::now()));
        assert!(
            ServerCheck::default().due(Instant::now()),
            "a new connection asks at once"
        );
    }

    #[test]
    fn health_vouches_only_within_one_epoch() {
        let health = Health::new();
        assert_eq!(
            health.healthy_epoch(),
            None,
            "not before the consumer reads"
        );
        health.set_up(true);
        let first = health.healthy_epoch().expect("healthy");
        health.set_lagging(true);
        assert_eq!(health.healthy_epoch(), None);
        health.set_lagging(false);
        let second = health.healthy_epoch().expect("healthy again");
        assert_ne!(first, second, "falling behind starts a new epoch");
        health.gap();
        assert_ne!(
            health.healthy_epoch(),
            Some(second),
            "a gap starts a new epoch"
        );
        health.set_up(false);
        assert_eq!(health.healthy_epoch(), None);
    }
}

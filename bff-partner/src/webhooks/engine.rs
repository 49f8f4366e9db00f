//! The delivery engine: turns order events into deliveries and sends them, in every replica,
//! with all its state in the [`WebhookStore`] (Redis). [`Engine::start`] spawns its two tasks;
//! dropping the [`Engine`] (with the gateway's router, which holds it) stops them.
//!
//! # Intake: events to deliveries, exactly once across replicas
//!
//! One task per replica reads the order stream (`<shared.events_stream_prefix>order`) in the
//! consumer group [`GROUP`] (created at the stream's end with `MKSTREAM` when missing), as a
//! consumer named `<hostname>-<pid>-<random>`. For each entry about an order owned by a partner,
//! for each of that partner's enabled endpoints subscribed to the event's type, it fetches the
//! order as `GET /v2/orders/{id}` shows it, builds the envelope (`type`, the event's `time` as
//! `timestamp`, `data` = the v2 order with the event's `status` and `version`: the order is read
//! when the event is handled, maybe after later changes) and creates a delivery whose id
//! is derived from (stream entry id, endpoint id): handling an entry again creates nothing new.
//! Only then is the entry acknowledged (`XACK`). An entry whose handling failed (Redis or the
//! order service unavailable) stays pending in the group; every half of
//! `gateway.webhooks.event_claim_idle` (at most every [`AUTOCLAIM_EVERY_MAX`]), each replica
//! takes over entries pending for longer than `event_claim_idle` (`XAUTOCLAIM`: a consumer that
//! crashed or failed) and handles them the same way.
//!
//! The group is read with a non-blocking `XREADGROUP` every [`INTAKE_POLL`] on the store's
//! shared connection: a blocking read needs a connection of its own, and the Redis URL of the
//! shared settings is not readable outside `shared-clients`.
//!
//! # Sending
//!
//! A second task claims due deliveries ([`WebhookStore::due`], leased for
//! `gateway.webhooks.delivery_lease`) while fewer than [`MAX_IN_FLIGHT`] attempts are in flight,
//! and runs each attempt in a task of its own, at most `max_concurrency_per_endpoint` per
//! endpoint (a delivery claimed while its endpoint is at its limit is put back, due a moment
//! later). An attempt checks the URL again ([`ssrf::check_url`], [`ssrf::resolve_and_check`])
//! and connects only to the addresses checked (no proxy, redirects not followed, timeout
//! `delivery_timeout`); it posts the stored body with the Standard Webhooks headers, signed with
//! every secret the endpoint signs with at that moment; it reads at most `response_body_limit`
//! bytes of the answer. [`Schedule::outcome`] judges it; [`WebhookStore::record_attempt`]
//! records it (an attempt another replica recorded first is dropped). `410` disables the
//! endpoint (`gone`); a delivery failing for its whole schedule while no delivery to its
//! endpoint succeeded disables it (`failing`). Each attempt is counted and timed, each endpoint
//! disabled counted, and every [`SAMPLE_EVERY`] the queue and the disabled endpoints of the
//! configured partners are sampled: the series are in [`super::metrics`].
//!
//! # Order per order
//!
//! Before an attempt at a delivery about an order, the engine looks in its endpoint's log (the
//! newest [`ORDER_WINDOW`] deliveries) for a pending delivery of an older version of the same
//! order; while there is one, the newer one is put back (due when the older is, or a moment
//! later). Within one claimed batch, only the oldest delivery per (endpoint, order) is sent. The
//! limitation: an older delivery beyond the newest [`ORDER_WINDOW`] of the log is not seen.
//!
//! # Traced
//!
//! An order event that carries the trace context of the request that caused it (`traceparent`,
//! `tracestate`) is handled in a `process` span, a child of that context (OpenTelemetry
//! messaging attributes: `messaging.system = redis`, the stream, the entry id), and each
//! delivery it makes keeps that context in its record ([`NewDelivery::trace`]). Every attempt is
//! a `webhook delivery` span, a child of the stored context (so a retry, or an attempt another
//! replica makes, is in the same trace), and its `POST` carries a `traceparent` naming that
//! span (or, while traces are not exported here, the stored one), and the `tracestate`: a
//! partner's own tracing continues the trace of the request that moved the order.
//!
//! # What survives a crash
//!
//! Everything but attempts in flight (dropping the engine ends them too, as a crash would):
//! events not yet acknowledged are claimed by another replica after `event_claim_idle`; a delivery being sent stays in its partner's due set,
//! leased, and is claimed again when the lease ends (so a receiver may get it twice: at least
//! once, with the same `webhook-id`). Every [`RESYNC_EVERY`], the due hints of the configured
//! partners are repaired ([`WebhookStore::resync_due_hint`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use shared_clients::{
    Downstream, ErrorKind, Order, OrderId, Owner, PartnerId, RequestContext, TraceContext,
    shared_state::{Feature, SharedError},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use super::{
    metrics::{AttemptOutcome, SAMPLE_EVERY, Sample, WebhookMetrics},
    payload::{Envelope, EventType},
    schedule::{self, AttemptResult, Outcome, Schedule},
    signature::{self, Secret},
    ssrf::{self, Resolver, TargetHost},
    store::{
        AttemptRecord, Claimed, Delivery, DeliveryOutcome, DisabledReason, NewDelivery, Recorded,
        StoreError, WebhookStore,
    },
};

/// The consumer group every replica reads the order stream in.
pub const GROUP: &str = "bff-partner-webhooks";
/// Entries read per `XREADGROUP` / `XAUTOCLAIM`.
const BATCH: usize = 64;
/// The pause between two reads of the group when the last one found nothing.
pub const INTAKE_POLL: Duration = Duration::from_millis(200);
/// How often a replica looks for entries other consumers left pending, at most: half of
/// `event_claim_idle`, and no more than this.
pub const AUTOCLAIM_EVERY_MAX: Duration = Duration::from_secs(30);
/// Deliveries claimed at most per call to [`WebhookStore::due`].
const CLAIM_BATCH: usize = 32;
/// Attempts in flight at most in one replica, all endpoints together.
pub const MAX_IN_FLIGHT: usize = 64;
/// The pause of the sending loop when nothing was due.
const SEND_POLL: Duration = Duration::from_millis(100);
/// How long a delivery held back (its order's older delivery pending, its endpoint busy) waits.
const HOLD_BACK: Duration = Duration::from_millis(250);
/// How many of an endpoint's newest deliveries are looked at to keep an order's events in order.
pub const ORDER_WINDOW: usize = 200;
/// How often the due hints of the configured partners are repaired.
pub const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// The pause after Redis failed.
const FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// The label of the engine's own Redis commands in `bff_redis_errors_total{op}`.
const OP: &str = "webhooks";

/// Shapes a downstream order as the partner API shows it (`/v2`), as a JSON object.
pub type ShapeOrder = Arc<dyn Fn(Order) -> Option<Map<String, Value>> + Send + Sync>;

/// What the engine needs of the settings (`gateway.webhooks`, `shared`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The order stream's key: `<shared.events_stream_prefix>order`.
    pub stream_key: String,
    /// `allow_insecure_targets`: `http://` and loopback targets (dev and tests only).
    pub allow_insecure_targets: bool,
    /// Longest DNS lookup of a target's host.
    pub resolve_timeout: Duration,
    /// Looks targets' hosts up (the system's resolver but in tests).
    pub resolver: Arc<dyn Resolver>,
    /// How long an order event stays pending with the consumer that read it before another
    /// replica takes it over (`gateway.webhooks.event_claim_idle`).
    pub event_claim_idle: Duration,
    /// When failed attempts are retried.
    pub schedule: Schedule,
    /// Longest wait for one attempt's answer.
    pub delivery_timeout: Duration,
    /// How long a claimed delivery is this replica's.
    pub delivery_lease: Duration,
    /// Attempts in flight per endpoint at most.
    pub max_concurrency_per_endpoint: usize,
    /// Bytes of an answer read at most.
    pub response_body_limit: usize,
    /// The configured partners, whose due hints are repaired now and then.
    pub partners: Vec<PartnerId>,
}

/// The running engine of one replica; dropping it stops its tasks, attempts in flight included
/// (as a crash would: their deliveries are claimed again when their leases end).
pub struct Engine {
    /// Dropped with the engine: the tasks see their receivers closed and end.
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// What the engine's tasks share.
struct Inner {
    /// Endpoints, deliveries, the due queue.
    store: WebhookStore,
    /// The order service, to fetch the order an event is about.
    downstream: Downstream,
    /// The settings.
    settings: EngineSettings,
    /// The `/v2` order shape.
    shape: ShapeOrder,
    /// The engine's series (see [`Engine::start`]).
    metrics: Arc<WebhookMetrics>,
    /// Attempts in flight, all endpoints together.
    in_flight: Arc<Semaphore>,
    /// Attempts in flight per endpoint id.
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Closed when the [`Engine`] is dropped: attempts in flight end.
    stopped: watch::Receiver<()>,
}

impl Engine {
    /// Starts the engine's tasks on the current tokio runtime: intake and sending. `metrics` is
    /// attached to the server's recorder by the gateway ([`WebhookMetrics::attach`]: the
    /// recorder is made after the gateway is built).
    pub fn start(
        store: WebhookStore,
        downstream: Downstream,
        settings: EngineSettings,
        shape: ShapeOrder,
        metrics: Arc<WebhookMetrics>,
    ) -> Self {
        let (stop, stopped) = watch::channel(());
        let inner = Arc::new(Inner {
            store,
            downstream,
            settings,
            shape,
            metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            per_endpoint: Mutex::new(HashMap::new()),
            stopped: stopped.clone(),
        });
        tokio::spawn(intake(Arc::clone(&inner), stopped.clone()));
        tokio::spawn(send_loop(inner, stopped));
        Self { _stop: stop }
    }
}

/// Waits `pause`; `false` when the engine was stopped meanwhile (or before).
async fn wait(stopped: &mut watch::Receiver<()>, pause: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => stopped.has_changed().is_ok(),
        changed = stopped.changed() => changed.is_ok(),
    }
}

/// The wall clock in Unix ms.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Unix ms as a `SystemTime`.
fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Duration in ms, saturating.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Intake

/// Creates the group at the stream's end (and the stream) unless it exists.
const CREATE_GROUP: &str = r"
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
return 1
";

/// The intake task: reads the group, handles and acknowledges entries, takes over idle ones.
async fn intake(inner: Arc<Inner>, mut stopped: watch::Receiver<()>) {
    let consumer = consumer_name();
    let shared = inner.store.shared().clone();
    let create = redis::Script::new(CREATE_GROUP);
    let key = inner.settings.stream_key.clone();
    let mut group_ready = false;
    let mut last_autoclaim: Option<tokio::time::Instant> = None;
    let autoclaim_every = (inner.settings.event_claim_idle / 2).min(AUTOCLAIM_EVERY_MAX);
    loop {
        if stopped.has_changed().is_err() {
            return;
        }
        if !group_ready {
            let mut invocation = create.prepare_invoke();
            invocation.key(&key).arg(GROUP);
            let created: Result<i64, SharedError> =
                shared.script(OP, Feature::Webhooks, &invocation).await;
            group_ready = created.is_ok();
            if !group_ready {
                if !wait(&mut stopped, FAILURE_PAUSE).await {
                    return;
                }
                continue;
            }
        }
        if last_autoclaim.is_none_or(|at| at.elapsed() >= autoclaim_every) {
            last_autoclaim = Some(tokio::time::Instant::now());
            let claimed: Result<Vec<redis::Value>, SharedError> = shared
                .query(
                    OP,
                    Feature::Webhooks,
                    redis::cmd("XAUTOCLAIM")
                        .arg(&key)
                        .arg(GROUP)
                        .arg(&consumer)
                        .arg(ms(inner.settings.event_claim_idle))
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(BATCH),
                )
                .await;
            if let Ok(reply) = claimed {
                let entries = reply
                    .into_iter()
                    .nth(1)
                    .and_then(|entries| redis::from_redis_value::<StreamRangeReply>(entries).ok())
                    .map(|range| range.ids)
                    .unwrap_or_default();
                for entry in entries {
                    inner.handle_entry(&entry).await;
                }
            }
        }
        let read: Result<Option<StreamReadReply>, SharedError> = shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">"),
            )
            .await;
        match read {
            Ok(reply) => {
                let entries: Vec<StreamId> = reply
                    .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
                    .unwrap_or_default();
                let full = entries.len() == BATCH;
                for entry in &entries {
                    inner.handle_entry(entry).await;
                }
                if !full && !wait(&mut stopped, INTAKE_POLL).await {
                    return;
                }
            }
            Err(_) => {
                // The group may be gone (Redis restarted empty): create it again.
                group_ready = false;
                if !wait(&mut stopped, FAILURE_PAUSE).await {
                    return;
                }
            }
        }
    }
}

/// `<hostname>-<pid>-<random>`: unique per process, recognisable in `XINFO CONSUMERS`.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "bff-partner".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// The part of an order event the intake reads.
#[derive(Debug, Deserialize)]
struct OrderEvent {
    /// `com.bff.order.created` or `com.bff.order.status_changed` (others are skipped).
    #[serde(rename = "type")]
    kind: String,
    /// The causing request's `traceparent`, when it sent one.
    #[serde(default)]
    traceparent: Option<String>,
    /// Its `tracestate`, if any.
    #[serde(default)]
    tracestate: Option<String>,
    /// When it happened (RFC 3339): the envelope's `timestamp`.
    #[serde(default)]
    time: Option<String>,
    /// The order.
    data: OrderEventData,
}

/// An order event's `data`.
#[derive(Debug, Deserialize)]
struct OrderEventData {
    /// The order.
    order_id: String,
    /// Its owner: only partners' orders make deliveries.
    owner: OrderEventOwner,
    /// The order's version after the change.
    version: u64,
    /// The order's status after the change (both event types carry it).
    #[serde(default)]
    status: Option<String>,
}

/// An order's owner.
#[derive(Debug, Deserialize)]
struct OrderEventOwner {
    /// Set for a partner's order.
    #[serde(default)]
    partner_id: Option<String>,
}

/// The order statuses of the event contract (and of `/v2`).
const STATUSES: [&str; 5] = ["pending", "confirmed", "shipped", "delivered", "cancelled"];

/// Why an entry is left pending (handled again later, by this or another replica).
struct Retry;

impl Inner {
    /// Handles one stream entry and acknowledges it, unless handling must be retried.
    async fn handle_entry(&self, entry: &StreamId) {
        let event = entry
            .get::<String>("event")
            .and_then(|json| serde_json::from_str::<OrderEvent>(&json).ok());
        let trace = event.as_ref().and_then(|event| {
            TraceContext::parse(event.traceparent.as_deref()?, event.tracestate.as_deref())
        });
        let handled = match &trace {
            Some(trace) => {
                let key = &self.settings.stream_key;
                let span = tracing::info_span!(
                    "process",
                    "otel.name" = %format_args!("process {key}"),
                    "otel.kind" = "consumer",
                    "messaging.system" = "redis",
                    "messaging.destination.name" = %key,
                    "messaging.consumer.group.name" = GROUP,
                    "messaging.operation.type" = "process",
                    "messaging.operation.name" = "process",
                    "messaging.message.id" = %entry.id,
                );
                trace.adopt(&span);
                self.deliveries_for(entry, event, Some(trace))
                    .instrument(span)
                    .await
            }
            None => self.deliveries_for(entry, event, None).await,
        };
        if handled.is_ok() {
            let _: Result<i64, SharedError> = self
                .store
                .shared()
                .query(
                    OP,
                    Feature::Webhooks,
                    redis::cmd("XACK")
                        .arg(&self.settings.stream_key)
                        .arg(GROUP)
                        .arg(&entry.id),
                )
                .await;
        }
    }

    /// Creates the deliveries of one entry's `event` (none for what is not a partner's order
    /// event), each keeping `trace`, the context the event carried.
    async fn deliveries_for(
        &self,
        entry: &StreamId,
        event: Option<OrderEvent>,
        trace: Option<&TraceContext>,
    ) -> Result<(), Retry> {
        let Some(event) = event else {
            return Ok(());
        };
        let event_type = match event.kind.as_str() {
            "com.bff.order.created" => EventType::OrderCreated,
            "com.bff.order.status_changed" => EventType::OrderStatusChanged,
            _ => return Ok(()),
        };
        let Some(partner) = event
            .data
            .owner
            .partner_id
            .as_deref()
            .and_then(|partner| PartnerId::parse(partner).ok())
        else {
            return Ok(());
        };
        let Ok(order_id) = OrderId::parse(&event.data.order_id) else {
            return Ok(());
        };
        let endpoints: Vec<_> = self
            .store
            .endpoints(&partner)
            .await
            .map_err(|_| Retry)?
            .into_iter()
            .filter(|endpoint| endpoint.enabled && endpoint.events.contains(event_type))
            .collect();
        if endpoints.is_empty() {
            return Ok(());
        }
        let order = match self
            .downstream
            .orders()
            .get(
                &RequestContext::new(),
                &Owner::Partner(partner.clone()),
                &order_id,
            )
            .await
        {
            Ok(order) => order,
            // The order is gone (or never was the partner's): nothing to tell.
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
            Err(_) => return Err(Retry),
        };
        let Some(mut data) = (self.shape)(order) else {
            return Ok(());
        };
        // The order is read when the event is handled, possibly after later changes: its status
        // and version are the event's, so each delivery says what its event said.
        data.insert("version".to_owned(), Value::from(event.data.version));
        if let Some(status) = event
            .data
            .status
            .filter(|status| STATUSES.contains(&status.as_str()))
        {
            data.insert("status".to_owned(), Value::from(status));
        }
        let timestamp = event
            .time
            .as_deref()
            .and_then(|time| OffsetDateTime::parse(time, &Rfc3339).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        let Ok(body) = Envelope::new(event_type, timestamp, data).to_body() else {
            return Ok(());
        };
        let entry_ms = entry
            .id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(now_ms);
        let now = now_ms();
        for endpoint in endpoints {
            let new = NewDelivery {
                id: delivery_id(&entry.id, entry_ms, &endpoint.id),
                endpoint_id: endpoint.id.clone(),
                event_type,
                order_id: Some(order_id.to_string()),
                order_version: Some(event.data.version),
                body: body.clone(),
                trace: trace.cloned(),
            };
            match self.store.create_delivery(&partner, &new, now, now).await {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(_) => return Err(Retry),
            }
        }
        Ok(())
    }
}

/// The id of the delivery of stream entry `entry_id` (added at `entry_ms`) to `endpoint`: a
/// message id of the entry's time whose random part is drawn from a hash of both, so the same
/// entry and endpoint always give the same id, and ids still sort by event time.
fn delivery_id(entry_id: &str, entry_ms: u64, endpoint: &str) -> String {
    let digest = Sha256::digest(format!("{entry_id}|{endpoint}").as_bytes());
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&digest);
    signature::message_id_at(entry_ms, &mut StdRng::from_seed(seed))
}

// ---------------------------------------------------------------------------------------------
// Sending

/// The sending task: claims due deliveries while there is room, and attempts them.
async fn send_loop(inner: Arc<Inner>, mut stopped: watch::Receiver<()>) {
    let mut last_resync: Option<tokio::time::Instant> = None;
    let mut last_sample: Option<tokio::time::Instant> = None;
    loop {
        if stopped.has_changed().is_err() {
            return;
        }
        if last_resync.is_none_or(|at| at.elapsed() >= RESYNC_EVERY) {
            last_resync = Some(tokio::time::Instant::now());
            for partner in &inner.settings.partners {
                let _ = inner.store.resync_due_hint(partner).await;
            }
        }
        if last_sample.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY) {
            last_sample = Some(tokio::time::Instant::now());
            inner.sample().await;
        }
        let room = inner.in_flight.available_permits().min(CLAIM_BATCH);
        if room == 0 {
            if !wait(&mut stopped, SEND_POLL).await {
                return;
            }
            continue;
        }
        let now = now_ms();
        let lease_until = now.saturating_add(ms(inner.settings.delivery_lease));
        match inner.store.due(now, room, lease_until).await {
            Ok(claimed) if !claimed.is_empty() => inner.dispatch(claimed).await,
            Ok(_) => {
                if !wait(&mut stopped, SEND_POLL).await {
                    return;
                }
            }
            Err(_) => {
                if !wait(&mut stopped, FAILURE_PAUSE).await {
                    return;
                }
            }
        }
    }
}

impl Inner {
    /// Samples the configured partners' queues and disabled endpoints into the gauges (kept as
    /// they were when Redis fails).
    async fn sample(&self) {
        let mut sample = Sample::default();
        let now = now_ms();
        for partner in &self.settings.partners {
            let Ok((due, scheduled)) = self.store.queue_depth(partner, now).await else {
                return;
            };
            sample.due += due;
            sample.scheduled += scheduled;
            let Ok(endpoints) = self.store.endpoints(partner).await else {
                return;
            };
            for reason in endpoints.iter().filter_map(|e| e.disabled_reason) {
                sample.count_disabled(reason);
            }
        }
        self.metrics.sampled(sample);
    }

    /// Starts an attempt at each claimed delivery that may go now; puts the others back.
    async fn dispatch(self: &Arc<Self>, mut claimed: Vec<Claimed>) {
        // Oldest first per order, so the first of each (endpoint, order) is the one to send.
        claimed.sort_by(|a, b| {
            (a.delivery.order_version, &a.delivery.id)
                .cmp(&(b.delivery.order_version, &b.delivery.id))
        });
        let mut batch_orders: HashSet<(String, String)> = HashSet::new();
        let mut logs: HashMap<String, Vec<Delivery>> = HashMap::new();
        for claimed in claimed {
            let delivery = &claimed.delivery;
            let now = now_ms();
            if let Some(order) = &delivery.order_id {
                let key = (claimed.endpoint.id.clone(), order.clone());
                if !batch_orders.insert(key) {
                    self.hold_back(&claimed, now + ms(HOLD_BACK)).await;
                    continue;
                }
                if !logs.contains_key(&claimed.endpoint.id) {
                    let log = self
                        .store
                        .deliveries(&claimed.partner, &claimed.endpoint.id, None, ORDER_WINDOW)
                        .await
                        .map(|page| page.items)
                        .unwrap_or_default();
                    logs.insert(claimed.endpoint.id.clone(), log);
                }
                let older = logs.get(&claimed.endpoint.id).and_then(|log| {
                    log.iter().find(|other| {
                        other.id != delivery.id
                            && other.outcome == DeliveryOutcome::Pending
                            && other.order_id.as_deref() == Some(order.as_str())
                            && (other.order_version, &other.id)
                                < (delivery.order_version, &delivery.id)
                    })
                });
                if let Some(older) = older {
                    let until = older
                        .next_attempt_at
                        .unwrap_or(now)
                        .max(now + ms(HOLD_BACK));
                    self.hold_back(&claimed, until).await;
                    continue;
                }
            }
            let endpoint_permit = self
                .endpoint_semaphore(&claimed.endpoint.id)
                .try_acquire_owned();
            let Ok(endpoint_permit) = endpoint_permit else {
                self.hold_back(&claimed, now + ms(HOLD_BACK)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                self.hold_back(&claimed, now + ms(HOLD_BACK)).await;
                continue;
            };
            let inner = Arc::clone(self);
            let mut stopped = self.stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = inner.attempt(claimed) => {}
                    _ = stopped.changed() => {}
                }
                drop((permit, endpoint_permit));
            });
        }
    }

    /// Puts a claimed delivery back, due at `until_ms`, without an attempt.
    async fn hold_back(&self, claimed: &Claimed, until_ms: u64) {
        let _ = self
            .store
            .schedule_redelivery(
                &claimed.partner,
                &claimed.endpoint.id,
                &claimed.delivery.id,
                until_ms,
            )
            .await;
    }

    /// The semaphore bounding attempts in flight to `endpoint`.
    fn endpoint_semaphore(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget idle endpoints now and then, so deleted ones do not pile up.
        if map.len() > 10_000 {
            let max = self.settings.max_concurrency_per_endpoint;
            map.retain(|_, semaphore| semaphore.available_permits() < max);
        }
        Arc::clone(map.entry(endpoint.to_owned()).or_insert_with(|| {
            Arc::new(Semaphore::new(self.settings.max_concurrency_per_endpoint))
        }))
    }

    /// One attempt at a claimed delivery: send, judge, record, and disable the endpoint when
    /// the answer says so.
    async fn attempt(&self, claimed: Claimed) {
        let Claimed {
            partner,
            delivery,
            endpoint,
        } = claimed;
        let started = now_ms();
        let secrets = endpoint.signing_secrets(started);
        let timer = std::time::Instant::now();
        let attempt_number = delivery
            .attempts
            .saturating_sub(delivery.redelivered_at_attempt)
            .saturating_add(1);
        let span = tracing::info_span!(
            "webhook delivery",
            "otel.kind" = "client",
            "http.request.method" = "POST",
            "webhook.delivery.id" = %delivery.id,
            "webhook.endpoint.id" = %endpoint.id,
            "webhook.event.type" = delivery.event_type.as_str(),
            "webhook.partner.id" = partner.as_str(),
            "http.request.resend_count" = attempt_number.saturating_sub(1),
            "http.response.status_code" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        if let Some(trace) = &delivery.trace {
            trace.adopt(&span);
        }
        let answer = self
            .send(&endpoint.url, &delivery, &secrets, &span)
            .instrument(span.clone())
            .await;
        match &answer {
            Answer::Status { status, .. } => {
                span.record("http.response.status_code", status.as_u16());
                if !status.is_success() {
                    span.record("error.type", status.as_str());
                }
            }
            Answer::Timeout(_) => {
                span.record("error.type", "timeout");
            }
            Answer::Failed(_) => {
                span.record("error.type", "connection_failed");
            }
        }
        let took = timer.elapsed();
        let at = now_ms();
        let outcome = {
            let result = match &answer {
                Answer::Status {
                    status,
                    retry_after,
                    ..
                } => AttemptResult::Response {
                    status: *status,
                    retry_after: retry_after.as_deref(),
                },
                Answer::Timeout(_) => AttemptResult::Timeout,
                Answer::Failed(_) => AttemptResult::ConnectionFailed,
            };
            self.settings
                .schedule
                .outcome(attempt_number, &result, at_ms(at), &mut rand::rng())
        };
        let (status, error) = match answer {
            Answer::Status { status, body, .. } => (
                Some(status.as_u16()),
                (!status.is_success()).then(|| String::from_utf8_lossy(&body).into_owned()),
            ),
            Answer::Timeout(error) | Answer::Failed(error) => (None, Some(error)),
        };
        let (stored, next_attempt_at, label) = match outcome {
            Outcome::Delivered => (DeliveryOutcome::Delivered, None, AttemptOutcome::Delivered),
            Outcome::Gone => (DeliveryOutcome::Failed, None, AttemptOutcome::Gone),
            Outcome::Failed => (DeliveryOutcome::Failed, None, AttemptOutcome::Failed),
            Outcome::Retry(delay) => (
                DeliveryOutcome::Pending,
                Some(at.saturating_add(ms(delay))),
                AttemptOutcome::Retry,
            ),
        };
        let record = AttemptRecord {
            at,
            status,
            error,
            outcome: stored,
            next_attempt_at,
        };
        let recorded = self
            .store
            .record_attempt(
                &partner,
                &endpoint.id,
                &delivery.id,
                delivery.attempts,
                &record,
            )
            .await;
        self.metrics.attempt(label, took);
        if recorded != Ok(Recorded::Yes) {
            return;
        }
        let disable = match outcome {
            Outcome::Gone => Some(DisabledReason::Gone),
            Outcome::Failed => {
                let first = at_ms(delivery.first_attempt_at.unwrap_or(started));
                let last_success = self
                    .store
                    .last_success_at(&partner, &endpoint.id)
                    .await
                    .ok()
                    .flatten()
                    .map(at_ms);
                schedule::disables_endpoint(first, last_success).then_some(DisabledReason::Failing)
            }
            Outcome::Delivered | Outcome::Retry(_) => None,
        };
        if let Some(reason) = disable
            && self
                .store
                .disable_endpoint(&partner, &endpoint.id, reason, at)
                .await
                .is_ok()
        {
            self.metrics.endpoint_disabled(reason);
            tracing::warn!(
                partner = partner.as_str(),
                endpoint = endpoint.id.as_str(),
                reason = reason.as_str(),
                "webhook endpoint disabled"
            );
        }
    }

    /// Posts `delivery`'s body to `url`, checked again and connected to only at the addresses
    /// checked, signed with `secrets`, with the trace context of the attempt's `span`.
    async fn send(
        &self,
        url: &str,
        delivery: &Delivery,
        secrets: &[Secret],
        span: &tracing::Span,
    ) -> Answer {
        let settings = &self.settings;
        let insecure = settings.allow_insecure_targets;
        let target = match ssrf::check_url(url, insecure) {
            Ok(target) => target,
            Err(refusal) => return Answer::Failed(refusal.to_string()),
        };
        let addrs = match ssrf::resolve_and_check_with(
            settings.resolver.as_ref(),
            &target,
            insecure,
            settings.resolve_timeout,
        )
        .await
        {
            Ok(addrs) => addrs,
            Err(refusal) => return Answer::Failed(refusal.to_string()),
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.delivery_timeout);
        if let TargetHost::Domain(host) = target.host() {
            builder = builder.resolve_to_addrs(host, &addrs);
        }
        let client = match builder.build() {
            Ok(client) => client,
            Err(error) => return Answer::Failed(error.to_string()),
        };
        let timestamp = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
        let secrets: Vec<&Secret> = secrets.iter().collect();
        let signature =
            signature::signature_header(&secrets, &delivery.id, timestamp, &delivery.body);
        let mut request = client
            .post(target.url().clone())
            .header(signature::HEADER_ID, &delivery.id)
            .header(signature::HEADER_TIMESTAMP, timestamp.to_string())
            .header(signature::HEADER_SIGNATURE, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        // The attempt's own span when traces are exported here, else the event's context as
        // stored: either way the partner continues the trace of the request behind the event.
        if let Some(trace) = TraceContext::of_span(span).or_else(|| delivery.trace.clone()) {
            request = request.header("traceparent", trace.traceparent().as_str());
            if let Some(tracestate) = trace.tracestate() {
                request = request.header("tracestate", tracestate);
            }
        }
        let sent = request.body(delivery.body.clone()).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Answer::Timeout("no answer within the delivery timeout".to_owned());
            }
            Err(error) => return Answer::Failed(describe(&error)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while body.len() < settings.response_body_limit {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(settings.response_body_limit);
        Answer::Status {
            status,
            retry_after,
            body,
        }
    }
}

/// What an attempt got.
enum Answer {
    /// An answer: its status, `Retry-After` and the start of its body.
    Status {
        /// The status.
        status: http::StatusCode,
        /// The `Retry-After` header, as text.
        retry_after: Option<String>,
        /// At most `response_body_limit` bytes of the body.
        body: Vec<u8>,
    },
    /// No answer in time.
    Timeout(String),
    /// No answer: refused target, DNS, connection, TLS.
    Failed(String),
}

/// A send error without the URL (its query may carry a partner's token).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_the_same_for_the_same_entry_and_endpoint() {
        let a = delivery_id("1700000000000-0", 1_700_000_000_000, "we_a");
        assert_eq!(a, delivery_id("1700000000000-0", 1_700_000_000_000, "we_a"));
        assert_ne!(a, delivery_id("1700000000000-1", 1_700_000_000_000, "we_a"));
        assert_ne!(a, delivery_id("1700000000000-0", 1_700_000_000_000, "we_b"));
        assert!(super::super::store::is_message_id(&a));
        // Later entries sort after earlier ones.
        assert!(delivery_id("1700000000001-0", 1_700_000_000_001, "we_a") > a);
    }
}

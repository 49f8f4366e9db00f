//! Counters and gauges of the downstream calls and the caches, for the gateways to export.
//!
//! Policy: everything is counted here with relaxed atomics (no locks on the request path) and read
//! as a plain, serializable [`MetricsSnapshot`] from [`Downstream::metrics`](crate::Downstream::metrics).
//! Counters only ever grow (a scraper computes rates); gauges (`in_flight`, breaker `state`, cache
//! `entries` and `bytes`) are read at snapshot time. Nothing here knows about Prometheus: the
//! exporter (`server_kit::metrics`, at each scrape of `/metrics`) maps the snapshot to its format.
//!
//! Per service ([`ServiceMetricsSnapshot`]): logical calls and their outcome (successes, errors by
//! [`ErrorKind`] code), network attempts, retries and retries the budget refused, calls refused
//! without touching the network (spent deadline, open breaker, full bulkhead), attempts in flight,
//! an attempt latency histogram, and the circuit breaker's state and transitions.
//!
//! Per cache ([`CacheMetricsSnapshot`]): hits, misses, stale answers (and how many of those
//! replaced an error), background refreshes and their failures, 304 revalidations, negative hits,
//! invalidations, evictions for size, and the current size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::error::{ErrorKind, Service};

/// Upper bounds of the latency histogram's buckets, in milliseconds (a last, unbounded bucket
/// holds the rest).
const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Every error kind, in the order of [`kind_index`].
const KINDS: [ErrorKind; 8] = [
    ErrorKind::NotFound,
    ErrorKind::Forbidden,
    ErrorKind::Invalid,
    ErrorKind::Conflict,
    ErrorKind::PreconditionFailed,
    ErrorKind::Timeout,
    ErrorKind::Unavailable,
    ErrorKind::BadResponse,
];

/// The slot of `kind` in per-kind counters.
fn kind_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::NotFound => 0,
        ErrorKind::Forbidden => 1,
        ErrorKind::Invalid => 2,
        ErrorKind::Conflict => 3,
        ErrorKind::PreconditionFailed => 4,
        ErrorKind::Timeout => 5,
        ErrorKind::Unavailable => 6,
        ErrorKind::BadResponse => 7,
    }
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The state of a service's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast without touching the network.
    Open,
    /// Single probe calls go through; the first success closes the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The state as stored in an atomic gauge.
    fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// The state a gauge holds.
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// The state's name for logs: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The live counters of one service, shared by its transport, breaker and bulkhead.
#[derive(Debug, Default)]
pub(crate) struct ServiceMetrics {
    /// Logical calls (one per client method call, whatever its attempts).
    calls: AtomicU64,
    /// Logical calls that succeeded.
    successes: AtomicU64,
    /// Logical calls that failed, by error kind.
    errors: [AtomicU64; 8],
    /// Requests actually sent (first attempts and retries).
    attempts: AtomicU64,
    /// Retries sent.
    retries: AtomicU64,
    /// Retries the retry budget refused.
    retries_denied: AtomicU64,
    /// Calls refused because the request's deadline had passed.
    deadline_exceeded: AtomicU64,
    /// Calls refused by the open circuit breaker.
    breaker_rejections: AtomicU64,
    /// Calls refused by the full bulkhead.
    bulkhead_rejections: AtomicU64,
    /// Attempts in flight right now.
    in_flight: AtomicU64,
    /// Attempts per latency bucket (not cumulative; the last is unbounded).
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    /// Sum of attempt latencies, in microseconds.
    latency_sum_micros: AtomicU64,
    /// The breaker's current state ([`BreakerState::to_u8`]).
    breaker_state: AtomicU8,
    /// Transitions to open.
    breaker_opened: AtomicU64,
    /// Transitions to half-open.
    breaker_half_opened: AtomicU64,
    /// Transitions to closed.
    breaker_closed: AtomicU64,
}

impl ServiceMetrics {
    /// Counts a logical call.
    pub(crate) fn call(&self) {
        bump(&self.calls);
    }

    /// Counts a logical call's outcome.
    pub(crate) fn outcome(&self, error: Option<ErrorKind>) {
        match error {
            None => bump(&self.successes),
            Some(kind) => bump(&self.errors[kind_index(kind)]),
        }
    }

    /// Counts an attempt being sent; the attempt is counted as finished, with its latency, when
    /// the returned guard is dropped (also when the attempt is cancelled).
    pub(crate) fn attempt_started(&self) -> AttemptGuard<'_> {
        bump(&self.attempts);
        bump(&self.in_flight);
        AttemptGuard {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Counts an attempt's end and its latency.
    fn attempt_finished(&self, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        let millis = micros.div_ceil(1_000);
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| millis <= *bound)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        bump(&self.latency_buckets[bucket]);
    }

    /// Counts a retry sent.
    pub(crate) fn retry(&self) {
        bump(&self.retries);
    }

    /// Counts a retry the budget refused.
    pub(crate) fn retry_denied(&self) {
        bump(&self.retries_denied);
    }

    /// Counts a call refused for a spent deadline.
    pub(crate) fn deadline_exceeded(&self) {
        bump(&self.deadline_exceeded);
    }

    /// Counts a call refused by the open breaker.
    pub(crate) fn breaker_rejection(&self) {
        bump(&self.breaker_rejections);
    }

    /// Counts a call refused by the full bulkhead.
    pub(crate) fn bulkhead_rejection(&self) {
        bump(&self.bulkhead_rejections);
    }

    /// Records a breaker transition to `state`.
    pub(crate) fn breaker_transition(&self, state: BreakerState) {
        self.breaker_state.store(state.to_u8(), Ordering::Relaxed);
        bump(match state {
            BreakerState::Closed => &self.breaker_closed,
            BreakerState::Open => &self.breaker_opened,
            BreakerState::HalfOpen => &self.breaker_half_opened,
        });
    }

    /// The counters as they are now.
    pub(crate) fn snapshot(&self, service: Service) -> ServiceMetricsSnapshot {
        let mut cumulative = 0;
        let buckets = LATENCY_BOUNDS_MS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, count)| {
                cumulative += read(count);
                LatencyBucket {
                    le_seconds: Duration::from_millis(*bound).as_secs_f64(),
                    count: cumulative,
                }
            })
            .collect();
        let count = self.latency_buckets.iter().map(read).sum();
        ServiceMetricsSnapshot {
            service,
            calls: read(&self.calls),
            successes: read(&self.successes),
            errors: KINDS
                .iter()
                .map(|kind| (kind.code(), read(&self.errors[kind_index(*kind)])))
                .collect(),
            attempts: read(&self.attempts),
            retries: read(&self.retries),
            retries_denied: read(&self.retries_denied),
            deadline_exceeded: read(&self.deadline_exceeded),
            breaker_rejections: read(&self.breaker_rejections),
            bulkhead_rejections: read(&self.bulkhead_rejections),
            in_flight: read(&self.in_flight),
            latency: LatencySnapshot {
                count,
                sum_seconds: Duration::from_micros(read(&self.latency_sum_micros)).as_secs_f64(),
                buckets,
            },
            breaker: BreakerSnapshot {
                state: BreakerState::from_u8(self.breaker_state.load(Ordering::Relaxed)),
                opened: read(&self.breaker_opened),
                half_opened: read(&self.breaker_half_opened),
                closed: read(&self.breaker_closed),
            },
        }
    }
}

/// An attempt in flight: counts its end when dropped.
#[derive(Debug)]
pub(crate) struct AttemptGuard<'a> {
    /// Where the attempt is counted.
    metrics: &'a ServiceMetrics,
    /// When it was sent, for its latency.
    started: Instant,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.metrics.attempt_finished(self.started.elapsed());
    }
}

/// The live counters of one cache.
#[derive(Debug, Default)]
pub(crate) struct CacheMetrics {
    /// Answers from a fresh entry.
    pub(crate) hits: AtomicU64,
    /// Lookups that had to call the service (or join a call in flight).
    pub(crate) misses: AtomicU64,
    /// Answers from a stale entry (while revalidating, or instead of an error).
    pub(crate) stale_served: AtomicU64,
    /// The stale answers that replaced an error (stale-if-error).
    pub(crate) stale_if_error: AtomicU64,
    /// Background refreshes started (stale-while-revalidate).
    pub(crate) refreshes: AtomicU64,
    /// Background refreshes that failed.
    pub(crate) refresh_failures: AtomicU64,
    /// Refreshes the service answered 304 Not Modified (the entry was renewed).
    pub(crate) not_modified: AtomicU64,
    /// Answers from a remembered 404 (negative caching).
    pub(crate) negative_hits: AtomicU64,
    /// Entries made unreachable by a write (private caches).
    pub(crate) invalidations: AtomicU64,
    /// Entries evicted to stay within the byte budget.
    pub(crate) evictions: AtomicU64,
    /// Misses of this replica answered from the shared second level (Redis).
    pub(crate) l2_hits: AtomicU64,
    /// Misses the shared second level could not answer either.
    pub(crate) l2_misses: AtomicU64,
    /// Fetches this replica left to another replica holding the key's lease, waiting for its
    /// value instead.
    pub(crate) lease_waits: AtomicU64,
}

impl CacheMetrics {
    /// Adds one to `counter` (one of this struct's fields).
    pub(crate) fn count(counter: &AtomicU64) {
        bump(counter);
    }

    /// The counters as they are now, with the store's current size.
    pub(crate) fn snapshot(
        &self,
        cache: &'static str,
        entries: u64,
        bytes: u64,
    ) -> CacheMetricsSnapshot {
        CacheMetricsSnapshot {
            cache,
            hits: read(&self.hits),
            misses: read(&self.misses),
            stale_served: read(&self.stale_served),
            stale_if_error: read(&self.stale_if_error),
            refreshes: read(&self.refreshes),
            refresh_failures: read(&self.refresh_failures),
            not_modified: read(&self.not_modified),
            negative_hits: read(&self.negative_hits),
            invalidations: read(&self.invalidations),
            evictions: read(&self.evictions),
            l2_hits: read(&self.l2_hits),
            l2_misses: read(&self.l2_misses),
            lease_waits: read(&self.lease_waits),
            entries,
            bytes,
        }
    }
}

/// Every counter and gauge of a [`Downstream`](crate::Downstream), at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// One entry per downstream service: product, cart, order.
    pub services: Vec<ServiceMetricsSnapshot>,
    /// One entry per cache: `products`, `categories`, `carts`, `orders`.
    pub caches: Vec<CacheMetricsSnapshot>,
    /// The shared state's counters, when Redis is configured.
    pub redis: Option<crate::shared_state::RedisMetricsSnapshot>,
    /// The change-event consumer's counters, when it runs.
    pub events: Option<crate::events::EventsMetricsSnapshot>,
    /// Live subscriptions: topics, subscribers, signals, polls.
    pub live: crate::live::LiveMetricsSnapshot,
}

impl MetricsSnapshot {
    /// The metrics of one service.
    pub fn service(&self, service: Service) -> Option<&ServiceMetricsSnapshot> {
        self.services.iter().find(|s| s.service == service)
    }

    /// The metrics of one cache, by name (`products`, `categories`, `carts`, `orders`).
    pub fn cache(&self, name: &str) -> Option<&CacheMetricsSnapshot> {
        self.caches.iter().find(|c| c.cache == name)
    }
}

/// The counters and gauges of one downstream service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceMetricsSnapshot {
    /// Which service these are.
    pub service: Service,
    /// Logical calls made (one per client method call, however many attempts it took).
    pub calls: u64,
    /// Logical calls that succeeded.
    pub successes: u64,
    /// Logical calls that failed, by [`ErrorKind::code`] (every kind present, zeros included).
    pub errors: BTreeMap<&'static str, u64>,
    /// Requests actually sent: first attempts plus retries.
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the retry budget refused (the failure was returned instead).
    pub retries_denied: u64,
    /// Calls refused without a request because the inbound request's deadline had passed.
    pub deadline_exceeded: u64,
    /// Calls refused without a request because the circuit breaker was open.
    pub breaker_rejections: u64,
    /// Calls refused without a request because the bulkhead was full.
    pub bulkhead_rejections: u64,
    /// Attempts in flight at the moment of the snapshot (a gauge).
    pub in_flight: u64,
    /// How long attempts took.
    pub latency: LatencySnapshot,
    /// The circuit breaker.
    pub breaker: BreakerSnapshot,
}

/// A latency histogram in Prometheus' shape: cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySnapshot {
    /// How many attempts were measured (the `+Inf` bucket).
    pub count: u64,
    /// Their total duration, in seconds.
    pub sum_seconds: f64,
    /// Attempts that took at most `le_seconds`, for each bound (ascending).
    pub buckets: Vec<LatencyBucket>,
}

/// One bucket of a [`LatencySnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyBucket {
    /// The bucket's upper bound, in seconds.
    pub le_seconds: f64,
    /// Attempts that took at most that long (cumulative).
    pub count: u64,
}

/// A circuit breaker's state and how often it changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The state at the moment of the snapshot (a gauge).
    pub state: BreakerState,
    /// Transitions to open.
    pub opened: u64,
    /// Transitions to half-open.
    pub half_opened: u64,
    /// Transitions (back) to closed.
    pub closed: u64,
}

/// The counters and gauges of one cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheMetricsSnapshot {
    /// Which cache: `products`, `categories`, `carts` or `orders`.
    pub cache: &'static str,
    /// Answers from a fresh entry, without a call.
    pub hits: u64,
    /// Lookups that called the service or joined a call in flight.
    pub misses: u64,
    /// Answers from a stale entry, marked stale (both kinds below).
    pub stale_served: u64,
    /// Of `stale_served`, those given instead of an error (stale-if-error).
    pub stale_if_error: u64,
    /// Background refreshes started (stale-while-revalidate), one per key at a time.
    pub refreshes: u64,
    /// Background refreshes that failed (the stale entry stays until its windows end).
    pub refresh_failures: u64,
    /// Revalidations the service answered 304 Not Modified, renewing the entry without a body.
    pub not_modified: u64,
    /// Answers from a remembered 404, without a call (negative caching).
    pub negative_hits: u64,
    /// Owners whose entries a write made unreachable (private caches).
    pub invalidations: u64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Misses answered from the shared second level (Redis) instead of the service.
    pub l2_hits: u64,
    /// Misses the shared second level could not answer either.
    pub l2_misses: u64,
    /// Times this replica waited for another replica's fetch of a key (its lease) instead of
    /// calling the service itself.
    pub lease_waits: u64,
    /// Entries held at the moment of the snapshot (a gauge; approximate, the store is concurrent).
    pub entries: u64,
    /// Approximate bytes held at the moment of the snapshot (a gauge).
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_latency_histogram_is_cumulative_and_sums_in_seconds() {
        let metrics = ServiceMetrics::default();
        for ms in [3, 7, 7, 40, 20_000] {
            let attempt = metrics.attempt_started();
            assert_eq!(metrics.snapshot(Service::Product).in_flight, 1);
            tokio::time::advance(Duration::from_millis(ms)).await;
            drop(attempt);
        }
        let snapshot = metrics.snapshot(Service::Product);
        assert_eq!(snapshot.attempts, 5);
        assert_eq!(snapshot.in_flight, 0);
        assert_eq!(snapshot.latency.count, 5);
        assert!((snapshot.latency.sum_seconds - 20.057).abs() < 1e-9);
        let counts: Vec<u64> = snapshot.latency.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]);
        assert_eq!(snapshot.latency.buckets[0].le_seconds, 0.005);
    }

    #[test]
    fn errors_are_counted_by_kind_and_the_snapshot_serializes() {
        let metrics = ServiceMetrics::default();
        metrics.outcome(Some(ErrorKind::Timeout));
        metrics.outcome(Some(ErrorKind::Timeout));
        metrics.outcome(None);
        metrics.breaker_transition(BreakerState::Open);
        let snapshot = metrics.snapshot(Service::Cart);
        assert_eq!(snapshot.errors["TIMEOUT"], 2);
        assert_eq!(snapshot.errors["NOT_FOUND"], 0);
        assert_eq!(snapshot.successes, 1);
        assert_eq!(snapshot.breaker.state, BreakerState::Open);
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["service"], "cart");
        assert_eq!(json["breaker"]["state"], "open");
        assert_eq!(json["errors"]["TIMEOUT"], 2);
    }
}

//! Prometheus metrics: `GET /metrics`, the series of every request (recorded by the middleware
//! of [`crate::http`]), and the export of the downstream clients' counters.
//!
//! One [`Metrics`] per server (not a process-global recorder): each [`Server`](crate::Server)
//! owns a `metrics-exporter-prometheus` recorder, records into it through
//! [`metrics::with_local_recorder`] ([`Metrics::record`]), and renders it at `/metrics` through
//! its `PrometheusHandle`. A gateway process runs one server, so in production this is the same
//! as a global recorder; tests start several gateways in one process, and each one's `/metrics`
//! shows its own requests only, so tests can assert exact values. No exporter HTTP listener is
//! used: the text is served by the gateway's own router.
//!
//! Every series carries the label `gateway` (`bff-web`, `bff-mobile`, `bff-partner`). Label
//! cardinality is bounded: routes are templates (axum's `MatchedPath`, `unmatched` otherwise,
//! never a raw path), methods outside the standard ones are `other`, statuses are classes
//! (`2xx`…), and any other label a gateway adds goes through [`Metrics::bounded`], which keeps at
//! most [`MAX_LABEL_VALUES`] values per label and reports the rest as `other`.
//!
//! The downstream series are not counted here: `shared-clients` counts them with atomics and
//! this module copies its [`MetricsSnapshot`] into the recorder at scrape time (counters set with
//! `absolute`, gauges set), so the client library stays free of exporter code. The downstream
//! latency histogram arrives pre-aggregated (cumulative buckets), which the `metrics` facade
//! cannot express, so those few lines are written here in the exposition format.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Instant,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use shared_clients::{Downstream, MetricsSnapshot};

/// Where the metrics are served.
pub const PATH: &str = "/metrics";

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often [`Metrics::run_upkeep`] runs while a server serves: bounds the histogram samples
/// kept between scrapes to a few seconds' worth.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Most distinct values one bounded label keeps; later new values are reported as `other`.
pub const MAX_LABEL_VALUES: usize = 100;

/// Upper bounds of the request latency histograms, in seconds (the same as the downstream
/// clients' buckets, so the two can be compared on one panel).
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The name of the downstream latency histogram, rendered by hand from the snapshot.
const DOWNSTREAM_LATENCY: &str = "bff_downstream_request_duration_seconds";

/// The metrics of one gateway server. Cheap to clone; every clone records into the same recorder.
#[derive(Clone)]
pub struct Metrics {
    /// Shared by the middleware, the `/metrics` handler and the gateway's own code.
    inner: Arc<Inner>,
}

/// The parts of [`Metrics`].
struct Inner {
    /// Where every series is recorded; used through [`metrics::with_local_recorder`].
    recorder: PrometheusRecorder,
    /// Renders the recorder's series as text.
    handle: PrometheusHandle,
    /// The `gateway` label, repeated on the hand-rendered downstream histogram.
    gateway: String,
    /// The downstream clients whose counters are exported at scrape time, if any.
    downstream: Option<Downstream>,
    /// The values seen so far of each bounded label, to cap their number.
    seen: Mutex<HashMap<&'static str, HashSet<String>>>,
    /// `bff_http_requests_in_flight`.
    in_flight: Gauge,
    /// The per-request series of each route template seen so far.
    routes: RwLock<HashMap<Box<str>, Arc<RouteSeries>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("gateway", &self.inner.gateway)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh recorder for the gateway named `gateway`, exporting `downstream`'s counters too.
    pub fn new(gateway: &str, downstream: Option<Downstream>) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label("gateway", gateway)
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let in_flight =
            metrics::with_local_recorder(&recorder, || gauge!("bff_http_requests_in_flight"));
        let metrics = Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                gateway: gateway.to_owned(),
                downstream,
                seen: Mutex::new(HashMap::new()),
                in_flight,
                routes: RwLock::new(HashMap::new()),
            }),
        };
        metrics.record(describe);
        metrics
    }

    /// Folds the samples recorded since the last scrape into the histograms' buckets. The
    /// recorder keeps every histogram sample until then, so without this a gateway that nobody
    /// scrapes grows by ~20 bytes per request (measured: +4 MB per 200k requests, flat once
    /// scraped); [`Server::serve`](crate::Server::serve) runs it every [`UPKEEP_INTERVAL`].
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Runs `f` with this server's recorder as the current one, so the `metrics` macros
    /// (`counter!`, `histogram!`, …) inside it record here. Handles they return keep recording
    /// here after `f` returns.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// `value` as a label value, or `other` once [`MAX_LABEL_VALUES`] other values of `label`
    /// have been seen: keeps a label bounded whose values are not known in advance. Values that
    /// clients choose freely never go through it (they would fill it with junk first): those are
    /// labelled only from a configured list (bff-web's operation names).
    pub fn bounded(&self, label: &'static str, value: &str) -> String {
        let mut seen = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = seen.entry(label).or_default();
        if values.contains(value) {
            return value.to_owned();
        }
        if values.len() < MAX_LABEL_VALUES {
            values.insert(value.to_owned());
            return value.to_owned();
        }
        "other".to_owned()
    }

    /// Every series in the Prometheus text format, the downstream counters as of now.
    pub fn render(&self) -> String {
        let snapshot = self.inner.downstream.as_ref().map(Downstream::metrics);
        if let Some(snapshot) = &snapshot {
            self.record(|| export_downstream(snapshot));
        }
        self.inner.handle.run_upkeep();
        let mut text = self.inner.handle.render();
        if let Some(snapshot) = &snapshot {
            render_downstream_latency(&mut text, &self.inner.gateway, snapshot);
        }
        text
    }
}

/// `GET /metrics`.
pub fn routes(metrics: Metrics) -> Router {
    Router::new().route(PATH, get(scrape).with_state(metrics))
}

/// Renders the metrics.
async fn scrape(State(metrics): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        metrics.render(),
    )
        .into_response()
}

/// The series of one request, begun by [`Metrics::begin`]: holds the in-flight gauge up (until
/// dropped, also when the request is cancelled) and, on [`RequestMetrics::finish`], counts the
/// request by route template, method and status class and records its duration.
pub(crate) struct RequestMetrics {
    /// Where the series are recorded.
    metrics: Metrics,
    /// The route template's series handles.
    series: Arc<RouteSeries>,
    /// Index of the method's label in [`METHOD_LABELS`].
    method: usize,
    /// When the request arrived.
    started: Instant,
    /// Taken down when this is dropped.
    in_flight: Gauge,
}

impl RequestMetrics {
    /// Counts the request as answered with `status` and records how long it took.
    pub(crate) fn finish(self, status: u16) {
        let class = status_class_index(status);
        self.metrics
            .requests_counter(&self.series, self.method, class)
            .increment(1);
        self.metrics
            .duration_histogram(&self.series, self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
}

/// The per-request series of one route template, their handles resolved on first use, so that
/// a request costs no label formatting and no registry lookup.
struct RouteSeries {
    /// The `route` label.
    route: Box<str>,
    /// `bff_http_requests_total`, by method and status class.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHOD_LABELS.len()],
    /// `bff_http_request_duration_seconds`, by method.
    durations: [OnceLock<Histogram>; METHOD_LABELS.len()],
}

impl Metrics {
    /// Starts the series of `request`: takes the in-flight gauge up and hands this [`Metrics`]
    /// to the handlers as a request extension (where gateways find it to record their own
    /// series). `route` is the matched route template, `None` for an unmatched request.
    pub(crate) fn begin(&self, route: Option<&str>, request: &mut Request) -> RequestMetrics {
        let series = self.route_series(route.unwrap_or("unmatched"));
        let method = method_index(request.method());
        request.extensions_mut().insert(self.clone());
        let in_flight = self.inner.in_flight.clone();
        in_flight.increment(1.0);
        RequestMetrics {
            metrics: self.clone(),
            series,
            method,
            started: Instant::now(),
            in_flight,
        }
    }

    /// Shows the request series of `GET route` from the start, at zero (answered `2xx`, `5xx`,
    /// and the duration histogram), for a route every server has (the probes): the series the
    /// SLO rules read (`deploy/prometheus`) then exist before a gateway's first request.
    pub(crate) fn show_route_from_start(&self, route: &str) {
        let series = self.route_series(route);
        let get = method_index(&Method::GET);
        for status in [200, 500] {
            self.requests_counter(&series, get, status_class_index(status));
        }
        self.duration_histogram(&series, get);
    }

    /// `bff_http_requests_total` of `series`, by method and status class (registered on first use).
    fn requests_counter<'a>(
        &self,
        series: &'a RouteSeries,
        method: usize,
        class: usize,
    ) -> &'a Counter {
        series.requests[method][class].get_or_init(|| {
            self.record(|| {
                counter!(
                    "bff_http_requests_total",
                    "method" => METHOD_LABELS[method],
                    "route" => series.route.to_string(),
                    "status_class" => STATUS_CLASSES[class],
                )
            })
        })
    }

    /// `bff_http_request_duration_seconds` of `series`, by method (registered on first use).
    fn duration_histogram<'a>(&self, series: &'a RouteSeries, method: usize) -> &'a Histogram {
        series.durations[method].get_or_init(|| {
            self.record(|| {
                histogram!(
                    "bff_http_request_duration_seconds",
                    "method" => METHOD_LABELS[method],
                    "route" => series.route.to_string(),
                )
            })
        })
    }

    /// The series handles of `route` (a template: the router's routes bound their number).
    fn route_series(&self, route: &str) -> Arc<RouteSeries> {
        let routes = &self.inner.routes;
        if let Some(series) = routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
        {
            return Arc::clone(series);
        }
        let mut routes = routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = routes.entry(route.into()).or_insert_with(|| {
            Arc::new(RouteSeries {
                route: route.into(),
                requests: Default::default(),
                durations: Default::default(),
            })
        });
        Arc::clone(series)
    }
}

/// The `method` label values; a method outside the standard ones is `other` (the last).
const METHOD_LABELS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

/// The `status_class` label values, by hundreds (1xx at 0).
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A method's index in [`METHOD_LABELS`].
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A status code's index in [`STATUS_CLASSES`] (anything outside 1xx–4xx counts as 5xx).
fn status_class_index(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// The help texts and units of every series recorded through the facade.
fn describe() {
    describe_counter!(
        "bff_http_requests_total",
        "Requests answered, by route template, method and status class."
    );
    describe_histogram!(
        "bff_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, by route template and method."
    );
    describe_gauge!(
        "bff_http_requests_in_flight",
        "Requests being answered now."
    );
    describe_counter!(
        "bff_downstream_calls_total",
        "Logical downstream calls (one per client call, whatever its attempts)."
    );
    describe_counter!(
        "bff_downstream_successes_total",
        "Logical downstream calls that succeeded."
    );
    describe_counter!(
        "bff_downstream_errors_total",
        "Logical downstream calls that failed, by error class."
    );
    describe_counter!(
        "bff_downstream_attempts_total",
        "Requests sent downstream: first attempts plus retries."
    );
    describe_counter!("bff_downstream_retries_total", "Retries sent downstream.");
    describe_counter!(
        "bff_downstream_retries_denied_total",
        "Retries the retry budget refused."
    );
    describe_counter!(
        "bff_downstream_rejections_total",
        "Calls refused without a request: deadline spent, breaker open or bulkhead full."
    );
    describe_gauge!(
        "bff_downstream_in_flight",
        "Downstream requests in flight now."
    );
    describe_gauge!(
        "bff_downstream_breaker_state",
        "1 for the circuit breaker's current state (closed, open, half_open), 0 for the others."
    );
    describe_counter!(
        "bff_downstream_breaker_transitions_total",
        "Circuit breaker transitions, by the state entered."
    );
    describe_counter!(
        "bff_redis_commands_total",
        "Commands sent to Redis (a pipeline or a script counts one)."
    );
    describe_counter!(
        "bff_redis_errors_total",
        "Redis commands that failed or timed out, by operation."
    );
    describe_counter!(
        "bff_redis_fallback_total",
        "Times a shared feature used its in-process behaviour because Redis failed, by feature."
    );
    describe_counter!(
        "bff_events_total",
        "Change events read, by type and outcome (applied, ignored: not newer, malformed)."
    );
    describe_gauge!(
        "bff_live_topics",
        "Resources followed live (products, carts, orders) with at least one subscriber."
    );
    describe_gauge!(
        "bff_live_subscribers",
        "Live subscriptions open (GraphQL subscriptions and mobile streams)."
    );
    describe_counter!(
        "bff_live_signals_total",
        "Changes signalled to followed resources (one per change, whatever the subscribers)."
    );
    describe_counter!(
        "bff_live_stale_events_total",
        "Change events dropped for a followed resource as older than one already signalled."
    );
    describe_counter!(
        "bff_live_polls_total",
        "Reads of followed resources by polling (when their change events are not read)."
    );
    describe_counter!(
        "bff_live_refusals_total",
        "Live streams or subscriptions refused by a limit, by reason (gateway.subscriptions)."
    );
    describe_counter!(
        "bff_live_poll_errors_total",
        "Polls of followed resources that failed."
    );
    describe_counter!(
        "bff_events_gaps_total",
        "Times a stream's consumer found it had missed events (and dropped its cached copies)."
    );
    describe_gauge!(
        "bff_events_consumer_up",
        "1 while the stream's consumer is connected and reading."
    );
    describe_gauge!(
        "bff_events_healthy",
        "1 while the catalog consumer vouches for event-driven freshness, 0 in fallback (ordinary TTLs)."
    );
    describe_gauge!(
        "bff_events_lag_entries",
        "Entries appended to the stream but not yet read, at the consumer's last check."
    );
    describe_gauge!(
        "bff_events_lag_seconds",
        "How old the last event read from the stream was when it was applied."
    );
    describe_gauge!(
        "bff_events_last_event_age_seconds",
        "How old the last event read from the stream is now."
    );
    describe_gauge!(
        "bff_redis_up",
        "1 while Redis is used, 0 while it is skipped after a failure (shared.retry_after)."
    );
    for (name, help) in CACHE_COUNTERS {
        describe_counter!(*name, *help);
    }
    describe_gauge!("bff_cache_entries", "Entries held by the cache now.");
    describe_gauge!(
        "bff_cache_bytes",
        Unit::Bytes,
        "Approximate bytes held by the cache now."
    );
}

/// The per-cache counters: name and help.
const CACHE_COUNTERS: &[(&str, &str)] = &[
    ("bff_cache_hits_total", "Answers from a fresh cache entry."),
    (
        "bff_cache_misses_total",
        "Lookups that called the service or joined a call in flight.",
    ),
    (
        "bff_cache_stale_total",
        "Answers from a stale entry (while revalidating or instead of an error).",
    ),
    (
        "bff_cache_stale_if_error_total",
        "Stale answers given instead of an error.",
    ),
    ("bff_cache_refreshes_total", "Background refreshes started."),
    (
        "bff_cache_refresh_failures_total",
        "Background refreshes that failed.",
    ),
    (
        "bff_cache_not_modified_total",
        "Revalidations answered 304 Not Modified.",
    ),
    (
        "bff_cache_negative_hits_total",
        "Answers from a remembered 404.",
    ),
    (
        "bff_cache_invalidations_total",
        "Owners whose entries a write invalidated.",
    ),
    (
        "bff_cache_evictions_total",
        "Entries evicted to stay within the byte budget.",
    ),
    (
        "bff_cache_l2_hits_total",
        "Misses answered from the shared second-level cache (Redis) instead of the service.",
    ),
    (
        "bff_cache_l2_misses_total",
        "Misses the shared second-level cache could not answer either.",
    ),
    (
        "bff_cache_lease_waits_total",
        "Times a replica waited for another replica's fetch of a key instead of calling.",
    ),
];

/// Copies the downstream counters and gauges into the current recorder.
fn export_downstream(snapshot: &MetricsSnapshot) {
    let live = &snapshot.live;
    gauge!("bff_live_topics").set(live.topics as f64);
    gauge!("bff_live_subscribers").set(live.subscribers as f64);
    counter!("bff_live_signals_total").absolute(live.signals);
    counter!("bff_live_stale_events_total").absolute(live.stale_events);
    counter!("bff_live_polls_total").absolute(live.polls);
    counter!("bff_live_poll_errors_total").absolute(live.poll_errors);
    if let Some(events) = &snapshot.events {
        gauge!("bff_events_healthy").set(if events.catalog_healthy { 1.0 } else { 0.0 });
        for (kind, outcome, count) in &events.events {
            counter!("bff_events_total", "type" => kind.clone(), "outcome" => *outcome)
                .absolute(*count);
        }
        for stream in &events.streams {
            let name = stream.stream;
            counter!("bff_events_gaps_total", "stream" => name).absolute(stream.gaps);
            gauge!("bff_events_consumer_up", "stream" => name).set(if stream.up {
                1.0
            } else {
                0.0
            });
            gauge!("bff_events_lag_seconds", "stream" => name).set(stream.lag_seconds);
            gauge!("bff_events_lag_entries", "stream" => name).set(stream.lag_entries as f64);
            if let Some(age) = stream.last_event_age_seconds {
                gauge!("bff_events_last_event_age_seconds", "stream" => name).set(age);
            }
        }
    }
    if let Some(redis) = &snapshot.redis {
        counter!("bff_redis_commands_total").absolute(redis.commands);
        for (op, count) in &redis.errors {
            counter!("bff_redis_errors_total", "op" => *op).absolute(*count);
        }
        for (feature, count) in &redis.fallbacks {
            counter!("bff_redis_fallback_total", "feature" => *feature).absolute(*count);
        }
        gauge!("bff_redis_up").set(if redis.backing_off { 0.0 } else { 1.0 });
    }
    for s in &snapshot.services {
        let service = s.service.as_str();
        counter!("bff_downstream_calls_total", "service" => service).absolute(s.calls);
        counter!("bff_downstream_successes_total", "service" => service).absolute(s.successes);
        for (class, count) in &s.errors {
            counter!("bff_downstream_errors_total", "service" => service, "class" => *class)
                .absolute(*count);
        }
        counter!("bff_downstream_attempts_total", "service" => service).absolute(s.attempts);
        counter!("bff_downstream_retries_total", "service" => service).absolute(s.retries);
        counter!("bff_downstream_retries_denied_total", "service" => service)
            .absolute(s.retries_denied);
        for (reason, count) in [
            ("deadline", s.deadline_exceeded),
            ("breaker_open", s.breaker_rejections),
            ("bulkhead_full", s.bulkhead_rejections),
        ] {
            counter!("bff_downstream_rejections_total", "service" => service, "reason" => reason)
                .absolute(count);
        }
        gauge!("bff_downstream_in_flight", "service" => service).set(s.in_flight as f64);
        for state in [
            shared_clients::BreakerState::Closed,
            shared_clients::BreakerState::Open,
            shared_clients::BreakerState::HalfOpen,
        ] {
            let current = if s.breaker.state == state { 1.0 } else { 0.0 };
            gauge!("bff_downstream_breaker_state", "service" => service, "state" => state.as_str())
                .set(current);
        }
        for (to, count) in [
            ("open", s.breaker.opened),
            ("half_open", s.breaker.half_opened),
            ("closed", s.breaker.closed),
        ] {
            counter!("bff_downstream_breaker_transitions_total", "service" => service, "to" => to)
                .absolute(count);
        }
    }
    for c in &snapshot.caches {
        let cache = c.cache;
        let values = [
            c.hits,
            c.misses,
            c.stale_served,
            c.stale_if_error,
            c.refreshes,
            c.refresh_failures,
            c.not_modified,
            c.negative_hits,
            c.invalidations,
            c.evictions,
            c.l2_hits,
            c.l2_misses,
            c.lease_waits,
        ];
        for ((name, _), value) in CACHE_COUNTERS.iter().zip(values) {
            counter!(*name, "cache" => cache).absolute(value);
        }
        gauge!("bff_cache_entries", "cache" => cache).set(c.entries as f64);
        gauge!("bff_cache_bytes", "cache" => cache).set(c.bytes as f64);
    }
}

/// Appends the downstream attempt latency histogram, per service, in the text format.
fn render_downstream_latency(out: &mut String, gateway: &str, snapshot: &MetricsSnapshot) {
    let gateway = escape(gateway);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {DOWNSTREAM_LATENCY} Time each downstream request (attempt) took, by service."
    );
    let _ = writeln!(out, "# TYPE {DOWNSTREAM_LATENCY} histogram");
    for s in &snapshot.services {
        let labels = format!("gateway=\"{gateway}\",service=\"{}\"", s.service.as_str());
        for bucket in &s.latency.buckets {
            let _ = writeln!(
                out,
                "{DOWNSTREAM_LATENCY}_bucket{{{labels},le=\"{}\"}} {}",
                bucket.le_seconds, bucket.count
            );
        }
        let _ = writeln!(
            out,
            "{DOWNSTREAM_LATENCY}_bucket{{{labels},le=\"+Inf\"}} {}",
            s.latency.count
        );
        let _ = writeln!(
            out,
            "{DOWNSTREAM_LATENCY}_sum{{{labels}}} {}",
            s.latency.sum_seconds
        );
        let _ = writeln!(
            out,
            "{DOWNSTREAM_LATENCY}_count{{{labels}}} {}",
            s.latency.count
        );
    }
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_keeps_every_histogram_sample_counted() {
        let metrics = Metrics::new("test", None);
        let histogram = metrics.record(|| histogram!("bff_test_seconds"));
        for _ in 0..1000 {
            histogram.record(0.007);
        }
        metrics.run_upkeep();
        for _ in 0..500 {
            histogram.record(0.3);
        }
        metrics.run_upkeep();
        let text = metrics.render();
        assert!(
            text.contains("bff_test_seconds_count{gateway=\"test\"} 1500"),
            "{text}"
        );
        assert!(
            text.contains("bff_test_seconds_bucket{gateway=\"test\",le=\"0.01\"} 1000"),
            "{text}"
        );
    }

    #[test]
    fn a_bounded_label_keeps_its_first_values_and_reports_the_rest_as_other() {
        let metrics = Metrics::new("test", None);
        for i in 0..MAX_LABEL_VALUES {
            assert_eq!(
                metrics.bounded("operation", &format!("op{i}")),
                format!("op{i}")
            );
        }
        assert_eq!(metrics.bounded("operation", "op0"), "op0");
        assert_eq!(metrics.bounded("operation", "one_too_many"), "other");
        assert_eq!(metrics.bounded("code", "fresh"), "fresh");
    }

    #[test]
    fn two_servers_in_one_process_count_separately() {
        let a = Metrics::new("a", None);
        let b = Metrics::new("b", None);
        a.record(|| counter!("bff_test_total").increment(2));
        b.record(|| counter!("bff_test_total").increment(5));
        assert!(a.render().contains("bff_test_total{gateway=\"a\"} 2"));
        assert!(b.render().contains("bff_test_total{gateway=\"b\"} 5"));
    }

    #[test]
    fn statuses_and_methods_are_bounded_classes() {
        assert_eq!(STATUS_CLASSES[status_class_index(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class_index(429)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class_index(503)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class_index(99)], "5xx");
        let brew = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHOD_LABELS[method_index(&brew)], "other");
        assert_eq!(METHOD_LABELS[method_index(&Method::DELETE)], "DELETE");
    }

    #[test]
    fn a_route_shown_from_start_has_its_request_series_at_zero_before_any_request() {
        let metrics = Metrics::new("a", None);
        metrics.show_route_from_start("/health");
        let text = metrics.render();
        for line in [
            "bff_http_requests_total{gateway=\"a\",method=\"GET\",route=\"/health\",status_class=\"2xx\"} 0",
            "bff_http_requests_total{gateway=\"a\",method=\"GET\",route=\"/health\",status_class=\"5xx\"} 0",
            "bff_http_request_duration_seconds_count{gateway=\"a\",method=\"GET\",route=\"/health\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status_class() {
        let metrics = Metrics::new("a", None);
        let request = |method: Method| {
            let mut request = Request::new(axum::body::Body::empty());
            *request.method_mut() = method;
            request
        };
        let mut get = request(Method::GET);
        let first = metrics.begin(Some("/items/{id}"), &mut get);
        assert!(get.extensions().get::<Metrics>().is_some());
        let second = metrics.begin(Some("/items/{id}"), &mut request(Method::GET));
        let third = metrics.begin(None, &mut request(Method::POST));
        assert!(
            metrics
                .render()
                .contains("bff_http_requests_in_flight{gateway=\"a\"} 3")
        );
        first.finish(200);
        second.finish(404);
        drop(third); // cancelled: not counted, no longer in flight
        let text = metrics.render();
        for line in [
            "bff_http_requests_in_flight{gateway=\"a\"} 0",
            "bff_http_requests_total{gateway=\"a\",method=\"GET\",route=\"/items/{id}\",status_class=\"2xx\"} 1",
            "bff_http_requests_total{gateway=\"a\",method=\"GET\",route=\"/items/{id}\",status_class=\"4xx\"} 1",
            "bff_http_request_duration_seconds_count{gateway=\"a\",method=\"GET\",route=\"/items/{id}\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("unmatched"), "{text}");
    }
}

//! The middleware stack every gateway router gets, and the one place it is assembled.
//!
//! From the outside in:
//! 1. credentials (`Authorization`, `Cookie`, `X-Api-Key`) are marked sensitive, so no log line
//!    prints them;
//! 2. a request id: the client's `X-Request-Id` when it is sane (≤ 128 characters of
//!    `[A-Za-z0-9._:-]`), otherwise a new UUID; echoed on the response and passed downstream;
//! 3. a W3C `traceparent`: the client's when it is valid, otherwise a new one (random trace id,
//!    sampled), set on the request so that every gateway's downstream context sends it and all
//!    downstream calls of one request share one trace id;
//! 4. one `tracing` span per request, its fields named as OpenTelemetry's HTTP semantic
//!    conventions name them (`http.request.method`, `http.route` — the template —, `url.path`,
//!    `server.address`, `http.response.status_code`) plus `trace_id` and `request_id`, so every
//!    log line of the request carries them, and one log line when it finishes (status, latency):
//!    the access log, sampled above `server.access_log_sample_above_rps` ([`AccessLog`]);
//!    With OTLP export on ([`crate::telemetry`]), this span continues the client's trace (its
//!    parent is the client's valid `traceparent`; without one it starts a new trace, the
//!    generated header of step 3 is not its parent) and `trace_id` is the trace id it is exported
//!    with;
//! 5. with OTLP export on, the request's `traceparent` is rewritten to point at that span
//!    (`00-<trace id>-<span id>-<flags>`), so the downstream calls, which send it, are its
//!    children in the exported trace; with export off the header is left as step 3 set it;
//! 6. a panic in a handler becomes a 500 problem, never a dropped connection; a request whose
//!    body did not arrive within `server.body_read_timeout` ([`crate::connection`]) gets 408,
//!    whatever the handler made of the read error;
//! 7. every error response that is not already JSON (axum's plain-text rejections, an empty 405,
//!    the body limit's 413, …) becomes `application/problem+json`, keeping `Allow`,
//!    `Retry-After` and `WWW-Authenticate`;
//! 8. request bodies above `server.max_body_bytes` get 413 (enforced by every body extractor
//!    through axum's `DefaultBodyLimit`; handlers read bodies only through extractors);
//! 9. on a gateway's server, the request's Prometheus series ([`crate::metrics`]): counted by
//!    route template, method and status class, timed, and the in-flight gauge.
//!
//! Around all of them, outermost, answers are compressed ([`crate::compression`],
//! `server.compression`): after step 7, so a problem is made of the plain body.
//!
//! Steps 1–7 and 9 are one service ([`Edge`]) with one future per request: as a chain of
//! separate layers (tower-http's and axum's `map_request`/`from_fn`), each layer cloned the
//! stack below it and boxed a future of its own on every request, which cost more CPU than the
//! work itself (docs/BENCHMARKS.md).

use std::{
    any::Any,
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{FutureExt as _, future::BoxFuture};
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TraceId},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use shared_clients::TraceParent;
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    compression::CompressLayer,
    config::ServerConfig,
    connection::{BodyDeadline, body_timeout_response},
    metrics::Metrics,
    problem::Problem,
};

/// The request id header, set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Largest error body read back to turn into a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Request headers holding credentials, marked sensitive.
const SENSITIVE: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Wraps `router` in the common middleware, adds the problem+json 404 fallback.
pub fn apply(router: Router, config: &ServerConfig) -> Router {
    stack(router, config, None)
}

/// [`apply`], and each request's series recorded in `metrics` (step 9).
pub(crate) fn apply_with_metrics(
    router: Router,
    config: &ServerConfig,
    metrics: Metrics,
) -> Router {
    stack(router, config, Some(metrics))
}

fn stack(router: Router, config: &ServerConfig, metrics: Option<Metrics>) -> Router {
    // One `Router::layer` call: each one boxes every route once more.
    let middleware = ServiceBuilder::new()
        .option_layer(CompressLayer::new(&config.compression))
        .layer(EdgeLayer {
            metrics,
            access_log: Arc::new(AccessLog::new(config)),
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    router
        .fallback(|| async { Problem::status(StatusCode::NOT_FOUND) })
        .layer(middleware)
}

/// Makes [`Edge`]s.
#[derive(Clone)]
struct EdgeLayer {
    /// Where each request's series go, on a gateway's server.
    metrics: Option<Metrics>,
    /// Which finished requests are logged, shared by every route.
    access_log: Arc<AccessLog>,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            metrics: self.metrics.clone(),
            access_log: Arc::clone(&self.access_log),
        }
    }
}

/// Steps 1–7 and 9 of the module's list around one route.
#[derive(Clone)]
struct Edge<S> {
    /// The route.
    inner: S,
    /// Where each request's series go, if anywhere.
    metrics: Option<Metrics>,
    /// Which finished requests are logged.
    access_log: Arc<AccessLog>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        // The service that was polled ready is the one called; a clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let series = self.metrics.as_ref().map(|metrics| {
            let route = request.extensions().get::<MatchedPath>().cloned();
            metrics.begin(route.as_ref().map(MatchedPath::as_str), &mut request)
        });
        let body_deadline = request.extensions_mut().remove::<BodyDeadline>();
        mark_sensitive(request.headers_mut());
        let request_id = ensure_request_id(request.headers_mut());
        let generated = ensure_traceparent(request.headers_mut());
        let span = request_span(&request, generated);
        if crate::telemetry::exporting() {
            point_traceparent_at(&span, request.headers_mut());
        }
        let access_log = Arc::clone(&self.access_log);
        let answer = async move {
            // A panic while calling the route or while polling its future becomes a 500.
            let response = match AssertUnwindSafe(async move { inner.call(request).await })
                .catch_unwind()
                .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(infallible)) => match infallible {},
                Err(panic) => panic_response(panic),
            };
            // A body that did not arrive in time is the client's fault, whatever the handler made
            // of the read error: 408.
            let response = match body_deadline {
                Some(deadline) if deadline.expired() => body_timeout_response(),
                _ => response,
            };
            let mut response = problem_for_plain_errors(response).await;
            if let Some(request_id) = request_id {
                response
                    .headers_mut()
                    .entry(REQUEST_ID)
                    .or_insert(request_id);
            }
            let skipped = finished(&response, started, &access_log);
            (response, skipped)
        }
        .instrument(span);
        Box::pin(async move {
            let (response, skipped) = answer.await;
            if let Some(skipped) = skipped {
                // Outside the request's span: the count is of other requests.
                AccessLog::report(skipped);
            }
            if let Some(series) = series {
                series.finish(response.status().as_u16());
            }
            Ok(response)
        })
    }
}

/// Marks the credential headers sensitive (step 1), so that no `Debug` print shows them.
fn mark_sensitive(headers: &mut HeaderMap) {
    for name in &SENSITIVE {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Keeps a sane client request id or sets a new one (step 2); returns it, to be echoed.
fn ensure_request_id(headers: &mut HeaderMap) -> Option<HeaderValue> {
    if let Some(value) = headers.get(&REQUEST_ID)
        && is_sane_request_id(value)
    {
        return Some(value.clone());
    }
    let value = new_request_id()?;
    headers.insert(REQUEST_ID, value.clone());
    Some(value)
}

/// The request id of a request that went through [`apply`]'s middleware.
pub fn request_id(request: &http::request::Parts) -> Option<&str> {
    request
        .headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
}

/// The request's span (step 4), with OpenTelemetry's HTTP attribute names. With OTLP export on,
/// it continues the client's trace (see [`continue_client_trace`]) unless `generated_parent`
/// (the `traceparent` is the gateway's own, step 3).
fn request_span(request: &Request, generated_parent: bool) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str);
    let header = |name: &HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let request_id = header(&REQUEST_ID);
    let server_address = request
        .uri()
        .host()
        .unwrap_or_else(|| host_without_port(header(&header::HOST)));
    let exporting = crate::telemetry::exporting();
    // Without export, both ids are known now and given at creation (a field recorded later costs
    // the log formatter a second pass). With export, the trace id is known only once the span
    // exists (a new trace's id comes from the OpenTelemetry layer); both are recorded then, in
    // their declared order, so that log lines show them in the same order either way.
    let local = (!exporting).then(|| (trace_id(header(&TRACEPARENT)), request_id));
    let span = tracing::info_span!(
        "request",
        "http.request.method" = %request.method(),
        "http.route" = route,
        "url.path" = request.uri().path(),
        "server.address" = server_address,
        // Recorded when exporting only: log lines have the status in the request's last line.
        "http.response.status_code" = tracing::field::Empty,
        trace_id = local.map(|(trace_id, _)| trace_id),
        request_id = local.map(|(_, request_id)| request_id),
        // Read by the OpenTelemetry layer only, recorded only when exporting (log lines skip
        // fields never recorded).
        "otel.kind" = tracing::field::Empty,
        "otel.name" = tracing::field::Empty,
    );
    if exporting {
        // A server span named `{method} {route}`, as OpenTelemetry's HTTP conventions name it.
        span.record("otel.kind", "server");
        span.record("otel.name", format!("{} {route}", request.method()));
        let parent = (!generated_parent).then(|| request.headers());
        match continue_client_trace(&span, parent) {
            Some(exported) => span.record("trace_id", exported.to_string()),
            None => span.record("trace_id", trace_id(header(&TRACEPARENT))),
        };
        span.record("request_id", request_id);
    }
    span
}

/// With OTLP export on, makes `span` a child of the client's `traceparent` in `client_headers`
/// (when there is a valid one) and returns the trace id the span is exported with. `None` when
/// nothing is exported: export is off, or the log filter disabled the span.
fn continue_client_trace(
    span: &tracing::Span,
    client_headers: Option<&HeaderMap>,
) -> Option<TraceId> {
    if let Some(headers) = client_headers {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            // Fails only when there is no OpenTelemetry layer (export off) or no span: nothing to
            // continue then.
            drop(span.set_parent(parent));
        }
    }
    let context = span.context();
    let exported = context.span();
    let exported = exported.span_context();
    exported.is_valid().then(|| exported.trace_id())
}

/// With OTLP export on (step 5), sets the request's `traceparent` to the request's `span`
/// (`00-<trace id>-<span id>-<sampled>`), so the downstream calls, which send the request's
/// `traceparent`, are exported as its children. With the span disabled, the header stays what
/// [`ensure_traceparent`] left.
fn point_traceparent_at(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if span.is_valid() {
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            u8::from(span.is_sampled())
        );
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT, value);
        }
    }
}

/// Logs the request's end, inside its span, unless the access log is sampled and this request
/// is not one it keeps; with export on, records the status on the span. Returns how many
/// requests were not logged, when this request is the one to report them ([`AccessLog::keeps`]).
fn finished(response: &Response, started: Instant, access_log: &AccessLog) -> Option<u64> {
    let status = response.status().as_u16();
    if crate::telemetry::exporting() {
        // As an i64: OpenTelemetry attributes have no unsigned integers (a u64 would be exported
        // as a string).
        tracing::Span::current().record("http.response.status_code", i64::from(status));
    }
    let now = Instant::now();
    let latency = now.saturating_duration_since(started);
    let (keep, skipped) = access_log.keeps(status, latency, now);
    if keep {
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(status, latency_ms, "finished processing request");
    }
    skipped
}

/// Which finished requests get an access-log line (`server.access_log_sample_above_rps`,
/// `server.access_log_slow_threshold`).
///
/// Every request is logged while `per_second` is 0 (the default). Otherwise, per second of this
/// process: errors (status 400 and above) and requests slower than `slow` are always logged;
/// of the others, the first `per_second` are logged and the rest counted. The first request of
/// a later second reports how many were not logged ([`AccessLog::report`], one line outside any
/// request's span):
/// a sampled log still accounts for every request. (The rate is per gateway process, across
/// every route; the `bff_http_requests_total` series count every request regardless.)
struct AccessLog {
    /// Successful, fast requests logged per second at most; `0`: all.
    per_second: u64,
    /// A request at least this slow is always logged.
    slow: Duration,
    /// Where this log's seconds are counted from.
    epoch: Instant,
    /// The second (since `epoch`) the counts are for.
    second: AtomicU64,
    /// Successful, fast requests seen in that second.
    seen: AtomicU64,
    /// Requests not logged since the last line that said how many.
    skipped: AtomicU64,
}

impl AccessLog {
    /// The sampling `config` asks for.
    fn new(config: &ServerConfig) -> Self {
        Self {
            per_second: config.access_log_sample_above_rps,
            slow: config.access_log_slow_threshold,
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether a request that ended with `status` after `latency`, at `now`, is logged (else it
    /// is counted, to be reported), and, when it opens a new second after skipped requests, how
    /// many there were (for [`AccessLog::report`]).
    fn keeps(&self, status: u16, latency: Duration, now: Instant) -> (bool, Option<u64>) {
        if self.per_second == 0 || status >= 400 || latency >= self.slow {
            return (true, None);
        }
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let current = self.second.load(Ordering::Relaxed);
        let mut report = None;
        if second > current
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // This request opens a new second (exactly one request wins the exchange).
            self.seen.store(0, Ordering::Relaxed);
            report = Some(self.skipped.swap(0, Ordering::Relaxed)).filter(|&n| n > 0);
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) < self.per_second {
            (true, report)
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            (false, report)
        }
    }

    /// The line that accounts for `skipped` requests the access log did not show.
    fn report(skipped: u64) {
        tracing::info!(
            skipped,
            "access log sampled: successful requests not logged since the last such line \
             (server.access_log_sample_above_rps)"
        );
    }
}

/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Sets a fresh `traceparent` on a request that has none or an invalid one (step 3), so the
/// gateway's downstream calls (which send the request's `traceparent`) share one trace id.
/// Returns whether it did: no client span is the parent of the request's span then.
fn ensure_traceparent(headers: &mut HeaderMap) -> bool {
    let valid = headers
        .get(&TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| TraceParent::parse(value).is_ok());
    if valid {
        return false;
    }
    match HeaderValue::from_bytes(&new_traceparent()) {
        Ok(value) => {
            headers.insert(TRACEPARENT, value);
            true
        }
        Err(_) => false,
    }
}

/// A new `traceparent`: version 00, a random trace id and parent id, sampled (this gateway
/// starts the trace and asks the services behind it to record their part).
/// Written into a buffer on the stack: no formatting machinery, no `String` (it is made for
/// every request that comes without a `traceparent`).
fn new_traceparent() -> [u8; 55] {
    // From the thread's random generator (no system call per request); never all zeros, which
    // W3C trace context forbids.
    let trace_id = rand::random::<u128>().max(1);
    let parent_id = rand::random::<u64>().max(1);
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    write_hex(&mut text[3..35], trace_id);
    write_hex(&mut text[36..52], u128::from(parent_id));
    text
}

/// Writes the low `2 * out.len()` bits of `value` into `out` as lowercase hex digits.
fn write_hex(out: &mut [u8], mut value: u128) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A new request id: a random (version 4) UUID from the thread's random generator, without the
/// system call per id that `uuid`'s own `new_v4` makes.
fn new_request_id() -> Option<HeaderValue> {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).ok()
}

/// Bytes of the SHA-256 kept in an entity tag (128 bits: collisions are not a concern).
const TAG_BYTES: usize = 16;

/// The strong entity tag of a body of `bytes`: `"` + base64url of the first 128 bits of its
/// SHA-256 + `"`. Compute it once, where the bytes are made and kept (a cached answer keeps its
/// tag beside its bytes); the shared compression makes it weak (`W/"…"`) on a compressed answer.
pub fn entity_tag(bytes: &[u8]) -> HeaderValue {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use sha2::{Digest as _, Sha256};

    let digest = Sha256::digest(bytes);
    let mut tag = [0_u8; 2 + 22];
    tag[0] = b'"';
    tag[23] = b'"';
    // 16 bytes are 22 base64url characters without padding.
    let written = URL_SAFE_NO_PAD
        .encode_slice(&digest[..TAG_BYTES], &mut tag[1..23])
        .unwrap_or_default();
    debug_assert_eq!(written, 22);
    HeaderValue::from_bytes(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether the `If-None-Match` values `if_none_match` (every line of the header) name `tag`
/// with the weak comparison of RFC 9110 §13.1.2 (`W/"x"` matches `"x"` and the reverse), or are
/// `*`: the answer is then `304 Not Modified`.
pub fn etag_matches<'a>(
    if_none_match: impl IntoIterator<Item = &'a HeaderValue>,
    tag: &HeaderValue,
) -> bool {
    let opaque = |candidate: &'a [u8]| -> &'a [u8] {
        let candidate = candidate.trim_ascii();
        candidate.strip_prefix(b"W/").unwrap_or(candidate)
    };
    let tag = tag.as_bytes();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    if_none_match.into_iter().any(|value| {
        let value = value.as_bytes();
        value.trim_ascii() == b"*"
            || value
                .split(|&b| b == b',')
                .any(|candidate| opaque(candidate) == tag)
    })
}

/// The host of a `Host` header, without its port (`[::1]:8080` → `[::1]`).
fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// The trace id of a `traceparent` (its second field), or empty.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// Whether a client-supplied request id is short enough and has only characters fit for logs
/// and downstream headers; otherwise a fresh one replaces it.
fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// Turns a non-JSON error response into a problem document.
async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut problem = Problem::status(status);
    if status.is_client_error() {
        // axum's rejection texts explain what was wrong with the request; they hold no secrets.
        if let Ok(bytes) = axum::body::to_bytes(body, MAX_DETAIL_BYTES).await {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if !text.is_empty() {
                problem = problem.with_detail(text);
            }
        }
    }
    let mut converted = problem.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        for value in parts.headers.get_all(&name) {
            converted.headers_mut().append(name.clone(), value.clone());
        }
    }
    converted
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_for_length_and_characters() {
        assert!(is_sane_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!is_sane_request_id(&HeaderValue::from_static("")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("has space")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("quote\"")));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!is_sane_request_id(
            &HeaderValue::from_str(&long).expect("ascii")
        ));
    }

    #[test]
    fn an_entity_tag_is_strong_and_if_none_match_compares_weakly() {
        let tag = entity_tag(b"{}");
        let text = tag.to_str().expect("ascii");
        assert!(
            text.starts_with('"') && text.ends_with('"') && text.len() == 24,
            "{text}"
        );
        assert_eq!(entity_tag(b"{}"), tag, "same bytes, same tag");
        assert_ne!(entity_tag(b"[]"), tag);
        let value = |text: &str| HeaderValue::from_str(text).expect("value");
        assert!(etag_matches([&tag], &tag));
        assert!(etag_matches([&value(&format!("W/{text}"))], &tag));
        assert!(etag_matches([&value(&format!("\"x\", {text}"))], &tag));
        assert!(etag_matches([&value("\"x\""), &tag], &tag), "a second line");
        assert!(etag_matches([&value("*")], &tag));
        let weak = value(&format!("W/{text}"));
        assert!(etag_matches([&tag], &weak), "a weakened tag still matches");
        assert!(!etag_matches([&value("\"x\"")], &tag));
        assert!(!etag_matches([], &tag));
    }

    fn access_log(per_second: u64) -> AccessLog {
        AccessLog::new(&ServerConfig {
            access_log_sample_above_rps: per_second,
            ..ServerConfig::default()
        })
    }

    #[test]
    fn without_a_sampling_rate_every_request_is_logged() {
        let log = access_log(0);
        let now = log.epoch;
        assert!((0..10_000).all(|_| log.keeps(200, Duration::ZERO, now) == (true, None)));
    }

    #[test]
    fn above_the_rate_successful_fast_requests_are_counted_not_logged() {
        let log = access_log(3);
        let fast = Duration::from_millis(1);
        let second = |n: u64| log.epoch + Duration::from_secs(n) + Duration::from_millis(10);
        let first: Vec<_> = (0..10).map(|_| log.keeps(200, fast, second(0))).collect();
        assert_eq!(
            first.iter().filter(|(keep, _)| *keep).count(),
            3,
            "the first 3"
        );
        assert!(
            first.iter().all(|(_, report)| report.is_none()),
            "nothing to report yet"
        );
        // Errors and slow requests are always logged, and not counted as skipped.
        assert_eq!(log.keeps(500, fast, second(0)), (true, None));
        assert_eq!(log.keeps(404, fast, second(0)), (true, None));
        assert_eq!(
            log.keeps(200, Duration::from_secs(1), second(0)),
            (true, None)
        );
        // The first request of the next second reports the 7 skipped; that second starts afresh.
        let next: Vec<_> = (0..5).map(|_| log.keeps(304, fast, second(1))).collect();
        assert_eq!(next[0], (true, Some(7)));
        assert_eq!(next.iter().filter(|(keep, _)| *keep).count(), 3);
        assert_eq!(
            next.iter().filter(|(_, report)| report.is_some()).count(),
            1
        );
        // The 2 skipped in that second are reported by the next request after it.
        assert_eq!(log.keeps(200, fast, second(5)), (true, Some(2)));
    }

    #[test]
    fn the_server_address_is_the_host_without_its_port() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("::1"), "::1");
    }

    #[test]
    fn a_generated_traceparent_is_valid_and_its_trace_id_is_found() {
        let generated = String::from_utf8(new_traceparent().to_vec()).expect("ascii");
        assert!(TraceParent::parse(&generated).is_ok(), "{generated}");
        assert_eq!(trace_id(&generated).len(), 32);
        assert_ne!(new_traceparent().as_slice(), generated.as_bytes());
        let mut hex = [0_u8; 4];
        write_hex(&mut hex, 0xbeef);
        assert_eq!(&hex, b"beef");
        write_hex(&mut hex, 0x1_000a);
        assert_eq!(&hex, b"000a", "only the low digits");
    }
}

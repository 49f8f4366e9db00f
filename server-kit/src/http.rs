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
//!    log line of the request carries them, and one log line when it finishes (status, latency).
//!    With OTLP export on ([`crate::telemetry`]), this span continues the client's trace (its
//!    parent is the client's valid `traceparent`; without one it starts a new trace, the
//!    generated header of step 3 is not its parent) and `trace_id` is the trace id it is exported
//!    with;
//! 5. with OTLP export on, the request's `traceparent` is rewritten to point at that span
//!    (`00-<trace id>-<span id>-<flags>`), so the downstream calls, which send it, are its
//!    children in the exported trace; with export off the header is left as step 3 set it;
//! 6. a panic in a handler becomes a 500 problem, never a dropped connection;
//! 7. every error response that is not already JSON (axum's plain-text rejections, an empty 405,
//!    the body limit's 413, …) becomes `application/problem+json`, keeping `Allow`,
//!    `Retry-After` and `WWW-Authenticate`;
//! 8. request bodies above `server.max_body_bytes` get 413 (enforced by every body extractor
//!    through axum's `DefaultBodyLimit`; handlers read bodies only through extractors).

use std::{any::Any, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TraceId},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use shared_clients::TraceParent;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{config::ServerConfig, problem::Problem};

/// The request id header, set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Largest error body read back to turn into a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Wraps `router` in the common middleware, adds the problem+json 404 fallback.
pub fn apply(router: Router, config: &ServerConfig) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-api-key"),
        ]))
        .layer(middleware::map_request(drop_unsafe_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomUuid))
        .layer(middleware::map_request(ensure_traceparent))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(on_response),
        )
        .layer(middleware::map_request(point_traceparent_at_request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(problem_for_plain_errors))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    router
        .fallback(|| async { Problem::status(StatusCode::NOT_FOUND) })
        .layer(middleware)
}

/// The request id of a request that went through [`apply`]'s middleware.
pub fn request_id(request: &http::request::Parts) -> Option<&str> {
    request
        .headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
}

/// The request's span, with OpenTelemetry's HTTP attribute names; the status is recorded by
/// [`on_response`]. With OTLP export on, it continues the client's trace (see
/// [`continue_client_trace`]).
fn request_span(request: &Request<Body>) -> tracing::Span {
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
    let span = tracing::info_span!(
        "request",
        "http.request.method" = %request.method(),
        "http.route" = route,
        "url.path" = request.uri().path(),
        "server.address" = server_address,
        "http.response.status_code" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
        // Read by the OpenTelemetry layer only, recorded only when exporting (log lines skip
        // fields never recorded).
        "otel.kind" = tracing::field::Empty,
        "otel.name" = tracing::field::Empty,
    );
    // The trace id is known only once the span exists (with export on, a new trace's id comes
    // from the OpenTelemetry layer). Both ids are recorded now, in their declared order, so that
    // log lines show them as they always have.
    let exported = if crate::telemetry::exporting() {
        // A server span named `{method} {route}`, as OpenTelemetry's HTTP conventions name it.
        span.record("otel.kind", "server");
        span.record("otel.name", format!("{} {route}", request.method()));
        continue_client_trace(&span, request)
    } else {
        None
    };
    match exported {
        Some(exported) => span.record("trace_id", exported.to_string()),
        None => span.record("trace_id", trace_id(header(&TRACEPARENT))),
    };
    span.record("request_id", request_id);
    span
}

/// With OTLP export on, makes `span` a child of the client's `traceparent` (when the client sent
/// a valid one) and returns the trace id the span is exported with. `None` when nothing is
/// exported: export is off, or the log filter disabled the span.
fn continue_client_trace(span: &tracing::Span, request: &Request<Body>) -> Option<TraceId> {
    if request.extensions().get::<GeneratedTraceParent>().is_none() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
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

/// Runs inside the request's span: with OTLP export on, sets the request's `traceparent` to that
/// span (`00-<trace id>-<span id>-<sampled>`), so the downstream calls, which send the request's
/// `traceparent`, are exported as its children. With export off (or the span disabled), the
/// header stays what [`ensure_traceparent`] left.
async fn point_traceparent_at_request_span(mut request: Request) -> Request {
    if !crate::telemetry::exporting() {
        return request;
    }
    let context = tracing::Span::current().context();
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
            request.headers_mut().insert(TRACEPARENT, value);
        }
    }
    request
}

/// Records the status on the request's span and logs the request's end.
fn on_response<B>(response: &http::Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status().as_u16();
    // As an i64: OpenTelemetry attributes have no unsigned integers (a u64 would be exported as
    // a string); the log lines read the same.
    span.record("http.response.status_code", i64::from(status));
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(status, latency_ms, "finished processing request");
}

/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Marks a request whose `traceparent` [`ensure_traceparent`] generated: no client span is its
/// parent, so with OTLP export on the request span starts a new trace instead of continuing it.
#[derive(Clone, Copy, Debug)]
struct GeneratedTraceParent;

/// Sets a fresh `traceparent` on a request that has none or an invalid one, so the gateway's
/// downstream calls (which send the request's `traceparent`) share one trace id.
async fn ensure_traceparent(mut request: Request) -> Request {
    let valid = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| TraceParent::parse(value).is_ok());
    if !valid {
        let generated = new_traceparent();
        if let Ok(value) = HeaderValue::from_str(&generated) {
            request.headers_mut().insert(TRACEPARENT, value);
            request.extensions_mut().insert(GeneratedTraceParent);
        }
    }
    request
}

/// A new `traceparent`: version 00, a random trace id and parent id, sampled (this gateway
/// starts the trace and asks the services behind it to record their part).
fn new_traceparent() -> String {
    // From the thread's random generator (no system call per request); never all zeros, which
    // W3C trace context forbids.
    let trace_id = rand::random::<u128>().max(1);
    let parent_id = rand::random::<u64>().max(1);
    format!("00-{trace_id:032x}-{parent_id:016x}-01")
}

/// Makes each request id a random (version 4) UUID from the thread's random generator, without
/// the system call per id that `uuid`'s own `new_v4` makes.
#[derive(Clone, Copy, Debug, Default)]
struct RandomUuid;

impl MakeRequestId for RandomUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
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

/// Removes a client-supplied request id that is too long or has characters unfit for logs and
/// downstream headers, so a fresh one is generated instead.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let unsafe_id = request
        .headers()
        .get(&REQUEST_ID)
        .is_some_and(|value| !is_sane_request_id(value));
    if unsafe_id {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

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
    fn the_server_address_is_the_host_without_its_port() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("::1"), "::1");
    }

    #[test]
    fn a_generated_traceparent_is_valid_and_its_trace_id_is_found() {
        let generated = new_traceparent();
        assert!(TraceParent::parse(&generated).is_ok(), "{generated}");
        assert_eq!(trace_id(&generated).len(), 32);
        assert_ne!(new_traceparent(), generated);
    }
}

//! The admin API and fault injection, per service.
//!
//! Every service's listener answers these besides its own paths. They always work, whatever the
//! fault mode, and they are neither counted nor logged nor delayed.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /__admin/stats` | `{"service":"product","total":N,"requests":{"GET /products/{product_id}":3,...}}`: requests received per route template (`<unmatched>` for paths no route matches), excluding `/__admin/*` and `/health`, counted before any fault is injected |
//! | `POST /__admin/reset` | 204; zeroes the counters and empties the request log (faults stay) |
//! | `GET /__admin/requests` | the last (up to 1,000) requests received, oldest first: `[{"method","route","path","query","headers":{...}}]`; `query` is `""` without one; `headers` holds whichever of `x-user-id`, `x-partner-id`, `x-request-id`, `traceparent`, `idempotency-key`, `if-none-match`, `if-match` were sent |
//! | `GET /__admin/faults` | the current faults, e.g. `{"mode":"normal","latency":"0s","jitter":"0s","error_rate":0.0,"slow_latency":"2s"}` |
//! | `PUT /__admin/faults` | changes the faults; every field optional, durations as humantime strings (`"250ms"`), `error_rate` from 0 to 1; unknown fields are a 400; answers the new faults |
//! | `GET /__admin/events` | the service's change events: `{"service":"cart","enabled":true,"stream":"bff:events:cart","published":N,"failed":M}` (`stream` null and counts 0 when publishing is off), see [`crate::events`] |
//!
//! Besides, each service has admin routes that change its data as the back office or the
//! warehouse would (they live with the service, which owns the data, and publish the change
//! events like any other write): `PATCH`/`DELETE /__admin/products/{product_id}` and
//! `PATCH /__admin/categories/{category_id}` on the product service (see [`crate::product`]),
//! `POST /__admin/orders/{order_id}/status` and `POST /__admin/orders/advance` on the order
//! service (see [`crate::order`]). They are admin requests like these: never counted, logged or
//! delayed, answered in every fault mode.
//!
//! Faults apply to every other request of the service (after it was counted):
//! - `latency` plus a uniformly random `0..=jitter` is waited before serving, measured from when
//!   the request arrived and kept to within a fraction of a millisecond (see [`wait_precisely`]);
//!   then with probability `error_rate` the answer is an injected 503.
//!   `/health` is spared both, so readiness checks stay stable.
//! - mode `normal`: nothing more.
//! - mode `slow`: `slow_latency` more, also on `/health`.
//! - mode `failing`: every request (`/health` too) is a 503 problem+json.
//! - mode `down`: the service is unreachable. New connections are closed without any answer unless
//!   their first request is for `/__admin/` ([`GuardedListener`] peeks at it); requests on
//!   connections opened before get a 503 with `Connection: close`.
//!
//! Faults start from the [`Config`] and are per service: the product service can be
//! down while the cart service is fine. Tests in Rust can also reach them through
//! [`World::admin`](crate::World::admin).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::Instant,
};

use crate::{
    ServiceKind,
    config::Config,
    events::{EventStats, Publisher},
    extract::JsonBody,
    problem::{ApiError, problem_response},
    reply,
};

/// Path prefix of the admin API.
const ADMIN_PREFIX: &str = "/__admin/";
/// The route name of requests no route matched.
const UNMATCHED: &str = "<unmatched>";
/// How many requests the log keeps.
const LOG_CAPACITY: usize = 1_000;
/// The request headers the log keeps, when present.
const LOGGED_HEADERS: [&str; 7] = [
    "x-user-id",
    "x-partner-id",
    "x-request-id",
    "traceparent",
    "idempotency-key",
    "if-none-match",
    "if-match",
];

/// How a service misbehaves on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Serve normally (base latency and error rate still apply).
    #[default]
    Normal,
    /// Add `slow_latency` to every request.
    Slow,
    /// Answer every request with 503.
    Failing,
    /// Be unreachable: close new connections, 503 + `Connection: close` on open ones.
    Down,
}

/// The fault knobs of one service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Faults {
    /// The misbehaviour mode.
    pub mode: FaultMode,
    /// Latency added to every request, to behave like a remote service.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Up to this much more latency, uniformly random per request.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Probability (0 to 1) of answering a request with an injected 503.
    pub error_rate: f64,
    /// The extra latency of [`FaultMode::Slow`].
    #[serde(with = "humantime_serde")]
    pub slow_latency: Duration,
}

impl Faults {
    /// The faults a service starts with.
    pub fn from_config(config: &Config) -> Faults {
        Faults {
            mode: FaultMode::Normal,
            latency: config.latency,
            jitter: config.jitter,
            error_rate: sanitize_rate(config.error_rate),
            slow_latency: config.slow_latency,
        }
    }
}

/// An error rate usable as a probability: clamped to 0..=1, and 0 if not a number.
fn sanitize_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// `PUT /__admin/faults`'s body: the knobs to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    /// New mode.
    mode: Option<FaultMode>,
    /// New base latency.
    #[serde(default, with = "humantime_serde::option")]
    latency: Option<Duration>,
    /// New jitter.
    #[serde(default, with = "humantime_serde::option")]
    jitter: Option<Duration>,
    /// New error rate.
    error_rate: Option<f64>,
    /// New latency of the slow mode.
    #[serde(default, with = "humantime_serde::option")]
    slow_latency: Option<Duration>,
}

/// One request as the log keeps it, so tests can check what a gateway sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// The HTTP method.
    pub method: String,
    /// The route template (`/products/{product_id}`), or `<unmatched>`.
    pub route: String,
    /// The path as sent.
    pub path: String,
    /// The raw query string, `""` when there was none.
    pub query: String,
    /// The identity, tracing and conditional headers that were sent (lower-case names).
    pub headers: BTreeMap<String, String>,
}

/// Request counters of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Which service counted.
    pub service: String,
    /// All requests counted.
    pub total: u64,
    /// Requests per `"METHOD /route/template"`.
    pub requests: BTreeMap<String, u64>,
}

/// What the admin API records.
#[derive(Debug, Default)]
struct Recorder {
    /// All requests counted since the last reset.
    total: u64,
    /// Requests per method and route template.
    by_route: HashMap<String, u64>,
    /// The most recent requests, oldest first.
    recent: VecDeque<LoggedRequest>,
}

/// The admin state of one service: its faults and what it has received.
#[derive(Debug)]
pub struct ServiceAdmin {
    /// The service this is for, named in the stats.
    kind: ServiceKind,
    /// The current faults, read by every request.
    faults: RwLock<Faults>,
    /// Whether the mode is `down`, readable by the listener without a lock.
    down: AtomicBool,
    /// Counters and request log.
    recorder: Mutex<Recorder>,
    /// The service's event publisher, for its counters.
    events: Publisher,
}

impl ServiceAdmin {
    /// Admin state for a service, starting with `faults` (and publishing no events).
    pub fn new(kind: ServiceKind, faults: Faults) -> ServiceAdmin {
        ServiceAdmin {
            kind,
            down: AtomicBool::new(faults.mode == FaultMode::Down),
            faults: RwLock::new(faults),
            recorder: Mutex::new(Recorder::default()),
            events: Publisher::disabled(kind),
        }
    }

    /// The same, reporting the counters of the service's event publisher.
    pub(crate) fn with_events(self, events: Publisher) -> ServiceAdmin {
        ServiceAdmin { events, ..self }
    }

    /// How many change events the service published and failed to publish.
    pub fn events(&self) -> EventStats {
        self.events.stats()
    }

    /// The service this is for.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        *self.faults.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the faults (the error rate is clamped to 0..=1).
    pub fn set_faults(&self, mut faults: Faults) {
        faults.error_rate = sanitize_rate(faults.error_rate);
        let mut current = self.faults.write().unwrap_or_else(PoisonError::into_inner);
        *current = faults;
        self.down
            .store(faults.mode == FaultMode::Down, Ordering::Release);
    }

    /// Switches the mode, keeping the other knobs.
    pub fn set_mode(&self, mode: FaultMode) {
        self.set_faults(Faults {
            mode,
            ..self.faults()
        });
    }

    /// Whether the service is in `down` mode.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let recorder = self.recorder();
        Stats {
            service: self.kind.to_string(),
            total: recorder.total,
            requests: recorder
                .by_route
                .iter()
                .map(|(route, count)| (route.clone(), *count))
                .collect(),
        }
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.recorder().recent.iter().cloned().collect()
    }

    /// Zeroes the counters and empties the request log.
    pub fn reset(&self) {
        *self.recorder() = Recorder::default();
    }

    /// The recorder, locked (poisoning cannot leave it inconsistent: nothing panics under it).
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts and logs a request.
    fn record(&self, request: &Request, route: &str) {
        let headers = LOGGED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = request.headers().get(*name)?;
                Some((
                    (*name).to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ))
            })
            .collect();
        let entry = LoggedRequest {
            method: request.method().to_string(),
            route: route.to_owned(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            headers,
        };
        let key = format!("{} {route}", request.method());
        let mut recorder = self.recorder();
        recorder.total += 1;
        *recorder.by_route.entry(key).or_default() += 1;
        if recorder.recent.len() == LOG_CAPACITY {
            recorder.recent.pop_front();
        }
        recorder.recent.push_back(entry);
    }
}

/// The admin API's routes, bound to one service's admin state.
pub(crate) fn routes(admin: Arc<ServiceAdmin>) -> Router {
    Router::new()
        .route("/__admin/stats", get(stats))
        .route("/__admin/reset", post(reset))
        .route("/__admin/requests", get(requests))
        .route("/__admin/faults", get(get_faults).put(put_faults))
        .route("/__admin/events", get(events))
        .with_state(admin)
}

/// An admin answer: JSON, never cached.
fn admin_json<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    reply::json(StatusCode::OK, reply::no_store(), value)
}

/// `GET /__admin/stats`.
async fn stats(State(admin): State<Arc<ServiceAdmin>>) -> Result<Response, ApiError> {
    admin_json(&admin.stats())
}

/// `POST /__admin/reset`.
async fn reset(State(admin): State<Arc<ServiceAdmin>>) -> StatusCode {
    admin.reset();
    StatusCode::NO_CONTENT
}

/// `GET /__admin/requests`.
async fn requests(State(admin): State<Arc<ServiceAdmin>>) -> Result<Response, ApiError> {
    admin_json(&admin.requests())
}

/// `GET /__admin/events`.
async fn events(State(admin): State<Arc<ServiceAdmin>>) -> Result<Response, ApiError> {
    admin_json(&admin.events())
}

/// `GET /__admin/faults`.
async fn get_faults(State(admin): State<Arc<ServiceAdmin>>) -> Result<Response, ApiError> {
    admin_json(&admin.faults())
}

/// `PUT /__admin/faults`.
async fn put_faults(
    State(admin): State<Arc<ServiceAdmin>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let patch: FaultsPatch = serde_json::from_value(body)
        .map_err(|error| ApiError::bad_request(format!("invalid faults: {error}")))?;
    if patch
        .error_rate
        .is_some_and(|rate| !(0.0..=1.0).contains(&rate))
    {
        return Err(ApiError::bad_request(
            "error_rate must be a number from 0 to 1",
        ));
    }
    let current = admin.faults();
    admin.set_faults(Faults {
        mode: patch.mode.unwrap_or(current.mode),
        latency: patch.latency.unwrap_or(current.latency),
        jitter: patch.jitter.unwrap_or(current.jitter),
        error_rate: patch.error_rate.unwrap_or(current.error_rate),
        slow_latency: patch.slow_latency.unwrap_or(current.slow_latency),
    });
    tracing::info!(service = %admin.kind(), faults = ?admin.faults(), "faults changed");
    admin_json(&admin.faults())
}

/// Whether a path belongs to the admin API.
fn is_admin_path(path: &str) -> bool {
    path.starts_with(ADMIN_PREFIX) || path == "/__admin"
}

/// The layer in front of every request of a service: counts and logs it, then injects the
/// configured faults. Admin requests pass untouched; `/health` is neither counted nor subject to
/// base latency and error rate, only to the modes.
pub(crate) async fn intercept(
    State(admin): State<Arc<ServiceAdmin>>,
    request: Request,
    next: Next,
) -> Response {
    let arrived = tokio::time::Instant::now();
    let path = request.uri().path();
    if is_admin_path(path) {
        return next.run(request).await;
    }
    let health = path == "/health";
    if !health {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str);
        admin.record(&request, route);
    }
    let faults = admin.faults();
    match faults.mode {
        FaultMode::Down => {
            let mut response = unavailable("the service is down (injected fault)");
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        FaultMode::Failing => return unavailable("the service is failing (injected fault)"),
        FaultMode::Normal | FaultMode::Slow => {}
    }
    let mut delay = Duration::ZERO;
    if faults.mode == FaultMode::Slow {
        delay += faults.slow_latency;
    }
    if !health {
        delay += faults.latency + random_up_to(faults.jitter);
    }
    if !delay.is_zero() {
        wait_precisely(arrived + delay).await;
    }
    if !health && faults.error_rate > 0.0 && rand::rng().random_bool(faults.error_rate) {
        return unavailable("the request failed (injected fault)");
    }
    next.run(request).await
}

/// How much before a deadline [`wait_precisely`] stops trusting tokio's timer.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Waits until `deadline`, to within a fraction of a millisecond.
///
/// Tokio's timer has a millisecond resolution and fires up to a millisecond late, so a plain
/// 10 ms `sleep` lasts 10–11 ms; benchmarks that configure "10 ms per call" would measure the
/// timer instead of the gateway. So the timer covers all but the last [`TIMER_SLACK`] (no thread
/// is held), and a blocking-pool thread sleeps the rest (the OS sleeps to within ~0.1 ms).
async fn wait_precisely(deadline: tokio::time::Instant) {
    if let Some(early) = deadline.checked_sub(TIMER_SLACK)
        && early > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(early).await;
    }
    let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !rest.is_zero() {
        // Fails only when the runtime is shutting down: then there is nobody left to wait for.
        drop(tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await);
    }
}

/// A uniformly random duration from zero to `max`.
fn random_up_to(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// An injected 503.
fn unavailable(detail: &str) -> Response {
    problem_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail).into_response()
}

/// How long the listener waits for the first bytes of a connection while `down`.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait before peeking again at a request line that has not fully arrived.
const SCREEN_RETRY: Duration = Duration::from_millis(5);

/// What the first bytes of a connection say about its first request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Its target is under `/__admin/`: let it in.
    Admin,
    /// Anything else: drop the connection.
    Other,
    /// Not enough bytes yet.
    NeedMore,
}

/// Classifies the start of an HTTP/1 request line (`GET /__admin/stats HTTP/1.1`).
fn classify(start: &[u8]) -> Verdict {
    /// Longest method we wait for before giving up on finding the space after it.
    const MAX_METHOD: usize = 16;
    let Some(space) = start.iter().position(|&b| b == b' ') else {
        return if start.len() > MAX_METHOD {
            Verdict::Other
        } else {
            Verdict::NeedMore
        };
    };
    let target = &start[space + 1..];
    let prefix = ADMIN_PREFIX.as_bytes();
    if target.len() >= prefix.len() {
        if target.starts_with(prefix) {
            Verdict::Admin
        } else {
            Verdict::Other
        }
    } else if prefix.starts_with(target) {
        Verdict::NeedMore
    } else {
        Verdict::Other
    }
}

/// Peeks (without consuming) at a connection accepted while `down`; keeps it only if its first
/// request is for the admin API, or if the service came back up meanwhile.
async fn screen(
    stream: TcpStream,
    address: SocketAddr,
    admin: Arc<ServiceAdmin>,
) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    let mut buffer = [0u8; 32];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.peek(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        match classify(&buffer[..read]) {
            Verdict::Admin => return Some((stream, address)),
            Verdict::Other if admin.is_down() => return None,
            Verdict::Other => return Some((stream, address)),
            Verdict::NeedMore if read == buffer.len() || Instant::now() >= deadline => return None,
            Verdict::NeedMore => tokio::time::sleep(SCREEN_RETRY).await,
        }
    }
}

/// A TCP listener that makes `down` mode real: while the service is down, each accepted
/// connection is screened on its own task (its first bytes are peeked at, not consumed), and only
/// connections whose first request is for the admin API reach the server; the others are closed
/// without a byte of answer.
#[derive(Debug)]
pub struct GuardedListener {
    /// The socket the caller bound.
    inner: TcpListener,
    /// The admin state that says whether the service is down.
    admin: Arc<ServiceAdmin>,
    /// Connections being screened; dropping the listener aborts them.
    screening: JoinSet<Option<(TcpStream, SocketAddr)>>,
}

impl GuardedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, admin: Arc<ServiceAdmin>) -> GuardedListener {
        GuardedListener {
            inner,
            admin,
            screening: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let GuardedListener {
            inner,
            admin,
            screening,
        } = self;
        loop {
            tokio::select! {
                // axum's listener for TCP, which already retries accept errors as axum does.
                (stream, address) = axum::serve::Listener::accept(inner) => {
                    if admin.is_down() {
                        screening.spawn(screen(stream, address, admin.clone()));
                    } else {
                        return (stream, address);
                    }
                },
                Some(screened) = screening.join_next(), if !screening.is_empty() => {
                    if let Ok(Some(connection)) = screened {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_precise_wait_never_ends_before_its_deadline() {
        for millis in [0, 1, 3, 10] {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(millis);
            wait_precisely(deadline).await;
            assert!(tokio::time::Instant::now() >= deadline, "{millis} ms");
        }
        // A deadline already past returns at once.
        wait_precisely(tokio::time::Instant::now() - Duration::from_millis(5)).await;
    }

    #[test]
    fn request_lines_are_classified() {
        assert_eq!(classify(b"GET /__admin/stats HTTP/1.1\r\n"), Verdict::Admin);
        assert_eq!(classify(b"PUT /__admin/faults HTTP/1.1"), Verdict::Admin);
        assert_eq!(classify(b"GET /products HTTP/1.1\r\n"), Verdict::Other);
        assert_eq!(classify(b"GET /__ad"), Verdict::NeedMore);
        assert_eq!(classify(b"GE"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /health HTTP/1.1"), Verdict::Other);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Verdict::Other);
    }

    #[test]
    fn faults_serialize_as_humantime() {
        let faults = Faults {
            mode: FaultMode::Slow,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            error_rate: 0.5,
            slow_latency: Duration::from_secs(2),
        };
        let json = serde_json::to_value(faults).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"mode":"slow","latency":"10ms","jitter":"0s","error_rate":0.5,"slow_latency":"2s"})
        );
    }
}

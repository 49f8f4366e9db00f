//! Accepting and serving client connections, with limits that slow, idle or hostile clients
//! cannot get around.
//!
//! Every gateway serves HTTP/1.1 through hyper's connection builder, driven by [`serve`], instead
//! of `axum::serve` (which gives hyper no timer, so a client that sends half a request head and
//! then nothing keeps its connection, and its file descriptor, for ever). Per connection:
//!
//! - **header read timeout** (`server.header_read_timeout`): once the first byte of a request
//!   arrives, the whole head (request line and headers) must arrive within it, or the connection
//!   is closed. This is what stops slowloris clients. A new connection must send its first
//!   request within it as well.
//! - **idle timeout** (`server.idle_timeout`): a keep-alive connection with no request in flight
//!   and no byte received since its last response went out is closed after it. So is a connection
//!   whose client stops reading what it is sent (writes blocked that long), request in flight or
//!   not: a slow-read client holds a connection no longer than an idle one. It is separate from the header timeout so that it
//!   can be longer than a load balancer's own idle timeout (which must expire first, or the
//!   balancer may send a request on a connection the gateway is closing).
//! - **body read timeout** (`server.body_read_timeout`): a request body must be read whole within
//!   it, counted from the moment the handler first reads it (before that, the gateway is busy,
//!   not the client). A handler reading a body past it gets an error, and the client gets `408`
//!   problem+json with `Connection: close` (swapped in by [`crate::http`]'s middleware through
//!   [`BodyDeadline`], so it has a request id, a log line and metrics like any answer).
//! - **header limits** (`server.max_header_bytes`, `server.max_headers`): a larger head is
//!   answered `431` by hyper and the connection closed.
//! - **connection limit** (`server.max_connections`): at most this many connections are served
//!   at once; further ones wait in the kernel's accept queue until one closes (none is accepted
//!   only to be dropped). A connection upgraded to another protocol (a WebSocket) leaves hyper
//!   and its timeouts but keeps its place until its socket closes.
//!
//! A request in flight (a long download, a stream of events) is never cut off by the idle or
//! header timeouts while its client reads; what it may take is the handler's business. Bytes of
//! a next request that arrive while one is in flight (pipelining) start that request's header
//! clock when they arrive; bytes that came in the very read of the previous request are in
//! hyper's buffer, out of the watchdog's sight, and get the idle timeout instead. Every request gets the peer's
//! address as [`ConnectInfo`]. Timeouts are counted in
//! `bff_http_connections_closed_total{reason}`, open connections in `bff_http_connections_open`.
//!
//! HTTP/2 is not served: the gateways sit behind load balancers that speak HTTP/1.1 to them, and
//! every HTTP/2 limit (streams, pings, resets) would be one more thing to bound.
//!
//! Shutdown: [`serve`] stops accepting when its signal completes, asks every connection to close
//! after its current request ([hyper's graceful shutdown][graceful]), and returns once all have
//! closed. The caller bounds how long that may take.
//!
//! [graceful]: hyper::server::conn::http1::Connection::graceful_shutdown

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    time::{Instant, Sleep},
};
use tower::Service as _;

use crate::{config::ServerConfig, metrics::Metrics, problem::Problem};

/// The per-connection limits of [`serve`], from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest time from a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// Longest time a connection may sit with no request in flight and no byte received.
    pub idle_timeout: Duration,
    /// Longest time from a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Most connections served at once.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            body_read_timeout: config.body_read_timeout,
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_connections: config.max_connections,
        }
    }
}

/// hyper's default number of header slots; asking for another number costs a heap allocation per
/// request, so only a different configured value is passed on.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// How long accepting pauses after an error such as "too many open files", so that the loop does
/// not spin while the process is out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `signal` completes, then lets every connection finish its
/// current request and returns when all are closed (see the module documentation).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Option<Metrics>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let counters = Arc::new(ConnectionMetrics::new(metrics.as_ref()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Our own watchdog times heads (see `Watch`): hyper's timer would also run while the
        // connection is idle, which would make the idle timeout the header timeout.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut signal = std::pin::pin!(signal);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut signal => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut signal => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "cannot accept a connection");
                tokio::select! {
                    biased;
                    () = &mut signal => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        // Responses are written whole; waiting for more bytes (Nagle) only adds latency.
        stream.set_nodelay(true).ok();
        let connection = Connection {
            builder: Arc::clone(&builder),
            router: router.clone(),
            limits,
            metrics: Arc::clone(&counters),
            stop: stop_rx.clone(),
        };
        tokio::spawn(connection.run(stream, peer, slot));
    }
    drop(listener);
    stop_tx.send_replace(true);
    // Every connection holds a slot until it closes: having them all back means all are closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _all_closed = slots.acquire_many(all).await;
    Ok(())
}

/// Errors of one connection that was reset before it was accepted: not a problem of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The series of [`serve`], resolved once.
struct ConnectionMetrics {
    /// Connections open now.
    open: Gauge,
    /// Connections closed because their request head was too slow.
    header_timeouts: Counter,
    /// Connections closed after sitting idle.
    idle_timeouts: Counter,
    /// Requests whose body was too slow.
    body_timeouts: Counter,
}

impl ConnectionMetrics {
    fn new(metrics: Option<&Metrics>) -> Self {
        let Some(metrics) = metrics else {
            return Self {
                open: Gauge::noop(),
                header_timeouts: Counter::noop(),
                idle_timeouts: Counter::noop(),
                body_timeouts: Counter::noop(),
            };
        };
        metrics.record(|| {
            describe_gauge!(
                "bff_http_connections_open",
                "Client connections open now (at most server.max_connections)."
            );
            describe_counter!(
                "bff_http_connections_closed_total",
                "Client connections closed by a limit: header_timeout, idle_timeout, body_timeout."
            );
            let closed =
                |reason: &'static str| counter!("bff_http_connections_closed_total", "reason" => reason);
            Self {
                open: gauge!("bff_http_connections_open"),
                header_timeouts: closed("header_timeout"),
                idle_timeouts: closed("idle_timeout"),
                body_timeouts: closed("body_timeout"),
            }
        })
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    /// hyper's HTTP/1 settings, shared by all connections.
    builder: Arc<http1::Builder>,
    /// The application.
    router: Router,
    /// The limits to enforce.
    limits: ConnectionLimits,
    /// Where closes and timeouts are counted.
    metrics: Arc<ConnectionMetrics>,
    /// Turns `true` when the server shuts down.
    stop: watch::Receiver<bool>,
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request head did not arrive whole in time.
    Head,
    /// Nothing happened for too long between requests, or the client stopped reading.
    Idle,
}

/// A connection's place among `server.max_connections`, and its count in the open-connections
/// gauge. It lives as long as the socket: in the connection's task, and past it in an upgraded
/// connection (a WebSocket), which keeps counting.
struct Slot {
    /// Returned to the server's semaphore when the socket closes.
    _permit: OwnedSemaphorePermit,
    /// Decremented when the socket closes (also when a task unwinds).
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        self.metrics.open.increment(1.0);
        let slot = Slot {
            _permit: permit,
            open: self.metrics.open.clone(),
        };
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            watch: Arc::clone(&watch),
            _slot: slot,
        });
        let service = ConnectionService {
            router: self.router.clone(),
            watch: Arc::clone(&watch),
            peer,
            body_read_timeout: self.limits.body_read_timeout,
            body_timeouts: self.metrics.body_timeouts.clone(),
        };
        let connection = self.builder.serve_connection(io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut stopping = *self.stop.borrow();
        if stopping {
            connection.as_mut().graceful_shutdown();
        }
        // One timer for the connection's life, moved when its deadline moves.
        let mut expiry = watch.next_expiry(&self.limits);
        let sleep = tokio::time::sleep_until(expiry.map_or_else(Instant::now, |(at, _)| at));
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    break;
                }
                () = watch.changed.notified() => {}
                () = sleep.as_mut(), if expiry.is_some() => {
                    // Recheck: the state may have moved on since the deadline was set.
                    if let Some((at, reason)) = watch.next_expiry(&self.limits)
                        && at <= Instant::now()
                    {
                        match reason {
                            Expiry::Head => self.metrics.header_timeouts.increment(1),
                            Expiry::Idle => self.metrics.idle_timeouts.increment(1),
                        }
                        tracing::debug!(%peer, ?reason, "closing a connection");
                        // Dropping hyper's connection closes the socket at once.
                        break;
                    }
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            let next = watch.next_expiry(&self.limits);
            if let Some((at, _)) = next
                && expiry.is_none_or(|(before, _)| before != at)
            {
                sleep.as_mut().reset(at);
            }
            expiry = next;
        }
    }
}

/// What one connection's watchdog knows, updated by its socket ([`WatchedIo`]) and its requests
/// ([`ConnectionService`]). Times are nanoseconds since `origin` plus one (0: never), so they fit
/// in atomics.
struct Watch {
    /// When the connection was accepted; all other times count from it.
    origin: Instant,
    /// Requests whose response has not been handed to hyper whole yet.
    in_flight: AtomicUsize,
    /// When the first byte of the next request arrived.
    head_started: AtomicU64,
    /// Whether the request in flight has been read whole (its body too, or it had none), so that
    /// bytes arriving now are the next request's.
    body_done: AtomicBool,
    /// When bytes of the next request arrived while one was still in flight (pipelined): its
    /// head's clock starts then, not when the connection next falls idle.
    early_head: AtomicU64,
    /// When the connection's last response was handed to hyper.
    idle_since: AtomicU64,
    /// When the last write to the client made progress.
    written_at: AtomicU64,
    /// Since when writing to the client has been blocked (it does not read what it is sent).
    write_blocked_since: AtomicU64,
    /// Numbers the connection's requests, from 1.
    requests: AtomicU64,
    /// The number of the last request whose body ran out of time (0: none).
    body_timed_out: AtomicU64,
    /// Wakes the watchdog when a deadline moves earlier or appears.
    changed: Notify,
}

impl Watch {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            body_done: AtomicBool::new(false),
            early_head: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            written_at: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            body_timed_out: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// Now, as a stored time (nanoseconds since `origin`, plus one).
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The instant of a stored time (not 0).
    fn at(&self, stored: u64) -> Instant {
        self.origin + Duration::from_nanos(stored.saturating_sub(1))
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            if self.head_started.load(Ordering::Acquire) == 0 {
                self.head_started.store(self.now(), Ordering::Release);
                self.changed.notify_one();
            }
        } else if self.body_done.load(Ordering::Acquire)
            && self.early_head.load(Ordering::Acquire) == 0
        {
            self.early_head.store(self.now(), Ordering::Release);
        }
    }

    /// The request in flight has been read whole.
    fn on_body_done(&self) {
        self.body_done.store(true, Ordering::Release);
    }

    /// A write to the client made progress (`true`) or had to wait (`false`).
    fn on_write(&self, progressed: bool) {
        if progressed {
            self.written_at.store(self.now(), Ordering::Release);
            self.write_blocked_since.store(0, Ordering::Release);
        } else if self.write_blocked_since.load(Ordering::Acquire) == 0 {
            self.write_blocked_since
                .store(self.now(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A request's head has been read; returns its number. (Its deadline moves later, if
    /// anything: the watchdog finds out when its timer fires.)
    fn on_request(&self, has_body: bool) -> u64 {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.early_head.store(0, Ordering::Release);
        self.body_done.store(!has_body, Ordering::Release);
        self.requests.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A request's response has been handed to hyper whole (or abandoned).
    fn on_response_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now(), Ordering::Release);
            // Bytes of the next request came in meanwhile: its head has been on the clock since.
            let early = self.early_head.swap(0, Ordering::AcqRel);
            if early != 0 {
                self.head_started.store(early, Ordering::Release);
            }
            self.changed.notify_one();
        }
    }

    /// When and why the connection must end if nothing changes, or `None` while a request is in
    /// flight and the client reads what it is sent.
    fn next_expiry(&self, limits: &ConnectionLimits) -> Option<(Instant, Expiry)> {
        let blocked = self.write_blocked_since.load(Ordering::Acquire);
        if blocked != 0 {
            // The client reads nothing of what it is sent (a slow-read attack, or gone): whatever
            // is in flight, it may hold the connection no longer than an idle one.
            return Some((self.at(blocked) + limits.idle_timeout, Expiry::Idle));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match (
            self.head_started.load(Ordering::Acquire),
            self.idle_since.load(Ordering::Acquire),
        ) {
            // A new connection must send its first request as promptly as a head: connecting
            // and sending nothing holds a descriptor no longer than a slow head does.
            (0, 0) => Some((self.origin + limits.header_read_timeout, Expiry::Head)),
            // Idle since the last response was handed over, or since its last bytes went out
            // (a large response is written well after hyper took it).
            (0, idle) => {
                let since = idle.max(self.written_at.load(Ordering::Acquire));
                Some((self.at(since) + limits.idle_timeout, Expiry::Idle))
            }
            (started, _) => Some((self.at(started) + limits.header_read_timeout, Expiry::Head)),
        }
    }
}

/// The socket, telling the watchdog when bytes arrive and whether writes progress. It also holds
/// the connection's [`Slot`], which an upgraded connection takes along.
struct WatchedIo {
    /// The client's connection.
    inner: TcpStream,
    /// Its watchdog.
    watch: Arc<Watch>,
    /// Released when the socket closes.
    _slot: Slot,
}

impl WatchedIo {
    /// Tells the watchdog how a write went.
    fn track<T>(&self, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &written {
            Poll::Ready(Ok(_)) => self.watch.on_write(true),
            Poll::Pending => self.watch.on_write(false),
            Poll::Ready(Err(_)) => {}
        }
        written
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's service for one connection: the router, with the peer address, the body deadline and
/// the watchdog's bookkeeping around each request.
struct ConnectionService {
    /// The application.
    router: Router,
    /// The connection's watchdog.
    watch: Arc<Watch>,
    /// The client's address, given to handlers as [`ConnectInfo`].
    peer: SocketAddr,
    /// How long a request body may take to arrive.
    body_read_timeout: Duration,
    /// Counts bodies that took longer.
    body_timeouts: Counter,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<TrackedBody>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let number = self.watch.on_request(!request.body().is_end_stream());
        let mut done = InFlight(Some(Arc::clone(&self.watch)));
        let mut request = request.map(|body| TimedBody {
            inner: body,
            timeout: self.body_read_timeout,
            deadline: None,
            sleep: None,
            watch: Arc::clone(&self.watch),
            request: number,
        });
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(BodyDeadline {
            watch: Arc::clone(&self.watch),
            request: number,
        });
        let mut router = self.router.clone();
        let watch = Arc::clone(&self.watch);
        let body_timeouts = self.body_timeouts.clone();
        Box::pin(async move {
            let Ok(response) = router.call(request).await;
            if watch.body_timed_out.load(Ordering::Acquire) == number {
                body_timeouts.increment(1);
            }
            // The request stays in flight until hyper has its whole body (or drops it): a long
            // download or a stream of events is never cut off as idle.
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _done: InFlight(done.0.take()),
            }))
        })
    }
}

/// Put in every request's extensions by [`serve`]: tells the middleware whether the request's
/// body ran out of time (`server.body_read_timeout`), so its answer is a 408 whatever the
/// handler made of the error ([`crate::http`] does the swap, inside its request id, logging and
/// metrics).
#[derive(Clone)]
pub struct BodyDeadline {
    /// The connection's watchdog, which records the request whose body timed out.
    watch: Arc<Watch>,
    /// This request's number on its connection.
    request: u64,
}

impl BodyDeadline {
    /// Whether this request's body took longer than `server.body_read_timeout`.
    pub fn expired(&self) -> bool {
        self.watch.body_timed_out.load(Ordering::Acquire) == self.request
    }
}

impl std::fmt::Debug for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDeadline")
            .field("request", &self.request)
            .field("expired", &self.expired())
            .finish()
    }
}

/// The answer to a request whose body did not arrive in time: `408`, and the connection closed.
pub fn body_timeout_response() -> Response<Body> {
    let mut response = Problem::status(StatusCode::REQUEST_TIMEOUT)
        .with_detail("the request body did not arrive within server.body_read_timeout")
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Marks a request finished when dropped (with its response body, or earlier if the request is
/// abandoned).
struct InFlight(Option<Arc<Watch>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.on_response_done();
        }
    }
}

/// A response body that keeps its request in flight until hyper has all of it.
pub struct TrackedBody {
    /// The response body.
    inner: Body,
    /// Dropped with the body.
    _done: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once it has taken longer than its timeout, counted from the first
/// time it is read (before that, the gateway is busy, not the client).
struct TimedBody {
    /// The body as hyper reads it.
    inner: Incoming,
    /// How long reading may take.
    timeout: Duration,
    /// When reading must be over: set at the first read.
    deadline: Option<Instant>,
    /// The deadline's timer, made only when reading has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Told when the deadline passes, so the response becomes a 408.
    watch: Arc<Watch>,
    /// This request's number on its connection.
    request: u64,
}

/// The error of a request body that took longer than `server.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_read_timeout")]
pub struct BodyReadTimeout;

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        // The clock starts at the first read, whether or not it has to wait.
        let timeout = this.timeout;
        let deadline = *this
            .deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.watch.on_body_done();
                Poll::Ready(None)
            }
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => {
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.watch
                        .body_timed_out
                        .store(this.request, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyReadTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_first_request_within_the_header_timeout() {
        let watch = Watch::new();
        let (at, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Head);
        assert_eq!(at, watch.origin + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_after_a_response_expires_after_the_idle_timeout() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(false);
        tokio::time::advance(Duration::from_secs(2)).await;
        watch.on_response_done();
        let (at, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Idle);
        assert_eq!(at, watch.origin + Duration::from_secs(62));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_request_starts_the_header_timeout() {
        let watch = Watch::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        watch.on_read();
        let (at, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Head);
        assert_eq!(at, watch.origin + Duration::from_secs(15));
        // More bytes of the same head do not push the deadline back.
        tokio::time::advance(Duration::from_secs(5)).await;
        watch.on_read();
        assert_eq!(watch.next_expiry(&limits()).map(|(at, _)| at), Some(at));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_never_expires_and_idleness_restarts_after_it() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(true);
        assert_eq!(watch.next_expiry(&limits()), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        // Bytes read during a request (its body) start no header timeout.
        watch.on_read();
        assert_eq!(watch.next_expiry(&limits()), None);
        watch.on_response_done();
        let (at, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Idle);
        assert_eq!(at, Instant::now() + Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipelined_partial_head_is_timed_from_its_first_byte_not_from_idleness() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(false);
        // The next request's first bytes arrive while the first is answered...
        tokio::time::advance(Duration::from_secs(1)).await;
        watch.on_read();
        let early = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        watch.on_response_done();
        // ...so the header timeout runs from then, not the (longer) idle timeout from now.
        assert_eq!(
            watch.next_expiry(&limits()),
            Some((early + Duration::from_secs(10), Expiry::Head))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn body_bytes_read_during_a_request_start_no_head() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(true);
        watch.on_read();
        watch.on_response_done();
        let (_, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_expires_even_with_a_request_in_flight() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        watch.on_write(false);
        let blocked_at = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        // Still blocked: the deadline counts from the first blocked write.
        watch.on_write(false);
        assert_eq!(
            watch.next_expiry(&limits()),
            Some((blocked_at + Duration::from_secs(60), Expiry::Idle))
        );
        // Progress clears it.
        watch.on_write(true);
        assert_eq!(watch.next_expiry(&limits()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_last_bytes_written_not_from_when_hyper_took_the_response() {
        let watch = Watch::new();
        watch.on_read();
        watch.on_request(false);
        watch.on_response_done();
        // hyper writes the (large) response for a while after taking it.
        tokio::time::advance(Duration::from_secs(30)).await;
        watch.on_write(true);
        let (at, reason) = watch.next_expiry(&limits()).expect("an expiry");
        assert_eq!(reason, Expiry::Idle);
        assert_eq!(at, Instant::now() + Duration::from_secs(60));
    }
}

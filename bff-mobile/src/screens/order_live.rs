//! `GET /m/v1/orders/{order_id}/live`: the order-tracking screen as a stream of server-sent
//! events — the order detail screen (the same JSON as `GET /m/v1/orders/{order_id}`, built by the
//! same code, [`super::order::load`]) each time the order changes, until it is delivered or
//! cancelled.
//!
//! Before anything is streamed, refusals are answered as by every endpoint, in
//! `application/problem+json`:
//! - a missing or bad bearer token: `401` (`missing_token`, `invalid_token`, `token_expired`, …);
//! - over a limit of `gateway.subscriptions` (`max_streams_per_user`, `max_streams_per_address`,
//!   `max_streams`, `max_subscriptions`): `429` with `code` `TOO_MANY_SUBSCRIPTIONS`, the `limit`
//!   that refused and `Retry-After: 5` — the problem every live transport shares
//!   ([`server_kit::live::Refusal`]), counted in `bff_live_refusals_total{reason}`;
//! - the order is read once: one that does not exist or is not the user's is `404`
//!   `order_not_found`, as on the screen; a service failing is `502`/`503`/`504`;
//! - with `gateway.subscriptions.enabled = false` the route is not served at all: `404`
//!   `route_not_found`, like any unknown endpoint (the app falls back to reloading the screen).
//!
//! Then `200` with `Content-Type: text/event-stream`, `Cache-Control: no-store` and
//! `X-Accel-Buffering: no` (proxies that buffer responses pass each event on at once), and:
//! - `event: order`, `id: 1`, `data:` the screen now; then one `event: order` (`id` 2, 3, …) each
//!   time the order changes; a screen identical to the last one sent is not sent again;
//! - after a screen whose `status` is `delivered` or `cancelled`: `event: end` (`data:` the
//!   order's `id` and `status`), and the stream closes. Apps close on `end` (a browser's
//!   `EventSource` would reconnect, and get the final screen and `end` again);
//! - a `: keep-alive` comment every `gateway.subscriptions.keep_alive` (15 s) while nothing else
//!   is sent, so proxies keep the connection open;
//! - `event: error` with a problem-like JSON body (`code`, `status`, `title`, `detail`), and the
//!   stream closes, when the token that opened it expires (`TOKEN_EXPIRED`: reconnect with a fresh
//!   token), when this replica starts shutting down (`SHUTTING_DOWN`: reconnect at once, another
//!   replica answers) or when the order is gone (`ORDER_NOT_FOUND`). The codes are the live
//!   codes every gateway shares (upper case, like `TOO_MANY_SUBSCRIPTIONS`).
//!
//! `Last-Event-ID` is not used: a stream opened again starts with the current screen.
//!
//! How changes are found: the stream follows the order in the live hub
//! ([`shared_clients::live`]), woken by the order service's change events when Redis carries
//! them, otherwise by one poll of the order per `poll_interval` however many streams follow it.
//! Each wake-up reads the screen again through the ordinary cached clients (the hub dropped the
//! stale copy first; concurrent readers share one call). A read that fails, or a screen with
//! `degraded` or `stale` parts, is read again after `poll_interval`, then after twice as long,
//! and so on up to a minute, until it is complete again.
//!
//! A client that stops reading costs no more than what the socket buffers hold and the event
//! being written: the body is pulled, so the next screen is read and serialized only when the
//! connection takes the previous one, and changes meanwhile are one pending signal, not a queue. The connection layer
//! (`server_kit::connection`) closes a connection whose writes stay blocked for
//! `server.idle_timeout`; `gateway.subscriptions.send_timeout` does not apply here. The stream
//! holds its places in the limits until it closes, however it closes (the client leaving too).
//!
//! The stream bypasses the `ETag` layer of the other screens (`crate::routes`), which would hold
//! events back, and the shared compression never encodes `text/event-stream`
//! (`server_kit::compression`).

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Extension,
    extract::{ConnectInfo, State},
    http::{HeaderName, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde::Serialize;
use server_kit::{
    Readiness,
    auth::AuthenticatedUser,
    extract::ApiState,
    live::{LiveLimiter, Refusal, StreamPermit, SubscriptionPermit},
    metrics::Metrics,
};
use shared_clients::{
    OrderId, OrderStatus, Owner, RequestContext, UserId,
    live::{Subscription, Topic},
};
use tokio::time::{Instant, Sleep};
use tracing::Instrument as _;
use utoipa::ToSchema;

use super::order::{self, OrderDetail};
use crate::{
    error::ApiError,
    extract::{Ctx, IdParam, ImageHint, SignedIn},
    openapi::{OrderStatusDoc, ProblemResponse},
    state::AppState,
};

/// Where a request whose peer address is unknown counts (a router called without the server,
/// which gives every request its peer): all such requests share one address.
const UNKNOWN_PEER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The longest wait between two reads of a screen that failed or came back incomplete.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The text of the keep-alive comment (`: keep-alive`).
const KEEP_ALIVE_TEXT: &str = "keep-alive";

/// `X-Accel-Buffering`: tells buffering proxies (nginx and its kin) to pass events on at once.
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The order screen as server-sent events: the screen now, then again each time the order
/// changes, until it is delivered or cancelled.
///
/// Each event's `data` is one line of JSON: `event: order` (with `id` 1, 2, …) carries the
/// screen as `GET /m/v1/orders/{order_id}` answers it; `event: end` follows a screen whose
/// `status` is final, and the stream closes; `event: error` closes the stream for a reason the
/// app acts on (`TOKEN_EXPIRED`: reconnect with a fresh token, `SHUTTING_DOWN`: reconnect at
/// once, `ORDER_NOT_FOUND`). A `: keep-alive` comment is sent while nothing else is.
/// `Last-Event-ID` is not used: a stream opened again starts with the current screen.
/// Never compressed and never given an `ETag`: each event reaches the app when it is sent.
/// Not served (404 `route_not_found`) when `gateway.subscriptions.enabled` is off.
#[utoipa::path(
    get, path = "/m/v1/orders/{order_id}/live", tag = "orders", operation_id = "followOrder",
    params(
        ("order_id" = String, Path, description = "The order's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ImageHint,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream; each event's fields as `LiveEvent` describes them",
            content_type = "text/event-stream", body = LiveEvent, headers(
                ("Cache-Control" = String, description = "`no-store`"),
                ("X-Accel-Buffering" = String, description = "`no`: proxies that buffer responses pass each event on at once"))),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
#[expect(
    clippy::too_many_arguments,
    reason = "an axum handler takes each extractor as an argument"
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    SignedIn(user): SignedIn,
    IdParam(order_id): IdParam<OrderId>,
    hint: ImageHint,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    readiness: Option<Extension<Readiness>>,
    metrics: Option<Extension<Metrics>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let config = &state.config().subscriptions;
    let peer = peer.map_or(UNKNOWN_PEER, |Extension(ConnectInfo(peer))| {
        peer.ip().to_canonical()
    });
    // Behind a proxy that writes `client_ip_header`, the client's own address counts.
    let address = config.client_address(&headers, peer);
    let permits = match Permits::take(state.live(), address, user.user_id()) {
        Ok(permits) => permits,
        Err(refusal) => {
            refusal.count(metrics.as_ref().map(|Extension(metrics)| metrics));
            tracing::debug!(limit = refusal.reason(), "live order stream refused");
            return Ok(refusal.into_response());
        }
    };
    let owner = Owner::User(user.user_id().clone());
    // Followed before the first read, so that a change made while it is read is not missed
    // (it wakes the stream, which reads again and skips an identical screen).
    let subscription = state.downstream().live().subscribe(
        Topic::Order {
            owner: owner.clone(),
            id: order_id.clone(),
        },
        Some(config.poll_interval),
    );
    let image_px = hint.target(state.config().images.thumbnail);
    let first = order::load(&state, &ctx, &owner, &order_id, image_px).await?;
    let shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = match readiness {
        Some(Extension(readiness)) => Box::pin(readiness.shutdown_started()),
        None => Box::pin(std::future::pending()),
    };
    let keep_alive = KeepAlive::new()
        .interval(config.keep_alive)
        .text(KEEP_ALIVE_TEXT);
    let tracker = Tracker {
        poll_interval: config.poll_interval,
        retry_delay: config.poll_interval,
        retry: None,
        expiry: Box::pin(tokio::time::sleep(until_expiry(&user))),
        shutdown,
        subscription,
        ctx,
        owner,
        order_id,
        image_px,
        state,
        last: String::new(),
        sent: 0,
        phase: Phase::First(Box::new(first)),
        ended: None,
        span: tracing::Span::current(),
        _permits: permits,
    };
    let mut response = Sse::new(tracker.into_stream())
        .keep_alive(keep_alive)
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

/// How long until the token of `user` expires (its `exp`, to the moment; zero once passed).
fn until_expiry(user: &AuthenticatedUser) -> Duration {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(user.expires_at()))
        .map_or(Duration::MAX, |expiry| {
            expiry
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
}

/// Whether an order in `status` will not change any more.
fn is_final(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Delivered | OrderStatus::Cancelled)
}

/// What an open stream holds against the limits; dropped with the stream, however it ends.
struct Permits {
    /// Its place among the open streams (of the replica, its client address and its user).
    _stream: StreamPermit,
    /// Its one subscription's place among the replica's subscriptions.
    _subscription: SubscriptionPermit,
}

impl Permits {
    /// Takes a stream's places for `user` at `address`, or says which limit refuses it.
    fn take(limiter: &LiveLimiter, address: IpAddr, user: &UserId) -> Result<Self, Refusal> {
        let stream = limiter.open(address, Some(user))?;
        let subscription = limiter.subscribe()?;
        Ok(Self {
            _stream: stream,
            _subscription: subscription,
        })
    }
}

/// Why a stream closes with `event: error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The token that opened it expired.
    TokenExpired,
    /// The replica is shutting down (or the live hub is gone, which only happens then).
    ShuttingDown,
    /// The order no longer exists (or is no longer the user's).
    OrderGone,
}

/// The body of an `event: error`: a problem's parts a client acts on.
#[derive(Debug, Serialize, ToSchema)]
struct StreamProblem {
    /// What to branch on: `TOKEN_EXPIRED`, `SHUTTING_DOWN` or `ORDER_NOT_FOUND`.
    #[schema(pattern = "^(TOKEN_EXPIRED|SHUTTING_DOWN|ORDER_NOT_FOUND)$")]
    code: &'static str,
    /// The HTTP status a request would have got for the same reason.
    status: u16,
    /// A short summary.
    title: &'static str,
    /// What to do about it.
    detail: &'static str,
}

impl Closing {
    /// The event's body.
    fn problem(self) -> StreamProblem {
        match self {
            Self::TokenExpired => StreamProblem {
                code: "TOKEN_EXPIRED",
                status: 401,
                title: "Token expired",
                detail: "The token that opened this stream has expired; open it again with a \
                         fresh token.",
            },
            Self::ShuttingDown => StreamProblem {
                code: "SHUTTING_DOWN",
                status: 503,
                title: "Server shutting down",
                detail: "This server is stopping; open the stream again (another server \
                         answers).",
            },
            Self::OrderGone => StreamProblem {
                code: "ORDER_NOT_FOUND",
                status: 404,
                title: "Order not found",
                detail: "The order no longer exists.",
            },
        }
    }

    /// How the stream ended, for the log line.
    fn reason(self) -> &'static str {
        match self {
            Self::TokenExpired => "token_expired",
            Self::ShuttingDown => "shutting_down",
            Self::OrderGone => "order_gone",
        }
    }
}

/// The body of `event: end`.
#[derive(Debug, Serialize, ToSchema)]
struct EndOfStream<'a> {
    /// The order tracked.
    #[schema(value_type = String)]
    id: &'a OrderId,
    /// Its final status (`delivered` or `cancelled`).
    #[schema(value_type = OrderStatusDoc)]
    status: OrderStatus,
}

/// One server-sent event of the stream, as its fields: `event` (the event's name), `id` (on
/// `order` events) and `data`, a JSON document on one line. The wire format is
/// `text/event-stream`; this is what each event holds once parsed.
#[derive(Debug, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
#[expect(
    dead_code,
    reason = "documentation only: the events are written by `Tracker`"
)]
enum LiveEvent {
    /// The order screen: the first at once, then one each time the order changes (a screen
    /// identical to the last one sent is not sent again).
    Order {
        /// `1`, `2`, …: the number of screens this stream has sent.
        #[schema(pattern = "^[1-9][0-9]*$")]
        id: String,
        /// The screen, as `GET /m/v1/orders/{order_id}` answers it.
        data: OrderDetail,
    },
    /// The last screen sent had a final status; the stream closes after it.
    End {
        /// The order and its final status.
        data: EndOfStream<'static>,
    },
    /// The stream closes for a reason the app acts on.
    Error {
        /// What happened.
        data: StreamProblem,
    },
}

/// Where a stream is.
enum Phase {
    /// The first screen, read before the response started, is to be sent.
    First(Box<OrderDetail>),
    /// Waiting for the order to change.
    Following,
    /// The last screen sent had a final status: `event: end` is next.
    Ending(OrderStatus),
    /// Nothing more is sent.
    Closed,
}

/// What woke a following stream.
enum Wake {
    /// The screen was read again (the order changed, or a retry was due).
    Read(Box<Result<OrderDetail, ApiError>>),
    /// The stream must close.
    Close(Closing),
}

/// One open stream: what it follows, what it sent, and what ends it. Produces one event each
/// time the response body asks for one ([`Tracker::into_stream`]).
struct Tracker {
    /// The downstream clients and settings.
    state: AppState,
    /// The opening request's downstream context (request id, trace), each read with a fresh
    /// deadline.
    ctx: RequestContext,
    /// The signed-in user, whose order it is.
    owner: Owner,
    /// The order followed.
    order_id: OrderId,
    /// The thumbnails' width, from the opening request's image hint.
    image_px: u32,
    /// Wakes the stream when the order changed.
    subscription: Subscription,
    /// Completes when the opening token expires.
    expiry: Pin<Box<Sleep>>,
    /// Completes when the replica starts shutting down.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// `gateway.subscriptions.poll_interval`: the first wait before reading a failed or
    /// incomplete screen again.
    poll_interval: Duration,
    /// The next such wait (doubled each time, up to [`MAX_RETRY_DELAY`]).
    retry_delay: Duration,
    /// When to read the screen again without a change, after a failed or incomplete read.
    retry: Option<Instant>,
    /// The JSON of the last screen sent, to skip an identical one.
    last: String,
    /// Screens sent so far (the last `id:`).
    sent: u64,
    /// What comes next.
    phase: Phase,
    /// How the stream ended, once it has (`None` at drop: the client left).
    ended: Option<&'static str>,
    /// The opening request's span, so reads and the last log line carry its request id.
    span: tracing::Span,
    /// Its places in the limits, held as long as the stream.
    _permits: Permits,
}

impl Tracker {
    /// The events, produced one at a time as the response body is polled.
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut tracker| async move {
            let span = tracker.span.clone();
            let event = tracker.next().instrument(span).await?;
            Some((Ok(event), tracker))
        })
    }

    /// The next event, `None` once the stream is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Closed) {
                Phase::First(screen) => {
                    self.phase = Phase::Following;
                    if let Some(event) = self.offer(&screen) {
                        return Some(event);
                    }
                }
                Phase::Following => {
                    self.phase = Phase::Following;
                    let read = match self.wake().await {
                        Wake::Read(read) => *read,
                        Wake::Close(closing) => return Some(self.close(closing)),
                    };
                    match read {
                        Ok(screen) => {
                            if let Some(event) = self.offer(&screen) {
                                return Some(event);
                            }
                        }
                        Err(ApiError::NotFound(_)) => {
                            return Some(self.close(Closing::OrderGone));
                        }
                        Err(error) => {
                            tracing::debug!(%error, "live order screen not read; retrying");
                            self.retry_later();
                        }
                    }
                }
                Phase::Ending(status) => {
                    self.ended = Some("final_status");
                    let end = EndOfStream {
                        id: &self.order_id,
                        status,
                    };
                    let data = serde_json::to_string(&end).unwrap_or_default();
                    return Some(Event::default().event("end").data(data));
                }
                Phase::Closed => return None,
            }
        }
    }

    /// Waits for a reason to read the screen again, and reads it; or for a reason to close.
    async fn wake(&mut self) -> Wake {
        let retry = self.retry;
        let retry_due = async move {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut self.shutdown => return Wake::Close(Closing::ShuttingDown),
            () = &mut self.expiry => return Wake::Close(Closing::TokenExpired),
            changed = self.subscription.changed() => {
                if !changed {
                    return Wake::Close(Closing::ShuttingDown);
                }
            }
            () = retry_due => {}
        }
        self.retry = None;
        let ctx = self
            .ctx
            .clone()
            .with_timeout_from_now(self.state.request_deadline());
        let read = order::load(
            &self.state,
            &ctx,
            &self.owner,
            &self.order_id,
            self.image_px,
        );
        tokio::select! {
            biased;
            () = &mut self.shutdown => Wake::Close(Closing::ShuttingDown),
            () = &mut self.expiry => Wake::Close(Closing::TokenExpired),
            read = read => Wake::Read(Box::new(read)),
        }
    }

    /// The `order` event for `screen`, unless it is the screen sent last. Plans a retry when the
    /// screen is incomplete, and the end when its status is final.
    fn offer(&mut self, screen: &OrderDetail) -> Option<Event> {
        let json = match serde_json::to_string(screen) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "live order screen not serializable");
                self.retry_later();
                return None;
            }
        };
        if screen.degraded.is_empty() && screen.stale.is_empty() {
            self.retry = None;
            self.retry_delay = self.poll_interval;
        } else {
            self.retry_later();
        }
        if is_final(screen.status) {
            self.phase = Phase::Ending(screen.status);
        }
        if json == self.last {
            return None;
        }
        self.sent += 1;
        let event = Event::default()
            .event("order")
            .id(self.sent.to_string())
            .data(&json);
        self.last = json;
        Some(event)
    }

    /// Reads the screen again after the current delay, and doubles the delay for next time.
    fn retry_later(&mut self) {
        self.retry = Some(Instant::now() + self.retry_delay);
        self.retry_delay = self
            .retry_delay
            .saturating_mul(2)
            .min(MAX_RETRY_DELAY.max(self.poll_interval));
    }

    /// The `error` event closing the stream for `closing`.
    fn close(&mut self, closing: Closing) -> Event {
        self.phase = Phase::Closed;
        self.ended = Some(closing.reason());
        let data = serde_json::to_string(&closing.problem()).unwrap_or_default();
        Event::default().event("error").data(data)
    }
}

impl Drop for Tracker {
    /// One log line per stream, when it is over.
    fn drop(&mut self) {
        let _span = self.span.enter();
        tracing::debug!(
            reason = self.ended.unwrap_or("client_gone"),
            screens = self.sent,
            "live order stream closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delivered_and_cancelled_orders_are_final() {
        assert!(is_final(OrderStatus::Delivered));
        assert!(is_final(OrderStatus::Cancelled));
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
        ] {
            assert!(!is_final(status), "{status:?}");
        }
    }

    #[test]
    fn closing_events_name_their_code() {
        let body = serde_json::to_value(Closing::TokenExpired.problem()).expect("serializes");
        assert_eq!(body["code"], "TOKEN_EXPIRED");
        assert_eq!(body["status"], 401);
        assert_eq!(
            serde_json::to_value(Closing::ShuttingDown.problem()).expect("serializes")["code"],
            "SHUTTING_DOWN"
        );
    }
}

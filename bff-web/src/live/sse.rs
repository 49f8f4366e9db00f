//! GraphQL over server-sent events (the GraphQL over SSE protocol of the `graphql-sse` library,
//! distinct connections mode): `POST` (or `GET`, for queries and subscriptions) on the endpoint
//! with `Accept: text/event-stream`.
//!
//! - A body that is not a GraphQL request, and a refused token, are answered as a plain
//!   `application/graphql-response+json` error with their 4xx status; the limits on open streams
//!   and subscriptions with `429` problem+json. A document refused before execution (APQ, the
//!   limits, validation) is, as the protocol asks, a stream of one `next` with its `errors`, then
//!   `complete`.
//! - Otherwise `200 text/event-stream` (`Cache-Control: no-store`, `X-Accel-Buffering: no`):
//!   one `event: next` per value (`data:` an execution result), then `event: complete`. A query
//!   or mutation sends one `next`. A comment (`:`) every `keep_alive` keeps proxies from
//!   closing an idle stream.
//! - Values are produced only when the connection can take them (the body is read from the
//!   operation as the socket drains), and the server closes a connection whose writes stay
//!   blocked for `server.idle_timeout`: a client that stops reading costs what hyper and the
//!   kernel buffer (a few events), never a queue that grows.
//! - The token's expiry ends the stream with a `next` carrying an `UNAUTHENTICATED` error
//!   (`reason: TOKEN_EXPIRED`), then `complete`; shutdown ends it without `complete`, so the
//!   client reconnects (to another replica).

use std::{collections::VecDeque, convert::Infallible, net::IpAddr, pin::Pin};

use async_graphql::{Request, parser::types::OperationType};
use axum::{
    http::{HeaderMap, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream::BoxStream};
use server_kit::{Readiness, metrics::Metrics};

use super::{Endpoint, Opener, keep_alive, payload, scoped, token_expired};
use crate::{
    error::TransportError,
    pipeline::{Prepared, prepare},
    response::Media,
    schema::{Executed, Identity},
};

/// Whether the client asks for an event stream.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|item| item.trim().starts_with("text/event-stream"))
        })
}

/// Answers `request` as an event stream.
pub async fn respond(
    endpoint: Endpoint,
    metrics: Option<Metrics>,
    readiness: Option<Readiness>,
    peer: IpAddr,
    headers: HeaderMap,
    request: Request,
    via_get: bool,
) -> Response {
    let refuse = |error: TransportError| error.respond(Media::GraphqlResponse);
    if !endpoint.live.config().enabled {
        return refuse(TransportError::BadRequest(
            "Live updates are turned off on this server (`gateway.subscriptions.enabled`).",
        ));
    }
    let opener = match endpoint.auth.authenticate(&headers).await {
        Ok(Some(user)) => Opener::user(user),
        Ok(None) => Opener::anonymous(),
        Err(refused) => return refuse(TransportError::Unauthenticated(refused)),
    };
    let prepared = prepare(&endpoint, metrics.as_ref(), request, via_get).await;
    let Prepared {
        request,
        operation,
        kind,
        ..
    } = match prepared {
        Ok(prepared) => prepared,
        // A document refused before execution is the stream's only value.
        Err(refused) => {
            let text = serde_json::json!({ "errors": refused.errors() }).to_string();
            let events = futures::stream::iter([
                Ok::<_, Infallible>(next_event(text)),
                Ok(complete_event()),
            ]);
            return event_stream(events, &endpoint);
        }
    };
    let user = match &opener.identity {
        Identity::User(user) => Some(user),
        Identity::Anonymous => None,
    };
    let stream_permit = match endpoint
        .live
        .open(endpoint.live.config().client_address(&headers, peer), user)
    {
        Ok(permit) => permit,
        Err(refusal) => {
            refusal.count(metrics.as_ref());
            return refusal.into_response();
        }
    };
    let subscription = kind == Some(OperationType::Subscription);
    let subscription_permit = if subscription {
        match endpoint.live.subscribe() {
            Ok(permit) => Some(permit),
            Err(refusal) => {
                refusal.count(metrics.as_ref());
                return refusal.into_response();
            }
        }
    } else {
        None
    };
    let errors_counted =
        super::ErrorCounter::start(metrics.as_ref(), &endpoint, operation.as_deref());
    let context = server_kit::extract::request_context(&headers, endpoint.deadline);
    // A subscription's reads take a deadline each; another operation has one in all.
    let context = if subscription {
        context.without_deadline()
    } else {
        context
    };
    let (request, executed) = scoped(&endpoint, request, &opener, context);
    let responses = endpoint
        .schema
        .execute_stream_with_session_data(request, Default::default());
    let shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = match readiness {
        Some(readiness) => Box::pin(readiness.shutdown_started()),
        None => Box::pin(std::future::pending()),
    };
    let state = Streaming {
        responses: responses.boxed(),
        executed,
        errors_counted,
        pending: VecDeque::new(),
        shutdown,
        expired: Box::pin(async move { opener.expired().await }),
        done: false,
        _permits: (stream_permit, subscription_permit),
    };
    event_stream(futures::stream::unfold(state, Streaming::next), &endpoint)
}

/// `200 text/event-stream` of `events`, with keep-alive comments.
fn event_stream(
    events: impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
    endpoint: &Endpoint,
) -> Response {
    let mut response = Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(keep_alive(endpoint))
                .text("keep-alive"),
        )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One event stream as it goes.
struct Streaming {
    /// The operation's responses.
    responses: BoxStream<'static, async_graphql::Response>,
    /// Whether its execution started.
    executed: Executed,
    /// Counts the errors of its responses (with metrics).
    errors_counted: Option<super::ErrorCounter>,
    /// Events to send before reading on.
    pending: VecDeque<Event>,
    /// Completes when shutdown starts.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Completes when the token expires.
    expired: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Whether the last event is queued.
    done: bool,
    /// Its places among open streams and subscriptions, held while it runs.
    _permits: (
        server_kit::live::StreamPermit,
        Option<server_kit::live::SubscriptionPermit>,
    ),
}

impl Streaming {
    /// The next event, or the end of the stream.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                biased;
                () = &mut self.shutdown => return None,
                () = &mut self.expired => {
                    let error = async_graphql::Response::from_errors(vec![token_expired()]);
                    let (text, _) = payload(error, false);
                    self.pending.push_back(next_event(text));
                    self.pending.push_back(complete_event());
                    self.done = true;
                }
                response = self.responses.next() => match response {
                    Some(response) => {
                        let (text, errors) = payload(response, self.executed.get());
                        if let Some(counter) = &self.errors_counted {
                            counter.count(&errors);
                        }
                        self.pending.push_back(next_event(text));
                    }
                    None => {
                        self.pending.push_back(complete_event());
                        self.done = true;
                    }
                },
            }
        }
    }
}

/// `event: next` with an execution result.
fn next_event(text: String) -> Event {
    Event::default().event("next").data(text)
}

/// `event: complete`.
fn complete_event() -> Event {
    Event::default().event("complete").data("")
}

//! Response compression, the one setup of every gateway (`server.compression`, env
//! `BFF_SERVER__COMPRESSION__…`), outermost in [`crate::http`]'s stack.
//!
//! - `br` and `gzip`, as `Accept-Encoding` negotiates (brotli when both are acceptable with the
//!   same weight). Not `zstd`: tower-http offers it, but through `zstd-sys`, a C build of libzstd
//!   that costs every clean build minutes on a small machine, for a coding that neither iOS's
//!   `URLSession` nor OkHttp asks for.
//! - Only answers of at least `server.compression.min_size` bytes (their `Content-Length`; a body
//!   of unknown length counts as large): on small bodies the framing costs more than it saves.
//!   Never images (already compressed), gRPC, or event streams: `text/event-stream` bodies pass
//!   through frame by frame, so each event reaches the client when it is sent. A request to
//!   upgrade the connection (WebSocket) is passed on without its `Accept-Encoding`, so nothing
//!   here touches its `101`, and an event-stream request (`Accept: text/event-stream`) likewise.
//! - Every answer that could be compressed says `Vary: Accept-Encoding`, compressed or not.
//! - Entity tags stay correct: a compressed answer is another representation, so it must not
//!   carry the identity answer's strong `ETag`. Its tag is made weak (`"x"` → `W/"x"`, as nginx
//!   does): weak comparison, which `If-None-Match` uses, still matches it, so revalidating
//!   either representation gets `304`. A `304` answering a weak `W/"x"` from a client that
//!   accepts `br` or `gzip` is sent with `W/"x"` too (the tag its `200` would have carried), so
//!   a cache keeps the tag of the representation it holds.

use std::{convert::Infallible, task::Context, task::Poll};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};
use tower_http::compression::{
    Compression, CompressionLayer,
    predicate::{NotForContentType, Predicate, SizeAbove},
};

/// How answers are compressed (`[server.compression]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Whether answers are compressed at all; off behind a proxy that compresses.
    pub enabled: bool,
    /// Answers smaller than this many bytes are sent as they are.
    pub min_size: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_size: 1024,
        }
    }
}

/// Which answers are compressed: large enough, and not images, gRPC, event streams or a
/// protocol switch.
#[derive(Debug, Clone, Copy)]
struct Compressible {
    /// Smallest body compressed, in bytes.
    min_size: u64,
}

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        response.status() != StatusCode::SWITCHING_PROTOCOLS
            && SizeAbove::new(self.min_size)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE)
                .should_compress(response)
    }
}

/// Makes [`Compress`] services, per `server.compression`.
#[derive(Debug, Clone)]
pub(crate) struct CompressLayer {
    /// The layer of tower-http doing the encoding.
    inner: CompressionLayer<Compressible>,
}

impl CompressLayer {
    /// The layer `config` asks for, `None` when compression is off.
    pub(crate) fn new(config: &CompressionConfig) -> Option<Self> {
        config.enabled.then(|| Self {
            inner: CompressionLayer::new()
                .gzip(true)
                .br(true)
                .no_deflate()
                .no_zstd()
                .compress_when(Compressible {
                    min_size: config.min_size,
                }),
        })
    }
}

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            inner: self.inner.layer(inner),
        }
    }
}

/// Compresses answers as the module says, keeping entity tags correct.
#[derive(Clone)]
pub(crate) struct Compress<S> {
    /// The compressing service around the routes.
    inner: Compression<S, Compressible>,
}

impl<S> Service<Request> for Compress<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if passes_through(request.headers()) {
            request.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        // A 304 carries the tag the 200 would have: weak when the answer would be compressed,
        // which a client asking for br or gzip and holding a weak tag shows.
        let weak_match = if accepts_compression(request.headers()) {
            weak_if_none_match(request.headers())
        } else {
            Vec::new()
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = answer.await;
            let (mut parts, body) = response.into_parts();
            let encoded = parts.headers.contains_key(header::CONTENT_ENCODING);
            let revalidated_weakly = parts.status == StatusCode::NOT_MODIFIED
                && parts
                    .headers
                    .get(header::ETAG)
                    .is_some_and(|tag| weak_match.iter().any(|weak| weak == tag.as_bytes()));
            if encoded || revalidated_weakly {
                weaken_etag(&mut parts.headers);
            }
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// Whether a request's answer must not be touched: a protocol upgrade (WebSocket), or an event
/// stream (whose answer is never compressed; without `Accept-Encoding` it is not refused either).
fn passes_through(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|accept| accept.as_bytes().starts_with(b"text/event-stream"))
}

/// Whether `Accept-Encoding` accepts `br` or `gzip` (or `*`), with a weight above 0.
fn accepts_compression(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|weight| weight.parse::<f32>().ok())
                    .is_some_and(|weight| weight <= 0.0)
            });
            !refused
                && ["br", "gzip", "*"]
                    .iter()
                    .any(|ok| coding.eq_ignore_ascii_case(ok))
        })
}

/// The opaque parts (`"x"`) of the weak tags (`W/"x"`) of `If-None-Match`.
fn weak_if_none_match(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|tag| tag.trim().strip_prefix("W/"))
        .map(|opaque| opaque.as_bytes().to_vec())
        .collect()
}

/// `ETag: "x"` → `ETag: W/"x"`; a weak tag stays as it is.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(header::ETAG) else {
        return;
    };
    if tag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(tag.as_bytes());
    if let Ok(weak) = HeaderValue::from_bytes(&weak) {
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        Router,
        response::{
            IntoResponse,
            sse::{Event, Sse},
        },
        routing::get,
    };
    use tower::ServiceExt as _;

    use super::*;

    /// An answer of `size` bytes of JSON with a strong tag, or 304 for a matching
    /// `If-None-Match`.
    fn app(config: &CompressionConfig) -> Router {
        let large = || async move {
            let body = format!("[{}0]", "0,".repeat(2_000));
            (
                [
                    (header::ETAG, "\"tag\""),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                body,
            )
        };
        let revalidated = || async move {
            (
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, HeaderValue::from_static("\"tag\""))],
            )
                .into_response()
        };
        let small = || async move { ([(header::CONTENT_TYPE, "application/json")], "[1,2,3]") };
        let events = || async move {
            let events = futures::stream::iter(
                (0..200).map(|n| Ok::<_, Infallible>(Event::default().data(format!("{n:0>40}")))),
            );
            Sse::new(events)
        };
        let router = Router::new()
            .route("/large", get(large))
            .route("/revalidated", get(revalidated))
            .route("/small", get(small))
            .route("/events", get(events));
        match CompressLayer::new(config) {
            Some(layer) => router.layer(layer),
            None => router,
        }
    }

    async fn call(router: &Router, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    fn header<'r>(response: &'r Response, name: &str) -> &'r str {
        response
            .headers()
            .get(name)
            .map_or("", |value| value.to_str().expect("ascii"))
    }

    #[tokio::test]
    async fn large_answers_are_compressed_as_negotiated_with_a_weak_tag() {
        let router = app(&CompressionConfig::default());
        for (accept, coding) in [("br", "br"), ("gzip", "gzip"), ("gzip, br", "br")] {
            let answer = call(&router, "/large", &[("accept-encoding", accept)]).await;
            assert_eq!(header(&answer, "content-encoding"), coding, "{accept}");
            assert_eq!(header(&answer, "etag"), "W/\"tag\"", "{accept}");
            assert_eq!(header(&answer, "vary"), "accept-encoding");
        }
        let plain = call(&router, "/large", &[]).await;
        assert_eq!(header(&plain, "content-encoding"), "");
        assert_eq!(header(&plain, "etag"), "\"tag\"");
        assert_eq!(
            header(&plain, "vary"),
            "accept-encoding",
            "a cache must know"
        );
    }

    #[tokio::test]
    async fn small_answers_event_streams_and_upgrades_are_left_alone() {
        let router = app(&CompressionConfig::default());
        let small = call(&router, "/small", &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(header(&small, "content-encoding"), "");
        let events = call(&router, "/events", &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(header(&events, "content-type"), "text/event-stream");
        assert_eq!(header(&events, "content-encoding"), "");
        let refused_identity = call(
            &router,
            "/events",
            &[
                ("accept-encoding", "identity;q=0"),
                ("accept", "text/event-stream"),
            ],
        )
        .await;
        assert_eq!(refused_identity.status(), StatusCode::OK, "never 406");
        let upgrade = call(
            &router,
            "/large",
            &[("accept-encoding", "gzip"), ("upgrade", "websocket")],
        )
        .await;
        assert_eq!(header(&upgrade, "content-encoding"), "");
    }

    #[tokio::test]
    async fn a_304_for_a_weak_tag_carries_the_weak_tag() {
        let router = app(&CompressionConfig::default());
        let weak = call(
            &router,
            "/revalidated",
            &[("accept-encoding", "gzip"), ("if-none-match", "W/\"tag\"")],
        )
        .await;
        assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&weak, "etag"), "W/\"tag\"");
        let strong = call(&router, "/revalidated", &[("if-none-match", "\"tag\"")]).await;
        assert_eq!(header(&strong, "etag"), "\"tag\"");
        let identity = call(&router, "/revalidated", &[("if-none-match", "W/\"tag\"")]).await;
        assert_eq!(
            header(&identity, "etag"),
            "\"tag\"",
            "without br or gzip the 200 would be the identity one, strong"
        );
        let refused = call(
            &router,
            "/revalidated",
            &[
                ("accept-encoding", "gzip;q=0"),
                ("if-none-match", "W/\"tag\""),
            ],
        )
        .await;
        assert_eq!(header(&refused, "etag"), "\"tag\"");
    }

    #[tokio::test]
    async fn the_threshold_and_the_switch_are_honoured() {
        let above = app(&CompressionConfig {
            enabled: true,
            min_size: 60_000,
        });
        let answer = call(&above, "/large", &[("accept-encoding", "gzip")]).await;
        assert_eq!(header(&answer, "content-encoding"), "");
        let off = app(&CompressionConfig {
            enabled: false,
            min_size: 1,
        });
        let answer = call(&off, "/large", &[("accept-encoding", "gzip")]).await;
        assert_eq!(header(&answer, "content-encoding"), "");
        assert_eq!(header(&answer, "etag"), "\"tag\"");
    }
}

//! The HTTP plumbing shared by the three clients: one [`Transport`] per service.
//!
//! A transport owns the service's `reqwest::Client` (built once, with the service's pooling and
//! timeouts), its base URL and its [`Service`] name. Every downstream call of the crate goes
//! through [`Transport::execute`]: it builds the URL safely (path segments and query values are
//! percent-encoded), adds the propagated headers of the [`RequestContext`], sends, reads the body
//! with a size limit and hands any unaccepted status to the one classification function.
//!
//! That single entry point is where the resilience layer wraps every call: each transport owns its
//! service's [`Guard`] (deadline, circuit breaker, bulkhead, retries, metrics; see
//! `crate::resilience`), and every attempt of a call is a fresh request built from the same
//! [`Call`]. Whether a call may be retried is a property of the call: `GET`s are idempotent,
//! other methods are not unless the client marks them so ([`Call::idempotent`], used only for
//! `POST /orders` with its `Idempotency-Key`). Readiness probes ([`Call::probe`]) bypass the
//! guard: they must report the service's real state, not the breaker's.
//!
//! Each attempt runs in a `downstream` span with OpenTelemetry's HTTP client attributes
//! (`peer.service`, `http.request.method`, `server.address`, `server.port`, `url.path`,
//! `http.request.resend_count`, `http.response.status_code`, `error.type`); it is a child of the
//! inbound request's span, so it carries that request's `trace_id`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::config::ServiceConfig;
use crate::context::RequestContext;
use crate::error::{BuildError, ClientError, Failure, Service};
use crate::metrics::ServiceMetricsSnapshot;
use crate::resilience::{Guard, Idempotency};

/// Largest success body we buffer (a full batch of 100 products is a few hundred KiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest error body we read looking for a problem document; anything beyond is ignored.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Sent on every call so downstream logs can tell the gateways' traffic apart.
const USER_AGENT: &str = concat!("bff-shared-clients/", env!("CARGO_PKG_VERSION"));

/// One downstream service's connection: HTTP client, base URL and name.
#[derive(Clone)]
pub(crate) struct Transport {
    /// Which service this is, named in every error.
    service: Service,
    /// Built once from the service's configuration; holds the connection pool.
    http: reqwest::Client,
    /// The configured base URL; the contract's paths are appended as segments.
    base: Url,
    /// The service's resilience policy and counters, shared by every clone of the transport.
    guard: Arc<Guard>,
}

impl Transport {
    /// Builds the HTTP client for `service` from its configuration.
    pub(crate) fn new(service: Service, config: &ServiceConfig) -> Result<Self, BuildError> {
        let base = parse_base_url(service, &config.url)?;
        let mut default_headers = HeaderMap::new();
        default_headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(default_headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            // Internal services do not redirect; following one could send identity headers
            // somewhere else. A 3xx is classified as a bad response instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| BuildError::HttpClient {
                service,
                reason: err.without_url().to_string(),
            })?;
        Ok(Self {
            service,
            http,
            base,
            guard: Arc::new(Guard::new(service, config)),
        })
    }

    /// The service's call counters and breaker state.
    pub(crate) fn metrics(&self) -> ServiceMetricsSnapshot {
        self.guard.metrics()
    }

    /// Classifies `failure` as an error of this service.
    pub(crate) fn error(&self, failure: Failure) -> ClientError {
        ClientError::classify(self.service, failure)
    }

    /// Sends one call and returns the accepted response with its body read; every other outcome is
    /// a classified [`ClientError`]. The single path of every downstream request: the call runs
    /// under the service's [`Guard`] (deadline, breaker, bulkhead, retries), except a readiness
    /// probe, which is sent once with its own timeout.
    pub(crate) async fn execute(
        &self,
        ctx: &RequestContext,
        call: Call<'_>,
    ) -> Result<Reply, ClientError> {
        let url = self.url(&call)?;
        if let Some(timeout) = call.probe_timeout {
            return self.attempt(ctx, &call, &url, Some(timeout), 0).await;
        }
        let mut retry = 0;
        self.guard
            .run(
                call.operation,
                ctx.deadline(),
                call.idempotency,
                |_timeout| {
                    // The guard bounds the attempt by its timeout; reqwest's own (the service's
                    // configured `timeout`) stays in place as a backstop.
                    let attempt = self.attempt(ctx, &call, &url, None, retry);
                    retry += 1;
                    attempt
                },
            )
            .await
    }

    /// Builds and sends one request of `call` (`retry` is 0 for the first attempt), in a span
    /// named with OpenTelemetry's HTTP client attributes.
    async fn attempt(
        &self,
        ctx: &RequestContext,
        call: &Call<'_>,
        url: &Url,
        timeout: Option<Duration>,
        retry: u32,
    ) -> Result<Reply, ClientError> {
        let span = tracing::info_span!(
            "downstream",
            "peer.service" = self.service.as_str(),
            "http.request.method" = %call.method,
            "server.address" = url.host_str().unwrap_or_default(),
            "server.port" = url.port_or_known_default(),
            "url.path" = url.path(),
            "http.request.resend_count" = retry,
            operation = call.operation,
            // A client span, for the OpenTelemetry layer when traces are exported.
            "otel.kind" = "client",
            "http.response.status_code" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        self.attempt_in_span(ctx, call, url, timeout)
            .instrument(span)
            .await
    }

    /// The body of [`Self::attempt`], inside its span.
    async fn attempt_in_span(
        &self,
        ctx: &RequestContext,
        call: &Call<'_>,
        url: &Url,
        timeout: Option<Duration>,
    ) -> Result<Reply, ClientError> {
        let mut request = self
            .http
            .request(call.method.clone(), url.clone())
            .headers(call.headers.clone());
        if let Some(request_id) = ctx.request_id() {
            request = request.header("x-request-id", request_id.header_value());
        }
        if let Some(traceparent) = ctx.traceparent() {
            request = request.header("traceparent", traceparent.header_value());
        }
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }

        let started = tokio::time::Instant::now();
        let outcome = self.send(request, call.accept_not_modified).await;
        let span = tracing::Span::current();
        match &outcome {
            Ok(reply) => {
                span.record(
                    "http.response.status_code",
                    i64::from(reply.status.as_u16()),
                );
            }
            Err(error) => {
                if let Some(status) = error.status() {
                    span.record("http.response.status_code", i64::from(status));
                }
                span.record("error.type", error.kind().code());
            }
        }
        tracing::debug!(
            service = self.service.as_str(),
            operation = call.operation,
            status = outcome.as_ref().ok().map(|r| r.status.as_u16()),
            error = outcome.as_ref().err().map(|e| e.kind().code()),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "downstream call"
        );
        outcome
    }

    /// Sends the request, reads the body and decides whether the status is accepted.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        accept_not_modified: bool,
    ) -> Result<Reply, ClientError> {
        let mut response = request
            .send()
            .await
            .map_err(|err| self.error(Failure::Transport(err)))?;
        let status = response.status();
        let accepted =
            status.is_success() || (accept_not_modified && status == StatusCode::NOT_MODIFIED);
        if !accepted {
            // A problem document is a bonus: if the body cannot be read, classify by status alone.
            let body = read_body(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            return Err(self.error(Failure::Status {
                status,
                headers: Box::new(std::mem::take(response.headers_mut())),
                body,
            }));
        }
        let body = read_body(&mut response, MAX_BODY_BYTES)
            .await
            .map_err(|failure| self.error(failure))?;
        Ok(Reply {
            service: self.service,
            status,
            headers: std::mem::take(response.headers_mut()),
            body,
        })
    }

    /// The call's URL: base URL + percent-encoded path segments + percent-encoded query.
    fn url(&self, call: &Call<'_>) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| self.error(Failure::Rejected("base URL cannot take a path")))?
            .pop_if_empty()
            .extend(call.path);
        if !call.query.is_empty() {
            let mut query = String::new();
            for (name, value) in &call.query {
                if !query.is_empty() {
                    query.push('&');
                }
                encode_query_component(&mut query, name);
                query.push('=');
                encode_query_component(&mut query, value);
            }
            url.set_query(Some(&query));
        }
        Ok(url)
    }
}

// Not derived: the base URL may carry credentials and must not end up in logs.
impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Checks and normalises a configured base URL.
fn parse_base_url(service: Service, raw: &str) -> Result<Url, BuildError> {
    let invalid = |reason: &str| BuildError::InvalidUrl {
        service,
        reason: reason.to_owned(),
    };
    // `url`'s parse errors describe the problem without repeating the input.
    let url = Url::parse(raw.trim()).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
        return Err(invalid("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or fragment"));
    }
    Ok(url)
}

/// Percent-encodes a query name or value: only unreserved characters (RFC 3986) and `,` stay as
/// they are, so no value can break out of its parameter, and `+` is never read as a space.
fn encode_query_component(out: &mut String, value: &str) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Reads a response body, refusing more than `limit` bytes.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> Result<Bytes, Failure> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(Failure::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The description of one downstream call: everything needed to send it (and, later, to send it
/// again on retry).
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The contract's operation id, e.g. `getProduct`, for logs and per-operation policy.
    operation: &'static str,
    /// The HTTP method.
    method: Method,
    /// Whether the call may be sent again after a transient failure: `GET`s may, other methods
    /// only when the client says so ([`Call::idempotent`]).
    idempotency: Idempotency,
    /// Path segments after the base URL; each is percent-encoded on its own.
    path: &'a [&'a str],
    /// Query parameters in order; values are percent-encoded.
    query: Vec<(&'static str, Cow<'a, str>)>,
    /// Call-specific headers (identity, preconditions, idempotency key).
    headers: HeaderMap,
    /// A JSON request body.
    body: Option<Bytes>,
    /// Set for readiness probes only: sent once, with this timeout, bypassing the guard.
    probe_timeout: Option<Duration>,
    /// Whether 304 Not Modified is an accepted answer (conditional requests only).
    accept_not_modified: bool,
}

impl<'a> Call<'a> {
    /// A call of `operation` with `method` to the contract path made of `path` segments.
    pub(crate) fn new(operation: &'static str, method: Method, path: &'a [&'a str]) -> Self {
        let idempotency = if method == Method::GET || method == Method::HEAD {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        Self {
            operation,
            method,
            idempotency,
            path,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            probe_timeout: None,
            accept_not_modified: false,
        }
    }

    /// Adds a query parameter.
    pub(crate) fn query(mut self, name: &'static str, value: impl Into<Cow<'a, str>>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    /// Adds a query parameter when `value` is present.
    pub(crate) fn query_opt(
        self,
        name: &'static str,
        value: Option<impl Into<Cow<'a, str>>>,
    ) -> Self {
        match value {
            Some(value) => self.query(name, value),
            None => self,
        }
    }

    /// Sets a header. Values come from validated types, so they are always legal.
    pub(crate) fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.insert(HeaderName::from_static(name), value);
        self
    }

    /// Sets a JSON body.
    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, Failure> {
        let bytes = serde_json::to_vec(body)
            .map_err(|_| Failure::Rejected("request body could not be encoded"))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// Marks a call with a non-idempotent method as safe to repeat (`POST /orders` with its
    /// `Idempotency-Key`: a repeat returns the order created first).
    pub(crate) fn idempotent(mut self) -> Self {
        self.idempotency = Idempotency::Idempotent;
        self
    }

    /// Makes this a readiness probe: sent once, bounded by `timeout`, outside the breaker,
    /// bulkhead, retries and metrics, so it reports the service's real state.
    pub(crate) fn probe(mut self, timeout: Duration) -> Self {
        self.probe_timeout = Some(timeout);
        self
    }

    /// Accepts 304 Not Modified as an answer (for requests with `If-None-Match`).
    pub(crate) fn accept_not_modified(mut self) -> Self {
        self.accept_not_modified = true;
        self
    }
}

/// An accepted response with its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Whose answer this is, for decoding errors.
    service: Service,
    /// The accepted status (2xx, or 304 when asked for).
    pub(crate) status: StatusCode,
    /// Response headers (caching metadata, `Location`).
    pub(crate) headers: HeaderMap,
    /// The whole body.
    pub(crate) body: Bytes,
}

impl Reply {
    /// Decodes the body as JSON of type `T`; a mismatch is a [`BadResponse`].
    ///
    /// [`BadResponse`]: crate::ErrorKind::BadResponse
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|err| ClientError::classify(self.service, Failure::Decode(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str) -> Result<Transport, BuildError> {
        Transport::new(Service::Product, &ServiceConfig::with_url(url))
    }

    #[test]
    fn paths_and_queries_are_encoded() {
        let t = transport("http://127.0.0.1:1/base/").unwrap();
        let call = Call::new("x", Method::GET, &["products", "a/b?c"])
            .query("q", "red & blue+1=2")
            .query("ids", "p-1,p-2");
        let url = t.url(&call).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/products/a%2Fb%3Fc?q=red%20%26%20blue%2B1%3D2&ids=p-1,p-2"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_naming_the_service_but_not_the_url() {
        for url in [
            "",
            "127.0.0.1:9101",
            "ftp://host",
            "http://host?x=1",
            "mailto:a@b",
        ] {
            let err = transport(url).unwrap_err();
            assert!(
                matches!(
                    err,
                    BuildError::InvalidUrl {
                        service: Service::Product,
                        ..
                    }
                ),
                "{url:?}"
            );
        }
        let err = transport("http://user:secret@:80").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}

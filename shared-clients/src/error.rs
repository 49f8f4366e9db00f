//! The one error type every client and facade returns, and the one place that classifies failures.
//!
//! Policy:
//! - Callers see [`ClientError`] only: which [`Service`] failed and an [`ErrorKind`] saying what
//!   the caller can do about it. No `reqwest` or `serde_json` type is part of the API; the original
//!   cause is kept as a private [`source`](std::error::Error::source) for logs.
//! - Status codes, transport errors and undecodable bodies are turned into an [`ErrorKind`] in
//!   exactly one function, `ClientError::classify`. Every other module builds errors through it.
//! - `Display` says what happened in a short sentence naming the service. It never contains a URL,
//!   a header or a response body, so it is safe to log; a downstream problem's `title`/`detail` are
//!   kept as data ([`ClientError::problem`]) that a BFF may *choose* to show for
//!   [`ErrorKind::Invalid`] and similar caller-caused failures.
//! - Errors are not logged here: the BFF logs each failure once, where it handles it.
//! - [`ClientError::is_retryable`] tells a *caller* whether trying again later may help (timeouts
//!   and unavailability). The resilience layer's own retries are narrower and decided here too
//!   (`ClientError::may_retry`): connection failures, attempt timeouts, 408, 429, 502, 503 and 504,
//!   never a failure that happened without a call (open breaker, full bulkhead, spent deadline);
//!   whether a *request* may be repeated at all (idempotent reads, keyed order creation) is the
//!   resilience layer's decision.
//! - Failures the resilience layer produces itself are classified here as well: a spent deadline
//!   or an attempt cut off by it is a [`ErrorKind::Timeout`]; an open circuit breaker or a full
//!   bulkhead is [`ErrorKind::Unavailable`]. None of them reached the service.
//!
//! [`BuildError`] is separate: it is returned once, at start-up, when the configuration cannot be
//! turned into clients.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::model::integer;

/// One of the three downstream services, named in every error so a BFF can say which part failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// The catalog service: products and categories.
    Product,
    /// The cart service.
    Cart,
    /// The order service.
    Order,
}

impl Service {
    /// The service's name in lowercase (`"product"`, `"cart"`, `"order"`), for logs and error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Cart => "cart",
            Self::Order => "order",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, in terms a BFF can map to its own protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    /// The resource does not exist, or is not visible to this identity (404, 410).
    NotFound,
    /// The identity may not do this (403).
    Forbidden,
    /// The request was refused as malformed or semantically invalid (400, 413, 414, 422), or was
    /// refused before sending (for example too many ids). The downstream problem, when there is
    /// one, says why.
    Invalid,
    /// The request conflicts with the resource's state (409), e.g. a cart line beyond 99.
    Conflict,
    /// A precondition (`If-Match`) did not hold (412): someone else changed the resource.
    PreconditionFailed,
    /// No answer in time: the configured timeout elapsed, or the service answered 408.
    Timeout,
    /// The service could not be reached or is failing or shedding load: connection errors,
    /// 429 and every 5xx.
    Unavailable,
    /// The service answered something the contract does not allow: an unexpected status,
    /// malformed JSON, a body that does not match the schema, an oversized body.
    BadResponse,
}

impl ErrorKind {
    /// A stable machine-readable code, e.g. `NOT_FOUND`, for GraphQL `extensions.code` and logs.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::Forbidden => "FORBIDDEN",
            Self::Invalid => "INVALID",
            Self::Conflict => "CONFLICT",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::Timeout => "TIMEOUT",
            Self::Unavailable => "UNAVAILABLE",
            Self::BadResponse => "BAD_RESPONSE",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An RFC 9457 problem sent by a downstream service with an error status.
///
/// Every field is optional: a service that sends a partial or no problem document still gets its
/// status classified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type, for a BFF that maps specific problems.
    #[serde(rename = "type", default)]
    pub problem_type: Option<String>,
    /// A short, human-readable summary of the problem type.
    #[serde(default)]
    pub title: Option<String>,
    /// The status the service gave in the body (normally equal to the response status).
    #[serde(default, deserialize_with = "integer::option")]
    pub status: Option<u16>,
    /// An explanation specific to this occurrence, e.g. which field was invalid.
    #[serde(default)]
    pub detail: Option<String>,
}

/// A failed call to a downstream service. Cheap to clone (shared by coalesced waiters).
#[derive(Clone)]
pub struct ClientError {
    /// Which service failed, so a BFF can name it (GraphQL `extensions`, mobile `degraded` list).
    service: Service,
    /// What the caller can do about it.
    kind: ErrorKind,
    /// The HTTP status when the service answered; `None` for transport or local failures.
    status: Option<StatusCode>,
    /// The service's problem document, when it sent one with an error status.
    problem: Option<Arc<Problem>>,
    /// The service's `Retry-After` (its seconds, or the time left until its HTTP date), for 429
    /// and 503.
    retry_after: Option<Duration>,
    /// A short sentence for `Display`, free of URLs, headers and bodies.
    message: Cow<'static, str>,
    /// The underlying cause, for logs only; never part of the API (it may be a `reqwest::Error`,
    /// stripped of its URL).
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    /// Where the failure came from, which decides retries, breaker accounting and whether a
    /// coalesced waiter may try again with its own budget.
    origin: Origin,
}

/// Where a failure came from (see [`ClientError::origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The service, or the way to it: an answer, a transport error, the service's own timeout.
    Downstream,
    /// The caller's deadline: the budget was spent before the call, or cut the attempt short.
    /// Says nothing about the service's health.
    Deadline,
    /// Refused locally without a call: open circuit breaker, full bulkhead, invalid request.
    Local,
}

/// Why a call failed, before classification. Built by the transport and the clients, consumed by
/// [`ClientError::classify`].
pub(crate) enum Failure {
    /// Sending the request or reading the response failed at the HTTP level.
    Transport(reqwest::Error),
    /// The service answered with a status the call does not accept.
    Status {
        /// The status received.
        status: StatusCode,
        /// The response headers (for `Retry-After`), boxed to keep `Failure` small.
        headers: Box<HeaderMap>,
        /// The (size-limited) body, possibly a problem document.
        body: Bytes,
    },
    /// A success body that is not valid JSON or does not match the schema.
    Decode(serde_json::Error),
    /// A response that breaks the contract in a way our own checks found.
    Contract(&'static str),
    /// A response body larger than we are willing to buffer.
    TooLarge,
    /// The caller's request was refused before sending.
    Rejected(&'static str),
    /// The resource is known not to exist without a status of its own (an id a batch reported
    /// missing, or remembered as missing by negative caching).
    Missing,
    /// The request's deadline had passed before the call could start.
    DeadlineExceeded,
    /// One attempt was cut off by its timeout; `deadline_bound` when that timeout was the
    /// request's remaining budget rather than the service's own timeout.
    AttemptTimedOut {
        /// Whether the caller's deadline, not the service's timeout, bounded the attempt.
        deadline_bound: bool,
    },
    /// The service's circuit breaker is open: the call was not sent.
    CircuitOpen,
    /// The service's bulkhead is full: the call was not sent.
    BulkheadFull,
}

impl ClientError {
    /// The one place where failures are classified into an [`ErrorKind`].
    pub(crate) fn classify(service: Service, failure: Failure) -> Self {
        let mut error = Self {
            service,
            kind: ErrorKind::BadResponse,
            status: None,
            problem: None,
            retry_after: None,
            message: Cow::Borrowed(""),
            source: None,
            origin: Origin::Downstream,
        };
        match failure {
            Failure::Transport(err) => {
                let err = err.without_url();
                let (kind, message) = if err.is_connect() {
                    (ErrorKind::Unavailable, "could not connect")
                } else if err.is_timeout() {
                    (ErrorKind::Timeout, "did not answer in time")
                } else if err.is_decode() {
                    (ErrorKind::BadResponse, "sent an undecodable body")
                } else if err.is_builder() {
                    (ErrorKind::Invalid, "request could not be built")
                } else if err.is_redirect() {
                    (ErrorKind::BadResponse, "answered with a redirect")
                } else {
                    (ErrorKind::Unavailable, "connection failed")
                };
                error.kind = kind;
                error.message = Cow::Borrowed(message);
                error.source = Some(Arc::new(err));
            }
            Failure::Status {
                status,
                headers,
                body,
            } => {
                error.kind = match status.as_u16() {
                    400 | 413 | 414 | 422 => ErrorKind::Invalid,
                    403 => ErrorKind::Forbidden,
                    404 | 410 => ErrorKind::NotFound,
                    408 => ErrorKind::Timeout,
                    409 => ErrorKind::Conflict,
                    412 => ErrorKind::PreconditionFailed,
                    429 | 500..=599 => ErrorKind::Unavailable,
                    _ => ErrorKind::BadResponse,
                };
                error.status = Some(status);
                error.message = Cow::Owned(format!("answered {status}"));
                error.retry_after = retry_after(&headers);
                error.problem = serde_json::from_slice::<Problem>(&body).ok().map(Arc::new);
            }
            Failure::Decode(err) => {
                error.message = Cow::Borrowed("sent a body that does not match the contract");
                error.source = Some(Arc::new(err));
            }
            Failure::Contract(what) => error.message = Cow::Borrowed(what),
            Failure::TooLarge => error.message = Cow::Borrowed("sent an oversized body"),
            Failure::Rejected(why) => {
                error.kind = ErrorKind::Invalid;
                error.message = Cow::Borrowed(why);
                error.origin = Origin::Local;
            }
            Failure::Missing => {
                error.kind = ErrorKind::NotFound;
                error.status = Some(StatusCode::NOT_FOUND);
                error.message = Cow::Borrowed("has no such resource");
            }
            Failure::DeadlineExceeded => {
                error.kind = ErrorKind::Timeout;
                error.message = Cow::Borrowed("was not called: the request's deadline had passed");
                error.origin = Origin::Deadline;
            }
            Failure::AttemptTimedOut { deadline_bound } => {
                error.kind = ErrorKind::Timeout;
                if deadline_bound {
                    error.message = Cow::Borrowed("did not answer within the request's deadline");
                    error.origin = Origin::Deadline;
                } else {
                    error.message = Cow::Borrowed("did not answer in time");
                }
            }
            Failure::CircuitOpen => {
                error.kind = ErrorKind::Unavailable;
                error.message = Cow::Borrowed("was not called: its circuit breaker is open");
                error.origin = Origin::Local;
            }
            Failure::BulkheadFull => {
                error.kind = ErrorKind::Unavailable;
                error.message = Cow::Borrowed("was not called: too many calls in flight");
                error.origin = Origin::Local;
            }
        }
        error
    }

    /// Which service failed.
    pub fn service(&self) -> Service {
        self.service
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status the service answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        self.status.map(|s| s.as_u16())
    }

    /// The problem document the service sent, if any (its `title` and `detail` explain an
    /// [`ErrorKind::Invalid`] or [`ErrorKind::Conflict`]).
    pub fn problem(&self) -> Option<&Problem> {
        self.problem.as_deref()
    }

    /// How long the service asked callers to wait (`Retry-After`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the same request may succeed if tried again later: timeouts and unavailability.
    /// Only idempotent requests (reads, order creation with its idempotency key) may be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout | ErrorKind::Unavailable)
    }

    /// Where the failure came from.
    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether the resilience layer may send the same (idempotent) request again: connection
    /// failures, attempt timeouts not caused by the deadline, 408, 429, 502, 503 and 504. Not a
    /// 500 (likely a bug that repeats), and never a failure that happened without a call.
    pub(crate) fn may_retry(&self) -> bool {
        if self.origin != Origin::Downstream || !self.is_retryable() {
            return false;
        }
        match self.status {
            None => true,
            Some(status) => matches!(status.as_u16(), 408 | 429 | 502 | 503 | 504),
        }
    }

    /// Whether the failure says the service is unhealthy, for its circuit breaker: timeouts of its
    /// own, connection failures and 5xx. A 4xx (429 included: the service is answering), a bad
    /// body and anything the caller's deadline or a local check caused do not count.
    pub(crate) fn is_service_failure(&self) -> bool {
        if self.origin != Origin::Downstream {
            return false;
        }
        match self.status {
            Some(status) => status.is_server_error(),
            None => matches!(self.kind, ErrorKind::Timeout | ErrorKind::Unavailable),
        }
    }
}

/// Reads `Retry-After`: delta-seconds, or an HTTP-date (as the time left until then, zero if it
/// has passed). Anything else is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} service {}", self.service, self.message)
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientError")
            .field("service", &self.service)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("problem", &self.problem)
            .field("message", &self.message)
            .field("source", &self.source)
            .field("origin", &self.origin)
            .finish()
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|err| err as &(dyn std::error::Error + 'static))
    }
}

/// The configuration could not be turned into clients (returned once, at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A service's `url` is not an absolute `http`/`https` URL that paths can be appended to.
    #[error("invalid URL for the {service} service: {reason}")]
    InvalidUrl {
        /// The service whose URL is wrong.
        service: Service,
        /// What is wrong with it (the URL itself is not repeated: it may carry credentials).
        reason: String,
    },
    /// The HTTP client could not be created (e.g. the TLS backend failed to initialise).
    #[error("could not build the HTTP client for the {service} service: {reason}")]
    HttpClient {
        /// The service whose client failed.
        service: Service,
        /// Why it failed.
        reason: String,
    },
    /// The shared state's settings are unusable (e.g. `shared.redis_url` is not a Redis URL; the
    /// URL itself is not repeated: it may carry a password).
    #[error("invalid shared state settings: {0}")]
    Shared(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, body: &str) -> ClientError {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        ClientError::classify(
            Service::Cart,
            Failure::Status {
                status: StatusCode::from_u16(code).unwrap(),
                headers: Box::new(headers),
                body: Bytes::copy_from_slice(body.as_bytes()),
            },
        )
    }

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (400, ErrorKind::Invalid),
            (401, ErrorKind::BadResponse),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (405, ErrorKind::BadResponse),
            (409, ErrorKind::Conflict),
            (412, ErrorKind::PreconditionFailed),
            (415, ErrorKind::BadResponse),
            (422, ErrorKind::Invalid),
            (429, ErrorKind::Unavailable),
            (500, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
            (302, ErrorKind::BadResponse),
            (304, ErrorKind::BadResponse),
        ];
        for (code, kind) in cases {
            let err = status(code, "");
            assert_eq!(err.kind(), kind, "status {code}");
            assert_eq!(err.status(), Some(code));
            assert_eq!(err.service(), Service::Cart);
        }
    }

    #[test]
    fn a_problem_body_is_kept_as_data_and_kept_out_of_display() {
        let err = status(
            422,
            r#"{"type":"about:blank","title":"Unprocessable","status":422.0,"detail":"mixed currencies","extra":1}"#,
        );
        let problem = err.problem().unwrap();
        assert_eq!(problem.detail.as_deref(), Some("mixed currencies"));
        assert_eq!(problem.status, Some(422));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            err.to_string(),
            "cart service answered 422 Unprocessable Entity"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_str(value).unwrap(),
            );
            retry_after(&headers)
        };
        assert_eq!(with(" 120 "), Some(Duration::from_secs(120)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let left = with(&in_a_minute).unwrap();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-1"), None);
    }

    #[test]
    fn only_transient_downstream_failures_are_retried_and_only_5xx_and_timeouts_trip_breakers() {
        for (code, retried, counted) in [
            (408, true, false),
            (429, true, false),
            (500, false, true),
            (502, true, true),
            (503, true, true),
            (504, true, true),
            (404, false, false),
            (422, false, false),
        ] {
            let err = status(code, "");
            assert_eq!(err.may_retry(), retried, "{code}");
            assert_eq!(err.is_service_failure(), counted, "{code}");
        }
        let own_timeout = ClientError::classify(
            Service::Product,
            Failure::AttemptTimedOut {
                deadline_bound: false,
            },
        );
        assert!(own_timeout.may_retry() && own_timeout.is_service_failure());
        let deadline = ClientError::classify(
            Service::Product,
            Failure::AttemptTimedOut {
                deadline_bound: true,
            },
        );
        assert_eq!(deadline.kind(), ErrorKind::Timeout);
        assert!(!deadline.may_retry() && !deadline.is_service_failure());
        for local in [
            Failure::DeadlineExceeded,
            Failure::CircuitOpen,
            Failure::BulkheadFull,
        ] {
            let err = ClientError::classify(Service::Order, local);
            assert!(err.is_retryable(), "a caller may try again later");
            assert!(!err.may_retry() && !err.is_service_failure());
        }
    }

    #[test]
    fn a_garbage_error_body_still_classifies() {
        let err = status(503, "<html>");
        assert!(err.problem().is_none());
        assert!(err.is_retryable());
    }
}

//! What travels downstream with every call: request correlation, trace context, the request's
//! deadline and identity.
//!
//! - [`RequestContext`] is built once per inbound request by a BFF and passed to every client call.
//!   It carries the `X-Request-Id` and W3C `traceparent` to propagate, both optional, and the
//!   request's deadline. Its fields are private and it is built with `with_…` methods.
//!
//!   **Deadline policy.** The deadline is an instant (`tokio::time::Instant`) shared by every call
//!   made with the context or its clones, so a concurrent fan-out spends one budget. Each
//!   downstream attempt is bounded by the smaller of the remaining budget and the service's
//!   configured `timeout`; once the budget is spent no call starts and the caller gets a
//!   [`Timeout`](crate::ErrorKind::Timeout) at once; retries never wait past it. Without a
//!   deadline, each attempt is bounded by the service's `timeout` alone (background work, tests).
//!   Gateways set it per inbound request, by default to
//!   [`Downstream::deadline`](crate::Downstream::deadline) from now, or to a route's own budget.
//! - [`Owner`] says on whose behalf an order call is made: a user (`X-User-Id`) or a partner
//!   (`X-Partner-Id`). Cart calls always act for a [`UserId`].
//! - [`IdempotencyKey`] makes `POST /orders` safe to repeat.
//!
//! Every value here is validated when it is built, so it is always a legal header value and a
//! hostile inbound header can never be smuggled downstream.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::id::{PartnerId, UserId};

/// Longest `X-Request-Id` that is propagated; longer inbound ids are rejected (and a BFF then
/// generates its own).
const MAX_REQUEST_ID_LEN: usize = 200;

/// Longest idempotency key the contract allows.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A header value offered for propagation was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header value")]
pub struct InvalidHeaderValue {
    /// The header whose value was refused; the value itself is not echoed.
    header: &'static str,
}

impl InvalidHeaderValue {
    /// The name of the header whose value was refused.
    pub fn header(&self) -> &'static str {
        self.header
    }
}

/// Whether every byte of `value` is visible ASCII (`!` to `~`) and its length is in `1..=max`.
fn is_visible_ascii(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Builds a header value from a string already checked to be visible ASCII.
fn header_value(value: &str, header: &'static str) -> Result<HeaderValue, InvalidHeaderValue> {
    HeaderValue::from_str(value).map_err(|_| InvalidHeaderValue { header })
}

/// A random UUID v4 as a header value.
fn uuid_header_value() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .expect("a hyphenated UUID is 36 characters of hex digits and '-', a valid header value")
}

/// The correlation id of one inbound request, propagated as `X-Request-Id` (1 to 200 visible ASCII
/// characters).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Accepts an inbound id of 1 to 200 visible ASCII characters.
    pub fn parse(value: &str) -> Result<Self, InvalidHeaderValue> {
        const HEADER: &str = "X-Request-Id";
        if !is_visible_ascii(value, MAX_REQUEST_ID_LEN) {
            return Err(InvalidHeaderValue { header: HEADER });
        }
        header_value(value, HEADER).map(Self)
    }

    /// A fresh random id (a UUID v4), for requests that arrived without one.
    pub fn generate() -> Self {
        Self(uuid_header_value())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value, ready to send.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:?})", self.as_str())
    }
}

/// A W3C Trace Context `traceparent` header (`version-traceid-parentid-flags`), propagated so that
/// downstream spans join the caller's trace.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceParent(HeaderValue);

impl TraceParent {
    /// Accepts a `traceparent` as the W3C Trace Context specification defines it: lowercase hex
    /// fields, version not `ff`, trace id and parent id not all zeros. Version `00` is exactly 55
    /// characters; a later version may append `-`-separated fields, which are kept.
    pub fn parse(value: &str) -> Result<Self, InvalidHeaderValue> {
        const HEADER: &str = "traceparent";
        if !Self::is_valid(value) {
            return Err(InvalidHeaderValue { header: HEADER });
        }
        header_value(value, HEADER).map(Self)
    }

    fn is_valid(value: &str) -> bool {
        fn lower_hex(field: &str, len: usize) -> bool {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        fn not_all_zero(field: &str) -> bool {
            field.bytes().any(|b| b != b'0')
        }
        if value.len() < 55 || value.len() > 512 || !value.is_ascii() {
            return false;
        }
        let (head, rest) = value.split_at(55);
        let mut fields = head.split('-');
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return false;
        };
        let fields_ok = lower_hex(version, 2)
            && version != "ff"
            && lower_hex(trace_id, 32)
            && not_all_zero(trace_id)
            && lower_hex(parent_id, 16)
            && not_all_zero(parent_id)
            && lower_hex(flags, 2);
        let rest_ok = if version == "00" {
            rest.is_empty()
        } else {
            rest.is_empty() || (rest.starts_with('-') && rest.bytes().all(|b| b.is_ascii_graphic()))
        };
        fields_ok && rest_ok
    }

    /// The header as a string.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The value as a header value, ready to send.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({:?})", self.as_str())
    }
}

/// Everything about the inbound request that is propagated on each downstream call.
///
/// Cheap to clone. Build it once per inbound request:
///
/// ```
/// use shared_clients::{RequestContext, RequestId};
///
/// let ctx = RequestContext::new().with_request_id(RequestId::generate());
/// assert!(ctx.traceparent().is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Sent as `X-Request-Id`, so a request can be followed through the downstream logs.
    request_id: Option<RequestId>,
    /// Sent as `traceparent`, so downstream spans join the caller's distributed trace.
    traceparent: Option<TraceParent>,
    /// When the inbound request's budget is spent: no downstream call starts after it and none
    /// is waited for past it. `None`: each call is bounded by its service's timeout only.
    deadline: Option<Instant>,
}

impl RequestContext {
    /// A context that propagates nothing (background work, tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Propagates `request_id` as `X-Request-Id`.
    #[must_use]
    pub fn with_request_id(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// Propagates `traceparent`.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: TraceParent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// Bounds every downstream call made with this context (and its clones) by `deadline`,
    /// replacing any earlier deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Bounds every downstream call made with this context (and its clones) to `budget` from now:
    /// a gateway calls this once per inbound request, with its default or the route's budget.
    #[must_use]
    pub fn with_timeout_from_now(self, budget: Duration) -> Self {
        // An absurd budget saturates instead of overflowing the clock (then there is no bound).
        match Instant::now().checked_add(budget) {
            Some(deadline) => self.with_deadline(deadline),
            None => self.without_deadline(),
        }
    }

    /// The same context without a deadline (for background work that outlives the request).
    #[must_use]
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// When the request's budget is spent, if it has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How much of the budget is left (zero once spent); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Whether the budget is spent, so no downstream call may start.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }

    /// The request id propagated as `X-Request-Id`, if any.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// The trace context propagated as `traceparent`, if any.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }
}

/// On whose behalf an order is created, read or listed. The order service enforces ownership with
/// the identity header this selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An end user authenticated by the web or mobile BFF; sent as `X-User-Id`.
    User(UserId),
    /// A partner authenticated by the partner BFF; sent as `X-Partner-Id`.
    Partner(PartnerId),
}

impl Owner {
    /// The identity header that names this owner downstream.
    pub(crate) fn header_name(&self) -> &'static str {
        match self {
            Self::User(_) => "x-user-id",
            Self::Partner(_) => "x-partner-id",
        }
    }

    /// The query parameter that names this owner when listing orders.
    pub(crate) fn query_name(&self) -> &'static str {
        match self {
            Self::User(_) => "user_id",
            Self::Partner(_) => "partner_id",
        }
    }

    /// The hash tag of the owner's keys in Redis (`u:<id>` or `p:<id>`): every shared key of one
    /// owner carries it, so a script touching several of them stays in one cluster slot.
    pub(crate) fn shared_tag(&self) -> String {
        match self {
            Self::User(id) => format!("u:{}", id.as_str()),
            Self::Partner(id) => format!("p:{}", id.as_str()),
        }
    }

    /// The owner's id.
    pub fn id(&self) -> &str {
        match self {
            Self::User(id) => id.as_str(),
            Self::Partner(id) => id.as_str(),
        }
    }
}

impl From<UserId> for Owner {
    fn from(user: UserId) -> Self {
        Self::User(user)
    }
}

impl From<PartnerId> for Owner {
    fn from(partner: PartnerId) -> Self {
        Self::Partner(partner)
    }
}

/// The `Idempotency-Key` of an order creation: 1 to 255 visible ASCII characters. Repeating a
/// creation with the same key and body returns the order created first instead of a second one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(HeaderValue);

impl IdempotencyKey {
    /// Accepts a key matching the contract's `^[!-~]{1,255}$`.
    pub fn parse(value: &str) -> Result<Self, InvalidHeaderValue> {
        const HEADER: &str = "Idempotency-Key";
        if !is_visible_ascii(value, MAX_IDEMPOTENCY_KEY_LEN) {
            return Err(InvalidHeaderValue { header: HEADER });
        }
        header_value(value, HEADER).map(Self)
    }

    /// A fresh random key (a UUID v4), for callers that did not bring their own.
    pub fn generate() -> Self {
        Self(uuid_header_value())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The key as a header value, ready to send.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_accepted() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(tp).unwrap().as_str(), tp);
        // A future version may carry more fields.
        assert!(TraceParent::parse(&format!("01{}-abc", &tp[2..])).is_ok());
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n",
        ] {
            assert!(
                TraceParent::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_shared_by_clones_and_counts_down() {
        let ctx = RequestContext::new().with_timeout_from_now(Duration::from_millis(300));
        let clone = ctx.clone();
        assert_eq!(ctx.remaining(), Some(Duration::from_millis(300)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(clone.remaining(), Some(Duration::from_millis(200)));
        assert!(!clone.is_expired());
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(ctx.remaining(), Some(Duration::ZERO), "never negative");
        assert!(ctx.is_expired() && clone.is_expired());
        assert_eq!(ctx.without_deadline().remaining(), None);
        assert!(!RequestContext::new().is_expired());
        let huge = RequestContext::new().with_timeout_from_now(Duration::MAX);
        assert_eq!(
            huge.deadline(),
            None,
            "an unrepresentable deadline is no deadline"
        );
    }

    #[test]
    fn request_ids_and_idempotency_keys_must_be_visible_ascii() {
        assert!(RequestId::parse("req-1").is_ok());
        assert!(RequestId::parse("a b").is_err());
        assert!(RequestId::parse("x\r\nX-User-Id: u-2").is_err());
        assert!(RequestId::parse(&"r".repeat(201)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
        assert_eq!(IdempotencyKey::generate().as_str().len(), 36);
    }
}

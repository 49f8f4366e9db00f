//! Trace context that outlives a request: what a change causes later (a subscription push, a
//! webhook delivery) is traced in the trace of the request that made the change, and a call
//! that serves several waiting requests links to each of them.
//!
//! Policy:
//! - **Events carry their cause.** A change event carries the W3C `traceparent` and
//!   `tracestate` of the request that caused it (the events contract, "Traced"). A
//!   [`TraceContext`] is that pair, parsed; [`TraceContext::adopt`] makes a span a child of it,
//!   so the work the event causes joins the request's trace however late, on whichever replica.
//! - **Only what an event causes is a span.** Evictions are counted (the consumer's metrics),
//!   not traced one by one; the work an event causes that someone sees (a push, a delivery) is.
//! - **Links, bounded.** A call made once for several waiting requests (coalesced, batched,
//!   refreshed in the background) links to each waiting request's span, at most
//!   [`MAX_LINKS`]: see [`Links`].
//! - **Free when traces are not exported.** Without the OpenTelemetry layer, spans have no
//!   OpenTelemetry context: [`current_span_context`] is `None`, nothing is collected and no
//!   extra span is made.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::context::TraceParent;

/// Most links one span gets (the first waiters; later ones are counted, not linked).
pub const MAX_LINKS: usize = 32;

/// The longest `tracestate` kept (the events contract's limit).
const MAX_TRACESTATE: usize = 512;

/// The W3C trace context of the request that caused something: a valid `traceparent` and its
/// `tracestate`, if any. Small and cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The causing request's `traceparent`.
    traceparent: TraceParent,
    /// Its `tracestate`, when one came with it (at most 512 characters, printable ASCII).
    tracestate: Option<String>,
}

impl TraceContext {
    /// The context of a `traceparent` (and `tracestate`): `None` when the `traceparent` is not
    /// valid; a `tracestate` that is too long or not printable ASCII is left out.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = TraceParent::parse(traceparent).ok()?;
        let tracestate = tracestate
            .filter(|state| {
                !state.is_empty()
                    && state.len() <= MAX_TRACESTATE
                    && state.bytes().all(|b| (0x20..=0x7e).contains(&b))
            })
            .map(str::to_owned);
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// The context `span` has while traces are exported (its own span id, so what it calls
    /// continues under it); `None` without the OpenTelemetry layer or for a span not recorded.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return None;
        }
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        );
        let tracestate = span_context.trace_state().header();
        Self::parse(&traceparent, Some(&tracestate))
    }

    /// The `traceparent`.
    pub fn traceparent(&self) -> &TraceParent {
        &self.traceparent
    }

    /// The `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id (32 lowercase hex digits).
    pub fn trace_id(&self) -> &str {
        self.traceparent.as_str().get(3..35).unwrap_or_default()
    }

    /// The remote span this context names, for OpenTelemetry.
    pub fn span_context(&self) -> SpanContext {
        let value = self.traceparent.as_str();
        let field = |range: std::ops::Range<usize>| value.get(range).unwrap_or_default();
        let trace_id = TraceId::from_hex(field(3..35)).unwrap_or(TraceId::INVALID);
        let span_id = SpanId::from_hex(field(36..52)).unwrap_or(SpanId::INVALID);
        let flags = u8::from_str_radix(field(53..55), 16).unwrap_or(0);
        let state = self
            .tracestate
            .as_deref()
            .and_then(|state| TraceState::from_str(state).ok())
            .unwrap_or_default();
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags) & TraceFlags::SAMPLED,
            true,
            state,
        )
    }

    /// Makes `span` (not entered yet) a child of this context, so it and what it calls are in
    /// the causing request's trace. Does nothing while traces are not exported.
    pub fn adopt(&self, span: &tracing::Span) {
        let parent = opentelemetry::Context::new().with_remote_span_context(self.span_context());
        // Fails only without the OpenTelemetry layer (nothing is exported then) or for a span
        // already started (a caller's mistake that costs the parent, never the work).
        let _ = span.set_parent(parent);
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent.as_str())
            .field("tracestate", &self.tracestate)
            .finish()
    }
}

/// The OpenTelemetry span context of the current span, when traces are exported and it is
/// recorded; `None` otherwise (and then nothing else is done).
pub fn current_span_context() -> Option<SpanContext> {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The span of a call made once for several waiting callers (coalesced, batched, refreshed in
/// the background), named `name`, a child of the current span; links to the callers are added
/// when it is done ([`Links::link`]). A disabled span when traces are not exported.
pub(crate) fn shared_call_span(name: &'static str) -> tracing::Span {
    if current_span_context().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!("shared call", "otel.name" = name, "otel.kind" = "internal")
}

/// The spans of the requests waiting for one call, to link the call's span to: the first
/// [`MAX_LINKS`] distinct ones. Collected only while traces are exported.
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// The waiting requests' spans, in the order they started waiting.
    spans: Mutex<Vec<SpanContext>>,
}

impl Links {
    /// Notes the current span as waiting (nothing when traces are not exported, or when
    /// [`MAX_LINKS`] are noted already).
    pub(crate) fn note_current(&self) {
        if let Some(context) = current_span_context() {
            self.note(context);
        }
    }

    /// Notes `context` as waiting, unless it is noted already or the list is full.
    pub(crate) fn note(&self, context: SpanContext) {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spans.len() < MAX_LINKS && !spans.contains(&context) {
            spans.push(context);
        }
    }

    /// Adds a link to each noted span to `span`, and forgets them.
    pub(crate) fn link(&self, span: &tracing::Span) {
        let spans = std::mem::take(
            &mut *self
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for context in spans {
            span.add_link(context);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_traceparent_becomes_a_remote_sampled_parent() {
        let trace = TraceContext::parse(PARENT, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let context = trace.span_context();
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert_eq!(context.trace_state().get("congo"), Some("t61rcWkgMzE"));
    }

    #[test]
    fn invalid_context_is_refused_and_a_bad_tracestate_dropped() {
        assert!(TraceContext::parse("00-xyz", None).is_none());
        let trace = TraceContext::parse(PARENT, Some(&"a".repeat(600))).expect("valid");
        assert_eq!(trace.tracestate(), None);
        let unsampled = TraceContext::parse(&PARENT.replace("-01", "-00"), None).expect("valid");
        assert!(!unsampled.span_context().is_sampled());
    }

    #[test]
    fn links_are_bounded_and_distinct() {
        let links = Links::default();
        let trace = TraceContext::parse(PARENT, None).expect("valid");
        links.note(trace.span_context());
        links.note(trace.span_context());
        for n in 0..40u64 {
            links.note(SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ));
        }
        let noted = links.spans.lock().expect("lock").len();
        assert_eq!(noted, MAX_LINKS);
        // Without the OpenTelemetry layer, linking does nothing but forget them.
        links.link(&tracing::Span::none());
        assert!(links.spans.lock().expect("lock").is_empty());
    }
}

//! The delivery engine's metrics: what an operator alerts on (deliveries failing, a queue
//! growing, an endpoint disabled). Every label is bounded: an outcome class or a reason, never a
//! URL, a partner or an endpoint id.
//!
//! | series | type | labels | what |
//! |---|---|---|---|
//! | `bff_webhook_deliveries_total` | counter | `outcome` | attempts made, by what came of them: `delivered` (a `2xx`), `retry` (failed, retried later), `failed` (failed for good), `gone` (`410`) |
//! | `bff_webhook_delivery_duration_seconds` | histogram | `outcome` | how long an attempt took (target check, connection, answer), by the same outcome |
//! | `bff_webhook_queue_depth` | gauge | `state` | deliveries pending in Redis, all configured partners: `due` (waiting for a sender now), `scheduled` (a later retry, or an attempt in flight under its lease) |
//! | `bff_webhook_endpoints_disabled_total` | counter | `reason` | endpoints this replica disabled: `gone` (a `410`), `failing` (a whole schedule failed) |
//! | `bff_webhook_endpoints_disabled` | gauge | `reason` | configured partners' endpoints disabled now, by reason (`gone`, `failing`, `partner`) |
//!
//! The gauges are sampled by the engine every [`SAMPLE_EVERY`] (each replica samples the same
//! Redis data: aggregate them with `max`, not `sum`); the counters are this replica's.
//!
//! The engine starts with the gateway, before its server's recorder exists (the recorder is
//! made when the built gateway is served), so [`WebhookMetrics`] counts in atomics of its own
//! and is [attached](WebhookMetrics::attach) to the recorder when the gateway is served (a
//! [`server_kit::server::Gateway::on_metrics`] hook), before its first request: attaching describes
//! every series and sets it, so all of them are shown from the start (zeros included), with
//! any counts made before. Only attempt durations measured before attaching are not kept.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use server_kit::metrics::Metrics;

use super::store::DisabledReason;

/// How often the engine samples the queue and the disabled endpoints.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// What came of an attempt: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A `2xx`.
    Delivered,
    /// Failed; retried later.
    Retry,
    /// Failed for good (the schedule is exhausted).
    Failed,
    /// `410 Gone`: the endpoint is disabled.
    Gone,
}

impl AttemptOutcome {
    /// Every outcome, in label order.
    const ALL: [Self; 4] = [Self::Delivered, Self::Retry, Self::Failed, Self::Gone];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Gone => "gone",
        }
    }

    /// Its index in [`AttemptOutcome::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// The reasons the engine disables an endpoint for (the partner's own is not an alert).
const ENGINE_REASONS: [DisabledReason; 2] = [DisabledReason::Gone, DisabledReason::Failing];

/// Every reason an endpoint is disabled for, for the gauge.
const ALL_REASONS: [DisabledReason; 3] = [
    DisabledReason::Gone,
    DisabledReason::Failing,
    DisabledReason::Partner,
];

/// The `state` label values of the queue gauge: due now, due later.
const QUEUE_STATES: [&str; 2] = ["due", "scheduled"];

/// One sample of what the engine reads from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Pending deliveries due now (waiting for a sender).
    pub due: u64,
    /// Pending deliveries due later (a retry's wait, or a lease).
    pub scheduled: u64,
    /// Disabled endpoints: `gone`, `failing`, `partner`.
    pub disabled: [u64; 3],
}

impl Sample {
    /// Counts an endpoint disabled for `reason`.
    pub fn count_disabled(&mut self, reason: DisabledReason) {
        if let Some(index) = ALL_REASONS.iter().position(|r| *r == reason) {
            self.disabled[index] += 1;
        }
    }
}

/// The engine's series: counted here, shown once attached to a server's recorder.
#[derive(Default)]
pub struct WebhookMetrics {
    /// The recorder's series, once attached.
    series: OnceLock<Series>,
    /// Attempts so far, by [`AttemptOutcome::index`].
    attempts: [AtomicU64; 4],
    /// Endpoints disabled so far by the engine, by index in [`ENGINE_REASONS`].
    disabled: [AtomicU64; 2],
    /// The last [`Sample`], while not attached (then it goes to the gauges directly).
    sample: std::sync::Mutex<Sample>,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics")
            .field("attached", &self.is_attached())
            .finish_non_exhaustive()
    }
}

/// The handles of every series in the recorder.
struct Series {
    /// `bff_webhook_deliveries_total`, by outcome.
    attempts: [Counter; 4],
    /// `bff_webhook_delivery_duration_seconds`, by outcome.
    durations: [Histogram; 4],
    /// `bff_webhook_endpoints_disabled_total`, by engine reason.
    disabled: [Counter; 2],
    /// `bff_webhook_queue_depth`, by state.
    queue: [Gauge; 2],
    /// `bff_webhook_endpoints_disabled`, by reason.
    disabled_now: [Gauge; 3],
}

impl WebhookMetrics {
    /// Whether the series are in a recorder yet.
    pub fn is_attached(&self) -> bool {
        self.series.get().is_some()
    }

    /// Records into `metrics` from now on (a second call does nothing): describes every
    /// series, and sets them from what was counted and sampled before.
    pub fn attach(&self, metrics: &Metrics) {
        let mut fresh = false;
        let series = self.series.get_or_init(|| {
            fresh = true;
            metrics.record(|| {
                describe();
                Series {
                    attempts: AttemptOutcome::ALL.map(|outcome| {
                        counter!("bff_webhook_deliveries_total", "outcome" => outcome.as_str())
                    }),
                    durations: AttemptOutcome::ALL.map(|outcome| {
                        histogram!(
                            "bff_webhook_delivery_duration_seconds",
                            "outcome" => outcome.as_str()
                        )
                    }),
                    disabled: ENGINE_REASONS.map(|reason| {
                        counter!("bff_webhook_endpoints_disabled_total", "reason" => reason.as_str())
                    }),
                    queue: QUEUE_STATES
                        .map(|state| gauge!("bff_webhook_queue_depth", "state" => state)),
                    disabled_now: ALL_REASONS.map(|reason| {
                        gauge!("bff_webhook_endpoints_disabled", "reason" => reason.as_str())
                    }),
                }
            })
        });
        if !fresh {
            return;
        }
        // Counters only ever grow to the atomics' totals (`absolute` keeps the larger), so a
        // count racing this is not lost.
        for (counter, total) in series.attempts.iter().zip(&self.attempts) {
            counter.absolute(total.load(Ordering::Acquire));
        }
        for (counter, total) in series.disabled.iter().zip(&self.disabled) {
            counter.absolute(total.load(Ordering::Acquire));
        }
        let sample = *self
            .sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set_gauges(series, sample);
    }

    /// Counts an attempt that came to `outcome` after `took`.
    pub fn attempt(&self, outcome: AttemptOutcome, took: Duration) {
        let total = self.attempts[outcome.index()].fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(series) = self.series.get() {
            series.attempts[outcome.index()].absolute(total);
            series.durations[outcome.index()].record(took.as_secs_f64());
        }
    }

    /// Counts an endpoint the engine disabled for `reason`.
    pub fn endpoint_disabled(&self, reason: DisabledReason) {
        let Some(index) = ENGINE_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        let total = self.disabled[index].fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(series) = self.series.get() {
            series.disabled[index].absolute(total);
        }
    }

    /// Sets the gauges from a new sample.
    pub fn sampled(&self, sample: Sample) {
        *self
            .sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sample;
        if let Some(series) = self.series.get() {
            set_gauges(series, sample);
        }
    }
}

/// Sets the gauges of `series` to `sample`.
fn set_gauges(series: &Series, sample: Sample) {
    series.queue[0].set(sample.due as f64);
    series.queue[1].set(sample.scheduled as f64);
    for (gauge, count) in series.disabled_now.iter().zip(sample.disabled) {
        gauge.set(count as f64);
    }
}

/// The help texts and units of the series.
fn describe() {
    describe_counter!(
        "bff_webhook_deliveries_total",
        "Webhook delivery attempts, by outcome (delivered, retry, failed, gone)."
    );
    describe_histogram!(
        "bff_webhook_delivery_duration_seconds",
        Unit::Seconds,
        "Time a webhook delivery attempt took (target check, connection, answer), by outcome."
    );
    describe_gauge!(
        "bff_webhook_queue_depth",
        "Webhook deliveries pending in Redis: due now (due) or later (scheduled), sampled."
    );
    describe_counter!(
        "bff_webhook_endpoints_disabled_total",
        "Webhook endpoints this replica disabled, by reason (gone: a 410, failing: a whole schedule failed)."
    );
    describe_gauge!(
        "bff_webhook_endpoints_disabled",
        "Webhook endpoints disabled now, by reason (gone, failing, partner), sampled."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_before_attaching_are_shown_once_attached_and_every_series_is_there() {
        let webhooks = WebhookMetrics::default();
        webhooks.attempt(AttemptOutcome::Retry, Duration::from_millis(5));
        webhooks.endpoint_disabled(DisabledReason::Gone);
        webhooks.endpoint_disabled(DisabledReason::Partner);
        let mut sample = Sample {
            due: 3,
            scheduled: 2,
            ..Sample::default()
        };
        sample.count_disabled(DisabledReason::Failing);
        webhooks.sampled(sample);
        let metrics = Metrics::new("bff-partner", None);
        assert!(!metrics.render().contains("bff_webhook"));

        webhooks.attach(&metrics);
        webhooks.attempt(AttemptOutcome::Retry, Duration::from_millis(5));
        webhooks.attempt(AttemptOutcome::Delivered, Duration::from_millis(20));
        // A second attach changes nothing.
        webhooks.attach(&metrics);

        let text = metrics.render();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(series)
                        .and_then(|rest| rest.trim().parse().ok())
                })
                .unwrap_or_else(|| panic!("{series} in\n{text}"))
        };
        let labels = |name: &str, label: &str, value: &str| {
            format!("{name}{{gateway=\"bff-partner\",{label}=\"{value}\"}}")
        };
        let deliveries = |outcome| labels("bff_webhook_deliveries_total", "outcome", outcome);
        assert_eq!(value(&deliveries("retry")), 2.0);
        assert_eq!(value(&deliveries("delivered")), 1.0);
        assert_eq!(value(&deliveries("failed")), 0.0);
        assert_eq!(value(&deliveries("gone")), 0.0);
        let disabled = |reason| labels("bff_webhook_endpoints_disabled_total", "reason", reason);
        assert_eq!(value(&disabled("gone")), 1.0);
        assert_eq!(value(&disabled("failing")), 0.0);
        assert!(!text.contains(
            "bff_webhook_endpoints_disabled_total{gateway=\"bff-partner\",reason=\"partner\"}"
        ));
        let queue = |state| labels("bff_webhook_queue_depth", "state", state);
        assert_eq!(value(&queue("due")), 3.0);
        assert_eq!(value(&queue("scheduled")), 2.0);
        let now = |reason| labels("bff_webhook_endpoints_disabled", "reason", reason);
        assert_eq!(value(&now("failing")), 1.0);
        assert_eq!(value(&now("gone")), 0.0);
        // The durations since attaching, by outcome.
        let count = |outcome| {
            labels(
                "bff_webhook_delivery_duration_seconds_count",
                "outcome",
                outcome,
            )
        };
        assert_eq!(value(&count("delivered")), 1.0);
        assert_eq!(value(&count("retry")), 1.0);
        assert!(text.contains("# TYPE bff_webhook_delivery_duration_seconds histogram"));
        assert!(text.contains("# HELP bff_webhook_queue_depth"));

        // Later samples go straight to the gauges.
        webhooks.sampled(Sample::default());
        let text = metrics.render();
        assert!(text.contains(&format!("{} 0", queue("due"))), "{text}");
    }
}

//! The circuit breaker of one downstream service.
//!
//! Policy:
//! - **Closed**: calls go through. Each finished call is counted in a sliding window (`window`) as
//!   a success or a failure; failures are the service's own timeouts, connection failures and
//!   5xx (`ClientError::is_service_failure`). A 4xx is a success (the service answers); a call cut
//!   short by the caller's deadline, or refused locally, is not counted at all. Once the window
//!   holds at least `minimum_calls` and the failure share reaches `failure_rate`, the breaker opens.
//! - **Open**: calls fail fast as [`Unavailable`](crate::ErrorKind::Unavailable) without touching
//!   the network, for `open_for`.
//! - **Half-open**: after `open_for`, the next call becomes the single probe; every other call
//!   fails fast while it is in flight. The probe's success closes the breaker (with an empty
//!   window), its failure opens it again for `open_for`; a probe that ends without a verdict
//!   (cancelled, cut short by its caller's deadline) lets the next call probe.
//!
//! Every transition is logged once, with the service's name (`warn` when opening, `info`
//! otherwise), and counted in the service's metrics.
//!
//! The state lives behind a plain mutex held for a few instructions, never across an `.await`.
//! Time is `tokio::time::Instant`, so the tests drive it with a paused clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;
use crate::config::BreakerConfig;
use crate::error::Service;
use crate::metrics::{BreakerState, ServiceMetrics};

/// Index of successes in the window's counts.
const SUCCESS: usize = 0;
/// Index of failures in the window's counts.
const FAILURE: usize = 1;

/// How a finished call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The service answered (2xx, 3xx, 4xx, even a malformed body).
    Success,
    /// The service is unhealthy: its own timeout, a connection failure, a 5xx.
    Failure,
    /// Says nothing about the service (cut short by the caller's deadline).
    Neutral,
}

/// The circuit breaker of one service.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Named in the transition logs.
    service: Service,
    /// Whether the breaker acts at all; when off every call is permitted and nothing is counted.
    enabled: bool,
    /// The failure share (0 to 1) that opens the breaker.
    failure_rate: f64,
    /// Fewest calls in the window before the failure share is trusted.
    minimum_calls: u64,
    /// How long the breaker stays open before probing.
    open_for: Duration,
    /// State and window, changed together.
    inner: Mutex<Inner>,
    /// Where transitions are counted and the state gauge is kept.
    metrics: Arc<ServiceMetrics>,
}

/// The mutable part of a breaker.
#[derive(Debug)]
struct Inner {
    /// Where the breaker is in its cycle.
    state: State,
    /// Successes and failures of recent calls (used while closed).
    window: Window<2>,
}

/// The breaker's state, with what each state needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through and are counted.
    Closed,
    /// Calls fail fast until `until`.
    Open {
        /// When the breaker lets a probe through.
        until: Instant,
    },
    /// A single probe at a time goes through.
    HalfOpen {
        /// Whether a probe is in flight (then every other call fails fast).
        probing: bool,
    },
}

impl State {
    /// The public name of the state.
    fn public(self) -> BreakerState {
        match self {
            Self::Closed => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Permission to make one call; its verdict must be [`recorded`](Permit::record). Dropped
/// without a verdict (the call was cancelled), a probe's slot is freed for the next call.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    /// The breaker that granted it; `None` when the breaker is disabled.
    breaker: Option<&'a Breaker>,
    /// Whether this call is the half-open probe.
    probe: bool,
}

impl Breaker {
    /// A closed breaker for `service`.
    pub(crate) fn new(
        service: Service,
        config: &BreakerConfig,
        metrics: Arc<ServiceMetrics>,
    ) -> Self {
        let failure_rate = if config.failure_rate.is_nan() {
            1.0
        } else {
            config.failure_rate.clamp(0.0, 1.0)
        };
        Self {
            service,
            enabled: config.enabled,
            failure_rate,
            minimum_calls: u64::from(config.minimum_calls.max(1)),
            open_for: config.open_for,
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: Window::new(config.window),
            }),
            metrics,
        }
    }

    /// Permission for one call, or `None` when the breaker is open (or half-open with its probe
    /// in flight): the call must then fail fast.
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        if !self.enabled {
            return Some(Permit {
                breaker: None,
                probe: false,
            });
        }
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed => false,
            State::Open { until } if Instant::now() < until => return None,
            State::Open { .. } => {
                self.transition(&mut inner, State::HalfOpen { probing: true });
                true
            }
            State::HalfOpen { probing: true } => return None,
            State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                true
            }
        };
        Some(Permit {
            breaker: Some(self),
            probe,
        })
    }

    /// The current state.
    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.lock().state.public()
    }

    /// Applies a finished call's verdict.
    fn record(&self, probe: bool, verdict: Verdict) {
        let now = Instant::now();
        let mut inner = self.lock();
        if probe {
            match verdict {
                Verdict::Success => {
                    inner.window.clear();
                    self.transition(&mut inner, State::Closed);
                }
                Verdict::Failure => {
                    let until = now + self.open_for;
                    self.transition(&mut inner, State::Open { until });
                }
                Verdict::Neutral => inner.state = State::HalfOpen { probing: false },
            }
            return;
        }
        // A call that started while closed and ends after the breaker opened says nothing new.
        if inner.state != State::Closed {
            return;
        }
        match verdict {
            Verdict::Success => inner.window.add(now, SUCCESS, 1),
            Verdict::Failure => inner.window.add(now, FAILURE, 1),
            Verdict::Neutral => return,
        }
        let [successes, failures] = inner.window.totals(now);
        let calls = successes + failures;
        #[expect(
            clippy::cast_precision_loss,
            reason = "call counts of a window are far below 2^52"
        )]
        let rate = failures as f64 / calls as f64;
        if failures > 0 && calls >= self.minimum_calls && rate >= self.failure_rate {
            let until = now + self.open_for;
            self.transition(&mut inner, State::Open { until });
        }
    }

    /// Frees the probe slot of a probe that ended without a verdict.
    fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == (State::HalfOpen { probing: true }) {
            inner.state = State::HalfOpen { probing: false };
        }
    }

    /// Moves to `to`, logging and counting the change of state (not a renewal of the same state).
    fn transition(&self, inner: &mut Inner, to: State) {
        let from = inner.state.public();
        inner.state = to;
        let to = to.public();
        if from == to {
            return;
        }
        self.metrics.breaker_transition(to);
        let service = self.service.as_str();
        match to {
            BreakerState::Open => tracing::warn!(
                service,
                from = from.as_str(),
                open_for_ms = self.open_for.as_millis() as u64,
                "circuit breaker opened: calls fail fast"
            ),
            BreakerState::HalfOpen => {
                tracing::info!(service, "circuit breaker half-open: probing")
            }
            BreakerState::Closed => tracing::info!(service, "circuit breaker closed"),
        }
    }

    /// The state, locked (no critical section can leave it inconsistent, so poisoning is ignored).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit<'_> {
    /// Records the call's verdict.
    pub(crate) fn record(mut self, verdict: Verdict) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.probe, verdict);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take()
            && self.probe
        {
            breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    fn breaker() -> Breaker {
        let config = BreakerConfig {
            enabled: true,
            failure_rate: 0.5,
            minimum_calls: 4,
            window: Duration::from_secs(10),
            open_for: OPEN_FOR,
        };
        Breaker::new(Service::Product, &config, Arc::default())
    }

    fn call(breaker: &Breaker, verdict: Verdict) -> bool {
        match breaker.try_acquire() {
            Some(permit) => {
                permit.record(verdict);
                true
            }
            None => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_only_once_the_minimum_calls_show_the_failure_rate() {
        let breaker = breaker();
        for _ in 0..3 {
            assert!(call(&breaker, Verdict::Failure));
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "3 calls are too few");
        assert!(call(&breaker, Verdict::Failure));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_none(), "open: fail fast");
        assert_eq!(breaker.metrics.snapshot(Service::Product).breaker.opened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_below_the_threshold_and_neutral_calls_keep_it_closed() {
        let breaker = breaker();
        for verdict in [Verdict::Success, Verdict::Failure, Verdict::Success] {
            call(&breaker, verdict);
        }
        for _ in 0..10 {
            call(&breaker, Verdict::Neutral);
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "neutral calls are not counted"
        );
        call(&breaker, Verdict::Success);
        assert_eq!(breaker.state(), BreakerState::Closed, "1 failure in 4");
        call(&breaker, Verdict::Failure);
        call(&breaker, Verdict::Failure);
        assert_eq!(breaker.state(), BreakerState::Open, "3 failures in 6");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let breaker = breaker();
        for _ in 0..3 {
            call(&breaker, Verdict::Failure);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&breaker, Verdict::Failure);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_open_for_a_single_probe_goes_through_and_its_success_closes() {
        let breaker = breaker();
        for _ in 0..4 {
            call(&breaker, Verdict::Failure);
        }
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(breaker.try_acquire().is_none(), "still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = breaker.try_acquire().expect("the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.try_acquire().is_none(), "one probe at a time");
        probe.record(Verdict::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // The window was emptied: three failures are too few again.
        for _ in 0..3 {
            assert!(call(&breaker, Verdict::Failure));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        let snapshot = breaker.metrics.snapshot(Service::Product).breaker;
        assert_eq!(
            (snapshot.opened, snapshot.half_opened, snapshot.closed),
            (1, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_open_for() {
        let breaker = breaker();
        for _ in 0..4 {
            call(&breaker, Verdict::Failure);
        }
        tokio::time::advance(OPEN_FOR).await;
        assert!(call(&breaker, Verdict::Failure), "the probe went through");
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(breaker.try_acquire().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_a_verdict_lets_the_next_call_probe() {
        let breaker = breaker();
        for _ in 0..4 {
            call(&breaker, Verdict::Failure);
        }
        tokio::time::advance(OPEN_FOR).await;
        drop(breaker.try_acquire().expect("the probe, then cancelled"));
        assert!(call(&breaker, Verdict::Neutral), "the next call probes");
        assert!(call(&breaker, Verdict::Success), "and the next");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_breaker_never_opens() {
        let config = BreakerConfig {
            enabled: false,
            minimum_calls: 1,
            ..BreakerConfig::default()
        };
        let breaker = Breaker::new(Service::Cart, &config, Arc::default());
        for _ in 0..100 {
            assert!(call(&breaker, Verdict::Failure));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}

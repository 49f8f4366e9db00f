//! Resilience of every downstream call: deadline, circuit breaker, bulkhead and retries, applied
//! in one place ([`Guard::run`]) that the transport wraps around each request.
//!
//! Policy, in the order it is applied to one logical call:
//! 1. **Deadline.** If the request's deadline (see [`RequestContext`](crate::RequestContext)) has
//!    passed, no call starts: [`Timeout`](crate::ErrorKind::Timeout) at once. Otherwise each
//!    attempt is bounded by the smaller of the remaining budget and the service's `timeout`; an
//!    attempt cut short by the budget is a timeout of the *request*, not a failure of the service
//!    (it neither trips the breaker nor is retried).
//! 2. **Circuit breaker** ([`breaker`]): open → fail fast as
//!    [`Unavailable`](crate::ErrorKind::Unavailable) without a call.
//! 3. **Bulkhead** ([`bulkhead`]): no free slot within `max_wait` → fail fast as unavailable.
//! 4. **Retries** ([`retry`]): only for idempotent calls (`GET`s; `POST /orders`, which carries its
//!    `Idempotency-Key`), only on transient failures (`ClientError::may_retry`: connection
//!    failures, the service's own timeouts, 408, 429, 502, 503, 504), at most `max_attempts`
//!    attempts, after a jittered exponential backoff (at least the `Retry-After`), only while the
//!    retry budget allows and only when the wait ends before the deadline. A retry refused by the
//!    breaker or the bulkhead ends the call with the previous attempt's error.
//!
//! Everything is counted in the service's [`ServiceMetrics`]. Time is `tokio::time`, so the tests
//! drive every rule with a paused clock.

pub(crate) mod breaker;
pub(crate) mod bulkhead;
pub(crate) mod retry;
pub(crate) mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::breaker::{Breaker, Verdict};
use self::bulkhead::Bulkhead;
use self::retry::RetryBudget;
use crate::config::ServiceConfig;
use crate::error::{ClientError, ErrorKind, Failure, Service};
use crate::metrics::{ServiceMetrics, ServiceMetricsSnapshot};

/// Whether a call may be sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Repeating it has the effect of sending it once (reads, keyed order creation).
    Idempotent,
    /// Repeating it could apply it twice (cart writes): never retried.
    NotIdempotent,
}

/// The resilience policy of one downstream service: shared by every call to it.
#[derive(Debug)]
pub(crate) struct Guard {
    /// Named in errors and logs.
    service: Service,
    /// The service's own bound on one attempt.
    timeout: Duration,
    /// Most attempts of an idempotent call (at least 1).
    max_attempts: u32,
    /// Ceiling of the first retry's jittered wait.
    initial_backoff: Duration,
    /// Ceiling of any retry's wait; a longer `Retry-After` ends the retries.
    max_backoff: Duration,
    /// Caps retries to a share of recent requests.
    budget: RetryBudget,
    /// Fails calls fast while the service is failing.
    breaker: Breaker,
    /// Caps calls in flight.
    bulkhead: Bulkhead,
    /// Counters of this service, also updated by the breaker.
    metrics: Arc<ServiceMetrics>,
}

impl Guard {
    /// The policy of `service` as its configuration says.
    pub(crate) fn new(service: Service, config: &ServiceConfig) -> Self {
        let metrics = Arc::new(ServiceMetrics::default());
        Self {
            service,
            timeout: config.timeout,
            max_attempts: config.retry.max_attempts.max(1),
            initial_backoff: config.retry.initial_backoff,
            max_backoff: config.retry.max_backoff,
            budget: RetryBudget::new(&config.retry),
            breaker: Breaker::new(service, &config.breaker, Arc::clone(&metrics)),
            bulkhead: Bulkhead::new(&config.bulkhead),
            metrics,
        }
    }

    /// The service's counters as they are now.
    pub(crate) fn metrics(&self) -> ServiceMetricsSnapshot {
        self.metrics.snapshot(self.service)
    }

    /// The breaker's state.
    #[cfg(test)]
    pub(crate) fn breaker_state(&self) -> crate::metrics::BreakerState {
        self.breaker.state()
    }

    /// Runs one logical call: `attempt(timeout)` sends one request, and is called again for each
    /// retry. Applies the deadline, breaker, bulkhead and retry rules of the module docs.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        deadline: Option<Instant>,
        idempotency: Idempotency,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.metrics.call();
        self.budget.request();
        let result = self
            .attempts(operation, deadline, idempotency, attempt)
            .await;
        self.metrics
            .outcome(result.as_ref().err().map(ClientError::kind));
        result
    }

    /// The attempts of one call (see [`Guard::run`]).
    async fn attempts<T, F, Fut>(
        &self,
        operation: &'static str,
        deadline: Option<Instant>,
        idempotency: Idempotency,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let max_attempts = match idempotency {
            Idempotency::Idempotent => self.max_attempts,
            Idempotency::NotIdempotent => 1,
        };
        // The error of the previous attempt: what a retry that cannot start returns.
        let mut previous: Option<ClientError> = None;
        for number in 1..=max_attempts {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                self.metrics.deadline_exceeded();
                return Err(previous.unwrap_or_else(|| self.error(Failure::DeadlineExceeded)));
            }
            let Some(permit) = self.breaker.try_acquire() else {
                self.metrics.breaker_rejection();
                return Err(previous.unwrap_or_else(|| self.error(Failure::CircuitOpen)));
            };
            let Some(slot) = self.bulkhead.acquire(deadline).await else {
                self.metrics.bulkhead_rejection();
                return Err(previous.unwrap_or_else(|| self.error(Failure::BulkheadFull)));
            };
            // Waiting for a slot may have spent the budget.
            let now = Instant::now();
            let remaining = deadline.map(|deadline| deadline.saturating_duration_since(now));
            if remaining.is_some_and(|left| left.is_zero()) {
                self.metrics.deadline_exceeded();
                return Err(previous.unwrap_or_else(|| self.error(Failure::DeadlineExceeded)));
            }
            let timeout = remaining.map_or(self.timeout, |left| left.min(self.timeout));
            let deadline_bound = timeout < self.timeout;

            // Counted as finished when dropped, so a cancelled attempt leaves the gauge too.
            let in_flight = self.metrics.attempt_started();
            let outcome = tokio::time::timeout(timeout, attempt(timeout))
                .await
                .unwrap_or_else(|_elapsed| {
                    Err(self.error(Failure::AttemptTimedOut { deadline_bound }))
                });
            drop(in_flight);
            drop(slot);

            let error = match outcome {
                Ok(value) => {
                    permit.record(Verdict::Success);
                    return Ok(value);
                }
                Err(error) => error,
            };
            permit.record(if error.is_service_failure() {
                Verdict::Failure
            } else if error.kind() == ErrorKind::Timeout {
                // Only a timeout cut short by the caller's deadline gets here.
                Verdict::Neutral
            } else {
                Verdict::Success
            });

            if number == max_attempts || !error.may_retry() {
                return Err(error);
            }
            let Some(wait) = self.retry_wait(number, &error) else {
                return Err(error);
            };
            if deadline.is_some_and(|deadline| Instant::now() + wait >= deadline) {
                return Err(error);
            }
            if !self.budget.try_retry() {
                self.metrics.retry_denied();
                return Err(error);
            }
            self.metrics.retry();
            tracing::debug!(
                service = self.service.as_str(),
                operation,
                attempt = number + 1,
                wait_ms = wait.as_millis() as u64,
                error = error.kind().code(),
                "retrying downstream call"
            );
            tokio::time::sleep(wait).await;
            previous = Some(error);
        }
        // The loop returns on its last attempt; this is only reached if `max_attempts` were 0.
        Err(previous.unwrap_or_else(|| self.error(Failure::DeadlineExceeded)))
    }

    /// How long to wait before retry `number` (1-based) after `error`, or `None` when the service
    /// asked for a longer pause (`Retry-After`) than retries may wait.
    fn retry_wait(&self, number: u32, error: &ClientError) -> Option<Duration> {
        let jittered = retry::backoff(
            self.initial_backoff,
            self.max_backoff,
            number,
            rand::random(),
        );
        match error.retry_after() {
            Some(asked) if asked > self.max_backoff => None,
            Some(asked) => Some(jittered.max(asked)),
            None => Some(jittered),
        }
    }

    /// Classifies a failure of this service.
    fn error(&self, failure: Failure) -> ClientError {
        ClientError::classify(self.service, failure)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::config::{BreakerConfig, BulkheadConfig, RetryConfig};
    use crate::metrics::BreakerState;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> ServiceConfig {
        ServiceConfig {
            timeout: 1_000 * MS,
            retry: RetryConfig {
                max_attempts: 3,
                initial_backoff: 10 * MS,
                max_backoff: 100 * MS,
                budget_ratio: 0.1,
                budget_min_retries: 100,
                budget_window: Duration::from_secs(10),
            },
            breaker: BreakerConfig {
                minimum_calls: 1_000,
                ..BreakerConfig::default()
            },
            ..ServiceConfig::with_url("http://127.0.0.1:1")
        }
    }

    fn status(code: u16, retry_after: Option<&'static str>) -> ClientError {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static(value));
        }
        ClientError::classify(
            Service::Product,
            Failure::Status {
                status: StatusCode::from_u16(code).unwrap(),
                headers: Box::new(headers),
                body: Bytes::new(),
            },
        )
    }

    /// Runs a call whose attempts answer `answers` in turn (then the last again), each after
    /// `latency`; returns the result, the attempts made and the timeouts they were given.
    async fn run(
        guard: &Guard,
        deadline: Option<Instant>,
        idempotency: Idempotency,
        latency: Duration,
        answers: &[Result<u32, ClientError>],
    ) -> (Result<u32, ClientError>, u32, Vec<Duration>) {
        let calls = AtomicU32::new(0);
        let timeouts = std::sync::Mutex::new(Vec::new());
        let result = guard
            .run("test", deadline, idempotency, |timeout| {
                let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
                timeouts.lock().unwrap().push(timeout);
                let answer = answers[n.min(answers.len() - 1)].clone();
                async move {
                    tokio::time::sleep(latency).await;
                    answer
                }
            })
            .await;
        (
            result,
            calls.load(Ordering::SeqCst),
            timeouts.into_inner().unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_gets_the_smaller_of_the_remaining_budget_and_the_service_timeout() {
        let guard = Guard::new(Service::Product, &config());
        let deadline = Instant::now() + 300 * MS;
        let (result, calls, timeouts) = run(
            &guard,
            Some(deadline),
            Idempotency::Idempotent,
            5_000 * MS,
            &[Ok(1)],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(Instant::now(), deadline, "gave up exactly at the deadline");
        assert_eq!((calls, timeouts), (1, vec![300 * MS]), "no retry past it");
        assert!(!err.may_retry());

        let (_, _, timeouts) = run(&guard, None, Idempotency::Idempotent, MS, &[Ok(1)]).await;
        assert_eq!(
            timeouts,
            [1_000 * MS],
            "without a deadline: the service timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_starts_no_call_at_all() {
        let guard = Guard::new(Service::Cart, &config());
        let deadline = Instant::now();
        let started = Instant::now();
        let (result, calls, _) = run(
            &guard,
            Some(deadline),
            Idempotency::Idempotent,
            MS,
            &[Ok(1)],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
        assert_eq!(calls, 0);
        assert_eq!(started.elapsed(), Duration::ZERO, "at once");
        let metrics = guard.metrics();
        assert_eq!((metrics.deadline_exceeded, metrics.attempts), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_of_one_request_share_its_deadline() {
        let guard = Guard::new(Service::Product, &config());
        let deadline = Instant::now() + 200 * MS;
        let slow = || {
            run(
                &guard,
                Some(deadline),
                Idempotency::Idempotent,
                900 * MS,
                &[Ok(1)],
            )
        };
        let (a, b, c) = tokio::join!(slow(), slow(), slow());
        for (result, calls, _) in [a, b, c] {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
            assert_eq!(calls, 1);
        }
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_of_idempotent_calls_are_retried_with_backoff() {
        let guard = Guard::new(Service::Product, &config());
        let started = Instant::now();
        let answers = [Err(status(503, None)), Err(status(502, None)), Ok(7)];
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &answers).await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls, 3);
        // Three attempts of 1 ms plus waits of at most 10 and 20 ms.
        assert!(started.elapsed() <= 33 * MS, "{:?}", started.elapsed());
        let metrics = guard.metrics();
        assert_eq!(
            (metrics.calls, metrics.attempts, metrics.retries),
            (1, 3, 2)
        );
        assert_eq!(metrics.successes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stop_at_max_attempts() {
        let guard = Guard::new(Service::Product, &config());
        let (result, calls, _) = run(
            &guard,
            None,
            Idempotency::Idempotent,
            MS,
            &[Err(status(503, None))],
        )
        .await;
        assert_eq!(result.unwrap_err().status(), Some(503));
        assert_eq!(calls, 3);
        assert_eq!(guard.metrics().errors["UNAVAILABLE"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_and_permanent_failures_are_never_retried() {
        let guard = Guard::new(Service::Cart, &config());
        let (_, calls, _) = run(
            &guard,
            None,
            Idempotency::NotIdempotent,
            MS,
            &[Err(status(503, None))],
        )
        .await;
        assert_eq!(calls, 1, "not idempotent");
        for code in [400, 404, 409, 500] {
            let (_, calls, _) = run(
                &guard,
                None,
                Idempotency::Idempotent,
                MS,
                &[Err(status(code, None))],
            )
            .await;
            assert_eq!(calls, 1, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_timeout_is_retried_while_the_budget_lasts() {
        let guard = Guard::new(Service::Product, &config());
        let started = Instant::now();
        let deadline = started + 2_500 * MS;
        let (result, calls, timeouts) = run(
            &guard,
            Some(deadline),
            Idempotency::Idempotent,
            10_000 * MS,
            &[Ok(1)],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
        assert_eq!(calls, 3);
        assert_eq!(timeouts[..2], [1_000 * MS, 1_000 * MS]);
        assert!(
            timeouts[2] <= 500 * MS,
            "the last attempt gets what is left"
        );
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_waits_past_the_deadline() {
        let mut config = config();
        config.retry.initial_backoff = 10_000 * MS;
        config.retry.max_backoff = 10_000 * MS;
        let guard = Guard::new(Service::Product, &config);
        let deadline = Instant::now() + 50 * MS;
        // The jittered wait is below 10 s; unless it is under 49 ms no retry can start in time.
        let (result, calls, _) = run(
            &guard,
            Some(deadline),
            Idempotency::Idempotent,
            MS,
            &[Err(status(503, None))],
        )
        .await;
        assert_eq!(result.unwrap_err().status(), Some(503), "the real error");
        assert!(Instant::now() <= deadline);
        assert!(calls <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_a_long_one_ends_the_retries() {
        let guard = Guard::new(Service::Product, &config());
        let started = Instant::now();
        let answers = [Err(status(429, Some("0"))), Ok(1)];
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &answers).await;
        assert_eq!((result.unwrap(), calls), (1, 2));
        assert!(started.elapsed() <= 12 * MS);

        let mut config = config();
        config.retry.max_backoff = Duration::from_secs(2);
        let guard = Guard::new(Service::Product, &config);
        let started = Instant::now();
        let answers = [Err(status(503, Some("1"))), Ok(1)];
        let (result, _, _) = run(&guard, None, Idempotency::Idempotent, MS, &answers).await;
        assert_eq!(result.unwrap(), 1);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "waited as asked"
        );

        let answers = [Err(status(503, Some("3"))), Ok(1)];
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &answers).await;
        let err = result.unwrap_err();
        assert_eq!(
            (calls, err.retry_after()),
            (1, Some(Duration::from_secs(3)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_caps_retries_under_a_sustained_outage() {
        let mut config = config();
        config.retry.budget_min_retries = 5;
        let guard = Guard::new(Service::Product, &config);
        let mut attempts = 0;
        for _ in 0..100 {
            let (_, calls, _) = run(
                &guard,
                None,
                Idempotency::Idempotent,
                MS,
                &[Err(status(503, None))],
            )
            .await;
            attempts += calls;
        }
        // 100 calls earn 10 retries, plus the floor of 5 (the window is 10 s; 100 calls take
        // well under that).
        assert_eq!(attempts, 115);
        let metrics = guard.metrics();
        assert_eq!(metrics.retries, 15);
        assert!(metrics.retries_denied > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_and_a_probe_closes_it() {
        let mut config = config();
        config.breaker = BreakerConfig {
            enabled: true,
            failure_rate: 0.5,
            minimum_calls: 3,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(1),
        };
        config.retry.max_attempts = 1;
        let guard = Guard::new(Service::Order, &config);
        for _ in 0..3 {
            let _ = run(
                &guard,
                None,
                Idempotency::Idempotent,
                MS,
                &[Err(status(503, None))],
            )
            .await;
        }
        assert_eq!(guard.breaker_state(), BreakerState::Open);
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &[Ok(1)]).await;
        let err = result.unwrap_err();
        assert_eq!((err.kind(), calls), (ErrorKind::Unavailable, 0));
        assert_eq!(err.status(), None);

        tokio::time::advance(Duration::from_secs(1)).await;
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &[Ok(1)]).await;
        assert_eq!((result.unwrap(), calls), (1, 1));
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
        assert_eq!(guard.metrics().breaker_rejections, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_cut_short_by_the_deadline_do_not_trip_the_breaker() {
        let mut config = config();
        config.breaker.minimum_calls = 2;
        let guard = Guard::new(Service::Product, &config);
        for _ in 0..10 {
            let deadline = Instant::now() + 10 * MS;
            let _ = run(
                &guard,
                Some(deadline),
                Idempotency::Idempotent,
                50 * MS,
                &[Ok(1)],
            )
            .await;
        }
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_gives_back_its_slot_and_leaves_the_in_flight_gauge() {
        let mut config = config();
        config.bulkhead.max_in_flight = 1;
        let guard = Guard::new(Service::Cart, &config);
        let hung = run(&guard, None, Idempotency::Idempotent, 10_000 * MS, &[Ok(1)]);
        assert!(
            tokio::time::timeout(10 * MS, hung).await.is_err(),
            "cancelled"
        );
        assert_eq!(guard.metrics().in_flight, 0);
        let (result, calls, _) = run(&guard, None, Idempotency::Idempotent, MS, &[Ok(2)]).await;
        assert_eq!((result.unwrap(), calls), (2, 1), "the slot was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_fails_fast_without_a_call() {
        let mut config = config();
        config.bulkhead = BulkheadConfig {
            max_in_flight: 2,
            max_wait: Duration::ZERO,
        };
        let guard = Guard::new(Service::Cart, &config);
        let slow = || run(&guard, None, Idempotency::NotIdempotent, 100 * MS, &[Ok(1)]);
        let (a, b, c) = tokio::join!(slow(), slow(), slow());
        assert!(a.0.is_ok() && b.0.is_ok());
        let (result, calls, _) = c;
        assert_eq!(
            (result.unwrap_err().kind(), calls),
            (ErrorKind::Unavailable, 0)
        );
        assert_eq!(guard.metrics().bulkhead_rejections, 1);
    }
}

//! When to retry, and how long to wait first: exponential backoff with full jitter, and a retry
//! budget per service.
//!
//! Policy:
//! - **Backoff**: before retry `n` (1 for the first retry) the caller waits a uniformly random
//!   time between zero and `min(max_backoff, initial_backoff × 2^(n-1))` ("full jitter"), so the
//!   retries of many callers spread out instead of hitting a recovering service in waves. A
//!   `Retry-After` from the service raises the wait to at least that long; one longer than
//!   `max_backoff` ends the retries (the caller gets the error, with the `Retry-After`, at once).
//! - **Budget**: over a sliding `budget_window`, a service gets at most
//!   `budget_min_retries + budget_ratio × requests` retries, where requests are the logical calls
//!   made to it in the window. Under a sustained outage retries thus add at most `budget_ratio`
//!   (10% by default) to the load, instead of multiplying it by `max_attempts`; a quiet service
//!   still gets its `budget_min_retries`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;
use crate::config::RetryConfig;

/// Index of requests in the budget window's counts.
const REQUESTS: usize = 0;
/// Index of retries in the budget window's counts.
const RETRIES: usize = 1;

/// The longest wait before retry `retry` (1-based), before jitter: `initial × 2^(retry-1)`, at
/// most `max`.
pub(crate) fn backoff_ceiling(initial: Duration, max: Duration, retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    initial
        .checked_mul(1 << doublings)
        .map_or(max, |ceiling| ceiling.min(max))
}

/// The wait before retry `retry` (1-based) with full jitter: `unit` (uniform in `0..1`) times the
/// ceiling.
pub(crate) fn backoff(initial: Duration, max: Duration, retry: u32, unit: f64) -> Duration {
    backoff_ceiling(initial, max, retry).mul_f64(unit.clamp(0.0, 1.0))
}

/// The retry budget of one service.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// Retries allowed per request in the window.
    ratio: f64,
    /// Retries always allowed in the window.
    min_retries: f64,
    /// Requests and retries of the recent past.
    window: Mutex<Window<2>>,
}

impl RetryBudget {
    /// A budget as `config` says.
    pub(crate) fn new(config: &RetryConfig) -> Self {
        let ratio = if config.budget_ratio.is_finite() {
            config.budget_ratio.max(0.0)
        } else {
            0.0
        };
        Self {
            ratio,
            min_retries: f64::from(config.budget_min_retries),
            window: Mutex::new(Window::new(config.budget_window)),
        }
    }

    /// Counts one logical request (its first attempt), which earns `ratio` retries.
    pub(crate) fn request(&self) {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(Instant::now(), REQUESTS, 1);
    }

    /// Takes one retry from the budget; `false` when it is spent (then do not retry).
    pub(crate) fn try_retry(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let [requests, retries] = window.totals(now);
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts of a window are far below 2^52"
        )]
        let allowed = self.min_retries + self.ratio * requests as f64;
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts of a window are far below 2^52"
        )]
        let spent = retries as f64;
        if spent + 1.0 > allowed {
            return false;
        }
        window.add(now, RETRIES, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_ceiling_doubles_per_retry_up_to_the_maximum() {
        let ceilings: Vec<u128> = (1..=7)
            .map(|n| backoff_ceiling(25 * MS, 500 * MS, n).as_millis())
            .collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 400, 500, 500]);
        assert_eq!(backoff_ceiling(25 * MS, 500 * MS, u32::MAX), 500 * MS);
        assert_eq!(
            backoff_ceiling(Duration::MAX, 500 * MS, 40),
            500 * MS,
            "no overflow"
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(backoff(25 * MS, 500 * MS, 3, 0.0), Duration::ZERO);
        assert_eq!(backoff(25 * MS, 500 * MS, 3, 0.5), 50 * MS);
        assert_eq!(backoff(25 * MS, 500 * MS, 3, 1.0), 100 * MS);
        assert_eq!(backoff(25 * MS, 500 * MS, 3, 7.0), 100 * MS, "clamped");
        for _ in 0..1_000 {
            let wait = backoff(25 * MS, 500 * MS, 2, rand::random());
            assert!(wait <= 50 * MS);
        }
    }

    fn budget(ratio: f64, min_retries: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            budget_ratio: ratio,
            budget_min_retries: min_retries,
            budget_window: Duration::from_secs(10),
            ..RetryConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_floor_plus_a_share_of_requests() {
        let budget = budget(0.1, 3);
        let granted = (0..10).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 3, "the floor alone without requests");
        for _ in 0..100 {
            budget.request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 10, "10% of 100 requests on top of the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_the_window_slides() {
        let budget = budget(0.0, 2);
        assert!(budget.try_retry() && budget.try_retry());
        assert!(!budget.try_retry());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.try_retry());
    }
}

//! The bulkhead of one downstream service: a cap on its calls in flight.
//!
//! Policy: at most `max_in_flight` attempts to the service are in flight from this process. An
//! attempt beyond the cap waits for a slot for at most `max_wait` (never past its request's
//! deadline; `0s` does not wait) and otherwise fails fast as
//! [`Unavailable`](crate::ErrorKind::Unavailable) without touching the network, so a slow service
//! holds a bounded share of the gateway's connections, memory and tasks. A slot is held for one
//! attempt only, not during the backoff before a retry.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::BulkheadConfig;

/// The in-flight cap of one service.
#[derive(Debug)]
pub(crate) struct Bulkhead {
    /// One permit per call allowed in flight.
    slots: Semaphore,
    /// How long a call may wait for a slot.
    max_wait: Duration,
}

impl Bulkhead {
    /// A bulkhead as `config` says (at least one slot).
    pub(crate) fn new(config: &BulkheadConfig) -> Self {
        let slots = usize::try_from(config.max_in_flight.max(1)).unwrap_or(usize::MAX);
        Self {
            slots: Semaphore::new(slots.min(Semaphore::MAX_PERMITS)),
            max_wait: config.max_wait,
        }
    }

    /// A slot for one attempt, or `None` when none frees up within `max_wait` (and before
    /// `deadline`).
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Option<SemaphorePermit<'_>> {
        if let Ok(slot) = self.slots.try_acquire() {
            return Some(slot);
        }
        if self.max_wait.is_zero() {
            return None;
        }
        let mut until = Instant::now() + self.max_wait;
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        tokio::time::timeout_at(until, self.slots.acquire())
            .await
            .ok()?
            .ok()
    }

    /// Slots free right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulkhead(max_in_flight: u32, max_wait: Duration) -> Bulkhead {
        Bulkhead::new(&BulkheadConfig {
            max_in_flight,
            max_wait,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_cap_fail_fast_without_max_wait() {
        let bulkhead = bulkhead(2, Duration::ZERO);
        let a = bulkhead.acquire(None).await.unwrap();
        let _b = bulkhead.acquire(None).await.unwrap();
        let started = Instant::now();
        assert!(bulkhead.acquire(None).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO, "no waiting at all");
        drop(a);
        assert!(bulkhead.acquire(None).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_up_to_max_wait_for_a_slot() {
        let bulkhead = std::sync::Arc::new(bulkhead(1, Duration::from_millis(100)));
        let held = bulkhead.acquire(None).await.unwrap();
        let started = Instant::now();
        assert!(bulkhead.acquire(None).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(100));

        // A slot freed within max_wait is taken.
        let waiter = {
            let bulkhead = bulkhead.clone();
            tokio::spawn(async move { bulkhead.acquire(None).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(40)).await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(bulkhead.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_never_outlasts_the_deadline() {
        let bulkhead = bulkhead(1, Duration::from_secs(10));
        let _held = bulkhead.acquire(None).await.unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        assert!(bulkhead.acquire(Some(deadline)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }
}

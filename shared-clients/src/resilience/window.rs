//! A sliding window of event counts, for the circuit breaker's failure rate and the retry budget.
//!
//! Policy: the window is cut into [`BUCKETS`] equal buckets by time; an event is counted in the
//! bucket of the moment it happened and a bucket is forgotten, as a whole, once it is older than
//! the window. So the totals cover between `span - span / BUCKETS` and `span` of the past, in
//! constant memory and without timers. Time is `tokio::time::Instant`, so tests drive it with a
//! paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// How many buckets a window is cut into (its granularity is a tenth of its span).
pub(crate) const BUCKETS: usize = 10;

/// Shortest bucket, so a zero or tiny configured span still gives a working window.
const MIN_BUCKET: Duration = Duration::from_millis(1);

/// Counts of `K` kinds of events over a sliding span of time.
#[derive(Debug)]
pub(crate) struct Window<const K: usize> {
    /// How long each bucket covers.
    bucket_len: Duration,
    /// The instant bucket numbers count from.
    origin: Instant,
    /// The buckets, reused in a ring: bucket `n` lives at index `n % BUCKETS`.
    buckets: [Bucket<K>; BUCKETS],
}

/// The events of one stretch of time.
#[derive(Debug, Clone, Copy)]
struct Bucket<const K: usize> {
    /// Which bucket number (time since origin / bucket length) the counts belong to.
    number: u64,
    /// The counts of each kind of event.
    counts: [u64; K],
}

impl<const K: usize> Window<K> {
    /// An empty window covering `span` of the past.
    pub(crate) fn new(span: Duration) -> Self {
        let bucket_len = (span / BUCKETS as u32).max(MIN_BUCKET);
        Self {
            bucket_len,
            origin: Instant::now(),
            buckets: [Bucket {
                number: 0,
                counts: [0; K],
            }; BUCKETS],
        }
    }

    /// The number of the bucket `now` falls in.
    fn number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.bucket_len.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts `n` events of kind `kind` at `now`.
    pub(crate) fn add(&mut self, now: Instant, kind: usize, n: u64) {
        let number = self.number(now);
        let bucket = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if bucket.number != number {
            *bucket = Bucket {
                number,
                counts: [0; K],
            };
        }
        bucket.counts[kind] += n;
    }

    /// The counts of each kind over the window ending at `now`.
    pub(crate) fn totals(&self, now: Instant) -> [u64; K] {
        let current = self.number(now);
        let mut totals = [0; K];
        for bucket in &self.buckets {
            if bucket.number <= current && current - bucket.number < BUCKETS as u64 {
                for (total, count) in totals.iter_mut().zip(bucket.counts) {
                    *total += count;
                }
            }
        }
        totals
    }

    /// Forgets every event (the breaker starts afresh when it closes).
    pub(crate) fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.counts = [0; K];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn events_are_counted_for_the_span_and_then_forgotten() {
        let mut window = Window::<2>::new(Duration::from_secs(10));
        window.add(Instant::now(), 0, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        window.add(Instant::now(), 1, 2);
        assert_eq!(window.totals(Instant::now()), [3, 2]);
        tokio::time::advance(Duration::from_millis(5_500)).await;
        assert_eq!(
            window.totals(Instant::now()),
            [0, 2],
            "the first bucket aged out"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(window.totals(Instant::now()), [0, 0]);
        window.add(Instant::now(), 0, 1);
        assert_eq!(
            window.totals(Instant::now()),
            [1, 0],
            "a reused bucket starts empty"
        );
        window.clear();
        assert_eq!(window.totals(Instant::now()), [0, 0]);
    }
}

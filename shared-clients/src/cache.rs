//! A byte-bounded cache of shared values whose freshness is decided here, not by the store.
//!
//! Each [`Entry`] keeps the value (`Arc<V>`, shared with every reader), when it was fetched and
//! how long it is fresh: the smaller of the configured maximum and the response's own lifetime
//! (`Cache-Control: max-age`). A response without a lifetime, or marked `no-store`, is not kept.
//! Freshness is computed with `tokio::time::Instant`, so it is testable with a paused clock, and
//! because an expired entry stays readable until evicted, stale-while-revalidate and
//! stale-if-error can be added on top later.
//!
//! [moka](https://docs.rs/moka) stores the entries and evicts them: its capacity is a number of
//! *bytes*, each entry weighing its approximate size ([`Weigh`]), and its time-to-live is only a
//! hard upper bound for dropping entries nobody reads.
//!
//! Misses go through a [`Coalescer`], so concurrent misses of one key make one fetch.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::coalesce::Coalescer;
use crate::error::ClientError;
use crate::id::ProductId;
use crate::model::product::{Category, Product};

/// Bookkeeping bytes added to every entry's weight (the store's own per-entry overhead).
const ENTRY_OVERHEAD: usize = 128;

/// What the cache shares between callers: the value, or the error of the one fetch.
pub(crate) type Shared<V> = Result<Arc<V>, ClientError>;

/// Approximate memory footprint of a cached key or value, in bytes.
pub(crate) trait Weigh {
    /// Approximate size in bytes, including what the value owns on the heap.
    fn weigh(&self) -> usize;
}

impl Weigh for Product {
    fn weigh(&self) -> usize {
        self.approx_bytes()
    }
}

impl Weigh for Vec<Category> {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.iter().map(Category::approx_bytes).sum::<usize>()
    }
}

impl Weigh for ProductId {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.as_str().len()
    }
}

impl Weigh for () {
    fn weigh(&self) -> usize {
        0
    }
}

/// One cached value and its freshness.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    /// The value, shared with every caller that reads it.
    value: Arc<V>,
    /// When the request that produced it was sent (a conservative start of its lifetime).
    fetched_at: Instant,
    /// How long after `fetched_at` it is fresh.
    ttl: Duration,
}

// Not derived: deriving would require `V: Clone`, but only the `Arc` is cloned.
impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            fetched_at: self.fetched_at,
            ttl: self.ttl,
        }
    }
}

impl<V> Entry<V> {
    /// Whether the entry may still be served without asking the service.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched_at) < self.ttl
    }
}

/// A cache of shared values with our own freshness rules, byte-bounded, coalescing misses.
pub(crate) struct FreshCache<K, V> {
    /// The store: bounded in bytes; evicts least valuable entries first.
    entries: moka::future::Cache<K, Entry<V>>,
    /// The configured upper bound on any entry's freshness.
    max_ttl: Duration,
    /// Misses in flight, so concurrent misses of one key make one fetch.
    in_flight: Coalescer<K, Shared<V>>,
}

impl<K, V> FreshCache<K, V>
where
    K: Hash + Eq + Clone + Weigh + Send + Sync + 'static,
    V: Weigh + Send + Sync + 'static,
{
    /// A cache keeping entries fresh for at most `max_ttl`, within `max_bytes` of memory.
    pub(crate) fn new(max_ttl: Duration, max_bytes: u64) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &K, entry: &Entry<V>| {
                let bytes = ENTRY_OVERHEAD + key.weigh() + entry.value.weigh();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            // A hard bound only: freshness is decided by `Entry::is_fresh`. The store keeps an
            // entry at least as long as it can be fresh (room for stale serving comes later).
            .time_to_live(max_ttl.max(Duration::from_secs(1)))
            .build();
        Self {
            entries,
            max_ttl,
            in_flight: Coalescer::new(),
        }
    }

    /// The cached value of `key` if it is still fresh.
    pub(crate) async fn get_fresh(&self, key: &K) -> Option<Arc<V>> {
        let entry = self.entries.get(key).await?;
        entry.is_fresh(Instant::now()).then_some(entry.value)
    }

    /// Keeps `value` for the smaller of `max_ttl` and `fresh_for` (the response's lifetime),
    /// counted from `fetched_at`. Nothing is kept without a lifetime.
    pub(crate) async fn insert(
        &self,
        key: K,
        value: Arc<V>,
        fresh_for: Option<Duration>,
        fetched_at: Instant,
    ) {
        let Some(ttl) = fresh_for.map(|d| d.min(self.max_ttl)) else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        let entry = Entry {
            value,
            fetched_at,
            ttl,
        };
        self.entries.insert(key, entry).await;
    }

    /// The fresh cached value of `key`, or else the result of `fetch` (coalesced with any other
    /// fetch of `key` in flight), which is then cached for as long as it says it is fresh.
    ///
    /// `fetch` returns the value and its lifetime (`None`: do not cache).
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> Shared<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Arc<V>, Option<Duration>), ClientError>>,
    {
        if let Some(value) = self.get_fresh(key).await {
            return Ok(value);
        }
        self.in_flight
            .run(key, || async {
                // A fetch that completed between our miss and our claim filled the cache.
                if let Some(value) = self.get_fresh(key).await {
                    return Ok(value);
                }
                let started = Instant::now();
                let (value, fresh_for) = fetch().await?;
                self.insert(key.clone(), Arc::clone(&value), fresh_for, started)
                    .await;
                Ok(value)
            })
            .await
    }

    /// The misses in flight, for callers that fetch many keys at once (batches).
    pub(crate) fn in_flight(&self) -> &Coalescer<K, Shared<V>> {
        &self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{ErrorKind, Failure, Service};

    /// A test value weighing one kilobyte.
    #[derive(Debug, PartialEq)]
    struct Kb(u32);

    impl Weigh for Kb {
        fn weigh(&self) -> usize {
            1024
        }
    }

    impl Weigh for u32 {
        fn weigh(&self) -> usize {
            4
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A fake fetch counting its calls, answering `value` fresh for `fresh_for`.
    async fn fetch(
        calls: &AtomicUsize,
        value: u32,
        fresh_for: Option<Duration>,
    ) -> Result<(Arc<Kb>, Option<Duration>), ClientError> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok((Arc::new(Kb(value)), fresh_for))
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_entry_is_served_without_fetching() {
        let cache = FreshCache::<u32, Kb>::new(MINUTE, 1 << 20);
        let calls = AtomicUsize::new(0);
        let ten_secs = Some(Duration::from_secs(10));
        let first = cache
            .get_or_fetch(&1, || fetch(&calls, 1, ten_secs))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        let second = cache
            .get_or_fetch(&1, || fetch(&calls, 2, ten_secs))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the same Arc is shared");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_response_max_age_when_it_is_shorter() {
        let cache = FreshCache::<u32, Kb>::new(MINUTE, 1 << 20);
        let calls = AtomicUsize::new(0);
        let ten_secs = Some(Duration::from_secs(10));
        cache
            .get_or_fetch(&1, || fetch(&calls, 1, ten_secs))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.get_fresh(&1).await, None);
        let refreshed = cache
            .get_or_fetch(&1, || fetch(&calls, 2, ten_secs))
            .await
            .unwrap();
        assert_eq!(*refreshed, Kb(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_configured_max_ttl_when_it_is_shorter() {
        let cache = FreshCache::<u32, Kb>::new(Duration::from_secs(5), 1 << 20);
        let calls = AtomicUsize::new(0);
        cache
            .get_or_fetch(&1, || fetch(&calls, 1, Some(MINUTE)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(cache.get_fresh(&1).await.is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get_fresh(&1).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_counts_from_when_the_fetch_started() {
        let cache = FreshCache::<u32, Kb>::new(MINUTE, 1 << 20);
        cache
            .get_or_fetch(&1, || async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                Ok((Arc::new(Kb(1)), Some(Duration::from_secs(10))))
            })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(cache.get_fresh(&1).await.is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get_fresh(&1).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_without_a_lifetime_is_not_cached() {
        let cache = FreshCache::<u32, Kb>::new(MINUTE, 1 << 20);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            cache
                .get_or_fetch(&1, || fetch(&calls, 1, None))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_shared_by_concurrent_callers_and_not_cached() {
        let cache = Arc::new(FreshCache::<u32, Kb>::new(MINUTE, 1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = |calls: Arc<AtomicUsize>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(ClientError::classify(Service::Product, Failure::Missing))
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move { cache.get_or_fetch(&1, || failing(calls)).await })
            })
            .collect();
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            cache
                .get_or_fetch(&1, || failing(calls.clone()))
                .await
                .is_err()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded_in_bytes() {
        // Room for about ten 1 KiB values (plus overhead), not a hundred.
        let cache = FreshCache::<u32, Kb>::new(MINUTE, 12 * 1024);
        for key in 0..100 {
            cache
                .insert(key, Arc::new(Kb(key)), Some(MINUTE), Instant::now())
                .await;
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entries.weighted_size() <= 12 * 1024);
        assert!(cache.entries.entry_count() <= 11);
    }
}

//! A byte-bounded cache of shared (public) values whose freshness is decided here, not by the
//! store.
//!
//! Policy:
//! - **Fresh.** Each [`Entry`] keeps the value (`Arc<V>`, shared with every reader), when the
//!   request that produced it was sent and how long it is fresh: the smaller of the configured
//!   `max_ttl` and the response's own lifetime (`Cache-Control: max-age`). A response without a
//!   lifetime, or marked `no-store`, is not kept at all. A fresh entry is answered without a call.
//! - **Stale while revalidating.** For `stale_while_revalidate` after it stops being fresh, an
//!   entry is still answered at once, marked stale, and *one* background call refreshes it, however
//!   many readers arrive: the refresh claims the key in the [`Coalescer`], so readers that find it
//!   claimed do not start another, and readers of a missing or expired key join it. A refresh of
//!   an entry with an `ETag` may be a conditional request; a 304 renews the entry without a body.
//! - **Stale if error.** Past that, a read fetches before answering. If the fetch fails with a
//!   timeout, unavailability (an open circuit breaker and a full bulkhead included) or a bad
//!   response, an entry less than `stale_if_error` past its freshness is answered instead, marked
//!   stale. A 404 is never hidden this way: it removes the entry.
//! - **Negative caching.** When enabled (`negative_ttl`), a 404 is remembered for that long and
//!   answered as [`NotFound`](crate::ErrorKind::NotFound) without a call.
//! - **Deadlines.** A coalesced fetch runs under its leader's deadline; every other reader waits
//!   for it only until its own deadline (see `crate::cache::coalesce`), then gets a timeout, or a
//!   stale-if-error answer. A background refresh runs without the reader's deadline (nobody waits
//!   for it), bounded by the service's timeouts and retries.
//!
//! Freshness is computed with `tokio::time::Instant`, so it is testable with a paused clock.
//! [moka](https://docs.rs/moka) stores the entries and evicts them: its capacity is a number of
//! *bytes*, each entry weighing its approximate size ([`Weigh`]), and its time-to-live is only a
//! hard upper bound (freshness plus the longest stale window) for dropping entries nobody reads.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use super::ENTRY_OVERHEAD;
use super::coalesce::{Claim, Coalescer, Joined, Leader};
use super::l2::{Fetched, L2, Lease, Loaded};
use super::served::{Freshness, Lifetime, Served};
use crate::cache_control::ETag;
use crate::config::CacheConfig;
use crate::context::RequestContext;
use crate::error::{ClientError, ErrorKind, Failure, Service};
use crate::events::Health;
use crate::metrics::{CacheMetrics, CacheMetricsSnapshot};
use crate::trace_context::shared_call_span;
use crate::weigh::Weigh;

/// How many evicted keys are remembered (see `Inner::evicted_at`).
const EVICTIONS_REMEMBERED: u64 = 100_000;

/// How long an eviction is remembered: longer than any fetch in flight when it happened.
const EVICTION_MEMORY: Duration = Duration::from_secs(120);

/// Shortest hard time-to-live given to the store, so tiny windows still keep entries readable.
const MIN_STORE_TTL: Duration = Duration::from_secs(1);

/// What coalesced readers share: the entry one fetch produced, or its error.
pub(crate) type Shared<V> = Result<Entry<V>, ClientError>;

/// The time windows of a cache's entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    /// Upper bound on any entry's freshness.
    pub(crate) max_ttl: Duration,
    /// How long past its freshness an entry is answered while it is refreshed in the background.
    pub(crate) stale_while_revalidate: Duration,
    /// How long past its freshness an entry may replace a failed fetch.
    pub(crate) stale_if_error: Duration,
    /// How long a 404 is remembered (zero: not at all).
    pub(crate) negative_ttl: Duration,
}

impl Windows {
    /// The windows `config` sets, with negative caching only when `negative` (products: yes;
    /// the category list: no).
    pub(crate) fn from_config(config: &CacheConfig, negative: bool) -> Self {
        Self {
            max_ttl: config.max_ttl,
            stale_while_revalidate: config.stale_while_revalidate,
            stale_if_error: config.stale_if_error,
            negative_ttl: if negative {
                config.negative_ttl
            } else {
                Duration::ZERO
            },
        }
    }
}

/// One cached value and its freshness.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    /// The value, shared with every caller that reads it.
    value: Arc<V>,
    /// When the request that produced (or last revalidated) it was sent: a conservative start of
    /// its lifetime, and where its age counts from.
    fetched_at: Instant,
    /// How long after `fetched_at` it is fresh (the longer, vouched freshness once a lookup
    /// found the events still vouching for it).
    ttl: Duration,
    /// How long after `fetched_at` it is fresh on the service's own terms.
    base_ttl: Duration,
    /// The response's entity tag, for a conditional refresh.
    etag: Option<ETag>,
    /// A longer freshness vouched for by the change events: `(epoch, ttl)`, valid only while the
    /// event consumer is healthy in that epoch (see `crate::events::Health`).
    extended: Option<(u64, Duration)>,
}

// Not derived: deriving would require `V: Clone`, but only the `Arc` is cloned.
impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            fetched_at: self.fetched_at,
            ttl: self.ttl,
            base_ttl: self.base_ttl,
            etag: self.etag.clone(),
            extended: self.extended,
        }
    }
}

impl<V> Entry<V> {
    /// The value.
    pub(crate) fn value(&self) -> &Arc<V> {
        &self.value
    }

    /// The entry as the second level takes it, at `now`.
    pub(crate) fn fetched(&self, now: Instant) -> Fetched<'_, V> {
        Fetched {
            value: self.value.as_ref(),
            age: self.age(now),
            ttl: self.ttl,
            etag: self.etag.as_ref(),
        }
    }

    /// The entity tag of the response it came from, if any.
    pub(crate) fn etag(&self) -> Option<&ETag> {
        self.etag.as_ref()
    }

    /// How old the entry is at `now`.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at)
    }

    /// Whether the entry may still be served without asking the service.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }

    /// Whether the entry is less than `window` past its freshness at `now`.
    fn within(&self, now: Instant, window: Duration) -> bool {
        self.age(now) < self.ttl.saturating_add(window)
    }

    /// The value as served at `now`: fresh or stale, with its age.
    pub(crate) fn served(&self, now: Instant) -> Served<Arc<V>> {
        let age = self.age(now);
        let freshness = if age < self.ttl {
            Freshness::Fresh { age }
        } else {
            Freshness::Stale { age }
        };
        Served::new(Arc::clone(&self.value), freshness).with_lifetime(self.lifetime(age))
    }

    /// How much longer the entry may be reused, at `age`: on the service's terms, and longer
    /// while the events vouch for it (when the lookup that returned it found them doing so).
    fn lifetime(&self, age: Duration) -> Lifetime {
        let vouched = self
            .extended
            .filter(|_| self.ttl > self.base_ttl)
            .map(|(epoch, _)| (epoch, self.ttl.saturating_sub(age)));
        Lifetime {
            fresh_for: self.base_ttl.saturating_sub(age),
            vouched,
        }
    }

    /// The value of an entry just fetched for this read: fresh, whatever its lifetime.
    pub(crate) fn served_fresh(&self, now: Instant) -> Served<Arc<V>> {
        let age = self.age(now);
        Served::new(Arc::clone(&self.value), Freshness::Fresh { age })
            .with_lifetime(self.lifetime(age))
    }
}

/// What a lookup found for a key.
pub(crate) enum Lookup<V> {
    /// A fresh entry: answer it.
    Fresh(Entry<V>),
    /// An entry inside its stale-while-revalidate window: answer it, refresh in the background.
    Stale(Entry<V>),
    /// Nothing usable without a call; the expired entry, if any, may still replace an error.
    Expired(Option<Entry<V>>),
    /// The service said 404 recently (negative caching).
    Absent,
}

/// What a fetch brought back.
pub(crate) enum Update<V> {
    /// A (new) value with its lifetime (`None`: do not keep it) and entity tag.
    New {
        /// The value.
        value: Arc<V>,
        /// How long it is fresh, as the response says.
        fresh_for: Option<Duration>,
        /// The response's entity tag.
        etag: Option<ETag>,
    },
    /// The entry sent in a conditional request is still current (304).
    NotModified {
        /// The renewed lifetime, as the 304 says (`None`: do not keep it).
        fresh_for: Option<Duration>,
        /// The current tag, if the 304 named one.
        etag: Option<ETag>,
    },
}

/// A cache of shared values with our own freshness rules, byte-bounded, coalescing misses and
/// refreshes. Cheap to clone (clones share everything), so background refreshes can own one.
pub(crate) struct FreshCache<K, V> {
    /// Everything, shared with the background refreshes.
    inner: Arc<Inner<K, V>>,
}

/// The parts of a [`FreshCache`].
struct Inner<K, V> {
    /// The cache's name in metrics (`products`, `categories`).
    name: &'static str,
    /// The service whose data this is, named in the errors the cache makes itself.
    service: Service,
    /// The store: bounded in bytes; evicts least valuable entries first.
    entries: moka::future::Cache<K, Entry<V>>,
    /// Keys the service recently answered 404 for, with when that stops counting.
    absent: Option<moka::future::Cache<K, Instant>>,
    /// Freshness and stale windows.
    windows: Windows,
    /// Misses and refreshes in flight, so there is one fetch per key at a time.
    in_flight: Coalescer<K, Shared<V>>,
    /// Hits, misses, stale answers, refreshes, evictions.
    metrics: Arc<CacheMetrics>,
    /// The level shared by every replica (Redis), when configured.
    l2: Option<L2<K, V>>,
    /// When a change event last evicted each key: a fetch sent before that may hold the old
    /// data, so it is answered but not kept (nor published to L2).
    evicted_at: moka::future::Cache<K, Instant>,
    /// Event-driven freshness: the catalog consumer's health and the longer freshness it allows.
    extension: Option<(Arc<Health>, Duration)>,
}

impl<K, V> Clone for FreshCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> FreshCache<K, V>
where
    K: Hash + Eq + Clone + Weigh + Send + Sync + 'static,
    V: Weigh + Send + Sync + 'static,
{
    /// A cache named `name` of `service`'s data with `windows`, within `max_bytes` of memory.
    #[cfg(test)]
    pub(crate) fn new(
        name: &'static str,
        service: Service,
        windows: Windows,
        max_bytes: u64,
    ) -> Self {
        Self::with_levels(name, service, windows, max_bytes, None, None)
    }

    /// As [`FreshCache::new`], with a second level shared by every replica (`l2`, see
    /// `cache::l2`) and event-driven freshness (`extension`): while the health vouches for it, an
    /// entry stays fresh for the extension's duration (when longer than its own).
    pub(crate) fn with_levels(
        name: &'static str,
        service: Service,
        windows: Windows,
        max_bytes: u64,
        l2: Option<L2<K, V>>,
        extension: Option<(Arc<Health>, Duration)>,
    ) -> Self {
        let extended_for = extension.as_ref().map_or(Duration::ZERO, |(_, ttl)| *ttl);
        let metrics = Arc::new(CacheMetrics::default());
        let evictions = Arc::clone(&metrics);
        let longest_stale = windows.stale_while_revalidate.max(windows.stale_if_error);
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &K, entry: &Entry<V>| {
                let bytes = ENTRY_OVERHEAD + key.weigh() + entry.value.weigh();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, _entry, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    CacheMetrics::count(&evictions.evictions);
                }
            })
            // A hard bound only: freshness and staleness are decided by `Entry`.
            .time_to_live(
                windows
                    .max_ttl
                    .max(extended_for)
                    .saturating_add(longest_stale)
                    .max(MIN_STORE_TTL),
            )
            .build();
        let absent = (!windows.negative_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                // Remembered 404s get a small share of the budget: they are only keys.
                .max_capacity((max_bytes / 16).max(64 * 1024))
                .weigher(|key: &K, _until: &Instant| {
                    u32::try_from(ENTRY_OVERHEAD + key.weigh()).unwrap_or(u32::MAX)
                })
                .time_to_live(windows.negative_ttl.max(MIN_STORE_TTL))
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                name,
                service,
                entries,
                absent,
                windows,
                in_flight: Coalescer::new(),
                metrics,
                l2,
                evicted_at: moka::future::Cache::builder()
                    .max_capacity(EVICTIONS_REMEMBERED)
                    // Longer than any fetch may take.
                    .time_to_live(EVICTION_MEMORY)
                    .build(),
                extension,
            }),
        }
    }

    /// The second level, when configured.
    pub(crate) fn l2(&self) -> Option<&L2<K, V>> {
        self.inner.l2.as_ref()
    }

    /// Drops `key` because it changed (a change event): from this replica's memory, its remembered
    /// 404, and (with `shared`) from L2 with its lease. A fetch of it in flight now keeps nothing.
    pub(crate) async fn evict(&self, key: &K, shared: bool) {
        self.inner
            .evicted_at
            .insert(key.clone(), Instant::now())
            .await;
        // Readers from now on must not join a fetch that started before the change.
        self.inner.in_flight.forget(key);
        self.inner.entries.invalidate(key).await;
        if let Some(absent) = &self.inner.absent {
            absent.invalidate(key).await;
        }
        if shared && let Some(l2) = &self.inner.l2 {
            l2.remove(key).await;
        }
    }

    /// Drops every entry from this replica's memory (its copy can no longer be vouched for).
    pub(crate) fn evict_all(&self) {
        self.inner.entries.invalidate_all();
        if let Some(absent) = &self.inner.absent {
            absent.invalidate_all();
        }
    }

    /// Whether an entry of `key` fetched at `fetched_at` may be kept: not when a change event
    /// evicted the key after (or as) it was fetched.
    async fn keepable(&self, key: &K, fetched_at: Instant) -> bool {
        self.inner
            .evicted_at
            .get(key)
            .await
            .is_none_or(|evicted| fetched_at > evicted)
    }

    /// The entry as L2 takes it, if it may be published (see [`FreshCache::keepable`]).
    pub(crate) async fn publishable<'e>(
        &self,
        key: &K,
        entry: &'e Entry<V>,
    ) -> Option<Fetched<'e, V>> {
        self.keepable(key, entry.fetched_at)
            .await
            .then(|| entry.fetched(Instant::now()))
    }

    /// Keeps an entry another replica fetched (read from L2), with its age, and returns it.
    pub(crate) async fn adopt(&self, key: &K, loaded: Loaded<V>) -> Shared<V> {
        self.count(|m| &m.l2_hits);
        let fetched_at = loaded.fetched_at();
        let (ttl, etag) = (loaded.ttl, loaded.etag.clone());
        let update = Update::New {
            value: loaded.into_value(),
            fresh_for: Some(ttl),
            etag,
        };
        self.store(key, update, None, fetched_at).await
    }

    /// Fetches `key` and keeps the outcome: from L2 when another replica fetched it already (or
    /// is fetching it: its lease is waited for), else from the service with `fetch`, publishing
    /// the result to L2. Without L2: `fetch`, then [`FreshCache::settle`].
    async fn fetch_and_settle<F, Fut>(
        &self,
        ctx: &RequestContext,
        key: &K,
        previous: Option<&Entry<V>>,
        fetch: &F,
    ) -> Shared<V>
    where
        F: Fn(RequestContext, Option<Entry<V>>) -> Fut,
        Fut: Future<Output = Result<Update<V>, ClientError>>,
    {
        let Some(l2) = &self.inner.l2 else {
            let started = Instant::now();
            let outcome = fetch(ctx.clone(), previous.cloned()).await;
            return self.settle(key, outcome, previous, started).await;
        };
        if let Some(loaded) = l2.get(key).await {
            return self.adopt(key, loaded).await;
        }
        self.count(|m| &m.l2_misses);
        let lease = l2.lease(key).await;
        if lease == Lease::Held {
            self.count(|m| &m.lease_waits);
            let waited = l2.wait_for(std::slice::from_ref(key), ctx.deadline()).await;
            if let Some(loaded) = waited.into_iter().next().flatten() {
                return self.adopt(key, loaded).await;
            }
        }
        let started = Instant::now();
        let outcome = fetch(ctx.clone(), previous.cloned()).await;
        let shared = self.settle(key, outcome, previous, started).await;
        let fetched = match &shared {
            Ok(entry) => self.publishable(key, entry).await,
            Err(_) => None,
        };
        l2.publish(&[(key, fetched, lease == Lease::Acquired)])
            .await;
        shared
    }

    /// What the cache holds for `key` now.
    pub(crate) async fn lookup(&self, key: &K) -> Lookup<V> {
        let now = Instant::now();
        if let Some(absent) = &self.inner.absent
            && absent.get(key).await.is_some_and(|until| now < until)
        {
            return Lookup::Absent;
        }
        let entry = self.inner.entries.get(key).await.map(|mut entry| {
            // While the events vouch for it, the entry's freshness is the longer one.
            if let (Some((epoch, ttl)), Some((health, _))) = (entry.extended, &self.inner.extension)
                && health.healthy_epoch() == Some(epoch)
            {
                entry.ttl = ttl;
            }
            entry
        });
        match entry {
            Some(entry) if entry.is_fresh(now) => Lookup::Fresh(entry),
            Some(entry) if entry.within(now, self.inner.windows.stale_while_revalidate) => {
                Lookup::Stale(entry)
            }
            entry => Lookup::Expired(entry),
        }
    }

    /// The value this process holds for `key`, fresh or not, without touching Redis.
    pub(crate) async fn peek(&self, key: &K) -> Option<Arc<V>> {
        self.inner.entries.get(key).await.map(|entry| entry.value)
    }

    /// The cached value of `key` if it is still fresh.
    #[cfg(test)]
    pub(crate) async fn get_fresh(&self, key: &K) -> Option<Arc<V>> {
        match self.lookup(key).await {
            Lookup::Fresh(entry) => Some(entry.value),
            _ => None,
        }
    }

    /// Keeps what a fetch sent at `started` brought back, and returns the entry it makes.
    /// `previous` is the entry a conditional request was sent for. An answer without a lifetime
    /// is returned but not kept, and drops any older entry of the key.
    pub(crate) async fn store(
        &self,
        key: &K,
        update: Update<V>,
        previous: Option<&Entry<V>>,
        started: Instant,
    ) -> Shared<V> {
        let (value, fresh_for, etag) = match update {
            Update::New {
                value,
                fresh_for,
                etag,
            } => (value, fresh_for, etag),
            Update::NotModified { fresh_for, etag } => {
                let Some(previous) = previous else {
                    return Err(ClientError::classify(
                        self.inner.service,
                        Failure::Contract("answered 304 to a request that had no validator"),
                    ));
                };
                CacheMetrics::count(&self.inner.metrics.not_modified);
                let etag = etag.or_else(|| previous.etag.clone());
                (Arc::clone(&previous.value), fresh_for, etag)
            }
        };
        let ttl = fresh_for.map_or(Duration::ZERO, |d| d.min(self.inner.windows.max_ttl));
        // Only data fetched while the events vouched for it, in this very healthy period, may
        // borrow the longer freshness (an entry fetched before, e.g. adopted from L2, might
        // predate a change whose event this replica never read).
        let extended = match &self.inner.extension {
            Some((health, extended_ttl)) if !ttl.is_zero() && *extended_ttl > ttl => health
                .healthy_since(started)
                .map(|epoch| (epoch, *extended_ttl)),
            _ => None,
        };
        let entry = Entry {
            value,
            fetched_at: started,
            ttl,
            base_ttl: ttl,
            etag,
            extended,
        };
        if let Some(absent) = &self.inner.absent {
            absent.invalidate(key).await;
        }
        if ttl.is_zero() {
            // The service says this answer must not be reused: nor may an older one be.
            self.inner.entries.invalidate(key).await;
        } else if !self.keepable(key, started).await {
            // Sent before a change event evicted the key: answer it, keep nothing.
        } else {
            self.inner.entries.insert(key.clone(), entry.clone()).await;
        }
        Ok(entry)
    }

    /// Records that the service answered 404 for `key`: the entry goes, and with negative caching
    /// the key is answered as missing for `negative_ttl`.
    pub(crate) async fn store_absent(&self, key: &K) {
        self.inner.entries.invalidate(key).await;
        if let Some(absent) = &self.inner.absent {
            let until = Instant::now() + self.inner.windows.negative_ttl;
            absent.insert(key.clone(), until).await;
        }
    }

    /// Applies the outcome of a fetch sent at `started`: keeps the value, or records a 404.
    pub(crate) async fn settle(
        &self,
        key: &K,
        outcome: Result<Update<V>, ClientError>,
        previous: Option<&Entry<V>>,
        started: Instant,
    ) -> Shared<V> {
        match outcome {
            Ok(update) => self.store(key, update, previous, started).await,
            Err(err) => {
                if err.kind() == ErrorKind::NotFound {
                    self.store_absent(key).await;
                }
                Err(err)
            }
        }
    }

    /// `err`, or `previous` marked stale if it is inside its stale-if-error window and `err` is a
    /// failure stale data may hide (timeout, unavailability, bad response).
    pub(crate) fn stale_if_error(
        &self,
        previous: Option<&Entry<V>>,
        err: ClientError,
    ) -> Result<Served<Arc<V>>, ClientError> {
        let hideable = matches!(
            err.kind(),
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::BadResponse
        );
        let now = Instant::now();
        match previous {
            Some(entry) if hideable && entry.within(now, self.inner.windows.stale_if_error) => {
                self.count(|m| &m.stale_served);
                self.count(|m| &m.stale_if_error);
                tracing::debug!(
                    cache = self.inner.name,
                    error = err.kind().code(),
                    age_ms = entry.age(now).as_millis() as u64,
                    "serving stale data instead of an error"
                );
                Ok(entry.served(now))
            }
            _ => Err(err),
        }
    }

    /// The value of `key`: fresh from the cache, stale from the cache while one background
    /// refresh runs, or fetched with `fetch` (coalesced with any fetch of `key` in flight) and kept
    /// for as long as the response allows; a failed fetch may be hidden by a stale entry. See the
    /// module docs for the rules.
    ///
    /// `fetch(ctx, previous)` calls the service once; `previous` is the expired entry, whose
    /// `ETag` allows a conditional request.
    pub(crate) async fn get<F, Fut>(
        &self,
        ctx: &RequestContext,
        key: &K,
        fetch: F,
    ) -> Result<Served<Arc<V>>, ClientError>
    where
        F: Fn(RequestContext, Option<Entry<V>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Update<V>, ClientError>> + Send + 'static,
    {
        let previous = match self.lookup(key).await {
            Lookup::Fresh(entry) => {
                self.count(|m| &m.hits);
                return Ok(entry.served(Instant::now()));
            }
            Lookup::Stale(entry) => {
                self.count(|m| &m.stale_served);
                let served = entry.served(Instant::now());
                if let Claim::Leader(leader) = self.inner.in_flight.claim(key) {
                    self.refresh_in_background(ctx, key.clone(), entry, leader, fetch);
                }
                return Ok(served);
            }
            Lookup::Absent => {
                self.count(|m| &m.negative_hits);
                return Err(ClientError::classify(self.inner.service, Failure::Missing));
            }
            Lookup::Expired(previous) => previous,
        };
        self.count(|m| &m.misses);
        match self
            .fetch_coalesced(ctx, key, previous.as_ref(), &fetch)
            .await
        {
            Ok(entry) => Ok(entry.served_fresh(Instant::now())),
            Err(err) => self.stale_if_error(previous.as_ref(), err),
        }
    }

    /// Fetches `key` unless a fetch of it is in flight, whose result is then awaited until the
    /// caller's deadline.
    async fn fetch_coalesced<F, Fut>(
        &self,
        ctx: &RequestContext,
        key: &K,
        previous: Option<&Entry<V>>,
        fetch: &F,
    ) -> Shared<V>
    where
        F: Fn(RequestContext, Option<Entry<V>>) -> Fut,
        Fut: Future<Output = Result<Update<V>, ClientError>>,
    {
        loop {
            match self.inner.in_flight.claim(key) {
                Claim::Leader(leader) => {
                    // A fetch that completed between our miss and our claim filled the cache.
                    if let Lookup::Fresh(entry) = self.lookup(key).await {
                        leader.complete(Ok(entry.clone()));
                        return Ok(entry);
                    }
                    let span = shared_call_span(self.inner.name);
                    let shared = self
                        .fetch_and_settle(ctx, key, previous, fetch)
                        .instrument(span.clone())
                        .await;
                    leader.link_to(&span);
                    leader.complete(shared.clone());
                    return shared;
                }
                Claim::Follower(follower) => match follower.wait_within(ctx.deadline()).await {
                    Joined::Done(shared) => return shared,
                    Joined::Again => {}
                    Joined::TimedOut => return Err(self.deadline_error()),
                },
            }
        }
    }

    /// Starts the one background refresh of `key` (this caller holds its claim as `leader`).
    fn refresh_in_background<F, Fut>(
        &self,
        ctx: &RequestContext,
        key: K,
        entry: Entry<V>,
        leader: Leader<K, Shared<V>>,
        fetch: F,
    ) where
        F: Fn(RequestContext, Option<Entry<V>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Update<V>, ClientError>> + Send + 'static,
    {
        self.count(|m| &m.refreshes);
        let cache = self.clone();
        // Nobody waits for the refresh, so the reader's deadline does not bound it.
        let ctx = ctx.clone().without_deadline();
        let span = shared_call_span(self.inner.name);
        let refresh = async move {
            let shared = cache
                .fetch_and_settle(&ctx, &key, Some(&entry), &fetch)
                .instrument(span.clone())
                .await;
            leader.link_to(&span);
            if let Err(err) = &shared {
                cache.count(|m| &m.refresh_failures);
                tracing::debug!(
                    cache = cache.inner.name,
                    error = err.kind().code(),
                    "background refresh failed"
                );
            }
            leader.complete(shared);
        };
        tokio::spawn(refresh.in_current_span());
    }

    /// A timeout for a reader whose own deadline passed while it waited for a shared fetch.
    pub(crate) fn deadline_error(&self) -> ClientError {
        ClientError::classify(
            self.inner.service,
            Failure::AttemptTimedOut {
                deadline_bound: true,
            },
        )
    }

    /// Claims `key` for a fetch (see [`Coalescer::claim`]).
    pub(crate) fn claim(&self, key: &K) -> Claim<K, Shared<V>> {
        self.inner.in_flight.claim(key)
    }

    /// Counts an event in one of the cache's counters.
    pub(crate) fn count(
        &self,
        counter: impl FnOnce(&CacheMetrics) -> &std::sync::atomic::AtomicU64,
    ) {
        CacheMetrics::count(counter(&self.inner.metrics));
    }

    /// The cache's counters and size.
    pub(crate) fn metrics(&self) -> CacheMetricsSnapshot {
        self.inner.metrics.snapshot(
            self.inner.name,
            self.inner.entries.entry_count(),
            self.inner.entries.weighted_size(),
        )
    }

    /// Whether a fetch or refresh of `key` is in flight.
    #[cfg(test)]
    pub(crate) fn is_in_flight(&self, key: &K) -> bool {
        self.inner.in_flight.is_in_flight(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A test value weighing one kilobyte.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Kb(u32);

    impl Weigh for Kb {
        fn weigh(&self) -> usize {
            1024
        }
    }

    const SEC: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);

    fn windows(max_ttl: Duration) -> Windows {
        Windows {
            max_ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            negative_ttl: Duration::ZERO,
        }
    }

    fn cache(windows: Windows) -> FreshCache<u32, Kb> {
        FreshCache::new("test", Service::Product, windows, 1 << 20)
    }

    /// A fake service: counts its calls, answers `answer` after `latency`, remembers whether it
    /// was asked conditionally.
    #[derive(Clone)]
    struct Fake {
        calls: Arc<AtomicUsize>,
        conditional: Arc<AtomicUsize>,
        latency: Duration,
        answer: Arc<dyn Fn(usize) -> Result<Update<Kb>, ClientError> + Send + Sync>,
    }

    impl Fake {
        fn answering(
            latency: Duration,
            answer: impl Fn(usize) -> Result<Update<Kb>, ClientError> + Send + Sync + 'static,
        ) -> Self {
            Self {
                calls: Arc::default(),
                conditional: Arc::default(),
                latency,
                answer: Arc::new(answer),
            }
        }

        /// Answers value `n` (the call number, from 1) fresh for `fresh_for`.
        fn fresh_for(fresh_for: Option<Duration>) -> Self {
            Self::answering(Duration::ZERO, move |n| Ok(new(n, fresh_for)))
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fetch(
            &self,
        ) -> impl Fn(
            RequestContext,
            Option<Entry<Kb>>,
        )
            -> futures::future::BoxFuture<'static, Result<Update<Kb>, ClientError>>
        + Send
        + Sync
        + 'static {
            let fake = self.clone();
            move |_ctx, previous| {
                let fake = fake.clone();
                Box::pin(async move {
                    let n = fake.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if previous.is_some_and(|p| p.etag().is_some()) {
                        fake.conditional.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(fake.latency).await;
                    (fake.answer)(n)
                })
            }
        }
    }

    fn new(n: usize, fresh_for: Option<Duration>) -> Update<Kb> {
        Update::New {
            value: Arc::new(Kb(n as u32)),
            fresh_for,
            etag: ETag::parse(&format!("\"v{n}\"")),
        }
    }

    fn unavailable() -> ClientError {
        ClientError::classify(Service::Product, Failure::CircuitOpen)
    }

    fn not_found() -> ClientError {
        ClientError::classify(Service::Product, Failure::Missing)
    }

    async fn read(
        cache: &FreshCache<u32, Kb>,
        fake: &Fake,
    ) -> Result<Served<Arc<Kb>>, ClientError> {
        cache.get(&RequestContext::new(), &1, fake.fetch()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_entry_is_served_without_fetching() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::fresh_for(Some(10 * SEC));
        let first = read(&cache, &fake).await.unwrap();
        assert_eq!(
            first.freshness,
            Freshness::Fresh {
                age: Duration::ZERO
            }
        );
        tokio::time::advance(9 * SEC).await;
        let second = read(&cache, &fake).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the same Arc is shared");
        assert_eq!(second.freshness, Freshness::Fresh { age: 9 * SEC });
        assert_eq!(fake.calls(), 1);
        assert_eq!(cache.metrics().hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_response_max_age_when_it_is_shorter() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::fresh_for(Some(10 * SEC));
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(10 * SEC).await;
        assert_eq!(cache.get_fresh(&1).await, None);
        let refreshed = read(&cache, &fake).await.unwrap();
        assert_eq!(**refreshed, Kb(2));
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_configured_max_ttl_when_it_is_shorter() {
        let cache = cache(windows(5 * SEC));
        let fake = Fake::fresh_for(Some(MINUTE));
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(cache.get_fresh(&1).await.is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get_fresh(&1).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_and_age_count_from_when_the_fetch_started() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::answering(4 * SEC, |n| Ok(new(n, Some(10 * SEC))));
        let served = read(&cache, &fake).await.unwrap();
        assert_eq!(served.age(), 4 * SEC, "the call took 4 s");
        tokio::time::advance(5 * SEC).await;
        assert!(cache.get_fresh(&1).await.is_some());
        tokio::time::advance(SEC).await;
        assert!(cache.get_fresh(&1).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_without_a_lifetime_is_not_cached() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::fresh_for(None);
        for _ in 0..3 {
            assert!(!read(&cache, &fake).await.unwrap().is_stale());
        }
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_shared_by_concurrent_callers_and_not_cached() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::answering(Duration::from_millis(50), |_| Err(not_found()));
        let reads = (0..20).map(|_| read(&cache, &fake));
        for result in futures::future::join_all(reads).await {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound);
        }
        assert_eq!(fake.calls(), 1);
        assert!(read(&cache, &fake).await.is_err());
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn inside_the_swr_window_readers_get_stale_data_at_once_and_one_refresh_runs() {
        let cache = cache(Windows {
            stale_while_revalidate: 30 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(SEC, |n| Ok(new(n, Some(10 * SEC))));
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(15 * SEC).await;

        let started = Instant::now();
        let reads = futures::future::join_all((0..200).map(|_| read(&cache, &fake))).await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "nobody waited for the refresh"
        );
        for served in reads {
            let served = served.unwrap();
            assert_eq!(**served, Kb(1));
            // Fetched 16 s ago: the first call took 1 s.
            assert_eq!(served.freshness, Freshness::Stale { age: 16 * SEC });
        }
        assert!(cache.is_in_flight(&1), "the refresh runs in the background");
        tokio::time::sleep(2 * SEC).await;
        assert_eq!(fake.calls(), 2, "exactly one refresh");
        assert_eq!(
            fake.conditional.load(Ordering::SeqCst),
            1,
            "it was conditional"
        );
        let refreshed = read(&cache, &fake).await.unwrap();
        assert_eq!((**refreshed, refreshed.is_stale()), (Kb(2), false));
        let metrics = cache.metrics();
        assert_eq!((metrics.stale_served, metrics.refreshes), (200, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_swr_window_the_read_waits_for_the_fetch() {
        let cache = cache(Windows {
            stale_while_revalidate: 5 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(SEC, |n| Ok(new(n, Some(10 * SEC))));
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(15 * SEC).await;
        let served = read(&cache, &fake).await.unwrap();
        assert_eq!((**served, served.is_stale()), (Kb(2), false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_304_renews_the_entry_without_replacing_the_value() {
        let cache = cache(windows(MINUTE));
        let fake = Fake::answering(Duration::ZERO, |n| {
            if n == 1 {
                Ok(new(1, Some(10 * SEC)))
            } else {
                Ok(Update::NotModified {
                    fresh_for: Some(10 * SEC),
                    etag: None,
                })
            }
        });
        let first = read(&cache, &fake).await.unwrap();
        tokio::time::advance(11 * SEC).await;
        let second = read(&cache, &fake).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            second.freshness,
            Freshness::Fresh {
                age: Duration::ZERO
            }
        );
        assert_eq!(fake.conditional.load(Ordering::SeqCst), 1);
        assert_eq!(cache.metrics().not_modified, 1);
        tokio::time::advance(9 * SEC).await;
        assert!(cache.get_fresh(&1).await.is_some(), "fresh again for 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_serves_the_entry_inside_the_window_and_the_error_after_it() {
        let cache = cache(Windows {
            stale_if_error: 60 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(Duration::ZERO, |n| {
            if n == 1 {
                Ok(new(1, Some(10 * SEC)))
            } else {
                Err(unavailable())
            }
        });
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(69 * SEC).await;
        let served = read(&cache, &fake).await.unwrap();
        assert_eq!(served.freshness, Freshness::Stale { age: 69 * SEC });
        tokio::time::advance(SEC).await;
        let err = read(&cache, &fake).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(fake.calls(), 3);
        assert_eq!(cache.metrics().stale_if_error, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_is_never_hidden_by_stale_data_and_removes_the_entry() {
        let cache = cache(Windows {
            stale_if_error: 60 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(Duration::ZERO, |n| {
            if n == 1 {
                Ok(new(1, Some(10 * SEC)))
            } else {
                Err(not_found())
            }
        });
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(11 * SEC).await;
        assert_eq!(
            read(&cache, &fake).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(matches!(cache.lookup(&1).await, Lookup::Expired(None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_is_remembered_for_the_negative_ttl() {
        let cache = cache(Windows {
            negative_ttl: 5 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(Duration::ZERO, |_| Err(not_found()));
        for _ in 0..10 {
            assert_eq!(
                read(&cache, &fake).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
        }
        assert_eq!(fake.calls(), 1);
        tokio::time::advance(5 * SEC).await;
        read(&cache, &fake).await.unwrap_err();
        assert_eq!(fake.calls(), 2, "forgotten after the negative TTL");
        assert_eq!(cache.metrics().negative_hits, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reader_gives_up_at_its_own_deadline_and_may_get_stale_data() {
        let cache = cache(Windows {
            stale_if_error: 60 * SEC,
            ..windows(MINUTE)
        });
        let fake = Fake::answering(5 * SEC, |n| Ok(new(n, Some(10 * SEC))));
        read(&cache, &fake).await.unwrap();
        tokio::time::advance(11 * SEC).await;
        let patient = RequestContext::new();
        let hurried = RequestContext::new().with_timeout_from_now(SEC);
        let (slow, quick) = tokio::join!(
            cache.get(&patient, &1, fake.fetch()),
            cache.get(&hurried, &1, fake.fetch()),
        );
        assert_eq!(**slow.unwrap(), Kb(2));
        let quick = quick.unwrap();
        assert_eq!(
            (**quick, quick.is_stale()),
            (Kb(1), true),
            "stale after its 1 s"
        );
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded_in_bytes() {
        // Room for about ten 1 KiB values (plus overhead), not a hundred.
        let cache =
            FreshCache::<u32, Kb>::new("test", Service::Product, windows(MINUTE), 12 * 1024);
        for key in 0..100 {
            cache
                .store(&key, new(key as usize, Some(MINUTE)), None, Instant::now())
                .await
                .unwrap();
        }
        cache.inner.entries.run_pending_tasks().await;
        assert!(cache.inner.entries.weighted_size() <= 12 * 1024);
        assert!(cache.inner.entries.entry_count() <= 11);
        assert!(cache.metrics().evictions >= 89);
    }
}

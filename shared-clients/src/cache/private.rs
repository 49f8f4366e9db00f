//! Private data caching: carts and orders, only ever per owner.
//!
//! Policy:
//! - **Keys carry the owner.** An entry is reached only through a [`PrivateKey`], and a
//!   `PrivateKey` can only be built from an authenticated identity ([`Owner`] or [`UserId`], both
//!   validated types) plus the resource; its fields are private to this module, so no code path
//!   can look up private data by a bare resource id or a string. Entries are grouped per owner in
//!   the store, so one owner's entries are never even stored next to another's key.
//! - **Short TTL.** An entry is reused for `private_cache.ttl` (2 s by default) and never served
//!   stale: private data is either fresh or fetched.
//! - **Coalescing per owner.** Concurrent misses of the same owner and resource make one call;
//!   misses of different owners never wait for each other.
//! - **Read-your-writes.** A write through the gateway calls [`PrivateCache::invalidate`] for the
//!   owner (before sending, and again once it has an answer, whatever the answer), which gives the
//!   owner a fresh *generation* number and drops all their entries. A read remembers the
//!   generation it started in; its result is kept, and callers join its flight, only while that
//!   generation is current. So a read that started before a write can neither re-populate the
//!   cache with pre-write data after the invalidation nor hand that data to a read that started
//!   after it. Generations come from one process-wide counter, so they are never reused, even
//!   when an owner's record was evicted in between.
//! - **Read-your-writes across replicas.** With a Redis ([`SharedState`]), each owner also has a
//!   *shared generation* per cache (`<prefix>{u:<id>}:gen:carts`): a random 64-bit value that every
//!   write, on any replica of any gateway, replaces (before sending, and again once answered, as
//!   for the local one) before the write's answer is returned. A read asks for it first (one
//!   `GET`) and uses a cached entry only if the entry was fetched under the same value, so no
//!   replica serves an entry older than a write that has been answered. Correctness rests on that
//!   stored value alone, not on any message reaching the replicas. Values are random, never
//!   reused, and the key lives far longer than an entry (`GENERATION_KEY_TTL`), so an expired key
//!   cannot bring an old entry back. When Redis does not answer (within `shared.command_timeout`),
//!   the read falls back to the local behaviour above (entries reused for the TTL), counted in
//!   `bff_redis_fallback_total{feature="generations"}`; a write that cannot replace the value
//!   leaves other replicas serving their copy for at most the TTL.
//!
//! Freshness uses `tokio::time::Instant` (testable with a paused clock); moka bounds the store in
//! bytes and drops records nobody touched for a while.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::ENTRY_OVERHEAD;
use super::coalesce::{Claim, Coalescer, Joined};
use crate::context::{Owner, RequestContext};
use crate::error::{ClientError, Failure, Service};
use crate::id::UserId;
use crate::metrics::{CacheMetrics, CacheMetricsSnapshot};
use crate::shared_state::{Feature, SharedState};
use crate::trace_context::shared_call_span;
use crate::weigh::Weigh;

/// Shortest hard time-to-live of an owner's record in the store.
const MIN_RECORD_TTL: Duration = Duration::from_secs(10);

/// Shortest life of an owner's shared generation key after the last write (it is at least twice
/// the entries' TTL in any case), so a key never expires while an entry fetched under it lives.
const GENERATION_KEY_TTL: Duration = Duration::from_secs(600);

/// The shared generation of an owner whose key does not exist (no write seen lately).
const NO_SHARED_GENERATION: u64 = 0;

/// A private cache key: an owner's identity plus the resource. Can only be built from an
/// identity ([`PrivateKey::new`], [`PrivateKey::for_user`]); there is no way to build one from a
/// string or a resource alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PrivateKey<R> {
    /// Whose data this is; every lookup is scoped by it.
    owner: Owner,
    /// Which of the owner's resources.
    resource: R,
}

impl<R> PrivateKey<R> {
    /// `owner`'s `resource`.
    pub(crate) fn new(owner: &Owner, resource: R) -> Self {
        Self {
            owner: owner.clone(),
            resource,
        }
    }

    /// `user`'s `resource`.
    pub(crate) fn for_user(user: &UserId, resource: R) -> Self {
        Self {
            owner: Owner::User(user.clone()),
            resource,
        }
    }
}

/// What concurrent misses coalesce on: the owner's resource, the local generation and the shared
/// generation the read started in.
type Flight<R> = (PrivateKey<R>, u64, Option<u64>);

/// One cached private value.
#[derive(Debug)]
struct PrivateEntry<V> {
    /// The value, shared with the callers that read it (they clone what they return).
    value: Arc<V>,
    /// When the request that produced it was sent; its TTL counts from there.
    fetched_at: Instant,
    /// The owner's shared generation when the read started (`None`: Redis was not asked).
    shared: Option<u64>,
}

// Not derived: deriving would require `V: Clone`, but only the `Arc` is cloned.
impl<V> Clone for PrivateEntry<V> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            fetched_at: self.fetched_at,
            shared: self.shared,
        }
    }
}

/// Everything cached for one owner, under the owner's current generation.
#[derive(Debug)]
struct Record<R, V> {
    /// The owner's generation: entries are only added under the generation a read started in.
    generation: u64,
    /// The owner's entries by resource (a handful: a cart, a few order pages).
    entries: std::collections::HashMap<R, PrivateEntry<V>>,
}

/// A per-owner cache of private values with read-your-writes invalidation.
pub(crate) struct PrivateCache<R, V> {
    /// The cache's name in metrics (`carts`, `orders`).
    name: &'static str,
    /// The service whose data this is, named in the errors the cache makes itself.
    service: Service,
    /// How long an entry is reused (zero: never, but calls still coalesce).
    ttl: Duration,
    /// Each owner's record, bounded in bytes.
    records: moka::future::Cache<Owner, Arc<Record<R, V>>>,
    /// The source of generation numbers, shared by all owners so none is ever reused.
    next_generation: AtomicU64,
    /// Misses in flight, keyed by owner, resource, generation and shared generation.
    in_flight: Coalescer<Flight<R>, Result<Arc<V>, ClientError>>,
    /// Hits, misses, invalidations, evictions.
    metrics: Arc<CacheMetrics>,
    /// Where owners' shared generations live (disabled: this process alone).
    shared: SharedState,
    /// How long a shared generation key lives after a write.
    generation_ttl: Duration,
}

impl<R, V> PrivateCache<R, V>
where
    R: Hash + Eq + Clone + Weigh + Send + Sync + 'static,
    V: Weigh + Send + Sync + 'static,
{
    /// A cache named `name` of `service`'s private data, keeping entries for `ttl` within
    /// `max_bytes`, in this process alone.
    #[cfg(test)]
    pub(crate) fn new(name: &'static str, service: Service, ttl: Duration, max_bytes: u64) -> Self {
        Self::shared(name, service, ttl, max_bytes, SharedState::disabled())
    }

    /// As [`PrivateCache::new`], with owners' generations shared through `shared`.
    pub(crate) fn shared(
        name: &'static str,
        service: Service,
        ttl: Duration,
        max_bytes: u64,
        shared: SharedState,
    ) -> Self {
        let metrics = Arc::new(CacheMetrics::default());
        let evictions = Arc::clone(&metrics);
        let records = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|owner: &Owner, record: &Arc<Record<R, V>>| {
                let entries: usize = record
                    .entries
                    .iter()
                    .map(|(resource, entry)| {
                        ENTRY_OVERHEAD + resource.weigh() + entry.value.weigh()
                    })
                    .sum();
                u32::try_from(ENTRY_OVERHEAD + owner.id().len() + entries).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_owner, _record, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    CacheMetrics::count(&evictions.evictions);
                }
            })
            // Freshness is decided by the entries; this only drops idle records.
            .time_to_idle(ttl.saturating_mul(2).max(MIN_RECORD_TTL))
            .build();
        Self {
            name,
            service,
            ttl,
            records,
            next_generation: AtomicU64::new(1),
            in_flight: Coalescer::new(),
            metrics,
            shared,
            generation_ttl: ttl.saturating_mul(2).max(GENERATION_KEY_TTL),
        }
    }

    /// The key of `owner`'s shared generation of this cache.
    fn generation_key(&self, owner: &Owner) -> String {
        let mut rest = String::with_capacity(4 + self.name.len());
        rest.push_str("gen:");
        rest.push_str(self.name);
        self.shared.key(&owner.shared_tag(), &rest)
    }

    /// `owner`'s shared generation: `None` when no Redis is configured or it did not answer (the
    /// read then relies on the local generation and the TTL alone).
    async fn shared_generation(&self, owner: &Owner) -> Option<u64> {
        if !self.shared.is_enabled() {
            return None;
        }
        let key = self.generation_key(owner);
        let value: Option<u64> = self
            .shared
            .query("gen_get", Feature::Generations, redis::cmd("GET").arg(&key))
            .await
            .ok()?;
        Some(value.unwrap_or(NO_SHARED_GENERATION))
    }

    /// Gives `owner` a new shared generation (a random value never used before), so every
    /// replica's entries of theirs become unusable.
    async fn bump_shared_generation(&self, owner: &Owner) {
        if !self.shared.is_enabled() {
            return;
        }
        let key = self.generation_key(owner);
        // Never 0 (the value of a missing key).
        let value = rand::random::<u64>().max(1);
        let ttl = u64::try_from(self.generation_ttl.as_millis()).unwrap_or(u64::MAX);
        let _: Result<(), _> = self
            .shared
            .query(
                "gen_set",
                Feature::Generations,
                redis::cmd("SET").arg(&key).arg(value).arg("PX").arg(ttl),
            )
            .await;
    }

    /// A generation number never handed out before.
    fn fresh_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// The owner's record, created (empty, with a fresh generation) if there is none.
    async fn record(&self, owner: &Owner) -> Arc<Record<R, V>> {
        if let Some(record) = self.records.get(owner).await {
            return record;
        }
        let generation = self.fresh_generation();
        let created = self
            .records
            .entry_by_ref(owner)
            .and_compute_with(|existing| async move {
                match existing {
                    Some(_) => Op::Nop,
                    None => Op::Put(Arc::new(Record {
                        generation,
                        entries: std::collections::HashMap::new(),
                    })),
                }
            })
            .await;
        match created {
            CompResult::Inserted(entry)
            | CompResult::Unchanged(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Removed(entry) => entry.into_value(),
            // Not stored: reads in this generation will not be kept, which is always safe.
            CompResult::StillNone(_) => Arc::new(Record {
                generation,
                entries: std::collections::HashMap::new(),
            }),
        }
    }

    /// The fresh entry of `resource` in `record`, if any, fetched under the shared generation
    /// `shared` (when Redis was asked: `None` means it could not be).
    fn fresh(&self, record: &Record<R, V>, resource: &R, shared: Option<u64>) -> Option<Arc<V>> {
        let entry = record.entries.get(resource)?;
        let same_generation = shared.is_none() || entry.shared == shared;
        (same_generation && entry.fetched_at.elapsed() < self.ttl).then(|| Arc::clone(&entry.value))
    }

    /// The owner's `key` from the cache when fresh, else from `fetch` (coalesced with a fetch of
    /// the same owner, resource and generation in flight, waited for until the caller's
    /// deadline), kept for the TTL unless a write invalidated the owner meanwhile.
    pub(crate) async fn get<F, Fut>(
        &self,
        ctx: &RequestContext,
        key: PrivateKey<R>,
        fetch: F,
    ) -> Result<Arc<V>, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ClientError>>,
    {
        // The shared generation is read before anything is fetched, so an entry is never tagged
        // with a generation newer than the data it holds.
        let shared = self.shared_generation(&key.owner).await;
        let record = self.record(&key.owner).await;
        if let Some(value) = self.fresh(&record, &key.resource, shared) {
            CacheMetrics::count(&self.metrics.hits);
            return Ok(value);
        }
        CacheMetrics::count(&self.metrics.misses);
        let flight = (key, record.generation, shared);
        let mut fetch = Some(fetch);
        loop {
            match self.in_flight.claim(&flight) {
                Claim::Leader(leader) => {
                    let (key, generation, shared) = &flight;
                    // A fetch that completed between our miss and our claim filled the cache.
                    let current = self.record(&key.owner).await;
                    if current.generation == *generation
                        && let Some(value) = self.fresh(&current, &key.resource, *shared)
                    {
                        leader.complete(Ok(Arc::clone(&value)));
                        return Ok(value);
                    }
                    // Only a leader fetches, and a leader returns: `fetch` is still here.
                    let Some(fetch) = fetch.take() else {
                        return Err(ClientError::classify(
                            self.service,
                            Failure::Rejected("a private fetch was led twice"),
                        ));
                    };
                    let started = Instant::now();
                    let span = shared_call_span(self.name);
                    let result = fetch().instrument(span.clone()).await.map(Arc::new);
                    leader.link_to(&span);
                    if let Ok(value) = &result {
                        self.keep(key, *generation, *shared, Arc::clone(value), started)
                            .await;
                    }
                    leader.complete(result.clone());
                    return result;
                }
                Claim::Follower(follower) => match follower.wait_within(ctx.deadline()).await {
                    Joined::Done(result) => return result,
                    Joined::Again => {}
                    Joined::TimedOut => {
                        return Err(ClientError::classify(
                            self.service,
                            Failure::AttemptTimedOut {
                                deadline_bound: true,
                            },
                        ));
                    }
                },
            }
        }
    }

    /// Keeps `value` for `key` if the owner is still in `generation` (no write invalidated them
    /// since the read started), tagged with the `shared` generation the read started in.
    async fn keep(
        &self,
        key: &PrivateKey<R>,
        generation: u64,
        shared: Option<u64>,
        value: Arc<V>,
        fetched_at: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let resource = key.resource.clone();
        let ttl = self.ttl;
        self.records
            .entry_by_ref(&key.owner)
            .and_compute_with(|existing| async move {
                let Some(existing) = existing else {
                    return Op::Nop;
                };
                let record = existing.into_value();
                if record.generation != generation {
                    return Op::Nop;
                }
                let now = Instant::now();
                let mut entries: std::collections::HashMap<R, PrivateEntry<V>> = record
                    .entries
                    .iter()
                    .filter(|(_, entry)| now.saturating_duration_since(entry.fetched_at) < ttl)
                    .map(|(resource, entry)| (resource.clone(), entry.clone()))
                    .collect();
                entries.insert(
                    resource,
                    PrivateEntry {
                        value,
                        fetched_at,
                        shared,
                    },
                );
                Op::Put(Arc::new(Record {
                    generation,
                    entries,
                }))
            })
            .await;
    }

    /// The value this process holds for `owner`'s `resource`, fresh or not, without touching
    /// Redis or counting a hit.
    pub(crate) async fn peek(&self, owner: &Owner, resource: &R) -> Option<Arc<V>> {
        let record = self.records.get(owner).await?;
        record
            .entries
            .get(resource)
            .map(|entry| Arc::clone(&entry.value))
    }

    /// Drops every entry of `owner` and starts a new generation for them, here and (with Redis)
    /// on every replica, so reads in flight cannot bring back what they fetched before.
    pub(crate) async fn invalidate(&self, owner: &Owner) {
        self.bump_shared_generation(owner).await;
        let generation = self.fresh_generation();
        self.records
            .entry_by_ref(owner)
            .and_upsert_with(|_| async move {
                Arc::new(Record {
                    generation,
                    entries: std::collections::HashMap::new(),
                })
            })
            .await;
        CacheMetrics::count(&self.metrics.invalidations);
    }

    /// Drops every owner's entries from this replica's memory (their changes may have been
    /// missed). Reads in flight keep nothing: their owner's record is gone.
    pub(crate) fn invalidate_all(&self) {
        self.records.invalidate_all();
    }

    /// The cache's counters and size.
    pub(crate) fn metrics(&self) -> CacheMetricsSnapshot {
        self.metrics.snapshot(
            self.name,
            self.records.entry_count(),
            self.records.weighted_size(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// The one resource of each owner in these tests, as a user has one cart.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct TheCart;

    impl Weigh for TheCart {
        fn weigh(&self) -> usize {
            0
        }
    }

    fn cache() -> PrivateCache<TheCart, u32> {
        PrivateCache::new("test", Service::Cart, 2 * SEC, 1 << 20)
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    /// Reads `user`'s cart through `cache` from a fake service answering `value` after `latency`.
    async fn read(
        cache: &PrivateCache<TheCart, u32>,
        calls: &AtomicUsize,
        user_id: &str,
        value: u32,
        latency: Duration,
    ) -> Result<Arc<u32>, ClientError> {
        let key = PrivateKey::for_user(&user(user_id), TheCart);
        cache
            .get(&RequestContext::new(), key, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(latency).await;
                Ok(value)
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_reused_for_the_ttl_only() {
        let (cache, calls) = (cache(), AtomicUsize::new(0));
        assert_eq!(*read(&cache, &calls, "u-1", 1, SEC).await.unwrap(), 1);
        tokio::time::advance(SEC - Duration::from_millis(1)).await;
        assert_eq!(*read(&cache, &calls, "u-1", 2, SEC).await.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            *read(&cache, &calls, "u-1", 3, SEC).await.unwrap(),
            3,
            "2 s after the call started"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn owners_never_share_entries_or_flights() {
        let (cache, calls) = (cache(), AtomicUsize::new(0));
        let (a, b, a2, b2) = tokio::join!(
            read(&cache, &calls, "u-1", 1, SEC),
            read(&cache, &calls, "u-2", 2, SEC),
            read(&cache, &calls, "u-1", 99, SEC),
            read(&cache, &calls, "u-2", 99, SEC),
        );
        assert_eq!((*a.unwrap(), *b.unwrap()), (1, 2));
        assert_eq!((*a2.unwrap(), *b2.unwrap()), (1, 2), "coalesced per owner");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let partner = PrivateKey::new(
            &Owner::Partner(crate::id::PartnerId::parse("u-1").unwrap()),
            TheCart,
        );
        let value = cache
            .get(&RequestContext::new(), partner, || async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(
            *value, 7,
            "a partner with the same id string is another owner"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_invalidates_the_owners_entries_at_once() {
        let (cache, calls) = (cache(), AtomicUsize::new(0));
        read(&cache, &calls, "u-1", 1, Duration::ZERO)
            .await
            .unwrap();
        read(&cache, &calls, "u-2", 2, Duration::ZERO)
            .await
            .unwrap();
        cache.invalidate(&Owner::User(user("u-1"))).await;
        assert_eq!(
            *read(&cache, &calls, "u-1", 10, Duration::ZERO)
                .await
                .unwrap(),
            10
        );
        assert_eq!(
            *read(&cache, &calls, "u-2", 20, Duration::ZERO)
                .await
                .unwrap(),
            2,
            "others keep theirs"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(cache.metrics().invalidations, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_started_before_a_write_does_not_repopulate_the_cache_after_it() {
        let cache = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        // A slow read of the pre-write cart (value 1) starts first.
        let before = {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                read(&cache, &calls, "u-1", 1, Duration::from_millis(2_500)).await
            })
        };
        tokio::time::sleep(SEC).await;
        // The write completes and invalidates while the read is in flight.
        cache.invalidate(&Owner::User(user("u-1"))).await;
        // A read after the write must not join the old flight.
        let after = read(&cache, &calls, "u-1", 2, SEC).await.unwrap();
        assert_eq!(*after, 2);
        assert_eq!(
            *before.await.unwrap().unwrap(),
            1,
            "the old read still answers its caller"
        );
        // ... but its pre-write value was not kept: the post-write value is.
        assert_eq!(*read(&cache, &calls, "u-1", 3, SEC).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_keeps_nothing_but_still_coalesces() {
        let cache =
            PrivateCache::<TheCart, u32>::new("test", Service::Cart, Duration::ZERO, 1 << 20);
        let calls = AtomicUsize::new(0);
        let (a, b) = tokio::join!(
            read(&cache, &calls, "u-1", 1, SEC),
            read(&cache, &calls, "u-1", 2, SEC),
        );
        assert_eq!((*a.unwrap(), *b.unwrap()), (1, 1));
        read(&cache, &calls, "u-1", 3, SEC).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reader_stops_at_its_own_deadline() {
        let cache = cache();
        let key = || PrivateKey::for_user(&user("u-1"), TheCart);
        let patient_ctx = RequestContext::new();
        let slow = cache.get(&patient_ctx, key(), || async {
            tokio::time::sleep(10 * SEC).await;
            Ok(1)
        });
        let hurried_ctx = RequestContext::new().with_timeout_from_now(SEC);
        let hurried = cache.get(&hurried_ctx, key(), || async { Ok(2) });
        let started = Instant::now();
        let (slow, hurried) = tokio::join!(slow, async {
            let result = hurried.await;
            (result, started.elapsed())
        });
        assert_eq!(*slow.unwrap(), 1);
        let (result, waited) = hurried;
        assert_eq!(result.unwrap_err().kind(), crate::ErrorKind::Timeout);
        assert_eq!(waited, SEC);
    }
}

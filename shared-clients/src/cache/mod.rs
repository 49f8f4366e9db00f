//! Everything the crate keeps in memory between requests, and the rules for keeping it.
//!
//! - `public`: `FreshCache`, the byte-bounded cache of shared data (the catalog's products and
//!   categories) whose freshness rules are ours: TTL = min(`max_ttl`, `max-age`), then
//!   stale-while-revalidate, stale-if-error and negative caching.
//! - `private`: `PrivateCache`, data of one owner (carts, orders) cached per owner, with
//!   read-your-writes invalidation; never served stale.
//! - `l2`: the catalog's second level in Redis, shared by every replica, and the leases that
//!   make one replica fetch a missing key for all (only with `shared.redis_url`).
//! - `tags`: which products and categories each cached catalog page shows, so a change event
//!   drops exactly the pages it makes stale.
//! - `coalesce`: one downstream call for concurrent misses of the same key, for both caches.
//! - `served`: [`Served`](crate::Served) and [`Freshness`](crate::Freshness), how every cached
//!   answer states whether it is fresh or stale and how old it is.
//! - `derived`: [`Derived`](crate::Derived), values the gateways make from cached entries
//!   (response bytes), kept while the cache serves the same entry.
//!
//! The caches are generic: what they hold only has to say its size
//! ([`Weigh`](crate::weigh::Weigh), implemented next to each type), and both stores are bounded in
//! bytes, each entry weighing [`ENTRY_OVERHEAD`] plus its key and value. Which data goes in which
//! cache is decided by the facades: `crate::catalog`, `crate::carts` and `crate::orders`.

pub(crate) mod coalesce;
pub(crate) mod derived;
pub(crate) mod l2;
pub(crate) mod private;
pub(crate) mod public;
pub(crate) mod served;
pub(crate) mod tags;

/// Bookkeeping bytes added to every entry's weight (the store's own per-entry overhead).
const ENTRY_OVERHEAD: usize = 128;

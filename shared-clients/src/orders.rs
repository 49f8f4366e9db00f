//! Order operations as the gateways call them: [`Orders`], an owner's orders cached for them
//! alone.
//!
//! Orders are private data, cached per owner (see `crate::cache::private`): reads of an order or of a
//! page of orders are reused for the configured private TTL under keys that contain the owner's
//! identity (a user or a partner), concurrent misses of one owner coalesce, and creating an order
//! through [`Orders`] invalidates all of the owner's cached orders before it is sent and again
//! once it has an answer, so an owner always reads their own writes. Orders are never served
//! stale.

use crate::cache::private::{PrivateCache, PrivateKey};
use crate::config::PrivateCacheConfig;
use crate::context::{IdempotencyKey, Owner, RequestContext};
use crate::error::{ClientError, Failure, Service};
use crate::id::OrderId;
use crate::metrics::CacheMetricsSnapshot;
use crate::model::order::{CreatedOrder, NewOrder, Order, OrderPage, OrderQuery};
use crate::order::OrderClient;
use crate::shared_state::SharedState;
use crate::weigh::Weigh;

/// Order operations, on behalf of one owner each. An owner's orders and order pages are cached
/// for them alone, for the configured private TTL; creating an order through here invalidates
/// them at once (read-your-writes). Built by [`Downstream`](crate::Downstream).
pub struct Orders {
    /// The raw client.
    client: OrderClient,
    /// Orders and order pages by owner, with read-your-writes invalidation.
    cache: PrivateCache<OrderResource, OrderPageOrOrder>,
}

/// One of an owner's order resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OrderResource {
    /// One order by id.
    Order(OrderId),
    /// One page of the owner's order list.
    Page(OrderQuery),
}

impl Weigh for OrderResource {
    fn weigh(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + match self {
                Self::Order(id) => id.as_str().len(),
                Self::Page(query) => opt(&query.cursor),
            }
    }
}

/// What the order cache holds: a page or a single order (one cache, so one invalidation covers
/// both).
#[derive(Debug, Clone)]
enum OrderPageOrOrder {
    /// A page of the owner's orders.
    Page(OrderPage),
    /// One of the owner's orders (boxed: an order is much larger than a page's header).
    Order(Box<Order>),
}

impl Weigh for OrderPageOrOrder {
    fn weigh(&self) -> usize {
        match self {
            Self::Page(page) => page.weigh(),
            Self::Order(order) => order.weigh(),
        }
    }
}

impl Orders {
    /// Makes `owner`'s cached entries unusable on every replica (a change event said they
    /// changed elsewhere), as a write through here does.
    pub(crate) async fn changed_elsewhere(&self, owner: &Owner) {
        self.cache.invalidate(owner).await;
    }

    /// The order `id` of `owner` this process holds, fresh or not (nothing is fetched).
    pub(crate) async fn cached(&self, owner: &Owner, id: &OrderId) -> Option<Order> {
        match self
            .cache
            .peek(owner, &OrderResource::Order(id.clone()))
            .await
            .as_deref()
        {
            Some(OrderPageOrOrder::Order(order)) => Some(Order::clone(order)),
            _ => None,
        }
    }

    /// Drops every owner's entries from this replica's memory (change events were missed).
    pub(crate) fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

impl Orders {
    /// Order operations through `client`, caching as `config` says (with its share of
    /// `max_bytes`), owners' generations shared through `shared` (see `PrivateCache`).
    pub(crate) fn new(
        client: OrderClient,
        config: &PrivateCacheConfig,
        shared: SharedState,
    ) -> Self {
        Self {
            client,
            cache: PrivateCache::shared(
                "orders",
                Service::Order,
                config.ttl,
                config.order_bytes(),
                shared,
            ),
        }
    }

    /// The raw client, for calls that bypass the cache (metrics, readiness).
    pub(crate) fn client(&self) -> &OrderClient {
        &self.client
    }

    /// Creates an order, or replays the one created earlier with the same key. Retried on
    /// transient failures, which the key makes safe. Invalidates the owner's cached orders, before
    /// and after, whatever the outcome. See [`OrderClient::create`].
    pub async fn create(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        idempotency_key: &IdempotencyKey,
        order: &NewOrder,
    ) -> Result<CreatedOrder, ClientError> {
        self.cache.invalidate(owner).await;
        let result = self.client.create(ctx, owner, idempotency_key, order).await;
        self.cache.invalidate(owner).await;
        result
    }

    /// One page of the owner's orders, from the owner's own cache entry when fresh. See
    /// [`OrderClient::list`].
    pub async fn list(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        query: &OrderQuery,
    ) -> Result<OrderPage, ClientError> {
        let key = PrivateKey::new(owner, OrderResource::Page(query.clone()));
        let cached = self
            .cache
            .get(ctx, key, || async {
                self.client
                    .list(ctx, owner, query)
                    .await
                    .map(OrderPageOrOrder::Page)
            })
            .await?;
        match &*cached {
            OrderPageOrOrder::Page(page) => Ok(page.clone()),
            OrderPageOrOrder::Order(_) => Err(mismatch()),
        }
    }

    /// One of the owner's orders, from the owner's own cache entry when fresh. See
    /// [`OrderClient::get`].
    pub async fn get(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        order_id: &OrderId,
    ) -> Result<Order, ClientError> {
        let key = PrivateKey::new(owner, OrderResource::Order(order_id.clone()));
        let cached = self
            .cache
            .get(ctx, key, || async {
                self.client
                    .get(ctx, owner, order_id)
                    .await
                    .map(|order| OrderPageOrOrder::Order(Box::new(order)))
            })
            .await?;
        match &*cached {
            OrderPageOrOrder::Order(order) => Ok(Order::clone(order)),
            OrderPageOrOrder::Page(_) => Err(mismatch()),
        }
    }

    /// The counters and size of the order cache.
    pub(crate) fn metrics(&self) -> CacheMetricsSnapshot {
        self.cache.metrics()
    }
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// A cached order value of the wrong shape for its key: cannot happen (keys and values are paired
/// above), reported as a bad response rather than a panic.
fn mismatch() -> ClientError {
    ClientError::classify(
        Service::Order,
        Failure::Contract("cached order data did not match its key"),
    )
}

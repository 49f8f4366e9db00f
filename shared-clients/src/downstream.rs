//! The top-level facade the gateways hold: [`Downstream`], built once from the configuration.
//!
//! It owns one client per service and exposes them the way the gateways use them:
//! [`Downstream::catalog`] (cached public data), [`Downstream::carts`] and [`Downstream::orders`]
//! (private data), plus [`Downstream::check_ready`] for the gateways' `/ready` endpoints.
//!
//! [`Carts`] and [`Orders`] cache private data per owner (see `crate::private`): reads of a user's
//! cart and of an owner's orders are reused for a short TTL under keys that contain the owner's
//! identity, concurrent misses coalesce per owner, and every write through them (cart changes,
//! order creation) invalidates that owner's entries at once, so an owner always reads their own
//! writes. Private data is never served stale.
//!
//! [`Downstream::metrics`] gathers the counters of every service and cache for the gateways to
//! export; [`Downstream::deadline`] is the configured default budget of an inbound request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cart::CartClient;
use crate::catalog::Catalog;
use crate::config::{DownstreamConfig, PrivateCacheConfig};
use crate::context::{IdempotencyKey, Owner, RequestContext};
use crate::error::{BuildError, ClientError, Service};
use crate::id::{OrderId, ProductId, UserId};
use crate::metrics::MetricsSnapshot;
use crate::model::cart::Cart;
use crate::model::order::{CreatedOrder, NewOrder, Order, OrderPage, OrderQuery};
use crate::order::OrderClient;
use crate::private::{OrderResource, PrivateCache, PrivateKey, TheCart};
use crate::product::ProductClient;

/// Share of the private cache budget given to carts (orders get the rest).
const CART_BUDGET_DIVISOR: u64 = 4;

/// Longest a readiness probe waits for one service (shortened further by the service's own
/// `timeout`), so `/ready` answers quickly even when a service hangs.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything the gateways call downstream. Cheap to clone (one shared instance per process).
#[derive(Clone)]
pub struct Downstream {
    /// Shared by every clone, so caches and connection pools are process-wide.
    inner: Arc<Inner>,
}

/// The parts of [`Downstream`].
struct Inner {
    /// Cached catalog reads.
    catalog: Catalog,
    /// Cart operations.
    carts: Carts,
    /// Order operations.
    orders: Orders,
    /// How long each service's readiness probe may take.
    ready_timeouts: [(Service, Duration); 3],
    /// The default budget of an inbound request (`downstream.deadline`).
    deadline: Duration,
}

impl Downstream {
    /// Builds the clients and caches. Fails (naming the service) on a bad URL or when an HTTP
    /// client cannot be created; nothing is contacted yet.
    pub fn new(config: &DownstreamConfig) -> Result<Self, BuildError> {
        let products = ProductClient::new(&config.product)?;
        let carts = CartClient::new(&config.cart)?;
        let orders = OrderClient::new(&config.order)?;
        Ok(Self {
            inner: Arc::new(Inner {
                catalog: Catalog::new(products, &config.cache),
                carts: Carts::new(carts, &config.private_cache),
                orders: Orders::new(orders, &config.private_cache),
                deadline: config.deadline,
                ready_timeouts: [
                    (Service::Product, READY_TIMEOUT.min(config.product.timeout)),
                    (Service::Cart, READY_TIMEOUT.min(config.cart.timeout)),
                    (Service::Order, READY_TIMEOUT.min(config.order.timeout)),
                ],
            }),
        })
    }

    /// Products and categories, cached.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Users' carts.
    pub fn carts(&self) -> &Carts {
        &self.inner.carts
    }

    /// Users' and partners' orders.
    pub fn orders(&self) -> &Orders {
        &self.inner.orders
    }

    /// The configured default budget of an inbound request (`downstream.deadline`). A gateway
    /// gives each request's context this deadline unless the route has its own:
    ///
    /// ```
    /// use shared_clients::{Downstream, DownstreamConfig, RequestContext};
    ///
    /// let downstream = Downstream::new(&DownstreamConfig::default()).unwrap();
    /// let ctx = RequestContext::new().with_timeout_from_now(downstream.deadline());
    /// assert!(ctx.deadline().is_some());
    /// ```
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// Every counter and gauge: per service (calls, attempts, retries, errors by kind, latency,
    /// breaker, bulkhead) and per cache (hits, misses, stale answers, refreshes, evictions, size).
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        let [products, categories] = inner.catalog.metrics();
        MetricsSnapshot {
            services: vec![
                inner.catalog.client().metrics(),
                inner.carts.client.metrics(),
                inner.orders.client.metrics(),
            ],
            caches: vec![
                products,
                categories,
                inner.carts.cache.metrics(),
                inner.orders.cache.metrics(),
            ],
        }
    }

    /// Asks every service's `GET /health`, concurrently, each bounded by [`READY_TIMEOUT`] (or the
    /// service's shorter timeout).
    pub async fn check_ready(&self) -> ReadyReport {
        let inner = &self.inner;
        let checks = inner.ready_timeouts.map(|(service, timeout)| {
            let probe: BoxFuture<'_, Result<(), ClientError>> = match service {
                Service::Product => Box::pin(inner.catalog.client().health(timeout)),
                Service::Cart => Box::pin(inner.carts.client.health(timeout)),
                Service::Order => Box::pin(inner.orders.client.health(timeout)),
            };
            async move {
                let started = tokio::time::Instant::now();
                let result = probe.await;
                ReadyCheck {
                    service,
                    result,
                    elapsed: started.elapsed(),
                }
            }
        });
        ReadyReport {
            checks: futures::future::join_all(checks).await,
        }
    }
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream").finish_non_exhaustive()
    }
}

/// The outcome of [`Downstream::check_ready`].
#[derive(Debug, Clone)]
pub struct ReadyReport {
    /// One check per service: product, cart, order.
    pub checks: Vec<ReadyCheck>,
}

impl ReadyReport {
    /// Whether every service answered ready.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|check| check.result.is_ok())
    }
}

/// The readiness of one service.
#[derive(Debug, Clone)]
pub struct ReadyCheck {
    /// Which service was probed.
    pub service: Service,
    /// `Ok` when it answered 200, else why not.
    pub result: Result<(), ClientError>,
    /// How long the probe took, for the `/ready` body and logs.
    pub elapsed: Duration,
}

/// Cart operations, on behalf of one user each. A user's cart is cached for them alone, for the
/// configured private TTL; every write through here invalidates it at once (read-your-writes).
pub struct Carts {
    /// The raw client.
    client: CartClient,
    /// Carts by user, with read-your-writes invalidation.
    cache: PrivateCache<TheCart, Cart>,
}

impl std::fmt::Debug for Carts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carts")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Carts {
    /// Cart operations through `client`, caching as `config` says.
    fn new(client: CartClient, config: &PrivateCacheConfig) -> Self {
        let bytes = config.max_bytes / CART_BUDGET_DIVISOR;
        Self {
            client,
            cache: PrivateCache::new("carts", Service::Cart, config.ttl, bytes),
        }
    }

    /// The raw client, for reads that must not come from the cache (checkout).
    pub(crate) fn client(&self) -> &CartClient {
        &self.client
    }

    /// The user's cart (empty, version 0, if they have none), from the user's own cache entry
    /// when it is fresh and no write invalidated it. See [`CartClient::get`].
    pub async fn get(&self, ctx: &RequestContext, user: &UserId) -> Result<Cart, ClientError> {
        let key = PrivateKey::for_user(user, TheCart);
        let cart = self
            .cache
            .get(ctx, key, || self.client.get(ctx, user))
            .await?;
        Ok(Cart::clone(&cart))
    }

    /// Runs a write of `user`'s cart, invalidating their cached cart before and after it,
    /// whatever its outcome (even a failed write may have changed the cart).
    async fn write<T>(
        &self,
        user: &UserId,
        write: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let owner = Owner::User(user.clone());
        self.cache.invalidate(&owner).await;
        let result = write.await;
        self.cache.invalidate(&owner).await;
        result
    }

    /// Adds `quantity` of a product, optionally only if the cart is still at `expected_version`.
    /// Never retried. See [`CartClient::add_item`].
    pub async fn add_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
        expected_version: Option<u64>,
    ) -> Result<Cart, ClientError> {
        self.write(
            user,
            self.client
                .add_item(ctx, user, product_id, quantity, expected_version),
        )
        .await
    }

    /// Sets a line's quantity (0 removes it). Never retried. See [`CartClient::set_quantity`].
    pub async fn set_quantity(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
    ) -> Result<Cart, ClientError> {
        self.write(
            user,
            self.client.set_quantity(ctx, user, product_id, quantity),
        )
        .await
    }

    /// Removes a line. Never retried. See [`CartClient::remove_item`].
    pub async fn remove_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
    ) -> Result<Cart, ClientError> {
        self.write(user, self.client.remove_item(ctx, user, product_id))
            .await
    }

    /// Empties the cart. Never retried. See [`CartClient::clear`].
    pub async fn clear(&self, ctx: &RequestContext, user: &UserId) -> Result<(), ClientError> {
        self.write(user, self.client.clear(ctx, user)).await
    }
}

/// Order operations, on behalf of one owner each. An owner's orders and order pages are cached
/// for them alone, for the configured private TTL; creating an order through here invalidates
/// them at once (read-your-writes).
pub struct Orders {
    /// The raw client.
    client: OrderClient,
    /// Orders and order pages by owner, with read-your-writes invalidation.
    cache: PrivateCache<OrderResource, OrderPageOrOrder>,
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// What the order cache holds: a page or a single order (one cache, so one invalidation covers
/// both).
#[derive(Debug, Clone)]
pub(crate) enum OrderPageOrOrder {
    /// A page of the owner's orders.
    Page(OrderPage),
    /// One of the owner's orders (boxed: an order is much larger than a page's header).
    Order(Box<Order>),
}

impl crate::cache::Weigh for OrderPageOrOrder {
    fn weigh(&self) -> usize {
        match self {
            Self::Page(page) => page.weigh(),
            Self::Order(order) => order.weigh(),
        }
    }
}

impl Orders {
    /// Order operations through `client`, caching as `config` says.
    fn new(client: OrderClient, config: &PrivateCacheConfig) -> Self {
        let bytes = config.max_bytes - config.max_bytes / CART_BUDGET_DIVISOR;
        Self {
            client,
            cache: PrivateCache::new("orders", Service::Order, config.ttl, bytes),
        }
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
}

/// A cached order value of the wrong shape for its key: cannot happen (keys and values are paired
/// above), reported as a bad response rather than a panic.
fn mismatch() -> ClientError {
    ClientError::classify(
        Service::Order,
        crate::error::Failure::Contract("cached order data did not match its key"),
    )
}

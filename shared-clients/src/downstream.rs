//! The top-level facade the gateways hold: [`Downstream`], built once from the configuration.
//!
//! It owns one client per service and exposes them the way the gateways use them:
//! [`Downstream::catalog`] (cached public data), [`Downstream::carts`] and [`Downstream::orders`]
//! (private data), plus [`Downstream::check_ready`] for the gateways' `/ready` endpoints.
//!
//! [`Carts`] and [`Orders`] pass straight through to the raw clients for now. They are the seam for
//! private caching: keys will contain the owner's identity (so private data cannot be reached
//! without it) and a write through them will invalidate that owner's entries.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cart::CartClient;
use crate::catalog::Catalog;
use crate::config::DownstreamConfig;
use crate::context::{IdempotencyKey, Owner, RequestContext};
use crate::error::{BuildError, ClientError, Service};
use crate::id::{OrderId, ProductId, UserId};
use crate::model::cart::Cart;
use crate::model::order::{CreatedOrder, NewOrder, Order, OrderPage, OrderQuery};
use crate::order::OrderClient;
use crate::product::ProductClient;

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
                carts: Carts { client: carts },
                orders: Orders { client: orders },
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

/// Cart operations, on behalf of one user each. Passes through to the [`CartClient`] for now; the
/// place where per-user cart caching and invalidation on write will live.
#[derive(Debug)]
pub struct Carts {
    /// The raw client.
    client: CartClient,
}

impl Carts {
    /// The user's cart (empty, version 0, if they have none). See [`CartClient::get`].
    pub async fn get(&self, ctx: &RequestContext, user: &UserId) -> Result<Cart, ClientError> {
        self.client.get(ctx, user).await
    }

    /// Adds `quantity` of a product, optionally only if the cart is still at `expected_version`.
    /// See [`CartClient::add_item`].
    pub async fn add_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
        expected_version: Option<u64>,
    ) -> Result<Cart, ClientError> {
        self.client
            .add_item(ctx, user, product_id, quantity, expected_version)
            .await
    }

    /// Sets a line's quantity (0 removes it). See [`CartClient::set_quantity`].
    pub async fn set_quantity(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
    ) -> Result<Cart, ClientError> {
        self.client
            .set_quantity(ctx, user, product_id, quantity)
            .await
    }

    /// Removes a line. See [`CartClient::remove_item`].
    pub async fn remove_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
    ) -> Result<Cart, ClientError> {
        self.client.remove_item(ctx, user, product_id).await
    }

    /// Empties the cart. See [`CartClient::clear`].
    pub async fn clear(&self, ctx: &RequestContext, user: &UserId) -> Result<(), ClientError> {
        self.client.clear(ctx, user).await
    }
}

/// Order operations, on behalf of one owner each. Passes through to the [`OrderClient`] for now;
/// the place where per-owner order caching and invalidation on write will live.
#[derive(Debug)]
pub struct Orders {
    /// The raw client.
    client: OrderClient,
}

impl Orders {
    /// Creates an order, or replays the one created earlier with the same key. See
    /// [`OrderClient::create`].
    pub async fn create(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        idempotency_key: &IdempotencyKey,
        order: &NewOrder,
    ) -> Result<CreatedOrder, ClientError> {
        self.client.create(ctx, owner, idempotency_key, order).await
    }

    /// One page of the owner's orders. See [`OrderClient::list`].
    pub async fn list(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        query: &OrderQuery,
    ) -> Result<OrderPage, ClientError> {
        self.client.list(ctx, owner, query).await
    }

    /// One of the owner's orders. See [`OrderClient::get`].
    pub async fn get(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        order_id: &OrderId,
    ) -> Result<Order, ClientError> {
        self.client.get(ctx, owner, order_id).await
    }
}

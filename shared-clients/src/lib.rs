//! Typed clients, caching and resilience for the downstream product, cart and order services,
//! shared by the three BFF gateways. Knows nothing of axum or GraphQL.
//!
//! Start at [`Downstream`]: build it once from a [`DownstreamConfig`], clone it into each
//! gateway's state, and call [`Downstream::catalog`], [`Downstream::carts`] and
//! [`Downstream::orders`] with a [`RequestContext`] per inbound request. Every failure is a
//! [`ClientError`] naming the [`Service`] and an [`ErrorKind`] that each gateway maps to its own
//! protocol. Orders are placed through an [`OrderPlacement`] built over the [`Downstream`].
//!
//! Modules, from the facades the gateways call down to what they are built on:
//! - `downstream`: the [`Downstream`] facade (one per process, cheap to clone) holding the three
//!   below, with their metrics and readiness ([`ReadyReport`]).
//! - `catalog`: the cached [`Catalog`] (single products, batches, categories, pages).
//! - `carts`: [`Carts`], users' carts, cached per user and invalidated by the user's own writes.
//! - `orders`: [`Orders`], owners' orders, cached per owner and invalidated by order creation.
//! - `placement`: [`OrderPlacement`]: pricing lines from current catalog data, stock checks,
//!   idempotent order creation and cart checkout, the same for every gateway.
//! - `cache`: what is kept between requests, and the rules: `cache::public`, a byte-bounded cache
//!   of shared data whose freshness rules are ours (TTL = min(`max_ttl`, `max-age`), then
//!   stale-while-revalidate and stale-if-error); `cache::private`, per-owner caching with
//!   read-your-writes invalidation; `cache::coalesce`, one downstream call for concurrent misses
//!   of the same key; `cache::served`, [`Served`] and [`Freshness`], how every cached answer says
//!   how fresh it is; `cache::derived`, [`Derived`], values made from cached entries (response
//!   bytes), kept while the cache serves the same entry.
//! - `weigh`: the approximate size in bytes of what the caches and the placement keep,
//!   implemented next to each type it weighs.
//! - `product`, `cart`, `order`: the raw clients, one typed method per contract operation.
//! - `transport`: the shared HTTP plumbing every call goes through (URLs, propagated headers, body
//!   limits, statuses handed to the one classification), wrapping each call in the resilience
//!   layer.
//! - `resilience`: deadline, circuit breaker, bulkhead and retries (with a retry budget) of every
//!   downstream call, per service.
//! - `cache_control`: `Cache-Control`, `Age` and `ETag` of catalog responses.
//! - `error`: [`ClientError`] and the one classification of failures (its docs state the policy).
//! - `metrics`: the counters and gauges of every service and cache, read as a
//!   [`MetricsSnapshot`] for the gateways to export.
//! - [`config`]: the [`DownstreamConfig`] of the three services, their resilience and the caches.
//! - `context`: [`RequestContext`] (with the request's deadline), [`Owner`] and [`IdempotencyKey`]:
//!   what is propagated downstream.
//! - `trace_context`: [`TraceContext`], the trace context that travels with change events (and
//!   webhook deliveries) so that what a change causes is traced in the request's trace; links
//!   from a shared call to the requests waiting for it.
//! - `id`: validated id newtypes ([`ProductId`], [`UserId`], …).
//! - `model`: the contract's data types.
//! - [`events`]: the change-event consumer (every replica drops what the services say changed).
//! - [`shared_state`]: the state every replica shares in Redis (optional): [`SharedState`].
//! - [`money`]: exact decimal and display strings of [`Money`], the same in every gateway.

pub mod config;

mod cache;
mod cache_control;
mod cart;
mod carts;
mod catalog;
mod context;
mod downstream;
mod error;
pub mod events;
mod id;
pub mod live;
mod metrics;
mod model;
pub mod money;
mod order;
mod orders;
mod placement;
mod product;
mod redis_link;
mod resilience;
pub mod shared_state;
mod trace_context;
mod transport;
mod weigh;

pub use cache::derived::Derived;
pub use cache::served::{Freshness, Lifetime, Served};
pub use cache_control::{CacheControl, ETag};
pub use cart::CartClient;
pub use carts::Carts;
pub use catalog::{Catalog, CatalogChange, ProductsFound};
pub use config::{
    BreakerConfig, BulkheadConfig, CacheConfig, DownstreamConfig, PrivateCacheConfig, RetryConfig,
    ServiceConfig,
};
pub use context::{
    IdempotencyKey, InvalidHeaderValue, Owner, RequestContext, RequestId, TraceParent,
};
pub use downstream::{Downstream, READY_TIMEOUT, ReadyCheck, ReadyReport, RedisCheck};
pub use error::{BuildError, ClientError, ErrorKind, Problem, Service};
pub use id::{CategoryId, InvalidId, OrderId, PartnerId, ProductId, UserId};
pub use metrics::{
    BreakerSnapshot, BreakerState, CacheMetricsSnapshot, LatencyBucket, LatencySnapshot,
    MetricsSnapshot, ServiceMetricsSnapshot,
};
pub use model::Money;
pub use model::cart::{Cart, CartItem};
pub use model::order::{
    Address, Channel, ChannelKind, CreatedOrder, Creation, NewOrder, Order, OrderLine, OrderPage,
    OrderQuery, OrderStatus,
};
pub use model::product::{
    Category, Image, Inventory, InventoryStatus, Product, ProductBatch, ProductPage, ProductQuery,
    Rating,
};
pub use order::OrderClient;
pub use orders::Orders;
pub use placement::{
    MAX_LINE_QUANTITY, MAX_ORDER_LINES, OrderPlacement, OrderPlacementConfig, OrderRequest,
    PlaceOrderError, PlacedOrder, RequestedLine, UnavailableProduct, UnavailableReason,
};
pub use product::{Fetched, MAX_BATCH, ProductClient, Revalidated};
pub use shared_state::{SharedConfig, SharedState};
pub use trace_context::{MAX_LINKS, TraceContext, current_span_context};

//! The top-level facade the gateways hold: [`Downstream`], built once from the configuration.
//!
//! It owns one client per service and exposes them the way the gateways use them:
//! [`Downstream::catalog`] (cached public data), [`Downstream::carts`] and [`Downstream::orders`]
//! (private data), plus [`Downstream::check_ready`] for the gateways' `/ready` endpoints.
//!
//! The three facades live in their own modules: `crate::catalog` ([`Catalog`], public data cached
//! once for everyone), `crate::carts` ([`Carts`]) and `crate::orders` ([`Orders`]) (private data
//! cached per owner, invalidated by the owner's own writes).
//!
//! [`Downstream::metrics`] gathers the counters of every service and cache for the gateways to
//! export; [`Downstream::deadline`] is the configured default budget of an inbound request.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cart::CartClient;
use crate::carts::Carts;
use crate::catalog::Catalog;
use crate::config::DownstreamConfig;
use crate::context::Owner;
use crate::context::RequestContext;
use crate::error::{BuildError, ClientError, ErrorKind, Service};
use crate::events::{Change, Consumer, Health, Sink, Stream};
use crate::live::{Hub, Polled, PolledValue, Source, Topic};
use crate::metrics::MetricsSnapshot;
use crate::order::OrderClient;
use crate::orders::Orders;
use crate::product::ProductClient;
use crate::shared_state::{Feature, SharedConfig, SharedState};
use crate::trace_context::TraceContext;

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
    /// What every replica shares in Redis (disabled without `shared.redis_url`).
    shared: SharedState,
    /// The change-event consumer, when Redis and `shared.events` are on (stops when dropped).
    events: std::sync::OnceLock<Consumer>,
    /// Who follows which resource live, told of changes after the caches dropped them.
    live: Hub,
}

impl Sink for Inner {
    fn apply<'a>(
        &'a self,
        change: &'a Change,
        version: u64,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match change {
                Change::Product {
                    id,
                    category,
                    exists,
                } => {
                    self.catalog
                        .product_changed(id, category.as_ref(), *exists)
                        .await;
                    self.live
                        .notify(&Topic::Product(id.clone()), Some(version), trace);
                }
                Change::Category(id) => self.catalog.category_changed(id).await,
                Change::Cart(user) => {
                    self.carts
                        .changed_elsewhere(&Owner::User(user.clone()))
                        .await;
                    self.live
                        .notify(&Topic::Cart(user.clone()), Some(version), trace);
                }
                Change::Order { owner, id } => {
                    self.orders.changed_elsewhere(owner).await;
                    let topic = Topic::Order {
                        owner: owner.clone(),
                        id: id.clone(),
                    };
                    self.live.notify(&topic, Some(version), trace);
                }
            }
        })
    }

    fn stale_all(&self, stream: Stream) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match stream {
                Stream::Catalog => {
                    // L2 first, so this replica's misses cannot take back what it still holds.
                    // Every replica that saw the gap clears L2; one would do, but a gap is rare
                    // and clearing twice is harmless. Entries fetched before the gap never get
                    // the event-driven freshness again (the gap started a new epoch).
                    self.shared
                        .delete_matching(Feature::CatalogL2, &self.shared.key("cat:*", "*"))
                        .await;
                    self.shared
                        .delete_matching(Feature::CatalogL2, &self.shared.key("cat:*", ""))
                        .await;
                    self.catalog.forget_all();
                }
                // Private entries are per replica only (L2 holds none).
                Stream::Cart => self.carts.forget_all(),
                Stream::Order => self.orders.forget_all(),
            }
            self.live.notify_stream(stream);
        })
    }

    fn stream_up(&self, stream: Stream, up: bool) {
        self.live.set_events_up(stream, up);
    }
}

impl Source for Inner {
    fn poll<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<Polled, ClientError>> {
        Box::pin(async move {
            let ctx = RequestContext::new().with_timeout_from_now(self.deadline);
            let read = match topic {
                Topic::Product(id) => self
                    .catalog
                    .client()
                    .get(&ctx, id)
                    .await
                    .map(|fetched| Polled::Value(fetched.value)),
                Topic::Cart(user) => self
                    .carts
                    .client()
                    .get(&ctx, user)
                    .await
                    .map(|cart| Polled::Value(Arc::new(cart))),
                Topic::Order { owner, id } => self
                    .orders
                    .client()
                    .get(&ctx, owner, id)
                    .await
                    .map(|order| Polled::Value(Arc::new(order))),
            };
            match read {
                Err(err) if err.kind() == ErrorKind::NotFound => Ok(Polled::Gone),
                read => read,
            }
        })
    }

    fn evict<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match topic {
                Topic::Product(id) => self.catalog.product_changed(id, None, true).await,
                Topic::Cart(user) => {
                    self.carts
                        .changed_elsewhere(&Owner::User(user.clone()))
                        .await;
                }
                Topic::Order { owner, .. } => self.orders.changed_elsewhere(owner).await,
            }
        })
    }

    fn cached<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Option<Polled>> {
        Box::pin(async move {
            let value: Arc<dyn PolledValue> = match topic {
                Topic::Product(id) => self.catalog.cached(id).await?,
                Topic::Cart(user) => self.carts.cached(user).await?,
                Topic::Order { owner, id } => Arc::new(self.orders.cached(owner, id).await?),
            };
            Some(Polled::Value(value))
        })
    }
}

impl Downstream {
    /// Builds the clients and caches, with nothing shared across replicas. Fails (naming the
    /// service) on a bad URL or when an HTTP client cannot be created; nothing is contacted yet.
    pub fn new(config: &DownstreamConfig) -> Result<Self, BuildError> {
        Self::with_shared(config, SharedState::disabled())
    }

    /// As [`Downstream::new`], sharing what `shared` configures with every other replica (see
    /// [`SharedState`]). Must be called within a tokio runtime; nothing is contacted yet.
    pub fn new_shared(
        config: &DownstreamConfig,
        shared: &SharedConfig,
    ) -> Result<Self, BuildError> {
        Self::with_shared(config, SharedState::connect(shared)?)
    }

    /// As [`Downstream::new`], over an existing [`SharedState`].
    pub fn with_shared(config: &DownstreamConfig, shared: SharedState) -> Result<Self, BuildError> {
        let products = ProductClient::new(&config.product)?;
        let carts = CartClient::new(&config.cart)?;
        let orders = OrderClient::new(&config.order)?;
        let health = shared.events().map(|_| Arc::new(Health::new()));
        let inner = Arc::new(Inner {
            catalog: Catalog::with_shared(products, &config.cache, &shared, health.as_ref()),
            carts: Carts::new(carts, &config.private_cache, shared.clone()),
            orders: Orders::new(orders, &config.private_cache, shared.clone()),
            deadline: config.deadline,
            shared,
            events: std::sync::OnceLock::new(),
            live: Hub::default(),
            ready_timeouts: [
                (Service::Product, READY_TIMEOUT.min(config.product.timeout)),
                (Service::Cart, READY_TIMEOUT.min(config.cart.timeout)),
                (Service::Order, READY_TIMEOUT.min(config.order.timeout)),
            ],
        });
        let source: std::sync::Weak<dyn Source> = Arc::downgrade(&inner) as _;
        inner.live.set_source(source);
        if let (Some((client, settings)), Some(health)) = (inner.shared.events(), health) {
            let sink: std::sync::Weak<dyn Sink> = Arc::downgrade(&inner) as _;
            let _ = inner
                .events
                .set(Consumer::start(client, settings, sink, health));
        }
        Ok(Self { inner })
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

    /// Live updates: subscribe to a product, a cart or an order and be woken when it changes
    /// (by the change events, or by polling without them). See [`Hub`].
    pub fn live(&self) -> &Hub {
        &self.inner.live
    }

    /// The catalog stream consumer's current epoch while it is healthy (connected, not lagging,
    /// no gap since the epoch began); `None` while it is not, or without change events. An
    /// opaque number: a [`Lifetime`](crate::Lifetime)'s vouched horizon holds only while this
    /// stays equal to the epoch it names.
    pub fn catalog_events_epoch(&self) -> Option<u64> {
        self.inner.events.get().and_then(Consumer::catalog_epoch)
    }

    /// What every replica shares (disabled when no Redis is configured).
    pub fn shared(&self) -> &SharedState {
        &self.inner.shared
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
        let mut caches = inner.catalog.metrics();
        caches.extend([inner.carts.metrics(), inner.orders.metrics()]);
        MetricsSnapshot {
            services: vec![
                inner.catalog.client().metrics(),
                inner.carts.client().metrics(),
                inner.orders.client().metrics(),
            ],
            caches,
            redis: inner.shared.metrics(),
            events: inner.events.get().map(Consumer::metrics),
            live: inner.live.metrics(),
        }
    }

    /// Asks every service's `GET /health`, concurrently, each bounded by [`READY_TIMEOUT`] (or the
    /// service's shorter timeout).
    pub async fn check_ready(&self) -> ReadyReport {
        let inner = &self.inner;
        let checks = inner.ready_timeouts.map(|(service, timeout)| {
            let probe: BoxFuture<'_, Result<(), ClientError>> = match service {
                Service::Product => Box::pin(inner.catalog.client().health(timeout)),
                Service::Cart => Box::pin(inner.carts.client().health(timeout)),
                Service::Order => Box::pin(inner.orders.client().health(timeout)),
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
        let (checks, redis) =
            futures::future::join(futures::future::join_all(checks), self.check_redis()).await;
        ReadyReport { checks, redis }
    }

    /// Asks Redis `PING` (bounded by `shared.command_timeout`); `None` when none is configured.
    pub async fn check_redis(&self) -> Option<RedisCheck> {
        let shared = &self.inner.shared;
        if !shared.is_enabled() {
            return None;
        }
        let started = tokio::time::Instant::now();
        let result = shared.ping().await;
        Some(RedisCheck {
            result: result.map_err(|err| err.to_string()),
            required: shared.is_required(),
            elapsed: started.elapsed(),
        })
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
    /// Redis' answer to `PING`, when Redis is configured.
    pub redis: Option<RedisCheck>,
}

impl ReadyReport {
    /// Whether every service answered ready, and Redis too when `shared.redis_required`.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|check| check.result.is_ok())
            && self
                .redis
                .as_ref()
                .is_none_or(|redis| !redis.required || redis.result.is_ok())
    }
}

/// Redis' readiness.
#[derive(Debug, Clone)]
pub struct RedisCheck {
    /// `Ok` when it answered `PING`, else why not.
    pub result: Result<(), String>,
    /// Whether `/ready` requires it (`shared.redis_required`).
    pub required: bool,
    /// How long the check took.
    pub elapsed: Duration,
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

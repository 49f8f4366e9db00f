//! Reference implementation of the downstream product, cart and order services described by
//! `contracts/downstream.openapi.yaml` (at the repository root), seeded with deterministic data and fitted with
//! latency and fault knobs. The demo launcher, the gateways' tests and the benchmarks all talk to
//! these services over real HTTP.
//!
//! Each service is its own HTTP listener with its own [`router`]; all three share one [`World`]
//! (the seeded, in-memory state), so a single process can serve all of them, or three processes
//! started with the same seed can serve one each and agree on every id.
//!
//! With [`Config::events`] (`--events-redis-url`, or a Redis Cluster, or Sentinel), every change the services make — cart writes,
//! order creation, and the back-office changes of the admin API (prices, stock, product details
//! and categories, deleted products, order statuses) — is announced on Redis Streams as the events
//! contract (`contracts/events.asyncapi.yaml`) describes, before the write is answered.
//!
//! Modules:
//! - [`config`]: [`Config`], the seed, data sizes, cache lifetime, default fault knobs, where
//!   events go and the fulfilment clock.
//! - [`world`]: [`World`], the shared state of all three services (it assembles each service's own
//!   state and hands it to that service's router), and its helpers for tests.
//! - `seed` (private): the deterministic generator of products, categories, carts and orders.
//! - [`product`]: the catalog service (`/products`, `/products/{product_id}`, `/categories`): its
//!   data, its state and its routes.
//! - [`cart`]: the cart service (`/carts/{user_id}`...): its data, its state and its routes.
//! - [`order`]: the order service (`/orders`, `/orders/{order_id}`), with idempotent creation: its
//!   data, its state and its routes.
//! - [`admin`]: the per-service admin API (`/__admin/...`): request counters, request log, event
//!   counters and fault injection (latency, errors, slow, failing, down), plus the listener that
//!   makes "down" real. (The admin routes that change data live with their service.)
//! - [`events`]: the change events: [`EventsConfig`], the CloudEvents envelope, the per-service
//!   [`events::Publisher`] that appends to Redis Streams in order, after the change and before the
//!   answer, and never fails a write.
//! - [`problem`]: [`ApiError`], the one error type, answered as `application/problem+json`.
//! - `extract` (private): extractors that validate paths, queries, identity headers and JSON bodies
//!   against the contract and reject in the contract's problem format.
//! - `validate` (private): the contract's value rules (id pattern, integers such as `26.0`, ...).
//! - `conditional` (private): entity tags, `If-None-Match` (weak) and `If-Match` (strong).
//! - `cursor` (private): opaque, signed, key-set page cursors.
//! - `reply` (private): how successful JSON responses and their `Cache-Control` are built.
//! - `layers` (private): cross-cutting response rules (X-Request-Id echo, problem bodies for 405).
//! - [`local_redis`]: [`LocalRedis`], a private `redis-server` on a free port for tests, benchmarks
//!   and the dev launcher, a local [`LocalRedisCluster`] and [`LocalRedisSentinel`], and
//!   [`TestRedis`], any of them as `BFF_TEST_REDIS_TOPOLOGY` chooses;
//!   and the dev launcher.
//! - [`cli`]: the command line of the `reference-services` binary.
//!
//! The services import neither the world nor each other (except that orders are priced in
//! [`product::Money`]); `world` and `seed` import the services, never the other way round; the
//! services import `events`, which knows none of them, so the modules import one another in no
//! circle (`scripts/module-cycles.py reference-services/src`).

pub mod admin;
pub mod cart;
pub mod cli;
mod conditional;
pub mod config;
mod cursor;
pub mod events;
mod extract;
mod layers;
pub mod local_redis;
pub mod order;
pub mod problem;
pub mod product;
mod reply;
mod seed;
mod validate;
pub mod world;

use std::{fmt, future::Future, str::FromStr};

use axum::{Router, extract::FromRef, routing::get};
use tokio::{
    net::TcpListener,
    sync::watch,
    task::{JoinHandle, JoinSet},
};

pub use admin::{FaultMode, Faults};
pub use config::Config;
pub use events::{EventStats, EventsConfig, EventsRedis, RedisUrl};
pub use local_redis::{
    LocalRedis, LocalRedisCluster, LocalRedisSentinel, RedisEndpoint, RedisTopology,
    TestConnection, TestRedis,
};
pub use problem::ApiError;
pub use world::World;

/// Which of the three downstream services a listener answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// The catalog: products and categories, public and cacheable.
    Product,
    /// Per-user carts, private and frequently written.
    Cart,
    /// Orders of users and partners, private, created idempotently.
    Order,
}

impl ServiceKind {
    /// All three services, in the order they are usually started and printed.
    pub const ALL: [ServiceKind; 3] = [ServiceKind::Product, ServiceKind::Cart, ServiceKind::Order];

    /// The lower-case name used on the command line, in logs and in `/__admin/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Product => "product",
            ServiceKind::Cart => "cart",
            ServiceKind::Order => "order",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`ServiceKind`] from a name other than `product`, `cart` or `order`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown service `{0}`: expected product, cart or order")]
pub struct UnknownService(pub String);

impl FromStr for ServiceKind {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "product" => Ok(ServiceKind::Product),
            "cart" => Ok(ServiceKind::Cart),
            "order" => Ok(ServiceKind::Order),
            other => Err(UnknownService(other.to_owned())),
        }
    }
}

/// Builds the router of one service: its own contract paths, `GET /health`, the admin API (with
/// the service's own admin routes that change its data), a problem+json 404 for every other path,
/// and the cross-cutting layers (request counting and fault injection, problem bodies for 405,
/// X-Request-Id echo).
///
/// The router alone cannot make the service unreachable in `down` mode (that needs the listener,
/// see [`serve`]); everything else works with `tower::ServiceExt::oneshot` as well.
pub fn router(kind: ServiceKind, world: World) -> Router {
    let admin = world.admin(kind).clone();
    let service = match kind {
        ServiceKind::Product => product::routes().merge(product::admin_routes()),
        ServiceKind::Cart => cart::routes(),
        ServiceKind::Order => order::routes().merge(order::admin_routes()),
    };
    let routed = service
        .with_state(world)
        .route("/health", get(health))
        .merge(admin::routes(admin.clone()))
        .fallback(layers::not_found)
        // Inside routing, so that it sees the matched route template.
        .layer(axum::middleware::from_fn_with_state(
            admin,
            admin::intercept,
        ));
    // Outside routing: axum adds `Allow` to a 405 only after the route's own layers ran.
    Router::new()
        .fallback_service(routed)
        .layer(axum::middleware::map_response(
            layers::method_not_allowed_body,
        ))
        .layer(axum::middleware::from_fn(layers::echo_request_id))
}

/// `GET /health`: 200 `{"status":"ok"}` once the service is ready (it is ready as soon as it
/// listens, since the world is seeded before).
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Serves one service on a listener the caller bound (port 0 in tests) until `shutdown` resolves,
/// then finishes the requests in flight.
///
/// The listener is wrapped so that the admin fault mode `down` can refuse new connections (see
/// [`admin::GuardedListener`]). The order service also runs the fulfilment clock while it serves,
/// when [`Config::advance_orders_every`] is set.
///
/// # Errors
///
/// Returns the I/O error that stopped the server, if any.
pub async fn serve(
    listener: TcpListener,
    kind: ServiceKind,
    world: World,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guarded = admin::GuardedListener::new(listener, world.admin(kind).clone());
    // Dropped (and so stopped) when serving ends.
    let mut clock = JoinSet::new();
    if let (ServiceKind::Order, Some(every)) = (kind, world.config().advance_orders_every) {
        clock.spawn(order::run_fulfilment_clock(
            order::OrderState::from_ref(&world),
            every,
        ));
    }
    let app = router(kind, world);
    axum::serve(guarded, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Three services started by [`spawn_all`] on ephemeral ports, for tests of other crates.
///
/// Dropping it leaves the services running until the runtime ends; call [`Spawned::shutdown`] to
/// stop them earlier.
#[derive(Debug)]
pub struct Spawned {
    /// Base URL of the product service, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub product_url: String,
    /// Base URL of the cart service.
    pub cart_url: String,
    /// Base URL of the order service.
    pub order_url: String,
    /// The state behind all three, to look up seeded ids or set faults without HTTP.
    pub world: World,
    /// The serving tasks, so that [`Spawned::shutdown`] can wait for them.
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// Flipped to `true` to shut all three down gracefully.
    stop: watch::Sender<bool>,
}

impl Spawned {
    /// The base URL of one service.
    pub fn url(&self, kind: ServiceKind) -> &str {
        match kind {
            ServiceKind::Product => &self.product_url,
            ServiceKind::Cart => &self.cart_url,
            ServiceKind::Order => &self.order_url,
        }
    }

    /// Stops the three services gracefully and waits until they have stopped.
    pub async fn shutdown(self) {
        // Receivers live inside the serving tasks; an error only means they have already stopped.
        let _ = self.stop.send(true);
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "service stopped with an error"),
                Err(error) => tracing::warn!(%error, "service task failed"),
            }
        }
    }
}

/// Seeds a [`World`] from `config`, binds the three services on `127.0.0.1:0` and serves them on
/// background tasks of the current runtime.
///
/// # Errors
///
/// Returns an error if a listener cannot be bound.
pub async fn spawn_all(config: Config) -> std::io::Result<Spawned> {
    let world = World::seeded(&config);
    let (stop, stopped) = watch::channel(false);
    let (product_url, product_task) = spawn_one(ServiceKind::Product, &world, &stopped).await?;
    let (cart_url, cart_task) = spawn_one(ServiceKind::Cart, &world, &stopped).await?;
    let (order_url, order_task) = spawn_one(ServiceKind::Order, &world, &stopped).await?;
    Ok(Spawned {
        product_url,
        cart_url,
        order_url,
        world,
        tasks: vec![product_task, cart_task, order_task],
        stop,
    })
}

/// Binds one service on `127.0.0.1:0` and serves it on a background task until `stopped` turns
/// `true`; returns its base URL and the task.
async fn spawn_one(
    kind: ServiceKind,
    world: &World,
    stopped: &watch::Receiver<bool>,
) -> std::io::Result<(String, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut stopped = stopped.clone();
    let shutdown = async move {
        // A dropped sender is not a request to stop: keep serving.
        if stopped.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let task = tokio::spawn(serve(listener, kind, world.clone(), shutdown));
    Ok((url, task))
}

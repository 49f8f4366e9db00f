//! Shared set-up: a mock downstream, configurations pointing at it and contract-shaped bodies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reference_services::{RedisEndpoint, TestRedis};
use serde_json::{Value, json};
use shared_clients::shared_state::{RedisUrl, SentinelConfig};
use shared_clients::{
    CacheConfig, Downstream, DownstreamConfig, OrderId, PartnerId, ProductId, RequestContext,
    ServiceConfig, SharedConfig, UserId,
};
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// A configuration with all three services at `url`, a generous cache and a short timeout.
pub fn config(url: &str) -> DownstreamConfig {
    let service = ServiceConfig {
        timeout: Duration::from_secs(5),
        ..ServiceConfig::with_url(url)
    };
    DownstreamConfig {
        product: service.clone(),
        cart: service.clone(),
        order: service,
        cache: CacheConfig {
            max_ttl: Duration::from_secs(60),
            max_bytes: 16 * 1024 * 1024,
            ..CacheConfig::default()
        },
        ..DownstreamConfig::default()
    }
}

/// A [`Downstream`] whose three services are all the mock server.
pub fn downstream(server: &MockServer) -> Downstream {
    Downstream::new(&config(&server.uri())).expect("the mock server URL is valid")
}

/// A private Redis for a test of shared behaviour, of the topology `BFF_TEST_REDIS_TOPOLOGY`
/// names (standalone by default; `./scripts/test` runs these tests over a cluster and Sentinel
/// too).
pub async fn test_redis() -> TestRedis {
    TestRedis::from_env()
        .await
        .expect("a private Redis starts (./scripts/ensure-redis-server installs it)")
}

/// The default shared settings pointed at `redis`, whatever its topology.
pub fn shared_over(redis: &TestRedis) -> SharedConfig {
    let mut shared = SharedConfig::default();
    match redis.endpoint() {
        RedisEndpoint::Standalone(url) => shared.redis_url = Some(RedisUrl::new(url)),
        RedisEndpoint::Cluster(nodes) => {
            shared.redis_cluster_nodes = nodes.into_iter().map(RedisUrl::new).collect();
        }
        RedisEndpoint::Sentinel {
            master_name,
            sentinels,
        } => {
            shared.redis_sentinel = Some(SentinelConfig {
                master_name,
                sentinels: sentinels.into_iter().map(RedisUrl::new).collect(),
            });
        }
    }
    shared
}

/// A context propagating nothing.
pub fn ctx() -> RequestContext {
    RequestContext::new()
}

/// A product id, e.g. `product_id(7)` is `p-00007`.
pub fn product_id(n: usize) -> ProductId {
    ProductId::parse(&format!("p-{n:05}")).expect("valid id")
}

/// Product ids `p-00001` … `p-0000n` (starting at `from`).
pub fn product_ids(from: usize, count: usize) -> Vec<ProductId> {
    (from..from + count).map(product_id).collect()
}

/// A user id.
pub fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

/// A partner id.
pub fn partner(id: &str) -> PartnerId {
    PartnerId::parse(id).expect("valid partner id")
}

/// An order id.
pub fn order_id(id: &str) -> OrderId {
    OrderId::parse(id).expect("valid order id")
}

/// A complete product body as the contract describes it.
pub fn product_json(id: &str) -> Value {
    json!({
        "id": id,
        "sku": format!("SKU-{id}"),
        "name": format!("Product {id}"),
        "description": "A fine product.",
        "brand": "Acme",
        "category_id": "c-shoes",
        "price": { "amount_minor": 1999, "currency": "EUR" },
        "list_price": null,
        "images": [{ "url": "https://img.example/1.jpg", "width": 800, "height": 600, "alt": "front" }],
        "attributes": { "colour": "red" },
        "rating": { "average": 4.5, "count": 12 },
        "inventory": { "available": 26, "status": "in_stock" },
        "updated_at": "2024-05-01T12:00:00Z"
    })
}

/// A cart body.
pub fn cart_json(user_id: &str, version: u64) -> Value {
    json!({
        "user_id": user_id,
        "items": [{ "product_id": "p-00001", "quantity": 2, "added_at": "2024-05-01T12:00:00Z" }],
        "version": version,
        "updated_at": "2024-05-01T12:00:00Z"
    })
}

/// An order body.
pub fn order_json(id: &str, user_id: &str, channel: Value) -> Value {
    json!({
        "id": id,
        "user_id": user_id,
        "channel": channel,
        "status": "pending",
        "lines": [{ "product_id": "p-00001", "quantity": 2,
                    "unit_price": { "amount_minor": 1999, "currency": "EUR" } }],
        "total": { "amount_minor": 3998, "currency": "EUR" },
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": null
    })
}

/// A `200` answer with a JSON body and `Cache-Control: public, max-age=…`.
pub fn cacheable(body: Value, max_age: u64) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(body)
        .insert_header(
            "cache-control",
            format!("public, max-age={max_age}").as_str(),
        )
}

/// The ids asked for by a batch request (`?ids=a,b,c`), in order.
pub fn asked_ids(request: &Request) -> Vec<String> {
    request
        .url
        .query_pairs()
        .find(|(name, _)| name == "ids")
        .map(|(_, ids)| ids.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Answers `GET /products?ids=…` like the catalog service: every asked id found, except
/// `unknown` ones, which are listed as missing. Records when each request arrived.
#[derive(Clone, Default)]
pub struct BatchResponder {
    /// Ids that do not exist.
    pub unknown: Arc<HashSet<String>>,
    /// Arrival time of each request, to tell concurrent calls from sequential ones.
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
    /// How long each answer takes.
    pub delay: Duration,
}

impl Respond for BatchResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.arrivals
            .lock()
            .expect("not poisoned")
            .push(Instant::now());
        let ids = asked_ids(request);
        let (missing, found): (Vec<_>, Vec<_>) =
            ids.iter().partition(|id| self.unknown.contains(*id));
        let items: Vec<Value> = found.iter().map(|id| product_json(id)).collect();
        cacheable(json!({ "items": items, "missing": missing }), 30).set_delay(self.delay)
    }
}

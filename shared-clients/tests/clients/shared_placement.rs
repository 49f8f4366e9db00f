//! Order placement across replicas: several independent `Downstream`s and `OrderPlacement`s (as
//! separate gateway processes have them) over the reference services and one private Redis
//! (of the topology `BFF_TEST_REDIS_TOPOLOGY` names), counting what reaches the cart and order services.

use std::time::Duration;

use reference_services::{Config, ServiceKind, Spawned, TestRedis, spawn_all};
use sha2::{Digest, Sha256};
use shared_clients::{
    Address, Channel, Downstream, DownstreamConfig, ErrorKind, IdempotencyKey, OrderPlacement,
    OrderPlacementConfig, OrderRequest, Owner, PartnerId, PlaceOrderError, PlacedOrder,
    RequestedLine, ServiceConfig,
};

use crate::helpers::{ctx, shared_over, test_redis, user};

/// The reference services, a Redis, and replicas of a gateway over both.
struct Deployment {
    /// The running services and their world.
    spawned: Spawned,
    /// The Redis every replica shares.
    redis: TestRedis,
    /// Clients and order placement of each replica.
    replicas: Vec<(Downstream, OrderPlacement)>,
}

impl Deployment {
    /// `count` replicas; the order service answers after `order_latency`, so that concurrent
    /// attempts really overlap.
    async fn start(count: usize, order_latency: Duration) -> Self {
        let redis = test_redis().await;
        let spawned = spawn_all(Config {
            products: 300,
            ..Config::default()
        })
        .await
        .expect("reference services start");
        let order = spawned.world.admin(ServiceKind::Order);
        order.set_faults(reference_services::Faults {
            latency: order_latency,
            ..order.faults()
        });
        let mut deployment = Self {
            spawned,
            redis,
            replicas: Vec::new(),
        };
        for _ in 0..count {
            let replica = deployment.replica();
            deployment.replicas.push(replica);
        }
        deployment
    }

    /// One more replica: its own caches and remembered attempts, the same Redis.
    fn replica(&self) -> (Downstream, OrderPlacement) {
        let config = DownstreamConfig {
            product: ServiceConfig::with_url(&self.spawned.product_url),
            cart: ServiceConfig::with_url(&self.spawned.cart_url),
            order: ServiceConfig::with_url(&self.spawned.order_url),
            ..DownstreamConfig::default()
        };
        let shared = shared_over(&self.redis);
        let downstream = Downstream::new_shared(&config, &shared).expect("valid URLs");
        let placement = OrderPlacement::new(downstream.clone(), &OrderPlacementConfig::default());
        (downstream, placement)
    }

    /// Replica `n`'s order placement.
    fn placement(&self, n: usize) -> &OrderPlacement {
        &self.replicas[n].1
    }

    /// Puts `quantity` of `product` in `user_id`'s cart, then zeroes every service's counters.
    async fn fill_cart(&self, user_id: &str, product: &str, quantity: u32) {
        self.replicas[0]
            .0
            .carts()
            .add_item(
                &ctx(),
                &user(user_id),
                &product.parse().expect("id"),
                quantity,
                None,
            )
            .await
            .expect("added to cart");
        self.reset_counters();
    }

    /// Zeroes the request counters of every service.
    fn reset_counters(&self) {
        for kind in [ServiceKind::Product, ServiceKind::Cart, ServiceKind::Order] {
            self.spawned.world.admin(kind).reset();
        }
    }

    /// Requests `kind` received since the counters were zeroed.
    fn requests(&self, kind: ServiceKind) -> u64 {
        self.spawned.world.admin(kind).stats().total
    }

    /// `POST /orders` the order service received.
    fn order_posts(&self) -> u64 {
        let stats = self.spawned.world.admin(ServiceKind::Order).stats();
        stats.requests.get("POST /orders").copied().unwrap_or(0)
    }

    /// Writes (anything but `GET`) the cart service received.
    fn cart_writes(&self) -> u64 {
        let stats = self.spawned.world.admin(ServiceKind::Cart).stats();
        stats
            .requests
            .iter()
            .filter(|(route, _)| !route.starts_with("GET "))
            .map(|(_, count)| count)
            .sum()
    }

    /// The lease key of `user_id`'s attempts with `key`, as every replica names it.
    fn lease_key(user_id: &str, key: &str) -> String {
        format!("{}:lease", Self::record_key(user_id, key))
    }

    /// The record key of `user_id`'s attempts with `key`.
    fn record_key(user_id: &str, key: &str) -> String {
        let digest: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("bff:{{u:{user_id}}}:checkout:{digest}")
    }
}

fn key(value: &str) -> IdempotencyKey {
    IdempotencyKey::parse(value).expect("valid key")
}

/// How many times `downstream` fell back from Redis for checkout records.
fn idempotency_fallbacks(downstream: &Downstream) -> u64 {
    let redis = downstream.metrics().redis.expect("Redis is configured");
    redis
        .fallbacks
        .iter()
        .find(|(feature, _)| *feature == "idempotency")
        .map_or(0, |(_, count)| *count)
}

/// What a client sees of a placed order: everything but whether this request created it.
fn answer(placed: &PlacedOrder) -> (String, bool, i64) {
    (
        placed.order.id.as_str().to_owned(),
        placed.cart_cleared,
        placed.order.total.amount_minor,
    )
}

#[tokio::test]
async fn one_key_checked_out_on_three_replicas_at_once_makes_one_order_and_one_cart_change() {
    let deployment = Deployment::start(3, Duration::from_millis(100)).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 2)
        .await;
    let buyer_id = user(&buyer);
    let racing = key("three-replicas");

    let results = futures::future::join_all(deployment.replicas.iter().map(|(_, placement)| {
        let context = ctx().with_timeout_from_now(Duration::from_secs(5));
        let (buyer_id, racing) = (buyer_id.clone(), racing.clone());
        async move {
            placement
                .checkout(&context, &buyer_id, &racing, Channel::mobile(), None)
                .await
        }
    }))
    .await;

    let placed: Vec<PlacedOrder> = results
        .into_iter()
        .map(|result| result.expect("every replica answers"))
        .collect();
    assert_eq!(
        deployment.order_posts(),
        1,
        "one body reached the order service"
    );
    assert_eq!(deployment.cart_writes(), 1, "the cart was emptied once");
    assert_eq!(placed.iter().filter(|p| p.created).count(), 1);
    assert!(placed.iter().all(|p| answer(p) == answer(&placed[0])));
    assert!(placed[0].cart_cleared);
    assert!(world.cart(&buyer).items.is_empty());
    assert_eq!(world.user_orders(&buyer).len(), 1);

    // A retry lands on a replica that never saw the key: the same answer, and no call at all.
    deployment.reset_counters();
    let (_, fresh) = deployment.replica();
    let retry = fresh
        .checkout(&ctx(), &buyer_id, &racing, Channel::mobile(), None)
        .await
        .expect("the retry is answered");
    assert_eq!(answer(&retry), answer(&placed[0]));
    assert!(!retry.created);
    for kind in [ServiceKind::Product, ServiceKind::Cart, ServiceKind::Order] {
        assert_eq!(deployment.requests(kind), 0, "{kind:?} was called");
    }
}

#[tokio::test]
async fn a_retry_on_another_replica_reports_the_first_attempts_cart_cleared_and_leaves_the_cart() {
    let deployment = Deployment::start(2, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    let later = world.on_sale_product().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 1)
        .await;
    let buyer_id = user(&buyer);

    let first = deployment
        .placement(0)
        .checkout(&ctx(), &buyer_id, &key("k-1"), Channel::web(), None)
        .await
        .expect("first checkout");
    // The user goes on shopping; the app retries the checkout through another replica.
    deployment.fill_cart(&buyer, &later, 2).await;
    let retry = deployment
        .placement(1)
        .checkout(&ctx(), &buyer_id, &key("k-1"), Channel::web(), None)
        .await
        .expect("the retry is answered");

    assert_eq!(answer(&retry), answer(&first));
    assert!(first.created && !retry.created);
    assert_eq!(deployment.requests(ServiceKind::Cart), 0);
    assert_eq!(deployment.requests(ServiceKind::Order), 0);
    let items: Vec<_> = world
        .cart(&buyer)
        .items
        .iter()
        .map(|item| (item.product_id.clone(), item.quantity))
        .collect();
    assert_eq!(items, vec![(later, 2)], "the retry did not touch the cart");
}

#[tokio::test]
async fn another_request_with_the_key_is_refused_on_every_replica_as_in_process() {
    let deployment = Deployment::start(2, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 1)
        .await;
    let buyer_id = user(&buyer);
    let ship_to = |city: &str| {
        Some(Address {
            city: Some(city.to_owned()),
            country: Some("DE".to_owned()),
            ..Address::default()
        })
    };
    let checkout = |n: usize, city: &'static str| {
        let buyer_id = buyer_id.clone();
        let placement = deployment.placement(n).clone();
        async move {
            placement
                .checkout(
                    &ctx(),
                    &buyer_id,
                    &key("k-reused"),
                    Channel::web(),
                    ship_to(city),
                )
                .await
        }
    };

    let first = checkout(0, "Berlin").await.expect("first checkout");
    deployment.reset_counters();
    let here = checkout(0, "Bonn").await.expect_err("refused here");
    let there = checkout(1, "Bonn").await.expect_err("refused there");

    assert!(matches!(here, PlaceOrderError::KeyReused), "{here:?}");
    assert!(matches!(there, PlaceOrderError::KeyReused), "{there:?}");
    assert_eq!(deployment.requests(ServiceKind::Cart), 0);
    assert_eq!(deployment.requests(ServiceKind::Order), 0);
    let again = checkout(1, "Berlin").await.expect("the original request");
    assert_eq!(answer(&again), answer(&first));
}

#[tokio::test]
async fn a_partner_order_retried_on_another_replica_is_not_priced_again() {
    let deployment = Deployment::start(2, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let partner = PartnerId::parse(world.partner_without_orders()).expect("id");
    let owner = Owner::Partner(partner.clone());
    let request = OrderRequest {
        customer: user("customer-9"),
        channel: Channel::partner(partner),
        lines: vec![RequestedLine {
            product_id: world.regular_product().parse().expect("id"),
            quantity: 3,
        }],
        shipping_address: None,
    };

    let first = deployment
        .placement(0)
        .place(&ctx(), &owner, &key("p-1"), request.clone())
        .await
        .expect("placed");
    deployment.reset_counters();
    let again = deployment
        .placement(1)
        .place(&ctx(), &owner, &key("p-1"), request)
        .await
        .expect("answered");

    assert_eq!(answer(&again), answer(&first));
    assert!(!again.created);
    for kind in [ServiceKind::Product, ServiceKind::Order] {
        assert_eq!(deployment.requests(kind), 0, "{kind:?} was called");
    }
}

#[tokio::test]
async fn a_lease_left_by_a_replica_that_died_delays_checkout_only_until_it_expires() {
    let deployment = Deployment::start(1, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 1)
        .await;
    let buyer_id = user(&buyer);
    let lease = Deployment::lease_key(&buyer, "k-orphan");
    let set = |ms: u32| format!("SET {lease} another-replica PX {ms}");

    // The lease outlives this request's deadline: it gives up, nothing is ordered.
    deployment.redis.command(&set(5_000)).await.expect("SET");
    let impatient = ctx().with_timeout_from_now(Duration::from_millis(300));
    let error = deployment
        .placement(0)
        .checkout(
            &impatient,
            &buyer_id,
            &key("k-orphan"),
            Channel::web(),
            None,
        )
        .await
        .expect_err("waits for the lease until its deadline");
    let PlaceOrderError::Downstream(error) = error else {
        panic!("expected a deadline, got {error:?}");
    };
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(deployment.requests(ServiceKind::Cart), 0);
    assert_eq!(deployment.order_posts(), 0);

    // The holder died: its lease expires with no record, and the waiting request proceeds.
    deployment.redis.command(&set(400)).await.expect("SET");
    let started = tokio::time::Instant::now();
    let placed = deployment
        .placement(0)
        .checkout(
            &ctx().with_timeout_from_now(Duration::from_secs(5)),
            &buyer_id,
            &key("k-orphan"),
            Channel::web(),
            None,
        )
        .await
        .expect("placed once the lease expired");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(placed.created && placed.cart_cleared);
    assert_eq!(deployment.order_posts(), 1);
}

#[tokio::test]
async fn a_checkout_abandoned_mid_order_releases_its_lease_at_once() {
    let deployment = Deployment::start(2, Duration::from_millis(300)).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 1)
        .await;
    let buyer_id = user(&buyer);

    // Without a deadline its lease would last 30 s; the client goes away while the order is
    // being created.
    let abandoned = tokio::spawn({
        let (placement, buyer_id) = (deployment.placement(0).clone(), buyer_id.clone());
        async move {
            placement
                .checkout(&ctx(), &buyer_id, &key("k-gone"), Channel::web(), None)
                .await
        }
    });
    while deployment.order_posts() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    abandoned.abort();

    let started = tokio::time::Instant::now();
    let placed = deployment
        .placement(1)
        .checkout(
            &ctx().with_timeout_from_now(Duration::from_secs(5)),
            &buyer_id,
            &key("k-gone"),
            Channel::web(),
            None,
        )
        .await
        .expect("placed by the other replica");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for the lease",
        started.elapsed()
    );
    assert!(placed.cart_cleared);
    assert_eq!(world.user_orders(&buyer).len(), 1);
    assert!(world.cart(&buyer).items.is_empty());
}

#[tokio::test]
async fn garbage_under_our_keys_is_a_miss_counted_and_then_replaced() {
    let deployment = Deployment::start(1, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    // Not our JSON; a record of another type, with a lease that never expires.
    let garbage = |key: &str| {
        let (record, lease) = (
            Deployment::record_key(&buyer, key),
            Deployment::lease_key(&buyer, key),
        );
        match key {
            "k-text" => vec![format!("SET {record} not-json")],
            _ => vec![
                format!("HSET {record} stage created"),
                format!("SET {lease} stale"),
            ],
        }
    };
    for (case, (key, garbage_seen)) in [("k-text", 1), ("k-hash", 3)].into_iter().enumerate() {
        deployment
            .fill_cart(&buyer, world.regular_product(), 1)
            .await;
        for command in garbage(key) {
            let reply = deployment.redis.command(&command).await.expect("stored");
            assert!(!reply.starts_with('-'), "{command}: {reply}");
        }

        let placed = deployment
            .placement(0)
            .checkout(&ctx(), &user(&buyer), &self::key(key), Channel::web(), None)
            .await
            .expect("placed as if nothing were recorded");
        assert!(placed.created, "{key}");
        let redis = deployment.replicas[0]
            .0
            .metrics()
            .redis
            .expect("configured");
        assert!(
            redis
                .errors
                .iter()
                .any(|(op, n)| *op == "checkout_begin" && *n == garbage_seen),
            "{key}: {redis:?}"
        );
        assert!(idempotency_fallbacks(&deployment.replicas[0].0) > case as u64);

        // Replaced by the real record, with an expiry: another replica answers from it.
        let record = Deployment::record_key(&buyer, key);
        let ttl = deployment
            .redis
            .command(&format!("PTTL {record}"))
            .await
            .expect("PTTL");
        let ttl: i64 = ttl
            .trim_start_matches(':')
            .trim()
            .parse()
            .expect("a number");
        assert!(ttl > 0, "{key}: {ttl}");
        deployment.reset_counters();
        let (_, fresh) = deployment.replica();
        let retry = fresh
            .checkout(&ctx(), &user(&buyer), &self::key(key), Channel::web(), None)
            .await
            .expect("answered");
        assert_eq!(answer(&retry), answer(&placed), "{key}");
        assert_eq!(deployment.requests(ServiceKind::Order), 0, "{key}");
    }
}

#[tokio::test]
async fn checkout_works_in_process_when_redis_is_down_and_the_fallback_is_counted() {
    let mut deployment = Deployment::start(2, Duration::ZERO).await;
    let world = &deployment.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    deployment
        .fill_cart(&buyer, world.regular_product(), 1)
        .await;
    let buyer_id = user(&buyer);
    deployment.redis.stop().await.expect("redis stops");

    let placed = deployment
        .placement(0)
        .checkout(&ctx(), &buyer_id, &key("k-down"), Channel::web(), None)
        .await
        .expect("placed without Redis");
    let retry = deployment
        .placement(0)
        .checkout(&ctx(), &buyer_id, &key("k-down"), Channel::web(), None)
        .await
        .expect("the retry on the same replica is answered in process");

    assert!(placed.created && placed.cart_cleared);
    assert_eq!(answer(&retry), answer(&placed));
    assert_eq!(deployment.order_posts(), 1);
    assert!(idempotency_fallbacks(&deployment.replicas[0].0) >= 1);
    // Without Redis, a retry on another replica relies on the order service's deduplication,
    // as before: never a failure because of Redis.
    let elsewhere = deployment
        .placement(1)
        .checkout(&ctx(), &buyer_id, &key("k-down"), Channel::web(), None)
        .await;
    assert!(
        matches!(elsewhere, Err(PlaceOrderError::Empty)),
        "the cart is empty now: {elsewhere:?}"
    );
}

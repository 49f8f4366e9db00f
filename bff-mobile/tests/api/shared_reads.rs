//! Read-your-writes across replicas: three `bff-mobile` replicas over one Redis; a write through
//! one is seen at once through the others, although each caches private data for a minute.

use std::time::Duration;

use reference_services::TestRedis;
use reqwest::Method;
use serde_json::{Value, json};
use server_kit::{
    auth::Secret,
    testing::{spawn_replicas, spawn_replicas_over},
};

use crate::helpers::{SECRET, token};

/// Long enough that, without shared generations, a replica would answer its cached copy.
const PRIVATE_TTL: Duration = Duration::from_secs(60);

/// A JSON request to `path` under `/m/v1` of `base` as `user`; asserts 200 and returns the body.
async fn call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client
        .request(method, format!("{base}/m/v1{path}"))
        .bearer_auth(token(user));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("answered");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// The quantity of `product` in a cart screen (0 when absent).
fn quantity(cart: &Value, product: &str) -> u64 {
    // An empty cart screen has no `lines` (compact JSON leaves out empty lists).
    cart["lines"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .find(|line| line["id"] == product)
        .map_or(0, |line| line["qty"].as_u64().expect("qty"))
}

#[tokio::test]
async fn a_cart_written_through_one_replica_is_read_through_the_others_200_times_in_a_row() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            settings.downstream.private_cache.ttl = PRIVATE_TTL;
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let user = replicas.services.world.user_without_cart().to_owned();
    let product = replicas.services.world.regular_product().to_owned();
    let bases = &replicas.bases;
    call(
        &client,
        &bases[0],
        Method::POST,
        "/cart/items",
        &user,
        Some(json!({ "product_id": product, "quantity": 1 })),
    )
    .await;
    for round in 0..200_usize {
        let writer = round % 3;
        // 1..=9, never the previous round's value.
        let wanted = (round % 9 + 1) as u64;
        // Every replica holds the previous value in its cache before the write.
        for base in bases {
            call(&client, base, Method::GET, "/cart", &user, None).await;
        }
        let written = call(
            &client,
            &bases[writer],
            Method::PUT,
            &format!("/cart/items/{product}"),
            &user,
            Some(json!({ "quantity": wanted })),
        )
        .await;
        assert_eq!(quantity(&written, &product), wanted);
        for (index, base) in bases.iter().enumerate() {
            let cart = call(&client, base, Method::GET, "/cart", &user, None).await;
            assert_eq!(
                quantity(&cart, &product),
                wanted,
                "round {round}: written through replica {writer}, read through {index}"
            );
        }
    }
}

#[tokio::test]
async fn an_order_placed_through_one_replica_is_listed_by_the_others() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            settings.downstream.private_cache.ttl = PRIVATE_TTL;
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let user = replicas.services.world.user_without_cart().to_owned();
    let product = replicas.services.world.regular_product().to_owned();
    let bases = &replicas.bases;
    for round in 0..200_usize {
        let writer = round % 3;
        for base in bases {
            call(&client, base, Method::GET, "/orders?limit=1", &user, None).await;
        }
        call(
            &client,
            &bases[writer],
            Method::POST,
            "/cart/items",
            &user,
            Some(json!({ "product_id": product, "quantity": 1 })),
        )
        .await;
        let placed = client
            .post(format!("{}/m/v1/checkout", bases[writer]))
            .bearer_auth(token(&user))
            .header("idempotency-key", format!("rywo-{round}"))
            .send()
            .await
            .expect("answered");
        assert!(placed.status().is_success(), "{}", placed.status());
        let placed: Value = placed.json().await.expect("JSON");
        let order_id = placed["order"]["id"]
            .as_str()
            .or_else(|| placed["id"].as_str())
            .unwrap_or_else(|| panic!("an order id in {placed}"))
            .to_owned();
        for (index, base) in bases.iter().enumerate() {
            let listed = call(&client, base, Method::GET, "/orders?limit=1", &user, None).await;
            assert_eq!(
                listed["orders"][0]["id"], order_id,
                "round {round}: placed through replica {writer}, listed through {index}"
            );
            // And the cart the checkout emptied is empty everywhere.
            let cart = call(&client, base, Method::GET, "/cart", &user, None).await;
            assert_eq!(
                quantity(&cart, &product),
                0,
                "round {round}, replica {index}"
            );
        }
    }
}

#[tokio::test]
async fn private_reads_keep_working_while_redis_is_down_and_share_again_after() {
    let mut replicas = spawn_replicas(
        reference_services::Config::default(),
        2,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            settings.shared.retry_after = Duration::from_millis(100);
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let user = replicas.services.world.user_without_cart().to_owned();
    let product = replicas.services.world.regular_product().to_owned();
    let bases = replicas.bases.clone();
    replicas.redis.stop().await.expect("redis stops");
    // Writes and reads are answered without Redis (each replica on its own).
    let written = call(
        &client,
        &bases[0],
        Method::POST,
        "/cart/items",
        &user,
        Some(json!({ "product_id": product, "quantity": 2 })),
    )
    .await;
    assert_eq!(quantity(&written, &product), 2);
    call(&client, &bases[1], Method::GET, "/cart", &user, None).await;
    let metrics = server_kit::testing::scrape(&client, &replicas.metrics_urls[0]).await;
    let fallbacks = server_kit::testing::sample(
        &metrics,
        "bff_redis_fallback_total",
        &[("feature", "generations")],
    );
    assert!(fallbacks >= 1.0, "{metrics}");
    // Back: after `retry_after`, a write through one replica is again seen through the other.
    replicas.redis.restart().await.expect("redis restarts");
    for (base, metrics_url) in bases.iter().zip(&replicas.metrics_urls) {
        until_shared(&client, base, metrics_url, &user).await;
    }
    for wanted in [5_u64, 3, 7] {
        call(&client, &bases[1], Method::GET, "/cart", &user, None).await;
        call(
            &client,
            &bases[0],
            Method::PUT,
            &format!("/cart/items/{product}"),
            &user,
            Some(json!({ "quantity": wanted })),
        )
        .await;
        let cart = call(&client, &bases[1], Method::GET, "/cart", &user, None).await;
        assert_eq!(quantity(&cart, &product), wanted);
    }
}

/// Reads `user`'s cart through `base` until reads cost no Redis error (the replica is connected
/// to Redis again on every one of its connections: each finds its old one broken once), for at
/// most 10 s.
async fn until_shared(client: &reqwest::Client, base: &str, metrics_url: &str, user: &str) {
    let errors = |text: &str| server_kit::testing::sample(text, "bff_redis_errors_total", &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut clean = 0;
    // More clean reads in a row than the replica has connections (`shared.connections`).
    while clean < 6 {
        let before = errors(&server_kit::testing::scrape(client, metrics_url).await);
        call(client, base, Method::GET, "/cart", user, None).await;
        let text = server_kit::testing::scrape(client, metrics_url).await;
        let up = server_kit::testing::sample(&text, "bff_redis_up", &[]);
        if (errors(&text) - before).abs() < f64::EPSILON && up > 0.5 {
            clean += 1;
            continue;
        }
        clean = 0;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} did not reconnect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_killed_during_a_load_run_fails_no_request_and_sharing_comes_back() {
    let redis = TestRedis::from_env().await.expect("a private Redis");
    load_through(redis, async |redis: &mut TestRedis| {
        redis.stop().await.expect("redis stops");
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart().await.expect("redis restarts");
    })
    .await;
}

/// Three replicas over `redis` under a mixed load (product reads, cart reads and cart writes
/// through every replica, six clients) while `disrupt` does something to Redis: no request
/// fails (never a 5xx), the replicas count fallbacks, and afterwards they share again by
/// themselves (a write through one is read through the others at once).
pub(crate) async fn load_through(redis: TestRedis, disrupt: impl AsyncFnOnce(&mut TestRedis)) {
    let mut replicas = spawn_replicas_over(
        redis,
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            settings.shared.retry_after = Duration::from_millis(100);
            // Short freshness, so the load keeps missing and asking Redis.
            settings.downstream.cache.max_ttl = Duration::from_millis(200);
            // Commands to a dead node give up (fall back) well within a request's deadline.
            settings.shared.command_timeout = Duration::from_millis(500);
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let world = &replicas.services.world;
    let users: Vec<String> = (0..3).map(|n| format!("u-load-{n}")).collect();
    let product = world.regular_product().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..6_usize {
        let (client, stop) = (client.clone(), std::sync::Arc::clone(&stop));
        let bases = replicas.bases.clone();
        let (user, product) = (users[worker % users.len()].clone(), product.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0_usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let base = &bases[n % bases.len()];
                let request = match n % 3 {
                    0 => client.get(format!("{base}/m/v1/products/p-{:05}", n % 40 + 1)),
                    1 => client
                        .get(format!("{base}/m/v1/cart"))
                        .bearer_auth(token(&user)),
                    _ => client
                        .post(format!("{base}/m/v1/cart/items"))
                        .bearer_auth(token(&user))
                        .json(&json!({ "product_id": product, "quantity": 1 })),
                };
                let status = request.send().await.expect("answered").status();
                statuses.push(status.as_u16());
                n += 1;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    disrupt(&mut replicas.redis).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for worker in load {
        for status in worker.await.expect("no panic") {
            answered += 1;
            // 422: a cart line reached its maximum quantity; never a 5xx.
            assert!(status < 500, "a {status} during the disruption");
        }
    }
    assert!(answered > 100, "the load ran ({answered} requests)");
    let mut fallbacks = 0.0;
    for metrics_url in &replicas.metrics_urls {
        let text = server_kit::testing::scrape(&client, metrics_url).await;
        fallbacks += server_kit::testing::sample(&text, "bff_redis_fallback_total", &[]);
    }
    assert!(fallbacks >= 1.0, "fallbacks were counted");
    // Shared again: a write through one replica is read through the others at once.
    let user = "u-after-outage".to_owned();
    for (base, metrics_url) in replicas.bases.iter().zip(&replicas.metrics_urls) {
        until_shared(&client, base, metrics_url, &user).await;
    }
    call(
        &client,
        &replicas.bases[0],
        Method::POST,
        "/cart/items",
        &user,
        Some(json!({ "product_id": product, "quantity": 4 })),
    )
    .await;
    for base in &replicas.bases[1..] {
        let cart = call(&client, base, Method::GET, "/cart", &user, None).await;
        assert_eq!(quantity(&cart, &product), 4);
    }
}

#[tokio::test]
async fn ready_ignores_redis_unless_it_is_required() {
    for required in [false, true] {
        let mut replicas = spawn_replicas(
            reference_services::Config::default(),
            1,
            |settings: &mut bff_mobile::MobileSettings| {
                settings.shared.redis_required = required;
                settings.server.ready_cache_ttl = Duration::ZERO;
            },
            bff_mobile::build,
        )
        .await;
        let client = reqwest::Client::new();
        let ready = format!("{}/ready", replicas.bases[0]);
        let status = |client: reqwest::Client, url: String| async move {
            client.get(url).send().await.expect("answered").status()
        };
        assert_eq!(status(client.clone(), ready.clone()).await, 200);
        replicas.redis.stop().await.expect("redis stops");
        let down = status(client.clone(), ready.clone()).await;
        if required {
            assert_eq!(down, 503, "shared.redis_required");
            let body: Value = client
                .get(&ready)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(body.to_string().contains("redis"), "{body}");
        } else {
            assert_eq!(down, 200, "Redis is not required by default");
        }
    }
}

#[tokio::test]
async fn three_hundred_concurrent_requests_for_one_cold_product_over_three_replicas_make_one_call()
{
    let replicas = spawn_replicas(
        reference_services::Config {
            latency: Duration::from_millis(50),
            ..reference_services::Config::default()
        },
        3,
        |_: &mut bff_mobile::MobileSettings| {},
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let product = replicas.services.world.regular_product().to_owned();
    let admin = replicas
        .services
        .world
        .admin(reference_services::ServiceKind::Product);
    let before = admin.stats().total;
    let requests = (0..300).map(|n| {
        let url = format!("{}/m/v1/products/{product}", replicas.bases[n % 3]);
        let client = client.clone();
        tokio::spawn(async move { client.get(url).send().await.expect("answered").status() })
    });
    for status in futures::future::join_all(requests).await {
        assert_eq!(status.expect("no panic"), 200);
    }
    assert_eq!(
        admin.stats().total - before,
        1,
        "one call at the product service for three replicas"
    );
}

//! Retries: idempotent reads are retried on transient failures (with `Retry-After` honoured),
//! cart writes never are, order creation is (its idempotency key makes it safe), and the retry
//! budget caps retries under a sustained outage, counted at the downstream.

use std::time::{Duration, SystemTime};

use reference_services::{Config, FaultMode, ServiceKind, spawn_all};
use shared_clients::{
    Channel, Creation, Downstream, DownstreamConfig, ErrorKind, IdempotencyKey, NewOrder, Owner,
    Service, ServiceConfig,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{cacheable, ctx, downstream, order_json, product_id, product_json, user};

/// Mounts `GET /products/p-00001` answering `failure` `times` times, then the product.
async fn flaky_product(server: &MockServer, failure: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(failure)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30))
        .mount(server)
        .await;
}

/// How many requests the mock server received.
async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_get_is_retried_on_503_502_and_504_until_it_succeeds() {
    for status in [502, 503, 504] {
        let server = MockServer::start().await;
        flaky_product(&server, ResponseTemplate::new(status), 2).await;
        let downstream = downstream(&server);
        let product = downstream
            .catalog()
            .product(&ctx(), &product_id(1))
            .await
            .unwrap();
        assert_eq!(product.id, product_id(1), "{status}");
        assert_eq!(calls(&server).await, 3, "{status}: two retries");
        let metrics = downstream.metrics();
        let product_metrics = metrics.service(Service::Product).unwrap();
        assert_eq!(
            (
                product_metrics.calls,
                product_metrics.attempts,
                product_metrics.retries
            ),
            (1, 3, 2)
        );
    }
}

#[tokio::test]
async fn a_get_gives_up_after_max_attempts_and_a_500_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/categories"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let err = downstream.catalog().categories(&ctx()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(calls(&server).await, 3, "max_attempts is 3 by default");

    let err = downstream
        .carts()
        .get(&ctx(), &user("u-0001"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(calls(&server).await, 4, "a 500 is not transient");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_a_long_retry_after_is_returned_at_once() {
    let server = MockServer::start().await;
    flaky_product(
        &server,
        ResponseTemplate::new(429).insert_header("retry-after", "0"),
        1,
    )
    .await;
    let downstream = downstream(&server);
    downstream
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap();
    assert_eq!(calls(&server).await, 2);

    let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    for retry_after in ["120", in_an_hour.as_str()] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", retry_after))
            .mount(&server)
            .await;
        let err = downstream_of(&server)
            .carts()
            .get(&ctx(), &user("u-0001"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let asked = err.retry_after().expect("the Retry-After is passed on");
        assert!(asked > Duration::from_secs(100), "{retry_after}: {asked:?}");
        assert_eq!(calls(&server).await, 1, "{retry_after}: not waited for");
    }
}

/// A downstream of `server` (a fresh one, with fresh breakers and budgets).
fn downstream_of(server: &MockServer) -> Downstream {
    downstream(server)
}

#[tokio::test]
async fn cart_writes_are_never_retried() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let carts = downstream.carts();
    let (u, p) = (user("u-0001"), product_id(1));
    let results = [
        carts.add_item(&ctx(), &u, &p, 1, None).await.map(drop),
        carts.add_item(&ctx(), &u, &p, 1, Some(3)).await.map(drop),
        carts.set_quantity(&ctx(), &u, &p, 2).await.map(drop),
        carts.remove_item(&ctx(), &u, &p).await.map(drop),
        carts.clear(&ctx(), &u).await,
    ];
    for result in results {
        assert_eq!(result.unwrap_err().status(), Some(503));
    }
    assert_eq!(calls(&server).await, 5, "one request per write");

    // The same failure on a read is retried.
    carts.get(&ctx(), &u).await.unwrap_err();
    assert_eq!(calls(&server).await, 8);
}

#[tokio::test]
async fn order_creation_is_retried_with_the_same_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("idempotency-key", "checkout-42"))
        .respond_with(ResponseTemplate::new(201).set_body_json(order_json(
            "o-1",
            "u-0001",
            serde_json::json!({ "kind": "web", "partner_id": null }),
        )))
        .mount(&server)
        .await;
    let order = NewOrder {
        user_id: user("u-0001"),
        channel: Channel::web(),
        lines: Vec::new(),
        shipping_address: None,
    };
    let created = downstream(&server)
        .orders()
        .create(
            &ctx(),
            &Owner::User(user("u-0001")),
            &IdempotencyKey::parse("checkout-42").unwrap(),
            &order,
        )
        .await
        .unwrap();
    assert_eq!(created.creation, Creation::Created);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.headers["idempotency-key"], "checkout-42");
        assert_eq!(request.body, requests[0].body, "the same body each time");
    }
}

#[tokio::test]
async fn the_retry_budget_caps_retries_under_a_sustained_outage() {
    let spawned = spawn_all(Config {
        products: 200,
        ..Config::default()
    })
    .await
    .unwrap();
    let admin = spawned.world.admin(ServiceKind::Product);
    admin.set_mode(FaultMode::Failing);
    let mut product = ServiceConfig::with_url(&spawned.product_url);
    product.breaker.enabled = false;
    product.retry.initial_backoff = Duration::from_millis(1);
    product.retry.max_backoff = Duration::from_millis(2);
    product.retry.budget_min_retries = 5;
    product.retry.budget_ratio = 0.1;
    product.retry.budget_window = Duration::from_secs(600);
    let downstream = Downstream::new(&DownstreamConfig {
        product,
        ..DownstreamConfig::default()
    })
    .unwrap();

    for n in 1..=100 {
        let err = downstream
            .catalog()
            .product(&ctx(), &product_id(n))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
    }
    // Without a budget: 3 attempts each, 300 requests. With it: 100 requests, the floor of 5
    // retries and 10% of the 100 requests.
    assert_eq!(admin.stats().total, 115);
    let metrics = downstream.metrics();
    let product_metrics = metrics.service(Service::Product).unwrap();
    assert_eq!(product_metrics.retries, 15);
    // The first two calls got both their retries; every later one was refused one.
    assert_eq!(product_metrics.retries_denied, 98);
}

//! Deadlines: a request's budget bounds every downstream call made for it, concurrent ones
//! included; a call slower than the budget ends at the deadline, and once the budget is spent no
//! call starts.

use std::time::{Duration, Instant};

use shared_clients::{
    Downstream, ErrorKind, IdempotencyKey, NewOrder, Owner, ProductQuery, Service,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    cacheable, cart_json, config, ctx, downstream, product_id, product_json, user,
};

/// How late after its deadline a call may return: scheduling and connection teardown.
const MARGIN: Duration = Duration::from_millis(250);

/// A mock answering every `GET` after `delay`.
async fn slow_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(cart_json("u-0001", 1))
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30).set_delay(delay))
        .mount(&server)
        .await;
    server
}

/// How many requests the mock server received.
async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_downstream_slower_than_the_budget_times_out_within_the_budget_and_is_not_retried() {
    let server = slow_server(Duration::from_secs(3)).await;
    // The service's own timeout (5 s) is longer than the budget.
    let downstream = downstream(&server);
    let budget = Duration::from_millis(300);
    let ctx = ctx().with_timeout_from_now(budget);
    let started = Instant::now();
    let err = downstream
        .carts()
        .get(&ctx, &user("u-0001"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        (err.kind(), err.service()),
        (ErrorKind::Timeout, Service::Cart)
    );
    assert!(elapsed >= budget - Duration::from_millis(5), "{elapsed:?}");
    assert!(
        elapsed < budget + MARGIN,
        "gave up at the deadline: {elapsed:?}"
    );
    assert_eq!(calls(&server).await, 1, "no retry after the deadline");
}

#[tokio::test]
async fn once_the_budget_is_spent_no_call_starts_and_the_error_is_immediate() {
    let server = slow_server(Duration::ZERO).await;
    let downstream = downstream(&server);
    let spent = ctx().with_timeout_from_now(Duration::ZERO);
    let u = user("u-0001");
    let owner = Owner::User(u.clone());
    let order = NewOrder {
        user_id: u.clone(),
        channel: shared_clients::Channel::web(),
        lines: Vec::new(),
        shipping_address: None,
    };
    let started = Instant::now();
    let errors = [
        downstream
            .catalog()
            .product(&spent, &product_id(1))
            .await
            .map(drop),
        downstream
            .catalog()
            .products(&spent, &[product_id(2), product_id(3)])
            .await
            .map(drop),
        downstream.catalog().categories(&spent).await.map(drop),
        downstream
            .catalog()
            .list(&spent, &ProductQuery::default())
            .await
            .map(drop),
        downstream.carts().get(&spent, &u).await.map(drop),
        downstream
            .carts()
            .add_item(&spent, &u, &product_id(1), 1, None)
            .await
            .map(drop),
        downstream
            .orders()
            .create(&spent, &owner, &IdempotencyKey::generate(), &order)
            .await
            .map(drop),
        downstream
            .orders()
            .list(&spent, &owner, &Default::default())
            .await
            .map(drop),
    ];
    for result in errors {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
    }
    assert!(started.elapsed() < MARGIN, "at once");
    assert_eq!(calls(&server).await, 0, "nothing was sent");
    let metrics = downstream.metrics();
    let spent_calls: u64 = metrics.services.iter().map(|s| s.deadline_exceeded).sum();
    assert_eq!(spent_calls, 8);
}

#[tokio::test]
async fn a_concurrent_fan_out_spends_one_budget() {
    let server = slow_server(Duration::from_secs(3)).await;
    Mock::given(method("GET"))
        .and(path("/categories"))
        .respond_with(cacheable(
            serde_json::json!({ "items": [{ "id": "c-1", "name": "Shoes" }] }),
            30,
        ))
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let budget = Duration::from_millis(300);
    let ctx = ctx().with_timeout_from_now(budget);
    let (u, id) = (user("u-0001"), product_id(1));
    let started = Instant::now();
    let (product, cart, categories) = tokio::join!(
        downstream.catalog().product(&ctx, &id),
        downstream.carts().get(&ctx, &u),
        downstream.catalog().categories(&ctx),
    );
    let elapsed = started.elapsed();
    assert_eq!(product.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(cart.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(
        categories.unwrap()[0].name,
        "Shoes",
        "the fast part still answers"
    );
    assert!(elapsed < budget + MARGIN, "{elapsed:?}");

    // The same request's next call finds the budget spent and sends nothing.
    let before = calls(&server).await;
    let err = downstream.carts().get(&ctx, &u).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(calls(&server).await, before);
}

#[tokio::test]
async fn with_budget_left_a_slow_attempt_is_cut_at_the_service_timeout_and_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(cart_json("u-0001", 1))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 2)))
        .mount(&server)
        .await;
    let mut config = config(&server.uri());
    config.cart.timeout = Duration::from_millis(200);
    let downstream = Downstream::new(&config).unwrap();
    let ctx = ctx().with_timeout_from_now(Duration::from_secs(2));
    let started = Instant::now();
    let cart = downstream.carts().get(&ctx, &user("u-0001")).await.unwrap();
    assert_eq!(cart.version, 2, "the retry's answer");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls(&server).await, 2);
    let cart_metrics = downstream.metrics();
    let cart_metrics = cart_metrics.service(Service::Cart).unwrap();
    assert_eq!(
        (cart_metrics.retries, cart_metrics.errors["TIMEOUT"]),
        (1, 0)
    );
}

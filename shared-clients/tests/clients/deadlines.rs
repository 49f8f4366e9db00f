//! Deadlines: a request's budget bounds every downstream call made for it, concurrent ones
//! included; a call slower than the budget ends at the deadline, and once the budget is spent no
//! call starts.
//!
//! Time is the tokio clock (the clients' deadlines and timeouts are tokio timers), paused once
//! the requests a test sends over its real sockets have reached the service: a paused clock jumps
//! to the next timer whenever the runtime waits, so a request still on its way could be cut
//! before it is sent. From then on every timer fires when due, whatever the machine's load, and
//! the test waits for no budget in real time; elapsed times are asserted to the timer's
//! resolution instead of with a margin for scheduling.

use std::time::Duration;

use shared_clients::{
    Downstream, ErrorKind, IdempotencyKey, NewOrder, Owner, ProductQuery, Service,
};
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    cacheable, cart_json, config, ctx, downstream, product_id, product_json, user,
};
use crate::timing::eventually;

/// How late, on a paused clock, a client's timer may be seen to fire after the test read the
/// clock: the timer wheel counts whole milliseconds (up to 2 ms late: the clock's jump to a timer
/// keeps the fraction of a millisecond it was at), plus the real microseconds between the test's
/// reading of the clock and the client's starting its timer, before the pause.
const RESOLUTION: Duration = Duration::from_millis(5);

/// Longer than any of these tests takes in real time: a service that never answers in time.
const NEVER: Duration = Duration::from_secs(30);

/// A mock answering every `GET` after `delay` (real time: the mock runs on a thread of its own).
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

/// Waits, on the running clock, until `server` has received `n` requests, then pauses the clock.
async fn pause_once_arrived(server: &MockServer, n: usize) {
    eventually(&format!("{n} requests reach the service"), || async move {
        calls(server).await >= n
    })
    .await;
    tokio::time::pause();
}

/// Asserts that `elapsed` is `expected`, to the paused clock's resolution (a timer never fires
/// early).
fn assert_at(elapsed: Duration, expected: Duration, what: &str) {
    assert!(
        elapsed >= expected && elapsed <= expected + RESOLUTION,
        "{what}: after {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test]
async fn a_downstream_slower_than_the_budget_times_out_at_the_deadline_and_is_not_retried() {
    let server = slow_server(NEVER).await;
    // The service's own timeout (5 s) is longer than the budget.
    let downstream = downstream(&server);
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let ctx = ctx().with_timeout_from_now(budget);
    let u = user("u-0001");
    let (result, ()) = tokio::join!(
        downstream.carts().get(&ctx, &u),
        pause_once_arrived(&server, 1),
    );
    let err = result.unwrap_err();
    assert_eq!(
        (err.kind(), err.service()),
        (ErrorKind::Timeout, Service::Cart)
    );
    assert_at(started.elapsed(), budget, "gave up at the deadline");
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
    // Nothing is sent, so the clock may be paused at once: any wait would move it.
    tokio::time::pause();
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
    assert_eq!(started.elapsed(), Duration::ZERO, "at once: nothing waited");
    assert_eq!(calls(&server).await, 0, "nothing was sent");
    let metrics = downstream.metrics();
    let spent_calls: u64 = metrics.services.iter().map(|s| s.deadline_exceeded).sum();
    assert_eq!(spent_calls, 8);
}

#[tokio::test]
async fn a_concurrent_fan_out_spends_one_budget() {
    let server = slow_server(NEVER).await;
    Mock::given(method("GET"))
        .and(path("/categories"))
        .respond_with(cacheable(
            serde_json::json!({ "items": [{ "id": "c-1", "name": "Shoes" }] }),
            30,
        ))
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let budget = Duration::from_secs(2);
    let (u, id) = (user("u-0001"), product_id(1));
    let started = Instant::now();
    let ctx = ctx().with_timeout_from_now(budget);
    // The clock is paused once the fast answer is in and the slow requests are at the service.
    let categories_answered = tokio::sync::Notify::new();
    let (product, cart, categories, ()) = tokio::join!(
        downstream.catalog().product(&ctx, &id),
        downstream.carts().get(&ctx, &u),
        async {
            let categories = downstream.catalog().categories(&ctx).await;
            categories_answered.notify_one();
            categories
        },
        async {
            categories_answered.notified().await;
            pause_once_arrived(&server, 3).await;
        },
    );
    assert_eq!(product.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(cart.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(
        categories.unwrap()[0].name,
        "Shoes",
        "the fast part still answers"
    );
    assert_at(
        started.elapsed(),
        budget,
        "both slow calls end at the one deadline",
    );

    // The same request's next call finds the budget spent and sends nothing, at once.
    let before = calls(&server).await;
    let again = Instant::now();
    let err = downstream.carts().get(&ctx, &u).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(again.elapsed(), Duration::ZERO);
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
                .set_delay(NEVER),
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
    let service_timeout = Duration::from_secs(1);
    config.cart.timeout = service_timeout;
    let downstream = Downstream::new(&config).unwrap();
    let budget = Duration::from_secs(10);
    let started = Instant::now();
    let ctx = ctx().with_timeout_from_now(budget);
    let retries = || {
        downstream
            .metrics()
            .service(Service::Cart)
            .map_or(0, |metrics| metrics.retries)
    };
    let step = Duration::from_millis(1);
    let u = user("u-0001");
    let (cart, cut_at) = tokio::join!(downstream.carts().get(&ctx, &u), async {
        // The first attempt's timeout fires on the paused clock, without a real wait; the clock
        // runs again as soon as the retry is decided, for the retry's real request. Steps of
        // one millisecond keep the paused clock from jumping past that moment (to the retry's
        // own timeout).
        pause_once_arrived(&server, 1).await;
        while retries() == 0 {
            tokio::time::sleep(step).await;
        }
        let cut_at = started.elapsed();
        tokio::time::resume();
        cut_at
    });
    assert_eq!(cart.unwrap().version, 2, "the retry's answer");
    // Seen within one step (and its own rounding) of the cut.
    assert!(
        cut_at >= service_timeout && cut_at <= service_timeout + RESOLUTION + 2 * step,
        "the first attempt was cut at the service timeout: after {cut_at:?}"
    );
    assert!(started.elapsed() < budget, "{:?}", started.elapsed());
    assert_eq!(calls(&server).await, 2);
    let cart_metrics = downstream.metrics();
    let cart_metrics = cart_metrics.service(Service::Cart).unwrap();
    assert_eq!(
        (cart_metrics.retries, cart_metrics.errors["TIMEOUT"]),
        (1, 0)
    );
}

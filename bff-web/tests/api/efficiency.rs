//! N+1 freedom, proven by counting calls at the reference services.

use reference_services::ServiceKind;
use serde_json::json;

use crate::helpers::{spawn_app, token};

const CART_QUERY: &str = "{ viewer { cart { itemCount subtotal { amountMinor }
    lines { quantity lineTotal { amountMinor } product { id name price { formatted } category { name } } } } } }";

#[tokio::test]
async fn a_cart_of_50_lines_costs_one_cart_call_and_one_product_batch() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let products = app.product_ids(50).await;
    app.fill_cart(&user, &products, 1).await;
    app.reset_stats();

    let answer = app.query(CART_QUERY, json!({}), Some(&token(&user))).await;
    answer.assert_ok();
    assert_eq!(
        answer.data("/viewer/cart/lines").as_array().unwrap().len(),
        50
    );

    let cart = app.stats(ServiceKind::Cart);
    assert_eq!(cart.total, 1, "{cart:?}");
    let product = app.stats(ServiceKind::Product);
    assert_eq!(
        app.calls(ServiceKind::Product, "GET /products"),
        1,
        "{product:?}"
    );
    assert_eq!(
        app.calls(ServiceKind::Product, "GET /products/{product_id}"),
        0,
        "{product:?}"
    );
    assert!(
        app.calls(ServiceKind::Product, "GET /categories") <= 1,
        "{product:?}"
    );
}

#[tokio::test]
async fn products_are_fetched_in_batches_of_at_most_100() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let products = app.product_ids(150).await;
    app.fill_cart(&user, &products, 1).await;
    app.reset_stats();

    let answer = app
        .query(
            "{ viewer { cart { lines { product { id } } } } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    answer.assert_ok();
    assert_eq!(
        answer.data("/viewer/cart/lines").as_array().unwrap().len(),
        150
    );
    assert_eq!(app.stats(ServiceKind::Cart).total, 1);
    assert_eq!(app.calls(ServiceKind::Product, "GET /products"), 2);
    assert_eq!(app.stats(ServiceKind::Product).total, 2);
}

#[tokio::test]
async fn an_order_page_costs_one_order_call_and_one_product_batch() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_orders().to_owned();
    app.reset_stats();
    let answer = app
        .query(
            "{ viewer { orders(first: 20) { nodes { id lines { product { name } } } } } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    answer.assert_ok();
    assert!(
        answer
            .data("/viewer/orders/nodes")
            .as_array()
            .unwrap()
            .len()
            >= 5
    );
    assert_eq!(app.stats(ServiceKind::Order).total, 1);
    assert_eq!(app.stats(ServiceKind::Product).total, 1);
}

#[tokio::test]
async fn a_second_identical_request_is_served_from_the_catalog_cache() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_cart().to_owned();
    let token = token(&user);
    app.query(CART_QUERY, json!({}), Some(&token))
        .await
        .assert_ok();
    app.reset_stats();
    app.query(CART_QUERY, json!({}), Some(&token))
        .await
        .assert_ok();
    assert_eq!(app.stats(ServiceKind::Product).total, 0);
}

#[tokio::test]
async fn independent_parts_of_a_query_resolve_concurrently() {
    use std::time::{Duration, Instant};

    let app = spawn_app().await;
    let user = app.services.world.user_with_orders().to_owned();
    let latency = Duration::from_millis(300);
    for kind in ServiceKind::ALL {
        let admin = app.services.world.admin(kind);
        admin.set_faults(reference_services::Faults {
            latency,
            ..admin.faults()
        });
    }
    let started = Instant::now();
    let answer = app
        .query(
            "{ viewer { cart { itemCount } orders(first: 1) { nodes { id } } } categories { id } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    answer.assert_ok();
    // Cart, orders and categories each take 300 ms; one after another would take 900 ms.
    assert!(
        started.elapsed() < latency * 5 / 2,
        "took {:?}",
        started.elapsed()
    );
}

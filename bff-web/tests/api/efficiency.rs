//! N+1 freedom, proven by counting calls at the reference services.

use reference_services::ServiceKind;
use serde_json::json;

use axum::response::IntoResponse;

use crate::helpers::{spawn_app, spawn_app_with, token};

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
async fn a_cart_with_some_products_cached_fetches_the_others_in_one_batch() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let products = app.product_ids(10).await;
    app.fill_cart(&user, &products, 2).await;
    // Half the cart's products are asked for (and cached) first.
    for id in products.iter().step_by(2) {
        app.query(
            "query ($id: ID!) { product(id: $id) { name } }",
            json!({ "id": id }),
            None,
        )
        .await
        .assert_ok();
    }
    app.reset_stats();

    let answer = app.query(CART_QUERY, json!({}), Some(&token(&user))).await;
    answer.assert_ok();
    let lines = answer
        .data("/viewer/cart/lines")
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = lines
        .iter()
        .map(|line| {
            line["product"]["name"]
                .as_str()
                .expect("every product resolved")
        })
        .collect();
    assert_eq!(names.len(), 10);
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
    assert_eq!(app.stats(ServiceKind::Cart).total, 1);
    // The subtotal is the sum of the line totals: each line was priced from its own product.
    let totals: i64 = lines
        .iter()
        .map(|line| line["lineTotal"]["amountMinor"].as_i64().unwrap())
        .sum();
    assert_eq!(
        answer.data("/viewer/cart/subtotal/amountMinor").as_i64(),
        Some(totals)
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
    // Every downstream call goes through a rendezvous: no call is answered until all three
    // (cart, orders, categories) have arrived. Issued one after another, the first would wait
    // for the others forever and the query would fail on its deadline.
    let services = reference_services::spawn_all(reference_services::Config::default())
        .await
        .expect("reference services start");
    let rendezvous = Rendezvous::start(&services, 3).await;
    let app = spawn_app_with(|settings| {
        let downstream = &mut settings.downstream;
        for service in [
            &mut downstream.product,
            &mut downstream.cart,
            &mut downstream.order,
        ] {
            service.url = rendezvous.url.clone();
            // One attempt per call: a retry would arrive at the rendezvous as another party.
            service.retry.max_attempts = 1;
            service.timeout = std::time::Duration::from_secs(5);
        }
        downstream.deadline = std::time::Duration::from_secs(5);
    })
    .await;
    let user = services.world.user_with_orders().to_owned();

    let answer = app
        .query(
            "{ viewer { cart { itemCount } orders(first: 1) { nodes { id } } } categories { id } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;

    answer.assert_ok();
    assert_eq!(
        rendezvous.passed(),
        3,
        "the three calls met at the rendezvous"
    );
}

/// A proxy in front of the reference services that holds every request until `parties` requests
/// are waiting, then forwards them all.
struct Rendezvous {
    /// The proxy's base URL, used for all three services.
    url: String,
    /// How many requests got through.
    passed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Rendezvous {
    async fn start(services: &reference_services::Spawned, parties: usize) -> Self {
        use std::sync::{Arc, atomic::AtomicUsize};

        let barrier = Arc::new(tokio::sync::Barrier::new(parties));
        let passed = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new((
            services.product_url.clone(),
            services.cart_url.clone(),
            services.order_url.clone(),
        ));
        let client = reqwest::Client::new();
        let counter = Arc::clone(&passed);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (barrier, targets, client, counter) = (
                Arc::clone(&barrier),
                Arc::clone(&targets),
                client.clone(),
                Arc::clone(&counter),
            );
            async move {
                let waited =
                    tokio::time::timeout(std::time::Duration::from_secs(10), barrier.wait()).await;
                if waited.is_err() {
                    return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                let base = if path.starts_with("/carts") {
                    &targets.1
                } else if path.starts_with("/orders") {
                    &targets.2
                } else {
                    &targets.0
                };
                let mut forward = client.get(format!("{base}{path}"));
                for (name, value) in request.headers() {
                    if name.as_str().starts_with("x-") {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.send().await.expect("reference services answer");
                let status = answer.status();
                let headers = answer.headers().clone();
                let body = answer.bytes().await.expect("body");
                let mut response = (status, body).into_response();
                for name in ["content-type", "cache-control", "etag"] {
                    if let Some(value) = headers.get(name) {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, passed }
    }

    fn passed(&self) -> usize {
        self.passed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

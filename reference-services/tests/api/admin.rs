//! The admin API: counters, request log, reset, and every fault knob.

use std::time::{Duration, Instant};

use reference_services::{FaultMode, ServiceKind};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PRODUCT, client, spawn_app};

#[tokio::test]
async fn stats_count_requests_per_route_template_but_not_admin_or_health() {
    let app = spawn_app().await;
    app.product("p-00001").await;
    app.product("p-00002").await;
    app.product("p-99999").await;
    app.products("limit=1").await;
    app.request(Method::OPTIONS, ServiceKind::Product, "/products")
        .send()
        .await;
    app.get(ServiceKind::Product, "/nowhere").send().await;
    app.get(ServiceKind::Product, "/health").send().await;
    app.get(ServiceKind::Product, "/__admin/requests")
        .send()
        .await;
    let stats = app.stats(ServiceKind::Product).await;
    assert_eq!(
        stats,
        json!({
            "service": "product",
            "total": 6,
            "requests": {
                "GET /products/{product_id}": 3,
                "GET /products": 1,
                "OPTIONS /products": 1,
                "GET <unmatched>": 1,
            }
        })
    );
    // Every service counts its own requests.
    let cart = app.stats(ServiceKind::Cart).await;
    assert_eq!(
        cart,
        json!({ "service": "cart", "total": 0, "requests": {} })
    );
}

#[tokio::test]
async fn reset_zeroes_the_counters_and_the_request_log() {
    let app = spawn_app().await;
    app.cart("u-0001").await;
    assert_eq!(app.stats(ServiceKind::Cart).await["total"], 1);
    let reply = app
        .request(Method::POST, ServiceKind::Cart, "/__admin/reset")
        .send()
        .await;
    reply.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(app.stats(ServiceKind::Cart).await["total"], 0);
    let log = app.get(ServiceKind::Cart, "/__admin/requests").send().await;
    assert_eq!(log.body, json!([]));
}

#[tokio::test]
async fn the_request_log_keeps_the_identity_tracing_and_conditional_headers_sent() {
    let app = spawn_app().await;
    app.get(ServiceKind::Order, "/orders?user_id=u-0001&limit=2")
        .header("x-user-id", "u-0001")
        .header("x-request-id", "req-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("user-agent", "not-logged")
        .send()
        .await;
    app.request(Method::POST, ServiceKind::Order, "/orders")
        .header("x-partner-id", "partner-acme")
        .header("idempotency-key", "abc")
        .header("if-match", "\"1\"")
        .header("if-none-match", "*")
        .json(&json!({}))
        .send()
        .await;
    let log = app
        .get(ServiceKind::Order, "/__admin/requests")
        .send()
        .await;
    assert_eq!(
        log.body,
        json!([
            {
                "method": "GET",
                "route": "/orders",
                "path": "/orders",
                "query": "user_id=u-0001&limit=2",
                "headers": {
                    "x-user-id": "u-0001",
                    "x-request-id": "req-1",
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                },
            },
            {
                "method": "POST",
                "route": "/orders",
                "path": "/orders",
                "query": "",
                "headers": {
                    "x-partner-id": "partner-acme",
                    "idempotency-key": "abc",
                    "if-match": "\"1\"",
                    "if-none-match": "*",
                },
            },
        ])
    );
}

#[tokio::test]
async fn the_request_log_keeps_the_last_1000_requests() {
    let app = spawn_app().await;
    for n in 1..=1_005 {
        app.get(ServiceKind::Product, &format!("/products/p-{n:05}"))
            .send()
            .await;
    }
    let log = app
        .get(ServiceKind::Product, "/__admin/requests")
        .send()
        .await;
    let entries = log.body.as_array().expect("a list");
    assert_eq!(entries.len(), 1_000);
    assert_eq!(entries[0]["path"], "/products/p-00006");
    assert_eq!(entries[999]["path"], "/products/p-01005");
    assert_eq!(app.stats(ServiceKind::Product).await["total"], 1_005);
}

#[tokio::test]
async fn faults_can_be_read_and_changed_field_by_field() {
    let app = spawn_app().await;
    let reply = app.get(ServiceKind::Cart, "/__admin/faults").send().await;
    assert_eq!(
        reply.body,
        json!({ "mode": "normal", "latency": "0s", "jitter": "0s", "error_rate": 0.0, "slow_latency": "2s" })
    );
    let reply = app
        .set_faults(
            ServiceKind::Cart,
            json!({ "latency": "10ms", "jitter": "2ms" }),
        )
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({ "mode": "normal", "latency": "10ms", "jitter": "2ms", "error_rate": 0.0, "slow_latency": "2s" })
    );
    let reply = app.get(ServiceKind::Cart, "/__admin/faults").send().await;
    assert_eq!(reply.body["latency"], "10ms");
}

#[tokio::test]
async fn invalid_fault_changes_are_400_and_change_nothing() {
    let app = spawn_app().await;
    for faults in [
        json!({ "mode": "sideways" }),
        json!({ "latency": "soon" }),
        json!({ "latency": 10 }),
        json!({ "error_rate": 1.5 }),
        json!({ "error_rate": -0.1 }),
        json!({ "latancy": "10ms" }),
        json!([]),
    ] {
        app.set_faults(ServiceKind::Order, faults)
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    let reply = app
        .request(Method::PUT, ServiceKind::Order, "/__admin/faults")
        .body("text/plain", "mode=down")
        .send()
        .await;
    reply.assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let faults = app.get(ServiceKind::Order, "/__admin/faults").send().await;
    assert_eq!(faults.body["mode"], "normal");
    assert_eq!(faults.body["latency"], "0s");
}

#[tokio::test]
async fn failing_mode_answers_503_problems_after_counting_and_admin_still_works() {
    let app = spawn_app().await;
    app.set_faults(ServiceKind::Product, json!({ "mode": "failing" }))
        .await
        .assert_status(StatusCode::OK);
    for path in ["/products/p-00001", "/categories", "/health", "/nowhere"] {
        let reply = app.get(ServiceKind::Product, path).send().await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let stats = app.stats(ServiceKind::Product).await;
    assert_eq!(
        stats["total"], 3,
        "counted before the fault, /health excluded"
    );
    // The other services are fine.
    app.cart("u-0001").await.assert_status(StatusCode::OK);
    app.set_faults(ServiceKind::Product, json!({ "mode": "normal" }))
        .await;
    app.product("p-00001").await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn slow_mode_adds_at_least_the_slow_latency() {
    let app = spawn_app().await;
    let reply = app
        .set_faults(
            ServiceKind::Order,
            json!({ "mode": "slow", "slow_latency": "300ms" }),
        )
        .await;
    assert_eq!(reply.body["slow_latency"], "300ms");
    let started = Instant::now();
    app.orders(&[("x-user-id", "u-0001")], "user_id=u-0001")
        .await
        .assert_status(StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // The admin API is never slowed down; back to normal, so is nothing else.
    app.set_faults(ServiceKind::Order, json!({ "mode": "normal" }))
        .await;
    assert_eq!(app.stats(ServiceKind::Order).await["total"], 1);
}

#[tokio::test]
async fn base_latency_delays_every_request_of_that_service() {
    let app = spawn_app().await;
    app.set_faults(
        ServiceKind::Cart,
        json!({ "latency": "200ms", "jitter": "20ms" }),
    )
    .await
    .assert_status(StatusCode::OK);
    let started = Instant::now();
    app.cart("u-0001").await.assert_status(StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_error_rate_of_1_fails_every_request_and_0_none() {
    let app = spawn_app().await;
    app.set_faults(ServiceKind::Product, json!({ "error_rate": 1.0 }))
        .await;
    for _ in 0..5 {
        app.product("p-00001")
            .await
            .assert_status(StatusCode::SERVICE_UNAVAILABLE);
    }
    // /health is spared the error rate, so readiness stays stable.
    app.get(ServiceKind::Product, "/health")
        .send()
        .await
        .assert_status(StatusCode::OK);
    app.set_faults(ServiceKind::Product, json!({ "error_rate": 0 }))
        .await;
    for _ in 0..5 {
        app.product("p-00001").await.assert_status(StatusCode::OK);
    }
    assert_eq!(app.stats(ServiceKind::Product).await["total"], 10);
}

#[tokio::test]
async fn down_mode_refuses_new_connections_while_admin_still_answers() {
    let app = spawn_app().await;
    app.set_faults(ServiceKind::Cart, json!({ "mode": "down" }))
        .await
        .assert_status(StatusCode::OK);
    // A client without pooled connections opens a new connection per request.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let cart_url = app.spawned.cart_url.clone();
    for path in ["/carts/u-0001", "/health", "/nowhere"] {
        let result = fresh
            .get(format!("{cart_url}{path}"))
            .header("x-user-id", "u-0001")
            .send()
            .await;
        assert!(result.is_err(), "{path} must not be answered: {result:?}");
    }
    let stats = fresh
        .get(format!("{cart_url}/__admin/stats"))
        .send()
        .await
        .expect("admin answers while down");
    assert_eq!(stats.status(), StatusCode::OK);
    let stats: serde_json::Value = stats.json().await.expect("json");
    assert_eq!(
        stats["total"], 0,
        "refused connections never reached the service"
    );
    // Other services are not affected.
    app.product("p-00001").await.assert_status(StatusCode::OK);
    // Back to normal, new connections are served again.
    let reply = fresh
        .put(format!("{cart_url}/__admin/faults"))
        .json(&json!({ "mode": "normal" }))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let reply = fresh
        .get(format!("{cart_url}/carts/u-0001"))
        .header("x-user-id", "u-0001")
        .send()
        .await
        .expect("served again");
    assert_eq!(reply.status(), StatusCode::OK);
}

#[tokio::test]
async fn down_mode_closes_open_keep_alive_connections_with_a_503() {
    let app = spawn_app().await;
    let keep_alive = client();
    let url = format!("{}/products/p-00001", app.spawned.product_url);
    let first = keep_alive.get(&url).send().await.expect("served");
    assert_eq!(first.status(), StatusCode::OK);
    first
        .bytes()
        .await
        .expect("body read, connection back in the pool");
    app.world()
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Down);
    let on_open_connection = keep_alive
        .get(&url)
        .send()
        .await
        .expect("answered on the open connection");
    assert_eq!(on_open_connection.status(), StatusCode::SERVICE_UNAVAILABLE);
    let connection = on_open_connection
        .headers()
        .get("connection")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(connection, "close");
    on_open_connection.bytes().await.expect("body");
    // That connection is gone; a new one is refused.
    assert!(keep_alive.get(&url).send().await.is_err());
    app.world()
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Normal);
    let reply = app
        .get(ServiceKind::Product, "/products/p-00001")
        .schema(PRODUCT)
        .send()
        .await;
    reply.assert_status(StatusCode::OK);
}

//! Conventions shared by all three services: health, 404, 405 + Allow, HEAD, 415, X-Request-Id.

use reference_services::ServiceKind;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{CART, HEALTH, spawn_app};

#[tokio::test]
async fn every_service_answers_health() {
    let app = spawn_app().await;
    for kind in ServiceKind::ALL {
        let reply = app.get(kind, "/health").schema(HEALTH).send().await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body, json!({ "status": "ok" }));
    }
}

#[tokio::test]
async fn each_service_answers_only_its_own_paths() {
    let app = spawn_app().await;
    let foreign = [
        (ServiceKind::Product, "/carts/u-0001"),
        (ServiceKind::Product, "/orders"),
        (ServiceKind::Cart, "/products/p-00001"),
        (ServiceKind::Cart, "/orders/o-0000001"),
        (ServiceKind::Order, "/categories"),
        (ServiceKind::Order, "/carts/u-0001/items"),
    ];
    for (kind, path) in foreign {
        let reply = app
            .get(kind, path)
            .header("x-user-id", "u-0001")
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{kind} {path}");
    }
    for kind in ServiceKind::ALL {
        app.get(kind, "/nothing/here")
            .send()
            .await
            .assert_status(StatusCode::NOT_FOUND);
        app.get(kind, "/")
            .send()
            .await
            .assert_status(StatusCode::NOT_FOUND);
        app.request(Method::DELETE, kind, "/nothing")
            .send()
            .await
            .assert_status(StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn unlisted_methods_are_405_with_an_allow_header() {
    let app = spawn_app().await;
    let cases = [
        (ServiceKind::Product, "/products", "GET,HEAD"),
        (ServiceKind::Product, "/products/p-00001", "GET,HEAD"),
        (ServiceKind::Product, "/categories", "GET,HEAD"),
        (ServiceKind::Cart, "/carts/u-0001", "GET,HEAD,DELETE"),
        (ServiceKind::Cart, "/carts/u-0001/items", "POST"),
        (
            ServiceKind::Cart,
            "/carts/u-0001/items/p-00001",
            "PUT,DELETE",
        ),
        (ServiceKind::Order, "/orders", "GET,HEAD,POST"),
        (ServiceKind::Order, "/orders/o-0000001", "GET,HEAD"),
        (ServiceKind::Order, "/health", "GET,HEAD"),
    ];
    for (kind, path, allowed) in cases {
        for method in ["OPTIONS", "PATCH", "TRACE"] {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let reply = app
                .request(method.clone(), kind, path)
                .header("x-user-id", "u-0001")
                .send()
                .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let mut allow: Vec<&str> = reply.header("allow").split(',').map(str::trim).collect();
            let mut expected: Vec<&str> = allowed.split(',').collect();
            allow.sort_unstable();
            expected.sort_unstable();
            assert_eq!(allow, expected, "Allow of {path}");
        }
    }
    let reply = app
        .request(Method::DELETE, ServiceKind::Product, "/products/p-00001")
        .send()
        .await;
    reply.assert_status(StatusCode::METHOD_NOT_ALLOWED);
    let reply = app
        .request(Method::PUT, ServiceKind::Order, "/orders")
        .send()
        .await;
    reply.assert_status(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn head_is_answered_wherever_get_is_without_a_body() {
    let app = spawn_app().await;
    let cases = [
        (ServiceKind::Product, "/products/p-00001"),
        (ServiceKind::Product, "/products?limit=3"),
        (ServiceKind::Product, "/categories"),
        (ServiceKind::Cart, "/carts/u-0001"),
        (ServiceKind::Order, "/orders?user_id=u-0001"),
        (ServiceKind::Product, "/health"),
    ];
    for (kind, path) in cases {
        let get = app
            .get(kind, path)
            .header("x-user-id", "u-0001")
            .send()
            .await;
        let head = app
            .request(Method::HEAD, kind, path)
            .header("x-user-id", "u-0001")
            .send()
            .await;
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        assert!(head.body.is_null(), "HEAD {path} has no body");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert_eq!(head.header("cache-control"), get.header("cache-control"));
        assert_eq!(head.header("etag"), get.header("etag"));
    }
}

#[tokio::test]
async fn request_bodies_that_are_not_json_are_415() {
    let app = spawn_app().await;
    let cases = [
        (Method::POST, ServiceKind::Cart, "/carts/u-0001/items"),
        (
            Method::PUT,
            ServiceKind::Cart,
            "/carts/u-0001/items/p-00001",
        ),
        (Method::POST, ServiceKind::Order, "/orders"),
    ];
    for (method, kind, path) in cases {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
        ] {
            let reply = app
                .request(method.clone(), kind, path)
                .header("x-user-id", "u-0001")
                .header("idempotency-key", "k")
                .body(content_type, "{\"quantity\":1}")
                .send()
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {path} {content_type}"
            );
        }
        let reply = app
            .request(method.clone(), kind, path)
            .header("x-user-id", "u-0001")
            .header("idempotency-key", "k")
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path} without a body"
        );
    }
    // A charset parameter is still JSON.
    let reply = app
        .request(Method::POST, ServiceKind::Cart, "/carts/u-0001/items")
        .header("x-user-id", "u-0001")
        .body(
            "application/json; charset=utf-8",
            "{\"product_id\":\"p-00001\",\"quantity\":1}",
        )
        .schema(CART)
        .send()
        .await;
    reply.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn x_request_id_is_echoed_on_every_answer() {
    let app = spawn_app().await;
    let cases = [
        (ServiceKind::Product, "/products/p-00001"),
        (ServiceKind::Product, "/products/p-99999"),
        (ServiceKind::Cart, "/carts/u-0001"),
        (ServiceKind::Order, "/nowhere"),
        (ServiceKind::Order, "/health"),
    ];
    for (kind, path) in cases {
        let reply = app
            .get(kind, path)
            .header("x-request-id", "req-123")
            .header("x-user-id", "u-0001")
            .send()
            .await;
        assert_eq!(reply.header("x-request-id"), "req-123", "{path}");
    }
    let reply = app.get(ServiceKind::Product, "/categories").send().await;
    assert!(
        !reply.header("x-request-id").is_empty(),
        "one is set when none was sent"
    );
}

#[tokio::test]
async fn problems_carry_type_title_status_and_detail() {
    let app = spawn_app().await;
    let reply = app.product("p-99999").await;
    reply.assert_status(StatusCode::NOT_FOUND);
    assert!(reply.body["type"].is_string());
    assert_eq!(reply.body["title"], "Not Found");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("p-99999"))
    );
}

#[test]
fn the_contract_schemas_reject_bodies_that_do_not_match() {
    use crate::helpers::{ORDER_LIST, PROBLEM, PRODUCT, schema_accepts};
    assert!(!schema_accepts(PRODUCT, &json!({})));
    assert!(!schema_accepts(
        PROBLEM,
        &json!({ "type": "x", "title": "y" })
    ));
    assert!(!schema_accepts(
        ORDER_LIST,
        &json!({ "items": [{ "id": "o-1" }] })
    ));
    assert!(!schema_accepts(
        CART,
        &json!({ "user_id": "u-1", "items": [], "version": 0, "updated_at": "yesterday" })
    ));
    assert!(schema_accepts(
        CART,
        &json!({ "user_id": "u-1", "items": [], "version": 0, "updated_at": null })
    ));
    assert!(!schema_accepts(
        CART,
        &json!({ "user_id": "u 1", "items": [], "version": 0 })
    ));
}

#[tokio::test]
async fn a_router_can_be_called_without_a_socket() {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    let world = reference_services::World::seeded(&reference_services::Config {
        products: 50,
        users: 10,
        ..Default::default()
    });
    let router = reference_services::router(ServiceKind::Product, world);
    let request = Request::get("/products/p-00001")
        .body(Body::empty())
        .expect("a request");
    let response = router.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("public, max-age=30")
    );
}

#[tokio::test]
async fn spawned_services_stop_on_shutdown() {
    let app = spawn_app().await;
    let url = format!("{}/health", app.spawned.product_url);
    app.get(ServiceKind::Product, "/health")
        .send()
        .await
        .assert_status(StatusCode::OK);
    app.spawned.shutdown().await;
    let fresh = crate::helpers::client();
    assert!(
        fresh.get(url).send().await.is_err(),
        "nothing listens any more"
    );
}

//! Orders: creation (priced, idempotent), listing and reading, isolated per partner.

use reference_services::ServiceKind;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    ACME_KEY, CATALOG_ONLY_KEY, GLOBEX_KEY, TIGHT_BURST, TIGHT_KEY, VERSIONS, assert_problem,
    header, order_body, spawn_app,
};

#[tokio::test]
async fn an_order_is_priced_from_the_catalog_and_created_for_the_partner() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let product = world.regular_product().to_owned();
    let price = world.product(&product).expect("product").price.clone();
    for version in VERSIONS {
        let key = format!("create-{version}");
        let response = app
            .create_order(
                version,
                ACME_KEY,
                Some(&key),
                &order_body("acme-cust-0042", &[(&product, 2)]),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            header(response.headers(), "cache-control"),
            "private, no-store",
            "a partner's order is never stored by a cache"
        );
        let location = header(response.headers(), "location").to_owned();
        let body: Value = response.json().await.expect("json");
        app.assert_documented(
            version,
            "post",
            &format!("/{version}/orders"),
            StatusCode::CREATED,
            &body,
        )
        .await;
        let id = body["id"].as_str().expect("id").to_owned();
        assert_eq!(location, format!("/{version}/orders/{id}"));
        assert_eq!(body["customer_reference"], "acme-cust-0042");
        assert_eq!(body["lines"][0]["quantity"], 2);
        match version {
            "v1" => {
                let total = price.amount_minor * 2;
                assert_eq!(body["total"], format!("{}.{:02}", total / 100, total % 100));
                assert_eq!(body["currency"], price.currency.as_str());
            }
            _ => {
                assert_eq!(body["total"]["amount_minor"], price.amount_minor * 2);
                assert_eq!(
                    body["lines"][0]["unit_price"]["amount_minor"],
                    price.amount_minor
                );
            }
        }

        // Downstream, it is a partner order of partner-acme, created with the key.
        let stored = world
            .partner_orders("partner-acme")
            .into_iter()
            .find(|order| order.id == id)
            .expect("stored as an order of partner-acme");
        assert_eq!(stored.lines[0].unit_price.amount_minor, price.amount_minor);
        let log = app.order_requests().await;
        let creation = log
            .as_array()
            .expect("log")
            .iter()
            .rev()
            .find(|r| r["method"] == "POST")
            .expect("a POST /orders")
            .clone();
        assert_eq!(creation["headers"]["idempotency-key"], key.as_str());
        assert_eq!(creation["headers"]["x-partner-id"], "partner-acme");
        assert!(
            creation["headers"]["x-request-id"].is_string(),
            "{creation}"
        );

        // And it can be read back.
        let read = app.get(&location).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(header(read.headers(), "cache-control"), "private, no-store");
        let read: Value = read.json().await.expect("json");
        app.assert_documented(
            version,
            "get",
            &format!("/{version}/orders/{{order_id}}"),
            StatusCode::OK,
            &read,
        )
        .await;
        assert_eq!(read["id"], id.as_str());
    }
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_same_order_and_creates_no_second() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let body = order_body("acme-cust-7", &[(world.regular_product(), 1)]);
    for version in VERSIONS {
        let before = world.partner_orders("partner-acme").len();
        let key = format!("retry-me-{version}");
        let path = format!("/{version}/orders");

        let first = app.create_order(version, ACME_KEY, Some(&key), &body).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let first: Value = first.json().await.expect("json");
        let again = app.create_order(version, ACME_KEY, Some(&key), &body).await;
        assert_eq!(again.status(), StatusCode::OK);
        let again: Value = again.json().await.expect("json");
        app.assert_documented(version, "post", &path, StatusCode::OK, &again)
            .await;
        assert_eq!(first, again);
        assert_eq!(world.partner_orders("partner-acme").len(), before + 1);
    }
    // Counted at the order service: at most one creation call per attempt, one order per key.
    let stats = app.order_stats().await;
    let posts = stats["requests"]["POST /orders"].as_u64().unwrap_or(0);
    assert!(
        (2..=4).contains(&posts),
        "the order service saw {posts} creations: {stats}"
    );
}

#[tokio::test]
async fn order_creation_without_an_idempotency_key_is_a_400_problem() {
    let app = spawn_app().await;
    let body = order_body("acme-cust-1", &[(app.services.world.regular_product(), 1)]);
    for version in VERSIONS {
        let response = app.create_order(version, ACME_KEY, None, &body).await;
        let (problem, _) = assert_problem(
            response,
            StatusCode::BAD_REQUEST,
            version,
            "idempotency-key-required",
        )
        .await;
        app.assert_documented(
            version,
            "post",
            &format!("/{version}/orders"),
            StatusCode::BAD_REQUEST,
            &problem,
        )
        .await;
    }
    let too_long = "k".repeat(256);
    let response = app
        .create_order("v2", ACME_KEY, Some(&too_long), &body)
        .await;
    assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "v2",
        "idempotency-key-required",
    )
    .await;
    let stats = app.order_stats().await;
    assert_eq!(stats["requests"]["POST /orders"], Value::Null, "{stats}");
}

#[tokio::test]
async fn unknown_and_out_of_stock_products_are_a_422_naming_them() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let out = world.out_of_stock_product().to_owned();
    for version in VERSIONS {
        let body = order_body(
            "acme-cust-1",
            &[
                (world.regular_product(), 1),
                ("p-does-not-exist", 1),
                (&out, 1),
            ],
        );
        let response = app
            .create_order(version, ACME_KEY, Some(&format!("bad-{version}")), &body)
            .await;
        let (problem, _) = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            version,
            "unorderable-products",
        )
        .await;
        app.assert_documented(
            version,
            "post",
            &format!("/{version}/orders"),
            StatusCode::UNPROCESSABLE_ENTITY,
            &problem,
        )
        .await;
        let mut named: Vec<(String, String)> = problem["products"]
            .as_array()
            .expect("products")
            .iter()
            .map(|p| {
                (
                    p["product_id"].as_str().unwrap_or_default().to_owned(),
                    p["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        named.sort();
        let mut expected = vec![
            ("p-does-not-exist".to_owned(), "unknown".to_owned()),
            (out.clone(), "out_of_stock".to_owned()),
        ];
        expected.sort();
        assert_eq!(named, expected);
    }
    let stats = app.order_stats().await;
    assert_eq!(stats["requests"]["POST /orders"], Value::Null, "{stats}");
}

#[tokio::test]
async fn lines_in_two_currencies_are_a_422() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let body = order_body(
        "acme-cust-1",
        &[
            (world.regular_product(), 1),
            (world.foreign_currency_product(), 1),
        ],
    );
    let response = app.create_order("v2", ACME_KEY, Some("mixed"), &body).await;
    let (problem, _) = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "v2",
        "mixed-currency",
    )
    .await;
    app.assert_documented(
        "v2",
        "post",
        "/v2/orders",
        StatusCode::UNPROCESSABLE_ENTITY,
        &problem,
    )
    .await;
    let stats = app.order_stats().await;
    assert_eq!(stats["requests"]["POST /orders"], Value::Null, "{stats}");
}

#[tokio::test]
async fn a_partner_lists_only_its_own_orders_by_status_page_by_page() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let own = world.partner_orders("partner-acme");
    for version in VERSIONS {
        let path = format!("/{version}/orders");
        let response = app.get(&format!("{path}?limit=3")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let link = header(response.headers(), "link").to_owned();
        let body: Value = response.json().await.expect("json");
        app.assert_documented(version, "get", &path, StatusCode::OK, &body)
            .await;
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 3);
        for item in items {
            assert!(
                own.iter()
                    .any(|order| order.id == item["id"].as_str().unwrap_or_default())
            );
        }
        assert!(link.contains("rel=\"next\""));

        let status = format!("{:?}", own[0].status).to_lowercase();
        let filtered: Value = app
            .get(&format!("{path}?status={status}&limit=100"))
            .await
            .json()
            .await
            .expect("json");
        let filtered = filtered["items"].as_array().expect("items");
        let expected = own
            .iter()
            .filter(|order| format!("{:?}", order.status).to_lowercase() == status)
            .count();
        assert_eq!(filtered.len(), expected);
        assert!(
            filtered
                .iter()
                .all(|item| item["status"] == status.as_str())
        );
    }
}

#[tokio::test]
async fn another_partners_order_is_a_404() {
    let app = spawn_app().await;
    let acme_order = app.services.world.partner_orders("partner-acme")[0]
        .id
        .clone();
    for version in VERSIONS {
        let path = format!("/{version}/orders/{acme_order}");
        let own = app.get_as(&path, Some(ACME_KEY)).await;
        assert_eq!(own.status(), StatusCode::OK);
        let response = app.get_as(&path, Some(GLOBEX_KEY)).await;
        let (problem, _) =
            assert_problem(response, StatusCode::NOT_FOUND, version, "not-found").await;
        app.assert_documented(
            version,
            "get",
            &format!("/{version}/orders/{{order_id}}"),
            StatusCode::NOT_FOUND,
            &problem,
        )
        .await;
        let globex: Value = app
            .get_as(&format!("/{version}/orders?limit=100"), Some(GLOBEX_KEY))
            .await
            .json()
            .await
            .expect("json");
        assert!(
            globex["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|item| item["id"] != acme_order.as_str())
        );
    }
}

#[tokio::test]
async fn the_request_id_and_trace_context_are_propagated_downstream() {
    let app = spawn_app().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .request(reqwest::Method::GET, "/v2/orders?limit=1", Some(ACME_KEY))
        .header("x-request-id", "partner-req-42")
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-request-id"), "partner-req-42");
    let log = app.order_requests().await;
    let listed = log
        .as_array()
        .expect("log")
        .iter()
        .find(|r| r["method"] == "GET")
        .expect("a GET /orders")
        .clone();
    assert_eq!(listed["headers"]["x-request-id"], "partner-req-42");
    assert_eq!(listed["headers"]["traceparent"], traceparent);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_a_different_order_is_a_422() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let first = order_body("acme-cust-7", &[(world.regular_product(), 1)]);
    let other = order_body("acme-cust-7", &[(world.regular_product(), 2)]);
    for version in VERSIONS {
        let key = format!("reused-{version}");
        let response = app
            .create_order(version, ACME_KEY, Some(&key), &first)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let response = app
            .create_order(version, ACME_KEY, Some(&key), &other)
            .await;
        let (problem, _) = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            version,
            "idempotency-key-reused",
        )
        .await;
        app.assert_documented(
            version,
            "post",
            &format!("/{version}/orders"),
            StatusCode::UNPROCESSABLE_ENTITY,
            &problem,
        )
        .await;
    }
    let stats = app.order_stats().await;
    assert_eq!(stats["requests"]["POST /orders"], 2, "{stats}");
}

#[tokio::test]
async fn an_invalid_shipping_address_is_a_400_invalid_body_and_creates_nothing() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let mut body = order_body("acme-cust-7", &[(world.regular_product(), 1)]);
    body["shipping_address"] = serde_json::json!({ "city": "Berlin", "country": "de" });
    let response = app
        .create_order("v2", ACME_KEY, Some("bad-country"), &body)
        .await;
    let (problem, _) =
        assert_problem(response, StatusCode::BAD_REQUEST, "v2", "invalid-body").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("country")),
        "{problem}"
    );
    body["shipping_address"] = serde_json::json!({ "name": "x".repeat(201) });
    let response = app
        .create_order("v2", ACME_KEY, Some("long-name"), &body)
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "v2", "invalid-body").await;
    let stats = app.order_stats().await;
    assert_eq!(stats["requests"]["POST /orders"], Value::Null, "{stats}");
}

#[tokio::test]
async fn every_order_response_is_private_no_store_errors_included() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let out = world.out_of_stock_product().to_owned();
    let private = |response: &reqwest::Response, what: &str| {
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("private, no-store"),
            "{what}: {}",
            response.status()
        );
    };
    for version in VERSIONS {
        let orders = format!("/{version}/orders");
        let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
            (
                "list",
                app.request(Method::GET, &orders, Some(ACME_KEY)),
                StatusCode::OK,
            ),
            (
                "no key",
                app.request(Method::GET, &orders, None),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "unknown key",
                app.request(Method::GET, &format!("{orders}/o-1"), Some("not-a-key")),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "no scope",
                app.request(Method::GET, &orders, Some(CATALOG_ONLY_KEY)),
                StatusCode::FORBIDDEN,
            ),
            (
                "unknown order",
                app.request(
                    Method::GET,
                    &format!("{orders}/o-does-not-exist"),
                    Some(ACME_KEY),
                ),
                StatusCode::NOT_FOUND,
            ),
            (
                "bad query",
                app.request(Method::GET, &format!("{orders}?limit=abc"), Some(ACME_KEY)),
                StatusCode::BAD_REQUEST,
            ),
            (
                "wrong method",
                app.request(Method::PUT, &orders, Some(ACME_KEY)),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "no idempotency key",
                app.request(Method::POST, &orders, Some(ACME_KEY))
                    .json(&order_body("acme-cust-1", &[(world.regular_product(), 1)])),
                StatusCode::BAD_REQUEST,
            ),
            (
                "unorderable",
                app.request(Method::POST, &orders, Some(ACME_KEY))
                    .header("idempotency-key", format!("no-store-{version}"))
                    .json(&order_body("acme-cust-1", &[(out.as_str(), 1)])),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (what, request, status) in cases {
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), status, "{what}");
            private(&response, what);
        }
    }
    // Over the quota.
    for _ in 0..TIGHT_BURST {
        let response = app.get_as("/v2/orders", Some(TIGHT_KEY)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.get_as("/v1/orders", Some(TIGHT_KEY)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    private(&refused, "over the quota");
    // The order service down (globex's orders were not read yet, so none is cached).
    app.set_fault_mode(ServiceKind::Order, "down").await;
    for version in VERSIONS {
        let response = app
            .get_as(&format!("/{version}/orders"), Some(GLOBEX_KEY))
            .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        private(&response, "outage");
    }
    // Catalog answers are not private.
    let catalog = app.get("/v2/categories").await;
    assert_ne!(
        catalog
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("private, no-store")
    );
}

#[tokio::test]
async fn an_integral_quantity_written_with_a_zero_fraction_is_accepted_and_a_fraction_refused() {
    let app = spawn_app().await;
    let product = app.services.world.regular_product().to_owned();
    for version in VERSIONS {
        let body = serde_json::json!({
            "customer_reference": "acme-cust-0047",
            "lines": [{ "product_id": product, "quantity": 2.0 }],
        });
        let response = app
            .create_order(
                version,
                ACME_KEY,
                Some(&format!("fraction-{version}")),
                &body,
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{version}: 2.0 is 2"
        );
        let created: Value = response.json().await.expect("json");
        assert_eq!(created["lines"][0]["quantity"], 2);

        let body = serde_json::json!({
            "customer_reference": "acme-cust-0047",
            "lines": [{ "product_id": product, "quantity": 2.5 }],
        });
        let response = app
            .create_order(version, ACME_KEY, Some(&format!("half-{version}")), &body)
            .await;
        let (problem, _) =
            assert_problem(response, StatusCode::BAD_REQUEST, version, "invalid-body").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("2.5")),
            "{problem}"
        );
    }
}

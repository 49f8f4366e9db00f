//! problem+json for every class of bad input, and for downstream outages.

use reference_services::ServiceKind;
use reqwest::{Method, StatusCode};

use crate::helpers::{
    ACME_KEY, VERSIONS, assert_problem, assert_problem_schema, header, spawn_app,
};

#[tokio::test]
async fn an_unknown_path_is_a_404_problem_of_its_version() {
    let app = spawn_app().await;
    for version in VERSIONS {
        for path in ["/no-such-thing", "", "/", "/products/p-1/extra"] {
            let response = app.get(&format!("/{version}{path}")).await;
            let (body, _) =
                assert_problem(response, StatusCode::NOT_FOUND, version, "not-found").await;
            assert_problem_schema(&app, version, &body).await;
        }
    }
    // Outside any version, the server's generic problem.
    let response = app.get("/v3/products").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/problem+json"
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_with_allow_with_or_without_a_key() {
    let app = spawn_app().await;
    for version in VERSIONS {
        for (method, path, allowed) in [
            (Method::DELETE, "products", "GET,HEAD"),
            (Method::PUT, "orders", "GET,HEAD,POST"),
            (Method::PATCH, "orders/o-1", "GET,HEAD"),
        ] {
            // The method is wrong whoever asks: no key, an unknown one, or a valid one.
            for key in [Some(ACME_KEY), None, Some("not-a-key-of-anyone")] {
                let response = app
                    .request(method.clone(), &format!("/{version}/{path}"), key)
                    .send()
                    .await
                    .expect("request");
                let (body, headers) = assert_problem(
                    response,
                    StatusCode::METHOD_NOT_ALLOWED,
                    version,
                    "method-not-allowed",
                )
                .await;
                let allow: String = header(&headers, "allow").replace(' ', "");
                let mut allow: Vec<&str> = allow.split(',').collect();
                allow.sort_unstable();
                assert_eq!(allow.join(","), allowed, "{path} with {key:?}");
                assert_problem_schema(&app, version, &body).await;
            }
        }
        // A right method without a key stays 401, and an unknown path 404.
        let response = app.get_as(&format!("/{version}/products"), None).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, version, "unauthorized").await;
        let response = app.get_as(&format!("/{version}/no-such-thing"), None).await;
        assert_problem(response, StatusCode::NOT_FOUND, version, "not-found").await;
    }
}

#[tokio::test]
async fn a_malformed_or_mistyped_body_is_a_400_problem() {
    let app = spawn_app().await;
    let product = app.services.world.regular_product().to_owned();
    for version in VERSIONS {
        for (index, body) in [
            "{not json".to_owned(),
            r#"{"customer_reference":"c-1","lines":"many"}"#.to_owned(),
            format!(r#"{{"customer_reference":"c-1","lines":[{{"product_id":"{product}","quantity":"two"}}]}}"#),
            format!(r#"{{"customer_reference":"c 1","lines":[{{"product_id":"{product}","quantity":1}}]}}"#),
            format!(r#"{{"customer_reference":"c-1","lines":[{{"product_id":"{product}","quantity":0}}]}}"#),
            r#"{"customer_reference":"c-1","lines":[]}"#.to_owned(),
            format!(r#"{{"customer_reference":"c-1","lines":[{{"product_id":"{product}","quantity":1}}],"surprise":true}}"#),
        ]
        .into_iter()
        .enumerate()
        {
            let response = app
                .request(Method::POST, &format!("/{version}/orders"), Some(ACME_KEY))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("malformed-{index}"))
                .body(body.clone())
                .send()
                .await
                .expect("request");
            let (problem, _) =
                assert_problem(response, StatusCode::BAD_REQUEST, version, "invalid-body").await;
            assert!(problem["detail"].is_string(), "{body}: {problem}");
            app.assert_documented(version, "post", &format!("/{version}/orders"), StatusCode::BAD_REQUEST, &problem)
                .await;
        }
        let not_json = app
            .request(Method::POST, &format!("/{version}/orders"), Some(ACME_KEY))
            .header("content-type", "text/plain")
            .header("idempotency-key", "plain")
            .body("hello")
            .send()
            .await
            .expect("request");
        assert_problem(
            not_json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            version,
            "unsupported-media-type",
        )
        .await;
    }
    let stats = app.order_stats().await;
    assert_eq!(
        stats["total"], 0,
        "nothing reached the order service: {stats}"
    );
}

#[tokio::test]
async fn bad_query_strings_and_paths_are_400_problems() {
    let app = spawn_app().await;
    for version in VERSIONS {
        for path in [
            "products?limit=abc",
            "products?limit=0",
            "products?limit=101",
            "products?limit=-1",
            "products?category=no%20spaces",
            "products?cursor=not!valid",
            "products?cursor=AAAAforged",
            "products?colour=red",
            "orders?status=lost",
            "orders?limit=1.5",
            "products/bad%20id",
            "orders/bad!id",
        ] {
            let response = app.get(&format!("/{version}/{path}")).await;
            let (problem, _) = assert_problem(
                response,
                StatusCode::BAD_REQUEST,
                version,
                "invalid-request",
            )
            .await;
            assert!(problem["detail"].is_string(), "{path}: {problem}");
            assert_problem_schema(&app, version, &problem).await;
        }
    }
}

#[tokio::test]
async fn a_downstream_outage_is_a_503_problem_with_retry_after() {
    let app = spawn_app().await;
    app.set_fault_mode(ServiceKind::Order, "failing").await;
    app.set_fault_mode(ServiceKind::Product, "down").await;
    for version in VERSIONS {
        for path in ["orders", "products", "categories"] {
            let response = app.get(&format!("/{version}/{path}")).await;
            let (problem, headers) = assert_problem(
                response,
                StatusCode::SERVICE_UNAVAILABLE,
                version,
                "service-unavailable",
            )
            .await;
            let retry_after: u64 = header(&headers, "retry-after").parse().expect("seconds");
            assert!(retry_after >= 1);
            app.assert_documented(
                version,
                "get",
                &format!("/{version}/{path}"),
                StatusCode::SERVICE_UNAVAILABLE,
                &problem,
            )
            .await;
            assert!(!problem.to_string().contains("127.0.0.1"), "{problem}");
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"customer_reference":"c-1","lines":[],"padding":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let response = app
        .request(Method::POST, "/v2/orders", Some(ACME_KEY))
        .header("content-type", "application/json")
        .header("idempotency-key", "huge")
        .body(huge)
        .send()
        .await
        .expect("request");
    let (problem, _) = assert_problem(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "v2",
        "payload-too-large",
    )
    .await;
    assert_problem_schema(&app, "v2", &problem).await;
}

#[tokio::test]
async fn a_cached_product_is_served_with_its_age_while_the_service_is_down() {
    let app = spawn_app().await;
    let id = app.services.world.regular_product().to_owned();
    let fresh = app.get(&format!("/v2/products/{id}")).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    app.set_fault_mode(ServiceKind::Product, "failing").await;
    let cached = app.get(&format!("/v2/products/{id}")).await;
    assert_eq!(cached.status(), StatusCode::OK);
    let age: u64 = header(cached.headers(), "age").parse().expect("seconds");
    assert!(age < 60, "{age}");
    let body: serde_json::Value = cached.json().await.expect("json");
    assert_eq!(body["id"], id.as_str());
    // What is not cached cannot be answered: a 503, not a partial answer.
    let other = app.services.world.on_sale_product().to_owned();
    let response = app.get(&format!("/v2/products/{other}")).await;
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "v2",
        "service-unavailable",
    )
    .await;
}

#[tokio::test]
async fn problem_documents_match_their_snapshots() {
    let app = spawn_app().await;
    let world = app.services.world.clone();
    let mut problems = serde_json::Map::new();
    let mut record = |name: &str, body: serde_json::Value| {
        problems.insert(name.to_owned(), body);
    };
    record(
        "missing key",
        app.get_as("/v2/products", None)
            .await
            .json()
            .await
            .expect("json"),
    );
    record(
        "missing scope",
        app.get_as("/v2/orders", Some(crate::helpers::CATALOG_ONLY_KEY))
            .await
            .json()
            .await
            .expect("json"),
    );
    record(
        "unknown order",
        app.get("/v2/orders/o-none")
            .await
            .json()
            .await
            .expect("json"),
    );
    record(
        "bad limit",
        app.get("/v2/products?limit=0")
            .await
            .json()
            .await
            .expect("json"),
    );
    record(
        "unorderable",
        app.create_order(
            "v2",
            ACME_KEY,
            Some("snap"),
            &crate::helpers::order_body("c-1", &[(world.out_of_stock_product(), 1)]),
        )
        .await
        .json()
        .await
        .expect("json"),
    );
    insta::assert_json_snapshot!("problems_v2", problems);
}

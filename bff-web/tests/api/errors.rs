//! Partial data and error codes when a downstream service fails.

use std::time::Duration;

use reference_services::{FaultMode, ServiceKind};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, token};

#[tokio::test]
async fn a_cart_whose_product_service_is_down_returns_its_lines_with_null_products() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let products = app.product_ids(3).await;
    app.fill_cart(&user, &products, 1).await;
    app.services
        .world
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Failing);
    app.reset_stats();

    let answer = app
        .query(
            "{ viewer { cart { itemCount lines { productId quantity product { name } } } } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    assert_eq!(answer.status, 200);
    let lines = answer
        .data("/viewer/cart/lines")
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert!(line["productId"].is_string());
        assert_eq!(line["product"], Value::Null);
    }
    // Every line shares the one failed batch: the service saw one call (and its retries), not
    // one per line.
    let retried_at_most = u64::from(shared_clients::ServiceConfig::default().retry.max_attempts);
    let product = app.stats(ServiceKind::Product);
    assert!(
        (1..=retried_at_most).contains(&app.calls(ServiceKind::Product, "GET /products")),
        "{product:?}"
    );
    assert_eq!(
        product.total,
        app.calls(ServiceKind::Product, "GET /products"),
        "{product:?}"
    );
    assert!(answer.data("/viewer/cart/itemCount").as_i64().unwrap() > 0);
    let errors = answer.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), lines.len(), "one error per failed path");
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(error["extensions"]["code"], "DOWNSTREAM_UNAVAILABLE");
        assert_eq!(error["extensions"]["service"], "product");
        assert_eq!(
            error["path"],
            json!(["viewer", "cart", "lines", i, "product"])
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            !message.contains("http") && !message.contains("503"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_failing_cart_service_nulls_only_the_cart() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_cart().to_owned();
    app.services
        .world
        .admin(ServiceKind::Cart)
        .set_mode(FaultMode::Failing);
    let answer = app
        .query(
            "{ viewer { id cart { itemCount } } categories { id } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    assert_eq!(answer.data("/viewer/id"), user.as_str());
    assert_eq!(answer.data("/viewer/cart"), &Value::Null);
    assert!(answer.data("/categories").as_array().is_some());
    assert_eq!(answer.codes(), ["DOWNSTREAM_UNAVAILABLE"]);
    assert_eq!(answer.body["errors"][0]["extensions"]["service"], "cart");
}

#[tokio::test]
async fn data_served_stale_from_the_cache_is_flagged_in_extensions() {
    let app = spawn_app().await;
    let query = r#"{ product(id: "p-00001") { name } }"#;
    app.query(query, json!({}), None).await.assert_ok();
    assert!(
        app.query(query, json!({}), None)
            .await
            .body
            .get("extensions")
            .is_none()
    );

    // Let the cached product expire (the services say max-age=30s) without sleeping.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(45)).await;
    tokio::time::resume();
    app.services
        .world
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Failing);

    let answer = app.query(query, json!({}), None).await;
    answer.assert_ok();
    assert!(answer.data("/product/name").as_str().is_some());
    let stale = &answer.body["extensions"]["stale"];
    assert_eq!(stale["sources"], json!(["products"]), "{:#}", answer.body);
    assert!(stale["maxAgeSeconds"].as_f64().unwrap() >= 30.0);
}

#[tokio::test]
async fn a_required_variable_left_out_is_bad_user_input_not_an_internal_error() {
    let app = spawn_app().await;
    let query = "query One($id: ID!) { product(id: $id) { id } }";
    for variables in [json!({}), json!({ "id": null })] {
        let answer = app
            .post_json(
                json!({ "query": query, "variables": variables }),
                None,
                Some("application/graphql-response+json"),
            )
            .await;
        assert_eq!(answer.status, 400, "{:#}", answer.body);
        assert_eq!(answer.codes(), ["BAD_USER_INPUT"]);
        assert!(answer.body.get("data").is_none());
        let message = answer.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("$id") && message.contains("ID!"),
            "{message}"
        );
    }
    // With `application/json`, the same request error is a 200.
    let answer = app.query(query, json!({}), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.codes(), ["BAD_USER_INPUT"]);
    // A variable with a default, or a nullable one, may be left out.
    let answer = app
        .query(
            "query Page($first: Int = 2, $q: String) { products(first: $first, search: $q) { nodes { id } } }",
            json!({}),
            None,
        )
        .await;
    answer.assert_ok();
}

#[tokio::test]
async fn a_variable_of_the_wrong_type_is_a_validation_error() {
    let app = spawn_app().await;
    let answer = app
        .query(
            "query Page($first: Int!) { products(first: $first) { nodes { id } } }",
            json!({ "first": "many" }),
            None,
        )
        .await;
    // Variables are checked against their types in validation: a request error, with its code.
    let codes = answer.codes();
    assert!(!codes.is_empty(), "{:#}", answer.body);
    assert!(
        codes.iter().all(|code| code == "GRAPHQL_VALIDATION_FAILED"),
        "{:#}",
        answer.body
    );
    assert!(answer.body.get("data").is_none());
    // A value validation lets through but the argument cannot take (an object for an `ID`) is
    // the client's error too, with the argument named: never an internal error.
    let answer = app
        .query(
            "query One($id: ID!) { product(id: $id) { id } }",
            json!({ "id": { "not": "an id" } }),
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    let codes = answer.codes();
    assert!(!codes.is_empty(), "{:#}", answer.body);
    assert!(
        codes
            .iter()
            .all(|code| code == "BAD_USER_INPUT" || code == "GRAPHQL_VALIDATION_FAILED"),
        "{:#}",
        answer.body
    );
    let message = answer.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("ID"), "{message}");
}

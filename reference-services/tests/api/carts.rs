//! The cart service: ownership, versions, the 99 cap, If-Match, quantity changes, concurrency.

use futures::future::join_all;
use reference_services::ServiceKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{CART, TestApp, spawn_app};

/// The quantity of a product's line in a cart body (0 when absent).
fn quantity_of(cart: &Value, product_id: &str) -> u64 {
    cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["product_id"] == product_id)
        .and_then(|item| item["quantity"].as_u64())
        .unwrap_or(0)
}

/// The version of a cart body.
fn version_of(cart: &Value) -> u64 {
    cart["version"].as_u64().expect("a version")
}

/// `PUT /carts/{user}/items/{product}` with a quantity.
async fn set_quantity(
    app: &TestApp,
    user: &str,
    product: &str,
    quantity: Value,
) -> crate::helpers::Reply {
    app.request(
        Method::PUT,
        ServiceKind::Cart,
        &format!("/carts/{user}/items/{product}"),
    )
    .header("x-user-id", user)
    .json(&json!({ "quantity": quantity }))
    .schema(CART)
    .send()
    .await
}

#[tokio::test]
async fn a_user_without_a_cart_gets_an_empty_cart_at_version_0() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let reply = app.cart(&user).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["user_id"], user.as_str());
    assert_eq!(reply.body["items"], json!([]));
    assert_eq!(reply.body["version"], 0);
    // Any valid id has a cart, even one never seeded.
    let reply = app.cart("someone-new").await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["version"], 0);
}

#[tokio::test]
async fn a_seeded_cart_is_private_and_matches_the_world() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let reply = app.cart(&user).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.header("cache-control"), "private, no-store");
    assert!(!reply.body["items"].as_array().expect("items").is_empty());
    assert_eq!(
        reply.body,
        serde_json::to_value(app.world().cart(&user)).expect("json")
    );
    assert_eq!(
        reply.header("etag"),
        format!("\"{}\"", version_of(&reply.body))
    );
}

#[tokio::test]
async fn cart_write_with_wrong_user_is_403() {
    let app = spawn_app().await;
    let owner = app.world().user_with_cart().to_owned();
    let before = app.cart(&owner).await.body;
    let path = format!("/carts/{owner}");
    let calls = [
        (Method::GET, path.clone(), None),
        (Method::DELETE, path.clone(), None),
        (
            Method::POST,
            format!("{path}/items"),
            Some(json!({ "product_id": "p-00001", "quantity": 1 })),
        ),
        (
            Method::PUT,
            format!("{path}/items/p-00001"),
            Some(json!({ "quantity": 1 })),
        ),
        (Method::DELETE, format!("{path}/items/p-00001"), None),
    ];
    for (method, path, body) in calls {
        let mut call = app
            .request(method.clone(), ServiceKind::Cart, &path)
            .header("x-user-id", "u-0002");
        if let Some(body) = &body {
            call = call.json(body);
        }
        let reply = call.send().await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert_eq!(app.cart(&owner).await.body, before, "nothing changed");
}

#[tokio::test]
async fn a_cart_request_without_x_user_id_is_400() {
    let app = spawn_app().await;
    let reply = app.get(ServiceKind::Cart, "/carts/u-0001").send().await;
    reply.assert_status(StatusCode::BAD_REQUEST);
    let reply = app
        .request(Method::POST, ServiceKind::Cart, "/carts/u-0001/items")
        .json(&json!({ "product_id": "p-00001", "quantity": 1 }))
        .send()
        .await;
    reply.assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_ids_in_path_or_header_are_400() {
    let app = spawn_app().await;
    app.get(ServiceKind::Cart, "/carts/bad%20id")
        .header("x-user-id", "u-0001")
        .send()
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.get(ServiceKind::Cart, "/carts/u-0001")
        .header("x-user-id", "u 0001")
        .send()
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.request(
        Method::DELETE,
        ServiceKind::Cart,
        "/carts/u-0001/items/bad%20id",
    )
    .header("x-user-id", "u-0001")
    .send()
    .await
    .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn adding_creates_or_increases_a_line_and_bumps_the_version() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let reply = app.add_to_cart(&user, "p-00001", 2).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.header("cache-control"), "private, no-store");
    assert_eq!(quantity_of(&reply.body, "p-00001"), 2);
    assert_eq!(version_of(&reply.body), 1);
    assert!(reply.body["updated_at"].is_string());
    let reply = app.add_to_cart(&user, "p-00001", 3).await;
    assert_eq!(quantity_of(&reply.body, "p-00001"), 5);
    assert_eq!(version_of(&reply.body), 2);
    let reply = app.add_to_cart(&user, "p-00002", 1).await;
    assert_eq!(version_of(&reply.body), 3);
    let order: Vec<&str> = reply.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["product_id"].as_str())
        .collect();
    assert_eq!(
        order,
        ["p-00001", "p-00002"],
        "lines keep the order they were added in"
    );
    assert_eq!(app.cart(&user).await.body, reply.body);
}

#[tokio::test]
async fn a_quantity_of_26_0_counts_as_26_and_unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let reply = app
        .request(Method::POST, ServiceKind::Cart, "/carts/u-0002/items")
        .header("x-user-id", "u-0002")
        .json(&json!({ "product_id": "p-00009", "quantity": 26.0, "gift_wrap": true }))
        .schema(CART)
        .send()
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(quantity_of(&reply.body, "p-00009"), 26);
}

#[tokio::test]
async fn invalid_add_bodies_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({ "product_id": "p-00001", "quantity": 0 }),
        json!({ "product_id": "p-00001", "quantity": 100 }),
        json!({ "product_id": "p-00001", "quantity": 1.5 }),
        json!({ "product_id": "p-00001", "quantity": "1" }),
        json!({ "product_id": "p-00001" }),
        json!({ "quantity": 1 }),
        json!({ "product_id": "bad id", "quantity": 1 }),
        json!({ "product_id": 7, "quantity": 1 }),
        json!([1, 2]),
        json!(null),
    ] {
        let reply = app
            .request(Method::POST, ServiceKind::Cart, "/carts/u-0002/items")
            .header("x-user-id", "u-0002")
            .json(&body)
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let reply = app
        .request(Method::POST, ServiceKind::Cart, "/carts/u-0002/items")
        .header("x-user-id", "u-0002")
        .body("application/json", "{\"product_id\": ")
        .send()
        .await;
    reply.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(
        app.cart("u-0002").await.body["version"],
        0,
        "nothing was added"
    );
}

#[tokio::test]
async fn adding_beyond_99_is_409_and_leaves_the_cart_unchanged() {
    let app = spawn_app().await;
    let user = "u-0002";
    app.add_to_cart(user, "p-00005", 98)
        .await
        .assert_status(StatusCode::OK);
    let before = app.cart(user).await.body;
    let reply = app.add_to_cart(user, "p-00005", 2).await;
    reply.assert_status(StatusCode::CONFLICT);
    assert_eq!(app.cart(user).await.body, before);
    let reply = app.add_to_cart(user, "p-00005", 1).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(quantity_of(&reply.body, "p-00005"), 99);
}

#[tokio::test]
async fn an_if_match_that_does_not_match_is_412_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let before = app.cart(&user).await.body;
    let version = version_of(&before);
    for condition in [
        format!("\"{}\"", version + 1),
        format!("W/\"{version}\""),
        version.to_string(),
        "\"x\"".to_owned(),
    ] {
        let reply = app
            .request(
                Method::POST,
                ServiceKind::Cart,
                &format!("/carts/{user}/items"),
            )
            .header("x-user-id", &user)
            .header("if-match", &condition)
            .json(&json!({ "product_id": "p-00011", "quantity": 1 }))
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::PRECONDITION_FAILED,
            "If-Match: {condition}"
        );
    }
    assert_eq!(app.cart(&user).await.body, before);
}

#[tokio::test]
async fn an_if_match_with_the_current_version_a_star_or_a_list_goes_ahead() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let mut version = version_of(&app.cart(&user).await.body);
    let conditions: [fn(u64) -> String; 3] = [
        |v| format!("\"{v}\""),
        |_| "*".to_owned(),
        |v| format!("\"999\", \"{v}\""),
    ];
    for condition in conditions {
        let reply = app
            .request(
                Method::POST,
                ServiceKind::Cart,
                &format!("/carts/{user}/items"),
            )
            .header("x-user-id", &user)
            .header("if-match", &condition(version))
            .json(&json!({ "product_id": "p-00011", "quantity": 1 }))
            .schema(CART)
            .send()
            .await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(version_of(&reply.body), version + 1);
        version += 1;
    }
}

#[tokio::test]
async fn put_sets_a_quantity_and_zero_removes_the_line() {
    let app = spawn_app().await;
    let user = "u-0003";
    app.add_to_cart(user, "p-00001", 1).await;
    app.add_to_cart(user, "p-00002", 1).await;
    let reply = set_quantity(&app, user, "p-00001", json!(7)).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.header("cache-control"), "private, no-store");
    assert_eq!(quantity_of(&reply.body, "p-00001"), 7);
    assert_eq!(version_of(&reply.body), 3);
    let reply = set_quantity(&app, user, "p-00001", json!(0.0)).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(quantity_of(&reply.body, "p-00001"), 0);
    assert_eq!(reply.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(version_of(&reply.body), 4);
    for invalid in [json!(-1), json!(100), json!("2"), json!(null)] {
        set_quantity(&app, user, "p-00002", invalid)
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn changing_or_removing_a_missing_line_is_404() {
    let app = spawn_app().await;
    let user = "u-0003";
    app.add_to_cart(user, "p-00001", 1).await;
    set_quantity(&app, user, "p-00042", json!(3))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.request(
        Method::DELETE,
        ServiceKind::Cart,
        &format!("/carts/{user}/items/p-00042"),
    )
    .header("x-user-id", user)
    .send()
    .await
    .assert_status(StatusCode::NOT_FOUND);
    assert_eq!(version_of(&app.cart(user).await.body), 1, "nothing changed");
}

#[tokio::test]
async fn removing_a_line_answers_the_cart_without_it() {
    let app = spawn_app().await;
    let user = "u-0003";
    app.add_to_cart(user, "p-00001", 1).await;
    let reply = app
        .request(
            Method::DELETE,
            ServiceKind::Cart,
            &format!("/carts/{user}/items/p-00001"),
        )
        .header("x-user-id", user)
        .schema(CART)
        .send()
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["items"], json!([]));
    assert_eq!(version_of(&reply.body), 2);
}

#[tokio::test]
async fn clearing_empties_the_cart_and_its_version_keeps_increasing() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let before = version_of(&app.cart(&user).await.body);
    let clear = || {
        app.request(Method::DELETE, ServiceKind::Cart, &format!("/carts/{user}"))
            .header("x-user-id", &user)
            .send()
    };
    let reply = clear().await;
    reply.assert_status(StatusCode::NO_CONTENT);
    assert!(reply.body.is_null());
    let cart = app.cart(&user).await;
    cart.assert_status(StatusCode::OK);
    assert_eq!(cart.body["items"], json!([]));
    assert_eq!(version_of(&cart.body), before + 1);
    // Clearing an empty cart changes nothing.
    clear().await.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(version_of(&app.cart(&user).await.body), before + 1);
    // And later changes continue from there, never back to 0.
    let reply = app.add_to_cart(&user, "p-00001", 1).await;
    assert_eq!(version_of(&reply.body), before + 2);
}

#[tokio::test]
async fn fifty_parallel_adds_lose_no_update() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let before = app.cart(&user).await.body;
    let version = version_of(&before);
    let quantity = quantity_of(&before, "p-00013");
    let adds = (0..50).map(|_| app.add_to_cart(&user, "p-00013", 1));
    for reply in join_all(adds).await {
        reply.assert_status(StatusCode::OK);
    }
    let after = app.cart(&user).await.body;
    assert_eq!(quantity_of(&after, "p-00013"), quantity + 50);
    assert_eq!(version_of(&after), version + 50);
}

#[tokio::test]
async fn parallel_adds_near_the_cap_never_exceed_99() {
    let app = spawn_app().await;
    let user = "cap-tester";
    app.add_to_cart(user, "p-00017", 90)
        .await
        .assert_status(StatusCode::OK);
    let adds = (0..20).map(|_| app.add_to_cart(user, "p-00017", 1));
    let replies = join_all(adds).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflicts), (9, 11));
    assert_eq!(quantity_of(&app.cart(user).await.body, "p-00017"), 99);
}

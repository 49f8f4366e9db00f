//! Checkout with an `Idempotency-Key`.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_same_idempotency_key_twice_places_one_order() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    app.add_to_cart(&user, &product, 2).await;
    let before = app.orders_at_the_order_service(&user);

    let first = app.checkout(&user, Some("key-0001")).await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.bytes)
    );
    assert_eq!(first.header("cache-control"), "private, no-store");
    let order = first.json();
    assert_eq!(order["count"], 2);
    assert_eq!(order["status"], "pending");
    assert_eq!(order["lines"][0]["id"], product.as_str());
    assert!(
        order.get("cart_cleared").is_none(),
        "cleared is the default"
    );

    let again = app.checkout(&user, Some("key-0001")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], order["id"]);
    assert_eq!(app.orders_at_the_order_service(&user), before + 1);

    let mut redacted = order.clone();
    redacted["id"] = "[order id]".into();
    redacted["date"] = "[today]".into();
    insta::assert_json_snapshot!("checkout_confirmation", redacted);

    app.checkout(&user, Some("key-0002"))
        .await
        .assert_problem(409, "cart_empty");
    assert_eq!(app.orders_at_the_order_service(&user), before + 1);
    assert_eq!(app.cart(&user).await.json(), serde_json::json!({}));
}

#[tokio::test]
async fn checkout_needs_an_idempotency_key() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    app.checkout(&user, None)
        .await
        .assert_problem(400, "missing_idempotency_key");
    app.checkout(&user, Some("has space"))
        .await
        .assert_problem(400, "invalid_idempotency_key");
}

#[tokio::test]
async fn checkout_of_an_out_of_stock_product_lists_it_and_places_nothing() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().out_of_stock_product().to_owned();
    app.add_to_cart(&user, &product, 1).await;
    let answer = app.checkout(&user, Some("key-oos")).await;
    let problem = answer.assert_problem(409, "items_unavailable");
    assert_eq!(problem["items"][0]["product_id"], product.as_str());
    assert_eq!(app.orders_at_the_order_service(&user), 0);
}

#[tokio::test]
async fn checkout_takes_an_optional_shipping_address() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    app.add_to_cart(&user, app.world().regular_product(), 1)
        .await;
    let body = serde_json::json!({
        "address": { "name": "Jane Doe", "line1": "1 Main St", "city": "Berlin",
                     "postal_code": "10115", "country": "DE" }
    });
    let answer = app
        .send(
            app.request(reqwest::Method::POST, "/checkout", Some(&user))
                .header("idempotency-key", "key-address")
                .json(&body),
        )
        .await;
    assert_eq!(answer.status, 201);
    assert_eq!(
        answer.json()["ship_to"],
        "Jane Doe, 1 Main St, 10115 Berlin, DE"
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_checkout_is_a_422() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    app.add_to_cart(&user, app.world().regular_product(), 1)
        .await;
    let checkout = |city: &str| {
        app.request(reqwest::Method::POST, "/checkout", Some(&user))
            .header("idempotency-key", "key-reused")
            .json(&serde_json::json!({ "address": { "city": city, "country": "DE" } }))
    };
    let first = app.send(checkout("Berlin")).await;
    assert_eq!(first.status, 201);

    let problem = app
        .send(checkout("Bonn"))
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert!(problem["detail"].is_string(), "{problem}");
    assert_eq!(app.orders_at_the_order_service(&user), 1);
    let again = app.send(checkout("Berlin")).await;
    assert_eq!(
        again.status, 200,
        "the original request still gets its order"
    );
}

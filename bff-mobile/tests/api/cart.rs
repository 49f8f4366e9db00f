//! The cart screen and cart changes.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_cart_screen_is_private_and_snapshotted() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let answer = app.cart(&user).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), "private, no-store");
    assert!(!answer.header("etag").is_empty());
    let body = answer.json();
    let seeded = app.world().cart(&user);
    let lines = body["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), seeded.items.len());
    for line in lines {
        assert!(
            line["name"].is_string() && line["image"].is_string(),
            "{line}"
        );
    }
    insta::assert_json_snapshot!("cart", body);
}

#[tokio::test]
async fn the_cart_needs_a_bearer_token() {
    let app = spawn_app().await;
    let answer = app.get("/cart", None).await;
    answer.assert_problem(401, "missing_token");
    assert_eq!(answer.header("www-authenticate"), "Bearer");
    let bad = app
        .send(
            app.request(reqwest::Method::GET, "/cart", None)
                .bearer_auth("not.a.token"),
        )
        .await;
    bad.assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn adding_setting_and_removing_a_line_each_answer_the_updated_cart() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    let price = app
        .world()
        .product(&product)
        .expect("seeded")
        .price
        .amount_minor;

    let added = app.add_to_cart(&user, &product, 2).await;
    assert_eq!(added.status, 200);
    let body = added.json();
    assert_eq!(body["count"], 2);
    assert_eq!(body["lines"][0]["id"], product.as_str());
    assert_eq!(body["lines"][0]["qty"], 2);
    assert_eq!(body["lines"][0]["total"], price * 2);
    assert_eq!(body["subtotal"], price * 2);
    assert!(
        body["subtotal_text"]
            .as_str()
            .is_some_and(|t| t.starts_with('€'))
    );

    let set = app.set_quantity(&user, &product, 5).await.json();
    assert_eq!(set["count"], 5);
    assert_eq!(set["subtotal"], price * 5);

    let removed = app.remove_from_cart(&user, &product).await;
    assert_eq!(removed.status, 200);
    assert_eq!(
        removed.json(),
        serde_json::json!({}),
        "an empty cart is an empty object"
    );

    app.remove_from_cart(&user, &product)
        .await
        .assert_problem(404, "cart_line_not_found");
}

#[tokio::test]
async fn two_users_never_see_each_others_cart() {
    let app = spawn_app().await;
    let alice = app.world().user_without_cart().to_owned();
    let bob = app.world().user_with_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    let bob_before = app.cart(&bob).await.json();

    app.add_to_cart(&alice, &product, 3).await;
    let alice_cart = app.cart(&alice).await.json();
    assert_eq!(alice_cart["count"], 3);
    assert_eq!(alice_cart["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.cart(&bob).await.json(),
        bob_before,
        "bob's cart is untouched"
    );

    let other = app.world().low_stock_product().to_owned();
    app.add_to_cart(&bob, &other, 1).await;
    let alice_after = app.cart(&alice).await.json();
    assert_eq!(alice_after, alice_cart, "alice's cart is untouched");
    assert_eq!(app.world().cart(&alice).items.len(), 1);
}

#[tokio::test]
async fn quantities_outside_the_allowed_range_are_refused() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    for quantity in [0, 100, -1] {
        app.add_to_cart(&user, &product, quantity)
            .await
            .assert_problem(400, "invalid_quantity");
    }
    app.add_to_cart(&user, &product, 60).await;
    app.add_to_cart(&user, &product, 60)
        .await
        .assert_problem(409, "quantity_limit");
    app.set_quantity(&user, &product, 100)
        .await
        .assert_problem(400, "invalid_quantity");
    app.add_to_cart(&user, "p-does-not-exist", 1)
        .await
        .assert_problem(404, "product_not_found");
}

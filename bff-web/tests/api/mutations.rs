//! Cart mutations and checkout.

use reference_services::ServiceKind;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, token};

const CHECKOUT: &str = "mutation($key: String!) { checkout(idempotencyKey: $key,
    shippingAddress: { name: \"Ada\", city: \"Berlin\", country: \"DE\" }) {
    created cartCleared order { id status total { amountMinor } itemCount shippingAddress { city } lines { productId product { name } } } } }";

#[tokio::test]
async fn the_cart_can_be_added_to_changed_and_emptied_line_by_line() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    let add = app
        .query(
            "mutation($p: ID!) { addToCart(productId: $p, quantity: 2) { itemCount lines { productId quantity product { id } } } }",
            json!({ "p": "p-00003" }),
            Some(&token),
        )
        .await;
    add.assert_ok();
    assert_eq!(add.data("/addToCart/itemCount"), 2);
    assert_eq!(add.data("/addToCart/lines/0/product/id"), "p-00003");

    let set = app
        .query(
            r#"mutation { setCartLineQuantity(productId: "p-00003", quantity: 5) { itemCount } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    set.assert_ok();
    assert_eq!(set.data("/setCartLineQuantity/itemCount"), 5);

    let remove = app
        .query(
            r#"mutation { removeCartLine(productId: "p-00003") { itemCount lines { productId } } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    remove.assert_ok();
    assert_eq!(remove.data("/removeCartLine/itemCount"), 0);

    let again = app
        .query(
            r#"mutation { removeCartLine(productId: "p-00003") { itemCount } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(again.codes(), ["NOT_FOUND"]);
    assert_eq!(again.body["errors"][0]["extensions"]["service"], "cart");
}

#[tokio::test]
async fn adding_bad_input_is_refused_with_codes() {
    let app = spawn_app().await;
    let token = token(app.services.world.user_without_cart());
    let unknown = app
        .query(
            r#"mutation { addToCart(productId: "p-99999999") { version } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(unknown.codes(), ["NOT_FOUND"]);
    let too_many = app
        .query(
            r#"mutation { addToCart(productId: "p-00001", quantity: 100) { version } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(too_many.codes(), ["BAD_USER_INPUT"]);
    let bad_id = app
        .query(
            r#"mutation { addToCart(productId: "../etc") { version } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(bad_id.codes(), ["BAD_USER_INPUT"]);
    app.query(
        r#"mutation { addToCart(productId: "p-00001", quantity: 99) { version } }"#,
        json!({}),
        Some(&token),
    )
    .await
    .assert_ok();
    let beyond = app
        .query(
            r#"mutation { addToCart(productId: "p-00001", quantity: 1) { version } }"#,
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(beyond.codes(), ["CONFLICT"]);
}

#[tokio::test]
async fn checkout_orders_the_cart_and_empties_it() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    app.fill_cart(&user, &["p-00002".to_owned(), "p-00004".to_owned()], 2)
        .await;

    let answer = app
        .query(CHECKOUT, json!({ "key": "checkout-1" }), Some(&token))
        .await;
    answer.assert_ok();
    assert_eq!(answer.data("/checkout/created"), true);
    assert_eq!(answer.data("/checkout/cartCleared"), true);
    assert_eq!(answer.data("/checkout/order/itemCount"), 4);
    assert_eq!(
        answer.data("/checkout/order/shippingAddress/city"),
        "Berlin"
    );
    assert!(
        answer
            .data("/checkout/order/lines/0/product/name")
            .is_string()
    );
    assert!(app.services.world.cart(&user).items.is_empty());
}

#[tokio::test]
async fn a_retried_checkout_with_the_same_key_returns_the_same_single_order() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    app.fill_cart(&user, &["p-00002".to_owned()], 1).await;
    let before = app.services.world.user_orders(&user).len();

    let first = app
        .query(CHECKOUT, json!({ "key": "retry-me" }), Some(&token))
        .await;
    first.assert_ok();
    let second = app
        .query(CHECKOUT, json!({ "key": "retry-me" }), Some(&token))
        .await;
    second.assert_ok();

    assert_eq!(
        first.data("/checkout/order/id"),
        second.data("/checkout/order/id")
    );
    assert_eq!(second.data("/checkout/created"), false);
    assert_eq!(
        app.services.world.user_orders(&user).len(),
        before + 1,
        "one order at the order service"
    );
    assert!(app.calls(ServiceKind::Order, "POST /orders") <= 2);
}

#[tokio::test]
async fn checkout_refuses_out_of_stock_products_and_creates_nothing() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let out = app.services.world.out_of_stock_product().to_owned();
    app.fill_cart(&user, &["p-00002".to_owned(), out.clone()], 1)
        .await;

    let answer = app
        .query(CHECKOUT, json!({ "key": "k-oos" }), Some(&token(&user)))
        .await;
    assert_eq!(answer.codes(), ["OUT_OF_STOCK"]);
    let unavailable = &answer.body["errors"][0]["extensions"]["unavailable"];
    assert_eq!(unavailable[0]["productId"], out.as_str(), "{unavailable}");
    assert_eq!(unavailable[0]["reason"], "OUT_OF_STOCK");
    assert_eq!(app.calls(ServiceKind::Order, "POST /orders"), 0);
    assert_eq!(
        app.services.world.cart(&user).items.len(),
        2,
        "the cart is kept"
    );
}

#[tokio::test]
async fn checkout_of_an_empty_cart_is_refused() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let answer = app
        .query(CHECKOUT, json!({ "key": "k-empty" }), Some(&token(&user)))
        .await;
    assert_eq!(answer.codes(), ["EMPTY_CART"]);
    assert_eq!(answer.data(""), &Value::Null);
}

#[tokio::test]
async fn a_checkout_key_reused_with_another_address_is_refused() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    app.fill_cart(&user, &["p-00002".to_owned()], 1).await;
    app.query(CHECKOUT, json!({ "key": "reuse-me" }), Some(&token))
        .await
        .assert_ok();

    let other = "mutation($key: String!) { checkout(idempotencyKey: $key,
        shippingAddress: { city: \"Bonn\", country: \"DE\" }) { created } }";
    let answer = app
        .query(other, json!({ "key": "reuse-me" }), Some(&token))
        .await;
    assert_eq!(answer.codes(), ["IDEMPOTENCY_KEY_REUSED"]);
    assert_eq!(app.calls(ServiceKind::Order, "POST /orders"), 1);
}

#[tokio::test]
async fn checkout_with_an_invalid_shipping_address_is_bad_user_input() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    app.fill_cart(&user, &["p-00002".to_owned()], 1).await;

    let bad = "mutation($key: String!) { checkout(idempotencyKey: $key,
        shippingAddress: { city: \"Berlin\", country: \"de\" }) { created } }";
    let answer = app
        .query(bad, json!({ "key": "bad-country" }), Some(&token))
        .await;
    assert_eq!(answer.codes(), ["BAD_USER_INPUT"]);
    let error = &answer.body["errors"][0];
    assert_eq!(
        error["extensions"]["argument"], "shippingAddress",
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("country")),
        "{error}"
    );
    assert_eq!(app.calls(ServiceKind::Order, "POST /orders"), 0);
    assert_eq!(app.services.world.cart(&user).items.len(), 1);
}

#[tokio::test]
async fn an_int_variable_written_with_a_zero_fraction_is_accepted_and_a_fraction_refused() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let token = token(&user);
    let mutation =
        "mutation($q: Int!) { addToCart(productId: \"p-00003\", quantity: $q) { itemCount } }";
    let add = app.query(mutation, json!({ "q": 2.0 }), Some(&token)).await;
    add.assert_ok();
    assert_eq!(add.data("/addToCart/itemCount"), 2);
    let refused = app.query(mutation, json!({ "q": 2.5 }), Some(&token)).await;
    assert!(!refused.codes().is_empty(), "2.5 is not an Int");
}

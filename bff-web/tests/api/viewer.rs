//! The signed-in viewer: cart and orders.

use serde_json::json;

use crate::helpers::{spawn_app, token};

#[tokio::test]
async fn the_viewer_sees_their_cart_with_resolved_products_and_totals() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_cart().to_owned();
    let answer = app
        .query(
            "{ viewer { id cart { version itemCount subtotal { amountMinor currency formatted }
               lines { productId quantity product { id name price { amountMinor } } lineTotal { amountMinor } } } } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    answer.assert_ok();
    assert_eq!(answer.data("/viewer/id"), user.as_str());
    let lines = answer
        .data("/viewer/cart/lines")
        .as_array()
        .unwrap()
        .clone();
    assert!(!lines.is_empty());
    let mut sum = 0;
    let mut units = 0;
    for line in &lines {
        let price = line["product"]["price"]["amountMinor"].as_i64().unwrap();
        let quantity = line["quantity"].as_i64().unwrap();
        assert_eq!(
            line["lineTotal"]["amountMinor"].as_i64().unwrap(),
            price * quantity
        );
        assert_eq!(line["product"]["id"], line["productId"]);
        sum += price * quantity;
        units += quantity;
    }
    assert_eq!(answer.data("/viewer/cart/itemCount").as_i64(), Some(units));
    // The seeded cart may mix currencies; only a single-currency cart has a subtotal.
    if let Some(subtotal) = answer.data("/viewer/cart/subtotal/amountMinor").as_i64() {
        assert_eq!(subtotal, sum);
    }
}

#[tokio::test]
async fn the_viewer_pages_through_their_orders_and_reads_one() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_orders().to_owned();
    let token = token(&user);
    let first = app
        .query(
            "{ viewer { orders(first: 2) { nodes { id status total { formatted } itemCount
                 lines { productId quantity unitPrice { amountMinor } lineTotal { amountMinor } product { name } } }
               pageInfo { hasNextPage endCursor } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    first.assert_ok();
    assert_eq!(
        first.data("/viewer/orders/nodes").as_array().unwrap().len(),
        2
    );
    assert_eq!(first.data("/viewer/orders/pageInfo/hasNextPage"), true);
    let cursor = first
        .data("/viewer/orders/pageInfo/endCursor")
        .as_str()
        .unwrap()
        .to_owned();
    let second = app
        .query(
            "query($after: String) { viewer { orders(first: 2, after: $after) { nodes { id } } } }",
            json!({ "after": cursor }),
            Some(&token),
        )
        .await;
    second.assert_ok();
    let id = second
        .data("/viewer/orders/nodes/0/id")
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first.data("/viewer/orders/nodes/0/id"), id.as_str());

    let one = app
        .query(
            "query($id: ID!) { viewer { order(id: $id) { id lines { product { id } } } } }",
            json!({ "id": id }),
            Some(&token),
        )
        .await;
    one.assert_ok();
    assert_eq!(one.data("/viewer/order/id"), id.as_str());
}

#[tokio::test]
async fn someone_elses_order_is_not_found() {
    let app = spawn_app().await;
    let owner = app.services.world.user_with_orders().to_owned();
    let order = app.services.world.user_orders(&owner)[0].id.clone();
    let stranger = app.services.world.user_without_cart().to_owned();
    let answer = app
        .query(
            "query($id: ID!) { viewer { order(id: $id) { id } } }",
            json!({ "id": order }),
            Some(&token(&stranger)),
        )
        .await;
    assert_eq!(answer.data("/viewer/order"), &serde_json::Value::Null);
    assert_eq!(answer.codes(), ["NOT_FOUND"]);
    assert_eq!(answer.body["errors"][0]["extensions"]["service"], "order");
}

#[tokio::test]
async fn a_user_without_a_cart_gets_an_empty_one() {
    let app = spawn_app().await;
    let user = app.services.world.user_without_cart().to_owned();
    let answer = app
        .query(
            "{ viewer { cart { lines { productId } itemCount subtotal { amountMinor } } } }",
            json!({}),
            Some(&token(&user)),
        )
        .await;
    answer.assert_ok();
    assert_eq!(answer.data("/viewer/cart/itemCount"), 0);
    assert_eq!(
        answer.data("/viewer/cart/subtotal"),
        &serde_json::Value::Null
    );
}

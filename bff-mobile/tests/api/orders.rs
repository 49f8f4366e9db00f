//! The orders list and order detail screens.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_orders_list_pages_and_is_snapshotted() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let first = app.orders(&user, "?limit=2").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), "private, no-store");
    let body = first.json();
    assert_eq!(body["orders"].as_array().map(Vec::len), Some(2));
    let next = body["next"].as_str().expect("next");
    let second = app
        .orders(&user, &format!("?limit=2&cursor={next}"))
        .await
        .json();
    assert_ne!(second["orders"][0]["id"], body["orders"][0]["id"]);
    let mut redacted = body.clone();
    redacted["next"] = "[cursor: signed per run]".into();
    insta::assert_json_snapshot!("orders_list", redacted);
}

#[tokio::test]
async fn the_order_detail_is_snapshotted_and_other_users_orders_are_404() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let order_id = app.world().user_orders(&user)[0].id.to_string();
    let answer = app.order(&user, &order_id).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["id"], order_id.as_str());
    assert!(body["lines"][0]["name"].is_string());
    insta::assert_json_snapshot!("order_detail", body);

    let stranger = app.world().user_without_cart().to_owned();
    app.order(&stranger, &order_id)
        .await
        .assert_problem(404, "order_not_found");
    app.order(&user, "o-no-such-order")
        .await
        .assert_problem(404, "order_not_found");
}

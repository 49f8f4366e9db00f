//! The home screen: concurrent parts, degraded when one fails.

use reference_services::ServiceKind;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_anonymous_home_screen_is_public_and_snapshotted() {
    let app = spawn_app().await;
    let answer = app.home(None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), "public, max-age=30");
    let body = answer.json();
    assert!(body.get("cart_count").is_none());
    assert!(body.get("degraded").is_none());
    insta::assert_json_snapshot!("home_anonymous", body);
}

#[tokio::test]
async fn the_signed_in_home_screen_has_the_cart_badge_and_latest_order_and_is_private() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    let answer = app.home(Some(&user)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), "private, no-store");
    assert!(answer.header("vary").contains("Authorization"));
    let body = answer.json();
    let expected: u32 = app
        .world()
        .cart(&user)
        .items
        .iter()
        .map(|i| i.quantity)
        .sum();
    assert_eq!(body["cart_count"], expected);
    let latest = &app.world().user_orders(&user)[0];
    assert_eq!(body["latest_order"]["id"], latest.id.as_str());
    assert!(body["featured"].as_array().is_some_and(|f| !f.is_empty()));
}

#[tokio::test]
async fn the_home_screen_without_the_product_service_still_shows_the_cart_badge() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    app.take_down(ServiceKind::Product);
    let answer = app.home(Some(&user)).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert!(
        body["cart_count"].as_u64().is_some_and(|count| count > 0),
        "{body}"
    );
    assert!(body.get("featured").is_none());
    assert_eq!(
        body["degraded"],
        serde_json::json!(["featured", "categories"])
    );
}

#[tokio::test]
async fn the_home_screen_without_the_cart_service_still_shows_featured_products() {
    let app = spawn_app().await;
    let user = app.world().user_with_cart().to_owned();
    app.take_down(ServiceKind::Cart);
    let body = app.home(Some(&user)).await.json();
    assert!(body["featured"].as_array().is_some_and(|f| !f.is_empty()));
    assert!(body.get("cart_count").is_none());
    assert_eq!(body["degraded"], serde_json::json!(["cart"]));
}

#[tokio::test]
async fn an_anonymous_home_screen_with_nothing_loadable_is_a_503_problem() {
    let app = spawn_app().await;
    app.take_down(ServiceKind::Product);
    let answer = app.home(None).await;
    answer.assert_problem(503, "downstream_unavailable");
    assert!(!answer.header("retry-after").is_empty());
}

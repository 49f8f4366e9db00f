//! The seeded world: its size, its determinism, and the helpers that name seeded data.

use reference_services::{Config, ServiceKind};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{CATEGORY_LIST, TestApp, ids, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_default_world_has_at_least_5000_products_and_20_categories() {
    let app = spawn_app_with(Config::default()).await;
    let world = app.world();
    assert!(world.catalog().len() >= 5_000);
    assert!(world.users().len() >= 300);
    app.product("p-05000").await.assert_status(StatusCode::OK);
    let categories = app
        .get(ServiceKind::Product, "/categories")
        .schema(CATEGORY_LIST)
        .send()
        .await;
    assert!(categories.body["items"].as_array().map_or(0, Vec::len) >= 20);
    // Validate a good sample of the catalog against the contract, 100 at a time.
    for start in (1..=5_000).step_by(500) {
        let batch: Vec<String> = (start..start + 100).map(|n| format!("p-{n:05}")).collect();
        let reply = app.products(&format!("ids={}", batch.join(","))).await;
        assert_eq!(ids(&reply.body), batch);
    }
}

#[tokio::test]
async fn the_catalog_is_varied() {
    let app = spawn_app_with(Config::default()).await;
    let catalog = app.world().catalog();
    let products: Vec<_> = catalog.products().collect();
    let distinct = |f: &dyn Fn(&reference_services::product::Product) -> String| {
        products
            .iter()
            .map(|p| f(p))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(distinct(&|p| p.name.clone()) > 500);
    assert!(distinct(&|p| p.brand.clone()) >= 20);
    assert!(distinct(&|p| p.category_id.clone()) >= 20);
    assert!(distinct(&|p| p.price.currency.clone()) >= 2);
    let on_sale = products.iter().filter(|p| p.list_price.is_some()).count();
    let out = products
        .iter()
        .filter(|p| p.inventory.available == 0)
        .count();
    assert!(
        on_sale > 100 && out > 50,
        "{on_sale} on sale, {out} out of stock"
    );
    for product in &products {
        let widths: Vec<u32> = product.images.iter().map(|image| image.width).collect();
        assert!(
            widths.len() >= 3 && widths.windows(2).all(|w| w[0] > w[1]),
            "largest first"
        );
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_over_http() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let query = "ids=p-00001,p-00500,p-00999";
    assert_eq!(a.products(query).await.body, b.products(query).await.body);
    assert_eq!(first_page(&a).await, first_page(&b).await);
    let user = a.world().user_with_orders().to_owned();
    assert_eq!(orders_of(&a, &user).await, orders_of(&b, &user).await);
    assert_eq!(a.cart("u-0001").await.body, b.cart("u-0001").await.body);
    assert_eq!(a.world().user_with_cart(), b.world().user_with_cart());
}

/// The first 50 products of the listing.
async fn first_page(app: &TestApp) -> Value {
    app.products("limit=50").await.body["items"].clone()
}

/// Up to 100 orders of a user.
async fn orders_of(app: &TestApp, user: &str) -> Value {
    app.orders(&[("x-user-id", user)], &format!("user_id={user}&limit=100"))
        .await
        .body["items"]
        .clone()
}

#[tokio::test]
async fn another_seed_gives_other_data() {
    let a = spawn_app().await;
    let b = spawn_app_with(Config {
        seed: 7,
        products: 1_000,
        users: 60,
        ..Config::default()
    })
    .await;
    assert_ne!(
        a.product("p-00001").await.body,
        b.product("p-00001").await.body
    );
}

#[tokio::test]
async fn the_world_helpers_name_data_with_their_properties() {
    let app = spawn_app().await;
    let world = app.world();

    let out = app.product(world.out_of_stock_product()).await;
    assert_eq!(out.body["inventory"]["status"], "out_of_stock");
    assert_eq!(out.body["inventory"]["available"], 0);
    let low = app.product(world.low_stock_product()).await;
    assert_eq!(low.body["inventory"]["status"], "low_stock");
    let sale = app.product(world.on_sale_product()).await;
    assert!(
        sale.body["list_price"]["amount_minor"].as_i64()
            > sale.body["price"]["amount_minor"].as_i64()
    );
    let regular = app.product(world.regular_product()).await;
    assert_eq!(regular.body["price"]["currency"], world.currency());
    assert_eq!(regular.body["list_price"], Value::Null);
    let foreign = app.product(world.foreign_currency_product()).await;
    assert_ne!(foreign.body["price"]["currency"], world.currency());

    let cart = app.cart(world.user_with_cart()).await;
    assert!(!cart.body["items"].as_array().expect("items").is_empty());
    let fresh = world.user_without_cart().to_owned();
    assert_eq!(app.cart(&fresh).await.body["version"], 0);
    let none = app
        .orders(&[("x-user-id", &fresh)], &format!("user_id={fresh}"))
        .await;
    assert_eq!(none.body["items"], serde_json::json!([]));
    assert_eq!(none.body["next_cursor"], Value::Null);

    let user = world.user_with_orders().to_owned();
    let orders = app
        .orders(
            &[("x-user-id", &user)],
            &format!("user_id={user}&limit=100"),
        )
        .await;
    assert!(orders.body["items"].as_array().map_or(0, Vec::len) >= 5);

    let partner = world.partner_with_orders().to_owned();
    let orders = app
        .orders(
            &[("x-partner-id", &partner)],
            &format!("partner_id={partner}&limit=100"),
        )
        .await;
    assert!(orders.body["items"].as_array().map_or(0, Vec::len) >= 10);
    for order in orders.body["items"].as_array().expect("items") {
        assert_eq!(order["channel"]["kind"], "partner");
        assert_eq!(order["channel"]["partner_id"], partner.as_str());
    }
    let idle = world.partner_without_orders().to_owned();
    let orders = app
        .orders(&[("x-partner-id", &idle)], &format!("partner_id={idle}"))
        .await;
    assert_eq!(orders.body["items"], serde_json::json!([]));
    assert!(world.partners().len() >= 2);
}

#[tokio::test]
async fn seeded_orders_have_consistent_totals() {
    let app = spawn_app().await;
    let world = app.world();
    for user in world.users() {
        for order in world.user_orders(user) {
            let sum: i64 = order
                .lines
                .iter()
                .map(|line| line.unit_price.amount_minor * i64::from(line.quantity))
                .sum();
            assert_eq!(order.total.amount_minor, sum, "{}", order.id);
        }
    }
}

//! Change events end to end: the reference services publish, three `bff-mobile` replicas over one
//! Redis consume. A change made outside the gateways (the back office) is visible through every
//! replica at once, although catalog entries and pages are kept for ten minutes.

use std::time::Duration;

use reference_services::product::{Money, ProductChange};
use serde_json::Value;
use server_kit::testing::spawn_replicas;

/// Long enough that only an event can make a replica fetch again.
const TEN_MINUTES: Duration = Duration::from_secs(600);

/// How long the test waits for the change to show (the consumers act in milliseconds; this
/// only bounds a broken one).
const PATIENCE: Duration = Duration::from_secs(5);

/// `GET path` on `base` under `/m/v1`, as JSON (asserting 200).
async fn get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = client
        .get(format!("{base}/m/v1{path}"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn a_price_changed_in_the_back_office_shows_through_every_replica_at_once() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.downstream.cache.max_ttl = TEN_MINUTES;
            settings.downstream.cache.page_ttl = TEN_MINUTES;
            settings.downstream.cache.event_driven_max_ttl = TEN_MINUTES;
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let world = &replicas.services.world;
    let product = world.regular_product().to_owned();
    let category = world.product(&product).expect("seeded").category_id;
    let list = format!("/products?category={category}");
    // Every replica caches the product and its category's list.
    for base in &replicas.bases {
        get(&client, base, &format!("/products/{product}")).await;
        get(&client, base, &list).await;
    }
    let old = world.product(&product).expect("seeded").price;
    let new_price = Money {
        amount_minor: old.amount_minor + 1234,
        currency: old.currency.clone(),
    };
    world
        .change_product(
            &product,
            &ProductChange {
                price: Some(new_price.clone()),
                ..ProductChange::default()
            },
        )
        .await
        .expect("changed");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for base in &replicas.bases {
        loop {
            let detail = get(&client, base, &format!("/products/{product}")).await;
            let page = get(&client, base, &list).await;
            let shown = page["items"]
                .as_array()
                .or_else(|| page["products"].as_array())
                .expect("a list")
                .iter()
                .find(|item| item["id"] == product.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            let detail_price = detail["price"] == new_price.amount_minor;
            let page_price = shown["price"] == new_price.amount_minor;
            if detail_price && page_price {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} still shows the old price: {detail} / {shown}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn a_cart_changed_at_the_cart_service_directly_shows_through_every_replica_at_once() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret =
                Some(server_kit::auth::Secret::new(crate::helpers::SECRET));
            settings.downstream.private_cache.ttl = TEN_MINUTES;
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    let user = "u-other-device";
    let token = crate::helpers::token(user);
    let product = replicas.services.world.regular_product().to_owned();
    let cart = |base: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let cart: Value = client
                .get(format!("{base}/m/v1/cart"))
                .bearer_auth(token)
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            cart["count"].as_u64().unwrap_or(0)
        }
    };
    for base in &replicas.bases {
        assert_eq!(cart(base.clone()).await, 0, "empty, and cached");
    }
    // Another device, another channel: the cart service is changed without any gateway.
    let added = client
        .post(format!("{}/carts/{user}/items", replicas.services.cart_url))
        .header("x-user-id", user)
        .json(&serde_json::json!({ "product_id": product, "quantity": 3 }))
        .send()
        .await
        .expect("answered");
    assert!(added.status().is_success(), "{}", added.status());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for base in &replicas.bases {
        while cart(base.clone()).await != 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} shows the old cart"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

//! Change events end to end: a price changed in the back office shows at once in the web
//! `product` query and the `products` list, although both are kept for ten minutes.

use std::time::Duration;

use reference_services::product::{Money, ProductChange};
use serde_json::{Value, json};
use server_kit::testing::spawn_replicas;

/// Long enough that only an event can make the gateway fetch again.
const TEN_MINUTES: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_price_changed_in_the_back_office_shows_in_queries_at_once() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        1,
        |settings: &mut bff_web::WebSettings| {
            settings.downstream.cache.max_ttl = TEN_MINUTES;
            settings.downstream.cache.page_ttl = TEN_MINUTES;
            settings.downstream.cache.event_driven_max_ttl = TEN_MINUTES;
        },
        bff_web::build,
    )
    .await;
    let client = reqwest::Client::new();
    let endpoint = format!("{}{}", replicas.bases[0], replicas.settings.gateway.path);
    let world = &replicas.services.world;
    let product = world.regular_product().to_owned();
    let query = "query($id: ID!) { product(id: $id) { price { amountMinor } }
                  products(first: 50) { nodes { id price { amountMinor } } } }";
    let read = || {
        let request = client
            .post(&endpoint)
            .json(&json!({ "query": query, "variables": { "id": product } }));
        async move {
            let body: Value = request
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            assert!(body.get("errors").is_none(), "{body}");
            body
        }
    };
    read().await;
    let old = world.product(&product).expect("seeded").price;
    let amount = old.amount_minor + 777;
    world
        .change_product(
            &product,
            &ProductChange {
                price: Some(Money {
                    amount_minor: amount,
                    currency: old.currency.clone(),
                }),
                ..ProductChange::default()
            },
        )
        .await
        .expect("changed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = read().await;
        let single = body["data"]["product"]["price"]["amountMinor"] == amount;
        // A changed product is the newest: first in the list.
        let listed = body["data"]["products"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|node| node["id"] == product.as_str() && node["price"]["amountMinor"] == amount);
        if single && listed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still the old price: {body}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

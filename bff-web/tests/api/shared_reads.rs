//! Read-your-writes across replicas: three `bff-web` replicas over one Redis; a cart change
//! through one is seen at once through the others, although each caches carts for a minute.

use std::time::Duration;

use serde_json::{Value, json};
use server_kit::{auth::Secret, testing::spawn_replicas};

use crate::helpers::{AUDIENCE, SECRET, token};

/// One GraphQL request to `endpoint` as `user`; asserts no errors and returns `data`.
async fn graphql(
    client: &reqwest::Client,
    endpoint: &str,
    user: &str,
    query: &str,
    variables: Value,
) -> Value {
    let body: Value = client
        .post(endpoint)
        .bearer_auth(token(user))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn a_cart_changed_through_one_replica_is_read_through_the_others_200_times_in_a_row() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_web::WebSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            settings.gateway.auth.audience = Some(AUDIENCE.to_owned());
            settings.downstream.private_cache.ttl = Duration::from_secs(60);
        },
        bff_web::build,
    )
    .await;
    let client = reqwest::Client::new();
    let path = replicas.settings.gateway.path.clone();
    let endpoints: Vec<String> = replicas
        .bases
        .iter()
        .map(|base| format!("{base}{path}"))
        .collect();
    let user = replicas.services.world.user_without_cart().to_owned();
    let product = replicas.services.world.regular_product().to_owned();
    let read = "{ viewer { cart { itemCount } } }";
    graphql(
        &client,
        &endpoints[0],
        &user,
        "mutation($p: ID!) { addToCart(productId: $p, quantity: 1) { itemCount } }",
        json!({ "p": product }),
    )
    .await;
    for round in 0..200_usize {
        let writer = round % 3;
        let wanted = round % 9 + 1;
        for endpoint in &endpoints {
            graphql(&client, endpoint, &user, read, json!({})).await;
        }
        let written = graphql(
            &client,
            &endpoints[writer],
            &user,
            "mutation($p: ID!, $q: Int!) { setCartLineQuantity(productId: $p, quantity: $q) { itemCount } }",
            json!({ "p": product, "q": wanted }),
        )
        .await;
        assert_eq!(written["setCartLineQuantity"]["itemCount"], wanted);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let data = graphql(&client, endpoint, &user, read, json!({})).await;
            assert_eq!(
                data["viewer"]["cart"]["itemCount"], wanted,
                "round {round}: written through replica {writer}, read through {index}"
            );
        }
    }
}

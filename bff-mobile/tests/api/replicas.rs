//! Checkout across replicas: three `bff-mobile` replicas over one Redis; one `Idempotency-Key`
//! sent to all three at once places one order, and every replica answers it the same.

use std::time::Duration;

use reference_services::ServiceKind;
use reqwest::Method;
use server_kit::{auth::Secret, testing::spawn_replicas};

use crate::helpers::{Answer, SECRET, token};

/// `POST /m/v1/checkout` to `base` as `user` with `key`.
async fn checkout(client: &reqwest::Client, base: &str, user: &str, key: &str) -> Answer {
    let response = client
        .request(Method::POST, format!("{base}/m/v1/checkout"))
        .bearer_auth(token(user))
        .header("idempotency-key", key)
        .send()
        .await
        .expect("answered");
    Answer::of(response).await
}

#[tokio::test]
async fn one_checkout_key_sent_to_three_replicas_at_once_places_one_order_answered_alike() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        3,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
        },
        bff_mobile::build,
    )
    .await;
    let world = &replicas.services.world;
    let user = world.user_without_cart().to_owned();
    let product = world.regular_product().to_owned();
    assert!(world.cart(&user).items.is_empty());
    let client = reqwest::Client::new();
    let added = client
        .request(
            Method::POST,
            format!("{}/m/v1/cart/items", replicas.bases[0]),
        )
        .bearer_auth(token(&user))
        .json(&serde_json::json!({ "product_id": product, "quantity": 2 }))
        .send()
        .await
        .expect("answered");
    assert!(added.status().is_success(), "{}", added.status());
    // The order service takes a moment, so the three attempts overlap.
    let order_service = world.admin(ServiceKind::Order);
    order_service.set_faults(reference_services::Faults {
        latency: Duration::from_millis(100),
        ..order_service.faults()
    });
    for kind in [ServiceKind::Cart, ServiceKind::Order] {
        world.admin(kind).reset();
    }

    let answers = futures::future::join_all(
        replicas
            .bases
            .iter()
            .map(|base| checkout(&client, base, &user, "key-replicas")),
    )
    .await;

    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        vec![200, 200, 201],
        "one created it, the others got it: {:?}",
        answers
            .iter()
            .map(|a| String::from_utf8_lossy(&a.bytes).into_owned())
            .collect::<Vec<_>>()
    );
    let first = answers[0].json();
    assert!(first["id"].is_string(), "{first}");
    for answer in &answers {
        assert_eq!(answer.json(), first, "every replica answers the same order");
    }
    assert_eq!(world.user_orders(&user).len(), 1, "one order exists");
    let orders = world.admin(ServiceKind::Order).stats();
    assert_eq!(orders.requests.get("POST /orders"), Some(&1), "{orders:?}");
    let carts = world.admin(ServiceKind::Cart).stats();
    let cart_writes: u64 = carts
        .requests
        .iter()
        .filter(|(route, _)| !route.starts_with("GET "))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(cart_writes, 1, "the cart was emptied once: {carts:?}");
    assert!(world.cart(&user).items.is_empty());

    // A retry through any replica later: the same order, no second one.
    let retry = checkout(&client, &replicas.bases[2], &user, "key-replicas").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json(), first);
    assert_eq!(world.user_orders(&user).len(), 1);
}

//! Change events end to end: a price changed in the back office shows at once through `/v1` and
//! `/v2`, although catalog entries are kept for ten minutes.

use std::time::Duration;

use bff_partner::config::{KeyConfig, Scope};
use reference_services::product::{Money, ProductChange};
use server_kit::testing::spawn_replicas;
use shared_clients::PartnerId;

use crate::helpers::{ACME_KEY, VERSIONS};

/// Long enough that only an event can make the gateway fetch again.
const TEN_MINUTES: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_price_changed_in_the_back_office_shows_through_every_version_at_once() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        1,
        |settings: &mut bff_partner::PartnerSettings| {
            settings.gateway.keys = vec![KeyConfig {
                sha256: bff_partner::config::hash_key(ACME_KEY),
                partner_id: PartnerId::parse("partner-acme").expect("partner id"),
                scopes: vec![Scope::CatalogRead],
                rate_limit: None,
            }];
            settings.downstream.cache.max_ttl = TEN_MINUTES;
            settings.downstream.cache.event_driven_max_ttl = TEN_MINUTES;
        },
        bff_partner::build,
    )
    .await;
    let client = reqwest::Client::new();
    let world = &replicas.services.world;
    let product = world.regular_product().to_owned();
    let base = &replicas.bases[0];
    let read = |version: &str| {
        let request = client
            .get(format!("{base}/{version}/products/{product}"))
            .bearer_auth(ACME_KEY);
        async move {
            let response = request.send().await.expect("answered");
            assert_eq!(response.status(), 200);
            response.text().await.expect("body")
        }
    };
    for version in VERSIONS {
        read(version).await;
    }
    let old = world.product(&product).expect("seeded").price;
    // A price no other field of the product shows, in both notations the versions use.
    let amount = old.amount_minor + 100_003;
    let decimal = format!("{}.{:02}", amount / 100, amount % 100);
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
    for version in VERSIONS {
        loop {
            let body = read(version).await;
            if body.contains(&format!(":{amount}")) || body.contains(&format!("\"{decimal}\"")) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/{version} still shows the old price: {body}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

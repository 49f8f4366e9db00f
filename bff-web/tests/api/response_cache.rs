//! The response cache over real HTTP: public answers are kept and answered again (in either
//! media type), `GET` ones are public with an `ETag` and revalidate to 304, and nothing private,
//! erroneous or past its contents' freshness is ever answered from it.

use std::time::Duration;

use reference_services::product::{Money, ProductChange};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_kit::testing::{sample, scrape, spawn_replicas};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, token};

const PRODUCT: &str =
    "query Product($id: ID!) { product(id: $id) { id name price { amountMinor } } }";

/// `bff_graphql_response_cache_total{outcome}`.
async fn lookups(app: &TestApp, outcome: &str) -> f64 {
    let text = scrape(&app.client, &app.metrics_url).await;
    sample(
        &text,
        "bff_graphql_response_cache_total",
        &[("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_public_answer_is_kept_and_answered_again_in_either_media_type() {
    let app = spawn_app().await;
    let id = app.services.world.regular_product().to_owned();
    let first = app.query(PRODUCT, json!({ "id": id }), None).await;
    first.assert_ok();
    assert_eq!(lookups(&app, "hit").await, 0.0);
    let again = app.query(PRODUCT, json!({ "id": id }), None).await;
    again.assert_ok();
    assert_eq!(again.body, first.body);
    assert_eq!(lookups(&app, "hit").await, 1.0);
    // The same bytes, under the type the client asked for; a POST stays `no-store`.
    let typed = app
        .post_json(
            json!({ "query": PRODUCT, "variables": { "id": id } }),
            None,
            Some("application/graphql-response+json"),
        )
        .await;
    assert_eq!(typed.status, StatusCode::OK);
    assert!(
        typed
            .content_type
            .starts_with("application/graphql-response+json"),
        "{}",
        typed.content_type
    );
    assert_eq!(typed.body, first.body);
    assert_eq!(typed.headers["cache-control"], "no-store");
    assert_eq!(lookups(&app, "hit").await, 2.0);
    // Another product is another answer.
    let other = app.services.world.on_sale_product().to_owned();
    let answer = app.query(PRODUCT, json!({ "id": other }), None).await;
    assert_eq!(answer.data("/product/id"), other.as_str());
    assert_eq!(lookups(&app, "hit").await, 2.0);
}

#[tokio::test]
async fn a_get_answer_is_public_for_its_contents_freshness_and_revalidates_to_304() {
    let app = spawn_app_with(|settings| {
        settings.downstream.cache.max_ttl = Duration::from_secs(20);
    })
    .await;
    let id = app.services.world.regular_product().to_owned();
    let variables = json!({ "id": id }).to_string();
    let params = [("query", PRODUCT), ("variables", variables.as_str())];
    let first = app.get(&params, None).await;
    first.assert_ok();
    let cache_control = first.headers["cache-control"].to_str().expect("ascii");
    let max_age: u64 = cache_control
        .strip_prefix("public, max-age=")
        .unwrap_or_else(|| panic!("public: {cache_control}"))
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&max_age), "{cache_control}");
    let etag = first.headers["etag"].to_str().expect("ascii").to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");
    assert_eq!(first.headers["vary"], "Accept, Authorization");

    // Answered from the cache: the same tag.
    let again = app.get(&params, None).await;
    assert_eq!(again.headers["etag"], etag.as_str());
    assert_eq!(again.body, first.body);

    for validator in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let revalidated = app
            .send(
                app.client
                    .get(&app.endpoint)
                    .query(&params)
                    .header("if-none-match", &validator),
            )
            .await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED, "{validator}");
        assert_eq!(revalidated.body, Value::String(String::new()));
        assert_eq!(revalidated.headers["etag"], etag.as_str());
        assert!(
            revalidated.headers["cache-control"]
                .to_str()
                .expect("ascii")
                .starts_with("public, max-age="),
        );
    }
    let changed = app
        .send(
            app.client
                .get(&app.endpoint)
                .query(&params)
                .header("if-none-match", "\"something-else\""),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body, first.body);
}

#[tokio::test]
async fn the_response_cache_bounds_the_life_of_an_answer_too() {
    let app = spawn_app_with(|settings| {
        settings.downstream.cache.max_ttl = Duration::from_secs(600);
        settings.gateway.response_cache.max_ttl = Duration::from_secs(7);
    })
    .await;
    let id = app.services.world.regular_product().to_owned();
    let variables = json!({ "id": id }).to_string();
    let answer = app
        .get(
            &[("query", PRODUCT), ("variables", variables.as_str())],
            None,
        )
        .await;
    let cache_control = answer.headers["cache-control"].to_str().expect("ascii");
    let max_age: u64 = cache_control
        .strip_prefix("public, max-age=")
        .expect("public")
        .parse()
        .expect("seconds");
    assert!(max_age <= 7, "{cache_control}");
}

#[tokio::test]
async fn documents_with_the_viewer_are_never_kept_and_users_never_share_an_answer() {
    let app = spawn_app().await;
    let world = &app.services.world;
    let (alice, bob) = (
        world.user_with_cart().to_owned(),
        world.user_without_cart().to_owned(),
    );
    let id = world.regular_product().to_owned();
    let query = "query($id: ID!) { product(id: $id) { id } viewer { id cart { itemCount } } }";
    for _ in 0..2 {
        for user in [&alice, &bob] {
            let answer = app
                .query(query, json!({ "id": id }), Some(&token(user)))
                .await;
            answer.assert_ok();
            assert_eq!(answer.data("/viewer/id"), user.as_str());
        }
    }
    // Even a viewer that is skipped keeps the document private.
    let skipped = "query($id: ID!) { product(id: $id) { id } viewer @skip(if: true) { id } }";
    for _ in 0..2 {
        app.query(skipped, json!({ "id": id }), None)
            .await
            .assert_ok();
    }
    assert_eq!(lookups(&app, "hit").await, 0.0);
    let private = app.get(&[("query", "{ viewer { id } }")], None).await;
    assert_eq!(private.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn answers_with_errors_or_lists_are_not_kept() {
    let app = spawn_app().await;
    for _ in 0..2 {
        let missing = app.query(PRODUCT, json!({ "id": "p-99999" }), None).await;
        assert_eq!(missing.codes(), vec!["NOT_FOUND"]);
        app.query("{ products(first: 3) { nodes { id } } }", json!({}), None)
            .await
            .assert_ok();
    }
    assert_eq!(lookups(&app, "hit").await, 0.0);
}

#[tokio::test]
async fn a_refused_token_is_401_even_when_the_answer_is_kept() {
    let app = spawn_app().await;
    let id = app.services.world.regular_product().to_owned();
    app.query(PRODUCT, json!({ "id": id }), None)
        .await
        .assert_ok();
    let refused = app
        .query(PRODUCT, json!({ "id": id }), Some("not-a-token"))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // A signed-in reader gets the kept public answer.
    let user = app.services.world.user_with_cart().to_owned();
    app.query(PRODUCT, json!({ "id": id }), Some(&token(&user)))
        .await
        .assert_ok();
    assert_eq!(lookups(&app, "hit").await, 1.0);
}

#[tokio::test]
async fn a_trusted_document_by_id_over_get_is_kept_and_public() {
    let app = spawn_app_with(|settings| {
        settings.gateway.trusted_documents.mode = bff_web::config::TrustedMode::Allow;
        settings.gateway.trusted_documents.manifests =
            vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("operations/manifest.json")];
    })
    .await;
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("operations/manifest.json"),
        )
        .expect("manifest"),
    )
    .expect("JSON");
    let document_id = manifest["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .find(|operation| operation["name"] == "Product")
        .and_then(|operation| operation["id"].as_str())
        .expect("the Product document in the manifest");
    let id = app.services.world.regular_product().to_owned();
    let variables = json!({ "id": id }).to_string();
    let params = [
        ("documentId", document_id),
        ("variables", variables.as_str()),
    ];
    let first = app.get(&params, None).await;
    first.assert_ok();
    let again = app.get(&params, None).await;
    assert_eq!(again.body, first.body);
    assert!(
        again.headers["cache-control"]
            .to_str()
            .expect("ascii")
            .starts_with("public, max-age=")
    );
    assert_eq!(lookups(&app, "hit").await, 1.0);
}

#[tokio::test]
async fn a_change_event_drops_the_kept_answers_on_every_replica() {
    let ten_minutes = Duration::from_secs(600);
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        2,
        |settings: &mut bff_web::WebSettings| {
            settings.downstream.cache.max_ttl = ten_minutes;
            settings.downstream.cache.event_driven_max_ttl = ten_minutes;
        },
        bff_web::build,
    )
    .await;
    let client = reqwest::Client::new();
    let world = &replicas.services.world;
    let id = world.regular_product().to_owned();
    let read = |replica: usize| {
        let request = client
            .post(format!(
                "{}{}",
                replicas.bases[replica], replicas.settings.gateway.path
            ))
            .json(&json!({ "query": PRODUCT, "variables": { "id": id } }));
        async move {
            let body: Value = request
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            assert!(body.get("errors").is_none(), "{body}");
            body["data"]["product"]["price"]["amountMinor"].clone()
        }
    };
    let hits = |replica: usize| {
        let url = replicas.metrics_urls[replica].clone();
        let client = client.clone();
        async move {
            sample(
                &scrape(&client, &url).await,
                "bff_graphql_response_cache_total",
                &[("outcome", "hit")],
            )
        }
    };
    for replica in 0..2 {
        read(replica).await;
        read(replica).await;
        assert_eq!(
            hits(replica).await,
            1.0,
            "replica {replica} keeps the answer"
        );
    }
    let old = world.product(&id).expect("seeded").price;
    let amount = old.amount_minor + 901;
    world
        .change_product(
            &id,
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
    for replica in 0..2 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while read(replica).await != amount {
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {replica} still answers the old price"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The new answer is kept in turn.
        let before = hits(replica).await;
        assert_eq!(read(replica).await, amount);
        assert_eq!(hits(replica).await, before + 1.0);
    }
}

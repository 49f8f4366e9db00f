//! Product bodies kept serialized with their `ETag`: a cached product answers the very bytes and
//! tag of its first answer, to every partner, `If-None-Match` gets `304`, and a product that
//! changed is answered anew (new bytes, new tag) once its cache entry is gone.

use std::time::Duration;

use axum::body::Bytes;
use reference_services::product::{Money, ProductChange};
use reqwest::{Method, StatusCode, header::HeaderMap};

use crate::helpers::{ACME_KEY, GLOBEX_KEY, TestApp, VERSIONS, header, spawn_app, spawn_app_with};

/// `GET path` with `key` and the given extra headers, read raw.
async fn get(
    app: &TestApp,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = app.request(Method::GET, path, Some(key));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("answered");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.expect("a body"))
}

/// Moves tokio's clock (the catalog cache's) forward without sleeping.
async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_cached_product_answers_the_bytes_and_tag_of_its_first_answer_and_304_when_named() {
    let app = spawn_app().await;
    let id = app.services.world.regular_product().to_owned();
    let mut tags = Vec::new();
    for version in VERSIONS {
        let path = format!("/{version}/products/{id}");
        let (status, first_headers, first) = get(&app, &path, ACME_KEY, &[]).await;
        assert_eq!(status, StatusCode::OK);
        let etag = header(&first_headers, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "a strong tag: {etag:?}"
        );
        assert_eq!(header(&first_headers, "content-type"), "application/json");

        // From the cache, for this partner and any other: the same bytes, the same tag.
        for key in [ACME_KEY, GLOBEX_KEY, ACME_KEY] {
            let (status, headers, bytes) = get(&app, &path, key, &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(bytes, first, "{version}: the bytes of the first answer");
            assert_eq!(header(&headers, "etag"), etag);
        }

        for named in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
        ] {
            let (status, headers, bytes) =
                get(&app, &path, GLOBEX_KEY, &[("if-none-match", &named)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{named}");
            assert!(bytes.is_empty(), "a 304 has no body");
            assert_eq!(header(&headers, "etag"), etag, "{named}");
        }
        // A client that takes compressed answers holds the weak tag of one, and is told that.
        let (status, headers, _) = get(
            &app,
            &path,
            ACME_KEY,
            &[
                ("if-none-match", &format!("W/{etag}")),
                ("accept-encoding", "gzip"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(header(&headers, "etag"), format!("W/{etag}"));

        let (status, headers, bytes) =
            get(&app, &path, ACME_KEY, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK, "another tag is not a match");
        assert_eq!(bytes, first);
        assert_eq!(header(&headers, "etag"), etag);

        // The key is checked before anything is revalidated.
        let response = app
            .request(Method::GET, &path, None)
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        tags.push(etag);
    }
    assert_ne!(tags[0], tags[1], "each version's body has its own tag");
}

#[tokio::test]
async fn a_changed_product_gets_new_bytes_and_a_new_tag_once_its_entry_expires() {
    let app = spawn_app_with(|settings| {
        settings.downstream.cache.max_ttl = Duration::from_secs(1);
        settings.downstream.cache.stale_while_revalidate = Duration::ZERO;
    })
    .await;
    let world = &app.services.world;
    let id = world.regular_product().to_owned();
    let path = format!("/v2/products/{id}");
    let (_, headers, before) = get(&app, &path, ACME_KEY, &[]).await;
    let old_tag = header(&headers, "etag").to_owned();

    let price = world.product(&id).expect("seeded").price.clone();
    let new_price = Money {
        amount_minor: price.amount_minor + 1234,
        currency: price.currency.clone(),
    };
    world
        .change_product(
            &id,
            &ProductChange {
                price: Some(new_price.clone()),
                ..ProductChange::default()
            },
        )
        .await
        .expect("changed");
    let (_, headers, bytes) = get(&app, &path, ACME_KEY, &[]).await;
    assert_eq!(bytes, before, "still fresh in the cache");
    assert_eq!(header(&headers, "etag"), old_tag);

    advance(Duration::from_secs(2)).await;
    let (status, headers, after) = get(&app, &path, ACME_KEY, &[("if-none-match", &old_tag)]).await;
    assert_eq!(status, StatusCode::OK, "the old tag no longer matches");
    let new_tag = header(&headers, "etag").to_owned();
    assert_ne!(new_tag, old_tag);
    let product: serde_json::Value = serde_json::from_slice(&after).expect("JSON");
    assert_eq!(product["price"]["amount_minor"], new_price.amount_minor);

    // And the new body is kept in turn, with its tag.
    let (status, _, bytes) = get(&app, &path, ACME_KEY, &[("if-none-match", &new_tag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(bytes.is_empty());
    let (_, headers, bytes) = get(&app, &path, GLOBEX_KEY, &[]).await;
    assert_eq!(bytes, after);
    assert_eq!(header(&headers, "etag"), new_tag);
}

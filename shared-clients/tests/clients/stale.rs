//! Serving stale, honestly: stale-while-revalidate answers from the cache at once with exactly one
//! background refresh however many readers, refreshes are conditional when an `ETag` is known,
//! stale-if-error hides a failing (down, open-breaker) service inside its window and not after,
//! product 404s are cached briefly, and every answer says how fresh it is.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reference_services::{Config, FaultMode, ServiceKind, spawn_all};
use shared_clients::{Downstream, DownstreamConfig, ErrorKind, Freshness, ServiceConfig};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    BatchResponder, asked_ids, cacheable, config, ctx, downstream, product_id, product_ids,
    product_json,
};
use crate::timing::{eventually, jump};

/// How many requests the mock server received.
async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

/// Mounts `GET /products/p-00001`: first `"v1"` fresh for 10 s, then (`refresh`) whatever comes.
async fn product_then(server: &MockServer, refresh: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 10).insert_header("etag", "\"v1\""))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(refresh)
        .mount(server)
        .await;
}

#[tokio::test]
async fn two_hundred_concurrent_reads_of_a_stale_product_are_answered_from_cache_with_one_refresh()
{
    let server = MockServer::start().await;
    let mut renamed = product_json("p-00001");
    renamed["name"] = "Renamed".into();
    product_then(
        &server,
        cacheable(renamed, 10)
            .insert_header("etag", "\"v2\"")
            .set_delay(Duration::from_millis(300)),
    )
    .await;
    let downstream = downstream(&server);
    let catalog = downstream.catalog();
    let first = catalog.product(&ctx(), &product_id(1)).await.unwrap();
    assert!(!first.is_stale());

    jump(Duration::from_secs(15)).await;
    let ctx = ctx();
    let id = product_id(1);
    let reads = join_all((0..200).map(|_| catalog.product(&ctx, &id))).await;
    for read in reads {
        let served = read.unwrap();
        assert!(Arc::ptr_eq(&served, &first), "answered from the cache");
        assert!(served.is_stale());
        assert!(
            served.age() >= Duration::from_secs(15),
            "{:?}",
            served.age()
        );
    }

    eventually("the refresh reached the service", || async {
        calls(&server).await == 2
    })
    .await;
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests[1].headers["if-none-match"], "\"v1\"",
        "a conditional refresh"
    );
    eventually("the refreshed product is served fresh", || async {
        let served = catalog.product(&ctx, &id).await.unwrap();
        !served.is_stale() && served.name == "Renamed"
    })
    .await;
    assert_eq!(calls(&server).await, 2, "exactly one refresh");

    let metrics = downstream.metrics();
    let products = metrics.cache("products").unwrap();
    assert!(products.stale_served >= 200);
    assert_eq!(products.refreshes, 1);
}

#[tokio::test]
async fn a_refresh_answered_not_modified_renews_the_cached_product() {
    let server = MockServer::start().await;
    product_then(
        &server,
        ResponseTemplate::new(304).insert_header("cache-control", "max-age=10"),
    )
    .await;
    let mut config = config(&server.uri());
    config.cache.stale_while_revalidate = Duration::ZERO;
    let downstream = Downstream::new(&config).unwrap();
    let catalog = downstream.catalog();
    let first = catalog.product(&ctx(), &product_id(1)).await.unwrap();
    jump(Duration::from_secs(11)).await;
    let renewed = catalog.product(&ctx(), &product_id(1)).await.unwrap();
    assert!(Arc::ptr_eq(&first, &renewed), "the cached product, kept");
    assert!(!renewed.is_stale());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[1].headers["if-none-match"], "\"v1\"");
    jump(Duration::from_secs(9)).await;
    catalog.product(&ctx(), &product_id(1)).await.unwrap();
    assert_eq!(calls(&server).await, 2, "fresh again for max-age");
    assert_eq!(
        downstream.metrics().cache("products").unwrap().not_modified,
        1
    );
}

#[tokio::test]
async fn while_the_product_service_is_down_stale_data_is_served_within_the_window_and_an_error_after()
 {
    let spawned = spawn_all(Config {
        products: 100,
        max_age: Duration::from_secs(10),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        ..DownstreamConfig::default()
    };
    config.cache.stale_while_revalidate = Duration::ZERO;
    config.cache.stale_if_error = Duration::from_secs(60);
    let downstream = Downstream::new(&config).unwrap();
    let catalog = downstream.catalog();
    let id = product_id(7);
    let fresh = catalog.product(&ctx(), &id).await.unwrap();
    let categories = catalog.categories(&ctx()).await.unwrap();
    assert!(!fresh.is_stale() && !categories.is_stale());

    spawned
        .world
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Down);
    jump(Duration::from_secs(30)).await;
    let stale = catalog.product(&ctx(), &id).await.unwrap();
    assert!(Arc::ptr_eq(&stale, &fresh));
    assert!(matches!(stale.freshness, Freshness::Stale { age } if age >= Duration::from_secs(30)));
    assert!(catalog.categories(&ctx()).await.unwrap().is_stale());
    let batch = catalog
        .products(&ctx(), std::slice::from_ref(&id))
        .await
        .unwrap();
    assert!(batch.is_stale() && batch.stale.contains_key(&id));

    // Past max-age (10 s) + stale-if-error (60 s): the error.
    jump(Duration::from_secs(41)).await;
    let err = catalog.product(&ctx(), &id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(catalog.categories(&ctx()).await.is_err());

    let metrics = downstream.metrics();
    assert_eq!(metrics.cache("products").unwrap().stale_if_error, 2);
    assert_eq!(metrics.cache("categories").unwrap().stale_if_error, 1);
}

#[tokio::test]
async fn an_open_breaker_is_hidden_by_stale_data_without_a_request() {
    let server = MockServer::start().await;
    product_then(&server, ResponseTemplate::new(503)).await;
    let mut config = config(&server.uri());
    config.cache.stale_while_revalidate = Duration::ZERO;
    config.product.retry.max_attempts = 1;
    config.product.breaker.minimum_calls = 3;
    // Still open when the cached product has expired.
    config.product.breaker.open_for = Duration::from_secs(60);
    let downstream = Downstream::new(&config).unwrap();
    let catalog = downstream.catalog();
    catalog.product(&ctx(), &product_id(1)).await.unwrap();
    for _ in 0..3 {
        catalog
            .client()
            .get(&ctx(), &product_id(1))
            .await
            .unwrap_err();
    }
    // Two failures in three calls opened the breaker: the third failure was not even sent.
    assert_eq!(calls(&server).await, 3, "the breaker is open now");
    jump(Duration::from_secs(11)).await;
    let served = catalog.product(&ctx(), &product_id(1)).await.unwrap();
    assert!(served.is_stale());
    assert_eq!(calls(&server).await, 3, "nothing was sent");
}

#[tokio::test]
async fn a_product_404_is_cached_briefly() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00404"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(BatchResponder {
            unknown: Arc::new(["p-00002".to_owned()].into()),
            ..BatchResponder::default()
        })
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let catalog = downstream.catalog();
    let unknown = product_id(404);
    for _ in 0..10 {
        let err = catalog.product(&ctx(), &unknown).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    assert_eq!(calls(&server).await, 1, "one request for ten reads");

    // A batch does not ask for an id known to be missing; ids a batch reports missing are
    // remembered too.
    let found = catalog
        .products(&ctx(), &[product_id(1), unknown.clone(), product_id(2)])
        .await
        .unwrap();
    assert_eq!(found.missing, [unknown.clone(), product_id(2)]);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(asked_ids(&requests[1]), ["p-00001", "p-00002"]);
    let err = catalog.product(&ctx(), &product_id(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(calls(&server).await, 2);

    // After the negative TTL (5 s by default) the service is asked again.
    jump(Duration::from_secs(5)).await;
    catalog.product(&ctx(), &unknown).await.unwrap_err();
    assert_eq!(calls(&server).await, 3);
    assert_eq!(
        downstream
            .metrics()
            .cache("products")
            .unwrap()
            .negative_hits,
        11
    );
}

#[tokio::test]
async fn stale_products_of_a_batch_are_answered_at_once_and_refreshed_in_one_batch_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(BatchResponder {
            delay: Duration::from_millis(200),
            ..BatchResponder::default()
        })
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let catalog = downstream.catalog();
    let ids = product_ids(1, 5);
    let fresh = catalog.products(&ctx(), &ids).await.unwrap();
    assert!(!fresh.is_stale() && fresh.stale.is_empty());

    // The responder's max-age is 30 s.
    jump(Duration::from_secs(31)).await;
    let stale = catalog.products(&ctx(), &ids).await.unwrap();
    assert_eq!(stale.found.len(), 5);
    assert!(stale.is_stale());
    assert_eq!(stale.stale.len(), 5);
    eventually("the refresh reached the service", || async {
        calls(&server).await == 2
    })
    .await;
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        asked_ids(&requests[1]).len(),
        5,
        "one batch call for the five"
    );
    eventually("the refreshed products are fresh", || async {
        !catalog.products(&ctx(), &ids).await.unwrap().is_stale()
    })
    .await;
    assert_eq!(calls(&server).await, 2);
}

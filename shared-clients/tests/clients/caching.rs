//! The catalog cache: hits make no call, TTL = min(max_ttl, max-age), misses coalesce, batches
//! fetch only what is missing, in concurrent calls of at most 100 ids.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use shared_clients::{Downstream, ErrorKind, ProductQuery};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    BatchResponder, asked_ids, cacheable, config, ctx, downstream, product_id, product_ids,
    product_json,
};

/// Mounts `GET /products/p-00001` answering with `max-age`.
async fn mount_product(server: &MockServer, max_age: u64) {
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), max_age))
        .mount(server)
        .await;
}

/// How many requests the mock server received.
async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_cached_product_is_served_without_a_downstream_call() {
    let server = MockServer::start().await;
    mount_product(&server, 30).await;
    let downstream = downstream(&server);
    let first = downstream
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap();
    let second = downstream
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the cached Arc is shared, not cloned"
    );
    assert_eq!(calls(&server).await, 1);
}

#[tokio::test]
async fn fresh_product_answers_only_from_the_cache_and_never_calls() {
    let server = MockServer::start().await;
    mount_product(&server, 30).await;
    let downstream = downstream(&server);
    let catalog = downstream.catalog();
    assert!(catalog.fresh_product(&product_id(1)).await.is_none());
    assert_eq!(calls(&server).await, 0, "a miss makes no call");
    let fetched = catalog.product(&ctx(), &product_id(1)).await.unwrap();
    let cached = catalog
        .fresh_product(&product_id(1))
        .await
        .expect("fresh once fetched");
    assert!(Arc::ptr_eq(&fetched, &cached));
    assert!(!cached.is_stale());
    assert_eq!(calls(&server).await, 1);
}

/// Reads p-00001 at once, again after `fresh_secs - 1` seconds (expected: cached) and after
/// `fresh_secs + 1` (expected: fetched again; the configuration must not serve it stale). Time is
/// paused only while no request is in flight: the clock is frozen and advanced to jump ahead, then
/// resumed for the next real request.
async fn assert_fresh_for(downstream: &Downstream, server: &MockServer, fresh_secs: u64) {
    let id = product_id(1);
    downstream.catalog().product(&ctx(), &id).await.unwrap();
    assert_eq!(calls(server).await, 1);

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(fresh_secs - 1)).await;
    downstream.catalog().product(&ctx(), &id).await.unwrap();
    assert_eq!(
        calls(server).await,
        1,
        "still fresh after {}s",
        fresh_secs - 1
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    downstream.catalog().product(&ctx(), &id).await.unwrap();
    assert_eq!(calls(server).await, 2, "expired after {}s", fresh_secs + 1);
}

#[tokio::test]
async fn the_ttl_is_the_response_max_age_when_it_is_below_max_ttl() {
    let server = MockServer::start().await;
    mount_product(&server, 10).await;
    let mut config = config(&server.uri());
    config.cache.max_ttl = Duration::from_secs(60);
    config.cache.stale_while_revalidate = Duration::ZERO;
    let downstream = Downstream::new(&config).unwrap();
    assert_fresh_for(&downstream, &server, 10).await;
}

#[tokio::test]
async fn the_ttl_is_max_ttl_when_the_response_allows_longer() {
    let server = MockServer::start().await;
    mount_product(&server, 3600).await;
    let mut config = config(&server.uri());
    config.cache.max_ttl = Duration::from_secs(20);
    config.cache.stale_while_revalidate = Duration::ZERO;
    let downstream = Downstream::new(&config).unwrap();
    assert_fresh_for(&downstream, &server, 20).await;
}

#[tokio::test]
async fn a_response_without_max_age_or_with_no_store_is_not_cached() {
    for cache_control in [None, Some("no-store"), Some("public, max-age=30, no-store")] {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(200).set_body_json(product_json("p-00001"));
        if let Some(value) = cache_control {
            response = response.insert_header("cache-control", value);
        }
        Mock::given(method("GET"))
            .respond_with(response)
            .mount(&server)
            .await;
        let downstream = downstream(&server);
        for _ in 0..3 {
            downstream
                .catalog()
                .product(&ctx(), &product_id(1))
                .await
                .unwrap();
        }
        assert_eq!(calls(&server).await, 3, "{cache_control:?}");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_misses_for_one_product_make_exactly_one_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let id = product_id(1);
    let ctx = ctx();
    let results = join_all((0..100).map(|_| downstream.catalog().product(&ctx, &id))).await;
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|p| p.id == id)));
}

#[tokio::test]
async fn concurrent_misses_on_a_multi_threaded_runtime_also_make_one_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let downstream = downstream.clone();
            runtime.spawn(async move { downstream.catalog().product(&ctx(), &product_id(1)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    runtime.shutdown_background();
}

#[tokio::test]
async fn concurrent_failures_are_shared_and_not_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(200)))
        .mount(&server)
        .await;
    // Without retries, so that one call is one request.
    let mut config = config(&server.uri());
    config.product.retry.max_attempts = 1;
    let downstream = Downstream::new(&config).unwrap();
    let id = product_id(1);
    let ctx = ctx();
    let results = join_all((0..20).map(|_| downstream.catalog().product(&ctx, &id))).await;
    assert!(results.iter().all(|r| {
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Unavailable)
    }));
    assert_eq!(calls(&server).await, 1);
    assert!(downstream.catalog().product(&ctx, &id).await.is_err());
    assert_eq!(calls(&server).await, 2);
}

/// Mounts the batch endpoint with `responder` and returns a catalog-backed downstream.
async fn batch_server(responder: BatchResponder) -> (MockServer, Downstream) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(responder)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    (server, downstream)
}

#[tokio::test]
async fn a_batch_of_50_with_30_cached_fetches_only_the_other_20() {
    let (server, downstream) = batch_server(BatchResponder::default()).await;
    let ids = product_ids(1, 50);
    // Warm the cache with the first 30 ids, in one call.
    let warm = downstream
        .catalog()
        .products(&ctx(), &ids[..30])
        .await
        .unwrap();
    assert_eq!(warm.found.len(), 30);

    let all = downstream.catalog().products(&ctx(), &ids).await.unwrap();
    let found: Vec<_> = all.found.iter().map(|p| p.id.clone()).collect();
    assert_eq!(found, ids, "every product, in the order asked");
    assert!(all.missing.is_empty());

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let second: HashSet<String> = asked_ids(&requests[1]).into_iter().collect();
    let expected: HashSet<String> = ids[30..].iter().map(|id| id.to_string()).collect();
    assert_eq!(second, expected);
}

#[tokio::test]
async fn more_than_100_missing_ids_are_fetched_in_concurrent_batches_of_at_most_100() {
    let responder = BatchResponder {
        delay: Duration::from_millis(600),
        ..BatchResponder::default()
    };
    let (server, downstream) = batch_server(responder.clone()).await;
    let ids = product_ids(1, 250);
    let found = downstream.catalog().products(&ctx(), &ids).await.unwrap();
    assert_eq!(found.found.len(), 250);

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    let mut asked = HashSet::new();
    for request in &requests {
        let batch = asked_ids(request);
        assert!(batch.len() <= 100, "a batch of {}", batch.len());
        asked.extend(batch);
    }
    assert_eq!(asked.len(), 250, "each id asked exactly once");

    // Sequential calls would arrive at least one response time (600 ms) apart.
    let arrivals = responder.arrivals.lock().unwrap().clone();
    let first = arrivals.iter().min().unwrap();
    let spread = arrivals.iter().max().unwrap().duration_since(*first);
    assert!(
        spread < responder.delay,
        "batches were not concurrent: {spread:?}"
    );
}

#[tokio::test]
async fn duplicate_ids_are_fetched_once_and_unknown_ids_are_reported_missing() {
    let responder = BatchResponder {
        unknown: Arc::new(["p-00002".to_owned()].into()),
        ..BatchResponder::default()
    };
    let (server, downstream) = batch_server(responder).await;
    let ids = [
        product_id(3),
        product_id(2),
        product_id(3),
        product_id(1),
        product_id(2),
    ];
    let answer = downstream.catalog().products(&ctx(), &ids).await.unwrap();
    let found: Vec<_> = answer.found.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(found, ["p-00003", "p-00001"]);
    assert_eq!(answer.missing, [product_id(2)]);

    let requests = server.received_requests().await.unwrap();
    assert_eq!(asked_ids(&requests[0]), ["p-00003", "p-00002", "p-00001"]);

    let map = answer.into_map();
    assert!(map.contains_key(&product_id(1)) && !map.contains_key(&product_id(2)));
}

#[tokio::test]
async fn a_batch_joins_a_single_read_already_in_flight_for_one_of_its_ids() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(BatchResponder::default())
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let catalog = downstream.catalog();
    let (ctx, id) = (ctx(), product_id(1));
    let batch_ids = [product_id(1), product_id(2)];
    let (single, batch) = futures::join!(
        catalog.product(&ctx, &id),
        catalog.products(&ctx, &batch_ids),
    );
    let single = single.unwrap();
    let batch = batch.unwrap();
    assert!(
        Arc::ptr_eq(&single, &batch.found[0]),
        "the batch got the single read's product"
    );
    let requests = server.received_requests().await.unwrap();
    let batch_request = requests
        .iter()
        .find(|r| r.url.path() == "/products")
        .unwrap();
    assert_eq!(asked_ids(batch_request), ["p-00002"]);
}

#[tokio::test]
async fn a_product_fetched_by_a_batch_is_then_served_from_the_cache() {
    let (server, downstream) = batch_server(BatchResponder::default()).await;
    downstream
        .catalog()
        .products(&ctx(), &product_ids(1, 3))
        .await
        .unwrap();
    downstream
        .catalog()
        .product(&ctx(), &product_id(2))
        .await
        .unwrap();
    assert_eq!(calls(&server).await, 1);
}

#[tokio::test]
async fn a_failed_batch_fails_the_whole_answer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .products(&ctx(), &product_ids(1, 5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn categories_are_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/categories"))
        .respond_with(cacheable(
            json!({ "items": [{ "id": "c-1", "name": "Shoes" }] }),
            300,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let first = downstream.catalog().categories(&ctx()).await.unwrap();
    let second = downstream.catalog().categories(&ctx()).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(first[0].name, "Shoes");
}

#[tokio::test]
async fn the_products_of_a_listed_page_are_cached_by_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(cacheable(
            json!({ "items": [product_json("p-00001"), product_json("p-00002")], "next_cursor": "c2" }),
            30,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let page = downstream
        .catalog()
        .list(&ctx(), &ProductQuery::default())
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("c2"));
    let product = downstream
        .catalog()
        .product(&ctx(), &product_id(2))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&product, &page.items[1]));
}

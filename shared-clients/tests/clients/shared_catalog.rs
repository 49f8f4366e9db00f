//! The catalog across replicas: several independent `Downstream`s (replicas) over one real
//! Redis (of the topology `BFF_TEST_REDIS_TOPOLOGY` names) and the reference services. A product one replica fetched is a hit for the
//! others (L2); replicas that miss the same key at once make one call between them (leases);
//! Redis down or holding garbage changes nothing but the counters.

use std::sync::Arc;
use std::time::Duration;

use reference_services::{Config, ServiceKind, Spawned, TestRedis, spawn_all};
use shared_clients::{Downstream, DownstreamConfig, ServiceConfig, SharedConfig};

use crate::helpers::{ctx, product_id, product_ids, shared_over, test_redis};

/// The reference services (product latency `latency`), one Redis, and `count` replicas.
async fn replicas(count: usize, latency: Duration) -> (Spawned, TestRedis, Vec<Downstream>) {
    let redis = test_redis().await;
    let spawned = spawn_all(Config::default())
        .await
        .expect("reference services start");
    let product = spawned.world.admin(ServiceKind::Product);
    let mut faults = product.faults();
    faults.latency = latency;
    product.set_faults(faults);
    let config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    let shared = SharedConfig {
        retry_after: Duration::from_millis(100),
        // A loaded test machine must not turn a slow command into a fallback.
        command_timeout: Duration::from_secs(2),
        ..shared_over(&redis)
    };
    let downstreams = (0..count)
        .map(|_| Downstream::new_shared(&config, &shared).expect("valid settings"))
        .collect();
    (spawned, redis, downstreams)
}

/// Requests the product service received.
fn product_calls(spawned: &Spawned) -> u64 {
    spawned.world.admin(ServiceKind::Product).stats().total
}

/// A counter of the products cache of `downstream`.
fn products_cache(downstream: &Downstream) -> shared_clients::CacheMetricsSnapshot {
    downstream
        .metrics()
        .caches
        .into_iter()
        .find(|cache| cache.cache == "products")
        .expect("the products cache")
}

#[tokio::test]
async fn three_hundred_concurrent_misses_over_three_replicas_make_one_call() {
    let (spawned, _redis, replicas) = replicas(3, Duration::from_millis(50)).await;
    let replicas = Arc::new(replicas);
    let id = product_id(7);
    let reads = (0..300).map(|n| {
        let (replicas, id) = (Arc::clone(&replicas), id.clone());
        tokio::spawn(async move { replicas[n % 3].catalog().product(&ctx(), &id).await })
    });
    for read in futures::future::join_all(reads).await {
        let product = read.expect("no panic").expect("the product");
        assert_eq!(product.into_inner().id, id);
    }
    assert_eq!(product_calls(&spawned), 1, "one call for three replicas");
    let shared: u64 = replicas.iter().map(|r| products_cache(r).l2_hits).sum();
    assert_eq!(shared, 2, "the two other replicas took the holder's value");
}

#[tokio::test]
async fn a_new_replica_starts_warm_and_batches_share_too() {
    let (spawned, _redis, replicas) = replicas(3, Duration::from_millis(20)).await;
    let ids = product_ids(10, 12);
    let (a, b) = (&replicas[0], &replicas[1]);
    let found = a.catalog().products(&ctx(), &ids).await.expect("found");
    assert_eq!(found.found.len(), ids.len());
    let after_first = product_calls(&spawned);
    assert_eq!(after_first, 1, "one batch call");
    // Another replica, cold in its own memory, answers from Redis: no call.
    let found = b.catalog().products(&ctx(), &ids).await.expect("found");
    assert_eq!(found.found.len(), ids.len());
    assert!(!found.is_stale());
    let single = b
        .catalog()
        .product(&ctx(), &product_id(30))
        .await
        .expect("found");
    assert_eq!(single.into_inner().id, product_id(30));
    assert_eq!(
        product_calls(&spawned),
        after_first + 1,
        "only p-00030 fetched"
    );
    assert_eq!(products_cache(b).l2_hits, ids.len() as u64);
    // The third replica gets p-00030 from Redis as well.
    replicas[2]
        .catalog()
        .product(&ctx(), &product_id(30))
        .await
        .expect("found");
    assert_eq!(product_calls(&spawned), after_first + 1);
    // Categories too.
    a.catalog().categories(&ctx()).await.expect("categories");
    let calls = product_calls(&spawned);
    b.catalog().categories(&ctx()).await.expect("categories");
    assert_eq!(product_calls(&spawned), calls);
}

#[tokio::test]
async fn concurrent_batches_over_three_replicas_fetch_each_product_once() {
    let (spawned, _redis, replicas) = replicas(3, Duration::from_millis(50)).await;
    let replicas = Arc::new(replicas);
    let ids = Arc::new(product_ids(40, 20));
    let reads = (0..30).map(|n| {
        let (replicas, ids) = (Arc::clone(&replicas), Arc::clone(&ids));
        tokio::spawn(async move { replicas[n % 3].catalog().products(&ctx(), &ids).await })
    });
    for read in futures::future::join_all(reads).await {
        let found = read.expect("no panic").expect("found");
        assert_eq!(found.found.len(), 20);
    }
    assert_eq!(product_calls(&spawned), 1);
}

#[tokio::test]
async fn garbage_in_redis_is_a_miss_and_an_outage_changes_nothing_but_counters() {
    let (spawned, mut redis, replicas) = replicas(2, Duration::ZERO).await;
    let id = product_id(3);
    let reply = redis
        .command("SET bff:{cat:p:p-00003} {at:1,ttl:99999999999,value:truncat")
        .await
        .expect("redis answers");
    assert!(reply.starts_with("+OK"), "{reply}");
    let product = replicas[0]
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("fetched despite the garbage");
    assert_eq!(product.into_inner().id, id);
    assert_eq!(product_calls(&spawned), 1);
    let redis_metrics = replicas[0].metrics().redis.expect("redis metrics");
    assert!(
        redis_metrics
            .errors
            .iter()
            .any(|(op, n)| *op == "l2_decode" && *n >= 1),
        "{redis_metrics:?}"
    );

    redis.stop().await.expect("redis stops");
    let calls = product_calls(&spawned);
    // Still answered; in-process coalescing still makes one call per replica for a burst.
    let replica = &replicas[1];
    let (request, nine) = (ctx(), product_id(9));
    let burst = (0..50).map(|_| replica.catalog().product(&request, &nine));
    for read in futures::future::join_all(burst).await {
        read.expect("answered without Redis");
    }
    assert_eq!(product_calls(&spawned), calls + 1);
    let fallbacks = replica.metrics().redis.expect("redis metrics").fallbacks;
    let l2 = fallbacks
        .iter()
        .find(|(feature, _)| *feature == "catalog_l2")
        .map_or(0, |(_, n)| *n);
    assert!(l2 >= 1, "{fallbacks:?}");
}

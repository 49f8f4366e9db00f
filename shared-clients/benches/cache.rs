//! Micro-benchmarks of the catalog cache, through its public API ([`Catalog`]).
//!
//! - `product/hit`: one product, fresh in the cache (no I/O).
//! - `product/stale`: one product past its freshness while the product service is down: served
//!   from the cache at once, a background refresh attempted (and failing fast).
//! - `products/batch_20_half_cached`: a batch of 20 ids of which 10 are cached; the other 10 are
//!   fetched in one batch call from an in-process reference product service on loopback (no
//!   injected latency), so this includes one real HTTP round trip.
//! - `products/batch_20_all_cached`: the same batch, every id cached.
//!
//! Run: `cargo bench -p shared-clients --bench cache`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use shared_clients::{
    CacheConfig, Catalog, Freshness, ProductClient, ProductId, RequestContext, ServiceConfig,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(url: &str) -> ProductClient {
    ProductClient::new(&ServiceConfig {
        url: url.to_owned(),
        ..ServiceConfig::default()
    })
    .expect("product client")
}

fn ids(range: std::ops::Range<u32>) -> Vec<ProductId> {
    range
        .map(|n| ProductId::parse(&format!("p-{n:05}")).expect("product id"))
        .collect()
}

fn cache_benches(c: &mut Criterion) {
    let rt = runtime();
    let services = rt
        .block_on(reference_services::spawn_all(
            reference_services::Config::default(),
        ))
        .expect("reference services");
    let product = client(&services.product_url);
    let ctx = RequestContext::new();

    // A fresh hit.
    let catalog = Catalog::new(product.clone(), &CacheConfig::default());
    let one = ids(1..2).remove(0);
    rt.block_on(catalog.product(&ctx, &one)).expect("warm");
    let mut group = c.benchmark_group("product");
    group.bench_function("hit", |b| {
        b.to_async(&rt)
            .iter(|| async { catalog.product(&ctx, &one).await.expect("hit") });
    });

    // Batches: all cached, and half cached (a fresh catalog per iteration, set up untimed).
    let batch = ids(100..120);
    rt.block_on(catalog.products(&ctx, &batch)).expect("warm");
    drop(group);
    let mut group = c.benchmark_group("products");
    group.bench_function("batch_20_all_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { catalog.products(&ctx, &batch).await.expect("batch") });
    });
    group.bench_function("batch_20_half_cached", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (product, ctx, batch) = (product.clone(), ctx.clone(), batch.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = Catalog::new(product.clone(), &CacheConfig::default());
                    fresh.products(&ctx, &batch[..10]).await.expect("warm half");
                    let start = Instant::now();
                    let found = fresh.products(&ctx, &batch).await.expect("batch");
                    total += start.elapsed();
                    assert!(found.missing.is_empty());
                }
                total
            }
        });
    });
    drop(group);

    // Stale: short freshness, long stale-if-error, then the service goes away.
    let stale_config = CacheConfig {
        max_ttl: Duration::from_millis(20),
        stale_while_revalidate: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(3600),
        ..CacheConfig::default()
    };
    let stale_catalog = Catalog::new(product.clone(), &stale_config);
    rt.block_on(stale_catalog.product(&ctx, &one))
        .expect("warm");
    rt.block_on(services.shutdown());
    std::thread::sleep(Duration::from_millis(50));
    let served = rt
        .block_on(stale_catalog.product(&ctx, &one))
        .expect("stale");
    assert!(
        matches!(served.freshness, Freshness::Stale { .. }),
        "expected a stale entry, got {:?}",
        served.freshness
    );
    let mut group = c.benchmark_group("product");
    group.bench_function("stale", |b| {
        b.to_async(&rt)
            .iter(|| async { stale_catalog.product(&ctx, &one).await.expect("stale") });
    });
    group.finish();
}

criterion_group!(benches, cache_benches);
criterion_main!(benches);

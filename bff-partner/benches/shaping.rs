//! Micro-benchmarks of partner payload shaping, v1 and v2, through the public API: the gateway's
//! routes ([`bff_partner::build`]) called with `tower::ServiceExt::oneshot` (no socket) over a
//! warm catalog cache, so each iteration is API-key authentication, the rate limiter, the handler,
//! the version's shaping and JSON serialization. `*/product`: no downstream call. `*/list_20`:
//! catalog pages are never cached, so these include one call to an in-process reference product
//! service on loopback (no injected latency).
//!
//! Run: `cargo bench -p bff-partner --bench shaping`.

use axum::{Router, body::Body};
use bff_partner::{
    PartnerSettings,
    auth::Scope,
    config::{KeyConfig, RateLimitConfig},
    hash_key,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use shared_clients::PartnerId;
use tower::ServiceExt;

const KEY: &str = "bench-partner-key-0123456789abcdef";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Sends one authenticated GET through the routes; the status and the body's length.
async fn get(routes: &Router, path: &str) -> (StatusCode, usize) {
    let request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::empty())
        .expect("request");
    let response = routes.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, body.len())
}

fn shaping_benches(c: &mut Criterion) {
    let rt = runtime();
    let services = rt
        .block_on(reference_services::spawn_all(
            reference_services::Config::default(),
        ))
        .expect("reference services");
    let mut settings = PartnerSettings::default();
    settings.downstream.product.url = services.product_url.clone();
    settings.downstream.cart.url = services.cart_url.clone();
    settings.downstream.order.url = services.order_url.clone();
    settings.gateway.keys = vec![KeyConfig {
        sha256: hash_key(KEY),
        partner_id: PartnerId::parse("partner-acme").expect("partner id"),
        scopes: vec![Scope::CatalogRead],
        // Never the limit: the limiter runs, but benchmarks are not throttled.
        rate_limit: Some(RateLimitConfig {
            per_second: 1_000_000_000,
            burst: 1_000_000_000,
        }),
    }];
    settings.validate().expect("valid settings");
    let routes = rt.block_on(async {
        bff_partner::build(&settings)
            .expect("gateway builds")
            .routes
    });

    let cases = [
        ("v1", "product", "/v1/products/p-00004"),
        ("v2", "product", "/v2/products/p-00004"),
        ("v1", "list_20", "/v1/products?limit=20"),
        ("v2", "list_20", "/v2/products?limit=20"),
    ];
    for (group, name, path) in cases {
        let (status, _) = rt.block_on(get(&routes, path));
        assert_eq!(status, StatusCode::OK, "{path} warms the cache");
        c.benchmark_group(group).bench_function(name, |b| {
            b.to_async(&rt).iter(|| get(&routes, path));
        });
    }
}

criterion_group!(benches, shaping_benches);
criterion_main!(benches);

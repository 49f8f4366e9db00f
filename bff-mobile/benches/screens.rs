//! Micro-benchmarks of mobile payload shaping and ETag revalidation, through the public API: the
//! gateway's routes ([`bff_mobile::build`]) called with `tower::ServiceExt::oneshot` (no socket)
//! over a warm catalog cache, so each iteration is the handler, the screen shaping, the JSON
//! serialization and the `ETag` middleware.
//!
//! - `product/detail`: one product page — no downstream call.
//! - `home/anonymous`: featured products and categories; `products/list_20` and
//!   `products/list_50`: a product list page. Catalog pages are never cached, so these include
//!   one call to an in-process reference product service on loopback (no injected latency).
//! - `etag/list_50_not_modified`: the list page with a matching `If-None-Match`: the body is
//!   still shaped and hashed, then a `304` is answered (ETag computation is not public API on its
//!   own; the difference to `products/list_50` is what the 304 saves).
//!
//! Run: `cargo bench -p bff-mobile --bench screens`.

use axum::{Router, body::Body};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Sends one GET through the routes; the status, the `ETag` and the body's length.
async fn get(
    routes: &Router,
    path: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, String, usize) {
    let mut request = Request::get(path);
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let response = routes
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, etag, body.len())
}

fn screen_benches(c: &mut Criterion) {
    let rt = runtime();
    let services = rt
        .block_on(reference_services::spawn_all(
            reference_services::Config::default(),
        ))
        .expect("reference services");
    let mut settings = bff_mobile::MobileSettings::default();
    settings.downstream.product.url = services.product_url.clone();
    settings.downstream.cart.url = services.cart_url.clone();
    settings.downstream.order.url = services.order_url.clone();
    let routes =
        rt.block_on(async { bff_mobile::build(&settings).expect("gateway builds").routes });

    let cases = [
        ("home", "anonymous", "/m/v1/home"),
        ("products", "list_20", "/m/v1/products?limit=20"),
        ("products", "list_50", "/m/v1/products?limit=50"),
        ("product", "detail", "/m/v1/products/p-00004"),
    ];
    for (group, name, path) in cases {
        let (status, _, _) = rt.block_on(get(&routes, path, None));
        assert_eq!(status, StatusCode::OK, "{path} warms the cache");
        c.benchmark_group(group).bench_function(name, |b| {
            b.to_async(&rt).iter(|| get(&routes, path, None));
        });
    }

    let path = "/m/v1/products?limit=50";
    let (_, etag, _) = rt.block_on(get(&routes, path, None));
    let (status, _, _) = rt.block_on(get(&routes, path, Some(&etag)));
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    c.benchmark_group("etag")
        .bench_function("list_50_not_modified", |b| {
            b.to_async(&rt).iter(|| get(&routes, path, Some(&etag)));
        });
}

criterion_group!(benches, screen_benches);
criterion_main!(benches);

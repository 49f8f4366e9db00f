//! Micro-benchmark of GraphQL execution, through the public API: the gateway's routes
//! ([`bff_web::build`]) called with `tower::ServiceExt::oneshot` (no socket).
//!
//! - `graphql/product`: a product query over a warm catalog cache, the response cache off:
//!   parsing, validation and limits, execution through the per-request DataLoader, JSON
//!   serialization — no downstream call.
//! - `graphql/product_response_cache_hit`: the same query with the response cache on (the
//!   default): after the first, every request is answered with the stored bytes (the request
//!   read and parsed, its key hashed, no validation or execution).
//! - `graphql/product_by_id`: the same product query named by `documentId`, a trusted document
//!   of a manifest (`gateway.trusted_documents.mode = "allow"`), the response cache off: no
//!   parsing, and of async-graphql's validation only what depends on the variables (complexity,
//!   depth).
//! - `graphql/products_20`: a page of 20 products. Catalog pages are never cached, so this
//!   includes one call to an in-process reference product service on loopback (no injected
//!   latency); the products on the page do not go through the DataLoader.
//!
//! Run: `cargo bench -p bff-web --bench graphql`.

use axum::{Router, body::Body};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use tower::ServiceExt;

const PRODUCT_QUERY: &str = "query Product($id: ID!) { product(id: $id) { id name brand \
    description price { formatted } listPrice { formatted } discountPercentage \
    availability { status quantity } rating { average count } image(width: 600) { url width height alt } } }";

const LIST_QUERY: &str = "{ products(first: 20) { edges { node { id name price { formatted } \
    image(width: 300) { url } } } } }";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Posts one GraphQL document through the routes; the status and the body.
async fn post(routes: &Router, body: &'static str) -> (StatusCode, axum::body::Bytes) {
    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let response = routes.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, body)
}

fn graphql_benches(c: &mut Criterion) {
    let rt = runtime();
    let services = rt
        .block_on(reference_services::spawn_all(
            reference_services::Config::default(),
        ))
        .expect("reference services");
    let mut settings = bff_web::WebSettings::default();
    settings.downstream.product.url = services.product_url.clone();
    settings.downstream.cart.url = services.cart_url.clone();
    settings.downstream.order.url = services.order_url.clone();
    let cached_routes =
        rt.block_on(async { bff_web::build(&settings).expect("gateway builds").routes });
    // Execution itself is measured with the response cache off.
    settings.gateway.response_cache.enabled = false;
    let routes = rt.block_on(async { bff_web::build(&settings).expect("gateway builds").routes });
    // The same gateway with the product query in a trusted-document manifest.
    let manifest = std::env::temp_dir().join(format!("bff-web-bench-{}.json", std::process::id()));
    let id = bff_web::apq::sha256_hex(PRODUCT_QUERY);
    std::fs::write(
        &manifest,
        serde_json::json!({ format!("sha256:{id}"): PRODUCT_QUERY }).to_string(),
    )
    .expect("manifest written");
    let mut trusted_settings = settings.clone();
    trusted_settings.gateway.trusted_documents.mode = bff_web::config::TrustedMode::Allow;
    trusted_settings.gateway.trusted_documents.manifests = vec![manifest.clone()];
    let trusted_routes = rt.block_on(async {
        bff_web::build(&trusted_settings)
            .expect("gateway builds")
            .routes
    });
    std::fs::remove_file(&manifest).ok();

    let product: &'static str = Box::leak(
        serde_json::json!({"query": PRODUCT_QUERY, "variables": {"id": "p-00004"}})
            .to_string()
            .into_boxed_str(),
    );
    let list: &'static str = Box::leak(
        serde_json::json!({"query": LIST_QUERY})
            .to_string()
            .into_boxed_str(),
    );
    let by_id: &'static str = Box::leak(
        serde_json::json!({"documentId": id, "variables": {"id": "p-00004"}})
            .to_string()
            .into_boxed_str(),
    );
    for (name, routes, body) in [
        ("product", &routes, product),
        ("product_response_cache_hit", &cached_routes, product),
        ("product_by_id", &trusted_routes, by_id),
        ("products_20", &routes, list),
    ] {
        let (status, answer) = rt.block_on(post(routes, body));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            status == StatusCode::OK && !text.contains("\"errors\""),
            "{name} warms the cache: {status} {text}"
        );
        c.benchmark_group("graphql").bench_function(name, |b| {
            b.to_async(&rt).iter(|| post(routes, body));
        });
    }
}

criterion_group!(benches, graphql_benches);
criterion_main!(benches);

//! What operators see: `/metrics` after real requests, and trace context reaching the services.

use std::collections::BTreeSet;

use reference_services::{FaultMode, ServiceKind};

use server_kit::testing::{sample, scrape};

use crate::helpers::{TestApp, spawn_app};

impl TestApp {
    /// `GET /metrics`, as Prometheus scrapes it.
    async fn scrape(&self) -> String {
        scrape(&self.client, &self.metrics_url).await
    }

    /// The ids of the first `n` products, asked of the product service directly (the list
    /// screen would put them in the gateway's cache).
    async fn first_product_ids(&self, n: usize) -> Vec<String> {
        let page: serde_json::Value = self
            .client
            .get(format!(
                "{}/products?limit={n}",
                self.downstream.product_url
            ))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

#[tokio::test]
async fn metrics_count_requests_per_route_template_and_the_product_cache_hit_ratio() {
    let app = spawn_app().await;
    let ids = app.first_product_ids(1).await;
    for _ in 0..4 {
        assert_eq!(app.product(&ids[0]).await.status, 200);
    }
    let text = app.scrape().await;

    let product_route = [
        ("gateway", "bff-mobile"),
        ("method", "GET"),
        ("route", "/m/v1/products/{product_id}"),
    ];
    let ok = [product_route.as_slice(), &[("status_class", "2xx")]].concat();
    assert_eq!(sample(&text, "bff_http_requests_total", &ok), 4.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "bff_http_request_duration_seconds_count",
            &product_route
        ),
        4.0
    );
    assert!(!text.contains(&ids[0]), "a raw path leaked into a label");
    assert!(text.contains("# TYPE bff_http_requests_in_flight gauge"));

    // The first lookup missed, the next three were fresh hits: a hit ratio of 3/4.
    let cache = [("cache", "products")];
    let hits = sample(&text, "bff_cache_hits_total", &cache);
    let misses = sample(&text, "bff_cache_misses_total", &cache);
    assert_eq!((hits, misses), (3.0, 1.0), "{text}");
    assert_eq!(hits / (hits + misses), 0.75);
    // The size gauges are approximate (the store counts lazily); they are there.
    assert!(text.contains("# TYPE bff_cache_entries gauge"));
    assert!(text.contains("# TYPE bff_cache_bytes gauge"));

    let product = [("gateway", "bff-mobile"), ("service", "product")];
    let calls = sample(&text, "bff_downstream_calls_total", &product);
    assert!(calls >= 1.0, "{calls}");
    assert_eq!(
        sample(&text, "bff_downstream_successes_total", &product),
        calls
    );
    assert_eq!(
        sample(
            &text,
            "bff_downstream_request_duration_seconds_count",
            &product
        ),
        calls
    );
    assert_eq!(
        sample(
            &text,
            "bff_downstream_request_duration_seconds_bucket",
            &[("service", "product"), ("le", "+Inf")]
        ),
        calls
    );
    assert_eq!(
        sample(
            &text,
            "bff_downstream_breaker_state",
            &[("service", "product"), ("state", "closed")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_failing_downstream_is_counted_by_error_class() {
    let app = spawn_app().await;
    let ids = app.first_product_ids(2).await;
    app.world()
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Failing);
    // Never fetched before: nothing stale to fall back on.
    let answer = app.product(&ids[1]).await;
    assert!(answer.status.is_server_error(), "{}", answer.status);
    let text = app.scrape().await;

    let product = [("service", "product")];
    let unavailable = [("service", "product"), ("class", "UNAVAILABLE")];
    assert_eq!(
        sample(&text, "bff_downstream_errors_total", &unavailable),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "bff_downstream_errors_total",
            &[("service", "product"), ("class", "TIMEOUT")]
        ),
        0.0
    );
    let attempts = sample(&text, "bff_downstream_attempts_total", &product);
    let retries = sample(&text, "bff_downstream_retries_total", &product);
    assert_eq!(attempts, 1.0 + retries, "the product and its retries");
    assert_eq!(
        sample(
            &text,
            "bff_http_requests_total",
            &[
                ("route", "/m/v1/products/{product_id}"),
                ("status_class", "5xx")
            ]
        ),
        1.0
    );
}

/// The trace ids of the `traceparent`s every service received.
fn trace_ids(app: &TestApp) -> Vec<String> {
    ServiceKind::ALL
        .into_iter()
        .flat_map(|kind| app.world().admin(kind).requests())
        .map(|request| {
            let traceparent = request
                .headers
                .get("traceparent")
                .unwrap_or_else(|| panic!("{} got no traceparent", request.route));
            shared_clients::TraceParent::parse(traceparent).expect("a valid traceparent");
            traceparent
                .split('-')
                .nth(1)
                .expect("a trace id")
                .to_owned()
        })
        .collect()
}

fn reset(app: &TestApp) {
    for kind in ServiceKind::ALL {
        app.world().admin(kind).reset();
    }
}

#[tokio::test]
async fn an_inbound_traceparent_reaches_every_service_with_the_same_trace_id() {
    let app = spawn_app().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = app
        .send(
            app.request(reqwest::Method::GET, "/home", Some("user-1"))
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")),
        )
        .await;
    assert_eq!(answer.status, 200);
    let ids = trace_ids(&app);
    assert!(ids.len() >= 2, "home calls several services: {ids:?}");
    assert!(ids.iter().all(|id| id == trace_id), "{ids:?}");
}

#[tokio::test]
async fn without_a_traceparent_one_is_generated_and_shared_by_every_call_of_a_request() {
    let app = spawn_app().await;
    assert_eq!(app.home(Some("user-1")).await.status, 200);
    let first: BTreeSet<String> = trace_ids(&app).into_iter().collect();
    assert_eq!(first.len(), 1, "one trace per request: {first:?}");

    reset(&app);
    // A malformed one is replaced, as if there were none. (Another user: the first one's cart
    // and the home page are cached now, and a request that calls nothing has no trace to show.)
    let answer = app
        .send(
            app.request(reqwest::Method::GET, "/home", Some("user-2"))
                .header("traceparent", "not-a-traceparent"),
        )
        .await;
    assert_eq!(answer.status, 200);
    let second: BTreeSet<String> = trace_ids(&app).into_iter().collect();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "each request starts its own trace");
}

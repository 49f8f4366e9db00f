//! What operators see: partner requests and 429s per partner id, and throttled authentication,
//! in `/metrics`.

use std::time::Duration;

use bff_partner::config::AuthFailureLimitConfig;
use reqwest::StatusCode;

use server_kit::testing::{sample, scrape};

use crate::helpers::{
    ACME_KEY, CATALOG_ONLY_KEY, TIGHT_BURST, TIGHT_KEY, TestApp, spawn_app, spawn_app_with,
};

impl TestApp {
    /// `GET /metrics`, as Prometheus scrapes it.
    async fn scrape(&self) -> String {
        scrape(&self.client, &self.metrics_url).await
    }
}

#[tokio::test]
async fn requests_and_429s_are_counted_per_partner_never_per_key() {
    let app = spawn_app().await;
    for _ in 0..TIGHT_BURST {
        assert_eq!(
            app.get_as("/v2/categories", Some(TIGHT_KEY)).await.status(),
            StatusCode::OK
        );
    }
    let refused = app.get_as("/v2/categories", Some(TIGHT_KEY)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Two keys of one partner count as that partner.
    assert_eq!(
        app.get_as("/v1/categories", Some(ACME_KEY)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get_as("/v2/categories", Some(CATALOG_ONLY_KEY))
            .await
            .status(),
        StatusCode::OK
    );
    let text = app.scrape().await;

    let initech = [("gateway", "bff-partner"), ("partner", "partner-initech")];
    let acme = [("partner", "partner-acme")];
    let burst = f64::from(TIGHT_BURST);
    assert_eq!(
        sample(&text, "bff_partner_requests_total", &initech),
        burst + 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "bff_partner_rate_limited_total", &initech),
        1.0
    );
    assert_eq!(sample(&text, "bff_partner_requests_total", &acme), 2.0);
    assert_eq!(sample(&text, "bff_partner_rate_limited_total", &acme), 0.0);
    for key in [TIGHT_KEY, ACME_KEY, CATALOG_ONLY_KEY] {
        assert!(!text.contains(key), "a key leaked into the metrics");
        assert!(!text.contains(&bff_partner::hash_key(key)));
    }
    assert_eq!(
        sample(
            &text,
            "bff_http_requests_total",
            &[("route", "/v2/categories"), ("status_class", "4xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn unknown_keys_and_throttled_requests_are_counted_without_keys_or_addresses() {
    let app = spawn_app_with(|settings| {
        settings.gateway.auth_failure_limit = AuthFailureLimitConfig {
            burst: 2,
            refill_every: Duration::from_secs(3600),
            ..AuthFailureLimitConfig::default()
        };
    })
    .await;
    for key in ["guess-1", "guess-2"] {
        let response = app.get_as("/v2/categories", Some(key)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for key in ["guess-3", ACME_KEY] {
        let response = app.get_as("/v2/categories", Some(key)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let text = app.scrape().await;
    let gateway = [("gateway", "bff-partner")];
    assert_eq!(
        sample(&text, "bff_partner_auth_failures_total", &gateway),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "bff_partner_auth_throttled_total", &gateway),
        2.0
    );
    for key in ["guess-1", "guess-3", ACME_KEY] {
        assert!(!text.contains(key), "a key leaked into the metrics");
    }
}

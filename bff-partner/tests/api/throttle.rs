//! Failed authentications throttled per client address.

use bff_partner::{PartnerSettings, config::AuthFailureLimitConfig};
use reqwest::{Method, StatusCode};
use std::time::Duration;

use crate::helpers::{
    ACME_KEY, TestApp, VERSIONS, assert_problem, assert_problem_schema, header, spawn_app_with,
};

/// `burst` unknown keys per address, none forgiven during a test.
fn budget(settings: &mut PartnerSettings, burst: u32) {
    settings.gateway.auth_failure_limit = AuthFailureLimitConfig {
        burst,
        refill_every: Duration::from_secs(3600),
        ..AuthFailureLimitConfig::default()
    };
}

impl TestApp {
    /// `GET path` with `key`, as a proxy forwards it for `forwarded_for`.
    async fn get_forwarded(
        &self,
        path: &str,
        key: Option<&str>,
        forwarded_for: &str,
    ) -> reqwest::Response {
        self.request(Method::GET, path, key)
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .expect("request")
    }
}

#[tokio::test]
async fn after_its_budget_of_unknown_keys_an_address_gets_429_before_any_key_is_checked() {
    // Every request of a test comes from 127.0.0.1 (or, where the server does not say, from the
    // one shared "unknown" client): one address either way.
    let app = spawn_app_with(|settings| budget(settings, 5)).await;
    for n in 0..5 {
        let response = app
            .get_as("/v2/products", Some(&format!("guess-{n}")))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "guess {n}");
    }
    for version in VERSIONS {
        // Another guess, the right key and no key at all get the same answer: a throttled
        // guesser learns nothing about its keys.
        for key in [Some("guess-next"), Some(ACME_KEY), None] {
            let response = app.get_as(&format!("/{version}/orders"), key).await;
            let (problem, headers) = assert_problem(
                response,
                StatusCode::TOO_MANY_REQUESTS,
                version,
                "rate-limited",
            )
            .await;
            assert_problem_schema(&app, version, &problem).await;
            let retry_after: u64 = header(&headers, "retry-after").parse().expect("seconds");
            assert!((1..=3600).contains(&retry_after), "{retry_after}");
            assert!(!headers.contains_key("ratelimit"), "no key quota shown");
            assert!(!headers.contains_key("www-authenticate"));
            assert_eq!(header(&headers, "cache-control"), "private, no-store");
        }
    }
    // The documents need no key, so they are not throttled.
    let doc = app.get_as("/v2/openapi.json", None).await;
    assert_eq!(doc.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_budget_is_per_client_address_and_successes_or_missing_keys_do_not_spend_it() {
    let app = spawn_app_with(|settings| {
        budget(settings, 3);
        settings.gateway.client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    let path = "/v2/categories";
    // A proxy appends the address it saw: the rightmost one is the client's.
    let client = "203.0.113.7";
    for _ in 0..2 {
        let response = app
            .get_forwarded(path, Some("wrong"), &format!("10.1.1.1, {client}"))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..20 {
        let ok = app.get_forwarded(path, Some(ACME_KEY), client).await;
        assert_eq!(ok.status(), StatusCode::OK, "successes cost nothing");
        let none = app.get_forwarded(path, None, client).await;
        assert_eq!(
            none.status(),
            StatusCode::UNAUTHORIZED,
            "nor do missing keys"
        );
    }
    let last = app.get_forwarded(path, Some("wrong"), client).await;
    assert_eq!(last.status(), StatusCode::UNAUTHORIZED, "the budget's last");
    // Throttled, whatever the client writes to the left of its proxy's entry.
    for forwarded in [client.to_owned(), format!("198.51.100.9, {client}")] {
        let refused = app.get_forwarded(path, Some(ACME_KEY), &forwarded).await;
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{forwarded}"
        );
    }
    // Other addresses are unaffected.
    let other = "203.0.113.8";
    let ok = app.get_forwarded(path, Some(ACME_KEY), other).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = app.get_forwarded(path, Some("wrong"), other).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // IPv6 clients are counted by /64, the block one subscriber usually gets.
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3"] {
        let response = app.get_forwarded(path, Some("wrong"), host).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{host}");
    }
    let same_block = app
        .get_forwarded(path, Some(ACME_KEY), "2001:db8:1:2:ffff::9")
        .await;
    assert_eq!(same_block.status(), StatusCode::TOO_MANY_REQUESTS);
    let next_block = app
        .get_forwarded(path, Some(ACME_KEY), "2001:db8:1:3::1")
        .await;
    assert_eq!(next_block.status(), StatusCode::OK);
}

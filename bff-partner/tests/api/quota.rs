//! Per-key quotas.

use reqwest::StatusCode;

use crate::helpers::{ACME_KEY, TIGHT_BURST, TIGHT_KEY, assert_problem, header, spawn_app};

#[tokio::test]
async fn responses_state_the_quota_and_what_is_left() {
    let app = spawn_app().await;
    let first = app.get_as("/v2/categories", Some(TIGHT_KEY)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        header(first.headers(), "ratelimit-policy"),
        format!("\"default\";q={TIGHT_BURST};w={TIGHT_BURST}")
    );
    let remaining = header(first.headers(), "ratelimit").to_owned();
    assert!(
        remaining.starts_with(&format!("\"default\";r={};t=", TIGHT_BURST - 1)),
        "{remaining}"
    );
}

#[tokio::test]
async fn requests_after_the_burst_get_429_with_retry_after_and_quota_headers() {
    let app = spawn_app().await;
    for _ in 0..TIGHT_BURST {
        let response = app.get_as("/v2/categories", Some(TIGHT_KEY)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.get_as("/v1/categories", Some(TIGHT_KEY)).await;
    let (body, headers) =
        assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "v1", "rate-limited").await;
    app.assert_documented(
        "v1",
        "get",
        "/v1/categories",
        StatusCode::TOO_MANY_REQUESTS,
        &body,
    )
    .await;
    let retry_after: u64 = header(&headers, "retry-after").parse().expect("seconds");
    assert!((1..=1).contains(&retry_after), "{retry_after}");
    assert!(header(&headers, "ratelimit").starts_with("\"default\";r=0;t="));
    assert!(headers.contains_key("ratelimit-policy"));
    // The quota is per key: others are unaffected.
    let other = app.get_as("/v1/categories", Some(ACME_KEY)).await;
    assert_eq!(other.status(), StatusCode::OK);
}

//! v1's deprecation notice.

use std::time::{Duration, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::helpers::{header, spawn_app};

#[tokio::test]
async fn every_v1_response_announces_its_deprecation_sunset_and_successor() {
    let app = spawn_app().await;
    for (path, status) in [
        ("/v1/products?limit=1", StatusCode::OK),
        ("/v1/categories", StatusCode::OK),
        ("/v1/orders/o-unknown", StatusCode::NOT_FOUND),
        ("/v1/no-such-path", StatusCode::NOT_FOUND),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), status, "{path}");
        let headers = response.headers();
        assert_eq!(header(headers, "deprecation"), "@1767225600", "{path}");
        assert_eq!(header(headers, "sunset"), "Thu, 01 Jul 2027 00:00:00 GMT");
        let successor = format!("</v2{}>; rel=\"successor-version\"", &path[3..]);
        assert!(
            headers
                .get_all("link")
                .iter()
                .any(|link| link.to_str().ok() == Some(successor.as_str())),
            "{path}: {headers:?}"
        );
    }
    let no_key = app.get_as("/v1/products", None).await;
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert!(no_key.headers().contains_key("deprecation"));
}

#[tokio::test]
async fn the_deprecation_dates_come_from_configuration() {
    let app = crate::helpers::spawn_app_with(|settings| {
        let deprecation = &mut settings.gateway.deprecation;
        // 2026-03-01T00:00:00Z and 2028-01-31T12:00:00Z.
        deprecation.v1_deprecated_at = UNIX_EPOCH + Duration::from_secs(1_772_323_200);
        deprecation.v1_sunset_at = UNIX_EPOCH + Duration::from_secs(1_832_932_800);
    })
    .await;
    let response = app.get("/v1/categories").await;
    assert_eq!(header(response.headers(), "deprecation"), "@1772323200");
    assert_eq!(
        header(response.headers(), "sunset"),
        "Mon, 31 Jan 2028 12:00:00 GMT"
    );
}

#[tokio::test]
async fn v2_responses_carry_no_deprecation_notice() {
    let app = spawn_app().await;
    let response = app.get("/v2/categories").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("deprecation"));
    assert!(!response.headers().contains_key("sunset"));
}

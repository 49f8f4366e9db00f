//! Compression as a partner's client meets it (`server.compression`, the skeleton every gateway
//! shares): a list page above the threshold is `br` or `gzip` as `Accept-Encoding` asks, and a
//! small answer or one without the header is sent as it is.

use axum::body::Bytes;
use reqwest::{Method, StatusCode, header::HeaderMap};
use server_kit::testing::decode;

use crate::helpers::{ACME_KEY, TestApp, VERSIONS, spawn_app, spawn_app_with};

/// A header as a string, `""` when absent.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map_or("", |value| value.to_str().expect("ascii"))
}

/// `GET path` with the all-scopes key and `Accept-Encoding: accept` when given, read raw.
async fn get(app: &TestApp, path: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = app.request(Method::GET, path, Some(ACME_KEY));
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let response = request.send().await.expect("answered");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.expect("a body"))
}

#[tokio::test]
async fn a_list_page_is_compressed_for_br_and_gzip_and_decodes_to_the_plain_one() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let path = format!("/{version}/products?limit=50");
        let (status, headers, plain) = get(&app, &path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(plain.len() > 1024, "{path}: {} bytes", plain.len());
        assert_eq!(header(&headers, "content-encoding"), "", "{path}");
        assert!(
            header(&headers, "vary").contains("accept-encoding"),
            "{path}"
        );
        for (accept, coding) in [("br", "br"), ("gzip", "gzip"), ("gzip;q=0.5, br", "br")] {
            let (status, headers, encoded) = get(&app, &path, Some(accept)).await;
            assert_eq!(status, 200, "{path} {accept}");
            assert_eq!(
                header(&headers, "content-encoding"),
                coding,
                "{path} {accept}"
            );
            assert!(header(&headers, "vary").contains("accept-encoding"));
            assert!(
                encoded.len() < plain.len() / 2,
                "{path} {accept}: {} of {} bytes",
                encoded.len(),
                plain.len()
            );
            assert_eq!(decode(coding, encoded).await, plain, "{path} {accept}");
        }
    }
}

#[tokio::test]
async fn a_small_answer_is_sent_as_it_is() {
    let app = spawn_app().await;
    let (status, headers, body) = get(&app, "/v2/products?limit=1", Some("br, gzip")).await;
    assert_eq!(status, 200);
    assert!(body.len() < 1024, "{} bytes", body.len());
    assert_eq!(header(&headers, "content-encoding"), "");
}

#[tokio::test]
async fn below_a_raised_threshold_a_list_page_is_sent_as_it_is() {
    let app = spawn_app_with(|settings| settings.server.compression.min_size = 1 << 20).await;
    let (status, headers, _) = get(&app, "/v2/products?limit=50", Some("br, gzip")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), "");
}

//! Compression as a client meets it (`server.compression`, the skeleton every gateway shares): a
//! large GraphQL answer is `br` or `gzip` as `Accept-Encoding` asks, a small one and one without
//! the header are sent as they are, and event streams and WebSocket upgrades are never encoded.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_kit::testing::decode;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Fifty products with the fields a product list draws: several KiB of JSON.
const LARGE: &str = "{ products(first: 50) { nodes { id name description brand price { amountMinor currency } } } }";

/// A few bytes of JSON.
const SMALL: &str = "{ __typename }";

/// How long a test waits for what comes at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// What a test looks at in a raw (undecoded) answer.
struct Raw {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: axum::body::Bytes,
}

impl Raw {
    /// Every value of a header, joined with `, ` (`""` when absent).
    fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().expect("ascii"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `POST /graphql` of `query`, with `Accept-Encoding: accept` when given, read raw.
async fn post(app: &TestApp, query: &str, accept: Option<&str>) -> Raw {
    let mut request = app
        .client
        .post(&app.endpoint)
        .json(&json!({ "query": query }));
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let response = request.send().await.expect("answered");
    Raw {
        status: response.status(),
        headers: response.headers().clone(),
        bytes: response.bytes().await.expect("a body"),
    }
}

#[tokio::test]
async fn a_large_answer_is_compressed_for_br_and_gzip_and_decodes_to_the_plain_one() {
    let app = spawn_app().await;
    let plain = post(&app, LARGE, None).await;
    assert_eq!(plain.status, 200);
    let body: Value = serde_json::from_slice(&plain.bytes).expect("JSON");
    assert_eq!(
        body["data"]["products"]["nodes"].as_array().map(Vec::len),
        Some(50),
        "a page of fifty"
    );
    assert!(plain.bytes.len() > 1024, "{} bytes", plain.bytes.len());
    assert_eq!(
        plain.header("content-encoding"),
        "",
        "nothing asked, nothing encoded"
    );
    assert!(plain.header("vary").contains("accept-encoding"));

    for (accept, coding) in [("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br", "br")] {
        let answer = post(&app, LARGE, Some(accept)).await;
        assert_eq!(answer.status, 200, "{accept}");
        assert_eq!(answer.header("content-encoding"), coding, "{accept}");
        assert!(
            answer.header("vary").contains("accept-encoding"),
            "{accept}"
        );
        assert!(
            answer.bytes.len() < plain.bytes.len() / 2,
            "{accept}: {} of {} bytes",
            answer.bytes.len(),
            plain.bytes.len()
        );
        assert_eq!(decode(coding, answer.bytes).await, plain.bytes, "{accept}");
    }
}

#[tokio::test]
async fn a_small_answer_is_sent_as_it_is() {
    let app = spawn_app().await;
    let small = post(&app, SMALL, Some("br, gzip")).await;
    assert_eq!(small.status, 200);
    assert!(small.bytes.len() < 1024);
    assert_eq!(small.header("content-encoding"), "");
}

#[tokio::test]
async fn the_threshold_is_a_setting_and_compression_can_be_switched_off() {
    let high = spawn_app_with(|settings| settings.server.compression.min_size = 1 << 20).await;
    let answer = post(&high, LARGE, Some("br")).await;
    assert_eq!(answer.header("content-encoding"), "", "below the threshold");
    let low = spawn_app_with(|settings| settings.server.compression.min_size = 16).await;
    let answer = post(&low, SMALL, Some("br")).await;
    assert_eq!(
        answer.header("content-encoding"),
        "br",
        "above the threshold"
    );
    let off = spawn_app_with(|settings| settings.server.compression.enabled = false).await;
    let answer = post(&off, LARGE, Some("br")).await;
    assert_eq!(answer.header("content-encoding"), "");
}

#[tokio::test]
async fn a_subscription_over_sse_is_never_encoded_and_each_event_arrives() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.keep_alive = Duration::from_millis(50);
    })
    .await;
    let product = app.services.world.regular_product().to_owned();
    let mut response = app
        .client
        .post(&app.endpoint)
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip, br")
        .json(&json!({
            "query": "subscription($id: ID!) { productUpdated(id: $id) { id } }",
            "variables": { "id": product },
        }))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-encoding").is_none());
    // The keep-alive comment arrives as it is sent, in the clear: nothing buffers the stream.
    let chunk = tokio::time::timeout(PATIENCE, response.chunk())
        .await
        .expect("an event within the patience")
        .expect("read")
        .expect("a chunk");
    assert!(
        std::str::from_utf8(&chunk).is_ok_and(|text| text.starts_with(':')),
        "{chunk:?}"
    );
}

#[tokio::test]
async fn a_websocket_upgrade_asking_for_compression_is_upgraded_untouched() {
    let app = spawn_app().await;
    let mut request = app
        .endpoint
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("a request");
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    headers.insert("accept-encoding", "gzip, br".parse().expect("a header"));
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    assert_eq!(response.status().as_u16(), 101);
    assert!(response.headers().get("content-encoding").is_none());
    socket
        .send(tungstenite::Message::text(
            json!({ "type": "connection_init", "payload": {} }).to_string(),
        ))
        .await
        .expect("sent");
    let ack = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("an answer within the patience")
        .expect("a message")
        .expect("read");
    let ack: Value = serde_json::from_str(ack.to_text().expect("text")).expect("JSON");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

//! Bearer tokens: accepted, expired, wrong signature, wrong audience; catalog stays anonymous.

use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, SECRET, now, sign, spawn_app, token};

const VIEWER: &str = "{ viewer { id } categories { id } }";

async fn viewer_with(token: &str) -> (reqwest::StatusCode, Value, Vec<String>, Value) {
    let app = spawn_app().await;
    let answer = app.query(VIEWER, json!({}), Some(token)).await;
    assert!(
        answer.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\"")
    );
    let reason = answer.body["errors"][0]["extensions"]["reason"].clone();
    let data = answer.body.get("data").cloned().unwrap_or(Value::Null);
    (answer.status, data, answer.codes(), reason)
}

#[tokio::test]
async fn a_valid_token_makes_its_subject_the_viewer() {
    let app = spawn_app().await;
    let answer = app.query(VIEWER, json!({}), Some(&token("u-0002"))).await;
    answer.assert_ok();
    assert_eq!(answer.data("/viewer/id"), "u-0002");
}

#[tokio::test]
async fn without_a_token_the_catalog_answers_and_the_viewer_is_unauthenticated() {
    let app = spawn_app().await;
    let answer = app.query(VIEWER, json!({}), None).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .data("/categories")
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(answer.data("/viewer"), &Value::Null);
    assert_eq!(answer.codes(), ["UNAUTHENTICATED"]);
    assert_eq!(
        answer.body["errors"][0]["extensions"]["reason"],
        "missing_token"
    );
    assert_eq!(answer.body["errors"][0]["path"], json!(["viewer"]));
}

#[tokio::test]
async fn an_expired_token_is_401_unauthenticated_with_reason_token_expired() {
    let expired = sign(
        &json!({ "sub": "u-0001", "aud": AUDIENCE, "exp": now() - 3600 }),
        SECRET,
    );
    let (status, data, codes, reason) = viewer_with(&expired).await;
    assert_eq!(status, 401);
    assert_eq!(data, Value::Null, "no data, not even the catalog");
    assert_eq!(codes, ["UNAUTHENTICATED"]);
    assert_eq!(reason, "token_expired");
}

#[tokio::test]
async fn a_token_with_a_wrong_signature_is_401_unauthenticated() {
    let forged = sign(
        &json!({ "sub": "u-0001", "aud": AUDIENCE, "exp": now() + 300 }),
        "another-secret-that-is-long-enough-0123456789",
    );
    let (status, data, codes, reason) = viewer_with(&forged).await;
    assert_eq!(status, 401);
    assert_eq!(data, Value::Null, "no data, not even the catalog");
    assert_eq!(codes, ["UNAUTHENTICATED"]);
    assert_eq!(reason, "invalid_token");
}

#[tokio::test]
async fn a_token_for_another_audience_is_401_unauthenticated() {
    let other = sign(
        &json!({ "sub": "u-0001", "aud": "bff-partner", "exp": now() + 300 }),
        SECRET,
    );
    let (status, data, codes, reason) = viewer_with(&other).await;
    assert_eq!(status, 401);
    assert_eq!(data, Value::Null, "no data, not even the catalog");
    assert_eq!(codes, ["UNAUTHENTICATED"]);
    assert_eq!(reason, "invalid_token");
}

#[tokio::test]
async fn a_malformed_authorization_header_is_refused_never_treated_as_anonymous() {
    let app = spawn_app().await;
    let answer = app
        .send(
            app.client
                .post(&app.endpoint)
                .header("authorization", "Basic dXNlcjpwYXNz")
                .json(&json!({ "query": "{ categories { id } }" })),
        )
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.codes(), ["UNAUTHENTICATED"]);
    assert_eq!(
        answer.body["errors"][0]["extensions"]["reason"],
        "invalid_token"
    );
}

#[tokio::test]
async fn mutations_need_a_signed_in_user() {
    let app = spawn_app().await;
    let answer = app
        .query(
            r#"mutation { addToCart(productId: "p-00001") { version } }"#,
            json!({}),
            None,
        )
        .await;
    assert_eq!(answer.codes(), ["UNAUTHENTICATED"]);
    assert_eq!(answer.data(""), &Value::Null);
}

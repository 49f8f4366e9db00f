//! The webhook management API (`/v2/webhooks`) over real HTTP, with a private Redis: a partner
//! manages its own endpoints only, secrets are shown once, target URLs are checked, and the API
//! says so when webhooks cannot work.

use bff_partner::{PartnerConfig, PartnerSettings, auth::Scope, config::KeyConfig, hash_key};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use server_kit::testing::{Replicas, spawn_replicas};
use shared_clients::PartnerId;

use crate::helpers::{
    ACME_KEY, CATALOG_ONLY_KEY, GLOBEX_KEY, assert_matches_document, assert_problem, header,
    spawn_app_with,
};

/// One gateway over a private Redis, with acme's and globex's keys (every scope) and a
/// catalog-only key, `allow_insecure_targets` as given and at most `max_endpoints` endpoints.
async fn spawn(allow_insecure: bool, max_endpoints: u32) -> Replicas<PartnerConfig> {
    let services = reference_services::Config {
        products: 20,
        users: 5,
        ..reference_services::Config::default()
    };
    spawn_replicas(
        services,
        1,
        |settings: &mut PartnerSettings| {
            let all = vec![
                Scope::CatalogRead,
                Scope::OrdersRead,
                Scope::OrdersWrite,
                Scope::WebhooksManage,
            ];
            let key = |key: &str, partner: &str, scopes: Vec<Scope>| KeyConfig {
                sha256: hash_key(key),
                partner_id: PartnerId::parse(partner).expect("partner id"),
                scopes,
                rate_limit: None,
            };
            settings.gateway.keys = vec![
                key(ACME_KEY, "partner-acme", all.clone()),
                key(GLOBEX_KEY, "partner-globex", all),
                key(CATALOG_ONLY_KEY, "partner-acme", vec![Scope::CatalogRead]),
            ];
            settings.gateway.default_rate_limit.per_second = 1000;
            settings.gateway.default_rate_limit.burst = 1000;
            settings.gateway.webhooks.allow_insecure_targets = allow_insecure;
            settings.gateway.webhooks.max_endpoints_per_partner = max_endpoints;
        },
        bff_partner::build,
    )
    .await
}

/// A client of one gateway.
struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn of(replicas: &Replicas<PartnerConfig>) -> Self {
        Self {
            client: Client::new(),
            base: replicas.bases[0].clone(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// `POST /v2/webhooks` as `key`; asserts 201 and returns the body.
    async fn create(&self, key: &str, url: &str) -> Value {
        let response = self
            .send(
                Method::POST,
                "/v2/webhooks",
                key,
                Some(json!({ "url": url, "events": ["order.created"], "description": "test" })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = header(response.headers(), "location").to_owned();
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            location,
            format!("/v2/webhooks/{}", body["id"].as_str().expect("id"))
        );
        body
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, key, body).await;
        let status = response.status();
        let body = if status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            response.json().await.expect("json")
        };
        (status, body)
    }

    async fn document(&self) -> Value {
        self.client
            .get(format!("{}/v2/openapi.json", self.base))
            .send()
            .await
            .expect("document")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test]
async fn a_partner_creates_lists_gets_patches_rotates_and_deletes_its_endpoints() {
    let replicas = spawn(true, 20).await;
    let api = Api::of(&replicas);
    let doc = api.document().await;
    let created = api
        .create(ACME_KEY, "http://127.0.0.1:9/hooks?token=t")
        .await;
    assert_matches_document(&doc, "post", "/v2/webhooks", StatusCode::CREATED, &created);
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["events"], json!(["order.created"]));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["url"], "http://127.0.0.1:9/hooks?token=t");

    // Private, and the secret is never shown again.
    let response = api
        .send(Method::GET, &format!("/v2/webhooks/{id}"), ACME_KEY, None)
        .await;
    assert_eq!(
        header(response.headers(), "cache-control"),
        "private, no-store"
    );
    let text = response.text().await.expect("text");
    assert!(
        !text.contains(&secret) && !text.contains("\"secret\""),
        "{text}"
    );
    let (status, list) = api.json(Method::GET, "/v2/webhooks", ACME_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_matches_document(&doc, "get", "/v2/webhooks", StatusCode::OK, &list);
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    assert!(!list.to_string().contains("whsec_"));

    let (status, patched) = api
        .json(
            Method::PATCH,
            &format!("/v2/webhooks/{id}"),
            ACME_KEY,
            Some(json!({
                "events": ["order.status_changed", "order.created"],
                "description": null,
                "enabled": false,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_matches_document(
        &doc,
        "patch",
        "/v2/webhooks/{webhook_id}",
        StatusCode::OK,
        &patched,
    );
    assert_eq!(
        patched["events"],
        json!(["order.created", "order.status_changed"])
    );
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["disabled_reason"], "partner");
    assert!(!patched.to_string().contains("whsec_"));
    let (_, enabled) = api
        .json(
            Method::PATCH,
            &format!("/v2/webhooks/{id}"),
            ACME_KEY,
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], Value::Null);

    let (status, rotated) = api
        .json(
            Method::POST,
            &format!("/v2/webhooks/{id}/rotate-secret"),
            ACME_KEY,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_matches_document(
        &doc,
        "post",
        "/v2/webhooks/{webhook_id}/rotate-secret",
        StatusCode::OK,
        &rotated,
    );
    let new_secret = rotated["secret"].as_str().expect("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );

    let (status, _) = api
        .json(
            Method::DELETE,
            &format!("/v2/webhooks/{id}"),
            ACME_KEY,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let response = api
        .send(Method::GET, &format!("/v2/webhooks/{id}"), ACME_KEY, None)
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "v2", "not-found").await;
    let (_, list) = api.json(Method::GET, "/v2/webhooks", ACME_KEY, None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn another_partners_endpoint_is_a_404_and_never_listed() {
    let replicas = spawn(true, 20).await;
    let api = Api::of(&replicas);
    let created = api.create(ACME_KEY, "http://127.0.0.1:9/acme").await;
    let id = created["id"].as_str().expect("id");
    for (method, path) in [
        (Method::GET, format!("/v2/webhooks/{id}")),
        (Method::PATCH, format!("/v2/webhooks/{id}")),
        (Method::DELETE, format!("/v2/webhooks/{id}")),
        (Method::POST, format!("/v2/webhooks/{id}/rotate-secret")),
        (Method::POST, format!("/v2/webhooks/{id}/test")),
        (Method::GET, format!("/v2/webhooks/{id}/deliveries")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "enabled": false }));
        let response = api.send(method.clone(), &path, GLOBEX_KEY, body).await;
        assert_problem(response, StatusCode::NOT_FOUND, "v2", "not-found").await;
    }
    let (_, list) = api
        .json(Method::GET, "/v2/webhooks", GLOBEX_KEY, None)
        .await;
    assert_eq!(list["items"], json!([]));
    // Untouched for its owner.
    let (status, endpoint) = api
        .json(Method::GET, &format!("/v2/webhooks/{id}"), ACME_KEY, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(endpoint["enabled"], true);
}

#[tokio::test]
async fn a_non_public_or_insecure_url_is_refused_with_a_clear_422() {
    let replicas = spawn(false, 20).await;
    let api = Api::of(&replicas);
    for (url, says) in [
        ("https://10.0.0.1/hook", "private address"),
        ("https://127.0.0.1:8443/hook", "loopback address"),
        ("https://169.254.169.254/latest", "address"),
        ("https://localhost:8443/hook", "loopback address"),
        ("http://example.com/hook", "only https:// URLs"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("not a url", "not valid"),
    ] {
        let response = api
            .send(
                Method::POST,
                "/v2/webhooks",
                ACME_KEY,
                Some(json!({ "url": url, "events": ["order.created"] })),
            )
            .await;
        let (body, _) = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "v2",
            "invalid-webhook",
        )
        .await;
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.contains(says), "{url}: {detail}");
        // The addresses a name resolves to are not shown.
        assert!(
            !detail.contains("127.0.0.1") || url.contains("127.0.0.1"),
            "{detail}"
        );
    }
    let (_, list) = api.json(Method::GET, "/v2/webhooks", ACME_KEY, None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn unknown_events_a_long_description_and_too_many_endpoints_are_422() {
    let replicas = spawn(true, 2).await;
    let api = Api::of(&replicas);
    for body in [
        json!({ "url": "http://127.0.0.1:9/", "events": ["order.shipped"] }),
        json!({ "url": "http://127.0.0.1:9/", "events": ["ping"] }),
        json!({ "url": "http://127.0.0.1:9/", "events": [] }),
        json!({ "url": "http://127.0.0.1:9/", "events": ["order.created"], "description": "x".repeat(501) }),
    ] {
        let response = api
            .send(Method::POST, "/v2/webhooks", ACME_KEY, Some(body))
            .await;
        let (problem, _) = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "v2",
            "invalid-webhook",
        )
        .await;
        assert!(problem["detail"].is_string());
    }
    api.create(ACME_KEY, "http://127.0.0.1:9/1").await;
    api.create(ACME_KEY, "http://127.0.0.1:9/2").await;
    let response = api
        .send(
            Method::POST,
            "/v2/webhooks",
            ACME_KEY,
            Some(json!({ "url": "http://127.0.0.1:9/3", "events": ["order.created"] })),
        )
        .await;
    let (problem, _) = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "v2",
        "too-many-webhooks",
    )
    .await;
    assert!(problem["detail"].as_str().expect("detail").contains('2'));
    // Another partner has its own bound.
    api.create(GLOBEX_KEY, "http://127.0.0.1:9/g").await;
}

#[tokio::test]
async fn a_test_ping_is_queued_listed_and_redeliverable() {
    let replicas = spawn(true, 20).await;
    let api = Api::of(&replicas);
    let doc = api.document().await;
    let created = api.create(ACME_KEY, "http://127.0.0.1:9/acme").await;
    let id = created["id"].as_str().expect("id");
    let mut pings = Vec::new();
    for _ in 0..3 {
        let response = api
            .send(
                Method::POST,
                &format!("/v2/webhooks/{id}/test"),
                ACME_KEY,
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = header(response.headers(), "location").to_owned();
        let ping: Value = response.json().await.expect("json");
        assert_matches_document(
            &doc,
            "post",
            "/v2/webhooks/{webhook_id}/test",
            StatusCode::ACCEPTED,
            &ping,
        );
        assert_eq!(ping["event_type"], "ping");
        assert_eq!(ping["outcome"], "pending");
        // The delivery engine may already have made its first (refused) attempt, retried in 5 s.
        assert!(
            ping["attempts"]
                .as_u64()
                .is_some_and(|attempts| attempts <= 1)
        );
        let ping_id = ping["id"].as_str().expect("id").to_owned();
        assert!(ping_id.starts_with("msg_"));
        assert_eq!(location, format!("/v2/webhooks/{id}/deliveries/{ping_id}"));
        pings.push(ping_id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let path = format!("/v2/webhooks/{id}/deliveries?limit=2");
    let (status, page) = api.json(Method::GET, &path, ACME_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_matches_document(
        &doc,
        "get",
        "/v2/webhooks/{webhook_id}/deliveries",
        StatusCode::OK,
        &page,
    );
    let ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [pings[2].as_str(), pings[1].as_str()]);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, rest) = api
        .json(
            Method::GET,
            &format!("/v2/webhooks/{id}/deliveries?limit=2&cursor={cursor}"),
            ACME_KEY,
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["id"], pings[0].as_str());
    assert_eq!(rest["next_cursor"], Value::Null);
    let response = api
        .send(
            Method::GET,
            &format!("/v2/webhooks/{id}/deliveries?cursor=nope"),
            ACME_KEY,
            None,
        )
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "v2", "invalid-request").await;

    let one = format!("/v2/webhooks/{id}/deliveries/{}", pings[0]);
    let (status, detail) = api.json(Method::GET, &one, ACME_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_matches_document(
        &doc,
        "get",
        "/v2/webhooks/{webhook_id}/deliveries/{delivery_id}",
        StatusCode::OK,
        &detail,
    );
    assert_eq!(detail["payload"]["type"], "ping");
    assert_eq!(detail["payload"]["data"]["endpoint_id"], id);
    let (status, redelivered) = api
        .json(Method::POST, &format!("{one}/redeliver"), ACME_KEY, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(redelivered["outcome"], "pending");
    // Not through another partner.
    let response = api.send(Method::GET, &one, GLOBEX_KEY, None).await;
    assert_problem(response, StatusCode::NOT_FOUND, "v2", "not-found").await;
    let response = api
        .send(Method::POST, &format!("{one}/redeliver"), GLOBEX_KEY, None)
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "v2", "not-found").await;
}

#[tokio::test]
async fn a_key_without_the_webhooks_scope_gets_403() {
    let replicas = spawn(true, 20).await;
    let api = Api::of(&replicas);
    for (method, path) in [
        (Method::GET, "/v2/webhooks"),
        (Method::POST, "/v2/webhooks"),
    ] {
        let body = (method == Method::POST)
            .then(|| json!({ "url": "http://127.0.0.1:9/", "events": ["order.created"] }));
        let response = api.send(method, path, CATALOG_ONLY_KEY, body).await;
        let (problem, _) = assert_problem(response, StatusCode::FORBIDDEN, "v2", "forbidden").await;
        assert_eq!(problem["required_scope"], "webhooks:manage");
    }
    // Webhooks are a /v2 API.
    let response = api.send(Method::GET, "/v1/webhooks", ACME_KEY, None).await;
    assert_problem(response, StatusCode::NOT_FOUND, "v1", "not-found").await;
}

#[tokio::test]
async fn without_redis_the_api_is_a_501_problem() {
    let app =
        spawn_app_with(|settings| settings.gateway.webhooks.allow_insecure_targets = true).await;
    for (method, path) in [
        (Method::GET, "/v2/webhooks"),
        (Method::POST, "/v2/webhooks"),
        (Method::GET, "/v2/webhooks/we_00000000000000000000000000"),
    ] {
        let body = (method == Method::POST)
            .then(|| json!({ "url": "http://127.0.0.1:9/", "events": ["order.created"] }));
        let mut request = app.request(method, path, Some(ACME_KEY));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let (problem, _) = assert_problem(
            response,
            StatusCode::NOT_IMPLEMENTED,
            "v2",
            "webhooks-unavailable",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("shared.redis_url")
        );
    }
}

#[tokio::test]
async fn redis_failing_during_a_request_is_a_503_with_retry_after() {
    let mut replicas = spawn(true, 20).await;
    let api = Api::of(&replicas);
    api.create(ACME_KEY, "http://127.0.0.1:9/acme").await;
    replicas.redis.stop().await.expect("redis stops");
    let response = api.send(Method::GET, "/v2/webhooks", ACME_KEY, None).await;
    let (_, headers) = assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "v2",
        "service-unavailable",
    )
    .await;
    assert!(
        header(&headers, "retry-after")
            .parse::<u64>()
            .expect("seconds")
            >= 1
    );
}

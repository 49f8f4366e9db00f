//! Starts the gateway on port 0 against freshly seeded reference services, with test keys, and
//! offers one method per kind of request plus the checks every test shares.

use std::sync::Arc;

use bff_partner::{
    PartnerSettings,
    auth::Scope,
    config::{KeyConfig, RateLimitConfig},
    hash_key,
};
use reference_services::{ServiceKind, Spawned};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server_kit::testing::spawn_gateway;
use shared_clients::PartnerId;

/// Every scope, for `partner-acme`.
pub const ACME_KEY: &str = "acme-test-key-all-scopes";
/// Every scope, for `partner-globex`.
pub const GLOBEX_KEY: &str = "globex-test-key-all-scopes";
/// Only `catalog:read`, for `partner-acme`.
pub const CATALOG_ONLY_KEY: &str = "acme-test-key-catalog-only";
/// Every scope, for `partner-initech`, with a burst of 3 refilled at 1 per second.
pub const TIGHT_KEY: &str = "initech-test-key-tight-quota";
/// The burst of [`TIGHT_KEY`].
pub const TIGHT_BURST: u32 = 3;

/// The API versions.
pub const VERSIONS: [&str; 2] = ["v1", "v2"];

pub struct TestApp {
    /// Where the gateway serves `/metrics` (a listener of its own, as in production).
    pub metrics_url: String,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base: String,
    pub client: reqwest::Client,
    /// The reference services behind the gateway.
    pub services: Arc<Spawned>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], after `customize` changed the settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut PartnerSettings)) -> TestApp {
    let services = reference_services::Config {
        products: 300,
        users: 20,
        ..reference_services::Config::default()
    };
    let configure = |settings: &mut PartnerSettings| {
        let all = vec![
            Scope::CatalogRead,
            Scope::OrdersRead,
            Scope::OrdersWrite,
            Scope::WebhooksManage,
        ];
        let key = |key: &str, partner: &str, scopes: Vec<Scope>, rate_limit| KeyConfig {
            sha256: hash_key(key),
            partner_id: PartnerId::parse(partner).expect("partner id"),
            scopes,
            rate_limit,
        };
        settings.gateway.keys = vec![
            key(ACME_KEY, "partner-acme", all.clone(), None),
            key(GLOBEX_KEY, "partner-globex", all.clone(), None),
            key(
                CATALOG_ONLY_KEY,
                "partner-acme",
                vec![Scope::CatalogRead],
                None,
            ),
            key(
                TIGHT_KEY,
                "partner-initech",
                all,
                Some(RateLimitConfig {
                    per_second: 1,
                    burst: TIGHT_BURST,
                }),
            ),
        ];
        // Tests make many requests quickly with the other keys.
        settings.gateway.default_rate_limit = RateLimitConfig {
            per_second: 1000,
            burst: 1000,
        };
        customize(settings);
    };
    // With BFF_TEST_ONE_PROCESS=1, the same tests run against the three gateways in one
    // process (bff-all).
    let gateway = if bff_all::testing::one_process() {
        bff_all::testing::spawn_gateway(services, configure).await
    } else {
        spawn_gateway(services, configure, bff_partner::build).await
    };
    TestApp {
        metrics_url: gateway.metrics_url,
        base: gateway.base,
        client: reqwest::Client::new(),
        services: Arc::new(gateway.services),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with `key` as bearer key (none when `None`).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// `GET path` with `ACME_KEY`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(path, Some(ACME_KEY)).await
    }

    /// `GET path` with `key`.
    pub async fn get_as(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        self.request(Method::GET, path, key)
            .send()
            .await
            .expect("request")
    }

    /// `POST /{version}/orders` with `key`, an optional idempotency key and a JSON body.
    pub async fn create_order(
        &self,
        version: &str,
        key: &str,
        idempotency_key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .request(Method::POST, &format!("/{version}/orders"), Some(key))
            .json(body);
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        request.send().await.expect("request")
    }

    /// The order service's request counters.
    pub async fn order_stats(&self) -> Value {
        self.client
            .get(format!("{}/__admin/stats", self.services.order_url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// The order service's request log.
    pub async fn order_requests(&self) -> Value {
        self.client
            .get(format!("{}/__admin/requests", self.services.order_url))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("requests json")
    }

    /// Sets a downstream service's fault mode (`normal`, `failing`, `down`, …).
    pub async fn set_fault_mode(&self, service: ServiceKind, mode: &str) {
        let response = self
            .client
            .put(format!("{}/__admin/faults", self.services.url(service)))
            .json(&json!({ "mode": mode }))
            .send()
            .await
            .expect("faults");
        assert!(response.status().is_success(), "faults set");
    }

    /// The served OpenAPI document of `version`.
    pub async fn openapi(&self, version: &str) -> Value {
        let response = self.get_as(&format!("/{version}/openapi.json"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("document json")
    }

    /// Checks `body` against the response schema the `version` document declares for
    /// `method path_template` and `status`, and returns it.
    pub async fn assert_documented(
        &self,
        version: &str,
        method: &str,
        path_template: &str,
        status: StatusCode,
        body: &Value,
    ) {
        let doc = self.openapi(version).await;
        assert_matches_document(&doc, method, path_template, status, body);
    }
}

/// Checks `body` against the response schema `doc` declares for `method path` and `status`.
pub fn assert_matches_document(
    doc: &Value,
    method: &str,
    path: &str,
    status: StatusCode,
    body: &Value,
) {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut response = operation["responses"][status.as_str()].clone();
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().expect("ref name");
        response = doc["components"]["responses"][name].clone();
    }
    let content = response["content"]
        .as_object()
        .expect("documented response has content");
    let (_, media) = content.iter().next().expect("one media type");
    let mut schema_doc = doc.clone();
    schema_doc["__response"] = media["schema"].clone();
    schema_doc["$ref"] = json!("#/__response");
    let validator = jsonschema::draft202012::new(&schema_doc).expect("document compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match the document: {errors:#?}\nbody: {body:#}"
    );
}

/// Checks that `response` is a problem of `status` and type `/{version}/problems/{name}`, valid
/// against the `Problem` schema, and returns its body and headers.
pub async fn assert_problem(
    response: reqwest::Response,
    status: StatusCode,
    version: &str,
    name: &str,
) -> (Value, reqwest::header::HeaderMap) {
    assert_eq!(response.status(), status, "status");
    let headers = response.headers().clone();
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("/{version}/problems/{name}"),
        "{body:#}"
    );
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string());
    (body, headers)
}

/// Checks `body` against the `Problem` schema of the `version` document.
pub async fn assert_problem_schema(app: &TestApp, version: &str, body: &Value) {
    let doc = app.openapi(version).await;
    let mut schema_doc = doc.clone();
    schema_doc["$ref"] = json!("#/components/schemas/Problem");
    let validator = jsonschema::draft202012::new(&schema_doc).expect("document compiles");
    assert!(
        validator.is_valid(body),
        "{body:#} is not a documented Problem"
    );
}

/// A new order body for `customer` with `lines` of `(product_id, quantity)`.
pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    json!({
        "customer_reference": customer,
        "lines": lines
            .iter()
            .map(|(product_id, quantity)| json!({ "product_id": product_id, "quantity": quantity }))
            .collect::<Vec<_>>(),
    })
}

/// The value of a header, as a string.
pub fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

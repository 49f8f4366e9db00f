//! Starts `bff-mobile` on port 0 in front of freshly seeded reference services, and talks to it
//! over real HTTP, one method per endpoint.

use std::{convert::Infallible, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use reference_services::{ServiceKind, Spawned, World};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header::HeaderMap};
use serde_json::Value;
use server_kit::{
    auth::{Secret, dev_token},
    testing::spawn_gateway,
};
use shared_clients::UserId;
use tower::{Service, ServiceExt, service_fn};
use tower_http::decompression::Decompression;

/// The development secret the test gateway verifies tokens with.
pub const SECRET: &str = "mobile-test-secret-0123456789-abcdefghij";

/// A running gateway and the reference services behind it.
pub struct TestApp {
    /// Where the gateway serves `/metrics` (a listener of its own, as in production).
    pub metrics_url: String,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client that sends no `Accept-Encoding` unless told (it sees raw bytes).
    pub client: reqwest::Client,
    /// The downstream services.
    pub downstream: Spawned,
}

/// What a test looks at in a response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Answer {
    pub async fn of(response: Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.expect("body"),
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|error| {
            panic!(
                "{} is not JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |value| value.to_str().expect("ascii header"))
    }

    /// Asserts a problem+json answer with `status` and `code`; returns the problem.
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert_eq!(self.header("content-type"), "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(
            problem["type"],
            format!("urn:bff-mobile:problem:{code}"),
            "{problem}"
        );
        assert_eq!(problem["status"], status, "{problem}");
        problem
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure` first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut bff_mobile::MobileSettings)) -> TestApp {
    let services = reference_services::Config::default();
    let configure = |settings: &mut bff_mobile::MobileSettings| {
        settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
        configure(settings);
    };
    // With BFF_TEST_ONE_PROCESS=1, the same tests run against the three gateways in one
    // process (bff-all).
    let gateway = if bff_all::testing::one_process() {
        bff_all::testing::spawn_gateway(services, configure).await
    } else {
        spawn_gateway(services, configure, bff_mobile::build).await
    };
    TestApp {
        metrics_url: gateway.metrics_url,
        base: gateway.base,
        client: reqwest::Client::new(),
        downstream: gateway.services,
    }
}

/// A bearer token for `user`.
pub fn token(user: &str) -> String {
    dev_token(
        &Secret::new(SECRET),
        &UserId::parse(user).expect("user id"),
        Duration::from_secs(300),
        None,
        None,
    )
    .expect("token")
}

impl TestApp {
    pub fn world(&self) -> &World {
        &self.downstream.world
    }

    /// A request to `path` (relative to `/m/v1`), as `user` when given.
    pub fn request(&self, method: Method, path: &str, user: Option<&str>) -> RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}/m/v1{path}", self.base));
        match user {
            Some(user) => request.bearer_auth(token(user)),
            None => request,
        }
    }

    pub async fn send(&self, request: RequestBuilder) -> Answer {
        Answer::of(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, user: Option<&str>) -> Answer {
        self.send(self.request(Method::GET, path, user)).await
    }

    pub async fn home(&self, user: Option<&str>) -> Answer {
        self.get("/home", user).await
    }

    pub async fn products(&self, query: &str) -> Answer {
        self.get(&format!("/products{query}"), None).await
    }

    pub async fn product(&self, id: &str) -> Answer {
        self.get(&format!("/products/{id}"), None).await
    }

    pub async fn cart(&self, user: &str) -> Answer {
        self.get("/cart", Some(user)).await
    }

    pub async fn add_to_cart(&self, user: &str, product_id: &str, quantity: i64) -> Answer {
        let body = serde_json::json!({ "product_id": product_id, "quantity": quantity });
        self.send(
            self.request(Method::POST, "/cart/items", Some(user))
                .json(&body),
        )
        .await
    }

    pub async fn set_quantity(&self, user: &str, product_id: &str, quantity: i64) -> Answer {
        let body = serde_json::json!({ "quantity": quantity });
        self.send(
            self.request(
                Method::PUT,
                &format!("/cart/items/{product_id}"),
                Some(user),
            )
            .json(&body),
        )
        .await
    }

    pub async fn remove_from_cart(&self, user: &str, product_id: &str) -> Answer {
        self.send(self.request(
            Method::DELETE,
            &format!("/cart/items/{product_id}"),
            Some(user),
        ))
        .await
    }

    pub async fn checkout(&self, user: &str, key: Option<&str>) -> Answer {
        let mut request = self.request(Method::POST, "/checkout", Some(user));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    pub async fn orders(&self, user: &str, query: &str) -> Answer {
        self.get(&format!("/orders{query}"), Some(user)).await
    }

    pub async fn order(&self, user: &str, id: &str) -> Answer {
        self.get(&format!("/orders/{id}"), Some(user)).await
    }

    /// The served OpenAPI document.
    pub async fn openapi(&self) -> Value {
        let answer = self.get("/openapi.json", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "application/json");
        answer.json()
    }

    /// How many orders the order service holds for `user`.
    pub fn orders_at_the_order_service(&self, user: &str) -> usize {
        self.world().user_orders(user).len()
    }

    /// Takes a downstream service down (connections refused).
    pub fn take_down(&self, kind: ServiceKind) {
        self.world()
            .admin(kind)
            .set_mode(reference_services::FaultMode::Down);
    }
}

/// Moves tokio's clock forward by `by` without sleeping (the caches' clocks see the jump; real
/// HTTP before and after is unaffected).
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Decodes a `gzip` or `br` body as a client would.
pub async fn decode(encoding: &str, bytes: Bytes) -> Bytes {
    let encoding = encoding.to_owned();
    let inner = service_fn(move |_request: http::Request<Body>| {
        let (encoding, bytes) = (encoding.clone(), bytes.clone());
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("content-encoding", encoding)
                    .body(Body::from(bytes))
                    .expect("response"),
            )
        }
    });
    let mut client = Decompression::new(inner);
    let response = client
        .ready()
        .await
        .expect("ready")
        .call(http::Request::new(Body::empty()))
        .await
        .expect("decoded");
    axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .expect("decodable body")
}

/// Checks `body` against the schema `doc` declares for the `media` content of `method path`'s
/// `status` response (the `default` response when the status is not listed, as OpenAPI means
/// it), and returns that response's description.
pub fn assert_matches_document(
    doc: &Value,
    method: &str,
    path: &str,
    status: StatusCode,
    media: &str,
    body: &Value,
) -> String {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut response = operation["responses"][status.as_str()].clone();
    if response.is_null() {
        response = operation["responses"]["default"].clone();
    }
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().expect("ref name");
        response = doc["components"]["responses"][name].clone();
    }
    let schema = response["content"][media]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} {status} has no {media} content: {response:#}"
    );
    let mut schema_doc = doc.clone();
    schema_doc["__response"] = schema;
    schema_doc["$ref"] = serde_json::json!("#/__response");
    let validator = jsonschema::draft202012::new(&schema_doc).expect("the document compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match the document: {errors:#?}\nbody: {body:#}"
    );
    response["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

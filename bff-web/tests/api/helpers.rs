//! Starts `bff-web` on port 0 against freshly spawned reference services, with a known HS256
//! secret, and talks to it over real HTTP.

use bff_web::WebSettings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reference_services::{ServiceKind, Spawned, admin::Stats};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_kit::{auth::Secret, testing::spawn_gateway};

/// The development secret the test gateway verifies HS256 tokens with.
pub const SECRET: &str = "bff-web-test-secret-0123456789-abcdefgh";

/// The audience the test gateway requires.
pub const AUDIENCE: &str = "bff-web";

/// A running gateway and the reference services behind it.
pub struct TestApp {
    /// Where the gateway serves `/metrics` (a listener of its own, as in production).
    pub metrics_url: String,
    /// The GraphQL endpoint's URL.
    pub endpoint: String,
    /// A plain client.
    pub client: reqwest::Client,
    /// The reference services (their world, counters and fault knobs).
    pub services: Spawned,
}

/// A gateway with the default settings (plus the test secret and audience).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway whose settings `configure` adjusts.
pub async fn spawn_app_with(configure: impl FnOnce(&mut WebSettings)) -> TestApp {
    let services = reference_services::Config::default();
    let configure = |settings: &mut WebSettings| {
        settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
        settings.gateway.auth.audience = Some(AUDIENCE.to_owned());
        configure(settings);
    };
    // With BFF_TEST_ONE_PROCESS=1, the same tests run against the three gateways in one
    // process (bff-all).
    let gateway = if bff_all::testing::one_process() {
        bff_all::testing::spawn_gateway(services, configure).await
    } else {
        spawn_gateway(services, configure, bff_web::build).await
    };
    TestApp {
        metrics_url: gateway.metrics_url,
        endpoint: format!("{}{}", gateway.base, gateway.settings.gateway.path),
        client: reqwest::Client::new(),
        services: gateway.services,
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a sane clock")
}

/// An HS256 token for `claims`, signed with `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// A valid token for `user`.
pub fn token(user: &str) -> String {
    sign(
        &json!({ "sub": user, "aud": AUDIENCE, "iat": now(), "exp": now() + 300 }),
        SECRET,
    )
}

/// A GraphQL answer: status, `Content-Type` and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The JSON body.
    pub body: Value,
    /// Every header.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            content_type,
            body,
            headers,
        }
    }

    /// `data` at a JSON pointer, e.g. `/viewer/cart`.
    pub fn data(&self, pointer: &str) -> &Value {
        self.body
            .pointer(&format!("/data{pointer}"))
            .unwrap_or(&Value::Null)
    }

    /// The `extensions.code` of every error.
    pub fn codes(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        e["extensions"]["code"]
                            .as_str()
                            .unwrap_or("<none>")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts there are no errors, showing them if there are.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {:#}",
            self.body
        );
        assert_eq!(self.status, StatusCode::OK, "{:#}", self.body);
        self
    }
}

impl TestApp {
    /// POSTs a query with optional variables and bearer token (Accept: application/json).
    pub async fn query(&self, query: &str, variables: Value, token: Option<&str>) -> Answer {
        self.post_json(
            json!({ "query": query, "variables": variables }),
            token,
            None,
        )
        .await
    }

    /// POSTs `body` as JSON, with an optional bearer token and `Accept`.
    pub async fn post_json(
        &self,
        body: Value,
        token: Option<&str>,
        accept: Option<&str>,
    ) -> Answer {
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        Answer::from(request.send().await.expect("request")).await
    }

    /// GETs the endpoint with query-string `params` and an optional `Accept`.
    pub async fn get(&self, params: &[(&str, &str)], accept: Option<&str>) -> Answer {
        let mut request = self.client.get(&self.endpoint).query(params);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        Answer::from(request.send().await.expect("request")).await
    }

    /// Sends a raw request built by `build` and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::from(request.send().await.expect("request")).await
    }

    /// The request counters of one reference service.
    pub fn stats(&self, kind: ServiceKind) -> Stats {
        self.services.world.admin(kind).stats()
    }

    /// Requests counted at `route` (`"GET /products"`) of one service.
    pub fn calls(&self, kind: ServiceKind, route: &str) -> u64 {
        self.stats(kind).requests.get(route).copied().unwrap_or(0)
    }

    /// Resets every service's counters.
    pub fn reset_stats(&self) {
        for kind in ServiceKind::ALL {
            self.services.world.admin(kind).reset();
        }
    }

    /// The first `n` product ids of the catalog (asked of the product service directly).
    pub async fn product_ids(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        while ids.len() < n {
            let mut request = self
                .client
                .get(format!("{}/products", self.services.product_url))
                .query(&[("limit", "100")]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c.as_str())]);
            }
            let page: Value = request
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            for item in page["items"].as_array().expect("items") {
                ids.push(item["id"].as_str().expect("id").to_owned());
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            assert!(cursor.is_some() || ids.len() >= n, "not enough products");
        }
        ids.truncate(n);
        ids
    }

    /// Puts `quantity` of each product into `user`'s cart, directly at the cart service.
    pub async fn fill_cart(&self, user: &str, products: &[String], quantity: u32) {
        for product in products {
            let status = self
                .client
                .post(format!("{}/carts/{user}/items", self.services.cart_url))
                .header("x-user-id", user)
                .json(&json!({ "product_id": product, "quantity": quantity }))
                .send()
                .await
                .expect("add item")
                .status();
            assert!(status.is_success(), "adding {product}: {status}");
        }
    }
}

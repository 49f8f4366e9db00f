//! Shared test plumbing: spawning the services on port 0, a small request builder, and schema
//! validation of every body against the contract.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use reference_services::{Config, ServiceKind, Spawned, World, spawn_all};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// Schema of a product (`GET /products/{product_id}`).
pub const PRODUCT: &str = "#/components/schemas/Product";
/// Schema of `GET /products`'s 200 body.
pub const PRODUCT_LIST: &str =
    "#/paths/~1products/get/responses/200/content/application~1json/schema";
/// Schema of a category.
pub const CATEGORY: &str = "#/components/schemas/Category";
/// Schema of `GET /categories`'s 200 body.
pub const CATEGORY_LIST: &str =
    "#/paths/~1categories/get/responses/200/content/application~1json/schema";
/// Schema of a cart.
pub const CART: &str = "#/components/schemas/Cart";
/// Schema of an order.
pub const ORDER: &str = "#/components/schemas/Order";
/// Schema of `GET /orders`'s 200 body.
pub const ORDER_LIST: &str = "#/paths/~1orders/get/responses/200/content/application~1json/schema";
/// Schema of `GET /health`'s 200 body.
pub const HEALTH: &str = "#/paths/~1health/get/responses/200/content/application~1json/schema";
/// Schema of every error body.
pub const PROBLEM: &str = "#/components/schemas/Problem";

/// The contract, as JSON.
fn contract() -> &'static Value {
    static CONTRACT: OnceLock<Value> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../contracts/downstream.openapi.yaml"
        );
        let text = std::fs::read_to_string(path).expect("the contract is readable");
        serde_yaml::from_str(&text).expect("the contract is valid YAML")
    })
}

/// A validator for one schema of the contract (compiled once per schema).
fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = VALIDATORS.get_or_init(Default::default);
    let mut cache = cache.lock().expect("validator cache lock");
    cache
        .entry(pointer.to_owned())
        .or_insert_with(|| {
            let mut document = contract().clone();
            document["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            document["$ref"] = json!(pointer);
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&document)
                .expect("the contract's schemas compile");
            Arc::new(validator)
        })
        .clone()
}

/// Whether `body` matches a schema of the contract.
pub fn schema_accepts(pointer: &str, body: &Value) -> bool {
    validator(pointer).is_valid(body)
}

/// Asserts that `body` matches a schema of the contract.
pub fn assert_schema(body: &Value, pointer: &str) {
    let validator = validator(pointer);
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body does not match {pointer}: {errors:#?}\nbody: {body:#}"
    );
}

/// The three services on ephemeral ports, a client, and the world behind them.
pub struct TestApp {
    /// The running services.
    pub spawned: Spawned,
    /// A client with keep-alive, shared by the test's requests.
    pub client: reqwest::Client,
}

/// Starts the services with a world smaller than the default (fast to seed), seed 42.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Config {
        products: 1_000,
        users: 60,
        ..Config::default()
    })
    .await
}

/// Starts the services with the given config.
pub async fn spawn_app_with(config: Config) -> TestApp {
    let spawned = spawn_all(config).await.expect("the services start");
    TestApp {
        spawned,
        client: client(),
    }
}

/// A client with a timeout, so a hung service fails a test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client")
}

impl TestApp {
    /// The world behind the services.
    pub fn world(&self) -> &World {
        &self.spawned.world
    }

    /// Starts a request to a service.
    pub fn request(&self, method: Method, kind: ServiceKind, path_and_query: &str) -> Call {
        let url = format!("{}{}", self.spawned.url(kind), path_and_query);
        Call {
            builder: self.client.request(method, url),
            schema: None,
        }
    }

    /// `GET` on a service.
    pub fn get(&self, kind: ServiceKind, path_and_query: &str) -> Call {
        self.request(Method::GET, kind, path_and_query)
    }

    /// `GET /products/{id}`.
    pub async fn product(&self, id: &str) -> Reply {
        self.get(ServiceKind::Product, &format!("/products/{id}"))
            .schema(PRODUCT)
            .send()
            .await
    }

    /// `GET /products?{query}`.
    pub async fn products(&self, query: &str) -> Reply {
        self.get(ServiceKind::Product, &format!("/products?{query}"))
            .schema(PRODUCT_LIST)
            .send()
            .await
    }

    /// `GET /carts/{user}` as `user`.
    pub async fn cart(&self, user: &str) -> Reply {
        self.get(ServiceKind::Cart, &format!("/carts/{user}"))
            .header("x-user-id", user)
            .schema(CART)
            .send()
            .await
    }

    /// `POST /carts/{user}/items` as `user`.
    pub async fn add_to_cart(&self, user: &str, product_id: &str, quantity: u32) -> Reply {
        self.request(
            Method::POST,
            ServiceKind::Cart,
            &format!("/carts/{user}/items"),
        )
        .header("x-user-id", user)
        .json(&json!({ "product_id": product_id, "quantity": quantity }))
        .schema(CART)
        .send()
        .await
    }

    /// `POST /orders` with an idempotency key and identity headers.
    pub async fn create_order(&self, identity: &[(&str, &str)], key: &str, body: &Value) -> Reply {
        let mut call = self
            .request(Method::POST, ServiceKind::Order, "/orders")
            .header("idempotency-key", key)
            .json(body)
            .schema(ORDER);
        for (name, value) in identity {
            call = call.header(name, value);
        }
        call.send().await
    }

    /// `GET /orders?{query}` with identity headers.
    pub async fn orders(&self, identity: &[(&str, &str)], query: &str) -> Reply {
        let mut call = self
            .get(ServiceKind::Order, &format!("/orders?{query}"))
            .schema(ORDER_LIST);
        for (name, value) in identity {
            call = call.header(name, value);
        }
        call.send().await
    }

    /// `GET /orders/{id}` with identity headers.
    pub async fn order(&self, identity: &[(&str, &str)], id: &str) -> Reply {
        let mut call = self
            .get(ServiceKind::Order, &format!("/orders/{id}"))
            .schema(ORDER);
        for (name, value) in identity {
            call = call.header(name, value);
        }
        call.send().await
    }

    /// `PUT /__admin/faults` on a service.
    pub async fn set_faults(&self, kind: ServiceKind, faults: Value) -> Reply {
        self.request(Method::PUT, kind, "/__admin/faults")
            .json(&faults)
            .send()
            .await
    }

    /// `GET /__admin/stats` of a service.
    pub async fn stats(&self, kind: ServiceKind) -> Value {
        let reply = self.get(kind, "/__admin/stats").send().await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body
    }

    /// `PATCH /__admin/products/{id}` (a back-office change).
    pub async fn change_product(&self, id: &str, change: &Value) -> Reply {
        self.request(
            Method::PATCH,
            ServiceKind::Product,
            &format!("/__admin/products/{id}"),
        )
        .json(change)
        .schema(PRODUCT)
        .send()
        .await
    }

    /// `DELETE /__admin/products/{id}`.
    pub async fn delete_product(&self, id: &str) -> Reply {
        self.request(
            Method::DELETE,
            ServiceKind::Product,
            &format!("/__admin/products/{id}"),
        )
        .send()
        .await
    }

    /// `PATCH /__admin/categories/{id}` with a new name.
    pub async fn rename_category(&self, id: &str, name: &str) -> Reply {
        self.request(
            Method::PATCH,
            ServiceKind::Product,
            &format!("/__admin/categories/{id}"),
        )
        .json(&json!({ "name": name }))
        .schema(CATEGORY)
        .send()
        .await
    }

    /// `POST /__admin/orders/{id}/status` (a warehouse's change).
    pub async fn set_order_status(&self, id: &str, status: &str) -> Reply {
        self.request(
            Method::POST,
            ServiceKind::Order,
            &format!("/__admin/orders/{id}/status"),
        )
        .json(&json!({ "status": status }))
        .schema(ORDER)
        .send()
        .await
    }

    /// An order body for the seeded regular product, owned by `user` via `channel`.
    pub fn order_body(&self, user: &str, channel: Value) -> Value {
        let world = self.world();
        let product = world
            .product(world.regular_product())
            .expect("the regular product exists");
        json!({
            "user_id": user,
            "channel": channel,
            "lines": [{
                "product_id": product.id,
                "quantity": 2,
                "unit_price": { "amount_minor": product.price.amount_minor, "currency": product.price.currency },
            }],
        })
    }
}

/// A request being built.
pub struct Call {
    /// The request so far.
    builder: reqwest::RequestBuilder,
    /// The schema a 2xx body must match, if the test names one.
    schema: Option<&'static str>,
}

impl Call {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Sends a JSON body.
    pub fn json(mut self, body: &Value) -> Call {
        self.builder = self.builder.json(body);
        self
    }

    /// Sends a raw body with a content type.
    pub fn body(mut self, content_type: &str, body: &'static str) -> Call {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }

    /// Names the schema of a successful body.
    pub fn schema(mut self, pointer: &'static str) -> Call {
        self.schema = Some(pointer);
        self
    }

    /// Sends the request and checks the body: a problem body always matches `Problem` (and its
    /// `status` the HTTP status); a 2xx body matches the named schema.
    pub async fn send(self) -> Reply {
        let response = self.builder.send().await.expect("the service answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is readable");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                panic!(
                    "body is not JSON ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let content_type = headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            assert_eq!(
                content_type, "application/problem+json",
                "error {status} is a problem"
            );
            assert_schema(&body, PROBLEM);
            assert_eq!(body["status"], json!(status.as_u16()), "problem status");
        } else if let (Some(schema), false) = (self.schema, body.is_null()) {
            assert_eq!(content_type, "application/json");
            assert_schema(&body, schema);
        }
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A response, read.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON, `Null` when empty.
    pub body: Value,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, expected: StatusCode) -> &Self {
        assert_eq!(self.status, expected, "body: {:#}", self.body);
        self
    }
}

/// The ids of a list body's items.
pub fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut encoded = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

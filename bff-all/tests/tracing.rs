//! One trace from a request to what it causes later, and links from a shared call to the
//! requests waiting for it (issue #26), end to end: a private Redis, the reference services
//! publishing their change events to it, the three gateways in one process exporting their spans
//! over OTLP/HTTP to a small collector in this test, a webhook receiver and a subscriber.
//!
//! A test binary of its own: it installs the process's (global) subscriber with export on, which
//! would change what the other suites' tests see.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router, body::Bytes, extract::State, http::HeaderMap, response::IntoResponse, routing::post,
};
use bff_partner::{auth::Scope, config::KeyConfig, hash_key};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value, trace::v1::Span,
};
use prost::Message;
use reference_services::{EventsConfig, Faults, LocalRedis, ServiceKind, order::OrderStatus};
use serde_json::json;
use server_kit::{
    Layered, TelemetryConfig,
    auth::Secret,
    telemetry,
    testing::{sample, scrape, serve},
};
use shared_clients::{PartnerId, shared_state::RedisUrl};

/// The secret and audience bff-web verifies tokens with here.
const SECRET: &str = "bff-all-tracing-test-secret-0123456789";
const AUDIENCE: &str = "bff-web";
/// acme's API key.
const ACME_KEY: &str = "acme-tracing-test-key-0123456789";
/// The trace of the request that moves the orders.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The traces of two requests for the same product.
const FIRST_READER: &str = "0af7651916cd43dd8448eb211c80319c";
const SECOND_READER: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
/// How long anything may take to show up.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the fake collector received, decoded.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Collector {
    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().expect("lock");
        exports
            .iter()
            .flat_map(|export| &export.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.iter().cloned())
            .collect()
    }

    /// Waits (polling, at most [`PATIENCE`]) for a span `matching`; the batch processor exports
    /// every few seconds.
    async fn wait_for(&self, what: &str, matching: impl Fn(&Span) -> bool) -> Span {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(span) = self.spans().into_iter().find(&matching) {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} among the spans exported: {:?}",
                self.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `POST /v1/traces`, as an OTLP/HTTP receiver answers it.
async fn receive_spans(
    State(collector): State<Collector>,
    body: Bytes,
) -> axum::response::Response {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    collector.exports.lock().expect("lock").push(export);
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}

/// The webhook requests received.
type Hooks = Arc<Mutex<Vec<HeaderMap>>>;

async fn receive_hook(State(hooks): State<Hooks>, headers: HeaderMap) -> axum::http::StatusCode {
    hooks.lock().expect("lock").push(headers);
    axum::http::StatusCode::NO_CONTENT
}

/// Serves `app` on a free loopback port; its base URL.
async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The string attribute `key` of `span`.
fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| match &value.value {
            Some(Value::StringValue(value)) => Some(value.as_str()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The trace id of a `traceparent`.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// An HS256 token for `user`.
fn token(user: &str) -> String {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a sane clock");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "aud": AUDIENCE, "iat": now, "exp": now + 300 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// Waits until `series` (no labels but `labels`) is at least `at_least` on a metrics page.
async fn wait_for_metric(metrics_url: &str, series: &str, labels: &[(&str, &str)], at_least: f64) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&client, metrics_url).await;
        if sample(&text, series, labels) >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series}{labels:?} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until bff-partner's webhook engine made its consumer group on the order stream.
async fn wait_for_group(redis: &LocalRedis) {
    let client = redis::Client::open(redis.url()).expect("redis client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for _ in 0..300 {
        let groups: Result<redis::Value, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("bff:events:order")
            .query_async(&mut conn)
            .await;
        if let Ok(redis::Value::Array(groups)) = groups
            && !groups.is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the webhook consumer group was never created");
}

/// The next status an order can move to from `status`.
fn next_status(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::Pending => Some("confirmed"),
        OrderStatus::Confirmed => Some("shipped"),
        OrderStatus::Shipped => Some("delivered"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_traced_request_causes_is_in_its_trace_and_a_shared_call_links_its_waiters() {
    let collector = Collector::default();
    let endpoint = listen(
        Router::new()
            .route("/v1/traces", post(receive_spans))
            .with_state(collector.clone()),
    )
    .await;
    let telemetry = telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            otlp_timeout: Duration::from_secs(5),
            ..TelemetryConfig::default()
        },
        "bff-all",
    );
    assert!(telemetry.is_exporting());

    let redis = LocalRedis::start()
        .await
        .expect("a private redis-server starts (./scripts/ensure-redis-server installs it)");
    let services = reference_services::spawn_all(reference_services::Config {
        events: Some(EventsConfig::new(redis.url())),
        ..reference_services::Config::default()
    })
    .await
    .expect("the reference services start");
    let mut all = bff_all::testing::on_free_ports(&services);
    all.shared.redis_url = Some(RedisUrl::new(redis.url()));
    all.shared.command_timeout = Duration::from_secs(2);
    all.web.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
    all.web.gateway.auth.audience = Some(AUDIENCE.to_owned());
    all.partner.gateway.keys = vec![KeyConfig {
        sha256: hash_key(ACME_KEY),
        partner_id: PartnerId::parse("partner-acme").expect("partner id"),
        scopes: vec![Scope::CatalogRead, Scope::OrdersRead, Scope::WebhooksManage],
        rate_limit: None,
    }];
    all.partner.gateway.webhooks.allow_insecure_targets = true;
    all.check().expect("valid test settings");
    let mut served = Vec::new();
    for gateway in bff_all::build(&all).expect("the gateways build") {
        served.push(serve(&gateway.server, gateway.gateway).await);
    }
    let (web, partner) = (&served[0], &served[2]);
    let client = reqwest::Client::new();
    let world = &services.world;

    // A partner's endpoint, and a user following one of their orders (over SSE).
    wait_for_group(&redis).await;
    let hooks = Hooks::default();
    let hook_url = listen(
        Router::new()
            .route("/hook", post(receive_hook))
            .with_state(Arc::clone(&hooks)),
    )
    .await;
    let registered = client
        .post(format!("{}/v2/webhooks", partner.base))
        .bearer_auth(ACME_KEY)
        .json(&json!({ "url": format!("{hook_url}/hook"), "events": ["order.status_changed"] }))
        .send()
        .await
        .expect("registered");
    assert_eq!(registered.status(), 201);
    let user = world.user_with_orders().to_owned();
    let (user_order, user_to) = world
        .user_orders(&user)
        .into_iter()
        .find_map(|order| Some((order.id, next_status(order.status)?)))
        .expect("a user order that can move");
    let (partner_order, partner_to) = world
        .partner_orders("partner-acme")
        .into_iter()
        .find_map(|order| Some((order.id, next_status(order.status)?)))
        .expect("a partner order that can move");
    let mut pushes = client
        .post(format!("{}/graphql", web.base))
        .header("accept", "text/event-stream")
        .bearer_auth(token(&user))
        .json(&json!({
            "query": "subscription($id: ID!) { viewerOrderUpdated(id: $id) { id status } }",
            "variables": { "id": user_order },
        }))
        .send()
        .await
        .expect("subscribed");
    assert_eq!(pushes.status(), 200);
    wait_for_metric(&web.metrics_url, "bff_live_subscribers", &[], 1.0).await;
    wait_for_metric(
        &web.metrics_url,
        "bff_events_consumer_up",
        &[("stream", "order")],
        1.0,
    )
    .await;

    // A warehouse moves both orders, in one trace.
    for (order, to, span) in [
        (&user_order, user_to, "00f067aa0ba902b7"),
        (&partner_order, partner_to, "00f067aa0ba902b8"),
    ] {
        let moved = client
            .post(format!(
                "{}/__admin/orders/{order}/status",
                services.order_url
            ))
            .header("traceparent", format!("00-{TRACE}-{span}-01"))
            .json(&json!({ "status": to }))
            .send()
            .await
            .expect("moved");
        assert_eq!(moved.status(), 200, "{order} to {to}");
    }

    // The partner's receiver gets the delivery with a traceparent of trace T...
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let delivered = loop {
        if let Some(headers) = hooks.lock().expect("lock").first().cloned() {
            break headers;
        }
        assert!(tokio::time::Instant::now() < deadline, "no webhook came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let traceparent = delivered
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .expect("the delivery carries a traceparent")
        .to_owned();
    assert_eq!(trace_id(&traceparent), TRACE, "{traceparent}");
    // ...naming the delivery's span, which is in trace T.
    let delivery = collector
        .wait_for("webhook delivery span in trace T", |span| {
            span.name == "webhook delivery" && hex(&span.trace_id) == TRACE
        })
        .await;
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(hex(&delivery.span_id).as_str()),
        "the partner continues under the delivery's span"
    );
    assert!(!delivery.parent_span_id.is_empty(), "a child, not a root");
    // The event was processed in trace T too, with the messaging attributes, and the Redis
    // commands made for it are client spans with the database attributes.
    let process = collector
        .wait_for("process span of the order stream in trace T", |span| {
            hex(&span.trace_id) == TRACE
                && attribute(span, "messaging.system") == Some("redis")
                && attribute(span, "messaging.destination.name") == Some("bff:events:order")
                && attribute(span, "messaging.operation.type") == Some("process")
        })
        .await;
    assert!(attribute(&process, "messaging.message.id").is_some());
    collector
        .wait_for("Redis command span in trace T", |span| {
            hex(&span.trace_id) == TRACE
                && attribute(span, "db.system.name") == Some("redis")
                && attribute(span, "db.operation.name").is_some_and(|name| !name.is_empty())
        })
        .await;

    // The subscriber gets the push, and the push is a span in trace T.
    let mut body = String::new();
    while !body.contains(&format!("\"{}\"", user_to.to_uppercase())) {
        let chunk = tokio::time::timeout(PATIENCE, pushes.chunk())
            .await
            .expect("a push in time")
            .expect("the stream reads")
            .expect("the stream goes on");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    collector
        .wait_for("subscription push span in trace T", |span| {
            span.name == "subscription viewerOrderUpdated" && hex(&span.trace_id) == TRACE
        })
        .await;

    // Two requests for a product nobody fetched yet, while its service is slow: one call, linked
    // to both requests.
    let admin = world.admin(ServiceKind::Product);
    admin.set_faults(Faults {
        latency: Duration::from_millis(500),
        ..admin.faults()
    });
    let product = world.regular_product().to_owned();
    let read = |trace: &'static str| {
        let request = client
            .post(format!("{}/graphql", web.base))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .json(&json!({ "query": format!("{{ product(id: \"{product}\") {{ name }} }}") }));
        async move {
            let answer: serde_json::Value = request
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            assert!(answer["data"]["product"]["name"].is_string(), "{answer}");
        }
    };
    let first = tokio::spawn(read(FIRST_READER));
    tokio::time::sleep(Duration::from_millis(100)).await;
    read(SECOND_READER).await;
    first.await.expect("the first read");
    let shared = collector
        .wait_for("shared call linked to both readers", |span| {
            let linked: Vec<String> = span.links.iter().map(|l| hex(&l.trace_id)).collect();
            linked.iter().any(|t| t == FIRST_READER) && linked.iter().any(|t| t == SECOND_READER)
        })
        .await;
    let calls: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|span| span.name == "downstream" && span.parent_span_id == shared.span_id)
        .collect();
    assert_eq!(calls.len(), 1, "one downstream call under the shared call");
    // Each request's GraphQL operation is a span with the conventions' attributes.
    let operation = collector
        .wait_for("GraphQL operation span of the first reader", |span| {
            hex(&span.trace_id) == FIRST_READER
                && attribute(span, "graphql.operation.type") == Some("query")
        })
        .await;
    assert!(attribute(&operation, "graphql.operation.name").is_some());

    drop(telemetry);
}

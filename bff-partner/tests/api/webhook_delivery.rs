//! The webhook delivery engine end to end: real Redis, the reference order service publishing
//! its events to it, the gateway's engine turning them into deliveries, and a local receiver
//! (an axum server on port 0) that records what it gets and answers a programmable sequence of
//! statuses. Signatures are checked with a Standard Webhooks verifier written here, not the
//! gateway's signer.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router, body::Bytes, extract::State, http::HeaderMap, response::IntoResponse, routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bff_partner::{
    PartnerConfig, PartnerSettings,
    auth::Scope,
    config::KeyConfig,
    hash_key,
    webhooks::{
        payload::EventSet,
        schedule::Schedule,
        store::{DeliveryOutcome, NewEndpoint, StoreSettings, WebhookStore},
    },
};
use hmac::{Hmac, Mac};
use reference_services::order::OrderStatus;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use server_kit::testing::{Replicas, spawn_replicas};
use sha2::Sha256;
use shared_clients::{PartnerId, shared_state::SharedState};

use crate::helpers::{ACME_KEY, GLOBEX_KEY};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// Its headers.
    headers: HeaderMap,
    /// Its body.
    body: Bytes,
    /// When it arrived.
    at: std::time::Instant,
}

/// What the receiver shares with the test.
#[derive(Default)]
struct ReceiverState {
    /// Every request, in arrival order.
    received: Mutex<Vec<Received>>,
    /// The statuses to answer next (then 200).
    statuses: Mutex<VecDeque<u16>>,
    /// How many of the next requests get no answer (held for a minute).
    hang: AtomicUsize,
    /// The `Retry-After` header of every answer that is not a `2xx`, if any.
    retry_after: Mutex<Option<String>>,
}

/// The receiver's handler: records the request, then holds it if asked, then answers the next
/// programmed status (200 when none is left).
async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    state.received.lock().expect("lock").push(Received {
        headers,
        body,
        at: std::time::Instant::now(),
    });
    let hang = state
        .hang
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = state
        .statuses
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    let status = axum::http::StatusCode::from_u16(status).expect("status");
    let mut answer = HeaderMap::new();
    if !status.is_success()
        && let Some(retry_after) = state.retry_after.lock().expect("lock").clone()
    {
        answer.insert("retry-after", retry_after.parse().expect("header value"));
    }
    (status, answer).into_response()
}

/// A local webhook receiver.
struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    url: String,
    /// What it got and will answer.
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts one answering `statuses` first, then 200.
    async fn start(statuses: &[u16]) -> Self {
        let state = Arc::new(ReceiverState::default());
        state
            .statuses
            .lock()
            .expect("lock")
            .extend(statuses.iter().copied());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits (up to 20 s, polling) until it got at least `count` requests; returns them.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..200 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the receiver got {} requests, expected {count}",
            self.received().len()
        );
    }
}

/// A Standard Webhooks verifier, written from the spec: the secret is base64 after `whsec_`;
/// the signature is base64(HMAC-SHA256(secret, "id.timestamp.body")); the header holds
/// space-separated `v1,<signature>` entries, one of which must match.
fn verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signatures) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|signature| signature == expected)
}

/// `count` gateways over one private Redis, with acme's and globex's keys, insecure targets
/// allowed and a short retry schedule (200 ms, 400 ms: three attempts).
async fn spawn(count: usize) -> Replicas<PartnerConfig> {
    spawn_with(count, |_| {}, bff_partner::build).await
}

/// [`spawn`], with `configure` changing the settings after the tests' defaults, built by `build`.
async fn spawn_with<E: std::fmt::Debug>(
    count: usize,
    configure: impl FnOnce(&mut PartnerSettings),
    build: impl Fn(&PartnerSettings) -> Result<server_kit::server::Gateway, E>,
) -> Replicas<PartnerConfig> {
    let services = reference_services::Config {
        products: 20,
        users: 5,
        ..reference_services::Config::default()
    };
    let replicas = spawn_replicas(
        services,
        count,
        |settings: &mut PartnerSettings| {
            let all = vec![
                Scope::CatalogRead,
                Scope::OrdersRead,
                Scope::OrdersWrite,
                Scope::WebhooksManage,
            ];
            let key = |key: &str, partner: &str| KeyConfig {
                sha256: hash_key(key),
                partner_id: PartnerId::parse(partner).expect("partner id"),
                scopes: all.clone(),
                rate_limit: None,
            };
            settings.gateway.keys = vec![
                key(ACME_KEY, "partner-acme"),
                key(GLOBEX_KEY, "partner-globex"),
            ];
            settings.gateway.default_rate_limit.per_second = 1000;
            settings.gateway.default_rate_limit.burst = 1000;
            settings.gateway.webhooks.allow_insecure_targets = true;
            settings.gateway.webhooks.schedule =
                Schedule::new(vec![Duration::from_millis(200), Duration::from_millis(400)])
                    .expect("schedule");
            settings.gateway.webhooks.delivery_timeout = Duration::from_secs(2);
            settings.gateway.webhooks.delivery_lease = Duration::from_secs(3);
            configure(settings);
        },
        build,
    )
    .await;
    if count > 0 {
        wait_for_group(&replicas).await;
    }
    replicas
}

/// Waits until the engines created their consumer group (events before it are not news).
async fn wait_for_group(replicas: &Replicas<PartnerConfig>) {
    let mut conn = replicas.redis.connection().await.expect("redis");
    let key = format!("{}order", replicas.settings.shared.events_stream_prefix);
    for _ in 0..100 {
        let groups: Result<redis::Value, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await;
        if let Ok(redis::Value::Array(groups)) = groups
            && !groups.is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the webhook consumer group was never created");
}

/// Registers an endpoint for both order events as `key`; returns (id, secret).
async fn register(base: &str, key: &str, url: &str) -> (String, String) {
    let response = Client::new()
        .post(format!("{base}/v2/webhooks"))
        .bearer_auth(key)
        .json(&json!({ "url": url, "events": ["order.created", "order.status_changed"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// `GET` a path as `key`, as JSON.
async fn get(base: &str, key: &str, path: &str) -> Value {
    let response = Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("json")
}

/// Moves one of `partner`'s orders that can be confirmed or shipped one step; returns its id and
/// new status.
async fn advance_one(replicas: &Replicas<PartnerConfig>, partner: &str) -> (String, &'static str) {
    let world = &replicas.services.world;
    let (order, to, name) = world
        .partner_orders(partner)
        .into_iter()
        .find_map(|order| match order.status {
            OrderStatus::Pending => Some((order.id, OrderStatus::Confirmed, "confirmed")),
            OrderStatus::Confirmed => Some((order.id, OrderStatus::Shipped, "shipped")),
            _ => None,
        })
        .expect("an order that can move");
    world.set_order_status(&order, to).await.expect("moved");
    (order, name)
}

/// Moves one of `partner`'s orders like [`advance_one`], through the order service's admin API
/// (`POST /__admin/orders/{id}/status`).
async fn advance_one_through_admin(
    replicas: &Replicas<PartnerConfig>,
    partner: &str,
) -> (String, &'static str) {
    let (order, to) = replicas
        .services
        .world
        .partner_orders(partner)
        .into_iter()
        .find_map(|order| match order.status {
            OrderStatus::Pending => Some((order.id, "confirmed")),
            OrderStatus::Confirmed => Some((order.id, "shipped")),
            _ => None,
        })
        .expect("an order that can move");
    let response = Client::new()
        .post(format!(
            "{}/__admin/orders/{order}/status",
            replicas.services.order_url
        ))
        .json(&json!({ "status": to }))
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK);
    (order, to)
}

/// Polls `check` on the endpoint's delivery log until it holds (up to 20 s).
async fn wait_for_log(base: &str, key: &str, endpoint: &str, check: impl Fn(&Value) -> bool) {
    let path = format!("/v2/webhooks/{endpoint}/deliveries");
    for _ in 0..200 {
        let log = get(base, key, &path).await;
        if check(&log) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the delivery log never got there: {}",
        get(base, key, &path).await
    );
}

#[tokio::test]
async fn an_order_moving_makes_one_signed_delivery_with_the_v2_order_and_its_version() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = register(base, ACME_KEY, &receiver.url).await;

    let (order, status) = advance_one_through_admin(&replicas, "partner-acme").await;

    let received = receiver.wait_for(1).await;
    // Nothing more comes: one event, one delivery.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received_now = receiver.received();
    assert_eq!(received_now.len(), 1, "exactly one delivery");
    let delivery = &received[0];
    assert!(
        verifies(&secret, &delivery.headers, &delivery.body),
        "the signature verifies"
    );
    assert!(
        delivery.headers["webhook-id"]
            .to_str()
            .expect("id")
            .starts_with("msg_")
    );
    assert_eq!(delivery.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&delivery.body).expect("json body");
    assert_eq!(body["type"], "order.status_changed");
    assert!(body["timestamp"].is_string());
    assert_eq!(body["data"]["id"], order.as_str());
    assert_eq!(body["data"]["status"], status);
    assert!(body["data"]["version"].as_u64().is_some_and(|v| v > 0));
    assert!(
        body["data"]["customer_reference"].is_string(),
        "the v2 shape"
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_then_succeeding_gets_three_attempts() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    let receiver = Receiver::start(&[500, 500]).await;
    let (endpoint, secret) = register(base, ACME_KEY, &receiver.url).await;

    advance_one(&replicas, "partner-acme").await;

    let received = receiver.wait_for(3).await;
    let ids: Vec<_> = received
        .iter()
        .map(|request| request.headers["webhook-id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "the same webhook-id");
    assert!(
        received
            .iter()
            .all(|request| verifies(&secret, &request.headers, &request.body))
    );
    // On the schedule (200 ms, then 400 ms, each ±20 %): never sooner.
    let gaps: Vec<Duration> = received
        .windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .collect();
    assert!(
        gaps[0] >= Duration::from_millis(160) && gaps[1] >= Duration::from_millis(320),
        "{gaps:?}"
    );
    wait_for_log(base, ACME_KEY, &endpoint, |log| {
        log["items"][0]["outcome"] == "delivered"
    })
    .await;
    let log = get(
        base,
        ACME_KEY,
        &format!("/v2/webhooks/{endpoint}/deliveries"),
    )
    .await;
    assert_eq!(log["items"].as_array().expect("items").len(), 1);
    assert_eq!(log["items"][0]["attempts"], 3);
    assert_eq!(log["items"][0]["last_status"], 200);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_410_disables_the_endpoint() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    let client = Client::new();
    // Every webhook series is shown, zeros included, from the start: before any request.
    let metrics = server_kit::testing::scrape(&client, &replicas.metrics_urls[0]).await;
    for series in [
        "bff_webhook_deliveries_total{gateway=\"bff-partner\",outcome=\"gone\"} 0",
        "bff_webhook_endpoints_disabled_total{gateway=\"bff-partner\",reason=\"gone\"} 0",
        "bff_webhook_endpoints_disabled_total{gateway=\"bff-partner\",reason=\"failing\"} 0",
        "bff_webhook_queue_depth{gateway=\"bff-partner\",state=\"due\"} 0",
        "bff_webhook_queue_depth{gateway=\"bff-partner\",state=\"scheduled\"} 0",
        "bff_webhook_endpoints_disabled{gateway=\"bff-partner\",reason=\"gone\"} 0",
        "# TYPE bff_webhook_delivery_duration_seconds histogram",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    let receiver = Receiver::start(&[410]).await;
    let (endpoint, _) = register(base, ACME_KEY, &receiver.url).await;

    advance_one(&replicas, "partner-acme").await;

    receiver.wait_for(1).await;
    wait_for_log(base, ACME_KEY, &endpoint, |log| {
        log["items"][0]["outcome"] == "failed"
    })
    .await;
    let got = get(base, ACME_KEY, &format!("/v2/webhooks/{endpoint}")).await;
    assert_eq!(got["enabled"], false);
    assert_eq!(got["disabled_reason"], "gone");
    assert_eq!(receiver.received().len(), 1, "no retry after 410");

    // Counted right after being recorded: poll.
    let mut counts = (0.0, 0.0, 0.0);
    for _ in 0..50 {
        let metrics = server_kit::testing::scrape(&client, &replicas.metrics_urls[0]).await;
        let sample = |name: &str, labels: &[(&str, &str)]| {
            server_kit::testing::sample(&metrics, name, labels)
        };
        counts = (
            sample("bff_webhook_deliveries_total", &[("outcome", "gone")]),
            sample(
                "bff_webhook_endpoints_disabled_total",
                &[("reason", "gone")],
            ),
            sample(
                "bff_webhook_delivery_duration_seconds_count",
                &[("outcome", "gone")],
            ),
        );
        if counts.1 >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (1.0, 1.0, 1.0), "(attempts, disabled, timed)");
}

#[tokio::test]
async fn two_replicas_deliver_each_event_once() {
    let replicas = spawn(2).await;
    let receiver = Receiver::start(&[]).await;
    let (endpoint, _) = register(&replicas.bases[0], ACME_KEY, &receiver.url).await;

    advance_one(&replicas, "partner-acme").await;
    advance_one(&replicas, "partner-acme").await;
    advance_one(&replicas, "partner-acme").await;

    receiver.wait_for(3).await;
    wait_for_log(&replicas.bases[1], ACME_KEY, &endpoint, |log| {
        log["items"].as_array().is_some_and(|items| {
            items.len() == 3 && items.iter().all(|d| d["outcome"] == "delivered")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 3, "each of three events once");
    let mut ids: Vec<_> = received
        .iter()
        .map(|request| request.headers["webhook-id"].clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn partner_b_never_receives_partner_a_order_events() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    let acme = Receiver::start(&[]).await;
    let globex = Receiver::start(&[]).await;
    register(base, ACME_KEY, &acme.url).await;
    register(base, GLOBEX_KEY, &globex.url).await;

    let (order, _) = advance_one(&replicas, "partner-acme").await;

    let received = acme.wait_for(1).await;
    let body: Value = serde_json::from_slice(&received[0].body).expect("json");
    assert_eq!(body["data"]["id"], order.as_str());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(globex.received().is_empty(), "globex got acme's event");
}

#[tokio::test]
async fn a_replica_dropped_mid_delivery_leaves_the_delivery_to_another() {
    // No served replica: the two engines below are the only ones.
    let replicas = spawn(0).await;
    let settings = replicas.settings.clone();
    let receiver = Receiver::start(&[]).await;
    receiver.state.hang.store(1, Ordering::SeqCst);
    let store = WebhookStore::new(
        SharedState::connect(&settings.shared).expect("redis"),
        StoreSettings::default(),
    );
    let acme = PartnerId::parse("partner-acme").expect("partner");
    let (endpoint, secret) = store
        .create_endpoint(
            &acme,
            NewEndpoint {
                url: receiver.url.clone(),
                events: EventSet::parse(["order.status_changed"]).expect("events"),
                description: None,
            },
            1,
        )
        .await
        .expect("endpoint");

    // Replica A takes the event and starts the delivery; the receiver holds it unanswered.
    let first = bff_partner::build(&settings).expect("replica A");
    wait_for_group(&replicas).await;
    advance_one(&replicas, "partner-acme").await;
    let received = receiver.wait_for(1).await;
    // A goes away mid-delivery; B starts and claims the delivery once A's lease ended.
    drop(first);
    let _second = bff_partner::build(&settings).expect("replica B");
    let received_again = receiver.wait_for(2).await;
    assert_eq!(
        received[0].headers["webhook-id"], received_again[1].headers["webhook-id"],
        "the same delivery"
    );
    assert!(verifies(
        &secret.expose(),
        &received_again[1].headers,
        &received_again[1].body
    ));
    for _ in 0..100 {
        let page = store
            .deliveries(&acme, &endpoint.id, None, 10)
            .await
            .expect("log");
        if page.items.len() == 1 && page.items[0].outcome == DeliveryOutcome::Delivered {
            // A's attempt never ended, so it was never recorded.
            assert_eq!(page.items[0].attempts, 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the delivery was not finished by replica B");
}

#[tokio::test]
async fn an_order_s_later_event_waits_while_its_earlier_one_is_retried() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    let receiver = Receiver::start(&[500]).await;
    register(base, ACME_KEY, &receiver.url).await;
    let world = &replicas.services.world;
    let order = world
        .partner_orders("partner-acme")
        .into_iter()
        .find(|order| order.status == OrderStatus::Pending)
        .expect("a pending order")
        .id;

    world
        .set_order_status(&order, OrderStatus::Confirmed)
        .await
        .expect("confirmed");
    world
        .set_order_status(&order, OrderStatus::Shipped)
        .await
        .expect("shipped");

    let received = receiver.wait_for(3).await;
    let bodies: Vec<Value> = received
        .iter()
        .map(|request| serde_json::from_slice(&request.body).expect("json"))
        .collect();
    let statuses: Vec<&str> = bodies
        .iter()
        .map(|body| body["data"]["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        ["confirmed", "confirmed", "shipped"],
        "shipped waits until confirmed is delivered"
    );
    assert!(bodies[2]["data"]["version"].as_u64() > bodies[0]["data"]["version"].as_u64());
}

#[tokio::test]
async fn a_ping_and_a_redelivery_are_sent_and_counted() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    // The ping fails for its whole schedule (three attempts), then is redelivered by hand.
    let receiver = Receiver::start(&[500, 500, 500]).await;
    let (endpoint, secret) = register(base, ACME_KEY, &receiver.url).await;
    let client = Client::new();

    let response = client
        .post(format!("{base}/v2/webhooks/{endpoint}/test"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .expect("test");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ping: Value = response.json().await.expect("json");
    let delivery = ping["id"].as_str().expect("delivery id").to_owned();
    let received = receiver.wait_for(3).await;
    let body: Value = serde_json::from_slice(&received[0].body).expect("json");
    assert_eq!(body["type"], "ping");
    assert!(verifies(&secret, &received[0].headers, &received[0].body));
    wait_for_log(base, ACME_KEY, &endpoint, |log| {
        log["items"][0]["outcome"] == "failed"
    })
    .await;
    // Failing for a whole schedule with no success ever disables the endpoint.
    let got = get(base, ACME_KEY, &format!("/v2/webhooks/{endpoint}")).await;
    assert_eq!(got["enabled"], false);
    assert_eq!(got["disabled_reason"], "failing");
    let response = client
        .patch(format!("{base}/v2/webhooks/{endpoint}"))
        .bearer_auth(ACME_KEY)
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .expect("enable");
    assert_eq!(response.status(), StatusCode::OK);

    let response = client
        .post(format!(
            "{base}/v2/webhooks/{endpoint}/deliveries/{delivery}/redeliver"
        ))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .expect("redeliver");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = receiver.wait_for(4).await;
    assert_eq!(received[3].headers["webhook-id"], delivery.as_str());
    wait_for_log(base, ACME_KEY, &endpoint, |log| {
        log["items"][0]["outcome"] == "delivered" && log["items"][0]["attempts"] == 4
    })
    .await;

    // Counted right after being recorded: poll.
    let mut counts = (0.0, 0.0, 0.0);
    for _ in 0..50 {
        let metrics = server_kit::testing::scrape(&client, &replicas.metrics_urls[0]).await;
        let count = |outcome: &str| {
            server_kit::testing::sample(
                &metrics,
                "bff_webhook_deliveries_total",
                &[("outcome", outcome)],
            )
        };
        counts = (count("retry"), count("failed"), count("delivered"));
        if counts.2 >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (2.0, 1.0, 1.0), "(retry, failed, delivered)");
}

/// A replica's consumer dies right after reading an event (`XREADGROUP`, never acknowledged):
/// a live replica takes it over once it has been pending for `event_claim_idle`
/// (`XAUTOCLAIM`) and delivers it. The live replica's own reads never see the entry (it was
/// delivered to the dead consumer), so the delivery can only come from the takeover.
#[tokio::test]
async fn an_event_read_by_a_consumer_that_died_is_claimed_and_delivered_by_a_live_replica() {
    let replicas = spawn_with(
        0,
        |settings| settings.gateway.webhooks.event_claim_idle = Duration::from_secs(1),
        bff_partner::build,
    )
    .await;
    let settings = replicas.settings.clone();
    let receiver = Receiver::start(&[]).await;
    let store = WebhookStore::new(
        SharedState::connect(&settings.shared).expect("redis"),
        StoreSettings::default(),
    );
    let acme = PartnerId::parse("partner-acme").expect("partner");
    let (endpoint, secret) = store
        .create_endpoint(
            &acme,
            NewEndpoint {
                url: receiver.url.clone(),
                events: EventSet::parse(["order.status_changed"]).expect("events"),
                description: None,
            },
            1,
        )
        .await
        .expect("endpoint");
    let mut conn = replicas.redis.connection().await.expect("redis");
    let stream = format!("{}order", settings.shared.events_stream_prefix);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(bff_partner::webhooks::engine::GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .expect("group");

    // The doomed consumer reads the event and is never heard of again.
    let (order, _) = advance_one(&replicas, "partner-acme").await;
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(bff_partner::webhooks::engine::GROUP)
        .arg("replica-that-died")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("read");
    let entries: Vec<_> = read.keys.iter().flat_map(|key| &key.ids).collect();
    assert_eq!(entries.len(), 1, "the dead consumer holds the event");
    assert_eq!(pending(&mut conn, &stream).await, 1);

    // A live replica starts.
    let _live = bff_partner::build(&settings).expect("live replica");
    let received = receiver.wait_for(1).await;
    let body: Value = serde_json::from_slice(&received[0].body).expect("json");
    assert_eq!(body["data"]["id"], order.as_str());
    assert!(verifies(
        &secret.expose(),
        &received[0].headers,
        &received[0].body
    ));
    // The taken-over entry is acknowledged once its delivery exists.
    for _ in 0..100 {
        if pending(&mut conn, &stream).await == 0 {
            let page = store
                .deliveries(&acme, &endpoint.id, None, 10)
                .await
                .expect("log");
            assert_eq!(page.items.len(), 1, "one delivery for the event");
            assert_eq!(receiver.received().len(), 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the claimed entry was never acknowledged");
}

/// How many entries of `stream` are pending (read, not acknowledged) in the engines' group.
async fn pending(conn: &mut reference_services::TestConnection, stream: &str) -> u64 {
    let (count, ..): (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(bff_partner::webhooks::engine::GROUP)
        .query_async(conn)
        .await
        .expect("xpending");
    count
}

/// Milliseconds since the epoch of an RFC 3339 time in the API.
fn unix_ms(value: &Value) -> i128 {
    let text = value.as_str().expect("an RFC 3339 time");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp_nanos()
        / 1_000_000
}

#[tokio::test]
async fn retry_after_on_429_and_503_puts_the_next_attempt_that_far_out() {
    let replicas = spawn(1).await;
    let base = &replicas.bases[0];
    // The schedule says 200 ms; the receivers ask for 30 s and 2 min.
    let busy = Receiver::start(&[429]).await;
    *busy.state.retry_after.lock().expect("lock") = Some("30".to_owned());
    let down = Receiver::start(&[503]).await;
    *down.state.retry_after.lock().expect("lock") = Some("120".to_owned());
    let (to_busy, _) = register(base, ACME_KEY, &busy.url).await;
    let (to_down, _) = register(base, ACME_KEY, &down.url).await;

    advance_one(&replicas, "partner-acme").await;

    for (endpoint, status, seconds) in [(&to_busy, 429, 30), (&to_down, 503, 120)] {
        wait_for_log(base, ACME_KEY, endpoint, |log| {
            log["items"][0]["attempts"] == 1
        })
        .await;
        let log = get(
            base,
            ACME_KEY,
            &format!("/v2/webhooks/{endpoint}/deliveries"),
        )
        .await;
        let delivery = &log["items"][0];
        assert_eq!(delivery["outcome"], "pending");
        assert_eq!(delivery["last_status"], status);
        let wait = unix_ms(&delivery["next_attempt_at"]) - unix_ms(&delivery["last_attempt_at"]);
        assert!(
            (seconds * 1000..=seconds * 1000 + 1000).contains(&wait),
            "{status} with Retry-After: {seconds} waits {wait} ms"
        );
    }
    assert_eq!(busy.received().len(), 1);
    assert_eq!(down.received().len(), 1);
}

/// Resolves one name to an address the test sets (and changes), no other.
#[derive(Debug)]
struct RebindingResolver {
    /// The name.
    name: &'static str,
    /// What it resolves to now.
    ip: Mutex<std::net::IpAddr>,
}

impl bff_partner::webhooks::ssrf::Resolver for RebindingResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> bff_partner::webhooks::ssrf::Lookup<'a> {
        if host == self.name {
            let ip = *self.ip.lock().expect("lock");
            Box::pin(async move { Ok(vec![std::net::SocketAddr::new(ip, port)]) })
        } else {
            Box::pin(async { Err(std::io::ErrorKind::NotFound.into()) })
        }
    }
}

/// DNS rebinding: a name that resolved to a public address when the endpoint was registered
/// resolves to a loopback one when a delivery is made. The delivery is refused before any
/// connection (a listener on that loopback port counts connections: none), and its log says
/// why.
#[tokio::test]
async fn a_target_rebound_to_loopback_after_registration_is_refused_at_delivery() {
    let resolver = Arc::new(RebindingResolver {
        name: "hooks.acme.example",
        ip: Mutex::new("93.184.216.34".parse().expect("ip")),
    });
    let build_resolver = Arc::clone(&resolver);
    let replicas = spawn_with(
        1,
        // Production rules: https only, no loopback.
        |settings| settings.gateway.webhooks.allow_insecure_targets = false,
        move |settings: &PartnerSettings| {
            let downstream =
                shared_clients::Downstream::new_shared(&settings.downstream, &settings.shared)?;
            bff_partner::build_with_resolver(settings, downstream, build_resolver.clone())
        },
    )
    .await;
    let base = &replicas.bases[0];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let (endpoint, _) = register(
        base,
        ACME_KEY,
        &format!("https://hooks.acme.example:{port}/hook"),
    )
    .await;

    *resolver.ip.lock().expect("lock") = "127.0.0.1".parse().expect("ip");
    let response = Client::new()
        .post(format!("{base}/v2/webhooks/{endpoint}/test"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .expect("test");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    wait_for_log(base, ACME_KEY, &endpoint, |log| {
        log["items"][0]["attempts"].as_u64() >= Some(1)
    })
    .await;
    let log = get(
        base,
        ACME_KEY,
        &format!("/v2/webhooks/{endpoint}/deliveries"),
    )
    .await;
    let delivery = &log["items"][0];
    let error = delivery["last_error"].as_str().expect("why it failed");
    assert!(
        error.contains("loopback address (127.0.0.1)"),
        "the refusal is recorded: {error}"
    );
    assert!(delivery["last_status"].is_null());
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to the rebound address"
    );
}

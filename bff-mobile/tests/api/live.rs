//! The order-tracking stream (`GET /m/v1/orders/{order_id}/live`) over real sockets: read as a
//! client reads server-sent events, with the order moved along by the reference order service
//! (its admin API, or the `World` helpers doing the same), without Redis (the gateway polls) and
//! with the services' change events (it is woken by them).

use std::time::Duration;

use reference_services::order::OrderStatus;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server_kit::{
    Server,
    auth::{Secret, dev_token},
    testing::{sample, scrape, spawn_replicas},
};
use shared_clients::UserId;

use crate::helpers::{Answer, SECRET, spawn_app_with, token};

/// How long a test waits for something the gateway does within milliseconds; only a broken
/// stream takes this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// A short poll interval, so the polling tests do not wait long for a change to be found.
const POLL: Duration = Duration::from_millis(100);

/// One block of a server-sent event stream.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    /// `event:`.
    pub(crate) event: Option<String>,
    /// `id:`.
    pub(crate) id: Option<String>,
    /// `data:` (lines joined with `\n`).
    pub(crate) data: String,
    /// A comment line's text (`: keep-alive`), when the block is one.
    comment: Option<String>,
}

impl Frame {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {self:?}"))
    }

    /// Parses one block (the lines between two blank lines).
    fn parse(block: &str) -> Self {
        let mut frame = Self::default();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                frame.comment = Some(comment.trim_start().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "event" => frame.event = Some(value),
                "id" => frame.id = Some(value),
                "data" => {
                    if !frame.data.is_empty() {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(&value);
                }
                other => panic!("unexpected field {other:?} in {block:?}"),
            }
        }
        frame
    }
}

/// A response body read as server-sent events, block by block, as they arrive.
pub(crate) struct Events {
    /// The streaming response.
    response: reqwest::Response,
    /// Bytes received and not yet parsed.
    buffer: String,
    /// Comments seen so far (keep-alives).
    comments: Vec<String>,
}

impl Events {
    /// The stream of `response`, which must be a `200` event stream.
    pub(crate) fn of(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with("text/event-stream"),
            "{}",
            header("content-type")
        );
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-accel-buffering"), "no");
        assert_eq!(header("content-encoding"), "", "events are not compressed");
        assert_eq!(header("etag"), "", "an event stream has no entity tag");
        Self {
            response,
            buffer: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next block, comments included; `None` once the server closed the stream.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(Frame::parse(block.trim_end_matches('\n')));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("nothing within {PATIENCE:?}; have {:?}", self.buffer))
                .expect("the stream is read without error");
            match chunk {
                Some(bytes) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => {
                    assert_eq!(self.buffer, "", "the stream closed mid-event");
                    return None;
                }
            }
        }
    }

    /// The next event (comments are noted and skipped); `None` once the stream closed.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let frame = self.frame().await?;
            match frame.comment {
                Some(comment) if frame.event.is_none() && frame.data.is_empty() => {
                    self.comments.push(comment);
                }
                _ => return Some(frame),
            }
        }
    }

    /// The next event, which must be `event` (`order`, `end`, `error`).
    pub(crate) async fn expect(&mut self, event: &str) -> Frame {
        let frame = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream closed before an {event:?} event"));
        assert_eq!(frame.event.as_deref(), Some(event), "{frame:?}");
        frame
    }

    /// Asserts that the server closes the stream next.
    pub(crate) async fn expect_closed(&mut self) {
        if let Some(frame) = self.next().await {
            panic!("an event after the last one: {frame:?}");
        }
    }
}

/// `GET {base}/m/v1/orders/{order_id}/live` with `token` (none when `None`).
pub(crate) async fn open(
    client: &reqwest::Client,
    base: &str,
    order_id: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .get(format!("{base}/m/v1/orders/{order_id}/live"))
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("the response starts within the patience")
        .expect("answered")
}

/// Places a pending order for `user` through the gateway at `base` (one of `product` in the cart,
/// then checkout); returns its id.
pub(crate) async fn place_order(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    product: &str,
) -> String {
    let added = client
        .post(format!("{base}/m/v1/cart/items"))
        .bearer_auth(token(user))
        .json(&json!({ "product_id": product, "quantity": 1 }))
        .send()
        .await
        .expect("answered");
    assert!(added.status().is_success(), "{}", added.status());
    let placed = Answer::of(
        client
            .request(Method::POST, format!("{base}/m/v1/checkout"))
            .bearer_auth(token(user))
            .header("idempotency-key", format!("live-{user}"))
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(
        placed.status,
        201,
        "{}",
        String::from_utf8_lossy(&placed.bytes)
    );
    let order = placed.json();
    assert_eq!(order["status"], "pending");
    order["id"].as_str().expect("an id").to_owned()
}

/// Scrapes `metrics_url` until `done` holds of the text, for at most [`PATIENCE`].
async fn until_metrics(
    client: &reqwest::Client,
    metrics_url: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(client, metrics_url).await;
        if done(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_redis_a_polled_order_stream_pushes_each_status_then_ends_when_delivered() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.poll_interval = POLL;
        settings.gateway.subscriptions.keep_alive = Duration::from_millis(50);
    })
    .await;
    let world = app.world();
    let user = world.user_without_cart().to_owned();
    let order_id = place_order(&app.client, &app.base, &user, world.regular_product()).await;
    let mut events = Events::of(open(&app.client, &app.base, &order_id, Some(&token(&user))).await);

    let first = events.expect("order").await;
    assert_eq!(first.id.as_deref(), Some("1"));
    let screen = first.json();
    assert_eq!(screen["status"], "pending");
    assert_eq!(
        screen,
        app.order(&user, &order_id).await.json(),
        "the stream sends the order screen, as GET answers it"
    );
    // While nothing changes, keep-alive comments flow.
    while events.comments.is_empty() {
        let frame = events.frame().await.expect("open");
        assert_eq!(frame.comment.as_deref(), Some("keep-alive"), "{frame:?}");
        events.comments.push("keep-alive".to_owned());
    }
    // The poller has read the order once (a second poll has started), so what it read is
    // what a change is compared with.
    until_metrics(&app.client, &app.metrics_url, "polled twice", |text| {
        sample(text, "bff_live_polls_total", &[]) >= 2.0
    })
    .await;

    world
        .set_order_status(&order_id, OrderStatus::Confirmed)
        .await
        .expect("confirmed");
    let confirmed = events.expect("order").await;
    assert_eq!(confirmed.id.as_deref(), Some("2"));
    assert_eq!(confirmed.json()["status"], "confirmed");
    assert_eq!(confirmed.json()["status_text"], "Confirmed");

    world
        .set_order_status(&order_id, OrderStatus::Shipped)
        .await
        .expect("shipped");
    let shipped = events.expect("order").await;
    assert_eq!(shipped.id.as_deref(), Some("3"));
    assert_eq!(shipped.json()["status"], "shipped");

    assert!(world.advance_orders().await >= 1, "ours moved on");
    let delivered = events.expect("order").await;
    assert_eq!(delivered.id.as_deref(), Some("4"));
    assert_eq!(delivered.json()["status"], "delivered");
    assert_eq!(
        delivered.json(),
        app.order(&user, &order_id).await.json(),
        "the last screen is the screen"
    );
    let end = events.expect("end").await;
    assert_eq!(end.json(), json!({ "id": order_id, "status": "delivered" }));
    events.expect_closed().await;
}

#[tokio::test]
async fn with_change_events_every_replicas_stream_is_woken_by_the_event_and_polls_nothing() {
    let replicas = spawn_replicas(
        reference_services::Config::default(),
        2,
        |settings: &mut bff_mobile::MobileSettings| {
            settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
            // Short: any polling would show in the counter at once.
            settings.gateway.subscriptions.poll_interval = POLL;
        },
        bff_mobile::build,
    )
    .await;
    let client = reqwest::Client::new();
    for metrics_url in &replicas.metrics_urls {
        until_metrics(&client, metrics_url, "reading order events", |text| {
            sample(text, "bff_events_consumer_up", &[("stream", "order")]) >= 1.0
        })
        .await;
    }
    let world = &replicas.services.world;
    let user = world.user_without_cart().to_owned();
    let order_id = place_order(&client, &replicas.bases[0], &user, world.regular_product()).await;
    let mut streams = Vec::new();
    for base in &replicas.bases {
        let mut events = Events::of(open(&client, base, &order_id, Some(&token(&user))).await);
        assert_eq!(events.expect("order").await.json()["status"], "pending");
        streams.push(events);
    }

    // The warehouse confirms the order at the order service: no gateway is involved.
    let changed = client
        .post(format!(
            "{}/__admin/orders/{order_id}/status",
            replicas.services.order_url
        ))
        .json(&json!({ "status": "confirmed" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(changed.status(), 200);

    for events in &mut streams {
        let confirmed = events.expect("order").await;
        assert_eq!(confirmed.id.as_deref(), Some("2"));
        assert_eq!(confirmed.json()["status"], "confirmed");
    }
    for metrics_url in &replicas.metrics_urls {
        let text = scrape(&client, metrics_url).await;
        assert_eq!(sample(&text, "bff_live_polls_total", &[]), 0.0, "{text}");
        assert!(
            sample(&text, "bff_live_signals_total", &[]) >= 1.0,
            "{text}"
        );
        assert_eq!(sample(&text, "bff_live_subscribers", &[]), 1.0, "{text}");
    }
}

#[tokio::test]
async fn a_stream_needs_a_token_and_the_users_own_order_and_starts_nothing_otherwise() {
    let app = spawn_app_with(|_| {}).await;
    let owner = app.world().user_with_orders().to_owned();
    let order_id = app.world().user_orders(&owner)[0].id.to_string();

    let anonymous = Answer::of(open(&app.client, &app.base, &order_id, None).await).await;
    anonymous.assert_problem(401, "missing_token");
    assert!(
        anonymous.header("www-authenticate").starts_with("Bearer"),
        "{}",
        anonymous.header("www-authenticate")
    );

    let stranger = app.world().user_without_cart().to_owned();
    let token = token(&stranger);
    for id in [order_id.as_str(), "o-no-such-order"] {
        Answer::of(open(&app.client, &app.base, id, Some(&token)).await)
            .await
            .assert_problem(404, "order_not_found");
    }
    Answer::of(open(&app.client, &app.base, "not an id!", Some(&token)).await)
        .await
        .assert_problem(400, "invalid_id");

    let text = scrape(&app.client, &app.metrics_url).await;
    assert_eq!(sample(&text, "bff_live_subscribers", &[]), 0.0, "{text}");
    assert_eq!(sample(&text, "bff_live_topics", &[]), 0.0, "{text}");
}

#[tokio::test]
async fn with_streams_off_the_route_is_not_served() {
    let app = spawn_app_with(|settings| settings.gateway.subscriptions.enabled = false).await;
    let user = app.world().user_with_orders().to_owned();
    let order_id = app.world().user_orders(&user)[0].id.to_string();
    Answer::of(open(&app.client, &app.base, &order_id, Some(&token(&user))).await)
        .await
        .assert_problem(404, "route_not_found");
    assert_eq!(app.order(&user, &order_id).await.status, 200);
}

#[tokio::test]
async fn a_users_second_stream_over_the_limit_is_429_until_the_first_closes() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.max_streams_per_user = 1;
        // Writes reveal a client that left: the first stream's place is freed soon after.
        settings.gateway.subscriptions.keep_alive = Duration::from_millis(50);
    })
    .await;
    let user = app.world().user_without_cart().to_owned();
    let order_id = place_order(&app.client, &app.base, &user, app.world().regular_product()).await;
    let mut first = Events::of(open(&app.client, &app.base, &order_id, Some(&token(&user))).await);
    first.expect("order").await;

    let refused =
        Answer::of(open(&app.client, &app.base, &order_id, Some(&token(&user))).await).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("content-type"), "application/problem+json");
    assert_eq!(refused.header("retry-after"), "5");
    let problem = refused.json();
    assert_eq!(problem["code"], "TOO_MANY_SUBSCRIPTIONS", "{problem}");
    assert_eq!(problem["limit"], "per_user", "{problem}");
    assert_eq!(problem["status"], 429, "{problem}");
    let text = scrape(&app.client, &app.metrics_url).await;
    assert_eq!(
        sample(&text, "bff_live_refusals_total", &[("reason", "per_user")]),
        1.0,
        "{text}"
    );

    // Another user is not limited by this one's streams.
    let other = app.world().user_with_orders().to_owned();
    let other_order = app.world().user_orders(&other)[0].id.to_string();
    let mut theirs =
        Events::of(open(&app.client, &app.base, &other_order, Some(&token(&other))).await);
    theirs.expect("order").await;

    // Once the first stream's client has gone, the user may open one again.
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = open(&app.client, &app.base, &order_id, Some(&token(&user))).await;
        if response.status() == StatusCode::OK {
            Events::of(response).expect("order").await;
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stream_ends_with_token_expired_when_the_token_that_opened_it_expires() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.world().user_without_cart().to_owned();
    let order_id = place_order(&app.client, &app.base, &user, app.world().regular_product()).await;
    let short = dev_token(
        &Secret::new(SECRET),
        &UserId::parse(&user).expect("a user id"),
        Duration::from_secs(2),
        None,
        None,
    )
    .expect("a token");
    let mut events = Events::of(open(&app.client, &app.base, &order_id, Some(&short)).await);
    assert_eq!(events.expect("order").await.json()["status"], "pending");

    let error = events.expect("error").await;
    let problem = error.json();
    assert_eq!(problem["code"], "TOKEN_EXPIRED", "{problem}");
    assert_eq!(problem["status"], 401, "{problem}");
    events.expect_closed().await;
}

#[tokio::test]
async fn a_stream_ends_when_the_gateway_starts_shutting_down_and_the_drain_does_not_wait_for_it() {
    let services = reference_services::spawn_all(reference_services::Config::default())
        .await
        .expect("the reference services start");
    let mut settings = bff_mobile::MobileSettings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().expect("an address");
    settings.server.metrics_listen_addr = None;
    // Far longer than the test waits: only the stream closing lets the drain finish.
    settings.server.shutdown_grace = Duration::from_secs(600);
    settings
        .downstream
        .product
        .url
        .clone_from(&services.product_url);
    settings.downstream.cart.url.clone_from(&services.cart_url);
    settings
        .downstream
        .order
        .url
        .clone_from(&services.order_url);
    settings.gateway.auth.hs256_secret = Some(Secret::new(SECRET));
    settings.validate().expect("valid settings");
    let gateway = bff_mobile::build(&settings).expect("the gateway builds");
    let listener = Server::bind(&settings.server).await.expect("bound");
    let server = Server::new(listener, &settings.server, gateway);
    let base = format!("http://{}", server.local_addr().expect("an address"));
    let readiness = server.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        stopped.await.ok();
    }));

    let client = reqwest::Client::new();
    let user = services.world.user_without_cart().to_owned();
    let order_id = place_order(&client, &base, &user, services.world.regular_product()).await;
    let mut events = Events::of(open(&client, &base, &order_id, Some(&token(&user))).await);
    events.expect("order").await;

    stop.send(()).expect("the server is serving");
    let error = events.expect("error").await;
    let problem = error.json();
    assert_eq!(problem["code"], "SHUTTING_DOWN", "{problem}");
    assert_eq!(problem["status"], 503, "{problem}");
    events.expect_closed().await;
    assert!(readiness.is_shutting_down());
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("the drain ends once the stream has closed")
        .expect("the server task")
        .expect("served without error");
}

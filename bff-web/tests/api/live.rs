//! Subscriptions over real sockets: a WebSocket client speaking `graphql-transport-ws` and an
//! SSE client, against gateways fed by the reference services' change events in a real
//! `redis-server` (or, without Redis, by polling).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reference_services::{
    order::OrderStatus as RefStatus,
    product::{Money, ProductChange},
};
use serde_json::{Value, json};
use server_kit::testing::{Replicas, scrape, spawn_replicas};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::CloseFrame};

use crate::helpers::{AUDIENCE, SECRET, now, sign, spawn_app_with, token};

/// How long a test waits for something that should come at once (a loaded machine is slow; the
/// latency itself is measured by `./scripts/bench`, not here).
const PATIENCE: Duration = Duration::from_secs(10);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` client.
struct Ws {
    socket: Socket,
}

impl Ws {
    /// Opens a socket to `endpoint` (an `http://` URL) offering the subprotocol.
    async fn open(endpoint: &str) -> Result<Ws, reqwest::StatusCode> {
        let mut request = endpoint
            .replacen("http://", "ws://", 1)
            .into_client_request()
            .expect("a request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("a header"),
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => {
                assert_eq!(
                    response.headers()["sec-websocket-protocol"],
                    "graphql-transport-ws"
                );
                Ok(Ws { socket })
            }
            Err(tungstenite::Error::Http(response)) => {
                Err(reqwest::StatusCode::from_u16(response.status().as_u16()).expect("a status"))
            }
            Err(err) => panic!("connect: {err}"),
        }
    }

    /// Opens a socket and initialises it (with `token` in the payload), expecting the ack.
    async fn connect(endpoint: &str, token: Option<&str>) -> Ws {
        let mut ws = Ws::open(endpoint).await.expect("upgraded");
        ws.init(token).await;
        let ack = ws.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    /// Sends `connection_init`.
    async fn init(&mut self, token: Option<&str>) {
        let payload = match token {
            Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
    }

    /// Sends a message.
    async fn send(&mut self, message: Value) {
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .await
            .expect("sent");
    }

    /// Subscribes `id` to `query`.
    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id, "type": "subscribe",
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// The next protocol message (answering the server's pings), or a panic after [`PATIENCE`].
    async fn recv(&mut self) -> Value {
        match self.recv_within(PATIENCE).await {
            Ok(message) => message,
            Err(close) => panic!("closed instead: {close:?}"),
        }
    }

    /// The next protocol message within `wait`; `Err` with the close frame when the socket
    /// closes. Panics when nothing comes.
    async fn recv_within(&mut self, wait: Duration) -> Result<Value, Option<(u16, String)>> {
        loop {
            let frame = tokio::time::timeout(wait, self.socket.next())
                .await
                .expect("a message in time");
            match frame {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON");
                    if message["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Ok(message);
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    return Err(frame
                        .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Waits for the socket to close; its close code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.recv_within(PATIENCE).await {
                Ok(_) => {}
                Err(close) => return close.expect("a close frame"),
            }
        }
    }
}

/// A server-sent event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: String,
}

/// An SSE client reading one response.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// `POST`s `query` asking for an event stream.
    async fn post(endpoint: &str, query: &str, variables: Value, token: Option<&str>) -> Sse {
        let mut request = reqwest::Client::new()
            .post(endpoint)
            .header("accept", "text/event-stream")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answered");
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: String::new(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = name.trim().to_owned();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                    }
                }
                if event.event.is_empty() && event.data.is_empty() {
                    continue; // a comment
                }
                return Some(event);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next event, which must be a `next`: its execution result.
    async fn next_value(&mut self) -> Value {
        let event = self.next().await.expect("an event");
        assert_eq!(event.event, "next", "{event:?}");
        serde_json::from_str(&event.data).expect("JSON")
    }
}

/// One replica (or `count`) over a private Redis with the reference services publishing events.
async fn replicas(
    count: usize,
    configure: impl FnOnce(&mut bff_web::WebSettings),
) -> Replicas<bff_web::WebConfig> {
    spawn_replicas(
        reference_services::Config::default(),
        count,
        |settings: &mut bff_web::WebSettings| {
            settings.gateway.auth.hs256_secret = Some(server_kit::auth::Secret::new(SECRET));
            settings.gateway.auth.audience = Some(AUDIENCE.to_owned());
            // Without events, nothing would arrive within a test's patience.
            settings.gateway.subscriptions.poll_interval = Duration::from_secs(3600);
            configure(settings);
        },
        bff_web::build,
    )
    .await
}

/// The endpoint of replica `i`.
fn endpoint(replicas: &Replicas<bff_web::WebConfig>, i: usize) -> String {
    format!("{}{}", replicas.bases[i], replicas.settings.gateway.path)
}

/// Changes `product`'s price in the back office; the new amount.
async fn change_price(world: &reference_services::World, product: &str, by: i64) -> i64 {
    let old = world.product(product).expect("seeded").price;
    let amount = old.amount_minor + by;
    world
        .change_product(
            product,
            &ProductChange {
                price: Some(Money {
                    amount_minor: amount,
                    currency: old.currency,
                }),
                ..ProductChange::default()
            },
        )
        .await
        .expect("changed");
    amount
}

const PRODUCT_UPDATED: &str =
    "subscription($id: ID!) { productUpdated(id: $id) { id price { amountMinor } } }";

#[tokio::test]
async fn a_price_change_reaches_websocket_and_sse_subscribers_with_one_downstream_call() {
    // Polling would be frequent, but the events flow: nothing is polled.
    let replicas = replicas(1, |settings| {
        settings.gateway.subscriptions.poll_interval = Duration::from_millis(50);
    })
    .await;
    let world = &replicas.services.world;
    let product = world.regular_product().to_owned();
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut ws = Ws::connect(&endpoint(&replicas, 0), None).await;
        ws.subscribe("1", PRODUCT_UPDATED, json!({ "id": product }))
            .await;
        sockets.push(ws);
    }
    let mut sse = Sse::post(
        &endpoint(&replicas, 0),
        PRODUCT_UPDATED,
        json!({ "id": product }),
        None,
    )
    .await;
    assert_eq!(sse.response.status(), 200);
    assert_eq!(sse.response.headers()["content-type"], "text/event-stream");
    // Every subscriber is following (it read the product once when subscribing).
    wait_for_subscribers(&replicas, 21).await;
    let client = reqwest::Client::new();
    let polls = |text: &str| server_kit::testing::sample(text, "bff_live_polls_total", &[]);
    let polls_before = polls(&scrape(&client, &replicas.metrics_urls[0]).await);
    let world_admin = |kind| replicas.services.world.admin(kind);
    world_admin(reference_services::ServiceKind::Product).reset();

    let amount = change_price(world, &product, 101).await;
    for ws in &mut sockets {
        let next = ws.recv().await;
        assert_eq!(next["type"], "next", "{next}");
        assert_eq!(next["id"], "1");
        assert_eq!(
            next["payload"]["data"]["productUpdated"]["price"]["amountMinor"], amount,
            "{next}"
        );
    }
    let value = sse.next_value().await;
    assert_eq!(
        value["data"]["productUpdated"]["price"]["amountMinor"],
        amount
    );
    // 21 subscribers, one read of the product from its service.
    let product_calls: u64 = world_admin(reference_services::ServiceKind::Product)
        .stats()
        .requests
        .values()
        .sum();
    assert_eq!(product_calls, 1, "one read for every subscriber");
    assert_eq!(
        polls(&scrape(&client, &replicas.metrics_urls[0]).await),
        polls_before,
        "no polling while the events flow"
    );

    // A subscription the client completed gets nothing more; the others go on.
    sockets[0]
        .send(json!({ "id": "1", "type": "complete" }))
        .await;
    sockets[0]
        .subscribe("2", PRODUCT_UPDATED, json!({ "id": product }))
        .await;
    wait_for_subscribers(&replicas, 21).await;
    let amount = change_price(world, &product, 7).await;
    let next = sockets[0].recv().await;
    assert_eq!(next["id"], "2", "{next}");
    assert_eq!(
        next["payload"]["data"]["productUpdated"]["price"]["amountMinor"],
        amount
    );
    for ws in &mut sockets[1..] {
        assert_eq!(ws.recv().await["id"], "1");
    }
    assert_eq!(
        sse.next_value().await["data"]["productUpdated"]["price"]["amountMinor"],
        amount
    );

    // Deleting the product completes the subscriptions.
    world.delete_product(&product).await.expect("deleted");
    for (i, ws) in sockets.iter_mut().enumerate() {
        let id = if i == 0 { "2" } else { "1" };
        let complete = ws.recv().await;
        assert_eq!(complete, json!({ "id": id, "type": "complete" }));
    }
    let complete = sse.next().await.expect("complete");
    assert_eq!(complete.event, "complete");
    assert!(sse.next().await.is_none(), "the stream ends");
}

/// Waits until the replica counts `n` open live subscriptions.
async fn wait_for_subscribers(replicas: &Replicas<bff_web::WebConfig>, n: u64) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&client, &replicas.metrics_urls[0]).await;
        let open = server_kit::testing::sample(&text, "bff_live_subscribers", &[]);
        // And the change streams are read (an event published before the consumer connected
        // would be told by polling, which these tests turn off).
        let reading = ["catalog", "cart", "order"].iter().all(|stream| {
            server_kit::testing::sample(&text, "bff_events_consumer_up", &[("stream", stream)])
                == 1.0
        });
        if open >= n as f64 && reading {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} subscribers, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unknown_products_and_bad_documents_are_refused_when_subscribing() {
    let replicas = replicas(1, |_| {}).await;
    let mut ws = Ws::connect(&endpoint(&replicas, 0), None).await;
    ws.subscribe("a", PRODUCT_UPDATED, json!({ "id": "p-99999" }))
        .await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "a");
    assert_eq!(error["payload"][0]["extensions"]["code"], "NOT_FOUND");
    // A private subscription without a signed-in user.
    ws.subscribe(
        "b",
        "subscription { viewerCartUpdated { version } }",
        json!({}),
    )
    .await;
    let error = ws.recv().await;
    assert_eq!(error["payload"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // Both are counted, by code, as errors of operations that were counted when they started.
    let text = scrape(&reqwest::Client::new(), &replicas.metrics_urls[0]).await;
    for code in ["NOT_FOUND", "UNAUTHENTICATED"] {
        let counted: f64 = text
            .lines()
            .filter(|line| {
                line.starts_with("bff_graphql_errors_total{")
                    && line.contains(&format!("code=\"{code}\""))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(counted, 1.0, "{code} in\n{text}");
    }
    // The document limits apply to subscriptions too.
    let deep = "subscription { productUpdated(id: \"p-00001\") { category { parent { parent { parent { parent { parent { parent { parent { parent { parent { parent { parent { id } } } } } } } } } } } } } }";
    ws.subscribe("c", deep, json!({})).await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["payload"][0]["extensions"]["code"]
            .as_str()
            .is_some_and(|code| code == "QUERY_TOO_DEEP"),
        "{error}"
    );
    // Unknown fields: a validation error.
    ws.subscribe("d", "subscription { nothing }", json!({}))
        .await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    // Queries work over the socket too.
    ws.send(json!({
        "id": "q", "type": "subscribe",
        "payload": { "query": "{ product(id: \"p-00001\") { id } }" },
    }))
    .await;
    let next = ws.recv().await;
    assert_eq!(
        next["payload"]["data"]["product"]["id"], "p-00001",
        "{next}"
    );
    assert_eq!(ws.recv().await, json!({ "id": "q", "type": "complete" }));

    // Over SSE, a refused document is the stream's only value, then `complete`.
    let mut sse = Sse::post(
        &endpoint(&replicas, 0),
        "subscription { nothing }",
        json!({}),
        None,
    )
    .await;
    assert_eq!(sse.response.status(), 200);
    let value = sse.next_value().await;
    assert_eq!(
        value["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{value}"
    );
    assert!(value.get("data").is_none(), "{value}");
    assert_eq!(sse.next().await.expect("complete").event, "complete");
    // A refused token is a plain 401.
    let sse = Sse::post(
        &endpoint(&replicas, 0),
        PRODUCT_UPDATED,
        json!({ "id": "p-00001" }),
        Some("nope"),
    )
    .await;
    assert_eq!(sse.response.status(), 401);
    // A subscription over plain JSON is refused with a pointer to the transports.
    let plain = reqwest::Client::new()
        .post(endpoint(&replicas, 0))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": PRODUCT_UPDATED, "variables": { "id": "p-00001" } }))
        .send()
        .await
        .expect("answered");
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn the_viewers_cart_follows_changes_made_at_the_cart_service_directly() {
    let replicas = replicas(1, |_| {}).await;
    let world = &replicas.services.world;
    let user = world.user_without_cart().to_owned();
    let mut ws = Ws::connect(&endpoint(&replicas, 0), Some(&token(&user))).await;
    ws.subscribe(
        "cart",
        "subscription { viewerCartUpdated { version itemCount lines { productId quantity } } }",
        json!({}),
    )
    .await;
    wait_for_subscribers(&replicas, 1).await;
    let product = world.regular_product().to_owned();
    let added = reqwest::Client::new()
        .post(format!("{}/carts/{user}/items", replicas.services.cart_url))
        .header("x-user-id", &user)
        .json(&json!({ "product_id": product, "quantity": 2 }))
        .send()
        .await
        .expect("answered");
    assert!(added.status().is_success(), "{}", added.status());
    let next = ws.recv().await;
    assert_eq!(next["type"], "next", "{next}");
    let cart = &next["payload"]["data"]["viewerCartUpdated"];
    assert_eq!(cart["itemCount"], 2, "{next}");
    assert_eq!(cart["lines"][0]["productId"], product.as_str());
}

#[tokio::test]
async fn a_cart_changed_through_one_replica_reaches_a_subscriber_on_the_other() {
    let replicas = replicas(2, |_| {}).await;
    let world = &replicas.services.world;
    let user = world.user_without_cart().to_owned();
    let token = token(&user);
    let mut ws = Ws::connect(&endpoint(&replicas, 0), Some(&token)).await;
    ws.subscribe(
        "c",
        "subscription { viewerCartUpdated { itemCount } }",
        json!({}),
    )
    .await;
    wait_for_subscribers(&replicas, 1).await;
    let product = world.regular_product().to_owned();
    let answer: Value = reqwest::Client::new()
        .post(endpoint(&replicas, 1))
        .bearer_auth(&token)
        .json(&json!({
            "query": "mutation($p: ID!) { addToCart(productId: $p, quantity: 3) { itemCount } }",
            "variables": { "p": product },
        }))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert!(answer.get("errors").is_none(), "{answer}");
    let next = ws.recv().await;
    assert_eq!(
        next["payload"]["data"]["viewerCartUpdated"]["itemCount"], 3,
        "{next}"
    );
}

#[tokio::test]
async fn an_order_is_followed_to_its_terminal_status_and_only_by_its_owner() {
    let replicas = replicas(1, |_| {}).await;
    let world = &replicas.services.world;
    let user = world.user_with_orders().to_owned();
    let steps = [
        (RefStatus::Pending, "PENDING"),
        (RefStatus::Confirmed, "CONFIRMED"),
        (RefStatus::Shipped, "SHIPPED"),
        (RefStatus::Delivered, "DELIVERED"),
    ];
    let (order, from) = world
        .user_orders(&user)
        .into_iter()
        .find_map(|order| {
            let at = steps
                .iter()
                .position(|(status, _)| *status == order.status)?;
            (at + 1 < steps.len()).then_some((order, at + 1))
        })
        .expect("an order that can still move");
    let query = "subscription($id: ID!) { viewerOrderUpdated(id: $id) { id status } }";

    // Another user cannot follow it, nor learn that it exists.
    let other = world.user_without_cart().to_owned();
    let mut stranger = Ws::connect(&endpoint(&replicas, 0), Some(&token(&other))).await;
    stranger
        .subscribe("o", query, json!({ "id": order.id }))
        .await;
    let error = stranger.recv().await;
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "NOT_FOUND",
        "{error}"
    );
    stranger
        .subscribe("u", query, json!({ "id": "o-9999999" }))
        .await;
    let unknown = stranger.recv().await;
    assert_eq!(unknown["payload"], error["payload"], "no existence leak");

    let mut ws = Ws::connect(&endpoint(&replicas, 0), Some(&token(&user))).await;
    ws.subscribe("o", query, json!({ "id": order.id })).await;
    let mut sse = Sse::post(
        &endpoint(&replicas, 0),
        query,
        json!({ "id": order.id }),
        Some(&token(&user)),
    )
    .await;
    wait_for_subscribers(&replicas, 2).await;
    for (status, shown) in &steps[from..] {
        world
            .set_order_status(&order.id, *status)
            .await
            .expect("moved");
        let next = ws.recv().await;
        assert_eq!(
            next["payload"]["data"]["viewerOrderUpdated"]["status"], *shown,
            "{next}"
        );
        let value = sse.next_value().await;
        assert_eq!(value["data"]["viewerOrderUpdated"]["status"], *shown);
    }
    assert_eq!(ws.recv().await, json!({ "id": "o", "type": "complete" }));
    assert_eq!(sse.next().await.expect("complete").event, "complete");
}

#[tokio::test]
async fn many_users_on_many_connections_only_ever_see_their_own_cart() {
    let replicas = replicas(1, |_| {}).await;
    let world = &replicas.services.world;
    let users: Vec<String> = world.users().iter().take(12).cloned().collect();
    let product = world.regular_product().to_owned();
    let mut sockets = Vec::new();
    for user in &users {
        // Two connections per user (two tabs).
        for _ in 0..2 {
            let mut ws = Ws::connect(&endpoint(&replicas, 0), Some(&token(user))).await;
            ws.subscribe(
                "c",
                "subscription { viewerCartUpdated { lines { productId quantity } } }",
                json!({}),
            )
            .await;
            sockets.push((user.clone(), ws));
        }
    }
    wait_for_subscribers(&replicas, 24).await;
    // Every user changes their cart at once, each to a quantity of their own.
    let client = reqwest::Client::new();
    let changes = users.iter().enumerate().map(|(i, user)| {
        let request = client
            .post(format!("{}/carts/{user}/items", replicas.services.cart_url))
            .header("x-user-id", user.as_str())
            .json(&json!({ "product_id": product, "quantity": i + 1 }));
        async move { request.send().await.expect("answered").status() }
    });
    for status in futures::future::join_all(changes).await {
        assert!(status.is_success());
    }
    for (user, ws) in &mut sockets {
        let i = users.iter().position(|u| u == user).expect("a user");
        let own = world.cart(user);
        let expected = own
            .items
            .iter()
            .find(|item| item.product_id == product)
            .map(|item| item.quantity)
            .expect("the user's own line");
        // The first value, and anything else that arrives until the socket is quiet, must be
        // the user's own cart.
        let mut values = vec![ws.recv().await];
        while let Ok(Ok(more)) =
            tokio::time::timeout(Duration::from_millis(300), ws.recv_within(PATIENCE)).await
        {
            values.push(more);
        }
        for next in values {
            let lines = &next["payload"]["data"]["viewerCartUpdated"]["lines"];
            let quantity = lines
                .as_array()
                .expect("lines")
                .iter()
                .find(|line| line["productId"] == product.as_str())
                .map(|line| line["quantity"].clone());
            assert_eq!(
                quantity,
                Some(json!(expected)),
                "user {user} (#{i}) got {next}"
            );
        }
    }
}

#[tokio::test]
async fn an_expired_token_ends_the_stream() {
    let replicas = replicas(1, |_| {}).await;
    let user = replicas.services.world.user_with_cart().to_owned();
    let short = sign(
        &json!({ "sub": user, "aud": AUDIENCE, "iat": now(), "exp": now() + 2 }),
        SECRET,
    );
    let mut ws = Ws::connect(&endpoint(&replicas, 0), Some(&short)).await;
    ws.subscribe(
        "c",
        "subscription { viewerCartUpdated { version } }",
        json!({}),
    )
    .await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403, "{reason}");

    let mut sse = Sse::post(
        &endpoint(&replicas, 0),
        "subscription { viewerCartUpdated { version } }",
        json!({}),
        Some(&sign(
            &json!({ "sub": user, "aud": AUDIENCE, "iat": now(), "exp": now() + 2 }),
            SECRET,
        )),
    )
    .await;
    let value = sse.next_value().await;
    assert_eq!(value["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(value["errors"][0]["extensions"]["reason"], "token_expired");
    assert_eq!(sse.next().await.expect("complete").event, "complete");
    assert!(sse.next().await.is_none());
}

#[tokio::test]
async fn the_protocol_is_enforced_with_its_close_codes() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.init_timeout = Duration::from_millis(300);
    })
    .await;
    // No connection_init in time: 4408.
    let mut ws = Ws::open(&app.endpoint).await.expect("upgraded");
    assert_eq!(ws.closed().await.0, 4408);
    // Subscribe before the ack: 4401.
    let mut ws = Ws::open(&app.endpoint).await.expect("upgraded");
    ws.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    assert_eq!(ws.closed().await.0, 4401);
    // A refused token: 4403.
    let mut ws = Ws::open(&app.endpoint).await.expect("upgraded");
    ws.init(Some("not-a-token")).await;
    assert_eq!(ws.closed().await.0, 4403);
    // A second connection_init: 4429.
    let mut ws = Ws::connect(&app.endpoint, None).await;
    ws.init(None).await;
    assert_eq!(ws.closed().await.0, 4429);
    // An id in use: 4409.
    let mut ws = Ws::connect(&app.endpoint, None).await;
    ws.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    ws.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    assert_eq!(ws.closed().await.0, 4409);
    // Not a message of the protocol: 4400.
    let mut ws = Ws::connect(&app.endpoint, None).await;
    ws.send(json!({ "type": "hello" })).await;
    assert_eq!(ws.closed().await.0, 4400);
    // Pings are answered.
    let mut ws = Ws::connect(&app.endpoint, None).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
    // Without the subprotocol, no upgrade.
    let request = app
        .endpoint
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("a request");
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("upgraded without the subprotocol: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn each_limit_refuses_clearly() {
    let app = spawn_app_with(|settings| {
        let limits = &mut settings.gateway.subscriptions;
        limits.max_streams_per_address = 3;
        limits.max_streams_per_user = 1;
        limits.max_subscriptions_per_connection = 1;
    })
    .await;
    let user = app.services.world.user_with_cart().to_owned();
    // Per connection: a second operation gets an error, the connection stays.
    let mut ws = Ws::connect(&app.endpoint, Some(&token(&user))).await;
    ws.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    ws.subscribe("2", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    let error = ws.recv().await;
    assert_eq!(error["id"], "2");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // Per user: a second stream of the same user, at init (4429) or as SSE (429).
    let mut second = Ws::open(&app.endpoint).await.expect("upgraded");
    second.init(Some(&token(&user))).await;
    assert_eq!(second.closed().await.0, 4429);
    let sse = Sse::post(
        &app.endpoint,
        PRODUCT_UPDATED,
        json!({ "id": "p-00001" }),
        Some(&token(&user)),
    )
    .await;
    assert_eq!(sse.response.status(), 429);
    let problem: Value = sse.response.json().await.expect("problem+json");
    assert_eq!(problem["code"], "TOO_MANY_SUBSCRIPTIONS");
    // Per address: the first socket and two more anonymous ones fill it.
    let _two = Ws::connect(&app.endpoint, None).await;
    let _three = Ws::connect(&app.endpoint, None).await;
    assert_eq!(
        Ws::open(&app.endpoint).await.err(),
        Some(reqwest::StatusCode::TOO_MANY_REQUESTS)
    );
    // Closing one frees its place.
    drop(ws);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while Ws::open(&app.endpoint).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replica_wide_limits_and_one_user_per_socket() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.max_subscriptions = 2;
    })
    .await;
    let mut a = Ws::connect(&app.endpoint, None).await;
    let mut b = Ws::connect(&app.endpoint, None).await;
    a.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00001" }))
        .await;
    b.subscribe("1", PRODUCT_UPDATED, json!({ "id": "p-00002" }))
        .await;
    b.subscribe("2", PRODUCT_UPDATED, json!({ "id": "p-00003" }))
        .await;
    let error = b.recv().await;
    assert_eq!(error["id"], "2", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // Over SSE too: 429.
    let sse = Sse::post(
        &app.endpoint,
        PRODUCT_UPDATED,
        json!({ "id": "p-00004" }),
        None,
    )
    .await;
    assert_eq!(sse.response.status(), 429);
    // Completing one frees its place.
    a.send(json!({ "id": "1", "type": "complete" })).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut id = 3;
    loop {
        b.subscribe(&id.to_string(), PRODUCT_UPDATED, json!({ "id": "p-00003" }))
            .await;
        let answer =
            tokio::time::timeout(Duration::from_millis(300), b.recv_within(PATIENCE)).await;
        if answer.is_err() {
            break; // no error: it is following
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        id += 1;
    }

    // A socket acts for one user: a connection_init token of another user than the upgrade's
    // is refused.
    let world = &app.services.world;
    let (first, second) = (world.users()[0].clone(), world.users()[1].clone());
    let mut request = app
        .endpoint
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&first))
            .parse()
            .expect("a header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    let mut ws = Ws { socket };
    ws.init(Some(&token(&second))).await;
    assert_eq!(ws.closed().await.0, 4403);
}

#[tokio::test]
async fn without_redis_subscriptions_are_fed_by_polling() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.poll_interval = Duration::from_millis(100);
    })
    .await;
    let world = &app.services.world;
    let product = world.regular_product().to_owned();
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut ws = Ws::connect(&app.endpoint, None).await;
        ws.subscribe("p", PRODUCT_UPDATED, json!({ "id": product }))
            .await;
        sockets.push(ws);
    }
    let amount = change_price(world, &product, 55).await;
    for ws in &mut sockets {
        let next = ws.recv().await;
        assert_eq!(
            next["payload"]["data"]["productUpdated"]["price"]["amountMinor"], amount,
            "{next}"
        );
    }
    // One poll per interval for the product, whatever the number of subscribers: over a
    // measured stretch, at most one per interval (plus the one in flight), not one per
    // subscriber.
    let text = scrape(&app.client, &app.metrics_url).await;
    assert_eq!(
        server_kit::testing::sample(&text, "bff_live_topics", &[]),
        1.0
    );
    let before = server_kit::testing::sample(&text, "bff_live_polls_total", &[]);
    let started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let text = scrape(&app.client, &app.metrics_url).await;
    let polls = server_kit::testing::sample(&text, "bff_live_polls_total", &[]) - before;
    let intervals = started.elapsed().as_secs_f64() / 0.1;
    assert!(polls >= 1.0, "{polls} polls");
    assert!(
        polls <= intervals + 1.0,
        "{polls} polls in {intervals:.1} intervals: more than one per interval"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let app = spawn_app_with(|settings| {
        let limits = &mut settings.gateway.subscriptions;
        limits.send_timeout = Duration::from_millis(300);
        limits.max_streams_per_address = 1;
        limits.max_subscriptions_per_connection = 1000;
        limits.poll_interval = Duration::from_millis(100);
    })
    .await;
    let world = &app.services.world;
    let product = world.regular_product().to_owned();
    // A socket with a small receive buffer that never reads after the ack.
    let url = app.endpoint.replacen("http://", "ws://", 1);
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host")
        .parse()
        .expect("an address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a buffer size");
    let stream = socket.connect(addr).await.expect("connected");
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgraded");
    let mut ws = Ws {
        socket: tokio_tungstenite::WebSocketStream::from_raw_socket(
            tokio_tungstenite::MaybeTlsStream::Plain(socket.into_inner()),
            tungstenite::protocol::Role::Client,
            None,
        )
        .await,
    };
    ws.init(None).await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    // A subscription, whose pushes will find the socket full.
    ws.subscribe("live", PRODUCT_UPDATED, json!({ "id": product }))
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&app.client, &app.metrics_url).await;
        if server_kit::testing::sample(&text, "bff_live_subscribers", &[]) == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ask for far more than the kernel buffers hold: large pages, many times.
    let page = "{ products(first: 100) { nodes { id name description brand images { url } } } }";
    for i in 0..400 {
        ws.send(json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": page } }))
            .await;
    }
    // Changes to push meanwhile: each subscription holds at most one value for a socket that
    // does not take it, never a queue.
    for by in 1..=5 {
        change_price(world, &product, by).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The server gives up on the socket; its place is freed (one stream per address), so a
    // new one is accepted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut fresh) = Ws::open(&app.endpoint).await {
            fresh.init(None).await;
            assert_eq!(fresh.recv().await["type"], "connection_ack");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its subscription went with it: nothing is kept for the product any more.
    let text = scrape(&app.client, &app.metrics_url).await;
    assert_eq!(
        server_kit::testing::sample(&text, "bff_live_subscribers", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        server_kit::testing::sample(&text, "bff_live_topics", &[]),
        0.0
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_ends_event_streams() {
    let services = reference_services::spawn_all(reference_services::Config::default())
        .await
        .expect("services");
    let mut settings = bff_web::WebSettings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().expect("an address");
    settings.server.metrics_listen_addr = None;
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
    let gateway = bff_web::build(&settings).expect("builds");
    let listener = server_kit::Server::bind(&settings.server)
        .await
        .expect("bound");
    let server = server_kit::Server::new(listener, &settings.server, gateway);
    let endpoint = format!(
        "http://{}/graphql",
        server.local_addr().expect("an address")
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        stopped.await.ok();
    }));
    let product = services.world.regular_product().to_owned();
    let mut ws = Ws::connect(&endpoint, None).await;
    ws.subscribe("p", PRODUCT_UPDATED, json!({ "id": product }))
        .await;
    let mut sse = Sse::post(&endpoint, PRODUCT_UPDATED, json!({ "id": product }), None).await;
    assert_eq!(sse.response.status(), 200);
    stop.send(()).expect("the server runs");
    let (code, _) = ws.closed().await;
    assert_eq!(code, 1001);
    // The stream ends without `complete`, so the client reconnects elsewhere.
    assert!(sse.next().await.is_none());
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("the server stops once its streams ended")
        .expect("joined")
        .expect("served");
}

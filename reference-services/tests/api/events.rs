//! Change events (`contracts/events.asyncapi.yaml`): every kind of change publishes the right
//! event, versions increase per resource, the event is in the stream when the answer arrives,
//! trace context is carried, nothing is published without `events`, a Redis that is down fails
//! no write. Every event read is checked against the contract's message schemas (see `bus`).

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use reference_services::{
    EventStats, LocalRedis, ServiceKind,
    order::OrderStatus,
    product::{Money, ProductChange},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    bus::{
        assert_event, channel_address, matching_message, schema_errors, spawn_bus, spawn_bus_with,
        versions,
    },
    helpers::{CART, TestApp, spawn_app},
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A cart write as `user`: `method` on `/carts/{user}{path}`, with an optional JSON body.
async fn cart_write(
    app: &TestApp,
    method: Method,
    user: &str,
    path: &str,
    body: Option<Value>,
) -> crate::helpers::Reply {
    let mut call = app
        .request(method, ServiceKind::Cart, &format!("/carts/{user}{path}"))
        .header("x-user-id", user)
        .schema(CART);
    if let Some(body) = body {
        call = call.json(&body);
    }
    call.send().await
}

/// Checks the envelope every event has: CloudEvents 1.0, JSON data, the resource as subject.
#[track_caller]
fn assert_envelope(event: &Value, kind: &str, source: &str, subject: &str) {
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], kind);
    assert_eq!(event["source"], source);
    assert_eq!(event["subject"], subject);
    assert_eq!(event["datacontenttype"], "application/json");
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        event.get("traceparent").is_none() && event.get("tracestate").is_none(),
        "no trace context without one in the request: {event}"
    );
}

#[tokio::test]
async fn every_cart_change_publishes_cart_changed_with_the_carts_new_version() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    let other = app.world().low_stock_product().to_owned();

    let mut answered = Vec::new();
    let add = app.add_to_cart(&user, &product, 2).await;
    add.assert_status(StatusCode::OK);
    answered.push(add.body["version"].clone());
    let set = cart_write(
        app,
        Method::PUT,
        &user,
        &format!("/items/{product}"),
        Some(json!({ "quantity": 5 })),
    )
    .await;
    answered.push(set.body["version"].clone());
    let add_other = app.add_to_cart(&user, &other, 1).await;
    answered.push(add_other.body["version"].clone());
    let remove = cart_write(app, Method::DELETE, &user, &format!("/items/{other}"), None).await;
    answered.push(remove.body["version"].clone());
    let clear = cart_write(app, Method::DELETE, &user, "", None).await;
    clear.assert_status(StatusCode::NO_CONTENT);
    answered.push(app.cart(&user).await.body["version"].clone());

    let events = bus.events_of("cart", &user).await;
    assert_eq!(versions(&events), [1, 2, 3, 4, 5]);
    assert_eq!(
        answered,
        [json!(1), json!(2), json!(3), json!(4), json!(5)],
        "each event has the version the write answered"
    );
    for event in &events {
        assert_envelope(event, "com.bff.cart.changed", "cart-service", &user);
        assert_eq!(event["data"]["user_id"], user.as_str());
    }
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    // The contract's channel address is the default stream.
    assert!(bus.keys().await.contains(&channel_address("cart")));
}

#[tokio::test]
async fn cart_writes_that_change_nothing_or_are_refused_publish_nothing() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_with_cart().to_owned();
    let cart = app.cart(&user).await.body;
    let line = cart["items"][0].clone();
    let product = line["product_id"].as_str().expect("a line").to_owned();

    // The quantity it already has: no change.
    let same = cart_write(
        app,
        Method::PUT,
        &user,
        &format!("/items/{product}"),
        Some(json!({ "quantity": line["quantity"] })),
    )
    .await;
    same.assert_status(StatusCode::OK);
    assert_eq!(same.body["version"], cart["version"]);
    // Refused: 412, 409, 404, 403, 400.
    app.request(
        Method::POST,
        ServiceKind::Cart,
        &format!("/carts/{user}/items"),
    )
    .header("x-user-id", &user)
    .header("if-match", "\"9999\"")
    .json(&json!({ "product_id": product, "quantity": 1 }))
    .send()
    .await
    .assert_status(StatusCode::PRECONDITION_FAILED);
    app.add_to_cart(&user, &product, 99)
        .await
        .assert_status(StatusCode::CONFLICT);
    cart_write(app, Method::DELETE, &user, "/items/p-99999", None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.request(Method::DELETE, ServiceKind::Cart, &format!("/carts/{user}"))
        .header("x-user-id", "u-0002")
        .send()
        .await
        .assert_status(StatusCode::FORBIDDEN);
    // Clearing a cart that is already empty changes nothing either.
    let fresh = app.world().user_without_cart().to_owned();
    cart_write(app, Method::DELETE, &fresh, "", None)
        .await
        .assert_status(StatusCode::NO_CONTENT);

    assert_eq!(bus.events("cart").await, Vec::<Value>::new());
    assert_eq!(app.world().admin(ServiceKind::Cart).events().published, 0);
}

#[tokio::test]
async fn creating_an_order_publishes_order_created_once_per_order() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let body = app.order_body("u-0002", json!({ "kind": "web" }));
    let created = app
        .create_order(&[("x-user-id", "u-0002")], "key-1", &body)
        .await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().expect("an id").to_owned();
    // A replay creates nothing, so announces nothing.
    app.create_order(&[("x-user-id", "u-0002")], "key-1", &body)
        .await
        .assert_status(StatusCode::OK);

    let partner_body = app.order_body(
        "acme-cust-0042",
        json!({ "kind": "partner", "partner_id": "partner-acme" }),
    );
    let partner = app
        .create_order(&[("x-partner-id", "partner-acme")], "key-1", &partner_body)
        .await;
    partner.assert_status(StatusCode::CREATED);
    let partner_id = partner.body["id"].as_str().expect("an id").to_owned();

    let events = bus.events("order").await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_envelope(&events[0], "com.bff.order.created", "order-service", &id);
    assert_eq!(
        events[0]["data"],
        json!({
            "order_id": id,
            "owner": { "user_id": "u-0002", "partner_id": null },
            "customer_reference": null,
            "status": "pending",
            "version": 1,
            "total": created.body["total"],
        })
    );
    assert_envelope(
        &events[1],
        "com.bff.order.created",
        "order-service",
        &partner_id,
    );
    assert_eq!(
        events[1]["data"],
        json!({
            "order_id": partner_id,
            "owner": { "user_id": null, "partner_id": "partner-acme" },
            "customer_reference": "acme-cust-0042",
            "status": "pending",
            "version": 1,
            "total": partner.body["total"],
        })
    );
}

#[tokio::test]
async fn order_status_changes_publish_status_changed_with_the_previous_status() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let identity = [("x-user-id", "u-0002")];
    let body = app.order_body("u-0002", json!({ "kind": "mobile" }));
    let created = app.create_order(&identity, "key-1", &body).await;
    let id = created.body["id"].as_str().expect("an id").to_owned();

    for status in ["confirmed", "shipped", "delivered"] {
        let moved = app.set_order_status(&id, status).await;
        moved.assert_status(StatusCode::OK);
        assert_eq!(moved.body["status"], status);
        assert!(moved.body["updated_at"].is_string());
        // Visible to the owner at once.
        assert_eq!(app.order(&identity, &id).await.body["status"], status);
    }
    // Delivered is final; an unknown status is not a status.
    app.set_order_status(&id, "cancelled")
        .await
        .assert_status(StatusCode::CONFLICT);
    app.set_order_status(&id, "lost")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    // A replay of the creation answers the order as it is now.
    let replay = app.create_order(&identity, "key-1", &body).await;
    replay.assert_status(StatusCode::OK);
    assert_eq!(replay.body["status"], "delivered");

    let events = bus.events_of("order", &id).await;
    assert_eq!(versions(&events), [1, 2, 3, 4]);
    let moves: Vec<(&Value, &Value)> = events[1..]
        .iter()
        .map(|event| (&event["data"]["previous_status"], &event["data"]["status"]))
        .collect();
    assert_eq!(
        moves,
        [
            (&json!("pending"), &json!("confirmed")),
            (&json!("confirmed"), &json!("shipped")),
            (&json!("shipped"), &json!("delivered")),
        ]
    );
    for event in &events[1..] {
        assert_envelope(event, "com.bff.order.status_changed", "order-service", &id);
        assert_eq!(
            event["data"]["owner"],
            json!({ "user_id": "u-0002", "partner_id": null })
        );
    }

    // Cancelling before shipping is allowed.
    let other = app.create_order(&identity, "key-2", &body).await.body["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    app.set_order_status(&other, "cancelled")
        .await
        .assert_status(StatusCode::OK);
    let cancelled = bus.events_of("order", &other).await;
    assert_eq!(versions(&cancelled), [1, 2]);
    assert_eq!(cancelled[1]["data"]["previous_status"], "pending");
    assert_eq!(cancelled[1]["data"]["status"], "cancelled");
}

#[tokio::test]
async fn back_office_product_changes_publish_product_changed_with_what_changed() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let id = app.world().regular_product().to_owned();
    let before = app.product(&id).await;
    let category = before.body["category_id"].as_str().expect("a category");
    let price = before.body["price"]["amount_minor"]
        .as_i64()
        .expect("a price");
    let new_category = if category == "c-kitchen" {
        "c-garden"
    } else {
        "c-kitchen"
    };

    let changes = [
        (
            json!({ "price": { "amount_minor": price + 100, "currency": "EUR" } }),
            json!(["price"]),
        ),
        (json!({ "available": 0 }), json!(["inventory"])),
        (json!({ "name": "Renamed Kettle" }), json!(["details"])),
        (json!({ "category_id": new_category }), json!(["category"])),
        (
            json!({ "list_price": { "amount_minor": price + 5000, "currency": "EUR" }, "description": "Now on sale." }),
            json!(["price", "details"]),
        ),
    ];
    let mut etags = vec![before.header("etag").to_owned()];
    for (change, changed) in &changes {
        let reply = app.change_product(&id, change).await;
        reply.assert_status(StatusCode::OK);
        let event = bus.last("catalog").await;
        assert_envelope(&event, "com.bff.product.changed", "product-service", &id);
        assert_eq!(&event["data"]["changed"], changed);
        assert_eq!(event["data"]["product_id"], id.as_str());
        assert_eq!(event["data"]["category_id"], reply.body["category_id"]);
        etags.push(app.product(&id).await.header("etag").to_owned());
    }
    let events = bus.events_of("catalog", &id).await;
    assert_eq!(versions(&events), [2, 3, 4, 5, 6]);
    assert_eq!(app.world().catalog().version(&id), Some(6));
    let distinct: HashSet<&String> = etags.iter().collect();
    assert_eq!(distinct.len(), etags.len(), "every change gives a new ETag");

    // Giving the current values changes nothing: same version, same tag, no event.
    let same = app.change_product(&id, &json!({ "available": 0 })).await;
    same.assert_status(StatusCode::OK);
    assert_eq!(bus.events_of("catalog", &id).await.len(), 5);
    assert_eq!(
        app.product(&id).await.header("etag"),
        etags.last().map_or("", String::as_str)
    );
}

#[tokio::test]
async fn deleting_a_product_publishes_product_deleted() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let id = app.world().on_sale_product().to_owned();
    let category = app
        .world()
        .product(&id)
        .expect("seeded")
        .category_id
        .clone();
    app.delete_product(&id)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let event = bus.last("catalog").await;
    assert_eq!(
        matching_message("catalog", &event).as_deref(),
        Ok("productDeleted")
    );
    assert_envelope(&event, "com.bff.product.deleted", "product-service", &id);
    assert_eq!(
        event["data"],
        json!({ "product_id": id, "category_id": category, "version": 2 })
    );
    // Gone: a second delete is a 404 and announces nothing.
    app.delete_product(&id)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    assert_eq!(bus.events("catalog").await.len(), 1);
}

#[tokio::test]
async fn renaming_a_category_publishes_category_changed() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let renamed = app.rename_category("c-kitchen", "Cooking").await;
    renamed.assert_status(StatusCode::OK);
    assert_eq!(
        renamed.body,
        json!({ "id": "c-kitchen", "name": "Cooking", "parent_id": "c-home" })
    );
    // The same name again is no change.
    app.rename_category("c-kitchen", "Cooking")
        .await
        .assert_status(StatusCode::OK);
    app.rename_category("c-kitchen", "Kitchen & Cooking")
        .await
        .assert_status(StatusCode::OK);
    let events = bus.events("catalog").await;
    assert_eq!(versions(&events), [2, 3]);
    for event in &events {
        assert_envelope(
            event,
            "com.bff.category.changed",
            "product-service",
            "c-kitchen",
        );
        assert_eq!(event["data"]["category_id"], "c-kitchen");
    }
}

#[tokio::test]
async fn the_event_is_in_the_stream_when_the_answer_arrives() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let product = app.world().regular_product().to_owned();
    // One after another: each answer finds its own event already appended.
    let user = app.world().user_without_cart().to_owned();
    for _ in 0..10 {
        let reply = app.add_to_cart(&user, &product, 1).await;
        reply.assert_status(StatusCode::OK);
        let last = bus.events_of("cart", &user).await.pop().expect("an event");
        assert_eq!(last["data"]["version"], reply.body["version"]);
    }
    // Many users at once: each answer finds its event, whatever the others do.
    let users: Vec<String> = app.world().users()[20..40].to_vec();
    let product = &product;
    let bus = &bus;
    let writes = users.iter().map(|user| async move {
        let reply = app.add_to_cart(user, product, 1).await;
        reply.assert_status(StatusCode::OK);
        let found = bus
            .events_of("cart", user)
            .await
            .iter()
            .any(|event| event["data"]["version"] == reply.body["version"]);
        assert!(found, "the event of {user}'s write is in the stream");
    });
    join_all(writes).await;
    // Back-office changes too.
    let changed = app
        .change_product(product, &json!({ "available": 7 }))
        .await;
    changed.assert_status(StatusCode::OK);
    assert_eq!(bus.events_of("catalog", product).await.len(), 1);
}

#[tokio::test]
async fn one_carts_events_follow_its_versions_even_under_parallel_writes() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    let writes = (0..40).map(|_| app.add_to_cart(&user, &product, 1));
    for reply in join_all(writes).await {
        reply.assert_status(StatusCode::OK);
    }
    let events = bus.events_of("cart", &user).await;
    assert_eq!(versions(&events), (1..=40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_trace_context_of_the_request_is_carried() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    app.request(
        Method::POST,
        ServiceKind::Cart,
        &format!("/carts/{user}/items"),
    )
    .header("x-user-id", &user)
    .header("traceparent", TRACEPARENT)
    .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    .json(&json!({ "product_id": product, "quantity": 1 }))
    .send()
    .await
    .assert_status(StatusCode::OK);
    let event = bus.last("cart").await;
    assert_eq!(event["traceparent"], TRACEPARENT);
    assert_eq!(
        event["tracestate"],
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );

    // An invalid traceparent is not copied (nor its tracestate).
    app.request(
        Method::POST,
        ServiceKind::Cart,
        &format!("/carts/{user}/items"),
    )
    .header("x-user-id", &user)
    .header("traceparent", "00-not-a-trace-01")
    .header("tracestate", "congo=t61rcWkgMzE")
    .json(&json!({ "product_id": product, "quantity": 1 }))
    .send()
    .await
    .assert_status(StatusCode::OK);
    let event = bus.last("cart").await;
    assert!(event.get("traceparent").is_none() && event.get("tracestate").is_none());

    // Orders and back-office changes carry it too.
    let body = app.order_body("u-0002", json!({ "kind": "web" }));
    app.request(Method::POST, ServiceKind::Order, "/orders")
        .header("x-user-id", "u-0002")
        .header("idempotency-key", "traced")
        .header("traceparent", TRACEPARENT)
        .json(&body)
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    let created = bus.last("order").await;
    assert_eq!(created["traceparent"], TRACEPARENT);
    assert!(created.get("tracestate").is_none());
    app.request(
        Method::PATCH,
        ServiceKind::Product,
        &format!("/__admin/products/{product}"),
    )
    .header("traceparent", TRACEPARENT)
    .json(&json!({ "available": 3 }))
    .send()
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(bus.last("catalog").await["traceparent"], TRACEPARENT);
}

#[tokio::test]
async fn without_an_events_config_nothing_is_published() {
    let redis = LocalRedis::start().await.expect("redis-server starts");
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    app.add_to_cart(&user, &product, 1)
        .await
        .assert_status(StatusCode::OK);
    let body = app.order_body(&user, json!({ "kind": "web" }));
    app.create_order(&[("x-user-id", &user)], "k", &body)
        .await
        .assert_status(StatusCode::CREATED);
    app.change_product(&product, &json!({ "available": 1 }))
        .await
        .assert_status(StatusCode::OK);
    for kind in ServiceKind::ALL {
        assert_eq!(
            app.world().admin(kind).events(),
            EventStats {
                service: kind.to_string(),
                enabled: false,
                stream: None,
                published: 0,
                failed: 0,
            }
        );
        let reply = app.get(kind, "/__admin/events").send().await;
        assert_eq!(reply.body["enabled"], false);
        assert_eq!(reply.body["stream"], Value::Null);
    }
    // Not that it could know this Redis: nothing was written anywhere.
    assert!(
        redis
            .command("DBSIZE")
            .await
            .expect("DBSIZE")
            .starts_with(":0")
    );
}

#[tokio::test]
async fn the_admin_api_counts_the_events_of_each_service() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_without_cart().to_owned();
    app.add_to_cart(&user, app.world().regular_product(), 1)
        .await
        .assert_status(StatusCode::OK);
    let cart = app.get(ServiceKind::Cart, "/__admin/events").send().await;
    cart.assert_status(StatusCode::OK);
    assert_eq!(
        cart.body,
        json!({ "service": "cart", "enabled": true, "stream": "bff:events:cart", "published": 1, "failed": 0 })
    );
    let product = app
        .get(ServiceKind::Product, "/__admin/events")
        .send()
        .await;
    assert_eq!(product.body["stream"], "bff:events:catalog");
    assert_eq!(product.body["published"], 0);
    assert_eq!(
        app.world()
            .admin(ServiceKind::Order)
            .events()
            .stream
            .as_deref(),
        Some("bff:events:order")
    );
}

#[tokio::test]
async fn a_redis_that_is_down_fails_no_write_and_the_lost_events_are_counted() {
    let mut bus = spawn_bus().await;
    let user = bus.app.world().user_without_cart().to_owned();
    let product = bus.app.world().regular_product().to_owned();
    bus.app
        .add_to_cart(&user, &product, 1)
        .await
        .assert_status(StatusCode::OK);
    bus.redis.stop().await.expect("redis stops");

    let started = std::time::Instant::now();
    let reply = bus.app.add_to_cart(&user, &product, 1).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["version"], 2, "the write stands");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a dead bus delays a write by at most the publishing wait: {:?}",
        started.elapsed()
    );
    let stats = bus.app.world().admin(ServiceKind::Cart).events();
    assert_eq!(stats.published, 1);
    assert!(stats.failed >= 1, "{stats:?}");
    let admin = bus
        .app
        .get(ServiceKind::Cart, "/__admin/events")
        .send()
        .await;
    assert!(admin.body["failed"].as_u64() >= Some(1));

    // Back (empty): publishing resumes by itself.
    bus.redis.restart().await.expect("redis restarts");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = bus.app.add_to_cart(&user, &product, 1).await;
        reply.assert_status(StatusCode::OK);
        let events = bus.events_of("cart", &user).await;
        if let Some(event) = events.last() {
            assert_eq!(event["data"]["version"], reply.body["version"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publishing never resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stream_prefix_names_the_streams() {
    let bus = spawn_bus_with(|mut config| {
        if let Some(events) = config.events.as_mut() {
            events.stream_prefix = "test-run:".to_owned();
        }
        config
    })
    .await;
    let user = bus.app.world().user_without_cart().to_owned();
    bus.app
        .add_to_cart(&user, bus.app.world().regular_product(), 1)
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(bus.keys().await, ["test-run:cart"]);
    assert_eq!(versions(&bus.events("cart").await), [1]);
}

#[tokio::test]
async fn the_world_helpers_make_the_same_changes_and_publish_the_same_events() {
    let bus = spawn_bus().await;
    let world = bus.app.world();
    let id = world.regular_product().to_owned();
    let product = world
        .change_product(
            &id,
            &ProductChange {
                price: Some(Money {
                    amount_minor: 1_234,
                    currency: "EUR".to_owned(),
                }),
                available: Some(2),
                ..ProductChange::default()
            },
        )
        .await
        .expect("a valid change");
    assert_eq!(product.price.amount_minor, 1_234);
    assert_eq!(
        world.product(&id).map(|p| p.price.amount_minor),
        Some(1_234)
    );
    let event = bus.last("catalog").await;
    assert_eq!(event["data"]["changed"], json!(["price", "inventory"]));
    assert_eq!(event["data"]["version"], 2);
    assert_eq!(
        bus.app.product(&id).await.body["inventory"]["status"],
        "low_stock"
    );

    let gone = world.on_sale_product().to_owned();
    world.delete_product(&gone).await.expect("it exists");
    assert!(world.product(&gone).is_none());
    assert_eq!(bus.last("catalog").await["type"], "com.bff.product.deleted");
    assert!(world.delete_product(&gone).await.is_err());

    let category = world.rename_category("c-coffee", "Coffee").await;
    assert_eq!(category.map(|c| c.name).ok().as_deref(), Some("Coffee"));
    assert_eq!(
        bus.last("catalog").await["type"],
        "com.bff.category.changed"
    );

    let pending = world
        .partner_orders(world.partner_with_orders())
        .into_iter()
        .find(|order| order.status == OrderStatus::Pending)
        .expect("a pending partner order");
    let confirmed = world
        .set_order_status(&pending.id, OrderStatus::Confirmed)
        .await
        .expect("pending can be confirmed");
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
    assert!(
        world
            .set_order_status(&pending.id, OrderStatus::Pending)
            .await
            .is_err()
    );
    let event = bus.last("order").await;
    assert_eq!(
        event["data"],
        json!({
            "order_id": pending.id,
            "owner": { "user_id": null, "partner_id": world.partner_with_orders() },
            "customer_reference": pending.user_id,
            "status": "confirmed",
            "previous_status": "pending",
            // Seeded pending orders are at version 1.
            "version": 2,
        })
    );
    assert_eq!(world.orders().version(&pending.id), Some(2));

    let before = bus.events("order").await.len();
    let moved = world.advance_orders().await;
    assert!(moved > 0);
    let events = bus.events("order").await;
    assert_eq!(events.len() - before, moved, "one event per order moved");
    assert_eq!(
        world.orders().get(&pending.id).map(|order| order.status),
        Some(OrderStatus::Shipped)
    );
}

#[tokio::test]
async fn the_contract_schemas_refuse_events_that_break_them() {
    let bus = spawn_bus().await;
    let app = &bus.app;
    let user = app.world().user_without_cart().to_owned();
    app.add_to_cart(&user, app.world().regular_product(), 1)
        .await
        .assert_status(StatusCode::OK);
    let event = bus.last("cart").await;
    assert_eq!(assert_event("cart", &event), "cartChanged");

    let broken = |change: &dyn Fn(&mut Value)| {
        let mut copy = event.clone();
        change(&mut copy);
        copy
    };
    for (what, mutated) in [
        (
            "another type",
            broken(&|e| e["type"] = json!("com.bff.cart.updated")),
        ),
        ("version 0", broken(&|e| e["data"]["version"] = json!(0))),
        (
            "no version",
            broken(&|e| {
                if let Some(data) = e["data"].as_object_mut() {
                    data.remove("version");
                }
            }),
        ),
        (
            "another source",
            broken(&|e| e["source"] = json!("product-service")),
        ),
        (
            "specversion 0.3",
            broken(&|e| e["specversion"] = json!("0.3")),
        ),
        (
            "a time that is no date",
            broken(&|e| e["time"] = json!("yesterday")),
        ),
        (
            "a bad user id",
            broken(&|e| e["data"]["user_id"] = json!("no spaces")),
        ),
        (
            "an upper-case traceparent",
            broken(&|e| {
                e["traceparent"] = json!("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01");
            }),
        ),
        (
            "no id",
            broken(&|e| {
                if let Some(event) = e.as_object_mut() {
                    event.remove("id");
                }
            }),
        ),
    ] {
        assert!(
            !schema_errors("cartChanged", &mutated).is_empty(),
            "{what} must break cartChanged: {mutated}"
        );
        assert!(
            matching_message("cart", &mutated).is_err(),
            "{what} matches no message of the cart channel"
        );
    }
    // A product change that names no part, or an order total in lower case, break theirs.
    let product_changed = json!({
        "specversion": "1.0", "id": "x", "source": "product-service",
        "type": "com.bff.product.changed", "time": "2025-06-01T00:00:00Z",
        "subject": "p-00001", "datacontenttype": "application/json",
        "data": { "product_id": "p-00001", "category_id": null, "version": 2, "changed": ["price"] }
    });
    assert_eq!(
        schema_errors("productChanged", &product_changed),
        Vec::<String>::new()
    );
    let mut nothing_changed = product_changed.clone();
    nothing_changed["data"]["changed"] = json!([]);
    assert!(!schema_errors("productChanged", &nothing_changed).is_empty());
    let mut unknown_part = product_changed;
    unknown_part["data"]["changed"] = json!(["colour"]);
    assert!(!schema_errors("productChanged", &unknown_part).is_empty());
}

//! The order service: creation, idempotency, ownership, currencies, listing and paging.

use std::collections::HashSet;

use futures::future::join_all;
use reference_services::ServiceKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, encode, ids, spawn_app};

/// Pages through `GET /orders` with `query` as `identity`, returning every order in order.
async fn page_through(app: &TestApp, identity: &[(&str, &str)], query: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut full = query.to_owned();
        if let Some(cursor) = &cursor {
            full.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.orders(identity, &full).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.header("cache-control"), "private, no-store");
        seen.extend(
            reply.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .cloned(),
        );
        match &reply.body["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return seen,
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
    }
    panic!("the listing never ended");
}

#[tokio::test]
async fn creating_an_order_is_201_with_location_and_a_computed_total() {
    let app = spawn_app().await;
    let mut body = app.order_body(
        "u-0002",
        json!({ "kind": "web", "partner_id": "ignored-partner" }),
    );
    body["lines"][0]["quantity"] = json!(3);
    let price = body["lines"][0]["unit_price"]["amount_minor"]
        .as_i64()
        .expect("a price");
    body["shipping_address"] = json!({ "name": "Ada", "city": "Berlin", "country": "DE" });
    let reply = app
        .create_order(&[("x-user-id", "u-0002")], "key-1", &body)
        .await;
    reply.assert_status(StatusCode::CREATED);
    let id = reply.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(reply.header("location"), format!("/orders/{id}"));
    assert_eq!(reply.header("cache-control"), "private, no-store");
    assert_eq!(reply.body["status"], "pending");
    assert_eq!(
        reply.body["total"],
        json!({ "amount_minor": price * 3, "currency": "EUR" })
    );
    assert_eq!(
        reply.body["channel"],
        json!({ "kind": "web", "partner_id": null })
    );
    assert_eq!(reply.body["shipping_address"]["city"], "Berlin");
    // It can be read back at once with the same identity.
    let read = app.order(&[("x-user-id", "u-0002")], &id).await;
    read.assert_status(StatusCode::OK);
    assert_eq!(read.body, reply.body);
    // And it is the newest of the user's orders.
    let list = app
        .orders(&[("x-user-id", "u-0002")], "user_id=u-0002&limit=1")
        .await;
    assert_eq!(ids(&list.body), [id]);
}

#[tokio::test]
async fn replaying_the_same_key_and_body_is_200_with_the_first_order() {
    let app = spawn_app().await;
    let body = app.order_body("u-0002", json!({ "kind": "mobile" }));
    let first = app
        .create_order(&[("x-user-id", "u-0002")], "replay-key", &body)
        .await;
    first.assert_status(StatusCode::CREATED);
    // Same body, written differently: unknown fields and 2.0 for 2 do not make it different.
    let mut same = body.clone();
    same["lines"][0]["quantity"] = json!(2.0);
    same["client_note"] = json!("retry");
    same["lines"][0]["unit_price"]["display"] = json!("€12");
    for body in [&body, &same] {
        let replay = app
            .create_order(&[("x-user-id", "u-0002")], "replay-key", body)
            .await;
        replay.assert_status(StatusCode::OK);
        assert_eq!(replay.body, first.body);
        assert_eq!(replay.header("cache-control"), "private, no-store");
    }
    let all = page_through(&app, &[("x-user-id", "u-0002")], "user_id=u-0002").await;
    let created = all
        .iter()
        .filter(|order| order["id"] == first.body["id"])
        .count();
    assert_eq!(created, 1);
    assert_eq!(all.len(), app.world().user_orders("u-0002").len());
}

#[tokio::test]
async fn reusing_a_key_with_a_different_body_is_422() {
    let app = spawn_app().await;
    let body = app.order_body("u-0002", json!({ "kind": "web" }));
    app.create_order(&[("x-user-id", "u-0002")], "k", &body)
        .await
        .assert_status(StatusCode::CREATED);
    let mut different = body.clone();
    different["lines"][0]["quantity"] = json!(5);
    app.create_order(&[("x-user-id", "u-0002")], "k", &different)
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let mut different = body.clone();
    different["shipping_address"] = json!({ "city": "Paris" });
    app.create_order(&[("x-user-id", "u-0002")], "k", &different)
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_missing_or_invalid_idempotency_key_is_400() {
    let app = spawn_app().await;
    let body = app.order_body("u-0002", json!({ "kind": "web" }));
    let reply = app
        .request(Method::POST, ServiceKind::Order, "/orders")
        .header("x-user-id", "u-0002")
        .json(&body)
        .send()
        .await;
    reply.assert_status(StatusCode::BAD_REQUEST);
    for key in ["", "has space", &"k".repeat(256), "naïve"] {
        app.create_order(&[("x-user-id", "u-0002")], key, &body)
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    app.create_order(&[("x-user-id", "u-0002")], &"k".repeat(255), &body)
        .await
        .assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_owner() {
    let app = spawn_app().await;
    let a = app
        .create_order(
            &[("x-user-id", "u-0002")],
            "shared",
            &app.order_body("u-0002", json!({ "kind": "web" })),
        )
        .await;
    let b = app
        .create_order(
            &[("x-user-id", "u-0003")],
            "shared",
            &app.order_body("u-0003", json!({ "kind": "web" })),
        )
        .await;
    a.assert_status(StatusCode::CREATED);
    b.assert_status(StatusCode::CREATED);
    assert_ne!(a.body["id"], b.body["id"]);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let body = app.order_body("u-0005", json!({ "kind": "web" }));
    let before = app.world().user_orders("u-0005").len();
    let creates = (0..20).map(|_| app.create_order(&[("x-user-id", "u-0005")], "race", &body));
    let replies = join_all(creates).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let replayed = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!((created, replayed), (1, 19));
    let order_ids: HashSet<&Value> = replies.iter().map(|r| &r.body["id"]).collect();
    assert_eq!(order_ids.len(), 1, "every answer names the same order");
    assert_eq!(app.world().user_orders("u-0005").len(), before + 1);
}

#[tokio::test]
async fn mixed_currencies_are_422() {
    let app = spawn_app().await;
    let world = app.world();
    let foreign = world
        .product(world.foreign_currency_product())
        .expect("exists");
    assert_ne!(foreign.price.currency, world.currency());
    let mut body = app.order_body("u-0002", json!({ "kind": "web" }));
    body["lines"]
        .as_array_mut()
        .expect("lines")
        .push(json!({ "product_id": foreign.id, "quantity": 1, "unit_price": foreign.price }));
    app.create_order(&[("x-user-id", "u-0002")], "mixed", &body)
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    // A single foreign-currency line is fine: the total is in that currency.
    let body = json!({
        "user_id": "u-0002",
        "channel": { "kind": "web" },
        "lines": [{ "product_id": foreign.id, "quantity": 2, "unit_price": foreign.price }],
    });
    let reply = app
        .create_order(&[("x-user-id", "u-0002")], "usd", &body)
        .await;
    reply.assert_status(StatusCode::CREATED);
    assert_eq!(
        reply.body["total"]["currency"],
        foreign.price.currency.as_str()
    );
    assert_eq!(
        reply.body["total"]["amount_minor"],
        foreign.price.amount_minor * 2
    );
}

#[tokio::test]
async fn invalid_order_bodies_are_400() {
    let app = spawn_app().await;
    let valid = app.order_body("u-0002", json!({ "kind": "web" }));
    let too_many: Vec<Value> = (0..101).map(|_| valid["lines"][0].clone()).collect();
    let mutations: Vec<(&str, Value)> = vec![
        ("/lines", json!([])),
        ("/lines", json!(too_many)),
        ("/lines/0/quantity", json!(0)),
        ("/lines/0/quantity", json!(1.5)),
        ("/lines/0/unit_price/amount_minor", json!(-1)),
        (
            "/lines/0/unit_price/amount_minor",
            json!(10_000_000_001_i64),
        ),
        ("/lines/0/unit_price/currency", json!("eur")),
        ("/channel/kind", json!("fax")),
        ("/channel", json!({ "kind": "web", "partner_id": "bad id" })),
        ("/user_id", json!("")),
        ("/channel", json!("web")),
    ];
    for (index, (pointer, value)) in mutations.into_iter().enumerate() {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).expect("the pointer exists") = value;
        let reply = app
            .create_order(
                &[("x-user-id", "u-0002")],
                &format!("invalid-{index}"),
                &body,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{pointer}: {}",
            reply.body
        );
    }
    let mut body = valid.clone();
    body["shipping_address"] = json!({ "country": "Germany" });
    app.create_order(&[("x-user-id", "u-0002")], "bad-country", &body)
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    // The largest unit price is accepted.
    let mut body = valid.clone();
    body["lines"][0]["unit_price"]["amount_minor"] = json!(10_000_000_000_i64);
    body["lines"][0]["quantity"] = json!(99);
    app.create_order(&[("x-user-id", "u-0002")], "max-price", &body)
        .await
        .assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn creating_a_web_order_for_another_user_is_403() {
    let app = spawn_app().await;
    let body = app.order_body("u-0002", json!({ "kind": "web" }));
    for identity in [
        vec![("x-user-id", "u-0003")],
        vec![],
        vec![("x-partner-id", "partner-acme")],
    ] {
        app.create_order(&identity, "someone-else", &body)
            .await
            .assert_status(StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn a_partner_order_needs_x_partner_id_equal_to_its_partner() {
    let app = spawn_app().await;
    let partner = app.world().partner_with_orders().to_owned();
    let body = app.order_body(
        "acme-cust-0001",
        json!({ "kind": "partner", "partner_id": partner }),
    );
    for identity in [
        vec![("x-partner-id", "partner-globex")],
        vec![("x-user-id", "acme-cust-0001")],
        vec![],
    ] {
        app.create_order(&identity, "p-key", &body)
            .await
            .assert_status(StatusCode::FORBIDDEN);
    }
    let no_partner = app.order_body("acme-cust-0001", json!({ "kind": "partner" }));
    app.create_order(&[("x-partner-id", &partner)], "p-key", &no_partner)
        .await
        .assert_status(StatusCode::FORBIDDEN);
    let reply = app
        .create_order(&[("x-partner-id", &partner)], "p-key", &body)
        .await;
    reply.assert_status(StatusCode::CREATED);
    assert_eq!(
        reply.body["channel"],
        json!({ "kind": "partner", "partner_id": partner })
    );
}

#[tokio::test]
async fn an_order_the_caller_does_not_own_is_404() {
    let app = spawn_app().await;
    let world = app.world();
    let user = world.user_with_orders().to_owned();
    let user_order = world.user_orders(&user)[0].id.clone();
    let partner = world.partner_with_orders().to_owned();
    let partner_order = world.partner_orders(&partner)[0].id.clone();
    let partner_customer = world.partner_orders(&partner)[0].user_id.clone();

    app.order(&[("x-user-id", &user)], &user_order)
        .await
        .assert_status(StatusCode::OK);
    app.order(&[("x-partner-id", &partner)], &partner_order)
        .await
        .assert_status(StatusCode::OK);
    for (identity, id) in [
        (vec![("x-user-id", "u-0002")], &user_order),
        (vec![], &user_order),
        (vec![("x-partner-id", partner.as_str())], &user_order),
        (vec![("x-partner-id", "partner-globex")], &partner_order),
        (
            vec![("x-user-id", partner_customer.as_str())],
            &partner_order,
        ),
        (vec![("x-user-id", user.as_str())], &"o-9999999".to_owned()),
    ] {
        app.order(&identity, id)
            .await
            .assert_status(StatusCode::NOT_FOUND);
    }
    app.order(&[("x-user-id", &user)], "bad%20id")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.order(&[("x-user-id", "bad id")], &user_order)
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn listing_by_partner_filters_by_status_and_pages_without_duplicates_or_gaps() {
    let app = spawn_app().await;
    let partner = app.world().partner_with_orders().to_owned();
    let identity = [("x-partner-id", partner.as_str())];
    let expected = app.world().partner_orders(&partner);
    assert!(expected.len() >= 10);
    let all = page_through(&app, &identity, &format!("partner_id={partner}&limit=3")).await;
    assert_eq!(
        all.iter().map(|o| o["id"].clone()).collect::<Vec<_>>(),
        expected.iter().map(|o| json!(o.id)).collect::<Vec<_>>()
    );
    let statuses: HashSet<&str> = all.iter().filter_map(|o| o["status"].as_str()).collect();
    assert!(statuses.len() >= 3, "several statuses: {statuses:?}");
    for status in statuses {
        let filtered = page_through(
            &app,
            &identity,
            &format!("partner_id={partner}&status={status}&limit=2"),
        )
        .await;
        let expected: Vec<&Value> = all.iter().filter(|o| o["status"] == status).collect();
        assert_eq!(
            filtered.iter().collect::<Vec<_>>(),
            expected,
            "status={status}"
        );
    }
}

#[tokio::test]
async fn listing_a_users_orders_is_newest_first() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let all = page_through(
        &app,
        &[("x-user-id", &user)],
        &format!("user_id={user}&limit=2"),
    )
    .await;
    assert!(all.len() >= 5);
    let created: Vec<&str> = all
        .iter()
        .filter_map(|o| o["created_at"].as_str())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, sorted);
    for order in &all {
        assert_eq!(order["user_id"], user.as_str());
        assert_ne!(order["channel"]["kind"], "partner");
    }
}

#[tokio::test]
async fn listing_needs_exactly_one_owner_matching_the_identity_headers() {
    let app = spawn_app().await;
    for (identity, query) in [
        (vec![("x-user-id", "u-0001")], ""),
        (
            vec![("x-user-id", "u-0001"), ("x-partner-id", "partner-acme")],
            "user_id=u-0001&partner_id=partner-acme",
        ),
        (vec![("x-user-id", "u-0002")], "user_id=u-0001"),
        (vec![], "user_id=u-0001"),
        (
            vec![("x-user-id", "partner-acme")],
            "partner_id=partner-acme",
        ),
        (
            vec![("x-partner-id", "partner-globex")],
            "partner_id=partner-acme",
        ),
    ] {
        app.orders(&identity, query)
            .await
            .assert_status(StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn listing_with_invalid_parameters_is_400() {
    let app = spawn_app().await;
    let identity = [("x-user-id", "u-0001")];
    for query in [
        "user_id=u-0001&status=lost",
        "user_id=u-0001&limit=0",
        "user_id=u-0001&limit=101",
        "user_id=u-0001&limit=x",
        "user_id=u-0001&cursor=forged",
        "user_id=bad%20id",
    ] {
        app.orders(&identity, query)
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    app.orders(&identity, "user_id=u-0001&limit=2.0")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn an_order_cursor_is_only_valid_for_its_listing() {
    let app = spawn_app().await;
    let partner = app.world().partner_with_orders().to_owned();
    let identity = [("x-partner-id", partner.as_str())];
    let first = app
        .orders(&identity, &format!("partner_id={partner}&limit=1"))
        .await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    app.orders(
        &identity,
        &format!("partner_id={partner}&limit=1&cursor={cursor}"),
    )
    .await
    .assert_status(StatusCode::OK);
    app.orders(
        &identity,
        &format!("partner_id={partner}&status=pending&cursor={cursor}"),
    )
    .await
    .assert_status(StatusCode::BAD_REQUEST);
    // A product cursor is not an order cursor.
    let products = app.products("limit=1").await;
    let product_cursor = products.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    app.orders(
        &identity,
        &format!("partner_id={partner}&cursor={}", encode(&product_cursor)),
    )
    .await
    .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn new_orders_do_not_shift_pages_already_issued() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let identity = [("x-user-id", user.as_str())];
    let expected: Vec<String> = app
        .world()
        .user_orders(&user)
        .iter()
        .map(|o| o.id.clone())
        .collect();
    let first = app
        .orders(&identity, &format!("user_id={user}&limit=2"))
        .await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    // An order created between pages appears before page one, not inside page two.
    app.create_order(
        &identity,
        "between",
        &app.order_body(&user, json!({ "kind": "web" })),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let second = app
        .orders(
            &identity,
            &format!("user_id={user}&limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&second.body), expected[2..4]);
}

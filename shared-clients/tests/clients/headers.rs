//! What each call sends: identity, propagation and precondition headers, safe paths and queries.

use serde_json::json;
use shared_clients::{
    Channel, Creation, ETag, IdempotencyKey, NewOrder, OrderQuery, OrderStatus, Owner,
    ProductClient, ProductQuery, RequestContext, RequestId, Revalidated, ServiceConfig,
    TraceParent,
};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    cacheable, cart_json, ctx, downstream, order_json, partner, product_id, product_json, user,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced() -> RequestContext {
    RequestContext::new()
        .with_request_id(RequestId::parse("req-42").unwrap())
        .with_traceparent(TraceParent::parse(TRACEPARENT).unwrap())
}

#[tokio::test]
async fn cart_calls_send_x_user_id_and_the_propagated_request_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .and(header("x-user-id", "u-0001"))
        .and(header("x-request-id", "req-42"))
        .and(header("traceparent", TRACEPARENT))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 1)))
        .expect(1)
        .mount(&server)
        .await;
    let cart = downstream(&server)
        .carts()
        .get(&traced(), &user("u-0001"))
        .await
        .unwrap();
    assert_eq!(cart.version, 1);
}

#[tokio::test]
async fn a_context_without_ids_propagates_no_empty_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 1)))
        .mount(&server)
        .await;
    downstream(&server)
        .carts()
        .get(&ctx(), &user("u-0001"))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(!requests[0].headers.contains_key("x-request-id"));
    assert!(!requests[0].headers.contains_key("traceparent"));
}

#[tokio::test]
async fn cart_writes_send_their_bodies_and_add_item_sends_if_match() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/carts/u-0001/items"))
        .and(header("x-user-id", "u-0001"))
        .and(header("if-match", "\"7\""))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({ "product_id": "p-00003", "quantity": 2 })))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 8)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/carts/u-0001/items/p-00003"))
        .and(header("x-user-id", "u-0001"))
        .and(body_json(json!({ "quantity": 5 })))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 9)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/carts/u-0001/items/p-00003"))
        .and(header("x-user-id", "u-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 10)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/carts/u-0001"))
        .and(header("x-user-id", "u-0001"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let carts = downstream.carts();
    let u = user("u-0001");
    let p = product_id(3);
    assert_eq!(
        carts
            .add_item(&ctx(), &u, &p, 2, Some(7))
            .await
            .unwrap()
            .version,
        8
    );
    assert_eq!(
        carts.set_quantity(&ctx(), &u, &p, 5).await.unwrap().version,
        9
    );
    assert_eq!(carts.remove_item(&ctx(), &u, &p).await.unwrap().version, 10);
    carts.clear(&ctx(), &u).await.unwrap();
}

#[tokio::test]
async fn add_item_without_an_expected_version_sends_no_if_match() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(cart_json("u-0001", 1)))
        .mount(&server)
        .await;
    downstream(&server)
        .carts()
        .add_item(&ctx(), &user("u-0001"), &product_id(1), 1, None)
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(!requests[0].headers.contains_key("if-match"));
}

fn new_order(channel: Channel, customer: &str) -> NewOrder {
    serde_json::from_value(json!({
        "user_id": customer,
        "channel": channel,
        "lines": [{ "product_id": "p-00001", "quantity": 2,
                    "unit_price": { "amount_minor": 1999, "currency": "EUR" } }]
    }))
    .unwrap()
}

#[tokio::test]
async fn order_creation_sends_the_idempotency_key_and_tells_created_from_replayed() {
    let server = MockServer::start().await;
    let order = new_order(Channel::web(), "u-0001");
    let body = order_json(
        "o-1",
        "u-0001",
        json!({ "kind": "web", "partner_id": null }),
    );
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("idempotency-key", "key-1"))
        .and(header("x-user-id", "u-0001"))
        .and(body_json(&order))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(&body)
                .insert_header("location", "/orders/o-1"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("idempotency-key", "key-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&body))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let owner = Owner::User(user("u-0001"));
    let key = IdempotencyKey::parse("key-1").unwrap();
    let first = downstream
        .orders()
        .create(&ctx(), &owner, &key, &order)
        .await
        .unwrap();
    let again = downstream
        .orders()
        .create(&ctx(), &owner, &key, &order)
        .await
        .unwrap();
    assert_eq!(first.creation, Creation::Created);
    assert_eq!(again.creation, Creation::Replayed);
    assert_eq!(first.order, again.order);
}

#[tokio::test]
async fn user_order_calls_send_x_user_id_and_partner_calls_send_x_partner_id() {
    let server = MockServer::start().await;
    let user_order = order_json(
        "o-1",
        "u-0001",
        json!({ "kind": "mobile", "partner_id": null }),
    );
    let partner_order = order_json(
        "o-2",
        "cust-9",
        json!({ "kind": "partner", "partner_id": "partner-acme" }),
    );
    Mock::given(method("GET"))
        .and(path("/orders"))
        .and(query_param("user_id", "u-0001"))
        .and(query_param("status", "shipped"))
        .and(query_param("limit", "5"))
        .and(query_param("cursor", "abc_1"))
        .and(header("x-user-id", "u-0001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "items": [user_order], "next_cursor": "n-2" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orders/o-2"))
        .and(header("x-partner-id", "partner-acme"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&partner_order))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("x-partner-id", "partner-acme"))
        .respond_with(ResponseTemplate::new(201).set_body_json(&partner_order))
        .expect(1)
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let query = OrderQuery {
        status: Some(OrderStatus::Shipped),
        cursor: Some("abc_1".to_owned()),
        limit: Some(5),
    };
    let page = downstream
        .orders()
        .list(&ctx(), &Owner::User(user("u-0001")), &query)
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("n-2"));
    let acme = Owner::Partner(partner("partner-acme"));
    let order = downstream
        .orders()
        .get(&ctx(), &acme, &crate::helpers::order_id("o-2"))
        .await
        .unwrap();
    assert_eq!(order.channel.partner_id, Some(partner("partner-acme")));
    downstream
        .orders()
        .create(
            &ctx(),
            &acme,
            &IdempotencyKey::generate(),
            &new_order(Channel::partner(partner("partner-acme")), "cust-9"),
        )
        .await
        .unwrap();

    for request in server.received_requests().await.unwrap() {
        let has_user = request.headers.contains_key("x-user-id");
        let has_partner = request.headers.contains_key("x-partner-id");
        assert!(has_user != has_partner, "exactly one identity header");
    }
}

#[tokio::test]
async fn a_conditional_product_read_sends_if_none_match_and_understands_304() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .and(header("if-none-match", "\"v1\""))
        .respond_with(
            ResponseTemplate::new(304)
                .insert_header("etag", "\"v1\"")
                .insert_header("cache-control", "public, max-age=30"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .and(header("if-none-match", "\"old\""))
        .respond_with(cacheable(product_json("p-00001"), 30).insert_header("etag", "\"v1\""))
        .expect(1)
        .mount(&server)
        .await;
    let client = ProductClient::new(&ServiceConfig::with_url(server.uri())).unwrap();
    let id = product_id(1);

    let same = client
        .get_if_none_match(&ctx(), &id, &ETag::parse("\"v1\"").unwrap())
        .await
        .unwrap();
    let Revalidated::NotModified {
        cache_control,
        etag,
    } = same
    else {
        panic!("expected 304, got {same:?}")
    };
    assert_eq!(
        cache_control.fresh_for(),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(etag.unwrap().as_str(), "\"v1\"");

    let changed = client
        .get_if_none_match(&ctx(), &id, &ETag::parse("\"old\"").unwrap())
        .await
        .unwrap();
    let Revalidated::Modified(fetched) = changed else {
        panic!("expected 200, got {changed:?}")
    };
    assert_eq!(fetched.value.id, id);
    assert_eq!(fetched.etag.unwrap().as_str(), "\"v1\"");
}

#[tokio::test]
async fn a_304_to_an_unconditional_read_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(304))
        .mount(&server)
        .await;
    let client = ProductClient::new(&ServiceConfig::with_url(server.uri())).unwrap();
    let err = client.get(&ctx(), &product_id(1)).await.unwrap_err();
    assert_eq!(err.kind(), shared_clients::ErrorKind::BadResponse);
}

#[tokio::test]
async fn a_single_product_read_reports_its_max_age_and_etag() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 45).insert_header("etag", "W/\"e1\""))
        .mount(&server)
        .await;
    let client = ProductClient::new(&ServiceConfig::with_url(server.uri())).unwrap();
    let fetched = client.get(&ctx(), &product_id(1)).await.unwrap();
    assert_eq!(
        fetched.cache_control.max_age,
        Some(std::time::Duration::from_secs(45))
    );
    assert_eq!(fetched.etag.unwrap().as_str(), "W/\"e1\"");
}

#[tokio::test]
async fn list_queries_are_percent_encoded_and_base_paths_are_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/catalog/v1/products"))
        .and(query_param("q", "red & blue+green=1"))
        .and(query_param("category", "c-shoes"))
        .and(query_param("limit", "10"))
        .respond_with(cacheable(
            json!({ "items": [product_json("p-00001")], "next_cursor": null }),
            30,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = ProductClient::new(&ServiceConfig::with_url(format!(
        "{}/catalog/v1/",
        server.uri()
    )))
    .unwrap();
    let query = ProductQuery {
        category: Some("c-shoes".parse().unwrap()),
        q: Some("red & blue+green=1".to_owned()),
        cursor: None,
        limit: Some(10),
    };
    let page = client.list(&ctx(), &query).await.unwrap();
    assert_eq!(page.value.items.len(), 1);
    assert_eq!(page.value.next_cursor, None);
    let requests = server.received_requests().await.unwrap();
    assert!(!requests[0].url.query().unwrap().contains("cursor"));
}

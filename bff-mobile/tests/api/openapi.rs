//! `GET /m/v1/openapi.json`: snapshot-tested (a change to the contract shows up as a diff in
//! review), held against the routes the router serves, and the real gateway's answers — screens,
//! degraded screens, problems and the live stream's events — validated against its schemas.

use std::{collections::BTreeSet, time::Duration};

use reference_services::{ServiceKind, order::OrderStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Answer, assert_matches_document, spawn_app, spawn_app_with, token},
    live::{Events, open, place_order},
};

/// Every operation of `doc`, as `METHOD /path`.
fn documented(doc: &Value) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            operations.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations
}

/// `template` with each `{…}` segment replaced by an id that exists nowhere.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "no-such-id"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks `answer` against the document's schema for `method path` (a path template, without
/// the `/m/v1` prefix) and its status, as JSON; returns the documented response's description.
fn check(doc: &Value, method: &str, path: &str, answer: &Answer) -> String {
    let media = if answer.header("content-type") == server_kit::problem::PROBLEM_JSON {
        server_kit::problem::PROBLEM_JSON
    } else {
        "application/json"
    };
    assert!(
        !answer.header("x-request-id").is_empty(),
        "{method} {path}: every answer has a request id"
    );
    assert_matches_document(
        doc,
        method,
        &format!("/m/v1{path}"),
        answer.status,
        media,
        &answer.json(),
    )
}

/// Checks a problem `answer` against the document, and that its `code` is one the documented
/// response lists.
fn check_problem(doc: &Value, method: &str, path: &str, answer: &Answer, code: &str) {
    assert_eq!(answer.json()["code"], code, "{method} {path}");
    let description = check(doc, method, path, answer);
    assert!(
        description.contains(&format!("`{code}`")),
        "{method} {path} {}: `{code}` is not listed in {description:?}",
        answer.status
    );
}

#[tokio::test]
async fn the_document_matches_its_snapshot() {
    let app = spawn_app().await;
    insta::assert_json_snapshot!("openapi", app.openapi().await);
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_problem_code() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let description = doc["info"]["description"].as_str().expect("description");
    for listed in bff_mobile::error::PROBLEM_CODES {
        assert!(
            description.contains(&format!("| `{}` | {} |", listed.code, listed.status)),
            "{} is not in the description",
            listed.code
        );
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer");
}

#[tokio::test]
async fn every_route_the_router_serves_is_documented_and_nothing_else() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let documented = documented(&doc);
    let served: BTreeSet<String> = bff_mobile::endpoints(true)
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not served"
    );

    // And the running gateway agrees: each documented operation reaches its handler (a
    // refusal of the handler's own, never `route_not_found` or `method_not_allowed`), and
    // every other method on a documented path is 405.
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = format!("{}{}", app.base, concrete(path));
        for method in &methods {
            let answer = Answer::of(
                app.client
                    .request(method.clone(), &url)
                    .send()
                    .await
                    .expect("answered"),
            )
            .await;
            let code = serde_json::from_slice::<Value>(&answer.bytes)
                .ok()
                .and_then(|body| body["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if item.get(method.as_str().to_lowercase()).is_some() {
                assert!(
                    code != "route_not_found" && code != "method_not_allowed",
                    "{method} {path}: {} {code}",
                    answer.status
                );
            } else {
                assert_eq!(
                    answer.status, 405,
                    "{method} {path} is served but not documented"
                );
                assert_eq!(code, "method_not_allowed");
            }
        }
    }
}

#[tokio::test]
async fn with_streams_off_the_stream_is_neither_served_nor_in_the_route_list() {
    let served = bff_mobile::endpoints(false);
    assert!(
        !served.iter().any(|(_, path)| path.ends_with("/live")),
        "{served:?}"
    );
    let app = spawn_app_with(|settings| settings.gateway.subscriptions.enabled = false).await;
    let answer = app.get("/orders/no-such-id/live", None).await;
    answer.assert_problem(404, "route_not_found");
}

#[tokio::test]
async fn every_screen_the_gateway_answers_matches_its_documented_schema() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let world = app.world();
    let user = world.user_with_orders().to_owned();
    let shopper = world.user_without_cart().to_owned();
    let order = world.user_orders(&user)[0].id.to_string();

    let reads: Vec<(String, Option<&str>, String)> = vec![
        ("/home".into(), None, "/home".into()),
        ("/home".into(), Some(user.as_str()), "/home".into()),
        ("/products?limit=50".into(), None, "/products".into()),
        ("/products?limit=2".into(), None, "/products".into()),
        (
            format!("/products/{}", world.regular_product()),
            None,
            "/products/{product_id}".into(),
        ),
        (
            format!("/products/{}", world.on_sale_product()),
            None,
            "/products/{product_id}".into(),
        ),
        (
            format!("/products/{}", world.low_stock_product()),
            None,
            "/products/{product_id}".into(),
        ),
        (
            format!("/products/{}", world.out_of_stock_product()),
            None,
            "/products/{product_id}".into(),
        ),
        ("/cart".into(), Some(world.user_with_cart()), "/cart".into()),
        ("/cart".into(), Some(shopper.as_str()), "/cart".into()),
        ("/orders".into(), Some(user.as_str()), "/orders".into()),
        (
            format!("/orders/{order}"),
            Some(user.as_str()),
            "/orders/{order_id}".into(),
        ),
    ];
    for (url, as_user, template) in &reads {
        let answer = app.get(url, *as_user).await;
        assert_eq!(answer.status, 200, "{url}");
        check(&doc, "get", template, &answer);
    }

    let product = world.regular_product().to_owned();
    let added = app.add_to_cart(&shopper, &product, 2).await;
    assert_eq!(added.status, 200);
    check(&doc, "post", "/cart/items", &added);
    let set = app.set_quantity(&shopper, &product, 3).await;
    assert_eq!(set.status, 200);
    check(&doc, "put", "/cart/items/{product_id}", &set);
    let placed = app.checkout(&shopper, Some("openapi-1")).await;
    assert_eq!(placed.status, 201);
    check(&doc, "post", "/checkout", &placed);
    let again = app.checkout(&shopper, Some("openapi-1")).await;
    assert_eq!(again.status, 200);
    check(&doc, "post", "/checkout", &again);
    app.add_to_cart(&shopper, &product, 1).await;
    let removed = app.remove_from_cart(&shopper, &product).await;
    assert_eq!(removed.status, 200);
    check(&doc, "delete", "/cart/items/{product_id}", &removed);

    // A revalidation is the documented 304, with the documented headers.
    let first = app.get("/products", None).await;
    let revalidated = app
        .send(
            app.request(Method::GET, "/products", None)
                .header("if-none-match", first.header("etag")),
        )
        .await;
    assert_eq!(revalidated.status, 304);
    let not_modified = &doc["paths"]["/m/v1/products"]["get"]["responses"]["304"];
    for name in ["ETag", "Cache-Control", "Vary"] {
        assert!(not_modified["headers"][name].is_object(), "{name}");
        assert!(!revalidated.header(name).is_empty(), "{name}");
    }
}

#[tokio::test]
async fn degraded_screens_match_the_document_and_name_their_missing_parts() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let world = app.world();
    let user = world.user_with_orders().to_owned();
    let with_cart = world.user_with_cart().to_owned();
    let order = world.user_orders(&user)[0].id.to_string();
    app.take_down(ServiceKind::Product);

    let home = app.home(Some(&user)).await;
    assert_eq!(home.status, 200);
    check(&doc, "get", "/home", &home);
    assert_eq!(home.json()["degraded"], json!(["featured", "categories"]));

    let cart = app.cart(&with_cart).await;
    assert_eq!(cart.status, 200);
    check(&doc, "get", "/cart", &cart);
    assert_eq!(cart.json()["degraded"], json!(["products"]));

    let detail = app.order(&user, &order).await;
    assert_eq!(detail.status, 200);
    check(&doc, "get", "/orders/{order_id}", &detail);
    assert_eq!(detail.json()["degraded"], json!(["products"]));

    let list = app.products("").await;
    check_problem(&doc, "get", "/products", &list, "downstream_unavailable");
    assert!(!list.header("retry-after").is_empty());
}

#[tokio::test]
async fn problems_match_the_document_and_their_codes_are_listed_with_their_status() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let world = app.world();
    let shopper = world.user_without_cart().to_owned();

    let cases: Vec<(&str, &str, Answer, &str)> = vec![
        (
            "get",
            "/products",
            app.products("?limit=0").await,
            "invalid_query",
        ),
        (
            "get",
            "/cart",
            app.get("/cart", None).await,
            "missing_token",
        ),
        (
            "get",
            "/products/{product_id}",
            app.product("no-such-product").await,
            "product_not_found",
        ),
        (
            "get",
            "/products/{product_id}",
            app.product("not%20an%20id").await,
            "invalid_id",
        ),
        (
            "post",
            "/cart/items",
            app.add_to_cart(&shopper, world.regular_product(), 100)
                .await,
            "invalid_quantity",
        ),
        (
            "post",
            "/checkout",
            app.checkout(&shopper, None).await,
            "missing_idempotency_key",
        ),
        (
            "post",
            "/checkout",
            app.checkout(&shopper, Some("empty-cart")).await,
            "cart_empty",
        ),
        (
            "delete",
            "/cart/items/{product_id}",
            app.remove_from_cart(&shopper, world.regular_product())
                .await,
            "cart_line_not_found",
        ),
        (
            "get",
            "/orders/{order_id}/live",
            app.get("/orders/no-such-order/live", Some(&shopper)).await,
            "order_not_found",
        ),
    ];
    for (method, path, answer, code) in &cases {
        assert!(
            answer.status.is_client_error(),
            "{method} {path}: {}",
            answer.status
        );
        check_problem(&doc, method, path, answer, code);
    }
    let unauthenticated = &cases[1].2;
    let documented_401 = &doc["paths"]["/m/v1/cart"]["get"]["responses"]["401"];
    assert!(documented_401["headers"]["WWW-Authenticate"].is_object());
    assert!(!unauthenticated.header("www-authenticate").is_empty());

    // Outside every route: the `default` problem response.
    let unknown = app.get("/no-such-screen", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    check(&doc, "get", "/home", &unknown);
}

#[tokio::test]
async fn the_live_stream_is_documented_as_events_and_each_event_matches() {
    let app = spawn_app_with(|settings| {
        settings.gateway.subscriptions.poll_interval = Duration::from_millis(100);
    })
    .await;
    let doc = app.openapi().await;
    let stream = &doc["paths"]["/m/v1/orders/{order_id}/live"]["get"]["responses"]["200"];
    assert!(
        stream["content"]["text/event-stream"]["schema"].is_object(),
        "{stream:#}"
    );
    let world = app.world();
    let user = world.user_without_cart().to_owned();
    let order_id = place_order(&app.client, &app.base, &user, world.regular_product()).await;
    let mut events = Events::of(open(&app.client, &app.base, &order_id, Some(&token(&user))).await);

    let as_documented = |frame: &crate::live::Frame| {
        let mut event = json!({ "event": frame.event, "data": frame.json() });
        if let Some(id) = &frame.id {
            event["id"] = json!(id);
        }
        assert_matches_document(
            &doc,
            "get",
            "/m/v1/orders/{order_id}/live",
            StatusCode::OK,
            "text/event-stream",
            &event,
        );
    };
    as_documented(&events.expect("order").await);
    world
        .set_order_status(&order_id, OrderStatus::Cancelled)
        .await
        .expect("cancelled");
    let cancelled = events.expect("order").await;
    assert_eq!(cancelled.json()["status"], "cancelled");
    as_documented(&cancelled);
    as_documented(&events.expect("end").await);
    events.expect_closed().await;

    // What the document says an event may not be, it refuses.
    let wrong = json!({ "event": "end", "data": { "id": order_id, "status": "teleported" } });
    let mut schema_doc = doc.clone();
    schema_doc["__event"] = stream["content"]["text/event-stream"]["schema"].clone();
    schema_doc["$ref"] = json!("#/__event");
    let validator = jsonschema::draft202012::new(&schema_doc).expect("compiles");
    assert!(!validator.is_valid(&wrong));
}

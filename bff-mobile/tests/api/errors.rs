//! Every class of bad input is a problem+json with a stable code.

use reqwest::Method;

use crate::helpers::spawn_app;

#[tokio::test]
async fn bad_query_parameters_are_400_problems() {
    let app = spawn_app().await;
    for query in [
        "?limit=abc",
        "?limit=0",
        "?limit=51",
        "?limit=-3",
        "?cursor=not%20a%20cursor",
        "?category=bad%21id",
        "?w=0",
        "?w=huge",
    ] {
        let answer = app.products(query).await;
        let problem = answer.assert_problem(400, "invalid_query");
        assert!(problem["detail"].is_string(), "{query}: {problem}");
    }
    app.products("?cursor=bm90LWlzc3VlZA")
        .await
        .assert_problem(400, "invalid_query");
    let user = app.world().user_with_orders().to_owned();
    app.orders(&user, "?limit=1000")
        .await
        .assert_problem(400, "invalid_query");
}

#[tokio::test]
async fn bad_json_bodies_are_problems() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app
            .request(Method::POST, "/cart/items", Some(&user))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        app.send(request)
    };
    post("{not json", Some("application/json"))
        .await
        .assert_problem(400, "invalid_json");
    post(r#"{"product_id": "p-1"}"#, Some("application/json"))
        .await
        .assert_problem(400, "invalid_json");
    post(
        r#"{"product_id": "p-1", "quantity": "two"}"#,
        Some("application/json"),
    )
    .await
    .assert_problem(400, "invalid_json");
    post(
        r#"{"product_id": "bad id!", "quantity": 1}"#,
        Some("application/json"),
    )
    .await
    .assert_problem(400, "invalid_json");
    post(r#"{"product_id": "p-1", "quantity": 1}"#, None)
        .await
        .assert_problem(415, "unsupported_media_type");
}

#[tokio::test]
async fn a_body_above_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let huge = format!(
        r#"{{"product_id": "p-1", "quantity": 1, "pad": "{}"}}"#,
        "x".repeat(20 * 1024)
    );
    app.send(
        app.request(Method::POST, "/cart/items", Some(&user))
            .header("content-type", "application/json")
            .body(huge),
    )
    .await
    .assert_problem(413, "body_too_large");
}

#[tokio::test]
async fn unknown_routes_and_bad_ids_are_problems() {
    let app = spawn_app().await;
    app.get("/no-such-screen", None)
        .await
        .assert_problem(404, "route_not_found");
    app.product("bad%21id")
        .await
        .assert_problem(400, "invalid_id");
    let wrong_method = app
        .send(app.request(Method::DELETE, "/products", None))
        .await;
    wrong_method.assert_problem(405, "method_not_allowed");
    assert!(
        wrong_method.header("allow").contains("GET"),
        "{:?}",
        wrong_method.headers
    );
}

#[tokio::test]
async fn a_screen_whose_essential_service_is_down_is_a_503_problem() {
    let app = spawn_app().await;
    app.take_down(reference_services::ServiceKind::Product);
    let answer = app.products("").await;
    let problem = answer.assert_problem(503, "downstream_unavailable");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(!detail.contains("127.0.0.1"), "no internals: {detail}");
}

#[tokio::test]
async fn a_service_slower_than_the_request_deadline_is_a_504_problem_in_time() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.gateway.request_deadline = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let admin = app.world().admin(reference_services::ServiceKind::Product);
    let mut faults = admin.faults();
    faults.mode = reference_services::FaultMode::Slow;
    faults.slow_latency = std::time::Duration::from_secs(5);
    admin.set_faults(faults);
    let started = std::time::Instant::now();
    app.products("")
        .await
        .assert_problem(504, "downstream_timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_integral_quantity_written_with_a_zero_fraction_is_accepted_and_a_fraction_refused() {
    let app = spawn_app().await;
    let user = app.world().user_without_cart().to_owned();
    let product = app.world().regular_product().to_owned();
    let post = |quantity: &'static str| {
        let body = format!(r#"{{"product_id": "{product}", "quantity": {quantity}}}"#);
        app.send(
            app.request(Method::POST, "/cart/items", Some(&user))
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let added = post("2.0").await;
    assert!(
        added.status.is_success(),
        "2.0 is 2: {}",
        String::from_utf8_lossy(&added.bytes)
    );
    post("2.5").await.assert_problem(400, "invalid_json");
    assert_eq!(app.cart(&user).await.json()["count"], 2);
}

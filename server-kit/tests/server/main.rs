//! The shared server behaviour every gateway inherits, tested over real HTTP on port 0.

mod connections;
mod helpers;

use std::time::Duration;

use helpers::{StubProbe, spawn, spawn_with};
use server_kit::{ServerConfig, problem::PROBLEM_JSON};

async fn problem_of(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        PROBLEM_JSON
    );
    response.json().await.expect("problem body is JSON")
}

#[tokio::test]
async fn health_answers_200_with_a_json_status() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_answers_200_when_downstream_is_not_required() {
    let app = spawn(ServerConfig::default(), Some(StubProbe::down())).await;
    assert_eq!(app.get("/ready").await.status(), 200);
}

#[tokio::test]
async fn ready_answers_503_naming_the_down_service_when_downstream_is_required() {
    let config = ServerConfig {
        ready_requires_downstream: true,
        ..ServerConfig::default()
    };
    let app = spawn(config, Some(StubProbe::down())).await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"][0]["name"], "product");
    assert_eq!(body["checks"][0]["up"], false);
}

#[tokio::test]
async fn ready_answers_200_when_every_required_service_is_up() {
    let config = ServerConfig {
        ready_requires_downstream: true,
        ..ServerConfig::default()
    };
    let app = spawn(config, Some(StubProbe::up())).await;
    assert_eq!(app.get("/ready").await.status(), 200);
}

#[tokio::test]
async fn ready_does_not_hang_on_a_probe_that_never_answers() {
    let config = ServerConfig {
        ready_requires_downstream: true,
        ready_timeout: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let app = spawn(config, Some(StubProbe::hanging())).await;
    assert_eq!(app.get("/ready").await.status(), 503);
}

#[tokio::test]
async fn ready_answers_503_once_shutdown_has_started() {
    let app = spawn(ServerConfig::default(), None).await;
    app.readiness.mark_shutting_down();
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "shutting_down");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app.get("/no/such/route").await;
    assert_eq!(response.status(), 404);
    let problem = problem_of(response).await;
    assert_eq!(problem["type"], "about:blank");
    assert_eq!(problem["title"], "Not Found");
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_with_allow() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app
        .client
        .delete(app.url("/echo"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let problem = problem_of(response).await;
    assert_eq!(problem["status"], 405);
}

#[tokio::test]
async fn malformed_json_is_a_400_problem_with_an_explanation() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app
        .client
        .post(app.url("/echo"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let problem = problem_of(response).await;
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{problem}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let config = ServerConfig {
        max_body_bytes: 100,
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    let response = app
        .client
        .post(app.url("/echo"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    problem_of(response).await;

    let small = app
        .client
        .post(app.url("/echo"))
        .json(&serde_json::json!({"ok": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(small.status(), 200, "a body under the limit passes");
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_keeps_serving() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app.get("/boom").await;
    assert_eq!(response.status(), 500);
    let problem = problem_of(response).await;
    assert!(
        problem.get("detail").is_none(),
        "no internals leak: {problem}"
    );
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn every_response_carries_a_generated_request_id() {
    let app = spawn(ServerConfig::default(), None).await;
    let first = app.get("/health").await;
    let second = app.get("/health").await;
    let id = |r: &reqwest::Response| {
        r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    assert!(!id(&first).is_empty());
    assert_ne!(id(&first), id(&second));
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_seen_by_handlers() {
    let app = spawn(ServerConfig::default(), None).await;
    let response = app
        .client
        .get(app.url("/request-id"))
        .header("x-request-id", "client-abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "client-abc-123");
    assert_eq!(response.text().await.expect("body"), "client-abc-123");
}

#[tokio::test]
async fn an_unsafe_client_request_id_is_replaced() {
    let app = spawn(ServerConfig::default(), None).await;
    let long = "a".repeat(500);
    let response = app
        .client
        .get(app.url("/request-id"))
        .header("x-request-id", &long)
        .send()
        .await
        .expect("request");
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(echoed, long);
    assert_eq!(response.text().await.expect("body"), echoed);
}

#[tokio::test]
async fn serving_stops_when_shutdown_is_signalled() {
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let app = spawn_with(ServerConfig::default(), None, async move {
        shutdown_rx.await.ok();
    })
    .await;
    assert_eq!(app.get("/health").await.status(), 200);
    shutdown_tx.send(()).expect("server still running");
    let finished = tokio::time::timeout(Duration::from_secs(10), app.handle)
        .await
        .expect("server stops after shutdown")
        .expect("task");
    assert!(finished.is_ok());
    assert!(app.readiness.is_shutting_down());
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_method_and_status_class() {
    // Served on the clients' port too here, so the scrape counts itself.
    let config = ServerConfig {
        public_metrics: true,
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    assert_eq!(app.get("/request-id").await.status(), 200);
    assert_eq!(app.get("/request-id").await.status(), 200);
    assert_eq!(app.get("/no/such/route").await.status(), 404);
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(
        text.contains(
            "bff_http_requests_total{gateway=\"test\",method=\"GET\",route=\"/request-id\",status_class=\"2xx\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains(
        "bff_http_requests_total{gateway=\"test\",method=\"GET\",route=\"unmatched\",status_class=\"4xx\"} 1"
    ));
    assert!(text.contains("# TYPE bff_http_request_duration_seconds histogram"));
    assert!(
        !text.contains("/no/such/route"),
        "raw paths are never labels"
    );
    // The scrape itself is in flight while it renders.
    assert!(text.contains("bff_http_requests_in_flight{gateway=\"test\"} 1"));
}

#[tokio::test]
async fn metrics_are_served_on_a_listener_of_their_own_and_not_to_clients_by_default() {
    let app = spawn(ServerConfig::default(), None).await;
    assert_eq!(app.get("/request-id").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 404);
    let metrics_base = app.metrics_base.as_deref().expect("a metrics listener");
    let response = reqwest::get(format!("{metrics_base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(text.contains("route=\"/request-id\""), "{text}");
}

#[tokio::test]
async fn a_request_span_gets_a_traceparent_when_the_client_sent_none() {
    let app = spawn(ServerConfig::default(), None).await;
    let echoed: String = app.get("/traceparent").await.text().await.expect("text");
    assert!(
        shared_clients::TraceParent::parse(&echoed).is_ok(),
        "{echoed:?}"
    );
    let kept = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .client
        .get(app.url("/traceparent"))
        .header("traceparent", kept)
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("text"), kept);
}

//! What operators see: GraphQL operations and their errors in `/metrics`, trace context
//! reaching the services.

use reference_services::ServiceKind;
use serde_json::json;

use server_kit::testing::{sample, scrape};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, token};

impl TestApp {
    /// `GET /metrics`, as Prometheus scrapes it.
    async fn scrape(&self) -> String {
        scrape(&self.client, &self.metrics_url).await
    }
}

#[tokio::test]
async fn graphql_operations_are_counted_by_name_and_their_errors_by_code() {
    let app = spawn_app_with(|settings| {
        settings.gateway.metrics.operation_names = vec!["Cart".to_owned()];
    })
    .await;
    let user = app.services.world.user_with_cart().to_owned();
    app.query(
        "query Cart { viewer { id } }",
        json!({}),
        Some(&token(&user)),
    )
    .await
    .assert_ok();
    app.query(
        "query Cart { viewer { id } }",
        json!({}),
        Some(&token(&user)),
    )
    .await
    .assert_ok();
    let anonymous = app.query("{ viewer { id } }", json!({}), None).await;
    assert_eq!(anonymous.codes(), ["UNAUTHENTICATED"]);
    let text = app.scrape().await;

    let cart = [("gateway", "bff-web"), ("operation", "Cart")];
    assert_eq!(
        sample(&text, "bff_graphql_operations_total", &cart),
        2.0,
        "{text}"
    );
    assert_eq!(sample(&text, "bff_graphql_errors_total", &cart), 0.0);
    let anonymous = [("operation", "anonymous")];
    assert_eq!(
        sample(&text, "bff_graphql_operations_total", &anonymous),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "bff_graphql_errors_total",
            &[("operation", "anonymous"), ("code", "UNAUTHENTICATED")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "bff_http_requests_total",
            &[
                ("route", "/graphql"),
                ("method", "POST"),
                ("status_class", "2xx")
            ]
        ),
        3.0
    );
}

#[tokio::test]
async fn junk_operation_names_from_clients_neither_add_series_nor_push_real_operations_out() {
    let app = spawn_app_with(|settings| {
        settings.gateway.metrics.operation_names = vec!["Product".to_owned()];
    })
    .await;
    // An anonymous client sends many differently named operations first.
    for index in 0..150 {
        app.query(
            &format!("query Junk{index} {{ categories {{ id }} }}"),
            json!({}),
            None,
        )
        .await
        .assert_ok();
    }
    app.query(
        "query Product { product(id: \"p-00001\") { id } }",
        json!({}),
        None,
    )
    .await
    .assert_ok();
    let text = app.scrape().await;
    assert!(!text.contains("Junk"), "a client's names are not labels");
    assert_eq!(
        sample(
            &text,
            "bff_graphql_operations_total",
            &[("operation", "other")]
        ),
        150.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "bff_graphql_operations_total",
            &[("operation", "Product")]
        ),
        1.0,
        "the configured operation keeps its own series: {text}"
    );
}

#[tokio::test]
async fn an_inbound_traceparent_reaches_the_services_with_the_same_trace_id() {
    let app = spawn_app().await;
    let user = app.services.world.user_with_cart().to_owned();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let answer = app
        .send(
            app.client
                .post(&app.endpoint)
                .bearer_auth(token(&user))
                .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
                .json(&json!({ "query": "{ viewer { cart { lines { product { name } } } } }" })),
        )
        .await;
    answer.assert_ok();
    for kind in [ServiceKind::Cart, ServiceKind::Product] {
        let requests = app.services.world.admin(kind).requests();
        assert!(!requests.is_empty(), "{kind:?} was called");
        for request in requests {
            let traceparent = &request.headers["traceparent"];
            assert_eq!(traceparent.split('-').nth(1), Some(trace_id), "{kind:?}");
        }
    }
}

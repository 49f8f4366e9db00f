//! GraphQL over HTTP: methods, content negotiation, status codes, the query page, APQ, CORS,
//! body limits and request-id propagation.

use reference_services::ServiceKind;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

#[tokio::test]
async fn a_query_can_be_sent_with_get() {
    let app = spawn_app().await;
    let answer = app
        .get(
            &[
                ("query", "query Q($id: ID!) { product(id: $id) { id } }"),
                ("variables", r#"{"id":"p-00001"}"#),
                ("operationName", "Q"),
            ],
            None,
        )
        .await;
    answer.assert_ok();
    assert!(answer.content_type.starts_with("application/json"));
    assert_eq!(answer.data("/product/id"), "p-00001");
}

#[tokio::test]
async fn a_mutation_over_get_is_405_with_allow_post() {
    let app = spawn_app().await;
    let answer = app
        .get(
            &[(
                "query",
                r#"mutation { removeCartLine(productId: "p-00001") { version } }"#,
            )],
            None,
        )
        .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST");
    assert_eq!(answer.codes(), ["METHOD_NOT_ALLOWED"]);
    // Even with an operation name picking the mutation out of several operations.
    let named = app
        .get(
            &[
                ("query", r#"query A { categories { id } } mutation B { removeCartLine(productId: "p-00001") { version } }"#),
                ("operationName", "B"),
            ],
            None,
        )
        .await;
    assert_eq!(named.status, 405);
}

#[tokio::test]
async fn the_graphql_response_type_is_used_when_accepted() {
    let app = spawn_app().await;
    let answer = app
        .post_json(
            json!({ "query": "{ categories { id } }" }),
            None,
            Some(GRAPHQL_RESPONSE),
        )
        .await;
    answer.assert_ok();
    assert!(
        answer.content_type.starts_with(GRAPHQL_RESPONSE),
        "{}",
        answer.content_type
    );
    let plain = app
        .post_json(json!({ "query": "{ categories { id } }" }), None, None)
        .await;
    assert!(plain.content_type.starts_with("application/json"));
}

#[tokio::test]
async fn a_document_that_does_not_parse_is_400_without_data_for_graphql_response_clients() {
    let app = spawn_app().await;
    let answer = app
        .post_json(
            json!({ "query": "{ categories { id " }),
            None,
            Some(GRAPHQL_RESPONSE),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.get("data").is_none(), "{:#}", answer.body);
    assert_eq!(answer.codes(), ["GRAPHQL_PARSE_FAILED"]);
    let legacy = app
        .post_json(json!({ "query": "{ categories { id " }), None, None)
        .await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.codes(), ["GRAPHQL_PARSE_FAILED"]);
}

#[tokio::test]
async fn a_document_that_does_not_validate_is_400_for_graphql_response_clients() {
    let app = spawn_app().await;
    let answer = app
        .post_json(
            json!({ "query": "{ categories { nope } }" }),
            None,
            Some(GRAPHQL_RESPONSE),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.get("data").is_none());
    assert_eq!(answer.codes(), ["GRAPHQL_VALIDATION_FAILED"]);
    let legacy = app
        .post_json(json!({ "query": "{ categories { nope } }" }), None, None)
        .await;
    assert_eq!(legacy.status, 200);
}

#[tokio::test]
async fn a_field_error_is_200_with_partial_data_for_graphql_response_clients() {
    let app = spawn_app().await;
    let answer = app
        .post_json(
            json!({ "query": "{ viewer { id } categories { id } }" }),
            None,
            Some(GRAPHQL_RESPONSE),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.data("/categories").is_array());
    assert_eq!(answer.codes(), ["UNAUTHENTICATED"]);
}

#[tokio::test]
async fn malformed_requests_are_rejected_with_codes() {
    let app = spawn_app().await;
    let not_json = app
        .send(
            app.client
                .post(&app.endpoint)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.codes(), ["BAD_REQUEST"]);
    let text = app
        .send(
            app.client
                .post(&app.endpoint)
                .header("content-type", "text/plain")
                .body("{ categories { id } }"),
        )
        .await;
    assert_eq!(text.status, 415);
    assert_eq!(text.codes(), ["UNSUPPORTED_MEDIA_TYPE"]);
    let no_query = app.post_json(json!({ "variables": {} }), None, None).await;
    assert_eq!(no_query.status, 400);
    let unacceptable = app
        .send(
            app.client
                .post(&app.endpoint)
                .header("accept", "text/csv")
                .json(&json!({ "query": "{ categories { id } }" })),
        )
        .await;
    assert_eq!(unacceptable.status, 406);
}

#[tokio::test]
async fn a_body_above_the_limit_is_413() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    let big = format!("{{ categories {{ id }} }} #{}", "x".repeat(2048));
    let answer = app.post_json(json!({ "query": big }), None, None).await;
    assert_eq!(answer.status, 413);
}

#[tokio::test]
async fn browsers_get_graphiql_served_entirely_by_the_gateway() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(&app.endpoint)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("GraphiQL"));
    assert!(html.contains("\"/graphql\""));
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "no external assets"
    );
    // Every script and stylesheet the page loads is served by the gateway itself.
    let base = app.endpoint.trim_end_matches("/graphql").to_owned();
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.starts_with("/graphql/graphiql/"))
        .collect();
    assert_eq!(assets.len(), 4, "{assets:?}");
    for asset in assets {
        let response = app
            .client
            .get(format!("{base}{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let media = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            media.starts_with("text/javascript") || media.starts_with("text/css"),
            "{asset}: {media}"
        );
        assert!(!response.bytes().await.unwrap().is_empty(), "{asset}");
    }
}

#[tokio::test]
async fn graphiql_does_not_keep_headers_such_as_a_bearer_token_in_the_browser() {
    let app = spawn_app().await;
    let html = app
        .client
        .get(&app.endpoint)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The page's own script (the one without `src`): how GraphiQL is configured.
    let config = html
        .split("<script>")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("an inline script");
    assert!(config.contains("shouldPersistHeaders: false"), "{config}");
    assert_eq!(
        config.matches("shouldPersistHeaders").count(),
        1,
        "set once: {config}"
    );
    for storage in ["localStorage", "sessionStorage", "storage", "cookie"] {
        assert!(
            !config.contains(storage),
            "the page stores nothing itself: {config}"
        );
    }
    // With the prop false, the vendored GraphiQL hides its "Persist headers" setting, so a user
    // cannot turn it back on either.
    let base = app.endpoint.trim_end_matches("/graphql").to_owned();
    let script = app
        .client
        .get(format!(
            "{base}/graphql/graphiql/{}/graphiql.min.js",
            bff_web::graphiql::GRAPHIQL_VERSION
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("showPersistHeadersSettings: shouldPersistHeaders !== false"));
}

#[tokio::test]
async fn automatic_persisted_queries_are_learned_then_served_by_hash() {
    let app = spawn_app().await;
    let query = "{ categories { id } }";
    let hash = bff_web::apq::sha256_hex(query);
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let miss = app
        .post_json(json!({ "extensions": extensions }), None, None)
        .await;
    assert_eq!(miss.codes(), ["PERSISTED_QUERY_NOT_FOUND"]);
    assert_eq!(miss.status, 200);
    app.post_json(
        json!({ "query": query, "extensions": extensions }),
        None,
        None,
    )
    .await
    .assert_ok();
    let hit = app
        .get(&[("extensions", &extensions.to_string())], None)
        .await;
    hit.assert_ok();
    assert!(hit.data("/categories").is_array());
    let wrong = app
        .post_json(
            json!({ "query": "{ categories { name } }", "extensions": extensions }),
            None,
            None,
        )
        .await;
    assert_eq!(wrong.codes(), ["PERSISTED_QUERY_INVALID"]);
}

#[tokio::test]
async fn a_persisted_query_that_does_not_parse_is_not_remembered() {
    let app = spawn_app().await;
    let garbage = format!("{{ not graphql {}", "x".repeat(10_000));
    let hash = bff_web::apq::sha256_hex(&garbage);
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let sent = app
        .post_json(
            json!({ "query": garbage, "extensions": extensions }),
            None,
            None,
        )
        .await;
    assert_eq!(sent.codes(), ["GRAPHQL_PARSE_FAILED"]);
    let by_hash = app
        .post_json(json!({ "extensions": extensions }), None, None)
        .await;
    assert_eq!(by_hash.codes(), ["PERSISTED_QUERY_NOT_FOUND"]);
}

#[tokio::test]
async fn configured_origins_get_cors_headers_and_others_do_not() {
    let app = spawn_app_with(|s| {
        s.gateway.cors.allowed_origins = vec!["https://shop.example.com".to_owned()];
    })
    .await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, &app.endpoint)
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let other = app
        .client
        .post(&app.endpoint)
        .header("origin", "https://evil.example.com")
        .json(&json!({ "query": "{ categories { id } }" }))
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_request_id_and_trace_are_propagated_downstream() {
    let app = spawn_app().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = app
        .send(
            app.client
                .post(&app.endpoint)
                .header("x-request-id", "req-web-42")
                .header("traceparent", traceparent)
                .json(&json!({ "query": "{ categories { id } }" })),
        )
        .await;
    answer.assert_ok();
    assert_eq!(answer.headers["x-request-id"], "req-web-42");
    let logged = app.services.world.admin(ServiceKind::Product).requests();
    let call = logged.last().expect("a catalog call");
    assert_eq!(
        call.headers.get("x-request-id").map(String::as_str),
        Some("req-web-42")
    );
    assert_eq!(
        call.headers.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
}

#[tokio::test]
async fn response_fields_follow_the_order_of_the_query() {
    let app = spawn_app().await;
    let query =
        r#"{ z: product(id: "p-00001") { name id brand } a: product(id: "p-00002") { id } }"#;
    let response = app
        .client
        .post(&app.endpoint)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request");
    let text = response.text().await.expect("body");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from {text}"))
    };
    // Sorted keys would put `a` before `z` and `brand` before `id` before `name`.
    assert!(at(r#""z":"#) < at(r#""a":"#), "{text}");
    assert!(at(r#""name":"#) < at(r#""id":"#), "{text}");
    assert!(at(r#""id":"#) < at(r#""brand":"#), "{text}");
}

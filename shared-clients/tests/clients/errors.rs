//! Every way a call can fail is classified into one `ErrorKind`, naming the right service.

use std::time::Duration;

use serde_json::json;
use shared_clients::{
    Downstream, DownstreamConfig, ErrorKind, Owner, ProductClient, Service, ServiceConfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{config, ctx, downstream, order_id, product_id, user};

/// A problem document as the services send it.
fn problem(status: u16, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        json!({ "type": "about:blank", "title": title, "status": status, "detail": detail })
            .to_string(),
        "application/problem+json",
    )
}

#[tokio::test]
async fn each_error_status_is_classified_for_the_service_that_answered_it() {
    let cases = [
        (400, ErrorKind::Invalid),
        (403, ErrorKind::Forbidden),
        (404, ErrorKind::NotFound),
        (409, ErrorKind::Conflict),
        (412, ErrorKind::PreconditionFailed),
        (422, ErrorKind::Invalid),
        (429, ErrorKind::Unavailable),
        (500, ErrorKind::Unavailable),
        (503, ErrorKind::Unavailable),
    ];
    for (status, kind) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(problem(status, "Nope", "because"))
            .mount(&server)
            .await;
        let downstream = downstream(&server);
        let u = user("u-0001");

        let product = downstream
            .catalog()
            .product(&ctx(), &product_id(1))
            .await
            .unwrap_err();
        let cart = downstream.carts().get(&ctx(), &u).await.unwrap_err();
        let order = downstream
            .orders()
            .get(&ctx(), &Owner::User(u.clone()), &order_id("o-1"))
            .await
            .unwrap_err();

        for (err, service) in [
            (product, Service::Product),
            (cart, Service::Cart),
            (order, Service::Order),
        ] {
            assert_eq!(err.kind(), kind, "{status} from {service}");
            assert_eq!(err.service(), service);
            assert_eq!(err.status(), Some(status));
            assert_eq!(
                err.problem().and_then(|p| p.detail.as_deref()),
                Some("because")
            );
            assert_eq!(
                err.is_retryable(),
                matches!(kind, ErrorKind::Unavailable),
                "{status}"
            );
        }
    }
}

#[tokio::test]
async fn a_422_keeps_the_problem_detail_for_the_bff_to_show() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(problem(422, "Unprocessable", "lines mix EUR and USD"))
        .mount(&server)
        .await;
    let order = shared_clients::NewOrder {
        user_id: user("u-0001"),
        channel: shared_clients::Channel::web(),
        lines: Vec::new(),
        shipping_address: None,
    };
    let err = downstream(&server)
        .orders()
        .create(
            &ctx(),
            &Owner::User(user("u-0001")),
            &shared_clients::IdempotencyKey::generate(),
            &order,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let problem = err.problem().expect("the problem is kept");
    assert_eq!(problem.title.as_deref(), Some("Unprocessable"));
    assert_eq!(problem.detail.as_deref(), Some("lines mix EUR and USD"));
    assert_eq!(
        err.to_string(),
        "order service answered 422 Unprocessable Entity"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_is_retryable_and_says_when() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "3"))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .categories(&ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.problem().is_none());
}

#[tokio::test]
async fn a_malformed_json_body_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"id\": \"p-00001\", ", "application/json")
                .insert_header("cache-control", "max-age=30"),
        )
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse);
    assert_eq!(err.service(), Service::Product);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_body_that_breaks_the_schema_is_a_bad_response() {
    let server = MockServer::start().await;
    // `version` is required; `items` must be an array.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "user_id": "u-0001", "items": {}
        })))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .carts()
        .get(&ctx(), &user("u-0001"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse);
    assert_eq!(err.service(), Service::Cart);
}

#[tokio::test]
async fn an_id_outside_the_contract_pattern_in_a_response_is_a_bad_response() {
    let server = MockServer::start().await;
    let mut body = crate::helpers::product_json("p-00001");
    body["id"] = json!("../../admin");
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse);
}

#[tokio::test]
async fn an_unexpected_status_or_redirect_is_a_bad_response() {
    for status in [301, 401, 405] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(status).insert_header("location", "http://elsewhere/"),
            )
            .mount(&server)
            .await;
        let err = downstream(&server)
            .carts()
            .get(&ctx(), &user("u-0001"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadResponse, "{status}");
        assert_eq!(err.status(), Some(status));
    }
}

#[tokio::test]
async fn a_response_slower_than_the_configured_timeout_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(crate::helpers::cart_json("u-0001", 1))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let mut config = config(&server.uri());
    config.cart.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = Downstream::new(&config)
        .unwrap()
        .carts()
        .get(&ctx(), &user("u-0001"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.service(), Service::Cart);
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up at the timeout"
    );
}

/// A base URL where nothing listens (a port that was just free), with a path that must not leak.
async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/s3cr3t-prefix")
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_and_the_error_text_has_no_url() {
    let url = refused_url().await;
    let client = ProductClient::new(&ServiceConfig::with_url(url)).unwrap();
    let err = client.categories(&ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.service(), Service::Product);
    assert_eq!(err.status(), None);
    assert!(err.is_retryable());
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(!chain.contains("s3cr3t"), "{chain}");
}

#[tokio::test]
async fn a_bad_url_in_the_configuration_fails_start_up_naming_the_service() {
    let mut config = DownstreamConfig::default();
    config.order.url = "not a url".to_owned();
    let err = Downstream::new(&config).unwrap_err();
    assert!(err.to_string().contains("order service"), "{err}");
}

#[tokio::test]
async fn a_batch_of_more_than_100_ids_is_refused_without_a_call() {
    let server = MockServer::start().await;
    let client = ProductClient::new(&ServiceConfig::with_url(server.uri())).unwrap();
    let err = client
        .batch(&ctx(), &crate::helpers::product_ids(1, 101))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(err.status(), None);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_answer_that_forgets_an_id_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(crate::helpers::cacheable(
            json!({ "items": [crate::helpers::product_json("p-00001")], "missing": [] }),
            30,
        ))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .products(&ctx(), &[product_id(1), product_id(2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse);
}

#[tokio::test]
async fn readiness_reports_each_service_and_is_false_when_one_fails() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "status": "ok" })))
        .mount(&server)
        .await;
    let mut config = config(&server.uri());
    let report = Downstream::new(&config).unwrap().check_ready().await;
    assert!(report.is_ready(), "{report:?}");
    assert_eq!(report.checks.len(), 3);

    config.order.url = refused_url().await;
    let report = Downstream::new(&config).unwrap().check_ready().await;
    assert!(!report.is_ready());
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|check| check.result.is_err())
        .map(|check| check.service)
        .collect();
    assert_eq!(failed, [Service::Order]);
}

#[tokio::test]
async fn debug_output_of_the_facade_does_not_show_configured_credentials() {
    let mut config = DownstreamConfig::default();
    config.product.url = "http://svc:hunter2@127.0.0.1:9101/".to_owned();
    let downstream = Downstream::new(&config).unwrap();
    let debug = format!(
        "{downstream:?} {:?} {:?} {:?}",
        downstream.catalog(),
        downstream.catalog().client(),
        downstream.carts()
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}

/// Compiles only if `future` can be awaited by a multi-threaded server (axum handlers).
fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

#[tokio::test]
async fn the_facade_is_shareable_and_its_futures_are_send() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>(_: &T) {}
    let downstream = Downstream::new(&DownstreamConfig::default()).unwrap();
    assert_shareable(&downstream);
    let (ctx, ids, u) = (ctx(), [product_id(1)], user("u-0001"));
    let owner = Owner::User(u.clone());
    // Built, not awaited: nothing listens on the default ports.
    drop(assert_send(downstream.catalog().product(&ctx, &ids[0])));
    drop(assert_send(downstream.catalog().products(&ctx, &ids)));
    drop(assert_send(downstream.catalog().categories(&ctx)));
    drop(assert_send(downstream.carts().get(&ctx, &u)));
    drop(assert_send(downstream.orders().list(
        &ctx,
        &owner,
        &Default::default(),
    )));
    drop(assert_send(downstream.check_ready()));
}

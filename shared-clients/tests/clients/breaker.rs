//! Circuit breakers and bulkheads: a failing service's breaker opens after the threshold, sends
//! nothing while open (the downstream's counter does not move), lets one probe through when
//! half-open and closes on its success; 4xx answers never open it; a bulkhead caps the calls in
//! flight.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reference_services::{Config, FaultMode, ServiceKind, spawn_all};
use shared_clients::{
    BreakerState, BulkheadConfig, ClientError, Downstream, DownstreamConfig, ErrorKind, Fetched,
    Product, ProductClient, Service, ServiceConfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{cacheable, config, ctx, product_id, product_json};
use crate::timing::jump;

/// How long the breakers of these tests stay open.
const OPEN_FOR: Duration = Duration::from_secs(5);

/// Reads product `n` through the raw client (no cache in the way).
async fn get(client: &ProductClient, n: usize) -> Result<Fetched<Arc<Product>>, ClientError> {
    client.get(&ctx(), &product_id(n)).await
}

/// A product service configuration whose breaker opens when 5 calls in a row fail, without
/// retries (so one call is one request).
fn breaking(url: &str) -> ServiceConfig {
    let mut service = ServiceConfig::with_url(url);
    service.retry.max_attempts = 1;
    service.breaker.minimum_calls = 5;
    service.breaker.failure_rate = 0.5;
    service.breaker.open_for = OPEN_FOR;
    service
}

#[tokio::test]
async fn the_breaker_opens_sends_nothing_while_open_probes_once_and_closes_on_success() {
    let spawned = spawn_all(Config {
        products: 100,
        ..Config::default()
    })
    .await
    .unwrap();
    let admin = spawned.world.admin(ServiceKind::Product);
    let downstream = Downstream::new(&DownstreamConfig {
        product: breaking(&spawned.product_url),
        ..DownstreamConfig::default()
    })
    .unwrap();
    // The raw client: no cache in the way, every call is a request unless the breaker says no.
    let client = downstream.catalog().client();
    let breaker = |downstream: &Downstream| {
        downstream
            .metrics()
            .service(Service::Product)
            .unwrap()
            .breaker
            .clone()
    };

    admin.set_mode(FaultMode::Failing);
    for n in 1..=5 {
        let err = get(client, n).await.unwrap_err();
        assert_eq!(err.status(), Some(503), "call {n} reached the service");
    }
    assert_eq!(admin.stats().total, 5);
    assert_eq!(breaker(&downstream).state, BreakerState::Open);

    // Open: every call fails fast, without a request.
    for n in 1..=20 {
        let err = get(client, n).await.unwrap_err();
        assert_eq!((err.kind(), err.status()), (ErrorKind::Unavailable, None));
    }
    assert_eq!(admin.stats().total, 5, "nothing was sent while open");

    // The service recovers (and is slow enough for the probe to still be in flight while the
    // other calls arrive); the breaker's open time passes.
    admin.set_faults(reference_services::admin::Faults {
        mode: FaultMode::Normal,
        latency: Duration::from_millis(300),
        ..admin.faults()
    });
    jump(OPEN_FOR).await;
    let calls = (1..=10).map(|n| get(client, n));
    let results = join_all(calls).await;
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(succeeded, 1, "a single probe went through");
    assert_eq!(admin.stats().total, 6);
    for failed in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            (failed.kind(), failed.status()),
            (ErrorKind::Unavailable, None)
        );
    }

    // The probe's success closed it.
    assert_eq!(breaker(&downstream).state, BreakerState::Closed);
    let results = join_all((1..=10).map(|n| get(client, n))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(admin.stats().total, 16);

    let metrics = downstream.metrics();
    let product = metrics.service(Service::Product).unwrap();
    assert_eq!(
        (
            product.breaker.opened,
            product.breaker.half_opened,
            product.breaker.closed
        ),
        (1, 1, 1)
    );
    assert_eq!(product.breaker_rejections, 29);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let downstream = Downstream::new(&DownstreamConfig {
        product: breaking(&server.uri()),
        ..DownstreamConfig::default()
    })
    .unwrap();
    let client = downstream.catalog().client();
    for n in 1..=5 {
        get(client, n).await.unwrap_err();
    }
    jump(OPEN_FOR).await;
    let probe = get(client, 1).await.unwrap_err();
    assert_eq!(probe.status(), Some(503), "the probe was sent");
    get(client, 1).await.unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 6);
    let metrics = downstream.metrics();
    let breaker = &metrics.service(Service::Product).unwrap().breaker;
    assert_eq!((breaker.state, breaker.opened), (BreakerState::Open, 2));
}

#[tokio::test]
async fn answers_in_the_4xx_range_never_open_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let downstream = Downstream::new(&DownstreamConfig {
        product: breaking(&server.uri()),
        ..DownstreamConfig::default()
    })
    .unwrap();
    for n in 1..=30 {
        let err = downstream
            .catalog()
            .client()
            .get(&ctx(), &product_id(n))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 30);
    let metrics = downstream.metrics();
    assert_eq!(
        metrics.service(Service::Product).unwrap().breaker.state,
        BreakerState::Closed
    );
}

#[tokio::test]
async fn calls_beyond_the_bulkhead_fail_fast_or_wait_briefly_when_configured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(product_json("p-00001"), 30).set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let mut config = config(&server.uri());
    config.product.bulkhead = BulkheadConfig {
        max_in_flight: 2,
        max_wait: Duration::ZERO,
    };
    let downstream = Downstream::new(&config).unwrap();
    let client = downstream.catalog().client();
    let results = join_all((0..5).map(|_| get(client, 1))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!((err.kind(), err.status()), (ErrorKind::Unavailable, None));
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let metrics = downstream.metrics();
    assert_eq!(
        metrics
            .service(Service::Product)
            .unwrap()
            .bulkhead_rejections,
        3
    );

    // With a wait allowed, the excess calls queue for a slot instead.
    config.product.bulkhead = BulkheadConfig {
        max_in_flight: 1,
        max_wait: Duration::from_secs(5),
    };
    let downstream = Downstream::new(&config).unwrap();
    let client = downstream.catalog().client();
    let results = join_all((0..3).map(|_| get(client, 1))).await;
    assert!(results.iter().all(Result::is_ok));

    // ... but never past the caller's deadline.
    let hurried = ctx().with_timeout_from_now(Duration::from_millis(100));
    let id = product_id(1);
    let (first, second) = tokio::join!(get(client, 1), client.get(&hurried, &id));
    assert!(first.is_ok());
    assert_eq!(second.unwrap_err().kind(), ErrorKind::Unavailable);
}

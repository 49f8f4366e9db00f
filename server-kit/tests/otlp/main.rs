//! OTLP trace export, end to end: a gateway whose `telemetry.otlp_endpoint` points at a fake
//! collector exports its request spans there, continuing the client's trace, and its downstream
//! `traceparent` points at those spans.
//!
//! A test binary of its own: it installs the process's (global) subscriber with export on.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE, request::Parts},
    response::IntoResponse,
    routing::{get, post},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};
use prost::Message;
use server_kit::{
    ServerConfig, TelemetryConfig,
    server::{Gateway, Server},
    telemetry,
};

/// A client's trace: its trace id and the id of its span that calls the gateway.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// A client's trace that it chose not to sample (flags `00`).
const UNSAMPLED_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// What the fake collector received: every `POST /v1/traces`, decoded.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<Received>>>,
}

/// One `POST /v1/traces`.
struct Received {
    content_type: Option<String>,
    export: ExportTraceServiceRequest,
}

impl Collector {
    /// Every span received so far, with the `service.name` of its resource.
    fn spans(&self) -> Vec<(String, Span)> {
        let exports = self.exports.lock().expect("lock");
        let mut spans = Vec::new();
        for received in exports.iter() {
            for resource_spans in &received.export.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }

    /// The `Content-Type` of every export received.
    fn content_types(&self) -> Vec<Option<String>> {
        let exports = self.exports.lock().expect("lock");
        exports
            .iter()
            .map(|received| received.content_type.clone())
            .collect()
    }
}

/// `POST /v1/traces`, as an OTLP/HTTP receiver answers it: 200 with an (empty) protobuf response.
async fn receive(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    collector.exports.lock().expect("lock").push(Received {
        content_type,
        export,
    });
    ([(CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new()).into_response()
}

async fn spawn_collector() -> (String, Collector) {
    let collector = Collector::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), collector)
}

/// A gateway whose only route answers with the `traceparent` its handlers see, which is the one
/// every downstream call of the request sends.
async fn spawn_gateway(
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let config = ServerConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        ..ServerConfig::default()
    };
    let routes = Router::new().route(
        "/traceparent",
        get(|parts: Parts| async move {
            parts
                .headers
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }),
    );
    let listener = Server::bind(&config).await.expect("bind port 0");
    let gateway = Gateway {
        name: "otlp-test",
        routes,
        probe: None,
        downstream: None,
        metrics_hooks: Vec::new(),
    };
    let server = Server::new(listener, &config, gateway);
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let handle = tokio::spawn(server.serve(async move {
        stop.await.ok();
    }));
    (base, handle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(Value::StringValue(value)) => Some(value.clone()),
        _ => None,
    }
}

/// `(trace id, parent id, flags)` of a `traceparent`.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_continuing_the_clients_trace() {
    let (endpoint, collector) = spawn_collector().await;
    let telemetry = telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            service_name: Some("otlp-test-service".to_owned()),
            otlp_timeout: Duration::from_secs(5),
            ..TelemetryConfig::default()
        },
        "otlp-test",
    );
    assert!(telemetry.is_exporting());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (base, server) = spawn_gateway(stopped).await;
    let client = reqwest::Client::new();
    let forwarded = |traceparent: Option<String>| {
        let mut request = client.get(format!("{base}/traceparent"));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        async move {
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), 200);
            response.text().await.expect("body")
        }
    };

    // 1. The client sends its trace context.
    let with_parent = forwarded(Some(format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"))).await;
    let (trace_id, gateway_span_id, flags) = fields(&with_parent);
    assert_eq!(
        trace_id, CLIENT_TRACE_ID,
        "downstream calls stay in the client's trace"
    );
    assert_ne!(
        gateway_span_id, CLIENT_SPAN_ID,
        "downstream calls are children of the gateway's span, not of the client's"
    );
    assert_eq!(flags, "01");

    // 2. The client sends none: the gateway starts a trace.
    let without_parent = forwarded(None).await;
    let (new_trace_id, new_span_id, new_flags) = fields(&without_parent);
    assert_ne!(new_trace_id, CLIENT_TRACE_ID);
    assert_eq!(
        new_flags, "01",
        "the default ratio (1.0) samples every new trace"
    );

    // 3. The client sends a trace it does not sample: the gateway follows its decision.
    let unsampled = forwarded(Some(format!("00-{UNSAMPLED_TRACE_ID}-{CLIENT_SPAN_ID}-00"))).await;
    let (unsampled_trace_id, _, unsampled_flags) = fields(&unsampled);
    assert_eq!(unsampled_trace_id, UNSAMPLED_TRACE_ID);
    assert_eq!(unsampled_flags, "00");

    // Stop serving (every request span is closed once its connection is), then flush.
    drop(client);
    stop.send(()).expect("server running");
    server.await.expect("server task").expect("server stopped");
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("shutdown");

    // Shutdown waits for the last export; poll briefly all the same, with a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut spans = collector.spans();
    while spans.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        spans = collector.spans();
    }
    let requests: Vec<&(String, Span)> = spans
        .iter()
        .filter(|(_, span)| span.name == "GET /traceparent")
        .collect();
    assert!(
        collector
            .content_types()
            .iter()
            .all(|content_type| content_type.as_deref() == Some("application/x-protobuf")),
        "{:?}",
        collector.content_types()
    );

    let (service, continued) = requests
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == CLIENT_TRACE_ID)
        .unwrap_or_else(|| panic!("no request span in the client's trace: {requests:?}"));
    assert_eq!(service, "otlp-test-service");
    assert_eq!(
        hex(&continued.parent_span_id),
        CLIENT_SPAN_ID,
        "its parent is the client's span"
    );
    assert_eq!(
        hex(&continued.span_id),
        gateway_span_id,
        "it is the parent of the downstream calls"
    );
    assert_eq!(
        string_attribute(&continued.attributes, "trace_id").as_deref(),
        Some(CLIENT_TRACE_ID),
        "the logs' trace_id is the exported one"
    );
    assert_eq!(
        string_attribute(&continued.attributes, "http.route").as_deref(),
        Some("/traceparent")
    );
    assert_eq!(
        continued.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32,
        "a server span"
    );
    assert_eq!(
        attribute(&continued.attributes, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );

    let (_, started) = requests
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == new_trace_id)
        .unwrap_or_else(|| panic!("no request span in the new trace: {requests:?}"));
    assert!(started.parent_span_id.is_empty(), "a new trace's root span");
    assert_eq!(hex(&started.span_id), new_span_id);
    assert_eq!(
        string_attribute(&started.attributes, "trace_id").as_deref(),
        Some(new_trace_id.as_str()),
        "the logs' trace_id is the exported one, not the generated header's"
    );

    assert!(
        requests
            .iter()
            .all(|(_, span)| hex(&span.trace_id) != UNSAMPLED_TRACE_ID),
        "a trace the client did not sample is not exported"
    );
    assert_eq!(requests.len(), 2, "{requests:?}");
}

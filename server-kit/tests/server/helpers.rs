//! Starts a [`Server`] with a small test gateway on port 0.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{Json, Router, http::request::Parts, routing::get};
use server_kit::{
    Readiness, ServerConfig,
    health::{ComponentHealth, ReadinessProbe},
    server::{Gateway, Server},
};

/// A probe reporting a fixed answer, or never answering.
pub struct StubProbe {
    up: Option<bool>,
}

impl StubProbe {
    pub fn up() -> Self {
        Self { up: Some(true) }
    }
    pub fn down() -> Self {
        Self { up: Some(false) }
    }
    pub fn hanging() -> Self {
        Self { up: None }
    }
}

impl ReadinessProbe for StubProbe {
    fn check(&self) -> Pin<Box<dyn Future<Output = Vec<ComponentHealth>> + Send + '_>> {
        Box::pin(async move {
            let Some(up) = self.up else {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Vec::new();
            };
            vec![ComponentHealth {
                name: "product".into(),
                up,
            }]
        })
    }
}

pub struct TestApp {
    pub base: String,
    /// `http://…` of the separate metrics listener, when `metrics_listen_addr` is set.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    pub readiness: Readiness,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }
}

fn routes() -> Router {
    Router::new()
        .route(
            "/echo",
            axum::routing::post(|Json(body): Json<serde_json::Value>| async move { Json(body) }),
        )
        .route(
            "/boom",
            get(|| async {
                let items: Vec<u8> = Vec::new();
                // Index out of bounds: a deliberate panic.
                items[usize::from(items.is_empty())].to_string()
            }),
        )
        .route(
            "/traceparent",
            get(|parts: Parts| async move {
                parts
                    .headers
                    .get("traceparent")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
        )
        .route(
            "/request-id",
            get(|parts: Parts| async move {
                server_kit::http::request_id(&parts)
                    .unwrap_or_default()
                    .to_owned()
            }),
        )
}

pub async fn spawn(config: ServerConfig, probe: Option<StubProbe>) -> TestApp {
    spawn_with(config, probe, std::future::pending()).await
}

pub async fn spawn_with(
    mut config: ServerConfig,
    probe: Option<StubProbe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> TestApp {
    config.listen_addr = "127.0.0.1:0".parse().expect("addr");
    let listener = Server::bind(&config).await.expect("bind port 0");
    let metrics_listener = Server::bind_metrics(&config).await.expect("bind port 0");
    let gateway = Gateway {
        name: "test",
        routes: routes(),
        probe: probe.map(|p| Arc::new(p) as Arc<dyn ReadinessProbe>),
        downstream: None,
    };
    let mut server = Server::new(listener, &config, gateway);
    if let Some(metrics_listener) = metrics_listener {
        server = server.with_metrics_listener(metrics_listener);
    }
    let metrics_base = server
        .metrics_local_addr()
        .map(|addr| format!("http://{}", addr.expect("addr")));
    let addr = server.local_addr().expect("addr");
    let readiness = server.readiness();
    let handle = tokio::spawn(server.serve(shutdown));
    TestApp {
        base: format!("http://{addr}"),
        metrics_base,
        client: reqwest::Client::new(),
        readiness,
        handle,
    }
}

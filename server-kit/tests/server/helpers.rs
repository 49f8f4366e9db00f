//! Starts a [`Server`] with a small test gateway on port 0.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::ConnectInfo, http::request::Parts, routing::get};
use server_kit::{
    Readiness, ServerConfig,
    health::{ComponentHealth, ReadinessProbe},
    server::{Gateway, Server},
};

/// The size of `GET /big`'s answer: more than the socket buffers of both ends hold.
pub const BIG_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// A probe reporting a fixed answer, or never answering, and counting its checks.
pub struct StubProbe {
    up: Option<bool>,
    /// How long each check takes.
    delay: Duration,
    /// How many checks ran.
    pub calls: Arc<AtomicUsize>,
}

impl StubProbe {
    pub fn up() -> Self {
        Self::answering(Some(true))
    }
    pub fn down() -> Self {
        Self::answering(Some(false))
    }
    pub fn hanging() -> Self {
        Self::answering(None)
    }
    /// Up, after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::up()
        }
    }
    fn answering(up: Option<bool>) -> Self {
        Self {
            up,
            delay: Duration::ZERO,
            calls: Arc::default(),
        }
    }
}

impl ReadinessProbe for StubProbe {
    fn check(
        &self,
        _services: bool,
    ) -> Pin<Box<dyn Future<Output = Vec<ComponentHealth>> + Send + '_>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
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
    /// `http://…` of the metrics listener, when `metrics_listen_addr` is set (it is by default).
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    pub readiness: Readiness,
    /// The address the server listens on.
    pub addr: SocketAddr,
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
        .route("/big", get(|| async { vec![b'a'; BIG_RESPONSE_BYTES] }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
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
    if config.metrics_listen_addr.is_some() {
        config.metrics_listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    }
    let listener = Server::bind(&config).await.expect("bind port 0");
    let metrics_listener = Server::bind_metrics(&config).await.expect("bind port 0");
    let gateway = Gateway {
        name: "test",
        routes: routes(),
        probe: probe.map(|p| Arc::new(p) as Arc<dyn ReadinessProbe>),
        downstream: None,
        metrics_hooks: Vec::new(),
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
        addr,
        handle,
    }
}

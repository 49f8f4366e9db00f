//! What every gateway's HTTP tests share (feature `test-util`, for dev-dependencies only):
//! starting a gateway on free loopback ports over freshly seeded reference services
//! ([`spawn_gateway`], [`serve`]), several replicas of one gateway over one private Redis
//! ([`spawn_replicas`]; a standalone server, a local Redis Cluster or a master behind Sentinel
//! as `BFF_TEST_REDIS_TOPOLOGY` says), reading its `/metrics` ([`scrape`], [`sample`]), and decoding a
//! compressed answer as a client would ([`decode`]).

use std::fmt::Debug;

use reference_services::{RedisEndpoint, Spawned, TestRedis};
use shared_clients::SharedConfig;
use shared_clients::shared_state::{RedisUrl, SentinelConfig};

use crate::{
    config::{GatewayConfig, ServerConfig, Settings},
    server::{Gateway, Server},
};

/// A gateway serving on free loopback ports, and the reference services behind it.
pub struct TestGateway<X> {
    /// `http://127.0.0.1:<port>` of the clients' listener.
    pub base: String,
    /// `http://127.0.0.1:<port>/metrics` of the metrics listener.
    pub metrics_url: String,
    /// The reference services (their world, counters and fault knobs).
    pub services: Spawned,
    /// The settings the gateway was built with.
    pub settings: Settings<X>,
}

/// Starts reference services seeded with `services`, then the gateway `build` makes from the
/// default settings pointed at them, with both listeners on free loopback ports and `configure`
/// applied last. Panics when anything fails: it is for tests.
pub async fn spawn_gateway<X, E>(
    services: reference_services::Config,
    configure: impl FnOnce(&mut Settings<X>),
    build: impl FnOnce(&Settings<X>) -> Result<Gateway, E>,
) -> TestGateway<X>
where
    X: GatewayConfig,
    E: Debug,
{
    let services = reference_services::spawn_all(services)
        .await
        .expect("the reference services start");
    let mut settings = settings_over::<X>(&services);
    configure(&mut settings);
    settings.validate().expect("valid test settings");
    let gateway = build(&settings).expect("the gateway builds");
    let listening = serve(&settings.server, gateway).await;
    TestGateway {
        base: listening.base,
        metrics_url: listening.metrics_url,
        services,
        settings,
    }
}

/// The default settings with both listeners on free loopback ports, pointed at `services`.
fn settings_over<X: GatewayConfig>(services: &Spawned) -> Settings<X> {
    let mut settings = Settings::<X>::default();
    let free = "127.0.0.1:0".parse().expect("an address");
    settings.server.listen_addr = free;
    settings.server.metrics_listen_addr = Some(free);
    settings
        .downstream
        .product
        .url
        .clone_from(&services.product_url);
    settings.downstream.cart.url.clone_from(&services.cart_url);
    settings
        .downstream
        .order
        .url
        .clone_from(&services.order_url);
    settings
}

/// Several replicas of one gateway, each with its own state (caches, limiters, records), over
/// the same reference services and one private Redis (of the topology
/// `BFF_TEST_REDIS_TOPOLOGY` names), as a deployment behind a load balancer would run them.
pub struct Replicas<X> {
    /// `http://127.0.0.1:<port>` of each replica's clients' listener.
    pub bases: Vec<String>,
    /// Each replica's metrics URL.
    pub metrics_urls: Vec<String>,
    /// The reference services behind every replica.
    pub services: Spawned,
    /// The Redis they share, whatever its topology: run commands where their key lives, stop
    /// and restart it whole to test outages.
    pub redis: TestRedis,
    /// The settings every replica was built with.
    pub settings: Settings<X>,
}

/// Starts a private Redis on free ports (one `redis-server`, or with `BFF_TEST_REDIS_TOPOLOGY`
/// = `cluster` or `sentinel` a local Redis Cluster or a master behind Sentinel), reference
/// services seeded with `services` that publish their change events to it (unless
/// `services.events` says otherwise), and `count` replicas of the gateway `build` makes (each
/// built on its own, so nothing but Redis and the downstream services is shared), pointed at it
/// by `shared.redis_url`, `shared.redis_cluster_nodes` or `shared.redis_sentinel`, `configure`
/// applied to the settings last. Panics when anything fails (including a missing
/// `redis-server`: these tests are never skipped).
pub async fn spawn_replicas<X, E>(
    services: reference_services::Config,
    count: usize,
    configure: impl FnOnce(&mut Settings<X>),
    build: impl Fn(&Settings<X>) -> Result<Gateway, E>,
) -> Replicas<X>
where
    X: GatewayConfig,
    E: Debug,
{
    let redis = TestRedis::from_env()
        .await
        .expect("a private Redis starts (./scripts/ensure-redis-server installs it)");
    spawn_replicas_over(redis, services, count, configure, build).await
}

/// As [`spawn_replicas`], over `redis` (whatever `BFF_TEST_REDIS_TOPOLOGY` says): for tests of
/// one topology's own behaviour, such as a failover.
pub async fn spawn_replicas_over<X, E>(
    redis: TestRedis,
    mut services: reference_services::Config,
    count: usize,
    configure: impl FnOnce(&mut Settings<X>),
    build: impl Fn(&Settings<X>) -> Result<Gateway, E>,
) -> Replicas<X>
where
    X: GatewayConfig,
    E: Debug,
{
    if services.events.is_none() {
        services.events = Some(redis.events_config());
    }
    let services = reference_services::spawn_all(services)
        .await
        .expect("the reference services start");
    let mut settings = settings_over::<X>(&services);
    use_redis(&mut settings.shared, &redis);
    // A loaded test machine (debug builds, two cores, other tests) can take longer than the
    // production default for a command; a test about sharing must not fall back by accident.
    settings.shared.command_timeout = std::time::Duration::from_secs(2);
    configure(&mut settings);
    settings.validate().expect("valid test settings");
    let mut bases = Vec::with_capacity(count);
    let mut metrics_urls = Vec::with_capacity(count);
    for _ in 0..count {
        let gateway = build(&settings).expect("the gateway builds");
        let listening = serve(&settings.server, gateway).await;
        bases.push(listening.base);
        metrics_urls.push(listening.metrics_url);
    }
    Replicas {
        bases,
        metrics_urls,
        services,
        redis,
        settings,
    }
}

/// Points `shared` at `redis`: exactly one of `redis_url`, `redis_cluster_nodes` and
/// `redis_sentinel`, as its topology needs.
pub fn use_redis(shared: &mut SharedConfig, redis: &TestRedis) {
    shared.redis_url = None;
    shared.redis_cluster_nodes = Vec::new();
    shared.redis_sentinel = None;
    match redis.endpoint() {
        RedisEndpoint::Standalone(url) => shared.redis_url = Some(RedisUrl::new(url)),
        RedisEndpoint::Cluster(nodes) => {
            shared.redis_cluster_nodes = nodes.into_iter().map(RedisUrl::new).collect();
        }
        RedisEndpoint::Sentinel {
            master_name,
            sentinels,
        } => {
            shared.redis_sentinel = Some(SentinelConfig {
                master_name,
                sentinels: sentinels.into_iter().map(RedisUrl::new).collect(),
            });
        }
    }
}

/// Where a gateway started by [`serve`] listens.
pub struct Listening {
    /// `http://<addr>` of the clients' listener.
    pub base: String,
    /// `http://<addr>/metrics` of the metrics listener (the clients' one without a listener of
    /// its own).
    pub metrics_url: String,
}

/// Binds `config`'s listeners and serves `gateway` on them in the background until the test's
/// runtime ends.
pub async fn serve(config: &ServerConfig, gateway: Gateway) -> Listening {
    let listener = Server::bind(config).await.expect("bind the listen address");
    let mut server = Server::new(listener, config, gateway);
    if let Some(metrics_listener) = Server::bind_metrics(config)
        .await
        .expect("bind the metrics address")
    {
        server = server.with_metrics_listener(metrics_listener);
    }
    let addr = server.local_addr().expect("the bound address");
    let metrics_url = match server.metrics_local_addr() {
        Some(metrics_addr) => format!("http://{}/metrics", metrics_addr.expect("the address")),
        None => format!("http://{addr}/metrics"),
    };
    tokio::spawn(server.serve(std::future::pending()));
    Listening {
        base: format!("http://{addr}"),
        metrics_url,
    }
}

/// `GET metrics_url` as Prometheus scrapes it: asserts a 200 in the text format and returns the
/// text.
pub async fn scrape(client: &reqwest::Client, metrics_url: &str) -> String {
    let response = client
        .get(metrics_url)
        .send()
        .await
        .expect("the scrape is answered");
    assert_eq!(response.status(), 200, "{metrics_url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("the exposition text")
}

/// The sum of the samples of the series `name` in the exposition `text` whose labels include
/// every one of `labels` (0 when none does).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            matches.then(|| value.parse::<f64>().expect("a number"))
        })
        .sum()
}

/// Decodes a `gzip` or `br` body (`encoding`, the answer's `Content-Encoding`) as a client
/// would. Panics when it cannot: it is for tests.
pub async fn decode(encoding: &str, bytes: axum::body::Bytes) -> axum::body::Bytes {
    use tower::{Service as _, ServiceExt as _};

    let encoding = encoding.to_owned();
    let answer = tower::service_fn(move |_request: http::Request<axum::body::Body>| {
        let (encoding, bytes) = (encoding.clone(), bytes.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header(http::header::CONTENT_ENCODING, encoding)
                    .body(axum::body::Body::from(bytes))
                    .expect("a response"),
            )
        }
    });
    let mut client = tower_http::decompression::Decompression::new(answer);
    let response = client
        .ready()
        .await
        .expect("ready")
        .call(http::Request::new(axum::body::Body::empty()))
        .await
        .expect("decoded");
    axum::body::to_bytes(axum::body::Body::new(response.into_body()), usize::MAX)
        .await
        .expect("a decodable body")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_over_the_series_whose_labels_match() {
        let text = "# TYPE x counter\n\
                    x{gateway=\"web\",route=\"/a\"} 2\n\
                    x{gateway=\"web\",route=\"/b\"} 3\n\
                    x{gateway=\"mobile\",route=\"/a\"} 5\n\
                    y 7\n";
        assert!((sample(text, "x", &[("gateway", "web")]) - 5.0).abs() < f64::EPSILON);
        assert!((sample(text, "x", &[("route", "/a")]) - 7.0).abs() < f64::EPSILON);
        assert!((sample(text, "y", &[]) - 7.0).abs() < f64::EPSILON);
        assert!(sample(text, "z", &[]).abs() < f64::EPSILON);
    }
}

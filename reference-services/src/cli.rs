//! The command line of the `reference-services` binary: which services to serve, where, and with
//! which seed and fault knobs. Every flag can also come from a `REF_...` environment variable.
//!
//! One process can serve all three services (the default) or one (`--service cart --listen
//! 127.0.0.1:9102`); separate processes started with the same seed agree on every id.

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    Config, ServiceKind, World,
    events::{self, EventsConfig, EventsRedis, RedisUrl},
};

/// Which services a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceChoice {
    /// Product, cart and order, each on its own listener.
    All,
    /// Only the product service.
    Product,
    /// Only the cart service.
    Cart,
    /// Only the order service.
    Order,
}

/// Reference downstream services (product, cart, order) with seeded data and fault knobs.
#[derive(Debug, Clone, Parser)]
#[command(name = "reference-services", version, about)]
pub struct Cli {
    /// Which service to serve, or all three.
    #[arg(long, env = "REF_SERVICE", value_enum, default_value_t = ServiceChoice::All)]
    pub service: ServiceChoice,
    /// Listen address when serving a single service (default: that service's own default).
    #[arg(long, env = "REF_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Listen address of the product service.
    #[arg(long, env = "REF_PRODUCT_LISTEN", default_value = "127.0.0.1:9101")]
    pub product_listen: SocketAddr,
    /// Listen address of the cart service.
    #[arg(long, env = "REF_CART_LISTEN", default_value = "127.0.0.1:9102")]
    pub cart_listen: SocketAddr,
    /// Listen address of the order service.
    #[arg(long, env = "REF_ORDER_LISTEN", default_value = "127.0.0.1:9103")]
    pub order_listen: SocketAddr,
    /// Seed of the generated data; processes with the same seed serve the same data.
    #[arg(long, env = "REF_SEED", default_value_t = Config::default().seed)]
    pub seed: u64,
    /// Number of products to generate.
    #[arg(long, env = "REF_PRODUCTS", default_value_t = Config::default().products)]
    pub products: usize,
    /// Number of users to generate.
    #[arg(long, env = "REF_USERS", default_value_t = Config::default().users)]
    pub users: usize,
    /// Base latency added to each request, e.g. `20ms`.
    #[arg(long, env = "REF_LATENCY", default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,
    /// Up to this much random extra latency per request, e.g. `5ms`.
    #[arg(long, env = "REF_JITTER", default_value = "0s", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Probability (0 to 1) of answering a request with an injected 503.
    #[arg(long, env = "REF_ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Extra latency of the `slow` fault mode, e.g. `2s`.
    #[arg(long, env = "REF_SLOW_LATENCY", default_value = "2s", value_parser = parse_duration)]
    pub slow_latency: Duration,
    /// `Cache-Control: max-age` of product reads: seconds (`30`) or a duration (`1m`).
    #[arg(long, env = "REF_MAX_AGE", default_value = "30", value_parser = parse_max_age)]
    pub max_age: Duration,
    /// Publish every change (cart writes, orders, admin changes) as CloudEvents on the Redis
    /// Streams of `contracts/events.asyncapi.yaml`, in this Redis (`redis://host:port/db`). Off
    /// by default. A Redis that is down fails no write: its events are dropped and counted.
    /// At most one of this, `--events-redis-cluster-nodes` and `--events-redis-sentinel-master`.
    #[arg(
        long,
        env = "REF_EVENTS_REDIS_URL",
        value_parser = parse_redis_url,
        conflicts_with_all = ["events_redis_cluster_nodes", "events_redis_sentinel_master"]
    )]
    pub events_redis_url: Option<RedisUrl>,
    /// Publish the change events to a Redis Cluster instead: its seed nodes, comma-separated
    /// (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`); the others are learned from them.
    #[arg(
        long,
        env = "REF_EVENTS_REDIS_CLUSTER_NODES",
        value_parser = parse_redis_url,
        value_delimiter = ',',
        num_args = 1..,
        conflicts_with = "events_redis_sentinel_master"
    )]
    pub events_redis_cluster_nodes: Vec<RedisUrl>,
    /// Publish the change events to the master Sentinel monitors under this name instead
    /// (with `--events-redis-sentinels`); a failover is followed.
    #[arg(
        long,
        env = "REF_EVENTS_REDIS_SENTINEL_MASTER",
        requires = "events_redis_sentinels"
    )]
    pub events_redis_sentinel_master: Option<String>,
    /// The sentinels that name that master, comma-separated (`redis://10.0.0.1:26379,...`).
    #[arg(
        long,
        env = "REF_EVENTS_REDIS_SENTINELS",
        value_parser = parse_redis_url,
        value_delimiter = ',',
        num_args = 1..,
        requires = "events_redis_sentinel_master"
    )]
    pub events_redis_sentinels: Vec<RedisUrl>,
    /// The streams' prefix: events go to `<prefix>catalog`, `<prefix>cart`, `<prefix>order`.
    #[arg(long, env = "REF_EVENTS_STREAM_PREFIX", default_value = events::DEFAULT_STREAM_PREFIX)]
    pub events_stream_prefix: String,
    /// Fulfilment clock, for demos: every this often (e.g. `30s`), move each order that is not
    /// delivered or cancelled one step along (pending → confirmed → shipped → delivered).
    #[arg(long, env = "REF_ADVANCE_ORDERS_EVERY", value_parser = parse_period)]
    pub advance_orders_every: Option<Duration>,
}

/// Parses a humantime duration (`250ms`, `2s`, `1m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|error| error.to_string())
}

/// Parses `max-age`: whole seconds, or a humantime duration.
fn parse_max_age(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text),
    }
}

/// Parses a period of the fulfilment clock: a humantime duration above zero.
fn parse_period(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        period if period.is_zero() => Err("expected a duration above zero, e.g. 30s".to_owned()),
        period => Ok(period),
    }
}

/// Parses a Redis URL, refusing at start one the Redis client would not accept (the message
/// does not repeat the URL, which may hold a password).
fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    redis::Client::open(text)
        .map(|_| RedisUrl::new(text))
        .map_err(|_| "expected a Redis URL such as redis://127.0.0.1:6379/0".to_owned())
}

/// Parses an error rate from 0 to 1.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err("expected a number from 0 to 1".to_owned()),
    }
}

impl Cli {
    /// The world's config these flags describe.
    pub fn config(&self) -> Config {
        Config {
            seed: self.seed,
            products: self.products,
            users: self.users,
            max_age: self.max_age,
            latency: self.latency,
            jitter: self.jitter,
            error_rate: self.error_rate,
            slow_latency: self.slow_latency,
            events: self.events_redis().map(|redis| EventsConfig {
                redis,
                stream_prefix: self.events_stream_prefix.clone(),
            }),
            advance_orders_every: self.advance_orders_every,
        }
    }

    /// Where the change events go, if anywhere (clap lets at most one of the three be set).
    fn events_redis(&self) -> Option<EventsRedis> {
        if let Some(url) = &self.events_redis_url {
            Some(EventsRedis::Standalone(url.clone()))
        } else if !self.events_redis_cluster_nodes.is_empty() {
            Some(EventsRedis::Cluster(
                self.events_redis_cluster_nodes.clone(),
            ))
        } else {
            self.events_redis_sentinel_master
                .as_ref()
                .map(|master_name| EventsRedis::Sentinel {
                    master_name: master_name.clone(),
                    sentinels: self.events_redis_sentinels.clone(),
                })
        }
    }

    /// The services to serve and where.
    ///
    /// # Errors
    ///
    /// `--listen` names one address, so it is refused with `--service all`.
    pub fn listeners(&self) -> std::io::Result<Vec<(ServiceKind, SocketAddr)>> {
        let default_of = |kind| match kind {
            ServiceKind::Product => self.product_listen,
            ServiceKind::Cart => self.cart_listen,
            ServiceKind::Order => self.order_listen,
        };
        let one = |kind| vec![(kind, self.listen.unwrap_or_else(|| default_of(kind)))];
        match self.service {
            ServiceChoice::All if self.listen.is_some() => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--listen needs --service product, cart or order; with all three use --product-listen, --cart-listen and --order-listen",
            )),
            ServiceChoice::All => Ok(ServiceKind::ALL
                .into_iter()
                .map(|kind| (kind, default_of(kind)))
                .collect()),
            ServiceChoice::Product => Ok(one(ServiceKind::Product)),
            ServiceChoice::Cart => Ok(one(ServiceKind::Cart)),
            ServiceChoice::Order => Ok(one(ServiceKind::Order)),
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Seeds the world, binds every listener (failing before serving anything if one cannot be bound),
/// prints `product listening on http://127.0.0.1:9101` per listener on stdout, and serves until
/// ctrl-c or SIGTERM.
///
/// # Errors
///
/// Bad flags, a listener that cannot be bound, or a server that fails.
pub async fn run(cli: Cli) -> std::io::Result<()> {
    let plan = cli.listeners()?;
    let config = cli.config();
    let world = World::seeded(&config);
    tracing::info!(
        seed = config.seed,
        products = world.catalog().len(),
        users = world.users().len(),
        "world seeded"
    );
    match &config.events {
        Some(events) => tracing::info!(
            redis = %events.redis,
            streams = %format!("{}{{catalog,cart,order}}", events.stream_prefix),
            "publishing change events"
        ),
        None => tracing::info!(
            "not publishing change events (no --events-redis-url, --events-redis-cluster-nodes or --events-redis-sentinel-master)"
        ),
    }
    if let Some(every) = config.advance_orders_every {
        tracing::info!(
            every = %humantime_serde::re::humantime::format_duration(every),
            "the fulfilment clock moves orders along"
        );
    }
    let mut bound = Vec::with_capacity(plan.len());
    for (kind, address) in plan {
        let listener = TcpListener::bind(address).await.map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot listen on {address} for {kind}: {error}"),
            )
        })?;
        bound.push((kind, listener));
    }
    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    for (kind, listener) in bound {
        println!("{kind} listening on http://{}", listener.local_addr()?);
        let mut stopped = stopped.clone();
        let shutdown = async move {
            // Err means the sender is gone, which only happens once we are stopping anyway.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        servers.spawn(crate::serve(listener, kind, world.clone(), shutdown));
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let mut outcome = Ok(());
    while let Some(finished) = servers.join_next().await {
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(error)) => outcome = Err(error),
            Err(error) => outcome = Err(std::io::Error::other(error)),
        }
    }
    outcome
}

/// Resolves on ctrl-c or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_all_three_on_their_ports() {
        let cli = Cli::parse_from(["reference-services"]);
        let listeners = cli.listeners().unwrap_or_default();
        assert_eq!(
            listeners,
            vec![
                (
                    ServiceKind::Product,
                    "127.0.0.1:9101".parse().unwrap_or(cli.product_listen)
                ),
                (
                    ServiceKind::Cart,
                    "127.0.0.1:9102".parse().unwrap_or(cli.cart_listen)
                ),
                (
                    ServiceKind::Order,
                    "127.0.0.1:9103".parse().unwrap_or(cli.order_listen)
                ),
            ]
        );
        assert_eq!(cli.config(), Config::default());
    }

    #[test]
    fn a_single_service_can_listen_elsewhere() {
        let cli = Cli::parse_from([
            "reference-services",
            "--service",
            "cart",
            "--listen",
            "0.0.0.0:8000",
            "--latency",
            "15ms",
            "--max-age",
            "1m",
        ]);
        assert_eq!(
            cli.listeners().ok(),
            Some(vec![(
                ServiceKind::Cart,
                SocketAddr::from(([0, 0, 0, 0], 8000))
            )])
        );
        assert_eq!(cli.latency, Duration::from_millis(15));
        assert_eq!(cli.max_age, Duration::from_secs(60));
    }

    #[test]
    fn listen_is_refused_with_all_services() {
        let cli = Cli::parse_from(["reference-services", "--listen", "127.0.0.1:1"]);
        assert!(cli.listeners().is_err());
    }

    #[test]
    fn events_and_the_fulfilment_clock_are_off_by_default_and_set_by_flags() {
        let cli = Cli::parse_from(["reference-services"]);
        assert_eq!(cli.config().events, None);
        assert_eq!(cli.config().advance_orders_every, None);
        let cli = Cli::parse_from([
            "reference-services",
            "--events-redis-url",
            "redis://127.0.0.1:6399/0",
            "--events-stream-prefix",
            "demo:",
            "--advance-orders-every",
            "30s",
        ]);
        let config = cli.config();
        assert_eq!(
            config.events,
            Some(EventsConfig {
                redis: EventsRedis::Standalone(RedisUrl::new("redis://127.0.0.1:6399/0")),
                stream_prefix: "demo:".to_owned(),
            })
        );
        assert_eq!(
            config
                .events
                .map(|events| events.stream(ServiceKind::Product)),
            Some("demo:catalog".to_owned())
        );
        assert_eq!(config.advance_orders_every, Some(Duration::from_secs(30)));
        let defaults = Cli::parse_from([
            "reference-services",
            "--events-redis-url",
            "redis://127.0.0.1:6399/0",
        ]);
        assert_eq!(
            defaults.config().events.map(|events| events.stream_prefix),
            Some("bff:events:".to_owned())
        );
    }

    #[test]
    fn events_go_to_a_cluster_or_through_sentinel_and_to_one_redis_only() {
        let cluster = Cli::parse_from([
            "reference-services",
            "--events-redis-cluster-nodes",
            "redis://127.0.0.1:7001,redis://127.0.0.1:7002",
        ]);
        assert_eq!(
            cluster.config().events,
            Some(EventsConfig::cluster([
                "redis://127.0.0.1:7001",
                "redis://127.0.0.1:7002"
            ]))
        );
        let sentinel = Cli::parse_from([
            "reference-services",
            "--events-redis-sentinel-master",
            "main",
            "--events-redis-sentinels",
            "redis://127.0.0.1:26379,redis://127.0.0.1:26380",
        ]);
        assert_eq!(
            sentinel.config().events,
            Some(EventsConfig::sentinel(
                "main",
                ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
            ))
        );
        for refused in [
            &[
                "--events-redis-url",
                "redis://127.0.0.1:1",
                "--events-redis-cluster-nodes",
                "redis://127.0.0.1:2",
            ][..],
            &[
                "--events-redis-cluster-nodes",
                "redis://127.0.0.1:2",
                "--events-redis-sentinel-master",
                "main",
                "--events-redis-sentinels",
                "redis://127.0.0.1:3",
            ],
            &["--events-redis-sentinel-master", "main"],
            &["--events-redis-sentinels", "redis://127.0.0.1:3"],
            &[
                "--events-redis-cluster-nodes",
                "redis://127.0.0.1:2,not a url",
            ],
        ] {
            let args = std::iter::once("reference-services").chain(refused.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn bad_redis_urls_and_clock_periods_are_refused() {
        assert!(
            Cli::try_parse_from(["reference-services", "--events-redis-url", "not a url"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["reference-services", "--advance-orders-every", "0s"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["reference-services", "--advance-orders-every", "soon"]).is_err()
        );
    }

    #[test]
    fn bad_error_rates_are_refused() {
        assert!(Cli::try_parse_from(["reference-services", "--error-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["reference-services", "--error-rate", "0.25"]).is_ok());
    }
}

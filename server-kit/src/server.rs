//! Binding, serving and the gateways' shared entry point.
//!
//! A gateway contributes a [`Gateway`] (its routes and what readiness depends on); [`Server`] adds
//! `/health`, `/ready` and the middleware of [`crate::http`], and serves it on a listener it is
//! given — tests bind port 0 — through [`crate::connection`] (timeouts and connection limits).
//! `/metrics` ([`crate::metrics`]) is served on a second listener of its own
//! (`server.metrics_listen_addr`), and on the clients' listener only with `server.public_metrics`. [`run`] is the whole of a gateway's `main`: arguments → settings →
//! logs and trace export → build → serve until SIGTERM → flush the last spans.

use std::{fmt::Display, future::Future, io, net::SocketAddr, process::ExitCode, sync::Arc};

use axum::Router;
use clap::Parser;
use shared_clients::Downstream;
use tokio::net::TcpListener;

use crate::{
    cli::Args,
    config::{self, GatewayConfig, Layered, ServerConfig, Settings},
    connection::{self, ConnectionLimits},
    health::{self, Readiness, ReadinessProbe},
    http,
    metrics::{self, Metrics},
    shutdown, telemetry,
};

/// What one gateway contributes to its server.
pub struct Gateway {
    /// Names the gateway in every metric series (the `gateway` label).
    pub name: &'static str,
    /// The client-facing routes (everything but `/health`, `/ready` and `/metrics`).
    pub routes: Router,
    /// The dependencies `/ready` may check (see `server.ready_requires_downstream`).
    pub probe: Option<Arc<dyn ReadinessProbe>>,
    /// The downstream clients whose counters `/metrics` exports, if any.
    pub downstream: Option<Downstream>,
    /// Called with the server's metrics when it is assembled (see [`Gateway::on_metrics`]).
    pub metrics_hooks: Vec<MetricsHook>,
}

/// Something of a gateway's that records into the server's metrics, given them once the server
/// exists (a gateway is built before it is served, and its server makes the recorder).
pub type MetricsHook = Box<dyn FnOnce(&Metrics) + Send>;

impl Gateway {
    /// A gateway serving `routes`, whose readiness may depend on `probe`.
    pub fn new(name: &'static str, routes: Router, probe: impl ReadinessProbe) -> Self {
        Self {
            name,
            routes,
            probe: Some(Arc::new(probe)),
            downstream: None,
            metrics_hooks: Vec::new(),
        }
    }

    /// Gives `hook` the server's metrics as soon as the gateway is served, before any request:
    /// what the gateway started at build time (a background engine) can then describe and
    /// show its series from the start.
    #[must_use]
    pub fn on_metrics(mut self, hook: impl FnOnce(&Metrics) + Send + 'static) -> Self {
        self.metrics_hooks.push(Box::new(hook));
        self
    }

    /// A gateway serving `routes` over `downstream`: readiness may depend on its services, and
    /// `/metrics` exports its counters.
    pub fn over(name: &'static str, routes: Router, downstream: Downstream) -> Self {
        Self {
            downstream: Some(downstream.clone()),
            ..Self::new(name, routes, downstream)
        }
    }
}

/// A gateway bound to a listener, ready to serve.
pub struct Server {
    /// The socket clients connect to; created by the caller so tests can use port 0.
    listener: TcpListener,
    /// The complete application: gateway routes, health routes, middleware.
    router: Router,
    /// Flipped to "shutting down" when shutdown starts.
    readiness: Readiness,
    /// This server's metrics (also served at `/metrics`).
    metrics: Metrics,
    /// The listener `/metrics` is served on, given with [`Server::with_metrics_listener`].
    metrics_listener: Option<TcpListener>,
    /// How long in-flight requests may take to finish after shutdown starts.
    grace: std::time::Duration,
    /// What each client connection may do (timeouts, header limits, how many at once).
    limits: ConnectionLimits,
}

impl Server {
    /// Assembles the application for `gateway` on `listener`.
    pub fn new(listener: TcpListener, config: &ServerConfig, gateway: Gateway) -> Self {
        let readiness = Readiness::new(config, gateway.probe);
        let metrics = Metrics::new(gateway.name, gateway.downstream);
        // The series the alert rules read exist from the start, at zero: the requests (through
        // the probes every server serves) and the live refusals (0 where nothing is live).
        for probe in health::PATHS {
            metrics.show_route_from_start(probe);
        }
        crate::live::Refusal::show_from_start(&metrics);
        for hook in gateway.metrics_hooks {
            hook(&metrics);
        }
        // Handlers of long-lived streams find the readiness as an extension, to end their
        // streams when shutdown starts.
        let mut routes = gateway
            .routes
            .layer(axum::Extension(readiness.clone()))
            .merge(health::routes(readiness.clone()));
        if config.public_metrics {
            routes = routes.merge(metrics::routes(metrics.clone()));
        }
        let router = http::apply_with_metrics(routes, config, metrics.clone());
        Self {
            listener,
            router,
            readiness,
            metrics,
            metrics_listener: None,
            grace: config.shutdown_grace,
            limits: ConnectionLimits::from_config(config),
        }
    }

    /// Binds `config.listen_addr`.
    pub async fn bind(config: &ServerConfig) -> io::Result<TcpListener> {
        TcpListener::bind(config.listen_addr).await
    }

    /// Binds `config.metrics_listen_addr`, when set.
    pub async fn bind_metrics(config: &ServerConfig) -> io::Result<Option<TcpListener>> {
        match config.metrics_listen_addr {
            Some(addr) => TcpListener::bind(addr).await.map(Some),
            None => Ok(None),
        }
    }

    /// Serves `/metrics` on `listener` (bound with [`Server::bind_metrics`]). This is where
    /// `/metrics` is served; on the clients' listener too only with `server.public_metrics`.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The address `/metrics` is served on, when it has a listener of its own.
    pub fn metrics_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.metrics_listener.as_ref().map(TcpListener::local_addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// This server's metrics, e.g. for a gateway's own series.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The readiness state, e.g. to mark shutdown from outside.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, marks itself not ready and lets
    /// in-flight requests finish for at most the configured grace period.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let readiness = self.readiness.clone();
        let graceful = async move {
            shutdown.await;
            readiness.mark_shutting_down();
            tracing::info!("shutdown started; draining in-flight requests");
            started_tx.send(()).ok();
        };
        // The metrics listener keeps answering while requests drain, and stops with the server
        // (when `metrics_stop` is dropped, at the end of this function).
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(listener) = self.metrics_listener {
            let metrics = connection::serve(
                listener,
                metrics::routes(self.metrics.clone()),
                self.limits,
                None,
                async move {
                    metrics_stopped.await.ok();
                },
            );
            tokio::spawn(async move {
                if let Err(error) = metrics.await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            });
        }
        let _metrics_stop = metrics_stop;
        // Histogram samples are kept until folded into their buckets: fold them regularly, so
        // memory stays flat whether or not anything scrapes (aborted when serving ends).
        let upkeep = {
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(metrics::UPKEEP_INTERVAL);
                loop {
                    ticks.tick().await;
                    metrics.run_upkeep();
                }
            })
        };
        let _upkeep = AbortOnDrop(upkeep);
        let serving = connection::serve(
            self.listener,
            self.router,
            self.limits,
            Some(self.metrics),
            graceful,
        );
        let grace = self.grace;
        let deadline = async move {
            if started_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serving => result,
            () = deadline => {
                tracing::warn!(?grace, "grace period over; exiting with requests still in flight");
                Ok(())
            }
        }
    }
}

/// The whole `main` of a gateway: parses arguments, loads and validates settings, starts logging
/// (and trace export, when configured, as service `name` unless `telemetry.service_name` says
/// otherwise), builds the gateway with `build`, serves it until SIGTERM or ctrl-c, then sends the
/// last spans.
///
/// Exit codes: 0 after a clean shutdown (or a valid `--check-config`), 2 for a bad configuration,
/// 1 when the gateway cannot be built or the address cannot be bound.
pub fn run<X, E>(
    name: &'static str,
    build: impl FnOnce(&Settings<X>) -> Result<Gateway, E>,
) -> ExitCode
where
    X: GatewayConfig,
    E: Display,
{
    run_servers(name, |settings: &Settings<X>| {
        Ok::<_, E>(vec![Served {
            section: "server",
            server: settings.server.clone(),
            gateway: build(settings)?,
        }])
    })
}

/// One gateway of a process, with the server settings it is served with.
pub struct Served {
    /// Where its server settings are in the configuration (`server`, or `web.server` in
    /// `bff-all`), to name them in errors.
    pub section: &'static str,
    /// Its listener, limits and shutdown.
    pub server: ServerConfig,
    /// The gateway.
    pub gateway: Gateway,
}

/// [`run`] for a process that serves one or more gateways (`bff-all` serves three), each on its
/// own listeners, from one [`Layered`] configuration: they start together and stop together.
pub fn run_servers<T, E>(
    name: &'static str,
    build: impl FnOnce(&T) -> Result<Vec<Served>, E>,
) -> ExitCode
where
    T: Layered,
    E: Display,
{
    let args = Args::parse();
    let settings: T = match config::load_layered(args.config.as_deref(), std::env::vars()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{name}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let warnings = settings.warnings();
    if args.check_config {
        for warning in &warnings {
            eprintln!("{name}: warning: {warning}");
        }
        println!("{name}: configuration is valid");
        return ExitCode::SUCCESS;
    }
    // Kept until the servers have stopped; shutting it down sends the last spans (bounded by
    // `telemetry.otlp_timeout`), on this thread, outside the runtime.
    let telemetry = telemetry::init(settings.telemetry(), name);
    for warning in &warnings {
        tracing::warn!(gateway = name, "{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        // The gateways are built first so that a build error (e.g. a bad downstream URL) is
        // reported even when a port is taken.
        let served = match build(&settings) {
            Ok(served) => served,
            Err(error) => {
                eprintln!("{name}: configuration error: {error}");
                return ExitCode::from(2);
            }
        };
        raise_descriptor_limit(served.iter().map(|s| s.server.max_connections).sum());
        let mut servers = Vec::with_capacity(served.len());
        for Served {
            section,
            server: config,
            gateway,
        } in served
        {
            let label = gateway.name;
            let listener = match Server::bind(&config).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!(
                        "{name}: cannot listen on {} ({section}.listen_addr): {error}",
                        config.listen_addr
                    );
                    return ExitCode::FAILURE;
                }
            };
            let metrics_listener = match Server::bind_metrics(&config).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!(
                        "{name}: cannot listen on {:?} ({section}.metrics_listen_addr): {error}",
                        config.metrics_listen_addr
                    );
                    return ExitCode::FAILURE;
                }
            };
            let mut server = Server::new(listener, &config, gateway);
            if let Some(metrics_listener) = metrics_listener {
                server = server.with_metrics_listener(metrics_listener);
            }
            match server.local_addr() {
                Ok(addr) => tracing::info!(gateway = label, %addr, "listening"),
                Err(error) => tracing::warn!(%error, "cannot read the bound address"),
            }
            if let Some(Ok(addr)) = server.metrics_local_addr() {
                tracing::info!(gateway = label, %addr, "serving /metrics");
            }
            servers.push((label, server));
        }
        // One signal stops every server, and so does the failure of any.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let signalled = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            shutdown::signal().await;
            signalled.send_replace(true);
        });
        let serving = servers.into_iter().map(|(label, server)| {
            let mut stop = stop_rx.clone();
            let stop_tx = Arc::clone(&stop_tx);
            async move {
                let result = server
                    .serve(async move {
                        stop.wait_for(|stopped| *stopped).await.ok();
                    })
                    .await;
                match &result {
                    Ok(()) => tracing::info!(gateway = label, "stopped"),
                    Err(error) => {
                        tracing::error!(gateway = label, %error, "server failed");
                        stop_tx.send_replace(true);
                    }
                }
                result
            }
        });
        let results = futures::future::join_all(serving).await;
        if results.iter().all(Result::is_ok) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    });
    telemetry.shutdown();
    code
}

/// Descriptors the process needs besides its client connections (downstream pools, the metrics
/// listener, logs), for the warning of [`raise_descriptor_limit`].
const SPARE_DESCRIPTORS: u64 = 512;

/// Raises the soft limit on open files to the hard limit, as servers customarily do (the soft
/// default of 1024 is below a busy gateway's needs), and warns when even that leaves too few for
/// `max_connections` client connections plus the process's own.
fn raise_descriptor_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(SPARE_DESCRIPTORS);
    if limit < wanted {
        tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below server.max_connections plus {SPARE_DESCRIPTORS}: \
             connections past it are refused by the kernel; raise `ulimit -n` or lower \
             server.max_connections"
        );
    }
}

/// Aborts a background task when dropped (when [`Server::serve`] returns, however it returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

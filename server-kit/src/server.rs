//! Binding, serving and the gateways' shared entry point.
//!
//! A gateway contributes a [`Gateway`] (its routes and what readiness depends on); [`Server`] adds
//! `/health`, `/ready` and the middleware of [`crate::http`], and serves it on a listener it is
//! given — tests bind port 0. [`run`] is the whole of a gateway's `main`: arguments → settings →
//! logs → build → serve until SIGTERM.

use std::{fmt::Display, future::Future, io, net::SocketAddr, process::ExitCode, sync::Arc};

use axum::Router;
use clap::Parser;
use tokio::net::TcpListener;

use crate::{
    cli::Args,
    config::{self, GatewayConfig, ServerConfig, Settings},
    health::{self, Readiness, ReadinessProbe},
    http, shutdown, telemetry,
};

/// What one gateway contributes to its server.
pub struct Gateway {
    /// The client-facing routes (everything but `/health` and `/ready`).
    pub routes: Router,
    /// The dependencies `/ready` may check (see `server.ready_requires_downstream`).
    pub probe: Option<Arc<dyn ReadinessProbe>>,
}

impl Gateway {
    /// A gateway serving `routes`, whose readiness may depend on `probe`.
    pub fn new(routes: Router, probe: impl ReadinessProbe) -> Self {
        Self {
            routes,
            probe: Some(Arc::new(probe)),
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
    /// How long in-flight requests may take to finish after shutdown starts.
    grace: std::time::Duration,
}

impl Server {
    /// Assembles the application for `gateway` on `listener`.
    pub fn new(listener: TcpListener, config: &ServerConfig, gateway: Gateway) -> Self {
        let readiness = Readiness::new(config, gateway.probe);
        let router = http::apply(
            gateway.routes.merge(health::routes(readiness.clone())),
            config,
        );
        Self {
            listener,
            router,
            readiness,
            grace: config.shutdown_grace,
        }
    }

    /// Binds `config.listen_addr`.
    pub async fn bind(config: &ServerConfig) -> io::Result<TcpListener> {
        TcpListener::bind(config.listen_addr).await
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
        let serving = axum::serve(self.listener, self.router).with_graceful_shutdown(graceful);
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

/// The whole `main` of a gateway: parses arguments, loads and validates settings, starts logging,
/// builds the gateway with `build`, and serves it until SIGTERM or ctrl-c.
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
    let args = Args::parse();
    let settings: Settings<X> = match config::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{name}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{name}: configuration is valid");
        return ExitCode::SUCCESS;
    }
    telemetry::init(&settings.telemetry);
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
    runtime.block_on(async move {
        // The gateway is built first so that a build error (e.g. a bad downstream URL) is reported
        // even when the port is taken.
        let gateway = match build(&settings) {
            Ok(gateway) => gateway,
            Err(error) => {
                eprintln!("{name}: configuration error: {error}");
                return ExitCode::from(2);
            }
        };
        let server_config = &settings.server;
        let listener = match Server::bind(server_config).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "{name}: cannot listen on {} (server.listen_addr / BFF_LISTEN_ADDR): {error}",
                    server_config.listen_addr
                );
                return ExitCode::FAILURE;
            }
        };
        let server = Server::new(listener, server_config, gateway);
        match server.local_addr() {
            Ok(addr) => tracing::info!(gateway = name, %addr, "listening"),
            Err(error) => tracing::warn!(%error, "cannot read the bound address"),
        }
        match server.serve(shutdown::signal()).await {
            Ok(()) => {
                tracing::info!(gateway = name, "stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(gateway = name, %error, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

//! Liveness (`GET /health`) and readiness (`GET /ready`).
//!
//! - `/health` answers 200 whenever the process can serve HTTP at all: restart me if this fails.
//! - `/ready` answers 200 when the gateway should receive traffic, and 503 while it should not:
//!   during shutdown and, when `server.ready_requires_downstream` is on, while a downstream
//!   service's own `/health` does not answer. The downstream checks run concurrently and are cut
//!   off after `server.ready_timeout`, so a slow service never makes the probe hang. Their result
//!   is reused for `server.ready_cache_ttl`, and probes that arrive while a check runs wait for
//!   that one: however many probes arrive (a load balancer per zone, a flood), the downstream
//!   services see at most one check per interval.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::config::ServerConfig;

/// The outcome of checking one dependency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentHealth {
    /// Which dependency, e.g. `product`.
    pub name: String,
    /// Whether it answered its health check in time.
    pub up: bool,
}

/// Something `/ready` asks about the gateway's dependencies.
pub trait ReadinessProbe: Send + Sync + 'static {
    /// Checks the dependencies, concurrently, and reports each: the downstream services when
    /// `services` (`server.ready_requires_downstream`), plus whatever [`ReadinessProbe::requires`]
    /// says is always required.
    fn check(
        &self,
        services: bool,
    ) -> Pin<Box<dyn Future<Output = Vec<ComponentHealth>> + Send + '_>>;

    /// Whether something must be checked even when the downstream services are not
    /// (`shared.redis_required`).
    fn requires(&self) -> bool {
        false
    }
}

/// Shared readiness state of one gateway process. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

struct ReadinessInner {
    /// Set once shutdown starts, so load balancers stop sending new requests while old ones drain.
    shutting_down: AtomicBool,
    /// Turns `true` when shutdown starts, for connections that outlive a request (WebSockets,
    /// event streams) to end themselves.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The dependencies to check, when `/ready` should require them.
    probe: Option<Arc<dyn ReadinessProbe>>,
    /// Whether the downstream services are among them (`ready_requires_downstream`).
    services: bool,
    /// Upper bound on the dependency checks.
    timeout: Duration,
    /// How long a check's result is reused.
    cache_ttl: Duration,
    /// The last check's result and when it finished. Held across the check, so concurrent
    /// probes wait for the one running instead of starting their own.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Vec<ComponentHealth>)>>,
}

impl Readiness {
    /// Readiness per `config`; `probe` is consulted only when `ready_requires_downstream` is on.
    pub fn new(config: &ServerConfig, probe: Option<Arc<dyn ReadinessProbe>>) -> Self {
        Self {
            inner: Arc::new(ReadinessInner {
                shutting_down: AtomicBool::new(false),
                shutdown: tokio::sync::watch::Sender::new(false),
                services: config.ready_requires_downstream,
                probe: probe.filter(|probe| config.ready_requires_downstream || probe.requires()),
                timeout: config.ready_timeout,
                cache_ttl: config.ready_cache_ttl,
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Marks the process as shutting down: `/ready` answers 503 from now on.
    pub fn mark_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
    }

    /// Completes once shutdown has started (at once if it already has): long-lived streams
    /// (WebSockets, server-sent events) await it to close, so their clients reconnect to another
    /// replica while this one drains.
    pub fn shutdown_started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut started = self.inner.shutdown.subscribe();
        async move {
            // An error means the sender is gone, which only happens when the process ends.
            let _ = started.wait_for(|started| *started).await;
        }
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

impl Readiness {
    /// The dependencies' health: the cached result while it is younger than `ready_cache_ttl`,
    /// otherwise a new check (bounded by `ready_timeout`) that concurrent callers share.
    async fn checks(&self, probe: &dyn ReadinessProbe) -> Vec<ComponentHealth> {
        let inner = &self.inner;
        let arrived = tokio::time::Instant::now();
        let mut last = inner.last.lock().await;
        // A result that finished after this probe arrived is as fresh as a check of its own
        // (so probes that queued behind a check share it, even with a zero cache interval).
        if let Some((at, checks)) = last.as_ref()
            && (*at >= arrived || at.elapsed() < inner.cache_ttl)
        {
            return checks.clone();
        }
        let checks = tokio::time::timeout(inner.timeout, probe.check(inner.services))
            .await
            .unwrap_or_default();
        *last = Some((tokio::time::Instant::now(), checks.clone()));
        checks
    }
}

/// The probes' paths: liveness, readiness.
pub const PATHS: [&str; 2] = ["/health", "/ready"];

/// `/health` and `/ready`.
pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route(PATHS[0], get(health))
        .route(PATHS[1], get(ready))
        .with_state(readiness)
}

#[derive(Serialize)]
struct Report {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<ComponentHealth>,
}

async fn health() -> Response {
    no_store(
        StatusCode::OK,
        Report {
            status: "ok",
            checks: Vec::new(),
        },
    )
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    if readiness.is_shutting_down() {
        return no_store(
            StatusCode::SERVICE_UNAVAILABLE,
            Report {
                status: "shutting_down",
                checks: Vec::new(),
            },
        );
    }
    let Some(probe) = &readiness.inner.probe else {
        return no_store(
            StatusCode::OK,
            Report {
                status: "ready",
                checks: Vec::new(),
            },
        );
    };
    let checks = readiness.checks(probe.as_ref()).await;
    let all_up = !checks.is_empty() && checks.iter().all(|check| check.up);
    if all_up {
        no_store(
            StatusCode::OK,
            Report {
                status: "ready",
                checks,
            },
        )
    } else {
        no_store(
            StatusCode::SERVICE_UNAVAILABLE,
            Report {
                status: "not_ready",
                checks,
            },
        )
    }
}

fn no_store(status: StatusCode, report: Report) -> Response {
    let mut response = (status, Json(report)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl ReadinessProbe for shared_clients::Downstream {
    fn check(
        &self,
        services: bool,
    ) -> Pin<Box<dyn Future<Output = Vec<ComponentHealth>> + Send + '_>> {
        Box::pin(async move {
            let report = if services {
                self.check_ready().await
            } else {
                shared_clients::ReadyReport {
                    checks: Vec::new(),
                    redis: self.check_redis().await,
                }
            };
            let mut components: Vec<ComponentHealth> = report
                .checks
                .into_iter()
                .map(|check| ComponentHealth {
                    name: check.service.to_string(),
                    up: check.result.is_ok(),
                })
                .collect();
            // Redis is listed only when `/ready` requires it: without `shared.redis_required`
            // the gateways answer without it, so its absence must not take them out of service.
            if let Some(redis) = report.redis.filter(|redis| redis.required) {
                components.push(ComponentHealth {
                    name: "redis".to_owned(),
                    up: redis.result.is_ok(),
                });
            }
            components
        })
    }

    fn requires(&self) -> bool {
        self.shared().is_required()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Up, counting its checks.
    struct Counting(Arc<AtomicUsize>);

    impl ReadinessProbe for Counting {
        fn check(
            &self,
            _services: bool,
        ) -> Pin<Box<dyn Future<Output = Vec<ComponentHealth>> + Send + '_>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                vec![ComponentHealth {
                    name: "product".into(),
                    up: true,
                }]
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_is_reused_for_the_cache_interval_and_checked_again_after_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = ServerConfig {
            ready_requires_downstream: true,
            ready_cache_ttl: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let probe: Arc<dyn ReadinessProbe> = Arc::new(Counting(Arc::clone(&calls)));
        let readiness = Readiness::new(&config, Some(Arc::clone(&probe)));
        assert!(readiness.checks(probe.as_ref()).await[0].up);
        tokio::time::advance(Duration::from_millis(999)).await;
        readiness.checks(probe.as_ref()).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "reused within the interval"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        readiness.checks(probe.as_ref()).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "checked again after it");
    }
}

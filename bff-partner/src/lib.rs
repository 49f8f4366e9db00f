//! `bff-partner`: the versioned, documented, rate-limited REST gateway for partners.
//!
//! The binary (`main.rs`) only hands [`build`] to [`server_kit::run`]; everything a test needs
//! is here. `/v1` (deprecated) and `/v2` are served side by side from the same downstream data.
//!
//! The skeleton, the same in every gateway:
//! - [`config`]: [`PartnerConfig`], the `[gateway]` section (keys with their
//!   [`Scope`](config::Scope)s, quotas, the failed authentication budget, paging, deprecation,
//!   remembered order creations) and its [`GatewayConfig`](server_kit::GatewayConfig) impl:
//!   default addresses, validation. Plain settings: it uses no other module but [`weak_keys`].
//! - [`state`]: [`AppState`], what every handler and middleware shares.
//! - [`error`]: [`ApiError`](error::ApiError), the documented problem types and their rendering.
//! - [`routes`]: the routers of both versions and the middleware around them; the OpenAPI
//!   document and problem type endpoints.
//!
//! The partner API, by version:
//! - [`handlers`]: the handlers of both versions, written once, generic over a version's
//!   [`Shapes`](handlers::Shapes).
//! - [`v1`], [`v2`]: each version's shapes, its one-line handlers carrying their OpenAPI
//!   descriptions, and its OpenAPI document.
//! - [`openapi`]: what both documents share (problem schema, security, headers, problem table).
//! - [`version`]: [`Version`](version::Version) and the `/v1` deprecation headers.
//!
//! What both versions do:
//! - [`service`]: the operations downstream (listing, pricing and creating orders), as methods
//!   of the app state; the order a partner asks for.
//! - [`params`]: query and path parameters and their validation.
//! - [`extract`]: extractors that reject with problems (JSON bodies, queries, paths, headers).
//! - [`response`]: building the handlers' answers (`Age`, `Link: rel="next"`, `Location`, product
//!   bodies serialized once, `Cache-Control: private, no-store`).
//!
//! Who may call, and how often:
//! - [`access`]: the middleware in front of every API route's handlers: the failed
//!   authentication throttle, the key (401) and its quota (429), with their metrics.
//! - [`auth`]: API keys (`Authorization: Bearer`), configured as SHA-256 hashes ([`hash_key`]),
//!   looked up per request, and the [`Authorized`](auth::Authorized) extractor, which checks a
//!   scope.
//! - [`auth_throttle`]: the budget of failed authentications per client address (429 before the
//!   key is looked at once it is spent).
//! - [`rate_limit`]: per-key token buckets behind the [`RateLimiter`](rate_limit::RateLimiter)
//!   trait and the `RateLimit-Policy` / `RateLimit` headers.
//! - [`weak_keys`]: refusing configured key hashes of well-known or very short keys.
//!
//! Webhooks (`/v2` only, issue #22):
//! - [`webhooks`]: signatures, the SSRF guard, the retry schedule and payloads; the endpoints,
//!   deliveries and due queue in Redis ([`webhooks::store`]); the delivery engine
//!   ([`webhooks::engine`], started by [`build_over`] with Redis, held by the router so dropping
//!   the gateway stops it); the `/v2/webhooks` API ([`webhook_api`]).
//!
//! No module imports one that imports it back (`scripts/module-cycles.py bff-partner/src`).

pub mod access;
pub mod auth;
pub mod auth_throttle;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod openapi;
pub mod params;
pub mod rate_limit;
pub mod response;
pub mod routes;
pub mod service;
pub mod state;
pub mod v1;
pub mod v2;
pub mod version;
pub mod weak_keys;
pub mod webhook_api;
pub mod webhooks;

use server_kit::{Settings, server::Gateway};
use shared_clients::{BuildError, Downstream};

pub use config::PartnerConfig;
pub use config::hash_key;

use crate::state::{AppState, Services};

/// Every setting of `bff-partner`.
pub type PartnerSettings = Settings<PartnerConfig>;

/// Builds the gateway: its downstream clients (built once, shared by every request), keys,
/// quotas and routes.
pub fn build(settings: &PartnerSettings) -> Result<Gateway, BuildError> {
    build_over(
        settings,
        Downstream::new_shared(&settings.downstream, &settings.shared)?,
    )
}

/// The gateway over `downstream` (clients and caches it may share with other gateways in one
/// process), per `settings` (whose `downstream` section is then not read).
pub fn build_over(
    settings: &PartnerSettings,
    downstream: Downstream,
) -> Result<Gateway, BuildError> {
    build_with_resolver(
        settings,
        downstream,
        std::sync::Arc::new(webhooks::ssrf::SystemResolver),
    )
}

/// [`build_over`], looking webhook targets' hosts up with `resolver` for the SSRF checks (at
/// registration and before each delivery): tests make a name resolve as they need.
pub fn build_with_resolver(
    settings: &PartnerSettings,
    downstream: Downstream,
    resolver: std::sync::Arc<dyn webhooks::ssrf::Resolver>,
) -> Result<Gateway, BuildError> {
    let state =
        AppState::new(Services::new(&settings.gateway, downstream.clone()).with_resolver(resolver));
    let router = routes::routes(state.clone());
    let partners: Vec<String> = settings
        .gateway
        .keys
        .iter()
        .map(|key| key.partner_id.as_str().to_owned())
        .collect();
    let show_partners = move |recorder: &server_kit::metrics::Metrics| {
        access::show_from_start(recorder, partners.iter().map(String::as_str));
    };
    if state.webhooks.is_enabled() && settings.gateway.webhooks.enabled {
        let (router, metrics) = with_engine(router, settings, &state, downstream.clone());
        return Ok(Gateway::over("bff-partner", router, downstream)
            .on_metrics(show_partners)
            .on_metrics(move |recorder| metrics.attach(recorder)));
    }
    Ok(Gateway::over("bff-partner", router, downstream).on_metrics(show_partners))
}

/// Starts the webhook delivery engine and ties it to `router`: the router holds it (dropping
/// the gateway stops it). Its metrics are attached to the server's recorder when the gateway
/// is served (the recorder is made then, after the gateway is built; see
/// [`webhooks::metrics`]).
fn with_engine(
    router: axum::Router,
    settings: &PartnerSettings,
    state: &AppState,
    downstream: Downstream,
) -> (
    axum::Router,
    std::sync::Arc<webhooks::metrics::WebhookMetrics>,
) {
    let config = &settings.gateway.webhooks;
    let mut partners: Vec<shared_clients::PartnerId> = settings
        .gateway
        .keys
        .iter()
        .map(|key| key.partner_id.clone())
        .collect();
    partners.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    partners.dedup();
    let engine_settings = webhooks::engine::EngineSettings {
        stream_key: format!("{}order", settings.shared.events_stream_prefix),
        allow_insecure_targets: config.allow_insecure_targets,
        resolve_timeout: config.resolve_timeout,
        resolver: std::sync::Arc::clone(&state.resolver),
        event_claim_idle: config.event_claim_idle,
        schedule: config.schedule.clone(),
        delivery_timeout: config.delivery_timeout,
        delivery_lease: config.delivery_lease,
        max_concurrency_per_endpoint: usize::try_from(config.max_concurrency_per_endpoint)
            .unwrap_or(1),
        response_body_limit: config.response_body_limit,
        partners,
    };
    let shape: webhooks::engine::ShapeOrder =
        std::sync::Arc::new(|order| match serde_json::to_value(v2::Order::from(order)) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        });
    let metrics = std::sync::Arc::new(webhooks::metrics::WebhookMetrics::default());
    let engine = std::sync::Arc::new(webhooks::engine::Engine::start(
        state.webhooks.clone(),
        downstream,
        engine_settings,
        shape,
        std::sync::Arc::clone(&metrics),
    ));
    (router.layer(axum::Extension(engine)), metrics)
}

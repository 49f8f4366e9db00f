//! `bff-web`: the GraphQL gateway for the web app.
//!
//! The binary (`main.rs`) only hands [`build`] to [`server_kit::run`]; everything a test needs
//! is here. The gateway serves one GraphQL endpoint (`/graphql` by default) over the shared
//! downstream clients, plus the shared `/health` and `/ready` (see `server-kit`).
//!
//! Modules (the skeleton every gateway shares first, then this gateway's own):
//! - [`config`]: [`WebConfig`], the `[gateway]` section: endpoint, limits, APQ, CORS, auth,
//!   checkout, and its `impl GatewayConfig`.
//! - [`state`]: [`AppState`], what the endpoint's handlers share (the schema,
//!   the authenticator, APQ, parsed documents, settings), built once.
//! - [`error`]: [`TransportError`](error::TransportError), a request refused before the schema
//!   ran it, and how it is answered; its `//!` says which status is used when (the GraphQL error
//!   codes of executed requests are in `schema::error`).
//! - [`routes`]: [`router`](routes::router), the endpoint at `gateway.path`, GraphiQL's assets
//!   and CORS.
//! - [`graphql`]: the endpoint over HTTP — GET/POST, status codes, authentication, the
//!   downstream context of each request, operation metrics.
//! - [`pipeline`]: what every transport does with a request around the schema (reading it,
//!   APQ and the document limits, error codes, the response body, operation metrics).
//! - [`response_cache`]: whole answers of public queries, kept as bytes, tagged with what they
//!   show and dropped by its changes.
//! - [`live`]: operations over long-lived connections — subscriptions over a WebSocket
//!   (`graphql-transport-ws`) and as server-sent events, their limits, shutdown and token expiry.
//! - [`response`]: the response types (negotiated from `Accept`) and the headers every answer
//!   carries.
//! - [`schema`]: the GraphQL schema (types, resolvers, the per-request product loader, document
//!   limits, error codes). Knows nothing of HTTP.
//! - [`apq`]: automatic persisted queries, known to every replica through Redis when
//!   `shared.redis_url` is set.
//! - [`documents`]: parsed documents kept by their text, so a repeated query is parsed once.
//! - [`graphiql`]: GraphiQL for browsers, served from vendored assets.
//! - [`trusted`]: trusted documents — the manifests' operations, loaded, validated and
//!   reloaded, run by id; in `enforce` mode the only documents that run.
//! - [`cli`]: the binary's command line: serving (the shared flags) or `manifest DIR`.

pub mod apq;
pub mod cli;
pub mod config;
pub mod documents;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod live;
pub mod pipeline;
pub mod response;
pub mod response_cache;
pub mod routes;
pub mod schema;
pub mod state;
pub mod trusted;

use server_kit::{ConfigError, Settings, server::Gateway};
use shared_clients::Downstream;

pub use config::WebConfig;

use crate::state::AppState;

/// Every setting of `bff-web`.
pub type WebSettings = Settings<WebConfig>;

/// The gateway could not be built from its settings (reported once, at start-up).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The downstream clients could not be built (e.g. a bad URL).
    #[error(transparent)]
    Downstream(#[from] shared_clients::BuildError),
    /// The authentication settings are not usable.
    #[error(transparent)]
    Auth(#[from] ConfigError),
    /// A trusted-document manifest cannot be loaded (names the file, the id and why).
    #[error(transparent)]
    TrustedDocuments(#[from] trusted::LoadError),
}

/// Builds the gateway: its downstream clients (built once, shared by every request) and routes.
pub fn build(settings: &WebSettings) -> Result<Gateway, BuildError> {
    build_over(
        settings,
        Downstream::new_shared(&settings.downstream, &settings.shared)?,
    )
}

/// The gateway over `downstream` (clients and caches it may share with other gateways in one
/// process) instead of clients built from `settings.downstream`, per `settings`.
pub fn build_over(settings: &WebSettings, downstream: Downstream) -> Result<Gateway, BuildError> {
    let state = AppState::new(settings, downstream.clone())?;
    // Every series is shown from the start, before the first request (see deploy/prometheus).
    let (trusted, labels) = (
        state.trusted.clone(),
        std::sync::Arc::clone(&state.metric_names),
    );
    Ok(
        Gateway::over("bff-web", routes::router(state), downstream).on_metrics(move |metrics| {
            trusted.attach_metrics(metrics);
            pipeline::show_operations_from_start(metrics, &labels);
        }),
    )
}

//! `bff-web`: the GraphQL gateway for the web app.
//!
//! The binary (`main.rs`) only hands [`build`] to [`server_kit::run`]; everything a test needs
//! is here. The gateway serves one GraphQL endpoint (`/graphql` by default) over the shared
//! downstream clients, plus the shared `/health` and `/ready` (see `server-kit`).
//!
//! Modules:
//! - [`config`]: [`WebConfig`], the `[gateway]` section: endpoint, limits, APQ, CORS, auth,
//!   checkout.
//! - [`schema`]: the GraphQL schema (types, resolvers, the per-request product loader, document
//!   limits, error codes). Knows nothing of HTTP.
//! - [`graphql`]: the endpoint over HTTP — GET/POST, content negotiation, status codes,
//!   authentication, the downstream context of each request.
//! - [`apq`]: automatic persisted queries.
//! - [`documents`]: parsed documents kept by their text, so a repeated query is parsed once.
//! - [`graphiql`]: GraphiQL for browsers, served from vendored assets.

pub mod apq;
pub mod config;
pub mod documents;
pub mod graphiql;
pub mod graphql;
pub mod schema;

use std::sync::Arc;

use axum::Router;
use http::{HeaderName, HeaderValue, Method, header};
use server_kit::{ConfigError, Settings, auth::Authenticator, server::Gateway};
use shared_clients::{Downstream, OrderPlacement};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::WebConfig;

use crate::{
    apq::PersistedQueries,
    documents::ParsedDocuments,
    graphql::Endpoint,
    schema::{PageSizes, SchemaOptions, Services, limits::Limits},
};

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
}

/// Builds the gateway: its downstream clients (built once, shared by every request) and routes.
pub fn build(settings: &WebSettings) -> Result<Gateway, BuildError> {
    build_over(settings, Downstream::new(&settings.downstream)?)
}

/// The gateway over `downstream` (clients and caches it may share with other gateways in one
/// process), per `settings` (whose `downstream` section is then not read).
pub fn build_over(settings: &WebSettings, downstream: Downstream) -> Result<Gateway, BuildError> {
    let routes = routes(settings, downstream.clone())?;
    Ok(Gateway::over("bff-web", routes, downstream))
}

/// The gateway's own routes over `downstream` (what [`build`] serves; tests may call it too).
pub fn routes(settings: &WebSettings, downstream: Downstream) -> Result<Router, BuildError> {
    let config = &settings.gateway;
    let services = Services {
        placement: OrderPlacement::new(downstream.clone(), &config.checkout),
        downstream,
        pages: PageSizes {
            default: config.limits.default_page_size,
            max: config.limits.max_page_size,
        },
        batch_delay: config.batch_delay,
    };
    let limits = Limits {
        max_depth: config.limits.max_depth,
        max_complexity: config.limits.max_complexity,
        max_aliases: config.limits.max_aliases,
        max_root_fields: config.limits.max_root_fields,
        max_expanded_selections: config.limits.max_expanded_selections,
        pages: services.pages,
    };
    let schema = schema::build(
        services.clone(),
        SchemaOptions {
            limits,
            introspection: config.introspection,
        },
    );
    let endpoint = Endpoint {
        schema,
        limits,
        services,
        auth: Authenticator::new(&config.auth)?,
        apq: PersistedQueries::new(config.apq.enabled, config.apq.max_bytes),
        documents: ParsedDocuments::new(config.document_cache_max_bytes),
        graphiql: config.graphiql,
        path: Arc::from(config.path.as_str()),
        deadline: settings.downstream.deadline,
        metric_names: Arc::new(
            config
                .metrics
                .operation_names
                .iter()
                .map(|name| Box::from(name.as_str()))
                .collect(),
        ),
    };
    let router = graphql::routes(endpoint);
    Ok(match cors(config) {
        Some(layer) => router.layer(layer),
        None => router,
    })
}

/// The CORS layer for the configured origins, if any.
fn cors(config: &WebConfig) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = config
        .cors
        .allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(config.cors.max_age),
    )
}

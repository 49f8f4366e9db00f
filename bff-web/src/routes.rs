//! The router: the GraphQL endpoint at `gateway.path` (`GET` and `POST`), the SDL at
//! `<path>/schema.graphql` (404 unless introspection or `gateway.schema_endpoint` is on),
//! GraphiQL's vendored assets under it when `gateway.graphiql` is on, and CORS for
//! `gateway.cors.allowed_origins`.

use std::sync::Arc;

use axum::{Router, routing::get};
use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{config::CorsConfig, graphiql, graphql, state::AppState};

/// The gateway's own routes (what [`crate::build`] serves).
pub fn router(state: AppState) -> Router {
    let path = state.path.to_string();
    let router = Router::new()
        .route(&path, get(graphql::get_graphql).post(graphql::post_graphql))
        .route(&format!("{path}/schema.graphql"), get(graphql::get_sdl));
    let router = if state.graphiql {
        router.route(
            &format!("{}/{{name}}", graphiql::assets_path(&path)),
            get(graphiql::get_asset),
        )
    } else {
        router
    };
    let cors = cors(&state.cors);
    // Shared behind one `Arc`: axum copies the state for every request.
    let router = router.with_state(Arc::new(state));
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// The CORS layer for the configured origins, if any.
fn cors(config: &CorsConfig) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = config
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
            .max_age(config.max_age),
    )
}

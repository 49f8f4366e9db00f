//! The routers of `/v1` and `/v2`: which handler answers which path, and the middleware around
//! them.
//!
//! Each version is one router nested under its prefix. From the outside in:
//! 1. (`/v1` only) the deprecation headers ([`crate::version::announce_deprecation`]);
//! 2. the problem renderer ([`crate::error::render`]): every error of the version, including
//!    unknown paths (its fallback) and axum's bare 405, becomes the version's problem document;
//! 3. on the order and webhook routes only: `Cache-Control: private, no-store` on every answer,
//!    errors included ([`response::private_no_store`]);
//! 4. on the API routes' handlers only (so a method a route does not have is 405 with `Allow`,
//!    key or no key): [`access::authenticate`]: 429 for a client address that sent too many
//!    unknown keys, 401 without a known key, and the key's quota (429), adding
//!    `RateLimit-Policy` and `RateLimit` to the response;
//! 5. per handler, the [`Authorized`](crate::auth::Authorized) extractor (403 without the scope).
//!
//! `/vN/openapi.json` and `/vN/problems/{name}` need no key.

use axum::{
    Router,
    body::Bytes,
    http::{HeaderValue, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use utoipa::OpenApi as _;

use crate::{
    access,
    error::{self, ApiError, PROBLEM_TYPES},
    extract::Path,
    openapi, response,
    state::AppState,
    v1, v2,
    version::{self, Version},
    webhook_api as webhooks,
};

/// Every route of the partner API: `/v1/…` and `/v2/…`.
pub fn routes(state: AppState) -> Router {
    let mut router = Router::new();
    for version in Version::ALL {
        let prefix = format!("/{}", version.as_str());
        router = router
            .nest(&prefix, version_router(&state, version))
            // `nest` does not match `/vN/`: send it to the version's own 404.
            .route_service(
                &format!("{prefix}/"),
                version_router(&state, version).into_service(),
            );
    }
    router
}

/// The router of one version, with its middleware.
fn version_router(state: &AppState, version: Version) -> Router {
    // Around each route's handlers, not around the route: a method the route does not have is
    // answered 405 (with `Allow`) by the route itself, before any key is looked at.
    let authenticated = |handlers: MethodRouter<AppState>| {
        handlers.route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
    };
    let (catalog, orders): (Router<AppState>, Router<AppState>) = match version {
        Version::V1 => (
            Router::new()
                .route("/products", authenticated(get(v1::list_products)))
                .route(
                    "/products/{product_id}",
                    authenticated(get(v1::get_product)),
                )
                .route("/categories", authenticated(get(v1::list_categories))),
            Router::new()
                .route(
                    "/orders",
                    authenticated(get(v1::list_orders).post(v1::create_order)),
                )
                .route("/orders/{order_id}", authenticated(get(v1::get_order))),
        ),
        Version::V2 => (
            Router::new()
                .route("/products", authenticated(get(v2::list_products)))
                .route(
                    "/products/{product_id}",
                    authenticated(get(v2::get_product)),
                )
                .route("/categories", authenticated(get(v2::list_categories))),
            Router::new()
                .route(
                    "/orders",
                    authenticated(get(v2::list_orders).post(v2::create_order)),
                )
                .route("/orders/{order_id}", authenticated(get(v2::get_order))),
        ),
    };
    // A partner's orders are private to it: no cache may keep any answer of an order route,
    // refusals included. Outside the authentication, so its 401 and 429 are marked too; `render`
    // keeps the header when it turns an error into a problem document.
    // Webhooks (v2 only) show secrets and partners' deliveries: as private as orders.
    let orders = match version {
        Version::V1 => orders,
        Version::V2 => orders
            .route(
                "/webhooks",
                authenticated(get(webhooks::list_webhooks).post(webhooks::create_webhook)),
            )
            .route(
                "/webhooks/{webhook_id}",
                authenticated(
                    get(webhooks::get_webhook)
                        .patch(webhooks::update_webhook)
                        .delete(webhooks::delete_webhook),
                ),
            )
            .route(
                "/webhooks/{webhook_id}/rotate-secret",
                authenticated(post(webhooks::rotate_webhook_secret)),
            )
            .route(
                "/webhooks/{webhook_id}/test",
                authenticated(post(webhooks::test_webhook)),
            )
            .route(
                "/webhooks/{webhook_id}/deliveries",
                authenticated(get(webhooks::list_webhook_deliveries)),
            )
            .route(
                "/webhooks/{webhook_id}/deliveries/{delivery_id}",
                authenticated(get(webhooks::get_webhook_delivery)),
            )
            .route(
                "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
                authenticated(post(webhooks::redeliver_webhook_delivery)),
            ),
    };
    let orders = orders.route_layer(middleware::map_response(response::private_no_store));
    let api = catalog.merge(orders);
    let document = Bytes::from(document(version).to_string());
    let router = api
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    document,
                )
            }),
        )
        .route(
            "/problems/{name}",
            get(move |path| problem_type(version, path)),
        )
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state.clone())
        .layer(middleware::map_response(
            move |response: Response| async move { error::render(version, response) },
        ));
    match version {
        Version::V1 => router.layer(middleware::from_fn_with_state(
            state.deprecation.clone(),
            version::announce_deprecation,
        )),
        Version::V2 => router,
    }
}

/// `GET /vN/problems/{name}`: the documentation of one problem type, as JSON.
async fn problem_type(version: Version, Path(name): Path<String>) -> Response {
    match PROBLEM_TYPES.iter().find(|kind| kind.name == name) {
        Some(kind) => axum::Json(serde_json::json!({
            "type": kind.uri(version),
            "status": kind.status,
            "title": kind.title,
            "description": kind.description,
        }))
        .into_response(),
        None => ApiError::NotFound("problem type").into_response(),
    }
}

/// The OpenAPI document of `version`, as served at `/vN/openapi.json`.
fn document(version: Version) -> serde_json::Value {
    let derived = match version {
        Version::V1 => v1::ApiDoc::openapi(),
        Version::V2 => v2::ApiDoc::openapi(),
    };
    openapi::document(version, derived)
}

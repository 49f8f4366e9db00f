//! The router: every mobile route under [`PREFIX`], each naming its screen's handler, and the
//! layers around them.
//!
//! From the outside in: `ETag`/304, the body limit. Answers are compressed by the shared server
//! stack around every gateway (`server_kit::compression`, `server.compression`), outside
//! these layers: a compressed answer carries the screen's tag made weak (`W/"…"`), which
//! `If-None-Match` still matches.
//! Anything else under the prefix is a `route_not_found` problem, a wrong method on a route a
//! `method_not_allowed` one.
//!
//! The routes are listed once, as [`Route`]s (method, path, handler): the router is built from
//! that list and [`endpoints`] reads it, so the tests can hold `/m/v1/openapi.json` against
//! exactly what is served. [`ApiDoc`] lists the same handlers' `#[utoipa::path]` operations:
//! the document `GET /m/v1/openapi.json` serves (completed by `crate::openapi`).
//!
//! The live stream (`/orders/{order_id}/live`, served unless `gateway.subscriptions.enabled` is
//! off) is outside the `ETag` layer, which reads a whole body before answering: an event stream
//! must reach the client event by event (the shared compression never encodes one).

use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    handler::Handler,
    http::{HeaderValue, Method, header},
    routing::{MethodFilter, MethodRouter, on},
};

use utoipa::OpenApi;

use crate::{
    PREFIX, caching,
    error::ApiError,
    openapi::{self, ProblemDoc, ProblemResponse},
    screens::{cart, checkout, home, order, order_live, orders, product, products},
    state::AppState,
};

/// The mobile routes under [`PREFIX`], with revalidation and the body limit.
pub fn router(state: AppState) -> Router {
    let config = state.config();
    let body_limit = DefaultBodyLimit::max(config.max_body_bytes);
    let live = config.subscriptions.enabled;
    let screens = Route::router(screens())
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state.clone())
        .layer(body_limit)
        .layer(axum::middleware::from_fn(caching::revalidate));
    let routes = if live {
        Route::router(streams()).with_state(state).merge(screens)
    } else {
        screens
    };
    Router::new().nest(PREFIX, routes)
}

/// `GET /m/v1/openapi.json`: this document.
#[utoipa::path(
    get, path = "/m/v1/openapi.json", tag = "meta", operation_id = "getOpenApi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)),
)]
#[expect(dead_code, reason = "documentation only; served by `screens()`")]
fn openapi_json() {}

/// The mobile OpenAPI document, as derived from the handlers and types (completed by
/// [`openapi::document`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "Mobile API", version = "1.0.0"),
    paths(
        home::get, products::get, product::get, cart::get, cart::add, cart::set_quantity,
        cart::remove, checkout::post, orders::get, order::get, order_live::get, openapi_json,
    ),
    components(schemas(ProblemDoc), responses(ProblemResponse)),
    tags(
        (name = "catalog", description = "Screens anyone may see: home, product list, product detail"),
        (name = "cart", description = "The signed-in user's cart"),
        (name = "orders", description = "Checkout, the signed-in user's orders, and following one live"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// One route of the mobile API: the method and path template (relative to [`PREFIX`]) it is
/// listed under, and the handler serving it.
struct Route {
    /// The method.
    method: Method,
    /// The path template, e.g. `/products/{product_id}`.
    path: &'static str,
    /// The handler, for `method` only.
    handler: MethodRouter<AppState>,
}

impl Route {
    /// `handler` serving `GET path`.
    fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::new(Method::GET, MethodFilter::GET, path, handler)
    }

    /// `handler` serving `POST path`.
    fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::new(Method::POST, MethodFilter::POST, path, handler)
    }

    /// `handler` serving `PUT path`.
    fn put<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::new(Method::PUT, MethodFilter::PUT, path, handler)
    }

    /// `handler` serving `DELETE path`.
    fn delete<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::new(Method::DELETE, MethodFilter::DELETE, path, handler)
    }

    /// `handler` serving `filter` (the same method as `method`) on `path`.
    fn new<H: Handler<T, AppState>, T: 'static>(
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Self {
        Self {
            method,
            path,
            handler: on(filter, handler),
        }
    }

    /// A router of `routes` (several methods of one path are merged into its route).
    fn router(routes: Vec<Self>) -> Router<AppState> {
        routes
            .into_iter()
            .fold(Router::new(), |router, route| {
                router.route(route.path, route.handler)
            })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    }
}

/// The live streams, relative to [`PREFIX`].
fn streams() -> Vec<Route> {
    vec![Route::get("/orders/{order_id}/live", order_live::get)]
}

/// Every screen's route, relative to [`PREFIX`], and the OpenAPI document's.
fn screens() -> Vec<Route> {
    let document = Bytes::from(openapi::document(ApiDoc::openapi()).to_string());
    vec![
        Route::get("/home", home::get),
        Route::get("/products", products::get),
        Route::get("/products/{product_id}", product::get),
        Route::get("/cart", cart::get),
        Route::post("/cart/items", cart::add),
        Route::put("/cart/items/{product_id}", cart::set_quantity),
        Route::delete("/cart/items/{product_id}", cart::remove),
        Route::post("/checkout", checkout::post),
        Route::get("/orders", orders::get),
        Route::get("/orders/{order_id}", order::get),
        Route::get("/openapi.json", move || async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                document,
            )
        }),
    ]
}

/// Every route the router serves (with `gateway.subscriptions.enabled` on, the live stream
/// too), as method and full path template (`/m/v1/products/{product_id}`): the list the tests
/// hold the OpenAPI document against.
pub fn endpoints(live: bool) -> Vec<(Method, String)> {
    let mut routes = screens();
    if live {
        routes.extend(streams());
    }
    routes
        .into_iter()
        .map(|route| (route.method, format!("{PREFIX}{}", route.path)))
        .collect()
}

//! The router: every mobile route under [`PREFIX`], each naming its screen's handler, and the
//! layers around them.
//!
//! From the outside in: `ETag`/304 (over the bytes actually sent, so each content coding has its
//! own strong tag), compression of responses above `compression_min_bytes`, the body limit.
//! Anything else under the prefix is a `route_not_found` problem, a wrong method on a route a
//! `method_not_allowed` one.
//!
//! The live stream (`/orders/{order_id}/live`, served unless `gateway.subscriptions.enabled` is
//! off) is outside the `ETag` and compression layers: the first reads a whole body before
//! answering and the second buffers, and an event stream must reach the client event by event.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post, put},
};
use tower_http::compression::{CompressionLayer, predicate::SizeAbove};

use crate::{
    PREFIX, caching,
    error::ApiError,
    screens::{cart, checkout, home, order, order_live, orders, product, products},
    state::AppState,
};

/// The mobile routes under [`PREFIX`], with compression, revalidation and the body limit.
pub fn router(state: AppState) -> Router {
    let config = state.config();
    let compression = CompressionLayer::new()
        .gzip(true)
        .br(true)
        .compress_when(SizeAbove::new(config.compression_min_bytes));
    let body_limit = DefaultBodyLimit::max(config.max_body_bytes);
    let live = config.subscriptions.enabled;
    let screens = screens()
        .with_state(state.clone())
        .layer(body_limit)
        .layer(compression)
        .layer(axum::middleware::from_fn(caching::revalidate));
    let routes = if live {
        streams().with_state(state).merge(screens)
    } else {
        screens
    };
    Router::new().nest(PREFIX, routes)
}

/// The live streams, relative to [`PREFIX`]: no fallback of their own (the screens' one answers
/// for both).
fn streams() -> Router<AppState> {
    Router::new()
        .route("/orders/{order_id}/live", get(order_live::get))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// Every screen's route, relative to [`PREFIX`].
fn screens() -> Router<AppState> {
    Router::new()
        .route("/home", get(home::get))
        .route("/products", get(products::get))
        .route("/products/{product_id}", get(product::get))
        .route("/cart", get(cart::get))
        .route("/cart/items", post(cart::add))
        .route(
            "/cart/items/{product_id}",
            put(cart::set_quantity).delete(cart::remove),
        )
        .route("/checkout", post(checkout::post))
        .route("/orders", get(orders::get))
        .route("/orders/{order_id}", get(order::get))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

//! The routers of `/v1` and `/v2`, the authentication and quota middleware, and the response
//! helpers the handlers of both versions share.
//!
//! Each version is one router nested under its prefix. From the outside in:
//! 1. (`/v1` only) the deprecation headers ([`crate::version::announce_deprecation`]);
//! 2. the problem renderer ([`crate::error::render`]): every error of the version, including
//!    unknown paths (its fallback) and axum's bare 405, becomes the version's problem document;
//! 3. on the order routes only: `Cache-Control: private, no-store` on every answer, errors
//!    included ([`private_no_store`]);
//! 4. on the API routes' handlers only (so a method a route does not have is 405 with `Allow`,
//!    key or no key): [`authenticate`]: 429 for a client address that sent too many
//!    unknown keys ([`crate::auth_throttle`], before the key is looked at), 401 without a known
//!    key (counted in `bff_partner_auth_failures_total`, refusals of the former in
//!    `bff_partner_auth_throttled_total`), and the key's quota (429), adding `RateLimit-Policy`
//!    and `RateLimit` to the response, and counting the request per partner id
//!    (`bff_partner_requests_total`, `bff_partner_rate_limited_total`);
//! 5. per handler, the [`Authorized`](crate::auth::Authorized) extractor (403 without the scope).
//!
//! `/vN/openapi.json` and `/vN/problems/{name}` need no key.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use serde::Serialize;
use server_kit::metrics::Metrics;
use shared_clients::{Creation, Product, ProductId, Served};

use crate::{
    error::{self, ApiError, PROBLEM_TYPES},
    extract::Path,
    openapi,
    params::next_page_query,
    rate_limit,
    state::AppState,
    v1, v2,
    version::{self, Version},
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
        handlers.route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
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
    let orders = orders.route_layer(middleware::map_response(private_no_store));
    let api = catalog.merge(orders);
    let document = Bytes::from(openapi::document(version).to_string());
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

/// Counts an authenticated request of `partner` (never per key: partner ids are configured, so
/// the label is bounded), and whether its quota refused it with 429.
fn record(metrics: &Metrics, partner: &str, allowed: bool) {
    let partner = metrics.bounded("partner", partner);
    metrics.record(|| {
        metrics::counter!("bff_partner_requests_total", "partner" => partner.clone()).increment(1);
        if !allowed {
            metrics::counter!("bff_partner_rate_limited_total", "partner" => partner).increment(1);
        }
    });
}

/// Marks a response as private to one partner and not to be stored by any cache.
async fn private_no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// Counts a request with an unknown key (`throttled` false), or one refused because its address
/// sent too many (`throttled` true). No label: addresses are unbounded and keys secret.
fn record_auth_failure(metrics: &Metrics, throttled: bool) {
    metrics.record(|| {
        if throttled {
            metrics::counter!("bff_partner_auth_throttled_total").increment(1);
        } else {
            metrics::counter!("bff_partner_auth_failures_total").increment(1);
        }
    });
}

/// Refuses a client address that sent too many unknown keys (before looking at this request's
/// key), authenticates the key (charging the address for an unknown one), takes a token from
/// the key's bucket, and adds the quota headers.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let client = state.auth_throttle.key(&parts);
    if let Err(retry_after) = state.auth_throttle.check(client) {
        if let Some(metrics) = parts.extensions.get::<Metrics>() {
            record_auth_failure(metrics, true);
        }
        return ApiError::AuthThrottled { retry_after }.into_response();
    }
    let partner = match state.keys.authenticate(&parts) {
        Ok(partner) => partner,
        Err(error) => {
            if matches!(error, ApiError::UnknownKey) {
                state.auth_throttle.charge(client);
                if let Some(metrics) = parts.extensions.get::<Metrics>() {
                    record_auth_failure(metrics, false);
                }
            }
            return error.into_response();
        }
    };
    let quota = partner.rate_limit;
    let decision = state.limiter.acquire(&partner.key_id, quota).await;
    if let Some(metrics) = parts.extensions.get::<Metrics>() {
        record(metrics, partner.id.as_str(), decision.allowed);
    }
    let mut response = if decision.allowed {
        parts.extensions.insert(partner);
        next.run(Request::from_parts(parts, body)).await
    } else {
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    rate_limit::add_headers(response.headers_mut(), quota, &decision);
    response
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

/// A 200 with a JSON body.
pub fn json<T: Serialize>(body: &T) -> Response {
    axum::Json(body).into_response()
}

/// A 200 with a JSON body made from a possibly cached value: `Age` states how many seconds ago
/// the value was fetched when it did not come from the service for this request.
pub fn json_served<V, T: Serialize>(served: &Served<V>, body: &T) -> Response {
    let mut response = json(body);
    with_age(&mut response, served);
    response
}

/// Adds `Age` when `served` did not come from the service for this request.
fn with_age<V>(response: &mut Response, served: &Served<V>) {
    let age = served.age();
    if served.is_stale() || !age.is_zero() {
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
}

/// A product as `version` shapes it: 200 with a JSON body and `Age` as [`json_served`] says.
///
/// The body is serialized once per product value and version, then answered from
/// [`AppState::product_bodies`] for as long as the catalog cache serves that same value.
/// `serialize` shapes and serializes the product, e.g.
/// `|p| serde_json::to_vec(&v2::Product::from(p))`.
pub async fn product_served(
    state: &AppState,
    version: Version,
    id: ProductId,
    product: &Served<Arc<Product>>,
    serialize: impl FnOnce(&Product) -> serde_json::Result<Vec<u8>>,
) -> Result<Response, ApiError> {
    let body = state
        .product_bodies
        .get_or_derive((version, id), product, |product| {
            serialize(product)
                .map(Bytes::from)
                .map_err(|error| ApiError::Internal(error.to_string()))
        })
        .await?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    with_age(&mut response, product);
    Ok(response)
}

/// A page: 200 with a JSON body and, when there is a next page, `Link: <…>; rel="next"` to it.
/// `query` is the request's own (valid) filters, which the next page repeats.
pub fn page<T: Serialize>(
    version: Version,
    resource: &str,
    query: &[(&str, Option<String>)],
    next_cursor: Option<&str>,
    body: &T,
) -> Response {
    let mut response = json(body);
    if let Some(cursor) = next_cursor {
        let link = format!(
            "</{}/{resource}?{}>; rel=\"next\"",
            version.as_str(),
            next_page_query(query, cursor)
        );
        if let Ok(link) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, link);
        }
    }
    response
}

/// The answer to an order creation: 201 with `Location` for a new order, 200 for a replay.
pub fn created<T: Serialize>(
    version: Version,
    creation: Creation,
    order_id: &str,
    body: &T,
) -> Response {
    let mut response = json(body);
    if creation == Creation::Created {
        *response.status_mut() = StatusCode::CREATED;
        let location = format!("/{}/orders/{order_id}", version.as_str());
        if let Ok(location) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    response
}

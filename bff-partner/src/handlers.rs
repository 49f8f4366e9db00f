//! The handlers of both versions, written once: each takes the request, runs the operation
//! ([`crate::service`]) and answers in the shapes of the version `V` it is called for
//! ([`Shapes`], implemented by [`v1::V1`](crate::v1::V1) and [`v2::V2`](crate::v2::V2)).
//!
//! What differs between versions is only the shape of products, categories and orders, and the
//! order a version accepts: the flow (which scope, which operation, which status and headers) is
//! here. The scope an operation requires is part of its signature, so a version cannot ask for
//! another one.
//!
//! `v1` and `v2` route to these through one-line handlers of their own: a path's OpenAPI
//! description is an attribute on a function (`#[utoipa::path]`), and each version documents its
//! own paths and schemas.

use axum::{extract::State, response::Response};
use serde::{Serialize, de::DeserializeOwned};
use shared_clients::Creation;

use crate::{
    auth::{Authorized, CatalogRead, OrdersRead, OrdersWrite},
    error::ApiError,
    extract::{Ctx, IdempotencyKeyHeader, Json, Path, Query},
    params::{self, OrderListParams, ProductListParams},
    response::{IfNoneMatch, created, json, json_served, page, product_served},
    service::OrderRequest,
    state::AppState,
    version::Version,
};

/// How one version shapes what every version fetches, and the order it accepts.
pub trait Shapes {
    /// The version: the prefix of the links it sends (`Link`, `Location`) and its share of the
    /// serialized product bodies.
    const VERSION: Version;
    /// A product.
    type Product: Serialize + for<'p> From<&'p shared_clients::Product>;
    /// One page of products.
    type ProductPage: Serialize;
    /// A category.
    type Category: for<'c> From<&'c shared_clients::Category>;
    /// Every category.
    type CategoryList: Serialize;
    /// An order.
    type Order: Serialize + From<shared_clients::Order>;
    /// One page of orders.
    type OrderPage: Serialize;
    /// The body of an order creation.
    type NewOrder: DeserializeOwned + Into<OrderRequest>;

    /// A page of `items`, continued by `next_cursor`.
    fn product_page(items: Vec<Self::Product>, next_cursor: Option<String>) -> Self::ProductPage;
    /// The list of every category.
    fn category_list(items: Vec<Self::Category>) -> Self::CategoryList;
    /// A page of `items`, continued by `next_cursor`.
    fn order_page(items: Vec<Self::Order>, next_cursor: Option<String>) -> Self::OrderPage;
}

/// `GET /vN/products`: one page of products, with `Link: rel="next"` when there is a next one.
pub async fn list_products<V: Shapes>(
    _auth: Authorized<CatalogRead>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Query(params): Query<ProductListParams>,
) -> Result<Response, ApiError> {
    let listed = state.list_products(&ctx, &params).await?;
    let items = listed
        .items
        .iter()
        .map(|product| V::Product::from(product.as_ref()))
        .collect();
    let body = V::product_page(items, listed.next_cursor.clone());
    let query = [
        ("category", params.category.clone()),
        ("limit", params.limit.map(|l| l.to_string())),
    ];
    Ok(page(
        V::VERSION,
        "products",
        &query,
        listed.next_cursor.as_deref(),
        &body,
    ))
}

/// `GET /vN/products/{product_id}`: one product with its `ETag`, and `Age` when it comes from
/// the cache; `304` when `If-None-Match` names the tag.
pub async fn get_product<V: Shapes>(
    _auth: Authorized<CatalogRead>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(product_id): Path<String>,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let id = params::product_id(&product_id)?;
    let product = state.product(&ctx, &id).await?;
    product_served(
        &state.product_bodies,
        V::VERSION,
        id,
        &product,
        &if_none_match,
        |product| serde_json::to_vec(&V::Product::from(product)),
    )
    .await
}

/// `GET /vN/categories`: every category, with `Age` when they come from the cache.
pub async fn list_categories<V: Shapes>(
    _auth: Authorized<CatalogRead>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
) -> Result<Response, ApiError> {
    let categories = state.categories(&ctx).await?;
    let items = categories.iter().map(V::Category::from).collect();
    Ok(json_served(&categories, &V::category_list(items)))
}

/// `POST /vN/orders`: 201 with `Location` for a new order, 200 for a retry with the same
/// `Idempotency-Key` (the order created then).
pub async fn create_order<V: Shapes>(
    auth: Authorized<OrdersWrite>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Json(order): Json<V::NewOrder>,
) -> Result<Response, ApiError> {
    let done = state
        .create_order(&ctx, &auth.partner, &key, order.into())
        .await?;
    let creation = if done.created {
        Creation::Created
    } else {
        Creation::Replayed
    };
    let order_id = done.order.id.to_string();
    let order = V::Order::from(done.order);
    Ok(created(V::VERSION, creation, &order_id, &order))
}

/// `GET /vN/orders`: one page of the partner's orders, with `Link: rel="next"` when there is a
/// next one.
pub async fn list_orders<V: Shapes>(
    auth: Authorized<OrdersRead>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Query(params): Query<OrderListParams>,
) -> Result<Response, ApiError> {
    let listed = state.list_orders(&ctx, &auth.partner, &params).await?;
    let items = listed.items.into_iter().map(V::Order::from).collect();
    let body = V::order_page(items, listed.next_cursor.clone());
    let query = [
        ("status", params.status.map(|s| s.as_str().to_owned())),
        ("limit", params.limit.map(|l| l.to_string())),
    ];
    Ok(page(
        V::VERSION,
        "orders",
        &query,
        listed.next_cursor.as_deref(),
        &body,
    ))
}

/// `GET /vN/orders/{order_id}`: one of the partner's orders; another partner's is a 404.
pub async fn get_order<V: Shapes>(
    auth: Authorized<OrdersRead>,
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = params::order_id(&order_id)?;
    let order = state.order(&ctx, &auth.partner, &id).await?;
    Ok(json(&V::Order::from(order)))
}

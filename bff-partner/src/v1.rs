//! `/v1`: the older, simpler shape, deprecated (see [`crate::version`]). Prices are decimal strings
//! in the major unit with a separate currency, availability is a boolean, and there are no
//! images, brand, category or attributes; orders have no line totals or shipping address.
//!
//! The `///` comments of these types and handlers are the descriptions in `/v1/openapi.json`.
//! Each handler is one line: it carries its path's description (`#[utoipa::path]`) and runs the
//! handler both versions share ([`crate::handlers`]) with the `/v1` shapes ([`V1`]).

use axum::{extract::State, response::Response};
use serde::{Deserialize, Serialize};
use shared_clients::UserId;
use utoipa::{OpenApi, ToSchema};

use crate::{
    auth::{Authorized, CatalogRead, OrdersRead, OrdersWrite},
    error::ApiError,
    extract::{Ctx, IdempotencyKeyHeader, Json, Path, Query},
    handlers::{self, Shapes},
    openapi::{ProblemDoc, ProblemResponse},
    params::{OrderListParams, OrderStatus, ProductListParams},
    response::IfNoneMatch,
    service::{NewOrderLine, OrderRequest},
    state::AppState,
    version::Version,
};

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// The product's id, for `GET /v1/products/{product_id}` and order lines.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// The merchant's stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Long description, when there is one.
    pub description: Option<String>,
    /// The price as a decimal string in the currency's major unit, e.g. `"12.99"`.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub price: String,
    /// Three-letter ISO 4217 code of `price`, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Whether the product can be ordered now.
    pub in_stock: bool,
    /// When the product last changed (RFC 3339).
    pub updated_at: String,
}

impl From<&shared_clients::Product> for Product {
    fn from(product: &shared_clients::Product) -> Self {
        Self {
            id: product.id.to_string(),
            sku: product.sku.clone(),
            name: product.name.clone(),
            description: product.description.clone(),
            price: product.price.decimal(),
            currency: product.price.currency.clone(),
            in_stock: product.inventory.available > 0
                && product.inventory.status != shared_clients::InventoryStatus::OutOfStock,
            updated_at: product.updated_at.clone(),
        }
    }
}

/// One page of products, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    /// The products of this page.
    pub items: Vec<Product>,
    /// Pass as `cursor` to get the next page (also in the `Link: rel="next"` header); `null` on
    /// the last page.
    pub next_cursor: Option<String>,
}

/// A catalog category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Category {
    /// The category's id, the `category` filter of `/v1/products`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The enclosing category, `null` for a top-level one.
    pub parent_id: Option<String>,
}

impl From<&shared_clients::Category> for Category {
    fn from(category: &shared_clients::Category) -> Self {
        Self {
            id: category.id.to_string(),
            name: category.name.clone(),
            parent_id: category.parent_id.as_ref().map(ToString::to_string),
        }
    }
}

/// Every category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CategoryList {
    /// The categories, parents before their children.
    pub items: Vec<Category>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: String,
    /// How many.
    pub quantity: u32,
    /// The price of one unit when ordered, a decimal string in the order's `currency`.
    pub unit_price: String,
}

/// An order placed by this partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// The order's id, for `GET /v1/orders/{order_id}`.
    pub id: String,
    /// The partner's own reference for its customer, as given at creation.
    pub customer_reference: String,
    /// Where the order is in its life cycle.
    pub status: OrderStatus,
    /// What was ordered, at which price.
    pub lines: Vec<OrderLine>,
    /// The order's total, a decimal string in `currency`.
    pub total: String,
    /// Three-letter ISO 4217 code of every amount of the order.
    pub currency: String,
    /// When the order was created (RFC 3339).
    pub created_at: String,
}

impl From<shared_clients::Order> for Order {
    fn from(order: shared_clients::Order) -> Self {
        Self {
            id: order.id.to_string(),
            customer_reference: order.user_id.to_string(),
            status: order.status.into(),
            lines: order
                .lines
                .iter()
                .map(|line| OrderLine {
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity,
                    unit_price: line.unit_price.decimal(),
                })
                .collect(),
            total: order.total.decimal(),
            currency: order.total.currency,
            created_at: order.created_at,
        }
    }
}

/// One page of the partner's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// The orders of this page.
    pub items: Vec<Order>,
    /// Pass as `cursor` to get the next page (also in the `Link: rel="next"` header); `null` on
    /// the last page.
    pub next_cursor: Option<String>,
}

/// An order to create.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Your own reference for the customer (1 to 64 characters of A-Z, a-z, 0-9, `_`, `-`).
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub customer_reference: UserId,
    /// 1 to 100 lines, each product on one line only, all priced in one currency.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<NewOrderLine>,
}

impl From<NewOrder> for OrderRequest {
    fn from(order: NewOrder) -> Self {
        Self {
            customer_reference: order.customer_reference,
            lines: order.lines,
            shipping_address: None,
        }
    }
}

/// The `/v1` shapes, for the handlers both versions share ([`handlers`]).
#[derive(Debug)]
pub struct V1;

impl Shapes for V1 {
    const VERSION: Version = Version::V1;
    type Product = Product;
    type ProductPage = ProductPage;
    type Category = Category;
    type CategoryList = CategoryList;
    type Order = Order;
    type OrderPage = OrderPage;
    type NewOrder = NewOrder;

    fn product_page(items: Vec<Product>, next_cursor: Option<String>) -> ProductPage {
        ProductPage { items, next_cursor }
    }

    fn category_list(items: Vec<Category>) -> CategoryList {
        CategoryList { items }
    }

    fn order_page(items: Vec<Order>, next_cursor: Option<String>) -> OrderPage {
        OrderPage { items, next_cursor }
    }
}

/// List products, newest first, optionally of one category.
#[utoipa::path(
    get, path = "/v1/products", tag = "products", operation_id = "listProducts",
    params(ProductListParams),
    security(("api_key" = ["catalog:read"])),
    responses(
        (status = 200, description = "One page of products", body = ProductPage, headers(
            ("Link" = String, description = "`<…?cursor=…>; rel=\"next\"` when there is a next page"))),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn list_products(
    auth: Authorized<CatalogRead>,
    state: State<AppState>,
    ctx: Ctx,
    query: Query<ProductListParams>,
) -> Result<Response, ApiError> {
    handlers::list_products::<V1>(auth, state, ctx, query).await
}

/// Get one product.
#[utoipa::path(
    get, path = "/v1/products/{product_id}", tag = "products", operation_id = "getProduct",
    params(
        ("product_id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` received for this product: `304` without a body while the product is the same"),
    ),
    security(("api_key" = ["catalog:read"])),
    responses(
        (status = 200, description = "The product", body = Product, headers(
            ("ETag" = String, description = "Entity tag of the body (weak, `W/\"…\"`, when the answer is compressed); send it back in `If-None-Match` to revalidate"),
            ("Age" = u64, description = "Present when the product comes from the gateway's cache: how many seconds ago it was fetched"))),
        (status = 304, description = "Not modified: `If-None-Match` names the product's current `ETag`", headers(
            ("ETag" = String, description = "The entity tag named"))),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn get_product(
    auth: Authorized<CatalogRead>,
    state: State<AppState>,
    ctx: Ctx,
    path: Path<String>,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    handlers::get_product::<V1>(auth, state, ctx, path, if_none_match).await
}

/// List every category.
#[utoipa::path(
    get, path = "/v1/categories", tag = "categories", operation_id = "listCategories",
    security(("api_key" = ["catalog:read"])),
    responses(
        (status = 200, description = "Every category", body = CategoryList, headers(
            ("Age" = u64, description = "Present when the list comes from the gateway's cache: how many seconds ago it was fetched"))),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn list_categories(
    auth: Authorized<CatalogRead>,
    state: State<AppState>,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    handlers::list_categories::<V1>(auth, state, ctx).await
}

/// Create an order, priced from the catalog.
///
/// Safe to retry with the same `Idempotency-Key`: a retry answers 200 with the order created
/// first, never a second order. Unknown or unavailable products, and lines in more than one
/// currency, are refused with 422 before anything is created.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders", operation_id = "createOrder",
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, e.g. a UUID; reuse it to retry the same order", pattern = "^[!-~]{1,255}$")),
    request_body = NewOrder,
    security(("api_key" = ["orders:write"])),
    responses(
        (status = 201, description = "Order created", body = Order, headers(("Location" = String, description = "The new order's path"))),
        (status = 200, description = "Retry of an earlier request with the same Idempotency-Key: the order created then", body = Order),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 413, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 422, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn create_order(
    auth: Authorized<OrdersWrite>,
    state: State<AppState>,
    ctx: Ctx,
    key: IdempotencyKeyHeader,
    body: Json<NewOrder>,
) -> Result<Response, ApiError> {
    handlers::create_order::<V1>(auth, state, ctx, key, body).await
}

/// List your orders, newest first, optionally in one status.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders", operation_id = "listOrders",
    params(OrderListParams),
    security(("api_key" = ["orders:read"])),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage, headers(
            ("Link" = String, description = "`<…?cursor=…>; rel=\"next\"` when there is a next page"))),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn list_orders(
    auth: Authorized<OrdersRead>,
    state: State<AppState>,
    ctx: Ctx,
    query: Query<OrderListParams>,
) -> Result<Response, ApiError> {
    handlers::list_orders::<V1>(auth, state, ctx, query).await
}

/// Get one of your orders.
///
/// Another partner's order is a 404, like one that does not exist.
#[utoipa::path(
    get, path = "/v1/orders/{order_id}", tag = "orders", operation_id = "getOrder",
    params(("order_id" = String, Path, description = "The order's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = ["orders:read"])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn get_order(
    auth: Authorized<OrdersRead>,
    state: State<AppState>,
    ctx: Ctx,
    path: Path<String>,
) -> Result<Response, ApiError> {
    handlers::get_order::<V1>(auth, state, ctx, path).await
}

/// The `/v1` OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Partner API", version = "1.0.0"),
    paths(list_products, get_product, list_categories, create_order, list_orders, get_order),
    components(schemas(ProblemDoc), responses(ProblemResponse)),
    tags(
        (name = "products", description = "The catalog"),
        (name = "categories", description = "Catalog categories"),
        (name = "orders", description = "Your orders"),
    )
)]
pub struct ApiDoc;

//! `/v2`: the current shape. Money as an object of minor units and currency, availability with a
//! quantity, images, brand, category and attributes; orders with line totals and the shipping
//! address.
//!
//! The `///` comments of these types and handlers are the descriptions in `/v2/openapi.json`.
//! Each handler is one line: it carries its path's description (`#[utoipa::path]`) and runs the
//! handler both versions share ([`crate::handlers`]) with the `/v2` shapes ([`V2`]).

use std::collections::BTreeMap;

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
    webhook_api as webhooks,
};

/// An amount of money: integer minor units (cents for EUR) and an ISO 4217 currency, never a
/// float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// The amount in the currency's minor unit, e.g. `1299` for 12.99 EUR.
    pub amount_minor: i64,
    /// Three-letter ISO 4217 code, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl From<&shared_clients::Money> for Money {
    fn from(money: &shared_clients::Money) -> Self {
        Self {
            amount_minor: money.amount_minor,
            currency: money.currency.clone(),
        }
    }
}

/// How available a product is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AvailabilityStatus {
    /// Plenty available.
    InStock,
    /// Only a few left.
    LowStock,
    /// None available: orders for it are refused.
    OutOfStock,
}

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    /// A summary of `quantity`.
    pub status: AvailabilityStatus,
    /// Units available to order right now.
    pub quantity: u64,
}

/// One rendition of a product picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// Where the picture is served from.
    pub url: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Alternative text.
    pub alt: Option<String>,
}

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// The product's id, for `GET /v2/products/{product_id}` and order lines.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// The merchant's stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Long description, when there is one.
    pub description: Option<String>,
    /// Brand, when known.
    pub brand: Option<String>,
    /// The category the product is listed under, when it has one.
    pub category_id: Option<String>,
    /// The price an order pays now.
    pub price: Money,
    /// The undiscounted price, only when the product is on sale.
    pub list_price: Option<Money>,
    /// Stock.
    pub availability: Availability,
    /// Renditions of the product's pictures, largest first.
    pub images: Vec<Image>,
    /// Free-form attributes (colour, size, …).
    pub attributes: BTreeMap<String, String>,
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
            brand: product.brand.clone(),
            category_id: product.category_id.as_ref().map(ToString::to_string),
            price: Money::from(&product.price),
            list_price: product.list_price.as_ref().map(Money::from),
            availability: Availability {
                status: match product.inventory.status {
                    shared_clients::InventoryStatus::InStock => AvailabilityStatus::InStock,
                    shared_clients::InventoryStatus::LowStock => AvailabilityStatus::LowStock,
                    shared_clients::InventoryStatus::OutOfStock => AvailabilityStatus::OutOfStock,
                },
                quantity: product.inventory.available,
            },
            images: product
                .images
                .iter()
                .map(|image| Image {
                    url: image.url.clone(),
                    width: image.width,
                    height: image.height,
                    alt: image.alt.clone(),
                })
                .collect(),
            attributes: product.attributes.clone(),
            updated_at: product.updated_at.clone(),
        }
    }
}

/// One page of products, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// The category's id, the `category` filter of `/v2/products`.
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

/// A shipping address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient name.
    pub name: Option<String>,
    /// Street and number.
    pub line1: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// ISO 3166 alpha-2 country code, e.g. `DE`.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
}

impl From<Address> for shared_clients::Address {
    fn from(address: Address) -> Self {
        Self {
            name: address.name,
            line1: address.line1,
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

impl From<shared_clients::Address> for Address {
    fn from(address: shared_clients::Address) -> Self {
        Self {
            name: address.name,
            line1: address.line1,
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: String,
    /// How many.
    pub quantity: u32,
    /// The price of one unit when ordered.
    pub unit_price: Money,
    /// `unit_price` times `quantity`.
    pub line_total: Money,
}

/// An order placed by this partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// The order's id, for `GET /v2/orders/{order_id}`.
    pub id: String,
    /// The partner's own reference for its customer, as given at creation.
    pub customer_reference: String,
    /// Where the order is in its life cycle.
    pub status: OrderStatus,
    /// What was ordered, at which price.
    pub lines: Vec<OrderLine>,
    /// The sum of the line totals.
    pub total: Money,
    /// Where to ship, when given.
    pub shipping_address: Option<Address>,
    /// When the order was created (RFC 3339).
    pub created_at: String,
    /// When the order last changed status (RFC 3339), `null` if it never did.
    pub updated_at: Option<String>,
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
                    unit_price: Money::from(&line.unit_price),
                    line_total: Money {
                        amount_minor: line
                            .unit_price
                            .amount_minor
                            .saturating_mul(i64::from(line.quantity)),
                        currency: line.unit_price.currency.clone(),
                    },
                })
                .collect(),
            total: Money::from(&order.total),
            shipping_address: order.shipping_address.map(Address::from),
            created_at: order.created_at,
            updated_at: order.updated_at,
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
    /// Where to ship.
    #[serde(default)]
    pub shipping_address: Option<Address>,
}

impl From<NewOrder> for OrderRequest {
    fn from(order: NewOrder) -> Self {
        Self {
            customer_reference: order.customer_reference,
            lines: order.lines,
            shipping_address: order.shipping_address.map(Into::into),
        }
    }
}

/// The `/v2` shapes, for the handlers both versions share ([`handlers`]).
#[derive(Debug)]
pub struct V2;

impl Shapes for V2 {
    const VERSION: Version = Version::V2;
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
    get, path = "/v2/products", tag = "products", operation_id = "listProducts",
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
    handlers::list_products::<V2>(auth, state, ctx, query).await
}

/// Get one product.
#[utoipa::path(
    get, path = "/v2/products/{product_id}", tag = "products", operation_id = "getProduct",
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
    handlers::get_product::<V2>(auth, state, ctx, path, if_none_match).await
}

/// List every category.
#[utoipa::path(
    get, path = "/v2/categories", tag = "categories", operation_id = "listCategories",
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
    handlers::list_categories::<V2>(auth, state, ctx).await
}

/// Create an order, priced from the catalog.
///
/// Safe to retry with the same `Idempotency-Key`: a retry answers 200 with the order created
/// first, never a second order. Unknown or unavailable products, and lines in more than one
/// currency, are refused with 422 before anything is created.
#[utoipa::path(
    post, path = "/v2/orders", tag = "orders", operation_id = "createOrder",
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
    handlers::create_order::<V2>(auth, state, ctx, key, body).await
}

/// List your orders, newest first, optionally in one status.
#[utoipa::path(
    get, path = "/v2/orders", tag = "orders", operation_id = "listOrders",
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
    handlers::list_orders::<V2>(auth, state, ctx, query).await
}

/// Get one of your orders.
///
/// Another partner's order is a 404, like one that does not exist.
#[utoipa::path(
    get, path = "/v2/orders/{order_id}", tag = "orders", operation_id = "getOrder",
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
    handlers::get_order::<V2>(auth, state, ctx, path).await
}

/// The `/v2` OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Partner API", version = "2.0.0"),
    paths(
        list_products, get_product, list_categories, create_order, list_orders, get_order,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::update_webhook, webhooks::delete_webhook, webhooks::rotate_webhook_secret,
        webhooks::list_webhook_deliveries, webhooks::get_webhook_delivery,
        webhooks::redeliver_webhook_delivery, webhooks::test_webhook,
    ),
    components(schemas(ProblemDoc), responses(ProblemResponse)),
    tags(
        (name = "products", description = "The catalog"),
        (name = "categories", description = "Catalog categories"),
        (name = "orders", description = "Your orders"),
        (name = "webhooks", description = "Endpoints your order events are sent to (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`), and their deliveries. Needs the `webhooks:manage` scope."),
    )
)]
pub struct ApiDoc;

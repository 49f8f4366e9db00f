//! `GET /m/v1/orders/{order_id}`: the order detail screen — lines with names and thumbnails,
//! total, status, shipping address. Also the order shaping the checkout confirmation reuses.
//!
//! The order is essential; product names and images are not (`degraded: ["products"]`).
//! [`load`] builds the screen, for this handler and for the live stream of the same screen
//! (`order_live`).

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::Serialize;
use shared_clients::{
    Address, ClientError, Order, OrderId, OrderStatus, Owner, ProductId, RequestContext,
};
use utoipa::ToSchema;

use super::{
    LinesPart,
    card::{Lookup, products_by_id},
};
use crate::{
    Screen,
    error::{ApiError, Missing},
    extract::{Ctx, IdParam, ImageHint, User},
    image,
    money::Currency,
    openapi::{OrderStatusDoc, ProblemResponse},
    state::AppState,
};

/// The order detail screen (and, flattened, the body of the checkout confirmation).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    /// The currency of every price on the screen, stated once.
    pub currency: String,
    /// The order's id, shown as the order number.
    #[schema(value_type = String)]
    pub id: OrderId,
    /// Machine-readable status, for the app's icon.
    #[schema(value_type = OrderStatusDoc)]
    pub status: OrderStatus,
    /// The status, ready to show.
    pub status_text: &'static str,
    /// The day it was placed (`YYYY-MM-DD`).
    pub date: String,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Items ordered (the sum of the quantities).
    pub count: u32,
    /// The order total, in minor units.
    pub total: i64,
    /// The total, ready to show.
    pub total_text: String,
    /// The shipping address on one line, when the order has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_to: Option<String>,
    /// Parts that could not be loaded (`products`); absent when nothing is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<LinesPart>,
    /// Parts shown from an older copy because the service failed (`products`); absent when
    /// nothing is old.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<LinesPart>,
}

/// One order line, at the price it was ordered at.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLine {
    /// The product, to open it.
    #[schema(value_type = String)]
    id: ProductId,
    /// How many.
    qty: u32,
    /// The product's name (absent when products could not be loaded or it no longer exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// One thumbnail.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    /// Unit price paid, in minor units.
    price: i64,
    /// The unit price, ready to show.
    price_text: String,
    /// Unit price × quantity.
    total: i64,
    /// The line total, ready to show.
    total_text: String,
}

/// One of the signed-in user's orders: lines with names and thumbnails, total, status,
/// shipping address. Another user's order is a 404, like one that does not exist.
#[utoipa::path(
    get, path = "/m/v1/orders/{order_id}", tag = "orders", operation_id = "getOrder",
    params(
        ("order_id" = String, Path, description = "The order's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ImageHint,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order screen", body = OrderDetail),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    IdParam(order_id): IdParam<OrderId>,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let image_px = hint.target(state.config().images.thumbnail);
    let screen = load(&state, &ctx, &Owner::User(user), &order_id, image_px).await?;
    Ok(Screen::private(screen)
        .vary("DPR")
        .vary("Width")
        .into_response())
}

/// Reads `owner`'s order `order_id` through the cached clients and shapes its screen, with
/// thumbnails `image_px` wide: the one way the order screen is built, for `GET` and for every
/// value of its live stream (`super::order_live`). An order that does not exist or is not
/// `owner`'s is `order_not_found`.
pub(crate) async fn load(
    state: &AppState,
    ctx: &RequestContext,
    owner: &Owner,
    order_id: &OrderId,
    image_px: u32,
) -> Result<OrderDetail, ApiError> {
    let order = state
        .downstream()
        .orders()
        .get(ctx, owner, order_id)
        .await
        .map_err(|error| ApiError::from_read(error, Missing::Order))?;
    let ids: Vec<ProductId> = order
        .lines
        .iter()
        .map(|line| line.product_id.clone())
        .collect();
    let products = products_by_id(state.downstream(), ctx, &ids).await;
    Ok(shape(&order, products, image_px))
}

/// Shapes an order; `products` failed means lines without names and images.
pub fn shape(order: &Order, products: Result<Lookup, ClientError>, image_px: u32) -> OrderDetail {
    let mut degraded = Vec::new();
    let Lookup { products, stale } = products.unwrap_or_else(|error| {
        tracing::warn!(%error, "order shown without product details");
        degraded.push(LinesPart::Products);
        Lookup::default()
    });
    let stale = if stale {
        vec![LinesPart::Products]
    } else {
        Vec::new()
    };
    // An order is in one currency (the order service refuses mixed ones).
    let mut currency = Currency::new();
    currency.own(&order.total);
    let lines = order
        .lines
        .iter()
        .map(|line| {
            let product = products.get(&line.product_id);
            let total = line.unit_price.times(line.quantity);
            OrderLine {
                id: line.product_id.clone(),
                qty: line.quantity,
                name: product.map(|product| product.name.clone()),
                image: product.and_then(|product| image::best_fit(&product.images, image_px)),
                price: line.unit_price.amount_minor,
                price_text: line.unit_price.display(),
                total: total.amount_minor,
                total_text: total.display(),
            }
        })
        .collect();
    OrderDetail {
        currency: order.total.currency.clone(),
        id: order.id.clone(),
        status: order.status,
        status_text: status_text(order.status),
        date: date(&order.created_at),
        lines,
        count: order.lines.iter().map(|line| line.quantity).sum(),
        total: order.total.amount_minor,
        total_text: order.total.display(),
        ship_to: order.shipping_address.as_ref().and_then(one_line),
        degraded,
        stale,
    }
}

/// An order status, ready to show.
pub fn status_text(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "Pending",
        OrderStatus::Confirmed => "Confirmed",
        OrderStatus::Shipped => "Shipped",
        OrderStatus::Delivered => "Delivered",
        OrderStatus::Cancelled => "Cancelled",
    }
}

/// The day of an RFC 3339 timestamp (`2025-05-31T10:00:00Z` → `2025-05-31`).
pub fn date(timestamp: &str) -> String {
    timestamp.get(..10).unwrap_or(timestamp).to_owned()
}

/// An address on one line: `Jane Doe, 1 Main St, 10115 Berlin, DE`.
fn one_line(address: &Address) -> Option<String> {
    let town = [address.postal_code.as_deref(), address.city.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let parts: Vec<&str> = [
        address.name.as_deref(),
        address.line1.as_deref(),
        Some(town.as_str()),
        address.country.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|part| !part.trim().is_empty())
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

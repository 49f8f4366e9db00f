//! `GET /m/v1/orders?cursor=&limit=`: the signed-in user's orders, newest first, one page at a
//! time.

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::{Deserialize, Serialize};
use shared_clients::{ErrorKind, OrderId, OrderQuery, OrderStatus, Owner};
use utoipa::{IntoParams, ToSchema};

use super::{
    cursor, invalid_cursor,
    order::{date, status_text},
    page_size,
};
use crate::{
    Screen,
    error::ApiError,
    extract::{ApiQuery, Ctx, User},
    money::Currency,
    openapi::{OrderStatusDoc, ProblemResponse},
    state::AppState,
};

/// The query string of the orders list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// The `next` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    cursor: Option<String>,
    /// Page size, 1 to `gateway.max_page_size` (50; default `gateway.default_page_size`, 20).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// One page of the orders list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Orders {
    /// The currency of every total on the page, stated once.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// The orders; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    orders: Vec<OrderRow>,
    /// The cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// One order in the list.
#[derive(Debug, Serialize, ToSchema)]
struct OrderRow {
    /// To open the order detail screen.
    #[schema(value_type = String)]
    id: OrderId,
    /// Machine-readable status, for the app's icon.
    #[schema(value_type = OrderStatusDoc)]
    status: OrderStatus,
    /// The status, ready to show.
    status_text: &'static str,
    /// The day it was placed (`YYYY-MM-DD`).
    date: String,
    /// Items ordered (the sum of the quantities).
    count: u32,
    /// The order total, in minor units.
    total: i64,
    /// The total, ready to show.
    total_text: String,
    /// Only when this total is not in the payload's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
}

/// The signed-in user's orders, newest first, one page at a time.
#[utoipa::path(
    get, path = "/m/v1/orders", tag = "orders", operation_id = "listOrders",
    params(Query),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of orders", body = Orders),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Response, ApiError> {
    let config = state.config();
    let downstream_query = OrderQuery {
        status: None,
        cursor: cursor(query.cursor)?,
        limit: Some(page_size(
            query.limit,
            config.default_page_size,
            config.max_page_size,
        )?),
    };
    let page = state
        .downstream()
        .orders()
        .list(&ctx, &Owner::User(user), &downstream_query)
        .await
        .map_err(|error| match error.kind() {
            ErrorKind::Invalid => invalid_cursor(),
            _ => ApiError::Downstream(error),
        })?;
    let mut currency = Currency::new();
    let orders = page
        .items
        .iter()
        .map(|order| OrderRow {
            id: order.id.clone(),
            status: order.status,
            status_text: status_text(order.status),
            date: date(&order.created_at),
            count: order.lines.iter().map(|line| line.quantity).sum(),
            total: order.total.amount_minor,
            total_text: order.total.display(),
            currency: currency.own(&order.total),
        })
        .collect();
    let orders = Orders {
        currency: currency.into_code(),
        orders,
        next: page.next_cursor,
    };
    Ok(Screen::private(orders).into_response())
}

//! Query and path parameters shared by both versions, and their validation.
//!
//! Unknown query parameters are refused (a misspelt filter would otherwise silently list
//! everything). Ids must match `^[A-Za-z0-9_-]{1,64}$`, cursors `^[A-Za-z0-9_-]{1,200}$` (they are
//! opaque: pass back `next_cursor` unchanged), and `limit` is 1 to `gateway.paging.max_limit`.

use serde::{Deserialize, Serialize};
use shared_clients::{CategoryId, OrderId, OrderQuery, ProductId, ProductQuery};
use utoipa::{IntoParams, ToSchema};

use crate::{config::PagingConfig, error::ApiError};

/// Longest cursor accepted (the downstream contract's limit).
const MAX_CURSOR_LEN: usize = 200;

/// `GET /vN/products`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductListParams {
    /// Only products of this category (an `id` from `/categories`).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub category: Option<String>,
    /// Continue a listing: the `next_cursor` of the previous page, unchanged. Only valid with the
    /// same filters.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to the configured maximum (100 by default); 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl ProductListParams {
    /// The downstream query, or a 400 naming the bad parameter.
    pub fn to_query(&self, paging: &PagingConfig) -> Result<ProductQuery, ApiError> {
        let category = self
            .category
            .as_deref()
            .map(|category| {
                CategoryId::parse(category).map_err(|_| {
                    ApiError::InvalidRequest(
                        "`category` must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`".into(),
                    )
                })
            })
            .transpose()?;
        Ok(ProductQuery {
            category,
            q: None,
            cursor: check_cursor(self.cursor.as_deref())?,
            limit: Some(check_limit(self.limit, paging)?),
        })
    }
}

/// An order's status, as a filter and in order views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Received, not yet confirmed.
    Pending,
    /// Accepted for fulfilment.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Arrived.
    Delivered,
    /// Will not be fulfilled.
    Cancelled,
}

impl OrderStatus {
    /// The status as the `status` filter spells it, e.g. `pending` (the downstream contract's
    /// spelling, which `serde` renames match).
    pub fn as_str(self) -> &'static str {
        shared_clients::OrderStatus::from(self).as_str()
    }
}

impl From<OrderStatus> for shared_clients::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<shared_clients::OrderStatus> for OrderStatus {
    fn from(status: shared_clients::OrderStatus) -> Self {
        match status {
            shared_clients::OrderStatus::Pending => Self::Pending,
            shared_clients::OrderStatus::Confirmed => Self::Confirmed,
            shared_clients::OrderStatus::Shipped => Self::Shipped,
            shared_clients::OrderStatus::Delivered => Self::Delivered,
            shared_clients::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// `GET /vN/orders`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Continue a listing: the `next_cursor` of the previous page, unchanged. Only valid with the
    /// same filters.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to the configured maximum (100 by default); 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl OrderListParams {
    /// The downstream query, or a 400 naming the bad parameter.
    pub fn to_query(&self, paging: &PagingConfig) -> Result<OrderQuery, ApiError> {
        Ok(OrderQuery {
            status: self.status.map(Into::into),
            cursor: check_cursor(self.cursor.as_deref())?,
            limit: Some(check_limit(self.limit, paging)?),
        })
    }
}

/// A product id from a path, or a 400.
pub fn product_id(raw: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(raw).map_err(|_| {
        ApiError::InvalidRequest(
            "the product id must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`".into(),
        )
    })
}

/// An order id from a path, or a 400.
pub fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|_| {
        ApiError::InvalidRequest(
            "the order id must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`".into(),
        )
    })
}

fn check_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    match cursor {
        None => Ok(None),
        Some(cursor)
            if (1..=MAX_CURSOR_LEN).contains(&cursor.len())
                && cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(Some(cursor.to_owned()))
        }
        Some(_) => Err(ApiError::InvalidRequest(
            "`cursor` must be a `next_cursor` from a previous page, unchanged".into(),
        )),
    }
}

fn check_limit(limit: Option<u32>, paging: &PagingConfig) -> Result<u32, ApiError> {
    match limit {
        None => Ok(paging.default_limit),
        Some(limit) if (1..=paging.max_limit).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "`limit` must be between 1 and {}",
            paging.max_limit
        ))),
    }
}

/// The query string of the next page: `params` (already valid) with `cursor` replaced.
pub fn next_page_query(params: &[(&str, Option<String>)], cursor: &str) -> String {
    let mut query: Vec<String> = params
        .iter()
        .filter(|(name, _)| *name != "cursor")
        .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name}={value}")))
        .collect();
    query.push(format!("cursor={cursor}"));
    query.join("&")
}

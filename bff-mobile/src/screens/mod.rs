//! The screens, one file each, shaped alike: the request's `Query` (or body) type, the payload
//! type with only the fields the screen draws, and a `get`/`post`/… handler that fetches
//! (concurrently where a screen has several parts), shapes and answers a [`Screen`](crate::Screen).
//!
//! Payload rules, for every screen: no `null`s, no empty arrays or objects, no field equal to its
//! documented default (absent `degraded` = nothing missing, absent `count` = 0, absent `stock` =
//! in stock…); prices are integer minor units with a `…_text` display string, and `currency`
//! once per payload; one image URL per product, the rendition that fits the client's hint.
//!
//! Parts that could not be loaded are named in `degraded`; parts served from an older cached
//! copy because the service failed (or while it is refreshed) are named in `stale`. Either makes
//! a public screen `no-cache`. The names are enums ([`home::HomePart`], [`LinesPart`],
//! [`ProductPart`]), so `/m/v1/openapi.json` lists the values each screen may name.
//!
//! Every payload, body and query type derives its schema (`utoipa::ToSchema`/`IntoParams`) and
//! every handler carries its operation (`#[utoipa::path]`): their `///` comments are the
//! descriptions in the document (`crate::openapi`).
//!
//! `order_live` streams the order screen as server-sent events, one screen per change of the
//! order, until it is delivered or cancelled.
//!
//! `card` holds the parts several screens share: the product card, stock and rating display,
//! and product lookups for cart and order lines. The routes naming each screen's handlers are in
//! `crate::routes`.

mod card;
pub mod cart;
pub mod checkout;
pub mod home;
pub mod order;
pub mod order_live;
pub mod orders;
pub mod product;
pub mod products;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The optional part of the product detail screen, as named in its `stale` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductPart {
    /// The product itself, shown from an older copy because the catalog service failed.
    Product,
}

/// The optional part of the cart and order screens, as named in their `degraded` and `stale`
/// lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinesPart {
    /// Product names, images and prices of the lines.
    Products,
}

/// `serde` helper (which passes a reference): whether a count is at its default, 0.
fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `serde` helper (which passes a reference): whether a flag is at its default, true.
fn is_true(value: &bool) -> bool {
    *value
}

/// Checks a requested page size against the configured bounds.
fn page_size(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::InvalidQuery(format!(
            "limit: must be an integer from 1 to {max}"
        ))),
    }
}

/// Checks a page cursor's shape (only cursors the API issued are valid; the service checks the
/// rest).
fn cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(cursor)
            if cursor.is_empty()
                || cursor.len() > 200
                || !cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Err(invalid_cursor())
        }
        other => Ok(other),
    }
}

/// The problem of a cursor this API did not issue.
fn invalid_cursor() -> ApiError {
    ApiError::InvalidQuery("cursor: not a cursor from a previous page's `next`".to_owned())
}

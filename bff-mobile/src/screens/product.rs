//! `GET /m/v1/products/{product_id}?w=`: the product detail screen.

use std::collections::BTreeMap;

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::Serialize;
use shared_clients::{ProductId, money::group_thousands};

use super::{
    card::{rating, sale_price, stock},
    part,
};
use crate::{
    Screen,
    error::{ApiError, Missing},
    extract::{Ctx, IdParam, ImageHint},
    image,
    state::AppState,
};

/// The product detail screen.
#[derive(Debug, Serialize)]
pub struct ProductDetail {
    /// The currency of the prices, stated once.
    currency: String,
    /// To add the product to the cart.
    id: ProductId,
    /// The title.
    name: String,
    /// Shown above the title, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<String>,
    /// The description, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The price, in minor units.
    price: i64,
    /// The price, ready to show.
    price_text: String,
    /// The undiscounted price, struck through, when on sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    was: Option<i64>,
    /// The undiscounted price, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    was_text: Option<String>,
    /// The hero image: the one rendition that fits the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    /// `low` or `out`; absent when in stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    stock: Option<&'static str>,
    /// The stock badge, ready to show; absent when in stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    stock_text: Option<String>,
    /// Average rating to one decimal; absent when nobody rated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<f64>,
    /// The rating line, e.g. `4.3 (1,024 ratings)`; absent when nobody rated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    rating_text: Option<String>,
    /// The specification table, labels ready to show; absent when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    specs: BTreeMap<String, String>,
    /// `["product"]` when the product is shown from an older copy because the service failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<&'static str>,
}

/// `GET /m/v1/products/{product_id}`.
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    IdParam(id): IdParam<ProductId>,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let config = state.config();
    let product = state
        .downstream()
        .catalog()
        .product(&ctx, &id)
        .await
        .map_err(|error| ApiError::from_read(error, Missing::Product))?;
    let (was, was_text) = sale_price(&product);
    let (stock, stock_text) = stock(&product.inventory);
    let rated = rating(&product);
    let stale = if product.is_stale() {
        vec![part::PRODUCT]
    } else {
        Vec::new()
    };
    let detail = ProductDetail {
        currency: product.price.currency.clone(),
        id: product.id.clone(),
        name: product.name.clone(),
        brand: product.brand.clone().filter(|brand| !brand.is_empty()),
        description: product
            .description
            .clone()
            .filter(|description| !description.is_empty()),
        price: product.price.amount_minor,
        price_text: product.price.display(),
        was,
        was_text,
        image: image::best_fit(&product.images, hint.target(config.images.detail)),
        stock,
        stock_text,
        rating: rated.map(|(average, _)| average),
        rating_text: rated.map(|(average, count)| rating_text(average, count)),
        specs: product
            .attributes
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (label(key), value.clone()))
            .collect(),
        stale,
    };
    let is_stale = !detail.stale.is_empty();
    Ok(Screen::public(detail, config.catalog_max_age)
        .degraded(is_stale)
        .vary("DPR")
        .vary("Width")
        .into_response())
}

/// `4.3 (1,024 ratings)`.
fn rating_text(average: f64, count: u64) -> String {
    let noun = if count == 1 { "rating" } else { "ratings" };
    format!("{average:.1} ({} {noun})", group_thousands(count))
}

/// An attribute key as a label: `screen_size` → `Screen size`.
fn label(key: &str) -> String {
    let spaced = key.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

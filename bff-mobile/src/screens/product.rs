//! `GET /m/v1/products/{product_id}?w=`: the product detail screen.
//!
//! The most requested screen, and nearly always a cache hit: its rendering (shaping, JSON, entity
//! tag) is kept in a [`DetailMemo`](crate::caching::DetailMemo) and answered again for as long as
//! the catalog cache serves the very same product value.

use std::collections::BTreeMap;

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::Serialize;
use shared_clients::{Product, ProductId, money::group_thousands};
use utoipa::ToSchema;

use super::{
    ProductPart,
    card::{rating, sale_price, stock},
};
use crate::{
    Screen,
    caching::Rendered,
    error::{ApiError, Missing},
    extract::{Ctx, IdParam, ImageHint},
    image,
    openapi::ProblemResponse,
    state::AppState,
};

/// The product detail screen.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductDetail {
    /// The currency of the prices, stated once.
    currency: String,
    /// To add the product to the cart.
    #[schema(value_type = String)]
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
    #[schema(pattern = "^(low|out)$")]
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
    /// `["product"]` when the product is shown from an older copy because the service failed;
    /// absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<ProductPart>,
}

/// The product detail screen.
#[utoipa::path(
    get, path = "/m/v1/products/{product_id}", tag = "catalog", operation_id = "getProduct",
    params(
        ("product_id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ImageHint,
    ),
    responses(
        (status = 200, description = "The product", body = ProductDetail),
        (status = 400, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
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
    let width = hint.target(config.images.detail);
    if product.is_stale() {
        // Degraded: rendered each time, never kept (it says `stale`, and is rarely asked twice).
        return Ok(render(&product, width, true, config.catalog_max_age)?.into_response());
    }
    let rendered = state
        .detail_memo()
        .get_or_derive((id, width), &product, |product| {
            render(product, width, false, config.catalog_max_age)
        })
        .await?;
    Ok(rendered.into_response())
}

/// The screen of `product` with its image picked for `width` device pixels.
fn render(
    product: &Product,
    width: u32,
    stale: bool,
    max_age: std::time::Duration,
) -> Result<Rendered, ApiError> {
    let (was, was_text) = sale_price(product);
    let (stock, stock_text) = stock(&product.inventory);
    let rated = rating(product);
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
        image: image::best_fit(&product.images, width),
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
        stale: if stale {
            vec![ProductPart::Product]
        } else {
            Vec::new()
        },
    };
    Screen::public(detail, max_age)
        .degraded(stale)
        .vary("DPR")
        .vary("Width")
        .render()
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    fn product(name: &str) -> Arc<Product> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "id": "p-00001",
                "sku": "SKU-1",
                "name": name,
                "price": { "amount_minor": 1999, "currency": "EUR" },
                "images": [
                    { "url": "https://img/p-00001-100.jpg", "width": 100, "height": 75 },
                    { "url": "https://img/p-00001-600.jpg", "width": 600, "height": 450 },
                ],
                "inventory": { "available": 3, "status": "in_stock" },
                "updated_at": "2026-12-01T00:00:00Z",
            }))
            .expect("a product"),
        )
    }

    fn rendered(product: &Product, width: u32) -> Rendered {
        render(product, width, false, Duration::from_secs(30)).expect("renders")
    }

    fn body(rendered: &Rendered) -> serde_json::Value {
        serde_json::from_slice(&rendered.body).expect("JSON")
    }

    #[test]
    fn a_rendered_screen_carries_the_tag_of_its_bytes_and_its_caching_headers() {
        let lamp = product("Lamp");
        let small = rendered(&lamp, 100);
        let large = rendered(&lamp, 600);
        assert_eq!(body(&small)["image"], "https://img/p-00001-100.jpg");
        assert_eq!(body(&large)["image"], "https://img/p-00001-600.jpg");
        let tag = |r: &Rendered| r.headers[http::header::ETAG].clone();
        assert_ne!(tag(&small), tag(&large));
        assert_eq!(
            tag(&small),
            tag(&rendered(&lamp, 100)),
            "same bytes, same tag"
        );
        assert_eq!(
            small.headers[http::header::CACHE_CONTROL],
            "public, max-age=30"
        );
        assert_eq!(
            small.headers[http::header::VARY],
            "Accept-Encoding, DPR, Width"
        );
    }
}

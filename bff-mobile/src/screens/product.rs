//! `GET /m/v1/products/{product_id}?w=`: the product detail screen.
//!
//! The most requested screen, and nearly always a cache hit: its rendering (shaping, JSON, entity
//! tag) is kept in a [`DetailMemo`] and answered again for as long as the catalog cache serves
//! the very same product value.

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Weak},
};

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::Serialize;
use shared_clients::{Product, ProductId, money::group_thousands};

use super::{
    card::{rating, sale_price, stock},
    part,
};
use crate::{
    Screen,
    caching::Rendered,
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
    let width = hint.target(config.images.detail);
    if product.is_stale() {
        // Degraded: rendered each time, never kept (it says `stale`, and is rarely asked twice).
        return Ok(render(&product, width, true, config.catalog_max_age)?.into_response());
    }
    let memo = state.detail_memo();
    if let Some(rendered) = memo.get(&product, width).await {
        return Ok(rendered.into_response());
    }
    let rendered = render(&product, width, false, config.catalog_max_age)?;
    memo.keep(&product, width, rendered.clone()).await;
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
            vec![part::PRODUCT]
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

/// Rendered product detail screens, by product and image width (`gateway.rendered_details`
/// entries at most; 0 keeps none).
///
/// An entry is answered only for the very product value it was rendered from: it holds a
/// [`Weak`] to the catalog cache's `Arc<Product>` and compares addresses. A refreshed product is
/// a new allocation, so its screen is rendered anew; and while the entry's `Weak` lives, the old
/// allocation cannot be reused for another product (no ABA). The screen is public catalog data,
/// the same for every user, so sharing it is safe.
#[derive(Clone)]
pub struct DetailMemo {
    /// Entries by a hash of product id and width; the entry itself is checked on every hit.
    entries: Option<moka::future::Cache<u64, Arc<Kept>>>,
    /// Hashes the keys.
    hasher: RandomState,
}

/// One kept rendering.
struct Kept {
    /// The product value it was rendered from.
    source: Weak<Product>,
    /// The image width it was rendered for.
    width: u32,
    /// The screen.
    rendered: Rendered,
}

impl DetailMemo {
    /// A memo of at most `capacity` screens; `0` keeps none.
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: (capacity > 0).then(|| moka::future::Cache::new(capacity)),
            hasher: RandomState::new(),
        }
    }

    fn key(&self, id: &ProductId, width: u32) -> u64 {
        self.hasher.hash_one((id.as_str(), width))
    }

    /// The screen rendered from this very `product` value for `width`, if kept.
    async fn get(&self, product: &Arc<Product>, width: u32) -> Option<Rendered> {
        let entries = self.entries.as_ref()?;
        let kept = entries.get(&self.key(&product.id, width)).await?;
        (kept.width == width && std::ptr::eq(kept.source.as_ptr(), Arc::as_ptr(product)))
            .then(|| kept.rendered.clone())
    }

    /// Keeps the screen rendered from `product` for `width`.
    async fn keep(&self, product: &Arc<Product>, width: u32, rendered: Rendered) {
        if let Some(entries) = &self.entries {
            let kept = Kept {
                source: Arc::downgrade(product),
                width,
                rendered,
            };
            entries
                .insert(self.key(&product.id, width), Arc::new(kept))
                .await;
        }
    }
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
    use std::time::Duration;

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

    #[tokio::test]
    async fn a_kept_screen_is_answered_for_the_same_product_value_and_width_only() {
        let memo = DetailMemo::new(100);
        let first = product("Lamp");
        memo.keep(&first, 600, rendered(&first, 600)).await;

        let again = memo.get(&first, 600).await.expect("kept");
        assert_eq!(body(&again)["name"], "Lamp");
        assert!(memo.get(&first, 100).await.is_none(), "another width");

        // The cache refreshed the product: a new value, even with the same id.
        let refreshed = product("Desk lamp");
        assert!(memo.get(&refreshed, 600).await.is_none());
        memo.keep(&refreshed, 600, rendered(&refreshed, 600)).await;
        assert_eq!(
            body(&memo.get(&refreshed, 600).await.expect("kept"))["name"],
            "Desk lamp"
        );
        assert!(
            memo.get(&first, 600).await.is_none(),
            "the old value's screen was replaced"
        );
    }

    #[tokio::test]
    async fn a_memo_of_capacity_zero_keeps_nothing() {
        let memo = DetailMemo::new(0);
        let lamp = product("Lamp");
        memo.keep(&lamp, 600, rendered(&lamp, 600)).await;
        assert!(memo.get(&lamp, 600).await.is_none());
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

//! Parts shared by several screens: the product [`Card`] of lists and the home screen, how stock
//! and ratings are shown, and product lookups for cart and order lines.

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;
use shared_clients::{
    ClientError, Downstream, Inventory, InventoryStatus, Product, ProductId, RequestContext,
};
use utoipa::ToSchema;

use crate::{image, money};

/// A product as a list or the home screen draws it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Card {
    /// To open the product detail screen.
    #[schema(value_type = String)]
    pub id: ProductId,
    /// The title under the image.
    pub name: String,
    /// The price, in minor units of the payload's currency.
    pub price: i64,
    /// The price, ready to show.
    pub price_text: String,
    /// The undiscounted price, struck through, when on sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<i64>,
    /// The undiscounted price, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_text: Option<String>,
    /// Only when this price is not in the payload's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The one rendition that fits the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `low` or `out`; absent when in stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(low|out)$")]
    pub stock: Option<&'static str>,
    /// The stock badge, ready to show; absent when in stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock_text: Option<String>,
    /// Average rating to one decimal; absent when nobody rated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
}

impl Card {
    /// The card of `product`, its image the best fit for `image_px` device pixels.
    pub fn of(product: &Product, currency: &mut money::Currency, image_px: u32) -> Self {
        let (was, was_text) = sale_price(product);
        let (stock, stock_text) = stock(&product.inventory);
        Self {
            id: product.id.clone(),
            name: product.name.clone(),
            price: product.price.amount_minor,
            price_text: product.price.display(),
            was,
            was_text,
            currency: currency.own(&product.price),
            image: image::best_fit(&product.images, image_px),
            stock,
            stock_text,
            rating: rating(product).map(|(average, _)| average),
        }
    }
}

/// The undiscounted price and its text, when the product is on sale (a higher list price in the
/// same currency).
pub fn sale_price(product: &Product) -> (Option<i64>, Option<String>) {
    match &product.list_price {
        Some(list)
            if list.currency == product.price.currency
                && list.amount_minor > product.price.amount_minor =>
        {
            (Some(list.amount_minor), Some(list.display()))
        }
        _ => (None, None),
    }
}

/// The stock badge: nothing when in stock, `low` with how many are left, or `out`.
pub fn stock(inventory: &Inventory) -> (Option<&'static str>, Option<String>) {
    match inventory.status {
        InventoryStatus::InStock => (None, None),
        InventoryStatus::LowStock => (
            Some("low"),
            Some(format!("Only {} left", inventory.available)),
        ),
        InventoryStatus::OutOfStock => (Some("out"), Some("Out of stock".to_owned())),
    }
}

/// The average rating (one decimal) and the number of ratings, when anybody rated the product.
pub fn rating(product: &Product) -> Option<(f64, u64)> {
    let rating = product.rating.as_ref()?;
    let count = rating.count.filter(|count| *count > 0)?;
    let average = rating.average?;
    Some(((average * 10.0).round() / 10.0, count))
}

/// The products of some lines, as [`products_by_id`] found them.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The products by id; products that no longer exist are absent.
    pub products: HashMap<ProductId, Arc<Product>>,
    /// Whether any of them was served stale from the cache (the service failing).
    pub stale: bool,
}

/// The products of some lines, by id, from the catalog cache where possible.
pub async fn products_by_id(
    downstream: &Downstream,
    ctx: &RequestContext,
    ids: &[ProductId],
) -> Result<Lookup, ClientError> {
    if ids.is_empty() {
        return Ok(Lookup::default());
    }
    let found = downstream.catalog().products(ctx, ids).await?;
    let stale = found.is_stale();
    Ok(Lookup {
        products: found.into_map(),
        stale,
    })
}

//! Catalog data: products, categories, pages, batches and the list query.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Money, integer};
use crate::id::{CategoryId, ProductId};
use crate::weigh::Weigh;

/// A product of the catalog. Shared read-only as `Arc<Product>` between the cache and every
/// request that shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The product's id, the key of the catalog cache.
    pub id: ProductId,
    /// The merchant's stock-keeping unit, shown to partners.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Long description; absent for some products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Brand name; the catalog search also matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// The category the product is listed under, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<CategoryId>,
    /// The price to pay now.
    pub price: Money,
    /// The undiscounted price, present (non-null) only when the product is on sale.
    #[serde(default)]
    pub list_price: Option<Money>,
    /// Several renditions of the same pictures, largest first, so each client picks its size.
    #[serde(default)]
    pub images: Vec<Image>,
    /// Free-form attributes (colour, size, …) as name → value.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Customer rating, when the product has been rated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    /// Stock level, so clients can show availability without another call.
    pub inventory: Inventory,
    /// When the product last changed (RFC 3339), as sent by the service.
    pub updated_at: String,
}

/// For the product cache: the struct plus every string it owns.
impl Weigh for Product {
    fn weigh(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.id.as_str().len()
            + self.sku.len()
            + self.name.len()
            + opt(&self.description)
            + opt(&self.brand)
            + self.category_id.as_ref().map_or(0, |c| c.as_str().len())
            + self.price.weigh()
            + self.list_price.as_ref().map_or(0, Money::weigh)
            + self
                .images
                .iter()
                .map(|i| std::mem::size_of::<Image>() + i.url.len() + opt(&i.alt))
                .sum::<usize>()
            + self
                .attributes
                .iter()
                .map(|(k, v)| 2 * std::mem::size_of::<String>() + k.len() + v.len())
                .sum::<usize>()
            + self.updated_at.len()
    }
}

/// One rendition of a product picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Where the picture is served from.
    pub url: String,
    /// Width in pixels, so a client can pick the rendition that fits.
    #[serde(deserialize_with = "integer::deserialize")]
    pub width: u32,
    /// Height in pixels.
    #[serde(deserialize_with = "integer::deserialize")]
    pub height: u32,
    /// Alternative text, for accessibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

/// A product's customer rating; either part may be missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Mean rating from 0 to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// How many ratings the average is based on.
    #[serde(
        default,
        deserialize_with = "integer::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<u64>,
}

/// Stock level of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Units available to order.
    #[serde(deserialize_with = "integer::deserialize")]
    pub available: u64,
    /// The service's summary of `available`, for badges such as "only a few left".
    pub status: InventoryStatus,
}

/// The service's summary of a product's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryStatus {
    /// Plenty available.
    InStock,
    /// Few left.
    LowStock,
    /// None available.
    OutOfStock,
}

/// A catalog category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// The category's id, used to filter product lists.
    pub id: CategoryId,
    /// Display name.
    pub name: String,
    /// The enclosing category, or `None` for a top-level one, so clients can build a tree.
    #[serde(default)]
    pub parent_id: Option<CategoryId>,
}

/// For the category list's weight.
impl Weigh for Category {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.id.as_str().len()
            + self.name.len()
            + self.parent_id.as_ref().map_or(0, |p| p.as_str().len())
    }
}

/// The category list, cached as one entry.
impl Weigh for Vec<Category> {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.iter().map(Category::weigh).sum::<usize>()
    }
}

/// One page of the catalog, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPage {
    /// The products of this page, shared with the cache.
    pub items: Vec<Arc<Product>>,
    /// The cursor of the next page, `None` on the last page; pass it back in
    /// [`ProductQuery::cursor`].
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// For the page cache: the page and the products it holds (it keeps them alive).
impl Weigh for ProductPage {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.next_cursor.as_ref().map_or(0, String::len)
            + self
                .items
                .iter()
                .map(|item| std::mem::size_of::<Arc<Product>>() + item.weigh())
                .sum::<usize>()
    }
}

/// The answer to a batch lookup by ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductBatch {
    /// The products found, each distinct id once, in the order asked.
    pub items: Vec<Arc<Product>>,
    /// The ids asked for that do not exist.
    #[serde(default)]
    pub missing: Vec<ProductId>,
}

/// For the page cache's keys.
impl Weigh for ProductQuery {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.category.as_ref().map_or(0, |c| c.as_str().len())
            + self.q.as_ref().map_or(0, String::len)
            + self.cursor.as_ref().map_or(0, String::len)
    }
}

/// Which page of the catalog to list. Every field is optional; `ProductQuery::default()` lists the
/// first page of everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductQuery {
    /// Only products of this category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<CategoryId>,
    /// Only products whose name or brand contains this text (case-insensitive, at most 200
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Continue after a previous page: its `next_cursor`, passed back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (the service defaults to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

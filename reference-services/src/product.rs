//! The product service: the catalog, changed only by the back office (the admin API).
//!
//! Routes ([`routes`], over a [`ProductState`]): `GET /products` (a page, newest first, or a batch
//! by `ids`), `GET /products/{product_id}` (with `ETag` and `If-None-Match`) and `GET /categories`.
//! Every successful read carries `Cache-Control: public, max-age=N`.
//!
//! Admin routes ([`admin_routes`]), changes "from outside the gateways" as a back office makes
//! them, each announced on the `catalog` event stream (see [`crate::events`]):
//! - `PATCH /__admin/products/{product_id}`: any of `price`, `list_price` (a `Money` or null),
//!   `available`, `name`, `description`, `category_id` (unknown fields are a 400; an unknown
//!   category, a `list_price` in another currency or not above `price` are a 422); answers the
//!   product. A change bumps the product's version and `updated_at` (so its `ETag` changes too, and
//!   it moves to the top of the listing) and publishes `com.bff.product.changed` with
//!   `changed: [price|inventory|details|category]`; giving the current values changes nothing.
//! - `DELETE /__admin/products/{product_id}`: 204; the product is gone from reads, batches
//!   (`missing`) and listings; publishes `com.bff.product.deleted`.
//! - `PATCH /__admin/categories/{category_id}` with `{"name": "..."}`: renames the category;
//!   publishes `com.bff.category.changed`.
//!
//! The [`Catalog`] keeps each product's JSON and entity tag serialized once, and indexes products
//! by id and by category, so a read by id or batch never scans; listing pages start with a binary
//! search on the sort key and only scan to apply the `q` filter. Reads work on an immutable
//! snapshot of it (`CatalogStore`); a change builds the next snapshot (sharing the unchanged
//! entries) and swaps it in under a lock, and announces its event before letting go of the lock.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use axum::{
    Router,
    extract::{FromRef, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, patch},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    conditional,
    cursor::CursorKey,
    events::{Announcement, Publisher, TraceContext},
    extract::{JsonBody, PathOf, QueryParams},
    problem::ApiError,
    reply,
    validate::{self, Fields},
};

/// CloudEvents `type` of a product change.
pub const PRODUCT_CHANGED: &str = "com.bff.product.changed";
/// CloudEvents `type` of a product deletion.
pub const PRODUCT_DELETED: &str = "com.bff.product.deleted";
/// CloudEvents `type` of a category change.
pub const CATEGORY_CHANGED: &str = "com.bff.category.changed";
/// Largest price, in minor units, the back office may set (as for order lines).
const MAX_PRICE: i64 = 10_000_000_000;
/// Most units in stock the back office may set.
const MAX_AVAILABLE: i64 = 1_000_000;
/// Longest product or category name the back office may set, in code points.
const MAX_NAME_LEN: usize = 200;

/// An amount of money, always integer minor units plus its currency (never a float).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for EUR), so that sums are exact.
    pub amount_minor: i64,
    /// ISO-4217 code; orders refuse to mix them.
    pub currency: String,
}

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// What products' `category_id` and the `category` filter refer to.
    pub id: String,
    /// What a storefront shows.
    pub name: String,
    /// The parent category, `None` at the top of the tree.
    pub parent_id: Option<String>,
}

/// One rendition of a product picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Where the rendition is served from.
    pub url: String,
    /// Pixel width, so clients can pick the rendition that fits their screen.
    pub width: u32,
    /// Pixel height.
    pub height: u32,
    /// Alternative text for accessibility.
    pub alt: String,
}

/// Customer ratings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Mean score, 0 to 5 (0 when nobody rated).
    pub average: f64,
    /// How many ratings the mean is made of.
    pub count: u32,
}

/// Stock level as storefronts display it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockStatus {
    /// Plenty available.
    InStock,
    /// A few left; storefronts show a warning.
    LowStock,
    /// None available; cannot be bought.
    OutOfStock,
}

/// Availability of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Units available.
    pub available: u32,
    /// The stock level derived from `available`.
    pub status: StockStatus,
}

impl Inventory {
    /// Most units that still count as low stock.
    pub const LOW_STOCK: u32 = 5;

    /// The inventory of `available` units: out of stock at 0, low stock up to
    /// [`Inventory::LOW_STOCK`], else in stock.
    pub fn of(available: u32) -> Inventory {
        let status = match available {
            0 => StockStatus::OutOfStock,
            1..=Inventory::LOW_STOCK => StockStatus::LowStock,
            _ => StockStatus::InStock,
        };
        Inventory { available, status }
    }
}

/// A catalog entry, as the contract's `Product` schema describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The product id (`p-00001`), used in paths, carts and order lines.
    pub id: String,
    /// The merchant's stock-keeping unit.
    pub sku: String,
    /// Display name; searched by `q`.
    pub name: String,
    /// Marketing text.
    pub description: String,
    /// Maker; searched by `q`.
    pub brand: String,
    /// The category the product is listed in.
    pub category_id: String,
    /// What it costs now.
    pub price: Money,
    /// The undiscounted price when the product is on sale, else `None` (answered as null).
    pub list_price: Option<Money>,
    /// Renditions of the product picture, largest first.
    pub images: Vec<Image>,
    /// Free-form facts (colour, material, ...), sorted by name for stable output.
    pub attributes: BTreeMap<String, String>,
    /// Customer ratings.
    pub rating: Rating,
    /// Stock.
    pub inventory: Inventory,
    /// Last change; also the listing's sort key (newest first).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A product with everything a read needs prepared once.
#[derive(Debug)]
struct Entry {
    /// The product itself, for [`Catalog::product`] and filters.
    product: Product,
    /// Increases with every change of the product (1 as seeded): the `version` of its events.
    version: u64,
    /// Its JSON, served as is.
    json: Bytes,
    /// Its strong entity tag, derived from the JSON (which holds `updated_at`, so every change
    /// gives a new tag).
    etag: HeaderValue,
    /// Lower-cased name, so `q` does not lower-case the catalog on every request.
    name_lower: String,
    /// Lower-cased brand, for the same reason.
    brand_lower: String,
}

impl Entry {
    /// Prepares a product for reads.
    fn new(product: Product, version: u64) -> Entry {
        // Serializing plain data cannot fail; an empty body would only hide one product.
        let json = Bytes::from(serde_json::to_vec(&product).unwrap_or_default());
        let digest = Sha256::digest(&json);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Entry {
            name_lower: product.name.to_lowercase(),
            brand_lower: product.brand.to_lowercase(),
            product,
            version,
            json,
            etag,
        }
    }

    /// The listing's sort key: newest first, ties broken by id (descending), so the order is total.
    fn key(&self) -> (i64, &str) {
        (self.product.updated_at.unix_timestamp(), &self.product.id)
    }
}

/// One snapshot of the catalog behind the product service; never changed in place (see
/// `CatalogStore`).
#[derive(Debug)]
pub struct Catalog {
    /// Every product, in listing order (newest first); shared with the snapshots before and after.
    entries: Vec<Arc<Entry>>,
    /// Index into `entries` by product id.
    by_id: HashMap<String, usize>,
    /// For each category, the indices into `entries` of its products, in listing order.
    by_category: HashMap<String, Vec<usize>>,
    /// The categories, in tree order.
    categories: Vec<Category>,
    /// Each category's version (1 as seeded), for the `version` of its events.
    category_versions: HashMap<String, u64>,
    /// `GET /categories`'s body, serialized once.
    categories_json: Bytes,
}

impl Catalog {
    /// Prepares the seeded catalog: every product and category at version 1.
    pub(crate) fn new(products: Vec<Product>, categories: Vec<Category>) -> Catalog {
        let entries = products
            .into_iter()
            .map(|product| Arc::new(Entry::new(product, 1)))
            .collect();
        let category_versions = categories
            .iter()
            .map(|category| (category.id.clone(), 1))
            .collect();
        Catalog::assemble(entries, categories, category_versions)
    }

    /// Sorts and indexes prepared entries, and serializes the categories.
    fn assemble(
        mut entries: Vec<Arc<Entry>>,
        categories: Vec<Category>,
        category_versions: HashMap<String, u64>,
    ) -> Catalog {
        entries.sort_by(|a, b| b.key().cmp(&a.key()));
        let by_id = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| (entry.product.id.clone(), index))
            .collect();
        let mut by_category: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            by_category
                .entry(entry.product.category_id.clone())
                .or_default()
                .push(index);
        }
        let categories_json = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "items": categories })).unwrap_or_default(),
        );
        Catalog {
            entries,
            by_id,
            by_category,
            categories,
            category_versions,
            categories_json,
        }
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.entry(id).map(|entry| &entry.product)
    }

    /// A product's version: 1 as seeded, one more with every change.
    pub fn version(&self, id: &str) -> Option<u64> {
        self.entry(id).map(|entry| entry.version)
    }

    /// A category by id.
    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|category| category.id == id)
    }

    /// Every product, newest first.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.entries.iter().map(|entry| &entry.product)
    }

    /// A category's version: 1 as seeded, one more with every change.
    pub fn category_version(&self, id: &str) -> Option<u64> {
        self.category_versions.get(id).copied()
    }

    /// How many products there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalog is empty (it never is once seeded).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every category.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// A prepared entry by id.
    fn entry(&self, id: &str) -> Option<&Entry> {
        self.by_id
            .get(id)
            .and_then(|&index| self.entries.get(index))
            .map(Arc::as_ref)
    }

    /// One page of the listing: up to `limit` entries strictly after `after` (in listing order)
    /// that pass the filters, plus whether more follow.
    fn page(
        &self,
        filter: &Filter<'_>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> (Vec<&Entry>, bool) {
        let candidates: Box<dyn Iterator<Item = &Entry> + '_> = match filter.category {
            Some(category) => {
                let indices = self
                    .by_category
                    .get(category)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let start = after.map_or(0, |after| {
                    indices.partition_point(|&index| self.entries[index].key() >= after)
                });
                Box::new(
                    indices[start..]
                        .iter()
                        .map(|&index| self.entries[index].as_ref()),
                )
            }
            None => {
                let start = after.map_or(0, |after| {
                    self.entries.partition_point(|entry| entry.key() >= after)
                });
                Box::new(self.entries[start..].iter().map(Arc::as_ref))
            }
        };
        let mut page: Vec<&Entry> = candidates
            .filter(|entry| filter.matches(entry))
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }
}

/// The listing filters of `GET /products`.
struct Filter<'a> {
    /// Only products of this category.
    category: Option<&'a str>,
    /// Lower-cased `q`: only products whose name or brand contains it.
    q_lower: Option<String>,
}

impl Filter<'_> {
    /// Whether an entry passes the `q` filter (the category is applied by the index).
    fn matches(&self, entry: &Entry) -> bool {
        match &self.q_lower {
            None => true,
            Some(q) => {
                entry.name_lower.contains(q.as_str()) || entry.brand_lower.contains(q.as_str())
            }
        }
    }

    /// The cursor scope: a cursor is only valid for the filters it was issued with (an id cannot
    /// hold the NUL separator, so the encoding is unambiguous).
    fn scope(&self) -> Vec<u8> {
        let mut scope = b"products\0".to_vec();
        scope.extend_from_slice(self.category.unwrap_or_default().as_bytes());
        scope.push(0);
        scope.extend_from_slice(self.q_lower.as_deref().unwrap_or_default().as_bytes());
        scope
    }
}

/// The cursor position of an entry: its sort key.
fn encode_position(key: (i64, &str)) -> Vec<u8> {
    let mut position = key.0.to_be_bytes().to_vec();
    position.extend_from_slice(key.1.as_bytes());
    position
}

/// The sort key in a verified cursor position.
fn decode_position(position: &[u8]) -> Result<(i64, String), ApiError> {
    let invalid =
        || ApiError::bad_request("query parameter cursor is not a cursor this service issued");
    let (timestamp, id) = position.split_first_chunk::<8>().ok_or_else(invalid)?;
    let id = std::str::from_utf8(id).map_err(|_| invalid())?;
    if !validate::is_id(id) {
        return Err(invalid());
    }
    Ok((i64::from_be_bytes(*timestamp), id.to_owned()))
}

/// Which parts of a product a change touched: the `changed` of `com.bff.product.changed`, so
/// that consumers can narrow what they drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductPart {
    /// `price` or `list_price`.
    Price,
    /// `inventory` (units available, and so the stock level).
    Inventory,
    /// `name` or `description`.
    Details,
    /// `category_id`.
    Category,
}

/// A back-office change of a product: every field that is `Some` replaces the current value;
/// `None` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductChange {
    /// The new price.
    pub price: Option<Money>,
    /// The new undiscounted price: `Some(None)` ends a sale, `Some(Some(..))` starts or changes
    /// one (same currency as the price, above it).
    pub list_price: Option<Option<Money>>,
    /// The new number of units in stock (the stock level follows, see [`Inventory::of`]).
    pub available: Option<u32>,
    /// The new display name (1 to 200 characters).
    pub name: Option<String>,
    /// The new marketing text.
    pub description: Option<String>,
    /// The new category (must exist).
    pub category_id: Option<String>,
}

/// The fields `PATCH /__admin/products/{product_id}` accepts.
const CHANGE_FIELDS: [&str; 6] = [
    "price",
    "list_price",
    "available",
    "name",
    "description",
    "category_id",
];

impl ProductChange {
    /// Reads `PATCH /__admin/products/{product_id}`'s body (unknown fields are a 400).
    fn from_json(body: &Value) -> Result<ProductChange, ApiError> {
        let fields = Fields::of(body, "")?;
        fields.only(&CHANGE_FIELDS)?;
        let price = fields
            .optional("price")
            .map(|price| read_money(price, "/price"))
            .transpose()?;
        let list_price = match fields.optional("list_price") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(list_price) => Some(Some(read_money(list_price, "/list_price")?)),
        };
        let available = match fields.optional("available") {
            None => None,
            Some(_) => Some(
                u32::try_from(fields.integer("available", 0, MAX_AVAILABLE)?).unwrap_or_default(),
            ),
        };
        let category_id = match fields.optional("category_id") {
            None => None,
            Some(_) => Some(fields.id("category_id")?),
        };
        Ok(ProductChange {
            price,
            list_price,
            available,
            name: fields.optional_string("name")?,
            description: fields.optional_string("description")?,
            category_id,
        })
    }

    /// Applies the change to a copy of `product`, checking it against the catalog first (so a
    /// refused change changes nothing); returns the parts that actually changed, in the order
    /// of [`ProductPart`] (none when every value given is the current one).
    fn apply(
        &self,
        product: &mut Product,
        catalog: &Catalog,
    ) -> Result<Vec<ProductPart>, ApiError> {
        if let Some(name) = &self.name {
            check_name("/name", name)?;
        }
        if let Some(category_id) = &self.category_id
            && catalog.category(category_id).is_none()
        {
            return Err(ApiError::Unprocessable(format!(
                "category {category_id} does not exist"
            )));
        }
        let price = self.price.as_ref().unwrap_or(&product.price);
        let list_price = match &self.list_price {
            Some(list_price) => list_price.as_ref(),
            None => product.list_price.as_ref(),
        };
        // Only a change of prices is checked, so that other changes never fail on them.
        let prices_change = self.price.is_some() || self.list_price.is_some();
        if let Some(list_price) = list_price.filter(|_| prices_change) {
            if list_price.currency != price.currency {
                return Err(ApiError::Unprocessable(format!(
                    "list_price must be in the price's currency, {}",
                    price.currency
                )));
            }
            if list_price.amount_minor <= price.amount_minor {
                return Err(ApiError::Unprocessable(
                    "list_price (the undiscounted price) must be above price; end the sale with list_price null"
                        .to_owned(),
                ));
            }
        }
        let mut parts = Vec::new();
        let (price, list_price) = (price.clone(), list_price.cloned());
        if price != product.price || list_price != product.list_price {
            product.price = price;
            product.list_price = list_price;
            parts.push(ProductPart::Price);
        }
        if let Some(available) = self.available
            && available != product.inventory.available
        {
            product.inventory = Inventory::of(available);
            parts.push(ProductPart::Inventory);
        }
        let mut details = false;
        if let Some(name) = &self.name
            && *name != product.name
        {
            product.name.clone_from(name);
            details = true;
        }
        if let Some(description) = &self.description
            && *description != product.description
        {
            product.description.clone_from(description);
            details = true;
        }
        if details {
            parts.push(ProductPart::Details);
        }
        if let Some(category_id) = &self.category_id
            && *category_id != product.category_id
        {
            product.category_id.clone_from(category_id);
            parts.push(ProductPart::Category);
        }
        Ok(parts)
    }
}

/// Reads a `Money` of the admin API (`amount_minor` 0 to 10^10, `currency` `^[A-Z]{3}$`).
fn read_money(value: &Value, at: &str) -> Result<Money, ApiError> {
    let fields = Fields::of(value, at)?;
    fields.only(&["amount_minor", "currency"])?;
    let amount_minor = fields.integer("amount_minor", 0, MAX_PRICE)?;
    let currency = match fields.required("currency")?.as_str() {
        Some(code) if validate::is_upper_code(code, 3) => code.to_owned(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "{at}/currency must match ^[A-Z]{{3}}$"
            )));
        }
    };
    Ok(Money {
        amount_minor,
        currency,
    })
}

/// Checks a product or category name the back office sets: 1 to 200 characters.
fn check_name(at: &str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || validate::code_points(name) > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "{at} must be 1 to {MAX_NAME_LEN} characters, not only spaces"
        )));
    }
    Ok(())
}

/// `data` of `com.bff.product.changed`.
#[derive(Debug, Serialize)]
struct ProductChanged<'a> {
    /// The product.
    product_id: &'a str,
    /// Its category (the new one when it changed).
    category_id: Option<&'a str>,
    /// Its new version.
    version: u64,
    /// What changed.
    changed: &'a [ProductPart],
}

/// `data` of `com.bff.product.deleted`.
#[derive(Debug, Serialize)]
struct ProductDeleted<'a> {
    /// The product that is gone.
    product_id: &'a str,
    /// The category it was in.
    category_id: Option<&'a str>,
    /// The version its deletion is (one above its last).
    version: u64,
}

/// `data` of `com.bff.category.changed`.
#[derive(Debug, Serialize)]
struct CategoryChanged<'a> {
    /// The category.
    category_id: &'a str,
    /// Its new version.
    version: u64,
}

/// The catalog as it is now, replaced by a new snapshot on every change.
#[derive(Debug)]
pub(crate) struct CatalogStore {
    /// The current snapshot. Reads clone the `Arc` and let go of the lock at once; changes hold
    /// the write lock from reading the snapshot to announcing their event, so they are applied
    /// (and their events queued) one after another.
    current: RwLock<Arc<Catalog>>,
    /// Where catalog changes are announced (the `catalog` stream).
    events: Publisher,
}

impl CatalogStore {
    /// The store of the seeded catalog.
    pub(crate) fn new(catalog: Catalog, events: Publisher) -> CatalogStore {
        CatalogStore {
            current: RwLock::new(Arc::new(catalog)),
            events,
        }
    }

    /// The current snapshot (a poisoned lock still holds a complete one: it is only ever
    /// replaced whole).
    pub(crate) fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs a change on the current snapshot under the write lock: `change` returns the next
    /// snapshot (`None` when nothing changed), its answer and its announcement. The event may be
    /// queued before the new snapshot is swapped in: the writer appends it only once the
    /// announcement is released, after the lock.
    fn update<T>(
        &self,
        change: impl FnOnce(
            &Catalog,
            &Publisher,
        ) -> Result<(Option<Catalog>, T, Announcement), ApiError>,
    ) -> Result<(T, Announcement), ApiError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let (next, answer, announcement) = change(&current, &self.events)?;
        if let Some(next) = next {
            *current = Arc::new(next);
        }
        Ok((answer, announcement))
    }

    /// Changes a product (see [`ProductChange`]).
    fn change_product(
        &self,
        product_id: &str,
        change: &ProductChange,
        now: OffsetDateTime,
        trace: Option<&TraceContext>,
    ) -> Result<(Product, Announcement), ApiError> {
        self.update(|catalog, events| {
            let index = *catalog
                .by_id
                .get(product_id)
                .ok_or_else(|| no_product(product_id))?;
            let entry = &catalog.entries[index];
            let mut product = entry.product.clone();
            let parts = change.apply(&mut product, catalog)?;
            if parts.is_empty() {
                return Ok((None, product, Announcement::none()));
            }
            // Strictly later than before, so the JSON (and the entity tag) always changes.
            product.updated_at = now.max(entry.product.updated_at + time::Duration::NANOSECOND);
            let version = entry.version + 1;
            let announcement = events.announce(
                PRODUCT_CHANGED,
                &product.id,
                &ProductChanged {
                    product_id: &product.id,
                    category_id: Some(&product.category_id),
                    version,
                    changed: &parts,
                },
                trace,
            );
            let mut entries = catalog.entries.clone();
            entries[index] = Arc::new(Entry::new(product.clone(), version));
            let next = Catalog::assemble(
                entries,
                catalog.categories.clone(),
                catalog.category_versions.clone(),
            );
            Ok((Some(next), product, announcement))
        })
    }

    /// Removes a product from the catalog.
    fn delete_product(
        &self,
        product_id: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Announcement, ApiError> {
        let ((), announcement) = self.update(|catalog, events| {
            let index = *catalog
                .by_id
                .get(product_id)
                .ok_or_else(|| no_product(product_id))?;
            let mut entries = catalog.entries.clone();
            let gone = entries.remove(index);
            let announcement = events.announce(
                PRODUCT_DELETED,
                product_id,
                &ProductDeleted {
                    product_id,
                    category_id: Some(&gone.product.category_id),
                    version: gone.version + 1,
                },
                trace,
            );
            let next = Catalog::assemble(
                entries,
                catalog.categories.clone(),
                catalog.category_versions.clone(),
            );
            Ok((Some(next), (), announcement))
        })?;
        Ok(announcement)
    }

    /// Renames a category.
    fn rename_category(
        &self,
        category_id: &str,
        name: &str,
        trace: Option<&TraceContext>,
    ) -> Result<(Category, Announcement), ApiError> {
        check_name("/name", name)?;
        self.update(|catalog, events| {
            let mut categories = catalog.categories.clone();
            let category = categories
                .iter_mut()
                .find(|category| category.id == category_id)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("category {category_id} does not exist"))
                })?;
            if category.name == name {
                return Ok((None, category.clone(), Announcement::none()));
            }
            name.clone_into(&mut category.name);
            let renamed = category.clone();
            let mut versions = catalog.category_versions.clone();
            let version = versions.entry(category_id.to_owned()).or_insert(1);
            *version += 1;
            let announcement = events.announce(
                CATEGORY_CHANGED,
                category_id,
                &CategoryChanged {
                    category_id,
                    version: *version,
                },
                trace,
            );
            let next = Catalog::assemble(catalog.entries.clone(), categories, versions);
            Ok((Some(next), renamed, announcement))
        })
    }
}

/// The 404 of an unknown product.
fn no_product(product_id: &str) -> ApiError {
    ApiError::NotFound(format!("product {product_id} does not exist"))
}

/// What the product service's handlers read. The [`World`](crate::World) holds one and hands out
/// clones (`FromRef`); a clone is cheap and shares the catalog.
#[derive(Debug, Clone)]
pub struct ProductState {
    /// The catalog every read is answered from.
    catalog: Arc<CatalogStore>,
    /// Signs and checks the cursors of `GET /products`.
    cursor_key: CursorKey,
    /// `Cache-Control: public, max-age=N` of every read, built once.
    cache_control: HeaderValue,
}

impl ProductState {
    /// The state of a service answering from `catalog`, announcing its changes to `events`,
    /// signing cursors with `cursor_key` and letting caches keep every read for `max_age`.
    pub(crate) fn new(
        catalog: Catalog,
        events: Publisher,
        cursor_key: CursorKey,
        max_age: Duration,
    ) -> ProductState {
        ProductState {
            catalog: Arc::new(CatalogStore::new(catalog, events)),
            cursor_key,
            cache_control: reply::public_max_age(max_age.as_secs()),
        }
    }

    /// The catalog as it is now.
    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.snapshot()
    }

    /// Changes a product as the back office does, and returns it once the change is visible and
    /// its event published (or given up on, see [`crate::events`]).
    ///
    /// # Errors
    ///
    /// 404 for an unknown product; 400 or 422 for a change that cannot be made (nothing changes).
    pub(crate) async fn change_product(
        &self,
        product_id: &str,
        change: &ProductChange,
        trace: Option<&TraceContext>,
    ) -> Result<Product, ApiError> {
        let now = OffsetDateTime::now_utc();
        let (product, announced) = self
            .catalog
            .change_product(product_id, change, now, trace)?;
        announced.published().await;
        Ok(product)
    }

    /// Deletes a product as the back office does; returns once its event is published.
    ///
    /// # Errors
    ///
    /// 404 for an unknown product.
    pub(crate) async fn delete_product(
        &self,
        product_id: &str,
        trace: Option<&TraceContext>,
    ) -> Result<(), ApiError> {
        let announced = self.catalog.delete_product(product_id, trace)?;
        announced.published().await;
        Ok(())
    }

    /// Renames a category as the back office does; returns it once its event is published.
    ///
    /// # Errors
    ///
    /// 404 for an unknown category, 400 for an empty or too long name.
    pub(crate) async fn rename_category(
        &self,
        category_id: &str,
        name: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Category, ApiError> {
        let (category, announced) = self.catalog.rename_category(category_id, name, trace)?;
        announced.published().await;
        Ok(category)
    }
}

/// The product service's routes, for a router whose state yields a [`ProductState`] (the
/// [`World`](crate::World) does).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ProductState: FromRef<S>,
{
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{product_id}", get(get_product))
        .route("/categories", get(list_categories))
}

/// The product service's admin routes (back-office changes, see the module docs).
pub fn admin_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ProductState: FromRef<S>,
{
    Router::new()
        .route(
            "/__admin/products/{product_id}",
            patch(admin_change_product).delete(admin_delete_product),
        )
        .route(
            "/__admin/categories/{category_id}",
            patch(admin_rename_category),
        )
}

/// `PATCH /__admin/products/{product_id}`.
async fn admin_change_product(
    State(state): State<ProductState>,
    PathOf(product_id): PathOf<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    validate::id("product_id", &product_id)?;
    let JsonBody(body) = body?;
    let change = ProductChange::from_json(&body)?;
    let trace = TraceContext::from_headers(&headers);
    let product = state
        .change_product(&product_id, &change, trace.as_ref())
        .await?;
    reply::json(StatusCode::OK, reply::no_store(), &product)
}

/// `DELETE /__admin/products/{product_id}`.
async fn admin_delete_product(
    State(state): State<ProductState>,
    PathOf(product_id): PathOf<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate::id("product_id", &product_id)?;
    let trace = TraceContext::from_headers(&headers);
    state.delete_product(&product_id, trace.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PATCH /__admin/categories/{category_id}`.
async fn admin_rename_category(
    State(state): State<ProductState>,
    PathOf(category_id): PathOf<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    validate::id("category_id", &category_id)?;
    let JsonBody(body) = body?;
    let fields = Fields::of(&body, "")?;
    fields.only(&["name"])?;
    let name = fields
        .optional_string("name")?
        .ok_or_else(|| ApiError::bad_request("/name is required"))?;
    let trace = TraceContext::from_headers(&headers);
    let category = state
        .rename_category(&category_id, &name, trace.as_ref())
        .await?;
    reply::json(StatusCode::OK, reply::no_store(), &category)
}

/// Most ids a batch may ask for.
const MAX_BATCH: usize = 100;
/// Longest `q`, in code points.
const MAX_Q_LEN: usize = 200;

/// `GET /products`: a batch by `ids`, or a page of the listing.
async fn list_products(
    State(state): State<ProductState>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    // Validate every parameter first: with `ids` the others are ignored, but still validated.
    let ids = query.get("ids")?.map(parse_ids).transpose()?;
    let category = query.id("category")?;
    let q = query.get("q")?;
    if q.is_some_and(|q| validate::code_points(q) > MAX_Q_LEN) {
        return Err(ApiError::bad_request(
            "query parameter q must be at most 200 characters",
        ));
    }
    let limit = query.limit()?;
    let filter = Filter {
        category,
        q_lower: q.map(str::to_lowercase),
    };
    let after = query
        .get("cursor")?
        .map(|cursor| state.cursor_key.open(&filter.scope(), cursor))
        .transpose()?
        .map(|position| decode_position(&position))
        .transpose()?;

    let catalog = state.catalog();
    let catalog = catalog.as_ref();
    let body = match ids {
        Some(ids) => batch_body(catalog, &ids),
        None => {
            let after = after
                .as_ref()
                .map(|(timestamp, id)| (*timestamp, id.as_str()));
            let (page, more) = catalog.page(&filter, after, limit);
            let next_cursor = match page.last() {
                Some(last) if more => Some(
                    state
                        .cursor_key
                        .seal(&filter.scope(), &encode_position(last.key())),
                ),
                _ => None,
            };
            page_body(&page, next_cursor.as_deref())
        }
    };
    Ok(reply::json_bytes(
        StatusCode::OK,
        state.cache_control.clone(),
        body,
    ))
}

/// Parses `ids`: 1 to 100 comma-separated ids, no spaces; the distinct ones in first-seen order.
fn parse_ids(raw: &str) -> Result<Vec<&str>, ApiError> {
    let ids: Vec<&str> = raw.split(',').collect();
    if ids.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "query parameter ids may name at most 100 ids",
        ));
    }
    if !ids.iter().all(|id| validate::is_id(id)) {
        return Err(ApiError::bad_request(
            "query parameter ids must be comma-separated ids matching ^[A-Za-z0-9_-]{1,64}$",
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
}

/// `{"items":[...],"missing":[...]}` for a batch, from the prepared JSON of each product.
fn batch_body(catalog: &Catalog, ids: &[&str]) -> Vec<u8> {
    let mut found = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match catalog.entry(id) {
            Some(entry) => found.push(entry),
            None => missing.push(*id),
        }
    }
    let mut body = items_json(&found);
    body.extend_from_slice(b",\"missing\":");
    // A list of ids (plain ASCII) always serializes.
    body.extend_from_slice(&serde_json::to_vec(&missing).unwrap_or_else(|_| b"[]".to_vec()));
    body.push(b'}');
    body
}

/// `{"items":[...],"next_cursor":...}` for a page.
fn page_body(page: &[&Entry], next_cursor: Option<&str>) -> Vec<u8> {
    let mut body = items_json(page);
    body.extend_from_slice(b",\"next_cursor\":");
    body.extend_from_slice(&serde_json::to_vec(&next_cursor).unwrap_or_else(|_| b"null".to_vec()));
    body.push(b'}');
    body
}

/// `{"items":[...]` (unclosed, the caller adds the rest).
fn items_json(entries: &[&Entry]) -> Vec<u8> {
    let size: usize = entries.iter().map(|entry| entry.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&entry.json);
    }
    body.push(b']');
    body
}

/// `GET /products/{product_id}`: the product, or 304 when `If-None-Match` matches its tag.
async fn get_product(
    State(state): State<ProductState>,
    PathOf(product_id): PathOf<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate::id("product_id", &product_id)?;
    let catalog = state.catalog();
    let entry = catalog
        .entry(&product_id)
        .ok_or_else(|| ApiError::NotFound(format!("product {product_id} does not exist")))?;
    let cache_control = state.cache_control.clone();
    let etag = entry.etag.clone();
    let etag_text = etag.to_str().unwrap_or_default();
    if conditional::if_none_match(&headers, etag_text) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    let mut response = reply::json_bytes(StatusCode::OK, cache_control, entry.json.clone());
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// `GET /categories`: every category.
async fn list_categories(State(state): State<ProductState>) -> Response {
    reply::json_bytes(
        StatusCode::OK,
        state.cache_control.clone(),
        state.catalog().categories_json.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_deduplicated_in_order() {
        assert_eq!(parse_ids("b,a,b,c,a").ok(), Some(vec!["b", "a", "c"]));
        assert!(parse_ids("").is_err());
        assert!(parse_ids("a,,b").is_err());
        assert!(parse_ids("a, b").is_err());
        let hundred = vec!["p"; 100].join(",");
        assert!(parse_ids(&hundred).is_ok());
        let too_many = vec!["p"; 101].join(",");
        assert!(parse_ids(&too_many).is_err());
    }

    #[test]
    fn positions_round_trip() {
        let position = encode_position((1_700_000_000, "p-00001"));
        assert_eq!(
            decode_position(&position).ok(),
            Some((1_700_000_000, "p-00001".to_owned()))
        );
        assert!(decode_position(b"short").is_err());
    }
}

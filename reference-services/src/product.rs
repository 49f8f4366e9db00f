//! The product service: the catalog, read-only after seeding.
//!
//! Routes ([`routes`], over a [`ProductState`]): `GET /products` (a page, newest first, or a batch
//! by `ids`), `GET /products/{product_id}` (with `ETag` and `If-None-Match`) and `GET /categories`.
//! Every successful read carries `Cache-Control: public, max-age=N`.
//!
//! The [`Catalog`] keeps each product's JSON and entity tag serialized once, at seeding, and
//! indexes products by id and by category, so a read by id or batch never scans; listing pages
//! start with a binary search on the sort key and only scan to apply the `q` filter.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{FromRef, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    conditional,
    cursor::CursorKey,
    extract::{PathOf, QueryParams},
    problem::ApiError,
    reply, validate,
};

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
    /// Its JSON, served as is.
    json: Bytes,
    /// Its strong entity tag, derived from the JSON.
    etag: HeaderValue,
    /// Lower-cased name, so `q` does not lower-case the catalog on every request.
    name_lower: String,
    /// Lower-cased brand, for the same reason.
    brand_lower: String,
}

impl Entry {
    /// The listing's sort key: newest first, ties broken by id (descending), so the order is total.
    fn key(&self) -> (i64, &str) {
        (self.product.updated_at.unix_timestamp(), &self.product.id)
    }
}

/// The read-only catalog behind the product service.
#[derive(Debug)]
pub struct Catalog {
    /// Every product, in listing order (newest first).
    entries: Vec<Entry>,
    /// Index into `entries` by product id.
    by_id: HashMap<String, usize>,
    /// For each category, the indices into `entries` of its products, in listing order.
    by_category: HashMap<String, Vec<usize>>,
    /// The categories, in tree order.
    categories: Vec<Category>,
    /// `GET /categories`'s body, serialized once.
    categories_json: Bytes,
}

impl Catalog {
    /// Prepares a catalog: sorts, serializes and indexes the products.
    pub(crate) fn new(products: Vec<Product>, categories: Vec<Category>) -> Catalog {
        let mut entries: Vec<Entry> = products
            .into_iter()
            .map(|product| {
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
                    json,
                    etag,
                }
            })
            .collect();
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
            categories_json,
        }
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.entry(id).map(|entry| &entry.product)
    }

    /// Every product, newest first.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.entries.iter().map(|entry| &entry.product)
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
                Box::new(indices[start..].iter().map(|&index| &self.entries[index]))
            }
            None => {
                let start = after.map_or(0, |after| {
                    self.entries.partition_point(|entry| entry.key() >= after)
                });
                Box::new(self.entries[start..].iter())
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

/// What the product service's handlers read. The [`World`](crate::World) holds one and hands out
/// clones (`FromRef`); a clone is cheap and shares the catalog.
#[derive(Debug, Clone)]
pub struct ProductState {
    /// The catalog every read is answered from.
    catalog: Arc<Catalog>,
    /// Signs and checks the cursors of `GET /products`.
    cursor_key: CursorKey,
    /// `Cache-Control: public, max-age=N` of every read, built once.
    cache_control: HeaderValue,
}

impl ProductState {
    /// The state of a service answering from `catalog`, signing cursors with `cursor_key` and
    /// letting caches keep every read for `max_age`.
    pub(crate) fn new(catalog: Catalog, cursor_key: CursorKey, max_age: Duration) -> ProductState {
        ProductState {
            catalog: Arc::new(catalog),
            cursor_key,
            cache_control: reply::public_max_age(max_age.as_secs()),
        }
    }

    /// The catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
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

    let catalog = &state.catalog;
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
    let entry = state
        .catalog
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
        state.catalog.categories_json.clone(),
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

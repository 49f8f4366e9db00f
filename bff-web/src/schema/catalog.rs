//! The catalog part of the schema: products, categories, images, product pages. Public data,
//! served without a user.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use shared_clients::{
    Category, CategoryId, Image, InventoryStatus, Product, ProductId, ProductQuery,
};

use super::{
    error, limits,
    money::MoneyView,
    scope::{RequestScope, Services},
};

/// Longest search text the catalog accepts.
const MAX_SEARCH_CHARS: usize = 200;

/// A product of the catalog.
pub struct ProductView(pub Arc<Product>);

/// A product of the catalog, with everything a product card or page shows.
#[Object(name = "Product")]
impl ProductView {
    /// The product's id, e.g. `p-00001`.
    async fn id(&self) -> ID {
        ID::from(self.0.id.as_str())
    }

    /// The merchant's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.0.sku
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Brand name, when the product has one.
    async fn brand(&self) -> Option<&str> {
        self.0.brand.as_deref()
    }

    /// Long description, when the product has one.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// The price to pay now.
    async fn price(&self) -> MoneyView {
        MoneyView(self.0.price.clone())
    }

    /// The undiscounted price, only while the product is on sale.
    async fn list_price(&self) -> Option<MoneyView> {
        self.0.list_price.clone().map(MoneyView)
    }

    /// How much cheaper than `listPrice` the product is, in whole percent (rounded), only while
    /// it is on sale.
    async fn discount_percentage(&self) -> Option<i32> {
        discount_percentage(&self.0)
    }

    /// Whether and how many can be ordered.
    async fn availability(&self) -> Availability {
        Availability {
            status: self.0.inventory.status.into(),
            quantity: i32::try_from(self.0.inventory.available).unwrap_or(i32::MAX),
        }
    }

    /// Customers' rating, when the product has been rated.
    async fn rating(&self) -> Option<RatingView> {
        self.0.rating.as_ref().map(|rating| RatingView {
            average: rating.average,
            count: rating
                .count
                .map(|count| i32::try_from(count).unwrap_or(i32::MAX)),
        })
    }

    /// Every rendition of the product's pictures, largest first.
    async fn images(&self) -> Vec<ImageView> {
        self.0.images.iter().cloned().map(ImageView).collect()
    }

    /// The best rendition for a display `width` in pixels: the smallest at least that wide, else
    /// the largest. Without `width`, the largest. `null` when the product has no picture.
    async fn image(&self, ctx: &Context<'_>, width: Option<i32>) -> Result<Option<ImageView>> {
        let width = match width.map(|w| u32::try_from(w).ok().filter(|w| *w > 0)) {
            None => None,
            Some(Some(width)) => Some(width),
            Some(None) => {
                let refused = Err(error::bad_input("width", "`width` must be positive."));
                return error::or_null(ctx, refused);
            }
        };
        Ok(best_image(&self.0.images, width).cloned().map(ImageView))
    }

    /// Free-form attributes (colour, size, …).
    async fn attributes(&self) -> Vec<Attribute> {
        self.0
            .attributes
            .iter()
            .map(|(name, value)| Attribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// The category the product is listed under, resolved. `null` when it has none (or the
    /// category list cannot be loaded, with an error).
    async fn category(&self, ctx: &Context<'_>) -> Result<Option<CategoryView>> {
        let Some(id) = &self.0.category_id else {
            return Ok(None);
        };
        let result = categories(ctx)
            .await
            .map(|all| CategoryView::find(&all, id));
        error::or_null(ctx, result)
    }

    /// When the product last changed (RFC 3339).
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
}

/// `listPrice` over `price` in whole percent, when on sale in the same currency.
fn discount_percentage(product: &Product) -> Option<i32> {
    let list = product.list_price.as_ref()?;
    let price = &product.price;
    if list.currency != price.currency || list.amount_minor <= 0 {
        return None;
    }
    let saved = list.amount_minor.checked_sub(price.amount_minor)?;
    if saved <= 0 {
        return None;
    }
    let percent = (i128::from(saved) * 100 + i128::from(list.amount_minor) / 2)
        / i128::from(list.amount_minor);
    i32::try_from(percent).ok()
}

/// The smallest rendition at least `width` wide, else the largest (see `Product.image`).
fn best_image(images: &[Image], width: Option<u32>) -> Option<&Image> {
    let largest = images.iter().max_by_key(|image| image.width);
    let Some(width) = width else {
        return largest;
    };
    images
        .iter()
        .filter(|image| image.width >= width)
        .min_by_key(|image| image.width)
        .or(largest)
}

/// Whether a product can be ordered.
#[derive(SimpleObject)]
pub struct Availability {
    /// In stock, low, or out of stock.
    pub status: AvailabilityStatus,
    /// Units available to order now.
    pub quantity: i32,
}

/// A summary of a product's stock, for badges.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum AvailabilityStatus {
    /// Plenty available.
    InStock,
    /// Only a few left.
    LowStock,
    /// None available.
    OutOfStock,
}

impl From<InventoryStatus> for AvailabilityStatus {
    fn from(status: InventoryStatus) -> Self {
        match status {
            InventoryStatus::InStock => Self::InStock,
            InventoryStatus::LowStock => Self::LowStock,
            InventoryStatus::OutOfStock => Self::OutOfStock,
        }
    }
}

/// Customers' rating of a product.
#[derive(SimpleObject)]
#[graphql(name = "Rating")]
pub struct RatingView {
    /// Mean rating from 0 to 5, when known.
    pub average: Option<f64>,
    /// How many ratings the average is based on, when known.
    pub count: Option<i32>,
}

/// A named attribute of a product, e.g. `colour: red`.
#[derive(SimpleObject)]
pub struct Attribute {
    /// The attribute's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// One rendition of a product picture.
pub struct ImageView(pub Image);

/// One rendition of a product picture.
#[Object(name = "Image")]
impl ImageView {
    /// Where the picture is served from.
    async fn url(&self) -> &str {
        &self.0.url
    }

    /// Width in pixels.
    async fn width(&self) -> i32 {
        i32::try_from(self.0.width).unwrap_or(i32::MAX)
    }

    /// Height in pixels.
    async fn height(&self) -> i32 {
        i32::try_from(self.0.height).unwrap_or(i32::MAX)
    }

    /// Alternative text, for accessibility.
    async fn alt(&self) -> Option<&str> {
        self.0.alt.as_deref()
    }
}

/// A category, with the whole list at hand so `parent` and `children` need no further call.
pub struct CategoryView {
    /// This category.
    category: Category,
    /// Every category (shared, from the catalog cache).
    all: Arc<Vec<Category>>,
}

impl CategoryView {
    /// The category `id` of `all`, if it exists.
    pub fn find(all: &Arc<Vec<Category>>, id: &CategoryId) -> Option<Self> {
        all.iter().find(|c| &c.id == id).map(|category| Self {
            category: category.clone(),
            all: Arc::clone(all),
        })
    }

    /// Every category of `all`, in the service's order.
    pub fn list(all: &Arc<Vec<Category>>) -> Vec<Self> {
        all.iter()
            .map(|category| Self {
                category: category.clone(),
                all: Arc::clone(all),
            })
            .collect()
    }
}

/// A catalog category. Categories form a tree: follow `parent` up or `children` down.
#[Object(name = "Category")]
impl CategoryView {
    /// The category's id, usable as `products(categoryId:)`.
    async fn id(&self) -> ID {
        ID::from(self.category.id.as_str())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.category.name
    }

    /// The enclosing category; `null` for a top-level one.
    async fn parent(&self) -> Option<CategoryView> {
        let parent = self.category.parent_id.as_ref()?;
        Self::find(&self.all, parent)
    }

    /// The categories directly below this one.
    #[graphql(complexity = "category_list_cost(CHILDREN_WEIGHT, child_complexity)")]
    async fn children(&self) -> Vec<CategoryView> {
        self.all
            .iter()
            .filter(|c| c.parent_id.as_ref() == Some(&self.category.id))
            .map(|category| Self {
                category: category.clone(),
                all: Arc::clone(&self.all),
            })
            .collect()
    }

    /// A page of this category's products, newest first; `null` with an error when the
    /// catalog cannot be listed.
    #[graphql(complexity = "page_cost(first, child_complexity).saturating_add(LIST_CALL_COST)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "`pageInfo.endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<Option<ProductConnection>> {
        let result = product_page(ctx, first, after, Some(self.category.id.clone()), None).await;
        error::or_null(ctx, result.map(Some))
    }
}

/// What a category's `products` costs on top of its page: one catalog call per category (the
/// catalog has no listing of several categories at once), never cached.
pub const LIST_CALL_COST: usize = 50;

/// How many categories `categories` is counted as, and [`CHILDREN_WEIGHT`] how many a category's
/// `children` are: complexity is computed before anything is resolved, so a list's real length is
/// unknown; these bound what a selection under them may cost (e.g. a `products` page, one catalog
/// call, per category).
pub const CATEGORY_LIST_WEIGHT: usize = 20;

/// See [`CATEGORY_LIST_WEIGHT`].
pub const CHILDREN_WEIGHT: usize = 5;

/// The complexity of a list of `weight` categories, each costing `child_complexity`.
pub fn category_list_cost(weight: usize, child_complexity: usize) -> usize {
    weight.saturating_mul(child_complexity).saturating_add(1)
}

/// The complexity of a list field: the page it fetches (the configured default without `first`,
/// `first` clamped to the configured max: see [`limits::counted_pages`]) times what each item
/// costs.
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let size = usize::try_from(limits::counted_pages().counted(first)).unwrap_or(usize::MAX);
    size.saturating_mul(child_complexity).saturating_add(1)
}

/// Every category, from the catalog's cache.
pub async fn categories(ctx: &Context<'_>) -> Result<Arc<Vec<Category>>> {
    let scope = RequestScope::of(ctx)?;
    let served = Services::of(ctx)?
        .downstream
        .catalog()
        .categories(&scope.context)
        .await
        .map_err(|e| error::downstream(&e))?;
    scope.staleness.record("categories", served.freshness);
    scope.contents.read_categories(served.lifetime);
    Ok(served.value)
}

/// One product by id: at once when the cache holds it fresh, else through the request's loader
/// (batched with the other lookups of this tick). `None` when it does not exist.
pub async fn load_product(ctx: &Context<'_>, id: &ProductId) -> Result<Option<ProductView>> {
    // A cache hit needs no batching: answering it here spares the loader's batching delay.
    let catalog = Services::of(ctx)?.downstream.catalog();
    let scope = RequestScope::of(ctx)?;
    if let Some(served) = catalog.fresh_product(id).await {
        scope.contents.read([id], served.lifetime);
        return Ok(Some(ProductView(served.into_inner())));
    }
    let product = scope
        .products
        .load_one(id.clone())
        .await
        .map_err(|e| error::downstream(&e))?;
    Ok(product.map(ProductView))
}

/// One page of the catalog.
pub async fn product_page(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
    category: Option<CategoryId>,
    search: Option<String>,
) -> Result<ProductConnection> {
    let services = Services::of(ctx)?;
    let scope = RequestScope::of(ctx)?;
    // A page is not followed by tags here (a new product enters lists without naming them).
    scope.contents.unshareable();
    let limit = services.pages.resolve(first)?;
    if let Some(q) = &search
        && q.chars().count() > MAX_SEARCH_CHARS
    {
        return Err(error::bad_input(
            "search",
            "`search` is at most 200 characters.",
        ));
    }
    if after.as_deref().is_some_and(str::is_empty) {
        return Err(error::bad_input("after", "`after` must not be empty."));
    }
    let query = ProductQuery {
        category,
        q: search.filter(|q| !q.is_empty()),
        cursor: after,
        limit: Some(limit),
    };
    let page = services
        .downstream
        .catalog()
        .list(&scope.context, &query)
        .await
        .map_err(|e| match e.kind() {
            // The only input the service can refuse here is a cursor it did not issue.
            shared_clients::ErrorKind::Invalid => {
                error::bad_input("after", "`after` is not a cursor this API issued.")
            }
            _ => error::downstream(&e),
        })?;
    // Feed the loader, so `product` fields elsewhere in this request need no call.
    scope
        .products
        .feed_many(page.items.iter().map(|p| (p.id.clone(), Arc::clone(p))))
        .await;
    Ok(ProductConnection {
        nodes: page.items,
        end_cursor: page.next_cursor,
    })
}

/// A page of products (Relay-style: `edges`/`nodes` and `pageInfo`).
pub struct ProductConnection {
    /// The products of this page.
    nodes: Vec<Arc<Product>>,
    /// The cursor that continues after this page, `None` on the last page.
    end_cursor: Option<String>,
}

/// A page of products.
#[Object]
impl ProductConnection {
    /// The products of this page, each wrapped in an edge.
    async fn edges(&self) -> Vec<ProductEdge> {
        self.nodes
            .iter()
            .map(|p| ProductEdge(Arc::clone(p)))
            .collect()
    }

    /// The products of this page.
    async fn nodes(&self) -> Vec<ProductView> {
        self.nodes
            .iter()
            .map(|p| ProductView(Arc::clone(p)))
            .collect()
    }

    /// Where this page ends and whether another follows.
    async fn page_info(&self) -> PageInfo {
        PageInfo::forward(self.end_cursor.clone())
    }
}

/// One product of a page.
pub struct ProductEdge(Arc<Product>);

/// One product of a page.
#[Object]
impl ProductEdge {
    /// The product.
    async fn node(&self) -> ProductView {
        ProductView(Arc::clone(&self.0))
    }
}

/// Where a page ends. Pages are forward-only: pass `endCursor` as `after` for the next one.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether another page follows.
    pub has_next_page: bool,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub end_cursor: Option<String>,
}

impl PageInfo {
    /// The page info of a forward page continued by `next`.
    pub fn forward(next: Option<String>) -> Self {
        Self {
            has_next_page: next.is_some(),
            end_cursor: next,
        }
    }
}

/// Checks that the code of an error is `code` (tests).
#[cfg(test)]
fn code_of(error: &async_graphql::Error) -> Option<String> {
    error
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32) -> Image {
        Image {
            url: format!("/{width}.jpg"),
            width,
            height: width,
            alt: None,
        }
    }

    #[test]
    fn the_best_image_is_the_smallest_wide_enough_else_the_largest() {
        let images = [image(1200), image(600), image(300)];
        assert_eq!(best_image(&images, Some(500)).unwrap().width, 600);
        assert_eq!(best_image(&images, Some(300)).unwrap().width, 300);
        assert_eq!(best_image(&images, Some(5000)).unwrap().width, 1200);
        assert_eq!(best_image(&images, None).unwrap().width, 1200);
        assert!(best_image(&[], Some(10)).is_none());
    }

    #[test]
    fn page_sizes_out_of_range_are_bad_user_input() {
        let pages = super::super::scope::PageSizes {
            default: 20,
            max: 100,
        };
        assert_eq!(pages.resolve(None).unwrap(), 20);
        assert_eq!(pages.resolve(Some(100)).unwrap(), 100);
        for bad in [0, -1, 101] {
            let error = pages.resolve(Some(bad)).unwrap_err();
            assert_eq!(code_of(&error).as_deref(), Some("\"BAD_USER_INPUT\""));
        }
    }

    #[test]
    fn pages_are_counted_at_the_size_they_are_fetched_at_clamped() {
        let pages = super::super::scope::PageSizes { default: 7, max: 9 };
        assert_eq!(pages.counted(None), 7);
        assert_eq!(pages.counted(Some(3)), 3);
        assert_eq!(pages.counted(Some(9)), 9);
        assert_eq!(pages.counted(Some(500)), 9);
        assert_eq!(pages.counted(Some(0)), 1);
        assert_eq!(pages.counted(Some(i32::MIN)), 1);
    }
}

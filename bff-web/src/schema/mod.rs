//! The GraphQL schema of the web app: types, resolvers, the per-request product loader and the
//! document limits. Knows nothing of HTTP: the transport (`crate::graphql`) authenticates the
//! request, builds its [`RequestScope`] and executes it here.
//!
//! - `catalog`: products, categories, images and product pages (public).
//! - `viewer`: the signed-in user, their cart and orders (private).
//! - `mutation`: cart changes and checkout.
//! - `subscription`: live products, the viewer's cart and orders (fed by the change events).
//! - `money`: amounts and their display strings.
//! - `loader`: [`ProductLoader`](loader::ProductLoader), the per-request DataLoader.
//! - `scope`: [`RequestScope`] (per request) and [`Services`] (shared).
//! - `staleness`: [`Staleness`](staleness::Staleness), what of one answer was served stale from
//!   the cache.
//! - `contents`: [`Contents`](contents::Contents), what one answer was made of (tags, lifetime,
//!   whether it may be shared), for the response cache.
//! - `limits`: depth, complexity, alias and root-field limits and pre-execution error codes.
//! - `error`: the error codes and the mapping of downstream failures.

pub mod catalog;
pub mod contents;
pub mod error;
pub mod limits;
pub mod loader;
pub mod money;
pub mod mutation;
pub mod scope;
pub mod staleness;
pub mod subscription;
pub mod viewer;

use async_graphql::{Context, ID, Object, Result, Schema};
use shared_clients::{CategoryId, ProductId};

use self::{
    catalog::{CategoryView, ProductConnection, ProductView, categories, load_product, page_cost},
    error::Code,
    limits::Limits,
    mutation::MutationRoot,
    subscription::SubscriptionRoot,
    viewer::Viewer,
};
pub use self::{
    limits::Executed,
    scope::{Identity, LiveScope, PageSizes, RequestScope, Services},
};

/// The schema type of the web gateway.
pub type WebSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// How the schema is built.
#[derive(Debug, Clone, Copy)]
pub struct SchemaOptions {
    /// The document limits.
    pub limits: Limits,
    /// Whether `__schema` / `__type` may be queried.
    pub introspection: bool,
    /// Whether every validation rule runs on each request (`false`: only those that depend on
    /// the request's variables — complexity, depth — for documents validated in full before,
    /// the trusted documents).
    pub full_validation: bool,
}

/// Builds the schema over `services`.
pub fn build(services: Services, options: SchemaOptions) -> WebSchema {
    let builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(services)
        .extension(options.limits);
    let builder = if options.introspection {
        builder
    } else {
        builder.disable_introspection()
    };
    let builder = if options.full_validation {
        builder
    } else {
        builder.validation_mode(async_graphql::ValidationMode::Fast)
    };
    builder.finish()
}

/// The schema's SDL, as checked in at `bff-web/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}

/// The root of every query.
pub struct QueryRoot;

/// What the web app can read: the catalog (anonymously) and the signed-in viewer.
#[Object(name = "Query")]
impl QueryRoot {
    /// One product by id; `null` with `NOT_FOUND` when it does not exist.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ProductView>> {
        let result = async {
            let id = ProductId::parse(&id).map_err(|e| error::invalid_id("id", &e))?;
            match load_product(ctx, &id).await? {
                Some(product) => Ok(Some(product)),
                None => Err(error::coded(Code::NotFound, "There is no such product.")),
            }
        }
        .await;
        error::or_null(ctx, result)
    }

    /// A page of the catalog, newest first, optionally filtered by category and by a text search
    /// on name and brand. `null` with an error when the catalog cannot be listed.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "`pageInfo.endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only products of this category.")] category_id: Option<ID>,
        #[graphql(desc = "Only products whose name or brand contains this text \
                          (case-insensitive, at most 200 characters).")]
        search: Option<String>,
    ) -> Result<Option<ProductConnection>> {
        let result = async {
            let category = category_id
                .map(|id| CategoryId::parse(&id).map_err(|e| error::invalid_id("categoryId", &e)))
                .transpose()?;
            catalog::product_page(ctx, first, after, category, search)
                .await
                .map(Some)
        }
        .await;
        error::or_null(ctx, result)
    }

    /// Every category, top-level ones and their descendants alike; follow `parent`/`children`
    /// for the tree. `null` with an error when the categories cannot be loaded.
    #[graphql(
        complexity = "catalog::category_list_cost(catalog::CATEGORY_LIST_WEIGHT, child_complexity)"
    )]
    async fn categories(&self, ctx: &Context<'_>) -> Result<Option<Vec<CategoryView>>> {
        let result = categories(ctx)
            .await
            .map(|all| Some(CategoryView::list(&all)));
        error::or_null(ctx, result)
    }

    /// One category by id; `null` with `NOT_FOUND` when it does not exist.
    async fn category(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CategoryView>> {
        let result = async {
            let id = CategoryId::parse(&id).map_err(|e| error::invalid_id("id", &e))?;
            match CategoryView::find(&categories(ctx).await?, &id) {
                Some(category) => Ok(Some(category)),
                None => Err(error::coded(Code::NotFound, "There is no such category.")),
            }
        }
        .await;
        error::or_null(ctx, result)
    }

    /// The signed-in user. `null` with `UNAUTHENTICATED` (and `extensions.reason`) without a
    /// valid bearer token.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Option<Viewer>> {
        let result = RequestScope::of(ctx)
            .and_then(|scope| scope.user())
            .map(|user| Some(Viewer { user: user.clone() }));
        error::or_null(ctx, result)
    }
}

//! The cached catalog: what the gateways call to read products and categories.
//!
//! Products and categories are public, so they are cached once for everyone, keyed by id, for as
//! long as the service's `max-age` allows (bounded by the configured `max_ttl`), then served stale
//! while one background call refreshes them, or instead of an error while the service fails (see
//! `crate::cache::public` for the rules and `crate::cache::served` for how every answer states its freshness).
//! Product 404s are remembered briefly (negative caching). Misses are coalesced: a burst of
//! requests for one product makes one downstream call, and a refresh of a single product is a
//! conditional request (`If-None-Match`) when its `ETag` is known.
//!
//! [`Catalog::products`] is the batch path (GraphQL DataLoaders, cart and order views): it answers
//! cached ids from the cache, fetches only the others in batch calls of at most
//! [`MAX_BATCH`] ids issued concurrently, and joins fetches already in flight for any of them —
//! whether those are single reads, other batches or background refreshes. Stale ids are answered
//! at once and refreshed together, in the background, in batch calls.
//!
//! A coalesced fetch runs with the context (request id, trace, deadline) of the caller that
//! started it; the callers that join it wait for that one call until their own deadlines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::cache::coalesce::{Claim, Joined, Leader};
use crate::cache::l2::{L2, Lease};
use crate::cache::public::{Entry, FreshCache, Lookup, Shared, Update, Windows};
use crate::cache::served::{Freshness, Lifetime, Served};
use crate::cache::tags::{Tag, TagIndex};
use crate::config::CacheConfig;
use crate::context::RequestContext;
use crate::error::{ClientError, ErrorKind, Failure, Service};
use crate::events::Health;
use crate::id::{CategoryId, ProductId};
use crate::metrics::CacheMetricsSnapshot;
use crate::model::product::{Category, Product, ProductPage, ProductQuery};
use crate::product::{MAX_BATCH, ProductClient, Revalidated};
use crate::shared_state::SharedState;
use crate::trace_context::shared_call_span;

/// Share of the cache budget given to the category list (a small, single entry).
const CATEGORY_BUDGET_DIVISOR: u64 = 16;

/// The share of the catalog budget given to pages (one eighth).
const PAGE_BUDGET_DIVISOR: u64 = 8;

/// Most (tag, page) pairs the page index remembers.
const MAX_TAG_PAIRS: usize = 500_000;

/// The answer to [`Catalog::products`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductsFound {
    /// The products found, each once, in the order their ids were first asked for.
    pub found: Vec<Arc<Product>>,
    /// The ids asked for that do not exist, each once, in the order asked.
    pub missing: Vec<ProductId>,
    /// The least fresh of the found products (fresh with age zero when none was found), for a
    /// gateway that states one freshness per answer.
    pub freshness: Freshness,
    /// The found products that were served stale, with their age; empty when every product is
    /// fresh. For a gateway that marks stale parts individually.
    pub stale: BTreeMap<ProductId, std::time::Duration>,
    /// The shortest [`Lifetime`] of the found products (zero when none was found).
    pub lifetime: Lifetime,
}

impl ProductsFound {
    /// The found products by id (the shape a GraphQL DataLoader returns).
    pub fn into_map(self) -> HashMap<ProductId, Arc<Product>> {
        self.found
            .into_iter()
            .map(|product| (product.id.clone(), product))
            .collect()
    }

    /// Whether any found product was served stale.
    pub fn is_stale(&self) -> bool {
        self.freshness.is_stale()
    }
}

/// Cached reads of the catalog service. Built by [`Downstream`](crate::Downstream).
pub struct Catalog {
    /// The raw client, for misses; shared with background refreshes.
    client: Arc<ProductClient>,
    /// Products by id, shared by every caller and every gateway request.
    products: FreshCache<ProductId, Product>,
    /// The category list (a single entry).
    categories: FreshCache<(), Vec<Category>>,
    /// Catalog pages by query (off when `page_ttl` is 0).
    pages: Option<FreshCache<ProductQuery, ProductPage>>,
    /// Which products and categories each cached page shows.
    tags: Arc<TagIndex<ProductQuery>>,
    /// Told of every change dropped from the catalog (see [`Catalog::on_change`]).
    listeners: std::sync::RwLock<Vec<Listener>>,
}

/// A function told of catalog changes.
type Listener = Arc<dyn Fn(CatalogChange<'_>) + Send + Sync>;

/// What a change dropped from the catalog cache, as told to [`Catalog::on_change`] listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogChange<'a> {
    /// One product changed or was deleted (whatever showed it, and any list, is stale).
    Product(&'a ProductId),
    /// The category list changed.
    Categories,
    /// Everything may have changed (events were missed).
    All,
}

impl Catalog {
    /// A catalog reading through `client`, caching as `config` says, in this process alone.
    pub fn new(client: ProductClient, config: &CacheConfig) -> Self {
        Self::with_shared(client, config, &SharedState::disabled(), None)
    }

    /// As [`Catalog::new`], with a second level in Redis shared by every replica when `shared`
    /// has one (see `shared.catalog_l2`).
    /// `events`, when change events are read, vouches for the longer freshness of
    /// `event_driven_max_ttl`.
    pub(crate) fn with_shared(
        client: ProductClient,
        config: &CacheConfig,
        shared: &SharedState,
        events: Option<&Arc<Health>>,
    ) -> Self {
        let category_bytes = config.max_bytes / CATEGORY_BUDGET_DIVISOR;
        let page_bytes = config.max_bytes / PAGE_BUDGET_DIVISOR;
        let keep_past_fresh = config.stale_while_revalidate.max(config.stale_if_error);
        let extension = events
            .filter(|_| !config.event_driven_max_ttl.is_zero())
            .map(|health| (Arc::clone(health), config.event_driven_max_ttl));
        Self {
            client: Arc::new(client),
            products: FreshCache::with_levels(
                "products",
                Service::Product,
                Windows::from_config(config, true),
                config.max_bytes - category_bytes - page_bytes,
                L2::new(
                    shared,
                    |id: &ProductId| format!("cat:p:{}", id.as_str()),
                    keep_past_fresh,
                ),
                extension.clone(),
            ),
            categories: FreshCache::with_levels(
                "categories",
                Service::Product,
                Windows::from_config(config, false),
                category_bytes,
                L2::new(
                    shared,
                    |_: &()| "cat:categories".to_owned(),
                    keep_past_fresh,
                ),
                extension.clone(),
            ),
            pages: (!config.page_ttl.is_zero()).then(|| {
                FreshCache::with_levels(
                    "pages",
                    Service::Product,
                    Windows {
                        max_ttl: config.page_ttl,
                        ..Windows::from_config(config, false)
                    },
                    page_bytes,
                    None,
                    extension,
                )
            }),
            tags: Arc::new(TagIndex::new(MAX_TAG_PAIRS)),
            listeners: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Calls `listener` with every change this catalog drops from its cache (a change event, a
    /// change a live poll found, or a gap: everything), after the cached copy is gone, so a
    /// cache built from catalog values (bff-web's response cache) can drop what it built from
    /// them. Called on the event consumer's task: it must be quick and must not block.
    pub fn on_change(&self, listener: impl Fn(CatalogChange<'_>) + Send + Sync + 'static) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(Arc::new(listener));
        }
    }

    /// Tells every listener of `change`.
    fn tell(&self, change: CatalogChange<'_>) {
        let Ok(listeners) = self.listeners.read() else {
            return;
        };
        for listener in listeners.iter() {
            listener(change);
        }
    }

    /// The raw catalog client, for uncached calls (e.g. conditional reads).
    pub fn client(&self) -> &ProductClient {
        &self.client
    }

    /// The product `id` this process holds, fresh or not (nothing is fetched).
    pub(crate) async fn cached(&self, id: &ProductId) -> Option<Arc<Product>> {
        self.products.peek(id).await
    }

    /// One product: fresh from the cache, stale from the cache (while it is refreshed in the
    /// background, or when the service fails), or from the service. [`NotFound`](ErrorKind::NotFound)
    /// if it does not exist (remembered for the configured `negative_ttl`).
    pub async fn product(
        &self,
        ctx: &RequestContext,
        id: &ProductId,
    ) -> Result<Served<Arc<Product>>, ClientError> {
        let client = Arc::clone(&self.client);
        let key = id.clone();
        self.products
            .get(ctx, id, move |ctx, previous: Option<Entry<Product>>| {
                let (client, id) = (Arc::clone(&client), key.clone());
                async move { fetch_product(&client, &ctx, &id, previous).await }
            })
            .await
    }

    /// One product if the cache holds it fresh (counted as a hit), else `None` with no call and no
    /// other effect: lets a caller that batches its lookups (bff-web's DataLoader) answer cache
    /// hits at once and batch only the rest.
    pub async fn fresh_product(&self, id: &ProductId) -> Option<Served<Arc<Product>>> {
        match self.products.lookup(id).await {
            Lookup::Fresh(entry) => {
                self.products.count(|m| &m.hits);
                Some(entry.served(Instant::now()))
            }
            _ => None,
        }
    }

    /// Many products by id. Duplicate ids are answered once. Cached ids come from the cache
    /// (stale ones at once, refreshed together in the background); the others are fetched in
    /// concurrent batch calls of at most [`MAX_BATCH`] ids each (ids being fetched by a concurrent
    /// call are awaited instead of fetched again), then cached.
    ///
    /// Unknown ids are listed in [`ProductsFound::missing`]. Any other failure fails the whole
    /// call — unless every product it concerns has a stale entry inside its stale-if-error window,
    /// which is then served (and listed in [`ProductsFound::stale`]) — so an answer is never
    /// silently incomplete.
    pub async fn products(
        &self,
        ctx: &RequestContext,
        ids: &[ProductId],
    ) -> Result<ProductsFound, ClientError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<&ProductId> = ids.iter().filter(|id| seen.insert(*id)).collect();

        let mut found: HashMap<&ProductId, Served<Arc<Product>>> =
            HashMap::with_capacity(unique.len());
        let mut missing: HashSet<&ProductId> = HashSet::new();
        // Expired entries of the ids to fetch, which may replace a failure.
        let mut previous: HashMap<&ProductId, Entry<Product>> = HashMap::new();
        let mut pending = Vec::new();
        let mut refresh = Vec::new();
        let now = Instant::now();
        for &id in &unique {
            match self.products.lookup(id).await {
                Lookup::Fresh(entry) => {
                    self.products.count(|m| &m.hits);
                    found.insert(id, entry.served(now));
                }
                Lookup::Stale(entry) => {
                    self.products.count(|m| &m.stale_served);
                    found.insert(id, entry.served(now));
                    if let Claim::Leader(leader) = self.products.claim(id) {
                        refresh.push((id.clone(), leader));
                    }
                }
                Lookup::Absent => {
                    self.products.count(|m| &m.negative_hits);
                    missing.insert(id);
                }
                Lookup::Expired(entry) => {
                    self.products.count(|m| &m.misses);
                    if let Some(entry) = entry {
                        previous.insert(id, entry);
                    }
                    pending.push(id);
                }
            }
        }
        self.refresh_in_background(ctx, refresh);

        let mut failure = None;
        // Each round fetches what nobody else is fetching and awaits the rest. A key goes round
        // again only if the call fetching it was cancelled, or ran out of its caller's budget.
        while !pending.is_empty() {
            let mut leaders = Vec::new();
            let mut followers = Vec::new();
            for id in pending.drain(..) {
                match self.products.claim(id) {
                    Claim::Leader(leader) => leaders.push((id.clone(), leader)),
                    Claim::Follower(follower) => followers.push((id, follower)),
                }
            }
            let deadline = ctx.deadline();
            let (fetched, followed) = futures::join!(
                fetch_batches(&self.client, &self.products, ctx, leaders),
                join_all(followers.into_iter().map(|(id, follower)| async move {
                    (id, follower.wait_within(deadline).await)
                }))
            );
            let by_id: HashMap<ProductId, Shared<Product>> = fetched.into_iter().collect();
            let fetched = unique.iter().filter_map(|id| {
                by_id
                    .get(*id)
                    .map(|outcome| (*id, Joined::Done(outcome.clone())))
            });
            for (id, outcome) in fetched.chain(followed) {
                let outcome = match outcome {
                    Joined::Done(outcome) => outcome,
                    Joined::Again => {
                        pending.push(id);
                        continue;
                    }
                    Joined::TimedOut => Err(self.products.deadline_error()),
                };
                match outcome {
                    Ok(entry) => {
                        found.insert(id, entry.served_fresh(Instant::now()));
                    }
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        missing.insert(id);
                    }
                    Err(err) => match self.products.stale_if_error(previous.get(id), err) {
                        Ok(stale) => {
                            found.insert(id, stale);
                        }
                        Err(err) => {
                            failure.get_or_insert(err);
                        }
                    },
                }
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }

        let mut answer = ProductsFound {
            found: Vec::with_capacity(found.len()),
            missing: Vec::with_capacity(missing.len()),
            ..ProductsFound::default()
        };
        let mut lifetime = None::<Lifetime>;
        for id in unique {
            if let Some(served) = found.remove(id) {
                answer.freshness = answer.freshness.worst(served.freshness);
                lifetime = Some(lifetime.map_or(served.lifetime, |l| l.shortest(served.lifetime)));
                if served.is_stale() {
                    answer.stale.insert(id.clone(), served.age());
                }
                answer.found.push(served.into_inner());
            } else if missing.contains(id) {
                answer.missing.push(id.clone());
            }
        }
        answer.lifetime = lifetime.unwrap_or_default();
        Ok(answer)
    }

    /// Refreshes stale products whose claims this call holds, in batch calls, in a background
    /// task (nobody waits for it; it is not bounded by the reader's deadline).
    fn refresh_in_background(
        &self,
        ctx: &RequestContext,
        leaders: Vec<(ProductId, Leader<ProductId, Shared<Product>>)>,
    ) {
        if leaders.is_empty() {
            return;
        }
        for _ in &leaders {
            self.products.count(|m| &m.refreshes);
        }
        let client = Arc::clone(&self.client);
        let products = self.products.clone();
        let ctx = ctx.clone().without_deadline();
        let refresh = async move {
            let outcomes = fetch_batches(&client, &products, &ctx, leaders).await;
            for (_, outcome) in outcomes {
                if outcome.is_err_and(|err| err.kind() != ErrorKind::NotFound) {
                    products.count(|m| &m.refresh_failures);
                }
            }
        };
        tokio::spawn(refresh.in_current_span());
    }

    /// Every category: fresh or stale from the cache, or from the service (see
    /// [`Catalog::product`] for the rules; there is no negative caching).
    pub async fn categories(
        &self,
        ctx: &RequestContext,
    ) -> Result<Served<Arc<Vec<Category>>>, ClientError> {
        let client = Arc::clone(&self.client);
        self.categories
            .get(ctx, &(), move |ctx, _previous| {
                let client = Arc::clone(&client);
                async move {
                    let fetched = client.categories(&ctx).await?;
                    Ok(Update::New {
                        value: Arc::new(fetched.value),
                        fresh_for: fetched.cache_control.fresh_for(),
                        etag: fetched.etag,
                    })
                }
            })
            .await
    }

    /// One page of the catalog: from the page cache while fresh (`page_ttl`, or longer while
    /// change events vouch for it), else from the service, coalesced per query. The products
    /// on it are cached too, so a page followed by product reads costs one call. A page is
    /// tagged with its products and category filter, and dropped by the events that touch them.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        query: &ProductQuery,
    ) -> Result<ProductPage, ClientError> {
        let Some(pages) = &self.pages else {
            let started = Instant::now();
            let page = self.client.list(ctx, query).await?;
            keep_listed(&self.products, &page, started).await;
            return Ok(page.value);
        };
        let client = Arc::clone(&self.client);
        let products = self.products.clone();
        let tags = Arc::clone(&self.tags);
        let cache = pages.clone();
        let key = query.clone();
        let served = pages
            .get(ctx, query, move |ctx, _previous| {
                let (client, products) = (Arc::clone(&client), products.clone());
                let (tags, cache, key) = (Arc::clone(&tags), cache.clone(), key.clone());
                async move {
                    let started = Instant::now();
                    let page = client.list(&ctx, &key).await?;
                    keep_listed(&products, &page, started).await;
                    let page_tags = tags_of(&key, &page.value);
                    let tagged = tags.add(&key, &page_tags);
                    if !tagged {
                        // The index was full and emptied: no page may outlive its tags.
                        cache.evict_all();
                    }
                    // An event that touched the page (or a clear of the index) while it was
                    // fetched, or a page whose tags could not be kept: answer, keep nothing.
                    let keep = tagged && !tags.dropped_since(&page_tags, started).await;
                    Ok(Update::New {
                        value: Arc::new(page.value),
                        fresh_for: page.cache_control.fresh_for().filter(|_| keep),
                        etag: None,
                    })
                }
            })
            .await?;
        Ok(ProductPage::clone(&served.into_inner()))
    }

    /// Drops a product that changed (a change event), here and in L2, and the pages that show
    /// it. A product that still `exists` may also have moved in or within lists (a listing's
    /// order may follow any change), so the unfiltered pages go too, and those of its old
    /// category (as cached here) and its new one (as the event says); when neither is known,
    /// every category's pages.
    pub(crate) async fn product_changed(
        &self,
        id: &ProductId,
        category: Option<&CategoryId>,
        exists: bool,
    ) {
        let cached = match self.products.lookup(id).await {
            Lookup::Fresh(entry) | Lookup::Stale(entry) | Lookup::Expired(Some(entry)) => {
                entry.value().category_id.clone()
            }
            Lookup::Expired(None) | Lookup::Absent => None,
        };
        self.products.evict(id, true).await;
        self.tell(CatalogChange::Product(id));
        self.drop_pages(&Tag::Product(id.clone())).await;
        if !exists {
            return;
        }
        self.drop_pages(&Tag::Unfiltered).await;
        let categories: Vec<&CategoryId> = cached.iter().chain(category).collect();
        if categories.is_empty() {
            self.drop_pages(&Tag::Filtered).await;
        }
        for category in categories {
            self.drop_pages(&Tag::Category(category.clone())).await;
        }
    }

    /// Drops the category list and the pages of `category` (it changed), here and in L2.
    pub(crate) async fn category_changed(&self, category: &CategoryId) {
        self.categories.evict(&(), true).await;
        self.tell(CatalogChange::Categories);
        self.drop_pages(&Tag::Category(category.clone())).await;
    }

    /// Drops the pages tagged `tag`.
    async fn drop_pages(&self, tag: &Tag) {
        let pages = self.tags.take(tag).await;
        if let Some(cache) = &self.pages {
            for page in pages {
                cache.evict(&page, false).await;
            }
        }
    }

    /// Drops everything from this replica's memory (change events were missed).
    pub(crate) fn forget_all(&self) {
        self.products.evict_all();
        self.categories.evict_all();
        self.forget_pages();
        self.tell(CatalogChange::All);
    }

    /// Drops every page.
    fn forget_pages(&self) {
        self.tags.clear();
        if let Some(pages) = &self.pages {
            pages.evict_all();
        }
    }

    /// The counters and sizes of the product, category and page caches.
    pub(crate) fn metrics(&self) -> Vec<CacheMetricsSnapshot> {
        let mut caches = vec![self.products.metrics(), self.categories.metrics()];
        caches.extend(self.pages.as_ref().map(FreshCache::metrics));
        caches
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// Keeps the products of a page fetched at `started` in the product cache.
async fn keep_listed(
    products: &FreshCache<ProductId, Product>,
    page: &crate::product::Fetched<ProductPage>,
    started: Instant,
) {
    let Some(fresh_for) = page.cache_control.fresh_for() else {
        return;
    };
    for product in &page.value.items {
        let update = Update::New {
            value: Arc::clone(product),
            fresh_for: Some(fresh_for),
            etag: None,
        };
        // Storing a new value cannot fail.
        let _ = products.store(&product.id, update, None, started).await;
    }
}

/// The tags of a page: its products, and its category filter (or unfiltered).
fn tags_of(query: &ProductQuery, page: &ProductPage) -> Vec<Tag> {
    let mut tags = Vec::with_capacity(page.items.len() + 2);
    match &query.category {
        Some(category) => tags.extend([Tag::Category(category.clone()), Tag::Filtered]),
        None => tags.push(Tag::Unfiltered),
    }
    tags.extend(page.items.iter().map(|item| Tag::Product(item.id.clone())));
    tags
}

/// One product from the service: conditionally (`If-None-Match`) when the expired entry has an
/// entity tag, so an unchanged product costs a 304 without a body.
async fn fetch_product(
    client: &ProductClient,
    ctx: &RequestContext,
    id: &ProductId,
    previous: Option<Entry<Product>>,
) -> Result<Update<Product>, ClientError> {
    if let Some(etag) = previous.as_ref().and_then(Entry::etag) {
        return Ok(match client.get_if_none_match(ctx, id, etag).await? {
            Revalidated::NotModified {
                cache_control,
                etag,
            } => Update::NotModified {
                fresh_for: cache_control.fresh_for(),
                etag,
            },
            Revalidated::Modified(fetched) => Update::New {
                value: fetched.value,
                fresh_for: fetched.cache_control.fresh_for(),
                etag: fetched.etag,
            },
        });
    }
    let fetched = client.get(ctx, id).await?;
    Ok(Update::New {
        value: fetched.value,
        fresh_for: fetched.cache_control.fresh_for(),
        etag: fetched.etag,
    })
}

/// Fetches the products this call leads, in concurrent batches of at most [`MAX_BATCH`],
/// caching and publishing each result to the callers waiting for it.
async fn fetch_batches(
    client: &ProductClient,
    products: &FreshCache<ProductId, Product>,
    ctx: &RequestContext,
    leaders: Vec<(ProductId, Leader<ProductId, Shared<Product>>)>,
) -> Vec<(ProductId, Shared<Product>)> {
    let mut chunks = Vec::with_capacity(leaders.len().div_ceil(MAX_BATCH));
    let mut leaders = leaders.into_iter().peekable();
    while leaders.peek().is_some() {
        chunks.push(leaders.by_ref().take(MAX_BATCH).collect::<Vec<_>>());
    }
    join_all(
        chunks
            .into_iter()
            .map(|chunk| fetch_batch(client, products, ctx, chunk)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// One batch call for at most [`MAX_BATCH`] products: those another replica fetched already come
/// from L2, those another replica is fetching now (its lease) are waited for, and the rest are
/// fetched in one call and published to L2.
async fn fetch_batch(
    client: &ProductClient,
    products: &FreshCache<ProductId, Product>,
    ctx: &RequestContext,
    chunk: Vec<(ProductId, Leader<ProductId, Shared<Product>>)>,
) -> Vec<(ProductId, Shared<Product>)> {
    let mut results = Vec::with_capacity(chunk.len());
    let mut to_fetch = Vec::with_capacity(chunk.len());
    for (id, leader) in chunk {
        // A fetch that completed between our miss and our claim filled the cache.
        if let Lookup::Fresh(entry) = products.lookup(&id).await {
            leader.complete(Ok(entry.clone()));
            results.push((id, Ok(entry)));
        } else {
            to_fetch.push((id, leader));
        }
    }
    if to_fetch.is_empty() {
        return results;
    }
    let Some(l2) = products.l2() else {
        let unleased = to_fetch
            .into_iter()
            .map(|(id, leader)| (id, leader, false))
            .collect();
        results.extend(call_batch(client, products, ctx, unleased).await);
        return results;
    };

    let ids: Vec<ProductId> = to_fetch.iter().map(|(id, _)| id.clone()).collect();
    let mut missed = Vec::with_capacity(to_fetch.len());
    for ((id, leader), loaded) in to_fetch.into_iter().zip(l2.get_many(&ids).await) {
        match loaded {
            Some(loaded) => {
                let shared = products.adopt(&id, loaded).await;
                leader.complete(shared.clone());
                results.push((id, shared));
            }
            None => {
                products.count(|m| &m.l2_misses);
                missed.push((id, leader));
            }
        }
    }
    if missed.is_empty() {
        return results;
    }
    let missed_ids: Vec<ProductId> = missed.iter().map(|(id, _)| id.clone()).collect();
    let mut mine = Vec::with_capacity(missed.len());
    let mut theirs = Vec::new();
    for ((id, leader), lease) in missed.into_iter().zip(l2.leases(&missed_ids).await) {
        match lease {
            Lease::Held => {
                products.count(|m| &m.lease_waits);
                theirs.push((id, leader));
            }
            lease => mine.push((id, leader, lease == Lease::Acquired)),
        }
    }
    let their_ids: Vec<ProductId> = theirs.iter().map(|(id, _)| id.clone()).collect();
    let waiting = async {
        if their_ids.is_empty() {
            Vec::new()
        } else {
            l2.wait_for(&their_ids, ctx.deadline()).await
        }
    };
    let (fetched, waited) = futures::join!(call_batch(client, products, ctx, mine), waiting);
    results.extend(fetched);
    let mut leftover = Vec::new();
    let mut waited = waited.into_iter();
    for (id, leader) in theirs {
        match waited.next().flatten() {
            Some(loaded) => {
                let shared = products.adopt(&id, loaded).await;
                leader.complete(shared.clone());
                results.push((id, shared));
            }
            // The holder did not publish in time: fetch it ourselves.
            None => leftover.push((id, leader, false)),
        }
    }
    if !leftover.is_empty() {
        results.extend(call_batch(client, products, ctx, leftover).await);
    }
    results
}

/// One batch call for `leaders` (each with whether this replica holds its L2 lease): caches each
/// result, publishes it to the callers waiting for it and (with L2) to the other replicas.
async fn call_batch(
    client: &ProductClient,
    products: &FreshCache<ProductId, Product>,
    ctx: &RequestContext,
    leaders: Vec<(ProductId, Leader<ProductId, Shared<Product>>, bool)>,
) -> Vec<(ProductId, Shared<Product>)> {
    if leaders.is_empty() {
        return Vec::new();
    }
    let to_fetch: Vec<ProductId> = leaders.iter().map(|(id, _, _)| id.clone()).collect();
    let mut results = Vec::with_capacity(leaders.len());
    let mut leased = Vec::with_capacity(leaders.len());
    let started = Instant::now();
    // One call for every caller waiting for any of these products: linked to each of them.
    let span = shared_call_span("product batch");
    let called = client.batch(ctx, &to_fetch).instrument(span.clone()).await;
    for (_, leader, _) in &leaders {
        leader.link_to(&span);
    }
    match called {
        Ok(batch) => {
            let fresh_for = batch.cache_control.fresh_for();
            let mut by_id: HashMap<ProductId, Arc<Product>> = batch
                .value
                .items
                .into_iter()
                .map(|product| (product.id.clone(), product))
                .collect();
            for (id, leader, lease) in leaders {
                let outcome = match by_id.remove(&id) {
                    Some(value) => Ok(Update::New {
                        value,
                        fresh_for,
                        etag: None,
                    }),
                    // The client checked that every id asked is found or reported missing.
                    None => Err(ClientError::classify(Service::Product, Failure::Missing)),
                };
                let shared = products.settle(&id, outcome, None, started).await;
                leader.complete(shared.clone());
                results.push((id, shared));
                leased.push(lease);
            }
        }
        Err(err) => {
            for (id, leader, lease) in leaders {
                leader.complete(Err(err.clone()));
                results.push((id, Err(err.clone())));
                leased.push(lease);
            }
        }
    }
    if let Some(l2) = products.l2() {
        let mut published = Vec::with_capacity(results.len());
        for ((id, shared), lease) in results.iter().zip(&leased) {
            let fetched = match shared {
                Ok(entry) => products.publishable(id, entry).await,
                Err(_) => None,
            };
            published.push((id, fetched, *lease));
        }
        l2.publish(&published).await;
    }
    results
}

//! The cached catalog: what the gateways call to read products and categories.
//!
//! Products and categories are public, so they are cached once for everyone, keyed by id, for as
//! long as the service's `max-age` allows (bounded by the configured `max_ttl`). Misses are
//! coalesced: a burst of requests for one product makes one downstream call.
//!
//! [`Catalog::products`] is the batch path (GraphQL DataLoaders, cart and order views): it answers
//! cached ids from the cache, fetches only the others in batch calls of at most
//! [`MAX_BATCH`] ids issued concurrently, and joins fetches already in flight for any of them —
//! whether those are single reads or other batches.
//!
//! A coalesced fetch runs with the context (request id, trace) of the caller that started it;
//! the callers that join it wait for that one call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;
use tokio::time::Instant;

use crate::cache::{FreshCache, Shared};
use crate::coalesce::{Claim, Follower, Leader};
use crate::config::CacheConfig;
use crate::context::RequestContext;
use crate::error::{ClientError, ErrorKind, Failure, Service};
use crate::id::ProductId;
use crate::model::product::{Category, Product, ProductPage, ProductQuery};
use crate::product::{MAX_BATCH, ProductClient};

/// Share of the cache budget given to the category list (a small, single entry).
const CATEGORY_BUDGET_DIVISOR: u64 = 16;

/// The answer to [`Catalog::products`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductsFound {
    /// The products found, each once, in the order their ids were first asked for.
    pub found: Vec<Arc<Product>>,
    /// The ids asked for that do not exist, each once, in the order asked.
    pub missing: Vec<ProductId>,
}

impl ProductsFound {
    /// The found products by id (the shape a GraphQL DataLoader returns).
    pub fn into_map(self) -> HashMap<ProductId, Arc<Product>> {
        self.found
            .into_iter()
            .map(|product| (product.id.clone(), product))
            .collect()
    }
}

/// Cached reads of the catalog service. Built by [`Downstream`](crate::Downstream).
pub struct Catalog {
    /// The raw client, for misses.
    client: ProductClient,
    /// Products by id, shared by every caller and every gateway request.
    products: FreshCache<ProductId, Product>,
    /// The category list (a single entry).
    categories: FreshCache<(), Vec<Category>>,
}

impl Catalog {
    /// A catalog reading through `client`, caching as `config` says.
    pub fn new(client: ProductClient, config: &CacheConfig) -> Self {
        let category_bytes = config.max_bytes / CATEGORY_BUDGET_DIVISOR;
        Self {
            client,
            products: FreshCache::new(config.max_ttl, config.max_bytes - category_bytes),
            categories: FreshCache::new(config.max_ttl, category_bytes),
        }
    }

    /// The raw catalog client, for uncached calls (e.g. conditional reads).
    pub fn client(&self) -> &ProductClient {
        &self.client
    }

    /// One product, from the cache when fresh. [`NotFound`](ErrorKind::NotFound) if it does not
    /// exist.
    pub async fn product(
        &self,
        ctx: &RequestContext,
        id: &ProductId,
    ) -> Result<Arc<Product>, ClientError> {
        self.products
            .get_or_fetch(id, || async {
                let fetched = self.client.get(ctx, id).await?;
                Ok((fetched.value, fetched.cache_control.fresh_for()))
            })
            .await
    }

    /// Many products by id. Duplicate ids are answered once. Cached ids come from the cache; the
    /// others are fetched in concurrent batch calls of at most [`MAX_BATCH`] ids each (ids being
    /// fetched by a concurrent call are awaited instead of fetched again), then cached.
    ///
    /// Unknown ids are listed in [`ProductsFound::missing`]; any other failure fails the whole
    /// call, so an answer is never silently incomplete.
    pub async fn products(
        &self,
        ctx: &RequestContext,
        ids: &[ProductId],
    ) -> Result<ProductsFound, ClientError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<&ProductId> = ids.iter().filter(|id| seen.insert(*id)).collect();

        let mut found: HashMap<&ProductId, Arc<Product>> = HashMap::with_capacity(unique.len());
        let mut missing: HashSet<&ProductId> = HashSet::new();
        let mut pending = Vec::new();
        for &id in &unique {
            match self.products.get_fresh(id).await {
                Some(product) => {
                    found.insert(id, product);
                }
                None => pending.push(id),
            }
        }

        let mut failure = None;
        // Each round fetches what nobody else is fetching and awaits the rest. A key goes round
        // again only if the call fetching it was cancelled before it finished.
        while !pending.is_empty() {
            let mut leaders = Vec::new();
            let mut followers = Vec::new();
            for id in pending.drain(..) {
                match self.products.in_flight().claim(id) {
                    Claim::Leader(leader) => leaders.push((id, leader)),
                    Claim::Follower(follower) => followers.push((id, follower)),
                }
            }
            let (fetched, followed) = futures::join!(
                self.fetch_batches(ctx, leaders),
                join_all(followers.into_iter().map(
                    |(id, follower): (&ProductId, Follower<Shared<Product>>)| async move {
                        (id, follower.wait().await)
                    }
                ))
            );
            let outcomes = fetched
                .into_iter()
                .map(|(id, outcome)| (id, Some(outcome)))
                .chain(followed);
            for (id, outcome) in outcomes {
                match outcome {
                    Some(Ok(product)) => {
                        found.insert(id, product);
                    }
                    Some(Err(err)) if err.kind() == ErrorKind::NotFound => {
                        missing.insert(id);
                    }
                    Some(Err(err)) => {
                        failure.get_or_insert(err);
                    }
                    None => pending.push(id),
                }
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }

        let mut answer = ProductsFound {
            found: Vec::with_capacity(found.len()),
            missing: Vec::with_capacity(missing.len()),
        };
        for id in unique {
            if let Some(product) = found.remove(id) {
                answer.found.push(product);
            } else if missing.contains(id) {
                answer.missing.push(id.clone());
            }
        }
        Ok(answer)
    }

    /// Fetches the products this call leads, in concurrent batches of at most [`MAX_BATCH`],
    /// caching and publishing each result to the callers waiting for it.
    async fn fetch_batches<'k>(
        &self,
        ctx: &RequestContext,
        leaders: Vec<(&'k ProductId, Leader<'_, ProductId, Shared<Product>>)>,
    ) -> Vec<(&'k ProductId, Shared<Product>)> {
        let mut chunks = Vec::with_capacity(leaders.len().div_ceil(MAX_BATCH));
        let mut leaders = leaders.into_iter().peekable();
        while leaders.peek().is_some() {
            chunks.push(leaders.by_ref().take(MAX_BATCH).collect::<Vec<_>>());
        }
        join_all(chunks.into_iter().map(|chunk| self.fetch_batch(ctx, chunk)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One batch call for at most [`MAX_BATCH`] products.
    async fn fetch_batch<'k>(
        &self,
        ctx: &RequestContext,
        chunk: Vec<(&'k ProductId, Leader<'_, ProductId, Shared<Product>>)>,
    ) -> Vec<(&'k ProductId, Shared<Product>)> {
        let mut results = Vec::with_capacity(chunk.len());
        let mut to_fetch = Vec::with_capacity(chunk.len());
        let mut leaders = Vec::with_capacity(chunk.len());
        for (id, leader) in chunk {
            // A fetch that completed between our miss and our claim filled the cache.
            if let Some(product) = self.products.get_fresh(id).await {
                leader.complete(Ok(Arc::clone(&product)));
                results.push((id, Ok(product)));
            } else {
                to_fetch.push(id.clone());
                leaders.push((id, leader));
            }
        }
        if to_fetch.is_empty() {
            return results;
        }

        let started = Instant::now();
        match self.client.batch(ctx, &to_fetch).await {
            Ok(batch) => {
                let fresh_for = batch.cache_control.fresh_for();
                let mut by_id: HashMap<ProductId, Arc<Product>> = batch
                    .value
                    .items
                    .into_iter()
                    .map(|product| (product.id.clone(), product))
                    .collect();
                for (id, leader) in leaders {
                    let outcome = match by_id.remove(id) {
                        Some(product) => {
                            self.products
                                .insert(id.clone(), Arc::clone(&product), fresh_for, started)
                                .await;
                            Ok(product)
                        }
                        // The client checked that every id asked is found or reported missing.
                        None => Err(ClientError::classify(Service::Product, Failure::Missing)),
                    };
                    leader.complete(outcome.clone());
                    results.push((id, outcome));
                }
            }
            Err(err) => {
                for (id, leader) in leaders {
                    leader.complete(Err(err.clone()));
                    results.push((id, Err(err.clone())));
                }
            }
        }
        results
    }

    /// Every category, from the cache when fresh.
    pub async fn categories(
        &self,
        ctx: &RequestContext,
    ) -> Result<Arc<Vec<Category>>, ClientError> {
        self.categories
            .get_or_fetch(&(), || async {
                let fetched = self.client.categories(ctx).await?;
                Ok((Arc::new(fetched.value), fetched.cache_control.fresh_for()))
            })
            .await
    }

    /// One page of the catalog. Pages are not cached (cursors make them poor keys), but the
    /// products on them are, so a page followed by product reads costs one call.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        query: &ProductQuery,
    ) -> Result<ProductPage, ClientError> {
        let started = Instant::now();
        let page = self.client.list(ctx, query).await?;
        if let Some(fresh_for) = page.cache_control.fresh_for() {
            for product in &page.value.items {
                self.products
                    .insert(
                        product.id.clone(),
                        Arc::clone(product),
                        Some(fresh_for),
                        started,
                    )
                    .await;
            }
        }
        Ok(page.value)
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

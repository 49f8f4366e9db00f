//! [`ProductLoader`]: the per-request DataLoader over the catalog's batched product lookup.
//!
//! Every `product` field of one request (order lines, `product(id:)`, …) whose product the cache
//! does not hold fresh asks the loader (fresh ones are answered at once, without batching); the
//! loader collects the ids asked within `gateway.batch_delay` and makes one [`Catalog::products`]
//! call for them, which answers cached ids from the shared cache and fetches the others in batch
//! calls of at most 100 ids. So a page of 20 orders costs one order call plus at most one product
//! call. A cart's lines do not need the loader: the cart knows all its ids at once, and fetches
//! them in one call without waiting (see `viewer::LineProducts`).
//!
//! The loader is built per request (see [`RequestScope`](super::scope::RequestScope)): it carries
//! that request's [`RequestContext`] (request id, trace, deadline), and its memo never serves one
//! request's answers to another.
//!
//! [`Catalog::products`]: shared_clients::Catalog::products

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;
use shared_clients::{ClientError, Downstream, Product, ProductId, RequestContext};

use super::{contents::Contents, staleness::Staleness};

/// Loads products by id for one request.
pub struct ProductLoader {
    /// Where products come from.
    downstream: Downstream,
    /// The request's context, propagated on the batch calls.
    context: RequestContext,
    /// Where stale answers are recorded, for the response's `extensions`.
    staleness: Arc<Staleness>,
    /// Where what was read is recorded, for the response cache.
    contents: Arc<Contents>,
}

impl ProductLoader {
    /// A loader for one request.
    pub fn new(
        downstream: Downstream,
        context: RequestContext,
        staleness: Arc<Staleness>,
        contents: Arc<Contents>,
    ) -> Self {
        Self {
            downstream,
            context,
            staleness,
            contents,
        }
    }
}

impl Loader<ProductId> for ProductLoader {
    type Value = Arc<Product>;
    type Error = ClientError;

    async fn load(
        &self,
        keys: &[ProductId],
    ) -> Result<HashMap<ProductId, Self::Value>, Self::Error> {
        let found = self
            .downstream
            .catalog()
            .products(&self.context, keys)
            .await?;
        self.staleness.record("products", found.freshness);
        self.contents.read(keys, found.lifetime);
        Ok(found.into_map())
    }
}

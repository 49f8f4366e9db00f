//! Cart operations as the gateways call them: [`Carts`], a user's cart cached for them alone.
//!
//! A user's cart is private data, cached per owner (see `crate::cache::private`): a read is reused for
//! the configured private TTL under a key that contains the user's identity, concurrent misses of
//! one user coalesce, and every write through [`Carts`] (adding, changing, removing, clearing)
//! invalidates the user's cached cart before it is sent and again once it has an answer, so a user
//! always reads their own writes. A cart is never served stale.

use std::future::Future;

use crate::cache::private::{PrivateCache, PrivateKey};
use crate::cart::CartClient;
use crate::config::PrivateCacheConfig;
use crate::context::{Owner, RequestContext};
use crate::error::{ClientError, Service};
use crate::id::{ProductId, UserId};
use crate::metrics::CacheMetricsSnapshot;
use crate::model::cart::Cart;
use crate::shared_state::SharedState;
use crate::weigh::Weigh;

/// Cart operations, on behalf of one user each. A user's cart is cached for them alone, for the
/// configured private TTL; every write through here invalidates it at once (read-your-writes).
/// Built by [`Downstream`](crate::Downstream).
pub struct Carts {
    /// The raw client.
    client: CartClient,
    /// Carts by user, with read-your-writes invalidation.
    cache: PrivateCache<TheCart, Cart>,
}

/// The cart of a user: a user has exactly one, so the resource carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TheCart;

impl Weigh for TheCart {
    fn weigh(&self) -> usize {
        0
    }
}

impl Carts {
    /// Makes `owner`'s cached entries unusable on every replica (a change event said they
    /// changed elsewhere), as a write through here does.
    pub(crate) async fn changed_elsewhere(&self, owner: &Owner) {
        self.cache.invalidate(owner).await;
    }

    /// The cart of `user` this process holds, fresh or not (nothing is fetched).
    pub(crate) async fn cached(&self, user: &UserId) -> Option<std::sync::Arc<Cart>> {
        self.cache.peek(&Owner::User(user.clone()), &TheCart).await
    }

    /// Drops every owner's entries from this replica's memory (change events were missed).
    pub(crate) fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

impl Carts {
    /// Cart operations through `client`, caching as `config` says (with its share of
    /// `max_bytes`), owners' generations shared through `shared` (see `PrivateCache`).
    pub(crate) fn new(
        client: CartClient,
        config: &PrivateCacheConfig,
        shared: SharedState,
    ) -> Self {
        Self {
            client,
            cache: PrivateCache::shared(
                "carts",
                Service::Cart,
                config.ttl,
                config.cart_bytes(),
                shared,
            ),
        }
    }

    /// The raw client, for reads that must not come from the cache (checkout).
    pub(crate) fn client(&self) -> &CartClient {
        &self.client
    }

    /// The user's cart (empty, version 0, if they have none), from the user's own cache entry
    /// when it is fresh and no write invalidated it. See [`CartClient::get`].
    pub async fn get(&self, ctx: &RequestContext, user: &UserId) -> Result<Cart, ClientError> {
        let key = PrivateKey::for_user(user, TheCart);
        let cart = self
            .cache
            .get(ctx, key, || self.client.get(ctx, user))
            .await?;
        Ok(Cart::clone(&cart))
    }

    /// Runs a write of `user`'s cart, invalidating their cached cart before and after it,
    /// whatever its outcome (even a failed write may have changed the cart).
    async fn write<T>(
        &self,
        user: &UserId,
        write: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let owner = Owner::User(user.clone());
        self.cache.invalidate(&owner).await;
        let result = write.await;
        self.cache.invalidate(&owner).await;
        result
    }

    /// Adds `quantity` of a product, optionally only if the cart is still at `expected_version`.
    /// Never retried. See [`CartClient::add_item`].
    pub async fn add_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
        expected_version: Option<u64>,
    ) -> Result<Cart, ClientError> {
        self.write(
            user,
            self.client
                .add_item(ctx, user, product_id, quantity, expected_version),
        )
        .await
    }

    /// Sets a line's quantity (0 removes it). Never retried. See [`CartClient::set_quantity`].
    pub async fn set_quantity(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
    ) -> Result<Cart, ClientError> {
        self.write(
            user,
            self.client.set_quantity(ctx, user, product_id, quantity),
        )
        .await
    }

    /// Removes a line. Never retried. See [`CartClient::remove_item`].
    pub async fn remove_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
    ) -> Result<Cart, ClientError> {
        self.write(user, self.client.remove_item(ctx, user, product_id))
            .await
    }

    /// Empties the cart. Never retried. See [`CartClient::clear`].
    pub async fn clear(&self, ctx: &RequestContext, user: &UserId) -> Result<(), ClientError> {
        self.write(user, self.client.clear(ctx, user)).await
    }

    /// The counters and size of the cart cache.
    pub(crate) fn metrics(&self) -> CacheMetricsSnapshot {
        self.cache.metrics()
    }
}

impl std::fmt::Debug for Carts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carts")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

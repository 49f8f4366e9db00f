//! The raw client of the cart service: one typed method per operation.
//!
//! Every call acts for one user: the user's id is both in the path and in `X-User-Id`, which the
//! service checks against each other (403 otherwise). Carts are private; nothing here is cached
//! ([`Carts`](crate::Carts) caches per user). Cart writes are never retried.

use std::time::Duration;

use http::{HeaderValue, Method};
use serde::Serialize;

use crate::config::ServiceConfig;
use crate::context::RequestContext;
use crate::error::{BuildError, ClientError, Failure, Service};
use crate::id::{ProductId, UserId};
use crate::model::cart::Cart;
use crate::transport::{Call, Reply, Transport};

/// Client of the cart service.
#[derive(Debug, Clone)]
pub struct CartClient {
    /// Connection, base URL and error classification for the cart service.
    transport: Transport,
}

impl CartClient {
    /// Builds the client from the cart service's configuration.
    pub fn new(config: &ServiceConfig) -> Result<Self, BuildError> {
        Transport::new(Service::Cart, config).map(|transport| Self { transport })
    }

    /// `GET /carts/{user}`: the user's cart (an empty cart with version 0 if they have none).
    pub async fn get(&self, ctx: &RequestContext, user: &UserId) -> Result<Cart, ClientError> {
        let path = ["carts", user.as_str()];
        let call = Call::new("getCart", Method::GET, &path);
        self.send(ctx, user, call).await?.json()
    }

    /// `POST /carts/{user}/items`: adds `quantity` (1 to 99) of a product; an existing line grows.
    /// With `expected_version`, the change is made only if the cart still has that version
    /// (`If-Match`), else [`PreconditionFailed`](crate::ErrorKind::PreconditionFailed). A line
    /// beyond 99 is a [`Conflict`](crate::ErrorKind::Conflict).
    pub async fn add_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
        expected_version: Option<u64>,
    ) -> Result<Cart, ClientError> {
        /// The request body of `addCartItem`.
        #[derive(Serialize)]
        struct AddItem<'a> {
            product_id: &'a ProductId,
            quantity: u32,
        }
        let path = ["carts", user.as_str(), "items"];
        let mut call = Call::new("addCartItem", Method::POST, &path)
            .json(&AddItem {
                product_id,
                quantity,
            })
            .map_err(|failure| self.transport.error(failure))?;
        if let Some(version) = expected_version {
            let tag = HeaderValue::try_from(format!("\"{version}\"")).map_err(|_| {
                self.transport
                    .error(Failure::Rejected("invalid cart version"))
            })?;
            call = call.header("if-match", tag);
        }
        self.send(ctx, user, call).await?.json()
    }

    /// `PUT /carts/{user}/items/{product}`: sets a line's quantity (0 to 99; 0 removes the line).
    /// [`NotFound`](crate::ErrorKind::NotFound) when the cart has no line for the product.
    pub async fn set_quantity(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
        quantity: u32,
    ) -> Result<Cart, ClientError> {
        /// The request body of `setCartItemQuantity`.
        #[derive(Serialize)]
        struct SetQuantity {
            quantity: u32,
        }
        let path = ["carts", user.as_str(), "items", product_id.as_str()];
        let call = Call::new("setCartItemQuantity", Method::PUT, &path)
            .json(&SetQuantity { quantity })
            .map_err(|failure| self.transport.error(failure))?;
        self.send(ctx, user, call).await?.json()
    }

    /// `DELETE /carts/{user}/items/{product}`: removes a line.
    /// [`NotFound`](crate::ErrorKind::NotFound) when the cart has no line for the product.
    pub async fn remove_item(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        product_id: &ProductId,
    ) -> Result<Cart, ClientError> {
        let path = ["carts", user.as_str(), "items", product_id.as_str()];
        let call = Call::new("removeCartItem", Method::DELETE, &path);
        self.send(ctx, user, call).await?.json()
    }

    /// `DELETE /carts/{user}`: empties the cart (its version keeps increasing).
    pub async fn clear(&self, ctx: &RequestContext, user: &UserId) -> Result<(), ClientError> {
        let path = ["carts", user.as_str()];
        let call = Call::new("clearCart", Method::DELETE, &path);
        self.send(ctx, user, call).await.map(drop)
    }

    /// `GET /health`, bounded by `timeout`: `Ok` when the service says it is ready.
    pub async fn health(&self, timeout: Duration) -> Result<(), ClientError> {
        let call = Call::new("health", Method::GET, &["health"]).probe(timeout);
        self.transport
            .execute(&RequestContext::new(), call)
            .await
            .map(drop)
    }

    /// The service's call counters and breaker state.
    pub(crate) fn metrics(&self) -> crate::metrics::ServiceMetricsSnapshot {
        self.transport.metrics()
    }

    /// Sends one call to the cart service on behalf of `user` (`X-User-Id`).
    async fn send(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        call: Call<'_>,
    ) -> Result<Reply, ClientError> {
        let user = HeaderValue::from_str(user.as_str())
            .map_err(|_| self.transport.error(Failure::Rejected("invalid user id")))?;
        self.transport
            .execute(ctx, call.header("x-user-id", user))
            .await
    }
}

//! The raw client of the order service: one typed method per operation.
//!
//! Every call acts for an [`Owner`]: a user (`X-User-Id`) or a partner (`X-Partner-Id`). The
//! service only shows an owner its own orders (someone else's order is a 404). Orders are private;
//! nothing here is cached ([`Orders`](crate::Orders) caches per owner).

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};

use crate::config::ServiceConfig;
use crate::context::{IdempotencyKey, Owner, RequestContext};
use crate::error::{BuildError, ClientError, Failure, Service};
use crate::id::OrderId;
use crate::model::order::{CreatedOrder, Creation, NewOrder, Order, OrderPage, OrderQuery};
use crate::transport::{Call, Reply, Transport};

/// Client of the order service.
#[derive(Debug, Clone)]
pub struct OrderClient {
    /// Connection, base URL and error classification for the order service.
    transport: Transport,
}

impl OrderClient {
    /// Builds the client from the order service's configuration.
    pub fn new(config: &ServiceConfig) -> Result<Self, BuildError> {
        Transport::new(Service::Order, config).map(|transport| Self { transport })
    }

    /// `POST /orders` with an `Idempotency-Key`: creates the order, or — when the key was already
    /// used by this owner with the same body — returns the order created then
    /// ([`Creation::Replayed`]). The same key with a different body is
    /// [`Invalid`](crate::ErrorKind::Invalid) (422); an owner that does not match the order's
    /// channel is [`Forbidden`](crate::ErrorKind::Forbidden). Because of the key, repeating this
    /// call after a timeout is safe.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        idempotency_key: &IdempotencyKey,
        order: &NewOrder,
    ) -> Result<CreatedOrder, ClientError> {
        // The key makes a repeat harmless, so this write may be retried like a read.
        let call = Call::new("createOrder", Method::POST, &["orders"])
            .idempotent()
            .header("idempotency-key", idempotency_key.header_value().clone())
            .json(order)
            .map_err(|failure| self.transport.error(failure))?;
        let reply = self.send(ctx, owner, call).await?;
        let creation = match reply.status {
            StatusCode::CREATED => Creation::Created,
            StatusCode::OK => Creation::Replayed,
            _ => {
                return Err(self.transport.error(Failure::Contract(
                    "answered an order creation with neither 201 nor 200",
                )));
            }
        };
        Ok(CreatedOrder {
            order: reply.json()?,
            creation,
        })
    }

    /// `GET /orders`: one page of the owner's orders, newest first.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        query: &OrderQuery,
    ) -> Result<OrderPage, ClientError> {
        let call = Call::new("listOrders", Method::GET, &["orders"])
            .query(owner.query_name(), owner.id())
            .query_opt("status", query.status.map(|s| s.as_str()))
            .query_opt("cursor", query.cursor.as_deref())
            .query_opt("limit", query.limit.map(|l| l.to_string()));
        self.send(ctx, owner, call).await?.json()
    }

    /// `GET /orders/{id}`: one of the owner's orders; [`NotFound`](crate::ErrorKind::NotFound)
    /// also when it exists but belongs to someone else.
    pub async fn get(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        order_id: &OrderId,
    ) -> Result<Order, ClientError> {
        let path = ["orders", order_id.as_str()];
        let call = Call::new("getOrder", Method::GET, &path);
        self.send(ctx, owner, call).await?.json()
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

    /// Sends one call to the order service on behalf of `owner` (`X-User-Id` or `X-Partner-Id`).
    async fn send(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        call: Call<'_>,
    ) -> Result<Reply, ClientError> {
        let id = HeaderValue::from_str(owner.id())
            .map_err(|_| self.transport.error(Failure::Rejected("invalid owner id")))?;
        self.transport
            .execute(ctx, call.header(owner.header_name(), id))
            .await
    }
}

//! What both versions do, before each shapes the answer its own way: the operations of
//! [`AppState`] that call the downstream services, price orders and map downstream failures to
//! [`ApiError`]s.
//!
//! Every operation answers completely or fails: a page, product or order is never returned with
//! parts missing (a downstream outage is a 503, see [`ApiError::downstream`]).
//!
//! An order to create reaches these operations as an [`OrderRequest`], which each version's body
//! converts into. Its lines are the same in both versions: [`NewOrderLine`] is deserialized from
//! either body as is, and its `///` comments are its description in both OpenAPI documents.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use shared_clients::{
    Category, Channel, ClientError, ErrorKind, IdempotencyKey, MAX_ORDER_LINES, Order, OrderId,
    OrderPage, Owner, PlaceOrderError, PlacedOrder, Product, ProductId, ProductPage,
    RequestContext, RequestedLine, Served, UnavailableReason, UserId,
};
use utoipa::ToSchema;

use crate::{
    auth::Partner,
    error::{ApiError, Unorderable},
    params::{OrderListParams, ProductListParams},
    state::AppState,
};

/// One line of a new order: the gateway prices it from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderLine {
    /// The product to order; must exist and be in stock.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub product_id: ProductId,
    /// How many, 1 to 99.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: u32,
}

/// An order as a partner asks for it, in either version.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// The partner's own reference for its customer (the downstream `user_id`).
    pub customer_reference: UserId,
    /// What to order (the lines are the same in both versions, and so is their schema).
    pub lines: Vec<NewOrderLine>,
    /// Where to ship (v2 only).
    pub shipping_address: Option<shared_clients::Address>,
}

impl AppState {
    /// The fallback `Retry-After` of a 503.
    fn retry_after(&self) -> Duration {
        self.config.unavailable_retry_after
    }

    /// One page of products.
    pub async fn list_products(
        &self,
        ctx: &RequestContext,
        params: &ProductListParams,
    ) -> Result<ProductPage, ApiError> {
        let query = params.to_query(&self.config.paging)?;
        self.downstream
            .catalog()
            .list(ctx, &query)
            .await
            .map_err(|error| self.listing_error(error, "product"))
    }

    /// One product, possibly from the cache (its age says how old).
    pub async fn product(
        &self,
        ctx: &RequestContext,
        id: &ProductId,
    ) -> Result<Served<Arc<Product>>, ApiError> {
        self.downstream
            .catalog()
            .product(ctx, id)
            .await
            .map_err(|error| ApiError::downstream(error, "product", self.retry_after()))
    }

    /// Every category, possibly from the cache (its age says how old).
    pub async fn categories(
        &self,
        ctx: &RequestContext,
    ) -> Result<Served<Arc<Vec<Category>>>, ApiError> {
        self.downstream
            .catalog()
            .categories(ctx)
            .await
            .map_err(|error| ApiError::downstream(error, "category", self.retry_after()))
    }

    /// One page of the partner's orders.
    pub async fn list_orders(
        &self,
        ctx: &RequestContext,
        partner: &Partner,
        params: &OrderListParams,
    ) -> Result<OrderPage, ApiError> {
        let query = params.to_query(&self.config.paging)?;
        self.downstream
            .orders()
            .list(ctx, &Owner::Partner(partner.id.clone()), &query)
            .await
            .map_err(|error| self.listing_error(error, "order"))
    }

    /// One of the partner's orders; someone else's is a 404.
    pub async fn order(
        &self,
        ctx: &RequestContext,
        partner: &Partner,
        id: &OrderId,
    ) -> Result<Order, ApiError> {
        self.downstream
            .orders()
            .get(ctx, &Owner::Partner(partner.id.clone()), id)
            .await
            .map_err(|error| ApiError::downstream(error, "order", self.retry_after()))
    }

    /// Prices the lines from current catalog data and creates the order for the partner, or
    /// returns the one an earlier request with the same key created (shared-clients'
    /// [`OrderPlacement`](shared_clients::OrderPlacement) does both, the same way for every
    /// gateway).
    pub async fn create_order(
        &self,
        ctx: &RequestContext,
        partner: &Partner,
        key: &IdempotencyKey,
        request: OrderRequest,
    ) -> Result<PlacedOrder, ApiError> {
        let owner = Owner::Partner(partner.id.clone());
        let request = shared_clients::OrderRequest {
            customer: request.customer_reference,
            channel: Channel::partner(partner.id.clone()),
            lines: request
                .lines
                .into_iter()
                .map(|line| RequestedLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            shipping_address: request.shipping_address,
        };
        self.placement
            .place(ctx, &owner, key, request)
            .await
            .map_err(|error| self.placement_error(error))
    }

    /// Maps a refused or failed order placement.
    fn placement_error(&self, error: PlaceOrderError) -> ApiError {
        match error {
            PlaceOrderError::Empty => {
                ApiError::InvalidBody(format!("`lines` must have 1 to {MAX_ORDER_LINES} entries"))
            }
            PlaceOrderError::InvalidLines(why) => ApiError::InvalidBody(why.to_owned()),
            PlaceOrderError::Unavailable(products) => ApiError::UnorderableProducts(
                products
                    .into_iter()
                    .map(|product| Unorderable {
                        product_id: product.product_id.to_string(),
                        reason: match product.reason {
                            UnavailableReason::NotFound => "unknown",
                            UnavailableReason::OutOfStock => "out_of_stock",
                            UnavailableReason::InsufficientStock => "insufficient_stock",
                        },
                        available: product.available,
                    })
                    .collect(),
            ),
            PlaceOrderError::MixedCurrencies => ApiError::MixedCurrency,
            PlaceOrderError::InvalidAddress(why) => {
                ApiError::InvalidBody(format!("`shipping_address`: {why}"))
            }
            PlaceOrderError::KeyReused => ApiError::IdempotencyKeyReused,
            PlaceOrderError::Downstream(error) => {
                ApiError::order_creation(error, self.retry_after())
            }
        }
    }

    /// A failed listing: the downstream refuses (400) only a cursor it did not issue for these
    /// filters, since every other parameter was checked here.
    fn listing_error(&self, error: ClientError, what: &'static str) -> ApiError {
        if error.kind() == ErrorKind::Invalid && error.status() == Some(400) {
            tracing::debug!(error = %error, "cursor refused downstream");
            return ApiError::InvalidRequest(
                "`cursor` is not a `next_cursor` of this listing with these filters".into(),
            );
        }
        ApiError::downstream(error, what, self.retry_after())
    }
}

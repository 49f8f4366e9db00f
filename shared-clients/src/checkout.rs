//! Placing orders the same way from every gateway: pricing lines from the catalog, checking stock,
//! and checking out a cart.
//!
//! Policy:
//! - **Prices and stock are current.** Lines are priced from a fresh batch lookup at the product
//!   service (one call per 100 distinct products, concurrent), never from the gateway's cache: an
//!   order must not be placed at a price or against stock that was true a minute ago.
//! - **Refuse before creating.** Unknown products, products out of stock or with fewer units
//!   available than asked, and lines in more than one currency are refused with
//!   [`PlaceOrderError`] naming every offending product; no order is created.
//! - **A retry is the same order.** The order service deduplicates by `Idempotency-Key` *and body*.
//!   Re-pricing on a retry could change the body (a price moved) and turn a harmless retry into a
//!   422, and a retried cart checkout whose first attempt already emptied the cart would have
//!   nothing left to order. So the first attempt's priced body — and, once created, its order — is
//!   remembered per (owner, key) for [`OrderPlacementConfig::remember_for`], and a retry with the
//!   same key reuses it. The record is in-process: a retry that lands on another replica falls back
//!   to the order service's own deduplication (same cart, same prices → same order).
//! - **A created order is never lost.** When checkout created the order but emptying the cart
//!   failed, the order is still returned, with `cart_cleared: false`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::{
    Address, Channel, ClientError, Creation, Downstream, IdempotencyKey, InventoryStatus, NewOrder,
    Order, OrderLine, Owner, Product, RequestContext,
    id::{ProductId, UserId},
    product::MAX_BATCH,
};

/// Most lines one order may have (the contract's limit).
pub const MAX_ORDER_LINES: usize = 100;

/// Largest quantity of one line (the contract's limit).
pub const MAX_LINE_QUANTITY: u32 = 99;

/// How order placement remembers attempts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrderPlacementConfig {
    /// How long the priced body and the created order of an (owner, idempotency key) are kept, so
    /// that a client's retry gets the same order.
    #[serde(with = "humantime_serde")]
    pub remember_for: Duration,
    /// Most attempts remembered at once (oldest forgotten first).
    pub max_remembered: u64,
}

impl Default for OrderPlacementConfig {
    fn default() -> Self {
        Self {
            remember_for: Duration::from_secs(24 * 60 * 60),
            max_remembered: 100_000,
        }
    }
}

/// One line as a client asks for it: a product and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    /// The product wanted.
    pub product_id: ProductId,
    /// How many, 1 to [`MAX_LINE_QUANTITY`].
    pub quantity: u32,
}

/// An order of explicit lines, as a client (e.g. a partner) asks for it.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// The customer: the user, or for a partner order the partner's customer reference.
    pub customer: UserId,
    /// The channel, which must match the owner placing the order.
    pub channel: Channel,
    /// The lines to price and order.
    pub lines: Vec<RequestedLine>,
    /// Where to ship, if known.
    pub shipping_address: Option<Address>,
}

/// Why a product cannot be ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    /// The product service does not know it.
    NotFound,
    /// None in stock.
    OutOfStock,
    /// Fewer in stock than asked for.
    InsufficientStock,
}

/// A product of an order that cannot be ordered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnavailableProduct {
    /// The product.
    pub product_id: ProductId,
    /// Why it cannot be ordered.
    pub reason: UnavailableReason,
    /// Units available, when the product exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
}

/// Why an order was not placed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlaceOrderError {
    /// The cart (or the request) has no lines.
    #[error("there is nothing to order")]
    Empty,
    /// Too many lines, a quantity out of range, or a product listed twice.
    #[error("invalid order lines: {0}")]
    InvalidLines(&'static str),
    /// Some products cannot be ordered; nothing was created.
    #[error("{} product(s) cannot be ordered", .0.len())]
    Unavailable(Vec<UnavailableProduct>),
    /// The products are priced in more than one currency; nothing was created.
    #[error("the products are priced in more than one currency")]
    MixedCurrencies,
    /// A downstream call failed.
    #[error(transparent)]
    Downstream(#[from] ClientError),
}

/// The outcome of placing an order.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    /// The order, new or the one an earlier attempt with the same key created.
    pub order: Order,
    /// Whether this request created it (false: a retry got the earlier order).
    pub created: bool,
    /// For a cart checkout, whether the cart was emptied afterwards (false when that failed; the
    /// order stands regardless). Always true for orders placed from explicit lines.
    pub cart_cleared: bool,
}

/// What is remembered of one (owner, key) attempt.
#[derive(Debug, Clone)]
enum Attempt {
    /// Priced and about to be (or being) created: a retry sends exactly this body again.
    Priced(Arc<NewOrder>),
    /// Created: a retry gets this order without another call.
    Created(Arc<Order>),
}

/// Places orders from explicit lines or from a user's cart. Cheap to clone.
#[derive(Clone)]
pub struct OrderPlacement {
    /// The downstream services.
    downstream: Downstream,
    /// Attempts by (owner, idempotency key), so retries get the same order.
    attempts: moka::future::Cache<(Owner, IdempotencyKey), Attempt>,
}

impl OrderPlacement {
    /// Order placement over `downstream`.
    pub fn new(downstream: Downstream, config: &OrderPlacementConfig) -> Self {
        Self {
            downstream,
            attempts: moka::future::Cache::builder()
                .max_capacity(config.max_remembered)
                .time_to_live(config.remember_for)
                .build(),
        }
    }

    /// Prices `lines` from the catalog's current data and checks stock, without creating anything.
    pub async fn price(
        &self,
        ctx: &RequestContext,
        lines: &[RequestedLine],
    ) -> Result<Vec<OrderLine>, PlaceOrderError> {
        validate_lines(lines)?;
        let ids: Vec<ProductId> = lines.iter().map(|l| l.product_id.clone()).collect();
        let client = self.downstream.catalog().client();
        let batches = try_join_all(
            ids.chunks(MAX_BATCH)
                .map(|chunk| async move { client.batch(ctx, chunk).await }),
        )
        .await?;
        let found: HashMap<&ProductId, &Arc<Product>> = batches
            .iter()
            .flat_map(|batch| batch.value.items.iter())
            .map(|product| (&product.id, product))
            .collect();
        price_lines(lines, &found)
    }

    /// Places an order of explicit `lines` for `owner` (e.g. a partner's order), pricing them
    /// first. A retry with the same `key` returns the same order.
    pub async fn place(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        key: &IdempotencyKey,
        request: OrderRequest,
    ) -> Result<PlacedOrder, PlaceOrderError> {
        let attempt_key = (owner.clone(), key.clone());
        let body = match self.attempts.get(&attempt_key).await {
            Some(Attempt::Created(order)) => {
                return Ok(PlacedOrder {
                    order: Order::clone(&order),
                    created: false,
                    cart_cleared: true,
                });
            }
            Some(Attempt::Priced(body)) => body,
            None => {
                let priced = self.price(ctx, &request.lines).await?;
                Arc::new(NewOrder {
                    user_id: request.customer,
                    channel: request.channel,
                    lines: priced,
                    shipping_address: request.shipping_address,
                })
            }
        };
        self.create(ctx, owner, key, attempt_key, body)
            .await
            .map(|(order, created)| PlacedOrder {
                order,
                created,
                cart_cleared: true,
            })
    }

    /// Checks out `user`'s cart: reads it, prices its lines from current catalog data, refuses if
    /// anything is unavailable, creates the order with `key`, then empties the cart. A retry with
    /// the same `key` returns the same order, never a second one.
    pub async fn checkout(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        key: &IdempotencyKey,
        channel: Channel,
        shipping_address: Option<Address>,
    ) -> Result<PlacedOrder, PlaceOrderError> {
        let owner = Owner::User(user.clone());
        let attempt_key = (owner.clone(), key.clone());
        let (order, created) = match self.attempts.get(&attempt_key).await {
            Some(Attempt::Created(order)) => (Order::clone(&order), false),
            Some(Attempt::Priced(body)) => self.create(ctx, &owner, key, attempt_key, body).await?,
            None => {
                let cart = self.downstream.carts().get(ctx, user).await?;
                if cart.items.is_empty() {
                    return Err(PlaceOrderError::Empty);
                }
                let lines: Vec<RequestedLine> = cart
                    .items
                    .iter()
                    .map(|item| RequestedLine {
                        product_id: item.product_id.clone(),
                        quantity: item.quantity,
                    })
                    .collect();
                let priced = self.price(ctx, &lines).await?;
                let body = Arc::new(NewOrder {
                    user_id: user.clone(),
                    channel,
                    lines: priced,
                    shipping_address,
                });
                self.create(ctx, &owner, key, attempt_key, body).await?
            }
        };
        let cart_cleared = match self.downstream.carts().clear(ctx, user).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(
                    order_id = order.id.as_str(),
                    error = error.kind().code(),
                    "order placed but the cart could not be emptied"
                );
                false
            }
        };
        Ok(PlacedOrder {
            order,
            created,
            cart_cleared,
        })
    }

    /// Creates the order from `body`, remembering the body first and the order once created.
    async fn create(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        key: &IdempotencyKey,
        attempt_key: (Owner, IdempotencyKey),
        body: Arc<NewOrder>,
    ) -> Result<(Order, bool), PlaceOrderError> {
        self.attempts
            .insert(attempt_key.clone(), Attempt::Priced(Arc::clone(&body)))
            .await;
        let created = self
            .downstream
            .orders()
            .create(ctx, owner, key, &body)
            .await?;
        let is_new = matches!(created.creation, Creation::Created);
        self.attempts
            .insert(
                attempt_key,
                Attempt::Created(Arc::new(created.order.clone())),
            )
            .await;
        Ok((created.order, is_new))
    }
}

/// Checks the shape of requested lines: 1 to 100 lines, quantities 1 to 99, each product once.
fn validate_lines(lines: &[RequestedLine]) -> Result<(), PlaceOrderError> {
    if lines.is_empty() {
        return Err(PlaceOrderError::Empty);
    }
    if lines.len() > MAX_ORDER_LINES {
        return Err(PlaceOrderError::InvalidLines(
            "an order has at most 100 lines",
        ));
    }
    if lines
        .iter()
        .any(|l| l.quantity == 0 || l.quantity > MAX_LINE_QUANTITY)
    {
        return Err(PlaceOrderError::InvalidLines(
            "each quantity must be between 1 and 99",
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    if !lines.iter().all(|l| seen.insert(&l.product_id)) {
        return Err(PlaceOrderError::InvalidLines(
            "each product may appear on one line only",
        ));
    }
    Ok(())
}

/// Prices `lines` from `found` (current products by id), refusing unavailable products and mixed
/// currencies.
fn price_lines(
    lines: &[RequestedLine],
    found: &HashMap<&ProductId, &Arc<Product>>,
) -> Result<Vec<OrderLine>, PlaceOrderError> {
    let mut unavailable = Vec::new();
    let mut priced = Vec::with_capacity(lines.len());
    for line in lines {
        let Some(product) = found.get(&line.product_id) else {
            unavailable.push(UnavailableProduct {
                product_id: line.product_id.clone(),
                reason: UnavailableReason::NotFound,
                available: None,
            });
            continue;
        };
        let available = product.inventory.available;
        let reason = if product.inventory.status == InventoryStatus::OutOfStock || available == 0 {
            Some(UnavailableReason::OutOfStock)
        } else if available < u64::from(line.quantity) {
            Some(UnavailableReason::InsufficientStock)
        } else {
            None
        };
        if let Some(reason) = reason {
            unavailable.push(UnavailableProduct {
                product_id: line.product_id.clone(),
                reason,
                available: Some(available),
            });
            continue;
        }
        priced.push(OrderLine {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            unit_price: product.price.clone(),
        });
    }
    if !unavailable.is_empty() {
        return Err(PlaceOrderError::Unavailable(unavailable));
    }
    let mut currencies = priced.iter().map(|l| l.unit_price.currency.as_str());
    if let Some(first) = currencies.next()
        && currencies.any(|c| c != first)
    {
        return Err(PlaceOrderError::MixedCurrencies);
    }
    Ok(priced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Inventory, Money};

    fn product(id: &str, amount: i64, currency: &str, available: u64) -> Arc<Product> {
        let json = serde_json::json!({
            "id": id, "sku": "S", "name": "N",
            "price": {"amount_minor": amount, "currency": currency},
            "inventory": {"available": available, "status": if available == 0 { "out_of_stock" } else { "in_stock" }},
            "updated_at": "2026-01-01T00:00:00Z"
        });
        Arc::new(serde_json::from_value(json).expect("valid product"))
    }

    fn line(id: &str, quantity: u32) -> RequestedLine {
        RequestedLine {
            product_id: ProductId::parse(id).expect("id"),
            quantity,
        }
    }

    fn priced(
        lines: &[RequestedLine],
        products: &[Arc<Product>],
    ) -> Result<Vec<OrderLine>, PlaceOrderError> {
        let found = products.iter().map(|p| (&p.id, p)).collect();
        price_lines(lines, &found)
    }

    #[test]
    fn lines_take_the_current_catalog_price() {
        let lines = [line("a", 2), line("b", 1)];
        let out = priced(
            &lines,
            &[product("a", 500, "EUR", 10), product("b", 250, "EUR", 1)],
        )
        .expect("priced");
        assert_eq!(
            out[0].unit_price,
            Money {
                amount_minor: 500,
                currency: "EUR".into()
            }
        );
        assert_eq!(out[1].quantity, 1);
    }

    #[test]
    fn every_unavailable_product_is_named_with_its_reason() {
        let lines = [line("a", 1), line("b", 5), line("c", 1), line("d", 1)];
        let error = priced(
            &lines,
            &[
                product("a", 1, "EUR", 0),
                product("b", 1, "EUR", 3),
                product("d", 1, "EUR", 9),
            ],
        )
        .expect_err("refused");
        let PlaceOrderError::Unavailable(products) = error else {
            panic!("expected Unavailable, got {error:?}");
        };
        let reasons: Vec<_> = products
            .iter()
            .map(|p| (p.product_id.as_str().to_owned(), p.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("a".to_owned(), UnavailableReason::OutOfStock),
                ("b".to_owned(), UnavailableReason::InsufficientStock),
                ("c".to_owned(), UnavailableReason::NotFound),
            ]
        );
    }

    #[test]
    fn mixed_currencies_are_refused() {
        let lines = [line("a", 1), line("b", 1)];
        let error = priced(
            &lines,
            &[product("a", 1, "EUR", 5), product("b", 1, "USD", 5)],
        )
        .expect_err("refused");
        assert!(matches!(error, PlaceOrderError::MixedCurrencies));
    }

    #[test]
    fn line_shapes_are_checked_before_any_call() {
        assert!(matches!(validate_lines(&[]), Err(PlaceOrderError::Empty)));
        assert!(matches!(
            validate_lines(&[line("a", 0)]),
            Err(PlaceOrderError::InvalidLines(_))
        ));
        assert!(matches!(
            validate_lines(&[line("a", 100)]),
            Err(PlaceOrderError::InvalidLines(_))
        ));
        assert!(matches!(
            validate_lines(&[line("a", 1), line("a", 2)]),
            Err(PlaceOrderError::InvalidLines(_))
        ));
        let many: Vec<_> = (0..101).map(|i| line(&format!("p{i}"), 1)).collect();
        assert!(matches!(
            validate_lines(&many),
            Err(PlaceOrderError::InvalidLines(_))
        ));
        assert!(validate_lines(&[line("a", 99)]).is_ok());
    }

    #[test]
    fn inventory_type_is_what_pricing_reads() {
        // Guards the assumption above: out_of_stock status alone refuses, whatever `available` says.
        let mut p = (*product("a", 1, "EUR", 5)).clone();
        p.inventory = Inventory {
            available: 5,
            status: InventoryStatus::OutOfStock,
        };
        let error = priced(&[line("a", 1)], &[Arc::new(p)]).expect_err("refused");
        assert!(matches!(error, PlaceOrderError::Unavailable(_)));
    }
}

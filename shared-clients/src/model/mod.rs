//! The contract's data, typed: what the clients send and receive.
//!
//! - [`product`]: products, categories, catalog pages and batches, and the catalog list query.
//! - [`cart`]: carts and their lines.
//! - [`order`]: orders, order creation, order pages and the order list query.
//! - `integer` (private): tolerant decoding of integer fields (`26.0` is 26).
//!
//! Decoding follows the contract's rules for clients: unknown fields are ignored, optional fields
//! may be absent, nullable fields may be `null`, integers may be written as integral floats.
//! Timestamps are kept as the RFC 3339 strings the services send. Every type also serializes in
//! the contract's shape, so the gateways can pass or reshape them.

pub mod cart;
pub(crate) mod integer;
pub mod order;
pub mod product;

use serde::{Deserialize, Serialize};

use crate::weigh::Weigh;

/// An amount of money: integer minor units plus an ISO-4217 currency code, never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD), so arithmetic is exact.
    #[serde(deserialize_with = "integer::deserialize")]
    pub amount_minor: i64,
    /// Three-letter ISO-4217 code, e.g. `EUR`; amounts in different currencies never mix.
    pub currency: String,
}

/// Part of the weight of what holds an amount (a product's prices).
impl Weigh for Money {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.currency.len()
    }
}

//! Cart data: a user's cart and its lines (product ids and quantities only; prices and names come
//! from the catalog).

use serde::{Deserialize, Serialize};

use super::integer;
use crate::id::{ProductId, UserId};
use crate::weigh::Weigh;

/// A user's cart. Private to that user: never cached under a key without the user's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// The owner of the cart.
    pub user_id: UserId,
    /// The lines, one per product.
    pub items: Vec<CartItem>,
    /// Increases with every change; pass it back as the expected version of a write (sent as
    /// `If-Match`) to detect concurrent changes. A user with no cart has version 0.
    #[serde(deserialize_with = "integer::deserialize")]
    pub version: u64,
    /// When the cart last changed (RFC 3339); `None` for a cart that never changed.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    /// The product on this line; the line is addressed by it.
    pub product_id: ProductId,
    /// How many, 1 to 99.
    #[serde(deserialize_with = "integer::deserialize")]
    pub quantity: u32,
    /// When the line was first added (RFC 3339), so clients can order lines.
    pub added_at: String,
}

/// For the private cache (a user's cart).
impl Weigh for Cart {
    fn weigh(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.user_id.as_str().len()
            + opt(&self.updated_at)
            + self
                .items
                .iter()
                .map(|item| {
                    std::mem::size_of_val(item)
                        + item.product_id.as_str().len()
                        + item.added_at.len()
                })
                .sum::<usize>()
    }
}

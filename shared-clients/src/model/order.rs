//! Order data: orders, their lines and channel, order creation, pages and the list query.

use serde::{Deserialize, Serialize};

use super::{Money, integer};
use crate::id::{OrderId, PartnerId, ProductId, UserId};
use crate::weigh::Weigh;

/// An order. Belongs to its `channel.partner_id` for partner orders, to its `user_id` otherwise;
/// only that owner can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: OrderId,
    /// The customer: a user id, or for partner orders the partner's customer reference.
    pub user_id: UserId,
    /// Where the order was placed, which decides who owns it.
    pub channel: Channel,
    /// Where the order is in its life cycle.
    pub status: OrderStatus,
    /// What was ordered, at which unit price.
    pub lines: Vec<OrderLine>,
    /// The total the service computed from the lines.
    pub total: Money,
    /// Where to ship, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    /// When the order was created (RFC 3339).
    pub created_at: String,
    /// When the order last changed status (RFC 3339), `None` if it never did.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// For the private cache (an owner's orders) and the order placement's remembered attempts.
impl Weigh for Order {
    fn weigh(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let address = self.shipping_address.as_ref().map_or(0, |a| {
            opt(&a.name) + opt(&a.line1) + opt(&a.city) + opt(&a.postal_code) + opt(&a.country)
        });
        std::mem::size_of::<Self>()
            + self.id.as_str().len()
            + self.user_id.as_str().len()
            + self.created_at.len()
            + opt(&self.updated_at)
            + address
            + self
                .lines
                .iter()
                .map(|line| {
                    std::mem::size_of_val(line)
                        + line.product_id.as_str().len()
                        + line.unit_price.currency.len()
                })
                .sum::<usize>()
    }
}

/// An order to create. The caller prices the lines from the catalog; the service computes the
/// total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// The customer: the user placing it, or for partner orders the partner's customer reference.
    pub user_id: UserId,
    /// The channel, which must match the identity creating the order.
    pub channel: Channel,
    /// 1 to 100 lines, all in one currency.
    pub lines: Vec<OrderLine>,
    /// Where to ship, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
}

/// Where an order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Web, mobile or partner.
    pub kind: ChannelKind,
    /// The partner, for partner orders; `None` for web and mobile.
    #[serde(default)]
    pub partner_id: Option<PartnerId>,
}

impl Channel {
    /// A web order (owned by its user).
    pub fn web() -> Self {
        Self {
            kind: ChannelKind::Web,
            partner_id: None,
        }
    }

    /// A mobile order (owned by its user).
    pub fn mobile() -> Self {
        Self {
            kind: ChannelKind::Mobile,
            partner_id: None,
        }
    }

    /// A partner order (owned by the partner).
    pub fn partner(partner_id: PartnerId) -> Self {
        Self {
            kind: ChannelKind::Partner,
            partner_id: Some(partner_id),
        }
    }
}

/// The kind of client an order came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The web app (through the web BFF).
    Web,
    /// The mobile app.
    Mobile,
    /// A partner integration.
    Partner,
}

/// Where an order is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Received, not yet confirmed.
    Pending,
    /// Accepted for fulfilment.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Arrived.
    Delivered,
    /// Will not be fulfilled.
    Cancelled,
}

impl OrderStatus {
    /// The contract's spelling, e.g. `"pending"`, used as the `status` filter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: ProductId,
    /// How many, 1 to 99.
    #[serde(deserialize_with = "integer::deserialize")]
    pub quantity: u32,
    /// The price of one unit when ordered (at most 10^10 minor units).
    pub unit_price: Money,
}

/// A shipping address; every part is optional in the contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Recipient name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Street and number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO-3166 alpha-2 country code, e.g. `DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One page of an owner's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// The orders of this page.
    pub items: Vec<Order>,
    /// The cursor of the next page, `None` on the last page; pass it back in
    /// [`OrderQuery::cursor`].
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// For the private cache (an owner's order pages).
impl Weigh for OrderPage {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.next_cursor.as_ref().map_or(0, String::len)
            + self.items.iter().map(Weigh::weigh).sum::<usize>()
    }
}

/// Which page of an owner's orders to list. `OrderQuery::default()` lists the first page of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderQuery {
    /// Only orders in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    /// Continue after a previous page: its `next_cursor`, passed back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (the service defaults to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Whether an order creation made a new order or replayed an earlier one with the same
/// idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Creation {
    /// A new order was created (201).
    Created,
    /// The key was used before with the same body; this is the order created then (200).
    Replayed,
}

/// The answer to an order creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedOrder {
    /// The order, new or replayed.
    pub order: Order,
    /// Whether it is new, so a BFF can answer 201 or 200 in turn.
    pub creation: Creation,
}

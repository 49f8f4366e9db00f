//! The order service: orders of users (web, mobile) and of partners, private, created once.
//!
//! Routes ([`routes`], over an [`OrderState`]): `GET /orders` (one owner's orders, newest first,
//! cursor paging, `status` filter), `POST /orders` (idempotent creation) and
//! `GET /orders/{order_id}`.
//! Successful bodies carry `Cache-Control: private, no-store`.
//!
//! Ownership (the contract's `Order` schema): a `partner` order belongs to `channel.partner_id` and
//! is reached with `X-Partner-Id`; a `web` or `mobile` order belongs to `user_id` and is reached with
//! `X-User-Id`. Creating or listing for another owner is 403; reading another owner's order is 404.
//!
//! Idempotency: `POST /orders` needs an `Idempotency-Key`. Keys are scoped to the new order's owner
//! and remembered for [`IDEMPOTENCY_TTL`]. The same key with the same body (compared after reading
//! it into the `NewOrder` schema, so unknown fields and `26` vs `26.0` do not matter) replays the
//! first order with 200 (as it is now); with another body it is 422. The [`OrderStore`] checks
//! and inserts under one lock, so concurrent requests with one key create one order.
//!
//! Status changes come from outside the gateways (a warehouse): through the admin routes
//! ([`admin_routes`]) or the fulfilment clock (`run_fulfilment_clock`, `--advance-orders-every`).
//! An order moves along pending → confirmed → shipped → delivered, or is cancelled while pending
//! or confirmed; anything else is a 409 and changes nothing.
//! - `POST /__admin/orders/{order_id}/status` with `{"status": "shipped"}`: answers the order.
//! - `POST /__admin/orders/advance`: moves every order that is not delivered or cancelled one step
//!   along (what one tick of the clock does); answers `{"advanced": N}`.
//!
//! Each order has a version (1 when created, one more with every status change; seeded orders
//! count the steps to their status) that the contract's bodies do not show but its events carry:
//! creation publishes `com.bff.order.created`, a status change `com.bff.order.status_changed`, on
//! the `order` event stream (see [`crate::events`]), queued under the store's lock and appended
//! before the answer is sent.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use axum::{
    Router,
    extract::{FromRef, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
// Tokio's clock, so that tests can move time forward past the idempotency TTL.
use tokio::time::Instant;

use crate::{
    cursor::CursorKey,
    events::{self, Announcement, Publisher, TraceContext},
    extract::{JsonBody, PathOf, QueryParams, id_header},
    problem::ApiError,
    product::Money,
    reply,
    validate::{self, Fields},
};

/// How long an `Idempotency-Key` is remembered (the contract asks for at least 24 hours).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Most lines an order may have.
const MAX_LINES: usize = 100;
/// Largest unit price, in minor units, so that any total fits in an `i64`.
const MAX_UNIT_PRICE: i64 = 10_000_000_000;
/// CloudEvents `type` of an order's creation.
pub const ORDER_CREATED: &str = "com.bff.order.created";
/// CloudEvents `type` of an order's status change.
pub const ORDER_STATUS_CHANGED: &str = "com.bff.order.status_changed";

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Just created, not yet confirmed by the merchant.
    Pending,
    /// Accepted by the merchant.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer.
    Delivered,
    /// Will not be fulfilled.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// The contract's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The status a contract name stands for.
    fn parse(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }

    /// The next step of fulfilment; `None` for delivered and cancelled orders, which stay so.
    pub fn next(self) -> Option<OrderStatus> {
        match self {
            OrderStatus::Pending => Some(OrderStatus::Confirmed),
            OrderStatus::Confirmed => Some(OrderStatus::Shipped),
            OrderStatus::Shipped => Some(OrderStatus::Delivered),
            OrderStatus::Delivered | OrderStatus::Cancelled => None,
        }
    }

    /// Whether an order may move from this status to `to`: one step along, or cancelled before
    /// it ships.
    pub fn can_become(self, to: OrderStatus) -> bool {
        self.next() == Some(to)
            || (to == OrderStatus::Cancelled
                && matches!(self, OrderStatus::Pending | OrderStatus::Confirmed))
    }

    /// The statuses an order may move to from this one.
    fn successors(self) -> Vec<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .filter(|to| self.can_become(*to))
            .collect()
    }

    /// The version of a seeded order in this status: 1 plus the steps it took to get there
    /// (cancelled ones straight from pending).
    fn seeded_version(self) -> u64 {
        match self {
            OrderStatus::Pending => 1,
            OrderStatus::Confirmed | OrderStatus::Cancelled => 2,
            OrderStatus::Shipped => 3,
            OrderStatus::Delivered => 4,
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Through which front door an order came, which decides who owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The web storefront; owned by the user.
    Web,
    /// The mobile app; owned by the user.
    Mobile,
    /// A partner acting for its customer; owned by the partner.
    Partner,
}

/// The channel of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Web, mobile or partner.
    pub kind: ChannelKind,
    /// The partner of a `partner` order (its owner); `None` (null) for web and mobile.
    pub partner_id: Option<String>,
}

/// One line of an order, priced by the caller from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: String,
    /// Units, 1 to 99.
    pub quantity: u32,
    /// The price of one unit when ordered.
    pub unit_price: Money,
}

/// A postal address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Street and number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO-3166 alpha-2 country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The body of `POST /orders`, reduced to the fields the `NewOrder` schema names: two requests
/// are "the same body" for idempotency exactly when their `NewOrder`s are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    /// The customer (for partner orders, the partner's customer reference).
    pub user_id: String,
    /// Web, mobile or partner; decides the owner.
    pub channel: Channel,
    /// 1 to 100 lines, all in one currency.
    pub lines: Vec<OrderLine>,
    /// Where to ship, if given.
    pub shipping_address: Option<Address>,
}

impl NewOrder {
    /// Reads a request body against the `NewOrder` schema (unknown fields ignored).
    fn from_json(body: &Value) -> Result<NewOrder, ApiError> {
        let fields = Fields::of(body, "")?;
        let user_id = fields.id("user_id")?;
        let channel = Fields::of(fields.required("channel")?, "/channel")?;
        let kind = match channel.required("kind")?.as_str() {
            Some("web") => ChannelKind::Web,
            Some("mobile") => ChannelKind::Mobile,
            Some("partner") => ChannelKind::Partner,
            _ => {
                return Err(ApiError::bad_request(
                    "/channel/kind must be one of web, mobile, partner",
                ));
            }
        };
        let partner_id = match channel.optional("partner_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if validate::is_id(id) => Some(id.clone()),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "/channel/partner_id must be null or a string matching ^[A-Za-z0-9_-]{1,64}$",
                ));
            }
        };
        let lines = match fields.required("lines")? {
            Value::Array(lines) if (1..=MAX_LINES).contains(&lines.len()) => lines,
            _ => {
                return Err(ApiError::bad_request(
                    "/lines must be an array of 1 to 100 order lines",
                ));
            }
        };
        let lines = lines
            .iter()
            .enumerate()
            .map(|(index, line)| read_line(line, &format!("/lines/{index}")))
            .collect::<Result<Vec<_>, _>>()?;
        let shipping_address = fields
            .optional("shipping_address")
            .map(|address| read_address(address, "/shipping_address"))
            .transpose()?;
        Ok(NewOrder {
            user_id,
            channel: Channel { kind, partner_id },
            lines,
            shipping_address,
        })
    }

    /// Who would own the order: the partner for `partner` orders, else the user. `None` for a
    /// partner order without `partner_id`, which nobody can own.
    fn owner(&self) -> Option<Owner> {
        match self.channel.kind {
            ChannelKind::Partner => self.channel.partner_id.clone().map(Owner::Partner),
            ChannelKind::Web | ChannelKind::Mobile => Some(Owner::User(self.user_id.clone())),
        }
    }

    /// The order total: the sum of the lines, which must share one currency (else 422).
    fn total(&self) -> Result<Money, ApiError> {
        let currency = self
            .lines
            .first()
            .map(|line| line.unit_price.currency.clone())
            .ok_or_else(|| ApiError::bad_request("/lines must not be empty"))?;
        let mut amount: i64 = 0;
        for line in &self.lines {
            if line.unit_price.currency != currency {
                return Err(ApiError::Unprocessable(format!(
                    "all lines must share one currency; found {currency} and {}",
                    line.unit_price.currency
                )));
            }
            amount = line
                .unit_price
                .amount_minor
                .checked_mul(i64::from(line.quantity))
                .and_then(|subtotal| amount.checked_add(subtotal))
                .ok_or_else(|| {
                    ApiError::Unprocessable("the order total is too large".to_owned())
                })?;
        }
        Ok(Money {
            amount_minor: amount,
            currency,
        })
    }
}

/// Reads one `OrderLine`.
fn read_line(value: &Value, at: &str) -> Result<OrderLine, ApiError> {
    let fields = Fields::of(value, at)?;
    let product_id = fields.id("product_id")?;
    let quantity = u32::try_from(fields.integer("quantity", 1, 99)?).unwrap_or_default();
    let price_at = fields.pointer("unit_price");
    let price = Fields::of(fields.required("unit_price")?, &price_at)?;
    let amount_minor = price.integer("amount_minor", 0, MAX_UNIT_PRICE)?;
    let currency = match price.required("currency")?.as_str() {
        Some(code) if validate::is_upper_code(code, 3) => code.to_owned(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "{price_at}/currency must match ^[A-Z]{{3}}$"
            )));
        }
    };
    Ok(OrderLine {
        product_id,
        quantity,
        unit_price: Money {
            amount_minor,
            currency,
        },
    })
}

/// Reads an `Address`.
fn read_address(value: &Value, at: &str) -> Result<Address, ApiError> {
    let fields = Fields::of(value, at)?;
    let country = fields.optional_string("country")?;
    if country
        .as_deref()
        .is_some_and(|code| !validate::is_upper_code(code, 2))
    {
        return Err(ApiError::bad_request(format!(
            "{at}/country must match ^[A-Z]{{2}}$"
        )));
    }
    Ok(Address {
        name: fields.optional_string("name")?,
        line1: fields.optional_string("line1")?,
        city: fields.optional_string("city")?,
        postal_code: fields.optional_string("postal_code")?,
        country,
    })
}

/// An order, as the contract's `Order` schema describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order id (`o-0000001`), used in `/orders/{order_id}` and `Location`.
    pub id: String,
    /// The customer.
    pub user_id: String,
    /// How the order came in; decides its owner.
    pub channel: Channel,
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// What was ordered, at which prices.
    pub lines: Vec<OrderLine>,
    /// Computed by the service from the lines.
    pub total: Money,
    /// Where to ship, if given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shipping_address: Option<Address>,
    /// When the order was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The last status change, `None` (null) if there was none.
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

impl Order {
    /// The owner of this order.
    pub(crate) fn owner(&self) -> Owner {
        match (&self.channel.kind, &self.channel.partner_id) {
            (ChannelKind::Partner, Some(partner)) => Owner::Partner(partner.clone()),
            _ => Owner::User(self.user_id.clone()),
        }
    }

    /// The owner as the events name it: exactly one of the two ids.
    fn owner_data(&self) -> OwnerData<'_> {
        match (&self.channel.kind, &self.channel.partner_id) {
            (ChannelKind::Partner, Some(partner)) => OwnerData {
                user_id: None,
                partner_id: Some(partner),
            },
            _ => OwnerData {
                user_id: Some(&self.user_id),
                partner_id: None,
            },
        }
    }

    /// The partner's reference of its customer (`user_id` of a partner order), `None` for web
    /// and mobile orders.
    fn customer_reference(&self) -> Option<&str> {
        (self.channel.kind == ChannelKind::Partner).then_some(self.user_id.as_str())
    }
}

/// `owner` of the order events.
#[derive(Debug, Serialize)]
struct OwnerData<'a> {
    /// The user of a web or mobile order, else null.
    user_id: Option<&'a str>,
    /// The partner of a partner order, else null.
    partner_id: Option<&'a str>,
}

/// `data` of `com.bff.order.created`.
#[derive(Debug, Serialize)]
struct OrderCreated<'a> {
    /// The new order.
    order_id: &'a str,
    /// Who owns it (whom a webhook goes to).
    owner: OwnerData<'a>,
    /// The partner's customer reference, for partner orders.
    customer_reference: Option<&'a str>,
    /// Its status (pending).
    status: OrderStatus,
    /// Its version (1).
    version: u64,
    /// What it costs.
    total: &'a Money,
}

/// `data` of `com.bff.order.status_changed`.
#[derive(Debug, Serialize)]
struct OrderStatusChanged<'a> {
    /// The order.
    order_id: &'a str,
    /// Who owns it.
    owner: OwnerData<'a>,
    /// The partner's customer reference, for partner orders.
    customer_reference: Option<&'a str>,
    /// The new status.
    status: OrderStatus,
    /// The status before.
    previous_status: OrderStatus,
    /// The order's new version.
    version: u64,
}

/// The id of the order created `sequence`-th (seeded orders first).
pub(crate) fn order_id(sequence: u64) -> String {
    format!("o-{sequence:07}")
}

/// Who owns an order, and so who may create, read and list it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    /// A user, named by `X-User-Id` (web and mobile orders).
    User(String),
    /// A partner, named by `X-Partner-Id` (partner orders).
    Partner(String),
}

impl Owner {
    /// A byte string naming the owner, for cursor scopes.
    fn scope(&self) -> String {
        match self {
            Owner::User(id) => format!("user:{id}"),
            Owner::Partner(id) => format!("partner:{id}"),
        }
    }
}

/// The identity headers of a request.
#[derive(Debug, Default)]
struct Identity {
    /// `X-User-Id`, the end user the gateway authenticated.
    user: Option<String>,
    /// `X-Partner-Id`, the partner the gateway authenticated.
    partner: Option<String>,
}

impl Identity {
    /// Reads both headers; either may be absent, but present ones must be ids (else 400).
    fn from_headers(headers: &HeaderMap) -> Result<Identity, ApiError> {
        Ok(Identity {
            user: id_header(headers, "x-user-id")?,
            partner: id_header(headers, "x-partner-id")?,
        })
    }

    /// Whether these headers name `owner`.
    fn owns(&self, owner: &Owner) -> bool {
        match owner {
            Owner::User(id) => self.user.as_ref() == Some(id),
            Owner::Partner(id) => self.partner.as_ref() == Some(id),
        }
    }
}

/// An order as stored, with its position in creation order.
#[derive(Debug, Clone)]
struct Stored {
    /// Creation order; the listing's sort key (newest first) and cursor position.
    sequence: u64,
    /// The order as it is now (replaced whole when its status changes).
    order: Arc<Order>,
    /// 1 when created, one more with every status change: the `version` of its events.
    version: u64,
}

/// What an `Idempotency-Key` remembers.
#[derive(Debug)]
struct Remembered {
    /// The request that created the order, to tell a replay from a reuse with another body.
    request: NewOrder,
    /// The id of the order it created, answered again (as it is now) on replay.
    order_id: String,
}

/// The state behind the order service, under one lock.
#[derive(Debug, Default)]
struct Book {
    /// The sequence number the next order gets.
    next_sequence: u64,
    /// Every order by id, with its owner, for `GET /orders/{order_id}`.
    by_id: HashMap<String, (Owner, Stored)>,
    /// Each owner's orders in creation order (oldest first), for listing without scanning others.
    by_owner: HashMap<Owner, Vec<Stored>>,
    /// Idempotency keys by (owner, key).
    keys: HashMap<(Owner, String), Remembered>,
    /// When each key was first used, oldest first, to forget keys after [`IDEMPOTENCY_TTL`].
    key_ages: VecDeque<(Instant, (Owner, String))>,
}

impl Book {
    /// Adds an order at the end of the creation order.
    fn insert(&mut self, owner: Owner, order: Order, version: u64) -> Arc<Order> {
        let stored = Stored {
            sequence: self.next_sequence,
            order: Arc::new(order),
            version,
        };
        self.next_sequence += 1;
        let order = stored.order.clone();
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .push(stored.clone());
        self.by_id.insert(order.id.clone(), (owner, stored));
        order
    }

    /// Moves an order to another status (which must be allowed), both in `by_id` and in its
    /// owner's list; returns it as it is now, its status before and its new version.
    fn transition(
        &mut self,
        order_id: &str,
        to: OrderStatus,
        now: OffsetDateTime,
    ) -> Option<(Arc<Order>, OrderStatus, u64)> {
        let (owner, stored) = self.by_id.get_mut(order_id)?;
        let previous = stored.order.status;
        let mut order = stored.order.as_ref().clone();
        order.status = to;
        order.updated_at = Some(now);
        stored.order = Arc::new(order);
        stored.version += 1;
        let updated = stored.clone();
        let listed = self.by_owner.get_mut(owner)?;
        let position = listed.partition_point(|other| other.sequence < updated.sequence);
        if let Some(slot) = listed.get_mut(position) {
            *slot = updated.clone();
        }
        Some((updated.order, previous, updated.version))
    }

    /// Forgets idempotency keys older than the TTL.
    fn forget_old_keys(&mut self, now: Instant) {
        while let Some((first_used, _)) = self.key_ages.front() {
            if now.duration_since(*first_used) < IDEMPOTENCY_TTL {
                break;
            }
            if let Some((_, key)) = self.key_ages.pop_front() {
                self.keys.remove(&key);
            }
        }
    }
}

/// How a create request was answered.
#[derive(Debug)]
enum Created {
    /// A new order: 201.
    New(Arc<Order>),
    /// The order an earlier request with the same key and body created: 200.
    Replayed(Arc<Order>),
}

/// Every order, in memory, safe under concurrent creation.
#[derive(Debug)]
pub struct OrderStore {
    /// All order state; creation and status changes take the write lock for the whole
    /// check-and-change, and queue their events under it.
    book: RwLock<Book>,
    /// Where order changes are announced (the `order` stream).
    events: Publisher,
}

impl OrderStore {
    /// A store holding the seeded orders, given oldest first (their ids must follow
    /// [`order_id`]), announcing changes to `events`.
    pub(crate) fn new(orders: Vec<Order>, events: Publisher) -> OrderStore {
        let mut book = Book {
            next_sequence: 1,
            ..Book::default()
        };
        for order in orders {
            let version = order.status.seeded_version();
            book.insert(order.owner(), order, version);
        }
        OrderStore {
            book: RwLock::new(book),
            events,
        }
    }

    /// Writes the book (consistent even if poisoned: every change checks before it mutates).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Book> {
        self.book.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the book; a poisoned lock is still consistent (nothing panics while holding it).
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// An order by id, whoever owns it.
    pub fn get(&self, order_id: &str) -> Option<Order> {
        self.read()
            .by_id
            .get(order_id)
            .map(|(_, stored)| stored.order.as_ref().clone())
    }

    /// An order's version: 1 when created, one more with every status change.
    pub fn version(&self, order_id: &str) -> Option<u64> {
        self.read()
            .by_id
            .get(order_id)
            .map(|(_, stored)| stored.version)
    }

    /// Every order of a user's (web and mobile orders), newest first.
    pub fn of_user(&self, user_id: &str) -> Vec<Order> {
        self.all_of(&Owner::User(user_id.to_owned()))
    }

    /// Every order of a partner's, newest first.
    pub fn of_partner(&self, partner_id: &str) -> Vec<Order> {
        self.all_of(&Owner::Partner(partner_id.to_owned()))
    }

    /// Every order of an owner, newest first.
    fn all_of(&self, owner: &Owner) -> Vec<Order> {
        self.read()
            .by_owner
            .get(owner)
            .map(|orders| {
                orders
                    .iter()
                    .rev()
                    .map(|stored| stored.order.as_ref().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An order by id, only if `identity` owns it.
    fn get_owned(&self, order_id: &str, identity: &Identity) -> Option<Arc<Order>> {
        self.read()
            .by_id
            .get(order_id)
            .filter(|(owner, _)| identity.owns(owner))
            .map(|(_, stored)| stored.order.clone())
    }

    /// One page of an owner's orders, newest first, strictly older than `before` (a sequence
    /// number from a cursor); also the sequence of the page's last order when more follow.
    fn page(
        &self,
        owner: &Owner,
        status: Option<OrderStatus>,
        before: Option<u64>,
        limit: usize,
    ) -> (Vec<Arc<Order>>, Option<u64>) {
        let book = self.read();
        let Some(orders) = book.by_owner.get(owner) else {
            return (Vec::new(), None);
        };
        let end = before.map_or(orders.len(), |before| {
            orders.partition_point(|stored| stored.sequence < before)
        });
        let mut page: Vec<&Stored> = orders[..end]
            .iter()
            .rev()
            .filter(|stored| status.is_none_or(|status| stored.order.status == status))
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more {
            page.last().map(|stored| stored.sequence)
        } else {
            None
        };
        (
            page.into_iter()
                .map(|stored| stored.order.clone())
                .collect(),
            next,
        )
    }

    /// Creates an order for `owner` under an idempotency key, or replays the one the key created
    /// (as it is now); a new order is announced with the request's `trace`.
    fn create(
        &self,
        owner: Owner,
        key: String,
        request: NewOrder,
        total: Money,
        now: OffsetDateTime,
        trace: Option<&TraceContext>,
    ) -> Result<(Created, Announcement), ApiError> {
        let mut book = self.write();
        let clock = Instant::now();
        book.forget_old_keys(clock);
        let scoped_key = (owner.clone(), key);
        if let Some(remembered) = book.keys.get(&scoped_key) {
            return if remembered.request == request {
                let order = book
                    .by_id
                    .get(&remembered.order_id)
                    .map(|(_, stored)| stored.order.clone())
                    .ok_or_else(|| {
                        // Orders are never removed, so a remembered one always exists.
                        ApiError::NotFound(format!("order {} does not exist", remembered.order_id))
                    })?;
                Ok((Created::Replayed(order), Announcement::none()))
            } else {
                Err(ApiError::Unprocessable(
                    "this Idempotency-Key was already used with a different request body"
                        .to_owned(),
                ))
            };
        }
        let partner_id = match request.channel.kind {
            ChannelKind::Partner => request.channel.partner_id.clone(),
            ChannelKind::Web | ChannelKind::Mobile => None,
        };
        let order = Order {
            id: order_id(book.next_sequence),
            user_id: request.user_id.clone(),
            channel: Channel {
                kind: request.channel.kind,
                partner_id,
            },
            status: OrderStatus::Pending,
            lines: request.lines.clone(),
            total,
            shipping_address: request.shipping_address.clone(),
            created_at: now,
            updated_at: None,
        };
        let order = book.insert(owner, order, 1);
        book.keys.insert(
            scoped_key.clone(),
            Remembered {
                request,
                order_id: order.id.clone(),
            },
        );
        book.key_ages.push_back((clock, scoped_key));
        let announcement = self.events.announce(
            ORDER_CREATED,
            &order.id,
            &OrderCreated {
                order_id: &order.id,
                owner: order.owner_data(),
                customer_reference: order.customer_reference(),
                status: order.status,
                version: 1,
                total: &order.total,
            },
            trace,
        );
        Ok((Created::New(order), announcement))
    }

    /// Moves an order to `to`, if its status allows (else 409, nothing changes), and announces
    /// it with `trace`.
    fn set_status(
        &self,
        order_id: &str,
        to: OrderStatus,
        now: OffsetDateTime,
        trace: Option<&TraceContext>,
    ) -> Result<(Arc<Order>, Announcement), ApiError> {
        let mut book = self.write();
        let (_, stored) = book
            .by_id
            .get(order_id)
            .ok_or_else(|| ApiError::NotFound(format!("order {order_id} does not exist")))?;
        let from = stored.order.status;
        if !from.can_become(to) {
            let allowed: Vec<&str> = from
                .successors()
                .into_iter()
                .map(OrderStatus::as_str)
                .collect();
            let allowed = if allowed.is_empty() {
                "nothing else: it is final".to_owned()
            } else {
                allowed.join(" or ")
            };
            return Err(ApiError::Conflict(format!(
                "order {order_id} is {from} and cannot become {to}; it can become {allowed}"
            )));
        }
        let (order, previous, version) = book
            .transition(order_id, to, now)
            .ok_or_else(|| ApiError::NotFound(format!("order {order_id} does not exist")))?;
        let announcement = self.announce_status(&order, previous, version, trace);
        Ok((order, announcement))
    }

    /// Moves every order that is not delivered or cancelled one step along (oldest first);
    /// returns their announcements.
    fn advance_all(&self, now: OffsetDateTime) -> Vec<Announcement> {
        let mut book = self.write();
        let mut moving: Vec<(u64, String, OrderStatus)> = book
            .by_id
            .values()
            .filter_map(|(_, stored)| {
                let next = stored.order.status.next()?;
                Some((stored.sequence, stored.order.id.clone(), next))
            })
            .collect();
        moving.sort_unstable_by_key(|(sequence, _, _)| *sequence);
        moving
            .into_iter()
            .filter_map(|(_, order_id, next)| {
                let (order, previous, version) = book.transition(&order_id, next, now)?;
                Some(self.announce_status(&order, previous, version, None))
            })
            .collect()
    }

    /// Queues `com.bff.order.status_changed` for an order that just moved.
    fn announce_status(
        &self,
        order: &Order,
        previous: OrderStatus,
        version: u64,
        trace: Option<&TraceContext>,
    ) -> Announcement {
        self.events.announce(
            ORDER_STATUS_CHANGED,
            &order.id,
            &OrderStatusChanged {
                order_id: &order.id,
                owner: order.owner_data(),
                customer_reference: order.customer_reference(),
                status: order.status,
                previous_status: previous,
                version,
            },
            trace,
        )
    }
}

/// What the order service's handlers read. The [`World`](crate::World) holds one and hands out
/// clones (`FromRef`); a clone is cheap and shares the store.
#[derive(Debug, Clone)]
pub struct OrderState {
    /// Every order.
    orders: Arc<OrderStore>,
    /// Signs and checks the cursors of `GET /orders`.
    cursor_key: CursorKey,
}

impl OrderState {
    /// The state of a service keeping the orders of `orders` and signing cursors with `cursor_key`.
    pub(crate) fn new(orders: OrderStore, cursor_key: CursorKey) -> OrderState {
        OrderState {
            orders: Arc::new(orders),
            cursor_key,
        }
    }

    /// Every order.
    pub(crate) fn orders(&self) -> &OrderStore {
        &self.orders
    }

    /// Moves an order to another status as a warehouse does, and returns it once the change is
    /// visible and its event published (or given up on, see [`crate::events`]).
    ///
    /// # Errors
    ///
    /// 404 for an unknown order, 409 for a move its status does not allow (nothing changes).
    pub(crate) async fn set_status(
        &self,
        order_id: &str,
        to: OrderStatus,
        trace: Option<&TraceContext>,
    ) -> Result<Order, ApiError> {
        let now = OffsetDateTime::now_utc();
        let (order, announced) = self.orders.set_status(order_id, to, now, trace)?;
        announced.published().await;
        Ok(order.as_ref().clone())
    }

    /// Moves every order that is not delivered or cancelled one step along (one tick of the
    /// fulfilment clock); returns how many moved, once their events are published.
    pub(crate) async fn advance_orders(&self) -> usize {
        let announced = self.orders.advance_all(OffsetDateTime::now_utc());
        let moved = announced.len();
        events::all_published(announced).await;
        moved
    }
}

/// The fulfilment clock (`--advance-orders-every`): every `every` (the first time one `every`
/// after the start), moves every order that is not delivered or cancelled one step along, as a
/// warehouse working through its orders would. Runs until dropped.
pub(crate) async fn run_fulfilment_clock(state: OrderState, every: Duration) {
    let every = every.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let moved = state.advance_orders().await;
        if moved > 0 {
            tracing::info!(moved, "fulfilment clock moved orders one step along");
        }
    }
}

/// The order service's routes, for a router whose state yields an [`OrderState`] (the
/// [`World`](crate::World) does).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    OrderState: FromRef<S>,
{
    Router::new()
        .route("/orders", get(list_orders).post(create_order))
        .route("/orders/{order_id}", get(get_order))
}

/// The order service's admin routes (status changes, see the module docs).
pub fn admin_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    OrderState: FromRef<S>,
{
    Router::new()
        .route("/__admin/orders/{order_id}/status", post(admin_set_status))
        .route("/__admin/orders/advance", post(admin_advance_orders))
}

/// `POST /__admin/orders/{order_id}/status`.
async fn admin_set_status(
    State(state): State<OrderState>,
    PathOf(order_id): PathOf<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    validate::id("order_id", &order_id)?;
    let JsonBody(body) = body?;
    let fields = Fields::of(&body, "")?;
    fields.only(&["status"])?;
    let to = fields
        .required("status")?
        .as_str()
        .and_then(OrderStatus::parse)
        .ok_or_else(|| {
            ApiError::bad_request(
                "/status must be one of pending, confirmed, shipped, delivered, cancelled",
            )
        })?;
    let trace = TraceContext::from_headers(&headers);
    let order = state.set_status(&order_id, to, trace.as_ref()).await?;
    reply::json(StatusCode::OK, reply::no_store(), &order)
}

/// `POST /__admin/orders/advance`.
async fn admin_advance_orders(State(state): State<OrderState>) -> Result<Response, ApiError> {
    let advanced = state.advance_orders().await;
    reply::json(
        StatusCode::OK,
        reply::no_store(),
        &serde_json::json!({ "advanced": advanced }),
    )
}

/// `GET /orders`: a page of one owner's orders.
async fn list_orders(
    State(state): State<OrderState>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user_id = query.id("user_id")?;
    let partner_id = query.id("partner_id")?;
    let status = query
        .get("status")?
        .map(|name| {
            OrderStatus::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    "query parameter status must be one of pending, confirmed, shipped, delivered, cancelled",
                )
            })
        })
        .transpose()?;
    let limit = query.limit()?;
    let cursor = query.get("cursor")?;
    let identity = Identity::from_headers(&headers)?;
    let owner = match (user_id, partner_id) {
        (Some(user), None) => Owner::User(user.to_owned()),
        (None, Some(partner)) => Owner::Partner(partner.to_owned()),
        _ => {
            return Err(ApiError::Forbidden(
                "name exactly one owner: user_id or partner_id".to_owned(),
            ));
        }
    };
    if !identity.owns(&owner) {
        return Err(ApiError::Forbidden(
            "the identity headers do not name this owner".to_owned(),
        ));
    }
    let scope = format!(
        "orders\0{}\0{}",
        owner.scope(),
        status.map(OrderStatus::as_str).unwrap_or_default()
    );
    let before = cursor
        .map(|cursor| state.cursor_key.open(scope.as_bytes(), cursor))
        .transpose()?
        .map(|position| {
            <[u8; 8]>::try_from(position.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    ApiError::bad_request(
                        "query parameter cursor is not a cursor this service issued",
                    )
                })
        })
        .transpose()?;
    let (orders, next) = state.orders.page(&owner, status, before, limit);
    let next_cursor = next.map(|sequence| {
        state
            .cursor_key
            .seal(scope.as_bytes(), &sequence.to_be_bytes())
    });
    let page = OrderPage {
        items: orders.iter().map(Arc::as_ref).collect(),
        next_cursor,
    };
    reply::json(StatusCode::OK, reply::private_no_store(), &page)
}

/// The body of `GET /orders`.
#[derive(Debug, Serialize)]
struct OrderPage<'a> {
    /// The page's orders, newest first.
    items: Vec<&'a Order>,
    /// Where the next page starts, `None` (null) on the last page.
    next_cursor: Option<String>,
}

/// `POST /orders`: creates an order, or replays the one its `Idempotency-Key` created.
async fn create_order(
    State(state): State<OrderState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let identity = Identity::from_headers(&headers)?;
    let JsonBody(body) = body?;
    let request = NewOrder::from_json(&body)?;
    let owner = request
        .owner()
        .filter(|owner| identity.owns(owner))
        .ok_or_else(|| {
            ApiError::Forbidden(
                "the identity headers do not own this order: a partner order needs X-Partner-Id equal to channel.partner_id, a web or mobile order X-User-Id equal to user_id".to_owned(),
            )
        })?;
    let total = request.total()?;
    let now = OffsetDateTime::now_utc();
    let trace = TraceContext::from_headers(&headers);
    let (created, announced) =
        state
            .orders
            .create(owner, key, request, total, now, trace.as_ref())?;
    announced.published().await;
    let (status, order) = match created {
        Created::New(order) => (StatusCode::CREATED, order),
        Created::Replayed(order) => (StatusCode::OK, order),
    };
    let mut response = reply::json(status, reply::private_no_store(), order.as_ref())?;
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The request's `Idempotency-Key`: required, one value, `^[!-~]{1,255}$`.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::bad_request(
            "header Idempotency-Key is required, once",
        ));
    };
    match value.to_str() {
        Ok(key) if validate::is_idempotency_key(key) => Ok(key.to_owned()),
        _ => Err(ApiError::bad_request(
            "header Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// `GET /orders/{order_id}`: the order, or 404 if it does not exist or the caller does not own it.
async fn get_order(
    State(state): State<OrderState>,
    PathOf(order_id): PathOf<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate::id("order_id", &order_id)?;
    let identity = Identity::from_headers(&headers)?;
    let order = state
        .orders
        .get_owned(&order_id, &identity)
        .ok_or_else(|| ApiError::NotFound(format!("order {order_id} does not exist")))?;
    reply::json(StatusCode::OK, reply::private_no_store(), order.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "user_id": "u-0001",
            "channel": { "kind": "web" },
            "lines": [{ "product_id": "p-00001", "quantity": 2, "unit_price": { "amount_minor": 500, "currency": "EUR" } }],
            "shipping_address": { "city": "Berlin", "country": "DE" },
            "extra": true
        })
    }

    #[test]
    fn new_orders_ignore_unknown_fields_and_integral_floats() {
        let mut other = body();
        other["lines"][0]["quantity"] = json!(2.0);
        other["something"] = json!("else");
        assert_eq!(NewOrder::from_json(&body()), NewOrder::from_json(&other));
    }

    #[test]
    fn totals_refuse_mixed_currencies() {
        let mut mixed = body();
        mixed["lines"] = json!([
            { "product_id": "p-1", "quantity": 1, "unit_price": { "amount_minor": 1, "currency": "EUR" } },
            { "product_id": "p-2", "quantity": 1, "unit_price": { "amount_minor": 1, "currency": "USD" } }
        ]);
        let request = NewOrder::from_json(&mixed);
        assert!(matches!(
            request.map(|r| r.total()),
            Ok(Err(ApiError::Unprocessable(_)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idempotency_keys_are_remembered_for_24_hours() {
        let store = OrderStore::new(Vec::new(), Publisher::disabled(crate::ServiceKind::Order));
        let request = NewOrder::from_json(&body()).expect("a valid body");
        let owner = request.owner().expect("an owner");
        let total = request.total().expect("one currency");
        let create = || {
            store
                .create(
                    owner.clone(),
                    "key".to_owned(),
                    request.clone(),
                    total.clone(),
                    OffsetDateTime::now_utc(),
                    None,
                )
                .map(|(created, _)| created)
        };
        let first = match create() {
            Ok(Created::New(order)) => order,
            other => panic!("expected a new order, got {other:?}"),
        };
        tokio::time::advance(IDEMPOTENCY_TTL - Duration::from_secs(1)).await;
        assert!(matches!(create(), Ok(Created::Replayed(order)) if order.id == first.id));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(create(), Ok(Created::New(order)) if order.id != first.id));
    }

    #[test]
    fn orders_move_one_step_along_or_are_cancelled_before_shipping() {
        use OrderStatus::{Cancelled, Confirmed, Delivered, Pending, Shipped};
        let allowed: Vec<(OrderStatus, OrderStatus)> = OrderStatus::ALL
            .into_iter()
            .flat_map(|from| OrderStatus::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Pending, Confirmed),
                (Pending, Cancelled),
                (Confirmed, Shipped),
                (Confirmed, Cancelled),
                (Shipped, Delivered),
            ]
        );
        // A seeded order's version counts the steps to its status.
        for status in OrderStatus::ALL {
            let steps = OrderStatus::ALL
                .into_iter()
                .filter(|from| from.can_become(status))
                .map(OrderStatus::seeded_version)
                .min()
                .map_or(1, |before| before + 1);
            assert_eq!(status.seeded_version(), steps, "{status}");
        }
    }

    #[test]
    fn schema_violations_are_bad_requests() {
        for (pointer, value) in [
            ("/user_id", json!("bad id")),
            ("/channel/kind", json!("fax")),
            ("/lines", json!([])),
            ("/lines/0/quantity", json!(100)),
            ("/lines/0/unit_price/amount_minor", json!(-1)),
            ("/lines/0/unit_price/currency", json!("eur")),
            ("/shipping_address/country", json!("DEU")),
            ("/shipping_address/city", json!(7)),
            ("/shipping_address", json!(null)),
        ] {
            let mut invalid = body();
            if let Some(slot) = invalid.pointer_mut(pointer) {
                *slot = value;
            }
            assert!(
                matches!(NewOrder::from_json(&invalid), Err(ApiError::BadRequest(_))),
                "{pointer}"
            );
        }
    }
}

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
//! first order with 200; with another body it is 422. The [`OrderStore`] checks and inserts under
//! one lock, so concurrent requests with one key create one order.

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
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
// Tokio's clock, so that tests can move time forward past the idempotency TTL.
use tokio::time::Instant;

use crate::{
    cursor::CursorKey,
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
    /// The order.
    order: Arc<Order>,
}

/// What an `Idempotency-Key` remembers.
#[derive(Debug)]
struct Remembered {
    /// The request that created the order, to tell a replay from a reuse with another body.
    request: NewOrder,
    /// The order it created, answered again on replay.
    order: Arc<Order>,
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
    fn insert(&mut self, owner: Owner, order: Order) -> Arc<Order> {
        let stored = Stored {
            sequence: self.next_sequence,
            order: Arc::new(order),
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
    /// All order state; creation takes the write lock for the whole check-and-insert.
    book: RwLock<Book>,
}

impl OrderStore {
    /// A store holding the seeded orders, given oldest first (their ids must follow [`order_id`]).
    pub(crate) fn new(orders: Vec<Order>) -> OrderStore {
        let mut book = Book {
            next_sequence: 1,
            ..Book::default()
        };
        for order in orders {
            book.insert(order.owner(), order);
        }
        OrderStore {
            book: RwLock::new(book),
        }
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

    /// Creates an order for `owner` under an idempotency key, or replays the one the key created.
    fn create(
        &self,
        owner: Owner,
        key: String,
        request: NewOrder,
        total: Money,
        now: OffsetDateTime,
    ) -> Result<Created, ApiError> {
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        let clock = Instant::now();
        book.forget_old_keys(clock);
        let scoped_key = (owner.clone(), key);
        if let Some(remembered) = book.keys.get(&scoped_key) {
            return if remembered.request == request {
                Ok(Created::Replayed(remembered.order.clone()))
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
        let order = book.insert(owner, order);
        book.keys.insert(
            scoped_key.clone(),
            Remembered {
                request,
                order: order.clone(),
            },
        );
        book.key_ages.push_back((clock, scoped_key));
        Ok(Created::New(order))
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
    let (status, order) = match state.orders.create(owner, key, request, total, now)? {
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
        let store = OrderStore::new(Vec::new());
        let request = NewOrder::from_json(&body()).expect("a valid body");
        let owner = request.owner().expect("an owner");
        let total = request.total().expect("one currency");
        let create = || {
            store.create(
                owner.clone(),
                "key".to_owned(),
                request.clone(),
                total.clone(),
                OffsetDateTime::now_utc(),
            )
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

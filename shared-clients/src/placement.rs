//! Placing orders the same way from every gateway: pricing lines from the catalog, checking stock,
//! and checking out a cart.
//!
//! Policy:
//! - **Prices and stock are current.** Lines are priced from a fresh batch lookup at the product
//!   service (one call per 100 distinct products, concurrent), never from the gateway's cache: an
//!   order must not be placed at a price or against stock that was true a minute ago. A checkout
//!   reads the cart uncached too (another replica may have changed it within the cache's TTL).
//! - **Refuse before creating.** A shipping address that is not the contract's `Address`
//!   ([`PlaceOrderError::InvalidAddress`]: `country` not `^[A-Z]{2}$`, a field longer than
//!   [`MAX_ADDRESS_FIELD_CHARS`]), unknown products, products out of stock or with fewer units
//!   available than asked, and lines in more than one currency are refused with
//!   [`PlaceOrderError`] (naming every offending product); no order is created.
//! - **A retry is the same order; a different request is refused.** The order service
//!   deduplicates by `Idempotency-Key` *and body*. Re-pricing on a retry could change the body (a
//!   price moved) and turn a harmless retry into a 422, and a retried cart checkout whose first
//!   attempt already emptied the cart would have nothing left to order. So each (owner, key)
//!   attempt is remembered for [`OrderPlacementConfig::remember_for`] with a fingerprint of the
//!   request (explicit lines: customer, channel, lines and shipping address; checkout: channel and
//!   shipping address, since the cart may be empty on a retry). The same key with a different
//!   request is [`PlaceOrderError::KeyReused`] (so is the order service's own 422 for a reused
//!   key). Concurrent requests with one key run one after another, in this process and (with
//!   Redis) across replicas.
//! - **Only attempts that reach the order service are remembered, within a byte budget.** A
//!   request refused before a body is sent (an empty cart, invalid lines or address, unavailable
//!   products, a catalog outage) leaves nothing behind, so refused requests cannot fill the store.
//!   Each remembered attempt is weighed by an estimate of the bytes it holds (key, fingerprint,
//!   priced body or created order); together they stay within
//!   [`OrderPlacementConfig::max_bytes`], and their number within
//!   [`OrderPlacementConfig::max_remembered`]; the least recently used are forgotten first. The
//!   turns that serialize requests with one key exist only while such requests are in flight.
//! - **A priced body is reused briefly.** Until the order is created, a retry resends the first
//!   attempt's priced body only while it is younger than [`OrderPlacementConfig::reuse_priced_for`]
//!   (older: priced again, at current prices and stock). A definite refusal of the order service
//!   (invalid, forbidden, conflict, not found, precondition failed) forgets the attempt; a timeout
//!   or outage keeps it, so the retry sends the same body.
//! - **Checkout empties only what was ordered, once.** After the order is created, the cart is
//!   read again (uncached) and each ordered quantity is taken off its line (the line goes when
//!   nothing remains; when every line goes, the cart is cleared in one call). Writes go through
//!   [`Carts`](crate::Carts), so the user's cached cart is invalidated. A retry answered from the
//!   remembered order never touches the cart again and reports the first attempt's
//!   `cart_cleared`; an order the order service replays for an attempt neither this process nor
//!   Redis knows (it came through another replica while Redis was unavailable) leaves the cart
//!   alone (`cart_cleared: false`).
//! - **A created order is never lost.** When checkout created the order but emptying the cart
//!   failed, the order is still returned, with `cart_cleared: false` (logged once).
//! - **Across replicas, through Redis when configured** ([`Downstream::shared`]; the `shared`
//!   submodule has the keys and scripts). Each attempt is also recorded in Redis under the
//!   owner's hash tag (`<prefix>{u:<user>}:checkout:<sha256 of the key>`, `{p:<partner>}` for a
//!   partner), for `remember_for`: its fingerprint and priced body before the body is sent, its
//!   order and `cart_cleared` once created (the first created record wins). While placing the
//!   order a request holds the key's lease (`…:lease`, `SET NX PX` for its remaining deadline
//!   plus a margin, released by a compare-and-delete of its random token, together with writing
//!   the created record). So a retry or a concurrent request on another replica answers the same
//!   order and the same `cart_cleared` without touching the cart or the order service, or is
//!   refused as [`PlaceOrderError::KeyReused`] for a different request; while another replica
//!   holds the lease it waits (polling, at most until its own deadline) for the record, and
//!   proceeds itself when the lease expires without one (its holder died). The in-process record
//!   and turns stay in front: a created order remembered here is answered without asking Redis.
//!   Without Redis the behaviour is exactly the in-process one. When Redis fails (unreachable,
//!   slow, backing off) a request goes on with the in-process record alone, counted as a fallback
//!   of `idempotency`, never failing because of Redis; the order service's own deduplication by
//!   key and body stays the backstop. A value under these keys that is not ours is treated as
//!   absent (counted) and overwritten.

mod shared;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::{sync::Mutex, time::Instant};

use crate::{
    Address, Channel, ClientError, Creation, Downstream, ErrorKind, IdempotencyKey,
    InventoryStatus, NewOrder, Order, OrderLine, Owner, Product, RequestContext,
    error::{Failure, Service},
    id::{ProductId, UserId},
    product::MAX_BATCH,
    weigh::Weigh,
};

/// Most lines one order may have (the contract's limit).
pub const MAX_ORDER_LINES: usize = 100;

/// Largest quantity of one line (the contract's limit).
pub const MAX_LINE_QUANTITY: u32 = 99;

/// Longest text (in characters) of one shipping address field.
pub const MAX_ADDRESS_FIELD_CHARS: usize = 200;

/// How order placement remembers attempts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrderPlacementConfig {
    /// How long the priced body and the created order of an (owner, idempotency key) are kept, so
    /// that a client's retry gets the same order: in this process, and with Redis in the record
    /// every replica shares (kept this long after its last write).
    #[serde(with = "humantime_serde")]
    pub remember_for: Duration,
    /// How long a priced body not yet known to be created may be resent by a retry; older, the
    /// lines are priced again (default 10 minutes).
    #[serde(with = "humantime_serde")]
    pub reuse_priced_for: Duration,
    /// Most attempts remembered at once (the least recently used forgotten first). Enforced by
    /// weighing every attempt at least `max_bytes / max_remembered` bytes; `0` remembers nothing.
    pub max_remembered: u64,
    /// Most bytes the remembered attempts may take, estimated per attempt from what it holds
    /// (the least recently used forgotten first), so large orders cannot exhaust memory however
    /// many keys clients send (default 64 MiB). An attempt larger than this is not remembered in
    /// this process (its retry relies on the record shared in Redis when configured, else on the
    /// order service's own deduplication); `0` remembers nothing here. Records in Redis are
    /// bounded by Redis' own memory limit.
    pub max_bytes: u64,
}

impl Default for OrderPlacementConfig {
    fn default() -> Self {
        Self {
            remember_for: Duration::from_secs(24 * 60 * 60),
            reuse_priced_for: Duration::from_secs(10 * 60),
            max_remembered: 100_000,
            max_bytes: 64 * 1024 * 1024,
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
    /// The shipping address is not the contract's `Address` (the text names the field and the
    /// rule, safe to show); nothing was created.
    #[error("invalid shipping address: {0}")]
    InvalidAddress(&'static str),
    /// Some products cannot be ordered; nothing was created.
    #[error("{} product(s) cannot be ordered", .0.len())]
    Unavailable(Vec<UnavailableProduct>),
    /// The products are priced in more than one currency; nothing was created.
    #[error("the products are priced in more than one currency")]
    MixedCurrencies,
    /// The idempotency key was already used by this owner for a different request (here, or at
    /// the order service); nothing was created.
    #[error("the idempotency key was already used for a different request")]
    KeyReused,
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
    /// For a cart checkout, whether the cart was emptied of what was ordered (false when that
    /// failed; the order stands regardless). A retry reports what the first attempt did. Always
    /// true for orders placed from explicit lines.
    pub cart_cleared: bool,
}

/// What identifies a request under one idempotency key: a retry must have the same. Stored in
/// the records every replica shares, hence (de)serializable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fingerprint {
    /// An order of explicit lines (lines sorted by product).
    Place {
        /// The customer.
        customer: UserId,
        /// The channel.
        channel: Channel,
        /// (product, quantity), sorted by product.
        lines: Vec<(ProductId, u32)>,
        /// Where to ship.
        shipping_address: Option<Address>,
    },
    /// A cart checkout (the cart itself may legitimately be empty on a retry).
    Checkout {
        /// The channel.
        channel: Channel,
        /// Where to ship.
        shipping_address: Option<Address>,
    },
}

impl Fingerprint {
    /// The fingerprint of an order of explicit lines.
    fn place(request: &OrderRequest) -> Self {
        let mut lines: Vec<(ProductId, u32)> = request
            .lines
            .iter()
            .map(|line| (line.product_id.clone(), line.quantity))
            .collect();
        lines.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Self::Place {
            customer: request.customer.clone(),
            channel: request.channel.clone(),
            lines,
            shipping_address: request.shipping_address.clone(),
        }
    }
}

/// Where one (owner, key) attempt stands.
#[derive(Debug, Clone)]
enum Stage {
    /// Priced and about to be (or being) created: a retry sends exactly this body again, while
    /// it is younger than `reuse_priced_for`.
    Priced {
        /// The body sent.
        body: Arc<NewOrder>,
        /// When the lines were priced.
        priced_at: Instant,
    },
    /// Created: a retry gets this order without another call, and never touches the cart.
    Created {
        /// The order.
        order: Arc<Order>,
        /// Whether the cart was emptied afterwards (true for explicit lines).
        cart_cleared: bool,
    },
}

/// What is remembered of one (owner, key) attempt.
#[derive(Debug, Clone)]
struct Attempt {
    /// The request it was for.
    fingerprint: Fingerprint,
    /// How far it got.
    stage: Stage,
}

/// What attempts are remembered by: who placed the order, with which idempotency key.
type AttemptKey = (Owner, IdempotencyKey);

/// Bookkeeping bytes added to every remembered attempt's weight (the store's own overhead).
const ATTEMPT_OVERHEAD: usize = 128;

impl Attempt {
    /// Approximate bytes the attempt and its key hold in memory, what the store weighs it by.
    fn weigh(&self, (owner, key): &AttemptKey) -> usize {
        let fingerprint = match &self.fingerprint {
            Fingerprint::Place {
                customer,
                channel,
                lines,
                shipping_address,
            } => {
                customer.as_str().len()
                    + channel_bytes(channel)
                    + address_bytes(shipping_address.as_ref())
                    + lines
                        .iter()
                        .map(|(id, _)| std::mem::size_of::<(ProductId, u32)>() + id.as_str().len())
                        .sum::<usize>()
            }
            Fingerprint::Checkout {
                channel,
                shipping_address,
            } => channel_bytes(channel) + address_bytes(shipping_address.as_ref()),
        };
        let stage = match &self.stage {
            Stage::Priced { body, .. } => {
                std::mem::size_of::<NewOrder>()
                    + body.user_id.as_str().len()
                    + channel_bytes(&body.channel)
                    + address_bytes(body.shipping_address.as_ref())
                    + body.lines.iter().map(line_bytes).sum::<usize>()
            }
            Stage::Created { order, .. } => order.weigh(),
        };
        ATTEMPT_OVERHEAD
            + std::mem::size_of::<Self>()
            + owner.id().len()
            + key.as_str().len()
            + fingerprint
            + stage
    }
}

/// Heap bytes of a channel.
fn channel_bytes(channel: &Channel) -> usize {
    channel
        .partner_id
        .as_ref()
        .map_or(0, |id| id.as_str().len())
}

/// Bytes of an optional address (its strings; the `Option` itself is counted by its owner).
fn address_bytes(address: Option<&Address>) -> usize {
    let text = |field: &Option<String>| field.as_ref().map_or(0, String::len);
    address.map_or(0, |a| {
        std::mem::size_of::<Address>()
            + text(&a.name)
            + text(&a.line1)
            + text(&a.city)
            + text(&a.postal_code)
            + text(&a.country)
    })
}

/// Bytes of one priced line.
fn line_bytes(line: &OrderLine) -> usize {
    std::mem::size_of::<OrderLine>()
        + line.product_id.as_str().len()
        + line.unit_price.currency.len()
}

/// Whose turn it is among the requests in flight with one (owner, key): they run one after
/// another, so a retry arriving while the first attempt is still being placed waits for it
/// instead of pricing and sending a second body. An entry exists only while requests with its key
/// are in flight (the last one out removes it), so the map is bounded by concurrency, not by the
/// keys clients send.
#[derive(Default)]
struct Turns {
    /// (owner, key) → the lock its requests take in turn, shared by every request holding or
    /// waiting for it (the `Arc`'s count says how many).
    locks: std::sync::Mutex<HashMap<AttemptKey, Arc<Mutex<()>>>>,
}

impl Turns {
    /// Joins the requests in flight with `key`; [`Turn::wait`] then waits for its turn.
    fn join(&self, key: &AttemptKey) -> Turn<'_> {
        let lock = Arc::clone(self.locked().entry(key.clone()).or_default());
        Turn {
            turns: self,
            key: key.clone(),
            lock,
        }
    }

    /// The map, even if a panicking thread poisoned it (it holds nothing a panic can corrupt).
    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptKey, Arc<Mutex<()>>>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One request's place among those with its (owner, key). Dropping it (after its guard) leaves;
/// the last to leave removes the key's entry.
struct Turn<'a> {
    /// Where the entry is kept.
    turns: &'a Turns,
    /// The (owner, key).
    key: AttemptKey,
    /// The key's lock, also held by the map and by every other request in flight with the key.
    lock: Arc<Mutex<()>>,
}

impl Turn<'_> {
    /// Waits for this request's turn, at most until the request's deadline.
    async fn wait(
        &self,
        ctx: &RequestContext,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, PlaceOrderError> {
        match ctx.deadline() {
            None => Ok(self.lock.lock().await),
            Some(deadline) => tokio::time::timeout_at(deadline, self.lock.lock())
                .await
                .map_err(|_| waited_past_deadline()),
        }
    }
}

/// The error of a request whose deadline passed while it waited for an earlier attempt with its
/// key (in this process or on another replica): the order service's deadline, as if it had been
/// called.
fn waited_past_deadline() -> PlaceOrderError {
    PlaceOrderError::Downstream(ClientError::classify(
        Service::Order,
        Failure::DeadlineExceeded,
    ))
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Counted under the map's lock, which every joining request takes: held only by the map
        // and by this request, nobody else is in flight with the key.
        let mut locks = self.turns.locked();
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// Places orders from explicit lines or from a user's cart. Cheap to clone (one `Arc`): gateways
/// keep it in their router state, which is cloned per request.
#[derive(Clone)]
pub struct OrderPlacement {
    /// Shared by every clone.
    inner: Arc<PlacementInner>,
}

/// The parts of [`OrderPlacement`].
struct PlacementInner {
    /// The downstream services.
    downstream: Downstream,
    /// Attempts that reached the order service, by (owner, idempotency key), so retries get the
    /// same order. Within `max_bytes` and `max_remembered`; written only during the key's turn.
    attempts: moka::future::Cache<AttemptKey, Arc<Attempt>>,
    /// The turns of requests in flight, by (owner, idempotency key).
    turns: Turns,
    /// The attempts and leases every replica shares in Redis; `None` without Redis (or with
    /// nothing to remember): the in-process record alone.
    shared: Option<shared::SharedAttempts>,
    /// How long a priced, not yet created body may be resent.
    reuse_priced_for: Duration,
}

/// The store of remembered attempts: weighed in bytes, each at least `max_bytes /
/// max_remembered` so that both bounds hold, least recently used evicted first (a new attempt is
/// always admitted, unlike moka's default policy, which may refuse a newcomer).
fn attempt_store(config: &OrderPlacementConfig) -> moka::future::Cache<AttemptKey, Arc<Attempt>> {
    let (capacity, least) = match config.max_bytes.checked_div(config.max_remembered) {
        Some(least) if config.max_bytes > 0 => (config.max_bytes, least.max(1)),
        _ => (0, 1),
    };
    let least = u32::try_from(least).unwrap_or(u32::MAX);
    moka::future::Cache::builder()
        .max_capacity(capacity)
        .weigher(move |key: &AttemptKey, attempt: &Arc<Attempt>| {
            u32::try_from(attempt.weigh(key))
                .unwrap_or(u32::MAX)
                .max(least)
        })
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .time_to_live(config.remember_for)
        .build()
}

impl OrderPlacement {
    /// Order placement over `downstream`, sharing its attempts with every replica through
    /// `downstream`'s Redis when one is configured ([`Downstream::shared`]).
    pub fn new(downstream: Downstream, config: &OrderPlacementConfig) -> Self {
        Self {
            inner: Arc::new(PlacementInner {
                shared: shared::SharedAttempts::new(downstream.shared(), config.remember_for),
                downstream,
                attempts: attempt_store(config),
                turns: Turns::default(),
                reuse_priced_for: config.reuse_priced_for,
            }),
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
        let client = self.inner.downstream.catalog().client();
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
    /// first. A retry with the same `key` and request returns the same order; the same key with a
    /// different request is [`PlaceOrderError::KeyReused`].
    pub async fn place(
        &self,
        ctx: &RequestContext,
        owner: &Owner,
        key: &IdempotencyKey,
        request: OrderRequest,
    ) -> Result<PlacedOrder, PlaceOrderError> {
        if let Some(address) = &request.shipping_address {
            validate_address(address)?;
        }
        let fingerprint = Fingerprint::place(&request);
        let id: AttemptKey = (owner.clone(), key.clone());
        let turn = self.inner.turns.join(&id);
        let _turn = turn.wait(ctx).await?;
        let (resend, lease) = match self.begin(ctx, &id, &fingerprint).await? {
            Begun::Answer { order, .. } => {
                return Ok(PlacedOrder {
                    order: Order::clone(&order),
                    created: false,
                    cart_cleared: true,
                });
            }
            Begun::Place { resend, lease, .. } => (resend, lease),
        };
        let (body, priced_at) = match resend {
            Some(resend) => resend,
            None => {
                let priced = self.price(ctx, &request.lines).await?;
                let body = Arc::new(NewOrder {
                    user_id: request.customer,
                    channel: request.channel,
                    lines: priced,
                    shipping_address: request.shipping_address,
                });
                (body, Instant::now())
            }
        };
        let (order, created) = self
            .create(ctx, &id, &fingerprint, body, priced_at, lease.as_ref())
            .await?;
        self.settle(
            id,
            Attempt {
                fingerprint,
                stage: Stage::Created {
                    order: Arc::new(order.clone()),
                    cart_cleared: true,
                },
            },
            lease,
        )
        .await;
        Ok(PlacedOrder {
            order,
            created: matches!(created, Creation::Created),
            cart_cleared: true,
        })
    }

    /// Checks out `user`'s cart: reads it (uncached), prices its lines from current catalog
    /// data, refuses if anything is unavailable, creates the order with `key`, then takes what was
    /// ordered off the cart. A retry with the same `key` returns the same order, never a second
    /// one, and leaves the cart alone; the same key with another channel or shipping address is
    /// [`PlaceOrderError::KeyReused`].
    pub async fn checkout(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        key: &IdempotencyKey,
        channel: Channel,
        shipping_address: Option<Address>,
    ) -> Result<PlacedOrder, PlaceOrderError> {
        if let Some(address) = &shipping_address {
            validate_address(address)?;
        }
        let fingerprint = Fingerprint::Checkout {
            channel: channel.clone(),
            shipping_address: shipping_address.clone(),
        };
        let id: AttemptKey = (Owner::User(user.clone()), key.clone());
        let turn = self.inner.turns.join(&id);
        let _turn = turn.wait(ctx).await?;
        let (resend, sent_before, lease) = match self.begin(ctx, &id, &fingerprint).await? {
            Begun::Answer {
                order,
                cart_cleared,
            } => {
                return Ok(PlacedOrder {
                    order: Order::clone(&order),
                    created: false,
                    cart_cleared,
                });
            }
            Begun::Place {
                resend,
                sent_before,
                lease,
            } => (resend, sent_before, lease),
        };
        let (body, priced_at) = match resend {
            Some(resend) => resend,
            None => {
                let cart = self
                    .inner
                    .downstream
                    .carts()
                    .client()
                    .get(ctx, user)
                    .await?;
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
                (body, Instant::now())
            }
        };
        let (order, creation) = self
            .create(ctx, &id, &fingerprint, body, priced_at, lease.as_ref())
            .await?;
        // Empty the cart when this request made the order, or when a body was sent under the key
        // before (by this process, or by any replica when Redis is shared), whose answer was lost
        // before the cart was emptied. An order the service replays for a key with no attempt
        // known here (nor in Redis) was made, and its cart emptied, elsewhere.
        let cart_cleared = if matches!(creation, Creation::Created) || sent_before {
            self.take_ordered_off_cart(ctx, user, &order).await
        } else {
            false
        };
        self.settle(
            id,
            Attempt {
                fingerprint,
                stage: Stage::Created {
                    order: Arc::new(order.clone()),
                    cart_cleared,
                },
            },
            lease,
        )
        .await;
        Ok(PlacedOrder {
            order,
            created: matches!(creation, Creation::Created),
            cart_cleared,
        })
    }

    /// How many attempts are remembered and their approximate size in bytes, `(entries, bytes)`,
    /// once the store's pending bookkeeping is done: for metrics and tests.
    pub async fn remembered_attempts(&self) -> (u64, u64) {
        let attempts = &self.inner.attempts;
        attempts.run_pending_tasks().await;
        (attempts.entry_count(), attempts.weighted_size())
    }

    /// Decides, at the start of the key's turn, what a request with `fingerprint` does: answer
    /// the order an earlier attempt created, or place it (resending a young priced body). Asks
    /// the in-process record first; unless that holds the created order, asks Redis too (when
    /// configured), which answers an order created on another replica or gives this request the
    /// key's lease, waiting while another replica holds it. Redis failing: the in-process record
    /// alone decides.
    async fn begin(
        &self,
        ctx: &RequestContext,
        id: &AttemptKey,
        fingerprint: &Fingerprint,
    ) -> Result<Begun, PlaceOrderError> {
        let mut attempt = self.inner.attempts.get(id).await;
        // A remembered attempt (even one too old to resend) means a body was sent under this key
        // before: an order the service replays now may be that one, cart not yet emptied.
        let mut sent_before = attempt.is_some();
        let mut lease = None;
        let created_here = attempt
            .as_deref()
            .is_some_and(|attempt| matches!(attempt.stage, Stage::Created { .. }));
        if let Some(shared) = self.inner.shared.as_ref().filter(|_| !created_here) {
            match shared.begin(ctx, id).await? {
                shared::Begin::Unshared => {}
                shared::Begin::Created(created) => {
                    let created = Arc::new(created);
                    self.inner
                        .attempts
                        .insert(id.clone(), Arc::clone(&created))
                        .await;
                    attempt = Some(created);
                }
                shared::Begin::Leased {
                    lease: held,
                    attempt: recorded,
                    sent_before: sent_elsewhere,
                } => {
                    sent_before |= sent_elsewhere;
                    // The shared record is the latest word of every replica, this one included.
                    if let Some(recorded) = recorded {
                        attempt = Some(Arc::new(recorded));
                    }
                    lease = Some(held);
                }
            }
        }
        Ok(match self.remembered(attempt.as_deref(), fingerprint)? {
            Remembered::Created {
                order,
                cart_cleared,
            } => Begun::Answer {
                order,
                cart_cleared,
            },
            Remembered::Priced { body, priced_at } => Begun::Place {
                resend: Some((body, priced_at)),
                sent_before,
                lease,
            },
            Remembered::Nothing => Begun::Place {
                resend: None,
                sent_before,
                lease,
            },
        })
    }

    /// Remembers the created order of `id`, here and (when configured) in Redis for every
    /// replica, releasing the key's lease in the same step.
    async fn settle(&self, id: AttemptKey, attempt: Attempt, lease: Option<shared::Lease>) {
        match (lease, &self.inner.shared) {
            (Some(lease), _) => lease.settle(&attempt).await,
            (None, Some(shared)) => shared.record_unleased(&id, &attempt).await,
            (None, None) => {}
        }
        self.remember(id, attempt).await;
    }

    /// Remembers how far the attempt under `id` got (called during the key's turn only).
    async fn remember(&self, id: AttemptKey, attempt: Attempt) {
        self.inner.attempts.insert(id, Arc::new(attempt)).await;
    }

    /// What a remembered attempt offers a request with `fingerprint`: refused when the key was
    /// used for a different request; a priced body only while young enough to resend.
    fn remembered(
        &self,
        attempt: Option<&Attempt>,
        fingerprint: &Fingerprint,
    ) -> Result<Remembered, PlaceOrderError> {
        let Some(attempt) = attempt else {
            return Ok(Remembered::Nothing);
        };
        if attempt.fingerprint != *fingerprint {
            return Err(PlaceOrderError::KeyReused);
        }
        Ok(match &attempt.stage {
            Stage::Created {
                order,
                cart_cleared,
            } => Remembered::Created {
                order: Arc::clone(order),
                cart_cleared: *cart_cleared,
            },
            Stage::Priced { body, priced_at }
                if priced_at.elapsed() < self.inner.reuse_priced_for =>
            {
                Remembered::Priced {
                    body: Arc::clone(body),
                    priced_at: *priced_at,
                }
            }
            Stage::Priced { .. } => Remembered::Nothing,
        })
    }

    /// Creates the order from `body` under `id` (during the key's turn), remembering the body
    /// first (here, and in Redis under the `lease` when one is held): from here on the attempt
    /// has reached the order service. A definite refusal of the order service forgets the
    /// attempt; a timeout or outage keeps it for the retry. The order service's 422 (the key was
    /// used with another body) is [`PlaceOrderError::KeyReused`].
    async fn create(
        &self,
        ctx: &RequestContext,
        id: &AttemptKey,
        fingerprint: &Fingerprint,
        body: Arc<NewOrder>,
        priced_at: Instant,
        lease: Option<&shared::Lease>,
    ) -> Result<(Order, Creation), PlaceOrderError> {
        let priced = Attempt {
            fingerprint: fingerprint.clone(),
            stage: Stage::Priced {
                body: Arc::clone(&body),
                priced_at,
            },
        };
        if let Some(lease) = lease {
            lease.record_priced(&priced).await;
        }
        self.remember(id.clone(), priced).await;
        let (owner, key) = id;
        match self
            .inner
            .downstream
            .orders()
            .create(ctx, owner, key, &body)
            .await
        {
            Ok(created) => Ok((created.order, created.creation)),
            Err(error) => {
                if is_definite_refusal(error.kind()) {
                    self.inner.attempts.invalidate(id).await;
                    if let Some(lease) = lease {
                        lease.forget().await;
                    }
                }
                if error.service() == Service::Order
                    && error.kind() == ErrorKind::Invalid
                    && error.status() == Some(422)
                {
                    // The body is priced and single-currency, so the only 422 the contract
                    // leaves is a key already used with a different body.
                    return Err(PlaceOrderError::KeyReused);
                }
                Err(error.into())
            }
        }
    }

    /// Takes what `order` holds off `user`'s cart, read again uncached: each ordered quantity
    /// comes off its line (the line goes when nothing remains; when every line goes, one call
    /// clears the cart). Writes go through the [`Carts`](crate::Carts) facade, which invalidates
    /// the user's cached cart. Whether it worked; a failure is logged once and never loses the
    /// order.
    async fn take_ordered_off_cart(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        order: &Order,
    ) -> bool {
        match self.try_take_ordered_off_cart(ctx, user, order).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(
                    order_id = order.id.as_str(),
                    service = error.service().as_str(),
                    error = error.kind().code(),
                    "order placed but the cart could not be emptied"
                );
                false
            }
        }
    }

    /// [`Self::take_ordered_off_cart`], failing at the first failed call.
    async fn try_take_ordered_off_cart(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        order: &Order,
    ) -> Result<(), ClientError> {
        let carts = self.inner.downstream.carts();
        let cart = carts.client().get(ctx, user).await?;
        let mut ordered: HashMap<&ProductId, u32> = HashMap::new();
        for line in &order.lines {
            *ordered.entry(&line.product_id).or_default() += line.quantity;
        }
        // (product, quantity left): 0 removes the line.
        let changes: Vec<(&ProductId, u32)> = cart
            .items
            .iter()
            .filter_map(|item| {
                ordered
                    .get(&item.product_id)
                    .map(|taken| (&item.product_id, item.quantity.saturating_sub(*taken)))
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        if changes.len() == cart.items.len() && changes.iter().all(|(_, left)| *left == 0) {
            return carts.clear(ctx, user).await;
        }
        for (product_id, left) in changes {
            let result = if left == 0 {
                carts.remove_item(ctx, user, product_id).await.map(drop)
            } else {
                carts
                    .set_quantity(ctx, user, product_id, left)
                    .await
                    .map(drop)
            };
            match result {
                // Someone else removed the line meanwhile: nothing left to take off.
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }
}

/// What a remembered attempt offers a new request with the same key and fingerprint.
enum Remembered {
    /// Nothing: price (again) and create.
    Nothing,
    /// A young priced body to resend.
    Priced {
        /// The body.
        body: Arc<NewOrder>,
        /// When it was priced.
        priced_at: Instant,
    },
    /// The order already created.
    Created {
        /// The order.
        order: Arc<Order>,
        /// What the first attempt reported.
        cart_cleared: bool,
    },
}

/// What a request does under its key, decided at the start of its turn ([`OrderPlacement::begin`]).
enum Begun {
    /// An earlier attempt created the order: answer it, without touching the cart.
    Answer {
        /// The order.
        order: Arc<Order>,
        /// What the first attempt reported.
        cart_cleared: bool,
    },
    /// Place the order.
    Place {
        /// A young priced body to send again (and when it was priced); `None`: price afresh.
        resend: Option<(Arc<NewOrder>, Instant)>,
        /// Whether a body was sent under the key before, here or (through Redis) elsewhere.
        sent_before: bool,
        /// The key's lease in Redis, held until the attempt is settled (released if dropped);
        /// `None` without Redis or when it failed.
        lease: Option<shared::Lease>,
    },
}

/// Whether the order service's answer refuses this body for good (so it is not resent).
fn is_definite_refusal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Invalid
            | ErrorKind::Forbidden
            | ErrorKind::Conflict
            | ErrorKind::NotFound
            | ErrorKind::PreconditionFailed
    )
}

/// Checks a shipping address against the contract's `Address`: `country` an ISO 3166 alpha-2
/// code (`^[A-Z]{2}$`), every field at most [`MAX_ADDRESS_FIELD_CHARS`] characters.
fn validate_address(address: &Address) -> Result<(), PlaceOrderError> {
    let fields: [(&Option<String>, &'static str); 5] = [
        (&address.name, "`name` must be at most 200 characters"),
        (&address.line1, "`line1` must be at most 200 characters"),
        (&address.city, "`city` must be at most 200 characters"),
        (
            &address.postal_code,
            "`postal_code` must be at most 200 characters",
        ),
        (&address.country, "`country` must be at most 200 characters"),
    ];
    for (value, why) in fields {
        if value
            .as_deref()
            .is_some_and(|value| value.chars().count() > MAX_ADDRESS_FIELD_CHARS)
        {
            return Err(PlaceOrderError::InvalidAddress(why));
        }
    }
    let country_ok = address.country.as_deref().is_none_or(|country| {
        country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())
    });
    if country_ok {
        Ok(())
    } else {
        Err(PlaceOrderError::InvalidAddress(
            "`country` must be an ISO 3166 alpha-2 code such as `DE` (^[A-Z]{2}$)",
        ))
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
    fn addresses_are_checked_against_the_contract() {
        let ok = Address {
            name: Some("Ada".into()),
            country: Some("DE".into()),
            ..Address::default()
        };
        assert!(validate_address(&ok).is_ok());
        assert!(validate_address(&Address::default()).is_ok());
        for country in ["de", "DEU", "D", "D1", "ÄÖ"] {
            let bad = Address {
                country: Some(country.into()),
                ..Address::default()
            };
            assert!(
                matches!(validate_address(&bad), Err(PlaceOrderError::InvalidAddress(why)) if why.contains("country")),
                "{country}"
            );
        }
        let long = Address {
            city: Some("é".repeat(MAX_ADDRESS_FIELD_CHARS + 1)),
            ..Address::default()
        };
        assert!(matches!(
            validate_address(&long),
            Err(PlaceOrderError::InvalidAddress(why)) if why.contains("city")
        ));
        let at_limit = Address {
            city: Some("é".repeat(MAX_ADDRESS_FIELD_CHARS)),
            ..Address::default()
        };
        assert!(validate_address(&at_limit).is_ok());
    }

    #[test]
    fn the_fingerprint_of_explicit_lines_ignores_their_order_only() {
        let request = |lines: Vec<RequestedLine>| OrderRequest {
            customer: UserId::parse("c-1").expect("id"),
            channel: Channel::web(),
            lines,
            shipping_address: None,
        };
        let a = Fingerprint::place(&request(vec![line("a", 1), line("b", 2)]));
        let b = Fingerprint::place(&request(vec![line("b", 2), line("a", 1)]));
        let c = Fingerprint::place(&request(vec![line("a", 1), line("b", 3)]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_with_one_key_take_turns_and_leave_nothing_behind() {
        let turns = Turns::default();
        let id = (
            Owner::User(UserId::parse("u-1").expect("id")),
            IdempotencyKey::parse("k-1").expect("key"),
        );
        let first = turns.join(&id);
        let held = first
            .wait(&RequestContext::new())
            .await
            .expect("nobody before it");
        {
            let second = turns.join(&id);
            let impatient = RequestContext::new().with_timeout_from_now(Duration::from_millis(50));
            assert!(
                second.wait(&impatient).await.is_err(),
                "waits for the first, until its deadline"
            );
            let other = (id.0.clone(), IdempotencyKey::parse("k-2").expect("key"));
            let third = turns.join(&other);
            let _its_turn = third
                .wait(&impatient)
                .await
                .expect("another key does not wait");
            assert_eq!(turns.locked().len(), 2);
        }
        assert_eq!(turns.locked().len(), 1, "the first is still in flight");
        drop(held);
        drop(first);
        assert!(turns.locked().is_empty());
    }

    #[test]
    fn an_attempt_weighs_what_it_holds_and_a_zero_bound_remembers_nothing() {
        let id = (
            Owner::Partner(crate::PartnerId::parse("partner-acme").expect("id")),
            IdempotencyKey::parse("k-1").expect("key"),
        );
        let request = |lines: usize| OrderRequest {
            customer: UserId::parse("c-1").expect("id"),
            channel: Channel::web(),
            lines: (0..lines).map(|n| line(&format!("p-{n:05}"), 1)).collect(),
            shipping_address: None,
        };
        let attempt = |lines: usize| {
            let request = request(lines);
            let body = NewOrder {
                user_id: request.customer.clone(),
                channel: request.channel.clone(),
                lines: request
                    .lines
                    .iter()
                    .map(|l| OrderLine {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price: Money {
                            amount_minor: 1,
                            currency: "EUR".into(),
                        },
                    })
                    .collect(),
                shipping_address: None,
            };
            Attempt {
                fingerprint: Fingerprint::place(&request),
                stage: Stage::Priced {
                    body: Arc::new(body),
                    priced_at: Instant::now(),
                },
            }
        };
        let one = attempt(1).weigh(&id);
        let hundred = attempt(100).weigh(&id);
        assert!(one > ATTEMPT_OVERHEAD);
        assert!(hundred > one + 99 * 2 * 7, "{one} {hundred}");

        // Nothing at all with a zero budget or count.
        for (max_remembered, max_bytes) in [(0, 1024), (10, 0)] {
            let store = attempt_store(&OrderPlacementConfig {
                max_remembered,
                max_bytes,
                ..OrderPlacementConfig::default()
            });
            assert_eq!(store.policy().max_capacity(), Some(0));
        }
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

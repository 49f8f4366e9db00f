//! The cart service: one cart per user, private, frequently written.
//!
//! Routes ([`routes`], over a [`CartState`]): `GET`/`DELETE /carts/{user_id}`,
//! `POST /carts/{user_id}/items` (with optional `If-Match`) and
//! `PUT`/`DELETE /carts/{user_id}/items/{product_id}`.
//! Every request needs `X-User-Id` (400 without it) equal to the path's user (else 403).
//! Successful bodies carry `Cache-Control: private, no-store` and an `ETag` of the cart version.
//!
//! The [`CartStore`] shards carts over a few mutexes; each write holds its shard's lock across the
//! whole read-modify-write, so parallel writes to one cart are never lost and a refused write (409,
//! 412, 404) changes nothing.
//!
//! Every write that changes a cart (its version goes up) publishes `com.bff.cart.changed` with the
//! new version on the `cart` event stream (see [`crate::events`]), queued under the shard's lock
//! and appended before the answer is sent; writes that change nothing publish nothing.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    Router,
    extract::{FromRef, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    conditional,
    events::{Announcement, Publisher, TraceContext},
    extract::{JsonBody, PathOf, id_header},
    problem::ApiError,
    reply,
    validate::{self, Fields},
};

/// Most units of one product a cart line may hold.
pub const MAX_LINE_QUANTITY: u32 = 99;
/// CloudEvents `type` of a cart change.
pub const CART_CHANGED: &str = "com.bff.cart.changed";

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    /// The product; prices and names come from the product service.
    pub product_id: String,
    /// Units, 1 to 99.
    pub quantity: u32,
    /// When the line was first added; lines keep this order.
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

/// A user's cart, as the contract's `Cart` schema describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// The owner; only this user may read or change the cart.
    pub user_id: String,
    /// The lines, oldest first.
    pub items: Vec<CartItem>,
    /// Increases with every change (0 for a cart never changed), for `If-Match`.
    pub version: u64,
    /// The last change, `None` (null) for a cart never changed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

impl Cart {
    /// The cart of a user who never had one: empty, version 0.
    pub fn empty(user_id: &str) -> Cart {
        Cart {
            user_id: user_id.to_owned(),
            items: Vec::new(),
            version: 0,
            updated_at: None,
        }
    }

    /// The cart's entity tag, `"<version>"`.
    fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// Records that the cart changed.
    fn touch(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = Some(now);
    }

    /// The line of a product, if any.
    fn line_mut(&mut self, product_id: &str) -> Option<&mut CartItem> {
        self.items
            .iter_mut()
            .find(|item| item.product_id == product_id)
    }
}

/// How many independently locked shards carts are spread over.
const SHARDS: usize = 16;

/// `data` of `com.bff.cart.changed`.
#[derive(Debug, Serialize)]
struct CartChanged<'a> {
    /// The owner of the cart.
    user_id: &'a str,
    /// The cart's new version, as in the cart contract.
    version: u64,
}

/// Every cart, in memory, safe under concurrent writes.
#[derive(Debug)]
pub struct CartStore {
    /// Carts by user id; a user's cart always lives in the shard its id hashes to.
    shards: Vec<Mutex<HashMap<String, Cart>>>,
    /// Where cart changes are announced (the `cart` stream).
    events: Publisher,
}

impl CartStore {
    /// A store holding the seeded carts, announcing changes to `events`.
    pub(crate) fn new(carts: Vec<Cart>, events: Publisher) -> CartStore {
        let store = CartStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            events,
        };
        for cart in carts {
            store.lock(&cart.user_id).insert(cart.user_id.clone(), cart);
        }
        store
    }

    /// The shard of a user, locked. A poisoned lock is still usable: no code panics while
    /// holding it, and every write checks before it mutates.
    fn lock(&self, user_id: &str) -> MutexGuard<'_, HashMap<String, Cart>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        user_id.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % SHARDS as u64).unwrap_or_default();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of a user's cart (empty, version 0, if the user never had one).
    pub fn get(&self, user_id: &str) -> Cart {
        self.lock(user_id)
            .get(user_id)
            .cloned()
            .unwrap_or_else(|| Cart::empty(user_id))
    }

    /// Runs a read-modify-write on a user's cart under its lock. `change` must check everything
    /// before it mutates, so that an error leaves the cart as it was, and must
    /// [`touch`](Cart::touch) the cart when it changes it: a change of version is announced
    /// (with the request's `trace`), under the lock, so one cart's events are in order. Wait for
    /// the returned announcement before answering.
    fn update<T>(
        &self,
        user_id: &str,
        trace: Option<&TraceContext>,
        change: impl FnOnce(&mut Cart) -> Result<T, ApiError>,
    ) -> Result<(T, Announcement), ApiError> {
        let mut shard = self.lock(user_id);
        let cart = shard
            .entry(user_id.to_owned())
            .or_insert_with(|| Cart::empty(user_id));
        let before = cart.version;
        let result = change(cart);
        let announcement = if cart.version == before {
            Announcement::none()
        } else {
            self.events.announce(
                CART_CHANGED,
                user_id,
                &CartChanged {
                    user_id,
                    version: cart.version,
                },
                trace,
            )
        };
        if cart.version == 0 {
            // Never changed: do not keep an entry for it.
            shard.remove(user_id);
        }
        drop(shard);
        Ok((result?, announcement))
    }
}

/// What the cart service's handlers read. The [`World`](crate::World) holds one and hands out
/// clones (`FromRef`); a clone is cheap and shares the store.
#[derive(Debug, Clone)]
pub struct CartState {
    /// Every cart.
    carts: Arc<CartStore>,
}

impl CartState {
    /// The state of a service keeping the carts of `carts`.
    pub(crate) fn new(carts: CartStore) -> CartState {
        CartState {
            carts: Arc::new(carts),
        }
    }

    /// Every cart.
    pub(crate) fn carts(&self) -> &CartStore {
        &self.carts
    }
}

/// The cart service's routes, for a router whose state yields a [`CartState`] (the
/// [`World`](crate::World) does).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    CartState: FromRef<S>,
{
    Router::new()
        .route("/carts/{user_id}", get(get_cart).delete(clear_cart))
        .route("/carts/{user_id}/items", post(add_item))
        .route(
            "/carts/{user_id}/items/{product_id}",
            put(set_quantity).delete(remove_item),
        )
}

/// Checks the path's user id and that `X-User-Id` names the same user.
fn authorize(headers: &HeaderMap, user_id: &str) -> Result<(), ApiError> {
    validate::id("user_id", user_id)?;
    let caller = id_header(headers, "x-user-id")?
        .ok_or_else(|| ApiError::bad_request("header X-User-Id is required"))?;
    if caller == user_id {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "X-User-Id does not own this cart".to_owned(),
        ))
    }
}

/// A cart as a 200 response, private, tagged with its version.
fn cart_response(cart: &Cart) -> Result<Response, ApiError> {
    let mut response = reply::json(StatusCode::OK, reply::private_no_store(), cart)?;
    if let Ok(etag) = HeaderValue::from_str(&cart.etag()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// `GET /carts/{user_id}`: the cart, empty (version 0) if the user never had one.
async fn get_cart(
    State(state): State<CartState>,
    PathOf(user_id): PathOf<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &user_id)?;
    cart_response(&state.carts.get(&user_id))
}

/// `DELETE /carts/{user_id}`: empties the cart (a change only if it had lines).
async fn clear_cart(
    State(state): State<CartState>,
    PathOf(user_id): PathOf<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &user_id)?;
    let now = OffsetDateTime::now_utc();
    let trace = TraceContext::from_headers(&headers);
    let ((), announced) = state.carts.update(&user_id, trace.as_ref(), |cart| {
        if !cart.items.is_empty() {
            cart.items.clear();
            cart.touch(now);
        }
        Ok(())
    })?;
    announced.published().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /carts/{user_id}/items`: adds units of a product, capped at 99 per line.
async fn add_item(
    State(state): State<CartState>,
    PathOf(user_id): PathOf<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    authorize(&headers, &user_id)?;
    let JsonBody(body) = body?;
    let fields = Fields::of(&body, "")?;
    let product_id = fields.id("product_id")?;
    let quantity = line_quantity(fields.integer("quantity", 1, i64::from(MAX_LINE_QUANTITY))?);
    let now = OffsetDateTime::now_utc();
    let trace = TraceContext::from_headers(&headers);
    let (cart, announced) = state.carts.update(&user_id, trace.as_ref(), |cart| {
        if !conditional::if_match(&headers, &cart.etag()) {
            return Err(ApiError::PreconditionFailed(format!(
                "If-Match does not match the cart's version, {}",
                cart.etag()
            )));
        }
        match cart.line_mut(&product_id) {
            Some(line) => {
                let total = line.quantity + quantity;
                if total > MAX_LINE_QUANTITY {
                    return Err(ApiError::Conflict(format!(
                        "a cart line holds at most {MAX_LINE_QUANTITY} units; it has {} of {product_id}",
                        line.quantity
                    )));
                }
                line.quantity = total;
            }
            None => cart.items.push(CartItem {
                product_id: product_id.clone(),
                quantity,
                added_at: now,
            }),
        }
        cart.touch(now);
        Ok(cart.clone())
    })?;
    announced.published().await;
    cart_response(&cart)
}

/// `PUT /carts/{user_id}/items/{product_id}`: sets a line's quantity; 0 removes the line.
async fn set_quantity(
    State(state): State<CartState>,
    PathOf((user_id, product_id)): PathOf<(String, String)>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    authorize(&headers, &user_id)?;
    validate::id("product_id", &product_id)?;
    let JsonBody(body) = body?;
    let fields = Fields::of(&body, "")?;
    let quantity = line_quantity(fields.integer("quantity", 0, i64::from(MAX_LINE_QUANTITY))?);
    let now = OffsetDateTime::now_utc();
    let trace = TraceContext::from_headers(&headers);
    let (cart, announced) = state.carts.update(&user_id, trace.as_ref(), |cart| {
        let line = cart
            .line_mut(&product_id)
            .ok_or_else(|| no_line(&product_id))?;
        if quantity == 0 {
            cart.items.retain(|item| item.product_id != product_id);
            cart.touch(now);
        } else if line.quantity != quantity {
            line.quantity = quantity;
            cart.touch(now);
        }
        Ok(cart.clone())
    })?;
    announced.published().await;
    cart_response(&cart)
}

/// `DELETE /carts/{user_id}/items/{product_id}`: removes a line.
async fn remove_item(
    State(state): State<CartState>,
    PathOf((user_id, product_id)): PathOf<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &user_id)?;
    validate::id("product_id", &product_id)?;
    let now = OffsetDateTime::now_utc();
    let trace = TraceContext::from_headers(&headers);
    let (cart, announced) = state.carts.update(&user_id, trace.as_ref(), |cart| {
        if cart.line_mut(&product_id).is_none() {
            return Err(no_line(&product_id));
        }
        cart.items.retain(|item| item.product_id != product_id);
        cart.touch(now);
        Ok(cart.clone())
    })?;
    announced.published().await;
    cart_response(&cart)
}

/// A quantity already checked to be within 0..=99.
fn line_quantity(checked: i64) -> u32 {
    u32::try_from(checked).unwrap_or_default()
}

/// The 404 of a write to a line the cart does not have.
fn no_line(product_id: &str) -> ApiError {
    ApiError::NotFound(format!("the cart has no line for product {product_id}"))
}

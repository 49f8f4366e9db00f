//! [`World`]: the seeded, in-memory state behind all three services, plus helpers that name
//! seeded data with particular properties, so tests need not hard-code ids.
//!
//! The world assembles the services' own states ([`ProductState`], [`CartState`],
//! [`OrderState`]) out of the seeded data and hands each router its own one (`FromRef`), so the
//! services know nothing of the world.
//!
//! A `World` is cheap to clone (one `Arc`); every clone sees the same state. The catalog, carts and
//! orders change under their own locks; each service has its own admin state and its own event
//! publisher (see [`crate::events`]).
//!
//! Besides naming seeded data, the world makes the changes that come "from outside the gateways"
//! for Rust tests, exactly as the admin routes do over HTTP (same checks, same events, and each
//! returns once its event is published): [`World::change_product`], [`World::delete_product`],
//! [`World::rename_category`], [`World::set_order_status`], [`World::advance_orders`].

use std::{fmt, sync::Arc};

use axum::extract::FromRef;

use crate::{
    ServiceKind,
    admin::{Faults, ServiceAdmin},
    cart::{Cart, CartState, CartStore},
    config::Config,
    cursor::CursorKey,
    events::Publisher,
    order::{Order, OrderState, OrderStatus, OrderStore},
    problem::ApiError,
    product::{Catalog, Category, Product, ProductChange, ProductState},
    seed,
};

/// The shared state of the product, cart and order services.
#[derive(Clone)]
pub struct World {
    /// Everything, shared by all clones and all three routers.
    inner: Arc<Inner>,
}

/// What a [`World`] holds.
struct Inner {
    /// The config the world was seeded from.
    config: Config,
    /// The product service's state: the catalog, its cursor key and `Cache-Control`.
    product: ProductState,
    /// The cart service's state: the carts.
    cart: CartState,
    /// The order service's state: the orders and their cursor key.
    order: OrderState,
    /// Admin state of the product, cart and order services, in [`ServiceKind::ALL`] order.
    admins: [Arc<ServiceAdmin>; 3],
    /// Seeded data with particular properties, found once at seeding.
    fixtures: seed::Fixtures,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("config", &self.inner.config)
            .field("products", &self.catalog().len())
            .field("users", &self.inner.fixtures.users.len())
            .finish_non_exhaustive()
    }
}

impl World {
    /// Seeds a world: the same config always yields the same products, categories, users, carts
    /// and orders (only cursor signatures differ between worlds). With `config.events`, each
    /// service publishes its changes (nothing is connected until the first one).
    pub fn seeded(config: &Config) -> World {
        let seeded = seed::generate(config);
        let faults = Faults::from_config(config);
        // One key signs the cursors of product and order listings.
        let cursor_key = CursorKey::random();
        let publishers = ServiceKind::ALL.map(|kind| Publisher::new(config.events.as_ref(), kind));
        let [product_events, cart_events, order_events] = publishers.clone();
        World {
            inner: Arc::new(Inner {
                product: ProductState::new(
                    Catalog::new(seeded.products, seeded.categories),
                    product_events,
                    cursor_key.clone(),
                    config.max_age,
                ),
                cart: CartState::new(CartStore::new(seeded.carts, cart_events)),
                order: OrderState::new(OrderStore::new(seeded.orders, order_events), cursor_key),
                admins: publishers.map(|events| {
                    let kind = events.kind();
                    Arc::new(ServiceAdmin::new(kind, faults).with_events(events))
                }),
                fixtures: seeded.fixtures,
                config: config.clone(),
            }),
        }
    }

    /// The config this world was seeded from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The catalog as it is now (a snapshot: later changes do not show in it).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.product.catalog()
    }

    /// Every cart.
    pub fn carts(&self) -> &CartStore {
        self.inner.cart.carts()
    }

    /// Every order.
    pub fn orders(&self) -> &OrderStore {
        self.inner.order.orders()
    }

    /// The admin state (faults, counters, request log) of one service.
    pub fn admin(&self, kind: ServiceKind) -> &Arc<ServiceAdmin> {
        let index = match kind {
            ServiceKind::Product => 0,
            ServiceKind::Cart => 1,
            ServiceKind::Order => 2,
        };
        &self.inner.admins[index]
    }

    /// A product by id, as it is now (`None` once deleted).
    pub fn product(&self, id: &str) -> Option<Product> {
        self.catalog().product(id).cloned()
    }

    /// Every category, as they are now.
    pub fn categories(&self) -> Vec<Category> {
        self.catalog().categories().to_vec()
    }

    /// A snapshot of a user's cart (empty, version 0, if there is none).
    pub fn cart(&self, user_id: &str) -> Cart {
        self.carts().get(user_id)
    }

    /// Every seeded user id (`u-0001`, ...), in order.
    pub fn users(&self) -> &[String] {
        &self.inner.fixtures.users
    }

    /// Every seeded partner id (`partner-acme`, `partner-globex`, `partner-initech`).
    pub fn partners(&self) -> &[String] {
        &self.inner.fixtures.partners
    }

    /// The currency of almost every product (`EUR`).
    pub fn currency(&self) -> &str {
        seed::PRIMARY_CURRENCY
    }

    /// A user whose seeded cart has lines (`u-0001`).
    pub fn user_with_cart(&self) -> &str {
        &self.inner.fixtures.user_with_cart
    }

    /// A user with at least five seeded web/mobile orders (`u-0001`), enough to page through with
    /// `limit=2`.
    pub fn user_with_orders(&self) -> &str {
        &self.inner.fixtures.user_with_orders
    }

    /// A user with neither a cart nor orders (`u-0010`).
    pub fn user_without_cart(&self) -> &str {
        &self.inner.fixtures.fresh_user
    }

    /// A partner with many seeded partner-channel orders of various statuses (`partner-acme`).
    pub fn partner_with_orders(&self) -> &str {
        &self.inner.fixtures.partner_with_orders
    }

    /// A partner without orders (`partner-initech`).
    pub fn partner_without_orders(&self) -> &str {
        &self.inner.fixtures.partner_without_orders
    }

    /// A product with `inventory.status` `out_of_stock` and nothing available.
    pub fn out_of_stock_product(&self) -> &str {
        &self.inner.fixtures.out_of_stock_product
    }

    /// A product with `inventory.status` `low_stock`.
    pub fn low_stock_product(&self) -> &str {
        &self.inner.fixtures.low_stock_product
    }

    /// A product on sale (with a `list_price` above its `price`), priced in the primary currency.
    pub fn on_sale_product(&self) -> &str {
        &self.inner.fixtures.on_sale_product
    }

    /// An in-stock product priced in the primary currency (`EUR`).
    pub fn regular_product(&self) -> &str {
        &self.inner.fixtures.regular_product
    }

    /// A product priced in a second currency (`USD`), to build mixed-currency orders.
    pub fn foreign_currency_product(&self) -> &str {
        &self.inner.fixtures.foreign_currency_product
    }

    /// The seeded web/mobile orders of a user, newest first (plus any created since).
    pub fn user_orders(&self, user_id: &str) -> Vec<Order> {
        self.orders().of_user(user_id)
    }

    /// The partner-channel orders of a partner, newest first (plus any created since).
    pub fn partner_orders(&self, partner_id: &str) -> Vec<Order> {
        self.orders().of_partner(partner_id)
    }

    /// Changes a product as the back office does (`PATCH /__admin/products/{product_id}`):
    /// bumps its version and `updated_at` and publishes `com.bff.product.changed`, unless every
    /// value given is the current one. Returns the product as it is now.
    ///
    /// # Errors
    ///
    /// 404 for an unknown product; 400 for a bad name; 422 for an unknown category or a
    /// `list_price` in another currency or not above the price. Nothing changes then.
    pub async fn change_product(
        &self,
        product_id: &str,
        change: &ProductChange,
    ) -> Result<Product, ApiError> {
        self.inner
            .product
            .change_product(product_id, change, None)
            .await
    }

    /// Deletes a product as the back office does (`DELETE /__admin/products/{product_id}`) and
    /// publishes `com.bff.product.deleted`.
    ///
    /// # Errors
    ///
    /// 404 for an unknown product.
    pub async fn delete_product(&self, product_id: &str) -> Result<(), ApiError> {
        self.inner.product.delete_product(product_id, None).await
    }

    /// Renames a category (`PATCH /__admin/categories/{category_id}`) and publishes
    /// `com.bff.category.changed` (unless the name is the current one).
    ///
    /// # Errors
    ///
    /// 404 for an unknown category, 400 for an empty or too long name.
    pub async fn rename_category(
        &self,
        category_id: &str,
        name: &str,
    ) -> Result<Category, ApiError> {
        self.inner
            .product
            .rename_category(category_id, name, None)
            .await
    }

    /// Moves an order to another status as a warehouse does
    /// (`POST /__admin/orders/{order_id}/status`) and publishes `com.bff.order.status_changed`.
    ///
    /// # Errors
    ///
    /// 404 for an unknown order; 409 unless `to` is the next step or a cancellation before
    /// shipping (see [`OrderStatus::can_become`]).
    pub async fn set_order_status(
        &self,
        order_id: &str,
        to: OrderStatus,
    ) -> Result<Order, ApiError> {
        self.inner.order.set_status(order_id, to, None).await
    }

    /// One tick of the fulfilment clock (`POST /__admin/orders/advance`): moves every order that
    /// is not delivered or cancelled one step along; returns how many moved.
    pub async fn advance_orders(&self) -> usize {
        self.inner.order.advance_orders().await
    }
}

/// The product router's state, shared with the world.
impl FromRef<World> for ProductState {
    fn from_ref(world: &World) -> ProductState {
        world.inner.product.clone()
    }
}

/// The cart router's state, shared with the world.
impl FromRef<World> for CartState {
    fn from_ref(world: &World) -> CartState {
        world.inner.cart.clone()
    }
}

/// The order router's state, shared with the world.
impl FromRef<World> for OrderState {
    fn from_ref(world: &World) -> OrderState {
        world.inner.order.clone()
    }
}

//! The mutations: cart changes and checkout. Each needs a signed-in user and acts for them only.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, InputObject, Object, Result, SimpleObject};
use shared_clients::{Address, Channel, IdempotencyKey, MAX_LINE_QUANTITY, ProductId};

use super::{
    catalog::load_product,
    error::{self, Code},
    scope::{RequestScope, Services},
    viewer::{CartView, OrderView},
};

/// The root of every mutation.
pub struct MutationRoot;

/// Changes to the viewer's cart, and checkout.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Adds `quantity` units of a product to the viewer's cart (an existing line grows). Errors:
    /// `NOT_FOUND` for an unknown product, `CONFLICT` when the line would exceed 99 units.
    async fn add_to_cart(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        #[graphql(default = 1, desc = "Units to add, 1 to 99.")] quantity: i32,
    ) -> Result<CartView> {
        let scope = RequestScope::of(ctx)?;
        let user = scope.user()?;
        let product_id = parse_product(&product_id)?;
        let quantity = quantity_in(quantity, 1)?;
        if load_product(ctx, &product_id).await?.is_none() {
            return Err(error::coded(Code::NotFound, "There is no such product.")
                .extend_with(|_, ext| ext.set("argument", "productId")));
        }
        let cart = Services::of(ctx)?
            .downstream
            .carts()
            .add_item(&scope.context, user, &product_id, quantity, None)
            .await
            .map_err(|e| error::downstream(&e))?;
        Ok(CartView::new(cart))
    }

    /// Sets the quantity of a line of the viewer's cart; 0 removes it. `NOT_FOUND` when the cart
    /// has no line for the product.
    async fn set_cart_line_quantity(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        #[graphql(desc = "The new quantity, 0 to 99.")] quantity: i32,
    ) -> Result<CartView> {
        let scope = RequestScope::of(ctx)?;
        let user = scope.user()?;
        let product_id = parse_product(&product_id)?;
        let quantity = quantity_in(quantity, 0)?;
        let cart = Services::of(ctx)?
            .downstream
            .carts()
            .set_quantity(&scope.context, user, &product_id, quantity)
            .await
            .map_err(|e| error::downstream(&e))?;
        Ok(CartView::new(cart))
    }

    /// Removes a line from the viewer's cart. `NOT_FOUND` when the cart has no line for it.
    async fn remove_cart_line(&self, ctx: &Context<'_>, product_id: ID) -> Result<CartView> {
        let scope = RequestScope::of(ctx)?;
        let user = scope.user()?;
        let product_id = parse_product(&product_id)?;
        let cart = Services::of(ctx)?
            .downstream
            .carts()
            .remove_item(&scope.context, user, &product_id)
            .await
            .map_err(|e| error::downstream(&e))?;
        Ok(CartView::new(cart))
    }

    /// Orders the viewer's cart at current prices, then empties the cart.
    ///
    /// Send a fresh `idempotencyKey` (e.g. a UUID) per checkout and the same key when retrying:
    /// a retry returns the order the first attempt created, never a second one. Refused with
    /// `EMPTY_CART`, `OUT_OF_STOCK` (`extensions.unavailable` lists each product and why) or
    /// `MIXED_CURRENCIES` before anything is created.
    async fn checkout(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "1 to 255 visible ASCII characters, unique per checkout.")]
        idempotency_key: String,
        shipping_address: Option<AddressInput>,
    ) -> Result<CheckoutResult> {
        let scope = RequestScope::of(ctx)?;
        let user = scope.user()?;
        let key = IdempotencyKey::parse(&idempotency_key).map_err(|_| {
            error::bad_input(
                "idempotencyKey",
                "`idempotencyKey` must be 1 to 255 visible ASCII characters.",
            )
        })?;
        let placed = Services::of(ctx)?
            .placement
            .checkout(
                &scope.context,
                user,
                &key,
                Channel::web(),
                shipping_address.map(Address::from),
            )
            .await
            .map_err(|e| error::checkout(&e))?;
        Ok(CheckoutResult {
            order: OrderView(Arc::new(placed.order)),
            created: placed.created,
            cart_cleared: placed.cart_cleared,
        })
    }
}

/// A product id argument, or `BAD_USER_INPUT`.
fn parse_product(id: &str) -> Result<ProductId> {
    ProductId::parse(id).map_err(|e| error::invalid_id("productId", &e))
}

/// A quantity from `min` to 99, or `BAD_USER_INPUT`.
fn quantity_in(quantity: i32, min: u32) -> Result<u32> {
    u32::try_from(quantity)
        .ok()
        .filter(|q| (min..=MAX_LINE_QUANTITY).contains(q))
        .ok_or_else(|| {
            error::bad_input(
                "quantity",
                &format!("`quantity` must be between {min} and {MAX_LINE_QUANTITY}."),
            )
        })
}

/// Where an order ships; every part is optional.
#[derive(InputObject)]
pub struct AddressInput {
    /// Recipient name.
    pub name: Option<String>,
    /// Street and number.
    pub line1: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// ISO-3166 alpha-2 country code, e.g. `DE`.
    pub country: Option<String>,
}

impl From<AddressInput> for Address {
    fn from(a: AddressInput) -> Self {
        Self {
            name: a.name,
            line1: a.line1,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

/// The outcome of a checkout.
#[derive(SimpleObject)]
pub struct CheckoutResult {
    /// The order: new, or the one an earlier attempt with the same key created.
    pub order: OrderView,
    /// Whether this request created the order (false: a retry got the earlier one).
    pub created: bool,
    /// Whether the cart was emptied. False when the order was placed but emptying the cart
    /// failed: the order stands; the client may clear the cart itself.
    pub cart_cleared: bool,
}

//! The signed-in user's part of the schema: the viewer, their cart and their orders. Private
//! data: every call acts for the token's user, never for an id the client names.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use futures::future::join_all;
use shared_clients::{
    Address, Cart, ErrorKind, Money, Order, OrderId, OrderLine, OrderQuery, OrderStatus, Owner,
    Product, ProductId, UserId,
};
use tokio::sync::OnceCell;

use super::{
    catalog::{PageInfo, ProductView, load_product, page_cost},
    error,
    money::MoneyView,
    scope::{RequestScope, Services},
};

/// The signed-in user.
pub struct Viewer {
    /// Whom every cart and order call acts for.
    pub user: UserId,
}

/// The signed-in user: their cart and orders.
#[Object]
impl Viewer {
    /// The user's id (the token's subject).
    async fn id(&self) -> ID {
        ID::from(self.user.as_str())
    }

    /// The user's cart (empty when they have none). `null` with an error when the cart service
    /// fails.
    async fn cart(&self, ctx: &Context<'_>) -> Result<Option<CartView>> {
        let result = async {
            let scope = RequestScope::of(ctx)?;
            let cart = Services::of(ctx)?
                .downstream
                .carts()
                .get(&scope.context, &self.user)
                .await
                .map_err(|e| error::downstream(&e))?;
            Ok(Some(CartView::new(cart)))
        }
        .await;
        error::or_null(ctx, result)
    }

    /// The user's orders, newest first. `null` with an error when the order service fails.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "`pageInfo.endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only orders in this status.")] status: Option<OrderState>,
    ) -> Result<Option<OrderConnection>> {
        let result = self.order_page(ctx, first, after, status).await;
        error::or_null(ctx, result)
    }

    /// One of the user's orders; `null` with `NOT_FOUND` when there is no such order of theirs.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<OrderView>> {
        let result = async {
            let id = OrderId::parse(&id).map_err(|e| error::invalid_id("id", &e))?;
            let scope = RequestScope::of(ctx)?;
            let order = Services::of(ctx)?
                .downstream
                .orders()
                .get(&scope.context, &Owner::User(self.user.clone()), &id)
                .await
                .map_err(|e| error::downstream(&e))?;
            Ok(Some(OrderView(Arc::new(order))))
        }
        .await;
        error::or_null(ctx, result)
    }
}

impl Viewer {
    /// One page of the user's orders.
    async fn order_page(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<OrderState>,
    ) -> Result<Option<OrderConnection>> {
        let services = Services::of(ctx)?;
        let scope = RequestScope::of(ctx)?;
        let limit = services.pages.resolve(first)?;
        if after.as_deref().is_some_and(str::is_empty) {
            return Err(error::bad_input("after", "`after` must not be empty."));
        }
        let query = OrderQuery {
            status: status.map(OrderStatus::from),
            cursor: after,
            limit: Some(limit),
        };
        let page = services
            .downstream
            .orders()
            .list(&scope.context, &Owner::User(self.user.clone()), &query)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Invalid => {
                    error::bad_input("after", "`after` is not a cursor this API issued.")
                }
                _ => error::downstream(&e),
            })?;
        Ok(Some(OrderConnection {
            nodes: page.items.into_iter().map(Arc::new).collect(),
            end_cursor: page.next_cursor,
        }))
    }
}

/// A user's cart, with the products of its lines.
pub struct CartView {
    /// The cart as the cart service answered it.
    cart: Arc<Cart>,
    /// The lines' products, fetched once for every field that needs one.
    products: Arc<LineProducts>,
}

impl CartView {
    /// A view of `cart`; its products are fetched when a field first asks for one.
    pub fn new(cart: Cart) -> Self {
        let ids = cart
            .items
            .iter()
            .map(|item| item.product_id.clone())
            .collect();
        Self {
            cart: Arc::new(cart),
            products: Arc::new(LineProducts {
                ids,
                fetched: OnceCell::new(),
            }),
        }
    }
}

/// The products of one cart's lines.
///
/// A cart knows every product id it needs up front, so it does not go through the request's
/// [`ProductLoader`](super::loader::ProductLoader): the loader waits `gateway.batch_delay` to
/// collect ids (and a timer's wake-up on top), which on a cold cart is most of the gateway's own
/// latency. Instead the first line (or the subtotal) whose product is not fresh in the cache makes
/// one [`Catalog::products`](shared_clients::Catalog::products) call for all the cart's ids at
/// once; every other line waits for that same call and shares its answer, or its error. Fresh
/// products are answered from the cache without it.
struct LineProducts {
    /// Every line's product id, in line order.
    ids: Vec<ProductId>,
    /// The batch's answer: the products found (unknown ids are absent), or why the batch failed.
    fetched: OnceCell<Result<HashMap<ProductId, Arc<Product>>>>,
}

impl LineProducts {
    /// The product `id` (one of the cart's); `None` when it no longer exists.
    async fn get(&self, ctx: &Context<'_>, id: &ProductId) -> Result<Option<ProductView>> {
        let services = Services::of(ctx)?;
        let catalog = services.downstream.catalog();
        if self.fetched.get().is_none()
            && let Some(served) = catalog.fresh_product(id).await
        {
            return Ok(Some(ProductView(served.into_inner())));
        }
        let fetched = self
            .fetched
            .get_or_init(|| async {
                let scope = RequestScope::of(ctx)?;
                let found = catalog
                    .products(&scope.context, &self.ids)
                    .await
                    .map_err(|e| error::downstream(&e))?;
                scope.staleness.record("products", found.freshness);
                Ok(found.into_map())
            })
            .await;
        match fetched {
            Ok(products) => Ok(products.get(id).cloned().map(ProductView)),
            Err(error) => Err(error.clone()),
        }
    }
}

/// A user's cart. Prices are the catalog's current ones.
#[Object(name = "Cart")]
impl CartView {
    /// Increases with every change, so a client can tell whether it has the latest cart.
    async fn version(&self) -> u64 {
        self.cart.version
    }

    /// The lines, in the order they were added.
    async fn lines(&self) -> Vec<CartLine> {
        self.cart
            .items
            .iter()
            .map(|item| CartLine {
                product_id: item.product_id.clone(),
                quantity: item.quantity,
                added_at: item.added_at.clone(),
                products: Arc::clone(&self.products),
            })
            .collect()
    }

    /// Units in the cart, all lines together (for the cart badge).
    async fn item_count(&self) -> u64 {
        self.cart.items.iter().map(|i| u64::from(i.quantity)).sum()
    }

    /// The sum of the line totals at current prices; `null` (with an error) when a product's
    /// price cannot be loaded or the lines are in different currencies. An empty cart has no
    /// subtotal (`null`, no error).
    async fn subtotal(&self, ctx: &Context<'_>) -> Result<Option<MoneyView>> {
        let result = self.sum(ctx).await;
        error::or_null(ctx, result)
    }
}

impl CartView {
    /// The subtotal of the cart at current prices.
    async fn sum(&self, ctx: &Context<'_>) -> Result<Option<MoneyView>> {
        let lines = self.cart.items.iter().map(|item| async move {
            let product = self.products.get(ctx, &item.product_id).await?;
            Ok::<_, async_graphql::Error>(product.map(|p| times(&p.0.price, item.quantity)))
        });
        let mut total: Option<Money> = None;
        for line in join_all(lines).await {
            // A product that no longer exists contributes nothing.
            let Some(amount) = line? else { continue };
            total = Some(match total {
                None => amount,
                Some(sum) if sum.currency == amount.currency => Money {
                    amount_minor: sum.amount_minor.saturating_add(amount.amount_minor),
                    currency: sum.currency,
                },
                Some(_) => {
                    return Err(error::coded(
                        error::Code::MixedCurrencies,
                        "The cart's products are priced in more than one currency.",
                    ));
                }
            });
        }
        Ok(total.map(MoneyView))
    }
}

/// `price × quantity`.
fn times(price: &Money, quantity: u32) -> Money {
    Money {
        amount_minor: price.amount_minor.saturating_mul(i64::from(quantity)),
        currency: price.currency.clone(),
    }
}

/// One line of a cart.
pub struct CartLine {
    /// The product in the line.
    product_id: ProductId,
    /// How many units.
    quantity: u32,
    /// When the line was first added (RFC 3339).
    added_at: String,
    /// The cart's products, shared by its lines.
    products: Arc<LineProducts>,
}

/// One line of a cart.
#[Object]
impl CartLine {
    /// The product's id (always present, even when the product cannot be loaded).
    async fn product_id(&self) -> ID {
        ID::from(self.product_id.as_str())
    }

    /// The product, resolved in one batch with the cart's other products. `null` when it no
    /// longer exists, or (with an error) when the product service fails.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductView>> {
        let result = self.products.get(ctx, &self.product_id).await;
        error::or_null(ctx, result)
    }

    /// How many units, 1 to 99.
    async fn quantity(&self) -> u32 {
        self.quantity
    }

    /// Current price × quantity; `null` when the product cannot be loaded.
    async fn line_total(&self, ctx: &Context<'_>) -> Result<Option<MoneyView>> {
        let result = self
            .products
            .get(ctx, &self.product_id)
            .await
            .map(|product| product.map(|p| MoneyView(times(&p.0.price, self.quantity))));
        error::or_null(ctx, result)
    }

    /// When the line was first added (RFC 3339).
    async fn added_at(&self) -> &str {
        &self.added_at
    }
}

/// A page of the viewer's orders.
pub struct OrderConnection {
    /// The orders of this page.
    nodes: Vec<Arc<Order>>,
    /// The cursor continuing after this page.
    end_cursor: Option<String>,
}

/// A page of orders (Relay-style: `edges`/`nodes` and `pageInfo`).
#[Object]
impl OrderConnection {
    /// The orders of this page, each wrapped in an edge.
    async fn edges(&self) -> Vec<OrderEdge> {
        self.nodes
            .iter()
            .map(|o| OrderEdge(Arc::clone(o)))
            .collect()
    }

    /// The orders of this page.
    async fn nodes(&self) -> Vec<OrderView> {
        self.nodes
            .iter()
            .map(|o| OrderView(Arc::clone(o)))
            .collect()
    }

    /// Where this page ends and whether another follows.
    async fn page_info(&self) -> PageInfo {
        PageInfo::forward(self.end_cursor.clone())
    }
}

/// One order of a page.
pub struct OrderEdge(Arc<Order>);

/// One order of a page.
#[Object]
impl OrderEdge {
    /// The order.
    async fn node(&self) -> OrderView {
        OrderView(Arc::clone(&self.0))
    }
}

/// An order.
pub struct OrderView(pub Arc<Order>);

/// An order the viewer placed.
#[Object(name = "Order")]
impl OrderView {
    /// The order's id.
    async fn id(&self) -> ID {
        ID::from(self.0.id.as_str())
    }

    /// Where the order is in its life cycle.
    async fn status(&self) -> OrderState {
        self.0.status.into()
    }

    /// What was ordered, at the price paid.
    async fn lines(&self) -> Vec<OrderLineView> {
        self.0.lines.iter().cloned().map(OrderLineView).collect()
    }

    /// Units ordered, all lines together.
    async fn item_count(&self) -> u64 {
        self.0.lines.iter().map(|l| u64::from(l.quantity)).sum()
    }

    /// The total the order service computed.
    async fn total(&self) -> MoneyView {
        MoneyView(self.0.total.clone())
    }

    /// Where it ships, when given.
    async fn shipping_address(&self) -> Option<AddressView> {
        self.0.shipping_address.clone().map(AddressView::from)
    }

    /// When the order was placed (RFC 3339).
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }

    /// When its status last changed (RFC 3339); `null` if it never did.
    async fn updated_at(&self) -> Option<&str> {
        self.0.updated_at.as_deref()
    }
}

/// One line of an order.
pub struct OrderLineView(OrderLine);

/// One line of an order, at the price paid.
#[Object(name = "OrderLine")]
impl OrderLineView {
    /// The product's id (always present, even when the product cannot be loaded).
    async fn product_id(&self) -> ID {
        ID::from(self.0.product_id.as_str())
    }

    /// The product as it is now, resolved in one batch with every other product of the request.
    /// `null` when it no longer exists, or (with an error) when the product service fails.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductView>> {
        let result = load_product(ctx, &self.0.product_id).await;
        error::or_null(ctx, result)
    }

    /// How many units.
    async fn quantity(&self) -> u32 {
        self.0.quantity
    }

    /// The price of one unit when ordered.
    async fn unit_price(&self) -> MoneyView {
        MoneyView(self.0.unit_price.clone())
    }

    /// Unit price × quantity.
    async fn line_total(&self) -> MoneyView {
        MoneyView(times(&self.0.unit_price, self.0.quantity))
    }
}

/// A shipping address; every part is optional.
#[derive(SimpleObject)]
#[graphql(name = "Address")]
pub struct AddressView {
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

impl From<Address> for AddressView {
    fn from(a: Address) -> Self {
        Self {
            name: a.name,
            line1: a.line1,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

/// Where an order is in its life cycle.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "OrderStatus")]
pub enum OrderState {
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

impl From<OrderStatus> for OrderState {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<OrderState> for OrderStatus {
    fn from(status: OrderState) -> Self {
        match status {
            OrderState::Pending => Self::Pending,
            OrderState::Confirmed => Self::Confirmed,
            OrderState::Shipped => Self::Shipped,
            OrderState::Delivered => Self::Delivered,
            OrderState::Cancelled => Self::Cancelled,
        }
    }
}

//! The root of subscriptions: live values of a product, the viewer's cart and one of the
//! viewer's orders.
//!
//! Each subscription follows one topic of the downstream [`Hub`](shared_clients::live::Hub),
//! which wakes it after a change event (or a poll, without events) has dropped the stale cached
//! copy; the value is then read through the same cached, coalesced clients as a query, and
//! resolved with the subscriber's own selection. So a thousand subscribers of one product cost one
//! downstream call per change, and a private value is only ever read for the subscriber's own
//! identity.
//!
//! - A value is pushed only when it differs from the last one pushed: a product that is equal,
//!   a cart whose `version` is not above the last one sent, an order whose status did not
//!   change, are skipped (a signal after missed events, a change of a field the value does not
//!   carry). The first change after subscribing is always pushed: what the subscriber read
//!   when it subscribed may already include a change made while it subscribed, which the
//!   client, holding what it queried before, has not seen.
//! - `productUpdated` completes when the product is deleted; `viewerOrderUpdated` after a
//!   terminal status (`DELIVERED`, `CANCELLED`; at once when the order already has one).
//! - The subscription starts following before it reads the current value, so a change between
//!   the two is not missed. Unknown ids, and another user's orders, are `NOT_FOUND` when
//!   subscribing.
//! - Each push is a `subscription push` span in the trace of the request whose change woke it
//!   (the hub keeps the trace context of the event behind a topic's last signal:
//!   [`Subscription::cause`]), so a push is found from the request that made the change; its
//!   read's downstream calls are children of it. A push woken by a poll has no such cause.
//! - Each read has the request deadline `downstream.deadline` of its own (the subscription's
//!   scope has none: it lives as long as the client follows).

use std::sync::Arc;

use async_graphql::{Context, ID, Result, Subscription};
use futures::{StreamExt, stream::BoxStream};
use shared_clients::{
    ErrorKind, OrderId, OrderStatus, Owner, ProductId, RequestContext, TraceContext,
    live::{Subscription, Topic},
};
use tracing::Instrument as _;

use super::{
    catalog::ProductView,
    error::{self, Code},
    scope::{LiveScope, Services},
    viewer::{CartView, OrderView},
};

/// The root of every subscription.
pub struct SubscriptionRoot;

/// What the web app can follow live.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The product each time it changes (price, stock, name, category), as `product(id)` shows
    /// it then; completes when the product is deleted. `NOT_FOUND` when there is no such product.
    async fn product_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<ProductView>>> {
        // Boxed (as every resolver here): async-graphql keeps the future that starts a
        // subscription inside the subscription's stream for its whole life, so the start's
        // state (a product read alone is several KiB) would be held by every idle subscriber.
        Box::pin(Self::start_product(ctx, id)).await
    }

    /// The viewer's cart each time it changes, whoever changed it (another tab, another device,
    /// another replica, the cart service directly). `UNAUTHENTICATED` without a signed-in user.
    async fn viewer_cart_updated(
        &self,
        ctx: &Context<'_>,
    ) -> Result<BoxStream<'static, Result<CartView>>> {
        Box::pin(Self::start_cart(ctx)).await
    }

    /// One of the viewer's orders at each status change; completes after a terminal status
    /// (`DELIVERED`, `CANCELLED`). `NOT_FOUND` when the viewer has no such order (another user's
    /// order included), `UNAUTHENTICATED` without a signed-in user.
    async fn viewer_order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<OrderView>>> {
        Box::pin(Self::start_order(ctx, id)).await
    }
}

impl SubscriptionRoot {
    /// Starts `productUpdated(id)`.
    async fn start_product(
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<ProductView>>> {
        let id = ProductId::parse(&id).map_err(|e| error::invalid_id("id", &e))?;
        let services = Services::of(ctx)?;
        let reads = Reads::new(services, LiveScope::of(ctx)?);
        let mut subscription = services.downstream.live().subscribe(
            Topic::Product(id.clone()),
            Some(services.live_poll_interval),
        );
        let downstream = services.downstream.clone();
        let catalog = downstream.catalog();
        catalog
            .product(&reads.context(), &id)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => error::coded(Code::NotFound, "There is no such product."),
                _ => error::downstream(&e),
            })?;
        let mut last: Option<Arc<shared_clients::Product>> = None;
        Ok(async_stream(move |mut tx| async move {
            let catalog = downstream.catalog();
            while subscription.changed().await {
                let span = push_span(&subscription, "productUpdated");
                // Boxed: the read's state (several KiB) is held only while it runs, not while the
                // subscription waits for the next change.
                let context = reads.context_in(&span);
                let read = Box::pin(catalog.product(&context, &id));
                match read.instrument(span).await {
                    Ok(served) => {
                        let product = served.into_inner();
                        if last.as_deref() == Some(&*product) {
                            continue;
                        }
                        last = Some(Arc::clone(&product));
                        if !tx.send(Ok(ProductView(product))).await {
                            return;
                        }
                    }
                    // Deleted: the subscription is complete.
                    Err(e) if e.kind() == ErrorKind::NotFound => return,
                    Err(e) => {
                        if !tx.send(Err(error::downstream(&e))).await {
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// Starts `viewerCartUpdated`.
    async fn start_cart(ctx: &Context<'_>) -> Result<BoxStream<'static, Result<CartView>>> {
        let services = Services::of(ctx)?;
        let scope = LiveScope::of(ctx)?;
        let user = scope.user()?.clone();
        let reads = Reads::new(services, scope);
        let mut subscription = services
            .downstream
            .live()
            .subscribe(Topic::Cart(user.clone()), Some(services.live_poll_interval));
        let downstream = services.downstream.clone();
        let mut last: Option<u64> = None;
        Ok(async_stream(move |mut tx| async move {
            let carts = downstream.carts();
            while subscription.changed().await {
                let span = push_span(&subscription, "viewerCartUpdated");
                let context = reads.context_in(&span);
                let read = Box::pin(carts.get(&context, &user));
                match read.instrument(span).await {
                    Ok(cart) => {
                        if last.is_some_and(|last| cart.version <= last) {
                            continue;
                        }
                        last = Some(cart.version);
                        if !tx.send(Ok(CartView::new(cart))).await {
                            return;
                        }
                    }
                    Err(e) => {
                        if !tx.send(Err(error::downstream(&e))).await {
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// Starts `viewerOrderUpdated(id)`.
    async fn start_order(
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<OrderView>>> {
        let id = OrderId::parse(&id).map_err(|e| error::invalid_id("id", &e))?;
        let services = Services::of(ctx)?;
        let scope = LiveScope::of(ctx)?;
        let owner = Owner::User(scope.user()?.clone());
        let reads = Reads::new(services, scope);
        let mut subscription = services.downstream.live().subscribe(
            Topic::Order {
                owner: owner.clone(),
                id: id.clone(),
            },
            Some(services.live_poll_interval),
        );
        let downstream = services.downstream.clone();
        let orders = downstream.orders();
        let current = orders
            .get(&reads.context(), &owner, &id)
            .await
            .map_err(|e| error::downstream(&e))?;
        let terminal = is_terminal(current.status);
        let mut last: Option<OrderStatus> = None;
        Ok(async_stream(move |mut tx| async move {
            let orders = downstream.orders();
            if terminal {
                return;
            }
            while subscription.changed().await {
                let span = push_span(&subscription, "viewerOrderUpdated");
                let context = reads.context_in(&span);
                let read = Box::pin(orders.get(&context, &owner, &id));
                match read.instrument(span).await {
                    Ok(order) => {
                        if last == Some(order.status) {
                            continue;
                        }
                        last = Some(order.status);
                        let done = is_terminal(order.status);
                        if !tx.send(Ok(OrderView(Arc::new(order)))).await || done {
                            return;
                        }
                    }
                    Err(e) => {
                        if !tx.send(Err(error::downstream(&e))).await {
                            return;
                        }
                    }
                }
            }
        }))
    }
}

/// Whether an order can no longer change status.
fn is_terminal(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Delivered | OrderStatus::Cancelled)
}

/// The span of one push of `field`, woken by a change: a child of the trace context of the
/// request that caused the change, when it had one (else of the current span).
fn push_span(subscription: &Subscription, field: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "subscription push",
        "otel.name" = %format_args!("subscription {field}"),
        "graphql.operation.type" = "subscription",
        "graphql.field.name" = field,
    );
    if let Some(cause) = subscription.cause() {
        cause.adopt(&span);
    }
    span
}

/// How a subscription reads: with its request's id and trace, and a fresh deadline per read.
struct Reads {
    /// The subscription's context (no deadline of its own).
    context: RequestContext,
    /// `downstream.deadline`.
    budget: std::time::Duration,
}

impl Reads {
    /// The reads of the subscription in `scope`.
    fn new(services: &Services, scope: &LiveScope) -> Self {
        Self {
            context: scope.context.clone(),
            budget: services.downstream.deadline(),
        }
    }

    /// The context of one read, with its own deadline from now.
    fn context(&self) -> RequestContext {
        self.context.clone().with_timeout_from_now(self.budget)
    }

    /// The context of one read made for a push in `span`: downstream, the read continues the
    /// push's trace (when traces are exported), not the trace of the subscribing request.
    fn context_in(&self, span: &tracing::Span) -> RequestContext {
        let context = self.context();
        match TraceContext::of_span(span) {
            Some(trace) => context.with_traceparent(trace.traceparent().clone()),
            None => context,
        }
    }
}

/// The sending half of [`async_stream`]: what the producer pushes.
struct Pushes<T>(futures::channel::mpsc::Sender<T>);

impl<T> Pushes<T> {
    /// Pushes `item` once the subscriber takes it (one item is buffered at most); `false` when
    /// the subscriber is gone (the producer should stop).
    async fn send(&mut self, item: T) -> bool {
        use futures::SinkExt;
        self.0.send(item).await.is_ok()
    }
}

/// A stream of what `produce` pushes, produced only as fast as it is consumed (a bounded channel
/// of one: a slow subscriber holds back its own producer, never a queue). The producer runs
/// inside the stream (no task of its own), so dropping the stream stops it.
fn async_stream<T, F, Fut>(produce: F) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: FnOnce(Pushes<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = futures::channel::mpsc::channel(0);
    let producer = produce(Pushes(tx));
    // Drive the producer and the receiver together: the producer ends by returning, which
    // drops its sender and ends the receiver once drained.
    let producer = futures::stream::once(producer).filter_map(|()| async { None });
    futures::stream::select(producer, rx).boxed()
}

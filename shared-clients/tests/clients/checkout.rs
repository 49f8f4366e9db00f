//! Order placement and cart checkout end to end against the reference services, counting the
//! orders created at the order service.

use reference_services::{Config, ServiceKind, Spawned, spawn_all};
use shared_clients::{
    Channel, Downstream, DownstreamConfig, IdempotencyKey, OrderPlacement, OrderPlacementConfig,
    OrderQuery, OrderRequest, Owner, PartnerId, PlaceOrderError, RequestedLine, ServiceConfig,
    UnavailableReason,
};

use crate::helpers::{ctx, user};

/// The reference services, clients and order placement over them.
struct Shop {
    /// The running services and their world.
    spawned: Spawned,
    /// Raw access for setting up carts and reading orders back.
    downstream: Downstream,
    /// The component under test.
    placement: OrderPlacement,
}

impl Shop {
    async fn start() -> Self {
        let spawned = spawn_all(Config {
            products: 300,
            ..Config::default()
        })
        .await
        .expect("reference services start");
        let config = DownstreamConfig {
            product: ServiceConfig::with_url(&spawned.product_url),
            cart: ServiceConfig::with_url(&spawned.cart_url),
            order: ServiceConfig::with_url(&spawned.order_url),
            ..DownstreamConfig::default()
        };
        let downstream = Downstream::new(&config).expect("valid URLs");
        let placement = OrderPlacement::new(downstream.clone(), &OrderPlacementConfig::default());
        Self {
            spawned,
            downstream,
            placement,
        }
    }

    /// Orders created at the order service (POST requests that reached it).
    fn order_posts(&self) -> u64 {
        let stats = self.spawned.world.admin(ServiceKind::Order).stats();
        stats.requests.get("POST /orders").copied().unwrap_or(0)
    }

    /// Puts `quantity` of `product` in `user_id`'s cart.
    async fn add(&self, user_id: &str, product: &str, quantity: u32) {
        self.downstream
            .carts()
            .add_item(
                &ctx(),
                &user(user_id),
                &product.parse().expect("id"),
                quantity,
                None,
            )
            .await
            .expect("added to cart");
    }
}

fn key(value: &str) -> IdempotencyKey {
    IdempotencyKey::parse(value).expect("valid key")
}

#[tokio::test]
async fn checkout_creates_one_order_from_the_cart_at_current_prices_and_empties_the_cart() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    let product = world.regular_product().to_owned();
    shop.add(&buyer, &product, 2).await;

    let placed = shop
        .placement
        .checkout(
            &ctx(),
            &user(&buyer),
            &key("checkout-1"),
            Channel::web(),
            None,
        )
        .await
        .expect("checkout succeeds");

    assert!(placed.created);
    assert!(placed.cart_cleared);
    assert_eq!(placed.order.lines.len(), 1);
    let catalog_price = world.product(&product).expect("seeded").price.amount_minor;
    assert_eq!(placed.order.lines[0].unit_price.amount_minor, catalog_price);
    assert_eq!(placed.order.total.amount_minor, catalog_price * 2);
    let cart = shop
        .downstream
        .carts()
        .get(&ctx(), &user(&buyer))
        .await
        .expect("cart");
    assert!(cart.items.is_empty(), "the cart is emptied");
    assert_eq!(shop.order_posts(), 1);
}

#[tokio::test]
async fn a_retried_checkout_with_the_same_key_returns_the_same_order_and_creates_no_second_one() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    shop.add(&buyer, world.regular_product(), 1).await;
    let buyer_id = user(&buyer);

    let first = shop
        .placement
        .checkout(&ctx(), &buyer_id, &key("same-key"), Channel::web(), None)
        .await
        .expect("first checkout");
    // The cart is empty now; a retry must still get the order, not "nothing to order".
    let retry = shop
        .placement
        .checkout(&ctx(), &buyer_id, &key("same-key"), Channel::web(), None)
        .await
        .expect("retried checkout");

    assert_eq!(retry.order.id, first.order.id);
    assert!(!retry.created);
    assert_eq!(
        shop.order_posts(),
        1,
        "one order created at the order service"
    );
    let orders = shop
        .downstream
        .orders()
        .list(&ctx(), &Owner::User(buyer_id), &OrderQuery::default())
        .await
        .expect("orders");
    assert_eq!(
        orders
            .items
            .iter()
            .filter(|o| o.id == first.order.id)
            .count(),
        1
    );
}

#[tokio::test]
async fn concurrent_checkouts_with_one_key_make_one_order() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    shop.add(&buyer, world.regular_product(), 3).await;
    let buyer_id = user(&buyer);
    let context = ctx();
    let racing = key("racing");
    let attempts = (0..8).map(|_| {
        shop.placement
            .checkout(&context, &buyer_id, &racing, Channel::mobile(), None)
    });
    let results = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<_> = results
        .into_iter()
        .filter_map(Result::ok)
        .map(|placed| placed.order.id)
        .collect();
    assert_eq!(ids.len(), 1, "every successful attempt got the same order");
    let orders = shop
        .downstream
        .orders()
        .list(&ctx(), &Owner::User(buyer_id), &OrderQuery::default())
        .await
        .expect("orders");
    assert_eq!(orders.items.len(), 1, "exactly one order exists");
}

#[tokio::test]
async fn an_out_of_stock_product_refuses_checkout_naming_it_and_creates_nothing() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    let sold_out = world.out_of_stock_product().to_owned();
    shop.add(&buyer, world.regular_product(), 1).await;
    shop.add(&buyer, &sold_out, 1).await;

    let error = shop
        .placement
        .checkout(&ctx(), &user(&buyer), &key("k-oos"), Channel::web(), None)
        .await
        .expect_err("refused");

    let PlaceOrderError::Unavailable(products) = error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(products.len(), 1);
    assert_eq!(products[0].product_id.as_str(), sold_out);
    assert_eq!(products[0].reason, UnavailableReason::OutOfStock);
    assert_eq!(shop.order_posts(), 0);
    let cart = shop
        .downstream
        .carts()
        .get(&ctx(), &user(&buyer))
        .await
        .expect("cart");
    assert_eq!(cart.items.len(), 2, "the cart is left as it was");
}

#[tokio::test]
async fn an_empty_cart_is_refused() {
    let shop = Shop::start().await;
    let buyer = shop.spawned.world.user_without_cart().to_owned();
    let error = shop
        .placement
        .checkout(&ctx(), &user(&buyer), &key("k-empty"), Channel::web(), None)
        .await
        .expect_err("refused");
    assert!(matches!(error, PlaceOrderError::Empty), "{error:?}");
}

#[tokio::test]
async fn a_partner_order_of_explicit_lines_is_priced_and_owned_by_the_partner() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let partner = PartnerId::parse(world.partner_without_orders()).expect("id");
    let owner = Owner::Partner(partner.clone());
    let request = OrderRequest {
        customer: user("customer-77"),
        channel: Channel::partner(partner),
        lines: vec![RequestedLine {
            product_id: world.regular_product().parse().expect("id"),
            quantity: 4,
        }],
        shipping_address: None,
    };

    let first = shop
        .placement
        .place(&ctx(), &owner, &key("partner-1"), request.clone())
        .await
        .expect("placed");
    let again = shop
        .placement
        .place(&ctx(), &owner, &key("partner-1"), request)
        .await
        .expect("replayed");

    assert_eq!(first.order.id, again.order.id);
    assert_eq!(
        first
            .order
            .channel
            .partner_id
            .as_ref()
            .map(PartnerId::as_str),
        Some(world.partner_without_orders())
    );
    assert_eq!(shop.order_posts(), 1);
}

#[tokio::test]
async fn products_in_two_currencies_are_refused_before_any_order_is_created() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let lines = [
        RequestedLine {
            product_id: world.regular_product().parse().expect("id"),
            quantity: 1,
        },
        RequestedLine {
            product_id: world.foreign_currency_product().parse().expect("id"),
            quantity: 1,
        },
    ];
    let error = shop
        .placement
        .price(&ctx(), &lines)
        .await
        .expect_err("refused");
    assert!(
        matches!(error, PlaceOrderError::MixedCurrencies),
        "{error:?}"
    );
    assert_eq!(shop.order_posts(), 0);
}

#[tokio::test]
async fn an_order_created_when_the_cart_cannot_be_emptied_is_still_returned() {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path},
    };

    use crate::helpers::{cart_json, downstream, order_json, product_json};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0042"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(cart_json("u-0042", 3))
                .insert_header("cache-control", "private, no-store"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(
                    serde_json::json!({ "items": [product_json("p-00001")], "missing": [] }),
                )
                .insert_header("cache-control", "public, max-age=30"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(order_json(
                    "o-1",
                    "u-0042",
                    serde_json::json!({"kind": "web", "partner_id": null}),
                ))
                .insert_header("location", "/orders/o-1")
                .insert_header("cache-control", "private, no-store"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/carts/u-0042"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let placement = OrderPlacement::new(downstream(&server), &OrderPlacementConfig::default());

    let placed = placement
        .checkout(
            &ctx(),
            &user("u-0042"),
            &key("clear-fails"),
            Channel::web(),
            None,
        )
        .await
        .expect("the order stands although emptying the cart failed");

    assert_eq!(placed.order.id.as_str(), "o-1");
    assert!(placed.created);
    assert!(
        !placed.cart_cleared,
        "the failure to empty the cart is reported"
    );
}

//! Order placement and cart checkout end to end against the reference services, counting the
//! orders created at the order service.

use std::time::Duration;

use reference_services::{Config, ServiceKind, Spawned, spawn_all};
use shared_clients::{
    Address, Channel, Downstream, DownstreamConfig, IdempotencyKey, OrderPlacement,
    OrderPlacementConfig, OrderQuery, OrderRequest, Owner, PartnerId, PlaceOrderError,
    RequestedLine, ServiceConfig, UnavailableReason,
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
        let (downstream, placement) = replica(&spawned);
        Self {
            spawned,
            downstream,
            placement,
        }
    }

    /// Another gateway process over the same services: its own caches and remembered attempts.
    fn replica(&self) -> (Downstream, OrderPlacement) {
        replica(&self.spawned)
    }

    /// The lines of `user_id`'s cart as the cart service has them, (product, quantity) sorted.
    fn cart_lines(&self, user_id: &str) -> Vec<(String, u32)> {
        let mut lines: Vec<_> = self
            .spawned
            .world
            .cart(user_id)
            .items
            .iter()
            .map(|item| (item.product_id.clone(), item.quantity))
            .collect();
        lines.sort();
        lines
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

/// Clients and order placement over `spawned`, as one gateway process has them.
fn replica(spawned: &Spawned) -> (Downstream, OrderPlacement) {
    let config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    let downstream = Downstream::new(&config).expect("valid URLs");
    let placement = OrderPlacement::new(downstream.clone(), &OrderPlacementConfig::default());
    (downstream, placement)
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
        .map(|result| result.expect("every concurrent attempt succeeds").order.id)
        .collect();
    assert_eq!(ids.len(), 1, "every attempt got the same order");
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

#[tokio::test]
async fn a_retried_checkout_leaves_items_added_after_the_first_attempt_in_the_cart() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    let later = world.on_sale_product().to_owned();
    shop.add(&buyer, world.regular_product(), 1).await;
    let buyer_id = user(&buyer);

    let first = shop
        .placement
        .checkout(&ctx(), &buyer_id, &key("retry-keeps"), Channel::web(), None)
        .await
        .expect("first checkout");
    assert!(first.cart_cleared);
    // The user goes on shopping; then the app retries the checkout (its answer was lost).
    shop.add(&buyer, &later, 2).await;
    let retry = shop
        .placement
        .checkout(&ctx(), &buyer_id, &key("retry-keeps"), Channel::web(), None)
        .await
        .expect("retried checkout");

    assert_eq!(retry.order.id, first.order.id);
    assert!(!retry.created);
    assert!(retry.cart_cleared, "the first attempt's cart_cleared");
    assert_eq!(
        shop.cart_lines(&buyer),
        vec![(later, 2)],
        "the retry did not touch the cart"
    );
    assert_eq!(shop.order_posts(), 1);
}

#[tokio::test]
async fn checkout_reads_the_cart_uncached_so_a_change_made_through_another_replica_is_ordered() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    let buyer_id = user(&buyer);
    let first = world.regular_product().to_owned();
    let second = world.on_sale_product().to_owned();
    shop.add(&buyer, &first, 1).await;
    // This replica has the one-line cart cached now …
    let cached = shop
        .downstream
        .carts()
        .get(&ctx(), &buyer_id)
        .await
        .expect("cart");
    assert_eq!(cached.items.len(), 1);
    // … while another replica adds a line.
    let (other, _) = shop.replica();
    other
        .carts()
        .add_item(&ctx(), &buyer_id, &second.parse().expect("id"), 1, None)
        .await
        .expect("added elsewhere");

    let placed = shop
        .placement
        .checkout(&ctx(), &buyer_id, &key("uncached"), Channel::web(), None)
        .await
        .expect("checkout");

    let mut ordered: Vec<_> = placed
        .order
        .lines
        .iter()
        .map(|line| line.product_id.as_str().to_owned())
        .collect();
    ordered.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ordered, expected, "the cart as the cart service has it");
    assert!(placed.cart_cleared);
    assert!(shop.cart_lines(&buyer).is_empty());
    let reread = shop
        .downstream
        .carts()
        .get(&ctx(), &buyer_id)
        .await
        .expect("cart");
    assert!(
        reread.items.is_empty(),
        "this replica's cached cart was invalidated"
    );
}

#[tokio::test]
async fn reusing_a_key_for_a_different_order_is_refused_not_answered_with_the_first_order() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let partner = PartnerId::parse(world.partner_without_orders()).expect("id");
    let owner = Owner::Partner(partner.clone());
    let request = |quantity| OrderRequest {
        customer: user("customer-9"),
        channel: Channel::partner(partner.clone()),
        lines: vec![RequestedLine {
            product_id: world.regular_product().parse().expect("id"),
            quantity,
        }],
        shipping_address: None,
    };
    shop.placement
        .place(&ctx(), &owner, &key("reused"), request(1))
        .await
        .expect("placed");

    let error = shop
        .placement
        .place(&ctx(), &owner, &key("reused"), request(2))
        .await
        .expect_err("a different order under the same key");
    assert!(matches!(error, PlaceOrderError::KeyReused), "{error:?}");
    // Another replica does not remember the attempt; the order service's 422 maps the same way.
    let (_, other) = shop.replica();
    let error = other
        .place(&ctx(), &owner, &key("reused"), request(3))
        .await
        .expect_err("refused by the order service");
    assert!(matches!(error, PlaceOrderError::KeyReused), "{error:?}");
    assert_eq!(shop.order_posts(), 2, "the first order and the refused one");
    // The original request under the key still gets its order.
    let again = shop
        .placement
        .place(&ctx(), &owner, &key("reused"), request(1))
        .await
        .expect("replayed");
    assert!(!again.created);
}

#[tokio::test]
async fn a_checkout_retry_with_another_address_is_refused() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    shop.add(&buyer, world.regular_product(), 1).await;
    let buyer_id = user(&buyer);
    let address = |city: &str| {
        Some(Address {
            city: Some(city.to_owned()),
            country: Some("DE".to_owned()),
            ..Address::default()
        })
    };
    shop.placement
        .checkout(
            &ctx(),
            &buyer_id,
            &key("addr"),
            Channel::web(),
            address("Berlin"),
        )
        .await
        .expect("first checkout");
    let error = shop
        .placement
        .checkout(
            &ctx(),
            &buyer_id,
            &key("addr"),
            Channel::web(),
            address("Bonn"),
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, PlaceOrderError::KeyReused), "{error:?}");
    let error = shop
        .placement
        .checkout(
            &ctx(),
            &buyer_id,
            &key("addr"),
            Channel::mobile(),
            address("Berlin"),
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, PlaceOrderError::KeyReused), "{error:?}");
    assert_eq!(shop.order_posts(), 1);
}

#[tokio::test]
async fn an_invalid_shipping_address_is_refused_before_anything_is_created() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let buyer = world.user_without_cart().to_owned();
    shop.add(&buyer, world.regular_product(), 1).await;
    let bad_country = Address {
        country: Some("de".to_owned()),
        ..Address::default()
    };
    let too_long = Address {
        line1: Some("x".repeat(201)),
        ..Address::default()
    };
    for (name, address) in [("country", bad_country), ("line1", too_long)] {
        let error = shop
            .placement
            .checkout(
                &ctx(),
                &user(&buyer),
                &key(&format!("bad-{name}")),
                Channel::web(),
                Some(address),
            )
            .await
            .expect_err("refused");
        let PlaceOrderError::InvalidAddress(why) = error else {
            panic!("expected InvalidAddress, got {error:?}");
        };
        assert!(why.contains(name), "{why}");
    }
    assert_eq!(shop.order_posts(), 0);
    assert_eq!(
        shop.cart_lines(&buyer).len(),
        1,
        "the cart is left as it was"
    );
}

/// A wiremock shop for the order-service refusal and re-pricing rules: the product `p-00001`
/// costs `first_price` on the first lookup and `later_price` afterwards; the first `POST /orders`
/// answers `first_status`, later ones 201.
async fn repricing_server(
    first_price: i64,
    later_price: i64,
    first_status: u16,
) -> wiremock::MockServer {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path},
    };

    use crate::helpers::{order_json, product_json};

    let server = MockServer::start().await;
    let priced = |amount: i64| {
        let mut product = product_json("p-00001");
        product["price"]["amount_minor"] = amount.into();
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({ "items": [product], "missing": [] }))
            .insert_header("cache-control", "public, max-age=30")
    };
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(priced(first_price))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(priced(later_price))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(
            ResponseTemplate::new(first_status)
                .insert_header("content-type", "application/problem+json")
                .set_body_json(serde_json::json!({"status": first_status, "title": "no"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(order_json(
                    "o-1",
                    "c-1",
                    serde_json::json!({"kind": "partner", "partner_id": "acme"}),
                ))
                .insert_header("cache-control", "private, no-store"),
        )
        .mount(&server)
        .await;
    server
}

/// The unit prices of every `POST /orders` body the server received, in order.
async fn posted_prices(server: &wiremock::MockServer) -> Vec<i64> {
    server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|request| request.method == wiremock::http::Method::POST)
        .map(|request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
            body["lines"][0]["unit_price"]["amount_minor"]
                .as_i64()
                .expect("price")
        })
        .collect()
}

/// Places one line of `p-00001` for partner `acme` under `key`.
async fn place_once(
    placement: &OrderPlacement,
    key_value: &str,
) -> Result<shared_clients::PlacedOrder, PlaceOrderError> {
    let partner = crate::helpers::partner("acme");
    placement
        .place(
            &ctx(),
            &Owner::Partner(partner.clone()),
            &key(key_value),
            OrderRequest {
                customer: user("c-1"),
                channel: Channel::partner(partner),
                lines: vec![RequestedLine {
                    product_id: "p-00001".parse().expect("id"),
                    quantity: 1,
                }],
                shipping_address: None,
            },
        )
        .await
}

#[tokio::test]
async fn a_definite_refusal_forgets_the_priced_body_so_the_retry_is_priced_again() {
    let server = repricing_server(1999, 2500, 400).await;
    let placement = OrderPlacement::new(
        crate::helpers::downstream(&server),
        &OrderPlacementConfig::default(),
    );
    let error = place_once(&placement, "refused").await.expect_err("400");
    assert!(matches!(error, PlaceOrderError::Downstream(_)), "{error:?}");
    place_once(&placement, "refused").await.expect("placed");
    assert_eq!(posted_prices(&server).await, vec![1999, 2500]);
}

#[tokio::test]
async fn a_priced_body_is_resent_after_an_outage_only_while_it_is_young() {
    // Young (the default window): the retry resends exactly the first body.
    let server = repricing_server(1999, 2500, 500).await;
    let placement = OrderPlacement::new(
        crate::helpers::downstream(&server),
        &OrderPlacementConfig::default(),
    );
    place_once(&placement, "outage").await.expect_err("500");
    place_once(&placement, "outage").await.expect("placed");
    assert_eq!(posted_prices(&server).await, vec![1999, 1999]);

    // Too old: priced again at the current price.
    let server = repricing_server(1999, 2500, 500).await;
    let placement = OrderPlacement::new(
        crate::helpers::downstream(&server),
        &OrderPlacementConfig {
            reuse_priced_for: Duration::ZERO,
            ..OrderPlacementConfig::default()
        },
    );
    place_once(&placement, "outage").await.expect_err("500");
    place_once(&placement, "outage").await.expect("placed");
    assert_eq!(posted_prices(&server).await, vec![1999, 2500]);
}

#[tokio::test]
async fn after_the_order_only_what_was_ordered_is_taken_off_the_cart() {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{body_json, method, path},
    };

    use crate::helpers::{cart_json, downstream, order_json, product_json};

    let server = MockServer::start().await;
    // The cart when ordering: two of p-00001 …
    Mock::given(method("GET"))
        .and(path("/carts/u-0042"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(cart_json("u-0042", 3))
                .insert_header("cache-control", "private, no-store"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // … and afterwards, when the user added one more of it and another product meanwhile.
    let later = serde_json::json!({
        "user_id": "u-0042",
        "items": [
            { "product_id": "p-00001", "quantity": 3, "added_at": "2024-05-01T12:00:00Z" },
            { "product_id": "p-00002", "quantity": 1, "added_at": "2024-05-01T12:01:00Z" }
        ],
        "version": 5,
        "updated_at": "2024-05-01T12:01:00Z"
    });
    Mock::given(method("GET"))
        .and(path("/carts/u-0042"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(later.clone())
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
                .insert_header("cache-control", "private, no-store"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/carts/u-0042/items/p-00001"))
        .and(body_json(serde_json::json!({ "quantity": 1 })))
        .respond_with(ResponseTemplate::new(200).set_body_json(later))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let placement = OrderPlacement::new(downstream(&server), &OrderPlacementConfig::default());

    let placed = placement
        .checkout(
            &ctx(),
            &user("u-0042"),
            &key("partial"),
            Channel::web(),
            None,
        )
        .await
        .expect("checkout");

    assert!(placed.created);
    assert!(placed.cart_cleared);
}

#[tokio::test]
async fn a_placement_refused_before_the_order_service_leaves_nothing_remembered() {
    let shop = Shop::start().await;
    let world = &shop.spawned.world;
    let partner = crate::helpers::partner("acme");
    let owner = Owner::Partner(partner.clone());
    let order = |lines: Vec<(&str, u32)>, country: &str| OrderRequest {
        customer: user("c-1"),
        channel: Channel::partner(partner.clone()),
        lines: lines
            .into_iter()
            .map(|(product_id, quantity)| RequestedLine {
                product_id: product_id.parse().expect("id"),
                quantity,
            })
            .collect(),
        shipping_address: Some(Address {
            country: Some(country.into()),
            ..Address::default()
        }),
    };
    let regular = world.regular_product().to_owned();
    let refusals = [
        ("empty", order(vec![], "DE")),
        ("zero quantity", order(vec![(&regular, 0)], "DE")),
        (
            "unknown product",
            order(vec![("p-does-not-exist", 1)], "DE"),
        ),
        (
            "out of stock",
            order(vec![(world.out_of_stock_product(), 1)], "DE"),
        ),
        ("bad address", order(vec![(&regular, 1)], "Germany")),
    ];
    for (what, request) in refusals {
        let error = shop
            .placement
            .place(
                &ctx(),
                &owner,
                &key(&format!("refused-{}", what.replace(' ', "-"))),
                request,
            )
            .await
            .expect_err(what);
        assert!(
            !matches!(error, PlaceOrderError::Downstream(_)),
            "{what}: {error:?}"
        );
        assert_eq!(
            shop.placement.remembered_attempts().await.0,
            0,
            "{what} is remembered"
        );
    }

    // A checkout of an empty cart, then of a cart with nothing in stock.
    let buyer = world.user_without_cart().to_owned();
    let error = shop
        .placement
        .checkout(
            &ctx(),
            &user(&buyer),
            &key("empty-cart"),
            Channel::web(),
            None,
        )
        .await
        .expect_err("nothing to order");
    assert!(matches!(error, PlaceOrderError::Empty), "{error:?}");
    assert_eq!(shop.placement.remembered_attempts().await.0, 0);
    assert_eq!(shop.order_posts(), 0);

    // Only an attempt that reaches the order service is remembered.
    shop.add(&buyer, &regular, 1).await;
    let placed = shop
        .placement
        .checkout(
            &ctx(),
            &user(&buyer),
            &key("empty-cart"),
            Channel::web(),
            None,
        )
        .await
        .expect("the same key works once the cart has something");
    assert!(placed.created);
    let (entries, bytes) = shop.placement.remembered_attempts().await;
    assert_eq!(entries, 1);
    assert!(bytes > 0);
}

/// Answers `POST /orders` like the order service: the order of the body sent, `o-<key>`.
struct EchoOrder;

impl wiremock::Respond for EchoOrder {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .expect("idempotency key");
        let total: i64 = body["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|line| {
                line["unit_price"]["amount_minor"].as_i64().expect("price")
                    * line["quantity"].as_i64().expect("quantity")
            })
            .sum();
        wiremock::ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "id": format!("o-{key}"),
            "user_id": body["user_id"],
            "channel": body["channel"],
            "status": "pending",
            "lines": body["lines"],
            "total": { "amount_minor": total, "currency": "EUR" },
            "shipping_address": body["shipping_address"],
            "created_at": "2024-05-01T12:00:00Z",
            "updated_at": null
        }))
    }
}

/// A mock catalog (every product found) and order service (echoing [`EchoOrder`]).
async fn echo_server() -> wiremock::MockServer {
    use wiremock::{
        Mock, MockServer,
        matchers::{method, path},
    };
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(crate::helpers::BatchResponder::default())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(EchoOrder)
        .mount(&server)
        .await;
    server
}

/// Places an order of `lines` distinct products with `key`, shipped to an address of long fields.
async fn place_big(
    placement: &OrderPlacement,
    key_value: &str,
    lines: usize,
) -> Result<shared_clients::PlacedOrder, PlaceOrderError> {
    let partner = crate::helpers::partner("acme");
    let field = || Some("x".repeat(200));
    placement
        .place(
            &ctx(),
            &Owner::Partner(partner.clone()),
            &key(key_value),
            OrderRequest {
                customer: user("c-1"),
                channel: Channel::partner(partner),
                lines: crate::helpers::product_ids(1, lines)
                    .into_iter()
                    .map(|product_id| RequestedLine {
                        product_id,
                        quantity: 1,
                    })
                    .collect(),
                shipping_address: Some(Address {
                    name: field(),
                    line1: field(),
                    city: field(),
                    postal_code: field(),
                    country: Some("DE".into()),
                }),
            },
        )
        .await
}

#[tokio::test]
async fn remembered_attempts_stay_within_their_byte_budget_newest_kept() {
    let server = echo_server().await;
    let budget: u64 = 200 * 1024;
    let placement = OrderPlacement::new(
        crate::helpers::downstream(&server),
        &OrderPlacementConfig {
            max_bytes: budget,
            ..OrderPlacementConfig::default()
        },
    );
    let placed = 60;
    for n in 0..placed {
        place_big(&placement, &format!("big-{n}"), 100)
            .await
            .expect("placed");
        let (_, bytes) = placement.remembered_attempts().await;
        assert!(bytes <= budget, "{bytes} bytes after {n}");
    }
    let (entries, bytes) = placement.remembered_attempts().await;
    assert!(
        entries > 0 && entries < placed,
        "{entries} of {placed} remembered"
    );
    // Weighed by their size: each of these attempts holds two copies of 100 lines.
    assert!(bytes >= entries * 10_000, "{entries} entries weigh {bytes}");
    // The newest attempt is kept: its retry is answered without another order.
    let posts = || async {
        server
            .received_requests()
            .await
            .expect("recorded")
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count()
    };
    let before = posts().await;
    let retry = place_big(&placement, &format!("big-{}", placed - 1), 100)
        .await
        .expect("replayed");
    assert!(!retry.created);
    assert_eq!(posts().await, before);
}

#[tokio::test]
async fn max_remembered_still_bounds_how_many_attempts_are_kept() {
    let server = echo_server().await;
    let placement = OrderPlacement::new(
        crate::helpers::downstream(&server),
        &OrderPlacementConfig {
            max_remembered: 5,
            ..OrderPlacementConfig::default()
        },
    );
    for n in 0..12 {
        place_big(&placement, &format!("small-{n}"), 1)
            .await
            .expect("placed");
    }
    let (entries, _) = placement.remembered_attempts().await;
    assert!((1..=5).contains(&entries), "{entries}");
}

//! Private data: carts and orders are cached per owner only, concurrent reads coalesce per owner
//! and never across owners, and every write through the gateway invalidates the owner's entries,
//! so each user reads their own writes, also with 50 users hammering their carts at once.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use reference_services::{Config, ServiceKind, Spawned, spawn_all};
use shared_clients::{
    Cart, Channel, Downstream, DownstreamConfig, IdempotencyKey, NewOrder, OrderLine, OrderQuery,
    Owner, ProductId, ServiceConfig, UserId,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{cart_json, ctx, downstream, partner, product_id, user};

/// The reference services and a [`Downstream`] pointing at them.
async fn reference() -> (Spawned, Downstream) {
    let spawned = spawn_all(Config {
        products: 100,
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
    (spawned, downstream)
}

/// How many requests `service` received for `route`.
fn count(spawned: &Spawned, service: ServiceKind, route: &str) -> u64 {
    let stats = spawned.world.admin(service).stats();
    stats.requests.get(route).copied().unwrap_or(0)
}

/// The lines of a cart as product → quantity, to compare with what a user expects.
fn lines(cart: &Cart) -> BTreeMap<ProductId, u32> {
    cart.items
        .iter()
        .map(|item| (item.product_id.clone(), item.quantity))
        .collect()
}

/// One user's session: 100 requests mixing writes and reads of their own cart, checking every
/// answer against what the user's own writes must have produced.
async fn hammer(downstream: &Downstream, user: UserId, seed: u64) -> u32 {
    let carts = downstream.carts();
    let ctx = ctx();
    carts.clear(&ctx, &user).await.unwrap();
    let mut expected: BTreeMap<ProductId, u32> = BTreeMap::new();
    let mut state = seed;
    let mut reads = 0;
    for step in 0..99 {
        // A small deterministic generator per user: every user does something different.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let product = product_id(1 + (state >> 33) as usize % 5);
        let quantity = 1 + (state >> 40) as u32 % 3;
        if step % 3 != 0 {
            // Reads (two in a row every time, so the second one can come from the cache).
            let cart = carts.get(&ctx, &user).await.unwrap();
            assert_eq!(cart.user_id, user, "someone else's cart");
            assert_eq!(
                lines(&cart),
                expected,
                "{user} did not read their own writes"
            );
            reads += 1;
            continue;
        }
        let answer = match (state >> 50) % 3 {
            0 => {
                *expected.entry(product.clone()).or_default() += quantity;
                carts.add_item(&ctx, &user, &product, quantity, None).await
            }
            1 if expected.contains_key(&product) => {
                expected.insert(product.clone(), quantity);
                carts.set_quantity(&ctx, &user, &product, quantity).await
            }
            _ if expected.contains_key(&product) => {
                expected.remove(&product);
                carts.remove_item(&ctx, &user, &product).await
            }
            _ => {
                *expected.entry(product.clone()).or_default() += 1;
                carts.add_item(&ctx, &user, &product, 1, None).await
            }
        };
        let cart = answer.unwrap();
        assert_eq!(cart.user_id, user);
        assert_eq!(lines(&cart), expected);
    }
    reads
}

#[tokio::test]
async fn fifty_users_hammering_their_carts_never_see_each_others_data_and_read_their_own_writes() {
    let (spawned, downstream) = reference().await;
    let users: Vec<UserId> = spawned.world.users()[..50]
        .iter()
        .map(|id| user(id))
        .collect();
    let sessions = users
        .iter()
        .enumerate()
        .map(|(n, u)| hammer(&downstream, u.clone(), n as u64 + 1));
    let reads: u32 = join_all(sessions).await.into_iter().sum();
    assert_eq!(reads, 50 * 66);

    // Every read right after a write went to the service; the second read of each pair was
    // (barring a pause longer than the 2 s TTL between the two) answered from the user's own
    // cache entry.
    let metrics = downstream.metrics();
    let carts = metrics.cache("carts").unwrap();
    assert_eq!(carts.hits + carts.misses, u64::from(reads));
    assert_eq!(
        count(&spawned, ServiceKind::Cart, "GET /carts/{user_id}"),
        carts.misses
    );
    assert!(carts.hits >= 50 * 30, "{carts:?}");
}

#[tokio::test]
async fn a_cart_is_cached_for_its_user_and_a_write_invalidates_it_at_once() {
    let (spawned, downstream) = reference().await;
    let carts = downstream.carts();
    let u = user(spawned.world.user_without_cart());
    let p: ProductId = spawned.world.regular_product().parse().unwrap();
    assert!(carts.get(&ctx(), &u).await.unwrap().items.is_empty());
    assert!(carts.get(&ctx(), &u).await.unwrap().items.is_empty());
    assert_eq!(
        count(&spawned, ServiceKind::Cart, "GET /carts/{user_id}"),
        1
    );

    carts.add_item(&ctx(), &u, &p, 2, None).await.unwrap();
    let cart = carts.get(&ctx(), &u).await.unwrap();
    assert_eq!(cart.items[0].quantity, 2, "the user reads their write");
    carts.clear(&ctx(), &u).await.unwrap();
    assert!(carts.get(&ctx(), &u).await.unwrap().items.is_empty());
    assert_eq!(
        count(&spawned, ServiceKind::Cart, "GET /carts/{user_id}"),
        3
    );
}

#[tokio::test]
async fn concurrent_cart_reads_coalesce_per_user_and_never_across_users() {
    let server = MockServer::start().await;
    for id in ["u-0001", "u-0002"] {
        Mock::given(method("GET"))
            .and(path(format!("/carts/{id}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(cart_json(id, 1))
                    .set_delay(Duration::from_millis(200)),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    let downstream = downstream(&server);
    let (a, b) = (user("u-0001"), user("u-0002"));
    let ctx = ctx();
    let (downstream, ctx) = (&downstream, &ctx);
    let reads = (0..20).map(|n| {
        let who = if n % 2 == 0 { &a } else { &b };
        async move { (who, downstream.carts().get(ctx, who).await.unwrap()) }
    });
    for (who, cart) in join_all(reads).await {
        assert_eq!(&cart.user_id, who);
    }
}

#[tokio::test]
async fn orders_are_cached_per_owner_and_placing_an_order_invalidates_them() {
    let (spawned, downstream) = reference().await;
    let orders = downstream.orders();
    let world = &spawned.world;
    let u = user(world.user_without_cart());
    let owner = Owner::User(u.clone());
    let query = OrderQuery::default();
    assert!(
        orders
            .list(&ctx(), &owner, &query)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        orders
            .list(&ctx(), &owner, &query)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(count(&spawned, ServiceKind::Order, "GET /orders"), 1);

    // A partner whose id is spelled like the user is another owner, with its own entries.
    let look_alike = Owner::Partner(partner(u.as_str()));
    let _ = orders.list(&ctx(), &look_alike, &query).await;
    assert_eq!(count(&spawned, ServiceKind::Order, "GET /orders"), 2);

    let product_id: ProductId = world.regular_product().parse().unwrap();
    let product = downstream
        .catalog()
        .product(&ctx(), &product_id)
        .await
        .unwrap();
    let order = NewOrder {
        user_id: u.clone(),
        channel: Channel::web(),
        lines: vec![OrderLine {
            product_id,
            quantity: 1,
            unit_price: product.price.clone(),
        }],
        shipping_address: None,
    };
    let created = orders
        .create(&ctx(), &owner, &IdempotencyKey::generate(), &order)
        .await
        .unwrap();
    let listed = orders.list(&ctx(), &owner, &query).await.unwrap();
    assert_eq!(listed.items.len(), 1, "the new order shows at once");
    assert_eq!(listed.items[0].id, created.order.id);
    let read = orders.get(&ctx(), &owner, &created.order.id).await.unwrap();
    let again = orders.get(&ctx(), &owner, &created.order.id).await.unwrap();
    assert_eq!(read, again);
    assert_eq!(count(&spawned, ServiceKind::Order, "GET /orders"), 3);
    assert_eq!(
        count(&spawned, ServiceKind::Order, "GET /orders/{order_id}"),
        1
    );
}

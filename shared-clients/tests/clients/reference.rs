//! Every client operation end to end against the reference services (real HTTP, seeded data),
//! checked through their admin API: what reached them, with which headers.

use std::time::Duration;

use reference_services::{Config, FaultMode, ServiceKind, Spawned, spawn_all};
use shared_clients::{
    Channel, Creation, Downstream, DownstreamConfig, ErrorKind, IdempotencyKey, NewOrder,
    OrderLine, OrderQuery, OrderStatus, Owner, ProductQuery, RequestContext, RequestId,
    Revalidated, Service, ServiceConfig, TraceParent,
};

use crate::helpers::{ctx, order_id, partner, product_id, product_ids, user};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The reference services and a [`Downstream`] pointing at them.
struct Reference {
    /// The running services and their world (seeded data, admin state).
    spawned: Spawned,
    /// The clients under test.
    downstream: Downstream,
}

impl Reference {
    /// Starts the three services on port 0 and builds clients with `timeout`.
    async fn start_with_timeout(timeout: Duration) -> Self {
        let config = Config {
            products: 500,
            ..Config::default()
        };
        let spawned = spawn_all(config).await.expect("reference services start");
        let service = |url: &str| ServiceConfig {
            timeout,
            ..ServiceConfig::with_url(url)
        };
        let config = DownstreamConfig {
            product: service(&spawned.product_url),
            cart: service(&spawned.cart_url),
            order: service(&spawned.order_url),
            ..DownstreamConfig::default()
        };
        let downstream = Downstream::new(&config).expect("valid URLs");
        Self {
            spawned,
            downstream,
        }
    }

    async fn start() -> Self {
        Self::start_with_timeout(Duration::from_secs(5)).await
    }

    /// How many requests `service` received for `route` (e.g. `GET /products/{product_id}`).
    fn count(&self, service: ServiceKind, route: &str) -> u64 {
        let stats = self.spawned.world.admin(service).stats();
        stats.requests.get(route).copied().unwrap_or(0)
    }

    /// The requests `service` received, oldest first.
    fn requests(&self, service: ServiceKind) -> Vec<reference_services::admin::LoggedRequest> {
        self.spawned.world.admin(service).requests()
    }

    /// A line of `quantity` of `product` at its catalog price.
    async fn line(&self, product: &str, quantity: u32) -> OrderLine {
        let id = product.parse().expect("seeded ids are valid");
        let product = self
            .downstream
            .catalog()
            .product(&ctx(), &id)
            .await
            .expect("seeded product");
        OrderLine {
            product_id: id,
            quantity,
            unit_price: product.price.clone(),
        }
    }
}

fn traced() -> RequestContext {
    RequestContext::new()
        .with_request_id(RequestId::parse("req-ref-1").unwrap())
        .with_traceparent(TraceParent::parse(TRACEPARENT).unwrap())
}

#[tokio::test]
async fn catalog_reads_work_against_the_reference_product_service_and_are_cached() {
    let reference = Reference::start().await;
    let catalog = reference.downstream.catalog();
    let world = &reference.spawned.world;

    let id = world.regular_product().parse().unwrap();
    let product = catalog.product(&ctx(), &id).await.unwrap();
    assert_eq!(product.id, id);
    assert_eq!(product.price.currency, world.currency());
    let again = catalog.product(&ctx(), &id).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&product, &again));
    assert_eq!(
        reference.count(ServiceKind::Product, "GET /products/{product_id}"),
        1
    );

    let on_sale = catalog
        .product(&ctx(), &world.on_sale_product().parse().unwrap())
        .await
        .unwrap();
    assert!(on_sale.list_price.as_ref().unwrap().amount_minor > on_sale.price.amount_minor);

    let categories = catalog.categories(&ctx()).await.unwrap();
    assert_eq!(categories.len(), world.categories().len());
    catalog.categories(&ctx()).await.unwrap();
    assert_eq!(reference.count(ServiceKind::Product, "GET /categories"), 1);

    let missing = catalog
        .product(&ctx(), &product_id(99_999))
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(missing.service(), Service::Product);
}

#[tokio::test]
async fn catalog_pages_follow_their_cursors_and_filter() {
    let reference = Reference::start().await;
    let catalog = reference.downstream.catalog();
    let first = catalog
        .list(
            &ctx(),
            &ProductQuery {
                limit: Some(3),
                ..ProductQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    let cursor = first.next_cursor.clone().expect("more pages");
    let second = catalog
        .list(
            &ctx(),
            &ProductQuery {
                limit: Some(3),
                cursor: Some(cursor),
                ..ProductQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 3);
    assert!(second.items.iter().all(|p| !first.items.contains(p)));

    let category = first.items[0]
        .category_id
        .clone()
        .expect("seeded products have a category");
    let filtered = catalog
        .list(
            &ctx(),
            &ProductQuery {
                category: Some(category.clone()),
                q: Some(first.items[0].name.clone()),
                ..ProductQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(
        filtered
            .items
            .iter()
            .all(|p| p.category_id.as_ref() == Some(&category))
    );
    assert!(filtered.items.iter().any(|p| p.id == first.items[0].id));

    // Listed products are cached: reading one costs no call.
    catalog.product(&ctx(), &first.items[1].id).await.unwrap();
    assert_eq!(
        reference.count(ServiceKind::Product, "GET /products/{product_id}"),
        0
    );

    let err = catalog
        .list(
            &ctx(),
            &ProductQuery {
                cursor: Some("forged".to_owned()),
                ..ProductQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

#[tokio::test]
async fn a_batch_of_50_with_30_cached_asks_the_reference_service_for_only_the_other_20() {
    let reference = Reference::start().await;
    let catalog = reference.downstream.catalog();
    let ids = product_ids(1, 50);
    catalog.products(&ctx(), &ids[..30]).await.unwrap();
    let mut asked = ids[..50].to_vec();
    asked.push(product_id(99_999));
    let answer = catalog.products(&ctx(), &asked).await.unwrap();
    assert_eq!(answer.found.len(), 50);
    assert_eq!(answer.missing, [product_id(99_999)]);

    assert_eq!(reference.count(ServiceKind::Product, "GET /products"), 2);
    let log = reference.requests(ServiceKind::Product);
    let second = &log[1].query;
    let expected: Vec<String> = asked[30..].iter().map(ToString::to_string).collect();
    assert_eq!(second, &format!("ids={}", expected.join(",")));
}

#[tokio::test]
async fn two_hundred_and_fifty_ids_make_three_batch_calls_to_the_reference_service() {
    let reference = Reference::start().await;
    let found = reference
        .downstream
        .catalog()
        .products(&ctx(), &product_ids(1, 250))
        .await
        .unwrap();
    assert_eq!(found.found.len(), 250);
    assert_eq!(reference.count(ServiceKind::Product, "GET /products"), 3);
}

#[tokio::test]
async fn a_conditional_read_of_an_unchanged_product_is_not_modified() {
    let reference = Reference::start().await;
    let client = reference.downstream.catalog().client();
    let id = product_id(1);
    let fetched = client.get(&traced(), &id).await.unwrap();
    assert_eq!(
        fetched.cache_control.fresh_for(),
        Some(Duration::from_secs(30))
    );
    let etag = fetched.etag.expect("single products carry an ETag");
    let revalidated = client
        .get_if_none_match(&traced(), &id, &etag)
        .await
        .unwrap();
    assert!(
        matches!(revalidated, Revalidated::NotModified { .. }),
        "{revalidated:?}"
    );

    let log = reference.requests(ServiceKind::Product);
    assert_eq!(log[1].headers.get("if-none-match"), Some(&etag.to_string()));
    assert_eq!(
        log[1].headers.get("x-request-id").map(String::as_str),
        Some("req-ref-1")
    );
    assert_eq!(
        log[1].headers.get("traceparent").map(String::as_str),
        Some(TRACEPARENT)
    );
}

#[tokio::test]
async fn cart_operations_round_trip_against_the_reference_cart_service() {
    let reference = Reference::start().await;
    let carts = reference.downstream.carts();
    let world = &reference.spawned.world;
    let u = user(world.user_without_cart());
    let p = world.regular_product().parse().unwrap();
    let ctx = traced();

    let empty = carts.get(&ctx, &u).await.unwrap();
    assert_eq!((empty.version, empty.items.len()), (0, 0));

    let added = carts.add_item(&ctx, &u, &p, 2, Some(0)).await.unwrap();
    assert_eq!(added.items[0].quantity, 2);
    assert!(added.version > 0);

    let stale = carts.add_item(&ctx, &u, &p, 1, Some(0)).await.unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(stale.service(), Service::Cart);

    let too_many = carts.add_item(&ctx, &u, &p, 99, None).await.unwrap_err();
    assert_eq!(too_many.kind(), ErrorKind::Conflict);

    let invalid = carts.add_item(&ctx, &u, &p, 0, None).await.unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Invalid);
    assert!(invalid.problem().is_some());

    let set = carts.set_quantity(&ctx, &u, &p, 5).await.unwrap();
    assert_eq!(set.items[0].quantity, 5);
    let removed = carts.remove_item(&ctx, &u, &p).await.unwrap();
    assert!(removed.items.is_empty());
    let gone = carts.remove_item(&ctx, &u, &p).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);

    carts.add_item(&ctx, &u, &p, 1, None).await.unwrap();
    carts.clear(&ctx, &u).await.unwrap();
    let cleared = carts.get(&ctx, &u).await.unwrap();
    assert!(cleared.items.is_empty());
    assert!(cleared.version > set.version);

    let log = reference.requests(ServiceKind::Cart);
    assert!(
        log.iter()
            .all(|r| r.headers.get("x-user-id") == Some(&u.to_string()))
    );
    assert!(
        log.iter()
            .all(|r| r.headers.get("x-request-id").map(String::as_str) == Some("req-ref-1"))
    );
    assert_eq!(
        log[1].headers.get("if-match").map(String::as_str),
        Some("\"0\"")
    );
}

#[tokio::test]
async fn a_seeded_cart_reads_back() {
    let reference = Reference::start().await;
    let world = &reference.spawned.world;
    let u = user(world.user_with_cart());
    let cart = reference.downstream.carts().get(&ctx(), &u).await.unwrap();
    assert_eq!(cart.user_id, u);
    assert_eq!(cart.items.len(), world.cart(u.as_str()).items.len());
    assert!(!cart.items.is_empty());
}

#[tokio::test]
async fn user_orders_are_created_once_per_idempotency_key_read_back_and_listed() {
    let reference = Reference::start().await;
    let orders = reference.downstream.orders();
    let world = &reference.spawned.world;
    let u = user(world.user_without_cart());
    let owner = Owner::User(u.clone());
    let new_order = NewOrder {
        user_id: u.clone(),
        channel: Channel::mobile(),
        lines: vec![reference.line(world.regular_product(), 2).await],
        shipping_address: None,
    };
    let key = IdempotencyKey::generate();

    let created = orders
        .create(&traced(), &owner, &key, &new_order)
        .await
        .unwrap();
    assert_eq!(created.creation, Creation::Created);
    assert_eq!(
        created.order.total.amount_minor,
        2 * new_order.lines[0].unit_price.amount_minor
    );
    let replayed = orders
        .create(&traced(), &owner, &key, &new_order)
        .await
        .unwrap();
    assert_eq!(replayed.creation, Creation::Replayed);
    assert_eq!(replayed.order.id, created.order.id);

    let mut different = new_order.clone();
    different.lines[0].quantity = 3;
    let reused = orders
        .create(&ctx(), &owner, &key, &different)
        .await
        .unwrap_err();
    assert_eq!(reused.kind(), ErrorKind::Invalid);

    let read = orders.get(&ctx(), &owner, &created.order.id).await.unwrap();
    assert_eq!(read, created.order);
    let page = orders
        .list(&ctx(), &owner, &OrderQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items, std::slice::from_ref(&created.order));
    assert_eq!(page.next_cursor, None);

    let log = reference.requests(ServiceKind::Order);
    let creations: Vec<_> = log.iter().filter(|r| r.method == "POST").collect();
    assert!(
        creations
            .iter()
            .all(|r| r.headers.get("idempotency-key").map(String::as_str) == Some(key.as_str()))
    );
    assert!(
        log.iter()
            .all(|r| r.headers.get("x-user-id") == Some(&u.to_string()))
    );
    assert!(log.iter().all(|r| !r.headers.contains_key("x-partner-id")));
}

#[tokio::test]
async fn a_mixed_currency_order_is_invalid() {
    let reference = Reference::start().await;
    let world = &reference.spawned.world;
    let u = user(world.user_without_cart());
    let new_order = NewOrder {
        user_id: u.clone(),
        channel: Channel::web(),
        lines: vec![
            reference.line(world.regular_product(), 1).await,
            reference.line(world.foreign_currency_product(), 1).await,
        ],
        shipping_address: None,
    };
    let err = reference
        .downstream
        .orders()
        .create(
            &ctx(),
            &Owner::User(u),
            &IdempotencyKey::generate(),
            &new_order,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(err.status(), Some(422));
}

#[tokio::test]
async fn a_users_order_list_pages_with_cursors_and_filters_by_status() {
    let reference = Reference::start().await;
    let orders = reference.downstream.orders();
    let world = &reference.spawned.world;
    let owner = Owner::User(user(world.user_with_orders()));
    let seeded = world.user_orders(world.user_with_orders());

    let mut seen = Vec::new();
    let mut query = OrderQuery {
        limit: Some(2),
        ..OrderQuery::default()
    };
    loop {
        let page = orders.list(&ctx(), &owner, &query).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|o| o.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), seeded.len());

    let pending = orders
        .list(
            &ctx(),
            &owner,
            &OrderQuery {
                status: Some(OrderStatus::Pending),
                limit: Some(100),
                ..OrderQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(
        pending
            .items
            .iter()
            .all(|o| o.status == OrderStatus::Pending)
    );
}

#[tokio::test]
async fn partners_create_and_read_only_their_own_orders() {
    let reference = Reference::start().await;
    let orders = reference.downstream.orders();
    let world = &reference.spawned.world;
    let acme = partner(world.partner_with_orders());
    let other = partner(world.partner_without_orders());
    let new_order = NewOrder {
        user_id: user("customer-77"),
        channel: Channel::partner(acme.clone()),
        lines: vec![reference.line(world.regular_product(), 1).await],
        shipping_address: Some(shared_clients::Address {
            city: Some("Berlin".to_owned()),
            country: Some("DE".to_owned()),
            ..shared_clients::Address::default()
        }),
    };
    let acme_owner = Owner::Partner(acme.clone());
    let created = orders
        .create(&ctx(), &acme_owner, &IdempotencyKey::generate(), &new_order)
        .await
        .unwrap();
    assert_eq!(created.order.channel.partner_id, Some(acme.clone()));

    let read = orders
        .get(&ctx(), &acme_owner, &created.order.id)
        .await
        .unwrap();
    assert_eq!(read.id, created.order.id);
    let hidden = orders
        .get(&ctx(), &Owner::Partner(other.clone()), &created.order.id)
        .await
        .unwrap_err();
    assert_eq!(hidden.kind(), ErrorKind::NotFound);

    let forbidden = orders
        .create(
            &ctx(),
            &Owner::Partner(other),
            &IdempotencyKey::generate(),
            &new_order,
        )
        .await
        .unwrap_err();
    assert_eq!(forbidden.kind(), ErrorKind::Forbidden);

    let page = orders
        .list(
            &ctx(),
            &acme_owner,
            &OrderQuery {
                limit: Some(100),
                ..OrderQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(
        page.items
            .iter()
            .all(|o| o.channel.partner_id.as_ref() == Some(&acme))
    );

    let unknown = orders
        .get(&ctx(), &acme_owner, &order_id("o-does-not-exist"))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);

    let log = reference.requests(ServiceKind::Order);
    assert!(log.iter().all(|r| !r.headers.contains_key("x-user-id")));
}

#[tokio::test]
async fn readiness_is_reported_per_service_and_notices_a_down_or_failing_one() {
    let reference = Reference::start().await;
    let report = reference.downstream.check_ready().await;
    assert!(report.is_ready(), "{report:?}");

    reference
        .spawned
        .world
        .admin(ServiceKind::Cart)
        .set_mode(FaultMode::Down);
    reference
        .spawned
        .world
        .admin(ServiceKind::Order)
        .set_mode(FaultMode::Failing);
    let report = reference.downstream.check_ready().await;
    assert!(!report.is_ready());
    for check in &report.checks {
        match check.service {
            Service::Product => assert!(check.result.is_ok()),
            Service::Cart | Service::Order => {
                let err = check.result.as_ref().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{:?}", check.service);
            }
        }
    }
}

#[tokio::test]
async fn a_down_service_is_unavailable_and_a_slow_one_times_out() {
    let reference = Reference::start_with_timeout(Duration::from_millis(300)).await;
    let world = &reference.spawned.world;
    world.admin(ServiceKind::Product).set_mode(FaultMode::Down);
    let down = reference
        .downstream
        .catalog()
        .categories(&ctx())
        .await
        .unwrap_err();
    assert_eq!(down.kind(), ErrorKind::Unavailable);
    assert_eq!(down.service(), Service::Product);

    world.admin(ServiceKind::Cart).set_mode(FaultMode::Slow);
    let slow = reference
        .downstream
        .carts()
        .get(&ctx(), &user(world.user_with_cart()))
        .await
        .unwrap_err();
    assert_eq!(slow.kind(), ErrorKind::Timeout);
    assert_eq!(slow.service(), Service::Cart);
}

//! Changes from outside the gateways, over HTTP, as the gateways see them (events aside, see
//! `events`): back-office changes of products and categories, order statuses moved by the
//! warehouse and by the fulfilment clock, and the changes the admin API refuses.

use std::time::Duration;

use reference_services::{Config, FaultMode, ServiceKind, order::OrderStatus, spawn_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ids, spawn_app};

#[tokio::test]
async fn a_changed_product_is_served_changed_with_a_new_etag_at_the_top_of_the_listing() {
    let app = spawn_app().await;
    let id = app.world().regular_product().to_owned();
    let before = app.product(&id).await;
    let old_etag = before.header("etag").to_owned();
    let changed = app
        .change_product(
            &id,
            &json!({
                "price": { "amount_minor": 4_200, "currency": "EUR" },
                "available": 3,
                "name": "Aurora Kettle II",
            }),
        )
        .await;
    changed.assert_status(StatusCode::OK);
    assert_eq!(changed.header("cache-control"), "no-store");

    let after = app.product(&id).await;
    after.assert_status(StatusCode::OK);
    assert_eq!(after.body, changed.body);
    assert_eq!(after.body["price"]["amount_minor"], 4_200);
    assert_eq!(
        after.body["inventory"],
        json!({ "available": 3, "status": "low_stock" })
    );
    assert_eq!(after.body["name"], "Aurora Kettle II");
    assert!(after.body["updated_at"].as_str() > before.body["updated_at"].as_str());
    assert_ne!(after.header("etag"), old_etag);
    // A cache holding the old copy revalidates to the new one, not to a 304.
    let revalidated = app
        .get(ServiceKind::Product, &format!("/products/{id}"))
        .header("if-none-match", &old_etag)
        .send()
        .await;
    revalidated.assert_status(StatusCode::OK);
    assert_eq!(revalidated.body, after.body);
    assert!(revalidated.header("cache-control").contains("max-age="));
    app.get(ServiceKind::Product, &format!("/products/{id}"))
        .header("if-none-match", after.header("etag"))
        .send()
        .await
        .assert_status(StatusCode::NOT_MODIFIED);
    // Newest first: the changed product leads the listing; `q` finds it by its new name.
    assert_eq!(ids(&app.products("limit=1").await.body), [id.as_str()]);
    assert_eq!(
        ids(&app.products("q=kettle%20ii&limit=100").await.body),
        [id.as_str()]
    );
    // Batches serve the new copy too.
    let batch = app.products(&format!("ids={id}")).await;
    assert_eq!(batch.body["items"][0], after.body);
}

#[tokio::test]
async fn a_product_moved_to_another_category_is_listed_there_only() {
    let app = spawn_app().await;
    let id = app.world().regular_product().to_owned();
    let from = app
        .world()
        .product(&id)
        .expect("seeded")
        .category_id
        .clone();
    let to = if from == "c-garden" {
        "c-kitchen"
    } else {
        "c-garden"
    };
    app.change_product(&id, &json!({ "category_id": to }))
        .await
        .assert_status(StatusCode::OK);
    let there = app.products(&format!("category={to}&limit=100")).await;
    assert_eq!(ids(&there.body).first(), Some(&id));
    let listed_before = app.products(&format!("category={from}&limit=100")).await;
    assert!(!ids(&listed_before.body).contains(&id));
}

#[tokio::test]
async fn a_sale_can_start_and_end() {
    let app = spawn_app().await;
    let id = app.world().regular_product().to_owned();
    let price = app.world().product(&id).expect("seeded").price;
    let sale = json!({ "amount_minor": price.amount_minor + 1_000, "currency": price.currency });
    let started = app
        .change_product(&id, &json!({ "list_price": sale }))
        .await;
    started.assert_status(StatusCode::OK);
    assert_eq!(started.body["list_price"], sale);
    let ended = app
        .change_product(&id, &json!({ "list_price": null }))
        .await;
    ended.assert_status(StatusCode::OK);
    assert_eq!(ended.body["list_price"], Value::Null);
}

#[tokio::test]
async fn a_deleted_product_is_404_missing_from_batches_and_gone_from_listings() {
    let app = spawn_app().await;
    let id = app.world().on_sale_product().to_owned();
    let before = app.product(&id).await;
    let category = before.body["category_id"]
        .as_str()
        .expect("a category")
        .to_owned();
    let reply = app.delete_product(&id).await;
    reply.assert_status(StatusCode::NO_CONTENT);
    app.product(&id).await.assert_status(StatusCode::NOT_FOUND);
    // Even for a cache revalidating the copy it holds.
    app.get(ServiceKind::Product, &format!("/products/{id}"))
        .header("if-none-match", before.header("etag"))
        .send()
        .await
        .assert_status(StatusCode::NOT_FOUND);
    let batch = app.products(&format!("ids={id},p-00001")).await;
    assert_eq!(batch.body["missing"], json!([id]));
    let listed = app
        .products(&format!("category={category}&limit=100"))
        .await;
    assert!(!ids(&listed.body).contains(&id));
    assert!(app.world().product(&id).is_none());
    app.change_product(&id, &json!({ "available": 1 }))
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_renamed_category_is_listed_with_its_new_name() {
    let app = spawn_app().await;
    app.rename_category("c-coffee", "Coffee")
        .await
        .assert_status(StatusCode::OK);
    let categories = app.get(ServiceKind::Product, "/categories").send().await;
    let coffee = categories.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|category| category["id"] == "c-coffee")
        .cloned();
    assert_eq!(
        coffee,
        Some(json!({ "id": "c-coffee", "name": "Coffee", "parent_id": "c-grocery" }))
    );
    assert!(
        app.world()
            .categories()
            .iter()
            .any(|category| category.name == "Coffee")
    );
}

#[tokio::test]
async fn back_office_changes_that_cannot_be_made_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.world().regular_product().to_owned();
    let before = app.product(&id).await;
    let eur = |amount: i64| json!({ "amount_minor": amount, "currency": "EUR" });
    let price = before.body["price"]["amount_minor"]
        .as_i64()
        .expect("a price");
    for (change, status) in [
        (json!({ "prise": eur(1) }), StatusCode::BAD_REQUEST),
        (
            json!({ "price": { "amount_minor": 1, "currency": "eur" } }),
            StatusCode::BAD_REQUEST,
        ),
        (json!({ "price": eur(-1) }), StatusCode::BAD_REQUEST),
        (json!({ "available": -1 }), StatusCode::BAD_REQUEST),
        (json!({ "available": 2.5 }), StatusCode::BAD_REQUEST),
        (json!({ "name": "  " }), StatusCode::BAD_REQUEST),
        (json!({ "name": 7 }), StatusCode::BAD_REQUEST),
        (json!({ "category_id": "no such" }), StatusCode::BAD_REQUEST),
        (
            json!({ "category_id": "c-nowhere" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "list_price": { "amount_minor": price + 100, "currency": "USD" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "list_price": eur(price) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!([]), StatusCode::BAD_REQUEST),
    ] {
        app.change_product(&id, &change).await.assert_status(status);
    }
    // Integers may be written as 26.0, as everywhere in the contract.
    app.change_product(&id, &json!({ "available": 26.0 }))
        .await
        .assert_status(StatusCode::OK);
    let after = app.product(&id).await;
    assert_eq!(after.body["inventory"]["available"], 26);
    let mut unchanged = after.body.clone();
    unchanged["inventory"] = before.body["inventory"].clone();
    unchanged["updated_at"] = before.body["updated_at"].clone();
    assert_eq!(unchanged, before.body, "only the accepted change was made");

    app.change_product("p-99999", &json!({ "available": 1 }))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.change_product("not an id", &json!({ "available": 1 }))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.request(
        Method::PATCH,
        ServiceKind::Product,
        &format!("/__admin/products/{id}"),
    )
    .body("text/plain", "available=1")
    .send()
    .await
    .assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.rename_category("c-nowhere", "Nowhere")
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.rename_category("c-coffee", "")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.request(
        Method::POST,
        ServiceKind::Order,
        "/__admin/orders/o-0000001/status",
    )
    .json(&json!({ "status": "shipped", "by": "truck" }))
    .send()
    .await
    .assert_status(StatusCode::BAD_REQUEST);
    app.set_order_status("o-9999999", "shipped")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn orders_move_along_their_lifecycle_only() {
    let app = spawn_app().await;
    let world = app.world();
    let partner = world.partner_with_orders().to_owned();
    let orders = world.partner_orders(&partner);
    let of = |status: OrderStatus| {
        orders
            .iter()
            .find(|order| order.status == status)
            .map(|order| order.id.clone())
            .unwrap_or_else(|| panic!("a {status} order"))
    };
    for (from, to, expected) in [
        (OrderStatus::Pending, "shipped", StatusCode::CONFLICT),
        (OrderStatus::Pending, "pending", StatusCode::CONFLICT),
        (OrderStatus::Confirmed, "cancelled", StatusCode::OK),
        (OrderStatus::Shipped, "cancelled", StatusCode::CONFLICT),
        (OrderStatus::Shipped, "delivered", StatusCode::OK),
        (OrderStatus::Delivered, "pending", StatusCode::CONFLICT),
        (OrderStatus::Cancelled, "confirmed", StatusCode::CONFLICT),
    ] {
        let id = of(from);
        let reply = app.set_order_status(&id, to).await;
        assert_eq!(reply.status, expected, "{from} → {to}: {}", reply.body);
        let now = world.orders().get(&id).map(|order| order.status);
        if expected == StatusCode::OK {
            assert_eq!(now.map(OrderStatus::as_str), Some(to));
        } else {
            assert_eq!(now, Some(from), "a refused move changes nothing");
            assert!(
                reply.body["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains(from.as_str())),
                "{}",
                reply.body
            );
        }
    }
}

#[tokio::test]
async fn admin_changes_are_answered_whatever_the_faults() {
    let app = spawn_app().await;
    app.world()
        .admin(ServiceKind::Product)
        .set_mode(FaultMode::Failing);
    app.change_product(app.world().regular_product(), &json!({ "available": 9 }))
        .await
        .assert_status(StatusCode::OK);
    app.world()
        .admin(ServiceKind::Order)
        .set_mode(FaultMode::Down);
    let advanced = app
        .request(Method::POST, ServiceKind::Order, "/__admin/orders/advance")
        .send()
        .await;
    advanced.assert_status(StatusCode::OK);
    assert!(advanced.body["advanced"].as_u64() > Some(0));
    // And they are not counted as requests.
    assert_eq!(app.stats(ServiceKind::Product).await["total"], 0);
}

/// Every order of the world (users' and partners'), by id, with its status.
fn statuses(world: &reference_services::World) -> Vec<(String, OrderStatus)> {
    let mut all: Vec<(String, OrderStatus)> = world
        .users()
        .iter()
        .flat_map(|user| world.user_orders(user))
        .chain(
            world
                .partners()
                .iter()
                .flat_map(|partner| world.partner_orders(partner)),
        )
        .map(|order| (order.id, order.status))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test(start_paused = true)]
async fn the_fulfilment_clock_moves_every_open_order_one_step_per_tick() {
    let services = spawn_all(Config {
        products: 100,
        users: 30,
        advance_orders_every: Some(Duration::from_secs(30)),
        ..Config::default()
    })
    .await
    .expect("the services start");
    let world = services.world.clone();
    // Let the order service start serving (and its clock ticking) before time moves.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let seeded = statuses(&world);
    let expected: Vec<(String, OrderStatus)> = seeded
        .iter()
        .map(|(id, status)| (id.clone(), status.next().unwrap_or(*status)))
        .collect();
    assert_ne!(seeded, expected, "some orders are open");

    tokio::time::advance(Duration::from_secs(29)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        statuses(&world),
        seeded,
        "nothing moves before the first tick"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..100 {
        if statuses(&world) != seeded {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        statuses(&world),
        expected,
        "one step each, finished ones stay"
    );

    // Three more ticks deliver everything that was not cancelled.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(30)).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        statuses(&world)
            .iter()
            .all(|(_, status)| matches!(status, OrderStatus::Delivered | OrderStatus::Cancelled))
    );
    services.shutdown().await;
}

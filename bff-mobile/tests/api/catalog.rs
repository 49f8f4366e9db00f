//! The product list and product detail screens.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::Path;

use reference_services::ServiceKind;

use crate::helpers::{advance, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_product_list_is_compact_and_snapshotted() {
    let app = spawn_app().await;
    let answer = app.products("?limit=5").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "application/json");
    let body = answer.json();
    assert_eq!(body["currency"], "EUR");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    for item in items {
        let image = item["image"].as_str().expect("one image URL per product");
        assert!(
            image.ends_with("-300.jpg"),
            "160 css px → the 300 rendition: {image}"
        );
        assert!(item.get("images").is_none());
        assert!(item.get("currency").is_none(), "stated once per payload");
    }
    assert!(body["next"].is_string());
    let mut redacted = body.clone();
    redacted["next"] = "[cursor: signed per run]".into();
    insta::assert_json_snapshot!("product_list", redacted);
}

#[tokio::test]
async fn the_product_list_is_at_most_30_percent_of_the_downstream_json() {
    let app = spawn_app().await;
    let downstream = reqwest::get(format!("{}/products?limit=20", app.downstream.product_url))
        .await
        .expect("downstream")
        .bytes()
        .await
        .expect("body");
    let mobile = app.products("?limit=20").await;
    assert_eq!(mobile.status, 200);
    assert_eq!(
        mobile.header("content-encoding"),
        "",
        "compare uncompressed bytes"
    );
    let ratio = mobile.bytes.len() as f64 / downstream.len() as f64;
    println!(
        "product list: {} bytes from {} downstream bytes = {:.1}%",
        mobile.bytes.len(),
        downstream.len(),
        ratio * 100.0
    );
    assert!(ratio <= 0.30, "ratio {ratio:.3}");
}

#[tokio::test]
async fn the_product_list_pages_with_a_cursor_and_filters_by_category_and_text() {
    let app = spawn_app().await;
    let first = app.products("?limit=3").await.json();
    let next = first["next"].as_str().expect("next");
    let second = app
        .products(&format!("?limit=3&cursor={next}"))
        .await
        .json();
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);

    let category = app.world().categories()[0].id.clone();
    let page = app
        .products(&format!("?category={category}&limit=50"))
        .await;
    assert_eq!(page.status, 200);
    for item in page.json()["items"].as_array().expect("items") {
        let product = app
            .world()
            .product(item["id"].as_str().expect("id"))
            .expect("seeded");
        assert_eq!(product.category_id, category);
    }

    let nothing = app.products("?q=zzzz-no-such-product").await;
    assert_eq!(nothing.status, 200);
    assert_eq!(
        nothing.json(),
        serde_json::json!({}),
        "no empty arrays, no nulls"
    );
}

#[tokio::test]
async fn the_image_follows_the_w_parameter_and_the_client_hints() {
    let app = spawn_app().await;
    let id = app.world().regular_product().to_owned();
    let image = |answer: crate::helpers::Answer| {
        answer.json()["image"]
            .as_str()
            .expect("image")
            .rsplit('-')
            .next()
            .expect("suffix")
            .to_owned()
    };
    assert_eq!(
        image(app.product(&id).await),
        "600.jpg",
        "400 css px default"
    );
    assert_eq!(
        image(app.get(&format!("/products/{id}?w=90"), None).await),
        "100.jpg"
    );
    let dpr3 = app
        .send(
            app.request(reqwest::Method::GET, &format!("/products/{id}?w=150"), None)
                .header("DPR", "3"),
        )
        .await;
    assert_eq!(image(dpr3), "600.jpg", "150 × 3 = 450 → 600");
    let width = app
        .send(
            app.request(reqwest::Method::GET, &format!("/products/{id}"), None)
                .header("Width", "1000"),
        )
        .await;
    assert_eq!(image(width), "1200.jpg");
}

#[tokio::test]
async fn the_product_detail_is_snapshotted_for_a_regular_and_a_sale_product() {
    let app = spawn_app().await;
    let regular = app.product(app.world().regular_product()).await;
    assert_eq!(regular.status, 200);
    insta::assert_json_snapshot!("product_detail_regular", regular.json());
    let sale = app.product(app.world().on_sale_product()).await.json();
    assert!(sale["was"].as_i64() > sale["price"].as_i64(), "{sale}");
    insta::assert_json_snapshot!("product_detail_on_sale", sale);
    let out = app.product(app.world().out_of_stock_product()).await.json();
    assert_eq!(out["stock"], "out");
    assert_eq!(out["stock_text"], "Out of stock");
}

#[tokio::test]
async fn an_unknown_product_is_a_404_problem() {
    let app = spawn_app().await;
    app.product("p-does-not-exist")
        .await
        .assert_problem(404, "product_not_found");
}

#[tokio::test]
async fn a_product_served_stale_while_the_service_is_down_is_marked_and_not_cached_publicly() {
    let app = spawn_app_with(|settings| {
        settings.downstream.cache.max_ttl = Duration::from_secs(1);
        settings.downstream.cache.stale_while_revalidate = Duration::ZERO;
        settings.downstream.cache.stale_if_error = Duration::from_secs(3600);
    })
    .await;
    let id = app.world().regular_product().to_owned();
    let fresh = app.product(&id).await;
    assert_eq!(fresh.status, 200);
    assert!(fresh.json().get("stale").is_none());

    app.take_down(ServiceKind::Product);
    advance(Duration::from_secs(5)).await;
    let stale = app.product(&id).await;
    assert_eq!(
        stale.status,
        200,
        "{}",
        String::from_utf8_lossy(&stale.bytes)
    );
    let body = stale.json();
    assert_eq!(body["stale"], serde_json::json!(["product"]));
    assert_eq!(body["name"], fresh.json()["name"]);
    assert_eq!(stale.header("cache-control"), "no-cache");
}

#[tokio::test]
async fn the_request_id_and_traceparent_are_propagated_downstream() {
    let app = spawn_app().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = app
        .send(
            app.request(reqwest::Method::GET, "/products?limit=1", None)
                .header("x-request-id", "mobile-req-42")
                .header("traceparent", traceparent),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-request-id"), "mobile-req-42");
    let logged = app.world().admin(ServiceKind::Product).requests();
    let list = logged
        .iter()
        .find(|request| request.route == "/products")
        .expect("the list call");
    assert_eq!(
        list.headers.get("x-request-id").map(String::as_str),
        Some("mobile-req-42")
    );
    assert_eq!(
        list.headers.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
}

/// A product service whose one product can be renamed while the gateway runs.
async fn renaming_product_service(name: Arc<Mutex<&'static str>>) -> String {
    let app = axum::Router::new().route(
        "/products/{id}",
        axum::routing::get(move |Path(id): Path<String>| {
            let name = *name.lock().expect("lock");
            async move {
                (
                    [("cache-control", "max-age=1")],
                    axum::Json(serde_json::json!({
                        "id": id,
                        "sku": "SKU-1",
                        "name": name,
                        "price": { "amount_minor": 1999, "currency": "EUR" },
                        "inventory": { "available": 3, "status": "in_stock" },
                        "updated_at": "2026-12-01T00:00:00Z",
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_product_changed_at_the_service_shows_once_the_cache_refreshes_it() {
    let name = Arc::new(Mutex::new("Lamp"));
    let product_url = renaming_product_service(Arc::clone(&name)).await;
    let app = spawn_app_with(|settings| {
        settings.downstream.product.url = product_url;
        settings.downstream.cache.stale_while_revalidate = Duration::ZERO;
    })
    .await;

    let first = app.product("p-00001").await;
    assert_eq!(first.json()["name"], "Lamp");
    assert_eq!(app.product("p-00001").await.json()["name"], "Lamp");

    *name.lock().expect("lock") = "Desk lamp";
    assert_eq!(
        app.product("p-00001").await.json()["name"],
        "Lamp",
        "still fresh in the cache"
    );
    advance(Duration::from_secs(2)).await;
    let refreshed = app.product("p-00001").await;
    assert_eq!(refreshed.json()["name"], "Desk lamp");
    assert_ne!(refreshed.header("etag"), first.header("etag"));
}

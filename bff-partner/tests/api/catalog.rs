//! Products and categories, in both versions.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{VERSIONS, assert_problem, header, spawn_app};

#[tokio::test]
async fn products_are_listed_page_by_page_following_the_next_link() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let path = format!("/{version}/products");
        let first = app.get(&format!("{path}?limit=2")).await;
        assert_eq!(first.status(), StatusCode::OK);
        let link = header(first.headers(), "link").to_owned();
        let body: Value = first.json().await.expect("json");
        app.assert_documented(version, "get", &path, StatusCode::OK, &body)
            .await;
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 2);
        let cursor = body["next_cursor"].as_str().expect("a next cursor");
        assert!(link.contains("rel=\"next\""), "{link}");
        assert!(link.contains(&format!("cursor={cursor}")), "{link}");
        assert!(link.contains("limit=2"), "{link}");

        let next = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("link target")
            .to_owned();
        assert!(next.starts_with(&format!("/{version}/products?")), "{next}");
        let second: Value = app.get(&next).await.json().await.expect("json");
        let second_items = second["items"].as_array().expect("items");
        assert_eq!(second_items.len(), 2);
        assert_ne!(second_items[0]["id"], items[0]["id"]);
        assert_ne!(second_items[0]["id"], items[1]["id"]);
    }
}

#[tokio::test]
async fn products_can_be_filtered_by_category() {
    let app = spawn_app().await;
    let world = &app.services.world;
    let category = world
        .product(world.regular_product())
        .expect("product")
        .category_id
        .clone();
    let response = app
        .get(&format!("/v2/products?category={category}&limit=5"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let items = body["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|item| item["category_id"] == category.as_str())
    );
    let v1: Value = app
        .get(&format!("/v1/products?category={category}&limit=5"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v1["items"][0]["id"], items[0]["id"]);
}

#[tokio::test]
async fn a_product_is_shown_in_each_versions_shape() {
    let app = spawn_app().await;
    let world = &app.services.world;
    let id = world.regular_product();
    let seeded = world.product(id).expect("product");

    let v1 = app.get(&format!("/v1/products/{id}")).await;
    assert_eq!(v1.status(), StatusCode::OK);
    let v1: Value = v1.json().await.expect("json");
    app.assert_documented(
        "v1",
        "get",
        "/v1/products/{product_id}",
        StatusCode::OK,
        &v1,
    )
    .await;
    let minor = seeded.price.amount_minor;
    assert_eq!(v1["price"], format!("{}.{:02}", minor / 100, minor % 100));
    assert_eq!(v1["currency"], seeded.price.currency.as_str());
    assert_eq!(v1["in_stock"], true);
    assert!(v1.get("images").is_none());

    let v2 = app.get(&format!("/v2/products/{id}")).await;
    assert_eq!(v2.status(), StatusCode::OK);
    let v2: Value = v2.json().await.expect("json");
    app.assert_documented(
        "v2",
        "get",
        "/v2/products/{product_id}",
        StatusCode::OK,
        &v2,
    )
    .await;
    assert_eq!(v2["price"]["amount_minor"], minor);
    assert_eq!(v2["price"]["currency"], seeded.price.currency.as_str());
    assert_eq!(v2["availability"]["quantity"], seeded.inventory.available);
    assert_eq!(v2["category_id"], seeded.category_id.as_str());
    assert!(v2["images"].is_array());

    let out = world.out_of_stock_product();
    let v1: Value = app
        .get(&format!("/v1/products/{out}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v1["in_stock"], false);
    let v2: Value = app
        .get(&format!("/v2/products/{out}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v2["availability"]["status"], "out_of_stock");
    assert_eq!(v2["availability"]["quantity"], 0);
}

#[tokio::test]
async fn an_unknown_product_is_a_404_problem() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let response = app.get(&format!("/{version}/products/p-99999999")).await;
        let (body, _) = assert_problem(response, StatusCode::NOT_FOUND, version, "not-found").await;
        app.assert_documented(
            version,
            "get",
            &format!("/{version}/products/{{product_id}}"),
            StatusCode::NOT_FOUND,
            &body,
        )
        .await;
    }
}

#[tokio::test]
async fn categories_are_listed() {
    let app = spawn_app().await;
    let expected = app.services.world.categories().len();
    for version in VERSIONS {
        let path = format!("/{version}/categories");
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        app.assert_documented(version, "get", &path, StatusCode::OK, &body)
            .await;
        assert_eq!(body["items"].as_array().expect("items").len(), expected);
    }
}

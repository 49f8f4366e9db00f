//! Catalog queries work anonymously.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_product_is_resolved_with_prices_availability_images_and_category() {
    let app = spawn_app().await;
    let id = app.services.world.on_sale_product().to_owned();
    let answer = app
        .query(
            r#"query($id: ID!) { product(id: $id) {
                id name brand description sku
                price { amountMinor amount currency formatted }
                listPrice { formatted } discountPercentage
                availability { status quantity }
                rating { average count }
                images { url width } small: image(width: 100) { width } image { width }
                category { id name parent { id } }
            } }"#,
            json!({ "id": id }),
            None,
        )
        .await;
    answer.assert_ok();
    let product = answer.data("/product");
    assert_eq!(product["id"], id.as_str());
    assert!(
        product["price"]["formatted"]
            .as_str()
            .unwrap()
            .starts_with('€')
    );
    assert!(
        product["listPrice"]["formatted"].is_string(),
        "on sale: {product}"
    );
    assert!(product["discountPercentage"].as_i64().unwrap() > 0);
    assert!(product["category"]["name"].is_string());
    let widths: Vec<i64> = product["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["width"].as_i64().unwrap())
        .collect();
    if let Some(max) = widths.iter().max() {
        assert_eq!(product["image"]["width"].as_i64(), Some(*max));
        let small = product["small"]["width"].as_i64().unwrap();
        assert!(small >= 100 && widths.iter().all(|w| *w < 100 || *w >= small));
    }
}

#[tokio::test]
async fn an_unknown_product_is_null_with_not_found() {
    let app = spawn_app().await;
    let answer = app
        .query(r#"{ product(id: "p-99999999") { id } }"#, json!({}), None)
        .await;
    assert_eq!(answer.data("/product"), &serde_json::Value::Null);
    assert_eq!(answer.codes(), ["NOT_FOUND"]);
}

#[tokio::test]
async fn products_page_forward_with_cursors_and_filter_by_category_and_search() {
    let app = spawn_app().await;
    let first = app
        .query(
            "{ products(first: 3) { nodes { id } edges { node { id } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
            None,
        )
        .await;
    first.assert_ok();
    assert_eq!(first.data("/products/nodes").as_array().unwrap().len(), 3);
    assert_eq!(first.data("/products/pageInfo/hasNextPage"), true);
    let cursor = first
        .data("/products/pageInfo/endCursor")
        .as_str()
        .unwrap()
        .to_owned();
    let second = app
        .query(
            "query($after: String) { products(first: 3, after: $after) { nodes { id } } }",
            json!({ "after": cursor }),
            None,
        )
        .await;
    second.assert_ok();
    assert_ne!(
        second.data("/products/nodes/0/id"),
        first.data("/products/nodes/0/id")
    );

    let category = app
        .services
        .world
        .product("p-00001")
        .expect("seeded")
        .category_id
        .clone();
    let filtered = app
        .query(
            "query($c: ID) { products(first: 10, categoryId: $c) { nodes { category { id } } } }",
            json!({ "c": category }),
            None,
        )
        .await;
    filtered.assert_ok();
    for node in filtered.data("/products/nodes").as_array().unwrap() {
        assert_eq!(node["category"]["id"], category.as_str());
    }

    let name = app
        .services
        .world
        .product("p-00001")
        .map(|p| p.brand.clone())
        .unwrap();
    let searched = app
        .query(
            "query($q: String) { products(first: 5, search: $q) { nodes { brand } } }",
            json!({ "q": name.to_lowercase() }),
            None,
        )
        .await;
    searched.assert_ok();
    assert!(
        !searched
            .data("/products/nodes")
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn categories_form_a_tree() {
    let app = spawn_app().await;
    let answer = app
        .query(
            "{ categories { id parent { id } children { id parent { id } } } }",
            json!({}),
            None,
        )
        .await;
    answer.assert_ok();
    let categories = answer.data("/categories").as_array().unwrap();
    assert_eq!(categories.len(), app.services.world.categories().len());
    for category in categories {
        for child in category["children"].as_array().unwrap() {
            assert_eq!(child["parent"]["id"], category["id"]);
        }
    }
}

#[tokio::test]
async fn a_page_size_above_100_is_bad_user_input() {
    let app = spawn_app().await;
    let answer = app
        .query("{ products(first: 101) { nodes { id } } }", json!({}), None)
        .await;
    assert_eq!(answer.codes(), ["BAD_USER_INPUT"]);
    assert_eq!(answer.body["errors"][0]["extensions"]["argument"], "first");
}

#[tokio::test]
async fn a_category_lists_its_own_products() {
    let app = spawn_app().await;
    let category = app
        .services
        .world
        .product("p-00001")
        .expect("seeded")
        .category_id
        .clone();
    let answer = app
        .query(
            "query($id: ID!) { category(id: $id) { id name products(first: 3) { nodes { category { id } } } } }",
            json!({ "id": category }),
            None,
        )
        .await;
    answer.assert_ok();
    for node in answer.data("/category/products/nodes").as_array().unwrap() {
        assert_eq!(node["category"]["id"], category.as_str());
    }
    let unknown = app
        .query(r#"{ category(id: "c-nope") { id } }"#, json!({}), None)
        .await;
    assert_eq!(unknown.codes(), ["NOT_FOUND"]);
}

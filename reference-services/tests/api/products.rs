//! The product service: reads, conditional reads, batches, listing, cursors, limits, categories.

use std::collections::HashSet;

use reference_services::ServiceKind;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{CATEGORY_LIST, PRODUCT, encode, ids, spawn_app};

#[tokio::test]
async fn a_product_read_carries_an_etag_and_public_max_age() {
    let app = spawn_app().await;
    let reply = app.product("p-00001").await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["id"], "p-00001");
    assert_eq!(reply.header("cache-control"), "public, max-age=30");
    let etag = reply.header("etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    // Same product, same tag.
    assert_eq!(app.product("p-00001").await.header("etag"), etag);
    assert_ne!(app.product("p-00002").await.header("etag"), etag);
}

#[tokio::test]
async fn max_age_follows_the_config() {
    let app = crate::helpers::spawn_app_with(reference_services::Config {
        products: 100,
        users: 10,
        max_age: std::time::Duration::from_secs(7),
        ..Default::default()
    })
    .await;
    let reply = app.product("p-00001").await;
    assert_eq!(reply.header("cache-control"), "public, max-age=7");
    let reply = app.products("limit=1").await;
    assert_eq!(reply.header("cache-control"), "public, max-age=7");
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304_with_the_same_headers_and_no_body() {
    let app = spawn_app().await;
    let first = app.product("p-00003").await;
    let etag = first.header("etag").to_owned();
    let reply = app
        .get(ServiceKind::Product, "/products/p-00003")
        .header("if-none-match", &etag)
        .send()
        .await;
    reply.assert_status(StatusCode::NOT_MODIFIED);
    assert_eq!(reply.header("etag"), etag);
    assert_eq!(reply.header("cache-control"), "public, max-age=30");
    assert!(reply.body.is_null(), "a 304 has no body");
}

#[tokio::test]
async fn if_none_match_uses_weak_comparison_star_and_lists() {
    let app = spawn_app().await;
    let etag = app.product("p-00004").await.header("etag").to_owned();
    for condition in [
        format!("W/{etag}"),
        "*".to_owned(),
        format!("\"nope\", {etag}"),
        format!("W/\"nope\",W/{etag}"),
    ] {
        let reply = app
            .get(ServiceKind::Product, "/products/p-00004")
            .header("if-none-match", &condition)
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {condition}"
        );
        assert_eq!(reply.header("etag"), etag);
    }
}

#[tokio::test]
async fn if_none_match_with_another_etag_is_200_with_the_body() {
    let app = spawn_app().await;
    for condition in ["\"other\"", "W/\"other\"", "garbage"] {
        let reply = app
            .get(ServiceKind::Product, "/products/p-00004")
            .header("if-none-match", condition)
            .schema(PRODUCT)
            .send()
            .await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body["id"], "p-00004");
    }
}

#[tokio::test]
async fn an_unknown_product_is_404_and_a_malformed_id_is_400() {
    let app = spawn_app().await;
    app.product("p-99999")
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.product("p%20x")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.product(&"a".repeat(65))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.product("%FF")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    // An id made valid by percent-decoding is the same id.
    app.product("p%2D00001").await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn a_batch_keeps_the_order_asked_dedupes_and_lists_missing() {
    let app = spawn_app().await;
    let reply = app
        .products("ids=p-00010,p-00002,nope,p-00010,p-00007,gone,nope")
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(ids(&reply.body), ["p-00010", "p-00002", "p-00007"]);
    assert_eq!(reply.body["missing"], serde_json::json!(["nope", "gone"]));
    assert!(
        reply.body.get("next_cursor").is_none(),
        "no cursor with ids"
    );
    assert_eq!(reply.header("cache-control"), "public, max-age=30");
    // Batch items are the same documents as single reads.
    let single = app.product("p-00002").await;
    assert_eq!(reply.body["items"][1], single.body);
}

#[tokio::test]
async fn a_batch_of_exactly_100_ids_is_fine_and_101_is_400() {
    let app = spawn_app().await;
    let hundred: Vec<String> = (1..=100).map(|n| format!("p-{n:05}")).collect();
    let reply = app.products(&format!("ids={}", hundred.join(","))).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(ids(&reply.body), hundred);
    assert_eq!(reply.body["missing"], serde_json::json!([]));
    let too_many: Vec<String> = (1..=101).map(|n| format!("p-{n:05}")).collect();
    app.products(&format!("ids={}", too_many.join(",")))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_batches_are_400() {
    let app = spawn_app().await;
    for ids in [
        "",
        "p-00001,",
        ",p-00001",
        "p-00001,,p-00002",
        "p-00001%2C%20p-00002",
        "p%2000001",
    ] {
        app.products(&format!("ids={ids}"))
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_batch_still_validates_the_parameters_it_ignores() {
    let app = spawn_app().await;
    for query in [
        "ids=p-00001&limit=0",
        "ids=p-00001&cursor=forged",
        "ids=p-00001&category=bad%20id",
        "ids=p-00001&ids=p-00002",
    ] {
        app.products(query)
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    app.products("ids=p-00001&limit=5&category=c-books&q=x")
        .await
        .assert_status(StatusCode::OK);
}

/// Pages through a listing with `query`, returning every id in order.
async fn page_through(app: &crate::helpers::TestApp, query: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut full = query.to_owned();
        if let Some(cursor) = &cursor {
            full.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.products(&full).await;
        reply.assert_status(StatusCode::OK);
        seen.extend(ids(&reply.body));
        match &reply.body["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return seen,
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
    }
    panic!("the listing never ended");
}

#[tokio::test]
async fn listing_a_category_pages_without_duplicates_or_gaps_newest_first() {
    let app = spawn_app().await;
    let category = "c-kitchen";
    let expected: Vec<String> = app
        .world()
        .catalog()
        .products()
        .filter(|product| product.category_id == category)
        .map(|product| product.id.clone())
        .collect();
    assert!(expected.len() > 7, "the category has several pages");
    let seen = page_through(&app, &format!("category={category}&limit=7")).await;
    assert_eq!(seen, expected);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
}

#[tokio::test]
async fn the_whole_listing_is_newest_first_and_ends_with_a_null_cursor() {
    let app = spawn_app().await;
    let seen = page_through(&app, "limit=100").await;
    assert_eq!(seen.len(), app.world().catalog().len());
    let times: Vec<String> = seen
        .iter()
        .map(|id| {
            let product = app.world().product(id).expect("listed products exist");
            product.updated_at.to_string()
        })
        .collect();
    let stamps: Vec<i64> = seen
        .iter()
        .filter_map(|id| app.world().product(id))
        .map(|product| product.updated_at.unix_timestamp())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
}

#[tokio::test]
async fn the_default_page_has_20_items() {
    let app = spawn_app().await;
    let reply = app.products("").await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(ids(&reply.body).len(), 20);
    assert!(reply.body["next_cursor"].is_string());
}

#[tokio::test]
async fn q_matches_name_and_brand_case_insensitively() {
    let app = spawn_app().await;
    let world = app.world();
    for q in ["COFFEE", "müller", "MÜLLER & S", "ærø-nothing"] {
        let lower = q.to_lowercase();
        let expected: Vec<String> = world
            .catalog()
            .products()
            .filter(|p| {
                p.name.to_lowercase().contains(&lower) || p.brand.to_lowercase().contains(&lower)
            })
            .map(|p| p.id.clone())
            .collect();
        let seen = page_through(&app, &format!("q={}&limit=100", encode(q))).await;
        assert_eq!(seen, expected, "q={q}");
    }
    let seen = page_through(&app, "q=coffee&category=c-coffee&limit=3").await;
    for id in &seen {
        let product = world.product(id).expect("exists");
        assert_eq!(product.category_id, "c-coffee");
        assert!(
            product.name.to_lowercase().contains("coffee")
                || product.brand.to_lowercase().contains("coffee")
        );
    }
}

#[tokio::test]
async fn q_counts_code_points_up_to_200() {
    let app = spawn_app().await;
    app.products(&format!("q={}", encode(&"é".repeat(200))))
        .await
        .assert_status(StatusCode::OK);
    app.products(&format!("q={}", encode(&"é".repeat(201))))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unknown_category_is_an_empty_last_page() {
    let app = spawn_app().await;
    let reply = app.products("category=c-nothing").await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["items"], serde_json::json!([]));
    assert_eq!(reply.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_cursor_the_service_did_not_issue_is_400() {
    let app = spawn_app().await;
    let first = app.products("limit=2").await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    // The genuine cursor works.
    app.products(&format!("limit=2&cursor={cursor}"))
        .await
        .assert_status(StatusCode::OK);
    // Tampered: change one character.
    let mut tampered: Vec<char> = cursor.chars().collect();
    tampered[0] = if tampered[0] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let truncated = &cursor[..cursor.len() - 1];
    let too_long = "A".repeat(201);
    for forged in [
        "abc",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "a+b",
        "",
        &tampered,
        truncated,
        &too_long,
    ] {
        app.products(&format!("limit=2&cursor={}", encode(forged)))
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    // A cursor is only valid for the filters it was issued with.
    app.products(&format!("limit=2&category=c-books&cursor={cursor}"))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    // Cursors from another world (same seed) were not issued by this service.
    let other = spawn_app().await;
    other
        .products(&format!("limit=2&cursor={cursor}"))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn limit_accepts_integral_floats_like_26_0() {
    let app = spawn_app().await;
    for (limit, count) in [
        ("26.0", 26),
        ("26", 26),
        ("1", 1),
        ("100", 100),
        ("1e1", 10),
        ("100.00", 100),
    ] {
        let reply = app.products(&format!("limit={limit}")).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(ids(&reply.body).len(), count, "limit={limit}");
    }
}

#[tokio::test]
async fn limit_outside_1_to_100_or_not_an_integer_is_400() {
    let app = spawn_app().await;
    for limit in [
        "0",
        "101",
        "abc",
        "-1",
        "2.5",
        "",
        "%2B5",
        "1%20",
        "0x10",
        "1000000000000000000000",
    ] {
        app.products(&format!("limit={limit}"))
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_malformed_category_is_400() {
    let app = spawn_app().await;
    app.products("category=bad%20id")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    app.products("category=")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_parameter_given_twice_is_400() {
    let app = spawn_app().await;
    app.products("limit=2&limit=3")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    let app = spawn_app().await;
    app.products("limit=2&utm_source=x")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn categories_list_every_category_with_parents_and_max_age() {
    let app = spawn_app().await;
    let reply = app
        .get(ServiceKind::Product, "/categories")
        .schema(CATEGORY_LIST)
        .send()
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.header("cache-control"), "public, max-age=30");
    let items = reply.body["items"].as_array().expect("items");
    assert!(items.len() >= 20);
    let ids: HashSet<&str> = items.iter().filter_map(|c| c["id"].as_str()).collect();
    let children: Vec<&Value> = items
        .iter()
        .filter(|c| c["parent_id"].is_string())
        .collect();
    assert!(!children.is_empty(), "some categories have a parent");
    for child in children {
        let parent = child["parent_id"].as_str().unwrap_or_default();
        assert!(ids.contains(parent), "parent {parent} exists");
    }
    // Every product's category is listed.
    for product in app.world().catalog().products() {
        assert!(ids.contains(product.category_id.as_str()));
    }
}

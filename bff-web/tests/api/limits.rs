//! Document limits are enforced before anything is resolved, with codes.

use reference_services::ServiceKind;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn a_document_nested_too_deep_is_refused() {
    let app = spawn_app_with(|s| s.gateway.limits.max_depth = 4).await;
    app.reset_stats();
    let answer = app
        .query(
            "{ categories { parent { parent { parent { parent { id } } } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(answer.codes(), ["QUERY_TOO_DEEP"]);
    assert!(answer.body.get("data").is_none());
    assert_eq!(
        app.stats(ServiceKind::Product).total,
        0,
        "nothing was resolved"
    );
}

/// The introspection query GraphiQL and other tools send (abridged to its deepest part).
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } types { kind name
    fields(includeDeprecated: true) { name args { name type { ...TypeRef } } type { ...TypeRef } } } } }
    fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

#[tokio::test]
async fn the_deep_introspection_query_of_tools_is_not_refused_as_too_deep() {
    let app = spawn_app_with(|s| s.gateway.limits.max_depth = 4).await;
    let answer = app.query(INTROSPECTION, json!({}), None).await;
    answer.assert_ok();
    assert!(answer.body["data"]["__schema"]["types"].is_array());
}

#[tokio::test]
async fn a_document_too_complex_is_refused() {
    let app = spawn_app().await;
    let fields = "id name brand description sku price { amount currency formatted } listPrice { formatted } \
                  availability { status quantity } images { url width height alt } category { id name parent { id name } }";
    let query = format!(
        "{{ a: products(first: 100) {{ nodes {{ {fields} }} }} b: products(first: 100) {{ nodes {{ {fields} }} }} }}"
    );
    let answer = app.query(&query, json!({}), None).await;
    assert_eq!(answer.codes(), ["QUERY_TOO_COMPLEX"]);
    let small = format!("{{ products(first: 5) {{ nodes {{ {fields} }} }} }}");
    app.query(&small, json!({}), None).await.assert_ok();
}

#[tokio::test]
async fn too_many_aliases_are_refused() {
    let app = spawn_app().await;
    let aliases: String = (0..31)
        .map(|i| format!("c{i}: categories {{ id }} "))
        .collect();
    let answer = app
        .query(&format!("{{ {aliases} }}"), json!({}), None)
        .await;
    assert_eq!(answer.codes(), ["TOO_MANY_ALIASES"]);
}

#[tokio::test]
async fn too_many_root_fields_are_refused() {
    let app = spawn_app_with(|s| s.gateway.limits.max_root_fields = 2).await;
    let answer = app
        .query(
            "{ categories { id } products { nodes { id } } viewer { id } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(answer.codes(), ["TOO_MANY_ROOT_FIELDS"]);
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let app = spawn_app_with(|s| s.gateway.introspection = false).await;
    let answer = app
        .query("{ __schema { types { name } } }", json!({}), None)
        .await;
    assert_eq!(
        answer.data("/__schema"),
        &serde_json::Value::Null,
        "{:#}",
        answer.body
    );
    let on = spawn_app().await;
    let answer = on
        .query("{ __schema { types { name } } }", json!({}), None)
        .await;
    answer.assert_ok();
    assert!(answer.data("/__schema/types").is_array());
}

#[tokio::test]
async fn deeply_nested_values_are_refused_before_parsing_and_the_gateway_keeps_serving() {
    let app = spawn_app().await;
    let nested = format!(
        "{{ categories(x: {}1{}) {{ id }} }}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let answer = app.query(&nested, json!({}), None).await;
    assert_eq!(answer.codes(), ["GRAPHQL_PARSE_FAILED"]);
    let objects = format!(
        "{{ categories(x: {}1{}) {{ id }} }}",
        "{a:".repeat(3000),
        "}".repeat(3000)
    );
    let answer = app.query(&objects, json!({}), None).await;
    assert_eq!(answer.codes(), ["GRAPHQL_PARSE_FAILED"]);
    app.query("{ categories { id } }", json!({}), None)
        .await
        .assert_ok();
}

/// `{ ...F1 }` where each fragment spreads the next `fanout` times, `levels` deep, ending in
/// `leaf`: a few hundred bytes that expand to `fanout^(levels-1)` copies of `leaf`.
fn fragment_bomb(levels: usize, fanout: usize, leaf: &str) -> String {
    let mut query = String::from("{ ...F1 }\n");
    for level in 1..levels {
        let spreads = vec![format!("...F{}", level + 1); fanout].join(" ");
        query.push_str(&format!("fragment F{level} on Query {{ {spreads} }}\n"));
    }
    query.push_str(&format!("fragment F{levels} on Query {{ {leaf} }}\n"));
    query
}

/// Sends `query`; `Err` if the gateway takes more than a few seconds to answer: a document whose
/// expansion is exponential must be refused by counting, never by expanding.
async fn answered_quickly(
    app: &crate::helpers::TestApp,
    query: &str,
) -> Result<crate::helpers::Answer, String> {
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.query(query, json!({}), None),
    )
    .await
    .map_err(|_| format!("no answer within 10 s to {query}"))
}

async fn refuse_fragment_bombs() -> Result<(), String> {
    let app = spawn_app().await;
    for leaf in [
        "categories { id }",
        "__typename",
        "__schema { queryType { name } }",
        "... on Query { __typename }",
    ] {
        let bomb = fragment_bomb(30, 20, leaf);
        assert!(bomb.len() < 8 * 1024, "a small document");
        let answer = answered_quickly(&app, &bomb).await?;
        assert_eq!(
            answer.codes(),
            ["QUERY_TOO_COMPLEX"],
            "{leaf}: {:#}",
            answer.body
        );
        assert!(answer.body.get("data").is_none());
    }
    // Still serving, and a modest use of nested fragments is fine.
    let modest = fragment_bomb(3, 3, "categories { id }");
    answered_quickly(&app, &modest).await?.assert_ok();
    Ok(())
}

/// A plain test with its own runtime: should the gateway spin on a worker thread, the runtime is
/// leaked instead of joined (joining would wait for ever), so the test fails instead of hanging.
#[test]
fn exponential_fragment_spreads_are_refused_without_expanding_them() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(message) = runtime.block_on(refuse_fragment_bombs()) {
        std::mem::forget(runtime);
        panic!("{message}");
    }
}

#[tokio::test]
async fn an_unused_fragment_is_measured_like_a_used_one() {
    let app = spawn_app().await;
    // Each `a { ...F }` validates F's 300 duplicated fields again: 300 × 300 selections, from a
    // document that no operation expands.
    let fields = vec!["id"; 300].join(" ");
    let spreads = vec!["a: categories { ...F }"; 300].join(" ");
    let document = format!(
        "{{ __typename }} fragment F on Category {{ {fields} }} fragment U on Query {{ {spreads} }}"
    );
    let answer = app.query(&document, json!({}), None).await;
    assert_eq!(answer.codes(), ["QUERY_TOO_COMPLEX"], "{:#}", answer.body);
}

#[tokio::test]
async fn a_carriage_return_ending_a_comment_does_not_hide_deep_brackets() {
    let app = spawn_app().await;
    let nested = format!(
        "{{ categories(x: #\r{}1{}) {{ id }} }}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let answer = app.query(&nested, json!({}), None).await;
    assert_eq!(answer.codes(), ["GRAPHQL_PARSE_FAILED"]);
    app.query("{ categories { id } }", json!({}), None)
        .await
        .assert_ok();
}

#[tokio::test]
async fn a_product_page_per_category_is_counted_per_category() {
    let app = spawn_app().await;
    // Every alias lists the products of every category: one catalog call per category each.
    let aliases: String = (0..8)
        .map(|i| format!("c{i}: categories {{ products(first: 1) {{ nodes {{ id }} }} }} "))
        .collect();
    app.reset_stats();
    let answer = app
        .query(&format!("{{ {aliases} }}"), json!({}), None)
        .await;
    assert_eq!(answer.codes(), ["QUERY_TOO_COMPLEX"], "{:#}", answer.body);
    assert_eq!(
        app.stats(ServiceKind::Product).total,
        0,
        "refused before any call"
    );
    // A category tree three levels deep, and one page per category, remain fine.
    app.query(
        "{ categories { id children { id children { id name } } } }",
        json!({}),
        None,
    )
    .await
    .assert_ok();
    app.query(
        "{ categories { id products(first: 2) { nodes { id name } } } }",
        json!({}),
        None,
    )
    .await
    .assert_ok();
}

/// The complexity a `QUERY_TOO_COMPLEX` answer reports.
fn reported_complexity(answer: &crate::helpers::Answer) -> u64 {
    assert_eq!(answer.codes(), ["QUERY_TOO_COMPLEX"], "{:#}", answer.body);
    let message = answer.body["errors"][0]["message"]
        .as_str()
        .expect("message");
    message
        .strip_prefix("The document's complexity is ")
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no complexity in {message:?}"))
}

#[tokio::test]
async fn list_fields_are_counted_at_the_configured_page_sizes() {
    // Every document is refused, so each answer says what it was counted as.
    let app = spawn_app_with(|s| {
        s.gateway.limits.default_page_size = 2;
        s.gateway.limits.max_page_size = 3;
        s.gateway.limits.max_complexity = 1;
    })
    .await;
    // `nodes { id }` costs 2 per product; a page costs its size times that, plus 1.
    let without_first = app
        .query("{ products { nodes { id } } }", json!({}), None)
        .await;
    assert_eq!(
        reported_complexity(&without_first),
        2 * 2 + 1,
        "the default page size"
    );
    let above_max = app
        .query("{ products(first: 50) { nodes { id } } }", json!({}), None)
        .await;
    assert_eq!(
        reported_complexity(&above_max),
        3 * 2 + 1,
        "clamped to the max"
    );
    let token = crate::helpers::token("u-1");
    let orders = app
        .query(
            "{ viewer { orders { nodes { id } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        reported_complexity(&orders),
        1 + 2 * 2 + 1,
        "the viewer's orders too"
    );

    // So a page the default size allows is not refused for the size the default used to be.
    let app = spawn_app_with(|s| {
        s.gateway.limits.default_page_size = 2;
        s.gateway.limits.max_page_size = 3;
        s.gateway.limits.max_complexity = 10;
    })
    .await;
    let answer = app
        .query("{ products { nodes { id } } }", json!({}), None)
        .await;
    answer.assert_ok();
    assert_eq!(
        answer.data("/products/nodes").as_array().map(Vec::len),
        Some(2)
    );
    // And `first` above the max is a bad input, not a too complex document.
    let answer = app
        .query("{ products(first: 50) { nodes { id } } }", json!({}), None)
        .await;
    assert_eq!(answer.codes(), ["BAD_USER_INPUT"], "{:#}", answer.body);
}

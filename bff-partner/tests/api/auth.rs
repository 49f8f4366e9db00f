//! API keys and scopes.

use reqwest::{Method, StatusCode};

use crate::helpers::{
    ACME_KEY, CATALOG_ONLY_KEY, VERSIONS, assert_problem, assert_problem_schema, header,
    order_body, spawn_app,
};

#[tokio::test]
async fn a_request_without_a_key_is_a_401_problem() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let response = app.get_as(&format!("/{version}/products"), None).await;
        let (body, headers) =
            assert_problem(response, StatusCode::UNAUTHORIZED, version, "unauthorized").await;
        assert!(header(&headers, "www-authenticate").starts_with("Bearer"));
        app.assert_documented(
            version,
            "get",
            &format!("/{version}/products"),
            StatusCode::UNAUTHORIZED,
            &body,
        )
        .await;
    }
    let basic = app
        .request(Method::GET, "/v2/categories", None)
        .basic_auth("partner", Some("secret"))
        .send()
        .await
        .expect("request");
    assert_problem(basic, StatusCode::UNAUTHORIZED, "v2", "unauthorized").await;
}

#[tokio::test]
async fn an_unknown_key_is_a_401_problem() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let response = app
            .get_as(&format!("/{version}/orders"), Some("not-a-configured-key"))
            .await;
        let (body, _) =
            assert_problem(response, StatusCode::UNAUTHORIZED, version, "unauthorized").await;
        assert_problem_schema(&app, version, &body).await;
        assert!(!body.to_string().contains("not-a-configured-key"));
    }
}

#[tokio::test]
async fn a_key_without_the_scope_is_a_403_problem() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let catalog = app
            .get_as(&format!("/{version}/categories"), Some(CATALOG_ONLY_KEY))
            .await;
        assert_eq!(catalog.status(), StatusCode::OK);

        let list = app
            .get_as(&format!("/{version}/orders"), Some(CATALOG_ONLY_KEY))
            .await;
        let (body, _) = assert_problem(list, StatusCode::FORBIDDEN, version, "forbidden").await;
        assert_eq!(body["required_scope"], "orders:read");
        app.assert_documented(
            version,
            "get",
            &format!("/{version}/orders"),
            StatusCode::FORBIDDEN,
            &body,
        )
        .await;

        // The scope is checked before the body or the idempotency key.
        let create = app
            .request(
                Method::POST,
                &format!("/{version}/orders"),
                Some(CATALOG_ONLY_KEY),
            )
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("request");
        let (body, _) = assert_problem(create, StatusCode::FORBIDDEN, version, "forbidden").await;
        assert_eq!(body["required_scope"], "orders:write");
    }
    let stats = app.order_stats().await;
    assert_eq!(stats["total"], 0, "{stats}");
    // The full key can do all of it.
    let ok = app
        .create_order(
            "v2",
            ACME_KEY,
            Some("scoped"),
            &order_body("acme-cust-1", &[(app.services.world.regular_product(), 1)]),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_documents_and_problem_types_need_no_key() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let doc = app.get_as(&format!("/{version}/openapi.json"), None).await;
        assert_eq!(doc.status(), StatusCode::OK);
        let kind = app
            .get_as(&format!("/{version}/problems/rate-limited"), None)
            .await;
        assert_eq!(kind.status(), StatusCode::OK);
        let kind: serde_json::Value = kind.json().await.expect("json");
        assert_eq!(kind["type"], format!("/{version}/problems/rate-limited"));
        assert_eq!(kind["status"], 429);
    }
}

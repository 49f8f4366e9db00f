//! The OpenAPI documents: snapshot-tested, so any change to the public contract shows up as a diff
//! in review.

use bff_partner::error::PROBLEM_TYPES;

use crate::helpers::{VERSIONS, spawn_app};

#[tokio::test]
async fn the_v1_document_matches_its_snapshot() {
    let app = spawn_app().await;
    insta::assert_json_snapshot!("openapi_v1", app.openapi("v1").await);
}

#[tokio::test]
async fn the_v2_document_matches_its_snapshot() {
    let app = spawn_app().await;
    insta::assert_json_snapshot!("openapi_v2", app.openapi("v2").await);
}

#[tokio::test]
async fn each_document_is_openapi_3_1_and_lists_every_problem_type_and_operation() {
    let app = spawn_app().await;
    for version in VERSIONS {
        let doc = app.openapi(version).await;
        assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
        let description = doc["info"]["description"].as_str().expect("description");
        for kind in PROBLEM_TYPES {
            assert!(
                description.contains(&format!("`/{version}/problems/{}`", kind.name)),
                "{} is not documented in {version}",
                kind.name
            );
        }
        let mut operations: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("item").keys() {
                operations.push(format!("{method} {path}"));
            }
        }
        operations.sort();
        let mut expected: Vec<String> = [
            "get /{v}/categories",
            "get /{v}/orders",
            "get /{v}/orders/{order_id}",
            "get /{v}/products",
            "get /{v}/products/{product_id}",
            "post /{v}/orders",
        ]
        .iter()
        .map(|op| op.replace("{v}", version))
        .collect();
        // Webhooks are a /v2 API.
        if version == "v2" {
            expected.extend(
                [
                    "delete /v2/webhooks/{webhook_id}",
                    "get /v2/webhooks",
                    "get /v2/webhooks/{webhook_id}",
                    "get /v2/webhooks/{webhook_id}/deliveries",
                    "get /v2/webhooks/{webhook_id}/deliveries/{delivery_id}",
                    "patch /v2/webhooks/{webhook_id}",
                    "post /v2/webhooks",
                    "post /v2/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
                    "post /v2/webhooks/{webhook_id}/rotate-secret",
                    "post /v2/webhooks/{webhook_id}/test",
                ]
                .map(str::to_owned),
            );
            expected.sort();
            // Every webhook operation needs the scope, and has the problem default.
            for (path, item) in doc["paths"].as_object().expect("paths") {
                if !path.starts_with("/v2/webhooks") {
                    continue;
                }
                for (method, operation) in item.as_object().expect("item") {
                    assert_eq!(
                        operation["security"][0]["api_key"][0], "webhooks:manage",
                        "{method} {path}"
                    );
                    assert!(
                        operation["responses"]["default"].is_object(),
                        "{method} {path}"
                    );
                }
            }
        }
        assert_eq!(operations, expected);
        let deprecated = doc["paths"][format!("/{version}/products")]["get"]["deprecated"] == true;
        assert_eq!(deprecated, version == "v1");
    }
}

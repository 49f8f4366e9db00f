//! The compactness rules that hold for every screen.

use serde_json::Value;

use crate::helpers::spawn_app;

/// Paths to every `null`, empty array and empty object below the top level.
fn empties(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(path.to_owned()),
        Value::Array(items) => {
            if items.is_empty() {
                found.push(path.to_owned());
            }
            for (index, item) in items.iter().enumerate() {
                empties(item, &format!("{path}[{index}]"), found);
            }
        }
        Value::Object(members) => {
            if members.is_empty() && !path.is_empty() {
                found.push(path.to_owned());
            }
            for (key, member) in members {
                empties(member, &format!("{path}.{key}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn no_screen_has_nulls_empty_arrays_or_a_list_of_images() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let order = app.world().user_orders(&user)[0].id.to_string();
    let fresh = app.world().user_without_cart().to_owned();
    let paths = [
        ("/home".to_owned(), None),
        ("/home".to_owned(), Some(user.as_str())),
        ("/home".to_owned(), Some(fresh.as_str())),
        ("/products?limit=50".to_owned(), None),
        (format!("/products/{}", app.world().on_sale_product()), None),
        (
            format!("/products/{}", app.world().low_stock_product()),
            None,
        ),
        ("/cart".to_owned(), Some(user.as_str())),
        ("/cart".to_owned(), Some(fresh.as_str())),
        ("/orders".to_owned(), Some(user.as_str())),
        ("/orders".to_owned(), Some(fresh.as_str())),
        (format!("/orders/{order}"), Some(user.as_str())),
    ];
    for (path, as_user) in paths {
        let answer = app.get(&path, as_user).await;
        assert_eq!(answer.status, 200, "{path}");
        let body = answer.json();
        let mut found = Vec::new();
        empties(&body, "", &mut found);
        assert!(found.is_empty(), "{path} as {as_user:?}: {found:?}");
        let text = body.to_string();
        assert!(
            !text.contains("\"images\""),
            "{path}: one image per product"
        );
        assert!(!text.contains("\"degraded\""), "{path}: nothing failed");
    }
}

//! Decoding is as tolerant as the contract allows: unknown fields, integral floats, nulls and
//! absent optional fields all decode.

use serde_json::json;
use shared_clients::{ChannelKind, InventoryStatus, OrderStatus, Owner};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{cacheable, ctx, downstream, order_id, partner, product_id, user};

#[tokio::test]
async fn a_product_with_unknown_fields_and_float_integers_decodes() {
    let server = MockServer::start().await;
    let body = json!({
        "id": "p-00001", "sku": "S1", "name": "Boot",
        "price": { "amount_minor": 1999.0, "currency": "EUR", "tax": "incl" },
        "list_price": { "amount_minor": 2500, "currency": "EUR" },
        "images": [{ "url": "u", "width": 800.0, "height": 6e2, "format": "webp" }],
        "rating": { "average": 4, "count": 26.0 },
        "inventory": { "available": 26.0, "status": "low_stock", "warehouse": "w1" },
        "updated_at": "2024-05-01T12:00:00Z",
        "brand_new_field": { "nested": [1, 2, 3] }
    });
    Mock::given(method("GET"))
        .and(path("/products/p-00001"))
        .respond_with(cacheable(body, 30))
        .mount(&server)
        .await;
    let product = downstream(&server)
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap();
    assert_eq!(product.price.amount_minor, 1999);
    assert_eq!(product.list_price.as_ref().unwrap().amount_minor, 2500);
    assert_eq!(
        (product.images[0].width, product.images[0].height),
        (800, 600)
    );
    assert_eq!(product.inventory.available, 26);
    assert_eq!(product.inventory.status, InventoryStatus::LowStock);
    assert_eq!(product.rating.as_ref().unwrap().count, Some(26));
    assert_eq!(product.description, None);
    assert!(product.attributes.is_empty());
}

#[tokio::test]
async fn nullable_fields_may_be_null_and_optional_fields_absent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/categories"))
        .respond_with(cacheable(
            json!({ "items": [
                { "id": "c-1", "name": "Shoes", "parent_id": null },
                { "id": "c-2", "name": "Boots", "parent_id": "c-1" },
                { "id": "c-3", "name": "Hats" }
            ]}),
            300,
        ))
        .mount(&server)
        .await;
    let categories = downstream(&server)
        .catalog()
        .categories(&ctx())
        .await
        .unwrap();
    let parents: Vec<_> = categories
        .iter()
        .map(|c| c.parent_id.as_ref().map(|p| p.as_str()))
        .collect();
    assert_eq!(parents, [None, Some("c-1"), None]);
}

#[tokio::test]
async fn carts_and_orders_with_float_integers_and_extra_fields_decode() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/carts/u-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "user_id": "u-0001", "version": 3.0, "updated_at": null, "currency_hint": "EUR",
            "items": [{ "product_id": "p-00001", "quantity": 2.0, "added_at": "2024-05-01T12:00:00Z", "gift": true }]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orders/o-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "o-1", "user_id": "cust-42",
            "channel": { "kind": "partner", "partner_id": "partner-acme", "via": "api" },
            "status": "shipped",
            "lines": [{ "product_id": "p-00001", "quantity": 1.0,
                        "unit_price": { "amount_minor": 10000000000.0, "currency": "EUR" } }],
            "total": { "amount_minor": 1e10, "currency": "EUR" },
            "shipping_address": { "city": "Berlin", "country": "DE", "floor": 3 },
            "created_at": "2024-05-01T12:00:00Z",
            "tracking": "XYZ"
        })))
        .mount(&server)
        .await;
    let downstream = downstream(&server);
    let cart = downstream
        .carts()
        .get(&ctx(), &user("u-0001"))
        .await
        .unwrap();
    assert_eq!((cart.version, cart.items[0].quantity), (3, 2));
    assert_eq!(cart.updated_at, None);

    let order = downstream
        .orders()
        .get(
            &ctx(),
            &Owner::Partner(partner("partner-acme")),
            &order_id("o-1"),
        )
        .await
        .unwrap();
    assert_eq!(order.channel.kind, ChannelKind::Partner);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.total.amount_minor, 10_000_000_000);
    assert_eq!(order.updated_at, None);
    assert_eq!(
        order.shipping_address.unwrap().city.as_deref(),
        Some("Berlin")
    );
}

#[tokio::test]
async fn a_fractional_integer_is_a_bad_response() {
    let server = MockServer::start().await;
    let mut body = crate::helpers::product_json("p-00001");
    body["inventory"]["available"] = json!(2.5);
    Mock::given(method("GET"))
        .respond_with(cacheable(body, 30))
        .mount(&server)
        .await;
    let err = downstream(&server)
        .catalog()
        .product(&ctx(), &product_id(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), shared_clients::ErrorKind::BadResponse);
}

#[tokio::test]
async fn products_serialize_back_in_the_contract_shape() {
    let product: shared_clients::Product =
        serde_json::from_value(crate::helpers::product_json("p-00001")).unwrap();
    let value = serde_json::to_value(&product).unwrap();
    assert_eq!(value, crate::helpers::product_json("p-00001"));
}

//! bff-all as its users see it: three gateways in one process, one cache for all of them, one
//! configuration. (The gateways' own API suites also run through it: see `bff_all::testing`.)

use bff_all::{AllSettings, build};
use reference_services::ServiceKind;
use server_kit::{Layered, config::load_layered, testing::serve};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_product_cached_for_one_gateway_is_a_hit_for_the_others() {
    let services = reference_services::spawn_all(reference_services::Config::default())
        .await
        .expect("reference services");
    let settings = bff_all::testing::on_free_ports(&services);
    settings.check().expect("valid");
    let mut bases = Vec::new();
    for served in build(&settings).expect("the gateways build") {
        bases.push(serve(&served.server, served.gateway).await.base);
    }
    let product = services.world.regular_product().to_owned();
    let client = reqwest::Client::new();

    // bff-web asks for the product first...
    let web: serde_json::Value = client
        .post(format!("{}/graphql", bases[0]))
        .json(
            &serde_json::json!({ "query": format!("{{ product(id: \"{product}\") {{ name }} }}") }),
        )
        .send()
        .await
        .expect("web answers")
        .json()
        .await
        .expect("json");
    assert!(web["data"]["product"]["name"].is_string(), "{web}");
    let product_calls = || {
        services
            .world
            .admin(ServiceKind::Product)
            .requests()
            .iter()
            .filter(|request| request.path.contains(&product) || request.query.contains(&product))
            .count()
    };
    let after_web = product_calls();
    assert!(after_web >= 1, "bff-web fetched the product");

    // ...then bff-mobile shows it: from the cache bff-web filled, without a call of its own.
    let mobile = client
        .get(format!("{}/m/v1/products/{product}", bases[1]))
        .send()
        .await
        .expect("mobile answers");
    assert_eq!(mobile.status(), 200);
    assert_eq!(
        product_calls(),
        after_web,
        "bff-mobile was served from the cache bff-web filled"
    );
}

#[test]
fn the_configuration_has_a_section_per_gateway_and_the_shared_ones_once() {
    let settings: AllSettings = load_layered(
        None,
        env(&[
            ("BFF_WEB__SERVER__LISTEN_ADDR", "127.0.0.1:7080"),
            ("BFF_MOBILE__GATEWAY__COMPRESSION_MIN_BYTES", "2048"),
            ("BFF_PRODUCT_URL", "http://product.internal"),
            ("BFF_DOWNSTREAM__CACHE__MAX_TTL", "30s"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        settings.web.server.listen_addr.to_string(),
        "127.0.0.1:7080"
    );
    assert_eq!(settings.mobile.gateway.compression_min_bytes, 2048);
    assert_eq!(settings.downstream.product.url, "http://product.internal");
    // Each gateway's own defaults, as its own binary has them.
    assert_eq!(settings.mobile.server.listen_addr.port(), 8081);
    assert_eq!(settings.partner.server.listen_addr.port(), 8082);
    assert_eq!(
        settings
            .partner
            .server
            .metrics_listen_addr
            .map(|a| a.port()),
        Some(9182)
    );
    // The shared sections reach every gateway's settings.
    assert_eq!(
        settings.partner_settings().downstream.product.url,
        "http://product.internal"
    );
}

#[test]
fn two_gateways_on_one_address_are_refused_naming_the_setting() {
    let error = load_layered::<AllSettings>(
        None,
        env(&[
            ("BFF_WEB__SERVER__LISTEN_ADDR", "127.0.0.1:7080"),
            ("BFF_PARTNER__SERVER__LISTEN_ADDR", "127.0.0.1:7080"),
        ]),
    )
    .expect_err("refused");
    assert!(
        error.to_string().contains("partner.server.listen_addr"),
        "{error}"
    );
}

//! ETag/304, Cache-Control, Vary and compression negotiation (the shared `server.compression`).

use reqwest::Method;

use crate::{
    helpers::{decode, spawn_app, token},
    live::{Events, place_order},
};

#[tokio::test]
async fn a_matching_if_none_match_gets_a_304_without_a_body() {
    let app = spawn_app().await;
    let first = app.products("?limit=10").await;
    let etag = first.header("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong tag: {etag}"
    );
    assert_eq!(first.header("cache-control"), "public, max-age=30");

    for candidate in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let revalidated = app
            .send(
                app.request(Method::GET, "/products?limit=10", None)
                    .header("if-none-match", candidate),
            )
            .await;
        assert_eq!(revalidated.status, 304);
        assert!(revalidated.bytes.is_empty());
        assert_eq!(revalidated.header("etag"), etag);
        assert_eq!(revalidated.header("cache-control"), "public, max-age=30");
        assert!(revalidated.header("vary").contains("Accept-Encoding"));
    }

    let changed = app
        .send(
            app.request(Method::GET, "/products?limit=10", None)
                .header("if-none-match", "\"stale\""),
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.bytes, first.bytes);
}

#[tokio::test]
async fn every_screen_get_has_an_etag_and_the_right_cache_control() {
    let app = spawn_app().await;
    let user = app.world().user_with_orders().to_owned();
    let order = app.world().user_orders(&user)[0].id.to_string();
    let product = app.world().regular_product().to_owned();
    let cases = [
        ("/home".to_owned(), None, "public, max-age=30"),
        ("/home".to_owned(), Some(user.as_str()), "private, no-store"),
        ("/products".to_owned(), None, "public, max-age=30"),
        (format!("/products/{product}"), None, "public, max-age=30"),
        ("/cart".to_owned(), Some(user.as_str()), "private, no-store"),
        (
            "/orders".to_owned(),
            Some(user.as_str()),
            "private, no-store",
        ),
        (
            format!("/orders/{order}"),
            Some(user.as_str()),
            "private, no-store",
        ),
    ];
    for (path, as_user, cache_control) in cases {
        let answer = app.get(&path, as_user).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(!answer.header("etag").is_empty(), "{path}");
        assert_eq!(answer.header("cache-control"), cache_control, "{path}");
        assert!(answer.header("vary").contains("Accept-Encoding"), "{path}");
    }
    let product_answer = app.product(&product).await;
    assert!(product_answer.header("vary").contains("DPR"));
}

#[tokio::test]
async fn responses_are_compressed_as_negotiated_and_tiny_ones_are_not() {
    let app = spawn_app().await;
    let plain = app.products("?limit=20").await;
    assert_eq!(plain.header("content-encoding"), "");

    for (accept, expected) in [("gzip", "gzip"), ("br", "br"), ("gzip;q=0.5, br", "br")] {
        let answer = app
            .send(
                app.request(Method::GET, "/products?limit=20", None)
                    .header("accept-encoding", accept),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-encoding"), expected, "{accept}");
        assert!(answer.bytes.len() < plain.bytes.len() / 2, "{accept}");
        assert_eq!(
            answer.header("etag"),
            format!("W/{}", plain.header("etag")),
            "another representation: the identity tag, made weak"
        );
        let decoded = decode(expected, answer.bytes.clone()).await;
        assert_eq!(decoded, plain.bytes, "{accept}");

        let revalidated = app
            .send(
                app.request(Method::GET, "/products?limit=20", None)
                    .header("accept-encoding", accept)
                    .header("if-none-match", answer.header("etag")),
            )
            .await;
        assert_eq!(revalidated.status, 304, "{accept}");
        assert_eq!(
            revalidated.header("etag"),
            answer.header("etag"),
            "the 304 names the representation the client holds"
        );
        // The identity tag matches too (weak comparison): either copy is revalidated.
        let with_identity_tag = app
            .send(
                app.request(Method::GET, "/products?limit=20", None)
                    .header("accept-encoding", accept)
                    .header("if-none-match", plain.header("etag")),
            )
            .await;
        assert_eq!(with_identity_tag.status, 304, "{accept}");
    }

    let tiny = app
        .send(
            app.request(Method::GET, "/products?q=zzzz-nothing", None)
                .header("accept-encoding", "gzip, br"),
        )
        .await;
    assert_eq!(tiny.status, 200);
    assert_eq!(
        tiny.header("content-encoding"),
        "",
        "{} bytes",
        tiny.bytes.len()
    );
}

#[tokio::test]
async fn the_order_stream_asked_for_compression_is_sent_event_by_event_in_the_clear() {
    let app = spawn_app().await;
    let world = app.world();
    let user = world.user_without_cart().to_owned();
    let order_id = place_order(&app.client, &app.base, &user, world.regular_product()).await;
    let response = app
        .client
        .get(format!("{}/m/v1/orders/{order_id}/live", app.base))
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip, br")
        .bearer_auth(token(&user))
        .send()
        .await
        .expect("answered");
    // `Events::of` checks: no `Content-Encoding`, no `ETag`.
    let mut events = Events::of(response);
    let first = events.expect("order").await;
    assert_eq!(first.json()["id"], order_id.as_str());
}

#[tokio::test]
async fn a_cached_product_detail_is_the_first_answers_bytes_and_tag_for_everyone_and_304_when_named()
 {
    let app = spawn_app().await;
    let product = app.world().regular_product().to_owned();
    let path = format!("/products/{product}?w=600");
    let first = app.get(&path, None).await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // Kept rendered: the same bytes and tag, anonymous or signed in (public catalog data).
    let user = app.world().user_with_orders().to_owned();
    for as_user in [None, Some(user.as_str()), None] {
        let again = app.get(&path, as_user).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.bytes, first.bytes);
        assert_eq!(again.header("etag"), etag);
        assert_eq!(again.header("cache-control"), "public, max-age=30");
    }
    // Another width is another rendering, with its own tag.
    let small = app.get(&format!("/products/{product}?w=100"), None).await;
    assert_ne!(small.header("etag"), etag);

    for named in [etag.clone(), format!("W/{etag}")] {
        let revalidated = app
            .send(
                app.request(Method::GET, &path, None)
                    .header("if-none-match", &named),
            )
            .await;
        assert_eq!(revalidated.status, 304, "{named}");
        assert!(revalidated.bytes.is_empty());
        assert_eq!(revalidated.header("etag"), etag);
    }
    // With compression accepted, the answer is the compressed one, tagged weak; revalidating it
    // is a 304 with that weak tag.
    let compressed = app
        .send(
            app.request(Method::GET, &path, None)
                .header("accept-encoding", "gzip"),
        )
        .await;
    if compressed.header("content-encoding") == "gzip" {
        assert_eq!(compressed.header("etag"), format!("W/{etag}"));
        assert_eq!(decode("gzip", compressed.bytes.clone()).await, first.bytes);
    }
    let revalidated = app
        .send(
            app.request(Method::GET, &path, None)
                .header("accept-encoding", "gzip")
                .header("if-none-match", format!("W/{etag}")),
        )
        .await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), format!("W/{etag}"));
}

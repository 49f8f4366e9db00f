//! Trusted documents (`gateway.trusted_documents`): both manifest formats, requests by id (body,
//! `extensions`, query string, event streams, WebSockets), `enforce` and its bypass, reloads,
//! bounded labels; the committed manifest of `bff-web/operations`; the SDL endpoint.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bff_web::{
    WebSettings,
    apq::sha256_hex,
    config::TrustedMode,
    trusted::{codes, manifest},
};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_kit::auth::Secret;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::{Answer, TestApp, spawn_app_with};

/// The product page's query, as the web app sends it.
const PRODUCT: &str = "query Product($id: ID!) { product(id: $id) { id name } }";
/// The category list, kept in a flat manifest.
const CATEGORIES: &str = "query Categories { categories { id name } }";
/// A query that is in no manifest.
const ARBITRARY: &str = "query Arbitrary { categories { id } }";
/// The operator's bypass secret.
const BYPASS_SECRET: &str = "an-operator-secret-of-at-least-32-bytes";
/// How long a reload may take to be noticed.
const PATIENCE: Duration = Duration::from_secs(15);

/// A fresh folder for one test's manifests.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bff-web-trusted-{test}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

/// A value unique enough for a folder name.
fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a sane clock")
        .as_nanos()
}

/// An Apollo manifest of `(name, kind, body)`, ids the SHA-256 of each body.
fn apollo(operations: &[(&str, &str, &str)]) -> String {
    json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": operations.iter().map(|(name, kind, body)| json!({
            "id": sha256_hex(body), "name": name, "type": kind, "body": body,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Writes `text` to `dir/name`; its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

/// A gateway with trusted documents in `mode` from `manifests`, adjusted by `configure`.
async fn spawn_trusted(
    mode: TrustedMode,
    manifests: Vec<PathBuf>,
    configure: impl FnOnce(&mut WebSettings),
) -> TestApp {
    spawn_app_with(move |settings| {
        settings.gateway.trusted_documents.mode = mode;
        settings.gateway.trusted_documents.manifests = manifests;
        configure(settings);
    })
    .await
}

impl TestApp {
    /// POSTs `body` (Accept: application/json), with `headers`.
    async fn post_with(&self, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.post(&self.endpoint).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// The document `id` run from the body with `variables`.
    async fn by_id(&self, id: &str, variables: Value) -> Answer {
        self.post_json(
            json!({ "documentId": id, "variables": variables }),
            None,
            None,
        )
        .await
    }

    /// The gateway's metrics, as scraped.
    async fn metrics_text(&self) -> String {
        self.client
            .get(&self.metrics_url)
            .send()
            .await
            .expect("scraped")
            .text()
            .await
            .expect("text")
    }
}

/// The value of the series of `metric` whose labels include `label`, if any.
fn series(metrics: &str, metric: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} "))
        })
        .find(|line| line.contains(label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls `check` until it holds or [`PATIENCE`] passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn both_manifest_formats_load_and_their_documents_run_by_id() {
    let dir = scratch("formats");
    let apollo_file = write(
        &dir,
        "apollo.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let flat_file = write(
        &dir,
        "flat.json",
        &json!({ format!("sha256:{}", sha256_hex(CATEGORIES)): CATEGORIES }).to_string(),
    );
    let app = spawn_trusted(TrustedMode::Allow, vec![apollo_file, flat_file], |_| {}).await;

    let product = app
        .by_id(&sha256_hex(PRODUCT), json!({ "id": "p-00001" }))
        .await;
    product.assert_ok();
    assert_eq!(product.data("/product/id"), "p-00001");
    // A kept document is not validated again, so a variable of the wrong type meets the
    // argument at execution: still the client's error, naming the type, never an internal one.
    let wrong = app
        .by_id(&sha256_hex(PRODUCT), json!({ "id": { "not": "an id" } }))
        .await;
    assert_eq!(wrong.codes(), ["BAD_USER_INPUT"], "{:#}", wrong.body);
    let message = wrong.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("\"ID\""), "{message}");
    // The flat format's ids, with their prefix or bare, in either case.
    for id in [
        format!("sha256:{}", sha256_hex(CATEGORIES)),
        sha256_hex(CATEGORIES).to_uppercase(),
    ] {
        let categories = app.by_id(&id, json!({})).await;
        categories.assert_ok();
        assert!(
            categories
                .data("/categories")
                .as_array()
                .is_some_and(|c| !c.is_empty())
        );
    }
    // `allow`: a document in no manifest still runs.
    app.query(ARBITRARY, json!({}), None).await.assert_ok();
}

#[tokio::test]
async fn a_document_is_named_by_id_in_the_body_the_extensions_and_the_query_string() {
    let dir = scratch("by-id");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[
            ("Product", "query", PRODUCT),
            (
                "RemoveCartLine",
                "mutation",
                "mutation RemoveCartLine($p: ID!) { removeCartLine(productId: $p) { itemCount } }",
            ),
        ]),
    );
    let app = spawn_trusted(TrustedMode::Allow, vec![file], |_| {}).await;
    let id = sha256_hex(PRODUCT);

    let body = app.by_id(&id, json!({ "id": "p-00002" })).await;
    body.assert_ok();
    assert_eq!(body.data("/product/id"), "p-00002");

    let extensions = app
        .post_json(
            json!({
                "variables": { "id": "p-00003" },
                "extensions": { "persistedQuery": { "version": 1, "sha256Hash": id } },
            }),
            None,
            None,
        )
        .await;
    extensions.assert_ok();
    assert_eq!(extensions.data("/product/id"), "p-00003");

    let get = app
        .get(
            &[
                ("documentId", id.as_str()),
                ("variables", r#"{"id":"p-00004"}"#),
                ("operationName", "Product"),
            ],
            None,
        )
        .await;
    get.assert_ok();
    assert_eq!(get.data("/product/id"), "p-00004");

    // A mutation by id is still refused over GET.
    let mutation_id = sha256_hex(
        "mutation RemoveCartLine($p: ID!) { removeCartLine(productId: $p) { itemCount } }",
    );
    let mutation = app
        .get(
            &[
                ("documentId", mutation_id.as_str()),
                ("variables", r#"{"p":"p-1"}"#),
            ],
            None,
        )
        .await;
    assert_eq!(
        mutation.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{:#}",
        mutation.body
    );

    // An unknown id is a request error with its code (400 as graphql-response+json).
    let unknown = app.by_id(&"0".repeat(64), json!({})).await;
    assert_eq!(unknown.codes(), [codes::NOT_FOUND]);
    assert!(unknown.body.get("data").is_none(), "{:#}", unknown.body);
    let unknown = app
        .post_json(
            json!({ "documentId": "sha256:nope" }),
            None,
            Some("application/graphql-response+json"),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.codes(), [codes::NOT_FOUND]);

    // A text and an id together are not a request.
    let both = app
        .post_json(json!({ "query": PRODUCT, "documentId": id }), None, None)
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.codes(), ["BAD_REQUEST"]);

    // A required variable left out, or of the wrong type, is refused as for a text.
    let missing = app.by_id(&id, json!({})).await;
    assert_eq!(missing.codes(), ["BAD_USER_INPUT"]);
    let as_text = app
        .query(PRODUCT, json!({ "id": { "not": "an id" } }), None)
        .await;
    let by_id = app.by_id(&id, json!({ "id": { "not": "an id" } })).await;
    assert_eq!(
        by_id.codes(),
        as_text.codes(),
        "{:#} {:#}",
        by_id.body,
        as_text.body
    );
    assert_eq!(by_id.status, as_text.status);
}

#[tokio::test]
async fn documents_by_id_run_over_event_streams_and_websockets() {
    let dir = scratch("live");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Enforce, vec![file], |_| {}).await;
    let id = sha256_hex(PRODUCT);

    let sse = app
        .client
        .post(&app.endpoint)
        .header("accept", "text/event-stream")
        .json(&json!({ "documentId": id, "variables": { "id": "p-00005" } }))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("the stream, whole");
    assert!(sse.contains("event: next"), "{sse}");
    assert!(sse.contains("\"p-00005\""), "{sse}");
    assert!(!sse.contains("errors"), "{sse}");
    let refused = app
        .client
        .post(&app.endpoint)
        .header("accept", "text/event-stream")
        .json(&json!({ "query": ARBITRARY }))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("the stream, whole");
    assert!(refused.contains(codes::REQUIRED), "{refused}");

    let mut request = app
        .endpoint
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    let mut send = async |message: Value| {
        socket
            .send(tungstenite::Message::text(message.to_string()))
            .await
            .expect("sent");
    };
    send(json!({ "type": "connection_init", "payload": {} })).await;
    send(json!({
        "id": "1", "type": "subscribe",
        "payload": { "documentId": id, "variables": { "id": "p-00006" } },
    }))
    .await;
    send(json!({
        "id": "2", "type": "subscribe",
        "payload": { "query": ARBITRARY },
    }))
    .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("read");
        if let tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] != "connection_ack" && value["type"] != "ping" {
                seen.push(value);
            }
        }
    }
    let next = seen
        .iter()
        .find(|m| m["id"] == "1" && m["type"] == "next")
        .expect("a value");
    assert_eq!(
        next["payload"]["data"]["product"]["id"], "p-00006",
        "{seen:?}"
    );
    let error = seen.iter().find(|m| m["id"] == "2").expect("an answer");
    assert_eq!(error["type"], "error", "{seen:?}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        codes::REQUIRED,
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_bad_manifest_fails_start_up_naming_the_file_and_the_id() {
    let dir = scratch("bad");
    let invalid = "query Broken { product(id: \"p-1\") { noSuchField } }";
    let cases = [
        (
            "invalid.json",
            apollo(&[("Product", "query", PRODUCT), ("Broken", "query", invalid)]),
            Some(sha256_hex(invalid)),
            "noSuchField",
        ),
        (
            "unparsable.json",
            json!({ "abc": "query { product(" }).to_string(),
            Some("abc".to_owned()),
            "does not parse",
        ),
        (
            "wrong-hash.json",
            json!({ format!("sha256:{}", "1".repeat(64)): CATEGORIES }).to_string(),
            Some(format!("sha256:{}", "1".repeat(64))),
            "not the SHA-256",
        ),
        ("not-json.json", "{".to_owned(), None, "not valid JSON"),
    ];
    for (name, text, id, why) in cases {
        let file = write(&dir, name, &text);
        let mut settings = WebSettings::default();
        settings.gateway.trusted_documents.mode = TrustedMode::Enforce;
        settings.gateway.trusted_documents.manifests = vec![file.clone()];
        let error = match bff_web::build(&settings) {
            Ok(_) => panic!("{name}: the gateway started"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(&file.display().to_string()),
            "{name}: {error}"
        );
        if let Some(id) = id {
            assert!(error.contains(&id), "{name}: {error}");
        }
        assert!(error.contains(why), "{name}: {error}");
    }
    let mut settings = WebSettings::default();
    settings.gateway.trusted_documents.mode = TrustedMode::Allow;
    settings.gateway.trusted_documents.manifests = vec![dir.join("missing.json")];
    let error = bff_web::build(&settings)
        .err()
        .expect("a missing file is refused")
        .to_string();
    assert!(error.contains("missing.json"), "{error}");
}

#[tokio::test]
async fn enforce_refuses_arbitrary_documents_and_apq_registrations() {
    let dir = scratch("enforce");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Enforce, vec![file], |_| {}).await;

    for accept in [None, Some("application/graphql-response+json")] {
        let refused = app
            .post_json(json!({ "query": ARBITRARY }), None, accept)
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{accept:?}");
        assert_eq!(refused.codes(), [codes::REQUIRED], "{accept:?}");
    }
    let get = app.get(&[("query", ARBITRARY)], None).await;
    assert_eq!(get.status, StatusCode::BAD_REQUEST);
    assert_eq!(get.codes(), [codes::REQUIRED]);

    // An APQ registration (hash and text) is refused, and the hash stays unknown.
    let hash = sha256_hex(ARBITRARY);
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let register = app
        .post_json(
            json!({ "query": ARBITRARY, "extensions": persisted }),
            None,
            None,
        )
        .await;
    assert_eq!(register.status, StatusCode::BAD_REQUEST);
    assert_eq!(register.codes(), [codes::REQUIRED]);
    let lookup = app
        .post_json(json!({ "extensions": persisted }), None, None)
        .await;
    assert_eq!(lookup.codes(), [codes::NOT_FOUND]);

    // The manifest's document runs: by id, and as its exact text.
    app.by_id(&sha256_hex(PRODUCT), json!({ "id": "p-00001" }))
        .await
        .assert_ok();
    app.query(PRODUCT, json!({ "id": "p-00001" }), None)
        .await
        .assert_ok();
}

#[tokio::test]
async fn the_bypass_header_admits_arbitrary_documents_only_with_the_right_secret() {
    let dir = scratch("bypass");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Enforce, vec![file], |settings| {
        settings.gateway.trusted_documents.bypass_secret = Some(Secret::new(BYPASS_SECRET));
    })
    .await;
    let header = "x-bff-bypass-trusted-documents";
    let body = json!({ "query": ARBITRARY });

    let wrong = app
        .post_with(
            body.clone(),
            &[(header, "an-operator-secret-of-at-least-32-byteX")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.codes(), [codes::REQUIRED]);
    let empty = app.post_with(body.clone(), &[(header, "")]).await;
    assert_eq!(empty.codes(), [codes::REQUIRED]);
    let other_header = app
        .post_with(body.clone(), &[("x-other", BYPASS_SECRET)])
        .await;
    assert_eq!(other_header.codes(), [codes::REQUIRED]);

    let admitted = app.post_with(body, &[(header, BYPASS_SECRET)]).await;
    admitted.assert_ok();
    assert!(admitted.data("/categories").is_array());
    // APQ works as without trusted documents for the operator.
    let persisted =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(ARBITRARY) } });
    app.post_with(
        json!({ "query": ARBITRARY, "extensions": persisted }),
        &[(header, BYPASS_SECRET)],
    )
    .await
    .assert_ok();
    app.post_with(
        json!({ "extensions": persisted }),
        &[(header, BYPASS_SECRET)],
    )
    .await
    .assert_ok();
    // …and for nobody else.
    let lookup = app.post_with(json!({ "extensions": persisted }), &[]).await;
    assert_eq!(lookup.codes(), [codes::NOT_FOUND]);

    // Over a WebSocket, where a browser (GraphiQL) puts its headers in `connection_init`.
    for (payload, admitted) in [
        (json!({ header: BYPASS_SECRET }), true),
        (
            json!({ "X-BFF-Bypass-Trusted-Documents": BYPASS_SECRET }),
            true,
        ),
        (
            json!({ header: "an-operator-secret-of-at-least-32-byteX" }),
            false,
        ),
        (json!({}), false),
    ] {
        let answer = ws_arbitrary(&app, payload.clone()).await;
        if admitted {
            assert_eq!(answer["type"], "next", "{payload}: {answer}");
            assert!(
                answer["payload"]["data"]["categories"].is_array(),
                "{answer}"
            );
        } else {
            assert_eq!(answer["type"], "error", "{payload}: {answer}");
            assert_eq!(answer["payload"][0]["extensions"]["code"], codes::REQUIRED);
        }
    }
}

/// Runs [`ARBITRARY`] over a new WebSocket whose `connection_init` carries `payload`; the first
/// answer to it (`next` or `error`).
async fn ws_arbitrary(app: &TestApp, payload: Value) -> Value {
    let mut request = app
        .endpoint
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    for message in [
        json!({ "type": "connection_init", "payload": payload }),
        json!({ "id": "1", "type": "subscribe", "payload": { "query": ARBITRARY } }),
    ] {
        socket
            .send(tungstenite::Message::text(message.to_string()))
            .await
            .expect("sent");
    }
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("read");
        if let tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["id"] == "1" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn a_changed_manifest_is_reloaded_and_a_broken_one_keeps_the_previous_set() {
    let dir = scratch("reload");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Enforce, vec![file.clone()], |settings| {
        settings.gateway.trusted_documents.poll_interval = Duration::from_millis(20);
    })
    .await;
    let categories = sha256_hex(CATEGORIES);
    assert_eq!(
        app.by_id(&categories, json!({})).await.codes(),
        [codes::NOT_FOUND]
    );
    // Counted once a request handed the metrics over.
    assert_eq!(
        series(&app.metrics_text().await, "bff_trusted_documents", ""),
        Some(1.0)
    );

    write(
        &dir,
        "manifest.json",
        &apollo(&[
            ("Product", "query", PRODUCT),
            ("Categories", "query", CATEGORIES),
        ]),
    );
    eventually("the added operation runs", || async {
        app.by_id(&categories, json!({})).await.codes().is_empty()
    })
    .await;
    assert_eq!(
        series(&app.metrics_text().await, "bff_trusted_documents", ""),
        Some(2.0)
    );

    // A broken file: the failure is counted, and both operations still run.
    write(&dir, "manifest.json", "{ not json at all");
    eventually("the failed reload is counted", || async {
        series(
            &app.metrics_text().await,
            "bff_trusted_documents_reload_failures_total",
            "",
        ) == Some(1.0)
    })
    .await;
    app.by_id(&categories, json!({})).await.assert_ok();
    app.by_id(&sha256_hex(PRODUCT), json!({ "id": "p-00001" }))
        .await
        .assert_ok();
    assert_eq!(
        series(&app.metrics_text().await, "bff_trusted_documents", ""),
        Some(2.0)
    );
    // An entry that does not validate is a failed reload too.
    write(
        &dir,
        "manifest.json",
        &apollo(&[("Bad", "query", "query Bad { nothing }")]),
    );
    eventually("the invalid reload is counted", || async {
        series(
            &app.metrics_text().await,
            "bff_trusted_documents_reload_failures_total",
            "",
        ) == Some(2.0)
    })
    .await;
    app.by_id(&categories, json!({})).await.assert_ok();
}

#[tokio::test]
async fn sighup_reloads_the_manifests() {
    let dir = scratch("sighup");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("Product", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Enforce, vec![file], |settings| {
        // No polling within the test: only the signal can reload.
        settings.gateway.trusted_documents.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let categories = sha256_hex(CATEGORIES);
    write(
        &dir,
        "manifest.json",
        &apollo(&[
            ("Product", "query", PRODUCT),
            ("Categories", "query", CATEGORIES),
        ]),
    );
    assert_eq!(
        app.by_id(&categories, json!({})).await.codes(),
        [codes::NOT_FOUND]
    );
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP)
        .expect("SIGHUP sent");
    eventually("SIGHUP loads the added operation", || async {
        app.by_id(&categories, json!({})).await.codes().is_empty()
    })
    .await;
}

#[tokio::test]
async fn operation_labels_stay_bounded_to_the_manifests_names() {
    let dir = scratch("labels");
    let file = write(
        &dir,
        "manifest.json",
        &apollo(&[("ProductPage", "query", PRODUCT)]),
    );
    let app = spawn_trusted(TrustedMode::Allow, vec![file], |_| {}).await;

    app.by_id(&sha256_hex(PRODUCT), json!({ "id": "p-00001" }))
        .await
        .assert_ok();
    // Names a client chose, one of them a manifest's name on another document.
    app.query(
        "query ClientChosenName { categories { id } }",
        json!({}),
        None,
    )
    .await
    .assert_ok();
    app.query("query ProductPage { categories { id } }", json!({}), None)
        .await
        .assert_ok();
    let metrics = app.metrics_text().await;
    assert_eq!(
        series(
            &metrics,
            "bff_graphql_operations_total",
            "operation=\"ProductPage\""
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "bff_graphql_operations_total",
            "operation=\"other\""
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(!metrics.contains("ClientChosenName"), "{metrics}");
}

#[tokio::test]
async fn the_committed_manifest_is_the_one_generated_from_the_operations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("operations");
    let generated = manifest::generate(&dir).expect("the operations make a manifest");
    let committed = std::fs::read_to_string(dir.join("manifest.json")).expect("committed");
    assert!(
        generated == committed,
        "bff-web/operations/manifest.json is stale: run \
         `cargo run -p bff-web -- manifest bff-web/operations --out bff-web/operations/manifest.json`"
    );
    // deploy/k8s mounts a copy of it (a ConfigMap's block scalar, indented by four spaces).
    let config_map = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/bff-web-trusted-documents.yaml"),
    )
    .expect("the ConfigMap");
    let (_, block) = config_map
        .split_once("  manifest.json: |\n")
        .expect("a manifest.json key");
    let copy: String = block
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(
        copy == committed,
        "deploy/k8s/bff-web-trusted-documents.yaml does not hold bff-web/operations/manifest.json"
    );
    // Every operation the README shows is one of them, as written there.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    for entry in manifest::parse(&committed).expect("a manifest") {
        assert!(
            readme.contains(entry.body.trim_end()),
            "bff-web/README.md does not show {:?} as in bff-web/operations",
            entry.name
        );
    }
    // And the gateway loads it (every document validates against the schema).
    let app = spawn_trusted(
        TrustedMode::Enforce,
        vec![dir.join("manifest.json")],
        |_| {},
    )
    .await;
    let product = std::fs::read_to_string(dir.join("Product.graphql")).expect("Product");
    app.by_id(&sha256_hex(&product), json!({ "id": "p-00001" }))
        .await
        .assert_ok();
}

#[tokio::test]
async fn the_schema_endpoint_serves_the_sdl_while_introspection_or_the_setting_is_on() {
    let checked_in =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql"))
            .expect("schema.graphql");
    for (introspection, schema_endpoint, served) in [
        (true, false, true),
        (false, false, false),
        (false, true, true),
    ] {
        let app = spawn_app_with(|settings| {
            settings.gateway.introspection = introspection;
            settings.gateway.schema_endpoint = schema_endpoint;
        })
        .await;
        let response = app
            .client
            .get(format!("{}/schema.graphql", app.endpoint))
            .send()
            .await
            .expect("answered");
        let case = format!("introspection {introspection}, schema_endpoint {schema_endpoint}");
        if served {
            assert_eq!(response.status(), StatusCode::OK, "{case}");
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; charset=utf-8",
                "{case}"
            );
            let sdl = response.text().await.expect("text");
            assert_eq!(sdl.trim(), checked_in.trim(), "{case}");
        } else {
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{case}");
        }
    }
}

//! Three replicas of `bff-web` over one private Redis, as behind a load balancer: a persisted
//! query registered on one replica is known to every replica, a value under its key that is not
//! the registered text is a miss, and while Redis is down each replica works on its own.

use std::time::Duration;

use bff_web::{WebConfig, WebSettings, apq::sha256_hex};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_kit::testing::{Replicas, sample, scrape, spawn_replicas};

/// The query the tests persist.
const QUERY: &str = "{ categories { id } }";

/// Three replicas built from the default settings, `configure` applied last.
async fn spawn_three(configure: impl FnOnce(&mut WebSettings)) -> Replicas<WebConfig> {
    let configure = |settings: &mut WebSettings| {
        // A loaded test machine must not turn a slow answer of the private Redis into a
        // fallback: these tests are about what is shared, not about timeouts.
        settings.shared.command_timeout = Duration::from_secs(2);
        configure(settings);
    };
    spawn_replicas(
        reference_services::Config::default(),
        3,
        configure,
        bff_web::build,
    )
    .await
}

/// `extensions` naming the persisted query `hash`.
fn extensions(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// POSTs `body` to replica `replica`; its status and JSON body.
async fn post(replicas: &Replicas<WebConfig>, replica: usize, body: &Value) -> (StatusCode, Value) {
    let url = format!(
        "{}{}",
        replicas.bases[replica], replicas.settings.gateway.path
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("the replica answers");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Registers `query` (hash and text) on replica `replica`.
async fn register(
    replicas: &Replicas<WebConfig>,
    replica: usize,
    query: &str,
) -> (StatusCode, Value) {
    let body = json!({ "query": query, "extensions": extensions(&sha256_hex(query)) });
    post(replicas, replica, &body).await
}

/// Asks replica `replica` for the persisted query `hash`, without its text.
async fn by_hash(
    replicas: &Replicas<WebConfig>,
    replica: usize,
    hash: &str,
) -> (StatusCode, Value) {
    post(
        replicas,
        replica,
        &json!({ "extensions": extensions(hash) }),
    )
    .await
}

/// The `extensions.code` of every error in `body`.
fn codes(body: &Value) -> Vec<&str> {
    body["errors"].as_array().map_or_else(Vec::new, |errors| {
        errors
            .iter()
            .map(|error| error["extensions"]["code"].as_str().unwrap_or("<none>"))
            .collect()
    })
}

/// Asserts that the query ran: 200, categories, no errors.
fn assert_answered(replica: usize, (status, body): &(StatusCode, Value)) {
    assert_eq!(*status, StatusCode::OK, "replica {replica}: {body:#}");
    assert!(body.get("errors").is_none(), "replica {replica}: {body:#}");
    assert!(
        body["data"]["categories"].is_array(),
        "replica {replica}: {body:#}"
    );
}

/// Asserts that the client is asked for the text: 200, `PERSISTED_QUERY_NOT_FOUND`.
fn assert_not_found(replica: usize, (status, body): &(StatusCode, Value)) {
    assert_eq!(*status, StatusCode::OK, "replica {replica}: {body:#}");
    assert_eq!(
        codes(body),
        ["PERSISTED_QUERY_NOT_FOUND"],
        "replica {replica}: {body:#}"
    );
}

/// The sum of `name`'s series with `labels` on replica `replica`'s `/metrics`.
async fn metric(
    replicas: &Replicas<WebConfig>,
    replica: usize,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = scrape(&reqwest::Client::new(), &replicas.metrics_urls[replica]).await;
    sample(&text, name, labels)
}

/// Where the text of `hash` is kept in Redis.
fn apq_key(replicas: &Replicas<WebConfig>, hash: &str) -> String {
    format!("{}{{apq:{hash}}}", replicas.settings.shared.key_prefix)
}

/// Runs `line` on the replicas' Redis; its raw reply.
async fn redis(replicas: &Replicas<WebConfig>, line: &str) -> String {
    replicas
        .redis
        .command(line)
        .await
        .expect("Redis answers the test")
}

#[tokio::test]
async fn a_query_registered_on_one_replica_is_served_by_hash_on_every_replica() {
    let replicas = spawn_three(|settings| {
        settings.gateway.apq.shared_ttl = Duration::from_secs(3600);
    })
    .await;
    let hash = sha256_hex(QUERY);
    assert_answered(0, &register(&replicas, 0, QUERY).await);

    let key = apq_key(&replicas, &hash);
    assert_eq!(
        redis(&replicas, &format!("GET {key}")).await,
        format!("${}\r\n{QUERY}\r\n", QUERY.len()),
        "the text is in Redis under its hash"
    );
    let ttl: u64 = redis(&replicas, &format!("TTL {key}"))
        .await
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a TTL");
    assert!(
        (3500..=3600).contains(&ttl),
        "gateway.apq.shared_ttl: {ttl}"
    );

    for replica in [1, 2] {
        assert_answered(replica, &by_hash(&replicas, replica, &hash).await);
    }

    // Replica 1 now holds the text itself: what Redis holds no longer matters to it.
    redis(&replicas, &format!("SET {key} garbage")).await;
    assert_answered(1, &by_hash(&replicas, 1, &hash).await);
    assert_eq!(
        metric(&replicas, 1, "bff_redis_errors_total", &[("op", "apq_get")]).await,
        0.0,
        "a local hit does not read Redis"
    );
}

#[tokio::test]
async fn a_value_under_the_key_that_is_not_the_registered_text_is_a_miss() {
    let replicas = spawn_three(|_| {}).await;
    let hash = sha256_hex(QUERY);
    let key = apq_key(&replicas, &hash);

    redis(&replicas, &format!("SET {key} garbage")).await;
    assert_not_found(0, &by_hash(&replicas, 0, &hash).await);
    assert_eq!(
        metric(&replicas, 0, "bff_redis_errors_total", &[("op", "apq_get")]).await,
        1.0
    );
    assert_eq!(
        metric(
            &replicas,
            0,
            "bff_redis_fallback_total",
            &[("feature", "apq")]
        )
        .await,
        1.0
    );

    // A document that parses, but is not the text of this hash, never runs in its place.
    redis(&replicas, &format!("SET {key} {{categories{{name}}}}")).await;
    assert_not_found(1, &by_hash(&replicas, 1, &hash).await);
    assert_eq!(
        metric(&replicas, 1, "bff_redis_errors_total", &[("op", "apq_get")]).await,
        1.0
    );

    // The client sends the text again, which repairs the shared copy for every replica.
    assert_answered(0, &register(&replicas, 0, QUERY).await);
    assert_answered(2, &by_hash(&replicas, 2, &hash).await);
}

#[tokio::test]
async fn a_document_longer_than_a_request_body_is_never_shared() {
    let replicas = spawn_three(|settings| settings.server.max_body_bytes = 2048).await;
    // Commas are insignificant in GraphQL: these documents parse, and are longer than a body.
    let long = format!("{{categories{{id{}}}}}", ",".repeat(3000));
    let hash = sha256_hex(&long);
    let url = format!("{}{}", replicas.bases[0], replicas.settings.gateway.path);
    let registered = reqwest::Client::new()
        .get(url)
        .query(&[
            ("query", long.as_str()),
            ("extensions", &extensions(&hash).to_string()),
        ])
        .send()
        .await
        .expect("the replica answers");
    let status = registered.status();
    assert_answered(0, &(status, registered.json().await.expect("JSON")));
    assert_answered(0, &by_hash(&replicas, 0, &hash).await);
    let key = apq_key(&replicas, &hash);
    assert_eq!(redis(&replicas, &format!("EXISTS {key}")).await, ":0\r\n");
    assert_not_found(1, &by_hash(&replicas, 1, &hash).await);

    // Nor is one read: a replica does not load more than a client could have registered.
    let other = format!("{{categories{{id{}}}}}", ",".repeat(3001));
    let other_hash = sha256_hex(&other);
    let other_key = apq_key(&replicas, &other_hash);
    redis(&replicas, &format!("SET {other_key} {other}")).await;
    assert_not_found(2, &by_hash(&replicas, 2, &other_hash).await);
    assert_eq!(
        metric(&replicas, 2, "bff_redis_errors_total", &[("op", "apq_get")]).await,
        1.0
    );
}

#[tokio::test]
async fn while_redis_is_down_each_replica_keeps_its_own_queries() {
    let mut replicas = spawn_three(|_| {}).await;
    let learned = sha256_hex(QUERY);
    assert_answered(0, &register(&replicas, 0, QUERY).await);
    assert_answered(1, &by_hash(&replicas, 1, &learned).await);

    replicas.redis.stop().await.expect("Redis stops");

    // What a replica learned stays usable; what it never saw is asked for again, never a 500.
    assert_answered(1, &by_hash(&replicas, 1, &learned).await);
    assert_not_found(2, &by_hash(&replicas, 2, &learned).await);
    assert!(
        metric(
            &replicas,
            2,
            "bff_redis_fallback_total",
            &[("feature", "apq")]
        )
        .await
            >= 1.0
    );

    // A registration still works, on that replica alone.
    let query = "{ categories { id name } }";
    let hash = sha256_hex(query);
    assert_answered(2, &register(&replicas, 2, query).await);
    assert_answered(2, &by_hash(&replicas, 2, &hash).await);
    assert_not_found(0, &by_hash(&replicas, 0, &hash).await);
    assert!(
        metric(
            &replicas,
            0,
            "bff_redis_fallback_total",
            &[("feature", "apq")]
        )
        .await
            >= 1.0
    );
}

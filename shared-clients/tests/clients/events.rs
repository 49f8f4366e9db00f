//! The change-event consumer against a real Redis (of the topology `BFF_TEST_REDIS_TOPOLOGY`
//! names): events appended to the streams (as the
//! downstream services append them) drop what they make stale, once per version; malformed events
//! are skipped; a Redis that lost the streams is a gap that drops what was held.

use std::time::Duration;

use reference_services::{Config, LocalRedis, ServiceKind, Spawned, TestRedis, spawn_all};
use serde_json::json;
use shared_clients::shared_state::RedisUrl;
use shared_clients::{Downstream, DownstreamConfig, ServiceConfig, SharedConfig, UserId};

use crate::helpers::{ctx, product_id, shared_over, test_redis};

/// How long a test waits for the consumer to act (it acts in milliseconds; this only bounds a
/// broken one).
const PATIENCE: Duration = Duration::from_secs(5);

/// Reference services, a private Redis and one replica whose catalog entries stay fresh for ten
/// minutes (so only an event can make it fetch again).
async fn replica() -> (Spawned, TestRedis, Downstream) {
    replica_with(|_| {}).await
}

/// As [`replica`], with the downstream settings changed by `configure`.
async fn replica_with(
    configure: impl FnOnce(&mut DownstreamConfig),
) -> (Spawned, TestRedis, Downstream) {
    let redis = test_redis().await;
    let spawned = spawn_all(Config::default())
        .await
        .expect("reference services start");
    let mut config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    config.cache.max_ttl = Duration::from_secs(600);
    config.private_cache.ttl = Duration::from_secs(600);
    configure(&mut config);
    let shared = SharedConfig {
        events_block: Duration::from_millis(200),
        command_timeout: Duration::from_secs(2),
        ..shared_over(&redis)
    };
    let downstream = Downstream::new_shared(&config, &shared).expect("valid settings");
    wait_until_up(&downstream).await;
    (spawned, redis, downstream)
}

/// Waits until every stream's consumer is connected.
async fn wait_until_up(downstream: &Downstream) {
    eventually("the consumers connect", || async {
        let events = downstream.metrics().events.expect("events on");
        events.streams.iter().all(|stream| stream.up)
    })
    .await;
}

/// Polls `check` until it holds, for at most [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends `event` to `stream` as a downstream service does.
async fn publish(redis: &TestRedis, stream: &str, event: serde_json::Value) {
    let mut conn = redis.connection().await.expect("connects");
    let _: String = redis::cmd("XADD")
        .arg(format!("bff:events:{stream}"))
        .arg("*")
        .arg("event")
        .arg(event.to_string())
        .query_async(&mut conn)
        .await
        .expect("XADD");
}

/// A CloudEvent of `kind` with `data`.
fn cloud_event(kind: &str, subject: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "specversion": "1.0", "id": uuid(), "source": "product-service", "type": kind,
        "time": "2026-12-06T00:00:00Z", "subject": subject,
        "datacontenttype": "application/json", "data": data,
    })
}

/// A unique id.
fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Requests `service` received.
fn calls(spawned: &Spawned, service: ServiceKind) -> u64 {
    spawned.world.admin(service).stats().total
}

/// `(applied, ignored, malformed)` events counted so far.
fn outcomes(downstream: &Downstream) -> (u64, u64, u64) {
    let events = downstream.metrics().events.expect("events on").events;
    let sum = |outcome: &str| {
        events
            .iter()
            .filter(|(_, o, _)| *o == outcome)
            .map(|(_, _, n)| n)
            .sum()
    };
    (sum("applied"), sum("ignored"), sum("malformed"))
}

#[tokio::test]
async fn a_product_change_drops_it_at_once_and_a_replay_or_older_version_changes_nothing() {
    let (spawned, redis, downstream) = replica().await;
    let id = product_id(5);
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(
        calls(&spawned, ServiceKind::Product),
        1,
        "cached for ten minutes"
    );

    let changed = cloud_event(
        "com.bff.product.changed",
        "p-00005",
        json!({ "product_id": "p-00005", "version": 7, "changed": ["price"] }),
    );
    publish(&redis, "catalog", changed.clone()).await;
    eventually("the change is applied", || async {
        outcomes(&downstream).0 == 1
    })
    .await;
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(calls(&spawned, ServiceKind::Product), 2, "fetched again");

    // The same event again, and an older version: counted, nothing dropped.
    publish(&redis, "catalog", changed).await;
    publish(
        &redis,
        "catalog",
        cloud_event(
            "com.bff.product.changed",
            "p-00005",
            json!({ "product_id": "p-00005", "version": 6, "changed": ["price"] }),
        ),
    )
    .await;
    eventually("both are ignored", || async {
        outcomes(&downstream).1 == 2
    })
    .await;
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(calls(&spawned, ServiceKind::Product), 2, "still cached");
}

#[tokio::test]
async fn malformed_events_are_counted_and_the_next_one_still_applies() {
    let (spawned, redis, downstream) = replica().await;
    let mut conn = redis.connection().await.expect("connects");
    for garbage in ["not json", "{\"type\":\"com.bff.product.changed\"}"] {
        let _: String = redis::cmd("XADD")
            .arg("bff:events:catalog")
            .arg("*")
            .arg("event")
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let _: String = redis::cmd("XADD")
        .arg("bff:events:catalog")
        .arg("*")
        .arg("no-event-field")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    publish(
        &redis,
        "catalog",
        cloud_event("com.bff.unknown.thing", "x", json!({ "version": 1 })),
    )
    .await;
    let id = product_id(8);
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    publish(
        &redis,
        "catalog",
        cloud_event(
            "com.bff.product.deleted",
            "p-00008",
            json!({ "product_id": "p-00008", "version": 2 }),
        ),
    )
    .await;
    eventually("the valid event is applied", || async {
        outcomes(&downstream).0 == 1
    })
    .await;
    assert_eq!(outcomes(&downstream).2, 4, "four malformed entries counted");
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(calls(&spawned, ServiceKind::Product), 2);
}

#[tokio::test]
async fn a_cart_changed_elsewhere_is_fetched_again_at_once() {
    let (spawned, redis, downstream) = replica().await;
    let user = UserId::parse("u-events-1").expect("valid");
    downstream.carts().get(&ctx(), &user).await.expect("cart");
    downstream.carts().get(&ctx(), &user).await.expect("cart");
    assert_eq!(calls(&spawned, ServiceKind::Cart), 1);
    publish(
        &redis,
        "cart",
        cloud_event(
            "com.bff.cart.changed",
            "u-events-1",
            json!({ "user_id": "u-events-1", "version": 3 }),
        ),
    )
    .await;
    eventually("the change is applied", || async {
        outcomes(&downstream).0 == 1
    })
    .await;
    downstream.carts().get(&ctx(), &user).await.expect("cart");
    assert_eq!(calls(&spawned, ServiceKind::Cart), 2);
}

#[tokio::test]
async fn redis_restarted_empty_is_a_gap_that_drops_what_was_held_and_reading_resumes() {
    let (spawned, mut redis, downstream) = replica().await;
    let id = product_id(11);
    // Something read, so each consumer has a position past the start.
    publish(
        &redis,
        "catalog",
        cloud_event(
            "com.bff.category.changed",
            "c-1",
            json!({ "category_id": "c-1", "version": 1 }),
        ),
    )
    .await;
    eventually("read", || async { outcomes(&downstream).0 == 1 }).await;
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(calls(&spawned, ServiceKind::Product), 1);

    redis.restart().await.expect("redis restarts");
    eventually("the gap is detected", || async {
        let events = downstream.metrics().events.expect("events on");
        events
            .streams
            .iter()
            .any(|stream| stream.stream == "catalog" && stream.gaps >= 1)
    })
    .await;
    wait_until_up(&downstream).await;
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(
        calls(&spawned, ServiceKind::Product),
        2,
        "what was held before the gap was dropped"
    );
    // And events apply again.
    publish(
        &redis,
        "catalog",
        cloud_event(
            "com.bff.product.changed",
            "p-00011",
            json!({ "product_id": "p-00011", "version": 9, "changed": ["inventory"] }),
        ),
    )
    .await;
    eventually("applied after the restart", || async {
        outcomes(&downstream).0 == 2
    })
    .await;
}

#[tokio::test]
async fn entries_stay_fresh_longer_while_the_events_vouch_for_them_and_not_a_moment_after() {
    let ordinary = Duration::from_millis(300);
    let (spawned, mut redis, downstream) = replica_with(|config| {
        config.cache.max_ttl = ordinary;
        config.cache.event_driven_max_ttl = Duration::from_secs(600);
    })
    .await;
    let id = product_id(21);
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    tokio::time::sleep(ordinary * 2).await;
    let served = downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert!(
        !served.is_stale(),
        "fresh past max_ttl: the events vouch for it"
    );
    assert_eq!(calls(&spawned, ServiceKind::Product), 1);
    assert!(
        downstream
            .metrics()
            .events
            .expect("events on")
            .catalog_healthy
    );

    // The consumer loses Redis: the entry is back to its ordinary freshness at once (stale, and
    // refreshed in the background as any stale entry).
    redis.stop().await.expect("redis stops");
    eventually("the consumers notice", || async {
        let events = downstream.metrics().events.expect("events on");
        events.streams.iter().all(|stream| !stream.up)
    })
    .await;
    let served = downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert!(served.is_stale(), "no longer vouched for");
    assert!(
        !downstream
            .metrics()
            .events
            .expect("events on")
            .catalog_healthy
    );
}

#[tokio::test]
async fn catalog_pages_are_cached_and_dropped_by_the_events_that_touch_them() {
    let (spawned, redis, downstream) = replica_with(|config| {
        config.cache.page_ttl = Duration::from_secs(600);
        config.cache.max_ttl = Duration::from_secs(600);
    })
    .await;
    let list = |query: shared_clients::ProductQuery| {
        let downstream = downstream.clone();
        async move {
            downstream
                .catalog()
                .list(&ctx(), &query)
                .await
                .expect("a page")
        }
    };
    let page_of = |category: Option<shared_clients::CategoryId>| shared_clients::ProductQuery {
        category,
        limit: Some(5),
        ..Default::default()
    };
    let everything = page_of(None);
    let first = list(everything.clone()).await.items[0].clone();
    let home = first.category_id.clone().expect("a category");
    let categories = downstream
        .catalog()
        .categories(&ctx())
        .await
        .expect("categories");
    let other = categories
        .into_inner()
        .iter()
        .map(|category| category.id.clone())
        .find(|id| *id != home)
        .expect("another category");
    for query in [page_of(Some(home.clone())), page_of(Some(other.clone()))] {
        list(query).await;
    }
    let calls_now = || calls(&spawned, ServiceKind::Product);
    // Fetches each of the three pages; answers how many were not cached.
    let fetched = || async {
        let before = calls_now();
        list(everything.clone()).await;
        let unfiltered = calls_now() - before;
        list(page_of(Some(home.clone()))).await;
        let home_page = calls_now() - before - unfiltered;
        list(page_of(Some(other.clone()))).await;
        let other_page = calls_now() - before - unfiltered - home_page;
        (unfiltered, home_page, other_page)
    };
    assert_eq!(fetched().await, (0, 0, 0), "all three pages cached");

    let mut version = 10;
    let mut next = |kind: &str, id: &str, data: serde_json::Value| {
        version += 1;
        let mut data = data;
        data["version"] = json!(version);
        cloud_event(kind, id, data)
    };
    let applied = |n: u64| {
        let downstream = downstream.clone();
        async move {
            eventually("applied", || async { outcomes(&downstream).0 == n }).await;
        }
    };
    // A price change of a product of `home`: it may move in any listing of everything and of
    // its category (newest first), so those go; another category's page stays.
    let event = next(
        "com.bff.product.changed",
        first.id.as_str(),
        json!({ "product_id": first.id.as_str(), "changed": ["price"] }),
    );
    publish(&redis, "catalog", event).await;
    applied(1).await;
    assert_eq!(fetched().await, (1, 1, 0));

    // A product deleted that no page shows: nothing goes.
    let event = next(
        "com.bff.product.deleted",
        "p-00999",
        json!({ "product_id": "p-00999" }),
    );
    publish(&redis, "catalog", event).await;
    applied(2).await;
    assert_eq!(fetched().await, (0, 0, 0));

    // A category renamed: its pages go.
    let event = next(
        "com.bff.category.changed",
        other.as_str(),
        json!({ "category_id": other.as_str() }),
    );
    publish(&redis, "catalog", event).await;
    applied(3).await;
    assert_eq!(fetched().await, (0, 0, 1));
}

#[tokio::test]
async fn a_stream_trimmed_past_the_consumer_is_a_gap_that_drops_what_was_held() {
    let (spawned, redis, downstream) = replica().await;
    let id = product_id(13);
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(calls(&spawned, ServiceKind::Product), 1);
    // Two events appended and all but the last trimmed away at once: the consumer can only read
    // the last one, and must notice what it never saw.
    let mut conn = redis.connection().await.expect("connects");
    let missed = cloud_event(
        "com.bff.product.changed",
        "p-00013",
        json!({ "product_id": "p-00013", "version": 5, "changed": ["price"] }),
    );
    let seen = cloud_event(
        "com.bff.category.changed",
        "c-1",
        json!({ "category_id": "c-1", "version": 2 }),
    );
    let _: () = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg("bff:events:catalog")
        .arg("*")
        .arg("event")
        .arg(missed.to_string())
        .ignore()
        .cmd("XADD")
        .arg("bff:events:catalog")
        .arg("*")
        .arg("event")
        .arg(seen.to_string())
        .ignore()
        .cmd("XTRIM")
        .arg("bff:events:catalog")
        .arg("MAXLEN")
        .arg(1)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("MULTI");
    eventually("the gap is detected", || async {
        let events = downstream.metrics().events.expect("events on");
        events
            .streams
            .iter()
            .any(|stream| stream.stream == "catalog" && stream.gaps == 1)
    })
    .await;
    downstream
        .catalog()
        .product(&ctx(), &id)
        .await
        .expect("found");
    assert_eq!(
        calls(&spawned, ServiceKind::Product),
        2,
        "the product whose change was missed is fetched again"
    );
    // One gap, counted once: later checks find nothing new.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = downstream.metrics().events.expect("events on");
    let catalog = events
        .streams
        .iter()
        .find(|s| s.stream == "catalog")
        .unwrap();
    assert_eq!(catalog.gaps, 1);
}

/// `(INFO, EVALSHA)` calls Redis has run so far (`INFO commandstats`; commands a script runs
/// are counted under their own names, and this `INFO` counts once it has run).
async fn info_and_script_calls(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let calls = |command: &str| {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count"))
    };
    (calls("info"), calls("evalsha"))
}

#[tokio::test]
async fn the_read_script_asks_which_server_answers_after_connecting_and_every_few_seconds_only() {
    // A private standalone Redis whatever the topology: its command counts are the consumers'.
    let redis = LocalRedis::start()
        .await
        .expect("a private Redis starts (./scripts/ensure-redis-server installs it)");
    let spawned = spawn_all(Config::default())
        .await
        .expect("reference services start");
    let config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    let shared = SharedConfig {
        redis_url: Some(RedisUrl::new(redis.url())),
        events_block: Duration::from_millis(200),
        command_timeout: Duration::from_secs(2),
        ..SharedConfig::default()
    };
    let downstream = Downstream::new_shared(&config, &shared).expect("valid settings");
    wait_until_up(&downstream).await;
    let mut conn = redis::Client::open(redis.url())
        .expect("a URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");

    let (infos_before, reads_before) = info_and_script_calls(&mut conn).await;
    let started = tokio::time::Instant::now();
    const EVENTS: u64 = 60;
    for version in 1..=EVENTS {
        let _: String = redis::cmd("XADD")
            .arg("bff:events:catalog")
            .arg("*")
            .arg("event")
            .arg(
                cloud_event(
                    "com.bff.product.changed",
                    "p-00001",
                    json!({ "product_id": "p-00001", "version": version, "changed": ["price"] }),
                )
                .to_string(),
            )
            .query_async(&mut conn)
            .await
            .expect("XADD");
        // One read per event: each waits for the one before to be applied.
        eventually("the change is applied", || async {
            outcomes(&downstream).0 == version
        })
        .await;
    }
    let (infos_after, reads_after) = info_and_script_calls(&mut conn).await;
    let elapsed = started.elapsed();

    let reads = reads_after - reads_before;
    assert!(
        reads >= EVENTS,
        "one read script per event at least: {reads}"
    );
    // Our own `INFO commandstats` before is counted in the second count.
    let infos = infos_after - infos_before - 1;
    // Per stream: the check of a reconnect, if one happened in between, and one per 5 s.
    let checks_per_stream = 2 + elapsed.as_secs() / 5;
    assert!(
        infos <= 3 * checks_per_stream,
        "{infos} INFO calls in {reads} reads over {elapsed:?}: at most {} expected",
        3 * checks_per_stream
    );
    let events = downstream.metrics().events.expect("events on");
    assert!(
        events.streams.iter().all(|stream| stream.gaps == 0),
        "no gap: the same server answered throughout"
    );
}

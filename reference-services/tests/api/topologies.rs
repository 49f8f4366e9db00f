//! The change events published to a Redis Cluster (six local nodes) and through Sentinel (a
//! master, its replica, three sentinels): every stream is read back from the cluster or the
//! master, each event in it once the write was answered and matching the events contract; a
//! master killed fails no write, and publishing reaches the promoted replica by itself.

use std::time::Duration;

use redis::streams::StreamRangeReply;
use reference_services::{
    Config, EventsConfig, LocalRedisCluster, LocalRedisSentinel, ServiceKind,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    bus::assert_event,
    helpers::{TestApp, spawn_app_with},
};

/// How long a failover may take (a node is judged down after 1–2 s, then elected).
const FAILOVER: Duration = Duration::from_secs(30);

/// The services (small world) publishing to `events`.
async fn publishing_to(events: EventsConfig) -> TestApp {
    spawn_app_with(Config {
        products: 1_000,
        users: 60,
        events: Some(events),
        ..Config::default()
    })
    .await
}

/// One change of each service, each answered: a price, a cart line, an order.
async fn change_all_three(app: &TestApp, amount_minor: u64) {
    let product = app.world().regular_product().to_owned();
    let price =
        json!({ "price": { "amount_minor": amount_minor, "currency": app.world().currency() } });
    app.change_product(&product, &price)
        .await
        .assert_status(StatusCode::OK);
    let user = app.world().user_without_cart().to_owned();
    app.add_to_cart(&user, &product, 1)
        .await
        .assert_status(StatusCode::OK);
    let body = app.order_body(&user, json!({ "kind": "web" }));
    let key = uuid::Uuid::new_v4().to_string();
    app.create_order(&[("x-user-id", &user)], &key, &body)
        .await
        .assert_status(StatusCode::CREATED);
}

/// Every event of `stream` (`bff:events:<channel>`) read through `conn`, each checked against
/// the channel's messages.
async fn read_stream(conn: &mut impl redis::aio::ConnectionLike, channel: &str) -> Vec<Value> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("bff:events:{channel}"))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE answers");
    reply
        .ids
        .iter()
        .map(|entry| {
            let text: String = entry.get("event").expect("an `event` field");
            let event: Value = serde_json::from_str(&text).expect("JSON");
            assert_event(channel, &event);
            event
        })
        .collect()
}

/// The types of `events`, in order.
fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().expect("a type"))
        .collect()
}

/// Asserts what [`change_all_three`] published, read through `conn`: the price change, the cart
/// change and the order, in their streams when the writes were answered.
async fn assert_all_three_read(conn: &mut impl redis::aio::ConnectionLike) {
    assert_eq!(
        types(&read_stream(conn, "catalog").await),
        ["com.bff.product.changed"]
    );
    assert_eq!(
        types(&read_stream(conn, "cart").await),
        ["com.bff.cart.changed"]
    );
    assert!(
        types(&read_stream(conn, "order").await).contains(&"com.bff.order.created"),
        "the order's creation is in its stream"
    );
}

/// Changes prices until one change's event is in the catalog stream after the master was
/// killed (events of the failover are dropped and counted, never a failed write).
async fn published_again(app: &TestApp) {
    let admin = app.world().admin(ServiceKind::Product);
    let before = admin.events().published;
    let deadline = tokio::time::Instant::now() + FAILOVER;
    let mut amount = 5_000;
    loop {
        amount += 1;
        let product = app.world().regular_product().to_owned();
        let price =
            json!({ "price": { "amount_minor": amount, "currency": app.world().currency() } });
        app.change_product(&product, &price)
            .await
            .assert_status(StatusCode::OK);
        let stats = admin.events();
        if stats.published > before {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never published again after the failover: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_are_published_to_a_redis_cluster_and_survive_a_master_s_death() {
    let mut cluster = LocalRedisCluster::start().await.expect("a local cluster");
    let app = publishing_to(EventsConfig::cluster(cluster.urls())).await;
    change_all_three(&app, 1_234).await;
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("seed URLs");
    let mut conn = client.get_async_connection().await.expect("connects");
    assert_all_three_read(&mut conn).await;
    for kind in ServiceKind::ALL {
        assert_eq!(app.world().admin(kind).events().failed, 0, "{kind}");
    }

    // The catalog stream's master dies: writes still succeed, and once its replica is promoted
    // the events reach the stream again, without anything restarted.
    let slot = cluster
        .node(0)
        .expect("a node")
        .command("CLUSTER KEYSLOT bff:events:catalog")
        .await
        .expect("answered")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a slot");
    let master = cluster.master_of_slot(slot).await.expect("served");
    cluster.kill(master).await.expect("killed");
    published_again(&app).await;
    cluster.wait_until_ok().await.expect("whole again");
    let mut conn = client.get_async_connection().await.expect("connects");
    let catalog = read_stream(&mut conn, "catalog").await;
    assert!(
        catalog.len() >= 2,
        "the promoted replica holds the event published after the failover"
    );
}

#[tokio::test]
async fn events_are_published_through_sentinel_and_follow_a_failover() {
    let mut setup = LocalRedisSentinel::start().await.expect("sentinels");
    let app = publishing_to(EventsConfig::sentinel(
        LocalRedisSentinel::MASTER_NAME,
        setup.sentinel_urls(),
    ))
    .await;
    change_all_three(&app, 1_234).await;
    let master = redis::Client::open(setup.server(0).expect("master").url()).expect("URL");
    let mut conn = master
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    assert_all_three_read(&mut conn).await;
    for kind in ServiceKind::ALL {
        assert_eq!(app.world().admin(kind).events().failed, 0, "{kind}");
    }

    setup.kill(0).await.expect("killed");
    published_again(&app).await;
    let promoted = setup.server(1).expect("replica").port();
    assert_eq!(setup.master_port().await.expect("named"), promoted);
    let replica = redis::Client::open(setup.server(1).expect("replica").url()).expect("URL");
    let mut conn = replica
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let catalog = read_stream(&mut conn, "catalog").await;
    assert!(
        catalog.len() >= 2,
        "the promoted replica holds the event published after the failover"
    );
}

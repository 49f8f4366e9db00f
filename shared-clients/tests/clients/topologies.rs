//! The shared state on a real Redis Cluster (six local nodes) and behind real Sentinel (a
//! master, a replica, three sentinels): commands, pipelines and scripts over keys of many slots,
//! the catalog shared between replicas, the change events read, and a master killed under
//! load: the features fall back (counted, never failed) and are shared again by themselves
//! once its replica took over; a resharding (`redis-cli --cluster reshard`, 300 slots) under a
//! load of reads, batches, transactions and scripts fails no request.

use std::time::Duration;

use reference_services::{
    Config, LocalRedisCluster, LocalRedisSentinel, ServiceKind, Spawned, spawn_all,
};
use serde_json::json;
use shared_clients::shared_state::{Feature, RedisUrl, SentinelConfig, SharedState};
use shared_clients::{Downstream, DownstreamConfig, ServiceConfig, SharedConfig};

use crate::helpers::{ctx, product_id};

/// How long a failover may take (a node is judged down after 1–2 s, then elected).
const FAILOVER: Duration = Duration::from_secs(30);

/// Shared settings for `topology`, with commands given time (the nodes share two CPUs with
/// the build).
fn shared_config(topology: Topology) -> SharedConfig {
    SharedConfig {
        redis_url: None,
        redis_cluster_nodes: match &topology {
            Topology::Cluster(urls) => urls.iter().map(RedisUrl::new).collect(),
            Topology::Sentinel(_) => Vec::new(),
        },
        redis_sentinel: match topology {
            Topology::Cluster(_) => None,
            Topology::Sentinel(urls) => Some(SentinelConfig {
                master_name: LocalRedisSentinel::MASTER_NAME.to_owned(),
                sentinels: urls.into_iter().map(RedisUrl::new).collect(),
            }),
        },
        command_timeout: Duration::from_secs(2),
        retry_after: Duration::from_millis(200),
        events_block: Duration::from_millis(200),
        ..SharedConfig::default()
    }
}

/// Where the test's Redis is.
enum Topology {
    /// A cluster's seed nodes.
    Cluster(Vec<String>),
    /// The sentinels.
    Sentinel(Vec<String>),
}

/// Runs `SET`, a `MULTI` pipeline and a script on keys of `tags` (spread over the slots), and
/// reads them back: every command succeeds.
async fn commands_pipelines_and_scripts(shared: &SharedState, tags: std::ops::Range<u32>) {
    if let Err(error) = try_commands(shared, tags).await {
        panic!("{error}");
    }
}

/// After a failover: the commands of [`commands_pipelines_and_scripts`] all succeed again
/// within [`FAILOVER`] (a transaction sent to a slot's old master is refused until the
/// client's slot map follows, a counted fallback meanwhile).
async fn all_commands_work_again(shared: &SharedState, tags: std::ops::Range<u32>) {
    let deadline = tokio::time::Instant::now() + FAILOVER;
    while let Err(error) = try_commands(shared, tags.clone()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still failing after the failover: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The commands of [`commands_pipelines_and_scripts`], or what failed first.
async fn try_commands(shared: &SharedState, tags: std::ops::Range<u32>) -> Result<(), String> {
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])",
    );
    for i in tags {
        let tag = format!("u:{i}");
        let (generation, count) = (shared.key(&tag, "gen"), shared.key(&tag, "count"));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&generation)
            .arg(i)
            .ignore()
            .cmd("DEL")
            .arg(&count)
            .ignore();
        let () = shared
            .pipeline("test", Feature::Generations, &pipe)
            .await
            .map_err(|e| format!("a pipeline of tag {tag}: {e}"))?;
        let mut invocation = script.prepare_invoke();
        invocation.key(&generation).key(&count).arg(i + 1);
        let counted: u32 = shared
            .script("test", Feature::Generations, &invocation)
            .await
            .map_err(|e| format!("a script of tag {tag}: {e}"))?;
        assert_eq!(counted, i + 1);
        let stored: u32 = shared
            .query(
                "test",
                Feature::Generations,
                redis::cmd("GET").arg(&generation),
            )
            .await
            .map_err(|e| format!("a read of tag {tag}: {e}"))?;
        assert_eq!(stored, i + 1);
    }
    Ok(())
}

/// A key in the catalog stream's slot (its hash tag is the stream's whole key).
const PROBE: &str = "{bff:events:catalog}:probe";

/// Keeps sending commands (on [`PROBE`]) until one succeeds again after a failover; the
/// failures meanwhile are errors of the shared state (counted fallbacks), never a panic or a
/// hang.
async fn shared_again(shared: &SharedState) {
    let deadline = tokio::time::Instant::now() + FAILOVER;
    loop {
        let set: Result<(), _> = shared
            .query(
                "test",
                Feature::Generations,
                redis::cmd("SET").arg(PROBE).arg(1),
            )
            .await;
        if set.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shared again after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fallbacks counted for generations so far.
fn fallbacks(shared: &SharedState) -> u64 {
    shared
        .metrics()
        .expect("enabled")
        .fallbacks
        .iter()
        .filter(|(feature, _)| *feature == Feature::Generations.as_str())
        .map(|(_, n)| n)
        .sum()
}

/// Two replicas' downstream facades over `shared`, with catalog entries fresh for ten minutes.
fn replicas(spawned: &Spawned, shared: &SharedConfig) -> (Downstream, Downstream) {
    let mut config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    config.cache.max_ttl = Duration::from_secs(600);
    let one = Downstream::new_shared(&config, shared).expect("valid settings");
    let two = Downstream::new_shared(&config, shared).expect("valid settings");
    (one, two)
}

/// Polls `check` until it holds, for at most `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The catalog is shared (one replica's fetch is the other's hit), and a product change
/// appended to the catalog stream (by `publish`) drops the product on both.
async fn catalog_shared_and_events_read<P, Fut>(
    spawned: &Spawned,
    shared: &SharedConfig,
    publish: P,
) -> (Downstream, Downstream)
where
    P: FnOnce(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (one, two) = replicas(spawned, shared);
    for downstream in [&one, &two] {
        eventually("the consumers connect", FAILOVER, || async {
            let events = downstream.metrics().events.expect("events on");
            events.streams.iter().all(|stream| stream.up)
        })
        .await;
    }
    let calls = || spawned.world.admin(ServiceKind::Product).stats().total;
    let id = product_id(7);
    one.catalog().product(&ctx(), &id).await.expect("found");
    two.catalog().product(&ctx(), &id).await.expect("found");
    assert_eq!(calls(), 1, "the second replica read the first one's fetch");
    // A batch: its keys (one hash tag per product) fall in many slots, read and leased in one
    // round trip per slot.
    let ids: Vec<_> = (20..40).map(product_id).collect();
    let found = one.catalog().products(&ctx(), &ids).await.expect("found");
    assert!(found.missing.is_empty());
    let before = calls();
    let found = two.catalog().products(&ctx(), &ids).await.expect("found");
    assert!(found.missing.is_empty());
    assert_eq!(
        calls(),
        before,
        "the second replica read the batch from Redis"
    );

    let changed = json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(),
        "source": "product-service", "type": "com.bff.product.changed",
        "time": "2026-12-06T00:00:00Z", "subject": "p-00007",
        "datacontenttype": "application/json",
        "data": { "product_id": "p-00007", "version": 9, "changed": ["price"] },
    });
    let before = calls();
    publish(changed).await;
    for downstream in [&one, &two] {
        eventually("the change is applied", FAILOVER, || async {
            let events = downstream.metrics().events.expect("events on").events;
            events
                .iter()
                .any(|(_, outcome, n)| *outcome == "applied" && *n >= 1)
        })
        .await;
    }
    one.catalog().product(&ctx(), &id).await.expect("found");
    assert_eq!(calls(), before + 1, "dropped by the event, fetched again");
    (one, two)
}

/// Waits until `downstream`'s catalog consumer counted a gap: another server answers for the
/// stream after the failover, which may have lost events the old one acknowledged.
async fn a_gap_is_counted(downstream: &Downstream) {
    eventually("the failover is a gap", FAILOVER, || async {
        let events = downstream.metrics().events.expect("events on");
        events
            .streams
            .iter()
            .any(|stream| stream.stream == "catalog" && stream.gaps >= 1)
    })
    .await;
}

/// Appends `event` to the catalog stream through `conn`.
async fn xadd(conn: &mut impl redis::aio::ConnectionLike, event: serde_json::Value) {
    let _: String = redis::cmd("XADD")
        .arg("bff:events:catalog")
        .arg("*")
        .arg("event")
        .arg(event.to_string())
        .query_async(conn)
        .await
        .expect("XADD");
}

#[tokio::test]
async fn on_a_cluster_everything_shared_works_and_survives_a_master_s_death() {
    let mut cluster = LocalRedisCluster::start().await.expect("a local cluster");
    let config = shared_config(Topology::Cluster(cluster.urls()));
    config.validate().expect("valid");
    let shared = SharedState::connect(&config).expect("valid settings");
    // The connection is made on first use, and learns the slots then: a transaction sent while
    // it does may be refused (EXECABORT, a counted fallback like any failure).
    shared_again(&shared).await;
    commands_pipelines_and_scripts(&shared, 0..64).await;

    // A gap's clean-up scans every master, not one node.
    shared
        .query::<()>(
            "test",
            Feature::Generations,
            redis::cmd("SET").arg(shared.key("u:0", "gone")).arg(1),
        )
        .await
        .expect("set");
    let spawned = spawn_all(Config::default()).await.expect("services");
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("urls");
    let mut conn = client.get_async_connection().await.expect("connects");
    catalog_shared_and_events_read(&spawned, &config, |event| async move {
        xadd(&mut conn, event).await;
    })
    .await;

    // Kill the master of one of the keys: its commands fail (fallback, counted) until the
    // replica is promoted, then work again without anything restarted.
    let slot = key_slot(&cluster, &shared.key("u:failover", "probe")).await;
    let master = cluster.master_of_slot(slot).await.expect("served");
    let before = fallbacks(&shared);
    cluster.kill(master).await.expect("killed");
    let failed: Result<(), _> = shared
        .query(
            "test",
            Feature::Generations,
            redis::cmd("SET")
                .arg(shared.key("u:failover", "probe"))
                .arg(1),
        )
        .await;
    if failed.is_err() {
        assert!(
            fallbacks(&shared) > before,
            "a failure is a counted fallback"
        );
    }
    shared_again(&shared).await;
    cluster.wait_until_ok().await.expect("whole again");
    all_commands_work_again(&shared, 100..132).await;
}

#[tokio::test]
async fn behind_sentinel_everything_shared_works_and_follows_a_failover() {
    let mut setup = LocalRedisSentinel::start().await.expect("sentinels");
    let config = shared_config(Topology::Sentinel(setup.sentinel_urls()));
    config.validate().expect("valid");
    let shared = SharedState::connect(&config).expect("valid settings");
    commands_pipelines_and_scripts(&shared, 0..16).await;

    let spawned = spawn_all(Config::default()).await.expect("services");
    let master = setup.server(0).expect("master").url();
    let client = redis::Client::open(master).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let (one, _two) = catalog_shared_and_events_read(&spawned, &config, |event| async move {
        xadd(&mut conn, event).await;
    })
    .await;

    let before = fallbacks(&shared);
    setup.kill(0).await.expect("killed");
    let failed: Result<(), _> = shared
        .query(
            "test",
            Feature::Generations,
            redis::cmd("SET").arg(PROBE).arg(1),
        )
        .await;
    assert!(failed.is_err(), "the master is gone");
    assert!(
        fallbacks(&shared) > before,
        "a failure is a counted fallback"
    );
    shared_again(&shared).await;
    let replica = setup.server(1).expect("replica").port();
    assert_eq!(setup.master_port().await.expect("named"), replica);
    a_gap_is_counted(&one).await;
    all_commands_work_again(&shared, 100..116).await;
}

/// The slot the cluster puts `key` in (`CLUSTER KEYSLOT`).
async fn key_slot(cluster: &LocalRedisCluster, key: &str) -> u16 {
    let reply = cluster
        .node(1)
        .expect("a node")
        .command(&format!("CLUSTER KEYSLOT {key}"))
        .await
        .expect("answered");
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a slot number")
}

/// Every Redis fallback `downstream` counted, over all features.
fn all_fallbacks(downstream: &Downstream) -> u64 {
    downstream
        .metrics()
        .redis
        .expect("Redis configured")
        .fallbacks
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// The Redis Cluster slot of a hash tag: CRC16/XMODEM modulo 16384 (the specification's
/// `HASH_SLOT`; checked against `CLUSTER KEYSLOT` by the test that uses it).
fn slot_of_tag(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for byte in tag.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Slots `redis-cli --cluster reshard --cluster-slots 300` takes from the master of slot 0
/// (it moves a source's lowest slots first).
const MOVING: std::ops::Range<u16> = 0..300;

#[tokio::test]
async fn a_resharding_under_load_fails_no_request_and_the_replicas_still_share() {
    let cluster = LocalRedisCluster::start().await.expect("a local cluster");
    let config = shared_config(Topology::Cluster(cluster.urls()));
    let spawned = spawn_all(Config::default()).await.expect("services");
    let shared = SharedState::connect(&config).expect("valid settings");
    shared_again(&shared).await;
    assert_eq!(
        key_slot(&cluster, "{cat:p:p-00001}").await,
        slot_of_tag("cat:p:p-00001")
    );
    let from = cluster.master_of_slot(0).await.expect("served");
    let to = cluster.master_of_slot(16_383).await.expect("served");
    assert_ne!(from, to);

    // Keys in the moving slots, so that the migration takes a while: 300 tags of 100 keys.
    let fill: Vec<String> = (0..)
        .map(|n| format!("fill:{n}"))
        .filter(|tag| MOVING.contains(&slot_of_tag(tag)))
        .take(300)
        .collect();
    let mut conn = redis::cluster::ClusterClient::new(cluster.urls())
        .expect("urls")
        .get_async_connection()
        .await
        .expect("connects");
    for tag in &fill {
        let mut mset = redis::cmd("MSET");
        for k in 0..100 {
            mset.arg(format!("{{{tag}}}:{k}")).arg("x".repeat(64));
        }
        let () = mset.query_async(&mut conn).await.expect("MSET");
    }

    // The load, on the moving slots above all: products whose keys are there, read through two
    // replicas whose entries live 1 ms (so every read goes to Redis: L2 read, lease, publish),
    // batches of them, and a transaction and a script on user tags there.
    let mut moving_products: Vec<_> = (1..=5_000)
        .filter(|n| MOVING.contains(&slot_of_tag(&format!("cat:p:p-{n:05}"))))
        .map(product_id)
        .collect();
    let moving_users: Vec<u32> = (0..)
        .filter(|n| MOVING.contains(&slot_of_tag(&format!("u:{n}"))))
        .take(64)
        .collect();
    assert!(moving_products.len() > 40, "{}", moving_products.len());
    // One of them is kept out of the load, for the check afterwards.
    let untouched = moving_products.pop().expect("a product");
    let mut load_config = DownstreamConfig {
        product: ServiceConfig::with_url(&spawned.product_url),
        cart: ServiceConfig::with_url(&spawned.cart_url),
        order: ServiceConfig::with_url(&spawned.order_url),
        ..DownstreamConfig::default()
    };
    load_config.cache.max_ttl = Duration::from_millis(1);
    let load_replicas = std::sync::Arc::new([
        Downstream::new_shared(&load_config, &config).expect("valid settings"),
        Downstream::new_shared(&load_config, &config).expect("valid settings"),
    ]);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (replicas, shared, done) = (
                std::sync::Arc::clone(&load_replicas),
                shared.clone(),
                std::sync::Arc::clone(&done),
            );
            let (products, users) = (moving_products.clone(), moving_users.clone());
            tokio::spawn(async move {
                let (mut requests, mut failed, mut redis_errors) = (0_u64, Vec::new(), 0_u64);
                let mut n = worker;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = &products[n % products.len()];
                    let replica = &replicas[n % 2];
                    requests += 1;
                    if let Err(error) = replica.catalog().product(&ctx(), id).await {
                        failed.push(format!("{id}: {error}"));
                    }
                    if n % 4 == 0 {
                        let ids: Vec<_> = (0..6)
                            .map(|k| products[(n + k * 7) % products.len()].clone())
                            .collect();
                        requests += 1;
                        if let Err(error) = replica.catalog().products(&ctx(), &ids).await {
                            failed.push(format!("a batch: {error}"));
                        }
                        let tag = users[n % users.len()];
                        if try_commands(&shared, tag..tag + 1).await.is_err() {
                            redis_errors += 1;
                        }
                    }
                    n += 8;
                    // A steady load, not a busy loop that starves the resharding's own process.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (requests, failed, redis_errors)
            })
        })
        .collect();
    let started = tokio::time::Instant::now();
    cluster.reshard(from, to, 300).await.expect("resharded");
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut requests, mut failed, mut redis_errors) = (0, Vec::new(), 0);
    for worker in futures::future::join_all(workers).await {
        let (r, f, e) = worker.expect("no panic");
        requests += r;
        failed.extend(f);
        redis_errors += e;
    }
    assert_eq!(
        cluster.master_of_slot(0).await.expect("served"),
        to,
        "moved"
    );
    assert_eq!(
        cluster.master_of_slot(299).await.expect("served"),
        to,
        "moved"
    );
    assert!(
        requests > 100,
        "a load ran during the resharding: {requests}"
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    eprintln!(
        "resharding took {took:?} under {requests} requests; Redis fallbacks {} + {} ({:?}), shared transactions or scripts that failed: {redis_errors}",
        all_fallbacks(&load_replicas[0]),
        all_fallbacks(&load_replicas[1]),
        load_replicas[0].metrics().redis.map(|redis| redis.errors),
    );
    let moved: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    assert!(moved >= 30_000, "the keys moved with their slots: {moved}");

    // Sharing still works on the moved slots: a product one replica fetches is the other's L2
    // hit, and every transaction and script runs.
    // (Only requests for this product count: the load's replicas may still be refreshing
    // theirs in the background.)
    let (one, two) = replicas(&spawned, &config);
    let path = format!("/products/{untouched}");
    let calls = || {
        let log = spawned.world.admin(ServiceKind::Product).requests();
        log.iter().filter(|request| request.path == path).count()
    };
    one.catalog()
        .product(&ctx(), &untouched)
        .await
        .expect("found");
    two.catalog()
        .product(&ctx(), &untouched)
        .await
        .expect("found");
    assert_eq!(calls(), 1, "the second replica read the first one's fetch");
    for tag in moving_users {
        commands_pipelines_and_scripts(&shared, tag..tag + 1).await;
    }
}

/// The price of `p-00001` changed through the reference services (which publish the event).
async fn change_price(spawned: &Spawned, amount_minor: i64) {
    let change = reference_services::product::ProductChange {
        price: Some(reference_services::product::Money {
            amount_minor,
            currency: "EUR".to_owned(),
        }),
        ..Default::default()
    };
    spawned
        .world
        .change_product("p-00001", &change)
        .await
        .expect("changed");
}

#[tokio::test]
async fn on_a_cluster_with_the_default_command_timeout_the_event_consumer_waits_without_failing() {
    // The default command timeout (50 ms) is far shorter than a blocking read (1 s): the
    // consumer's connection must not be cut off by it (it was: every XREAD BLOCK failed, the
    // consumer reconnected after 500 ms, and changes arrived late).
    let cluster = LocalRedisCluster::start().await.expect("a local cluster");
    let config = SharedConfig {
        redis_cluster_nodes: cluster.urls().iter().map(RedisUrl::new).collect(),
        ..SharedConfig::default()
    };
    assert_eq!(config.command_timeout, Duration::from_millis(50));
    let spawned = spawn_all(Config {
        events: Some(reference_services::EventsConfig::cluster(cluster.urls())),
        ..Config::default()
    })
    .await
    .expect("services");
    let (one, _two) = replicas(&spawned, &config);
    eventually("the consumers connect", FAILOVER, || async {
        let events = one.metrics().events.expect("events on");
        events.streams.iter().all(|stream| stream.up)
    })
    .await;
    let id = product_id(1);
    for amount in [1_001, 1_002, 1_003] {
        one.catalog().product(&ctx(), &id).await.expect("found");
        // Longer than three blocking reads: each must still be waiting, not failed.
        let waited_since = tokio::time::Instant::now();
        while waited_since.elapsed() < Duration::from_millis(300) {
            let events = one.metrics().events.expect("events on");
            assert!(
                events.streams.iter().all(|stream| stream.up),
                "a consumer dropped its connection while waiting: {:?}",
                events.streams
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        change_price(&spawned, amount).await;
        eventually("the change is applied", FAILOVER, || async {
            let product = one.catalog().product(&ctx(), &id).await.expect("found");
            product.into_inner().price.amount_minor == amount
        })
        .await;
    }
}

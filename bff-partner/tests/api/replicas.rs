//! Quotas across replicas: three replicas of the gateway over one private Redis keep one bucket
//! per key; while Redis is down each replica keeps its own with the quota divided by
//! `shared.replicas`; a value not ours under a quota key is a counted fallback, never an error.

use std::time::{Duration, Instant};

use bff_partner::{
    PartnerConfig, PartnerSettings,
    config::{KeyConfig, RateLimitConfig},
    hash_key,
};
use reqwest::{Client, StatusCode, header::HeaderMap};
use server_kit::testing::{Replicas, sample, scrape, spawn_replicas};
use shared_clients::PartnerId;

use crate::helpers::{assert_problem, header};

/// The key of the round-robin test and of the outage (the one polled until Redis is back).
const KEY: &str = "replicas-test-key-quota-shared-by-all-a";
/// A key used only once Redis is back after the outage, so its shared bucket starts full.
const FRESH_KEY: &str = "replicas-test-key-quota-shared-by-all-b";
/// How many replicas run.
const REPLICAS: usize = 3;
/// The burst of both keys, refilled at [`PER_SECOND`].
const BURST: u32 = 6;
/// The rate of both keys: slow, so that little refills while a test runs.
const PER_SECOND: u32 = 1;
/// Each replica's burst while Redis is down: `BURST / REPLICAS`.
const DIVIDED_BURST: u32 = BURST / REPLICAS as u32;

/// Three replicas over one Redis, with [`KEY`] and [`FRESH_KEY`] at `BURST` per `PER_SECOND`,
/// replicas told they are three, a short back-off after a Redis failure, and a command timeout
/// long enough that a busy test machine does not make a command fall back.
async fn spawn(count: usize) -> Replicas<PartnerConfig> {
    let services = reference_services::Config {
        products: 50,
        users: 5,
        ..reference_services::Config::default()
    };
    spawn_replicas(
        services,
        count,
        |settings: &mut PartnerSettings| {
            let quota = RateLimitConfig {
                per_second: PER_SECOND,
                burst: BURST,
            };
            settings.gateway.keys = [KEY, FRESH_KEY]
                .into_iter()
                .map(|key| KeyConfig {
                    sha256: hash_key(key),
                    partner_id: PartnerId::parse("partner-initech").expect("partner id"),
                    scopes: vec![bff_partner::auth::Scope::CatalogRead],
                    rate_limit: Some(quota),
                })
                .collect();
            settings.shared.replicas = REPLICAS as u32;
            settings.shared.retry_after = Duration::from_millis(200);
            settings.shared.command_timeout = Duration::from_secs(1);
            // One connection: once a command succeeds after an outage, the next ones do too.
            settings.shared.connections = 1;
        },
        bff_partner::build,
    )
    .await
}

/// `GET /v2/categories` on `base` with `key`; asserts it is not a 5xx.
async fn get(client: &Client, base: &str, key: &str) -> reqwest::Response {
    let response = client
        .get(format!("{base}/v2/categories"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert!(
        !response.status().is_server_error(),
        "{}",
        response.status()
    );
    response
}

/// The `r` and `t` of a `RateLimit` header.
fn ratelimit(headers: &HeaderMap) -> (u32, u64) {
    let value = header(headers, "ratelimit");
    let field = |name: &str| {
        value
            .split(';')
            .find_map(|part| part.strip_prefix(name))
            .and_then(|number| number.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {value}"))
    };
    (u32::try_from(field("r=")).expect("r fits"), field("t="))
}

/// Asserts a 429 from a bucket of `burst` refilled at one per second, stating the configured
/// policy: `Retry-After: 1`, nothing remaining, and the bucket full again in `burst` seconds.
async fn assert_refused(response: reqwest::Response, burst: u32) {
    let (_, headers) = assert_problem(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "v2",
        "rate-limited",
    )
    .await;
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(ratelimit(&headers), (0, u64::from(burst)));
    assert_policy(&headers);
}

/// Asserts the configured policy: `BURST` requests, refilled from empty in `BURST` seconds.
fn assert_policy(headers: &HeaderMap) {
    assert_eq!(
        header(headers, "ratelimit-policy"),
        format!("\"default\";q={BURST};w={}", BURST / PER_SECOND)
    );
}

/// The most requests a bucket of `burst` refilled at [`PER_SECOND`] allows in `elapsed`.
fn allowance(burst: u32, elapsed: Duration) -> u32 {
    burst + (elapsed.as_secs_f64() * f64::from(PER_SECOND)).floor() as u32
}

/// `bff_redis_fallback_total{feature="quotas"}` of each replica.
async fn quota_fallbacks(client: &Client, replicas: &Replicas<PartnerConfig>) -> Vec<f64> {
    let mut counts = Vec::with_capacity(replicas.metrics_urls.len());
    for url in &replicas.metrics_urls {
        let text = scrape(client, url).await;
        counts.push(sample(
            &text,
            "bff_redis_fallback_total",
            &[("feature", "quotas")],
        ));
    }
    counts
}

/// `bff_redis_errors_total{op="quota"}` of the replica whose metrics are at `url`.
async fn quota_errors(client: &Client, url: &str) -> f64 {
    sample(
        &scrape(client, url).await,
        "bff_redis_errors_total",
        &[("op", "quota")],
    )
}

/// The Redis key of `key`'s bucket (default prefix).
fn bucket_key(key: &str) -> String {
    format!("bff:{{q:{}}}:gcra", hash_key(key))
}

/// Sends `3 × BURST` requests with `key` over the replicas in turn and asserts that together
/// they allowed one bucket's worth: the first `BURST` (each leaving at least what one shared
/// bucket would), then at most what refilled meanwhile, the rest refused with exact headers.
async fn assert_one_bucket(client: &Client, replicas: &Replicas<PartnerConfig>, key: &str) {
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..3 * BURST {
        let base = &replicas.bases[i as usize % replicas.bases.len()];
        let response = get(client, base, key).await;
        if response.status() == StatusCode::OK {
            let (remaining, _) = ratelimit(response.headers());
            assert_policy(response.headers());
            assert!(remaining < BURST, "{remaining}");
            if i < BURST {
                // A per-replica bucket (of the divided quota, say) would have less left.
                assert!(remaining >= BURST - 1 - i, "request {i}: r={remaining}");
            }
            allowed += 1;
        } else {
            assert!(i >= BURST, "request {i} of a full bucket was refused");
            assert_refused(response, BURST).await;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        allowed <= allowance(BURST, elapsed),
        "{allowed} allowed in {elapsed:?}: more than one bucket of {BURST}"
    );
}

#[tokio::test]
async fn a_burst_sent_round_robin_over_three_replicas_is_allowed_once() {
    let replicas = spawn(REPLICAS).await;
    let client = Client::new();

    assert_one_bucket(&client, &replicas, KEY).await;

    // Every decision was Redis', and the bucket expires once it would be full again.
    assert_eq!(
        quota_fallbacks(&client, &replicas).await,
        vec![0.0; REPLICAS]
    );
    let pttl = replicas
        .redis
        .command(&format!("PTTL {}", bucket_key(KEY)))
        .await
        .expect("PTTL");
    let pttl: i64 = pttl
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("{pttl}"));
    let longest = i64::from(BURST / PER_SECOND) * 1000 + 1000;
    assert!((1..=longest).contains(&pttl), "{pttl}");
}

#[tokio::test]
async fn while_redis_is_down_each_replica_allows_its_share_until_redis_is_back() {
    let mut replicas = spawn(REPLICAS).await;
    let client = Client::new();
    for base in &replicas.bases {
        assert_eq!(get(&client, base, KEY).await.status(), StatusCode::OK);
    }
    assert_eq!(
        quota_fallbacks(&client, &replicas).await,
        vec![0.0; REPLICAS]
    );

    replicas.redis.stop().await.expect("redis stops");
    let tries = DIVIDED_BURST + 2;
    for base in &replicas.bases {
        let started = Instant::now();
        let mut allowed = 0;
        for i in 0..tries {
            let response = get(&client, base, KEY).await;
            if response.status() == StatusCode::OK {
                allowed += 1;
            } else {
                assert!(
                    i >= DIVIDED_BURST,
                    "request {i} of a full bucket was refused"
                );
                assert_refused(response, DIVIDED_BURST).await;
            }
        }
        let elapsed = started.elapsed();
        assert!(allowed >= DIVIDED_BURST, "{allowed}");
        assert!(
            allowed <= allowance(DIVIDED_BURST, elapsed),
            "{allowed} allowed in {elapsed:?} by one replica while Redis is down"
        );
    }
    // Every one of those requests fell back, on the replica that answered it.
    assert_eq!(
        quota_fallbacks(&client, &replicas).await,
        vec![f64::from(tries); REPLICAS]
    );
    for url in &replicas.metrics_urls {
        assert!(quota_errors(&client, url).await >= 1.0);
    }

    replicas.redis.restart().await.expect("redis restarts");
    // Each replica tries Redis again once its back-off (200 ms) is over: poll until a request
    // to it no longer falls back.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (replica, base) in replicas.bases.iter().enumerate() {
        loop {
            let before = quota_fallbacks(&client, &replicas).await[replica];
            get(&client, base, KEY).await;
            if quota_fallbacks(&client, &replicas).await[replica] == before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} still falls back after Redis restarted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Global again: one bucket for every replica, and nothing falls back.
    let fallbacks = quota_fallbacks(&client, &replicas).await;
    assert_one_bucket(&client, &replicas, FRESH_KEY).await;
    assert_eq!(quota_fallbacks(&client, &replicas).await, fallbacks);
}

#[tokio::test]
async fn a_value_not_ours_under_a_quota_key_is_a_counted_fallback() {
    let replicas = spawn(1).await;
    let client = Client::new();
    let base = &replicas.bases[0];
    let metrics_url = &replicas.metrics_urls[0];
    let key = bucket_key(KEY);

    let not_a_number = [format!("SET {key} not-a-number")];
    let not_a_string = [format!("DEL {key}"), format!("HSET {key} field value")];
    for (garbage, count) in [
        (not_a_number.as_slice(), 1.0),
        (not_a_string.as_slice(), 2.0),
    ] {
        for command in garbage {
            let reply = replicas.redis.command(command).await.expect("garbage");
            assert!(!reply.starts_with('-'), "{command}: {reply}");
        }
        let response = get(&client, base, KEY).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_policy(response.headers());
        assert_eq!(quota_fallbacks(&client, &replicas).await, vec![count]);
        assert_eq!(quota_errors(&client, metrics_url).await, count);

        // The value was removed: the next request is shared again, and stores a number.
        assert_eq!(get(&client, base, KEY).await.status(), StatusCode::OK);
        assert_eq!(quota_fallbacks(&client, &replicas).await, vec![count]);
        let stored = replicas
            .redis
            .command(&format!("GET {key}"))
            .await
            .expect("GET");
        let number = stored.lines().nth(1).unwrap_or_default();
        assert!(number.parse::<u64>().is_ok(), "{stored}");
    }
}

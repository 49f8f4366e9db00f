//! Per-key quotas: token buckets, kept in this process or shared by every replica in Redis, and
//! the `RateLimit-Policy` / `RateLimit` headers.
//!
//! Each key has a bucket of `burst` tokens refilled at `per_second`; a request takes one token or
//! is refused with 429 and `Retry-After` (seconds until a token is back). The limiter is behind the
//! [`RateLimiter`] trait; [`limiter`] picks one for the gateway's [`SharedState`]:
//!
//! - **No Redis configured** (`shared.redis_url` unset): [`InProcessLimiter`], buckets in this
//!   process. N replicas then allow N times the quota.
//! - **Redis configured**: [`SharedLimiter`], one bucket per key for every replica, so the quota
//!   holds however many replicas there are. Each request runs one Lua script ([`SCRIPT`], by
//!   `EVALSHA`) on the key `<prefix>{q:<key id>}:gcra` (the key id is the configured SHA-256 of
//!   the API key, never the key). The bucket is kept as a GCRA: one number, the bucket's
//!   *theoretical arrival time* (TAT), in microseconds of **Redis' clock** (`TIME`), so the
//!   replicas' clocks do not matter. A token is `T = floor(1e6 / per_second)` µs (at least 1);
//!   the bucket is full when TAT ≤ now and lacks `(TAT - now) / T` tokens otherwise. A request is
//!   allowed when `max(TAT, now) + T - now ≤ burst × T`, which then becomes the new TAT; a refused
//!   request changes nothing. The key expires once the bucket would be full again plus
//!   [`TTL_MARGIN`], so idle keys vanish. The script answers whether the request is allowed and
//!   how long until the bucket is full, from which [`Gcra::decision`] makes the same [`Decision`]
//!   as the in-process bucket (exactly, when `per_second` divides 1 000 000; otherwise a token
//!   is up to 1 µs shorter, never longer).
//! - **Redis configured but failing** (error, timeout, or the back-off after one, see
//!   [`shared_clients::shared_state`]): the request is decided by an in-process bucket whose
//!   burst and rate are the configured ones divided by `shared.replicas` (each at least 1), so the
//!   replicas together allow about the configured quota. Those buckets are separate from the
//!   shared ones: nothing is carried over in either direction, and a Redis that comes back empty
//!   starts every key with a full bucket. Each such request is counted in
//!   `bff_redis_fallback_total{feature="quotas"}` (and its failure in
//!   `bff_redis_errors_total{op="quota"}`). The headers still state the configured policy.
//! - **A value not ours under the key** (not a number, or not a string at all): the script deletes
//!   it and fails, so this one request falls back (counted like any script error) and the next one
//!   starts a full shared bucket. A number out of range is clamped (a TAT in the past is a full
//!   bucket, one too far ahead an empty one), never an error.
//!
//! Headers follow the IETF draft "RateLimit header fields for HTTP"
//! (draft-ietf-httpapi-ratelimit-headers-09), whose fields are structured-field lists:
//!
//! - `RateLimit-Policy: "default";q=20;w=2`: the policy named `default` allows a quota `q` of 20
//!   requests per window `w` of 2 seconds. For a token bucket, `q` is the burst and `w` the time
//!   the bucket takes to refill from empty (`ceil(burst / per_second)`), so the sustained rate is
//!   `q / w`.
//! - `RateLimit: "default";r=7;t=1`: `r` requests remain right now; `t` seconds until the bucket is
//!   full again.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use shared_clients::{
    SharedState,
    shared_state::{Feature, SharedError},
};
use tokio::{sync::Mutex, time::Instant};

use crate::config::RateLimitConfig;

/// The `RateLimit-Policy` header.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The name of the (only) policy in the headers.
const POLICY_NAME: &str = "default";

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// How long until the bucket is full again (the `t` of `RateLimit`).
    pub reset: Duration,
    /// When refused: how long until a token is back (`Retry-After`).
    pub retry_after: Duration,
}

/// Decides whether a key may make another request.
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one token from `key`'s bucket of shape `quota`, or refuses.
    fn acquire<'a>(&'a self, key: &'a str, quota: RateLimitConfig) -> BoxFuture<'a, Decision>;
}

/// Token buckets kept in this process, one per key.
#[derive(Debug, Default)]
pub struct InProcessLimiter {
    /// Key id → bucket. Keys come from configuration, so this map is bounded.
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in the bucket (fractional: refill is continuous).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl InProcessLimiter {
    /// An empty limiter: every key starts with a full bucket.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RateLimiter for InProcessLimiter {
    fn acquire<'a>(&'a self, key: &'a str, quota: RateLimitConfig) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let now = Instant::now();
            let rate = f64::from(quota.per_second.max(1));
            let burst = f64::from(quota.burst.max(1));
            let mut buckets = self.buckets.lock().await;
            let bucket = match buckets.get_mut(key) {
                Some(bucket) => bucket,
                None => buckets.entry(Arc::from(key)).or_insert(Bucket {
                    tokens: burst,
                    updated: now,
                }),
            };
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.updated = now;
            let allowed = bucket.tokens >= 1.0;
            if allowed {
                bucket.tokens -= 1.0;
            }
            let tokens = bucket.tokens;
            Decision {
                allowed,
                remaining: tokens.floor() as u32,
                reset: Duration::from_secs_f64(((burst - tokens) / rate).max(0.0)),
                retry_after: Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.0)),
            }
        })
    }
}

/// How long a shared bucket's key outlives the moment the bucket would be full again.
pub const TTL_MARGIN: Duration = Duration::from_secs(1);

/// The operation name of the script in `bff_redis_errors_total{op}`.
const OP: &str = "quota";

/// The shared bucket of one key: takes a token or refuses, in one step on the Redis server.
///
/// `KEYS[1]`: the key holding the bucket's TAT (µs of Redis time). `ARGV`: `T` (µs per token),
/// the burst, the TTL margin (ms), and optionally the time to use instead of `TIME` (tests
/// only). Answers `{allowed (0 or 1), µs until the bucket is full}`. A value not ours under the
/// key is deleted and the script fails (the caller falls back for this one request).
pub const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local margin_ms = tonumber(ARGV[3])
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local limit = interval * burst
local stored = redis.pcall('GET', KEYS[1])
local tat = now
if type(stored) == 'table' then
  redis.call('DEL', KEYS[1])
  return redis.error_reply('ERR quota state of the wrong type (removed)')
elseif stored then
  local value = tonumber(stored)
  if value == nil or value ~= value then
    redis.call('DEL', KEYS[1])
    return redis.error_reply('ERR quota state is not a number (removed)')
  end
  tat = math.max(now, math.min(math.floor(value), now + limit))
end
local debt = tat - now
if debt + interval > limit then
  return {0, debt}
end
debt = debt + interval
redis.call('SET', KEYS[1], string.format('%.0f', now + debt),
  'PX', math.ceil(debt / 1000) + margin_ms)
return {1, debt}
";

/// A quota as the shared script counts it: whole microseconds per token and the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds per token, `floor(1e6 / per_second)`, at least 1: whole, so that the script
    /// counts in exact integers.
    pub interval_us: u64,
    /// The bucket's size, at least 1.
    pub burst: u64,
}

impl Gcra {
    /// The shape of `quota`.
    pub fn of(quota: RateLimitConfig) -> Self {
        Self {
            interval_us: (1_000_000 / u64::from(quota.per_second.max(1))).max(1),
            burst: u64::from(quota.burst.max(1)),
        }
    }

    /// The decision for a request the script `allowed` (or not), with the bucket `debt_us`
    /// microseconds from full afterwards: the same as [`InProcessLimiter`]'s for the same bucket.
    /// With `tokens = burst - debt / T` left: `remaining` is `floor(tokens)`, `reset` the debt,
    /// and `retry_after` the time until one whole token is there, `(1 - tokens) × T`, or zero.
    pub fn decision(self, allowed: bool, debt_us: u64) -> Decision {
        let full = self.interval_us * self.burst;
        let debt = debt_us.min(full);
        let missing = debt.div_ceil(self.interval_us);
        let remaining = self.burst.saturating_sub(missing);
        let retry_after = debt.saturating_sub((self.burst - 1) * self.interval_us);
        Decision {
            allowed,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_micros(debt),
            retry_after: Duration::from_micros(retry_after),
        }
    }
}

/// The quota each of `replicas` enforces alone while Redis fails: burst and rate divided, each
/// at least 1.
pub fn divided(quota: RateLimitConfig, replicas: u32) -> RateLimitConfig {
    let replicas = replicas.max(1);
    RateLimitConfig {
        per_second: (quota.per_second / replicas).max(1),
        burst: (quota.burst / replicas).max(1),
    }
}

/// The limiter for a gateway over `shared`: [`SharedLimiter`] when Redis is configured,
/// [`InProcessLimiter`] otherwise.
pub fn limiter(shared: &SharedState) -> Arc<dyn RateLimiter> {
    if shared.is_enabled() {
        Arc::new(SharedLimiter::new(shared.clone()))
    } else {
        Arc::new(InProcessLimiter::new())
    }
}

/// One bucket per key for every replica, in Redis; per replica, with a divided quota, while
/// Redis fails.
pub struct SharedLimiter {
    /// Where the buckets are, with its timeout, back-off and counters.
    shared: SharedState,
    /// [`SCRIPT`], with its SHA-1 computed once.
    script: redis::Script,
    /// Decides while Redis fails, with the quota divided by `shared.replicas`.
    fallback: InProcessLimiter,
}

impl SharedLimiter {
    /// A limiter keeping its buckets in `shared` (which should be enabled; a disabled one makes
    /// every decision a fallback's).
    pub fn new(shared: SharedState) -> Self {
        Self {
            shared,
            script: redis::Script::new(SCRIPT),
            fallback: InProcessLimiter::new(),
        }
    }

    /// The Redis key of `key`'s bucket: `<prefix>{q:<key id>}:gcra`.
    pub fn bucket_key(&self, key: &str) -> String {
        self.shared.key(&format!("q:{key}"), "gcra")
    }

    /// Takes a token from `key`'s shared bucket (at `now_us` of Redis time when given: tests),
    /// or falls back to the divided in-process bucket.
    async fn acquire_at(&self, key: &str, quota: RateLimitConfig, now_us: Option<u64>) -> Decision {
        match self.acquire_shared(key, quota, now_us).await {
            Ok(decision) => decision,
            Err(_) => {
                let quota = divided(quota, self.shared.replicas());
                self.fallback.acquire(key, quota).await
            }
        }
    }

    /// Runs the script for `key`'s shared bucket. Errors are counted by [`SharedState`]; an
    /// answer of the wrong shape is counted here.
    async fn acquire_shared(
        &self,
        key: &str,
        quota: RateLimitConfig,
        now_us: Option<u64>,
    ) -> Result<Decision, SharedError> {
        let gcra = Gcra::of(quota);
        let bucket_key = self.bucket_key(key);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&bucket_key)
            .arg(gcra.interval_us)
            .arg(gcra.burst)
            .arg(u64::try_from(TTL_MARGIN.as_millis()).unwrap_or(u64::MAX));
        if let Some(now_us) = now_us {
            invocation.arg(now_us);
        }
        let (allowed, debt_us): (i64, i64) =
            self.shared.script(OP, Feature::Quotas, &invocation).await?;
        match (allowed, u64::try_from(debt_us)) {
            (0 | 1, Ok(debt_us)) => Ok(gcra.decision(allowed == 1, debt_us)),
            _ => {
                self.shared.count_garbage(OP, Feature::Quotas);
                Err(SharedError::Redis("unexpected answer".to_owned()))
            }
        }
    }
}

impl RateLimiter for SharedLimiter {
    fn acquire<'a>(&'a self, key: &'a str, quota: RateLimitConfig) -> BoxFuture<'a, Decision> {
        Box::pin(self.acquire_at(key, quota, None))
    }
}

/// The headers this module sets, so that rendering an error keeps them.
pub fn header_names() -> [HeaderName; 2] {
    [RATELIMIT_POLICY, RATELIMIT]
}

/// Whole seconds, rounded up (a client waiting that long is never early).
pub fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` for `quota` and `decision`.
pub fn add_headers(headers: &mut HeaderMap, quota: RateLimitConfig, decision: &Decision) {
    let window = u64::from(quota.burst).div_ceil(u64::from(quota.per_second.max(1)));
    let policy = format!("\"{POLICY_NAME}\";q={};w={window}", quota.burst);
    let current = format!(
        "\"{POLICY_NAME}\";r={};t={}",
        decision.remaining,
        ceil_secs(decision.reset)
    );
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, current)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: RateLimitConfig = RateLimitConfig {
        per_second: 2,
        burst: 3,
    };

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_the_burst_then_refuses() {
        let limiter = InProcessLimiter::new();
        for remaining in [2, 1, 0] {
            let decision = limiter.acquire("k", QUOTA).await;
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = limiter.acquire("k", QUOTA).await;
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.reset, Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_configured_rate() {
        let limiter = InProcessLimiter::new();
        for _ in 0..3 {
            assert!(limiter.acquire("k", QUOTA).await.allowed);
        }
        assert!(!limiter.acquire("k", QUOTA).await.allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.acquire("k", QUOTA).await.allowed);
        assert!(!limiter.acquire("k", QUOTA).await.allowed);
        // Never more than the burst, however long the pause.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limiter.acquire("k", QUOTA).await.remaining, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_buckets() {
        let limiter = InProcessLimiter::new();
        for _ in 0..3 {
            assert!(limiter.acquire("a", QUOTA).await.allowed);
        }
        assert!(!limiter.acquire("a", QUOTA).await.allowed);
        assert!(limiter.acquire("b", QUOTA).await.allowed);
    }

    /// Steps through one bucket of [`QUOTA`]: wait this many milliseconds, take a token, expect
    /// `(allowed, remaining, reset in ms, retry_after in ms)`. Both limiters must agree on each.
    const STEPS: [(u64, (bool, u32, u64, u64)); 8] = [
        (0, (true, 2, 500, 0)),
        (0, (true, 1, 1000, 0)),
        (0, (true, 0, 1500, 500)),
        (0, (false, 0, 1500, 500)),
        (250, (false, 0, 1250, 250)),
        (250, (true, 0, 1500, 500)),
        (750, (true, 0, 1250, 250)),
        (60_000, (true, 2, 500, 0)),
    ];

    /// The decision a step expects.
    fn expected((allowed, remaining, reset_ms, retry_ms): (bool, u32, u64, u64)) -> Decision {
        Decision {
            allowed,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_process_bucket_takes_the_steps() {
        let limiter = InProcessLimiter::new();
        for (i, (after_ms, decision)) in STEPS.into_iter().enumerate() {
            tokio::time::advance(Duration::from_millis(after_ms)).await;
            let got = limiter.acquire("k", QUOTA).await;
            assert_eq!(got, expected(decision), "step {i}");
        }
    }

    /// A private Redis and a limiter over it (whose fallback divides by `replicas`).
    async fn shared_limiter(replicas: u32) -> (reference_services::LocalRedis, SharedLimiter) {
        let redis = reference_services::LocalRedis::start()
            .await
            .expect("a private redis-server starts");
        let config = shared_clients::SharedConfig {
            redis_url: Some(shared_clients::shared_state::RedisUrl::new(redis.url())),
            command_timeout: Duration::from_secs(2),
            replicas,
            ..Default::default()
        };
        let shared = SharedState::connect(&config).expect("a Redis URL");
        (redis, SharedLimiter::new(shared))
    }

    /// Some instant of Redis time, in µs.
    const NOW_US: u64 = 1_700_000_000_000_000;

    #[tokio::test]
    async fn the_script_takes_the_same_steps_in_redis_time() {
        let (_redis, limiter) = shared_limiter(1).await;
        let mut now = NOW_US;
        for (i, (after_ms, decision)) in STEPS.into_iter().enumerate() {
            now += after_ms * 1000;
            let got = limiter.acquire_at("k", QUOTA, Some(now)).await;
            assert_eq!(got, expected(decision), "step {i}");
        }
        // Another key has its own bucket.
        let other = limiter.acquire_at("other", QUOTA, Some(now)).await;
        assert_eq!(other.remaining, 2);
        assert_eq!(limiter.shared.metrics().unwrap().errors, vec![]);
    }

    #[tokio::test]
    async fn a_bucket_expires_once_full_again_plus_the_margin() {
        let (redis, limiter) = shared_limiter(1).await;
        for _ in 0..2 {
            assert!(limiter.acquire("k", QUOTA).await.allowed);
        }
        let key = limiter.bucket_key("k");
        assert!(key.starts_with("bff:{q:k}:"), "{key}");
        let pttl = redis.command(&format!("PTTL {key}")).await.unwrap();
        let pttl: u64 = pttl.trim().trim_start_matches(':').parse().unwrap();
        // Two tokens short: full again in about 1 s, then the margin.
        assert!((1..=2000).contains(&pttl), "{pttl}");
        assert!(pttl > 1500, "{pttl}");
    }

    #[tokio::test]
    async fn a_stored_time_out_of_range_is_clamped_to_an_empty_or_full_bucket() {
        let (redis, limiter) = shared_limiter(1).await;
        let key = limiter.bucket_key("k");
        redis.command(&format!("SET {key} 1e300")).await.unwrap();
        let empty = limiter.acquire_at("k", QUOTA, Some(NOW_US)).await;
        assert_eq!(empty, expected((false, 0, 1500, 500)));
        redis.command(&format!("SET {key} -5")).await.unwrap();
        let full = limiter.acquire_at("k", QUOTA, Some(NOW_US)).await;
        assert_eq!(full, expected((true, 2, 500, 0)));
        assert_eq!(limiter.shared.metrics().unwrap().errors, vec![]);
    }

    #[tokio::test]
    async fn a_value_not_ours_is_removed_and_this_request_falls_back() {
        let (redis, limiter) = shared_limiter(1).await;
        let key = limiter.bucket_key("k");
        for (n, garbage) in [format!("SET {key} abc"), format!("HSET {key} f v")]
            .iter()
            .enumerate()
        {
            redis.command(&format!("DEL {key}")).await.unwrap();
            redis.command(garbage).await.unwrap();
            // Decided in process (a full bucket there), counted, and the value is gone.
            assert!(limiter.acquire_at("k", QUOTA, Some(NOW_US)).await.allowed);
            let metrics = limiter.shared.metrics().unwrap();
            assert_eq!(metrics.errors, vec![("quota", n as u64 + 1)]);
            assert!(
                redis
                    .command(&format!("GET {key}"))
                    .await
                    .unwrap()
                    .starts_with("$-1")
            );
            // The next request starts a shared bucket.
            let shared = limiter.acquire_at("k", QUOTA, Some(NOW_US)).await;
            assert_eq!(shared, expected((true, 2, 500, 0)));
            assert_eq!(limiter.shared.metrics().unwrap().errors, metrics.errors);
        }
    }

    #[tokio::test]
    async fn without_redis_each_replica_allows_its_share() {
        // Nothing listens on port 1.
        let config = shared_clients::SharedConfig {
            redis_url: Some(shared_clients::shared_state::RedisUrl::new(
                "redis://127.0.0.1:1",
            )),
            replicas: 3,
            ..Default::default()
        };
        let limiter = SharedLimiter::new(SharedState::connect(&config).unwrap());
        let quota = RateLimitConfig {
            per_second: 3,
            burst: 6,
        };
        // Two of six: the divided bucket.
        assert_eq!(limiter.acquire("k", quota).await.remaining, 1);
        assert_eq!(limiter.acquire("k", quota).await.remaining, 0);
        let refused = limiter.acquire("k", quota).await;
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::from_millis(500),
            "{refused:?}"
        );
        let fallbacks = limiter.shared.metrics().unwrap().fallbacks;
        assert!(fallbacks.contains(&("quotas", 3)), "{fallbacks:?}");
    }

    #[test]
    fn a_quota_is_divided_among_replicas_at_least_one_each() {
        let quota = |per_second, burst| RateLimitConfig { per_second, burst };
        assert_eq!(divided(quota(10, 20), 3), quota(3, 6));
        assert_eq!(divided(quota(1, 5), 3), quota(1, 1));
        assert_eq!(divided(quota(10, 20), 1), quota(10, 20));
        assert_eq!(divided(quota(10, 20), 0), quota(10, 20));
    }

    #[test]
    fn shared_decisions_count_whole_microseconds_per_token() {
        // 3 per second: a token is 333 333 µs, never rounded up.
        let gcra = Gcra::of(RateLimitConfig {
            per_second: 3,
            burst: 5,
        });
        assert_eq!(gcra.interval_us, 333_333);
        assert_eq!(gcra.decision(true, 333_333).remaining, 4);
        // A part of a token missing counts as a whole one, as `floor(tokens)` does.
        assert_eq!(gcra.decision(true, 333_334).remaining, 3);
        let refused = gcra.decision(false, 5 * 333_333 - 1);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_micros(333_332));
        // Never more debt than a whole bucket, whatever the script said.
        assert_eq!(
            gcra.decision(false, u64::MAX).reset,
            Duration::from_micros(5 * 333_333)
        );
        // More than a million per second: one µs per token.
        let fast = Gcra::of(RateLimitConfig {
            per_second: 2_000_000,
            burst: 1,
        });
        assert_eq!(fast.interval_us, 1);
    }

    #[test]
    fn headers_use_the_draft_syntax() {
        let mut headers = HeaderMap::new();
        let decision = Decision {
            allowed: true,
            remaining: 7,
            reset: Duration::from_millis(1200),
            retry_after: Duration::ZERO,
        };
        add_headers(
            &mut headers,
            RateLimitConfig {
                per_second: 10,
                burst: 20,
            },
            &decision,
        );
        assert_eq!(headers[RATELIMIT_POLICY], "\"default\";q=20;w=2");
        assert_eq!(headers[RATELIMIT], "\"default\";r=7;t=2");
    }
}

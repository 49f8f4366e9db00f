//! The JWKS key cache: public keys by `kid`, fetched lazily, refreshed in the background on a
//! schedule and in the foreground on an unknown `kid`, with every fetch rate-limited and shared
//! by concurrent verifications.
//!
//! Rules, all in [`JwksCache::key`]:
//! - a known `kid` is answered from memory at once, never waiting for a fetch. When the keys are
//!   older than `refresh_interval`, that verification also starts a refresh in a spawned task
//!   and is answered with the old key meanwhile: a slow identity provider never delays the
//!   tokens of keys already known;
//! - a verification waits for a fetch only when its `kid` is unknown or no keys were ever
//!   fetched: it fetches itself, or waits for the fetch already running (in the background or
//!   not) and uses its result;
//! - no fetch, in the background or not, starts sooner than `min_refresh_interval` after the
//!   previous attempt finished, successful or not;
//! - one fetch at a time: no background refresh starts while a fetch runs, and verifications
//!   that wanted a fetch while one was running use its result instead of starting another;
//! - a failed fetch keeps the previous keys (a stale key keeps working until a fetch succeeds).
//!
//! Time is `tokio::time::Instant`, so tests drive it with `tokio::time::pause()`.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
    time::Duration,
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
};
use tokio::time::Instant;

use super::error::AuthError;

/// Largest JWKS document read; a real one is a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A public key from the JWKS, with the one algorithm it verifies.
pub(super) struct JwksKey {
    /// The algorithm this key is for (RS256 for an RSA key, ES256 for a P-256 key), so a token
    /// can only be checked with a key of its own algorithm.
    pub(super) algorithm: Algorithm,
    /// The key material, built once when the JWKS is fetched.
    pub(super) key: DecodingKey,
}

/// The JWKS keys of one identity provider, cached. Used through an `Arc`, which a background
/// refresh holds while it runs.
pub(super) struct JwksCache {
    /// Where keys come from.
    source: KeySource,
    /// How long fetched keys are trusted before a verification fetches them again.
    refresh_interval: Duration,
    /// Least time between two fetch attempts.
    min_refresh_interval: Duration,
    /// The keys and the times of the last fetches. Held only briefly, never across an `.await`.
    state: RwLock<KeyState>,
    /// Held for the duration of a fetch (by the verification that fetches, or moved into the
    /// background refresh task), so only one runs and the others wait for its result. In an
    /// `Arc` so a spawned refresh can own its guard.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What the cache knows.
#[derive(Default)]
struct KeyState {
    /// Usable keys by `kid`, from the last successful fetch.
    keys: HashMap<String, Arc<JwksKey>>,
    /// When the last successful fetch finished; `None` until one succeeds.
    fetched_at: Option<Instant>,
    /// When the last fetch attempt finished, successful or not (rate limit).
    attempted_at: Option<Instant>,
    /// Counts finished fetch attempts, so a verification that waited for the fetch lock can tell
    /// that someone else fetched meanwhile.
    generation: u64,
}

impl KeyState {
    /// Whether the keys are recent enough to answer without fetching.
    fn is_fresh(&self, now: Instant, refresh_interval: Duration) -> bool {
        self.fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) < refresh_interval)
    }

    /// Whether a fetch may start now (rate limit).
    fn may_fetch(&self, now: Instant, min_refresh_interval: Duration) -> bool {
        self.attempted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= min_refresh_interval)
    }

    /// Whether the keys are old enough to refresh and the rate limit allows it now.
    fn refresh_due(
        &self,
        now: Instant,
        refresh_interval: Duration,
        min_refresh_interval: Duration,
    ) -> bool {
        !self.is_fresh(now, refresh_interval) && self.may_fetch(now, min_refresh_interval)
    }

    /// The key named `kid`, or why there is none.
    fn lookup(&self, kid: &str) -> Result<Arc<JwksKey>, AuthError> {
        match self.keys.get(kid) {
            Some(key) => Ok(Arc::clone(key)),
            None if self.fetched_at.is_none() => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::UnknownKey),
        }
    }
}

impl JwksCache {
    /// A cache over `source` that has fetched nothing yet.
    pub(super) fn new(
        source: KeySource,
        refresh_interval: Duration,
        min_refresh_interval: Duration,
    ) -> Self {
        Self {
            source,
            refresh_interval,
            min_refresh_interval,
            state: RwLock::new(KeyState::default()),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The key named `kid`: from memory when known (starting a background refresh of stale
    /// keys), otherwise after a fetch, as the rules above say.
    pub(super) async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<JwksKey>, AuthError> {
        let seen_generation = {
            let state = self.read();
            if let Some(key) = state.keys.get(kid) {
                let key = Arc::clone(key);
                let refresh_due = state.refresh_due(
                    Instant::now(),
                    self.refresh_interval,
                    self.min_refresh_interval,
                );
                drop(state);
                if refresh_due {
                    self.refresh_in_background();
                }
                return Ok(key);
            }
            state.generation
        };

        let _fetching = self.fetch_lock.lock().await;
        {
            let state = self.read();
            let fetched_meanwhile = state.generation != seen_generation;
            if fetched_meanwhile || !state.may_fetch(Instant::now(), self.min_refresh_interval) {
                return state.lookup(kid);
            }
        }
        self.fetch().await;
        self.read().lookup(kid)
    }

    /// Starts one fetch in a spawned task, unless a fetch is running (its result will do) or one
    /// finished since the caller looked (the keys are fresh again, or the rate limit forbids
    /// another attempt yet).
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(fetching) = Arc::clone(&self.fetch_lock).try_lock_owned() else {
            return;
        };
        let due = self.read().refresh_due(
            Instant::now(),
            self.refresh_interval,
            self.min_refresh_interval,
        );
        if !due {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            cache.fetch().await;
            drop(fetching);
        });
    }

    /// Fetches the JWKS and records the attempt: new keys, or the previous ones kept. The caller
    /// holds the fetch lock.
    async fn fetch(&self) {
        let fetched = self.source.fetch().await.and_then(|body| parse_jwks(&body));
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        state.attempted_at = Some(now);
        match fetched {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "JWKS fetched");
                state.keys = keys;
                state.fetched_at = Some(now);
            }
            Err(error) => {
                tracing::warn!(
                    error = %error_chain(&error),
                    cached_keys = state.keys.len(),
                    "JWKS fetch failed; keeping the previous keys"
                );
            }
        }
    }

    /// What the cache knows, read briefly (never across an `.await`).
    fn read(&self) -> RwLockReadGuard<'_, KeyState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `error` and its sources, one line (reqwest's own message rarely names the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a JWKS fetch failed. Logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// The request failed (connection, timeout, body).
    #[error("request failed")]
    Http(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("unexpected status {0}")]
    Status(reqwest::StatusCode),
    /// The document is larger than any real JWKS.
    #[error("document larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The document is not a JWKS.
    #[error("not a JWKS document")]
    Json(#[source] serde_json::Error),
    /// The document holds no key this gateway can use (RSA or P-256 signature keys with a `kid`).
    #[error("no usable RS256/ES256 key with a kid")]
    NoUsableKeys,
    /// A test source was told to fail.
    #[cfg(test)]
    #[error("test source down")]
    TestDown,
}

/// Where JWKS documents come from.
pub(super) enum KeySource {
    /// An HTTP(S) URL, the production source.
    Http {
        /// Built once, with the fetch timeout.
        client: reqwest::Client,
        /// The JWKS document.
        url: reqwest::Url,
    },
    /// A scripted source for the cache's unit tests.
    #[cfg(test)]
    Test(Arc<tests::TestSource>),
}

impl KeySource {
    /// Fetches the raw JWKS document.
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        match self {
            Self::Http { client, url } => fetch_http(client, url).await,
            #[cfg(test)]
            Self::Test(source) => source.fetch().await,
        }
    }
}

/// GETs the JWKS document, reading at most [`MAX_JWKS_BYTES`].
async fn fetch_http(client: &reqwest::Client, url: &reqwest::Url) -> Result<Vec<u8>, FetchError> {
    // `without_url`: the URL is configuration, not worth repeating in every log line (and it
    // could carry credentials in its query).
    let http = |error: reqwest::Error| FetchError::Http(error.without_url());
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JWKS document with its keys left unparsed, so one key of a kind this gateway does not know
/// cannot make the whole document unreadable.
#[derive(serde::Deserialize)]
struct RawJwkSet {
    /// The keys, each parsed on its own.
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document by `kid`.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<JwksKey>>, FetchError> {
    let set: RawJwkSet = serde_json::from_slice(body).map_err(FetchError::Json)?;
    let keys: HashMap<_, _> = set
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys);
    }
    Ok(keys)
}

/// The `kid` and key of a JWK this gateway verifies with: a signature key (`use` absent or
/// `sig`, `key_ops` absent or with `verify`) with a `kid`, either RSA (RS256) or EC P-256
/// (ES256), whose declared `alg`, if any, is that algorithm. Symmetric (`oct`) keys are never
/// used: a JWKS is public.
fn usable_key(jwk: &Jwk) -> Option<(String, Arc<JwksKey>)> {
    let common = &jwk.common;
    let kid = common.key_id.clone()?;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let (algorithm, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if common.key_algorithm.is_some_and(|alg| alg != declared) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Arc::new(JwksKey { algorithm, key })))
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::FutureExt;
    use serde_json::json;
    use tokio::sync::Semaphore;

    use super::*;

    /// A JWKS source whose answers, availability and speed the test controls.
    pub(crate) struct TestSource {
        /// The `kid`s of the RSA keys served.
        kids: std::sync::Mutex<Vec<&'static str>>,
        /// Whether fetches fail.
        down: AtomicBool,
        /// How many fetches started.
        fetches: AtomicUsize,
        /// When set, each fetch waits for a permit, so the test decides when it finishes.
        gate: Option<Semaphore>,
    }

    impl TestSource {
        fn new(kids: &[&'static str], gated: bool) -> Arc<Self> {
            Arc::new(Self {
                kids: std::sync::Mutex::new(kids.to_vec()),
                down: AtomicBool::new(false),
                fetches: AtomicUsize::new(0),
                gate: gated.then(|| Semaphore::new(0)),
            })
        }

        pub(crate) async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(FetchError::TestDown);
            }
            let keys: Vec<_> = self
                .kids
                .lock()
                .expect("kids")
                .iter()
                .map(|kid| json!({"kty": "RSA", "kid": kid, "n": "AQAB", "e": "AQAB"}))
                .collect();
            Ok(serde_json::to_vec(&json!({ "keys": keys })).expect("json"))
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn serve(&self, kids: &[&'static str]) {
            *self.kids.lock().expect("kids") = kids.to_vec();
        }
    }

    const REFRESH: Duration = Duration::from_secs(600);
    const MIN_REFRESH: Duration = Duration::from_secs(30);

    fn cache(source: &Arc<TestSource>) -> Arc<JwksCache> {
        Arc::new(JwksCache::new(
            KeySource::Test(Arc::clone(source)),
            REFRESH,
            MIN_REFRESH,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn known_keys_are_served_from_memory_until_the_refresh_interval() {
        let source = TestSource::new(&["a"], false);
        let cache = cache(&source);
        for _ in 0..10 {
            cache.key("a").await.expect("known key");
        }
        assert_eq!(source.fetches(), 1, "fetched once, then from memory");

        tokio::time::advance(REFRESH - Duration::from_secs(1)).await;
        cache.key("a").await.expect("known key");
        assert_eq!(source.fetches(), 1, "still fresh");

        tokio::time::advance(Duration::from_secs(1)).await;
        source.serve(&["b"]);
        cache
            .key("a")
            .await
            .expect("stale, answered while refreshing");
        settle().await;
        assert_eq!(source.fetches(), 2, "refreshed after the interval");
        assert_eq!(cache.key("a").await.err(), Some(AuthError::UnknownKey));
        cache.key("b").await.expect("the refreshed keys are in use");
        assert_eq!(source.fetches(), 2);
    }

    /// Lets spawned tasks (the background refresh) run as far as they can.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_known_kid_is_answered_at_once_while_one_background_refresh_runs() {
        let source = TestSource::new(&["a"], true);
        let gate = source.gate.as_ref().expect("gated");
        let cache = cache(&source);
        gate.add_permits(1);
        cache.key("a").await.expect("first fetch");

        tokio::time::advance(REFRESH).await;
        source.serve(&["a", "b"]);
        for _ in 0..5 {
            cache
                .key("a")
                .now_or_never()
                .expect("answered at once, without waiting for the refresh")
                .expect("the stale key");
            settle().await;
        }
        assert_eq!(source.fetches(), 2, "one background refresh at a time");

        let waiting = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.key("b").await.map(|_| ()) }
        });
        settle().await;
        assert!(!waiting.is_finished(), "an unknown kid waits for the fetch");
        gate.add_permits(1);
        waiting
            .await
            .expect("task")
            .expect("found by the background refresh");
        assert_eq!(source.fetches(), 2, "the waiter used the running refresh");

        cache
            .key("a")
            .now_or_never()
            .expect("fresh again")
            .expect("still published");
        settle().await;
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_refetches_at_most_once_per_min_interval() {
        let source = TestSource::new(&["a"], false);
        let cache = cache(&source);
        cache.key("a").await.expect("known key");
        source.serve(&["a", "rotated"]);

        for _ in 0..5 {
            assert_eq!(
                cache.key("rotated").await.err(),
                Some(AuthError::UnknownKey)
            );
        }
        assert_eq!(
            source.fetches(),
            1,
            "rate-limited right after the first fetch"
        );

        tokio::time::advance(MIN_REFRESH).await;
        cache
            .key("rotated")
            .await
            .expect("picked up by the re-fetch");
        assert_eq!(source.fetches(), 2);

        for _ in 0..5 {
            assert_eq!(cache.key("nope").await.err(), Some(AuthError::UnknownKey));
        }
        assert_eq!(source.fetches(), 2, "unknown kids cannot force fetches");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_verifications_share_one_fetch() {
        let source = TestSource::new(&["a"], true);
        let cache = cache(&source);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move { cache.key("a").await.map(|_| ()) });
        }
        // Let every task reach the fetch (or the wait for it) before the fetch may finish.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(source.fetches(), 1, "one fetch in flight");
        source.gate.as_ref().expect("gated").add_permits(100);
        while let Some(result) = tasks.join_next().await {
            result.expect("task").expect("key found");
        }
        assert_eq!(source.fetches(), 1, "the waiters used the one fetch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_old_keys_and_is_rate_limited() {
        let source = TestSource::new(&["a"], false);
        let cache = cache(&source);
        cache.key("a").await.expect("known key");

        source.down.store(true, Ordering::SeqCst);
        tokio::time::advance(REFRESH).await;
        cache.key("a").await.expect("the stale key still works");
        settle().await;
        assert_eq!(source.fetches(), 2, "a refresh was attempted");
        cache.key("a").await.expect("the stale key still works");
        settle().await;
        assert_eq!(source.fetches(), 2, "no retry before the min interval");

        tokio::time::advance(MIN_REFRESH).await;
        cache.key("a").await.expect("the stale key still works");
        settle().await;
        assert_eq!(
            source.fetches(),
            3,
            "background retries are rate-limited too"
        );

        source.down.store(false, Ordering::SeqCst);
        source.serve(&["b"]);
        tokio::time::advance(MIN_REFRESH).await;
        cache.key("b").await.expect("recovered");
        assert_eq!(source.fetches(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn without_any_fetched_keys_the_error_is_keys_unavailable() {
        let source = TestSource::new(&["a"], false);
        source.down.store(true, Ordering::SeqCst);
        let cache = cache(&source);
        assert_eq!(cache.key("a").await.err(), Some(AuthError::KeysUnavailable));
        assert_eq!(cache.key("a").await.err(), Some(AuthError::KeysUnavailable));
        assert_eq!(source.fetches(), 1, "a down JWKS is not hammered");
    }

    #[test]
    fn only_signature_keys_of_supported_types_with_a_kid_are_used() {
        let body = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "p256", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AQAB", "y": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "future", "alg": "NEW-ALG"},
        ]});
        let keys = parse_jwks(&serde_json::to_vec(&body).expect("json")).expect("parses");
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["p256", "rsa"]);
        assert_eq!(keys["rsa"].algorithm, Algorithm::RS256);
        assert_eq!(keys["p256"].algorithm, Algorithm::ES256);

        assert!(matches!(
            parse_jwks(br#"{"keys": [{"kty": "oct", "kid": "k", "k": "eA"}]}"#),
            Err(FetchError::NoUsableKeys)
        ));
        assert!(matches!(parse_jwks(b"<html>"), Err(FetchError::Json(_))));
    }
}

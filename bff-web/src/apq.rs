//! Automatic persisted queries (Apollo's protocol): a client sends
//! `extensions.persistedQuery = { version: 1, sha256Hash }` without the query text; when the
//! gateway knows the hash it runs the remembered text, otherwise it answers
//! `PERSISTED_QUERY_NOT_FOUND` and the client sends hash and text together once, which the gateway
//! checks (the hash must be the SHA-256 of the text) and remembers.
//!
//! Where the texts are kept:
//! - **In process, always.** The local store is bounded in bytes (`gateway.apq.max_bytes`, least
//!   recently used forgotten first) and keeps only texts that parse. A hash it holds is answered
//!   from it alone, without asking Redis.
//! - **In Redis, when `shared.redis_url` is set**, so a query registered on one replica is known
//!   to every replica. A registration is also written as `SET <prefix>{apq:<hash>} <text> EX
//!   <gateway.apq.shared_ttl>` (each registration renews it); a text longer than
//!   `server.max_body_bytes` (the largest a client can register in a body) is kept locally only.
//!   A hash the local store does not hold is looked up with `GET`; the value is used only when it
//!   is at most that long, is UTF-8, its SHA-256 is the hash and it parses, and then it fills the
//!   local store. Concurrent lookups of one hash on a replica share one `GET`. Anything else under
//!   the key is a miss, counted as garbage (`bff_redis_errors_total{op="apq_get"}`,
//!   `bff_redis_fallback_total{feature="apq"}`).
//! - **Redis failing** (down, slow past `shared.command_timeout`, backing off) makes the store what
//!   it is without Redis: a hash unknown locally is `PERSISTED_QUERY_NOT_FOUND`, a registration is
//!   kept locally; never an error of the request. Each such fallback is counted by
//!   [`SharedState`].

use std::{sync::Arc, time::Duration};

use async_graphql::{Request, Value};
use sha2::{Digest, Sha256};
use shared_clients::{
    SharedState,
    shared_state::{Feature, SharedError},
};

/// The codes of APQ refusals.
pub mod codes {
    /// The hash is not known: send it again with the query text.
    pub const NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// APQ is turned off on this gateway.
    pub const NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
    /// The extension is malformed, of an unknown version, or its hash does not match the text.
    pub const INVALID: &str = "PERSISTED_QUERY_INVALID";
}

/// Why a persisted query could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApqError {
    /// The hash is unknown (the client should retry with the text).
    NotFound,
    /// APQ is off.
    NotSupported,
    /// Malformed extension, unknown version or a hash that does not match the text.
    Invalid(&'static str),
}

impl ApqError {
    /// The error's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => codes::NOT_FOUND,
            Self::NotSupported => codes::NOT_SUPPORTED,
            Self::Invalid(_) => codes::INVALID,
        }
    }

    /// The error's message (Apollo clients match `PersistedQueryNotFound`).
    pub fn message(self) -> &'static str {
        match self {
            Self::NotFound => "PersistedQueryNotFound",
            Self::NotSupported => "PersistedQueryNotSupported",
            Self::Invalid(why) => why,
        }
    }
}

/// The remembered query texts, by SHA-256 (lowercase hex). Cheap to clone.
#[derive(Clone)]
pub struct PersistedQueries {
    /// Query texts by hash; `None` when APQ is off.
    store: Option<moka::future::Cache<String, Arc<str>>>,
    /// Where registrations are shared with every replica (disabled: this process alone).
    shared: SharedState,
    /// How long a registration stays in Redis, in whole seconds (`gateway.apq.shared_ttl`).
    shared_ttl_secs: u64,
    /// Longest text written to or read from Redis, in bytes (`server.max_body_bytes`), so a value
    /// under our key cannot make a replica load more than a client could have registered.
    max_shared_bytes: usize,
}

impl PersistedQueries {
    /// A store of at most `max_bytes` of query text (least recently used forgotten first), or a
    /// disabled one; in this process alone until [`PersistedQueries::shared`].
    pub fn new(enabled: bool, max_bytes: u64) -> Self {
        Self {
            store: enabled.then(|| {
                moka::future::Cache::builder()
                    .weigher(|hash: &String, text: &Arc<str>| {
                        u32::try_from(hash.len() + text.len()).unwrap_or(u32::MAX)
                    })
                    .max_capacity(max_bytes)
                    .build()
            }),
            shared: SharedState::disabled(),
            shared_ttl_secs: 0,
            max_shared_bytes: 0,
        }
    }

    /// The same store, also sharing registrations through `shared` (when it is enabled): each
    /// kept for `ttl` (at least a second), texts of at most `max_document_bytes`.
    #[must_use]
    pub fn shared(self, shared: SharedState, ttl: Duration, max_document_bytes: usize) -> Self {
        Self {
            shared,
            shared_ttl_secs: ttl.as_secs().max(1),
            max_shared_bytes: max_document_bytes,
            ..self
        }
    }

    /// Applies `extensions.persistedQuery` of `request`, if any: fills in the remembered text, or
    /// checks and remembers the text sent with the hash.
    pub async fn apply(&self, request: &mut Request) -> Result<(), ApqError> {
        let Some(extension) = request.extensions.0.get("persistedQuery") else {
            return Ok(());
        };
        let Some(store) = &self.store else {
            return Err(ApqError::NotSupported);
        };
        let Value::Object(fields) = extension else {
            return Err(ApqError::Invalid("`persistedQuery` must be an object."));
        };
        let version_ok =
            matches!(fields.get("version"), Some(Value::Number(n)) if n.as_u64() == Some(1));
        if !version_ok {
            return Err(ApqError::Invalid(
                "Only `persistedQuery.version` 1 is supported.",
            ));
        }
        let hash = match fields.get("sha256Hash") {
            Some(Value::String(hash))
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                hash.to_ascii_lowercase()
            }
            _ => {
                return Err(ApqError::Invalid(
                    "`persistedQuery.sha256Hash` must be 64 hex digits.",
                ));
            }
        };
        if request.query.is_empty() {
            let text = if self.shared.is_enabled() {
                // The local store first; on a miss one `GET` per replica and hash, however many
                // requests wait for it.
                let key = hash.clone();
                store
                    .optionally_get_with(key, self.fetch_shared(&hash))
                    .await
            } else {
                store.get(&hash).await
            };
            request.query = text.ok_or(ApqError::NotFound)?.to_string();
            return Ok(());
        }
        if sha256_hex(&request.query) != hash {
            return Err(ApqError::Invalid(
                "`persistedQuery.sha256Hash` is not the SHA-256 of the query.",
            ));
        }
        // Only documents that can run are remembered: anything else would take memory for
        // nothing (and the store is shared by every caller).
        if keepable(&request.query) {
            let text: Arc<str> = Arc::from(request.query.as_str());
            store.insert(hash.clone(), Arc::clone(&text)).await;
            self.store_shared(&hash, &text).await;
        }
        Ok(())
    }

    /// The key of `hash` in Redis: `<prefix>{apq:<hash>}`.
    fn key(&self, hash: &str) -> String {
        self.shared.key(&format!("apq:{hash}"), "")
    }

    /// Writes a registration to Redis, unless Redis is off or the text is too long to share. A
    /// failure is counted by [`SharedState`] and otherwise ignored: the text is kept locally.
    async fn store_shared(&self, hash: &str, text: &str) {
        if !self.shared.is_enabled() || text.len() > self.max_shared_bytes {
            return;
        }
        let mut set = redis::cmd("SET");
        set.arg(self.key(hash))
            .arg(text)
            .arg("EX")
            .arg(self.shared_ttl_secs);
        // Errors are counted (and logged, sparingly) by `query`; the registration stands locally.
        let _: Result<(), SharedError> = self.shared.query("apq_set", Feature::Apq, &set).await;
    }

    /// The text registered for `hash` on any replica, from Redis: `None` when Redis does not hold
    /// it, fails, or holds something that is not a keepable text of that hash (counted as
    /// garbage).
    async fn fetch_shared(&self, hash: &str) -> Option<Arc<str>> {
        let mut get = redis::cmd("GET");
        get.arg(self.key(hash));
        // `None`: Redis failed (counted by `query`) or does not hold the hash.
        let value: Vec<u8> = self
            .shared
            .query::<Option<Vec<u8>>>("apq_get", Feature::Apq, &get)
            .await
            .ok()??;
        let text = (value.len() <= self.max_shared_bytes)
            .then(|| String::from_utf8(value).ok())
            .flatten()
            .filter(|text| sha256_hex(text) == hash && keepable(text));
        if text.is_none() {
            self.shared.count_garbage("apq_get", Feature::Apq);
        }
        text.map(Arc::from)
    }
}

/// Whether `text` may be remembered: it parses (and nests shallowly enough to be parsed).
fn keepable(text: &str) -> bool {
    crate::schema::limits::text_nesting(text) <= crate::schema::limits::MAX_TEXT_NESTING
        && async_graphql::parser::parse_query(text).is_ok()
}

/// The SHA-256 of `text` as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

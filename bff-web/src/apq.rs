//! Automatic persisted queries (Apollo's protocol): a client sends
//! `extensions.persistedQuery = { version: 1, sha256Hash }` without the query text; when the
//! gateway knows the hash it runs the remembered text, otherwise it answers
//! `PERSISTED_QUERY_NOT_FOUND` and the client sends hash and text together once, which the gateway
//! checks (the hash must be the SHA-256 of the text) and remembers.
//!
//! The store is bounded in bytes (`gateway.apq.max_bytes`, least recently used forgotten first),
//! keeps only texts that parse, and is in-process: each replica learns a query on its first miss.

use std::sync::Arc;

use async_graphql::{Request, Value};
use sha2::{Digest, Sha256};

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
}

impl PersistedQueries {
    /// A store of at most `max_bytes` of query text (least recently used forgotten first), or a
    /// disabled one.
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
            let text = store.get(&hash).await.ok_or(ApqError::NotFound)?;
            request.query = text.to_string();
            return Ok(());
        }
        if sha256_hex(&request.query) != hash {
            return Err(ApqError::Invalid(
                "`persistedQuery.sha256Hash` is not the SHA-256 of the query.",
            ));
        }
        // Only documents that can run are remembered: anything else would take memory for
        // nothing (and the store is shared by every caller).
        let parses = crate::schema::limits::text_nesting(&request.query)
            <= crate::schema::limits::MAX_TEXT_NESTING
            && async_graphql::parser::parse_query(&request.query).is_ok();
        if parses {
            store.insert(hash, Arc::from(request.query.as_str())).await;
        }
        Ok(())
    }
}

/// The SHA-256 of `text` as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

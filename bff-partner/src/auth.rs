//! Partner authentication: API keys presented as `Authorization: Bearer <key>`.
//!
//! Keys are configured as SHA-256 hashes ([`hash_key`]). A presented key is hashed and looked up
//! by its hash; a hash lookup leaks nothing useful about other keys, and the key itself is never
//! stored, logged or compared. A missing or unknown key is a 401; a known key without the scope an
//! operation needs is a 403 ([`Authorized`]).

use std::{collections::HashMap, fmt, marker::PhantomData, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::{Deserialize, Serialize};
use shared_clients::PartnerId;

use crate::{
    config::{KeyConfig, PartnerConfig, RateLimitConfig},
    error::ApiError,
};

/// The SHA-256 of `key` as 64 lowercase hex digits: what `[[gateway.keys]] sha256` holds.
pub use server_kit::auth::hash_api_key as hash_key;

/// Something a key may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read products and categories.
    #[serde(rename = "catalog:read")]
    CatalogRead,
    /// List and read the partner's own orders.
    #[serde(rename = "orders:read")]
    OrdersRead,
    /// Create orders for the partner.
    #[serde(rename = "orders:write")]
    OrdersWrite,
}

impl Scope {
    /// The scope's name as configured and documented, e.g. `orders:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatalogRead => "catalog:read",
            Self::OrdersRead => "orders:read",
            Self::OrdersWrite => "orders:write",
        }
    }
}

/// An authenticated caller: the partner a key acts for, what it may do and its quota.
#[derive(Clone)]
pub struct Partner {
    /// Names the partner downstream (`X-Partner-Id`), which keeps its orders its own.
    pub id: PartnerId,
    /// Identifies the key (its hash) for rate limiting, without holding the key.
    pub key_id: Arc<str>,
    /// What the key may do.
    pub scopes: Arc<[Scope]>,
    /// The key's token bucket.
    pub rate_limit: RateLimitConfig,
}

impl fmt::Debug for Partner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key hash is not secret, but it is not useful in logs either.
        f.debug_struct("Partner")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The configured keys, by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// Lowercase hex SHA-256 → the partner it authenticates.
    by_hash: HashMap<String, Partner>,
}

impl ApiKeys {
    /// The keys of `config`.
    pub fn new(config: &PartnerConfig) -> Self {
        let by_hash = config
            .keys
            .iter()
            .map(|key: &KeyConfig| {
                let hash = key.sha256.to_ascii_lowercase();
                let partner = Partner {
                    id: key.partner_id.clone(),
                    key_id: Arc::from(hash.as_str()),
                    scopes: Arc::from(key.scopes.as_slice()),
                    rate_limit: key.rate_limit.unwrap_or(config.default_rate_limit),
                };
                (hash, partner)
            })
            .collect();
        Self { by_hash }
    }

    /// The partner authenticated by the request's `Authorization: Bearer <key>`, or a 401.
    pub fn authenticate(&self, parts: &Parts) -> Result<Partner, ApiError> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or(ApiError::MissingKey)?;
        let value = header.to_str().map_err(|_| ApiError::UnknownKey)?;
        let (scheme, key) = value.split_once(' ').ok_or(ApiError::UnknownKey)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingKey);
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(ApiError::MissingKey);
        }
        self.by_hash
            .get(&hash_key(key))
            .cloned()
            .ok_or(ApiError::UnknownKey)
    }
}

/// A scope an extractor can require, as a type.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// Requires [`Scope::CatalogRead`].
#[derive(Debug)]
pub struct CatalogRead;
impl RequiredScope for CatalogRead {
    const SCOPE: Scope = Scope::CatalogRead;
}

/// Requires [`Scope::OrdersRead`].
#[derive(Debug)]
pub struct OrdersRead;
impl RequiredScope for OrdersRead {
    const SCOPE: Scope = Scope::OrdersRead;
}

/// Requires [`Scope::OrdersWrite`].
#[derive(Debug)]
pub struct OrdersWrite;
impl RequiredScope for OrdersWrite {
    const SCOPE: Scope = Scope::OrdersWrite;
}

/// The authenticated partner, proven to hold scope `S`. Put it first among a handler's
/// extractors, so a caller without the scope gets a 403 before anything else is looked at.
#[derive(Debug)]
pub struct Authorized<S> {
    /// The partner making the request.
    pub partner: Partner,
    /// Which scope was checked.
    scope: PhantomData<S>,
}

impl<S: RequiredScope, St: Send + Sync> FromRequestParts<St> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        // Set by the authentication middleware on every API route.
        let partner = parts
            .extensions
            .get::<Partner>()
            .cloned()
            .ok_or(ApiError::MissingKey)?;
        if !partner.scopes.contains(&S::SCOPE) {
            return Err(ApiError::MissingScope(S::SCOPE));
        }
        Ok(Self {
            partner,
            scope: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_lowercase_sha256_hex() {
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn scopes_use_their_documented_names() {
        let scopes: Vec<Scope> =
            serde_json::from_str(r#"["catalog:read","orders:read","orders:write"]"#)
                .expect("valid scopes");
        assert_eq!(
            scopes,
            [Scope::CatalogRead, Scope::OrdersRead, Scope::OrdersWrite]
        );
        assert!(serde_json::from_str::<Scope>(r#""orders:delete""#).is_err());
    }
}

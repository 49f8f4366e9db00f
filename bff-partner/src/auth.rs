//! Partner authentication: API keys presented as `Authorization: Bearer <key>`.
//!
//! Keys are configured as SHA-256 hashes ([`hash_key`]). A presented key is hashed and looked up
//! by its hash; a hash lookup leaks nothing useful about other keys, and the key itself is never
//! stored, logged or compared. A missing or unknown key is a 401; a known key without the scope an
//! operation needs is a 403 ([`Authorized`]).

use std::{collections::HashMap, fmt, marker::PhantomData, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use shared_clients::PartnerId;

/// What a key may do: configured per key (`scopes`), required per operation here.
pub use crate::config::Scope;
use crate::{
    config::{KeyConfig, PartnerConfig, RateLimitConfig, hash_key},
    error::ApiError,
};

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

/// Requires [`Scope::WebhooksManage`].
#[derive(Debug)]
pub struct WebhooksManage;
impl RequiredScope for WebhooksManage {
    const SCOPE: Scope = Scope::WebhooksManage;
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

//! [`Authenticator`]: verifies one bearer token (or finds it among the tokens it verified
//! recently, [`super::token_cache`]); [`dev_token`]: mints a development token.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shared_clients::UserId;

use super::{
    config::{AuthConfig, Secret},
    error::AuthError,
    jwks::{JwksCache, JwksKey, KeySource},
    token_cache::{self, Miss, TokenDigest, VerifiedTokens},
    user::AuthenticatedUser,
};
use crate::ConfigError;

/// Longest `kid` repeated in a log line; a longer one is cut (it comes from the client).
const MAX_LOGGED_KID: usize = 64;

/// Verifies bearer tokens according to an [`AuthConfig`]. Build it once at start-up and clone it
/// into the gateway's state (it is an `Arc` inside): the JWKS cache is shared by all clones.
#[derive(Clone)]
pub struct Authenticator {
    /// The verification keys and rules, shared by every clone.
    inner: Arc<Inner>,
}

/// What an [`Authenticator`] verifies with.
struct Inner {
    /// The HS256 secret as a key; `None` refuses HS256 tokens.
    hs256: Option<DecodingKey>,
    /// The JWKS keys; `None` refuses RS256 and ES256 tokens.
    jwks: Option<Arc<JwksCache>>,
    /// The claim checks of HS256 tokens.
    hs256_validation: Validation,
    /// The claim checks of RS256 tokens.
    rs256_validation: Validation,
    /// The claim checks of ES256 tokens.
    es256_validation: Validation,
    /// Tokens longer than this are refused before decoding.
    max_token_bytes: usize,
    /// Tokens verified recently, answered again without a signature check.
    tokens: VerifiedTokens,
    /// Signature checks made (unit tests count them to tell a hit from a verification).
    #[cfg(test)]
    signature_checks: std::sync::atomic::AtomicUsize,
}

/// What a verification found besides the user: what the token cache needs to answer it again.
struct Checked {
    /// The user the token authenticates.
    user: AuthenticatedUser,
    /// The token's `nbf`, when it has one as an integer.
    not_before: Option<u64>,
    /// The JWKS key that verified it; `None` for HS256.
    key: Option<Arc<JwksKey>>,
}

/// The algorithms a token may name, and which key family checks each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenAlgorithm {
    /// HMAC-SHA-256 with the configured secret.
    Hs256,
    /// A JWKS key: RS256 or ES256.
    Jwks(Algorithm),
}

/// The parts of the JOSE header read before verification.
#[derive(Deserialize)]
struct RawHeader {
    /// The signing algorithm the token claims; only selects among the allowed ones.
    alg: String,
    /// The JWKS key the token claims to be signed with.
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the recipient must understand; none are, so any refuses the token.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims read from a verified token beyond those `jsonwebtoken` validates.
#[derive(Deserialize)]
struct TokenClaims {
    /// The user the token was issued to; becomes the downstream `X-User-Id`.
    #[serde(default)]
    sub: Option<serde_json::Value>,
    /// When it expires (seconds since the epoch); required and checked by `jsonwebtoken`.
    #[serde(default)]
    exp: Option<u64>,
    /// When it starts being valid; checked by `jsonwebtoken`, read again for the token cache
    /// (left as a JSON value: `jsonwebtoken` decides what a malformed one means).
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

impl Authenticator {
    /// Builds the verifier. The configuration is validated again (as `auth.…`), so a gateway that
    /// forgot to call [`AuthConfig::validate`] still cannot run with a weak secret.
    ///
    /// With neither `hs256_secret` nor `jwks_url`, every token is refused (a warning says so).
    /// No JWKS fetch happens here: keys are fetched on the first verification that needs them.
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        config.validate("auth")?;
        let hs256 = config
            .hs256_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.expose_secret().as_bytes()));
        let jwks = match &config.jwks_url {
            Some(url) => Some(Arc::new(jwks_cache(config, url)?)),
            None => None,
        };
        if hs256.is_none() && jwks.is_none() {
            tracing::warn!(
                "neither auth.hs256_secret nor auth.jwks_url is configured: every bearer token \
                 will be refused"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                hs256,
                jwks,
                hs256_validation: validation(config, Algorithm::HS256),
                rs256_validation: validation(config, Algorithm::RS256),
                es256_validation: validation(config, Algorithm::ES256),
                max_token_bytes: config.max_token_bytes,
                tokens: VerifiedTokens::new(
                    config.token_cache_capacity,
                    config.token_cache_max_ttl,
                    config.leeway,
                ),
                #[cfg(test)]
                signature_checks: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// Verifies `token` (the part after `Bearer `) and returns the user it authenticates.
    ///
    /// A token verified recently (`token_cache_capacity`, `token_cache_max_ttl`) is answered
    /// from memory after its `exp` and `nbf` are checked again (and, for a JWKS token, that its
    /// key is still the current one), without a signature check: see [`super::token_cache`].
    ///
    /// A refusal is logged at `debug` with its code and the token's `kid`, never the token.
    pub async fn verify(&self, token: &str) -> Result<AuthenticatedUser, AuthError> {
        let inner = &*self.inner;
        let digest = (inner.tokens.enabled() && token.len() <= inner.max_token_bytes)
            .then(|| token_cache::digest(token));
        if let Some(digest) = &digest {
            match self.remembered(digest).await {
                Ok(user) => return Ok(user),
                Err(Miss::Expired) => {
                    let error = AuthError::Expired;
                    tracing::debug!(code = error.code(), "bearer token refused");
                    return Err(error);
                }
                Err(Miss::Absent | Miss::Old | Miss::NotYetValid) => {}
            }
        }
        let (header, algorithm) = match self.read_header(token) {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(code = error.code(), "bearer token refused");
                return Err(error);
            }
        };
        match self.verify_with(token, &header, algorithm).await {
            Ok(checked) => {
                if let Some(digest) = digest {
                    let key = header.kid.as_deref().zip(checked.key);
                    inner
                        .tokens
                        .keep(digest, &checked.user, checked.not_before, key);
                }
                Ok(checked.user)
            }
            Err(error) => {
                let kid = header.kid.as_deref().map(loggable_kid);
                tracing::debug!(
                    code = error.code(),
                    kid = kid.as_deref(),
                    "bearer token refused"
                );
                Err(error)
            }
        }
    }

    /// The user of the recently verified token whose digest is `digest`, if its entry may
    /// answer: its `exp`/`nbf` hold now and, for a JWKS token, the key cache still holds the
    /// very key that verified it (the lookup also starts a due background refresh, as a
    /// verification's would).
    async fn remembered(&self, digest: &TokenDigest) -> Result<AuthenticatedUser, Miss> {
        let inner = &*self.inner;
        let verified = inner.tokens.get(digest)?;
        if let Some((kid, key)) = verified.key() {
            let current = match &inner.jwks {
                Some(jwks) => jwks.key(kid).await.ok(),
                None => None,
            };
            if !current.is_some_and(|current| Arc::ptr_eq(&current, key)) {
                inner.tokens.forget(digest);
                return Err(Miss::Absent);
            }
        }
        Ok(verified.user().clone())
    }

    /// Reads the bearer token of a request's headers, if any, and verifies it.
    ///
    /// `Ok(None)` when there is no `Authorization` header; an error when there is one but it is
    /// not exactly `Bearer <token>` (scheme case-insensitive, one token of at most
    /// `max_token_bytes`) or the token is refused. Other protocols (GraphQL, WebSocket upgrades)
    /// call this directly; REST handlers use the extractors.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<AuthenticatedUser>, AuthError> {
        let token = match bearer_token(headers, self.inner.max_token_bytes) {
            Ok(Some(token)) => token,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::debug!(code = error.code(), "authorization header refused");
                return Err(error);
            }
        };
        self.verify(token).await.map(Some)
    }

    /// Decodes the header and decides which key may check the token.
    fn read_header(&self, token: &str) -> Result<(RawHeader, TokenAlgorithm), AuthError> {
        if token.len() > self.inner.max_token_bytes {
            return Err(AuthError::Malformed);
        }
        let (encoded, _) = token.split_once('.').ok_or(AuthError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| AuthError::Malformed)?;
        let header: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let algorithm = match header.alg.as_str() {
            "HS256" => TokenAlgorithm::Hs256,
            "RS256" => TokenAlgorithm::Jwks(Algorithm::RS256),
            "ES256" => TokenAlgorithm::Jwks(Algorithm::ES256),
            // `none`, other HMAC sizes, PS*, EdDSA, anything unknown.
            _ => return Err(AuthError::AlgorithmNotAllowed),
        };
        Ok((header, algorithm))
    }

    /// Checks the signature with the one key the algorithm allows, then the claims.
    async fn verify_with(
        &self,
        token: &str,
        header: &RawHeader,
        algorithm: TokenAlgorithm,
    ) -> Result<Checked, AuthError> {
        let inner = &*self.inner;
        #[cfg(test)]
        inner
            .signature_checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut used_key = None;
        let claims = match algorithm {
            TokenAlgorithm::Hs256 => {
                // Only ever the configured secret: an HS256 token is never checked against a
                // JWKS public key (which an attacker could use as an HMAC secret).
                let key = inner.hs256.as_ref().ok_or(AuthError::AlgorithmNotAllowed)?;
                jsonwebtoken::decode::<TokenClaims>(token, key, &inner.hs256_validation)?
            }
            TokenAlgorithm::Jwks(alg) => {
                let jwks = inner.jwks.as_ref().ok_or(AuthError::AlgorithmNotAllowed)?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                let key = jwks.key(kid).await?;
                if key.algorithm != alg {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                let validation = match alg {
                    Algorithm::ES256 => &inner.es256_validation,
                    _ => &inner.rs256_validation,
                };
                let claims = jsonwebtoken::decode::<TokenClaims>(token, &key.key, validation)?;
                used_key = Some(key);
                claims
            }
        }
        .claims;
        let user_id = claims
            .sub
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(|sub| UserId::parse(sub).ok())
            .ok_or(AuthError::InvalidSubject)?;
        Ok(Checked {
            user: AuthenticatedUser::new(user_id, claims.exp.unwrap_or(0)),
            not_before: claims.nbf.as_ref().and_then(serde_json::Value::as_u64),
            key: used_key,
        })
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.inner.hs256.is_some())
            .field("jwks", &self.inner.jwks.is_some())
            .finish_non_exhaustive()
    }
}

/// The JWKS cache of `config`, with its HTTP client.
fn jwks_cache(config: &AuthConfig, url: &str) -> Result<JwksCache, ConfigError> {
    let invalid = |reason: String| ConfigError::invalid("auth.jwks_url", reason);
    let url = reqwest::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(config.jwks_timeout)
        .connect_timeout(config.jwks_timeout)
        .build()
        .map_err(|error| invalid(format!("cannot build the HTTP client: {error}")))?;
    Ok(JwksCache::new(
        KeySource::Http { client, url },
        config.jwks_refresh_interval,
        config.jwks_min_refresh_interval,
    ))
}

/// The claim checks for tokens signed with `algorithm`.
fn validation(config: &AuthConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Not configured (HS256 only, or `allow_any_audience`): `aud` is not checked
        // (jsonwebtoken would refuse any token with one).
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The token of an `Authorization: Bearer <token>` header; `None` without the header.
fn bearer_token(headers: &HeaderMap, max_token_bytes: usize) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    // "Bearer", spaces, the token: anything much longer than the token limit is refused unread.
    if value.len() > max_token_bytes.saturating_add(64) {
        return Err(AuthError::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > max_token_bytes || !is_b64token(token) {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token))
}

/// Whether `token` is a `b64token` of RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" /
/// "~" / "+" / "/" ) *"="` (so no spaces, commas or a second token).
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// A client-supplied `kid` made safe to log: at most [`MAX_LOGGED_KID`] characters, anything but
/// visible ASCII replaced by `?` (so a hostile `kid` cannot forge log lines).
fn loggable_kid(kid: &str) -> String {
    kid.chars()
        .take(MAX_LOGGED_KID)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// The claims of a development token.
#[derive(Serialize)]
struct DevClaims<'a> {
    /// The user the token authenticates.
    sub: &'a str,
    /// When it was minted.
    iat: u64,
    /// When it expires.
    exp: u64,
    /// The issuer, when the gateway checks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    /// The audience, when the gateway checks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for `user`, valid for `ttl` from now, with `iss` / `aud` when given, that
/// an [`Authenticator`] configured with the same `secret` (and issuer/audience) accepts. For the
/// development launcher, which prints a ready-to-use token; production tokens come from the
/// identity provider.
pub fn dev_token(
    secret: &Secret,
    user: &UserId,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, AuthError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AuthError::Signing)?
        .as_secs();
    let claims = DevClaims {
        sub: user.as_str(),
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        iss: issuer,
        aud: audience,
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|_| AuthError::Signing)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        headers
    }

    #[test]
    fn the_bearer_header_is_parsed_strictly() {
        assert_eq!(bearer_token(&headers(&[]), 100), Ok(None));
        assert_eq!(
            bearer_token(&headers(&["Bearer a.b.c"]), 100),
            Ok(Some("a.b.c"))
        );
        assert_eq!(
            bearer_token(&headers(&["bEaReR a.b.c"]), 100),
            Ok(Some("a.b.c"))
        );
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Bearer a.b.c d.e.f",
            "Bearer a.b.c,d",
            "Bearer\ta.b.c",
            "Bearer a.b.c ",
            "Token a.b.c",
        ] {
            assert_eq!(
                bearer_token(&headers(&[bad]), 100),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            bearer_token(&headers(&["Bearer a.b.c", "Bearer a.b.c"]), 100),
            Err(AuthError::Malformed),
            "two Authorization headers"
        );
        let long = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            bearer_token(&headers(&[&long]), 100),
            Err(AuthError::Malformed)
        );
    }

    const SECRET: &str = "unit-test-secret-that-is-at-least-32-bytes";

    fn authenticator(capacity: u64) -> Authenticator {
        Authenticator::new(&AuthConfig {
            hs256_secret: Some(Secret::new(SECRET)),
            token_cache_capacity: capacity,
            ..AuthConfig::default()
        })
        .expect("valid config")
    }

    fn token(user: &str, ttl: Duration) -> String {
        dev_token(
            &Secret::new(SECRET),
            &UserId::parse(user).expect("user id"),
            ttl,
            None,
            None,
        )
        .expect("token")
    }

    fn signature_checks(auth: &Authenticator) -> usize {
        auth.inner
            .signature_checks
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn user_of(auth: &Authenticator, token: &str) -> String {
        auth.verify(token)
            .await
            .expect("accepted")
            .user_id()
            .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_verified_token_is_answered_again_without_a_signature_check() {
        let auth = authenticator(100);
        let token = token("u-0001", Duration::from_secs(3600));
        for _ in 0..5 {
            assert_eq!(user_of(&auth, &token).await, "u-0001");
        }
        assert_eq!(signature_checks(&auth), 1, "verified once, then remembered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_token_is_refused_once_it_expires() {
        let auth = authenticator(100);
        let token = token("u-0001", Duration::from_secs(60));
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        // Past `exp` but within the 30s leeway: still answered from memory.
        auth.inner.tokens.skew_clock(Duration::from_secs(80));
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        assert_eq!(signature_checks(&auth), 1);
        // Beyond the leeway: expired, although jsonwebtoken's clock (the real one) would still
        // accept it — the entry is checked against the clock, and not verified again.
        auth.inner.tokens.skew_clock(Duration::from_secs(11));
        assert_eq!(auth.verify(&token).await, Err(AuthError::Expired));
        assert_eq!(signature_checks(&auth), 1);
        assert_eq!(auth.inner.tokens.len(), 0, "the expired entry is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_token_is_verified_again_after_the_max_ttl() {
        let auth = authenticator(100);
        let token = token("u-0001", Duration::from_secs(3600));
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        assert_eq!(signature_checks(&auth), 1, "within token_cache_max_ttl");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        assert_eq!(signature_checks(&auth), 2, "verified again after 5m");
        assert_eq!(user_of(&auth, &token).await, "u-0001");
        assert_eq!(signature_checks(&auth), 2, "and remembered again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_holds_at_most_its_capacity() {
        let auth = authenticator(10);
        for n in 0..100 {
            let token = token(&format!("u-{n}"), Duration::from_secs(3600));
            assert_eq!(user_of(&auth, &token).await, format!("u-{n}"));
        }
        let held = auth.inner.tokens.len();
        assert!((1..=10).contains(&held), "{held} entries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_capacity_of_zero_verifies_every_request() {
        let auth = authenticator(0);
        let token = token("u-0001", Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(user_of(&auth, &token).await, "u-0001");
        }
        assert_eq!(signature_checks(&auth), 3);
        assert_eq!(auth.inner.tokens.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn different_tokens_never_share_an_entry() {
        let auth = authenticator(100);
        let first = token("u-0001", Duration::from_secs(3600));
        let second = token("u-0002", Duration::from_secs(3600));
        assert_eq!(user_of(&auth, &first).await, "u-0001");
        assert_eq!(user_of(&auth, &second).await, "u-0002");
        assert_eq!(user_of(&auth, &first).await, "u-0001");
        assert_eq!(user_of(&auth, &second).await, "u-0002");
        assert_eq!(signature_checks(&auth), 2);

        // The remembered token with one character of its signature changed is another token,
        // verified (and refused) on its own.
        let mut forged = first.clone();
        let last = forged.pop().expect("non-empty");
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(auth.verify(&forged).await, Err(AuthError::BadSignature));
        assert_eq!(auth.verify(&forged).await, Err(AuthError::BadSignature));
        assert_eq!(signature_checks(&auth), 4, "a refusal is never remembered");
        assert_eq!(token_cache::digest(&first).len(), 32);
        assert_ne!(token_cache::digest(&first), token_cache::digest(&forged));
    }

    #[test]
    fn logged_kids_are_cut() {
        assert_eq!(loggable_kid("key-1"), "key-1");
        assert_eq!(loggable_kid(&"k".repeat(200)).len(), MAX_LOGGED_KID);
        assert_eq!(loggable_kid("a\nb c\u{7f}é"), "a?b?c??");
    }
}

//! End-user authentication: bearer JWTs verified locally, their `sub` becoming the [`UserId`]
//! sent downstream.
//!
//! Web and mobile clients send `Authorization: Bearer <JWT>`. The gateway never calls an identity
//! provider per request; it checks the token itself with an [`Authenticator`] built once from the
//! [`AuthConfig`]:
//!
//! - **Development**: an HS256 shared secret (`hs256_secret`, at least 32 bytes). [`dev_token`]
//!   mints tokens with it, so the development launcher can print one ready to use.
//! - **Production**: RS256 / ES256 public keys from a JWKS URL (`jwks_url`), with `issuer` and
//!   `audience` required (the gateway refuses to start without them unless `allow_any_audience`
//!   waives the audience): a shared identity provider's keys also sign the tokens of its other
//!   tenants and applications. Keys are fetched once and cached by `kid`. After
//!   `jwks_refresh_interval` they are refreshed in the background while the old ones keep
//!   answering; a token naming an unknown `kid` (key rotation) waits for a re-fetch — at most one
//!   per `jwks_min_refresh_interval`, one at a time, shared by concurrent verifications. A failed
//!   refresh keeps the old keys.
//!
//! Policy, applied in [`Authenticator::verify`]:
//! - the token's `alg` must be one the configuration allows: HS256 only with the secret, RS256 and
//!   ES256 only with a JWKS key of the matching type. `none` is never accepted, and an HS256 token
//!   is only ever checked against the secret, never against a public key (algorithm confusion);
//! - `exp` is required; `exp` and `nbf` are checked with `leeway`; `iss` and `aud` are required
//!   and checked when `issuer` / `audience` are configured (always with `jwks_url`, except `aud`
//!   under `allow_any_audience`);
//! - `sub` is required and must be a valid user id (`^[A-Za-z0-9_-]{1,64}$`);
//! - headers that point elsewhere for keys (`jku`, `jwk`, `x5u`) are ignored, and a token with
//!   `crit` is refused (no extension is understood);
//! - with neither a secret nor a JWKS URL configured every token is refused: there is no built-in
//!   default secret.
//!
//! Verified tokens are remembered (`token_cache_capacity` entries, 10000 by default; `0` turns
//! it off) by the SHA-256 of the token, so a signed-in client's next requests skip the signature
//! check until the token's `exp` and for `token_cache_max_ttl` (5m) at most. `exp` and `nbf` are
//! checked again on every request, and a token of a JWKS key is answered from memory only while
//! the key cache still holds that very key: a refresh that removes or replaces the key makes the
//! token verified again, so a removed key stops being accepted exactly when it would without the
//! cache. Details: `token_cache`.
//!
//! Handlers take an [`AuthenticatedUser`] (required) or an [`OptionalUser`] (anonymous allowed,
//! but a present, invalid token is still refused) as an extractor; the [`Authenticator`] comes
//! from the gateway's state through `FromRef`. A refusal is an [`AuthError`]: a 401 problem with
//! `WWW-Authenticate: Bearer …` (RFC 6750) for REST, and a stable [`AuthError::code`] for logs
//! and for the GraphQL gateway's `UNAUTHENTICATED` errors.
//!
//! Tokens and secrets are never logged: a refusal is logged (at `debug`) with its code and, at
//! most, the token's `kid`.
//!
//! [`UserId`]: shared_clients::UserId

mod api_key;
mod config;
mod error;
mod extract;
mod jwks;
mod token_cache;
mod user;
mod verify;

pub use api_key::hash_api_key;
pub use config::{AuthConfig, Secret};
pub use error::AuthError;
pub use extract::OptionalUser;
pub use user::AuthenticatedUser;
pub use verify::{Authenticator, dev_token};

//! The settings of end-user authentication and the [`Secret`] wrapper that keeps the HS256
//! secret out of logs and printed configuration.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// Shortest HS256 secret accepted: 256 bits, the size of the HMAC-SHA-256 output (RFC 7518 §3.2).
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// Largest `leeway` accepted: it absorbs clock skew, it must not quietly extend token lifetimes.
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Longest `token_cache_max_ttl` accepted: a remembered token is not checked against a changed
/// configuration or clock for longer than this.
const MAX_TOKEN_CACHE_TTL: Duration = Duration::from_secs(60 * 60);

/// What [`Secret`] shows instead of its value.
const REDACTED: &str = "[redacted]";

/// How bearer tokens are verified. A gateway that authenticates users embeds it in its own
/// settings, e.g. as `auth` (`[gateway.auth]` in a file, `BFF_GATEWAY__AUTH__…` in the
/// environment), and calls [`AuthConfig::validate`] from its `GatewayConfig::validate`.
///
/// Configure `hs256_secret` for development, `jwks_url` for production, or both. With neither,
/// every token is refused. With `jwks_url`, `issuer` and `audience` are required (see
/// `allow_any_audience`): an identity provider's keys sign the tokens of all its tenants and
/// applications, not only this gateway's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Development only: the shared secret HS256 tokens are signed with (at least 32 bytes). When
    /// unset, HS256 tokens are refused. Never printed (shown as `[redacted]`). In the environment,
    /// quote a value that would read as a number or a list: `BFF_GATEWAY__AUTH__HS256_SECRET='"…"'`.
    pub hs256_secret: Option<Secret>,
    /// Production: the identity provider's JWKS document (`https://…/.well-known/jwks.json`),
    /// whose RSA and P-256 keys verify RS256 and ES256 tokens by `kid`. When unset, RS256 and
    /// ES256 tokens are refused.
    pub jwks_url: Option<String>,
    /// When set, tokens must carry exactly this `iss`, so tokens of another issuer trusted with
    /// the same keys (another tenant of a shared identity provider) are refused. Required with
    /// `jwks_url`; with only `hs256_secret`, unset means `iss` is not checked.
    pub issuer: Option<String>,
    /// When set, tokens must list this value in `aud`, so tokens the identity provider minted for
    /// another application are refused. Required with `jwks_url` unless `allow_any_audience`;
    /// with only `hs256_secret`, unset means `aud` is not checked.
    pub audience: Option<String>,
    /// With `jwks_url`, accept tokens of the configured `issuer` whatever their `aud` (or none)
    /// instead of refusing to start without `audience`: only for an issuer whose every token is
    /// meant for this gateway. Waives the audience only, never the issuer. Cannot be combined
    /// with `audience`. Default `false`.
    pub allow_any_audience: bool,
    /// Clock skew tolerated between the token issuer and this gateway, applied to `exp` and
    /// `nbf` (at most 5m).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How long fetched JWKS keys are used before a refresh: the first verification after it
    /// starts one fetch in the background and is answered with the current keys meanwhile, so
    /// removed keys stop being accepted and new ones are picked up without waiting for a token to
    /// name them, and without a slow identity provider delaying any verification.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Least time between two JWKS fetches (also after a failed fetch), so tokens naming unknown
    /// `kid`s cannot make the gateway hammer the identity provider.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// Longest one JWKS fetch may take; a verification waiting on a fetch (its `kid` unknown, or
    /// no keys fetched yet) waits no longer.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Largest token accepted, in bytes; larger ones are refused before any decoding.
    pub max_token_bytes: usize,
    /// How many verified tokens are remembered (by the SHA-256 of the token, never the token),
    /// so that a signed-in client's next requests skip the signature check. A remembered token
    /// still has `exp` and `nbf` checked on every request; one verified with a JWKS key is
    /// verified again as soon as a key refresh drops or replaces that key. `0` verifies every
    /// request. Default 10000 (about 2 MiB).
    pub token_cache_capacity: u64,
    /// Longest time a remembered token is answered without being verified again, whatever its
    /// `exp` (which always ends it sooner when sooner). Greater than 0, at most 1h. Default 5m.
    #[serde(with = "humantime_serde")]
    pub token_cache_max_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            allow_any_audience: false,
            leeway: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(10 * 60),
            jwks_min_refresh_interval: Duration::from_secs(30),
            jwks_timeout: Duration::from_secs(2),
            max_token_bytes: 8 * 1024,
            token_cache_capacity: 10_000,
            token_cache_max_ttl: Duration::from_secs(5 * 60),
        }
    }
}

impl AuthConfig {
    /// Checks beyond types; `prefix` is where this section sits in the settings (e.g.
    /// `gateway.auth`), so the error names the setting at fault.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let setting = |name: &str| format!("{prefix}.{name}");
        let short_secret = self
            .hs256_secret
            .as_ref()
            .is_some_and(|secret| secret.expose_secret().len() < MIN_SECRET_BYTES);
        if short_secret {
            return Err(ConfigError::invalid(
                setting("hs256_secret"),
                format!("must be at least {MIN_SECRET_BYTES} bytes long"),
            ));
        }
        if let Some(url) = &self.jwks_url {
            let valid = reqwest::Url::parse(url)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
            if !valid {
                return Err(ConfigError::invalid(
                    setting("jwks_url"),
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        for (name, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::invalid(setting(name), "must not be empty"));
            }
        }
        if self.allow_any_audience && self.audience.is_some() {
            return Err(ConfigError::invalid(
                setting("allow_any_audience"),
                "cannot be combined with `audience` (which is checked whenever it is set): \
                 remove one of them",
            ));
        }
        if self.jwks_url.is_some() {
            if self.audience.is_none() && !self.allow_any_audience {
                return Err(ConfigError::invalid(
                    setting("audience"),
                    "is required with `jwks_url`: without it, a token the identity provider \
                     issued for any other application would be accepted. Set this gateway's \
                     audience, or `allow_any_audience = true` if every token of the issuer is \
                     meant for this gateway",
                ));
            }
            if self.issuer.is_none() {
                return Err(ConfigError::invalid(
                    setting("issuer"),
                    "is required with `jwks_url`: the keys of a shared (multi-tenant) identity \
                     provider also sign the tokens of its other tenants, which only the issuer \
                     tells apart (`allow_any_audience` does not waive it)",
                ));
            }
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::invalid(
                setting("leeway"),
                "must be at most 5m: it absorbs clock skew, not token lifetimes",
            ));
        }
        for (name, value) in [
            ("jwks_refresh_interval", self.jwks_refresh_interval),
            ("jwks_min_refresh_interval", self.jwks_min_refresh_interval),
            ("jwks_timeout", self.jwks_timeout),
            ("token_cache_max_ttl", self.token_cache_max_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    setting(name),
                    "must be greater than 0",
                ));
            }
        }
        if self.token_cache_max_ttl > MAX_TOKEN_CACHE_TTL {
            return Err(ConfigError::invalid(
                setting("token_cache_max_ttl"),
                "must be at most 1h",
            ));
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::invalid(
                setting("max_token_bytes"),
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// A secret value (the HS256 key). Its `Debug`, `Display` and `Serialize` show `[redacted]`, so
/// printing or dumping a configuration never reveals it; [`Secret::expose_secret`] is the one way
/// to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the code that signs or verifies with it. Never log the result.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    /// Writes `[redacted]`: a serialized configuration never holds the secret (and reading it
    /// back yields a secret too short to pass validation, never a silently wrong one).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some(Secret::new("s".repeat(MIN_SECRET_BYTES))),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn the_defaults_are_valid_and_documented_values() {
        let config = AuthConfig::default();
        config.validate("auth").expect("defaults are valid");
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert_eq!(config.jwks_refresh_interval, Duration::from_secs(600));
        assert_eq!(config.jwks_min_refresh_interval, Duration::from_secs(30));
        assert_eq!(config.jwks_timeout, Duration::from_secs(2));
        assert_eq!(config.max_token_bytes, 8192);
        assert_eq!(config.token_cache_capacity, 10_000);
        assert_eq!(config.token_cache_max_ttl, Duration::from_secs(300));
        assert!(!config.allow_any_audience);
    }

    #[test]
    fn a_short_secret_is_refused_naming_the_setting() {
        let config = AuthConfig {
            hs256_secret: Some(Secret::new("too-short")),
            ..AuthConfig::default()
        };
        let error = config.validate("gateway.auth").expect_err("refused");
        assert!(
            error.to_string().contains("gateway.auth.hs256_secret"),
            "{error}"
        );
        assert!(!error.to_string().contains("too-short"), "{error}");
        valid()
            .validate("gateway.auth")
            .expect("32 bytes are enough");
    }

    fn jwks() -> AuthConfig {
        AuthConfig {
            jwks_url: Some("https://idp.example/.well-known/jwks.json".into()),
            issuer: Some("https://idp.example/".into()),
            audience: Some("bff-web".into()),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn a_jwks_url_without_an_audience_or_an_issuer_is_refused_naming_the_setting() {
        jwks().validate("gateway.auth").expect("both are checked");
        let cases = [
            (
                AuthConfig {
                    audience: None,
                    ..jwks()
                },
                "gateway.auth.audience",
            ),
            (
                AuthConfig {
                    issuer: None,
                    ..jwks()
                },
                "gateway.auth.issuer",
            ),
            (
                AuthConfig {
                    issuer: None,
                    audience: None,
                    ..jwks()
                },
                "gateway.auth.audience",
            ),
        ];
        for (config, setting) in cases {
            let error = config.validate("gateway.auth").expect_err(setting);
            let message = error.to_string();
            assert!(message.contains(setting), "{message}");
            assert!(message.contains("jwks_url"), "says why: {message}");
        }
        // A development secret alone is not a shared identity provider: neither is required.
        valid().validate("gateway.auth").expect("HS256 only");
    }

    #[test]
    fn allow_any_audience_waives_the_audience_only_and_excludes_an_audience() {
        let any_audience = AuthConfig {
            audience: None,
            allow_any_audience: true,
            ..jwks()
        };
        any_audience
            .validate("gateway.auth")
            .expect("an explicit choice");

        let no_issuer = AuthConfig {
            issuer: None,
            ..any_audience.clone()
        };
        let error = no_issuer.validate("gateway.auth").expect_err("refused");
        assert!(error.to_string().contains("gateway.auth.issuer"), "{error}");

        let both = AuthConfig {
            allow_any_audience: true,
            ..jwks()
        };
        let error = both.validate("gateway.auth").expect_err("contradictory");
        assert!(
            error
                .to_string()
                .contains("gateway.auth.allow_any_audience"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        let cases = [
            (
                AuthConfig {
                    jwks_url: Some("ftp://idp/jwks".into()),
                    ..valid()
                },
                "jwks_url",
            ),
            (
                AuthConfig {
                    jwks_url: Some("not a url".into()),
                    ..valid()
                },
                "jwks_url",
            ),
            (
                AuthConfig {
                    issuer: Some(String::new()),
                    ..valid()
                },
                "issuer",
            ),
            (
                AuthConfig {
                    audience: Some(String::new()),
                    ..valid()
                },
                "audience",
            ),
            (
                AuthConfig {
                    leeway: Duration::from_secs(3600),
                    ..valid()
                },
                "leeway",
            ),
            (
                AuthConfig {
                    jwks_timeout: Duration::ZERO,
                    ..valid()
                },
                "jwks_timeout",
            ),
            (
                AuthConfig {
                    jwks_min_refresh_interval: Duration::ZERO,
                    ..valid()
                },
                "jwks_min_refresh_interval",
            ),
            (
                AuthConfig {
                    max_token_bytes: 0,
                    ..valid()
                },
                "max_token_bytes",
            ),
            (
                AuthConfig {
                    token_cache_max_ttl: Duration::ZERO,
                    ..valid()
                },
                "token_cache_max_ttl",
            ),
            (
                AuthConfig {
                    token_cache_max_ttl: Duration::from_secs(2 * 60 * 60),
                    ..valid()
                },
                "token_cache_max_ttl",
            ),
        ];
        for (config, setting) in cases {
            let error = config.validate("x").expect_err(setting);
            assert!(
                error.to_string().contains(&format!("x.{setting}")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_secret_never_prints_or_serializes() {
        let secret = Secret::new("correct horse battery staple, 32+ bytes");
        assert_eq!(secret.to_string(), "[redacted]");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        let config = AuthConfig {
            hs256_secret: Some(secret.clone()),
            ..AuthConfig::default()
        };
        assert!(!format!("{config:?}").contains("horse"));
        let json = serde_json::to_string(&config).expect("serializes");
        assert!(!json.contains("horse"), "{json}");
        assert!(json.contains("[redacted]"), "{json}");
        let read: Secret = serde_json::from_str("\"from a file\"").expect("deserializes");
        assert_eq!(read.expose_secret(), "from a file");
    }

    #[test]
    fn durations_are_human_strings_and_unknown_keys_are_refused() {
        let config: AuthConfig = serde_json::from_str(
            r#"{"leeway": "10s", "jwks_refresh_interval": "5m", "audience": "web"}"#,
        )
        .expect("deserializes");
        assert!(!config.allow_any_audience, "off unless set");
        assert_eq!(config.leeway, Duration::from_secs(10));
        assert_eq!(config.jwks_refresh_interval, Duration::from_secs(300));
        assert_eq!(config.audience.as_deref(), Some("web"));
        assert_eq!(config.jwks_timeout, AuthConfig::default().jwks_timeout);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"secret": "x"}"#).is_err());
    }
}

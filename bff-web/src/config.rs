//! The `[gateway]` section of `bff-web`'s settings: [`WebConfig`] and its parts.
//!
//! Every field has a default, so an empty configuration serves the reference services on their
//! default ports (with every bearer token refused until `auth.hs256_secret` or `auth.jwks_url` is
//! set). In a file the section is `[gateway]`, `[gateway.limits]`, …; in the environment
//! `BFF_GATEWAY__LIMITS__MAX_DEPTH=8` and so on.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use server_kit::{
    ConfigError, GatewayConfig, ServerConfig,
    auth::{AuthConfig, Secret},
    live::LiveConfig,
};
use shared_clients::OrderPlacementConfig;

/// Largest page any list may be asked for, whatever the configuration says (the downstream
/// contract's own limit).
pub const MAX_PAGE_SIZE: u32 = 100;

/// Settings of `bff-web` alone: the `[gateway]` section of its configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where the GraphQL endpoint (and, for browsers, GraphiQL) is served.
    pub path: String,
    /// Whether `GET` on the endpoint from a browser (`Accept: text/html`) shows the built-in query
    /// page. Its assets are served by the gateway itself: it works without internet access.
    pub graphiql: bool,
    /// Whether the schema may be introspected (`__schema`, `__type`). Turn off in production if
    /// the schema should not be browsable; GraphiQL then loses its schema documentation. On
    /// while `server.listen_addr` is not a loopback address, `--check-config` and start-up warn.
    pub introspection: bool,
    /// Protection against expensive documents.
    pub limits: LimitsConfig,
    /// Memory budget, in bytes, of the parsed documents kept by their text so a repeated query is
    /// parsed once (estimated from each text's length; least recently used forgotten first). 0
    /// turns the cache off.
    pub document_cache_max_bytes: u64,
    /// Automatic persisted queries (Apollo's protocol): clients send a query's hash instead of its
    /// text once the gateway knows it.
    pub apq: ApqConfig,
    /// Whole answers of public queries kept and answered again without running them (see
    /// `docs/response-cache.md`).
    pub response_cache: ResponseCacheConfig,
    /// Cross-origin access for the web app's origins.
    pub cors: CorsConfig,
    /// How bearer tokens are verified (`[gateway.auth]`, `BFF_GATEWAY__AUTH__HS256_SECRET`).
    pub auth: AuthConfig,
    /// How checkouts remember attempts, so a retried checkout returns the same order.
    pub checkout: OrderPlacementConfig,
    /// What the gateway's own metrics may name.
    pub metrics: WebMetricsConfig,
    /// How long a request's product loader waits, after the first product it is asked for that
    /// the cache does not hold fresh, for the others of the same request before it makes its one
    /// batch call. Fields of one request are resolved in one pass, so their lookups arrive within
    /// microseconds; longer only adds latency to cold requests (cache hits never wait).
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Live updates: GraphQL subscriptions over WebSocket (`graphql-transport-ws`) and
    /// server-sent events, their polling fallback and limits.
    pub subscriptions: LiveConfig,
    /// Trusted documents: the operations the web app was built with, loaded from manifests, run
    /// by id and (in `enforce` mode) the only ones accepted.
    pub trusted_documents: TrustedDocumentsConfig,
    /// Whether `GET <path>/schema.graphql` serves the schema's SDL even while `introspection` is
    /// off (it is served whenever introspection is on), so a web app's code generator can point
    /// at a running gateway.
    pub schema_endpoint: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            path: "/graphql".to_owned(),
            graphiql: true,
            introspection: true,
            limits: LimitsConfig::default(),
            document_cache_max_bytes: 8 * 1024 * 1024,
            apq: ApqConfig::default(),
            response_cache: ResponseCacheConfig::default(),
            cors: CorsConfig::default(),
            auth: AuthConfig::default(),
            checkout: OrderPlacementConfig::default(),
            metrics: WebMetricsConfig::default(),
            batch_delay: Duration::from_micros(200),
            subscriptions: LiveConfig::default(),
            trusted_documents: TrustedDocumentsConfig::default(),
            schema_endpoint: false,
        }
    }
}

impl GatewayConfig for WebConfig {
    const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.len() < 2 {
            return Err(ConfigError::invalid(
                "gateway.path",
                "must be an absolute path other than `/`, e.g. `/graphql`",
            ));
        }
        self.limits.validate()?;
        if self.apq.enabled && self.apq.max_bytes == 0 {
            return Err(ConfigError::invalid(
                "gateway.apq.max_bytes",
                "must be greater than 0 while APQ is enabled",
            ));
        }
        if self.response_cache.enabled && self.response_cache.max_bytes == 0 {
            return Err(ConfigError::invalid(
                "gateway.response_cache.max_bytes",
                "must be greater than 0 while the response cache is enabled",
            ));
        }
        if self.apq.shared_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "gateway.apq.shared_ttl",
                "must be at least 1s (Redis keeps keys for whole seconds)",
            ));
        }
        for origin in &self.cors.allowed_origins {
            let valid = origin != "*"
                && (origin.starts_with("http://") || origin.starts_with("https://"))
                && http::HeaderValue::from_str(origin).is_ok()
                && !origin.ends_with('/');
            if !valid {
                return Err(ConfigError::invalid(
                    "gateway.cors.allowed_origins",
                    format!("`{origin}` is not an origin such as `https://shop.example.com`"),
                ));
            }
        }
        if self.batch_delay > MAX_BATCH_DELAY {
            return Err(ConfigError::invalid(
                "gateway.batch_delay",
                "must be at most 100ms (it delays every request that misses the cache)",
            ));
        }
        self.metrics.validate()?;
        self.trusted_documents.validate()?;
        self.subscriptions.validate("gateway.subscriptions")?;
        self.auth.validate("gateway.auth")
    }

    fn warnings(&self, server: &ServerConfig) -> Vec<String> {
        let mut warnings = Vec::new();
        warnings.extend(self.subscriptions.warnings("gateway.subscriptions", server));
        if self.trusted_documents.mode == TrustedMode::Off
            && !self.trusted_documents.manifests.is_empty()
        {
            warnings.push(
                "gateway.trusted_documents.manifests is set while gateway.trusted_documents.mode \
                 is off: the manifests are not read (set mode to allow or enforce)"
                    .to_owned(),
            );
        }
        if self.introspection && !server.listen_addr.ip().to_canonical().is_loopback() {
            warnings.push(format!(
                "gateway.introspection is on while server.listen_addr ({}) is not a loopback \
                 address: whoever reaches it can read the whole schema; turn it off in \
                 production (BFF_GATEWAY__INTROSPECTION=false, see \"Production profile\" in \
                 bff-web/README.md)",
                server.listen_addr
            ));
        }
        warnings
    }
}

/// Which documents the gateway runs (`gateway.trusted_documents.mode`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrustedMode {
    /// Manifests are not read; `documentId` is unknown; any document runs.
    #[default]
    Off,
    /// Documents of the manifests run by id (skipping parse and validation), and any other
    /// document runs too: the dev launcher's mode.
    Allow,
    /// Only documents of the manifests run (`PERSISTED_DOCUMENT_REQUIRED` for any other, and APQ
    /// cannot register new hashes), unless the request carries the bypass header with the
    /// secret.
    Enforce,
}

/// Shortest `gateway.trusted_documents.bypass_secret` accepted.
pub const MIN_BYPASS_SECRET_BYTES: usize = 32;

/// Trusted documents (`[gateway.trusted_documents]`): see `crate::trusted`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedDocumentsConfig {
    /// `off`, `allow` or `enforce`: whether manifests are read, and whether documents that are
    /// not in them still run.
    pub mode: TrustedMode,
    /// The manifest files, each either Apollo's persisted query manifest
    /// (`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [...]}`) or
    /// the flat `{"<id>": "<document>"}` of GraphQL Code Generator's client preset. Every
    /// document is parsed and validated at load: a bad one stops start-up naming the file and
    /// the id. Read again on SIGHUP and when a file changes.
    pub manifests: Vec<PathBuf>,
    /// How often the manifests' modification times are checked for a change (a changed file is
    /// loaded again; a failed load keeps the previous set).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The request header that, carrying `bypass_secret`, lets a request send an arbitrary
    /// document in `enforce` mode (operators, GraphiQL). Not on WebSocket operations.
    pub bypass_header: String,
    /// The value `bypass_header` must carry (at least 32 bytes; compared in constant time). Set
    /// it from the environment (`BFF_GATEWAY__TRUSTED_DOCUMENTS__BYPASS_SECRET`, a Kubernetes
    /// Secret), never in a file. Unset: no bypass.
    pub bypass_secret: Option<Secret>,
}

impl Default for TrustedDocumentsConfig {
    fn default() -> Self {
        Self {
            mode: TrustedMode::Off,
            manifests: Vec::new(),
            poll_interval: Duration::from_secs(5),
            bypass_header: "x-bff-bypass-trusted-documents".to_owned(),
            bypass_secret: None,
        }
    }
}

impl TrustedDocumentsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == TrustedMode::Enforce && self.manifests.is_empty() {
            return Err(ConfigError::invalid(
                "gateway.trusted_documents.manifests",
                "must name at least one manifest file in `enforce` mode (every document would \
                 be refused)",
            ));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "gateway.trusted_documents.poll_interval",
                "must be at least 10ms",
            ));
        }
        if http::HeaderName::from_bytes(self.bypass_header.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                "gateway.trusted_documents.bypass_header",
                format!("`{}` is not a header name", self.bypass_header),
            ));
        }
        if let Some(secret) = &self.bypass_secret
            && secret.expose_secret().len() < MIN_BYPASS_SECRET_BYTES
        {
            return Err(ConfigError::invalid(
                "gateway.trusted_documents.bypass_secret",
                format!("must be at least {MIN_BYPASS_SECRET_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

/// Most names `gateway.metrics.operation_names` may list.
pub const MAX_OPERATION_METRIC_NAMES: usize = 1000;

/// What `bff_graphql_operations_total` and `bff_graphql_errors_total` may name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebMetricsConfig {
    /// The operation names the metrics label by name (the web app's own operations, e.g. from its
    /// code generator's output). Any other named operation is counted as `other`, and an unnamed
    /// one as `anonymous`: names come from clients, so learning them as they arrive would let
    /// anyone fill the label with junk and push the real operations out. At most 1000 names,
    /// each a GraphQL name of at most 64 characters.
    pub operation_names: Vec<String>,
}

impl WebMetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.operation_names.len() > MAX_OPERATION_METRIC_NAMES {
            return Err(ConfigError::invalid(
                "gateway.metrics.operation_names",
                format!("at most {MAX_OPERATION_METRIC_NAMES} names"),
            ));
        }
        for name in &self.operation_names {
            let first_ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            let valid = first_ok
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ConfigError::invalid(
                    "gateway.metrics.operation_names",
                    format!("`{name}` is not a GraphQL operation name of at most 64 characters"),
                ));
            }
        }
        Ok(())
    }
}

/// Longest `gateway.batch_delay` accepted.
const MAX_BATCH_DELAY: Duration = Duration::from_millis(100);

/// Limits on what one GraphQL request may ask for. A document beyond a limit is refused before
/// anything is resolved, with a code naming the limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Deepest nesting of selections (`QUERY_TOO_DEEP` beyond it), so a document cannot walk the
    /// graph (product → category → parent → …) without end.
    pub max_depth: usize,
    /// Highest complexity: one per field, list fields multiplied by their page size
    /// (`QUERY_TOO_COMPLEX` beyond it), so one request cannot fan out to thousands of objects.
    pub max_complexity: usize,
    /// Most aliases in a document (`TOO_MANY_ALIASES` beyond it), so one request cannot repeat an
    /// expensive field under many names.
    pub max_aliases: usize,
    /// Most fields selected at the root of the operation (`TOO_MANY_ROOT_FIELDS` beyond it).
    pub max_root_fields: usize,
    /// Most selections (fields, introspection included, fragment spreads, inline fragments) a
    /// document may hold once its fragments are expanded (`QUERY_TOO_COMPLEX` beyond it), so a
    /// small document of fragments spreading one another cannot expand into millions of fields.
    /// Counted without expanding anything.
    pub max_expanded_selections: usize,
    /// Page size when a list is asked for without `first`.
    pub default_page_size: u32,
    /// Largest `first` accepted (`BAD_USER_INPUT` beyond it); at most 100.
    pub max_page_size: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 5000,
            max_aliases: 30,
            max_root_fields: 20,
            max_expanded_selections: 10_000,
            default_page_size: 20,
            max_page_size: MAX_PAGE_SIZE,
        }
    }
}

impl LimitsConfig {
    /// Range checks beyond the types.
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max_depth", self.max_depth),
            ("max_complexity", self.max_complexity),
            ("max_root_fields", self.max_root_fields),
            ("max_expanded_selections", self.max_expanded_selections),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("gateway.limits.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.max_page_size == 0 || self.max_page_size > MAX_PAGE_SIZE {
            return Err(ConfigError::invalid(
                "gateway.limits.max_page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(ConfigError::invalid(
                "gateway.limits.default_page_size",
                "must be between 1 and max_page_size",
            ));
        }
        Ok(())
    }
}

/// Automatic persisted queries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApqConfig {
    /// Whether `extensions.persistedQuery` is honoured; off, such requests get
    /// `PERSISTED_QUERY_NOT_SUPPORTED`.
    pub enabled: bool,
    /// Memory budget of the remembered query texts, in bytes (least recently used forgotten
    /// first), so the store stays bounded whatever clients send.
    pub max_bytes: u64,
    /// With `shared.redis_url` set: how long a query registered on one replica stays in Redis,
    /// where every replica finds it (each registration renews it; whole seconds, at least `1s`).
    /// Without Redis it is not used. Queries longer than `server.max_body_bytes` are never
    /// shared.
    #[serde(with = "humantime_serde")]
    pub shared_ttl: Duration,
}

impl Default for ApqConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 4 * 1024 * 1024,
            shared_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The response cache of public queries (`[gateway.response_cache]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseCacheConfig {
    /// Whether answers of queries that read only public catalog data are kept and answered
    /// again, and `GET` ones get `Cache-Control: public, max-age=…` and an `ETag`.
    pub enabled: bool,
    /// Memory budget of the kept answers, in bytes (their JSON; least recently used forgotten
    /// first).
    pub max_bytes: u64,
    /// Largest answer kept, in bytes; larger ones are answered but never kept.
    pub max_entry_bytes: usize,
    /// Longest an answer is kept, whatever its contents' freshness allows (each answer is kept
    /// no longer than the shortest remaining freshness of what it shows, and dropped by the
    /// change events of what it shows).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 32 * 1024 * 1024,
            max_entry_bytes: 256 * 1024,
            max_ttl: Duration::from_secs(300),
        }
    }
}

/// Cross-origin resource sharing for the browser app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the endpoint from a browser, e.g. `https://shop.example.com`.
    /// Empty (the default): no CORS headers, so only same-origin pages can call it.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use server_kit::config::load_from;

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<crate::WebSettings, ConfigError> {
        load_from(
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn introspection_beyond_loopback_is_warned_about() {
        let warnings = |env: &[(&str, &str)]| load(env).expect("valid").warnings();
        assert!(warnings(&[]).is_empty(), "the defaults listen on loopback");
        assert!(warnings(&[("BFF_LISTEN_ADDR", "[::1]:8080")]).is_empty());
        assert!(warnings(&[("BFF_LISTEN_ADDR", "[::ffff:127.0.0.1]:8080")]).is_empty());
        for addr in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let found = warnings(&[("BFF_LISTEN_ADDR", addr)]);
            assert_eq!(found.len(), 1, "{addr}: {found:?}");
            assert!(
                found[0].starts_with("gateway.introspection is on"),
                "{found:?}"
            );
            assert!(found[0].contains(addr), "{found:?}");
        }
        assert!(
            warnings(&[
                ("BFF_LISTEN_ADDR", "0.0.0.0:8080"),
                ("BFF_GATEWAY__INTROSPECTION", "false"),
            ])
            .is_empty()
        );
    }

    #[test]
    fn the_defaults_are_valid_and_listen_on_8080() {
        let settings = load(&[]).expect("defaults load");
        assert_eq!(settings.server.listen_addr.port(), 8080);
        assert_eq!(settings.gateway, WebConfig::default());
        assert_eq!(settings.gateway.limits.max_page_size, 100);
    }

    #[test]
    fn gateway_settings_come_from_the_environment() {
        let settings = load(&[
            ("BFF_GATEWAY__LIMITS__MAX_DEPTH", "7"),
            (
                "BFF_GATEWAY__AUTH__HS256_SECRET",
                "a-development-secret-of-32-bytes!!",
            ),
            ("BFF_GATEWAY__CORS__MAX_AGE", "1m"),
            ("BFF_GATEWAY__DOCUMENT_CACHE_MAX_BYTES", "0"),
            ("BFF_GATEWAY__APQ__SHARED_TTL", "6h"),
            ("BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE", "enforce"),
            (
                "BFF_GATEWAY__TRUSTED_DOCUMENTS__MANIFESTS",
                r#"["a.json", "b.json"]"#,
            ),
            (
                "BFF_GATEWAY__TRUSTED_DOCUMENTS__BYPASS_SECRET",
                "an-operator-secret-of-32-bytes!!",
            ),
            ("BFF_GATEWAY__SCHEMA_ENDPOINT", "true"),
        ])
        .expect("loads");
        let trusted = &settings.gateway.trusted_documents;
        assert_eq!(trusted.mode, TrustedMode::Enforce);
        assert_eq!(
            trusted.manifests,
            [PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        assert!(trusted.bypass_secret.is_some());
        assert_eq!(trusted.bypass_header, "x-bff-bypass-trusted-documents");
        assert!(settings.gateway.schema_endpoint);
        assert_eq!(
            settings.gateway.apq.shared_ttl,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(settings.gateway.document_cache_max_bytes, 0);
        assert_eq!(settings.gateway.limits.max_depth, 7);
        assert!(settings.gateway.auth.hs256_secret.is_some());
        assert_eq!(settings.gateway.cors.max_age, Duration::from_secs(60));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        for (key, value, setting) in [
            ("BFF_GATEWAY__LIMITS__MAX_PAGE_SIZE", "101", "max_page_size"),
            ("BFF_GATEWAY__PATH", "graphql", "gateway.path"),
            ("BFF_GATEWAY__AUTH__HS256_SECRET", "short", "hs256_secret"),
            ("BFF_GATEWAY__LIMITS__MAX_DEPHT", "3", "max_depht"),
            (
                "BFF_GATEWAY__APQ__SHARED_TTL",
                "500ms",
                "gateway.apq.shared_ttl",
            ),
            (
                "BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE",
                "enforce",
                "gateway.trusted_documents.manifests",
            ),
            (
                "BFF_GATEWAY__TRUSTED_DOCUMENTS__BYPASS_SECRET",
                "short",
                "gateway.trusted_documents.bypass_secret",
            ),
            ("BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE", "strict", "mode"),
        ] {
            let error = load(&[(key, value)]).expect_err(key).to_string();
            assert!(error.contains(setting), "{key}: {error}");
        }
        let cors = WebConfig {
            cors: CorsConfig {
                allowed_origins: vec!["*".to_owned()],
                ..CorsConfig::default()
            },
            ..WebConfig::default()
        };
        assert!(cors.validate().is_err(), "a wildcard origin is refused");
    }
}

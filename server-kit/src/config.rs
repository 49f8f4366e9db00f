//! Layered configuration.
//!
//! Each gateway's settings are one typed [`Settings`] (the shared sections plus its own
//! [`GatewayConfig`]); this module fills them from three layers, later ones winning:
//!
//! 1. the struct's `Default` (embedded defaults: everything works with no configuration at all),
//! 2. an optional TOML file given with `--config PATH` (or `BFF_CONFIG`),
//! 3. environment variables prefixed `BFF_`: `BFF_SECTION__KEY` sets `section.key` (double
//!    underscore between levels, case-insensitive), plus six short aliases every gateway reads:
//!
//! | variable          | setting                  |
//! |-------------------|--------------------------|
//! | `BFF_LISTEN_ADDR` | `server.listen_addr`     |
//! | `BFF_PRODUCT_URL` | `downstream.product.url` |
//! | `BFF_CART_URL`    | `downstream.cart.url`    |
//! | `BFF_ORDER_URL`   | `downstream.order.url`   |
//! | `BFF_REDIS_URL`   | `shared.redis_url`       |
//! | `BFF_REDIS_CLUSTER_NODES` | `shared.redis_cluster_nodes` (comma-separated) |
//!
//! Two standard OpenTelemetry variables are read as well, below any `BFF_…` variable:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` sets `telemetry.otlp_endpoint` and `OTEL_SERVICE_NAME` sets
//! `telemetry.service_name`.
//!
//! Unknown keys are errors, not silently ignored, so a typo cannot leave a default in force. Every
//! error names the setting and where its value came from.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shared_clients::{DownstreamConfig, SharedConfig};

pub use crate::compression::CompressionConfig;

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "BFF_";

/// Environment variables with the prefix that are not settings (they are read elsewhere).
const NOT_SETTINGS: &[&str] = &["CONFIG"];

/// OpenTelemetry's standard variables that are read as settings too (exact names, values taken as
/// strings). A `BFF_…` variable for the same setting wins.
const OTEL_ALIASES: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
];

/// The settings of one gateway binary: the sections every gateway shares plus its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, bound = "X: GatewayConfig")]
pub struct Settings<X> {
    /// The listener, limits, readiness and shutdown.
    pub server: ServerConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The downstream services and the catalog cache.
    pub downstream: DownstreamConfig,
    /// What every replica shares in Redis (optional; off without `shared.redis_url`).
    pub shared: SharedConfig,
    /// What only this gateway has (`[gateway]` in a file, `BFF_GATEWAY__…` in the environment).
    pub gateway: X,
}

impl<X: GatewayConfig> Default for Settings<X> {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen_addr: X::DEFAULT_LISTEN_ADDR,
                metrics_listen_addr: Some(X::DEFAULT_METRICS_ADDR),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            downstream: DownstreamConfig::default(),
            shared: SharedConfig::default(),
            gateway: X::default(),
        }
    }
}

impl<X: GatewayConfig> Settings<X> {
    /// What is valid but unwise in these settings (see [`GatewayConfig::warnings`]).
    pub fn warnings(&self) -> Vec<String> {
        self.gateway.warnings(&self.server)
    }

    /// Checks that go beyond types (ranges, combinations), naming the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        validate_downstream(&self.downstream)?;
        validate_shared(&self.shared)?;
        self.gateway.validate()
    }
}

/// Checks of the `[shared]` section beyond its types (a Redis URL the client accepts, usable
/// timeouts), naming the setting at fault.
pub fn validate_shared(shared: &SharedConfig) -> Result<(), ConfigError> {
    shared
        .validate()
        .map_err(|(setting, reason)| ConfigError::invalid(setting, reason))
}

/// Checks of the downstream section beyond its types: every service URL is `http(s)://`, every
/// timeout above 0.
pub fn validate_downstream(downstream: &DownstreamConfig) -> Result<(), ConfigError> {
    for (name, service) in [
        ("product", &downstream.product),
        ("cart", &downstream.cart),
        ("order", &downstream.order),
    ] {
        let scheme_ok = service.url.starts_with("http://") || service.url.starts_with("https://");
        if !scheme_ok {
            return Err(ConfigError::invalid(
                format!("downstream.{name}.url"),
                format!("`{}` is not an http:// or https:// URL", service.url),
            ));
        }
        if service.timeout.is_zero() || service.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("downstream.{name}.timeout"),
                "timeouts must be greater than 0",
            ));
        }
    }
    Ok(())
}

/// A whole process's configuration, loaded in layers by [`load_layered`]: one gateway's
/// [`Settings`], or several gateways' in one process (`bff-all`).
pub trait Layered: Serialize + DeserializeOwned + Default {
    /// Checks beyond the types, naming the setting at fault.
    fn check(&self) -> Result<(), ConfigError>;

    /// How the process logs and exports traces.
    fn telemetry(&self) -> &TelemetryConfig;

    /// What is valid but unwise (printed by `--check-config`, logged at start-up).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<X: GatewayConfig> Layered for Settings<X> {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    fn warnings(&self) -> Vec<String> {
        Settings::warnings(self)
    }
}

/// The part of the settings that belongs to one gateway alone.
pub trait GatewayConfig:
    Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Where this gateway listens when nothing else is configured, so the three gateways and the
    /// reference services can run side by side on one machine with no configuration.
    const DEFAULT_LISTEN_ADDR: SocketAddr;

    /// Where this gateway serves `/metrics` when nothing else is configured: a loopback port of
    /// its own, so metrics are never on the client-facing port by default.
    const DEFAULT_METRICS_ADDR: SocketAddr;

    /// Checks of this gateway's own settings beyond their types.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Valid settings that are unwise together with `_server` (e.g. a development convenience on
    /// an address other machines can reach), one sentence each naming the setting.
    /// `--check-config` prints them and start-up logs them; neither refuses to start.
    fn warnings(&self, _server: &ServerConfig) -> Vec<String> {
        Vec::new()
    }
}

/// How a gateway listens and behaves as an HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to accept client connections on (`0.0.0.0:8080` to listen on every
    /// interface). Port 0 picks a free port, which tests use.
    pub listen_addr: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413 before they are read whole.
    pub max_body_bytes: usize,
    /// After SIGTERM or ctrl-c, how long in-flight requests may take to finish before the process
    /// exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Whether `/ready` also requires every downstream service's `/health` to answer. Off, the
    /// gateway reports ready as soon as it serves (and degrades per request when a service is down).
    pub ready_requires_downstream: bool,
    /// Longest time `/ready` waits for the downstream health checks, so a probe never hangs.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// How long one downstream readiness result is reused: however many probes arrive, the
    /// downstream services are asked at most once per interval, and concurrent probes share one
    /// check.
    #[serde(with = "humantime_serde")]
    pub ready_cache_ttl: Duration,
    /// The address `GET /metrics` is served on, apart from the clients' port: a loopback port by
    /// default (each gateway its own), `0.0.0.0:9090` in a pod whose metrics port is scraped.
    /// The metrics name partners and operations, so they are not for clients.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// Also serve `/metrics` on `listen_addr`, to every client. Off by default: only for a
    /// gateway whose port no untrusted client can reach.
    pub public_metrics: bool,
    /// Once the first byte of a request has arrived, how long its head (request line and
    /// headers) may take to arrive whole; the connection is closed after it. Stops clients that
    /// send half a request and then nothing (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request in flight and no byte
    /// received. Keep it longer than the idle timeout of the load balancer in front (60 s on the
    /// common ones), so that the balancer, not the gateway, closes idle connections.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive whole, from the end of its head; a slower
    /// body gets `408` and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest request head (request line and all headers), in bytes; a larger one gets `431`.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more get `431`.
    pub max_headers: usize,
    /// Most client connections served at once. Further connections wait in the kernel's accept
    /// queue until one closes. Each takes a file descriptor: the gateway raises its own
    /// descriptor limit to the hard limit at start-up and warns when that is too low for this.
    pub max_connections: usize,
    /// Response compression (`br`, `gzip`) above a size, the same for every gateway
    /// ([`crate::compression`]).
    pub compression: CompressionConfig,
    /// Above this many requests in one second, the access log (the `finished processing
    /// request` line) is sampled: the first this many successful, fast requests of each second
    /// are logged, the others counted, and one line per second says how many were not logged.
    /// Errors (status 400 and above) and requests slower than `access_log_slow_threshold` are
    /// always logged. `0` (the default) logs every request.
    pub access_log_sample_above_rps: u64,
    /// A request at least this slow is always logged, however many requests arrive.
    #[serde(with = "humantime_serde")]
    pub access_log_slow_threshold: Duration,
}

impl ServerConfig {
    /// Server settings listening on `listen_addr`, everything else at its default.
    pub fn listening_on(listen_addr: SocketAddr) -> Self {
        Self {
            listen_addr,
            ..Self::default()
        }
    }

    /// Range checks that the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        for (setting, value) in [
            ("server.ready_timeout", self.ready_timeout),
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.body_read_timeout", self.body_read_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(ConfigError::invalid(
                    setting,
                    "must be greater than 0 and at most 24h",
                ));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.max_headers == 0 {
            return Err(ConfigError::invalid(
                "server.max_headers",
                "must be greater than 0",
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::invalid(
                "server.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        if self.access_log_slow_threshold > MAX_TIMEOUT {
            return Err(ConfigError::invalid(
                "server.access_log_slow_threshold",
                "must be at most 24h",
            ));
        }
        if self.metrics_listen_addr == Some(self.listen_addr) && self.listen_addr.port() != 0 {
            return Err(ConfigError::invalid(
                "server.metrics_listen_addr",
                "must differ from server.listen_addr (set server.public_metrics to serve /metrics \
                 to clients)",
            ));
        }
        Ok(())
    }
}

/// Longest accepted server timeout: anything longer is a mistake (and instants must not overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Smallest accepted `server.max_header_bytes`: a request line and a bearer token must fit.
const MIN_HEADER_BYTES: usize = 1024;

/// Largest accepted `server.max_connections`.
const MAX_CONNECTIONS: usize = 1 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            ready_requires_downstream: false,
            ready_timeout: Duration::from_millis(500),
            ready_cache_ttl: Duration::from_secs(1),
            metrics_listen_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9180))),
            public_metrics: false,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            compression: CompressionConfig::default(),
            access_log_sample_above_rps: 0,
            access_log_slow_threshold: Duration::from_secs(1),
        }
    }
}

/// How logs are written and, optionally, where traces are exported (see [`crate::telemetry`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Which events to log, in `tracing`'s filter syntax (e.g. `info,shared_clients=debug`).
    /// `RUST_LOG`, when set, takes precedence, as is customary. Spans the filter turns off are
    /// not exported either.
    pub filter: String,
    /// `compact` for people at a terminal, `json` for log pipelines.
    pub format: LogFormat,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g. `http://collector:4318`;
    /// a path prefix is kept). Spans are posted as protobuf to `<otlp_endpoint>/v1/traces`. Unset
    /// (the default), nothing is exported and no connection is opened for telemetry: the trace
    /// context still reaches the logs and the downstream services. The standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable sets it too, below any `BFF_…` variable.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the exported spans carry, which names the gateway in trace backends.
    /// Unset, it is the gateway's own name (`bff-web`, `bff-mobile`, `bff-partner`), so that
    /// replicas of one gateway share it. `OTEL_SERVICE_NAME` sets it too.
    pub service_name: Option<String>,
    /// Longest time one export to the collector may take, its retries included. An export that
    /// fails or takes longer loses its spans; requests never wait for it. Also bounds how long a
    /// gateway waits at shutdown for its last spans to be sent.
    #[serde(with = "humantime_serde")]
    pub otlp_timeout: Duration,
    /// Fraction (0.0 to 1.0) of the traces this gateway starts that are exported. A request that
    /// arrives with a `traceparent` follows its caller's sampled flag instead, so that a trace is
    /// exported whole or not at all.
    pub trace_sample_ratio: f64,
    /// Longest a log line waits in memory before the log writer thread writes it to stderr (it
    /// writes sooner once 256 KiB wait). Lines are written in batches so that logging costs a
    /// request no system call.
    #[serde(with = "humantime_serde")]
    pub log_flush_interval: Duration,
    /// Most bytes of log lines waiting to be written; further lines are dropped (and counted in a
    /// warning line) rather than making requests wait on a slow reader of stderr.
    pub log_buffer_max_bytes: usize,
}

impl TelemetryConfig {
    /// Range and format checks that the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.otlp_traces_url()?;
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(ConfigError::invalid(
                "telemetry.trace_sample_ratio",
                format!("{} is not between 0.0 and 1.0", self.trace_sample_ratio),
            ));
        }
        if self.otlp_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "telemetry.otlp_timeout",
                "must be greater than 0",
            ));
        }
        if self.log_flush_interval.is_zero() || self.log_flush_interval > Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "telemetry.log_flush_interval",
                "must be greater than 0 and at most 60s",
            ));
        }
        if self.log_buffer_max_bytes < 64 * 1024 {
            return Err(ConfigError::invalid(
                "telemetry.log_buffer_max_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.service_name.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(
                "telemetry.service_name",
                "must not be empty (leave it unset for the gateway's name)",
            ));
        }
        Ok(())
    }

    /// Where spans are posted, `<otlp_endpoint>/v1/traces`, or `None` when export is off; an error
    /// when `otlp_endpoint` is not an `http://` or `https://` URL of a host, without credentials,
    /// query or fragment (collector credentials go in `OTEL_EXPORTER_OTLP_HEADERS`).
    pub fn otlp_traces_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let refuse = |reason: String| ConfigError::invalid("telemetry.otlp_endpoint", reason);
        let url = reqwest::Url::parse(endpoint)
            .map_err(|error| refuse(format!("`{endpoint}` is not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(refuse(format!(
                "`{endpoint}` is not an http:// or https:// URL of a host"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "must not carry credentials (send them with OTEL_EXPORTER_OTLP_HEADERS)".to_owned(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse(format!(
                "`{endpoint}` must not have a query or fragment"
            )));
        }
        Ok(Some(format!(
            "{}/v1/traces",
            url.as_str().trim_end_matches('/')
        )))
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Compact,
            otlp_endpoint: None,
            service_name: None,
            otlp_timeout: Duration::from_secs(10),
            trace_sample_ratio: 1.0,
            log_flush_interval: Duration::from_millis(50),
            log_buffer_max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    Compact,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// A configuration that cannot be used. The message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read or has the wrong type, or a key is unknown.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value has the right type but is not acceptable.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The dotted path of the setting, e.g. `server.max_body_bytes`.
        setting: String,
        /// Why the value is refused.
        reason: String,
    },
}

impl ConfigError {
    /// An unacceptable value of `setting`.
    pub fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        Self::Load(Box::new(error))
    }
}

/// Loads settings from the process environment and an optional file, then validates them.
pub fn load<X: GatewayConfig>(file: Option<&Path>) -> Result<Settings<X>, ConfigError> {
    load_from(file, std::env::vars())
}

/// Loads settings from explicit environment variables (tests pass their own instead of mutating
/// the process environment) and an optional file, then validates them.
pub fn load_from<X: GatewayConfig>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings<X>, ConfigError> {
    load_layered(file, env)
}

/// Loads any [`Layered`] configuration: its defaults, then the TOML `file`, then the `BFF_…`
/// variables of `env`; then checks it.
pub fn load_layered<T: Layered>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::invalid(
                "--config",
                format!("no such file: {}", path.display()),
            ));
        }
        figment = figment.merge(Toml::file(path));
    }
    let settings: T = figment.merge(EnvVars::new(env)).extract()?;
    settings.check()?;
    Ok(settings)
}

/// A figment provider over a fixed set of `BFF_…` variables (and the [`OTEL_ALIASES`]).
struct EnvVars {
    /// `(dotted.key, BFF_ORIGINAL_NAME, value)` for every variable that is a setting, the
    /// OpenTelemetry aliases first so that a `BFF_…` variable merged after them wins.
    vars: Vec<(String, String, String)>,
    /// How many of `vars` (at the start) are OpenTelemetry aliases, whose values are plain strings.
    aliases: usize,
}

impl EnvVars {
    fn new(env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut aliases = Vec::new();
        let mut vars = Vec::new();
        for (name, value) in env {
            if let Some((_, path)) = OTEL_ALIASES.iter().find(|(alias, _)| *alias == name) {
                // An empty OpenTelemetry variable means "unset", as the specification says.
                if !value.is_empty() {
                    aliases.push(((*path).to_owned(), name, value));
                }
                continue;
            }
            let Some(rest) = name.get(..ENV_PREFIX.len()).and_then(|prefix| {
                prefix
                    .eq_ignore_ascii_case(ENV_PREFIX)
                    .then(|| &name[ENV_PREFIX.len()..])
            }) else {
                continue;
            };
            if rest.is_empty() || NOT_SETTINGS.iter().any(|n| rest.eq_ignore_ascii_case(n)) {
                continue;
            }
            vars.push((env_key_to_path(rest), name.clone(), value));
        }
        let count = aliases.len();
        aliases.append(&mut vars);
        Self {
            vars: aliases,
            aliases: count,
        }
    }
}

/// Maps the part of a variable name after `BFF_` to a dotted settings path.
fn env_key_to_path(rest: &str) -> String {
    let lower = rest.to_ascii_lowercase();
    match lower.as_str() {
        "listen_addr" => "server.listen_addr".to_owned(),
        "product_url" => "downstream.product.url".to_owned(),
        "cart_url" => "downstream.cart.url".to_owned(),
        "order_url" => "downstream.order.url".to_owned(),
        "redis_url" => "shared.redis_url".to_owned(),
        "redis_cluster_nodes" => "shared.redis_cluster_nodes".to_owned(),
        _ => lower.replace("__", "."),
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        // Names the setting both ways, e.g. `server.listen_addr (BFF_LISTEN_ADDR)`.
        let names: std::collections::HashMap<String, String> = self
            .vars
            .iter()
            .map(|(path, name, _)| (path.clone(), name.clone()))
            .collect();
        Metadata::named("environment variable").interpolater(move |_profile, keys| {
            let path = keys.join(".");
            let name = names
                .get(&path)
                .cloned()
                .unwrap_or_else(|| format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase()));
            format!("{path} ({name})")
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (index, (path, _name, value)) in self.vars.iter().enumerate() {
            let parsed = if index < self.aliases {
                Value::from(value.clone())
            } else {
                let Ok(parsed) = value.parse::<Value>();
                parsed
            };
            if let Some(nested) = figment::util::nest(path, parsed).into_dict() {
                merge_dict(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Deep-merges `other` into `into`, `other` winning on conflicts.
fn merge_dict(into: &mut Dict, other: Dict) {
    for (key, value) in other {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_dict(existing, incoming);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct TestGateway {
        greeting: String,
    }

    impl GatewayConfig for TestGateway {
        const DEFAULT_LISTEN_ADDR: SocketAddr =
            SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8099);
        const DEFAULT_METRICS_ADDR: SocketAddr =
            SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9199);

        fn validate(&self) -> Result<(), ConfigError> {
            if self.greeting == "forbidden" {
                return Err(ConfigError::invalid("gateway.greeting", "is forbidden"));
            }
            Ok(())
        }
    }

    type TestSettings = Settings<TestGateway>;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply_without_any_configuration() {
        let settings: TestSettings = load_from(None, env(&[])).expect("defaults load");
        assert_eq!(settings.server.listen_addr.port(), 8099);
        assert_eq!(
            settings.server.max_body_bytes,
            ServerConfig::default().max_body_bytes
        );
        assert_eq!(settings.downstream.product.url, "http://127.0.0.1:9101");
    }

    #[test]
    fn the_redis_url_has_a_short_variable_is_checked_and_never_printed() {
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("BFF_REDIS_URL", "redis://:pw-123@cache.internal:6379/1"),
                ("BFF_SHARED__COMMAND_TIMEOUT", "30ms"),
                ("BFF_SHARED__REPLICAS", "4"),
            ]),
        )
        .expect("loads");
        let url = settings.shared.redis_url.as_ref().expect("set");
        assert_eq!(url.to_string(), "redis://:[redacted]@cache.internal:6379/1");
        assert!(!format!("{settings:?}").contains("pw-123"));
        assert_eq!(settings.shared.command_timeout, Duration::from_millis(30));
        assert_eq!(settings.shared.replicas, 4);
        // Empty means unset: nothing shared.
        let unset: TestSettings = load_from(None, env(&[("BFF_REDIS_URL", "")])).expect("loads");
        assert!(unset.shared.redis_url.is_none());
        let error = load_from::<TestGateway>(None, env(&[("BFF_REDIS_URL", "mysql://db")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("shared.redis_url"), "{error}");
    }

    #[test]
    fn a_cluster_or_sentinel_comes_from_the_environment_and_only_one_redis_is_allowed() {
        let settings: TestSettings = load_from(
            None,
            env(&[(
                "BFF_REDIS_CLUSTER_NODES",
                "redis://:pw-9@10.0.0.1:6379, redis://:pw-9@10.0.0.2:6379",
            )]),
        )
        .expect("loads");
        let nodes: Vec<String> = settings
            .shared
            .redis_cluster_nodes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            nodes,
            [
                "redis://:[redacted]@10.0.0.1:6379",
                "redis://:[redacted]@10.0.0.2:6379"
            ]
        );
        assert!(!format!("{settings:?}").contains("pw-9"));
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("BFF_SHARED__REDIS_SENTINEL__MASTER_NAME", "main"),
                (
                    "BFF_SHARED__REDIS_SENTINEL__SENTINELS",
                    "redis://s1:26379,redis://s2:26379",
                ),
            ]),
        )
        .expect("loads");
        let sentinel = settings.shared.redis_sentinel.expect("set");
        assert_eq!(sentinel.master_name, "main");
        assert_eq!(sentinel.sentinels.len(), 2);
        let error = load_from::<TestGateway>(
            None,
            env(&[
                ("BFF_REDIS_URL", "redis://a:6379"),
                ("BFF_REDIS_CLUSTER_NODES", "redis://b:6379"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("only one of"), "{error}");
        let error = load_from::<TestGateway>(
            None,
            env(&[("BFF_SHARED__REDIS_SENTINEL__MASTER_NAME", "main")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("redis_sentinel"), "{error}");
    }

    #[test]
    fn the_four_documented_variables_set_their_settings() {
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("BFF_LISTEN_ADDR", "0.0.0.0:9999"),
                ("BFF_PRODUCT_URL", "http://product.internal"),
                ("BFF_CART_URL", "http://cart.internal"),
                ("BFF_ORDER_URL", "http://order.internal"),
                ("UNRELATED", "ignored"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.server.listen_addr.to_string(), "0.0.0.0:9999");
        assert_eq!(settings.downstream.product.url, "http://product.internal");
        assert_eq!(settings.downstream.cart.url, "http://cart.internal");
        assert_eq!(settings.downstream.order.url, "http://order.internal");
    }

    #[test]
    fn nested_variables_use_double_underscores_and_human_durations() {
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("BFF_DOWNSTREAM__PRODUCT__TIMEOUT", "250ms"),
                ("BFF_SERVER__MAX_BODY_BYTES", "2048"),
                ("bff_telemetry__format", "json"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            settings.downstream.product.timeout,
            Duration::from_millis(250)
        );
        assert_eq!(settings.server.max_body_bytes, 2048);
        assert_eq!(settings.telemetry.format, LogFormat::Json);
    }

    #[test]
    fn a_file_layers_over_defaults_and_environment_over_the_file() {
        let dir = std::env::temp_dir().join(format!("server-kit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("layers.toml");
        std::fs::write(
            &path,
            "[server]\nlisten_addr = \"127.0.0.1:7000\"\nmax_body_bytes = 10\n\n[downstream.cart]\nurl = \"http://from-file\"\n",
        )
        .expect("write file");
        let settings: TestSettings =
            load_from(Some(&path), env(&[("BFF_SERVER__MAX_BODY_BYTES", "20")])).expect("loads");
        assert_eq!(settings.server.listen_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(settings.server.max_body_bytes, 20, "environment wins");
        assert_eq!(settings.downstream.cart.url, "http://from-file");
        // Defaults still fill what neither layer set, also inside a section the file touched.
        assert_eq!(
            settings.server.shutdown_grace,
            ServerConfig::default().shutdown_grace
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_setting_and_its_variable() {
        let error = load_from::<TestGateway>(None, env(&[("BFF_LISTEN_ADDR", "not-an-address")]))
            .expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("server.listen_addr"), "{message}");
        assert!(message.contains("BFF_LISTEN_ADDR"), "{message}");
    }

    #[test]
    fn an_unknown_setting_is_refused_not_ignored() {
        let error = load_from::<TestGateway>(None, env(&[("BFF_SERVER__LISTEN_ADRESS", "x")]))
            .expect_err("refused");
        assert!(error.to_string().contains("listen_adress"), "{error}");
    }

    #[test]
    fn a_zero_body_limit_is_refused() {
        let error = load_from::<TestGateway>(None, env(&[("BFF_SERVER__MAX_BODY_BYTES", "0")]))
            .expect_err("refused");
        assert!(
            error.to_string().contains("server.max_body_bytes"),
            "{error}"
        );
    }

    #[test]
    fn gateway_settings_have_their_own_section_and_validation() {
        let settings: TestSettings =
            load_from(None, env(&[("BFF_GATEWAY__GREETING", "hello")])).expect("loads");
        assert_eq!(settings.gateway.greeting, "hello");
        let error = load_from::<TestGateway>(None, env(&[("BFF_GATEWAY__GREETING", "forbidden")]))
            .expect_err("refused");
        assert!(error.to_string().contains("gateway.greeting"), "{error}");
    }

    #[test]
    fn a_downstream_url_without_http_scheme_is_refused() {
        let error = load_from::<TestGateway>(None, env(&[("BFF_CART_URL", "cart.internal:80")]))
            .expect_err("refused");
        assert!(error.to_string().contains("downstream.cart.url"), "{error}");
    }

    #[test]
    fn trace_export_is_off_by_default() {
        let settings: TestSettings = load_from(None, env(&[])).expect("defaults load");
        assert_eq!(settings.telemetry.otlp_endpoint, None);
        assert_eq!(settings.telemetry.otlp_traces_url().expect("valid"), None);
        assert!((settings.telemetry.trace_sample_ratio - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn the_otlp_endpoint_gets_the_traces_path_appended() {
        for (endpoint, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            (
                "https://collector:4318/",
                "https://collector:4318/v1/traces",
            ),
            (
                "http://gw.internal/otlp/",
                "http://gw.internal/otlp/v1/traces",
            ),
        ] {
            let settings: TestSettings =
                load_from(None, env(&[("BFF_TELEMETRY__OTLP_ENDPOINT", endpoint)])).expect("loads");
            assert_eq!(
                settings.telemetry.otlp_traces_url().expect("valid"),
                Some(url.to_owned())
            );
        }
    }

    #[test]
    fn a_bad_otlp_endpoint_is_refused_naming_the_setting() {
        for endpoint in [
            "collector:4318",
            "grpc://collector:4317",
            "http://",
            "not a url",
            "http://user:secret@collector:4318",
            "http://collector:4318/?token=x",
            "",
        ] {
            let error =
                load_from::<TestGateway>(None, env(&[("BFF_TELEMETRY__OTLP_ENDPOINT", endpoint)]))
                    .expect_err(endpoint);
            let message = error.to_string();
            assert!(
                message.contains("telemetry.otlp_endpoint"),
                "{endpoint}: {message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn a_sample_ratio_outside_zero_to_one_is_refused() {
        for ratio in ["1.5", "-0.1", "nan"] {
            let error = load_from::<TestGateway>(
                None,
                env(&[("BFF_TELEMETRY__TRACE_SAMPLE_RATIO", ratio)]),
            )
            .expect_err(ratio);
            assert!(
                error.to_string().contains("telemetry.trace_sample_ratio"),
                "{ratio}: {error}"
            );
        }
        let settings: TestSettings =
            load_from(None, env(&[("BFF_TELEMETRY__TRACE_SAMPLE_RATIO", "0.25")])).expect("loads");
        assert!((settings.telemetry.trace_sample_ratio - 0.25).abs() < f64::EPSILON);
    }

    #[test]
    fn log_writer_limits_are_read_and_checked() {
        for (name, value, setting) in [
            (
                "BFF_TELEMETRY__LOG_FLUSH_INTERVAL",
                "0s",
                "telemetry.log_flush_interval",
            ),
            (
                "BFF_TELEMETRY__LOG_FLUSH_INTERVAL",
                "2m",
                "telemetry.log_flush_interval",
            ),
            (
                "BFF_TELEMETRY__LOG_BUFFER_MAX_BYTES",
                "1000",
                "telemetry.log_buffer_max_bytes",
            ),
        ] {
            let error = load_from::<TestGateway>(None, env(&[(name, value)])).expect_err(value);
            assert!(error.to_string().contains(setting), "{value}: {error}");
        }
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("BFF_TELEMETRY__LOG_FLUSH_INTERVAL", "200ms"),
                ("BFF_TELEMETRY__LOG_BUFFER_MAX_BYTES", "1048576"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            settings.telemetry.log_flush_interval,
            Duration::from_millis(200)
        );
        assert_eq!(settings.telemetry.log_buffer_max_bytes, 1 << 20);
    }
    #[test]
    fn the_standard_otel_variables_set_export_below_the_bff_ones() {
        let settings: TestSettings = load_from(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("OTEL_SERVICE_NAME", "12345"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            settings.telemetry.otlp_endpoint.as_deref(),
            Some("http://otel:4318")
        );
        assert_eq!(settings.telemetry.service_name.as_deref(), Some("12345"));

        // Whatever the order of the environment, the gateway's own variable wins.
        for vars in [
            [
                ("BFF_TELEMETRY__OTLP_ENDPOINT", "http://bff:4318"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
            ],
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("BFF_TELEMETRY__OTLP_ENDPOINT", "http://bff:4318"),
            ],
        ] {
            let settings: TestSettings = load_from(None, env(&vars)).expect("loads");
            assert_eq!(
                settings.telemetry.otlp_endpoint.as_deref(),
                Some("http://bff:4318")
            );
        }

        // Empty means unset; a bad value is refused like any other.
        let settings: TestSettings =
            load_from(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])).expect("loads");
        assert_eq!(settings.telemetry.otlp_endpoint, None);
        let error =
            load_from::<TestGateway>(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4318")]))
                .expect_err("refused");
        assert!(
            error.to_string().contains("telemetry.otlp_endpoint"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_config_file_is_refused() {
        let error = load_from::<TestGateway>(Some(Path::new("/nonexistent/bff.toml")), env(&[]))
            .expect_err("refused");
        assert!(error.to_string().contains("--config"), "{error}");
    }
}

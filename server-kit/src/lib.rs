//! Server plumbing shared by the three gateways (`bff-web`, `bff-mobile`, `bff-partner`).
//!
//! Written once here and used by every binary, never copied into each:
//!
//! - [`auth`]: end-user authentication — bearer JWTs verified locally (HS256 secret in
//!   development, RS256/ES256 keys from a cached JWKS in production) and the axum extractors
//!   that turn them into the user id sent downstream.
//! - [`config`]: layered configuration — built-in defaults, then an optional TOML file given with
//!   `--config`, then `BFF_…` environment variables — into each gateway's typed settings, with
//!   start-up errors that name the bad setting.
//! - [`cli`]: the command line every gateway accepts (`--config`, `--check-config`).
//! - [`telemetry`]: structured `tracing` logs (compact or JSON) and, when configured, trace export
//!   over OTLP/HTTP.
//! - [`extract`]: the extractors every gateway's handlers share — the downstream context of a
//!   request ([`extract::Ctx`]) and JSON bodies ([`extract::Json`]), rejected in each gateway's
//!   own error format.
//! - [`http`]: the middleware stack every gateway router gets — request ids, a span per request,
//!   body limits, panic containment and `application/problem+json` for every error response.
//! - [`compression`]: `br`/`gzip` answers above `server.compression.min_size`, `Vary`, entity
//!   tags kept correct, event streams and upgrades left alone; outermost in that stack.
//! - [`problem`]: RFC 9457 problem details, the error body of the REST gateways.
//! - [`health`]: `GET /health` (liveness) and `GET /ready` (readiness).
//! - [`metrics`]: `GET /metrics` (Prometheus), the per-request counters and the export of the
//!   downstream clients' counters.
//! - [`shutdown`]: SIGTERM / ctrl-c handling and a bounded graceful drain.
//! - [`connection`]: accepting and serving client connections with limits (header, idle and
//!   body timeouts, header size, connection count) that slow or idle clients cannot get around.
//! - `testing` (feature `test-util`, for the gateways' tests only): a gateway on free ports over
//!   seeded reference services, and reading its `/metrics`.
//! - [`server`]: binding, serving, and the `run` entry point that keeps each `main.rs` to a few lines.

pub mod auth;
pub mod cli;
pub mod compression;
pub mod config;
pub mod connection;
pub mod extract;
pub mod health;
pub mod http;
pub mod live;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;

pub use config::{ConfigError, GatewayConfig, Layered, ServerConfig, Settings, TelemetryConfig};
pub use health::Readiness;
pub use problem::Problem;
pub use server::{Served, Server, run, run_servers};

//! Structured logging with `tracing`.
//!
//! Every request runs inside a span carrying its request id (see [`crate::http`]), so each log line
//! of a request can be found by that id. Logs never carry credentials: the `Authorization` header is
//! marked sensitive and request bodies are not logged.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global log subscriber described by `config`, writing to stderr.
///
/// Safe to call more than once (later calls do nothing), so tests and binaries can share it.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Compact => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // An error only means a subscriber is already installed, which is fine.
    drop(result);
}

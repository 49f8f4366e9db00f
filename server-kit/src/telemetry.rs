//! Structured logging with `tracing`, and optional trace export over OTLP.
//!
//! Every request runs inside a span carrying its request id and trace id (see [`crate::http`]), so
//! each log line of a request can be found by either. Logs never carry credentials: the
//! `Authorization` header is marked sensitive and request bodies are not logged.
//!
//! With `telemetry.otlp_endpoint` set, the same spans (the inbound `request` span and the
//! `downstream` span of each call) are also exported to an OpenTelemetry collector, over OTLP/HTTP
//! with protobuf bodies, to `<otlp_endpoint>/v1/traces`. Unset (the default), no OpenTelemetry
//! layer is installed and nothing is sent anywhere. Export never stands in the way of requests:
//! spans are queued (bounded) and sent in batches by a thread of their own; when the collector is
//! slow or unreachable, spans are dropped and a warning is logged at most once a minute.
//!
//! [`init`] returns a [`Telemetry`] guard: shutting it down (or dropping it) sends the spans still
//! queued, waiting at most `telemetry.otlp_timeout` (and a second). [`crate::run`] does so after
//! the server has drained.

use std::{
    io::{IsTerminal, Read},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{
    EnvFilter,
    filter::{LevelFilter, Targets},
    fmt::{
        self,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    prelude::*,
};

mod log_writer;

use log_writer::{LogBuffer, LogWriterGuard};

use crate::config::{LogFormat, TelemetryConfig};

/// Whether [`init`] installed span export; read on every request by [`crate::http`], which does
/// no OpenTelemetry work at all while it is off.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported over OTLP in this process (set once by [`init`]).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The instrumentation scope of the gateway's spans.
const TRACER_NAME: &str = "server-kit";

/// Largest collector response read (an OTLP response is a few bytes; only its status matters).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Shortest time between two warnings about failed exports.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Extra time given at shutdown beyond `telemetry.otlp_timeout`, for the batch to be encoded and
/// the export thread to stop.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);

/// Crates whose spans are never exported: the exporter's own HTTP stack (its spans would be
/// exported in turn, without end) and the SDK itself.
const NOT_EXPORTED: &[&str] = &[
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// The telemetry installed by [`init`]; keep it for the life of the process.
///
/// It owns the log writer's thread: dropping it writes the log lines still queued. With OTLP
/// export on it also owns the tracer provider: [`Telemetry::shutdown`] (or dropping it) sends
/// the spans still queued and stops the export thread, waiting at most `telemetry.otlp_timeout`
/// plus a second. It blocks the calling thread that long at most, so call it after the server has
/// stopped (from async code, inside `spawn_blocking`). Without export it does nothing.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    /// The tracer provider whose batch processor exports the spans; `None` when export is off.
    provider: Option<SdkTracerProvider>,
    /// How long shutdown waits for the last export.
    shutdown_timeout: Duration,
    /// Writes the queued log lines when dropped (after the provider's last spans, declared
    /// last so it is dropped last). `None` when an earlier [`init`] installed the subscriber.
    _log_writer: Option<LogWriterGuard>,
}

impl Telemetry {
    /// A guard with no export to stop.
    fn off(log_writer: Option<LogWriterGuard>) -> Self {
        Self {
            provider: None,
            shutdown_timeout: Duration::ZERO,
            _log_writer: log_writer,
        }
    }

    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued, then stops exporting (see [`Telemetry`]).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        if let Err(error) = provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::warn!(%error, "the last traces could not all be exported at shutdown");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber described by `config`: logs to stderr and, when
/// `telemetry.otlp_endpoint` is set, span export with `service.name` = `telemetry.service_name`
/// or else `gateway`.
///
/// Safe to call more than once (later calls install nothing and export nothing), so tests and
/// binaries can share it. An exporter that cannot be built is logged and leaves export off: the
/// gateway serves either way.
pub fn init(config: &TelemetryConfig, gateway: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, export_error) = match tracer_provider(config, gateway) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    // Per-layer filter: the global `filter` still decides which spans exist at all.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACER_NAME))
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::TRACE)
                    .with_targets(NOT_EXPORTED.iter().map(|name| (*name, LevelFilter::OFF))),
            )
    });
    let (writer, log_writer) = log_writer(config);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match config.format {
        LogFormat::Compact => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
    }
    .is_ok();
    if let Some(error) = export_error {
        tracing::warn!(%error, "trace export is off: the OTLP exporter cannot be built");
    }
    // A subscriber already installed (by an earlier call) is the one logs and spans go to.
    let log_writer = log_writer.filter(|_| installed);
    let Some(provider) = provider else {
        return Telemetry::off(log_writer);
    };
    if !installed {
        drop(provider.shutdown());
        return Telemetry::off(log_writer);
    }
    EXPORTING.store(true, Ordering::Relaxed);
    if let Ok(Some(url)) = config.otlp_traces_url() {
        tracing::info!(%url, "exporting traces over OTLP/HTTP");
    }
    Telemetry {
        provider: Some(provider),
        shutdown_timeout: config.otlp_timeout + SHUTDOWN_MARGIN,
        _log_writer: log_writer,
    }
}

/// Stderr behind [`log_writer`]'s buffer: requests append their formatted lines, a thread of its
/// own writes them in batches (every `telemetry.log_flush_interval`, or per 256 KiB waiting), so
/// logging costs a request neither a system call nor a thread wake-up, and a slow reader of
/// stderr costs log lines (beyond `telemetry.log_buffer_max_bytes` waiting), never latency.
fn log_writer(config: &TelemetryConfig) -> (LogBuffer, Option<LogWriterGuard>) {
    let format = config.format;
    let notice: log_writer::DropNotice = Box::new(move |dropped| drop_notice(format, dropped));
    let limits = log_writer::Limits::new(config.log_flush_interval, config.log_buffer_max_bytes);
    match log_writer::start(std::io::stderr(), limits, notice) {
        Ok((buffer, guard)) => (buffer, Some(guard)),
        Err(error) => {
            eprintln!("cannot start the log writer thread ({error}); logging straight to stderr");
            (LogBuffer::unbuffered(), None)
        }
    }
}

/// The line saying that `dropped` lines were lost, shaped as the log's other lines are.
fn drop_notice(format: LogFormat, dropped: u64) -> Vec<u8> {
    const MESSAGE: &str = "log lines dropped: stderr was read too slowly";
    const TARGET: &str = "server_kit::telemetry";
    let mut timestamp = String::new();
    // Formatting into a `String` cannot fail.
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    let line = match format {
        LogFormat::Compact => format!("{timestamp}  WARN {TARGET}: {MESSAGE} dropped={dropped}\n"),
        LogFormat::Json => format!(
            "{}\n",
            serde_json::json!({
                "timestamp": timestamp,
                "level": "WARN",
                "message": MESSAGE,
                "dropped": dropped,
                "target": TARGET,
            })
        ),
    };
    line.into_bytes()
}

/// The tracer provider exporting to `telemetry.otlp_endpoint`, or `None` when it is unset.
///
/// The SDK's default batch processor queues finished spans (2048 at most; more are dropped) and
/// exports them from a thread of its own, every 5 seconds or per 512 spans (defaults the standard
/// `OTEL_BSP_*` variables change), driving each export with a plain `block_on`, outside any tokio
/// runtime. So the HTTP client is a blocking one: [`ExportClient`], over reqwest's blocking client
/// (which runs its own small runtime). Nothing here needs the gateway's runtime, which may not
/// exist yet, and an export can never block a request: a full queue drops spans instead.
fn tracer_provider(
    config: &TelemetryConfig,
    gateway: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    let Some(url) = config
        .otlp_traces_url()
        .map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(config.otlp_timeout)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(config.otlp_timeout)
        .build()
        .map_err(|error| error.to_string())?;
    let service = config.service_name.as_deref().unwrap_or(gateway).to_owned();
    // `Resource::builder` also reads `OTEL_RESOURCE_ATTRIBUTES` (e.g. the Kubernetes pod).
    let resource = Resource::builder().with_service_name(service).build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        config.trace_sample_ratio,
    )));
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build(),
    ))
}

/// The OTLP exporter's HTTP client: reqwest's blocking client, the workspace's reqwest 0.12.
///
/// It is only ever called from the SDK's batch-export thread (see [`tracer_provider`]), never
/// from a tokio worker, so blocking inside `send_bytes` is what that thread expects. Failures
/// (unreachable collector, timeout, non-2xx answer) are logged here, rate-limited by
/// [`FailureLog`]; the exporter itself retries within `telemetry.otlp_timeout` and then drops
/// the batch.
#[derive(Debug)]
struct ExportClient {
    /// Bounded by `telemetry.otlp_timeout` per attempt.
    http: reqwest::blocking::Client,
    /// When export last failed and was last warned about.
    failures: Mutex<FailureLog>,
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<Self, String> {
        // reqwest's blocking client starts (and, when dropped, stops) a runtime of its own, which
        // tokio refuses inside another runtime's thread (as in `#[tokio::test]`): build it on a
        // thread of its own. It is dropped on the export thread.
        let http = std::thread::Builder::new()
            .name("otlp-client-init".to_owned())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
            })
            .map_err(|error| format!("cannot start a thread: {error}"))?
            .join()
            .map_err(|_| "building the HTTP client panicked".to_owned())?
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Self {
            http,
            failures: Mutex::new(FailureLog::default()),
        })
    }

    /// One POST to the collector, its answer whatever the status.
    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::blocking::Request::try_from(request)?;
        let mut response = self.http.execute(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
        let mut answer = Response::builder().status(status).body(Bytes::from(body))?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    fn record(&self, outcome: &Result<Response<Bytes>, HttpError>) {
        let problem = match outcome {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the collector answered {}", response.status())),
            Err(error) => Some(error.to_string()),
        };
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        match problem {
            None => {
                if failures.recovered() {
                    tracing::info!("exporting traces to the OTLP collector again");
                }
            }
            Some(problem) => {
                if let Some(suppressed) = failures.failed(Instant::now()) {
                    tracing::warn!(
                        error = %problem,
                        earlier_failures_not_logged = suppressed,
                        "trace export to the OTLP collector failed (retried within \
                         telemetry.otlp_timeout, then the batch of spans is dropped)"
                    );
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let outcome = self.send(request);
        self.record(&outcome);
        outcome
    }
}

/// Rate limit of the export warnings: the first failure is logged, then at most one per
/// [`WARN_INTERVAL`], with the number of failures in between.
#[derive(Debug, Default)]
struct FailureLog {
    /// When the last warning was logged, while exports are failing.
    last_warned: Option<Instant>,
    /// Failures since then that were not logged.
    suppressed: u64,
}

impl FailureLog {
    /// Notes a failure; `Some(failures not logged since the last warning)` when this one is to be
    /// logged.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.last_warned {
            Some(at) if now.saturating_duration_since(at) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_warned = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Notes a success; whether it ends a run of failures.
    fn recovered(&mut self) -> bool {
        self.suppressed = 0;
        self.last_warned.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_failures_are_warned_about_at_most_once_a_minute() {
        let mut log = FailureLog::default();
        let start = Instant::now();
        assert_eq!(log.failed(start), Some(0), "the first failure is logged");
        assert_eq!(log.failed(start + Duration::from_secs(1)), None);
        assert_eq!(log.failed(start + Duration::from_secs(59)), None);
        assert_eq!(
            log.failed(start + WARN_INTERVAL),
            Some(2),
            "then one a minute, counting the ones not logged"
        );
        assert!(log.recovered(), "a success after failures is a recovery");
        assert!(!log.recovered(), "and only once");
        assert_eq!(
            log.failed(start + WARN_INTERVAL + Duration::from_secs(1)),
            Some(0),
            "after a recovery, the next failure is logged at once"
        );
    }

    #[test]
    fn an_unreachable_collector_is_an_error_not_a_panic_or_a_hang() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let client = ExportClient::new(Duration::from_secs(2)).expect("client");
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(Bytes::from_static(b""))
            .expect("request");
        let started = Instant::now();
        let outcome = poll_once(client.send_bytes(request));
        assert!(outcome.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Polls a future that never waits (the client blocks instead) to completion.
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the export client never waits"),
        }
    }

    #[test]
    fn without_an_endpoint_no_provider_is_built() {
        let provider = tracer_provider(&TelemetryConfig::default(), "bff-test").expect("no error");
        assert!(provider.is_none());
    }
}

//! Trusted documents (`gateway.trusted_documents`): the operations the web app was built with,
//! read from manifests ([`manifest`]), run by id, and in `enforce` mode the only documents the
//! gateway runs.
//!
//! - **Load.** Every document of every manifest is parsed, checked against the document limits
//!   and validated against the schema when loaded; a bad entry fails the load naming the file,
//!   the id and the error (at start-up: the gateway does not start). An id that is a SHA-256
//!   must be that of its body.
//! - **Reload.** On SIGHUP, and when a manifest's modification time or size changes (checked
//!   every `poll_interval`), the manifests are loaded again; a load that fails keeps the previous
//!   set, logs why and counts `bff_trusted_documents_reload_failures_total`
//!   (`bff_trusted_documents` is the number loaded). A broken file is tried again only once it
//!   changes.
//! - **Requests** name a document by `documentId` (body or query string), by
//!   `extensions.persistedQuery.sha256Hash` (Apollo clients), or send its exact text; all three
//!   find the kept parsed tree, so the request is not parsed again ([`TrustedDocuments::resolve`]).
//!   An unknown `documentId` is `PERSISTED_DOCUMENT_NOT_FOUND`. In `enforce` mode anything else is
//!   `PERSISTED_DOCUMENT_REQUIRED` (HTTP 400), APQ registrations included, unless the request
//!   carries `bypass_header` with `bypass_secret` (compared in constant time, as SHA-256
//!   digests).
//! - **Labels.** A trusted document is counted under its manifest name ([`OperationLabels`]); a
//!   name that is in no manifest (nor in `gateway.metrics.operation_names`) never becomes a
//!   label.

pub mod manifest;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_graphql::{
    Request, Value,
    parser::{
        parse_query,
        types::{DocumentOperations, ExecutableDocument},
    },
};
use futures::FutureExt;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    apq::sha256_hex,
    config::{TrustedDocumentsConfig, TrustedMode},
    schema::{
        WebSchema,
        limits::{Limits, ValidateOnly},
    },
};

/// The codes of trusted-document refusals.
pub mod codes {
    /// `documentId` (or a hash in `enforce` mode) names no document of the manifests.
    pub const NOT_FOUND: &str = "PERSISTED_DOCUMENT_NOT_FOUND";
    /// `enforce` mode: the document is not in a manifest.
    pub const REQUIRED: &str = "PERSISTED_DOCUMENT_REQUIRED";
    /// Both `query` and `documentId` were sent: a malformed request, with the transport's code
    /// for those (`crate::error::codes::BAD_REQUEST`).
    pub const BOTH: &str = "BAD_REQUEST";
}

/// Why a request's document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedError {
    /// The id names no loaded document.
    NotFound,
    /// `enforce` mode, and the document is not in a manifest.
    Required,
    /// Both `query` and `documentId` were sent.
    Both,
}

impl TrustedError {
    /// The error's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => codes::NOT_FOUND,
            Self::Required => codes::REQUIRED,
            Self::Both => codes::BOTH,
        }
    }

    /// What the client should change.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotFound => "No trusted document has this id.",
            Self::Required => {
                "This gateway runs only the trusted documents of its manifests: send a \
                 `documentId`."
            }
            Self::Both => "Send either `query` or `documentId`, not both.",
        }
    }
}

/// The `documentId` of a request (in its data, put there by the transport that read it).
#[derive(Debug, Clone)]
pub struct DocumentId(pub String);

/// In a request's data: the request carried the bypass header with the right secret.
#[derive(Debug, Clone, Copy)]
pub struct Bypassed;

/// One loaded document.
#[derive(Debug)]
pub struct TrustedDocument {
    /// Its id, normalized ([`manifest::normalize_id`]).
    pub id: Box<str>,
    /// The SHA-256 (hex) of its text.
    pub hash: Box<str>,
    /// The manifest's name of the operation (the document's own name in the flat format), the
    /// label of its metrics and traces.
    pub name: Option<Box<str>>,
    /// The document, parsed and validated once, at load.
    pub document: ExecutableDocument,
}

/// The loaded set.
#[derive(Default)]
struct Loaded {
    /// Documents by normalized id.
    by_id: HashMap<Box<str>, Arc<TrustedDocument>>,
    /// Documents by the SHA-256 (hex) of their text, for `persistedQuery` hashes and texts.
    by_hash: HashMap<Box<str>, Arc<TrustedDocument>>,
    /// Every operation name of the manifests: the labels a trusted document may carry.
    names: HashSet<Box<str>>,
}

/// What a load found wrong: the file, the id when an entry is at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted documents: {}{}: {message}", file.display(), id.as_deref().map(|id| format!(": id {id}")).unwrap_or_default())]
pub struct LoadError {
    /// The manifest.
    pub file: PathBuf,
    /// The entry at fault, if one is.
    pub id: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A manifest's modification time and size when last read, to notice a change.
type Stamp = Option<(SystemTime, u64)>;

/// The trusted documents of the gateway. Cheap to clone (clones share the set).
#[derive(Clone)]
pub struct TrustedDocuments {
    /// Shared by every clone (the reload task holds it weakly).
    inner: Arc<Inner>,
}

/// The parts of [`TrustedDocuments`].
struct Inner {
    /// `gateway.trusted_documents.mode`.
    mode: TrustedMode,
    /// The manifest files.
    manifests: Vec<PathBuf>,
    /// How often the files are checked for a change.
    poll_interval: Duration,
    /// What documents are validated against (the gateway's own schema and limits).
    schema: WebSchema,
    /// The document limits, checked at load.
    limits: Limits,
    /// The current set; replaced whole by a successful load.
    loaded: RwLock<Arc<Loaded>>,
    /// The files' stamps at the last load attempted, so a broken file is tried once per change.
    attempted: Mutex<Vec<Stamp>>,
    /// The bypass header and the SHA-256 of its secret, when a secret is configured.
    bypass: Option<(HeaderName, [u8; 32])>,
    /// Loads that failed after start-up.
    reload_failures: AtomicU64,
    /// The server's metrics, once a request handed them over (the reload task records there).
    metrics: OnceLock<server_kit::metrics::Metrics>,
}

impl TrustedDocuments {
    /// The trusted documents of `config`, loaded now (none when the mode is `off`), validated
    /// against `schema` and `limits`; the first bad entry is the error.
    pub fn load(
        config: &TrustedDocumentsConfig,
        schema: WebSchema,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let bypass = config.bypass_secret.as_ref().and_then(|secret| {
            let header = HeaderName::from_bytes(config.bypass_header.as_bytes()).ok()?;
            Some((header, digest(secret.expose_secret().as_bytes())))
        });
        let store = Self {
            inner: Arc::new(Inner {
                mode: config.mode,
                manifests: if config.mode == TrustedMode::Off {
                    Vec::new()
                } else {
                    config.manifests.clone()
                },
                poll_interval: config.poll_interval,
                schema,
                limits,
                loaded: RwLock::new(Arc::default()),
                attempted: Mutex::new(Vec::new()),
                bypass,
                reload_failures: AtomicU64::new(0),
                metrics: OnceLock::new(),
            }),
        };
        if !store.inner.manifests.is_empty() {
            let stamps = store.stamps();
            let loaded = store.read_all()?;
            *store
                .inner
                .attempted
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = stamps;
            store.replace(loaded);
        }
        Ok(store)
    }

    /// The configured mode.
    pub fn mode(&self) -> TrustedMode {
        self.inner.mode
    }

    /// How many documents are loaded.
    pub fn len(&self) -> usize {
        self.current().by_id.len()
    }

    /// Whether no document is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the manifests again now (what SIGHUP and a changed file do): the number of
    /// documents loaded, or why the load failed (then the previous set stays, the failure is
    /// logged and counted).
    pub fn reload(&self) -> Result<usize, LoadError> {
        let stamps = self.stamps();
        *self
            .inner
            .attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stamps;
        match self.read_all() {
            Ok(loaded) => {
                let count = loaded.by_id.len();
                self.replace(loaded);
                tracing::info!(documents = count, "trusted documents reloaded");
                Ok(count)
            }
            Err(error) => {
                self.inner.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "trusted documents: reload failed; the previous set stays");
                self.export_metrics();
                Err(error)
            }
        }
    }

    /// Starts the task that reloads on SIGHUP and when a manifest changes (nothing in `off`
    /// mode, or outside a runtime). It ends once every clone of this store is dropped.
    pub fn watch(&self) {
        if self.inner.manifests.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.poll_interval;
        // Registered now, so a SIGHUP sent once the gateway is built is never the default action
        // (which ends the process).
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| tracing::warn!(%error, "trusted documents: SIGHUP not available"));
        runtime.spawn(watch(weak, interval, hangup.ok()));
    }

    /// Hands the server's metrics to the store (the first call keeps them) and exports the
    /// current counts there. Called when the server starts (`on_metrics`) and with every request;
    /// costs an atomic load once done.
    pub fn attach_metrics(&self, metrics: &server_kit::metrics::Metrics) {
        if self.inner.manifests.is_empty() || self.inner.metrics.get().is_some() {
            return;
        }
        if self.inner.metrics.set(metrics.clone()).is_ok() {
            self.export_metrics();
        }
    }

    /// `request` marked [`Bypassed`] when `headers` carry the bypass header with the secret (in
    /// `enforce` mode; the comparison takes the same time whatever the value).
    pub fn mark_bypass(&self, request: Request, headers: &HeaderMap) -> Request {
        if self.admits_bypass(headers) {
            Self::mark_bypassed(request)
        } else {
            request
        }
    }

    /// Whether `headers` carry the bypass header with the secret, in `enforce` mode (the
    /// comparison takes the same time whatever the value). A WebSocket asks once, at its
    /// upgrade, for every operation it will run.
    pub fn admits_bypass(&self, headers: &HeaderMap) -> bool {
        if self.inner.mode != TrustedMode::Enforce {
            return false;
        }
        let Some((header, expected)) = &self.inner.bypass else {
            return false;
        };
        headers
            .get(header)
            .is_some_and(|value| bool::from(digest(value.as_bytes()).ct_eq(expected)))
    }

    /// Whether a WebSocket's `connection_init` payload carries the bypass header's name (any
    /// case) with the secret, in `enforce` mode: browsers cannot set headers on an upgrade, so
    /// GraphiQL sends its headers there.
    pub fn admits_bypass_in(&self, payload: &serde_json::Value) -> bool {
        if self.inner.mode != TrustedMode::Enforce {
            return false;
        }
        let (Some((header, expected)), Some(payload)) = (&self.inner.bypass, payload.as_object())
        else {
            return false;
        };
        payload.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(header.as_str())
                && value
                    .as_str()
                    .is_some_and(|value| bool::from(digest(value.as_bytes()).ct_eq(expected)))
        })
    }

    /// `request` marked [`Bypassed`] (its transport was admitted by [`Self::admits_bypass`]).
    pub fn mark_bypassed(mut request: Request) -> Request {
        request.data.insert(Bypassed);
        request
    }

    /// The trusted document `request` names or sends, if any, taking `persistedQuery` off it
    /// when its hash is that of a trusted document (so APQ does not handle it); what the mode
    /// refuses is an error.
    pub fn resolve(
        &self,
        request: &mut Request,
    ) -> Result<Option<Arc<TrustedDocument>>, TrustedError> {
        let id = data::<DocumentId>(request).map(|id| id.0.clone());
        if self.inner.mode == TrustedMode::Off {
            return match id {
                Some(_) => Err(TrustedError::NotFound),
                None => Ok(None),
            };
        }
        let loaded = self.current();
        if let Some(id) = id {
            if !request.query.is_empty() {
                return Err(TrustedError::Both);
            }
            return loaded
                .by_id
                .get(manifest::normalize_id(&id).as_str())
                .cloned()
                .map(Some)
                .ok_or(TrustedError::NotFound);
        }
        let enforced =
            self.inner.mode == TrustedMode::Enforce && data::<Bypassed>(request).is_none();
        if loaded.by_hash.is_empty() && !enforced {
            return Ok(None);
        }
        if let Some(hash) = persisted_hash(request) {
            let found = loaded
                .by_hash
                .get(hash.as_str())
                .filter(|_| request.query.is_empty() || sha256_hex(&request.query) == hash);
            if let Some(found) = found {
                request.extensions.0.remove("persistedQuery");
                return Ok(Some(Arc::clone(found)));
            }
            if enforced {
                return Err(if request.query.is_empty() {
                    TrustedError::NotFound
                } else {
                    TrustedError::Required
                });
            }
            return Ok(None);
        }
        if request.query.is_empty() {
            return Ok(None);
        }
        if let Some(found) = loaded.by_hash.get(sha256_hex(&request.query).as_str()) {
            return Ok(Some(Arc::clone(found)));
        }
        if enforced {
            return Err(TrustedError::Required);
        }
        Ok(None)
    }

    /// Whether `name` is an operation name of the loaded manifests.
    pub fn knows_name(&self, name: &str) -> bool {
        self.current().names.contains(name)
    }

    /// The current set.
    fn current(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .inner
                .loaded
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Makes `loaded` the current set.
    fn replace(&self, loaded: Loaded) {
        *self
            .inner
            .loaded
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        self.export_metrics();
    }

    /// The manifests' stamps now.
    fn stamps(&self) -> Vec<Stamp> {
        self.inner
            .manifests
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    /// Whether a manifest changed since the last load attempted.
    fn changed(&self) -> bool {
        let now = self.stamps();
        *self
            .inner
            .attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            != now
    }

    /// Every manifest, read, checked and validated.
    fn read_all(&self) -> Result<Loaded, LoadError> {
        let mut loaded = Loaded::default();
        for file in &self.inner.manifests {
            self.read_file(file, &mut loaded)?;
        }
        Ok(loaded)
    }

    /// One manifest into `loaded`.
    fn read_file(&self, file: &Path, loaded: &mut Loaded) -> Result<(), LoadError> {
        let fail = |id: Option<&str>, message: String| LoadError {
            file: file.to_owned(),
            id: id.map(str::to_owned),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| fail(None, e.to_string()))?;
        let entries = manifest::parse(&text).map_err(|message| fail(None, message))?;
        for entry in entries {
            let id = manifest::normalize_id(&entry.id);
            let hash = sha256_hex(&entry.body);
            if manifest::is_sha256_hex(&id) && id != hash {
                return Err(fail(
                    Some(&entry.id),
                    "the id is not the SHA-256 of the document".to_owned(),
                ));
            }
            if let Some(known) = loaded.by_id.get(id.as_str())
                && *known.hash != *hash
            {
                return Err(fail(
                    Some(&entry.id),
                    "the id names another document in an earlier manifest".to_owned(),
                ));
            }
            let document = self
                .check(&entry.body)
                .map_err(|message| fail(Some(&entry.id), message))?;
            let name = entry
                .name
                .map(String::into_boxed_str)
                .or_else(|| sole_name(&document).map(String::into_boxed_str));
            if let Some(name) = &name {
                loaded.names.insert(name.clone());
            }
            let trusted = Arc::new(TrustedDocument {
                id: id.clone().into_boxed_str(),
                hash: hash.clone().into_boxed_str(),
                name,
                document,
            });
            loaded
                .by_id
                .insert(id.into_boxed_str(), Arc::clone(&trusted));
            loaded.by_hash.insert(hash.into_boxed_str(), trusted);
        }
        Ok(())
    }

    /// `body` parsed, within the limits and valid against the schema; says why not.
    fn check(&self, body: &str) -> Result<ExecutableDocument, String> {
        if crate::schema::limits::text_nesting(body) > crate::schema::limits::MAX_TEXT_NESTING {
            return Err("the document nests brackets too deeply".to_owned());
        }
        let document = parse_query(body).map_err(|e| format!("does not parse: {e}"))?;
        self.inner.limits.check(&document).map_err(|e| e.message)?;
        let mut request = Request::new("");
        if let DocumentOperations::Multiple(operations) = &document.operations
            && let Some(name) = operations.keys().next()
        {
            // Validation covers the whole document; an operation is named only so that the
            // schema does not refuse a document of several.
            request = request.operation_name(name.to_string());
        }
        request.set_parsed_query(document.clone());
        let request = request.data(ValidateOnly);
        // The schema validates and then stops (`ValidateOnly`): nothing in it waits on I/O, so
        // the future completes when first polled.
        let response = self
            .inner
            .schema
            .execute(request)
            .now_or_never()
            .ok_or_else(|| "validation did not complete".to_owned())?;
        if response.errors.is_empty() {
            Ok(document)
        } else {
            Err(response
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    /// Writes the counts to the server's metrics, once it has handed them over.
    fn export_metrics(&self) {
        let Some(metrics) = self.inner.metrics.get() else {
            return;
        };
        let count = self.len() as f64;
        let failures = self.inner.reload_failures.load(Ordering::Relaxed);
        metrics.record(|| {
            metrics::gauge!("bff_trusted_documents").set(count);
            metrics::counter!("bff_trusted_documents_reload_failures_total").absolute(failures);
        });
    }
}

/// The reload task of [`TrustedDocuments::watch`].
async fn watch(
    store: Weak<Inner>,
    interval: Duration,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    // The manifests were just loaded: the first check is one interval away.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = ticks.tick() => false,
            () = hung_up(&mut hangup) => true,
        };
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = TrustedDocuments { inner };
        // Files are read and documents validated off the async workers.
        let reloaded = tokio::task::spawn_blocking(move || {
            if forced || store.changed() {
                // Logged and counted by `reload`.
                let _ = store.reload();
            }
        });
        if reloaded.await.is_err() {
            tracing::error!("trusted documents: the reload panicked");
        }
    }
}

/// Waits for the next SIGHUP (for ever without one).
async fn hung_up(hangup: &mut Option<tokio::signal::unix::Signal>) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                *hangup = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// What metrics and traces call operations: the configured names
/// (`gateway.metrics.operation_names`) and the manifests' names; any other name is `other`, no
/// name `anonymous`.
pub struct OperationLabels {
    /// `gateway.metrics.operation_names`.
    pub configured: HashSet<Box<str>>,
    /// The manifests' names, as loaded now.
    pub trusted: TrustedDocuments,
}

impl OperationLabels {
    /// The label of an operation named `name`.
    pub fn label(&self, name: Option<&str>) -> String {
        match name {
            None => "anonymous".to_owned(),
            Some(name) if self.configured.contains(name) || self.trusted.knows_name(name) => {
                name.to_owned()
            }
            Some(_) => OTHER.to_owned(),
        }
    }

    /// The name to count a document that is not trusted under: its name when configured, else
    /// `other` (a manifest's name is for its trusted document only).
    pub fn untrusted(&self, name: Option<String>) -> Option<String> {
        name.map(|name| {
            if self.configured.contains(name.as_str()) {
                name
            } else {
                OTHER.to_owned()
            }
        })
    }
}

/// The label of every operation whose name is not a label.
const OTHER: &str = "other";

/// The `persistedQuery.sha256Hash` of a request, lowercase, when it is 64 hex digits.
fn persisted_hash(request: &Request) -> Option<String> {
    let Value::Object(fields) = request.extensions.0.get("persistedQuery")? else {
        return None;
    };
    match fields.get("sha256Hash")? {
        Value::String(hash) if manifest::is_sha256_hex(hash) => Some(hash.to_ascii_lowercase()),
        _ => None,
    }
}

/// The request's data of type `T`, if any.
fn data<T: 'static>(request: &Request) -> Option<&T> {
    request
        .data
        .get(&std::any::TypeId::of::<T>())
        .and_then(|value| value.downcast_ref::<T>())
}

/// The name of a document's only operation, when it has one and it is named.
fn sole_name(document: &ExecutableDocument) -> Option<String> {
    manifest::sole_operation(document)
        .ok()
        .map(|(name, _)| name)
}

/// The SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

//! What every transport does with a GraphQL request before and after the schema, whatever
//! carries it (`POST`/`GET` in [`crate::graphql`], a WebSocket or an event stream in
//! [`crate::live`]): reading it from JSON, [`prepare`] (trusted documents, APQ — [`resolve`] —
//! then the `GET` rule, the document limits, missing variables), giving every error a code ([`with_codes`]),
//! serializing a response ([`ResponseBody`]) and counting operations ([`record_operation`]).

use std::sync::Arc;

use async_graphql::{
    Request, ServerError,
    parser::types::{ExecutableDocument, OperationType},
};

use crate::{
    error::{TransportError, codes},
    response_cache, schema,
    state::AppState,
    trusted::{DocumentId, OperationLabels, TrustedDocument},
};

/// A request from a JSON object (a `POST` body, a WebSocket `subscribe` payload), with its
/// `documentId` if it names a trusted document.
pub(crate) fn request_from_json(
    mut map: serde_json::Map<String, serde_json::Value>,
) -> Result<Request, TransportError> {
    // `Int` variables written `47.0` are 47, as in every other gateway's bodies.
    if let Some(variables) = map.get_mut("variables") {
        server_kit::extract::integral_numbers_as_integers(variables);
    }
    let id = match map.remove("documentId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(_) => {
            return Err(TransportError::BadRequest("`documentId` must be a string."));
        }
    };
    let request =
        serde_json::from_value::<Request>(serde_json::Value::Object(map)).map_err(|_| {
            TransportError::BadRequest(
                "The body is not a GraphQL request: `query` must be a string, \
                 `variables` and `extensions` objects.",
            )
        })?;
    Ok(with_document_id(request, id))
}

/// `request` naming the trusted document `id`, if any.
pub(crate) fn with_document_id(mut request: Request, id: Option<String>) -> Request {
    if let Some(id) = id {
        request.data.insert(DocumentId(id));
    }
    request
}

/// A request checked and parsed, ready for the schema.
pub(crate) struct Prepared {
    /// The request, its document already parsed (when it parsed).
    pub request: Request,
    /// The operation's name for metrics and traces: a trusted document's manifest name; for any
    /// other document its name (the request's, or the document's only one) when
    /// `gateway.metrics.operation_names` lists it, else `other`.
    pub operation: Option<String>,
    /// The operation's type, when the document parsed and names it.
    pub kind: Option<OperationType>,
    /// Whether the document names no private field, so an answer to it may be shared (see
    /// [`crate::response_cache`]).
    pub public: bool,
}

/// What a request runs, once trusted documents and APQ had their say: a trusted document, or
/// the text now in `request.query`.
pub(crate) type Resolved = Option<Arc<TrustedDocument>>;

/// Takes one request through trusted documents, APQ, the `GET` rule and the document limits,
/// before any transport runs it; a request refused there is a [`TransportError`].
pub(crate) async fn prepare(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    request: Request,
    via_get: bool,
) -> Result<Prepared, TransportError> {
    prepare_trusted(endpoint, metrics, request, via_get)
        .await
        .map(|(prepared, _)| prepared)
}

/// [`prepare`], also handing back the trusted document the request runs, if it runs one: its
/// tree was parsed, limited and validated when loaded, so none of that is done again (the
/// transport runs it on [`AppState::trusted_schema`]).
pub(crate) async fn prepare_trusted(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    mut request: Request,
    via_get: bool,
) -> Result<(Prepared, Resolved), TransportError> {
    let resolved = resolve(endpoint, metrics, &mut request).await?;
    prepare_resolved(endpoint, metrics, request, resolved, via_get).await
}

/// The first step of [`prepare_trusted`]: which document `request` runs (trusted documents,
/// then APQ, which may fill `request.query` from a hash). Nothing is parsed yet: what a request
/// runs is known here, so an answer kept for it can be found before any more work.
pub(crate) async fn resolve(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    request: &mut Request,
) -> Result<Resolved, TransportError> {
    if let Some(metrics) = metrics {
        endpoint.trusted.attach_metrics(metrics);
    }
    let trusted = endpoint
        .trusted
        .resolve(request)
        .map_err(TransportError::PersistedDocument)?;
    if trusted.is_none() {
        endpoint
            .apq
            .apply(request)
            .await
            .map_err(TransportError::PersistedQuery)?;
    }
    Ok(trusted)
}

/// The rest of [`prepare_trusted`], for a request [`resolve`] resolved.
pub(crate) async fn prepare_resolved(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    mut request: Request,
    resolved: Resolved,
    via_get: bool,
) -> Result<(Prepared, Resolved), TransportError> {
    if let Some(trusted) = resolved {
        let document = &trusted.document;
        let kind = schema::limits::operation_type(document, request.operation_name.as_deref());
        if via_get && kind == Some(OperationType::Mutation) {
            return Err(TransportError::MutationViaGet);
        }
        refuse_missing_variable(document, &request)?;
        let public = response_cache::names_no_private_field(document);
        request.set_parsed_query(ExecutableDocument::clone(document));
        let prepared = Prepared {
            operation: trusted.name.as_deref().map(str::to_owned),
            request,
            kind,
            public,
        };
        return Ok((prepared, Some(trusted)));
    }
    prepare_text(endpoint, metrics, request, via_get)
        .await
        .map(|prepared| (prepared, None))
}

/// [`prepare_resolved`] for a document that is not trusted (APQ already applied).
async fn prepare_text(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    mut request: Request,
    via_get: bool,
) -> Result<Prepared, TransportError> {
    if request.query.trim().is_empty() {
        return Err(TransportError::BadRequest("The request has no `query`."));
    }
    if schema::limits::text_nesting(&request.query) > schema::limits::MAX_TEXT_NESTING {
        // Refused before parsing: the parser recurses on nesting and could overflow its stack.
        return Err(TransportError::Refused {
            code: schema::limits::codes::PARSE_FAILED.to_owned(),
            message: "The document nests brackets too deeply.".to_owned(),
        });
    }
    let labels: &OperationLabels = &endpoint.metric_names;
    let named;
    let mut kind = None;
    let mut public = false;
    if let Some(document) = endpoint.documents.parse(&request.query).await {
        named = labels.untrusted(
            request
                .operation_name
                .clone()
                .or_else(|| sole_operation_name(&document)),
        );
        kind = schema::limits::operation_type(&document, request.operation_name.as_deref());
        if via_get && kind == Some(OperationType::Mutation) {
            return Err(TransportError::MutationViaGet);
        }
        if let Err(refused) = endpoint.limits.check(&document) {
            // Checked here, before async-graphql walks the document with its fragments expanded.
            let code = code_of(&refused)
                .unwrap_or(schema::limits::codes::VALIDATION_FAILED)
                .to_owned();
            if let Some(metrics) = metrics {
                record_operation(
                    metrics,
                    labels,
                    named.as_deref(),
                    std::slice::from_ref(&refused),
                );
            }
            return Err(TransportError::Refused {
                code,
                message: refused.message,
            });
        }
        refuse_missing_variable(&document, &request)?;
        public = response_cache::names_no_private_field(&document);
        // The schema takes its own tree; copying the kept one is cheaper than parsing again.
        request.set_parsed_query(ExecutableDocument::clone(&document));
    } else {
        named = labels.untrusted(request.operation_name.clone());
    }
    Ok(Prepared {
        operation: named,
        request,
        kind,
        public,
    })
}

/// `BAD_USER_INPUT` when the operation `request` selects in `document` declares a required
/// variable the request leaves out.
fn refuse_missing_variable(
    document: &ExecutableDocument,
    request: &Request,
) -> Result<(), TransportError> {
    if let Some((name, ty)) =
        schema::limits::selected_operation(document, request.operation_name.as_deref())
            .and_then(|operation| schema::limits::missing_variable(operation, &request.variables))
    {
        return Err(TransportError::Refused {
            code: schema::error::Code::BadUserInput.as_str().to_owned(),
            message: format!("Variable `${name}` of required type `{ty}` was not provided."),
        });
    }
    Ok(())
}

/// `errors` with a code each: an error the schema left without one gets
/// [`codes::INTERNAL`] (and a generic message: it is a bug) once execution `ran`, and
/// `VALIDATION_FAILED` before.
pub(crate) fn with_codes(errors: Vec<ServerError>, ran: bool) -> Vec<ServerError> {
    let fallback = if ran {
        codes::INTERNAL
    } else {
        schema::limits::codes::VALIDATION_FAILED
    };
    errors
        .into_iter()
        .map(|mut error| {
            let ext = error.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() && is_input_error(&error.message) {
                // An argument that cannot take the value it was given (a variable of the wrong
                // type in a document not validated again): the client's error, its message
                // safe to show (it names the type and the value's fault).
                ext.set("code", crate::schema::error::Code::BadUserInput.as_str());
            }
            let ext = error.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                if ran {
                    tracing::error!(message = %error.message, "GraphQL error without a code");
                    error.message = "Internal error.".to_owned();
                }
                let ext = error.extensions.get_or_insert_with(Default::default);
                ext.set("code", fallback);
            }
            error
        })
        .collect()
}

/// Whether `message` is one of async-graphql's input coercion errors (`InputValueError`: a value
/// an argument or a variable cannot take).
fn is_input_error(message: &str) -> bool {
    [
        "Failed to parse \"",
        "Expected input type \"",
        "Invalid value for argument ",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}

/// A response body, serialized straight from async-graphql's values: `data` keeps the order of
/// the query's selections, as the GraphQL specification asks (a detour through
/// `serde_json::Value` would sort every object's keys).
#[derive(serde::Serialize)]
pub(crate) struct ResponseBody<'a> {
    /// Absent when execution never started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a async_graphql::Value>,
    /// The errors, each with a code.
    #[serde(skip_serializing_if = "<[ServerError]>::is_empty")]
    pub errors: &'a [ServerError],
    /// Extensions (e.g. `stale`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

/// The name of a document's only operation, when it has exactly one and it is named.
fn sole_operation_name(
    document: &async_graphql::parser::types::ExecutableDocument,
) -> Option<String> {
    match &document.operations {
        async_graphql::parser::types::DocumentOperations::Single(_) => None,
        async_graphql::parser::types::DocumentOperations::Multiple(operations)
            if operations.len() == 1 =>
        {
            operations.keys().next().map(|name| name.to_string())
        }
        async_graphql::parser::types::DocumentOperations::Multiple(_) => None,
    }
}

/// Shows the operation series in `metrics` from the start, at zero, so that the dashboard's
/// panels and any rule on them read series that exist before the first operation: the
/// operations of each label known now (`anonymous`, `other`, the configured names), and their
/// errors with the code of the gateway's own failures (`INTERNAL_SERVER_ERROR`); other codes
/// appear when they happen.
pub(crate) fn show_operations_from_start(
    metrics: &server_kit::metrics::Metrics,
    known: &OperationLabels,
) {
    let code = crate::schema::error::Code::InternalServerError.as_str();
    let names = ["anonymous", OTHER_OPERATION]
        .into_iter()
        .chain(known.configured.iter().map(|name| &**name));
    metrics.record(|| {
        for name in names {
            metrics::counter!("bff_graphql_operations_total", "operation" => name.to_owned())
                .increment(0);
            metrics::counter!(
                "bff_graphql_errors_total",
                "operation" => name.to_owned(),
                "code" => code
            )
            .increment(0);
        }
    });
}

/// The `operation` label of operations whose name is not a label.
const OTHER_OPERATION: &str = "other";

/// Counts one executed operation by name and each of its errors by code. Only the configured
/// names and the manifests' names are labels (`known`); any other name is `other`, no name
/// `anonymous`: clients choose names, so no client can add a series or push a real operation
/// out of the label.
pub(crate) fn record_operation(
    metrics: &server_kit::metrics::Metrics,
    known: &OperationLabels,
    operation: Option<&str>,
    errors: &[ServerError],
) {
    let name = known.label(operation);
    metrics.record(|| {
        metrics::counter!("bff_graphql_operations_total", "operation" => name.clone()).increment(1);
    });
    record_errors(metrics, &name, errors);
}

/// Counts `errors` of the operation labelled `name` (a label from [`OperationLabels::label`]):
/// a long-lived operation is counted once when it starts, and the errors of each of its
/// responses as they come.
pub(crate) fn record_errors(
    metrics: &server_kit::metrics::Metrics,
    name: &str,
    errors: &[ServerError],
) {
    if errors.is_empty() {
        return;
    }
    metrics.record(|| {
        for error in errors {
            let code = metrics.bounded("code", code_of(error).unwrap_or("UNKNOWN"));
            metrics::counter!("bff_graphql_errors_total", "operation" => name.to_owned(), "code" => code)
                .increment(1);
        }
    });
}

/// The `extensions.code` of an error, if it has one.
fn code_of(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code),
        _ => None,
    }
}

//! What every transport does with a GraphQL request before and after the schema, whatever
//! carries it (`POST`/`GET` in [`crate::graphql`], a WebSocket or an event stream in
//! [`crate::live`]): reading it from JSON, [`prepare`] (APQ, the `GET` rule, the document
//! limits, missing variables), giving every error a code ([`with_codes`]), serializing a
//! response ([`ResponseBody`]) and counting operations ([`record_operation`]).

use std::collections::HashSet;

use async_graphql::{
    Request, ServerError,
    parser::types::{ExecutableDocument, OperationType},
};

use crate::{
    error::{TransportError, codes},
    schema,
    state::AppState,
};

/// A request from a JSON object (a `POST` body, a WebSocket `subscribe` payload).
pub(crate) fn request_from_json(
    mut map: serde_json::Map<String, serde_json::Value>,
) -> Result<Request, TransportError> {
    // `Int` variables written `47.0` are 47, as in every other gateway's bodies.
    if let Some(variables) = map.get_mut("variables") {
        server_kit::extract::integral_numbers_as_integers(variables);
    }
    serde_json::from_value::<Request>(serde_json::Value::Object(map)).map_err(|_| {
        TransportError::BadRequest(
            "The body is not a GraphQL request: `query` must be a string, \
             `variables` and `extensions` objects.",
        )
    })
}

/// A request checked and parsed, ready for the schema.
pub(crate) struct Prepared {
    /// The request, its document already parsed (when it parsed).
    pub request: Request,
    /// The operation's name, for metrics: the request's, or the document's only one.
    pub operation: Option<String>,
    /// The operation's type, when the document parsed and names it.
    pub kind: Option<OperationType>,
}

/// Takes one request through APQ, the `GET` rule and the document limits, before any
/// transport runs it; a request refused there is a [`TransportError`].
pub(crate) async fn prepare(
    endpoint: &AppState,
    metrics: Option<&server_kit::metrics::Metrics>,
    mut request: Request,
    via_get: bool,
) -> Result<Prepared, TransportError> {
    endpoint
        .apq
        .apply(&mut request)
        .await
        .map_err(TransportError::PersistedQuery)?;
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
    let mut named = None;
    let mut kind = None;
    if let Some(document) = endpoint.documents.parse(&request.query).await {
        named = sole_operation_name(&document);
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
                    &endpoint.metric_names,
                    request.operation_name.as_deref().or(named.as_deref()),
                    std::slice::from_ref(&refused),
                );
            }
            return Err(TransportError::Refused {
                code,
                message: refused.message,
            });
        }
        if let Some((name, ty)) =
            schema::limits::selected_operation(&document, request.operation_name.as_deref())
                .and_then(|operation| {
                    schema::limits::missing_variable(operation, &request.variables)
                })
        {
            return Err(TransportError::Refused {
                code: schema::error::Code::BadUserInput.as_str().to_owned(),
                message: format!("Variable `${name}` of required type `{ty}` was not provided."),
            });
        }
        // The schema takes its own tree; copying the kept one is cheaper than parsing again.
        request.set_parsed_query(ExecutableDocument::clone(&document));
    }
    Ok(Prepared {
        operation: request.operation_name.clone().or(named),
        request,
        kind,
    })
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

/// Counts one executed operation by name and each of its errors by code. Only the configured
/// names are labels (`known`); any other name is `other`, no name `anonymous`: clients choose
/// names, so no client can add a series or push a real operation out of the label.
pub(crate) fn record_operation(
    metrics: &server_kit::metrics::Metrics,
    known: &HashSet<Box<str>>,
    operation: Option<&str>,
    errors: &[ServerError],
) {
    let name = match operation {
        None => "anonymous".to_owned(),
        Some(name) if known.contains(name) => name.to_owned(),
        Some(_) => "other".to_owned(),
    };
    metrics.record(|| {
        metrics::counter!("bff_graphql_operations_total", "operation" => name.clone()).increment(1);
        for error in errors {
            let code = metrics.bounded("code", code_of(error).unwrap_or("UNKNOWN"));
            metrics::counter!("bff_graphql_errors_total", "operation" => name.clone(), "code" => code)
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

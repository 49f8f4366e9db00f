//! The GraphQL endpoint over HTTP, following the GraphQL-over-HTTP specification.
//!
//! - `POST` with an `application/json` body (`{query, operationName, variables, extensions}`);
//!   any other body type is 415. Bodies above `server.max_body_bytes` are 413.
//! - `GET` with `query`, `operationName`, `variables` and `extensions` in the query string, for
//!   queries only: a mutation over `GET` is 405 with `Allow: POST`.
//! - `GET` from a browser (`Accept: text/html`, no `query`) shows GraphiQL, when
//!   `gateway.graphiql` is on.
//! - Content negotiation: `application/graphql-response+json` when the client accepts it,
//!   otherwise `application/json` (also without `Accept`); a client accepting neither gets 406.
//! - Status codes: with `application/graphql-response+json`, a request that fails before execution
//!   (unparsable or invalid document, a limit exceeded, a required variable left out —
//!   `BAD_USER_INPUT`) is 400 and its body has no `data`;
//!   once execution started, 200 (field errors travel in `errors` next to partial `data`). With
//!   `application/json`, every well-formed request gets 200. A body that is not a GraphQL request
//!   at all is 400 either way. `PERSISTED_QUERY_NOT_FOUND` is 200 either way (Apollo clients
//!   expect that to resend the text). Requests refused before execution are a
//!   [`TransportError`], whose module says each status.
//! - Each request is authenticated once ([`Authenticator::authenticate`]). Without
//!   `Authorization` it runs anonymously (viewer fields are then `UNAUTHENTICATED`); with a token
//!   that is refused, the whole request is 401 `UNAUTHENTICATED` with a `WWW-Authenticate`
//!   challenge. Its downstream context carries the request id, `traceparent` and the deadline
//!   `downstream.deadline` from now.
//!
//! Responses are never cached by browsers or proxies (`Cache-Control: no-store`, written by
//! [`json_response`]): they may hold the viewer's private data.
//!
//! [`Authenticator::authenticate`]: server_kit::auth::Authenticator::authenticate

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use async_graphql::{
    Request, ServerError,
    parser::types::{ExecutableDocument, OperationType},
};
use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, Query, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use crate::{
    error::{TransportError, codes},
    graphiql, live,
    response::{Media, json_response, negotiate},
    schema::{self, Executed, Identity, RequestScope},
    state::AppState,
};

/// Whether a browser asks for a page (`text/html` accepted, before any JSON type).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The peer's address, when the server recorded it (always, except in router-only tests).
fn peer(connect: Option<&axum::Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    connect.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |info| {
        info.0.0.ip().to_canonical()
    })
}

/// `GET /graphql`: a query in the query string, the query page, a WebSocket (`Upgrade:
/// websocket`, see [`live::ws`]) or an event stream (`Accept: text/event-stream`, see
/// [`live::sse`]).
#[allow(clippy::too_many_arguments)]
pub async fn get_graphql(
    State(endpoint): State<Arc<AppState>>,
    metrics: Option<axum::Extension<server_kit::metrics::Metrics>>,
    readiness: Option<axum::Extension<server_kit::Readiness>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    websocket: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let metrics = metrics.map(|m| m.0);
    let readiness = readiness.map(|r| r.0);
    let peer = peer(connect.as_ref());
    if let Ok(websocket) = websocket {
        return live::ws::upgrade(endpoint, metrics, readiness, peer, headers, websocket).await;
    }
    if endpoint.graphiql && wants_html(&headers) && !params.contains_key("query") {
        return Html(graphiql::page(&endpoint.path)).into_response();
    }
    let streaming = live::sse::wants_event_stream(&headers);
    let media = match negotiate(&headers) {
        Some(media) => media,
        None if streaming => Media::GraphqlResponse,
        None => return TransportError::NotAcceptable.respond(Media::Json),
    };
    let request = match request_from_params(&params) {
        Ok(request) => request,
        Err(refused) => return refused.respond(media),
    };
    if streaming {
        return live::sse::respond(endpoint, metrics, readiness, peer, headers, request, true)
            .await;
    }
    execute(endpoint, metrics, headers, request, media, true)
        .await
        .unwrap_or_else(|refused| refused.respond(media))
}

/// `POST /graphql`: a JSON request body, answered as JSON or, with `Accept:
/// text/event-stream`, as an event stream (see [`live::sse`]).
pub async fn post_graphql(
    State(endpoint): State<Arc<AppState>>,
    metrics: Option<axum::Extension<server_kit::metrics::Metrics>>,
    readiness: Option<axum::Extension<server_kit::Readiness>>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = metrics.map(|m| m.0);
    let streaming = live::sse::wants_event_stream(&headers);
    let media = match negotiate(&headers) {
        Some(media) => media,
        None if streaming => Media::GraphqlResponse,
        None => return TransportError::NotAcceptable.respond(Media::Json),
    };
    let request = match request_from_body(&headers, &body) {
        Ok(request) => request,
        Err(refused) => return refused.respond(media),
    };
    if streaming {
        let readiness = readiness.map(|r| r.0);
        let peer = peer(connect.as_ref());
        return live::sse::respond(endpoint, metrics, readiness, peer, headers, request, false)
            .await;
    }
    execute(endpoint, metrics, headers, request, media, false)
        .await
        .unwrap_or_else(|refused| refused.respond(media))
}

/// A request from `GET` parameters.
fn request_from_params(params: &HashMap<String, String>) -> Result<Request, TransportError> {
    let mut request = Request::new(params.get("query").cloned().unwrap_or_default());
    if let Some(name) = params.get("operationName").filter(|n| !n.is_empty()) {
        request = request.operation_name(name.clone());
    }
    if let Some(variables) = params.get("variables").filter(|v| !v.is_empty()) {
        let mut variables = serde_json::from_str(variables)
            .map_err(|_| TransportError::BadRequest("`variables` must be a JSON object."))?;
        server_kit::extract::integral_numbers_as_integers(&mut variables);
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(extensions) = params.get("extensions").filter(|v| !v.is_empty()) {
        request.extensions = serde_json::from_str(extensions)
            .map_err(|_| TransportError::BadRequest("`extensions` must be a JSON object."))?;
    }
    Ok(request)
}

/// A request from a `POST` body, which must be one JSON object sent as `application/json`.
fn request_from_body(headers: &HeaderMap, body: &[u8]) -> Result<Request, TransportError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(TransportError::UnsupportedMediaType);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => request_from_json(map),
        Ok(_) => Err(TransportError::BadRequest(
            "The body must be one JSON object (batches are not supported).",
        )),
        Err(_) => Err(TransportError::BadRequest("The body is not valid JSON.")),
    }
}

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

/// Runs one request through [`prepare`], authentication and the schema; a request refused
/// before the schema ran it is a [`TransportError`].
async fn execute(
    endpoint: Arc<AppState>,
    metrics: Option<server_kit::metrics::Metrics>,
    headers: HeaderMap,
    request: Request,
    media: Media,
    via_get: bool,
) -> Result<Response, TransportError> {
    let Prepared {
        request,
        operation,
        kind,
    } = prepare(&endpoint, metrics.as_ref(), request, via_get).await?;
    if kind == Some(OperationType::Subscription) {
        return Err(TransportError::SubscriptionNeedsStream);
    }
    let identity = match endpoint.auth.authenticate(&headers).await {
        Ok(Some(user)) => Identity::User(user.into_user_id()),
        Ok(None) => Identity::Anonymous,
        Err(refused) => return Err(TransportError::Unauthenticated(refused)),
    };
    let context = server_kit::extract::request_context(&headers, endpoint.deadline);
    let executed = Executed::default();
    let scope = RequestScope::new(&endpoint.services, context, identity);
    let staleness = Arc::clone(&scope.staleness);
    let request = request.data(scope).data(executed.clone());
    let mut response = endpoint.schema.execute(request).await;
    if let Some(stale) = staleness.report() {
        // Said once per answer: which sources were served from the cache past their freshness.
        response.extensions.insert(
            "stale".to_owned(),
            async_graphql::Value::from_json(serde_json::json!({
                "sources": stale.sources,
                "maxAgeSeconds": stale.max_age_seconds,
            }))
            .unwrap_or_default(),
        );
    }
    let ran = executed.get();

    let status = if ran || media == Media::Json {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let errors = with_codes(response.errors, ran);
    if let Some(metrics) = &metrics {
        record_operation(
            metrics,
            &endpoint.metric_names,
            operation.as_deref(),
            &errors,
        );
    }
    let body = ResponseBody {
        data: ran.then_some(&response.data),
        errors: &errors,
        extensions: &response.extensions,
    };
    Ok(json_response(media, status, &body))
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

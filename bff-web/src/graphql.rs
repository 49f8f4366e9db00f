//! The GraphQL endpoint over HTTP, following the GraphQL-over-HTTP specification.
//!
//! - `POST` with an `application/json` body (`{query, operationName, variables, extensions}`);
//!   any other body type is 415. Bodies above `server.max_body_bytes` are 413.
//! - `GET` with `query` (or `documentId`), `operationName`, `variables` and `extensions` in the
//!   query string, for queries only: a mutation over `GET` is 405 with `Allow: POST`.
//! - A trusted document (see [`crate::trusted`]) is named by `documentId` in the body or the
//!   query string, or by `extensions.persistedQuery.sha256Hash`; in `enforce` mode the bypass
//!   header is read here.
//! - `GET <path>/schema.graphql`: the SDL, while introspection or `gateway.schema_endpoint` is on.
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
//! - Answers of public queries are kept by the response cache ([`crate::response_cache`]) and
//!   answered again without running; over `GET` they are `Cache-Control: public, max-age=N`
//!   with an `ETag` (`If-None-Match` → 304).
//!
//! Every other response is never cached by browsers or proxies (`Cache-Control: no-store`,
//! written by [`bytes_response`]): it may hold the viewer's private data.
//!
//! [`Authenticator::authenticate`]: server_kit::auth::Authenticator::authenticate

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use async_graphql::{Request, parser::types::OperationType};
use tracing::Instrument;

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
    error::TransportError,
    graphiql, live,
    pipeline::{
        Prepared, ResponseBody, prepare_resolved, record_operation, request_from_json, resolve,
        with_codes, with_document_id,
    },
    response::{Media, bytes_response, negotiate, shared_response},
    response_cache,
    schema::{Executed, Identity, RequestScope},
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
    if endpoint.graphiql
        && wants_html(&headers)
        && !params.contains_key("query")
        && !params.contains_key("documentId")
    {
        return Html(graphiql::page(&endpoint.path)).into_response();
    }
    let streaming = live::sse::wants_event_stream(&headers);
    let media = match negotiate(&headers) {
        Some(media) => media,
        None if streaming => Media::GraphqlResponse,
        None => return TransportError::NotAcceptable.respond(Media::Json),
    };
    let request = match request_from_params(&params) {
        Ok(request) => endpoint.trusted.mark_bypass(request, &headers),
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
        Ok(request) => endpoint.trusted.mark_bypass(request, &headers),
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
    let id = params
        .get("documentId")
        .filter(|id| !id.is_empty())
        .cloned();
    Ok(with_document_id(request, id))
}

/// `GET <path>/schema.graphql`: the schema's SDL, while introspection or
/// `gateway.schema_endpoint` is on (the router has no such route otherwise).
pub async fn get_sdl(State(endpoint): State<Arc<AppState>>) -> Response {
    match &endpoint.sdl {
        Some(sdl) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            sdl.to_string(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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

/// Runs one request through [`prepare`], authentication and the schema; a request refused
/// before the schema ran it is a [`TransportError`]. An answer the response cache holds for it
/// is answered once the request is authenticated, without preparing or running anything.
async fn execute(
    endpoint: Arc<AppState>,
    metrics: Option<server_kit::metrics::Metrics>,
    headers: HeaderMap,
    mut request: Request,
    media: Media,
    via_get: bool,
) -> Result<Response, TransportError> {
    let resolved = resolve(&endpoint, metrics.as_ref(), &mut request).await?;
    let key = endpoint.responses.is_enabled().then(|| {
        let document = match &resolved {
            Some(trusted) => response_cache::Document::Trusted(&trusted.hash),
            None => response_cache::Document::Text(&request.query),
        };
        response_cache::key(
            document,
            request.operation_name.as_deref(),
            &request.variables,
        )
    });
    if let Some(key) = &key {
        let kept = endpoint.responses.get(key);
        if kept.is_none() {
            count_lookup(metrics.as_ref(), false);
        }
        if let Some(kept) = kept {
            // The same rule as a run: a token that is refused is 401 (an absent one is fine).
            if let Err(refused) = endpoint.auth.authenticate(&headers).await {
                return Err(TransportError::Unauthenticated(refused));
            }
            count_lookup(metrics.as_ref(), true);
            if let Some(metrics) = &metrics {
                record_operation(
                    metrics,
                    &endpoint.metric_names,
                    kept.operation.as_deref(),
                    &[],
                );
            }
            return Ok(shared_response(media, &kept, via_get, &headers));
        }
    }
    let (
        Prepared {
            request,
            operation,
            kind,
            public,
        },
        trusted,
    ) = prepare_resolved(&endpoint, metrics.as_ref(), request, resolved, via_get).await?;
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
    let contents = Arc::clone(&scope.contents);
    let request = request.data(scope).data(executed.clone());
    // A trusted document was validated in full when loaded: only what depends on the request's
    // variables (complexity) is checked again.
    let schema = if trusted.is_some() {
        &endpoint.trusted_schema
    } else {
        &endpoint.schema
    };
    // OpenTelemetry's GraphQL conventions: the operation's type and name (never its variables),
    // the span named `<type> <name>`.
    let operation_type = match kind {
        Some(OperationType::Query) | None => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
    };
    let operation_name = operation.as_deref().unwrap_or("anonymous");
    let span = tracing::info_span!(
        "graphql",
        "otel.name" = %format_args!("{operation_type} {operation_name}"),
        "graphql.operation.name" = operation_name,
        "graphql.operation.type" = operation_type,
        "graphql.document.id" = trusted.as_ref().map(|t| &*t.id),
    );
    // Taken before anything is read: a change during the run means the answer is not kept.
    let changes = endpoint.responses.changes();
    let mut response = schema.execute(request).instrument(span).await;
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
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    // Only a complete, fresh answer of a public query: no errors, no `stale` (or any other)
    // extension.
    let keepable = public
        && ran
        && kind == Some(OperationType::Query)
        && errors.is_empty()
        && response.extensions.is_empty();
    if let Some(key) = key.filter(|_| keepable) {
        let kept = endpoint.responses.keep(
            key,
            changes,
            &contents.record(),
            bytes.clone(),
            operation.as_deref(),
        );
        if let Some(kept) = kept {
            return Ok(shared_response(media, &kept, via_get, &headers));
        }
    }
    Ok(bytes_response(media, status, bytes))
}

/// Counts one lookup of the response cache (`bff_graphql_response_cache_total{outcome}`).
fn count_lookup(metrics: Option<&server_kit::metrics::Metrics>, hit: bool) {
    let Some(metrics) = metrics else {
        return;
    };
    let outcome = if hit {
        response_cache::Outcome::Hit
    } else {
        response_cache::Outcome::Miss
    };
    metrics.record(|| {
        metrics::counter!("bff_graphql_response_cache_total", "outcome" => outcome.as_str())
            .increment(1);
    });
}

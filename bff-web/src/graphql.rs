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
//!   expect that to resend the text).
//! - Each request is authenticated once ([`Authenticator::authenticate`]). Without
//!   `Authorization` it runs anonymously (viewer fields are then `UNAUTHENTICATED`); with a token
//!   that is refused, the whole request is 401 `UNAUTHENTICATED` with a `WWW-Authenticate`
//!   challenge. Its downstream context carries the request id, `traceparent` and the deadline
//!   `downstream.deadline` from now.
//!
//! Responses are never cached by browsers or proxies (`Cache-Control: no-store`): they may hold
//! the viewer's private data.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use async_graphql::{
    Request, ServerError,
    parser::types::{ExecutableDocument, OperationType},
};
use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use server_kit::auth::{AuthError, Authenticator};

use crate::{
    apq::{ApqError, PersistedQueries},
    documents::ParsedDocuments,
    graphiql,
    schema::{self, Executed, Identity, RequestScope, Services, WebSchema},
};

/// `application/graphql-response+json`, the GraphQL-over-HTTP response type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// Transport error codes (the request never reached the schema).
pub mod codes {
    /// The body or query string is not a GraphQL request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// A mutation was sent with `GET`.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// The body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// The client accepts no response type this endpoint produces.
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// An error without a code of its own after execution started (a bug).
    pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
}

/// What the endpoint's handlers share.
#[derive(Clone)]
pub struct Endpoint {
    /// The executable schema.
    pub schema: WebSchema,
    /// The limits checked on each parsed document before the schema sees it.
    pub limits: schema::limits::Limits,
    /// What every request's scope is built from.
    pub services: Services,
    /// Verifies bearer tokens.
    pub auth: Authenticator,
    /// Automatic persisted queries.
    pub apq: PersistedQueries,
    /// Parsed documents by text, so a repeated query is parsed once.
    pub documents: ParsedDocuments,
    /// Whether browsers get GraphiQL.
    pub graphiql: bool,
    /// Where the endpoint is mounted (GraphiQL posts there).
    pub path: Arc<str>,
    /// The time budget of one request's downstream calls.
    pub deadline: Duration,
    /// The operation names the metrics label by name (`gateway.metrics.operation_names`).
    pub metric_names: Arc<HashSet<Box<str>>>,
}

/// The endpoint's routes, mounted at `endpoint.path`.
pub fn routes(endpoint: Endpoint) -> Router {
    let path = endpoint.path.to_string();
    let router = Router::new().route(&path, get(get_graphql).post(post_graphql));
    let router = if endpoint.graphiql {
        router.route(
            &format!("{}/{{name}}", graphiql::assets_path(&path)),
            get(graphiql_asset),
        )
    } else {
        router
    };
    // Shared behind one `Arc`: axum copies the state for every request.
    router.with_state(Arc::new(endpoint))
}

/// `GET {path}/graphiql/{version}/{name}`: a vendored GraphiQL file, cacheable for good (the
/// version is in the URL).
async fn graphiql_asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match graphiql::asset(&name) {
        Some((media_type, bytes)) => (
            [
                (header::CONTENT_TYPE, media_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The response type a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    /// `application/graphql-response+json`: status codes say whether the request ran.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request.
    Json,
}

impl Media {
    /// The status of a request refused before execution (it has no `data`): 400 for
    /// `application/graphql-response+json`, 200 for `application/json`.
    fn request_error_status(self) -> StatusCode {
        match self {
            Self::Json => StatusCode::OK,
            Self::GraphqlResponse => StatusCode::BAD_REQUEST,
        }
    }

    /// The `Content-Type` value.
    fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }
}

/// Chooses the response type from `Accept`; `None` when the client accepts neither.
fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if accept.is_empty() {
        return Some(Media::Json);
    }
    let mut graphql = false;
    let mut json = false;
    for range in accept.iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            GRAPHQL_RESPONSE_JSON => graphql = true,
            "application/json" | "application/*" | "*/*" => json = true,
            _ => {}
        }
    }
    if graphql {
        Some(Media::GraphqlResponse)
    } else if json {
        Some(Media::Json)
    } else {
        None
    }
}

/// Whether a browser asks for a page (`text/html` accepted, before any JSON type).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `GET /graphql`: a query in the query string, or the query page.
async fn get_graphql(
    State(endpoint): State<Arc<Endpoint>>,
    metrics: Option<axum::Extension<server_kit::metrics::Metrics>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if endpoint.graphiql && wants_html(&headers) && !params.contains_key("query") {
        return Html(graphiql::page(&endpoint.path)).into_response();
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let request = match request_from_params(&params) {
        Ok(request) => request,
        Err(message) => {
            return transport_error(media, StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message);
        }
    };
    execute(
        endpoint,
        metrics.map(|m| m.0),
        headers,
        request,
        media,
        true,
    )
    .await
}

/// `POST /graphql`: a JSON request body.
async fn post_graphql(
    State(endpoint): State<Arc<Endpoint>>,
    metrics: Option<axum::Extension<server_kit::metrics::Metrics>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return transport_error(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Send the request as `Content-Type: application/json`.",
        );
    }
    let request = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut map)) => {
            // `Int` variables written `47.0` are 47, as in every other gateway's bodies.
            if let Some(variables) = map.get_mut("variables") {
                server_kit::extract::integral_numbers_as_integers(variables);
            }
            match serde_json::from_value::<Request>(serde_json::Value::Object(map)) {
                Ok(request) => request,
                Err(_) => {
                    return transport_error(
                        media,
                        StatusCode::BAD_REQUEST,
                        codes::BAD_REQUEST,
                        "The body is not a GraphQL request: `query` must be a string, \
                         `variables` and `extensions` objects.",
                    );
                }
            }
        }
        Ok(_) => {
            return transport_error(
                media,
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "The body must be one JSON object (batches are not supported).",
            );
        }
        Err(_) => {
            return transport_error(
                media,
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "The body is not valid JSON.",
            );
        }
    };
    execute(
        endpoint,
        metrics.map(|m| m.0),
        headers,
        request,
        media,
        false,
    )
    .await
}

/// A request from `GET` parameters.
fn request_from_params(params: &HashMap<String, String>) -> Result<Request, &'static str> {
    let mut request = Request::new(params.get("query").cloned().unwrap_or_default());
    if let Some(name) = params.get("operationName").filter(|n| !n.is_empty()) {
        request = request.operation_name(name.clone());
    }
    if let Some(variables) = params.get("variables").filter(|v| !v.is_empty()) {
        let mut variables =
            serde_json::from_str(variables).map_err(|_| "`variables` must be a JSON object.")?;
        server_kit::extract::integral_numbers_as_integers(&mut variables);
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(extensions) = params.get("extensions").filter(|v| !v.is_empty()) {
        request.extensions =
            serde_json::from_str(extensions).map_err(|_| "`extensions` must be a JSON object.")?;
    }
    Ok(request)
}

/// Runs one request through APQ, the `GET` rule, authentication and the schema.
async fn execute(
    endpoint: Arc<Endpoint>,
    metrics: Option<server_kit::metrics::Metrics>,
    headers: HeaderMap,
    mut request: Request,
    media: Media,
    via_get: bool,
) -> Response {
    if let Err(error) = endpoint.apq.apply(&mut request).await {
        let status = match (error, media) {
            (ApqError::NotFound, _) | (_, Media::Json) => StatusCode::OK,
            (_, Media::GraphqlResponse) => StatusCode::BAD_REQUEST,
        };
        return transport_error(media, status, error.code(), error.message());
    }
    if request.query.trim().is_empty() {
        return transport_error(
            media,
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "The request has no `query`.",
        );
    }
    if schema::limits::text_nesting(&request.query) > schema::limits::MAX_TEXT_NESTING {
        // Refused before parsing: the parser recurses on nesting and could overflow its stack.
        let status = media.request_error_status();
        return transport_error(
            media,
            status,
            schema::limits::codes::PARSE_FAILED,
            "The document nests brackets too deeply.",
        );
    }
    let mut named = None;
    if let Some(document) = endpoint.documents.parse(&request.query).await {
        named = sole_operation_name(&document);
        let ty = schema::limits::operation_type(&document, request.operation_name.as_deref());
        if via_get && ty == Some(OperationType::Mutation) {
            let mut response = transport_error(
                media,
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "Mutations must be sent with POST.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        if let Err(refused) = endpoint.limits.check(&document) {
            // Checked here, before async-graphql walks the document with its fragments expanded.
            let status = media.request_error_status();
            let code = code_of(&refused).unwrap_or(schema::limits::codes::VALIDATION_FAILED);
            if let Some(metrics) = &metrics {
                record_operation(
                    metrics,
                    &endpoint.metric_names,
                    request.operation_name.as_deref().or(named.as_deref()),
                    std::slice::from_ref(&refused),
                );
            }
            return transport_error(media, status, code, &refused.message);
        }
        if let Some((name, ty)) =
            schema::limits::selected_operation(&document, request.operation_name.as_deref())
                .and_then(|operation| {
                    schema::limits::missing_variable(operation, &request.variables)
                })
        {
            let status = media.request_error_status();
            return transport_error(
                media,
                status,
                schema::error::Code::BadUserInput.as_str(),
                &format!("Variable `${name}` of required type `{ty}` was not provided."),
            );
        }
        // The schema takes its own tree; copying the kept one is cheaper than parsing again.
        request.set_parsed_query(ExecutableDocument::clone(&document));
    }

    let identity = match endpoint.auth.authenticate(&headers).await {
        Ok(Some(user)) => Identity::User(user.into_user_id()),
        Ok(None) => Identity::Anonymous,
        Err(refused) => return unauthenticated(media, refused),
    };
    let context = server_kit::extract::request_context(&headers, endpoint.deadline);
    let operation = request.operation_name.clone().or(named);
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
    let fallback = if ran {
        codes::INTERNAL
    } else {
        schema::limits::codes::VALIDATION_FAILED
    };
    let errors: Vec<ServerError> = response
        .errors
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
        .collect();
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
    json_response(media, status, &body)
}

/// A response body, serialized straight from async-graphql's values: `data` keeps the order of
/// the query's selections, as the GraphQL specification asks (a detour through
/// `serde_json::Value` would sort every object's keys).
#[derive(serde::Serialize)]
struct ResponseBody<'a> {
    /// Absent when execution never started.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[ServerError]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
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
fn record_operation(
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

/// A response with a GraphQL body.
fn json_response(media: Media, status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Authorization"),
    );
    response
}

/// A request refused before the schema saw it, as a GraphQL error body without `data`.
fn transport_error(media: Media, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    json_response(media, status, &body)
}

/// 401 for a bearer token that is present but refused: the whole request, catalog included, is
/// refused, so a broken or expired token never silently turns a request anonymous. The body is a
/// GraphQL error (`UNAUTHENTICATED` with the public `reason`), with a `WWW-Authenticate` challenge.
fn unauthenticated(media: Media, refused: AuthError) -> Response {
    let error = schema::error::unauthenticated(refused);
    let reason = refused.public_code();
    let body = serde_json::json!({
        "errors": [{
            "message": error.message,
            "extensions": { "code": schema::error::Code::Unauthenticated.as_str(), "reason": reason },
        }]
    });
    let mut response = json_response(media, StatusCode::UNAUTHORIZED, &body);
    let challenge = match refused {
        AuthError::Expired => {
            r#"Bearer error="invalid_token", error_description="The token expired""#
        }
        _ => r#"Bearer error="invalid_token""#,
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// 406: the client accepts no type this endpoint produces (answered in JSON all the same).
fn not_acceptable() -> Response {
    transport_error(
        Media::Json,
        StatusCode::NOT_ACCEPTABLE,
        codes::NOT_ACCEPTABLE,
        "Accept `application/graphql-response+json` or `application/json`.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_prefers_the_graphql_response_type_and_defaults_to_json() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(negotiate(&accept("application/json")), Some(Media::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(Media::Json));
        assert_eq!(
            negotiate(&accept(
                "application/json, application/graphql-response+json;q=0.9"
            )),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0, application/json"
            )),
            Some(Media::Json)
        );
        assert_eq!(negotiate(&accept("text/plain")), None);
    }
}

//! `/v2/webhooks`: partners register, inspect, change, test and delete their webhook endpoints
//! and look at (and redeliver) what was sent. Every route needs the `webhooks:manage` scope.
//!
//! Policy:
//! - **A partner sees only its own.** Endpoints and deliveries are looked up under the
//!   partner's keys ([`WebhookStore`]): another partner's id is a 404, like one that does not
//!   exist, and never appears in a list.
//! - **A secret is shown once.** Only the answers of `POST /v2/webhooks` and
//!   `POST /v2/webhooks/{id}/rotate-secret` carry `secret`; no other answer, log or error does.
//!   Every answer of these routes is `Cache-Control: private, no-store`.
//! - **URLs are checked** with [`ssrf::check_url`] and, for a domain, [`ssrf::resolve_and_check`]
//!   (`gateway.webhooks.allow_insecure_targets` allows `http://` and loopback, for development
//!   and tests only). A refusal is a 422 `invalid-webhook` problem saying why, without the
//!   addresses a name resolved to (they are our DNS's answer, not the partner's business).
//! - **Redis is the store.** Without `shared.redis_url` (or with `gateway.webhooks.enabled =
//!   false`) every route answers 501 `webhooks-unavailable`; when Redis fails during a request,
//!   503 `service-unavailable` with `Retry-After`. Never a 500.
//! - The handlers change state and queue deliveries; the delivery engine sends them (see
//!   [`super`]).

use std::time::{Duration, SystemTime};

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::{IntoParams, ToSchema};

use crate::webhooks::{
    payload::EventSet,
    ssrf::{self, UrlRefusal},
    store::{
        self, Delivery, DeliveryOutcome, DisabledReason, Endpoint, EndpointPatch, NewEndpoint,
        StoreError, WebhookStore,
    },
};
use crate::{
    auth::{Authorized, WebhooksManage},
    error::ApiError,
    extract::{Json, Path, Query},
    openapi::ProblemResponse,
    state::AppState,
};

/// Why an endpoint is disabled: the receiver answered `410 Gone` (`gone`), deliveries failed for
/// a whole retry schedule (`failing`), or you disabled it (`partner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDisabledReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// Deliveries failed for a whole retry schedule.
    Failing,
    /// You disabled it.
    Partner,
}

impl From<DisabledReason> for WebhookDisabledReason {
    fn from(reason: DisabledReason) -> Self {
        match reason {
            DisabledReason::Gone => Self::Gone,
            DisabledReason::Failing => Self::Failing,
            DisabledReason::Partner => Self::Partner,
        }
    }
}

/// A webhook endpoint: where your events are sent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    /// The endpoint's id (`we_…`).
    #[schema(pattern = "^we_[0-9a-z]{26}$")]
    pub id: String,
    /// Where deliveries are POSTed (normalised).
    pub url: String,
    /// The event types sent to it: `order.created`, `order.status_changed`.
    pub events: Vec<String>,
    /// Your note about it.
    pub description: Option<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it is disabled, when it is.
    pub disabled_reason: Option<WebhookDisabledReason>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// While a rotated-out secret still signs alongside the new one: until when (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
}

impl WebhookEndpoint {
    /// The answer for `endpoint` at `now_ms`.
    fn of(endpoint: &Endpoint, now_ms: u64) -> Self {
        Self {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint
                .events
                .iter()
                .map(|event| event.as_str().to_owned())
                .collect(),
            description: endpoint.description.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.map(Into::into),
            created_at: rfc3339(endpoint.created_at),
            updated_at: rfc3339(endpoint.updated_at),
            previous_secret_expires_at: endpoint.previous_secret_expires_at(now_ms).map(rfc3339),
        }
    }
}

/// A webhook endpoint with its signing secret: only in the answer that created the secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// The signing secret (`whsec_` + base64), shown only in this answer: store it now. Verify
    /// each delivery's `webhook-signature` with it (Standard Webhooks).
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    pub secret: String,
}

/// Your webhook endpoints, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookEndpointList {
    /// The endpoints (without secrets).
    pub items: Vec<WebhookEndpoint>,
}

/// An endpoint to register.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookEndpoint {
    /// An `https://` URL whose host resolves only to public addresses; no user name or password;
    /// at most 2048 characters.
    pub url: String,
    /// The event types to send: one or more of `order.created`, `order.status_changed`.
    #[schema(min_items = 1)]
    pub events: Vec<String>,
    /// Your note, at most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointPatch {
    /// A new URL (checked as at registration).
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// A new description; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `false` disables the endpoint; `true` enables it again (and clears `disabled_reason`).
    pub enabled: Option<bool>,
}

/// A field that is present (perhaps `null`) is `Some`; an absent one stays `None` by `default`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Where a delivery is: `pending` (to be attempted at `next_attempt_at`), `delivered` (a `2xx`
/// answered) or `failed` (retries exhausted, `410 Gone`, or the endpoint disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDeliveryOutcome {
    /// To be attempted.
    Pending,
    /// Delivered.
    Delivered,
    /// Failed for good; can be redelivered.
    Failed,
}

impl From<DeliveryOutcome> for WebhookDeliveryOutcome {
    fn from(outcome: DeliveryOutcome) -> Self {
        match outcome {
            DeliveryOutcome::Pending => Self::Pending,
            DeliveryOutcome::Delivered => Self::Delivered,
            DeliveryOutcome::Failed => Self::Failed,
        }
    }
}

/// One event sent (or to be sent) to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// The delivery's id (`msg_…`): the `webhook-id` header of every attempt.
    pub id: String,
    /// The event's type: `order.created`, `order.status_changed` or `ping`.
    pub event_type: String,
    /// The order it is about (`null` for `ping`).
    pub order_id: Option<String>,
    /// The order's version in the payload.
    pub order_version: Option<u64>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (truncated).
    pub last_error: Option<String>,
    /// When the last attempt was made (RFC 3339).
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due (RFC 3339), while `pending`.
    pub next_attempt_at: Option<String>,
    /// Where it is.
    pub outcome: WebhookDeliveryOutcome,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<&Delivery> for WebhookDelivery {
    fn from(delivery: &Delivery) -> Self {
        Self {
            id: delivery.id.clone(),
            event_type: delivery.event_type.as_str().to_owned(),
            order_id: delivery.order_id.clone(),
            order_version: delivery.order_version,
            attempts: delivery.attempts,
            last_status: delivery.last_status,
            last_error: delivery.last_error.clone(),
            last_attempt_at: delivery.last_attempt_at.map(rfc3339),
            next_attempt_at: delivery.next_attempt_at.map(rfc3339),
            outcome: delivery.outcome.into(),
            created_at: rfc3339(delivery.created_at),
        }
    }
}

/// One delivery with the payload it sends.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookDeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: WebhookDelivery,
    /// The body sent (and signed) on every attempt: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// One page of an endpoint's deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookDeliveryPage {
    /// The deliveries of this page.
    pub items: Vec<WebhookDelivery>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of `GET /v2/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The largest page of deliveries.
const MAX_DELIVERY_PAGE: u32 = 100;
/// The page of deliveries without `limit`.
const DEFAULT_DELIVERY_PAGE: u32 = 20;

/// Unix ms as RFC 3339 (UTC).
fn rfc3339(unix_ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms).saturating_mul(1_000_000))
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Now, in Unix ms.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A duration in ms.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The store, or 501 when webhooks are off.
fn store(state: &AppState) -> Result<&WebhookStore, ApiError> {
    if state.config.webhooks.enabled && state.webhooks.is_enabled() {
        Ok(&state.webhooks)
    } else {
        Err(ApiError::WebhooksUnavailable)
    }
}

/// The API error of a store failure; `what` names what was not found.
fn failed<'s>(state: &'s AppState, what: &'static str) -> impl Fn(StoreError) -> ApiError + 's {
    move |error| match error {
        StoreError::Disabled => ApiError::WebhooksUnavailable,
        StoreError::NotFound => ApiError::NotFound(what),
        StoreError::TooManyEndpoints(max) => ApiError::TooManyWebhooks(max),
        StoreError::Unavailable(_) | StoreError::Conflict => ApiError::WebhookStoreUnavailable {
            retry_after: state.config.unavailable_retry_after,
            cause: error.to_string(),
        },
    }
}

/// `url` checked against the SSRF rule (resolving a domain), normalised; else a 422.
async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let settings = &state.config.webhooks;
    let allow = settings.allow_insecure_targets;
    let refused = |refusal: UrlRefusal| {
        let detail = match &refusal {
            // The addresses a name resolved to are our resolver's answer: not shown.
            UrlRefusal::Address { kind, .. } => format!(
                "the URL's host is or resolves to a {kind} address; only public addresses are \
                 accepted"
            ),
            other => other.to_string(),
        };
        ApiError::InvalidWebhook(detail)
    };
    let target = ssrf::check_url(url, allow).map_err(refused)?;
    ssrf::resolve_and_check_with(
        state.resolver.as_ref(),
        &target,
        allow,
        settings.resolve_timeout,
    )
    .await
    .map_err(refused)?;
    Ok(target.as_str().to_owned())
}

/// `names` as an event set; else a 422.
fn checked_events(names: &[String]) -> Result<EventSet, ApiError> {
    EventSet::parse(names).map_err(|error| ApiError::InvalidWebhook(error.to_string()))
}

/// `description` if short enough; else a 422.
fn checked_description(description: Option<String>) -> Result<Option<String>, ApiError> {
    match description {
        Some(text) if text.chars().count() > store::MAX_DESCRIPTION_CHARS => {
            Err(ApiError::InvalidWebhook(format!(
                "`description` has at most {} characters",
                store::MAX_DESCRIPTION_CHARS
            )))
        }
        other => Ok(other),
    }
}

/// A JSON answer with `status`.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A JSON answer with `status` and a `Location`.
fn located(status: StatusCode, location: &str, body: &impl Serialize) -> Response {
    let mut response = json(status, body);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Register a webhook endpoint.
///
/// The answer is the only one that shows the endpoint's signing `secret`. The URL must be
/// `https://` and its host must resolve only to public addresses (checked again before every
/// delivery). A partner has at most a configured number of endpoints (20 by default).
#[utoipa::path(
    post, path = "/v2/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body = NewWebhookEndpoint,
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 201, description = "Registered; `secret` is shown only here", body = WebhookEndpointWithSecret,
            headers(("Location" = String, description = "The endpoint's path"))),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 422, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn create_webhook(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Json(body): Json<NewWebhookEndpoint>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let events = checked_events(&body.events)?;
    let description = checked_description(body.description)?;
    let url = checked_url(&state, &body.url).await?;
    let now = now_ms();
    let new = NewEndpoint {
        url,
        events,
        description,
    };
    let (endpoint, secret) = store
        .create_endpoint(&auth.partner.id, new, now)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let body = WebhookEndpointWithSecret {
        endpoint: WebhookEndpoint::of(&endpoint, now),
        secret: secret.expose(),
    };
    Ok(located(
        StatusCode::CREATED,
        &format!("/v2/webhooks/{}", endpoint.id),
        &body,
    ))
}

/// List your webhook endpoints (without their secrets).
#[utoipa::path(
    get, path = "/v2/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "Your endpoints, oldest first", body = WebhookEndpointList),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn list_webhooks(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let now = now_ms();
    let endpoints = store
        .endpoints(&auth.partner.id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let items = endpoints
        .iter()
        .map(|endpoint| WebhookEndpoint::of(endpoint, now))
        .collect();
    Ok(json(StatusCode::OK, &WebhookEndpointList { items }))
}

/// Get one of your webhook endpoints (without its secret).
///
/// Another partner's endpoint is a 404, like one that does not exist.
#[utoipa::path(
    get, path = "/v2/webhooks/{webhook_id}", tag = "webhooks", operation_id = "getWebhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpoint),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn get_webhook(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let endpoint = store
        .endpoint(&auth.partner.id, &id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    Ok(json(
        StatusCode::OK,
        &WebhookEndpoint::of(&endpoint, now_ms()),
    ))
}

/// Change one of your webhook endpoints: its URL, events or description, or disable and
/// enable it.
///
/// Enabling an endpoint the gateway disabled (after `410 Gone` or a whole schedule of failures)
/// clears `disabled_reason`; deliveries that failed meanwhile can be redelivered.
#[utoipa::path(
    patch, path = "/v2/webhooks/{webhook_id}", tag = "webhooks", operation_id = "updateWebhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    request_body = WebhookEndpointPatch,
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "The endpoint as changed", body = WebhookEndpoint),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 422, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn update_webhook(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<WebhookEndpointPatch>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    // 404 before the URL is resolved: nothing is checked for an endpoint that is not yours.
    store
        .endpoint(&auth.partner.id, &id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let events = body.events.as_deref().map(checked_events).transpose()?;
    let description = match body.description {
        Some(description) => Some(checked_description(description)?),
        None => None,
    };
    let url = match &body.url {
        Some(url) => Some(checked_url(&state, url).await?),
        None => None,
    };
    let patch = EndpointPatch {
        url,
        events,
        description,
        enabled: body.enabled,
    };
    let now = now_ms();
    let endpoint = store
        .patch_endpoint(&auth.partner.id, &id, patch, now)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    Ok(json(StatusCode::OK, &WebhookEndpoint::of(&endpoint, now)))
}

/// Delete one of your webhook endpoints, with its delivery log; pending deliveries are dropped.
#[utoipa::path(
    delete, path = "/v2/webhooks/{webhook_id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn delete_webhook(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    store
        .delete_endpoint(&auth.partner.id, &id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Give one of your webhook endpoints a new signing secret.
///
/// The answer is the only one that shows the new `secret`. Deliveries are signed with both the
/// new and the previous secret until `previous_secret_expires_at` (24 hours by default), so you
/// can switch your verifier without missing a delivery.
#[utoipa::path(
    post, path = "/v2/webhooks/{webhook_id}/rotate-secret", tag = "webhooks", operation_id = "rotateWebhookSecret",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "The endpoint with its new secret, shown only here", body = WebhookEndpointWithSecret),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn rotate_webhook_secret(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let now = now_ms();
    let overlap = ms(state.config.webhooks.secret_overlap);
    let (endpoint, secret) = store
        .rotate_secret(&auth.partner.id, &id, overlap, now)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let body = WebhookEndpointWithSecret {
        endpoint: WebhookEndpoint::of(&endpoint, now),
        secret: secret.expose(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// List the deliveries of one of your webhook endpoints, newest first (the newest 1,000 are
/// kept).
#[utoipa::path(
    get, path = "/v2/webhooks/{webhook_id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("webhook_id" = String, Path, description = "The endpoint's id"), DeliveryListParams),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "One page of deliveries", body = WebhookDeliveryPage),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn list_webhook_deliveries(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<DeliveryListParams>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let limit = params.limit.unwrap_or(DEFAULT_DELIVERY_PAGE);
    if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "`limit` must be between 1 and {MAX_DELIVERY_PAGE}"
        )));
    }
    if let Some(cursor) = &params.cursor
        && !store::is_message_id(cursor)
    {
        return Err(ApiError::InvalidRequest(
            "`cursor` is not a cursor this API gave".to_owned(),
        ));
    }
    store
        .endpoint(&auth.partner.id, &id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let page = store
        .deliveries(
            &auth.partner.id,
            &id,
            params.cursor.as_deref(),
            usize::try_from(limit).unwrap_or(usize::MAX),
        )
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let body = WebhookDeliveryPage {
        items: page.items.iter().map(WebhookDelivery::from).collect(),
        next_cursor: page.next_cursor,
    };
    Ok(json(StatusCode::OK, &body))
}

/// Get one delivery of one of your webhook endpoints, with its payload.
#[utoipa::path(
    get, path = "/v2/webhooks/{webhook_id}/deliveries/{delivery_id}", tag = "webhooks", operation_id = "getWebhookDelivery",
    params(
        ("webhook_id" = String, Path, description = "The endpoint's id"),
        ("delivery_id" = String, Path, description = "The delivery's id (`msg_…`)"),
    ),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "The delivery", body = WebhookDeliveryDetail),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn get_webhook_delivery(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let delivery = store
        .delivery(&auth.partner.id, &id, &delivery_id)
        .await
        .map_err(failed(&state, "webhook delivery"))?;
    let body = WebhookDeliveryDetail {
        delivery: WebhookDelivery::from(&delivery),
        payload: serde_json::from_slice(&delivery.body).unwrap_or_default(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Deliver one delivery again, now.
///
/// A delivered or failed delivery becomes `pending` again with a fresh retry schedule; the
/// same `webhook-id` is sent, so a receiver that keeps ids sees a duplicate.
#[utoipa::path(
    post, path = "/v2/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", operation_id = "redeliverWebhookDelivery",
    params(
        ("webhook_id" = String, Path, description = "The endpoint's id"),
        ("delivery_id" = String, Path, description = "The delivery's id (`msg_…`)"),
    ),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 202, description = "Scheduled now; it is sent shortly", body = WebhookDelivery),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn redeliver_webhook_delivery(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let delivery = store
        .schedule_redelivery(&auth.partner.id, &id, &delivery_id, now_ms())
        .await
        .map_err(failed(&state, "webhook delivery"))?;
    Ok(json(
        StatusCode::ACCEPTED,
        &WebhookDelivery::from(&delivery),
    ))
}

/// Send a `ping` event to one of your webhook endpoints, to test it.
///
/// The `ping`'s `data` names the endpoint (`endpoint_id`, `url`). It is sent whatever the
/// endpoint subscribes to, and appears in its deliveries.
#[utoipa::path(
    post, path = "/v2/webhooks/{webhook_id}/test", tag = "webhooks", operation_id = "testWebhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = ["webhooks:manage"])),
    responses(
        (status = 202, description = "The `ping` delivery, sent shortly", body = WebhookDelivery,
            headers(("Location" = String, description = "The delivery's path"))),
        (status = 401, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 429, response = ProblemResponse),
        (status = 501, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub async fn test_webhook(
    auth: Authorized<WebhooksManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let endpoint = store
        .endpoint(&auth.partner.id, &id)
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    let delivery = store
        .create_ping(&auth.partner.id, &endpoint, now_ms())
        .await
        .map_err(failed(&state, "webhook endpoint"))?;
    Ok(located(
        StatusCode::ACCEPTED,
        &format!("/v2/webhooks/{id}/deliveries/{}", delivery.id),
        &WebhookDelivery::from(&delivery),
    ))
}

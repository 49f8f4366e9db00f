//! [`ApiError`]: every way a partner request can fail, and the documented problem types.
//!
//! Policy:
//! - Handlers, extractors and middleware return [`ApiError`]; none builds a response by hand.
//! - An `ApiError` becomes a response in two steps. Its `IntoResponse` only records it (status plus
//!   the error in the response's extensions); the version layer ([`render`]) then writes the
//!   `application/problem+json` body with the `type` URI of the version the request was for
//!   (`/v1/problems/…` or `/v2/problems/…`) and logs the error. So an error is logged exactly once,
//!   at the boundary, inside the request's span.
//! - A problem never carries internal error text: downstream failures are logged with their cause
//!   and answered with a generic `detail`.
//! - Every problem type is listed in [`PROBLEM_TYPES`]; the OpenAPI documents and the README are
//!   generated from, or tested against, that list.

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use server_kit::Problem;
use shared_clients::{ClientError, ErrorKind};

use crate::{config::Scope, rate_limit::ceil_secs, version::Version};

/// A documented problem type: its URI's last segment, status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    /// The last segment of the type URI, e.g. `rate-limited` in `/v2/problems/rate-limited`.
    pub name: &'static str,
    /// The HTTP status that always goes with it.
    pub status: u16,
    /// The problem's `title`, the same for every occurrence.
    pub title: &'static str,
    /// When it happens and what to do about it (the documentation).
    pub description: &'static str,
}

impl ProblemType {
    /// The type URI in `version`: `/v1/problems/<name>` (resolved against the API's base URL, and
    /// served there).
    pub fn uri(&self, version: Version) -> String {
        format!("/{}/problems/{}", version.as_str(), self.name)
    }
}

/// Defines the problem type constants and [`PROBLEM_TYPES`].
macro_rules! problem_types {
    ($($(#[$doc:meta])* $constant:ident = ($name:literal, $status:literal, $title:literal, $description:literal);)*) => {
        $(
            $(#[$doc])*
            pub const $constant: ProblemType = ProblemType {
                name: $name,
                status: $status,
                title: $title,
                description: $description,
            };
        )*
        /// Every problem type the API sends, in documentation order.
        pub const PROBLEM_TYPES: &[ProblemType] = &[$($constant),*];
    };
}

problem_types! {
    /// 400: a query parameter, path segment or header is malformed.
    INVALID_REQUEST = ("invalid-request", 400, "Invalid request",
        "A query parameter, path segment or header does not have the documented form (for example `limit=abc`, an unknown `status`, a malformed id or cursor). `detail` names it. Fix the request; do not retry it unchanged.");
    /// 400: the body is not JSON of the documented shape.
    INVALID_BODY = ("invalid-body", 400, "Invalid request body",
        "The body is not valid JSON, or a field is missing, unknown, of the wrong type or out of range, or a product is on two lines. `detail` says which. Fix the request; do not retry it unchanged.");
    /// 400: `POST /orders` without a usable `Idempotency-Key`.
    IDEMPOTENCY_KEY_REQUIRED = ("idempotency-key-required", 400, "Idempotency-Key required",
        "Order creation needs an `Idempotency-Key` header of 1 to 255 visible ASCII characters (a UUID is a good choice). Send the same key when retrying the same order.");
    /// 401: no key, or a key that is not known.
    UNAUTHORIZED = ("unauthorized", 401, "Missing or unknown API key",
        "Send `Authorization: Bearer <key>` with a key issued to you.");
    /// 403: the key lacks the scope.
    FORBIDDEN = ("forbidden", 403, "Scope required",
        "The key is valid but lacks the scope the operation needs (`catalog:read`, `orders:read`, `orders:write` or `webhooks:manage`); `detail` names it.");
    /// 404: no such resource (or route).
    NOT_FOUND = ("not-found", 404, "Not found",
        "There is no such resource, or it belongs to another partner, or the path does not exist in this version.");
    /// 405: the path exists, the method does not.
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405, "Method not allowed",
        "The path does not support this method; `Allow` lists the methods it does support.");
    /// 413: the body is larger than allowed.
    PAYLOAD_TOO_LARGE = ("payload-too-large", 413, "Request body too large",
        "The body is larger than the gateway accepts.");
    /// 415: a body that is not `application/json`.
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", 415, "Unsupported media type",
        "Request bodies must be sent with `Content-Type: application/json`.");
    /// 422: products that do not exist or are not in stock.
    UNORDERABLE_PRODUCTS = ("unorderable-products", 422, "Products cannot be ordered",
        "Some lines name products that do not exist or are not available in the quantity asked. `products` lists each such product id with a `reason` (`unknown`, `out_of_stock` or `insufficient_stock`) and, for products that exist, the units `available`.");
    /// 422: lines in more than one currency.
    MIXED_CURRENCY = ("mixed-currency", 422, "Products in more than one currency",
        "All lines of an order must be priced in one currency (see each product's price). Split the order.");
    /// 422: an idempotency key reused for a different order.
    IDEMPOTENCY_KEY_REUSED = ("idempotency-key-reused", 422, "Idempotency-Key reused",
        "The `Idempotency-Key` was already used for a different order (or the prices changed since). Use a new key for a new order.");
    /// 422: a webhook endpoint's URL, events or description refused.
    INVALID_WEBHOOK = ("invalid-webhook", 422, "Webhook endpoint refused",
        "The webhook endpoint cannot be registered as asked: its URL is not `https://`, carries credentials, or its host is (or resolves to) an address that is not public (loopback, private, link-local, …) or does not resolve; or an event type is unknown; or the description is too long. `detail` says which.");
    /// 422: too many webhook endpoints.
    TOO_MANY_WEBHOOKS = ("too-many-webhooks", 422, "Too many webhook endpoints",
        "You have as many webhook endpoints as allowed (`detail` says how many). Delete one, or subscribe an existing one to more events.");
    /// 429: over the quota.
    RATE_LIMITED = ("rate-limited", 429, "Too many requests",
        "The key's quota is used up (`RateLimit-Policy` and `RateLimit` describe it), or too many requests with an unknown key came from your address, so its requests are refused for a while, whatever their key. Wait the number of seconds in `Retry-After`.");
    /// 500: a bug on our side.
    INTERNAL_ERROR = ("internal-error", 500, "Internal error",
        "Something went wrong in the gateway. The error is logged with the request's `X-Request-Id`; quote it when reporting.");
    /// 502: a downstream answer the gateway could not use.
    BAD_GATEWAY = ("bad-gateway", 502, "Bad gateway",
        "A service behind the gateway answered something unusable. Retrying later may help.");
    /// 501: webhooks are not available in this deployment.
    WEBHOOKS_UNAVAILABLE = ("webhooks-unavailable", 501, "Webhooks not available",
        "This deployment of the gateway does not offer webhooks: they need a shared store (`shared.redis_url`) that is not configured. Poll the orders instead, or ask the operator.");
    /// 503: a downstream service is down or too slow.
    SERVICE_UNAVAILABLE = ("service-unavailable", 503, "Service unavailable",
        "A service behind the gateway is unavailable or did not answer in time, so no (complete) answer can be given. Retry after the number of seconds in `Retry-After`; order creation is safe to retry with the same `Idempotency-Key`.");
}

/// Why a product in an order cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unorderable {
    /// The product named by the line.
    pub product_id: String,
    /// `unknown`, `out_of_stock` or `insufficient_stock`.
    pub reason: &'static str,
    /// Units available, when the product exists, so the partner can order fewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
}

/// Every way a partner request can fail.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// No `Authorization: Bearer` key.
    MissingKey,
    /// A key that is not configured.
    UnknownKey,
    /// A known key without the scope the operation needs.
    MissingScope(Scope),
    /// No such resource visible to this partner (`what` names the kind: "product", "order").
    NotFound(&'static str),
    /// No such path in this version.
    RouteNotFound,
    /// The path exists but not with this method (the `Allow` header is kept from axum).
    MethodNotAllowed,
    /// A malformed query, path or header; the detail says which (and never echoes secrets).
    InvalidRequest(String),
    /// A body that is not JSON of the documented shape.
    InvalidBody(String),
    /// A body larger than the configured limit.
    PayloadTooLarge,
    /// A body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// `POST /orders` without a valid `Idempotency-Key`.
    IdempotencyKeyRequired(&'static str),
    /// Lines naming unknown or unavailable products.
    UnorderableProducts(Vec<Unorderable>),
    /// Lines in more than one currency.
    MixedCurrency,
    /// The idempotency key was used for a different order.
    IdempotencyKeyReused,
    /// Over the key's quota.
    RateLimited {
        /// How long until a request would be allowed.
        retry_after: Duration,
    },
    /// Too many unknown keys from the client's address: refused before the key is looked at
    /// ([`crate::auth_throttle`]).
    AuthThrottled {
        /// How long until a request would be looked at again.
        retry_after: Duration,
    },
    /// A downstream service is unavailable or timed out.
    Unavailable {
        /// The `Retry-After` to send.
        retry_after: Duration,
        /// The failure, for the log.
        cause: ClientError,
    },
    /// A downstream service answered something unusable.
    BadGateway(ClientError),
    /// A webhook endpoint's URL, events or description refused (the detail says why).
    InvalidWebhook(String),
    /// The partner has as many webhook endpoints as allowed.
    TooManyWebhooks(u32),
    /// Webhooks need Redis, which is not configured (or webhooks are off).
    WebhooksUnavailable,
    /// The webhook store (Redis) failed during the request.
    WebhookStoreUnavailable {
        /// The `Retry-After` to send.
        retry_after: Duration,
        /// The failure, for the log.
        cause: String,
    },
    /// A bug: something that should not happen did. The text is for the log only.
    Internal(String),
}

impl ApiError {
    /// Maps a downstream failure that is not specific to the operation: not found, outages,
    /// unusable answers. `retry_after` is used when the service did not say how long to wait.
    pub fn downstream(error: ClientError, what: &'static str, retry_after: Duration) -> Self {
        match error.kind() {
            ErrorKind::NotFound => Self::NotFound(what),
            ErrorKind::Timeout | ErrorKind::Unavailable => Self::Unavailable {
                retry_after: error.retry_after().unwrap_or(retry_after),
                cause: error,
            },
            ErrorKind::BadResponse => Self::BadGateway(error),
            ErrorKind::Forbidden
            | ErrorKind::Invalid
            | ErrorKind::Conflict
            | ErrorKind::PreconditionFailed => {
                Self::Internal(format!("unexpected downstream refusal: {error}"))
            }
        }
    }

    /// Maps a failed order creation: the order service refusing the order as invalid (400, 413,
    /// 422) is the partner's input at fault (`invalid-body`; a 422 for a well-formed,
    /// single-currency order means the `Idempotency-Key` was used with another body), not an
    /// internal error. Everything else as [`ApiError::downstream`].
    pub fn order_creation(error: ClientError, retry_after: Duration) -> Self {
        if error.service() != shared_clients::Service::Order || error.kind() != ErrorKind::Invalid {
            let what = match error.service() {
                shared_clients::Service::Product => "product",
                _ => "order",
            };
            return Self::downstream(error, what, retry_after);
        }
        tracing::debug!(error = %error, "order refused downstream as invalid");
        match error.status() {
            Some(422) => Self::IdempotencyKeyReused,
            _ => Self::InvalidBody(
                "the order was refused as invalid; check the lines and the shipping address"
                    .to_owned(),
            ),
        }
    }

    /// The documented type of this error.
    pub fn problem_type(&self) -> ProblemType {
        match self {
            Self::MissingKey | Self::UnknownKey => UNAUTHORIZED,
            Self::MissingScope(_) => FORBIDDEN,
            Self::NotFound(_) | Self::RouteNotFound => NOT_FOUND,
            Self::MethodNotAllowed => METHOD_NOT_ALLOWED,
            Self::InvalidRequest(_) => INVALID_REQUEST,
            Self::InvalidBody(_) => INVALID_BODY,
            Self::PayloadTooLarge => PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyKeyRequired(_) => IDEMPOTENCY_KEY_REQUIRED,
            Self::UnorderableProducts(_) => UNORDERABLE_PRODUCTS,
            Self::MixedCurrency => MIXED_CURRENCY,
            Self::IdempotencyKeyReused => IDEMPOTENCY_KEY_REUSED,
            Self::RateLimited { .. } | Self::AuthThrottled { .. } => RATE_LIMITED,
            Self::InvalidWebhook(_) => INVALID_WEBHOOK,
            Self::TooManyWebhooks(_) => TOO_MANY_WEBHOOKS,
            Self::WebhooksUnavailable => WEBHOOKS_UNAVAILABLE,
            Self::Unavailable { .. } | Self::WebhookStoreUnavailable { .. } => SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => BAD_GATEWAY,
            Self::Internal(_) => INTERNAL_ERROR,
        }
    }

    /// The problem document in `version`, safe to show.
    fn problem(&self, version: Version) -> Problem {
        let kind = self.problem_type();
        let status = StatusCode::from_u16(kind.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let problem = Problem::new(status, kind.uri(version), kind.title);
        match self {
            Self::MissingKey => {
                problem.with_detail("send the API key as `Authorization: Bearer <key>`")
            }
            Self::UnknownKey => problem.with_detail("the API key is not valid"),
            Self::MissingScope(scope) => problem
                .with_detail(format!(
                    "this operation needs the `{}` scope",
                    scope.as_str()
                ))
                .with_extension("required_scope", scope.as_str().into()),
            Self::NotFound(what) => problem.with_detail(format!("no such {what}")),
            Self::RouteNotFound => problem.with_detail("no such path in this version of the API"),
            Self::MethodNotAllowed => problem.with_detail("see the Allow header"),
            Self::InvalidRequest(detail)
            | Self::InvalidBody(detail)
            | Self::InvalidWebhook(detail) => problem.with_detail(detail.clone()),
            Self::IdempotencyKeyRequired(detail) => problem.with_detail(*detail),
            Self::UnorderableProducts(products) => problem
                .with_detail(format!("{} product(s) cannot be ordered", products.len()))
                .with_extension(
                    "products",
                    serde_json::to_value(products).unwrap_or_default(),
                ),
            Self::TooManyWebhooks(max) => {
                problem.with_detail(format!("at most {max} webhook endpoints per partner"))
            }
            Self::WebhooksUnavailable => {
                problem.with_detail("webhooks need shared.redis_url, which is not configured")
            }
            Self::WebhookStoreUnavailable { .. } => problem
                .with_detail("the webhook store is unavailable; retry later")
                .with_extension("service", "webhooks".into()),
            Self::MixedCurrency => {
                problem.with_detail("all lines of an order must share one currency")
            }
            Self::AuthThrottled { .. } => problem.with_detail(
                "too many requests with an unknown API key came from your address; \
                 wait before trying again",
            ),
            Self::Unavailable { cause, .. } => problem
                .with_detail("a service behind the gateway is unavailable; retry later")
                .with_extension("service", cause.service().as_str().into()),
            Self::PayloadTooLarge
            | Self::UnsupportedMediaType
            | Self::IdempotencyKeyReused
            | Self::RateLimited { .. }
            | Self::BadGateway(_)
            | Self::Internal(_) => problem,
        }
    }

    /// Logs the error once, at a level fitting who is at fault.
    fn log(&self) {
        match self {
            Self::Unavailable { cause, .. } => {
                tracing::warn!(error = %cause, kind = %cause.kind(), "downstream unavailable");
            }
            Self::BadGateway(cause) => {
                tracing::error!(error = %cause, kind = %cause.kind(), "unusable downstream answer");
            }
            Self::WebhookStoreUnavailable { cause, .. } => {
                tracing::warn!(error = %cause, "webhook store unavailable");
            }
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            other => tracing::debug!(problem = other.problem_type().name, "request refused"),
        }
    }
}

/// An [`ApiError`] waiting in a response's extensions to be rendered by [`render`].
#[derive(Debug, Clone)]
pub struct PendingProblem(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.problem_type();
        let status = StatusCode::from_u16(kind.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = status.into_response();
        response
            .extensions_mut()
            .insert(PendingProblem(Arc::new(self)));
        response
    }
}

/// Renders a response holding a [`PendingProblem`] (or axum's bare 404/405) as the problem of
/// `version`, and logs it. Every other response passes unchanged. The problem keeps the
/// response's `Allow` (on a 405), `Cache-Control` and quota headers.
pub fn render(version: Version, response: Response) -> Response {
    let pending = response.extensions().get::<PendingProblem>().cloned();
    let error = match pending {
        Some(PendingProblem(error)) => error,
        // axum's own answer when a path matches but the method does not: empty, with `Allow`.
        None if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
            Arc::new(ApiError::MethodNotAllowed)
        }
        None => return response,
    };
    error.log();
    let (parts, _) = response.into_parts();
    let mut rendered = error.problem(version).into_response();
    // `Allow` only belongs on a 405 (axum also sets it when the authentication in front of the
    // method check refused the request). `Cache-Control` is the route's (`private, no-store` on
    // the order routes): an error of a private route is as private as its success.
    let allow = matches!(*error, ApiError::MethodNotAllowed).then_some(header::ALLOW);
    let kept = allow
        .into_iter()
        .chain([header::CACHE_CONTROL])
        .chain(crate::rate_limit::header_names());
    for name in kept {
        for value in parts.headers.get_all(&name) {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    let headers = rendered.headers_mut();
    match &*error {
        ApiError::MissingKey | ApiError::UnknownKey => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"partner-api\""),
            );
        }
        ApiError::RateLimited { retry_after }
        | ApiError::AuthThrottled { retry_after }
        | ApiError::Unavailable { retry_after, .. }
        | ApiError::WebhookStoreUnavailable { retry_after, .. } => {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(*retry_after).max(1)),
            );
        }
        _ => {}
    }
    rendered
}

//! [`ApiError`]: the one error type of the mobile endpoints, and the one place errors become
//! responses.
//!
//! Policy:
//! - Every error is `application/problem+json` (RFC 9457) with a stable `type`
//!   (`urn:bff-mobile:problem:<code>`) and the same `<code>` as a `code` member, so apps branch
//!   on `code` and never parse `title` or `detail`.
//! - Client mistakes (bad query values, bad JSON, bad ids, limits) are 4xx with a `detail` that
//!   names the parameter or field; downstream trouble is 502/503/504 with a generic `detail`.
//!   Internal error text (a [`ClientError`]'s message, a status a service answered) is never
//!   shown to the client.
//! - An error is logged once, here, when it is turned into a response, inside the request's span:
//!   5xx at `warn` with the internal detail, 4xx at `debug`.
//!
//! | `code`                  | status | when |
//! |-------------------------|--------|------|
//! | `invalid_query`         | 400 | a query parameter has a bad value (`limit`, `w`, `cursor`, `q`, …) |
//! | `invalid_json`          | 400 | a body is not JSON, or not the expected shape |
//! | `unsupported_media_type`| 415 | a body without `Content-Type: application/json` |
//! | `body_too_large`        | 413 | a body above `gateway.max_body_bytes` |
//! | `invalid_id`            | 400 | a path id that is not `^[A-Za-z0-9_-]{1,64}$` |
//! | `invalid_quantity`      | 400 | a quantity outside 1–99 (0–99 when setting a line) |
//! | `missing_idempotency_key` / `invalid_idempotency_key` | 400 | checkout without a usable `Idempotency-Key` |
//! | `missing_token`, `token_expired`, `invalid_token`, `keys_unavailable` | 401 | see `server_kit::auth` |
//! | `route_not_found`       | 404 | no such endpoint under `/m/v1` |
//! | `method_not_allowed`    | 405 | an endpoint called with a method it does not have (see `Allow`) |
//! | `product_not_found` / `order_not_found` / `cart_line_not_found` | 404 | the resource does not exist (or is not yours) |
//! | `quantity_limit`        | 409 | a cart line would exceed 99 |
//! | `cart_changed`          | 409 | the cart changed concurrently |
//! | `cart_empty`            | 409 | checkout of an empty cart |
//! | `items_unavailable`     | 409 | checkout with products out of stock or gone (listed in `items`) |
//! | `mixed_currencies`      | 409 | checkout of products priced in more than one currency |
//! | `idempotency_key_reused`| 422 | checkout with an `Idempotency-Key` already used for a different checkout |
//! | `downstream_timeout`    | 504 | the request's deadline passed waiting for a service |
//! | `downstream_unavailable`| 503 | a service needed for the screen is down (with `Retry-After`) |
//! | `downstream_error`      | 502 | a service answered something unusable |
//! | `internal`              | 500 | a bug |

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use server_kit::{Problem, auth::AuthError};
use shared_clients::{ClientError, ErrorKind, PlaceOrderError, UnavailableProduct};

/// Prefix of every problem `type` this gateway defines.
pub const TYPE_PREFIX: &str = "urn:bff-mobile:problem:";

/// One `code` a mobile endpoint answers with: the table above as data, which
/// `/m/v1/openapi.json` lists (in its description and in each error response's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemCode {
    /// The `code` member (and, except for the live streams' shared refusal, the last part of
    /// the `type`).
    pub code: &'static str,
    /// The HTTP status it comes with.
    pub status: u16,
    /// When it is answered.
    pub when: &'static str,
}

/// Every `code` of the mobile endpoints (a test checks each [`ApiError`] is here).
pub const PROBLEM_CODES: &[ProblemCode] = &[
    ProblemCode {
        code: "invalid_query",
        status: 400,
        when: "a query parameter has a bad value (`limit`, `w`, `cursor`, `q`, …); `detail` names it",
    },
    ProblemCode {
        code: "invalid_json",
        status: 400,
        when: "a body is not JSON, or not the expected shape; `detail` names the field",
    },
    ProblemCode {
        code: "invalid_id",
        status: 400,
        when: "a path id that is not `^[A-Za-z0-9_-]{1,64}$`",
    },
    ProblemCode {
        code: "invalid_quantity",
        status: 400,
        when: "a quantity outside 1–99 (0–99 when setting a line)",
    },
    ProblemCode {
        code: "missing_idempotency_key",
        status: 400,
        when: "checkout without an `Idempotency-Key`",
    },
    ProblemCode {
        code: "invalid_idempotency_key",
        status: 400,
        when: "checkout with an `Idempotency-Key` that is not 1 to 255 visible ASCII characters",
    },
    ProblemCode {
        code: "missing_token",
        status: 401,
        when: "no `Authorization: Bearer` token on a signed-in endpoint",
    },
    ProblemCode {
        code: "invalid_token",
        status: 401,
        when: "a token that is malformed, badly signed, not yet valid or not for this API",
    },
    ProblemCode {
        code: "token_expired",
        status: 401,
        when: "an expired token: get a fresh one",
    },
    ProblemCode {
        code: "keys_unavailable",
        status: 401,
        when: "the token cannot be verified right now (the signing keys cannot be fetched); retry shortly",
    },
    ProblemCode {
        code: "route_not_found",
        status: 404,
        when: "no such endpoint under `/m/v1`",
    },
    ProblemCode {
        code: "product_not_found",
        status: 404,
        when: "the product does not exist",
    },
    ProblemCode {
        code: "order_not_found",
        status: 404,
        when: "the order does not exist or is not yours",
    },
    ProblemCode {
        code: "cart_line_not_found",
        status: 404,
        when: "the product is not in the cart",
    },
    ProblemCode {
        code: "method_not_allowed",
        status: 405,
        when: "an endpoint called with a method it does not have (see `Allow`)",
    },
    ProblemCode {
        code: "quantity_limit",
        status: 409,
        when: "a cart line would exceed 99",
    },
    ProblemCode {
        code: "cart_changed",
        status: 409,
        when: "the cart changed concurrently; reload it and retry",
    },
    ProblemCode {
        code: "cart_empty",
        status: 409,
        when: "checkout of an empty cart",
    },
    ProblemCode {
        code: "items_unavailable",
        status: 409,
        when: "checkout with products out of stock or gone, listed in `items`",
    },
    ProblemCode {
        code: "mixed_currencies",
        status: 409,
        when: "checkout of products priced in more than one currency",
    },
    ProblemCode {
        code: "body_too_large",
        status: 413,
        when: "a body above `gateway.max_body_bytes`",
    },
    ProblemCode {
        code: "unsupported_media_type",
        status: 415,
        when: "a body without `Content-Type: application/json`",
    },
    ProblemCode {
        code: "idempotency_key_reused",
        status: 422,
        when: "checkout with an `Idempotency-Key` already used for a different checkout",
    },
    ProblemCode {
        code: "TOO_MANY_SUBSCRIPTIONS",
        status: 429,
        when: "a live stream over a limit of `gateway.subscriptions`; `limit` names it, `Retry-After` says when to retry (the refusal every live transport shares)",
    },
    ProblemCode {
        code: "internal",
        status: 500,
        when: "a bug",
    },
    ProblemCode {
        code: "downstream_error",
        status: 502,
        when: "a service answered something unusable",
    },
    ProblemCode {
        code: "downstream_unavailable",
        status: 503,
        when: "a service the screen needs is down; `Retry-After` says when to retry",
    },
    ProblemCode {
        code: "downstream_timeout",
        status: 504,
        when: "the request's deadline passed waiting for a service",
    },
];

/// `Retry-After` sent with 503s, in seconds, when the service did not say.
const DEFAULT_RETRY_AFTER_SECS: u64 = 5;

/// What a resource lookup did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A product id.
    Product,
    /// An order id (or an order of someone else: the same answer, so ids cannot be probed).
    Order,
    /// A cart line (the product is not in the cart).
    CartLine,
}

/// Why a mobile request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter has a bad value; the detail names it.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A body is not JSON or not the expected shape; the detail names the field.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// A body was sent without `Content-Type: application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A body above the configured limit.
    #[error("body too large")]
    BodyTooLarge,
    /// A path id with characters or a length ids never have.
    #[error("invalid id in path")]
    InvalidId,
    /// A quantity outside the allowed range.
    #[error("quantity must be between {min} and {max}")]
    InvalidQuantity {
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// Checkout without an `Idempotency-Key`.
    #[error("missing Idempotency-Key")]
    MissingIdempotencyKey,
    /// An `Idempotency-Key` that is not 1 to 255 visible ASCII characters.
    #[error("invalid Idempotency-Key")]
    InvalidIdempotencyKey,
    /// A missing or refused bearer token.
    #[error("unauthenticated: {}", .0.code())]
    Unauthenticated(#[from] AuthError),
    /// No endpoint at this path.
    #[error("no such route")]
    RouteNotFound,
    /// The endpoint exists, but not for this method (the `Allow` header lists those it has).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The resource does not exist (or is not the user's).
    #[error("{0:?} not found")]
    NotFound(Missing),
    /// A cart line would go above 99.
    #[error("cart line quantity limit")]
    QuantityLimit,
    /// The cart changed concurrently.
    #[error("cart changed concurrently")]
    CartChanged,
    /// Checkout of an empty cart.
    #[error("cart is empty")]
    CartEmpty,
    /// Checkout of products that cannot be ordered.
    #[error("{} item(s) unavailable", .0.len())]
    ItemsUnavailable(Vec<UnavailableProduct>),
    /// Checkout of products priced in more than one currency.
    #[error("mixed currencies")]
    MixedCurrencies,
    /// Checkout with an `Idempotency-Key` already used for a different checkout.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// A downstream failure the screen cannot do without.
    #[error(transparent)]
    Downstream(ClientError),
    /// A bug (e.g. a payload that cannot be serialized).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable machine-readable code (also the last part of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidJson(_) => "invalid_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge => "body_too_large",
            Self::InvalidId => "invalid_id",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::MissingIdempotencyKey => "missing_idempotency_key",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::Unauthenticated(error) => error.public_code(),
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound(Missing::Product) => "product_not_found",
            Self::NotFound(Missing::Order) => "order_not_found",
            Self::NotFound(Missing::CartLine) => "cart_line_not_found",
            Self::QuantityLimit => "quantity_limit",
            Self::CartChanged => "cart_changed",
            Self::CartEmpty => "cart_empty",
            Self::ItemsUnavailable(_) => "items_unavailable",
            Self::MixedCurrencies => "mixed_currencies",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Downstream(error) => match error.kind() {
                ErrorKind::Timeout => "downstream_timeout",
                ErrorKind::Unavailable => "downstream_unavailable",
                _ => "downstream_error",
            },
            Self::Internal(_) => "internal",
        }
    }

    /// A downstream failure of a read, where "not found" means `missing`.
    pub fn from_read(error: ClientError, missing: Missing) -> Self {
        match error.kind() {
            ErrorKind::NotFound => Self::NotFound(missing),
            _ => Self::Downstream(error),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidQuery(_)
            | Self::InvalidJson(_)
            | Self::InvalidId
            | Self::InvalidQuantity { .. }
            | Self::MissingIdempotencyKey
            | Self::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::RouteNotFound | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::QuantityLimit
            | Self::CartChanged
            | Self::CartEmpty
            | Self::ItemsUnavailable(_)
            | Self::MixedCurrencies => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Downstream(error) => match error.kind() {
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidQuery(_) => "Invalid query parameter",
            Self::InvalidJson(_) => "Invalid JSON body",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::BodyTooLarge => "Body too large",
            Self::InvalidId => "Invalid id",
            Self::InvalidQuantity { .. } => "Invalid quantity",
            Self::MissingIdempotencyKey => "Idempotency-Key required",
            Self::InvalidIdempotencyKey => "Invalid Idempotency-Key",
            Self::Unauthenticated(_) => "Unauthenticated",
            Self::RouteNotFound => "No such endpoint",
            Self::MethodNotAllowed => "Method not allowed",
            Self::NotFound(Missing::Product) => "Product not found",
            Self::NotFound(Missing::Order) => "Order not found",
            Self::NotFound(Missing::CartLine) => "Product not in cart",
            Self::QuantityLimit => "Quantity limit reached",
            Self::CartChanged => "Cart changed",
            Self::CartEmpty => "Cart is empty",
            Self::ItemsUnavailable(_) => "Items unavailable",
            Self::MixedCurrencies => "Mixed currencies",
            Self::IdempotencyKeyReused => "Idempotency-Key reused",
            Self::Downstream(error) => match error.kind() {
                ErrorKind::Timeout => "Service too slow",
                ErrorKind::Unavailable => "Service unavailable",
                _ => "Service error",
            },
            Self::Internal(_) => "Internal error",
        }
    }

    /// What the client may be told about this occurrence.
    fn detail(&self) -> Option<String> {
        Some(match self {
            Self::InvalidQuery(detail) | Self::InvalidJson(detail) => detail.clone(),
            Self::UnsupportedMediaType => "Send the body as application/json.".to_owned(),
            Self::InvalidId => {
                "Ids are 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'.".to_owned()
            }
            Self::InvalidQuantity { min, max } => {
                format!("quantity must be an integer from {min} to {max}")
            }
            Self::MissingIdempotencyKey => {
                "Send an Idempotency-Key header (e.g. a UUID) and reuse it when retrying."
                    .to_owned()
            }
            Self::InvalidIdempotencyKey => {
                "The Idempotency-Key must be 1 to 255 visible ASCII characters.".to_owned()
            }
            Self::QuantityLimit => "A cart line holds at most 99 of a product.".to_owned(),
            Self::IdempotencyKeyReused => "This Idempotency-Key was already used for a different \
                 checkout (another address); use a new key for a new checkout."
                .to_owned(),
            Self::Downstream(error) => format!(
                "The {} service could not be used; try again shortly.",
                error.service().as_str()
            ),
            _ => return None,
        })
    }

    /// Logs the error once, with what the client is not told.
    fn log(&self, status: StatusCode) {
        let code = self.code();
        if status.is_server_error() {
            match self {
                Self::Downstream(error) => tracing::warn!(
                    code,
                    service = error.service().as_str(),
                    kind = error.kind().code(),
                    %error,
                    "request failed downstream"
                ),
                other => tracing::error!(code, error = %other, "request failed"),
            }
        } else {
            tracing::debug!(code, error = %self, "request refused");
        }
    }
}

impl From<PlaceOrderError> for ApiError {
    fn from(error: PlaceOrderError) -> Self {
        match error {
            PlaceOrderError::Empty => Self::CartEmpty,
            // The cart service enforces 1..=99 and one line per product, so this is a bug here
            // or there; the client cannot fix it.
            PlaceOrderError::InvalidLines(why) => Self::Internal(why.to_owned()),
            PlaceOrderError::Unavailable(items) => Self::ItemsUnavailable(items),
            PlaceOrderError::MixedCurrencies => Self::MixedCurrencies,
            PlaceOrderError::InvalidAddress(why) => Self::InvalidJson(format!("address: {why}")),
            PlaceOrderError::KeyReused => Self::IdempotencyKeyReused,
            PlaceOrderError::Downstream(error) => Self::Downstream(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(status);
        let code = self.code();
        let mut problem = match &self {
            // Keep the shared auth wording (deliberately vague), under our own type.
            Self::Unauthenticated(error) => Problem::from(*error),
            _ => Problem::new(status, "", self.title()),
        };
        problem.type_uri = format!("{TYPE_PREFIX}{code}");
        problem.title = self.title().to_owned();
        if let Some(detail) = self.detail() {
            problem = problem.with_detail(detail);
        }
        problem = problem.with_extension("code", code.into());
        if let Self::ItemsUnavailable(items) = &self {
            let items = serde_json::to_value(items).unwrap_or_default();
            problem = problem.with_extension("items", items);
        }
        let mut response = problem.into_response();
        match &self {
            Self::Unauthenticated(error) => {
                let challenge = error.into_response();
                if let Some(value) = challenge.headers().get(header::WWW_AUTHENTICATE) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value.clone());
                }
            }
            Self::Downstream(error) if status == StatusCode::SERVICE_UNAVAILABLE => {
                let secs = error
                    .retry_after()
                    .map_or(DEFAULT_RETRY_AFTER_SECS, |after| after.as_secs().max(1));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_with_its_status() {
        let samples = [
            ApiError::InvalidQuery(String::new()),
            ApiError::InvalidJson(String::new()),
            ApiError::UnsupportedMediaType,
            ApiError::BodyTooLarge,
            ApiError::InvalidId,
            ApiError::InvalidQuantity { min: 1, max: 99 },
            ApiError::MissingIdempotencyKey,
            ApiError::InvalidIdempotencyKey,
            ApiError::Unauthenticated(AuthError::Missing),
            ApiError::Unauthenticated(AuthError::Expired),
            ApiError::Unauthenticated(AuthError::BadSignature),
            ApiError::Unauthenticated(AuthError::KeysUnavailable),
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::NotFound(Missing::Product),
            ApiError::NotFound(Missing::Order),
            ApiError::NotFound(Missing::CartLine),
            ApiError::QuantityLimit,
            ApiError::CartChanged,
            ApiError::CartEmpty,
            ApiError::ItemsUnavailable(Vec::new()),
            ApiError::MixedCurrencies,
            ApiError::IdempotencyKeyReused,
            ApiError::Internal(String::new()),
        ];
        let mut answered: Vec<&str> = Vec::new();
        for error in samples {
            let listed = PROBLEM_CODES
                .iter()
                .find(|listed| listed.code == error.code())
                .unwrap_or_else(|| panic!("{} is not in PROBLEM_CODES", error.code()));
            assert_eq!(listed.status, error.status().as_u16(), "{}", error.code());
            answered.push(error.code());
        }
        let refusal = server_kit::live::Refusal::Streams;
        answered.extend([
            refusal.code(),
            "downstream_error",
            "downstream_unavailable",
            "downstream_timeout",
        ]);
        for listed in PROBLEM_CODES {
            assert!(
                answered.contains(&listed.code),
                "{} is never answered",
                listed.code
            );
        }
    }

    #[test]
    fn every_problem_has_a_stable_type_and_code() {
        let response = ApiError::InvalidQuery("limit: must be 1 to 50".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            server_kit::problem::PROBLEM_JSON
        );
        let missing = ApiError::Unauthenticated(AuthError::Missing).into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(ApiError::NotFound(Missing::Order).code(), "order_not_found");
    }
}

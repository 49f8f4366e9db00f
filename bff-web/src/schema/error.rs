//! The error codes of the GraphQL API and the one place downstream failures become GraphQL errors.
//!
//! Policy:
//! - Every error a client sees has `extensions.code`, one of [`Code`]. Errors from downstream
//!   calls also name the failing `service` (`product`, `cart`, `order`).
//! - Messages are short sentences written here; a downstream problem's text, URLs, headers and
//!   bodies never reach the client. The failure is logged once, here, at `warn` (service trouble)
//!   or `debug` (the caller's own mistake), with the request's span around it.
//! - A field that fails resolves to `null` (optional parts of the schema are nullable), so the
//!   rest of the response still arrives, with one error per failed path.

use async_graphql::{Error, ErrorExtensions};
use server_kit::auth::AuthError;
use shared_clients::{ClientError, ErrorKind, InvalidId, PlaceOrderError};

/// The machine-readable codes in `errors[].extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The field needs a signed-in user and the request had no valid bearer token.
    Unauthenticated,
    /// The thing asked for does not exist (or is not the viewer's).
    NotFound,
    /// An argument is out of range or malformed (an id, a page size, a quantity).
    BadUserInput,
    /// The viewer may not do this.
    Forbidden,
    /// The change conflicts with the current state (e.g. a cart line beyond 99 units).
    Conflict,
    /// Checkout refused: a product is unknown, out of stock or has too few units.
    OutOfStock,
    /// Checkout refused: the cart is empty.
    EmptyCart,
    /// Checkout refused: the cart's products are priced in more than one currency.
    MixedCurrencies,
    /// Checkout refused: the idempotency key was already used for a different checkout.
    IdempotencyKeyReused,
    /// A downstream service is down, failing or shedding load; trying later may help.
    DownstreamUnavailable,
    /// A downstream service did not answer within the request's time budget.
    DownstreamTimeout,
    /// A downstream service answered something it should not have.
    DownstreamBadResponse,
    /// Something went wrong inside the gateway.
    InternalServerError,
}

impl Code {
    /// The code as it appears in `extensions.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Forbidden => "FORBIDDEN",
            Self::Conflict => "CONFLICT",
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::EmptyCart => "EMPTY_CART",
            Self::MixedCurrencies => "MIXED_CURRENCIES",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::DownstreamUnavailable => "DOWNSTREAM_UNAVAILABLE",
            Self::DownstreamTimeout => "DOWNSTREAM_TIMEOUT",
            Self::DownstreamBadResponse => "DOWNSTREAM_BAD_RESPONSE",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// A GraphQL error with `message` and `extensions.code`.
pub fn coded(code: Code, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, ext| ext.set("code", code.as_str()))
}

/// `BAD_USER_INPUT` naming the argument at fault.
pub fn bad_input(argument: &str, message: &str) -> Error {
    coded(Code::BadUserInput, message).extend_with(|_, ext| ext.set("argument", argument))
}

/// `BAD_USER_INPUT` for an argument that is not a valid id.
pub fn invalid_id(argument: &str, error: &InvalidId) -> Error {
    bad_input(argument, &error.to_string())
}

/// `UNAUTHENTICATED`, with a `reason` the client can act on (`missing_token`, `token_expired`,
/// `keys_unavailable`, `invalid_token`; never which check failed).
pub fn unauthenticated(error: AuthError) -> Error {
    let message = match error {
        AuthError::Missing => "Sign in to see this: send `Authorization: Bearer <token>`.",
        AuthError::Expired => "The bearer token has expired.",
        AuthError::KeysUnavailable => "The bearer token cannot be verified right now.",
        _ => "The bearer token is not valid.",
    };
    coded(Code::Unauthenticated, message)
        .extend_with(|_, ext| ext.set("reason", error.public_code()))
}

/// A failed downstream call as a GraphQL error naming the service.
pub fn downstream(error: &ClientError) -> Error {
    let service = error.service().as_str();
    let (code, message) = match error.kind() {
        ErrorKind::NotFound => (
            Code::NotFound,
            format!("Not found at the {service} service."),
        ),
        ErrorKind::Forbidden => (Code::Forbidden, "This is not yours.".to_owned()),
        ErrorKind::Invalid => (
            Code::BadUserInput,
            format!("The {service} service refused the request as invalid."),
        ),
        ErrorKind::Conflict | ErrorKind::PreconditionFailed => (
            Code::Conflict,
            format!("The change conflicts with the current state at the {service} service."),
        ),
        ErrorKind::Timeout => (
            Code::DownstreamTimeout,
            format!("The {service} service did not answer in time."),
        ),
        ErrorKind::Unavailable => (
            Code::DownstreamUnavailable,
            format!("The {service} service is unavailable."),
        ),
        ErrorKind::BadResponse => (
            Code::DownstreamBadResponse,
            format!("The {service} service answered unexpectedly."),
        ),
    };
    match code {
        Code::NotFound | Code::BadUserInput | Code::Conflict | Code::Forbidden => {
            tracing::debug!(
                service,
                kind = error.kind().code(),
                "downstream refused the request"
            );
        }
        _ => tracing::warn!(service, kind = error.kind().code(), %error, "downstream call failed"),
    }
    coded(code, message).extend_with(|_, ext| ext.set("service", service))
}

/// A refused checkout as a GraphQL error.
pub fn checkout(error: &PlaceOrderError) -> Error {
    match error {
        PlaceOrderError::Empty => coded(Code::EmptyCart, "The cart is empty."),
        PlaceOrderError::InvalidLines(why) => coded(Code::BadUserInput, *why),
        PlaceOrderError::MixedCurrencies => coded(
            Code::MixedCurrencies,
            "The cart's products are priced in more than one currency.",
        ),
        PlaceOrderError::Unavailable(products) => {
            let detail: Vec<async_graphql::Value> = products
                .iter()
                .map(|p| {
                    let mut fields = async_graphql::indexmap::IndexMap::new();
                    fields.insert(
                        async_graphql::Name::new("productId"),
                        async_graphql::Value::from(p.product_id.as_str()),
                    );
                    let reason = match p.reason {
                        shared_clients::UnavailableReason::NotFound => "NOT_FOUND",
                        shared_clients::UnavailableReason::OutOfStock => "OUT_OF_STOCK",
                        shared_clients::UnavailableReason::InsufficientStock => {
                            "INSUFFICIENT_STOCK"
                        }
                    };
                    fields.insert(
                        async_graphql::Name::new("reason"),
                        async_graphql::Value::from(reason),
                    );
                    if let Some(available) = p.available {
                        fields.insert(
                            async_graphql::Name::new("available"),
                            async_graphql::Value::from(available),
                        );
                    }
                    async_graphql::Value::Object(fields)
                })
                .collect();
            coded(
                Code::OutOfStock,
                format!(
                    "{} product(s) in the cart cannot be ordered.",
                    products.len()
                ),
            )
            .extend_with(|_, ext| ext.set("unavailable", async_graphql::Value::List(detail)))
        }
        PlaceOrderError::InvalidAddress(why) => bad_input("shippingAddress", why),
        PlaceOrderError::KeyReused => coded(
            Code::IdempotencyKeyReused,
            "This idempotencyKey was already used for a different checkout; use a new key.",
        ),
        PlaceOrderError::Downstream(error) => downstream(error),
    }
}

/// Resolves a nullable field: an error becomes `null` at this field plus one entry in `errors`
/// (with this field's path), instead of nulling the parent object. async-graphql propagates a
/// resolver's own error to the parent even when the field is nullable; every nullable field that
/// can fail goes through here so that one failing part never takes its siblings with it.
pub fn or_null<T>(
    ctx: &async_graphql::Context<'_>,
    result: async_graphql::Result<Option<T>>,
) -> async_graphql::Result<Option<T>> {
    match result {
        Ok(value) => Ok(value),
        Err(error) => {
            ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
            Ok(None)
        }
    }
}

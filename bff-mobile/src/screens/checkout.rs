//! `POST /m/v1/checkout`: orders the signed-in user's cart and answers the confirmation screen.
//!
//! `Idempotency-Key` is required: the same key again returns the same order (200 instead of
//! 201), never a second one, even when the first attempt's answer was lost on a flaky network.
//! Prices and stock are checked at the moment of ordering (see `shared_clients::OrderPlacement`);
//! unavailable products are refused with `items_unavailable`, listing them.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use shared_clients::{Address, Channel, ProductId};
use utoipa::ToSchema;

use super::{
    card::products_by_id,
    is_true,
    order::{OrderDetail, shape},
};
use crate::{
    Screen,
    error::ApiError,
    extract::{CheckoutKey, Ctx, ImageHint, OptionalBody, User},
    openapi::{AddressDoc, ProblemResponse},
    state::AppState,
};

/// Longest text of one address field.
const MAX_ADDRESS_FIELD_CHARS: usize = 200;

/// The optional body of a checkout.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckoutBody {
    /// Where to ship.
    #[schema(value_type = Option<AddressDoc>)]
    address: Option<Address>,
}

/// The confirmation screen: the order as the detail screen shows it, and whether the cart was
/// emptied.
#[derive(Debug, Serialize, ToSchema)]
pub struct Confirmation {
    /// The order placed.
    #[serde(flatten)]
    order: OrderDetail,
    /// `false` when the order was placed but the cart could not be emptied (the app should
    /// refresh the cart); absent when it was.
    #[serde(skip_serializing_if = "is_true")]
    cart_cleared: bool,
}

/// Orders the signed-in user's cart and answers the confirmation screen.
///
/// `Idempotency-Key` is required: the same key again returns the same order (200 instead of
/// 201), never a second one, even when the first attempt's answer was lost. Prices and stock are
/// checked at the moment of ordering; unavailable products are refused with `items_unavailable`,
/// listing them in `items`. The body may be left out.
#[utoipa::path(
    post, path = "/m/v1/checkout", tag = "orders", operation_id = "checkout",
    params(CheckoutKey, ImageHint),
    request_body(content = Option<CheckoutBody>, description = "Optional: where to ship"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The order was placed", body = Confirmation),
        (status = 200, description = "A retry with the same `Idempotency-Key`: the order placed then", body = Confirmation),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 413, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 422, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn post(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    CheckoutKey(key): CheckoutKey,
    hint: ImageHint,
    OptionalBody(body): OptionalBody<CheckoutBody>,
) -> Result<Response, ApiError> {
    let ctx = ctx.with_timeout_from_now(state.config().checkout_deadline);
    let address = body.and_then(|body| body.address);
    if let Some(address) = &address {
        check_address(address)?;
    }
    let placed = state
        .placement()
        .checkout(&ctx, &user, &key, Channel::mobile(), address)
        .await?;
    let ids: Vec<ProductId> = placed
        .order
        .lines
        .iter()
        .map(|line| line.product_id.clone())
        .collect();
    let products = products_by_id(state.downstream(), &ctx, &ids).await;
    let image_px = hint.target(state.config().images.thumbnail);
    let confirmation = Confirmation {
        order: shape(&placed.order, products, image_px),
        cart_cleared: placed.cart_cleared,
    };
    let status = if placed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Screen::private(confirmation)
        .with_status(status)
        .vary("DPR")
        .vary("Width")
        .into_response())
}

/// Refuses an address the order service would refuse, naming the field.
fn check_address(address: &Address) -> Result<(), ApiError> {
    let fields = [
        ("name", &address.name),
        ("line1", &address.line1),
        ("city", &address.city),
        ("postal_code", &address.postal_code),
        ("country", &address.country),
    ];
    for (name, value) in fields {
        if value
            .as_ref()
            .is_some_and(|value| value.chars().count() > MAX_ADDRESS_FIELD_CHARS)
        {
            return Err(ApiError::InvalidJson(format!(
                "address.{name}: at most {MAX_ADDRESS_FIELD_CHARS} characters"
            )));
        }
    }
    let country_ok = address.country.as_ref().is_none_or(|country| {
        country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())
    });
    if country_ok {
        Ok(())
    } else {
        Err(ApiError::InvalidJson(
            "address.country: an ISO-3166 alpha-2 code such as DE".to_owned(),
        ))
    }
}

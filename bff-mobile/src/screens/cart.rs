//! `GET /m/v1/cart` and the cart changes — `POST /m/v1/cart/items` (add), `PUT
//! /m/v1/cart/items/{product_id}` (set quantity, 0 removes), `DELETE
//! /m/v1/cart/items/{product_id}` (remove) — each answering the updated cart screen.
//!
//! The cart is essential (its failure is an error); product names, images and prices are not:
//! without them the lines still show product ids and quantities, and `degraded` says
//! `products`.

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::{Deserialize, Serialize};
use shared_clients::{Cart, ClientError, ErrorKind, ProductId, RequestContext};
use utoipa::ToSchema;

use super::{
    LinesPart,
    card::{Lookup, products_by_id, stock},
    is_zero,
};
use crate::{
    Screen,
    error::{ApiError, Missing},
    extract::{Ctx, IdParam, ImageHint, Json, User},
    image,
    money::Currency,
    openapi::ProblemResponse,
    state::AppState,
};

/// Largest quantity of one cart line (the cart service's limit).
const MAX_QUANTITY: i64 = 99;

/// The cart screen (`{}` when the cart is empty).
#[derive(Debug, Serialize, ToSchema)]
pub struct CartScreen {
    /// The currency of every price on the screen, stated once.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// The lines, oldest first; absent when the cart is empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lines: Vec<Line>,
    /// Items in the cart (the sum of the quantities), for the badge; absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    count: u32,
    /// The sum of the line totals, when every line is priced in the payload's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    subtotal: Option<i64>,
    /// The subtotal, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    subtotal_text: Option<String>,
    /// Parts that could not be loaded (`products`); absent when nothing is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<LinesPart>,
    /// Parts shown from an older copy because the service failed (`products`); absent when
    /// nothing is old.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<LinesPart>,
}

/// One cart line.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CartLine)]
struct Line {
    /// The product, to open it or change the line.
    #[schema(value_type = String)]
    id: ProductId,
    /// How many.
    qty: u32,
    /// The product's name (absent when products could not be loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// One thumbnail.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    /// Current unit price, in minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<i64>,
    /// The unit price, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    price_text: Option<String>,
    /// Unit price × quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    /// The line total, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_text: Option<String>,
    /// Only when this line is not priced in the payload's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// `low`, `out` or `gone` (the product no longer exists); absent when in stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(low|out|gone)$")]
    stock: Option<&'static str>,
    /// The stock badge, ready to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    stock_text: Option<String>,
}

/// The body of `POST /m/v1/cart/items`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddItem {
    /// The product to add.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    product_id: String,
    /// How many to add, 1 to 99 (a line holds at most 99).
    #[schema(minimum = 1, maximum = 99)]
    quantity: i64,
}

/// The body of `PUT /m/v1/cart/items/{product_id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetQuantity {
    /// The line's new quantity, 0 (removes the line) to 99.
    #[schema(minimum = 0, maximum = 99)]
    quantity: i64,
}

/// The signed-in user's cart.
///
/// The cart is essential (its failure is an error); product names, images and prices are not:
/// without them the lines still show product ids and quantities, and `degraded` says `products`.
#[utoipa::path(
    get, path = "/m/v1/cart", tag = "cart", operation_id = "getCart",
    params(ImageHint),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart screen", body = CartScreen),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let cart = state
        .downstream()
        .carts()
        .get(&ctx, &user)
        .await
        .map_err(ApiError::Downstream)?;
    Ok(render(&state, &ctx, &cart, hint).await)
}

/// Adds a product to the cart (or more of it to its line), answering the updated cart.
#[utoipa::path(
    post, path = "/m/v1/cart/items", tag = "cart", operation_id = "addCartItem",
    params(ImageHint),
    request_body = AddItem,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated cart screen", body = CartScreen),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 413, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn add(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    hint: ImageHint,
    Json(body): Json<AddItem>,
) -> Result<Response, ApiError> {
    let product_id = ProductId::parse(&body.product_id)
        .map_err(|_| ApiError::InvalidJson("product_id: not a valid product id".to_owned()))?;
    let quantity = quantity(body.quantity, 1)?;
    // Only products that exist go into a cart (a cached read: usually free).
    state
        .downstream()
        .catalog()
        .product(&ctx, &product_id)
        .await
        .map_err(|error| ApiError::from_read(error, Missing::Product))?;
    let cart = state
        .downstream()
        .carts()
        .add_item(&ctx, &user, &product_id, quantity, None)
        .await
        .map_err(write_error)?;
    Ok(render(&state, &ctx, &cart, hint).await)
}

/// Sets the quantity of a cart line (0 removes it), answering the updated cart.
#[utoipa::path(
    put, path = "/m/v1/cart/items/{product_id}", tag = "cart", operation_id = "setCartItemQuantity",
    params(
        ("product_id" = String, Path, description = "The product of the line", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ImageHint,
    ),
    request_body = SetQuantity,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated cart screen", body = CartScreen),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 413, response = ProblemResponse),
        (status = 415, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn set_quantity(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    IdParam(product_id): IdParam<ProductId>,
    hint: ImageHint,
    Json(body): Json<SetQuantity>,
) -> Result<Response, ApiError> {
    let quantity = quantity(body.quantity, 0)?;
    let cart = state
        .downstream()
        .carts()
        .set_quantity(&ctx, &user, &product_id, quantity)
        .await
        .map_err(write_error)?;
    Ok(render(&state, &ctx, &cart, hint).await)
}

/// Removes a line from the cart, answering the updated cart.
#[utoipa::path(
    delete, path = "/m/v1/cart/items/{product_id}", tag = "cart", operation_id = "removeCartItem",
    params(
        ("product_id" = String, Path, description = "The product of the line", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ImageHint,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated cart screen", body = CartScreen),
        (status = 400, response = ProblemResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    User(user): User,
    IdParam(product_id): IdParam<ProductId>,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let cart = state
        .downstream()
        .carts()
        .remove_item(&ctx, &user, &product_id)
        .await
        .map_err(write_error)?;
    Ok(render(&state, &ctx, &cart, hint).await)
}

/// Checks a requested quantity against `min..=99`.
fn quantity(requested: i64, min: u32) -> Result<u32, ApiError> {
    if (i64::from(min)..=MAX_QUANTITY).contains(&requested) {
        u32::try_from(requested).map_err(|_| ApiError::Internal("quantity range".to_owned()))
    } else {
        Err(ApiError::InvalidQuantity {
            min,
            max: u32::try_from(MAX_QUANTITY).unwrap_or(99),
        })
    }
}

/// Maps the failure of a cart write.
fn write_error(error: ClientError) -> ApiError {
    match error.kind() {
        ErrorKind::NotFound => ApiError::NotFound(Missing::CartLine),
        ErrorKind::Conflict => ApiError::QuantityLimit,
        ErrorKind::PreconditionFailed => ApiError::CartChanged,
        _ => ApiError::Downstream(error),
    }
}

/// The cart screen of `cart`, with product details when the catalog answers.
async fn render(state: &AppState, ctx: &RequestContext, cart: &Cart, hint: ImageHint) -> Response {
    let ids: Vec<ProductId> = cart
        .items
        .iter()
        .map(|item| item.product_id.clone())
        .collect();
    let products = products_by_id(state.downstream(), ctx, &ids).await;
    let image_px = hint.target(state.config().images.thumbnail);
    Screen::private(shape(cart, products, image_px))
        .vary("DPR")
        .vary("Width")
        .into_response()
}

/// Shapes the cart screen; `products` failed means degraded lines.
fn shape(cart: &Cart, products: Result<Lookup, ClientError>, image_px: u32) -> CartScreen {
    let mut degraded = Vec::new();
    let Lookup { products, stale } = products.unwrap_or_else(|error| {
        tracing::warn!(%error, "cart shown without product details");
        degraded.push(LinesPart::Products);
        Lookup::default()
    });
    let stale = if stale {
        vec![LinesPart::Products]
    } else {
        Vec::new()
    };
    let mut currency = Currency::new();
    let mut subtotal = Some(0_i64);
    let mut lines = Vec::with_capacity(cart.items.len());
    for item in &cart.items {
        let mut line = Line {
            id: item.product_id.clone(),
            qty: item.quantity,
            name: None,
            image: None,
            price: None,
            price_text: None,
            total: None,
            total_text: None,
            currency: None,
            stock: None,
            stock_text: None,
        };
        match products.get(&item.product_id) {
            Some(product) => {
                let total = product.price.times(item.quantity);
                let own_currency = currency.own(&product.price);
                if own_currency.is_some() {
                    subtotal = None;
                }
                subtotal = subtotal.map(|sum| sum.saturating_add(total.amount_minor));
                let (stock, stock_text) = stock(&product.inventory);
                line.name = Some(product.name.clone());
                line.image = image::best_fit(&product.images, image_px);
                line.price = Some(product.price.amount_minor);
                line.price_text = Some(product.price.display());
                line.total = Some(total.amount_minor);
                line.total_text = Some(total.display());
                line.currency = own_currency;
                line.stock = stock;
                line.stock_text = stock_text;
            }
            None => {
                subtotal = None;
                if degraded.is_empty() {
                    line.stock = Some("gone");
                    line.stock_text = Some("No longer available".to_owned());
                }
            }
        }
        lines.push(line);
    }
    let currency = currency.into_code();
    let subtotal = subtotal.filter(|_| !lines.is_empty());
    let subtotal_text = subtotal.zip(currency.as_ref()).map(|(amount, code)| {
        shared_clients::Money {
            amount_minor: amount,
            currency: code.clone(),
        }
        .display()
    });
    CartScreen {
        currency,
        count: cart.items.iter().map(|item| item.quantity).sum(),
        lines,
        subtotal,
        subtotal_text,
        degraded,
        stale,
    }
}

//! `GET /m/v1/products?category=&q=&cursor=&limit=&w=`: the product list, by category and/or
//! search text, newest first, one page at a time (`next` is the cursor of the following page,
//! absent on the last).

use axum::{extract::State, response::IntoResponse, response::Response};
use serde::{Deserialize, Serialize};
use shared_clients::{CategoryId, ErrorKind, ProductQuery};
use utoipa::{IntoParams, ToSchema};

use super::{card::Card, cursor, invalid_cursor, page_size};
use crate::{
    Screen,
    error::ApiError,
    extract::{ApiQuery, Ctx, ImageHint},
    money::Currency,
    openapi::ProblemResponse,
    state::AppState,
};

/// Longest search text accepted (the downstream limit).
const MAX_QUERY_CHARS: usize = 200;

/// The query string of the product list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Only products of this category.
    category: Option<String>,
    /// Only products whose name or brand contains this text (case-insensitive), at most 200
    /// characters.
    q: Option<String>,
    /// The `next` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    cursor: Option<String>,
    /// Page size, 1 to `gateway.max_page_size` (50; default `gateway.default_page_size`, 20).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// One page of the product list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Products {
    /// The currency of every price on the page, stated once.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// The products, as cards; absent when nothing matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    items: Vec<Card>,
    /// The cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The product list, by category and/or search text, newest first, one page at a time.
#[utoipa::path(
    get, path = "/m/v1/products", tag = "catalog", operation_id = "listProducts",
    params(Query, ImageHint),
    responses(
        (status = 200, description = "One page of products", body = Products),
        (status = 400, response = ProblemResponse),
        (status = 502, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
        (status = 504, response = ProblemResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<Query>,
    hint: ImageHint,
) -> Result<Response, ApiError> {
    let config = state.config();
    let category = query
        .category
        .map(|category| {
            CategoryId::parse(&category)
                .map_err(|_| ApiError::InvalidQuery("category: not a valid category id".to_owned()))
        })
        .transpose()?;
    let q = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
    {
        return Err(ApiError::InvalidQuery(format!(
            "q: at most {MAX_QUERY_CHARS} characters"
        )));
    }
    let downstream_query = ProductQuery {
        category,
        q,
        cursor: cursor(query.cursor)?,
        limit: Some(page_size(
            query.limit,
            config.default_page_size,
            config.max_page_size,
        )?),
    };
    let page = state
        .downstream()
        .catalog()
        .list(&ctx, &downstream_query)
        .await
        .map_err(|error| match error.kind() {
            // Everything else was checked here: only the cursor can be what the service refused.
            ErrorKind::Invalid => invalid_cursor(),
            _ => ApiError::Downstream(error),
        })?;
    let mut currency = Currency::new();
    let image_px = hint.target(config.images.card);
    let items = page
        .items
        .iter()
        .map(|product| Card::of(product, &mut currency, image_px))
        .collect();
    let products = Products {
        currency: currency.into_code(),
        items,
        next: page.next_cursor,
    };
    Ok(Screen::public(products, config.catalog_max_age)
        .vary("DPR")
        .vary("Width")
        .into_response())
}
